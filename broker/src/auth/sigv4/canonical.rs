//! SigV4's canonical request: the exact bytes a client hashed, rebuilt from the request received.
//!
//! The rules are the ones botocore signs by (and AWS's SigV4 test suite checks), applied to what
//! arrived on the wire rather than to what a client meant to send:
//! - the path as received is already URI-encoded once, so each segment is encoded *again*
//!   (every service but S3 does this): `arn%3Aaws%3A…` becomes `arn%253Aaws%253A…`;
//! - dot segments and empty segments are removed first (botocore's `remove_dot_segments`);
//! - query parameters are decoded, re-encoded with AWS's unreserved set and sorted;
//! - header values are trimmed, inner runs of spaces collapsed, repeated headers joined by `,`.

use axum::http::header::HOST;
use axum::http::{HeaderMap, HeaderName, Method, Uri};
use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::SigV4Error;

/// Everything but AWS's unreserved characters `A-Za-z0-9-_.~` is percent-encoded.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The canonical request, ready to be hashed into the string to sign.
///
/// `signed_headers` is the `SignedHeaders` list exactly as the client sent it (its names
/// lowercase), `names` the same list split; `payload_hash` is the lowercase hex SHA-256 of the
/// body as received. A name in `names` that the request does not carry is an error: the client
/// signed a header that did not arrive, so the signature cannot match.
pub(super) fn canonical_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    signed_headers: &str,
    names: &[HeaderName],
    payload_hash: &str,
) -> Result<Vec<u8>, SigV4Error> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b'\n');
    canonical_uri(uri.path(), &mut out);
    out.push(b'\n');
    canonical_query(uri.query().unwrap_or_default(), &mut out);
    out.push(b'\n');
    for name in names {
        canonical_header(name, uri, headers, &mut out)?;
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    Ok(out)
}

/// Appends the path with dot and empty segments removed and every segment encoded once more.
fn canonical_uri(path: &str, out: &mut Vec<u8>) {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    // An origin-form path always starts with `/`; a trailing `/` is kept unless nothing but
    // slashes and dots remain (botocore: `//` and `/./` both canonicalise to `/`).
    out.push(b'/');
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend(percent_encode(segment.as_bytes(), NOT_UNRESERVED).flat_map(str::bytes));
    }
    if path.ends_with('/') && !segments.is_empty() {
        out.push(b'/');
    }
}

/// Appends the query's `name=value` pairs, decoded, re-encoded and sorted by name then value.
///
/// `+` stays a literal plus (re-encoded `%2B`): SigV4 clients encode a space as `%20`, and a
/// client that sent a bare `+` hashed it as `%2B` too.
fn canonical_query(query: &str, out: &mut Vec<u8>) {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (reencode(name), reencode(value))
        })
        .collect();
    pairs.sort_unstable();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
    }
}

/// Decodes `%XX` escapes (a `%` not followed by two hex digits stays literal) and encodes the
/// bytes with the unreserved set, so `%e1`, `%E1` and a raw byte all canonicalise to `%E1`.
fn reencode(component: &str) -> String {
    let decoded: Vec<u8> = percent_decode_str(component).collect();
    percent_encode(&decoded, NOT_UNRESERVED).collect()
}

/// Appends `name:value\n`, joining repeated headers with `,` in the order received.
///
/// Over HTTP/2 the host arrives as the `:authority` pseudo-header, which hyper exposes as the
/// URI's authority rather than a `Host` header; it is what the client signed as `host`.
fn canonical_header(
    name: &HeaderName,
    uri: &Uri,
    headers: &HeaderMap,
    out: &mut Vec<u8>,
) -> Result<(), SigV4Error> {
    out.extend_from_slice(name.as_str().as_bytes());
    out.push(b':');
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        let authority = uri.authority().filter(|_| name == HOST);
        let Some(authority) = authority else {
            return Err(SigV4Error::SignedHeaderMissing {
                name: name.as_str().to_owned(),
            });
        };
        out.extend_from_slice(authority.as_str().as_bytes());
    }
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_trimmed(value.as_bytes(), out);
    }
    out.push(b'\n');
    Ok(())
}

