//! AWS Signature Version 4 for the requests loadgen sends (`--sign`), so it can measure a
//! Lambda-style endpoint that checks signatures. Hand-rolled on `hmac` + `sha2`: the official
//! `aws-sigv4` crate pulls in the aws-smithy runtime crates, several times the size of the rest
//! of loadgen, for the one function below.
//!
//! Credentials come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`
//! (optional) and `AWS_REGION` (or `AWS_DEFAULT_REGION`), read once at start-up. Each request
//! is signed on the task that sends it, so signing is inside the measured latency (a few µs of
//! HMAC-SHA256, the same as any SDK client pays). Signed headers: `host`, `x-amz-content-sha256`,
//! `x-amz-date` and `x-amz-security-token` when there is a session token.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The service name Lambda is signed for.
pub const SERVICE: &str = "lambda";

#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
    pub region: String,
}

impl Credentials {
    pub fn from_env() -> Result<Credentials, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let need =
            |name: &str| var(name).ok_or_else(|| format!("--sign needs {name} in the environment"));
        Ok(Credentials {
            access_key: need("AWS_ACCESS_KEY_ID")?,
            secret_key: need("AWS_SECRET_ACCESS_KEY")?,
            session_token: var("AWS_SESSION_TOKEN"),
            region: var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .ok_or("--sign needs AWS_REGION in the environment")?,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 3986 percent-encoding of everything but the unreserved characters (and `/` in paths).
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(k, false), uri_encode(v, false))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `YYYYMMDD'T'HHMMSS'Z'` for a Unix time.
pub fn amz_date(unix_s: u64) -> String {
    let (y, m, d) = lambda_at_home::control::registry::civil_from_days((unix_s / 86_400) as i64);
    let t = unix_s % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// One request to sign.
pub struct Request<'a> {
    pub service: &'a str,
    pub method: &'a str,
    /// Path and query, as sent.
    pub target: &'a str,
    pub host: &'a str,
    pub body: &'a [u8],
    /// Further headers the request carries and that are signed too (the IAM example of the
    /// AWS documentation signs `content-type`); loadgen's own requests have none.
    pub extra: &'a [(&'a str, &'a str)],
    /// Whether to add and sign `x-amz-content-sha256` (loadgen does; the IAM example does not).
    pub content_sha_header: bool,
}

/// The headers to add to a request: `(name, value)` pairs including `Authorization`, without
/// `host` (the client writes it) and without the caller's `extra` ones.
pub fn sign(creds: &Credentials, req: &Request<'_>, unix_s: u64) -> Vec<(String, String)> {
    let Request {
        service,
        method,
        target,
        host,
        body,
        extra,
        content_sha_header,
    } = *req;
    let date_time = amz_date(unix_s);
    let date = &date_time[..8];
    let payload_hash = hex(&Sha256::digest(body));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), host.to_owned()),
        ("x-amz-date".into(), date_time.clone()),
    ];
    if content_sha_header {
        headers.push(("x-amz-content-sha256".into(), payload_hash.clone()));
    }
    if let Some(token) = &creds.session_token {
        headers.push(("x-amz-security-token".into(), token.clone()));
    }
    headers.extend(
        extra
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned())),
    );
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{signed}\n{payload_hash}",
        uri_encode(path, true),
        canonical_query(query)
    );
    let scope = format!("{date}/{}/{service}/aws4_request", creds.region);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let k_date = hmac(
        format!("AWS4{}", creds.secret_key).as_bytes(),
        date.as_bytes(),
    );
    let k_region = hmac(&k_date, creds.region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex(&hmac(&k_signing, to_sign.as_bytes()));
    let mut out: Vec<(String, String)> = headers
        .into_iter()
        .filter(|(k, _)| k != "host" && !extra.iter().any(|(e, _)| e.eq_ignore_ascii_case(k)))
        .collect();
    out.push((
        "Authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            creds.access_key
        ),
    ));
    out
}

/// Signs now.
pub fn sign_now(
    creds: &Credentials,
    method: &str,
    target: &str,
    host: &str,
    body: &[u8],
) -> Vec<(String, String)> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let req = Request {
        service: SERVICE,
        method,
        target,
        host,
        body,
        extra: &[],
        content_sha_header: true,
    };
    sign(creds, &req, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of the AWS Signature Version 4 documentation (IAM ListUsers,
    /// 2015-08-30T12:36:00Z, the documentation's example key).
    #[test]
    fn aws_documentation_example() {
        let creds = Credentials {
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            region: "us-east-1".into(),
        };
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        let req = Request {
            service: "iam",
            method: "GET",
            target: "/?Action=ListUsers&Version=2010-05-08",
            host: "iam.amazonaws.com",
            body: b"",
            extra: &[(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )],
            content_sha_header: false,
        };
        let headers = sign(&creds, &req, 1_440_938_160);
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "Authorization")
            .unwrap()
            .1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn loadgen_requests_sign_the_payload_and_token() {
        let creds = Credentials {
            access_key: "AK".into(),
            secret_key: "SK".into(),
            session_token: Some("TOKEN".into()),
            region: "eu-west-1".into(),
        };
        let req = Request {
            service: SERVICE,
            method: "POST",
            target: "/2015-03-31/functions/f/invocations",
            host: "h:1",
            body: b"{}",
            extra: &[],
            content_sha_header: true,
        };
        let h = sign(&creds, &req, 0);
        let names: Vec<&str> = h.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-amz-content-sha256",
                "x-amz-date",
                "x-amz-security-token",
                "Authorization"
            ]
        );
        assert!(h[3].1.contains("/19700101/eu-west-1/lambda/aws4_request"));
        assert!(h[3]
            .1
            .contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token"));
        assert_eq!(h[0].1, hex(&Sha256::digest(b"{}")));
        assert_eq!(uri_encode("/a b/c:d", true), "/a%20b/c%3Ad");
    }
}
