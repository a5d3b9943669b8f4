#!/usr/bin/env python3
"""boto3's invoke_with_response_stream against a running Lambda@Home.

Usage: python3 tests/boto3_streaming.py http://127.0.0.1:PORT

Creates a Node (awslambda.streamifyResponse) and a Python (generator) function that write a
chunk, sleep 1.5 s and write another, and reads them with boto3's EventStream: the first
PayloadChunk must arrive while the handler still sleeps (well before InvokeComplete), the
payload and InvokeComplete (LogResult with Tail) must be what the SDK models. Also checks a
handler error mid-stream (InvokeComplete.ErrorCode/ErrorDetails), a timeout mid-stream
(Sandbox.Timedout), DryRun, and ResourceNotFoundException. The server decides the runtime
transport (HTTP or WebSocket); the Rust side runs this script once per transport, once with
authentication on: then LAH_TEST_KEY_ID / LAH_TEST_SECRET are the keys to sign with, and a
wrongly signed stream request must be refused. Prints one
line per check and `N passed, M failed`; exits non-zero on any failure. Talks only to the given
endpoint.
"""

import base64
import json
import os
import sys
import time

import boto3
from botocore.config import Config

from boto3_support import Checks, expect, zip_of

ROLE = "arn:aws:iam::000000000000:role/lambda"
PAUSE_MS = 1500
# The first chunk must arrive at least this long before the end (most of the pause).
EARLY_BY_S = 1.0

NODE_STREAM = """
exports.handler = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.write('first;');
  await new Promise((r) => setTimeout(r, event.pause_ms));
  if (event.mode === 'throw') throw new TypeError('node broke mid-stream');
  if (event.mode === 'hang') await new Promise((r) => setTimeout(r, 60000));
  responseStream.write('second');
  responseStream.end();
});
"""

PY_STREAM = """
import time

def handler(event, context):
    yield "first;"
    time.sleep(event["pause_ms"] / 1000)
    if event.get("mode") == "throw":
        raise KeyError("python broke mid-stream")
    if event.get("mode") == "hang":
        time.sleep(60)
    yield b"second"
"""


def read_stream(client, name, event, **kwargs):
    """Invokes with a response stream; returns (response, [(seconds since the call, event)])."""
    started = time.monotonic()
    resp = client.invoke_with_response_stream(
        FunctionName=name, Payload=json.dumps(event).encode(), **kwargs
    )
    events = [(time.monotonic() - started, e) for e in resp["EventStream"]]
    return resp, events


def payload_of(events):
    return b"".join(e["PayloadChunk"]["Payload"] for _, e in events if "PayloadChunk" in e)


