"""Reads Impulse's functions with boto3's Lambda client, as the AWS CLI and SDKs do, and prints
one JSON line:

    {"list": [...names...], "function": {...GetFunction...}, "configuration": {...}, "error": null}

`error` is `[code, message]` of the first `botocore.exceptions.ClientError`, if any.

Arguments: --endpoint URL --access-key-id ID --secret-access-key SECRET --function NAME
"""

import json
import sys

import botocore.exceptions

import lambda_client


def main(argv):
    args, client = lambda_client.from_arguments(argv, __doc__.split("\n\n")[0])
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
