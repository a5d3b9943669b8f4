//! Criterion bench for User API authentication (`model::auth::Credentials::verify`): what SigV4
//! verification adds to each request when `--auth` is on, for an Invoke as boto3 signs it (100-byte
//! and 64 KB bodies), and the canonicalisation and key derivation on their own.

use std::time::{Duration, UNIX_EPOCH};

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use lambda_at_home::model::auth::Credentials;
use lambda_at_home::protocols::http::{Decoder, Limits, Request};
use lambda_at_home::protocols::sigv4::{self, CanonicalInput, Signer};

const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// The moment the bench requests are signed at and verified at.
const NOW_S: u64 = 1_714_564_800;
const PATH: &str = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Amy-function/invocations";

/// An Invoke as boto3 sends it, signed over host, x-amz-date and the invocation headers.
fn signed_invoke(body: &[u8]) -> Request {
    let amz_date = sigv4::format_amz_date(NOW_S);
    let headers: Vec<(&str, &[u8])> = vec![
        ("Host", b"127.0.0.1:9000"),
        ("X-Amz-Date", amz_date.as_bytes()),
        ("X-Amz-Invocation-Type", b"RequestResponse"),
        ("X-Amz-Log-Type", b"None"),
    ];
    let hash = sigv4::sha256_hex(body);
    let input = CanonicalInput {
        method: "POST",
        path: PATH,
        query: Some("Qualifier=%24LATEST"),
        headers: || headers.iter().copied(),
        signed_headers: "host;x-amz-date;x-amz-invocation-type;x-amz-log-type",
        payload_hash: &hash,
    };
    let signer = Signer {
        access_key_id: KEY_ID,
        secret: SECRET,
        region: "us-east-1",
        service: "lambda",
    };
    let auth = signer.authorization(&amz_date, &input);
    let mut raw = format!(
        "POST {PATH}?Qualifier=%24LATEST HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n\
Accept-Encoding: identity\r\nX-Amz-Invocation-Type: RequestResponse\r\nX-Amz-Log-Type: None\r\n\
User-Agent: Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux#6.5.0 lang/python#3.11.8\r\n\
X-Amz-Date: {amz_date}\r\nAuthorization: {auth}\r\n\
amz-sdk-invocation-id: 8f2b5a3c-1d4e-4f6a-9b7c-0e1d2c3b4a59\r\namz-sdk-request: attempt=1; max=3\r\n\
Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    Decoder::new(Limits::default())
        .decode(&mut BytesMut::from(&raw[..]))
        .expect("valid request")
        .expect("complete request")
}

fn bench_verify(c: &mut Criterion) {
    let mut credentials = Credentials::default();
    credentials.insert(KEY_ID, SECRET).expect("a key");
    let now = UNIX_EPOCH + Duration::from_secs(NOW_S);
    let mut group = c.benchmark_group("sigv4");
    for (name, size) in [
        ("verify_invoke_100B", 100usize),
        ("verify_invoke_64KB", 64 * 1024),
    ] {
        let body = format!("{{\"padding\":\"{}\"}}", "x".repeat(size - 14));
        let req = signed_invoke(body.as_bytes());
        assert!(credentials.verify(&req, now).is_ok());
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |b| {
            b.iter(|| credentials.verify(black_box(&req), black_box(now)))
        });
    }
    group.finish();
    // The parts, without a byte throughput (they do not read the body).
    let mut group = c.benchmark_group("sigv4_parts");
    let req = signed_invoke(b"{}");
    group.bench_function("precheck", |b| {
        b.iter(|| {
            credentials
                .precheck(black_box(&req), black_box(now))
                .is_ok()
        })
    });
    group.bench_function("canonical_request", |b| {
        b.iter(|| {
            sigv4::canonical_request(&CanonicalInput {
                method: "POST",
                path: black_box(PATH),
                query: req.query(),
                headers: || req.headers(),
                signed_headers: "host;x-amz-date;x-amz-invocation-type;x-amz-log-type",
                payload_hash: "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            })
        })
    });
    let (auth, _, _) = credentials.precheck(&req, now).expect("valid");
    group.bench_function("signing_key", |b| {
        b.iter(|| sigv4::signing_key(black_box(SECRET), black_box(&auth)))
    });
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
