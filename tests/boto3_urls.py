#!/usr/bin/env python3
"""boto3 against a running Lambda@Home: the function URL management calls as the AWS SDK speaks
them, and a request to the URL they return.

Usage: python3 tests/boto3_urls.py http://127.0.0.1:PORT

Creates a function, then its URL (create/get/update/list with the SDK's paginator/delete
FunctionUrlConfig, on `$LATEST` and on an alias), checks the modelled exceptions
(ResourceConflictException, ResourceNotFoundException, InvalidParameterValueException), and sends
one HTTP request to the returned FunctionUrl (to the endpoint's address, with the URL's host as
`Host`, so no name resolution is involved). Prints one line per check and `N passed, M failed`;
exits non-zero on any failure. Talks only to the given endpoint.
"""

import http.client
import json
import os
import sys
import time
import urllib.parse

import boto3
from botocore.config import Config

from boto3_support import Checks, expect, raises, zip_of

ROLE = "arn:aws:iam::000000000000:role/lambda"

PY_ECHO = """
import json
def handler(event, context):
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps({"path": event["rawPath"], "query": event.get("queryStringParameters"),
                                "method": event["requestContext"]["http"]["method"]})}
"""


def url_get(endpoint, function_url, path):
    """GET `path` of `function_url`, sent to the endpoint's address with the URL's Host."""
    api = urllib.parse.urlparse(endpoint)
    host = urllib.parse.urlparse(function_url).netloc
    conn = http.client.HTTPConnection(api.hostname, api.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


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
    name = "boto-url-" + suffix
    state = {}
    c = Checks()

    def create_function():
        client.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=ROLE,
            Handler="lambda_function.handler",
            Code={"ZipFile": zip_of({"lambda_function.py": PY_ECHO})},
            Publish=True,
        )
        client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    def create_url():
        r = client.create_function_url_config(
            FunctionName=name,
            AuthType="NONE",
            Cors={"AllowOrigins": ["https://app.example"], "AllowMethods": ["GET"], "MaxAge": 60},
        )
        expect(r["ResponseMetadata"]["HTTPStatusCode"] == 201, r["ResponseMetadata"])
        url = r["FunctionUrl"]
        expect(url.startswith("http://") and ".lambda-url.us-east-1.localhost:" in url, url)
        expect(r["FunctionArn"].endswith(":function:" + name), r)
        expect(r["AuthType"] == "NONE" and r["InvokeMode"] == "BUFFERED", r)
        expect(r["Cors"]["AllowOrigins"] == ["https://app.example"] and r["Cors"]["MaxAge"] == 60, r)
        state["url"] = url

    def create_conflict():
        raises(exc.ResourceConflictException,
               lambda: client.create_function_url_config(FunctionName=name, AuthType="NONE"))

    def create_invalid():
        raises(exc.InvalidParameterValueException,
               lambda: client.create_function_url_config(FunctionName=name, Qualifier="live",
                                                         AuthType="OPEN"))
        raises(exc.InvalidParameterValueException,
               lambda: client.create_function_url_config(FunctionName=name, Qualifier="live",
                                                         AuthType="NONE", Cors={"MaxAge": 90000}))

    def get_url():
        r = client.get_function_url_config(FunctionName=name)
        expect(r["FunctionUrl"] == state["url"], r)
        expect("LastModifiedTime" in r and "CreationTime" in r, r)

    def get_missing():
        raises(exc.ResourceNotFoundException,
               lambda: client.get_function_url_config(FunctionName=name, Qualifier="live"))
        raises(exc.ResourceNotFoundException,
               lambda: client.get_function_url_config(FunctionName=name + "-missing"))

    def invoke_url():
        status, body = url_get(endpoint, state["url"], "/hello?x=1")
        expect(status == 200, (status, body))
        got = json.loads(body)
        expect(got == {"path": "/hello", "query": {"x": "1"}, "method": "GET"}, got)

    def update_url():
        r = client.update_function_url_config(FunctionName=name, AuthType="AWS_IAM",
                                              InvokeMode="RESPONSE_STREAM")
        expect(r["FunctionUrl"] == state["url"], r)
        expect(r["AuthType"] == "AWS_IAM" and r["InvokeMode"] == "RESPONSE_STREAM", r)
        expect(r["Cors"]["AllowOrigins"] == ["https://app.example"], r)

    def alias_url():
        r = client.create_function_url_config(FunctionName=name, Qualifier="live", AuthType="NONE")
        expect(r["FunctionArn"].endswith(":function:%s:live" % name), r)
        expect(r["FunctionUrl"] != state["url"], r)
        status, _ = url_get(endpoint, r["FunctionUrl"], "/")
        expect(status == 200, status)

    def list_urls():
        pages = client.get_paginator("list_function_url_configs").paginate(
            FunctionName=name, PaginationConfig={"PageSize": 1})
        configs = [cfg for page in pages for cfg in page["FunctionUrlConfigs"]]
        expect(len(configs) == 2, configs)
        expect({cfg["FunctionArn"].rsplit(":", 1)[-1] for cfg in configs} == {name, "live"}, configs)

    def delete_urls():
        r = client.delete_function_url_config(FunctionName=name)
        expect(r["ResponseMetadata"]["HTTPStatusCode"] == 204, r["ResponseMetadata"])
        raises(exc.ResourceNotFoundException,
               lambda: client.delete_function_url_config(FunctionName=name))
        status, body = url_get(endpoint, state["url"], "/")
        expect(status == 403, (status, body))
        client.delete_alias(FunctionName=name, Name="live")
        r = client.list_function_url_configs(FunctionName=name)
        expect(r["FunctionUrlConfigs"] == [], r)
        client.delete_function(FunctionName=name)

    for check, fn in [
        ("create function and alias", create_function),
        ("create_function_url_config", create_url),
        ("create again -> ResourceConflictException", create_conflict),
        ("invalid AuthType / Cors.MaxAge -> InvalidParameterValueException", create_invalid),
        ("get_function_url_config", get_url),
        ("get missing -> ResourceNotFoundException", get_missing),
        ("GET the returned FunctionUrl", invoke_url),
        ("update_function_url_config", update_url),
        ("create_function_url_config on an alias", alias_url),
        ("list_function_url_configs paginator", list_urls),
        ("delete_function_url_config (and with the alias)", delete_urls),
    ]:
        c.run(check, fn)
    print("%d passed, %d failed" % (c.passed, c.failed))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
