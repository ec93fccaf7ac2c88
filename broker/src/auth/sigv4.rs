//! AWS Signature Version 4: parses and verifies the `Authorization` header boto3 and the AWS CLI send.
//!
//! Two steps, so that a bad header is refused before the body is read:
//! 1. [`parse`] reads the `Authorization` header and the request time. It answers `Ok(None)`
//!    when the request is not SigV4-signed at all (no header, a bearer token), and refuses a
//!    header that is SigV4 but malformed, scoped to another service, dated differently from its
//!    scope, signed without `host`, or carrying session credentials.
//! 2. The caller looks up the secret of [`SignedRequest::access_key_id`] (an unknown key is the
//!    caller's `UnrecognizedClientException`), reads the body within its limit, and calls
//!    [`SignedRequest::verify`] with the raw request: the time against AWS's 5-minute skew, the
//!    payload hash, then the signature, compared in constant time.
//!
//! Choices, each as Lambda answers:
//! - The payload is always signed: `x-amz-content-sha256`, when sent, must be the body's
//!   SHA-256; `UNSIGNED-PAYLOAD` and the `STREAMING-*` chunked forms are refused.
//! - Session credentials (`x-amz-security-token`) are refused: Impulse has no STS, so no token
//!   can be valid, and ignoring one would accept a signature the client meant to scope to it.
//! - Any region is accepted (Impulse serves one endpoint for all); the service must be
//!   `lambda`.
//! - Presigned URLs (`X-Amz-Signature` in the query) are not supported: such a request has no
//!   `Authorization` header, so [`parse`] answers `Ok(None)` and the caller is refused as
//!   carrying no credential.
//!
//! No secret, derived key or computed signature appears in an error or in `Debug` output.

use std::fmt;
use std::time::SystemTime;

use axum::http::header::{AUTHORIZATION, DATE, HOST};
use axum::http::{HeaderMap, HeaderName, Method, Uri};
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

mod canonical;
#[cfg(test)]
mod tests;

/// The signing service every credential scope must name: Lambda's.
pub(crate) const LAMBDA_SERVICE: &str = "lambda";

/// The only algorithm SigV4 signs with (SigV4a's `AWS4-ECDSA-P256-SHA256` is not supported).
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The last component of every credential scope.
const TERMINATOR: &str = "aws4_request";

/// How far the request time may be from the server's clock, either way (AWS's 5 minutes).
const MAX_SKEW: TimeDelta = TimeDelta::minutes(5);

/// `X-Amz-Date`'s ISO 8601 basic format, also the time in the string to sign.
const ISO_BASIC: &str = "%Y%m%dT%H%M%SZ";

const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
const X_AMZ_CONTENT_SHA256: HeaderName = HeaderName::from_static("x-amz-content-sha256");
const X_AMZ_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");

/// The claims of a SigV4 `Authorization` header and the request time, parsed before the body is
/// read. Nothing here is verified until [`SignedRequest::verify`] succeeds.
pub(crate) struct SignedRequest {
    access_key_id: String,
    scope: CredentialScope,
    /// `SignedHeaders` as sent: it is hashed verbatim into the canonical request.
    signed_headers: String,
    /// The same list split; each name is lowercase and `host` is among them.
    header_names: Vec<HeaderName>,
    /// The signature the client sent, decoded from 64 hex digits.
    signature: [u8; 32],
    /// The request time from `X-Amz-Date`, else `Date`.
    time: RequestTime,
}

/// `<date>/<region>/<service>/aws4_request`: what the signing key is derived for.
#[derive(Debug)]
struct CredentialScope {
    /// `YYYYMMDD`, which must be the request time's day.
    date: String,
    region: String,
    service: String,
}

#[derive(Debug)]
struct RequestTime {
    at: DateTime<Utc>,
    /// The time in ISO 8601 basic format, as it enters the string to sign.
    iso: String,
}

