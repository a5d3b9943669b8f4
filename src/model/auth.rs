//! User API authentication: the accepted credentials, whether authentication is on (`--auth`),
//! and the verification of a request's SigV4 signature, with AWS's answers when it fails.
//!
//! `Credentials` is built once at start-up (`AuthSetup::from_config`) and shared read-only
//! (`Switchboard::auth`). `precheck` (parse the header, look the key up, check the clock; no
//! hashing) runs on a data-plane core for every User API request but `/healthz` and `/metrics`;
//! `verify` (the whole signature, which hashes the body) runs on the core for Invoke and on the
//! control plane for management calls, whose bodies may be 70 MB and must not stall a core.
//! Invariants: a secret never appears in a message or a log line; every failure is one of AWS's
//! exceptions (`MissingAuthenticationTokenException`, `IncompleteSignatureException`,
//! `UnrecognizedClientException`, `InvalidSignatureException`), all 403. The payload hash is
//! always computed from the body received, so a body changed after signing, a false
//! `x-amz-content-sha256` or `UNSIGNED-PAYLOAD` fails as a signature mismatch.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{ApiError, ErrorKind};
use crate::config::{AuthChoice, Config};
use crate::protocols::http::Request;
use crate::protocols::sigv4::{self, Authorization, AuthorizationError, CanonicalInput};

/// The signing name of Lambda: the service every credential scope must name.
pub const SERVICE: &str = "lambda";
/// The signing name of CloudWatch Logs, whose API is served on the same port.
pub const LOGS_SERVICE: &str = "logs";
/// `X-Amz-Target` prefix of the CloudWatch Logs operations.
const LOGS_TARGET_PREFIX: &str = "Logs_20140328.";
/// How far a request's timestamp may be from the server's clock, either way (AWS: 5 minutes).
pub const CLOCK_SKEW_S_MAX: u64 = 300;
/// Largest credentials file read, far above any real one: a wrong path (a log, a disk image)
/// fails at start-up instead of being read whole.
pub const CREDENTIALS_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Longest region name accepted in a credential scope (AWS's are at most 20-odd characters).
const REGION_LEN_MAX: usize = 32;

const MSG_MISSING: &str = "Missing Authentication Token";
const MSG_UNRECOGNIZED: &str = "The security token included in the request is invalid.";
const MSG_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// The access keys the server accepts, each with its secret.
#[derive(Default)]
pub struct Credentials {
    secrets: HashMap<String, String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
        ids.sort_unstable();
        f.debug_struct("Credentials")
            .field("access_key_ids", &ids)
            .finish()
    }
}

