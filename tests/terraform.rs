//! Terraform's hashicorp/aws provider (5.x) applies, updates, re-plans and destroys the stack in
//! `tests/terraform/main.tf` against an in-process server: a function published with a layer,
//! tags and environment, an alias, a resource-policy permission, an event invoke config and an
//! `aws_lambda_invocation` data source. The second apply ships new code and a new environment, so
//! the provider publishes version 2 and moves the alias; version 1 must keep running its own code.
//! A final `terraform plan -detailed-exitcode` must find nothing to change (every field the
//! provider reads back matches what it wrote), and `terraform destroy` must remove everything.
//!
//! Needs the `terraform` CLI (`LAH_TERRAFORM` names the binary, else `terraform` on PATH) and a
//! filesystem mirror holding hashicorp/aws 5.x (`LAH_TF_PROVIDER_MIRROR`, else Terraform's own
//! implied local mirror directories). Terraform never contacts a registry: the CLI configuration
//! written here installs the provider from the mirror only. Without either tool the test is
//! skipped with a notice naming what is missing, unless `LAH_REQUIRE_TERRAFORM=1` (CI) makes that a
//! failure. Each Terraform command is killed after `TERRAFORM_COMMAND_TIMEOUT`.
//!
//! Runs on the test thread; the server runs in-process on ephemeral loopback ports, and the
//! Terraform working directory (state, zips, CLI config) is a temporary directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{describe, expect_aws_error, expect_json, expect_success, unique_name, TestServer};
use serde_json::{json, Value};

/// Longest one Terraform command may run. An apply waits on the provider's own pollers (5 s
/// initial delay per function create, update and publish), so a healthy one takes well under a
/// minute; the margin covers a loaded machine.
const TERRAFORM_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Where Terraform itself looks for unpacked or packed providers when no CLI configuration says
/// otherwise (its "implied local mirror directories" on Unix), relative to `$HOME` or absolute.
const HOME_MIRRORS: &[&str] = &[".terraform.d/plugins", ".local/share/terraform/plugins"];
const SYSTEM_MIRRORS: &[&str] = &[
    "/usr/local/share/terraform/plugins",
    "/usr/share/terraform/plugins",
];

/// The provider's address inside a mirror directory.
const AWS_PROVIDER_DIR: &str = "registry.terraform.io/hashicorp/aws";

/// The function's code: reports which package ran, the environment, the layer's module and the
/// version the runtime says it is (so qualifier routing is visible in the result).
fn handler_source(code: &str) -> String {
    format!(
        r#"import os

import greeting_layer


def handler(event, context):
    return {{
        "code": "{code}",
        "greeting": os.environ.get("GREETING"),
        "layer": greeting_layer.WORD,
        "version": context.function_version,
        "event": event,
    }}
"#
    )
}

/// The layer's module, importable from the function as AWS puts `python/` of a layer on the path.
const LAYER_MODULE: &str = "WORD = \"from-layer\"\n";

/// The Terraform platform name of this machine (`linux_amd64`, ...), as provider packages use it.
fn terraform_platform() -> String {
    let os = std::env::consts::OS;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("{os}_{arch}")
}

/// Whether `mirror` holds hashicorp/aws 5.x for this platform, unpacked
/// (`aws/5.x.y/<platform>/`) or packed (`aws/terraform-provider-aws_5.x.y_<platform>.zip`).
fn mirror_has_aws_5(mirror: &Path) -> bool {
    let dir = mirror.join(AWS_PROVIDER_DIR);
    let platform = terraform_platform();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        let unpacked = name.starts_with("5.") && entry.path().join(&platform).is_dir();
        let packed = name.starts_with("terraform-provider-aws_5.")
            && name.ends_with(&format!("_{platform}.zip"));
        unpacked || packed
    })
}

/// The mirror to install the provider from, or a description of where none was found.
fn find_provider_mirror() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("LAH_TF_PROVIDER_MIRROR") {
        let path = PathBuf::from(path);
        return if mirror_has_aws_5(&path) {
            Ok(path)
        } else {
            Err(format!(
                "LAH_TF_PROVIDER_MIRROR={} has no {AWS_PROVIDER_DIR} 5.x for {}",
                path.display(),
                terraform_platform()
            ))
        };
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.extend(HOME_MIRRORS.iter().map(|rel| Path::new(&home).join(rel)));
    }
    candidates.extend(SYSTEM_MIRRORS.iter().map(PathBuf::from));
    if let Some(found) = candidates.iter().find(|c| mirror_has_aws_5(c)) {
        return Ok(found.clone());
    }
    let searched: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    Err(format!(
        "no provider mirror with {AWS_PROVIDER_DIR} 5.x for {} (set LAH_TF_PROVIDER_MIRROR; searched {})",
        terraform_platform(),
        searched.join(", ")
    ))
}