/// Why a SigV4-signed request is refused. [`SigV4Error::error_type`] and the `Display` message
/// are what AWS answers; neither contains a secret or a computed signature.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SigV4Error {
    /// The `Authorization` header (or the date it needs) is not a well-formed SigV4 header.
    #[error("{0}")]
    Malformed(&'static str),
    /// The credential scope names a service other than Lambda.
    #[error("Credential should be scoped to correct service: '{expected}'.")]
    WrongService { expected: &'static str },
    /// The credential scope's date is not the request time's day.
    #[error(
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
         HTTP: '{scope}' != '{}', from '{request}'.",
        &request[..8]
    )]
    ScopeDateMismatch {
        scope: String,
        /// The request time in ISO 8601 basic format (always 16 characters).
        request: String,
    },
    /// `host` is not among the signed headers.
    #[error("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")]
    HostNotSigned,
    /// A header listed in `SignedHeaders` is absent from the request.
    #[error("The request signature we calculated does not match the signature you provided: header '{name}' is listed in SignedHeaders but absent from the request.")]
    SignedHeaderMissing { name: String },
    /// The request carries session credentials, which Impulse cannot have issued.
    #[error("The security token included in the request is invalid: Impulse accepts long-term access keys only, not session credentials (X-Amz-Security-Token).")]
    SessionToken,
    /// `x-amz-content-sha256` is `UNSIGNED-PAYLOAD` or a streaming form.
    #[error("The payload must be signed: x-amz-content-sha256 must be the SHA-256 of the body, not UNSIGNED-PAYLOAD or a STREAMING form.")]
    UnsignedPayload,
    /// `x-amz-content-sha256` is not the SHA-256 of the body received.
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch,
    /// The request time is more than 5 minutes before the server's clock.
    #[error(
        "Signature expired: {} is now earlier than {} ({} - 5 min.)",
        iso(request), iso(&(*now - MAX_SKEW)), iso(now)
    )]
    Expired {
        request: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// The request time is more than 5 minutes after the server's clock.
    #[error(
        "Signature not yet current: {} is still later than {} ({} + 5 min.)",
        iso(request), iso(&(*now + MAX_SKEW)), iso(now)
    )]
    NotYetCurrent {
        request: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// The signature does not match the request and the secret of its access key.
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")]
    SignatureMismatch,
}

/// Reads the SigV4 `Authorization` header and the request time, for the Lambda service.
///
/// `Ok(None)` when the request carries no SigV4 `Authorization` header: none at all, or another
/// scheme such as `Bearer`. A header whose scheme starts with `AWS` but is not
/// `AWS4-HMAC-SHA256` (SigV2, SigV4a) is an error, not `None`: the client meant to sign.
pub(crate) fn parse(headers: &HeaderMap) -> Result<Option<SignedRequest>, SigV4Error> {
    parse_for_service(headers, LAMBDA_SERVICE)
}

