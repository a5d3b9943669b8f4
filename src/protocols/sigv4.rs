//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`), the pure part: parsing the `Authorization`
//! header, the canonical request, the string to sign, the signing key and the signature. No I/O,
//! no clock, no key store: `model::auth` decides which secret to use, what time it is and which
//! AWS error a failure becomes.
//!
//! Runs on whichever thread verifies a request: a data-plane core for Invoke, the control plane
//! for management calls. Cost: one SHA-256 over the canonical request, one over the body, five
//! HMAC-SHA256 (`benches/sigv4.rs`: 17 µs for a 100-byte Invoke, measured on a loaded 2-core
//! VM; the body hash adds ~1.7 µs per KB there).
//!
//! Canonicalisation follows what AWS's SDKs sign for every service but S3 (botocore's `SigV4Auth`,
//! the AWS SigV4 test suite): the canonical URI is the path *as sent* (already percent-encoded by
//! the client), with dot segments and empty segments removed, percent-encoded once more with `/`
//! kept (so `%3A` in the request line becomes `%253A`); the canonical query decodes each key and
//! value, re-encodes them with the unreserved set and sorts the pairs; each signed header's values
//! are trimmed, inner whitespace runs collapsed to one space, repeated fields joined with `,`.
//! Limits: only header-based signing (no presigned query strings, no chunked `aws-chunked`
//! payload signing); the `Authorization` value is parsed in place, nothing is allocated for it.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::percent;

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm SigV4 header signing names.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The last element of every credential scope.
pub const SCOPE_TERMINATOR: &str = "aws4_request";
/// Bytes of a SHA-256 digest, hence of a signature (its hex form is twice as long).
pub const DIGEST_BYTES: usize = 32;
/// Length of an ISO 8601 basic timestamp, `YYYYMMDDTHHMMSSZ`.
pub const AMZ_DATE_LEN: usize = 16;

/// A parsed `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`
/// header, borrowing from the header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Authorization<'a> {
    pub access_key_id: &'a str,
    /// The scope's date, `YYYYMMDD`.
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub terminator: &'a str,
    /// Lower-case header names joined by `;`, as the client listed them.
    pub signed_headers: &'a str,
    /// Lower-case hexadecimal, as sent.
    pub signature: &'a str,
}

/// Why an `Authorization` header is not a complete SigV4 header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthorizationError {
    /// The first word is not `AWS4-HMAC-SHA256` (the word is kept for the message).
    Algorithm(String),
    /// These parameters are missing, in the order `Credential`, `SignedHeaders`, `Signature`.
    Missing(Vec<&'static str>),
    /// `Credential` is not `KEY/DATE/REGION/SERVICE/TERMINATOR` (the value is kept).
    Credential(String),
}

/// Parses an `Authorization` header value.
pub fn parse_authorization(value: &str) -> Result<Authorization<'_>, AuthorizationError> {
    let value = value.trim();
    let (algorithm, params) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(AuthorizationError::Algorithm(algorithm.to_string()));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for param in params.split(',') {
        let Some((key, value)) = param.trim().split_once('=') else {
            continue;
        };
        let slot = match key.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => continue,
        };
        slot.get_or_insert(value.trim());
    }
    let missing: Vec<&'static str> = [
        ("Credential", credential.is_none()),
        ("SignedHeaders", signed_headers.is_none()),
        ("Signature", signature.is_none()),
    ]
    .into_iter()
    .filter_map(|(name, absent)| absent.then_some(name))
    .collect();
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(AuthorizationError::Missing(missing));
    };
    let mut parts = credential.split('/');
    let mut next = || parts.next().filter(|p| !p.is_empty());
    let (Some(access_key_id), Some(date), Some(region), Some(service), Some(terminator), None) =
        (next(), next(), next(), next(), next(), next())
    else {
        return Err(AuthorizationError::Credential(credential.to_string()));
    };
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        terminator,
        signed_headers,
        signature,
    })
}