/// The Terraform CLI to run, or why it cannot be run.
fn find_terraform() -> Result<PathBuf, String> {
    let binary = std::env::var_os("LAH_TERRAFORM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("terraform"));
    let ran = Command::new(&binary)
        .arg("version")
        .env("CHECKPOINT_DISABLE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match ran {
        Ok(status) if status.success() => Ok(binary),
        Ok(status) => Err(format!("`{} version` failed ({status})", binary.display())),
        Err(e) => Err(format!(
            "the terraform CLI is not runnable as `{}` ({e}; install it or set LAH_TERRAFORM)",
            binary.display()
        )),
    }
}

/// What one Terraform command printed and how it ended.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// Both streams, for failure messages.
    fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs Terraform commands in one working directory with a fixed, offline environment.
struct Terraform {
    binary: PathBuf,
    dir: PathBuf,
    cli_config: PathBuf,
}

impl Terraform {
    /// Runs `terraform <args>`, killing it after `TERRAFORM_COMMAND_TIMEOUT`.
    fn run(&self, args: &[&str]) -> Outcome {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .current_dir(&self.dir)
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            // Nothing from the machine may add credentials, profiles, proxies or plugin caches,
            // and the SDK must not probe the EC2 metadata service.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_LAMBDA")
            .env_remove("TF_PLUGIN_CACHE_DIR")
            .env_remove("TF_DATA_DIR")
            .env_remove("TF_LOG")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .stdin(Stdio::null());
        let (status, out, err) = common::run_bounded(&mut command, TERRAFORM_COMMAND_TIMEOUT);
        let Some(status) = status else {
            panic!(
                "terraform {} did not finish in {TERRAFORM_COMMAND_TIMEOUT:?}\n{out}\n{err}",
                args.join(" ")
            );
        };
        Outcome {
            code: status.code(),
            stdout: out,
            stderr: err,
        }
    }

    /// Runs a command that must exit 0; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let outcome = self.run(args);
        assert_eq!(
            outcome.code,
            Some(0),
            "terraform {} failed:\n{}",
            args.join(" "),
            outcome.output()
        );
        outcome.stdout
    }

    fn apply(&self) -> String {
        self.ok(&["apply", "-auto-approve", "-input=false", "-no-color"])
    }

    /// `terraform output -json` as (name → value).
    fn outputs(&self) -> Value {
        let text = self.ok(&["output", "-json", "-no-color"]);
        let all: Value = serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("terraform output -json is not JSON ({e}): {text}"));
        let mut values = serde_json::Map::new();
        for (name, output) in all.as_object().expect("outputs object") {
            values.insert(name.clone(), output["value"].clone());
        }
        Value::Object(values)
    }
}

/// Writes the variables of one phase where Terraform loads them by itself (plan and destroy see
/// the same values as the apply before them).
fn write_vars(
    dir: &Path,
    endpoint: &str,
    name: &str,
    code_zip: &Path,
    layer_zip: &Path,
    greeting: &str,
) {
    let vars = json!({
        "endpoint": endpoint,
        "function_name": name,
        "code_zip": code_zip.to_str().expect("UTF-8 temp path"),
        "layer_zip": layer_zip.to_str().expect("UTF-8 temp path"),
        "greeting": greeting,
    });
    std::fs::write(dir.join("terraform.tfvars.json"), vars.to_string()).expect("write tfvars");
}

/// The CLI configuration: hashicorp/aws from the mirror only, nothing from any registry.
fn cli_config(mirror: &Path) -> String {
    let path = mirror.to_str().expect("UTF-8 mirror path");
    format!(
        r#"provider_installation {{
  filesystem_mirror {{
    path    = {path:?}
    include = ["{AWS_PROVIDER_DIR}"]
  }}
  direct {{
    exclude = ["{AWS_PROVIDER_DIR}"]
  }}
}}
"#
    )
}

/// The `invocation_result` output (the function's JSON result as a string), parsed.
fn invocation_result(outputs: &Value) -> Value {
    let text = outputs["invocation_result"]
        .as_str()
        .unwrap_or_else(|| panic!("invocation_result is not a string: {outputs}"));
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("invocation_result not JSON ({e}): {text}"))
}

