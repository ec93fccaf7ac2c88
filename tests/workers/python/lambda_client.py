"""The boto3 Lambda client the read scripts share: its arguments (--endpoint URL
--access-key-id ID --secret-access-key SECRET --function NAME) and a client that tries each
call once, so a test sees Impulse's first answer rather than botocore's retries."""

import argparse

import boto3
import botocore.config


def from_arguments(argv, description):
    """The parsed arguments and a Lambda client for them."""
    parser = argparse.ArgumentParser(description=description)
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
    return args, client
