#!/usr/bin/env python3
"""boto3 against a running Lambda@Home: the User API as the AWS SDK speaks it.

Usage: python3 tests/boto3_compat.py http://127.0.0.1:PORT

Creates a Python and a Node function, invokes them (sync, Event, DryRun, log tail), lists them
with the SDK's paginator, reads, updates and deletes them, and checks that the SDK raises the
modelled exceptions (ResourceNotFoundException, InvalidRequestContentException,
TooManyRequestsException, ResourceConflictException) where AWS raises them. Prints one line per
check and `N passed, M failed`; exits non-zero on any failure. Talks only to the given endpoint.
"""

import base64
import json
import os
import sys
import time

import boto3
from botocore.config import Config

from boto3_support import Checks, expect, raises, zip_of

ROLE = "arn:aws:iam::000000000000:role/lambda"

PY_V1 = """
import os
def handler(event, context):
    return {"lang": "python", "version": 1, "event": event,
            "greeting": os.environ.get("GREETING")}
"""

PY_V2 = """
def handler(event, context):
    return {"lang": "python", "version": 2, "event": event}
"""

PY_RAISES = """
def handler(event, context):
    raise ValueError("boom from boto3 test")
"""

NODE_V1 = """
exports.handler = async (event, context) => ({ lang: "node", event, arn: context.invokedFunctionArn });
"""


