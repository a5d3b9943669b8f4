//! End-to-end tests of what deploy tools rely on (process executor, real Python runtime):
//! published versions run their own code and configuration, aliases route (with weights),
//! layers reach the instance, and all of it survives a restart.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{json, Value};

/// Answers which code version it is, the environment it sees and the layer module's value.
const PY_V: &str = "import os\n\
VERSION = 'CODE'\n\
def handler(event, context):\n    \
    try:\n        import layer_mod\n        layer = layer_mod.VALUE\n    except ImportError:\n        layer = None\n    \
    return {'code': VERSION, 'env': os.environ.get('COLOR'), 'layer': layer, \
'opt': os.path.exists('/opt/python/layer_mod.py'), 'version': context.function_version, \
'arn': context.invoked_function_arn}\n";

fn code(version: &str) -> String {
    PY_V.replace("CODE", version)
}

fn function_path(name: &str, rest: &str) -> String {
    format!("/2015-03-31/functions/{name}{rest}")
}

fn invoke_with(server: &TestServer, name: &str, qualifier: Option<&str>) -> (Value, String) {
    let path = match qualifier {
        Some(q) => function_path(name, &format!("/invocations?Qualifier={q}")),
        None => function_path(name, "/invocations"),
    };
    let resp = server.call("POST", &path, &[], b"{}");
    let version = resp
        .header_str("X-Amz-Executed-Version")
        .unwrap_or_default()
        .to_string();
    (expect_success(&resp), version)
}

fn publish(server: &TestServer, name: &str) -> Value {
    expect_json(
        &server.call_json("POST", &function_path(name, "/versions"), &json!({})),
        201,
    )
}

fn update_env(server: &TestServer, name: &str, color: &str) {
    let body = json!({"Environment": {"Variables": {"COLOR": color}}});
    expect_json(
        &server.call_json("PUT", &function_path(name, "/configuration"), &body),
        200,
    );
}