/// The canonical URI of a path as sent: dot segments and empty segments removed (a trailing `/`
/// kept), then percent-encoded with `/` kept. An empty path is `/`.
pub fn canonical_uri(path: &str, out: &mut String) {
    let mut kept: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            _ => kept.push(segment),
        }
    }
    out.push('/');
    for (i, segment) in kept.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        percent::encode_unreserved(segment.as_bytes(), false, out);
    }
    if path.ends_with('/') && !kept.is_empty() {
        out.push('/');
    }
}

/// The canonical query string of a raw query (`None` or empty: an empty line): each `key=value`
/// decoded and re-encoded, sorted by key then value, joined with `&`; a key without `=` has an
/// empty value.
pub fn canonical_query(query: Option<&str>, out: &mut String) {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return;
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let mut k = String::with_capacity(key.len());
            let mut v = String::with_capacity(value.len());
            percent::encode_unreserved(&percent::decode_component(key), false, &mut k);
            percent::encode_unreserved(&percent::decode_component(value), false, &mut v);
            (k, v)
        })
        .collect();
    pairs.sort_unstable();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
}

/// Appends `value` trimmed, with each run of inner whitespace collapsed to one space.
fn push_header_value(value: &[u8], out: &mut Vec<u8>) {
    for (i, word) in value
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(word);
    }
}

/// What the canonical request is built from. `headers` yields every header field of the request
/// in order (name, value); it is walked once per signed header.
pub struct CanonicalInput<'a, H> {
    pub method: &'a str,
    /// The request target's path, as sent (not decoded).
    pub path: &'a str,
    /// The raw query string after `?`, if any.
    pub query: Option<&'a str>,
    pub headers: H,
    /// `SignedHeaders` of the `Authorization` header, as sent.
    pub signed_headers: &'a str,
    /// Lower-case hex SHA-256 of the body (or what the client claims it signed).
    pub payload_hash: &'a str,
}

/// The canonical request (SigV4 task 1) as bytes.
pub fn canonical_request<'h, H, I>(input: &CanonicalInput<'_, H>) -> Vec<u8>
where
    H: Fn() -> I,
    I: Iterator<Item = (&'h str, &'h [u8])>,
{
    let mut line = String::with_capacity(input.path.len() * 2 + 64);
    line.push_str(input.method);
    line.push('\n');
    canonical_uri(input.path, &mut line);
    line.push('\n');
    canonical_query(input.query, &mut line);
    line.push('\n');
    let mut out = line.into_bytes();
    for name in input.signed_headers.split(';') {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        let mut first = true;
        for (_, value) in (input.headers)().filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
            if !first {
                out.push(b',');
            }
            first = false;
            push_header_value(value, &mut out);
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(input.signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(input.payload_hash.as_bytes());
    out
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(HEX_LOWER[usize::from(b >> 4)]));
        out.push(char::from(HEX_LOWER[usize::from(b & 0x0f)]));
    }
    out
}

/// The bytes of a lower- or upper-case hex digest; `None` unless exactly `DIGEST_BYTES` long.
pub fn unhex_digest(text: &str) -> Option<[u8; DIGEST_BYTES]> {
    let bytes = text.as_bytes();
    if bytes.len() != DIGEST_BYTES * 2 {
        return None;
    }
    let mut out = [0u8; DIGEST_BYTES];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = (hi << 4 | lo) as u8;
    }
    Some(out)
}

/// Lower-case hex SHA-256 of `bytes` (the payload hash of a body).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The string to sign (SigV4 task 2).
pub fn string_to_sign(amz_date: &str, scope: &Authorization<'_>, canonical: &[u8]) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{}/{}/{}/{}\n{}",
        scope.date,
        scope.region,
        scope.service,
        scope.terminator,
        sha256_hex(canonical)
    )
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; DIGEST_BYTES] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The signing key (SigV4 task 3) of a secret for one scope.
pub fn signing_key(secret: &str, scope: &Authorization<'_>) -> [u8; DIGEST_BYTES] {
    let k_secret = format!("AWS4{secret}");
    let k_date = hmac(k_secret.as_bytes(), scope.date.as_bytes());
    let k_region = hmac(&k_date, scope.region.as_bytes());
    let k_service = hmac(&k_region, scope.service.as_bytes());
    hmac(&k_service, scope.terminator.as_bytes())
}