/// [`parse`] for any signing service: AWS's test suite signs for `service`.
fn parse_for_service(
    headers: &HeaderMap,
    service: &'static str,
) -> Result<Option<SignedRequest>, SigV4Error> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let is_aws = |value: &[u8]| value.starts_with(b"AWS");
    if values.next().is_some() {
        // Several credentials are ambiguous: refuse rather than pick one, if any is AWS's.
        if headers
            .get_all(AUTHORIZATION)
            .iter()
            .any(|v| is_aws(v.as_bytes()))
        {
            return Err(SigV4Error::Malformed(
                "A request must carry one Authorization header, not several.",
            ));
        }
        return Ok(None);
    }
    let value = value.as_bytes();
    let scheme = value.split(|b| *b == b' ').next().unwrap_or_default();
    if scheme != ALGORITHM.as_bytes() {
        if is_aws(scheme) {
            return Err(SigV4Error::Malformed(
                "Only the AWS4-HMAC-SHA256 signing algorithm is supported.",
            ));
        }
        return Ok(None);
    }
    let Some(value) = std::str::from_utf8(value).ok().filter(|v| v.is_ascii()) else {
        return Err(SigV4Error::Malformed(
            "The Authorization header must be ASCII.",
        ));
    };
    let params = AuthorizationParams::parse(&value[ALGORITHM.len()..])?;

    let (access_key_id, scope) = parse_credential(params.credential)?;
    if scope.service != service {
        return Err(SigV4Error::WrongService { expected: service });
    }
    let header_names = parse_signed_headers(params.signed_headers)?;
    let signature = parse_signature(params.signature)?;
    let time = request_time(headers)?;
    if scope.date != time.iso[..8] {
        return Err(SigV4Error::ScopeDateMismatch {
            scope: scope.date,
            request: time.iso,
        });
    }
    if headers.contains_key(X_AMZ_SECURITY_TOKEN) {
        return Err(SigV4Error::SessionToken);
    }
    Ok(Some(SignedRequest {
        access_key_id: access_key_id.to_owned(),
        scope,
        signed_headers: params.signed_headers.to_owned(),
        header_names,
        signature,
        time,
    }))
}

// === impl SignedRequest ===

impl SignedRequest {
    /// The access key the client claims to sign with; look its secret up for [`Self::verify`].
    pub(crate) fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// Checks the signature over the exact request received, with `secret` the secret access
    /// key of [`Self::access_key_id`].
    ///
    /// In order: the request time is within 5 minutes of `now` either way; an
    /// `x-amz-content-sha256` header equals the SHA-256 of `body`; and the signature matches
    /// the canonical request built from `method`, the path and query of `uri` as received, the
    /// signed headers and the SHA-256 of `body`.
    ///
    /// `uri` MUST be the request's original URI, before any router strips a prefix (axum's
    /// `OriginalUri`), and `headers` the same map given to [`parse`]; `body` MUST be the raw
    /// bytes, before any decoding.
    pub(crate) fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        secret: &SecretString,
        now: SystemTime,
    ) -> Result<(), SigV4Error> {
        self.check_time(DateTime::<Utc>::from(now))?;
        let payload_hash = hex::encode(Sha256::digest(body));
        if let Some(claimed) = headers.get(X_AMZ_CONTENT_SHA256) {
            let claimed = claimed.as_bytes();
            if claimed == b"UNSIGNED-PAYLOAD" || claimed.starts_with(b"STREAMING-") {
                return Err(SigV4Error::UnsignedPayload);
            }
            if claimed != payload_hash.as_bytes() {
                return Err(SigV4Error::ContentSha256Mismatch);
            }
        }
        let canonical = canonical::canonical_request(
            method,
            uri,
            headers,
            &self.signed_headers,
            &self.header_names,
            &payload_hash,
        )?;
        let mut mac = self.signing_mac(secret);
        mac.update(self.string_to_sign(&canonical).as_bytes());
        // `verify_slice` compares in constant time.
        mac.verify_slice(&self.signature)
            .map_err(|_| SigV4Error::SignatureMismatch)
    }

    fn check_time(&self, now: DateTime<Utc>) -> Result<(), SigV4Error> {
        let request = self.time.at;
        if request < now - MAX_SKEW {
            return Err(SigV4Error::Expired { request, now });
        }
        if request > now + MAX_SKEW {
            return Err(SigV4Error::NotYetCurrent { request, now });
        }
        Ok(())
    }

    /// `AWS4-HMAC-SHA256\n<time>\n<scope>\n<hex SHA-256 of the canonical request>`.
    fn string_to_sign(&self, canonical_request: &[u8]) -> String {
        let CredentialScope {
            date,
            region,
            service,
        } = &self.scope;
        format!(
            "{ALGORITHM}\n{}\n{date}/{region}/{service}/{TERMINATOR}\n{}",
            self.time.iso,
            hex::encode(Sha256::digest(canonical_request))
        )
    }

    /// An HMAC keyed with the signing key: `AWS4<secret>` chained through the scope's date,
    /// region, service and `aws4_request`.
    fn signing_mac(&self, secret: &SecretString) -> Hmac<Sha256> {
        let secret = secret.expose_secret();
        let mut key = secrecy::zeroize::Zeroizing::new(Vec::with_capacity(4 + secret.len()));
        key.extend_from_slice(b"AWS4");
        key.extend_from_slice(secret.as_bytes());
        let mut derived = hmac_sha256(&key, self.scope.date.as_bytes());
        for part in [&self.scope.region, &self.scope.service] {
            derived = hmac_sha256(&derived, part.as_bytes());
        }
        let signing_key = hmac_sha256(&derived, TERMINATOR.as_bytes());
        Hmac::<Sha256>::new_from_slice(&signing_key).expect("HMAC accepts keys of any length")
    }
}

