"""Reads Impulse's event source mappings and account settings with boto3's Lambda client, and
invokes a function with LogType='Tail', as the AWS CLI and SDKs do; prints one JSON line:

    {"mappings": [...], "mapping": {...}, "for_function": [...uuids...], "account": {...},
     "missing": [code, message], "invoke": {"status": ..., "payload": ..., "log": "..."},
     "error": null}

`error` is `[code, message]` of an unexpected `botocore.exceptions.ClientError`, if any.

Arguments: --endpoint URL --access-key-id ID --secret-access-key SECRET --function NAME
"""

import base64
import json
import sys

import botocore.exceptions

import lambda_client


def main(argv):
    args, client = lambda_client.from_arguments(argv, __doc__.split("\n\n")[0])
    result = {"error": None}
    try:
        # The paginator follows NextMarker, as `aws lambda list-event-source-mappings` does.
        pages = client.get_paginator("list_event_source_mappings").paginate(
            PaginationConfig={"PageSize": 1}
        )
        result["mappings"] = [m for page in pages for m in page["EventSourceMappings"]]
        first = result["mappings"][0]["UUID"] if result["mappings"] else "none"
        mapping = client.get_event_source_mapping(UUID=first)
        mapping.pop("ResponseMetadata", None)
        result["mapping"] = mapping
        result["for_function"] = [
            m["UUID"]
            for m in client.list_event_source_mappings(FunctionName=args.function)[
                "EventSourceMappings"
            ]
        ]
        account = client.get_account_settings()
        account.pop("ResponseMetadata", None)
        result["account"] = account
        try:
            client.get_event_source_mapping(UUID="00000000-0000-0000-0000-000000000000")
            result["missing"] = None
        except botocore.exceptions.ClientError as err:
            error = err.response.get("Error", {})
            result["missing"] = [error.get("Code"), error.get("Message")]
        answer = client.invoke(
            FunctionName=args.function,
            LogType="Tail",
            Payload=json.dumps({"log": "hello from the tail"}).encode(),
        )
        log = answer.get("LogResult")
        result["invoke"] = {
            "status": answer["StatusCode"],
            "payload": json.loads(answer["Payload"].read()),
            "log": base64.b64decode(log).decode() if log else None,
        }
    except botocore.exceptions.ClientError as err:
        error = err.response.get("Error", {})
        result["error"] = [error.get("Code"), error.get("Message")]
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