impl Credentials {
    /// Adds a key; the same id with another secret is refused (which one would be meant?).
    pub fn insert(&mut self, id: &str, secret: &str) -> Result<(), String> {
        if id.is_empty() || secret.is_empty() {
            return Err("an access key id and its secret must not be empty".to_string());
        }
        match self.secrets.get(id) {
            Some(existing) if existing != secret => Err(format!(
                "access key id {id} is given twice with different secrets"
            )),
            _ => {
                self.secrets.insert(id.to_string(), secret.to_string());
                Ok(())
            }
        }
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Adds every key of an AWS shared credentials file (INI): `[profile]` sections with
    /// `aws_access_key_id` and `aws_secret_access_key`; other keys (`aws_session_token`, `region`)
    /// are ignored, `#` and `;` start comment lines. A section with only one of the two keys is
    /// an error, not skipped, so a typo does not silently lock a client out.
    pub fn add_ini(&mut self, text: &str) -> Result<(), String> {
        let mut sections: Vec<(String, Option<String>, Option<String>)> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                sections.push((name.trim().to_string(), None, None));
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: expected `key = value`", n + 1));
            };
            let Some((_, id, secret)) = sections.last_mut() else {
                return Err(format!("line {}: a key before any [section]", n + 1));
            };
            match key.trim() {
                "aws_access_key_id" => *id = Some(value.trim().to_string()),
                "aws_secret_access_key" => *secret = Some(value.trim().to_string()),
                _ => {}
            }
        }
        for (name, id, secret) in sections {
            match (id, secret) {
                (Some(id), Some(secret)) => self.insert(&id, &secret)?,
                (None, None) => {}
                _ => {
                    return Err(format!(
                        "[{name}] needs both aws_access_key_id and aws_secret_access_key"
                    ))
                }
            }
        }
        Ok(())
    }

    /// Adds the keys of the credentials file at `path`.
    pub fn add_file(&mut self, path: &Path) -> Result<(), String> {
        let shown = path.display();
        let size = std::fs::metadata(path)
            .map_err(|e| format!("cannot read {shown}: {e}"))?
            .len();
        if size > CREDENTIALS_FILE_BYTES_MAX {
            return Err(format!(
                "{shown} is {size} bytes, more than a credentials file ({CREDENTIALS_FILE_BYTES_MAX})"
            ));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        self.add_ini(&text).map_err(|e| format!("{shown}: {e}"))
    }

    /// The cheap checks, without hashing: an `Authorization` header that is SigV4, a timestamp
    /// within `CLOCK_SKEW_S_MAX` of `now`, a scope for Lambda on this date, a known key.
    /// Returns the parsed header, the request's timestamp and the key's secret.
    pub fn precheck<'r>(
        &'r self,
        req: &'r Request,
        now: SystemTime,
    ) -> Result<(Authorization<'r>, String, &'r str), ApiError> {
        let Some(header) = req.header("authorization") else {
            return Err(ApiError::new(
                ErrorKind::MissingAuthenticationToken,
                MSG_MISSING,
            ));
        };
        let header = std::str::from_utf8(header).map_err(|_| incomplete("is not UTF-8"))?;
        let auth = sigv4::parse_authorization(header).map_err(|e| match e {
            AuthorizationError::Algorithm(word) => {
                incomplete(&format!("names an unsupported algorithm: '{word}'"))
            }
            AuthorizationError::Missing(names) => ApiError::new(
                ErrorKind::IncompleteSignature,
                names
                    .iter()
                    .map(|n| format!("Authorization header requires '{n}' parameter."))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            AuthorizationError::Credential(value) => ApiError::new(
                ErrorKind::IncompleteSignature,
                format!("Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{value}'"),
            ),
        })?;
        let amz_date = request_time(req)?;
        let Some(signed_at) = sigv4::parse_amz_date(&amz_date) else {
            return Err(invalid(format!(
                "Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See http://en.wikipedia.org/wiki/ISO_8601"
            )));
        };
        check_clock(&amz_date, signed_at, now)?;
        if auth.date != &amz_date[..8] {
            return Err(invalid(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
                auth.date,
                &amz_date[..8]
            )));
        }
        let region_ok = auth.region.len() <= REGION_LEN_MAX
            && auth
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(invalid(
                "Credential should be scoped to a valid region. ".to_string(),
            ));
        }
        // CloudWatch Logs calls (JSON 1.1, `X-Amz-Target: Logs_20140328.*`) share the port and
        // are signed for their own service, as the SDKs sign them.
        let service = match req.header_str("x-amz-target") {
            Some(t) if t.starts_with(LOGS_TARGET_PREFIX) => LOGS_SERVICE,
            _ => SERVICE,
        };
        if auth.service != service {
            return Err(invalid(format!(
                "Credential should be scoped to correct service: '{service}'. "
            )));
        }
        if auth.terminator != sigv4::SCOPE_TERMINATOR {
            return Err(invalid(format!(
                "Credential should be scoped with a valid terminator: '{}', not '{}'. ",
                sigv4::SCOPE_TERMINATOR,
                auth.terminator
            )));
        }
        let Some(secret) = self.secrets.get(auth.access_key_id) else {
            return Err(ApiError::new(
                ErrorKind::UnrecognizedClient,
                MSG_UNRECOGNIZED,
            ));
        };
        Ok((auth, amz_date, secret))
    }

    /// The whole check: `precheck`, then the signature over the canonical request, whose
    /// payload hash is computed from the body received.
    pub fn verify(&self, req: &Request, now: SystemTime) -> Result<(), ApiError> {
        let (auth, amz_date, secret) = self.precheck(req, now)?;
        let payload_hash = sigv4::sha256_hex(&req.body);
        let canonical = sigv4::canonical_request(&CanonicalInput {
            method: req.method_str(),
            path: req.path(),
            query: req.query(),
            headers: || req.headers(),
            signed_headers: auth.signed_headers,
            payload_hash: &payload_hash,
        });
        let sts = sigv4::string_to_sign(&amz_date, &auth, &canonical);
        let key = sigv4::signing_key(secret, &auth);
        if sigv4::signature_matches(&key, &sts, auth.signature) {
            Ok(())
        } else {
            Err(invalid(MSG_MISMATCH.to_string()))
        }
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorKind::InvalidSignature, message)
}

