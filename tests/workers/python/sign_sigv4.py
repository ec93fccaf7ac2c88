"""Signs HTTP requests with botocore's SigV4 signer (service `lambda`), as every AWS SDK does, so
that a test can send any request to Impulse signed by the reference implementation.

Reads a JSON list of requests on stdin:

    [{"method": "POST", "url": "http://127.0.0.1:9000/private", "body": "...",
      "headers": {"x-amz-invocation-type": "Event"},
      "access_key_id": "AKIA...", "secret_access_key": "...", "clock_skew": -360}]

and prints a JSON list, in the same order, of the headers to send with each (`Authorization`,
`X-Amz-Date`, `X-Amz-Content-SHA256` when botocore adds it, and the given headers). The signed
headers are the request's own plus `host` and `x-amz-date`; the payload is hashed.
`clock_skew` (seconds, optional) shifts the signer's clock.
"""

import datetime
import json
import sys

import botocore.auth
import botocore.awsrequest
import botocore.credentials

REAL_CLOCK = botocore.auth.get_current_datetime


def sign(request):
    skew = datetime.timedelta(seconds=request.get("clock_skew", 0))
    # botocore's signer reads the time through this one function.
    botocore.auth.get_current_datetime = lambda *a, **k: REAL_CLOCK(*a, **k) + skew
    credentials = botocore.credentials.Credentials(
        request["access_key_id"], request["secret_access_key"]
    )
    aws_request = botocore.awsrequest.AWSRequest(
        method=request["method"],
        url=request["url"],
        data=request.get("body", "").encode(),
        headers=request.get("headers", {}),
    )
    botocore.auth.SigV4Auth(credentials, "lambda", request.get("region", "us-east-1")).add_auth(
        aws_request
    )
    return dict(aws_request.headers.items())


def main():
    requests = json.load(sys.stdin)
    print(json.dumps([sign(request) for request in requests]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
