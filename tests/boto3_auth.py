#!/usr/bin/env python3
"""boto3 against a Lambda@Home with User API authentication on: SigV4 as the AWS SDK signs it.

Usage: LAH_TEST_KEY_ID=... LAH_TEST_SECRET=... python3 tests/boto3_auth.py http://127.0.0.1:PORT

With the right keys the SDK creates, lists, invokes (with an ARN in the path and a qualifier in
the query, both of which the canonical request encodes) and deletes a function; with a wrong
secret it gets InvalidSignatureException, with an unknown key UnrecognizedClientException,
unsigned MissingAuthenticationTokenException; a request botocore signed whose body is changed
afterwards gets InvalidSignatureException. Prints one line per check and `N passed, M failed`;
exits non-zero on any failure. Talks only to the given endpoint.
"""

import http.client
import json
import os
import sys
import traceback
import urllib.parse

import boto3
import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from boto3_support import zip_of

ROLE = "arn:aws:iam::000000000000:role/lambda"
REGION = "eu-west-1"
SOURCE = """
def handler(event, context):
    return {"echo": event}
"""


def client(endpoint, key_id, secret, signed=True):
    config = Config(retries={"max_attempts": 1}, read_timeout=60)
    if not signed:
        config = config.merge(Config(signature_version=botocore.UNSIGNED))
    return boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=config,
    )


def error_code(fn):
    """The AWS error code `fn` raises, with its HTTP status and message."""
    try:
        fn()
    except botocore.exceptions.ClientError as e:
        return (
            e.response["Error"]["Code"],
            e.response["ResponseMetadata"]["HTTPStatusCode"],
            e.response["Error"]["Message"],
        )
    return (None, None, None)


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, fn):
        try:
            fn()
            self.passed += 1
            print("ok   %s" % name)
        except Exception:
            self.failed += 1
            print("FAIL %s" % name)
            traceback.print_exc(file=sys.stdout)


def send_tampered(endpoint, key_id, secret, path, body, sent_body):
    """Signs `body` with botocore's SigV4Auth, then sends `sent_body` in its place."""
    url = endpoint + path
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key_id, secret), "lambda", REGION).add_auth(request)
    headers = dict(request.headers.items())
    headers["Content-Length"] = str(len(sent_body))
    parsed = urllib.parse.urlsplit(endpoint)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    conn.request("POST", path, body=sent_body, headers=headers)
    resp = conn.getresponse()
    result = (resp.status, resp.getheader("x-amzn-ErrorType"), resp.read())
    conn.close()
    return result


def main():
    endpoint = sys.argv[1]
    key_id = os.environ["LAH_TEST_KEY_ID"]
    secret = os.environ["LAH_TEST_SECRET"]
    lam = client(endpoint, key_id, secret)
    c = Checks()
    name = "auth-fn"
    arn = "arn:aws:lambda:%s:000000000000:function:%s" % (REGION, name)

    def signed_calls_work():
        created = lam.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=ROLE,
            Handler="lambda_function.handler",
            Code={"ZipFile": zip_of({"lambda_function.py": SOURCE})},
        )
        assert created["FunctionArn"] == arn, created["FunctionArn"]
        names = [f["FunctionName"] for f in lam.list_functions()["Functions"]]
        assert name in names, names
        out = lam.invoke(FunctionName=arn, Qualifier="$LATEST", Payload=b'{"k": "v w"}')
        assert out["StatusCode"] == 200, out
        assert json.loads(out["Payload"].read()) == {"echo": {"k": "v w"}}
        lam.get_function(FunctionName=name, Qualifier="$LATEST")

    c.check("signed create, list, invoke by ARN with a qualifier, get", signed_calls_work)

    def wrong_secret():
        bad = client(endpoint, key_id, secret + "x")
        for call in (lambda: bad.list_functions(), lambda: bad.invoke(FunctionName=name, Payload=b"{}")):
            code, status, message = error_code(call)
            assert (code, status) == ("InvalidSignatureException", 403), (code, status, message)
            assert message.startswith("The request signature we calculated does not match"), message

    c.check("wrong secret: InvalidSignatureException (management and invoke)", wrong_secret)

    def unknown_key():
        other = client(endpoint, "AKIDUNKNOWN", secret)
        for call in (lambda: other.list_functions(), lambda: other.invoke(FunctionName=name, Payload=b"{}")):
            code, status, message = error_code(call)
            assert (code, status) == ("UnrecognizedClientException", 403), (code, status, message)
            assert message == "The security token included in the request is invalid.", message

    c.check("unknown key: UnrecognizedClientException", unknown_key)

    def unsigned():
        anon = client(endpoint, key_id, secret, signed=False)
        for call in (lambda: anon.list_functions(), lambda: anon.invoke(FunctionName=name, Payload=b"{}")):
            code, status, message = error_code(call)
            assert (code, status) == ("MissingAuthenticationTokenException", 403), (code, status, message)
            assert message == "Missing Authentication Token", message

    c.check("unsigned: MissingAuthenticationTokenException", unsigned)

    def tampered_body():
        path = "/2015-03-31/functions/%s/invocations" % name
        status, kind, body = send_tampered(endpoint, key_id, secret, path, b'{"n": 1}', b'{"n": 2}')
        assert (status, kind) == (403, "InvalidSignatureException"), (status, kind, body)
        status, kind, body = send_tampered(endpoint, key_id, secret, path, b'{"n": 1}', b'{"n": 1}')
        assert status == 200, (status, kind, body)
        assert json.loads(body) == {"echo": {"n": 1}}, body

    c.check("body changed after signing: InvalidSignatureException (unchanged: 200)", tampered_body)

    c.check("signed delete", lambda: lam.delete_function(FunctionName=name))

    print("%d passed, %d failed" % (c.passed, c.failed))
    sys.exit(1 if c.failed else 0)


if __name__ == "__main__":
    main()
