#!/usr/bin/env python3
"""boto3's `logs` client against a running Lambda@Home: function logs through the CloudWatch Logs
API, on the same endpoint as the Lambda API.

Usage: python3 tests/boto3_logs.py http://127.0.0.1:PORT

Creates Python and Node functions (Text and JSON LoggingConfig, one with its own LogGroup),
invokes them, and reads their logs back with every operation the server serves:
DescribeLogGroups, DescribeLogStreams, GetLogEvents (both token directions, startFromHead),
FilterLogEvents (terms, time range, stream names, pagination), PutRetentionPolicy,
DeleteLogGroup; checks AWS's errors (ResourceNotFoundException, InvalidParameterException) and
that DeleteFunction deletes the function's logs. Prints one line per check and
`N passed, M failed`; exits non-zero on any failure. Talks only to the given endpoint.
"""

import json
import os
import re
import sys
import time

import boto3
from botocore.config import Config

from boto3_support import Checks, expect, raises, zip_of

ROLE = "arn:aws:iam::000000000000:role/lambda"

PY_TEXT = r'''
import logging
def handler(event, context):
    print("marker-1 for", event["n"])
    print("two\nlines")
    logging.getLogger().warning("warned\nonce")
    print("no newline at the end", end="")
    return {"n": event["n"]}
'''

PY_JSON = r'''
import logging
log = logging.getLogger()
def handler(event, context):
    log.debug("hidden-debug")
    log.info("hidden-info")
    log.warning("shown-warning %s", event["n"])
    print("plain print")
    return "ok"
'''

NODE_JSON = r'''
exports.handler = async (event) => {
  console.info("hidden-info");
  console.error("shown-error", event.n);
  return "ok";
};
'''

