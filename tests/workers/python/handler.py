"""A Lambda function for the Python `awslambdaric` runtime client, run by `process` targets in
Impulse's tests (`python -m awslambdaric handler.handler`). It does what the event asks, as
`tests/src/bin/lambda_worker.rs` does:

    {"echo": x}      -> {"echo": x, "pid": ...}
    {"fail": true}   -> raises ValueError (a function error)
    {"sleep_ms": n}  -> sleeps n ms first
    {"crash": true}  -> os._exit(3)
    {"pid": true}    -> {"pid": ...}
    {"context": true} -> the invocation context and the Lambda environment variables
    {"log": "text"}  -> prints text to stdout

Every result also carries `pid` and `request_id`.
"""

import os
import time

REPORTED_VARIABLES = [
    "AWS_LAMBDA_RUNTIME_API",
    "_HANDLER",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_EXECUTION_ENV",
    "LAMBDA_TASK_ROOT",
    "TZ",
    "GREETING",
    "CARGO_MANIFEST_DIR",
    "_X_AMZN_TRACE_ID",
]


def handler(event, context):
    if not isinstance(event, dict):
        event = {}
    if "sleep_ms" in event:
        time.sleep(event["sleep_ms"] / 1000)
    if event.get("crash") is True:
        print("crashing as asked", flush=True)
        os._exit(3)
    if event.get("fail") is True:
        raise ValueError("the event asked for a failure")
    if isinstance(event.get("log"), str):
        print(event["log"])
    result = {"pid": os.getpid(), "request_id": context.aws_request_id}
    if "echo" in event:
        result["echo"] = event["echo"]
    if event.get("context") is True:
        result["context"] = {
            "deadline_ms": int(time.time() * 1000 + context.get_remaining_time_in_millis()),
            "invoked_function_arn": context.invoked_function_arn,
            "env": {k: os.environ[k] for k in REPORTED_VARIABLES if k in os.environ},
        }
    return result