fn incomplete(what: &str) -> ApiError {
    ApiError::new(
        ErrorKind::IncompleteSignature,
        format!("The Authorization header {what}."),
    )
}

/// The request's signing time as `YYYYMMDDTHHMMSSZ`: `X-Amz-Date`, else the HTTP `Date` header
/// converted (SigV4 accepts either; the SDKs send `X-Amz-Date`).
fn request_time(req: &Request) -> Result<String, ApiError> {
    if let Some(amz) = req.header_str("x-amz-date") {
        return Ok(amz.to_string());
    }
    let missing = || {
        ApiError::new(
            ErrorKind::IncompleteSignature,
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )
    };
    let date = req.header_str("date").ok_or_else(missing)?;
    let time = httpdate::parse_http_date(date).map_err(|_| missing())?;
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| missing())?
        .as_secs();
    Ok(sigv4::format_amz_date(secs))
}

/// AWS's two clock-skew answers, with its exact wording.
fn check_clock(amz_date: &str, signed_at: u64, now: SystemTime) -> Result<(), ApiError> {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if signed_at + CLOCK_SKEW_S_MAX < now {
        return Err(invalid(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
            sigv4::format_amz_date(now - CLOCK_SKEW_S_MAX),
            sigv4::format_amz_date(now)
        )));
    }
    if signed_at > now + CLOCK_SKEW_S_MAX {
        return Err(invalid(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
            sigv4::format_amz_date(now + CLOCK_SKEW_S_MAX),
            sigv4::format_amz_date(now)
        )));
    }
    Ok(())
}

/// Whether authentication is on, why, and with which keys: decided once at start-up.
#[derive(Debug)]
pub struct AuthSetup {
    /// `Some` when authentication is on.
    pub credentials: Option<Credentials>,
    /// Why it is on or off, for the start-up log line.
    pub reason: String,
    /// Credentials were configured but authentication is off: worth a warning.
    pub credentials_unused: bool,
}

