#!/usr/bin/env python3
"""boto3 against a running Lambda@Home: the deployment operations (versions, aliases, layers,
tags, resource policy, code signing config, event invoke config, qualified invokes and ARNs).

Usage: python3 tests/boto3_deploy.py http://127.0.0.1:PORT

Every check follows AWS's documented behaviour (the botocore model for paths and shapes, the
Lambda API reference for errors): publishing snapshots $LATEST and is idempotent, versions are
immutable, aliases route (with weights) to versions, layers are importable from /opt/python,
policies are per qualifier. Prints one line per check and `N passed, M failed`; exits non-zero on
any failure. Talks only to the given endpoint.
"""

import base64
import hashlib
import json
import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from boto3_support import Checks, expect, raises, zip_of

ROLE = "arn:aws:iam::000000000000:role/lambda"

# The function under test: reports its code generation, environment, version and the layer.
HANDLER = """
import os

def handler(event, context):
    try:
        import deploy_layer
        layer = deploy_layer.WORD
    except ImportError:
        layer = None
    return {"code": %r, "greeting": os.environ.get("GREETING"),
            "version": context.function_version, "arn": context.invoked_function_arn,
            "layer": layer, "event": event}
"""

LAYER_MODULE = 'WORD = "from-layer"\n'

# How many invocations of a 50/50 alias must show both versions (chance of a false failure with
# a fair split: 2 * 0.5**WEIGHTED_INVOKES).
WEIGHTED_INVOKES = 40

# AWS's limit on layers per function.
LAYERS_PER_FUNCTION_MAX = 5


