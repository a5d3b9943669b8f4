//! The one percent-decoder (RFC 3986 2.1 `%XX` escapes) of the server, in the rule sets its
//! callers need, and the one percent-encoder (SigV4's `UriEncode`, for canonical requests).
//! Pure functions over strings: no I/O, no state, callable from any thread.
//!
//! Both rule sets share one scanner, `decode_bytes`, and differ only in the points below:
//!
//! | rule                  | `decode_query` (query strings)     | `decode_path_segment` (URL paths) |
//! |-----------------------|------------------------------------|-----------------------------------|
//! | `+`                   | a space, as in form-urlencoded     | a literal `+`                     |
//! | invalid escape        | kept literally (`%zz` stays)       | the whole input is refused        |
//! | non-UTF-8 result      | each bad sequence becomes U+FFFD   | the whole input is refused        |
//!
//! An escape is `%` followed by exactly two hexadecimal digits of either case; anything else
//! that starts with `%` (a sign, one digit, the end of the text) is an invalid escape. Invariant:
//! the output is never longer than the input in bytes, apart from U+FFFD replacements.

/// How `decode_bytes` reads `+`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plus {
    /// `application/x-www-form-urlencoded`: `+` stands for a space.
    Space,
    /// RFC 3986 paths: `+` is itself.
    Literal,
}

/// The value of one hexadecimal digit, either case.
fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|digit| digit as u8)
}

/// Decodes every valid escape of `text` and reads `+` as `plus` says; an invalid escape is copied
/// literally. Returns the bytes and whether every `%` began a valid escape.
fn decode_bytes(text: &str, plus: Plus) -> (Vec<u8>, bool) {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut all_valid = true;
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes[i..] {
            [b'%', hi, lo, ..] => hex_digit(hi).zip(hex_digit(lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'%') => all_valid = false,
            (None, b'+') if plus == Plus::Space => {
                out.push(b' ');
                i += 1;
                continue;
            }
            _ => {}
        }
        out.push(bytes[i]);
        i += 1;
    }
    (out, all_valid)
}

/// Decodes a query-string key or value (`application/x-www-form-urlencoded`): `+` is a space,
/// an invalid escape is kept as written, and bytes that do not form UTF-8 become U+FFFD. Never
/// fails, as a lenient query parser must not refuse a request over one odd parameter.
pub fn decode_query(text: &str) -> String {
    let (bytes, _) = decode_bytes(text, Plus::Space);
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Decodes a SigV4 query-string key or value to bytes: `+` stays `+` (SigV4 clients encode a
/// space as `%20`), an invalid escape is kept as written, and the bytes need not be UTF-8, since
/// the result is only re-encoded (`encode_unreserved`) to rebuild what the client signed.
pub fn decode_component(text: &str) -> Vec<u8> {
    decode_bytes(text, Plus::Literal).0
}

/// Appends `bytes` to `out` percent-encoded as SigV4's `UriEncode` does: every byte but the
/// unreserved characters of RFC 3986 (`A-Z a-z 0-9 - _ . ~`), and `/` when `keep_slash`, becomes
/// `%XX` with upper-case hexadecimal digits.
pub fn encode_unreserved(bytes: &[u8], keep_slash: bool, out: &mut String) {
    const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in bytes {
        let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && byte == b'/') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(byte & 0x0f)]));
        }
    }
}

/// Decodes one URL path segment (RFC 3986): `+` stays `+`; `None` if any `%` does not begin a
/// valid escape or the decoded bytes are not UTF-8, since a path that names a resource must
/// decode to exactly one name.
pub fn decode_path_segment(text: &str) -> Option<String> {
    let (bytes, all_valid) = decode_bytes(text, Plus::Literal);
    if !all_valid {
        return None;
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_rules() {
        assert_eq!(decode_query("a%2Bb"), "a+b");
        assert_eq!(decode_query("1+2"), "1 2");
        assert_eq!(decode_query("%41%62%7e"), "Ab~");
        assert_eq!(decode_query("plain"), "plain");
        assert_eq!(decode_query(""), "");
        // Invalid escapes stay as written, including a trailing `%` or one digit.
        assert_eq!(decode_query("a%zz%"), "a%zz%");
        assert_eq!(decode_query("a%2"), "a%2");
        assert_eq!(decode_query("%+1"), "% 1");
        // An escaped `+` is a plus, not a space.
        assert_eq!(decode_query("%2B+"), "+ ");
        // UTF-8 escapes decode; a lone byte that is not UTF-8 becomes U+FFFD.
        assert_eq!(decode_query("%C3%A9"), "é");
        assert_eq!(decode_query("a%FFb"), "a\u{FFFD}b");
        assert_eq!(decode_query("é"), "é");
    }

    #[test]
    fn path_segment_rules() {
        assert_eq!(decode_path_segment("f%20n").as_deref(), Some("f n"));
        assert_eq!(decode_path_segment("a+b").as_deref(), Some("a+b"));
        assert_eq!(
            decode_path_segment("arn%3Aaws%3alambda").as_deref(),
            Some("arn:aws:lambda")
        );
        assert_eq!(decode_path_segment("%24LATEST").as_deref(), Some("$LATEST"));
        assert_eq!(decode_path_segment("").as_deref(), Some(""));
        for invalid in ["a%", "a%2", "a%zz", "%+f", "%-1", "%é"] {
            assert_eq!(decode_path_segment(invalid), None, "{invalid}");
        }
        assert_eq!(decode_path_segment("a%FFb"), None);
        assert_eq!(decode_path_segment("%C3%A9").as_deref(), Some("é"));
    }

    #[test]
    fn component_decoding_keeps_plus_and_bytes() {
        assert_eq!(decode_component("a+b%2B%20"), b"a+b+ ");
        assert_eq!(decode_component("%zz%"), b"%zz%");
        assert_eq!(decode_component("%FF"), vec![0xFF]);
    }

    #[test]
    fn encoding_is_sigv4_uri_encode() {
        let mut out = String::new();
        encode_unreserved(b"-._~09AZaz", false, &mut out);
        assert_eq!(out, "-._~09AZaz");
        out.clear();
        encode_unreserved("a b/+:%ሴ".as_bytes(), false, &mut out);
        assert_eq!(out, "a%20b%2F%2B%3A%25%E1%88%B4");
        out.clear();
        encode_unreserved(b"/a b/", true, &mut out);
        assert_eq!(out, "/a%20b/");
        // Decoding then encoding normalises escapes to upper case and unreserved characters.
        out.clear();
        encode_unreserved(&decode_component("%7e%3a"), false, &mut out);
        assert_eq!(out, "~%3A");
    }

    #[test]
    fn both_rule_sets_agree_where_the_rules_do() {
        for text in ["", "abc", "a%20b", "%41", "%c3%a9", "x-y_z.0~"] {
            assert_eq!(
                decode_path_segment(text),
                Some(decode_query(text)),
                "{text}"
            );
        }
    }
}