impl AuthSetup {
    /// Reads `--auth`, `--bind` and the credentials flags. Refuses (with a message naming the
    /// flags) to turn authentication on without a single key.
    pub fn from_config(config: &Config) -> Result<AuthSetup, String> {
        let loopback = config.bind.is_loopback();
        let (on, reason) = match config.auth {
            AuthChoice::On => (true, "--auth on".to_string()),
            AuthChoice::Off => (false, "--auth off".to_string()),
            AuthChoice::Auto if loopback => (
                false,
                format!(
                    "--auth auto and --bind {} is a loopback address",
                    config.bind
                ),
            ),
            AuthChoice::Auto => (
                true,
                format!(
                    "--auth auto and --bind {} is not a loopback address",
                    config.bind
                ),
            ),
        };
        let configured = config.credentials_file.is_some() || config.access_key_id.is_some();
        if !on {
            return Ok(AuthSetup {
                credentials: None,
                reason,
                credentials_unused: configured,
            });
        }
        let mut credentials = Credentials::default();
        if let Some(path) = &config.credentials_file {
            credentials.add_file(path)?;
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            credentials.insert(id, &secret.0)?;
        }
        if credentials.is_empty() {
            return Err(format!(
                "User API authentication is on ({reason}) but no credentials are configured: \
                 pass --credentials-file PATH, or --access-key-id with --secret-access-key \
                 (LAH_ACCESS_KEY_ID, LAH_SECRET_ACCESS_KEY), or --auth off to serve without it"
            ));
        }
        Ok(AuthSetup {
            credentials: Some(credentials),
            reason,
            credentials_unused: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::http::{Decoder, Limits};
    use std::time::Duration;

    fn decode_one(raw: &[u8]) -> Request {
        Decoder::new(Limits::default())
            .decode(&mut bytes::BytesMut::from(raw))
            .expect("valid request")
            .expect("complete request")
    }

    const ID: &str = "AKIDTEST";
    const SECRET: &str = "secret/with+chars";
    /// 2024-01-02T03:04:05Z.
    const NOW_S: u64 = 1_704_164_645;

    fn creds() -> Credentials {
        let mut c = Credentials::default();
        c.insert(ID, SECRET).unwrap();
        c
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A raw request signed like botocore signs an Invoke (host, x-amz-date, the body's hash).
    fn signed(secret: &str, amz_date: &str, path: &str, body: &str, sent_body: &str) -> Vec<u8> {
        let headers: Vec<(&str, &[u8])> = vec![
            ("Host", b"127.0.0.1:9000"),
            ("X-Amz-Date", amz_date.as_bytes()),
        ];
        let hash = sigv4::sha256_hex(body.as_bytes());
        let input = CanonicalInput {
            method: "POST",
            path,
            query: Some("Qualifier=%24LATEST"),
            headers: || headers.iter().copied(),
            signed_headers: "host;x-amz-date",
            payload_hash: &hash,
        };
        let signer = sigv4::Signer {
            access_key_id: ID,
            secret,
            region: "eu-west-1",
            service: SERVICE,
        };
        let auth = signer.authorization(amz_date, &input);
        format!(
            "POST {path}?Qualifier=%24LATEST HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nX-Amz-Date: {amz_date}\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n{sent_body}",
            sent_body.len()
        )
        .into_bytes()
    }

    const PATH: &str = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aeu-west-1%3A000000000000%3Afunction%3Af/invocations";

    fn kind(raw: &[u8], now: SystemTime) -> Result<(), ErrorKind> {
        let req = decode_one(raw);
        creds().verify(&req, now).map_err(|e| e.kind)
    }

    #[test]
    fn accepts_a_signed_request_within_the_skew() {
        let date = sigv4::format_amz_date(NOW_S);
        let raw = signed(SECRET, &date, PATH, "{\"a\":1}", "{\"a\":1}");
        assert_eq!(kind(&raw, at(NOW_S)), Ok(()));
        assert_eq!(kind(&raw, at(NOW_S + CLOCK_SKEW_S_MAX)), Ok(()));
        assert_eq!(kind(&raw, at(NOW_S - CLOCK_SKEW_S_MAX)), Ok(()));
    }

    #[test]
    fn rejects_with_aws_exceptions() {
        let date = sigv4::format_amz_date(NOW_S);
        let body = "{\"a\":1}";
        assert_eq!(
            kind(&signed("wrong", &date, PATH, body, body), at(NOW_S)),
            Err(ErrorKind::InvalidSignature)
        );
        assert_eq!(
            kind(&signed(SECRET, &date, PATH, body, "{\"a\":2}"), at(NOW_S)),
            Err(ErrorKind::InvalidSignature),
            "a body changed after signing"
        );
        let other_path = PATH.replace("function%3Af", "function%3Ag");
        let mut tampered = signed(SECRET, &date, PATH, body, body);
        let at_path = tampered
            .windows(PATH.len())
            .position(|w| w == PATH.as_bytes())
            .unwrap();
        tampered.splice(at_path..at_path + PATH.len(), other_path.bytes());
        assert_eq!(kind(&tampered, at(NOW_S)), Err(ErrorKind::InvalidSignature));

        let req = decode_one(b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        let e = creds().verify(&req, at(NOW_S)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::MissingAuthenticationToken);
        assert_eq!(e.message, "Missing Authentication Token");
        assert_eq!(e.status(), 403);

        let mut unknown = Credentials::default();
        unknown.insert("OTHER", SECRET).unwrap();
        let req = decode_one(&signed(SECRET, &date, PATH, body, body));
        let e = unknown.verify(&req, at(NOW_S)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnrecognizedClient);
        assert_eq!(
            e.message,
            "The security token included in the request is invalid."
        );
    }

    #[test]
    fn clock_skew_messages_are_aws_words() {
        let date = sigv4::format_amz_date(NOW_S);
        let req = decode_one(&signed(SECRET, &date, PATH, "", ""));
        let e = creds()
            .verify(&req, at(NOW_S + CLOCK_SKEW_S_MAX + 1))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidSignature);
        assert_eq!(
            e.message,
            "Signature expired: 20240102T030405Z is now earlier than 20240102T030406Z (20240102T030906Z - 5 min.)"
        );
        let e = creds()
            .verify(&req, at(NOW_S - CLOCK_SKEW_S_MAX - 1))
            .unwrap_err();
        assert_eq!(
            e.message,
            "Signature not yet current: 20240102T030405Z is still later than 20240102T030404Z (20240102T025904Z + 5 min.)"
        );
    }

    #[test]
    fn incomplete_headers() {
        for (header, want) in [
            ("Bearer abc", "The Authorization header names an unsupported algorithm: 'Bearer'."),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDTEST/20240102/us-east-1/lambda/aws4_request",
                "Authorization header requires 'SignedHeaders' parameter. Authorization header requires 'Signature' parameter.",
            ),
        ] {
            let raw = format!("GET /x HTTP/1.1\r\nAuthorization: {header}\r\nX-Amz-Date: 20240102T030405Z\r\n\r\n");
            let e = creds().verify(&decode_one(raw.as_bytes()), at(NOW_S)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::IncompleteSignature, "{header}");
            assert_eq!(e.message, want);
        }
        let raw = "GET /x HTTP/1.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIDTEST/20240102/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=00\r\n\r\n";
        let e = creds()
            .verify(&decode_one(raw.as_bytes()), at(NOW_S))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::IncompleteSignature);
        let raw = "GET /x HTTP/1.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIDTEST/20240102/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\nX-Amz-Date: 20240102T030405Z\r\n\r\n";
        let e = creds()
            .verify(&decode_one(raw.as_bytes()), at(NOW_S))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidSignature);
        assert_eq!(
            e.message,
            "Credential should be scoped to correct service: 'lambda'. "
        );
    }

    #[test]
    fn cloudwatch_logs_calls_are_signed_for_logs() {
        let body = b"{}";
        let target = b"Logs_20140328.DescribeLogGroups";
        let headers: Vec<(&str, &[u8])> = vec![
            ("Host", b"h"),
            ("X-Amz-Date", b"20240102T030405Z"),
            ("X-Amz-Target", target),
        ];
        let hash = sigv4::sha256_hex(body);
        let sign = |service| {
            let input = CanonicalInput {
                method: "POST",
                path: "/",
                query: None,
                headers: || headers.iter().copied(),
                signed_headers: "host;x-amz-date;x-amz-target",
                payload_hash: &hash,
            };
            let signer = sigv4::Signer {
                access_key_id: ID,
                secret: SECRET,
                region: "us-east-1",
                service,
            };
            let auth = signer.authorization("20240102T030405Z", &input);
            format!("POST / HTTP/1.1\r\nHost: h\r\nX-Amz-Date: 20240102T030405Z\r\nX-Amz-Target: Logs_20140328.DescribeLogGroups\r\nAuthorization: {auth}\r\nContent-Length: 2\r\n\r\n{{}}")
        };
        let logs = sign(LOGS_SERVICE);
        assert_eq!(
            creds().verify(&decode_one(logs.as_bytes()), at(NOW_S)),
            Ok(())
        );
        let lambda = sign(SERVICE);
        let e = creds()
            .verify(&decode_one(lambda.as_bytes()), at(NOW_S))
            .unwrap_err();
        assert_eq!(
            e.message,
            "Credential should be scoped to correct service: 'logs'. "
        );
    }

    #[test]
    fn http_date_header_stands_in_for_x_amz_date() {
        let headers: Vec<(&str, &[u8])> =
            vec![("Host", b"h"), ("Date", b"Tue, 02 Jan 2024 03:04:05 GMT")];
        let hash = sigv4::sha256_hex(b"");
        let input = CanonicalInput {
            method: "GET",
            path: "/2015-03-31/functions",
            query: None,
            headers: || headers.iter().copied(),
            signed_headers: "date;host",
            payload_hash: &hash,
        };
        let signer = sigv4::Signer {
            access_key_id: ID,
            secret: SECRET,
            region: "us-east-1",
            service: SERVICE,
        };
        let auth = signer.authorization("20240102T030405Z", &input);
        let raw = format!("GET /2015-03-31/functions HTTP/1.1\r\nHost: h\r\nDate: Tue, 02 Jan 2024 03:04:05 GMT\r\nAuthorization: {auth}\r\n\r\n");
        assert_eq!(
            creds().verify(&decode_one(raw.as_bytes()), at(NOW_S)),
            Ok(())
        );
    }

    #[test]
    fn credentials_files() {
        let mut c = Credentials::default();
        c.add_ini(
            "# comment\n[default]\naws_access_key_id = AKID1\naws_secret_access_key=s1\n\n; other\n[ci]\n aws_access_key_id=AKID2\naws_secret_access_key = s2\naws_session_token = t\nregion=us-east-1\n[only-region]\nregion = eu-west-1\n",
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(
            format!("{c:?}"),
            r#"Credentials { access_key_ids: ["AKID1", "AKID2"] }"#
        );
        let mut c = Credentials::default();
        let e = c.add_ini("[p]\naws_access_key_id = A\n").unwrap_err();
        assert!(e.contains("[p] needs both"), "{e}");
        let e = c.add_ini("aws_access_key_id = A\n").unwrap_err();
        assert!(e.contains("before any [section]"), "{e}");
        let e = c
            .add_ini("[a]\naws_access_key_id=A\naws_secret_access_key=1\n[b]\naws_access_key_id=A\naws_secret_access_key=2\n")
            .unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn setup_follows_bind_and_flags() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let mut all = vec!["lambda-at-home-server"];
            all.extend_from_slice(args);
            Config::try_parse_from(all).unwrap()
        };
        let off = AuthSetup::from_config(&parse(&["--bind", "127.0.0.1"])).unwrap();
        assert!(off.credentials.is_none());
        assert!(off.reason.contains("loopback"), "{}", off.reason);
        let e = AuthSetup::from_config(&parse(&["--bind", "0.0.0.0"])).unwrap_err();
        assert!(e.contains("no credentials"), "{e}");
        let on = AuthSetup::from_config(&parse(&[
            "--bind",
            "0.0.0.0",
            "--access-key-id",
            "A",
            "--secret-access-key",
            "S",
        ]))
        .unwrap();
        assert_eq!(on.credentials.map(|c| c.len()), Some(1));
        let forced = AuthSetup::from_config(&parse(&["--auth", "on"])).unwrap_err();
        assert!(forced.contains("--auth on"), "{forced}");
        let unused = AuthSetup::from_config(&parse(&[
            "--access-key-id",
            "A",
            "--secret-access-key",
            "S",
        ]))
        .unwrap();
        assert!(unused.credentials.is_none() && unused.credentials_unused);
        let config = parse(&["--access-key-id", "A", "--secret-access-key", "hunter2"]);
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(Config::try_parse_from(["x", "--access-key-id", "A"]).is_err());
    }
}
