"""Reads Impulse's functions with boto3's Lambda client, as the AWS CLI and SDKs do, and prints
one JSON line:

    {"list": [...names...], "function": {...GetFunction...}, "configuration": {...}, "error": null}

`error` is `[code, message]` of the first `botocore.exceptions.ClientError`, if any.

Arguments: --endpoint URL --access-key-id ID --secret-access-key SECRET --function NAME
"""

import argparse
import json
import sys

import boto3
import botocore.config
import botocore.exceptions


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ["endpoint", "access-key-id", "secret-access-key", "function"]:
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args(argv)
    client = boto3.client(
        "lambda",
        endpoint_url=args.endpoint,
        region_name="us-east-1",
        aws_access_key_id=args.access_key_id,
        aws_secret_access_key=args.secret_access_key,
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )
    result = {"list": None, "function": None, "configuration": None, "error": None}
    try:
        # The paginator follows NextMarker, as `aws lambda list-functions` does.
        pages = client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 1})
        result["list"] = [f["FunctionName"] for page in pages for f in page["Functions"]]
        function = client.get_function(FunctionName=args.function)
        function.pop("ResponseMetadata", None)
        result["function"] = function
        configuration = client.get_function_configuration(FunctionName=args.function)
        configuration.pop("ResponseMetadata", None)
        result["configuration"] = configuration
    except botocore.exceptions.ClientError as err:
        error = err.response.get("Error", {})
        result["error"] = [error.get("Code"), error.get("Message")]
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