STREAM_NAME = re.compile(r"^\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}$")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    endpoint = sys.argv[1]
    kwargs = dict(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=30),
    )
    lam = boto3.client("lambda", **kwargs)
    logs = boto3.client("logs", **kwargs)
    exc = logs.exceptions
    suffix = "%d-%d" % (os.getpid(), int(time.time() * 1000) % 100000)
    text_fn = "logs-text-" + suffix
    json_fn = "logs-json-" + suffix
    node_fn = "logs-node-" + suffix
    custom_fn = "logs-custom-" + suffix
    custom_group = "/custom/lah-" + suffix
    group = "/aws/lambda/" + text_fn
    state = {}
    c = Checks()

    def create(name, runtime, handler, files, logging_config=None):
        args = dict(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
                    Code={"ZipFile": zip_of(files)}, Timeout=10)
        if logging_config:
            args["LoggingConfig"] = logging_config
        return lam.create_function(**args)

    def invoke(name, n):
        r = lam.invoke(FunctionName=name, Payload=json.dumps({"n": n}).encode())
        expect(r["StatusCode"] == 200 and "FunctionError" not in r, r)
        r["Payload"].read()

    def setup():
        r = create(text_fn, "python3.12", "lambda_function.handler", {"lambda_function.py": PY_TEXT})
        expect(r["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": group}, r["LoggingConfig"])
        state["t0"] = int(time.time() * 1000)
        invoke(text_fn, 1)
        invoke(text_fn, 2)

    def describe_groups():
        r = logs.describe_log_groups(logGroupNamePrefix=group)
        names = [g["logGroupName"] for g in r["logGroups"]]
        expect(names == [group], names)
        g = r["logGroups"][0]
        expect(g["arn"].startswith("arn:aws:logs:us-east-1:") and g["arn"].endswith(":log-group:%s:*" % group), g)
        expect(g["storedBytes"] > 0 and g["creationTime"] > 0, g)
        pages = logs.get_paginator("describe_log_groups").paginate(PaginationConfig={"PageSize": 1})
        expect(group in [x["logGroupName"] for p in pages for x in p["logGroups"]], "paginated")

    def describe_streams():
        r = logs.describe_log_streams(logGroupName=group, orderBy="LastEventTime", descending=True)
        streams = r["logStreams"]
        expect(len(streams) == 1, streams)
        s = streams[0]
        expect(STREAM_NAME.match(s["logStreamName"]), s["logStreamName"])
        expect(s["firstEventTimestamp"] <= s["lastEventTimestamp"], s)
        expect(":log-stream:" in s["arn"], s)
        state["stream"] = s["logStreamName"]
        raises(exc.ResourceNotFoundException,
               lambda: logs.describe_log_streams(logGroupName="/aws/lambda/missing-" + suffix))
        raises(exc.InvalidParameterException,
               lambda: logs.describe_log_streams(logGroupName=group, orderBy="LastEventTime",
                                                 logStreamNamePrefix="2"))

    def get_events_from_head():
        r = logs.get_log_events(logGroupName=group, logStreamName=state["stream"], startFromHead=True)
        msgs = [e["message"] for e in r["events"]]
        expect(msgs[0].startswith("INIT_START Runtime Version: python:3.12"), msgs[:2])
        expect(msgs[1].startswith("START RequestId: ") and msgs[1].endswith(" Version: $LATEST"), msgs[1])
        i = msgs.index("marker-1 for 1")
        # print("two\nlines") is two events; a logging call with a newline stays one (\r).
        expect(msgs[i + 1:i + 3] == ["two", "lines"], msgs[i:i + 4])
        expect(msgs[i + 3].startswith("[WARNING]") and msgs[i + 3].endswith("warned\ronce"), msgs[i + 3])
        expect(msgs[i + 4] == "no newline at the end", msgs[i + 4])
        expect(msgs[i + 5].startswith("END RequestId: "), msgs[i + 5])
        expect(msgs[i + 6].startswith("REPORT RequestId: ") and "\tBilled Duration: " in msgs[i + 6], msgs[i + 6])
        expect("Init Duration" in msgs[i + 6], "the first REPORT has an Init Duration")
        expect(sum(m.startswith("START ") for m in msgs) == 2, msgs)
        expect(all(e["timestamp"] >= state["t0"] - 60000 and e["ingestionTime"] >= e["timestamp"] - 5000
                   for e in r["events"]), r["events"][:2])
        state["all"] = msgs
        # At the end, the forward token comes back unchanged.
        fwd = r["nextForwardToken"]
        r2 = logs.get_log_events(logGroupName=group, logStreamName=state["stream"], nextToken=fwd)
        expect(r2["events"] == [] and r2["nextForwardToken"] == fwd, r2)

    def get_events_backward():
        r = logs.get_log_events(logGroupName=group, logStreamName=state["stream"], limit=3)
        msgs = [e["message"] for e in r["events"]]
        expect(msgs == state["all"][-3:], msgs)
        older = []
        token = r["nextBackwardToken"]
        while True:
            page = logs.get_log_events(logGroupName=group, logStreamName=state["stream"], limit=3,
                                       nextToken=token)
            if not page["events"]:
                break
            older = [e["message"] for e in page["events"]] + older
            token = page["nextBackwardToken"]
        expect(older + msgs == state["all"], (older + msgs, state["all"]))

    def get_events_errors():
        raises(exc.ResourceNotFoundException,
               lambda: logs.get_log_events(logGroupName="/aws/lambda/missing-" + suffix, logStreamName="x"))
        raises(exc.ResourceNotFoundException,
               lambda: logs.get_log_events(logGroupName=group, logStreamName="no-such-stream"))
        raises(exc.InvalidParameterException,
               lambda: logs.get_log_events(logGroupName=group, logStreamName=state["stream"],
                                           nextToken="f/not-a-token"))

    def filter_events():
        r = logs.filter_log_events(logGroupName=group, filterPattern="marker-1")
        msgs = [e["message"] for e in r["events"]]
        expect(msgs == ["marker-1 for 1", "marker-1 for 2"], msgs)
        expect(all(e["logStreamName"] == state["stream"] and e["eventId"] for e in r["events"]), r["events"])
        r = logs.filter_log_events(logGroupName=group, filterPattern='?"marker-1 for 2" ?"two"')
        expect([e["message"] for e in r["events"]] == ["two", "marker-1 for 2", "two"], r["events"])
        r = logs.filter_log_events(logGroupName=group, filterPattern="RequestId -REPORT -START")
        expect(len(r["events"]) == 2 and all(e["message"].startswith("END") for e in r["events"]), r)
        future = int(time.time() * 1000) + 3600_000
        r = logs.filter_log_events(logGroupName=group, startTime=future)
        expect(r["events"] == [], r["events"])
        r = logs.filter_log_events(logGroupName=group, logStreamNames=["no-such-stream"])
        expect(r["events"] == [], r["events"])
        raises(exc.ResourceNotFoundException,
               lambda: logs.filter_log_events(logGroupName="/aws/lambda/missing-" + suffix))
        raises(exc.InvalidParameterException,
               lambda: logs.filter_log_events(logGroupName=group, nextToken="123"))

    def filter_paginates():
        pages = list(logs.get_paginator("filter_log_events").paginate(
            logGroupName=group, logStreamNames=[state["stream"]], PaginationConfig={"PageSize": 2}))
        expect(len(pages) > 3, len(pages))
        msgs = [e["message"] for p in pages for e in p["events"]]
        expect(msgs == state["all"], (msgs, state["all"]))

    def retention():
        raises(exc.InvalidParameterException,
               lambda: logs.put_retention_policy(logGroupName=group, retentionInDays=2))
        raises(exc.ResourceNotFoundException,
               lambda: logs.put_retention_policy(logGroupName="/aws/lambda/missing-" + suffix,
                                                 retentionInDays=7))
        logs.put_retention_policy(logGroupName=group, retentionInDays=7)
        g = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
        expect(g["retentionInDays"] == 7, g)
        r = logs.filter_log_events(logGroupName=group, filterPattern="marker-1")
        expect(len(r["events"]) == 2, "recent events stay under a 7-day retention")

    def json_format():
        cfg = {"LogFormat": "JSON", "ApplicationLogLevel": "WARN", "SystemLogLevel": "INFO"}
        r = create(json_fn, "python3.12", "lambda_function.handler", {"lambda_function.py": PY_JSON}, cfg)
        expect(r["LoggingConfig"] == dict(cfg, LogGroup="/aws/lambda/" + json_fn), r["LoggingConfig"])
        node_cfg = {"LogFormat": "JSON", "ApplicationLogLevel": "ERROR", "SystemLogLevel": "WARN"}
        r = create(node_fn, "nodejs20.x", "index.handler", {"index.js": NODE_JSON}, node_cfg)
        expect(r["LoggingConfig"]["ApplicationLogLevel"] == "ERROR", r["LoggingConfig"])
        invoke(json_fn, 7)
        invoke(node_fn, 8)
        msgs = [e["message"] for e in logs.filter_log_events(logGroupName="/aws/lambda/" + json_fn)["events"]]
        records = [json.loads(m) for m in msgs if m.startswith("{")]
        app = [x for x in records if "level" in x]
        expect([x["message"] for x in app] == ["shown-warning 7"], msgs)
        expect(app[0]["level"] == "WARNING" and app[0]["requestId"] and app[0]["timestamp"].endswith("Z"), app[0])
        types = [x.get("type") for x in records if "type" in x]
        expect(types == ["platform.initStart", "platform.start", "platform.report"], types)
        report = [x for x in records if x.get("type") == "platform.report"][0]["record"]
        expect(report["status"] == "success" and report["metrics"]["billedDurationMs"] >= 1, report)
        expect(report["requestId"] == app[0]["requestId"], (report, app[0]))
        expect("plain print" in msgs, msgs)
        msgs = [e["message"] for e in logs.filter_log_events(logGroupName="/aws/lambda/" + node_fn)["events"]]
        app = [json.loads(m) for m in msgs if m.startswith('{"timestamp"')]
        expect([(x["level"], x["message"]) for x in app] == [("ERROR", "shown-error 8")], msgs)
        expect(not any("hidden" in m for m in msgs), msgs)
        expect(not any('"platform.' in m for m in msgs), "SystemLogLevel WARN hides platform records")
        # UpdateFunctionConfiguration: back to Text drops the levels; a level with Text is refused.
        r = lam.update_function_configuration(FunctionName=node_fn, LoggingConfig={"LogFormat": "Text"})
        expect(r["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": "/aws/lambda/" + node_fn}, r["LoggingConfig"])
        r = lam.get_function_configuration(FunctionName=json_fn)
        expect(r["LoggingConfig"]["ApplicationLogLevel"] == "WARN", r["LoggingConfig"])
        raises(lam.exceptions.InvalidParameterValueException,
               lambda: lam.update_function_configuration(FunctionName=node_fn,
                                                        LoggingConfig={"ApplicationLogLevel": "WARN"}))

    def custom_group_and_delete():
        r = create(custom_fn, "python3.12", "lambda_function.handler", {"lambda_function.py": PY_TEXT},
                   {"LogGroup": custom_group})
        expect(r["LoggingConfig"]["LogGroup"] == custom_group, r["LoggingConfig"])
        invoke(custom_fn, 3)
        r = logs.filter_log_events(logGroupName=custom_group, filterPattern="marker-1")
        expect([e["message"] for e in r["events"]] == ["marker-1 for 3"], r["events"])
        raises(exc.ResourceNotFoundException,
               lambda: logs.describe_log_streams(logGroupName="/aws/lambda/" + custom_fn))
        lam.delete_function(FunctionName=custom_fn)
        raises(exc.ResourceNotFoundException, lambda: logs.describe_log_streams(logGroupName=custom_group))
        lam.delete_function(FunctionName=text_fn)
        expect(logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"] == [], "deleted with the function")

    def delete_group():
        g = "/aws/lambda/" + json_fn
        logs.delete_log_group(logGroupName=g)
        expect(logs.describe_log_groups(logGroupNamePrefix=g)["logGroups"] == [], "deleted")
        raises(exc.ResourceNotFoundException, lambda: logs.delete_log_group(logGroupName=g))
        for name in (json_fn, node_fn):
            lam.delete_function(FunctionName=name)

    for name, fn in [
        ("create and invoke a Text function", setup),
        ("describe_log_groups (+ paginator)", describe_groups),
        ("describe_log_streams + errors", describe_streams),
        ("get_log_events startFromHead: INIT_START/START/lines/END/REPORT", get_events_from_head),
        ("get_log_events backward paging", get_events_backward),
        ("get_log_events errors", get_events_errors),
        ("filter_log_events terms, time, streams, errors", filter_events),
        ("filter_log_events paginator", filter_paginates),
        ("put_retention_policy", retention),
        ("LoggingConfig JSON: runtimes' records, levels, platform records", json_format),
        ("LoggingConfig LogGroup; delete_function deletes logs", custom_group_and_delete),
        ("delete_log_group", delete_group),
    ]:
        c.run(name, fn)
    print("%d passed, %d failed" % (c.passed, c.failed))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