/// The signature of `string_to_sign` under `key` (SigV4 task 4).
pub fn signature(key: &[u8; DIGEST_BYTES], string_to_sign: &str) -> [u8; DIGEST_BYTES] {
    hmac(key, string_to_sign.as_bytes())
}

/// Whether `claimed` (hex, as sent) is the signature of `string_to_sign` under `key`, compared
/// in constant time so a caller cannot learn a signature byte by byte from response times.
pub fn signature_matches(key: &[u8; DIGEST_BYTES], string_to_sign: &str, claimed: &str) -> bool {
    let Some(claimed) = unhex_digest(claimed) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&claimed).is_ok()
}

/// Seconds since the Unix epoch of an ISO 8601 basic UTC timestamp (`20150830T123600Z`).
pub fn parse_amz_date(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != AMZ_DATE_LEN || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|d| d.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // A leap second (60) is accepted, as the SDKs may produce one.
    if second > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year as i64, month as u32, day as u32);
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + hour * 3600 + minute * 60 + second)
}

/// The ISO 8601 basic UTC timestamp of `secs` since the Unix epoch.
pub fn format_amz_date(secs: u64) -> String {
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Signs a request as an AWS SDK would, returning the `Authorization` value. Used by the tests
/// and the bench to produce requests the verifier must accept; the server never signs.
pub struct Signer<'a> {
    pub access_key_id: &'a str,
    pub secret: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

impl Signer<'_> {
    pub fn authorization<'h, H, I>(&self, amz_date: &str, input: &CanonicalInput<'_, H>) -> String
    where
        H: Fn() -> I,
        I: Iterator<Item = (&'h str, &'h [u8])>,
    {
        let scope = Authorization {
            access_key_id: self.access_key_id,
            date: &amz_date[..8.min(amz_date.len())],
            region: self.region,
            service: self.service,
            terminator: SCOPE_TERMINATOR,
            signed_headers: input.signed_headers,
            signature: "",
        };
        let sts = string_to_sign(amz_date, &scope, &canonical_request(input));
        let sig = signature(&signing_key(self.secret, &scope), &sts);
        format!(
            "{ALGORITHM} Credential={}/{}/{}/{}/{SCOPE_TERMINATOR}, SignedHeaders={}, Signature={}",
            self.access_key_id,
            scope.date,
            self.region,
            self.service,
            input.signed_headers,
            hex(&sig)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AWS SigV4 test suite's key, scope and time.
    const SUITE_KEY_ID: &str = "AKIDEXAMPLE";
    const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const SUITE_DATE: &str = "20150830T123600Z";
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn suite_signer() -> Signer<'static> {
        Signer {
            access_key_id: SUITE_KEY_ID,
            secret: SUITE_SECRET,
            region: "us-east-1",
            service: "service",
        }
    }

    /// Signs a suite request (host `example.amazonaws.com`, the suite's date, empty body unless
    /// given) and returns the `Signature=` value.
    fn suite_signature(
        method: &str,
        path: &str,
        query: Option<&str>,
        extra: &[(&str, &str)],
        signed: &str,
        body: &[u8],
    ) -> String {
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("Host", b"example.amazonaws.com"),
            ("X-Amz-Date", SUITE_DATE.as_bytes()),
        ];
        headers.extend(extra.iter().map(|(n, v)| (*n, v.as_bytes())));
        let hash = sha256_hex(body);
        let input = CanonicalInput {
            method,
            path,
            query,
            headers: || headers.iter().copied(),
            signed_headers: signed,
            payload_hash: &hash,
        };
        let auth = suite_signer().authorization(SUITE_DATE, &input);
        auth.rsplit("Signature=").next().unwrap().to_string()
    }

    #[test]
    fn suite_get_vanilla() {
        let headers: Vec<(&str, &[u8])> = vec![
            ("Host", b"example.amazonaws.com"),
            ("X-Amz-Date", SUITE_DATE.as_bytes()),
        ];
        let input = CanonicalInput {
            method: "GET",
            path: "/",
            query: None,
            headers: || headers.iter().copied(),
            signed_headers: "host;x-amz-date",
            payload_hash: EMPTY_SHA256,
        };
        let creq = canonical_request(&input);
        assert_eq!(
            String::from_utf8(creq.clone()).unwrap(),
            format!("GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:{SUITE_DATE}\n\nhost;x-amz-date\n{EMPTY_SHA256}")
        );
        let auth = suite_signer().authorization(SUITE_DATE, &input);
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        // The string to sign of get-vanilla.sts.
        let scope = parse_authorization(&auth).unwrap();
        assert_eq!(
            string_to_sign(SUITE_DATE, &scope, &creq),
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
    }

    #[test]
    fn suite_paths_queries_and_headers() {
        let v = "AWS4 suite vectors";
        let cases: [(&str, String, &str); 14] = [
            (
                "get-unreserved",
                suite_signature("GET", "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", None, &[], "host;x-amz-date", b""),
                "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
            ),
            (
                "get-utf8 (the suite's request line carries the raw UTF-8 path)",
                suite_signature("GET", "/ሴ", None, &[], "host;x-amz-date", b""),
                "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
            ),
            (
                "get-vanilla-query-order-key-case",
                suite_signature("GET", "/", Some("Param2=value2&Param1=value1"), &[], "host;x-amz-date", b""),
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
            (
                "get-vanilla-query-unreserved",
                suite_signature("GET", "/", Some("-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"), &[], "host;x-amz-date", b""),
                "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
            ),
            (
                "get-vanilla-utf8-query (sent encoded)",
                suite_signature("GET", "/", Some("%E1%88%B4=bar"), &[], "host;x-amz-date", b""),
                "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
            ),
            (
                "get-header-key-duplicate (three fields of one name)",
                suite_signature("GET", "/", None, &[("My-Header1", "value2"), ("My-Header1", "value2"), ("My-Header1", "value1")], "host;my-header1;x-amz-date", b""),
                "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
            ),
            (
                "get-header-value-order",
                suite_signature("GET", "/", None, &[("My-Header1", "value4"), ("My-Header1", "value1"), ("My-Header1", "value3"), ("My-Header1", "value2")], "host;my-header1;x-amz-date", b""),
                "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
            ),
            (
                "get-header-value-trim",
                suite_signature("GET", "/", None, &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")], "host;my-header1;my-header2;x-amz-date", b""),
                "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
            ),
            (
                "post-vanilla",
                suite_signature("POST", "/", None, &[], "host;x-amz-date", b""),
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
            (
                "post-vanilla-query",
                suite_signature("POST", "/", Some("Param1=value1"), &[], "host;x-amz-date", b""),
                "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
            ),
            (
                "post-vanilla-query-nonunreserved (sent encoded, in the other order)",
                suite_signature("POST", "/", Some("%40%23%24%25%5E&%2B=%2F%2C%3F%3E%3C%60%22%3B%3A%5C%7C%5D%5B%7B%7D"), &[], "host;x-amz-date", b""),
                "66c82657c86e26fb25238d0e69f011edc4c6df5ae71119d7cb98ed9b87393c1e",
            ),
            (
                "post-header-value-case",
                suite_signature("POST", "/", None, &[("My-Header1", "VALUE1")], "host;my-header1;x-amz-date", b""),
                "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
            ),
            (
                "post-x-www-form-urlencoded",
                suite_signature("POST", "/", None, &[("Content-Type", "application/x-www-form-urlencoded")], "content-type;host;x-amz-date", b"Param1=value1"),
                "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
            ),
            (
                "post-x-www-form-urlencoded-parameters",
                suite_signature("POST", "/", None, &[("Content-Type", "application/x-www-form-urlencoded; charset=utf8")], "content-type;host;x-amz-date", b"Param1=value1"),
                "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe",
            ),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{v}: {name}");
        }
    }

    #[test]
    fn canonical_uri_normalises_then_encodes_once_more() {
        let uri = |p: &str| {
            let mut s = String::new();
            canonical_uri(p, &mut s);
            s
        };
        assert_eq!(uri(""), "/");
        assert_eq!(uri("/"), "/");
        // The suite's normalize-path cases.
        assert_eq!(uri("/example/.."), "/");
        assert_eq!(uri("/example1/example2/../.."), "/");
        assert_eq!(uri("/./"), "/");
        assert_eq!(uri("/./example"), "/example");
        assert_eq!(uri("//example//"), "/example/");
        assert_eq!(uri("/example space/"), "/example%20space/");
        // What botocore signs for Lambda: the already-encoded ARN is encoded again.
        assert_eq!(
            uri("/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af/invocations"),
            "/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-east-1%253A000000000000%253Afunction%253Af/invocations"
        );
    }

    #[test]
    fn authorization_parsing() {
        let a = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20240102/eu-west-1/lambda/aws4_request,SignedHeaders=host;x-amz-date,  Signature=abc",
        )
        .unwrap();
        assert_eq!(a.access_key_id, "AKID");
        assert_eq!(a.date, "20240102");
        assert_eq!(a.region, "eu-west-1");
        assert_eq!(a.service, "lambda");
        assert_eq!(a.terminator, "aws4_request");
        assert_eq!(a.signed_headers, "host;x-amz-date");
        assert_eq!(a.signature, "abc");
        assert_eq!(
            parse_authorization("Bearer token"),
            Err(AuthorizationError::Algorithm("Bearer".into()))
        );
        assert_eq!(
            parse_authorization("AWS4-HMAC-SHA256 Credential=a/b/c/d/e"),
            Err(AuthorizationError::Missing(vec![
                "SignedHeaders",
                "Signature"
            ]))
        );
        assert_eq!(
            parse_authorization("AWS4-HMAC-SHA256"),
            Err(AuthorizationError::Missing(vec![
                "Credential",
                "SignedHeaders",
                "Signature"
            ]))
        );
        for bad in ["AKID/20240102/r/lambda", "AKID//r/s/t", "a/b/c/d/e/f"] {
            let header = format!("AWS4-HMAC-SHA256 Credential={bad}, SignedHeaders=h, Signature=s");
            assert_eq!(
                parse_authorization(&header),
                Err(AuthorizationError::Credential(bad.into()))
            );
        }
    }

    #[test]
    fn signature_comparison() {
        let scope = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host, Signature=x",
        )
        .unwrap();
        let key = signing_key(SUITE_SECRET, &scope);
        let sig = hex(&signature(&key, "sts"));
        assert!(signature_matches(&key, "sts", &sig));
        assert!(signature_matches(&key, "sts", &sig.to_uppercase()));
        assert!(!signature_matches(&key, "sts2", &sig));
        assert!(!signature_matches(&key, "sts", &sig[..62]));
        assert!(!signature_matches(&key, "sts", "zz"));
    }

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(format_amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(parse_amz_date("20240229T235959Z"), Some(1_709_251_199));
        assert_eq!(format_amz_date(1_709_251_199), "20240229T235959Z");
        for bad in [
            "20150830T123600",
            "20150830 123600Z",
            "2015083OT123600Z",
            "20151330T123600Z",
            "20150830T243600Z",
            "+0150830T123600Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
        for secs in [0u64, 951_782_400, 4_102_444_800, 1_700_000_000] {
            assert_eq!(parse_amz_date(&format_amz_date(secs)), Some(secs));
        }
    }
}