/// Asserts `arn` is a Lambda ARN in the shape the provider parses (`arn:<partition>:lambda:`, an
/// AWS-style region such as `us-east-1`, a 12-digit account) ending in `suffix`. The provider's
/// permission resource reads the qualifier and function name back out of the policy's `Resource`
/// with a regular expression that needs exactly this shape.
fn assert_provider_arn(arn: &str, suffix: &str) {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let region_ok = |region: &str| {
        let segments: Vec<&str> = region.split('-').collect();
        let (last, words) = segments.split_last().expect("split yields one part");
        (3..=4).contains(&segments.len())
            && segments[0].len() == 2
            && words
                .iter()
                .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase()))
            && last.len() == 1
            && last.bytes().all(|b| b.is_ascii_digit())
    };
    assert!(
        parts.len() == 6
            && parts[0] == "arn"
            && parts[2] == "lambda"
            && region_ok(parts[3])
            && parts[4].len() == 12
            && parts[4].bytes().all(|b| b.is_ascii_digit())
            && arn.ends_with(suffix),
        "not a Lambda ARN ending in {suffix} that the provider can parse \
         (arn:aws:lambda:<region like us-east-1>:<12 digits>:...): {arn}"
    );
}

/// Invokes `name` at `qualifier` (a version or alias) and returns (executed version, result).
fn invoke_qualified(server: &TestServer, name: &str, qualifier: &str) -> (String, Value) {
    let resp = server.call(
        "POST",
        &format!("/2015-03-31/functions/{name}/invocations?Qualifier={qualifier}"),
        &[],
        br#"{"source":"test"}"#,
    );
    let body = expect_success(&resp);
    let executed = resp
        .header_str("X-Amz-Executed-Version")
        .unwrap_or_else(|| panic!("no X-Amz-Executed-Version: {}", describe(&resp)))
        .to_string();
    (executed, body)
}