def complete_of(events):
    expect(events and "InvokeComplete" in events[-1][1], "no InvokeComplete last: %r" % events)
    return events[-1][1]["InvokeComplete"]


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    key_id = os.environ.get("LAH_TEST_KEY_ID", "test")
    secret = os.environ.get("LAH_TEST_SECRET", "test")
    signed = "LAH_TEST_KEY_ID" in os.environ

    def make_client(secret_key):
        return boto3.client(
            "lambda",
            endpoint_url=sys.argv[1],
            region_name="us-east-1",
            aws_access_key_id=key_id,
            aws_secret_access_key=secret_key,
            config=Config(
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=10,
                read_timeout=30,
            ),
        )

    client = make_client(secret)
    suffix = "%d-%d" % (os.getpid(), int(time.time() * 1000) % 100000)
    functions = {
        "node": ("boto-stream-node-" + suffix, "nodejs20.x", "index.handler", "index.js", NODE_STREAM),
        "python": (
            "boto-stream-py-" + suffix,
            "python3.12",
            "lambda_function.handler",
            "lambda_function.py",
            PY_STREAM,
        ),
    }
    c = Checks()

    def create(lang):
        name, runtime, handler, file, source = functions[lang]

        def run():
            r = client.create_function(
                FunctionName=name,
                Runtime=runtime,
                Role=ROLE,
                Handler=handler,
                Code={"ZipFile": zip_of({file: source})},
                Timeout=3,
            )
            expect(r["State"] == "Active", r)

        return run

    def streams_as_produced(lang):
        name = functions[lang][0]

        def run():
            for attempt in ("cold", "warm"):
                resp, events = read_stream(client, name, {"pause_ms": PAUSE_MS}, LogType="Tail")
                expect(resp["StatusCode"] == 200, resp["StatusCode"])
                expect(resp.get("ExecutedVersion") == "$LATEST", resp.get("ExecutedVersion"))
                expect(
                    resp.get("ResponseStreamContentType") == "application/octet-stream",
                    resp.get("ResponseStreamContentType"),
                )
                chunks = [(t, e) for t, e in events if "PayloadChunk" in e]
                expect(chunks, "no PayloadChunk (%s): %r" % (attempt, events))
                expect(chunks[0][1]["PayloadChunk"]["Payload"] == b"first;", events)
                expect(payload_of(events) == b"first;second", events)
                first_at, end_at = chunks[0][0], events[-1][0]
                expect(
                    first_at + EARLY_BY_S <= end_at,
                    "first chunk at %.3f s, end at %.3f s (%s)" % (first_at, end_at, attempt),
                )
                complete = complete_of(events)
                expect("ErrorCode" not in complete, complete)
                log = base64.b64decode(complete["LogResult"]).decode()
                expect("REPORT RequestId:" in log, log)

        return run

    def error_mid_stream(lang, error_code, detail):
        name = functions[lang][0]

        def run():
            _, events = read_stream(client, name, {"pause_ms": 10, "mode": "throw"})
            expect(payload_of(events) == b"first;", events)
            complete = complete_of(events)
            expect(complete.get("ErrorCode") == error_code, complete)
            expect(detail in complete.get("ErrorDetails", ""), complete)

        return run

    def timeout_mid_stream(lang):
        name = functions[lang][0]

        def run():
            _, events = read_stream(client, name, {"pause_ms": 10, "mode": "hang"})
            expect(payload_of(events) == b"first;", events)
            complete = complete_of(events)
            expect(complete.get("ErrorCode") == "Sandbox.Timedout", complete)
            expect("Task timed out after 3.00 seconds" in complete.get("ErrorDetails", ""), complete)

        return run

    def dry_run():
        r = client.invoke_with_response_stream(
            FunctionName=functions["python"][0], InvocationType="DryRun", Payload=b"{}"
        )
        expect(r["StatusCode"] == 204, r["StatusCode"])

    def missing():
        try:
            client.invoke_with_response_stream(FunctionName="boto-stream-missing-" + suffix)
        except client.exceptions.ResourceNotFoundException:
            return
        raise AssertionError("expected ResourceNotFoundException")

    def wrong_signature():
        forged = make_client(secret + "x")
        try:
            forged.invoke_with_response_stream(FunctionName=functions["python"][0], Payload=b"{}")
        except forged.exceptions.ClientError as e:
            status = e.response["ResponseMetadata"]["HTTPStatusCode"]
            expect(status == 403, e.response)
            return
        raise AssertionError("a wrongly signed stream request was served")

    for lang in ("node", "python"):
        c.run("create %s" % lang, create(lang))
        c.run("%s streams chunks as they are produced" % lang, streams_as_produced(lang))
    if signed:
        c.run("wrong signature refused", wrong_signature)
    c.run("node error mid-stream", error_mid_stream("node", "TypeError", "node broke mid-stream"))
    c.run("python error mid-stream", error_mid_stream("python", "KeyError", "python broke mid-stream"))
    c.run("node timeout mid-stream", timeout_mid_stream("node"))
    c.run("python timeout mid-stream", timeout_mid_stream("python"))
    c.run("dry run", dry_run)
    c.run("missing function", missing)
    for name, *_ in functions.values():
        try:
            client.delete_function(FunctionName=name)
        except Exception as e:  # cleanup only; the checks above decide the result
            print("cleanup of %s failed: %s" % (name, e))
    print("%d passed, %d failed" % (c.passed, c.failed))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