/// The claims are not secret, but the signature is redacted anyway: logs need only the key id.
impl fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRequest")
            .field("access_key_id", &self.access_key_id)
            .field("scope", &self.scope)
            .field("signed_headers", &self.signed_headers)
            .field("signature", &"***")
            .field("time", &self.time.iso)
            .finish()
    }
}

// === impl SigV4Error ===

impl SigV4Error {
    /// AWS's error type for this refusal (the `x-amzn-ErrorType` and `__type` Lambda answers).
    pub(crate) fn error_type(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "IncompleteSignatureException",
            Self::SessionToken => "UnrecognizedClientException",
            Self::WrongService { .. }
            | Self::ScopeDateMismatch { .. }
            | Self::HostNotSigned
            | Self::SignedHeaderMissing { .. }
            | Self::UnsignedPayload
            | Self::ContentSha256Mismatch
            | Self::Expired { .. }
            | Self::NotYetCurrent { .. }
            | Self::SignatureMismatch => "InvalidSignatureException",
        }
    }
}

// === parsing ===

/// The three `key=value` parameters after the algorithm, in any order.
struct AuthorizationParams<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

impl<'a> AuthorizationParams<'a> {
    /// Parses ` Credential=…, SignedHeaders=…, Signature=…` (the text after the algorithm).
    fn parse(params: &'a str) -> Result<Self, SigV4Error> {
        if !params.starts_with(' ') {
            return Err(SigV4Error::Malformed(
                "The Authorization header must be 'AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...'.",
            ));
        }
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for param in params.split(',') {
            let param = param.trim_matches(|c| c == ' ' || c == '\t');
            let Some((key, value)) = param.split_once('=') else {
                return Err(SigV4Error::Malformed(
                    "Invalid key=value pair (missing equal-sign) in Authorization header.",
                ));
            };
            let slot = match key {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => {
                    return Err(SigV4Error::Malformed(
                        "The Authorization header has a parameter other than Credential, SignedHeaders and Signature.",
                    ))
                }
            };
            if slot.replace(value).is_some() {
                return Err(SigV4Error::Malformed(
                    "The Authorization header repeats a parameter.",
                ));
            }
        }
        let credential = credential.ok_or(SigV4Error::Malformed(
            "Authorization header requires 'Credential' parameter.",
        ))?;
        let signed_headers = signed_headers.ok_or(SigV4Error::Malformed(
            "Authorization header requires 'SignedHeaders' parameter.",
        ))?;
        let signature = signature.ok_or(SigV4Error::Malformed(
            "Authorization header requires 'Signature' parameter.",
        ))?;
        Ok(Self {
            credential,
            signed_headers,
            signature,
        })
    }
}