def sha256_b64(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def raises_code(code, status, fn):
    """Runs fn and asserts a ClientError with this error code and HTTP status (for errors that
    botocore does not model as exception classes, such as ValidationException)."""
    try:
        fn()
    except ClientError as e:
        got = e.response["Error"]["Code"]
        got_status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        expect((got, got_status) == (code, status), "expected %s/%d, got %s/%d: %s" % (code, status, got, got_status, e))
        return e
    raise AssertionError("expected %s, nothing was raised" % code)


def invoke_json(client, name, event=None, **kwargs):
    resp = client.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode(), **kwargs)
    body = json.loads(resp["Payload"].read() or b"null")
    expect("FunctionError" not in resp, (resp.get("FunctionError"), body))
    return resp, body


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
    fn = "deploy-" + suffix
    layer = "deploy-layer-" + suffix
    code_v1 = zip_of({"lambda_function.py": HANDLER % "v1"})
    code_v2 = zip_of({"lambda_function.py": HANDLER % "v2"})
    layer_zip = zip_of({"python/deploy_layer.py": LAYER_MODULE})
    state = {}
    c = Checks()

    # ---- layers -------------------------------------------------------------------------------

    def publish_layer():
        r = client.publish_layer_version(
            LayerName=layer,
            Description="deploy test layer",
            Content={"ZipFile": layer_zip},
            CompatibleRuntimes=["python3.12"],
            LicenseInfo="MIT",
        )
        expect(r["ResponseMetadata"]["HTTPStatusCode"] == 201, r["ResponseMetadata"])
        expect(r["Version"] == 1, r)
        expect(r["LayerArn"].endswith(":layer:" + layer), r["LayerArn"])
        expect(r["LayerVersionArn"] == r["LayerArn"] + ":1", r)
        expect(r["Content"]["CodeSha256"] == sha256_b64(layer_zip), r["Content"])
        expect(r["Content"]["CodeSize"] == len(layer_zip), r["Content"])
        expect(r["CompatibleRuntimes"] == ["python3.12"], r)
        expect(r["Description"] == "deploy test layer" and r["LicenseInfo"] == "MIT", r)
        expect("CreatedDate" in r, r)
        state["layer_arn"] = r["LayerVersionArn"]
        state["layer_base"] = r["LayerArn"]
        r2 = client.publish_layer_version(LayerName=layer, Content={"ZipFile": layer_zip})
        expect(r2["Version"] == 2 and r2["LayerVersionArn"] == r["LayerArn"] + ":2", r2)

    def get_layer_versions():
        r = client.get_layer_version(LayerName=layer, VersionNumber=1)
        expect(r["LayerVersionArn"] == state["layer_arn"], r)
        expect(r["Content"]["CodeSha256"] == sha256_b64(layer_zip), r)
        by_arn = client.get_layer_version_by_arn(Arn=state["layer_arn"])
        expect(by_arn["Version"] == 1 and by_arn["LayerVersionArn"] == state["layer_arn"], by_arn)
        listed = client.list_layer_versions(LayerName=layer)["LayerVersions"]
        # AWS lists the newest version first.
        expect([v["Version"] for v in listed] == [2, 1], listed)
        layers = client.list_layers()["Layers"]
        mine = [l for l in layers if l["LayerName"] == layer]
        expect(len(mine) == 1, layers)
        expect(mine[0]["LatestMatchingVersion"]["Version"] == 2, mine)
        raises(exc.ResourceNotFoundException, lambda: client.get_layer_version(LayerName=layer, VersionNumber=99))

    def delete_layer_version():
        r = client.delete_layer_version(LayerName=layer, VersionNumber=2)
        expect(r["ResponseMetadata"]["HTTPStatusCode"] == 204, r["ResponseMetadata"])
        raises(exc.ResourceNotFoundException, lambda: client.get_layer_version(LayerName=layer, VersionNumber=2))
        raises(
            exc.ResourceNotFoundException,
            lambda: client.get_layer_version_by_arn(Arn=state["layer_base"] + ":2"),
        )
        # Deleting again is not an error, and version numbers are never reused.
        client.delete_layer_version(LayerName=layer, VersionNumber=2)
        r3 = client.publish_layer_version(LayerName=layer, Content={"ZipFile": layer_zip})
        expect(r3["Version"] == 3, r3)
        client.delete_layer_version(LayerName=layer, VersionNumber=3)
        listed = client.list_layer_versions(LayerName=layer)["LayerVersions"]
        expect([v["Version"] for v in listed] == [1], listed)

    # ---- create with publish, layers, tags ------------------------------------------------------

    def create_published():
        r = client.create_function(
            FunctionName=fn,
            Runtime="python3.12",
            Role=ROLE,
            Handler="lambda_function.handler",
            Code={"ZipFile": code_v1},
            Environment={"Variables": {"GREETING": "hello"}},
            Layers=[state["layer_arn"]],
            Tags={"team": "platform", "stage": "test"},
            Publish=True,
        )
        expect(r["ResponseMetadata"]["HTTPStatusCode"] == 201, r["ResponseMetadata"])
        expect(r["State"] == "Active", r)
        expect(r["Layers"][0]["Arn"] == state["layer_arn"], r.get("Layers"))
        expect(r["Layers"][0]["CodeSize"] == len(layer_zip), r.get("Layers"))
        base = r["FunctionArn"]
        if base.endswith(":1"):
            base = base[: -len(":1")]
        expect(base.endswith(":function:" + fn), r["FunctionArn"])
        state["arn"] = base
        state["account"] = base.split(":")[4]

    def list_versions_after_create():
        versions = client.list_versions_by_function(FunctionName=fn)["Versions"]
        expect([v["Version"] for v in versions] == ["$LATEST", "1"], versions)
        expect(versions[0]["FunctionArn"] == state["arn"] + ":$LATEST", versions[0]["FunctionArn"])
        expect(versions[1]["FunctionArn"] == state["arn"] + ":1", versions[1]["FunctionArn"])
        v1 = versions[1]
        expect(v1["CodeSha256"] == sha256_b64(code_v1), v1)
        expect(v1["State"] == "Active" and v1["LastUpdateStatus"] == "Successful", v1)
        expect(v1["Environment"]["Variables"] == {"GREETING": "hello"}, v1)

    def layer_importable():
        _, body = invoke_json(client, fn, {"n": 1})
        expect(body["layer"] == "from-layer", body)
        expect(body["version"] == "$LATEST", body)

    def get_function_full():
        r = client.get_function(FunctionName=fn)
        expect(r["Configuration"]["FunctionName"] == fn, r["Configuration"])
        expect(r["Configuration"]["Version"] == "$LATEST", r["Configuration"])
        expect(r["Configuration"]["PackageType"] == "Zip", r["Configuration"])
        expect("Location" in r["Code"] and "RepositoryType" in r["Code"], r["Code"])
        expect(r["Tags"] == {"team": "platform", "stage": "test"}, r.get("Tags"))
        expect("Concurrency" not in r, r.get("Concurrency"))
        client.put_function_concurrency(FunctionName=fn, ReservedConcurrentExecutions=7)
        r = client.get_function(FunctionName=fn)
        expect(r["Concurrency"] == {"ReservedConcurrentExecutions": 7}, r.get("Concurrency"))
        client.delete_function_concurrency(FunctionName=fn)
        r = client.get_function(FunctionName=fn, Qualifier="1")
        expect(r["Configuration"]["Version"] == "1", r["Configuration"])
        expect(r["Configuration"]["FunctionArn"] == state["arn"] + ":1", r["Configuration"])

    def code_signing_config():
        r = client.get_function_code_signing_config(FunctionName=fn)
        expect(r["FunctionName"] == fn, r)
        expect(not r.get("CodeSigningConfigArn"), r)
        raises(
            exc.ResourceNotFoundException,
            lambda: client.get_function_code_signing_config(FunctionName="deploy-missing-" + suffix),
        )

    # ---- tags ---------------------------------------------------------------------------------

    def tags():
        r = client.list_tags(Resource=state["arn"])
        expect(r["Tags"] == {"team": "platform", "stage": "test"}, r)
        client.tag_resource(Resource=state["arn"], Tags={"owner": "ops", "stage": "prod"})
        r = client.list_tags(Resource=state["arn"])
        expect(r["Tags"] == {"team": "platform", "stage": "prod", "owner": "ops"}, r)
        client.untag_resource(Resource=state["arn"], TagKeys=["team", "owner"])
        r = client.list_tags(Resource=state["arn"])
        expect(r["Tags"] == {"stage": "prod"}, r)
        expect(client.get_function(FunctionName=fn)["Tags"] == {"stage": "prod"}, "GetFunction Tags")
        missing = state["arn"].replace(fn, "deploy-missing-" + suffix)
        raises(exc.ResourceNotFoundException, lambda: client.list_tags(Resource=missing))

    # ---- versions -------------------------------------------------------------------------------

    def publish_unchanged_is_idempotent():
        r = client.publish_version(FunctionName=fn)
        expect(r["Version"] == "1", r)
        r = client.publish_version(FunctionName=fn)
        expect(r["Version"] == "1", r)
        versions = client.list_versions_by_function(FunctionName=fn)["Versions"]
        expect([v["Version"] for v in versions] == ["$LATEST", "1"], versions)

    def update_code_publish():
        r = client.update_function_code(FunctionName=fn, ZipFile=code_v2)
        expect(r["CodeSha256"] == sha256_b64(code_v2), r)
        client.get_waiter("function_updated_v2").wait(FunctionName=fn, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        client.update_function_configuration(FunctionName=fn, Environment={"Variables": {"GREETING": "bonjour"}})
        client.get_waiter("function_updated_v2").wait(FunctionName=fn, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        latest = client.get_function_configuration(FunctionName=fn)
        state["revision"] = latest["RevisionId"]

    def publish_preconditions():
        raises(
            exc.InvalidParameterValueException,
            lambda: client.publish_version(FunctionName=fn, CodeSha256=sha256_b64(code_v1)),
        )
        raises(
            exc.PreconditionFailedException,
            lambda: client.publish_version(FunctionName=fn, RevisionId="00000000-0000-0000-0000-000000000000"),
        )
        versions = client.list_versions_by_function(FunctionName=fn)["Versions"]
        expect([v["Version"] for v in versions] == ["$LATEST", "1"], "a failed precondition published: %s" % versions)
        r = client.publish_version(
            FunctionName=fn, CodeSha256=sha256_b64(code_v2), RevisionId=state["revision"], Description="second"
        )
        expect(r["ResponseMetadata"]["HTTPStatusCode"] == 201, r["ResponseMetadata"])
        expect(r["Version"] == "2" and r["FunctionArn"] == state["arn"] + ":2", r)
        expect(r["Description"] == "second", r)
        expect(r["Environment"]["Variables"] == {"GREETING": "bonjour"}, r)

    def versions_are_immutable():
        r1, b1 = invoke_json(client, fn, {}, Qualifier="1")
        expect(r1["ExecutedVersion"] == "1", r1.get("ExecutedVersion"))
        expect((b1["code"], b1["greeting"], b1["version"]) == ("v1", "hello", "1"), b1)
        expect(b1["arn"] == state["arn"] + ":1", b1["arn"])
        r2, b2 = invoke_json(client, fn, {}, Qualifier="2")
        expect(r2["ExecutedVersion"] == "2", r2.get("ExecutedVersion"))
        expect((b2["code"], b2["greeting"], b2["version"]) == ("v2", "bonjour", "2"), b2)
        rl, bl = invoke_json(client, fn, {})
        expect(rl["ExecutedVersion"] == "$LATEST" and bl["code"] == "v2", (rl.get("ExecutedVersion"), bl))
        conf1 = client.get_function_configuration(FunctionName=fn, Qualifier="1")
        expect(conf1["Environment"]["Variables"] == {"GREETING": "hello"}, conf1)
        expect(conf1["CodeSha256"] == sha256_b64(code_v1), conf1)

    def unknown_version():
        raises(exc.ResourceNotFoundException, lambda: client.get_function(FunctionName=fn, Qualifier="99"))
        raises(exc.ResourceNotFoundException, lambda: client.get_function_configuration(FunctionName=fn, Qualifier="99"))
        raises(exc.ResourceNotFoundException, lambda: client.invoke(FunctionName=fn, Qualifier="99", Payload=b"{}"))

    def update_code_with_publish():
        # UpdateFunctionCode with Publish=True publishes in the same call.
        r = client.update_function_code(FunctionName=fn, ZipFile=code_v1, Publish=True)
        expect(r["Version"] == "3" and r["FunctionArn"] == state["arn"] + ":3", r)
        _, body = invoke_json(client, fn, {}, Qualifier="3")
        expect((body["code"], body["greeting"]) == ("v1", "bonjour"), body)

    # ---- qualified ARNs -------------------------------------------------------------------------

    def qualified_arns():
        r = client.get_function(FunctionName=state["arn"] + ":1")
        expect(r["Configuration"]["Version"] == "1", r["Configuration"])
        partial = "%s:function:%s" % (state["account"], fn)
        r = client.get_function_configuration(FunctionName=partial, Qualifier="2")
        expect(r["Version"] == "2", r)
        resp, body = invoke_json(client, state["arn"] + ":2", {})
        expect(resp["ExecutedVersion"] == "2" and body["code"] == "v2", (resp.get("ExecutedVersion"), body))
        resp, body = invoke_json(client, fn + ":1", {})
        expect(resp["ExecutedVersion"] == "1" and body["code"] == "v1", (resp.get("ExecutedVersion"), body))
        raises(
            exc.InvalidParameterValueException,
            lambda: client.get_function(FunctionName=state["arn"] + ":1", Qualifier="2"),
        )

    # ---- aliases --------------------------------------------------------------------------------

    def create_alias():
        r = client.create_alias(FunctionName=fn, Name="live", FunctionVersion="1", Description="prod")
        expect(r["ResponseMetadata"]["HTTPStatusCode"] == 201, r["ResponseMetadata"])
        expect(r["AliasArn"] == state["arn"] + ":live", r)
        expect(r["FunctionVersion"] == "1" and r["Name"] == "live" and r["Description"] == "prod", r)
        expect("RoutingConfig" not in r, r)
        state["alias_revision"] = r["RevisionId"]
        g = client.get_alias(FunctionName=fn, Name="live")
        expect(g["AliasArn"] == r["AliasArn"] and g["RevisionId"] == r["RevisionId"], g)
        resp, body = invoke_json(client, fn, {}, Qualifier="live")
        expect(resp["ExecutedVersion"] == "1" and body["code"] == "v1", (resp.get("ExecutedVersion"), body))
        expect(body["arn"] == state["arn"] + ":live", body["arn"])
        resp, _ = invoke_json(client, state["arn"] + ":live", {})
        expect(resp["ExecutedVersion"] == "1", resp.get("ExecutedVersion"))

    def alias_errors():
        raises(
            exc.ResourceNotFoundException,
            lambda: client.create_alias(FunctionName=fn, Name="ghost", FunctionVersion="42"),
        )
        raises(
            exc.ResourceConflictException,
            lambda: client.create_alias(FunctionName=fn, Name="live", FunctionVersion="2"),
        )
        # Alias names match (?!^[0-9]+$)([a-zA-Z0-9-_]+): all digits would read as a version.
        raises_code("ValidationException", 400, lambda: client.create_alias(FunctionName=fn, Name="123", FunctionVersion="1"))
        raises_code("ValidationException", 400, lambda: client.create_alias(FunctionName=fn, Name="bad.name!", FunctionVersion="1"))
        raises(exc.ResourceNotFoundException, lambda: client.get_alias(FunctionName=fn, Name="ghost"))
        raises(
            exc.PreconditionFailedException,
            lambda: client.update_alias(
                FunctionName=fn, Name="live", FunctionVersion="2", RevisionId="00000000-0000-0000-0000-000000000000"
            ),
        )
        expect(client.get_alias(FunctionName=fn, Name="live")["FunctionVersion"] == "1", "failed update moved the alias")

    def alias_weighted_routing():
        r = client.update_alias(
            FunctionName=fn,
            Name="live",
            FunctionVersion="2",
            RoutingConfig={"AdditionalVersionWeights": {"1": 0.5}},
            RevisionId=state["alias_revision"],
        )
        expect(r["FunctionVersion"] == "2", r)
        expect(r["RoutingConfig"]["AdditionalVersionWeights"] == {"1": 0.5}, r)
        seen = {}
        for _ in range(WEIGHTED_INVOKES):
            resp, body = invoke_json(client, fn, {}, Qualifier="live")
            executed = resp["ExecutedVersion"]
            expect(executed in ("1", "2"), executed)
            expect(body["version"] == executed, (executed, body))
            expect(body["code"] == {"1": "v1", "2": "v2"}[executed], (executed, body))
            seen[executed] = seen.get(executed, 0) + 1
        expect(set(seen) == {"1", "2"}, "a 50/50 alias ran only %s in %d invokes" % (seen, WEIGHTED_INVOKES))

    def alias_routing_cleared_and_listed():
        r = client.update_alias(FunctionName=fn, Name="live", FunctionVersion="2", RoutingConfig={"AdditionalVersionWeights": {}})
        expect(not r.get("RoutingConfig", {}).get("AdditionalVersionWeights"), r)
        for _ in range(5):
            resp, _ = invoke_json(client, fn, {}, Qualifier="live")
            expect(resp["ExecutedVersion"] == "2", resp.get("ExecutedVersion"))
        client.create_alias(FunctionName=fn, Name="edge", FunctionVersion="$LATEST")
        aliases = client.list_aliases(FunctionName=fn)["Aliases"]
        expect(sorted(a["Name"] for a in aliases) == ["edge", "live"], aliases)
        only_v2 = client.list_aliases(FunctionName=fn, FunctionVersion="2")["Aliases"]
        expect([a["Name"] for a in only_v2] == ["live"], only_v2)

    def delete_versions():
        # A version an alias points at cannot be deleted; $LATEST only with the whole function.
        raises(exc.ResourceConflictException, lambda: client.delete_function(FunctionName=fn, Qualifier="2"))
        raises(exc.InvalidParameterValueException, lambda: client.delete_function(FunctionName=fn, Qualifier="$LATEST"))
        client.delete_function(FunctionName=fn, Qualifier="3")
        raises(exc.ResourceNotFoundException, lambda: client.get_function(FunctionName=fn, Qualifier="3"))
        versions = client.list_versions_by_function(FunctionName=fn)["Versions"]
        expect([v["Version"] for v in versions] == ["$LATEST", "1", "2"], versions)
        client.delete_alias(FunctionName=fn, Name="edge")
        raises(exc.ResourceNotFoundException, lambda: client.get_alias(FunctionName=fn, Name="edge"))

    # ---- resource policy --------------------------------------------------------------------------

    def permissions():
        raises(exc.ResourceNotFoundException, lambda: client.get_policy(FunctionName=fn))
        r = client.add_permission(
            FunctionName=fn,
            StatementId="s3-invoke",
            Action="lambda:InvokeFunction",
            Principal="s3.amazonaws.com",
            SourceArn="arn:aws:s3:::deploy-bucket",
            SourceAccount=state["account"],
        )
        expect(r["ResponseMetadata"]["HTTPStatusCode"] == 201, r["ResponseMetadata"])
        statement = json.loads(r["Statement"])
        expect(statement["Sid"] == "s3-invoke" and statement["Effect"] == "Allow", statement)
        expect(statement["Principal"] == {"Service": "s3.amazonaws.com"}, statement)
        expect(statement["Action"] == "lambda:InvokeFunction", statement)
        expect(statement["Resource"] == state["arn"], statement)
        expect(statement["Condition"]["ArnLike"] == {"AWS:SourceArn": "arn:aws:s3:::deploy-bucket"}, statement)
        expect(statement["Condition"]["StringEquals"] == {"AWS:SourceAccount": state["account"]}, statement)
        client.add_permission(
            FunctionName=fn,
            StatementId="alias-only",
            Action="lambda:InvokeFunction",
            Principal="events.amazonaws.com",
            Qualifier="live",
        )
        g = client.get_policy(FunctionName=fn)
        policy = json.loads(g["Policy"])
        expect(policy["Version"] == "2012-10-17", policy)
        expect([s["Sid"] for s in policy["Statement"]] == ["s3-invoke"], policy)
        expect(g["RevisionId"], g)
        ga = json.loads(client.get_policy(FunctionName=fn, Qualifier="live")["Policy"])
        expect([s["Sid"] for s in ga["Statement"]] == ["alias-only"], ga)
        expect(ga["Statement"][0]["Resource"] == state["arn"] + ":live", ga)

    def permission_errors():
        raises(
            exc.ResourceConflictException,
            lambda: client.add_permission(
                FunctionName=fn, StatementId="s3-invoke", Action="lambda:InvokeFunction", Principal="s3.amazonaws.com"
            ),
        )
        raises(
            exc.PreconditionFailedException,
            lambda: client.add_permission(
                FunctionName=fn,
                StatementId="stale",
                Action="lambda:InvokeFunction",
                Principal="s3.amazonaws.com",
                RevisionId="00000000-0000-0000-0000-000000000000",
            ),
        )
        raises(exc.ResourceNotFoundException, lambda: client.remove_permission(FunctionName=fn, StatementId="nope"))
        raises(
            exc.ResourceNotFoundException,
            lambda: client.add_permission(
                FunctionName=fn, StatementId="v99", Action="lambda:InvokeFunction", Principal="s3.amazonaws.com", Qualifier="99"
            ),
        )

    def remove_permissions():
        r = client.remove_permission(FunctionName=fn, StatementId="s3-invoke")
        expect(r["ResponseMetadata"]["HTTPStatusCode"] == 204, r["ResponseMetadata"])
        raises(exc.ResourceNotFoundException, lambda: client.get_policy(FunctionName=fn))
        ga = json.loads(client.get_policy(FunctionName=fn, Qualifier="live")["Policy"])
        expect([s["Sid"] for s in ga["Statement"]] == ["alias-only"], ga)
        client.remove_permission(FunctionName=fn, StatementId="alias-only", Qualifier="live")
        raises(exc.ResourceNotFoundException, lambda: client.get_policy(FunctionName=fn, Qualifier="live"))

    # ---- event invoke config ----------------------------------------------------------------------

    def event_invoke_config():
        raises(exc.ResourceNotFoundException, lambda: client.get_function_event_invoke_config(FunctionName=fn))
        r = client.put_function_event_invoke_config(
            FunctionName=fn, Qualifier="live", MaximumRetryAttempts=1, MaximumEventAgeInSeconds=600
        )
        expect(r["FunctionArn"] == state["arn"] + ":live", r)
        expect(r["MaximumRetryAttempts"] == 1 and r["MaximumEventAgeInSeconds"] == 600, r)
        expect("LastModified" in r, r)
        g = client.get_function_event_invoke_config(FunctionName=fn, Qualifier="live")
        expect(g["MaximumRetryAttempts"] == 1 and g["MaximumEventAgeInSeconds"] == 600, g)
        # Update changes only what it names.
        u = client.update_function_event_invoke_config(FunctionName=fn, Qualifier="live", MaximumEventAgeInSeconds=120)
        expect(u["MaximumRetryAttempts"] == 1 and u["MaximumEventAgeInSeconds"] == 120, u)
        client.put_function_event_invoke_config(FunctionName=fn, MaximumRetryAttempts=0)
        latest = client.get_function_event_invoke_config(FunctionName=fn)
        expect(latest["FunctionArn"] == state["arn"] + ":$LATEST", latest)
        expect(latest["MaximumRetryAttempts"] == 0, latest)
        listed = client.list_function_event_invoke_configs(FunctionName=fn)["FunctionEventInvokeConfigs"]
        expect(sorted(x["FunctionArn"] for x in listed) == sorted([state["arn"] + ":$LATEST", state["arn"] + ":live"]), listed)
        # Put replaces the whole configuration: the age set above is not kept.
        p = client.put_function_event_invoke_config(FunctionName=fn, Qualifier="live", MaximumRetryAttempts=2)
        expect(p["MaximumRetryAttempts"] == 2 and p.get("MaximumEventAgeInSeconds") != 120, p)
        d = client.delete_function_event_invoke_config(FunctionName=fn, Qualifier="live")
        expect(d["ResponseMetadata"]["HTTPStatusCode"] == 204, d["ResponseMetadata"])
        raises(
            exc.ResourceNotFoundException,
            lambda: client.get_function_event_invoke_config(FunctionName=fn, Qualifier="live"),
        )
        client.delete_function_event_invoke_config(FunctionName=fn)
        listed = client.list_function_event_invoke_configs(FunctionName=fn)["FunctionEventInvokeConfigs"]
        expect(listed == [], listed)

    # ---- layer limits -----------------------------------------------------------------------------

    def sixth_layer():
        arns = []
        for i in range(LAYERS_PER_FUNCTION_MAX + 1):
            r = client.publish_layer_version(LayerName="%s-n%d" % (layer, i), Content={"ZipFile": layer_zip})
            arns.append(r["LayerVersionArn"])
        state["extra_layers"] = [a.rsplit(":", 2)[-2] for a in arns]
        raises(
            exc.InvalidParameterValueException,
            lambda: client.update_function_configuration(FunctionName=fn, Layers=arns),
        )
        raises(
            exc.InvalidParameterValueException,
            lambda: client.create_function(
                FunctionName=fn + "-six",
                Runtime="python3.12",
                Role=ROLE,
                Handler="lambda_function.handler",
                Code={"ZipFile": code_v1},
                Layers=arns,
            ),
        )
        conf = client.get_function_configuration(FunctionName=fn)
        expect([l["Arn"] for l in conf["Layers"]] == [state["layer_arn"]], conf.get("Layers"))
        ok = client.update_function_configuration(FunctionName=fn, Layers=arns[:LAYERS_PER_FUNCTION_MAX])
        expect(len(ok["Layers"]) == LAYERS_PER_FUNCTION_MAX, ok["Layers"])

    # ---- cleanup ----------------------------------------------------------------------------------

    def delete_everything():
        r = client.delete_function(FunctionName=fn)
        expect(r["ResponseMetadata"]["HTTPStatusCode"] in (200, 204), r["ResponseMetadata"])
        raises(exc.ResourceNotFoundException, lambda: client.get_function(FunctionName=fn))
        raises(exc.ResourceNotFoundException, lambda: client.get_function(FunctionName=fn, Qualifier="1"))
        raises(exc.ResourceNotFoundException, lambda: client.get_alias(FunctionName=fn, Name="live"))
        raises(exc.ResourceNotFoundException, lambda: client.list_versions_by_function(FunctionName=fn))
        for name in [layer] + state.get("extra_layers", []):
            for v in client.list_layer_versions(LayerName=name)["LayerVersions"]:
                client.delete_layer_version(LayerName=name, VersionNumber=v["Version"])
        raises(exc.ResourceNotFoundException, lambda: client.get_layer_version(LayerName=layer, VersionNumber=1))

    for name, check in [
        ("publish_layer_version (twice)", publish_layer),
        ("get_layer_version / by ARN / list_layer_versions / list_layers", get_layer_versions),
        ("delete_layer_version, numbers not reused", delete_layer_version),
        ("create_function Publish=True with layer, tags, environment", create_published),
        ("list_versions_by_function after create", list_versions_after_create),
        ("layer module importable from the function", layer_importable),
        ("get_function Code/Configuration/Tags/Concurrency", get_function_full),
        ("get_function_code_signing_config", code_signing_config),
        ("list_tags / tag_resource / untag_resource", tags),
        ("publish_version without changes returns the same version", publish_unchanged_is_idempotent),
        ("update code and environment of $LATEST", update_code_publish),
        ("publish_version CodeSha256/RevisionId preconditions", publish_preconditions),
        ("versions keep their own code and environment", versions_are_immutable),
        ("unknown version -> ResourceNotFoundException", unknown_version),
        ("update_function_code Publish=True", update_code_with_publish),
        ("qualified and partial ARNs as FunctionName", qualified_arns),
        ("create_alias / get_alias / invoke alias", create_alias),
        ("alias errors (missing version, duplicate, bad name, stale revision)", alias_errors),
        ("weighted alias routing splits invocations", alias_weighted_routing),
        ("alias routing cleared, list_aliases", alias_routing_cleared_and_listed),
        ("delete versions (alias-referenced, $LATEST, unreferenced)", delete_versions),
        ("add_permission / get_policy per qualifier", permissions),
        ("permission errors (duplicate sid, stale revision, missing sid/version)", permission_errors),
        ("remove_permission", remove_permissions),
        ("event invoke config put/get/update/list/delete", event_invoke_config),
        ("6th layer -> InvalidParameterValueException", sixth_layer),
        ("delete function and layers", delete_everything),
    ]:
        c.run(name, check)
    print("%d passed, %d failed" % (c.passed, c.failed))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
