"""Invokes a function through Impulse's Invoke API with boto3, signing with SigV4 as AWS
clients do, and prints one JSON line:

    {"status": 200, "payload": "...", "function_error": null, "error_type": null, "error_message": null}

`status` is the HTTP status (null when no response arrived); `payload` the response body as
text; `error_type` and `error_message` Lambda's error (`InvalidSignatureException`, ...) from
`botocore.exceptions.ClientError`, or the botocore exception's class and text when the request
failed before a response. Exits 0 either way, so the caller asserts on the JSON.

Arguments (flags, else environment):
    --endpoint           IMPULSE_ENDPOINT        e.g. http://127.0.0.1:9000
    --function           IMPULSE_FUNCTION        a name, `name:qualifier` or an ARN
    --payload            IMPULSE_PAYLOAD         JSON text, default `{}`
    --qualifier          IMPULSE_QUALIFIER       sent as `?Qualifier=`, optional
    --invocation-type    IMPULSE_INVOCATION_TYPE RequestResponse (default), Event or DryRun
    --access-key-id      AWS_ACCESS_KEY_ID
    --secret-access-key  AWS_SECRET_ACCESS_KEY
    --region             AWS_REGION              default us-east-1
    --clock-skew         seconds added to the signer's clock (e.g. -360 signs 6 minutes ago)

Retries are off: every refusal is reported as received, and botocore does not correct its
clock after a "Signature expired" answer.
"""

import argparse
import datetime
import json
import os
import sys

import boto3
import botocore.auth
import botocore.config
import botocore.exceptions


def parse_args(argv):
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", default=env("IMPULSE_ENDPOINT"))
    parser.add_argument("--function", default=env("IMPULSE_FUNCTION"))
    parser.add_argument("--payload", default=env("IMPULSE_PAYLOAD", "{}"))
    parser.add_argument("--qualifier", default=env("IMPULSE_QUALIFIER"))
    parser.add_argument(
        "--invocation-type",
        default=env("IMPULSE_INVOCATION_TYPE", "RequestResponse"),
        choices=["RequestResponse", "Event", "DryRun"],
    )
    parser.add_argument("--access-key-id", default=env("AWS_ACCESS_KEY_ID"))
    parser.add_argument("--secret-access-key", default=env("AWS_SECRET_ACCESS_KEY"))
    parser.add_argument("--region", default=env("AWS_REGION", "us-east-1"))
    parser.add_argument("--clock-skew", type=float, default=0.0)
    args = parser.parse_args(argv)
    for required in ["endpoint", "function", "access_key_id", "secret_access_key"]:
        if getattr(args, required) is None:
            parser.error(f"--{required.replace('_', '-')} (or its environment variable) is required")
    return args


def skew_signer_clock(seconds):
    """Shifts the time botocore's SigV4 signer reads (it reads it through this one function)."""
    if not seconds:
        return
    now = botocore.auth.get_current_datetime

    def skewed(*args, **kwargs):
        return now(*args, **kwargs) + datetime.timedelta(seconds=seconds)

    botocore.auth.get_current_datetime = skewed


def invoke(args):
    client = boto3.client(
        "lambda",
        endpoint_url=args.endpoint,
        region_name=args.region,
        aws_access_key_id=args.access_key_id,
        aws_secret_access_key=args.secret_access_key,
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )
    params = {
        "FunctionName": args.function,
        "InvocationType": args.invocation_type,
        "Payload": args.payload.encode(),
    }
    if args.qualifier:
        params["Qualifier"] = args.qualifier
    result = {
        "status": None,
        "payload": None,
        "function_error": None,
        "error_type": None,
        "error_message": None,
    }
    try:
        response = client.invoke(**params)
    except botocore.exceptions.ClientError as err:
        result["status"] = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        result["error_type"] = err.response.get("Error", {}).get("Code")
        result["error_message"] = err.response.get("Error", {}).get("Message")
    except botocore.exceptions.BotoCoreError as err:
        result["error_type"] = type(err).__name__
        result["error_message"] = str(err)
    else:
        result["status"] = response["ResponseMetadata"]["HTTPStatusCode"]
        result["payload"] = response["Payload"].read().decode("utf-8", errors="replace")
        result["function_error"] = response.get("FunctionError")
    return result


def main(argv):
    args = parse_args(argv)
    skew_signer_clock(args.clock_skew)
    print(json.dumps(invoke(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