#[test]
fn terraform_applies_updates_and_destroys_a_stack() {
    let required = std::env::var_os("LAH_REQUIRE_TERRAFORM").is_some_and(|v| v == "1");
    let mut missing = Vec::new();
    let terraform = find_terraform().map_err(|e| missing.push(e)).ok();
    let mirror = find_provider_mirror().map_err(|e| missing.push(e)).ok();
    let (Some(binary), Some(mirror)) = (terraform, mirror) else {
        assert!(
            !required,
            "LAH_REQUIRE_TERRAFORM=1 but: {}",
            missing.join("; ")
        );
        eprintln!(
            "SKIPPED terraform_applies_updates_and_destroys_a_stack: {} (set LAH_REQUIRE_TERRAFORM=1 to require them)",
            missing.join("; ")
        );
        return;
    };

    let server = TestServer::new();
    let endpoint = format!("http://{}", server.addr);
    let work = tempfile::tempdir().expect("create the Terraform working dir");
    let dir = work.path().to_path_buf();
    let main_tf = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/terraform/main.tf");
    std::fs::copy(main_tf, dir.join("main.tf")).expect("copy main.tf");
    let cli_config_path = dir.join("terraform.rc");
    std::fs::write(&cli_config_path, cli_config(&mirror)).expect("write CLI config");
    let tf = Terraform {
        binary,
        dir: dir.clone(),
        cli_config: cli_config_path,
    };

    let name = unique_name("tf");
    let layer_zip = dir.join("layer.zip");
    let code_v1 = dir.join("code-v1.zip");
    let code_v2 = dir.join("code-v2.zip");
    let write_zip = |path: &Path, files: &[(&str, &[u8], u32)]| {
        std::fs::write(path, common::zip_bytes(files)).expect("write zip");
    };
    write_zip(
        &layer_zip,
        &[("python/greeting_layer.py", LAYER_MODULE.as_bytes(), 0o644)],
    );
    write_zip(
        &code_v1,
        &[("lambda_function.py", handler_source("v1").as_bytes(), 0o644)],
    );
    write_zip(
        &code_v2,
        &[("lambda_function.py", handler_source("v2").as_bytes(), 0o644)],
    );

    tf.ok(&["init", "-input=false", "-no-color"]);

    // Phase 1: everything is created; the function is published as version 1.
    write_vars(&dir, &endpoint, &name, &code_v1, &layer_zip, "hello");
    tf.apply();
    let out = tf.outputs();
    assert_eq!(out["version"], "1", "{out}");
    assert_eq!(out["alias_version"], "1", "{out}");
    assert_provider_arn(
        out["qualified_arn"].as_str().unwrap_or_default(),
        &format!(":function:{name}:1"),
    );
    assert_provider_arn(
        out["alias_arn"].as_str().unwrap_or_default(),
        &format!(":function:{name}:live"),
    );
    let layer_arn = out["layer_version_arn"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_provider_arn(&layer_arn, &format!(":layer:{name}-layer:1"));
    let result = invocation_result(&out);
    assert_eq!(
        result,
        json!({
            "code": "v1",
            "greeting": "hello",
            "layer": "from-layer",
            "version": "1",
            "event": {"source": "terraform"},
        })
    );

    // What Terraform created is what the server holds.
    let got = expect_json(
        &server.call("GET", &format!("/2015-03-31/functions/{name}"), &[], b""),
        200,
    );
    assert_eq!(
        got["Tags"],
        json!({"project": "lambda-at-home", "suite": "terraform"}),
        "{got}"
    );
    assert_eq!(
        got["Configuration"]["Layers"][0]["Arn"],
        layer_arn.as_str(),
        "{got}"
    );
    let policy = expect_json(
        &server.call(
            "GET",
            &format!("/2015-03-31/functions/{name}/policy?Qualifier=live"),
            &[],
            b"",
        ),
        200,
    );
    let policy: Value = serde_json::from_str(policy["Policy"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("Policy is not a JSON document ({e}): {policy}"));
    let statement = &policy["Statement"][0];
    assert_eq!(statement["Sid"], "AllowEventBridge", "{policy}");
    assert_eq!(
        statement["Principal"]["Service"], "events.amazonaws.com",
        "{policy}"
    );
    assert_provider_arn(
        statement["Resource"].as_str().unwrap_or_default(),
        &format!(":function:{name}:live"),
    );
    let eic = expect_json(
        &server.call(
            "GET",
            &format!("/2019-09-25/functions/{name}/event-invoke-config?Qualifier=live"),
            &[],
            b"",
        ),
        200,
    );
    assert_eq!(eic["MaximumRetryAttempts"], 1, "{eic}");
    assert_eq!(eic["MaximumEventAgeInSeconds"], 600, "{eic}");

    // Phase 2: new code and environment; the provider publishes version 2, the alias follows.
    write_vars(&dir, &endpoint, &name, &code_v2, &layer_zip, "bonjour");
    tf.apply();
    let out = tf.outputs();
    assert_eq!(out["version"], "2", "{out}");
    assert_eq!(out["alias_version"], "2", "{out}");
    assert_provider_arn(
        out["qualified_arn"].as_str().unwrap_or_default(),
        &format!(":function:{name}:2"),
    );
    let result = invocation_result(&out);
    assert_eq!(result["code"], "v2", "{result}");
    assert_eq!(result["greeting"], "bonjour", "{result}");
    assert_eq!(result["layer"], "from-layer", "{result}");
    assert_eq!(result["version"], "2", "{result}");

    // The alias runs version 2; version 1 still runs its own code and environment.
    let (executed, body) = invoke_qualified(&server, &name, "live");
    assert_eq!(executed, "2", "{body}");
    assert_eq!(
        (&body["code"], &body["greeting"]),
        (&json!("v2"), &json!("bonjour")),
        "{body}"
    );
    let (executed, body) = invoke_qualified(&server, &name, "1");
    assert_eq!(executed, "1", "{body}");
    assert_eq!(
        (&body["code"], &body["greeting"]),
        (&json!("v1"), &json!("hello")),
        "{body}"
    );
    assert_eq!(body["version"], "1", "{body}");
    let versions = expect_json(
        &server.call(
            "GET",
            &format!("/2015-03-31/functions/{name}/versions"),
            &[],
            b"",
        ),
        200,
    );
    let listed: Vec<&str> = versions["Versions"]
        .as_array()
        .map(|v| v.iter().filter_map(|c| c["Version"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(listed, ["$LATEST", "1", "2"], "{versions}");

    // Phase 3: what the provider reads back matches the configuration: nothing to change.
    let plan = tf.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"]);
    assert_eq!(
        plan.code,
        Some(0),
        "terraform plan after apply is not empty (exit 2 = changes, 1 = error):\n{}",
        plan.output()
    );

    // Phase 4: destroy removes the function (with its versions and alias) and the layer version.
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
    expect_aws_error(
        &server.call("GET", &format!("/2015-03-31/functions/{name}"), &[], b""),
        404,
        "ResourceNotFoundException",
    );
    expect_aws_error(
        &server.call(
            "GET",
            &format!("/2018-10-31/layers/{name}-layer/versions/1"),
            &[],
            b"",
        ),
        404,
        "ResourceNotFoundException",
    );
}

#[test]
fn provider_arn_shape_is_what_the_provider_parses() {
    assert_provider_arn(
        "arn:aws:lambda:us-east-1:000000000000:function:f:live",
        ":function:f:live",
    );
    assert_provider_arn(
        "arn:aws:lambda:us-gov-west-1:123456789012:layer:l:3",
        ":layer:l:3",
    );
    for bad in [
        "arn:aws:lambda:local:000000000000:function:f:live",
        "arn:aws:lambda:us-east-1:0000:function:f:live",
        "arn:aws:lambda:us-east-1:000000000000:function:f:other",
    ] {
        let rejected = std::panic::catch_unwind(|| assert_provider_arn(bad, ":function:f:live"));
        assert!(rejected.is_err(), "accepted {bad}");
    }
}
