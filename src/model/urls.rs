//! Function URLs as every thread sees them: the stored configuration (`UrlConfig`, kept in the
//! function's config.json by the control plane), its CORS settings, and the route a data-plane
//! core looks a URL id up in (`UrlRoute`, published in the `FunctionTable`).
//!
//! Plain data, `Send`: the control plane builds and validates it, the cores only read it. The URL
//! id (32 lowercase alphanumeric characters, as AWS's) is the first label of the URL's host,
//! `<id>.lambda-url.<region>.localhost`; `url_id_of_host` is the one place that recognises it.

use serde::{Deserialize, Serialize};

/// Characters of a URL id, as AWS's.
pub const URL_ID_CHARS: usize = 32;
/// The label after the URL id in a function URL's host name.
pub const URL_HOST_LABEL: &str = "lambda-url";

/// AuthType: `NONE` (public) or `AWS_IAM` (SigV4-signed, verified when the server's own
/// authentication is on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UrlAuth {
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "AWS_IAM")]
    AwsIam,
}

impl UrlAuth {
    pub fn name(self) -> &'static str {
        match self {
            UrlAuth::None => "NONE",
            UrlAuth::AwsIam => "AWS_IAM",
        }
    }
}

/// InvokeMode: `BUFFERED` (the default) or `RESPONSE_STREAM` (the answer is streamed to the
/// client as the function produces it: `dataplane::function_url::write_stream`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum InvokeMode {
    #[default]
    #[serde(rename = "BUFFERED")]
    Buffered,
    #[serde(rename = "RESPONSE_STREAM")]
    ResponseStream,
}

impl InvokeMode {
    pub fn name(self) -> &'static str {
        match self {
            InvokeMode::Buffered => "BUFFERED",
            InvokeMode::ResponseStream => "RESPONSE_STREAM",
        }
    }
}

/// A function URL's `Cors` object. Header names are kept as given (AWS returns them so) and
/// compared case-insensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cors {
    #[serde(default)]
    pub allow_credentials: Option<bool>,
    #[serde(default)]
    pub allow_headers: Option<Vec<String>>,
    #[serde(default)]
    pub allow_methods: Option<Vec<String>>,
    #[serde(default)]
    pub allow_origins: Option<Vec<String>>,
    #[serde(default)]
    pub expose_headers: Option<Vec<String>>,
    #[serde(default)]
    pub max_age_s: Option<u32>,
}

impl Cors {
    /// The value of `Access-Control-Allow-Origin` for a request from `origin`, if it may have
    /// one: `*` when every origin is allowed (and credentials are not), else the origin itself.
    pub fn allowed_origin<'a>(&self, origin: &'a str) -> Option<&'a str> {
        let origins = self.allow_origins.as_deref()?;
        if origins.iter().any(|o| o == "*") {
            return Some(if self.allow_credentials == Some(true) {
                origin
            } else {
                "*"
            });
        }
        origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
            .then_some(origin)
    }
}

/// One function URL's configuration, as stored with its function (keyed there by qualifier).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UrlConfig {
    /// 32 lowercase alphanumeric characters, fixed for the life of the URL.
    pub url_id: String,
    pub auth_type: UrlAuth,
    #[serde(default)]
    pub cors: Option<Cors>,
    #[serde(default)]
    pub invoke_mode: InvokeMode,
    /// ISO 8601 with microseconds, as AWS renders CreationTime.
    pub creation_time: String,
    pub last_modified_time: String,
}

/// What a core needs to serve a URL invoke without asking the control plane: the function and
/// qualifier it invokes, and how it authenticates and answers CORS.
#[derive(Clone, Debug, PartialEq)]
pub struct UrlRoute {
    pub function: String,
    /// `$LATEST` or an alias name.
    pub qualifier: String,
    pub auth_type: UrlAuth,
    pub cors: Option<Cors>,
    pub invoke_mode: InvokeMode,
}

/// A fresh URL id: 32 random lowercase alphanumeric characters.
pub fn new_url_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..URL_ID_CHARS)
        .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char)
        .collect()
}

/// Whether `id` has the shape of a URL id.
pub fn is_url_id(id: &str) -> bool {
    id.len() == URL_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The URL id of a `Host` header naming a function URL (`<id>.lambda-url.<anything>`, any port),
/// or `None` for any other host (the User API's). Case-insensitive as host names are; the id is
/// returned as sent, so an upper-case id matches no URL.
pub fn url_id_of_host(host: &str) -> Option<&str> {
    let (id, rest) = host.split_once('.')?;
    let label = rest.get(..URL_HOST_LABEL.len() + 1)?;
    let is_url =
        label[..URL_HOST_LABEL.len()].eq_ignore_ascii_case(URL_HOST_LABEL) && label.ends_with('.');
    (is_url && !id.is_empty()).then_some(id)
}

/// The URL a client reaches the function URL at: `http://<id>.lambda-url.<region>.localhost[:port]/`.
/// `*.localhost` resolves to the loopback address (RFC 6761), so no DNS set-up is needed.
pub fn function_url(url_id: &str, region: &str, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("http://{url_id}.{URL_HOST_LABEL}.{region}.localhost:{p}/"),
        None => format!("http://{url_id}.{URL_HOST_LABEL}.{region}.localhost/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_aws_shaped_and_distinct() {
        let a = new_url_id();
        assert!(is_url_id(&a), "{a}");
        assert_ne!(a, new_url_id());
        assert!(!is_url_id("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"));
        assert!(!is_url_id("short"));
    }

    #[test]
    fn hosts_are_recognised() {
        let id = "abcdefghijklmnopqrstuvwxyz012345";
        assert_eq!(
            url_id_of_host(&format!("{id}.lambda-url.us-east-1.localhost:9000")),
            Some(id)
        );
        assert_eq!(
            url_id_of_host(&format!("{id}.LAMBDA-URL.us-east-1.on.aws")),
            Some(id)
        );
        assert_eq!(url_id_of_host("127.0.0.1:9000"), None);
        assert_eq!(url_id_of_host("localhost"), None);
        assert_eq!(url_id_of_host("x.lambda-urls.example"), None);
        assert_eq!(url_id_of_host(".lambda-url.x"), None);
        assert_eq!(url_id_of_host("x.lambda-url"), None);
    }

    #[test]
    fn cors_origins() {
        let cors = Cors {
            allow_origins: Some(vec!["https://a.example".into()]),
            ..Cors::default()
        };
        assert_eq!(
            cors.allowed_origin("https://A.example"),
            Some("https://A.example")
        );
        assert_eq!(cors.allowed_origin("https://b.example"), None);
        let any = Cors {
            allow_origins: Some(vec!["*".into()]),
            ..Cors::default()
        };
        assert_eq!(any.allowed_origin("https://b.example"), Some("*"));
        assert_eq!(Cors::default().allowed_origin("https://b.example"), None);
    }

    #[test]
    fn urls_name_localhost() {
        assert_eq!(
            function_url("abc", "us-east-1", Some(9000)),
            "http://abc.lambda-url.us-east-1.localhost:9000/"
        );
    }
}