def invoke_json(client, name, event, **kwargs):
    resp = client.invoke(FunctionName=name, Payload=json.dumps(event).encode(), **kwargs)
    return resp, json.loads(resp["Payload"].read() or b"null")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    endpoint = sys.argv[1]
    client = boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=10,
            read_timeout=30,
        ),
    )
    exc = client.exceptions
    suffix = "%d-%d" % (os.getpid(), int(time.time() * 1000) % 100000)
    py = "boto-py-" + suffix
    node = "boto-node-" + suffix
    bad = "boto-raise-" + suffix
    missing = "boto-missing-" + suffix
    py_zip = zip_of({"lambda_function.py": PY_V1})
    state = {}
    c = Checks()

    def create_python():
        r = client.create_function(
            FunctionName=py,
            Runtime="python3.12",
            Role=ROLE,
            Handler="lambda_function.handler",
            Code={"ZipFile": py_zip},
            Timeout=5,
            MemorySize=256,
            Description="boto3 compat",
        )
        expect(r["ResponseMetadata"]["HTTPStatusCode"] == 201, r["ResponseMetadata"])
        expect(r["FunctionName"] == py, r)
        expect(r["FunctionArn"].endswith(":function:" + py), r["FunctionArn"])
        expect(r["State"] == "Active", r.get("State"))
        expect(r["Timeout"] == 5 and r["MemorySize"] == 256, r)
        expect(r["Description"] == "boto3 compat", r)
        state["sha"] = r["CodeSha256"]
        import hashlib

        expected = base64.b64encode(hashlib.sha256(py_zip).digest()).decode()
        expect(r["CodeSha256"] == expected, (r["CodeSha256"], expected))

    def create_node():
        r = client.create_function(
            FunctionName=node,
            Runtime="nodejs20.x",
            Role=ROLE,
            Handler="index.handler",
            Code={"ZipFile": zip_of({"index.js": NODE_V1})},
        )
        expect(r["State"] == "Active", r)
        expect(r["Runtime"] == "nodejs20.x", r)

    def create_raising():
        client.create_function(
            FunctionName=bad,
            Runtime="python3.12",
            Role=ROLE,
            Handler="lambda_function.handler",
            Code={"ZipFile": zip_of({"lambda_function.py": PY_RAISES})},
        )

    def waiter_active():
        client.get_waiter("function_active_v2").wait(
            FunctionName=py, WaiterConfig={"Delay": 1, "MaxAttempts": 5}
        )

    def create_duplicate():
        raises(
            exc.ResourceConflictException,
            lambda: client.create_function(
                FunctionName=py,
                Runtime="python3.12",
                Role=ROLE,
                Handler="lambda_function.handler",
                Code={"ZipFile": py_zip},
            ),
        )

    def create_bad_runtime():
        raises(
            exc.InvalidParameterValueException,
            lambda: client.create_function(
                FunctionName="boto-badrt-" + suffix,
                Runtime="cobol85",
                Role=ROLE,
                Handler="x.handler",
                Code={"ZipFile": py_zip},
            ),
        )

    def invoke_python():
        r, body = invoke_json(client, py, {"n": 1, "s": "héllo"})
        expect(r["StatusCode"] == 200, r["StatusCode"])
        expect(r.get("ExecutedVersion") == "$LATEST", r.get("ExecutedVersion"))
        expect("FunctionError" not in r, r.get("FunctionError"))
        expect(body["event"] == {"n": 1, "s": "héllo"} and body["version"] == 1, body)

    def invoke_node():
        r, body = invoke_json(client, node, {"k": [1, 2]})
        expect(r["StatusCode"] == 200, r)
        expect(body["lang"] == "node" and body["event"] == {"k": [1, 2]}, body)
        expect(body["arn"].endswith(":function:" + node), body)

    def invoke_tail():
        r, _ = invoke_json(client, py, {"tail": True}, LogType="Tail")
        log = base64.b64decode(r["LogResult"]).decode(errors="replace")
        expect("START RequestId:" in log and "REPORT RequestId:" in log, log)

    def invoke_event():
        r = client.invoke(FunctionName=py, InvocationType="Event", Payload=b'{"async":1}')
        expect(r["StatusCode"] == 202, r["StatusCode"])

    def invoke_dry_run():
        r = client.invoke(FunctionName=py, InvocationType="DryRun", Payload=b"{}")
        expect(r["StatusCode"] == 204, r["StatusCode"])

    def invoke_function_error():
        r, body = invoke_json(client, bad, {})
        expect(r["StatusCode"] == 200, r["StatusCode"])
        expect(r.get("FunctionError") == "Unhandled", r.get("FunctionError"))
        expect(body["errorType"] == "ValueError", body)
        expect(body["errorMessage"] == "boom from boto3 test", body)

    def invoke_invalid_json():
        raises(
            exc.InvalidRequestContentException,
            lambda: client.invoke(FunctionName=py, Payload=b"{not json"),
        )

    def invoke_missing():
        raises(exc.ResourceNotFoundException, lambda: client.invoke(FunctionName=missing, Payload=b"{}"))

    def get_missing():
        raises(exc.ResourceNotFoundException, lambda: client.get_function(FunctionName=missing))

    def list_paginated():
        names = []
        pages = 0
        paginator = client.get_paginator("list_functions")
        for page in paginator.paginate(PaginationConfig={"PageSize": 1}):
            pages += 1
            expect(len(page["Functions"]) <= 1, page)
            names.extend(f["FunctionName"] for f in page["Functions"])
            expect(pages < 1000, "pagination does not end")
        for n in (py, node, bad):
            expect(n in names, (n, names))
        expect(len(names) == len(set(names)), names)
        expect(pages >= 3, pages)

    def get_function():
        r = client.get_function(FunctionName=py)
        expect(r["Configuration"]["CodeSha256"] == state["sha"], r["Configuration"])
        expect(r["Code"]["Location"].startswith("http"), r["Code"])
        r2 = client.get_function_configuration(FunctionName=py)
        expect(r2["FunctionName"] == py and r2["Handler"] == "lambda_function.handler", r2)

    def update_code():
        r = client.update_function_code(FunctionName=py, ZipFile=zip_of({"lambda_function.py": PY_V2}))
        expect(r["CodeSha256"] != state["sha"], r)
        client.get_waiter("function_updated_v2").wait(
            FunctionName=py, WaiterConfig={"Delay": 1, "MaxAttempts": 5}
        )
        for _ in range(3):
            _, body = invoke_json(client, py, {"after": "update"})
            expect(body["version"] == 2 and body["event"] == {"after": "update"}, body)

    def update_configuration():
        client.update_function_code(FunctionName=py, ZipFile=py_zip)
        r = client.update_function_configuration(
            FunctionName=py, Timeout=9, Environment={"Variables": {"GREETING": "hi-boto"}}
        )
        expect(r["Timeout"] == 9, r)
        expect(r["Environment"]["Variables"] == {"GREETING": "hi-boto"}, r)
        got = client.get_function_configuration(FunctionName=py)
        expect(got["Timeout"] == 9, got)
        _, body = invoke_json(client, py, {})
        expect(body["greeting"] == "hi-boto", body)

    def concurrency():
        r = client.put_function_concurrency(FunctionName=py, ReservedConcurrentExecutions=0)
        expect(r.get("ReservedConcurrentExecutions") == 0, r)
        g = client.get_function_concurrency(FunctionName=py)
        expect(g.get("ReservedConcurrentExecutions") == 0, g)
        raises(exc.TooManyRequestsException, lambda: client.invoke(FunctionName=py, Payload=b"{}"))
        client.delete_function_concurrency(FunctionName=py)
        g = client.get_function_concurrency(FunctionName=py)
        expect("ReservedConcurrentExecutions" not in g, g)
        r, _ = invoke_json(client, py, {})
        expect(r["StatusCode"] == 200, r)

    def delete_all():
        for n in (py, node, bad):
            r = client.delete_function(FunctionName=n)
            expect(r["ResponseMetadata"]["HTTPStatusCode"] == 204, r["ResponseMetadata"])
        raises(exc.ResourceNotFoundException, lambda: client.get_function(FunctionName=py))
        raises(exc.ResourceNotFoundException, lambda: client.delete_function(FunctionName=py))

    for name, fn in [
        ("create python function", create_python),
        ("create node function", create_node),
        ("create raising function", create_raising),
        ("waiter function_active_v2", waiter_active),
        ("create duplicate -> ResourceConflictException", create_duplicate),
        ("create unknown runtime -> InvalidParameterValueException", create_bad_runtime),
        ("invoke python", invoke_python),
        ("invoke node", invoke_node),
        ("invoke LogType=Tail", invoke_tail),
        ("invoke Event -> 202", invoke_event),
        ("invoke DryRun -> 204", invoke_dry_run),
        ("invoke raising handler -> FunctionError", invoke_function_error),
        ("invoke invalid JSON -> InvalidRequestContentException", invoke_invalid_json),
        ("invoke missing -> ResourceNotFoundException", invoke_missing),
        ("get_function missing -> ResourceNotFoundException", get_missing),
        ("list_functions paginator", list_paginated),
        ("get_function / get_function_configuration", get_function),
        ("update_function_code", update_code),
        ("update_function_configuration", update_configuration),
        ("put/get/delete_function_concurrency + TooManyRequestsException", concurrency),
        ("delete_function", delete_all),
    ]:
        c.run(name, fn)
    print("%d passed, %d failed" % (c.passed, c.failed))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