#[test]
fn versions_keep_their_code_and_configuration() {
    let server = TestServer::new();
    let name = unique_name("ver");
    let created = server.create_python(
        &name,
        &code("one"),
        json!({"Publish": true, "Environment": {"Variables": {"COLOR": "red"}}}),
    );
    assert_eq!(created["Version"], "1");
    assert!(created["FunctionArn"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{name}:1")));
    // An unchanged function publishes no new version.
    assert_eq!(publish(&server, &name)["Version"], "1");

    expect_json(
        &server.update_code(
            &name,
            &[("lambda_function.py", code("two").as_bytes(), 0o644)],
        ),
        200,
    );
    update_env(&server, &name, "blue");
    assert_eq!(publish(&server, &name)["Version"], "2");
    expect_json(
        &server.update_code(
            &name,
            &[("lambda_function.py", code("three").as_bytes(), 0o644)],
        ),
        200,
    );

    let (v1, executed) = invoke_with(&server, &name, Some("1"));
    assert_eq!(
        (v1["code"].as_str(), v1["env"].as_str(), executed.as_str()),
        (Some("one"), Some("red"), "1")
    );
    assert_eq!(v1["version"], "1");
    let (v2, executed) = invoke_with(&server, &name, Some("2"));
    assert_eq!(
        (v2["code"].as_str(), v2["env"].as_str(), executed.as_str()),
        (Some("two"), Some("blue"), "2")
    );
    let (latest, executed) = invoke_with(&server, &name, None);
    assert_eq!(
        (latest["code"].as_str(), executed.as_str()),
        (Some("three"), "$LATEST")
    );
    // A qualified ARN as the function name works like the Qualifier parameter.
    let arn = format!("arn:aws:lambda:us-east-1:000000000000:function:{name}:1");
    let (by_arn, executed) = invoke_with(&server, &arn.replace(':', "%3A"), None);
    assert_eq!(
        (by_arn["code"].as_str(), executed.as_str()),
        (Some("one"), "1")
    );

    let versions = expect_json(
        &server.call("GET", &function_path(&name, "/versions"), &[], b""),
        200,
    );
    let listed: Vec<&str> = versions["Versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Version"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["$LATEST", "1", "2"]);
    let page = expect_json(
        &server.call(
            "GET",
            &function_path(&name, "/versions?MaxItems=2"),
            &[],
            b"",
        ),
        200,
    );
    assert_eq!(page["Versions"].as_array().unwrap().len(), 2);
    let marker = page["NextMarker"].as_str().unwrap();
    let rest = expect_json(
        &server.call(
            "GET",
            &function_path(&name, &format!("/versions?Marker={marker}")),
            &[],
            b"",
        ),
        200,
    );
    assert_eq!(rest["Versions"][0]["Version"], "2");

    // Configuration of a version by qualifier.
    let c1 = expect_json(
        &server.call(
            "GET",
            &function_path(&name, "/configuration?Qualifier=1"),
            &[],
            b"",
        ),
        200,
    );
    assert_eq!(c1["Environment"]["Variables"]["COLOR"], "red");
    let missing = server.call(
        "POST",
        &function_path(&name, "/invocations?Qualifier=9"),
        &[],
        b"{}",
    );
    expect_aws_error(&missing, 404, "ResourceNotFoundException");

    // Deleting version 1 leaves 2 and $LATEST running.
    let del = server.call("DELETE", &function_path(&name, "?Qualifier=1"), &[], b"");
    assert_eq!(del.status, 204, "{}", describe(&del));
    expect_aws_error(
        &server.call(
            "POST",
            &function_path(&name, "/invocations?Qualifier=1"),
            &[],
            b"{}",
        ),
        404,
        "ResourceNotFoundException",
    );
    assert_eq!(invoke_with(&server, &name, Some("2")).0["code"], "two");
    // Numbers are never reused.
    update_env(&server, &name, "green");
    assert_eq!(publish(&server, &name)["Version"], "3");
}

#[test]
fn aliases_route_and_split_by_weight() {
    let server = TestServer::new();
    let name = unique_name("alias");
    server.create_python(&name, &code("one"), json!({"Publish": true}));
    expect_json(
        &server.update_code(
            &name,
            &[("lambda_function.py", code("two").as_bytes(), 0o644)],
        ),
        200,
    );
    assert_eq!(publish(&server, &name)["Version"], "2");

    let body = json!({"Name": "live", "FunctionVersion": "1", "Description": "d"});
    let alias = expect_json(
        &server.call_json("POST", &function_path(&name, "/aliases"), &body),
        201,
    );
    assert!(alias["AliasArn"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{name}:live")));
    let dup = server.call_json("POST", &function_path(&name, "/aliases"), &body);
    expect_aws_error(&dup, 409, "ResourceConflictException");
    let bad = json!({"Name": "123", "FunctionVersion": "1"});
    expect_aws_error(
        &server.call_json("POST", &function_path(&name, "/aliases"), &bad),
        400,
        "ValidationException",
    );
    let to_missing = json!({"Name": "x", "FunctionVersion": "7"});
    expect_aws_error(
        &server.call_json("POST", &function_path(&name, "/aliases"), &to_missing),
        404,
        "ResourceNotFoundException",
    );

    let (out, executed) = invoke_with(&server, &name, Some("live"));
    assert_eq!(
        (out["code"].as_str(), executed.as_str()),
        (Some("one"), "1")
    );
    assert!(
        out["arn"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{name}:live")),
        "{out}"
    );
    let (by_version, _) = invoke_with(&server, &name, Some("1"));
    assert!(by_version["arn"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{name}:1")));

    // Half of the invocations go to version 2.
    let routed = json!({"RoutingConfig": {"AdditionalVersionWeights": {"2": 0.5}}});
    let updated = expect_json(
        &server.call_json("PUT", &function_path(&name, "/aliases/live"), &routed),
        200,
    );
    assert_eq!(
        updated["RoutingConfig"]["AdditionalVersionWeights"]["2"],
        0.5
    );
    let mut seen: HashMap<String, u32> = HashMap::new();
    for _ in 0..60 {
        let (out, executed) = invoke_with(&server, &name, Some("live"));
        assert_eq!(out["code"], if executed == "1" { "one" } else { "two" });
        *seen.entry(executed).or_default() += 1;
    }
    // With p = 0.5 over 60 draws, fewer than 10 of either has odds below 1e-7.
    assert!(
        seen.get("1").copied().unwrap_or(0) >= 10 && seen.get("2").copied().unwrap_or(0) >= 10,
        "{seen:?}"
    );

    // A version an alias routes to cannot be deleted.
    let del = server.call("DELETE", &function_path(&name, "?Qualifier=2"), &[], b"");
    expect_aws_error(&del, 409, "ResourceConflictException");
    // Moving the alias, then listing.
    let moved = json!({"FunctionVersion": "2", "RoutingConfig": {"AdditionalVersionWeights": {}}});
    expect_json(
        &server.call_json("PUT", &function_path(&name, "/aliases/live"), &moved),
        200,
    );
    assert_eq!(invoke_with(&server, &name, Some("live")).1, "2");
    let list = expect_json(
        &server.call("GET", &function_path(&name, "/aliases"), &[], b""),
        200,
    );
    assert_eq!(list["Aliases"].as_array().unwrap().len(), 1);
    assert!(list["Aliases"][0].get("RoutingConfig").is_none());
    assert_eq!(
        server
            .call("DELETE", &function_path(&name, "/aliases/live"), &[], b"")
            .status,
        204
    );
    expect_aws_error(
        &server.call("GET", &function_path(&name, "/aliases/live"), &[], b""),
        404,
        "ResourceNotFoundException",
    );
}

#[test]
fn layers_reach_the_instance_and_outlive_their_deletion() {
    let server = TestServer::new();
    let layer = unique_name("lay");
    let publish_layer = |value: &str| {
        let zip = zip_b64(&[(
            "python/layer_mod.py",
            format!("VALUE = '{value}'\n").as_bytes(),
            0o644,
        )]);
        let body = json!({"Content": {"ZipFile": zip}, "CompatibleRuntimes": ["python3.12"], "Description": value});
        expect_json(
            &server.call_json(
                "POST",
                &format!("/2018-10-31/layers/{layer}/versions"),
                &body,
            ),
            201,
        )
    };
    let l1 = publish_layer("first");
    let l2 = publish_layer("second");
    assert_eq!(
        (l1["Version"].as_u64(), l2["Version"].as_u64()),
        (Some(1), Some(2))
    );
    let arn1 = l1["LayerVersionArn"].as_str().unwrap().to_string();
    let arn2 = l2["LayerVersionArn"].as_str().unwrap().to_string();

    let name = unique_name("withlayer");
    // Later layers override earlier files.
    let created = server.create_python(&name, &code("one"), json!({"Layers": [arn1, arn2]}));
    assert_eq!(created["Layers"][1]["Arn"], arn2);
    let (out, _) = invoke_with(&server, &name, None);
    assert_eq!(out["layer"], "second", "{out}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(
            out["opt"], true,
            "root: the merged layers are mounted at /opt"
        );
    }

    // Deleting layer version 2 hides it from the API but not from the function using it.
    let del = server.call(
        "DELETE",
        &format!("/2018-10-31/layers/{layer}/versions/2"),
        &[],
        b"",
    );
    assert_eq!(del.status, 204);
    expect_aws_error(
        &server.call(
            "GET",
            &format!("/2018-10-31/layers/{layer}/versions/2"),
            &[],
            b"",
        ),
        404,
        "ResourceNotFoundException",
    );
    let listed = expect_json(
        &server.call(
            "GET",
            &format!("/2018-10-31/layers/{layer}/versions"),
            &[],
            b"",
        ),
        200,
    );
    assert_eq!(listed["LayerVersions"].as_array().unwrap().len(), 1);
    let by_arn = server.call(
        "GET",
        &format!(
            "/2018-10-31/layers?find=LayerVersion&Arn={}",
            arn1.replace(':', "%3A")
        ),
        &[],
        b"",
    );
    assert_eq!(expect_json(&by_arn, 200)["Version"], 1);
    // A new instance (after a configuration change) still merges the deleted layer.
    update_env(&server, &name, "x");
    assert_eq!(invoke_with(&server, &name, None).0["layer"], "second");
    // ... but it cannot be added anew, and a 6th layer is refused.
    let other = unique_name("nolayer");
    let refused = server.create_function(
        &other,
        "python3.12",
        "lambda_function.handler",
        &[("lambda_function.py", code("x").as_bytes(), 0o644)],
        json!({"Layers": [arn2]}),
    );
    expect_aws_error(&refused, 400, "InvalidParameterValueException");
    let six = vec![arn1.clone(); 6];
    let refused = server.create_function(
        &other,
        "python3.12",
        "lambda_function.handler",
        &[("lambda_function.py", code("x").as_bytes(), 0o644)],
        json!({"Layers": six}),
    );
    expect_aws_error(&refused, 400, "InvalidParameterValueException");
}

#[test]
fn versions_aliases_layers_and_metadata_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("persist");
    let layer = unique_name("plyr");
    {
        let server = TestServer::start_in(dir.path(), |_| {});
        let zip = zip_b64(&[("python/layer_mod.py", b"VALUE = 'kept'\n", 0o644)]);
        let l = expect_json(
            &server.call_json(
                "POST",
                &format!("/2018-10-31/layers/{layer}/versions"),
                &json!({"Content": {"ZipFile": zip}}),
            ),
            201,
        );
        server.create_python(
            &name,
            &code("one"),
            json!({"Publish": true, "Layers": [l["LayerVersionArn"]], "Tags": {"team": "a"}}),
        );
        expect_json(
            &server.update_code(
                &name,
                &[("lambda_function.py", code("two").as_bytes(), 0o644)],
            ),
            200,
        );
        expect_json(
            &server.call_json(
                "POST",
                &function_path(&name, "/aliases"),
                &json!({"Name": "live", "FunctionVersion": "1"}),
            ),
            201,
        );
        let perm = json!({"StatementId": "s1", "Action": "lambda:InvokeFunction", "Principal": "s3.amazonaws.com"});
        expect_json(
            &server.call_json("POST", &function_path(&name, "/policy"), &perm),
            201,
        );
        server.shutdown();
    }
    let server = TestServer::start_in(dir.path(), |_| {});
    let (out, executed) = invoke_with(&server, &name, Some("live"));
    assert_eq!(
        (
            out["code"].as_str(),
            out["layer"].as_str(),
            executed.as_str()
        ),
        (Some("one"), Some("kept"), "1")
    );
    assert_eq!(invoke_with(&server, &name, None).0["code"], "two");
    let got = expect_json(
        &server.call("GET", &function_path(&name, ""), &[], b""),
        200,
    );
    assert_eq!(got["Tags"]["team"], "a");
    let policy = expect_json(
        &server.call("GET", &function_path(&name, "/policy"), &[], b""),
        200,
    );
    assert!(policy["Policy"]
        .as_str()
        .unwrap()
        .contains("\"Sid\":\"s1\""));
    // Deleting the function removes its versions and aliases with it.
    assert_eq!(
        server
            .call("DELETE", &function_path(&name, ""), &[], b"")
            .status,
        204
    );
    expect_aws_error(
        &server.call(
            "POST",
            &function_path(&name, "/invocations?Qualifier=live"),
            &[],
            b"{}",
        ),
        404,
        "ResourceNotFoundException",
    );
    // Its files go once its last instance (killed by the delete) has let go of them.
    let function_dir = dir.path().join("functions").join(&name);
    assert!(wait_until(std::time::Duration::from_secs(10), || {
        !function_dir.exists()
    }));
    server.shutdown();
}