/// Appends `value` without leading and trailing whitespace, each inner run of spaces and tabs
/// collapsed to one space (botocore: `' '.join(value.split())`).
fn push_trimmed(value: &[u8], out: &mut Vec<u8>) {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let mut words = value.split(is_space).filter(|word| !word.is_empty());
    if let Some(first) = words.next() {
        out.extend_from_slice(first);
    }
    for word in words {
        out.push(b' ');
        out.extend_from_slice(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(path: &str) -> String {
        let mut out = Vec::new();
        canonical_uri(path, &mut out);
        String::from_utf8(out).expect("canonical URIs are ASCII")
    }

    fn query(query: &str) -> String {
        let mut out = Vec::new();
        canonical_query(query, &mut out);
        String::from_utf8(out).expect("canonical queries are ASCII")
    }

    fn trimmed(value: &str) -> String {
        let mut out = Vec::new();
        push_trimmed(value.as_bytes(), &mut out);
        String::from_utf8(out).expect("test values are UTF-8")
    }

    #[test]
    fn path_segments_are_encoded_a_second_time() {
        assert_eq!(
            uri("/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Aecho/invocations"),
            "/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-east-1%253A123456789012%253Afunction%253Aecho/invocations"
        );
        assert_eq!(
            uri("/2015-03-31/functions/echo%3A%24LATEST/invocations"),
            "/2015-03-31/functions/echo%253A%2524LATEST/invocations"
        );
        // A client that did not encode `:` and `$` hashed them encoded once.
        assert_eq!(
            uri("/2015-03-31/functions/echo:$LATEST/invocations"),
            "/2015-03-31/functions/echo%3A%24LATEST/invocations"
        );
        assert_eq!(uri("/a~b_c-d.e"), "/a~b_c-d.e");
    }

    #[test]
    fn dot_and_empty_segments_are_removed_as_botocore_does() {
        // Expected values from AWS's SigV4 test suite (awslabs/aws-c-auth,
        // tests/aws-signing-test-suite/v4/get-*-normalized/header-canonical-request.txt).
        assert_eq!(uri("/"), "/");
        assert_eq!(uri(""), "/");
        assert_eq!(uri("//"), "/");
        assert_eq!(uri("/./"), "/");
        assert_eq!(uri("/./example"), "/example");
        assert_eq!(uri("/example/.."), "/");
        assert_eq!(uri("/example1/example2/../.."), "/");
        assert_eq!(uri("//example//"), "/example/");
        assert_eq!(uri("/../../a"), "/a");
    }

    #[test]
    fn query_is_reencoded_and_sorted_by_name_then_value() {
        assert_eq!(query(""), "");
        assert_eq!(query("Qualifier=%24LATEST"), "Qualifier=%24LATEST");
        assert_eq!(query("Qualifier=$LATEST"), "Qualifier=%24LATEST");
        assert_eq!(query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(
            query("Param-3=Value3&Param=Value2&%e1%88%b4=Value1"),
            "%E1%88%B4=Value1&Param=Value2&Param-3=Value3"
        );
        assert_eq!(query("flag&x="), "flag=&x=");
        assert_eq!(query("a=1&&b=2&"), "a=1&b=2");
        assert_eq!(query("sp=a%20b&plus=a+b"), "plus=a%2Bb&sp=a%20b");
        assert_eq!(query("bad=%zz%4"), "bad=%25zz%254");
        assert_eq!(query("k=a=b"), "k=a%3Db");
    }

    #[test]
    fn header_values_are_trimmed_and_inner_spaces_collapsed() {
        assert_eq!(trimmed("value1"), "value1");
        assert_eq!(trimmed("  \"a   b   c\" "), "\"a b c\"");
        assert_eq!(trimmed("a\t \tb"), "a b");
        assert_eq!(trimmed("   "), "");
    }

    #[test]
    fn repeated_headers_join_in_order_and_host_falls_back_to_the_authority() {
        let mut headers = HeaderMap::new();
        headers.append("my-header1", "value2".parse().expect("valid value"));
        headers.append("my-header1", " value2".parse().expect("valid value"));
        headers.append("my-header1", "value1 ".parse().expect("valid value"));
        let uri: Uri = "http://example.amazonaws.com:8080/"
            .parse()
            .expect("valid URI");
        let mut out = Vec::new();
        canonical_header(&HOST, &uri, &headers, &mut out).expect("host from the authority");
        canonical_header(
            &HeaderName::from_static("my-header1"),
            &uri,
            &headers,
            &mut out,
        )
        .expect("header present");
        assert_eq!(
            String::from_utf8(out).expect("ASCII"),
            "host:example.amazonaws.com:8080\nmy-header1:value2,value2,value1\n"
        );

        let origin_form: Uri = "/".parse().expect("valid URI");
        let err = canonical_header(&HOST, &origin_form, &headers, &mut Vec::new())
            .expect_err("no host anywhere");
        assert!(matches!(err, SigV4Error::SignedHeaderMissing { name } if name == "host"));
    }
}