/// `<access key id>/<YYYYMMDD>/<region>/<service>/aws4_request`.
fn parse_credential(credential: &str) -> Result<(&str, CredentialScope), SigV4Error> {
    const BAD_SCOPE: SigV4Error = SigV4Error::Malformed(
        "Credential must be '<access key id>/<YYYYMMDD>/<region>/<service>/aws4_request'.",
    );
    let mut parts = credential.split('/');
    let (Some(key), Some(date), Some(region), Some(service), Some(terminator), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(BAD_SCOPE);
    };
    let is_date = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
    let is_word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !is_word(key) || !is_date || !is_word(region) || !is_word(service) {
        return Err(BAD_SCOPE);
    }
    if terminator != TERMINATOR {
        return Err(SigV4Error::Malformed(
            "Credential should be scoped with a valid terminator: 'aws4_request'.",
        ));
    }
    let scope = CredentialScope {
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
    };
    Ok((key, scope))
}

/// `host;x-amz-date;…`: lowercase header names separated by `;`, `host` among them.
fn parse_signed_headers(signed_headers: &str) -> Result<Vec<HeaderName>, SigV4Error> {
    let mut names = Vec::new();
    for name in signed_headers.split(';') {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .ok()
            .filter(|parsed| parsed.as_str() == name);
        let Some(parsed) = parsed else {
            return Err(SigV4Error::Malformed(
                "SignedHeaders must be lowercase header names separated by ';'.",
            ));
        };
        names.push(parsed);
    }
    if !names.contains(&HOST) {
        return Err(SigV4Error::HostNotSigned);
    }
    Ok(names)
}

/// 64 hex digits.
fn parse_signature(signature: &str) -> Result<[u8; 32], SigV4Error> {
    let mut decoded = [0; 32];
    hex::decode_to_slice(signature, &mut decoded)
        .map_err(|_| SigV4Error::Malformed("Signature must be 64 hexadecimal digits."))?;
    Ok(decoded)
}

/// The request time: `X-Amz-Date` (ISO 8601 basic) if present, else `Date` (RFC 7231/2822).
fn request_time(headers: &HeaderMap) -> Result<RequestTime, SigV4Error> {
    if let Some(value) = single(headers, &X_AMZ_DATE)? {
        let bad = || {
            SigV4Error::Malformed(
                "X-Amz-Date must be in ISO 8601 basic format, YYYYMMDD'T'HHMMSS'Z'.",
            )
        };
        let value = value.to_str().map_err(|_| bad())?;
        // chrono accepts fewer digits than the format shows; SigV4 hashes the exact text.
        let shape_ok = value.len() == 16
            && value.bytes().enumerate().all(|(i, b)| match i {
                8 => b == b'T',
                15 => b == b'Z',
                _ => b.is_ascii_digit(),
            });
        if !shape_ok {
            return Err(bad());
        }
        let at = NaiveDateTime::parse_from_str(value, ISO_BASIC)
            .map_err(|_| bad())?
            .and_utc();
        return Ok(RequestTime {
            at,
            iso: value.to_owned(),
        });
    }
    if let Some(value) = single(headers, &DATE)? {
        let at = value
            .to_str()
            .ok()
            .and_then(|value| DateTime::parse_from_rfc2822(value).ok())
            .ok_or(SigV4Error::Malformed(
                "Date must be an HTTP date such as 'Mon, 07 Dec 2026 01:10:00 GMT'.",
            ))?
            .to_utc();
        return Ok(RequestTime {
            at,
            iso: iso(&at).to_string(),
        });
    }
    Err(SigV4Error::Malformed(
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
    ))
}

/// The one value of `name`, `None` when absent; two values are ambiguous and refused.
fn single<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h axum::http::HeaderValue>, SigV4Error> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(SigV4Error::Malformed(
            "A request must carry one X-Amz-Date or Date header, not several.",
        ));
    }
    Ok(first)
}

/// A time in ISO 8601 basic format, as AWS prints it in its messages.
fn iso(at: &DateTime<Utc>) -> impl fmt::Display + '_ {
    at.format(ISO_BASIC)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}
