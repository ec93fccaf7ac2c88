"""Reads a function's versions and aliases with boto3's Lambda client, invokes it with a
qualifier, and tries the write operations, as the AWS CLI and SDKs do; prints one JSON object
with an entry per operation:

    {"list_versions": {"ok": ..., "error": null}, ..., "publish_version": {"ok": null, "error": [code, message]}}

`error` is `[code, message]` of the operation's `botocore.exceptions.ClientError`, if any.

Arguments: --endpoint URL --access-key-id ID --secret-access-key SECRET --function NAME
"""

import json
import sys

import botocore.exceptions

import lambda_client


def main(argv):
    args, client = lambda_client.from_arguments(argv, __doc__.split("\n\n")[0])
    name = args.function
    result = {}

    def run(key, call):
        try:
            answer = call()
            if isinstance(answer, dict):
                answer.pop("ResponseMetadata", None)
            result[key] = {"ok": answer, "error": None}
        except botocore.exceptions.ClientError as err:
            error = err.response.get("Error", {})
            result[key] = {"ok": None, "error": [error.get("Code"), error.get("Message")]}

    def list_versions():
        # The paginator follows NextMarker, as `aws lambda list-versions-by-function` does.
        pages = client.get_paginator("list_versions_by_function").paginate(
            FunctionName=name, PaginationConfig={"PageSize": 1}
        )
        return [v for page in pages for v in page["Versions"]]

    def list_aliases():
        pages = client.get_paginator("list_aliases").paginate(
            FunctionName=name, PaginationConfig={"PageSize": 1}
        )
        return [a for page in pages for a in page["Aliases"]]

    def invoke():
        answer = client.invoke(FunctionName=name, Qualifier="2", Payload=b'{"hello": "boto3"}')
        return {
            "StatusCode": answer["StatusCode"],
            "ExecutedVersion": answer.get("ExecutedVersion"),
            "Payload": json.loads(answer["Payload"].read()),
        }

    run("list_versions", list_versions)
    run("list_aliases", list_aliases)
    run("list_aliases_of_1", lambda: client.list_aliases(FunctionName=name, FunctionVersion="1"))
    run("get_alias", lambda: client.get_alias(FunctionName=name, Name="live"))
    run("get_missing_alias", lambda: client.get_alias(FunctionName=name, Name="nope"))
    run("get_function_1", lambda: client.get_function(FunctionName=name, Qualifier="1"))
    run(
        "get_configuration_live",
        lambda: client.get_function_configuration(FunctionName=name, Qualifier="live"),
    )
    run("invoke_2", invoke)
    run("publish_version", lambda: client.publish_version(FunctionName=name))
    run(
        "create_alias",
        lambda: client.create_alias(FunctionName=name, Name="next", FunctionVersion="2"),
    )
    run("update_code", lambda: client.update_function_code(FunctionName=name, ZipFile=b"PK"))
    run("delete_function", lambda: client.delete_function(FunctionName=name))
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
