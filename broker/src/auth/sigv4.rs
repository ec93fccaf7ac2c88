//! Placeholder for the SigV4 verifier (being written on the `sigv4` branch): refuses every
//! signed request, so nothing signed passes before the real verifier lands.

use std::fmt;
use std::time::SystemTime;

use axum::http::{HeaderMap, Method, Uri};
use secrecy::SecretString;

/// The claims of a SigV4 `Authorization` header.
#[derive(Debug)]
pub(crate) struct SignedRequest {
    access_key_id: String,
}

/// Why a signature was refused.
#[derive(Debug)]
pub(crate) struct SigV4Error;

impl SigV4Error {
    pub(crate) fn error_type(&self) -> &'static str {
        "IncompleteSignatureException"
    }
}

impl fmt::Display for SigV4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigV4 is not supported yet.")
    }
}

pub(crate) fn parse(headers: &HeaderMap) -> Result<Option<SignedRequest>, SigV4Error> {
    let signed = headers
        .get(axum::http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"AWS4-HMAC-SHA256"));
    if signed {
        Err(SigV4Error)
    } else {
        Ok(None)
    }
}

impl SignedRequest {
    pub(crate) fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub(crate) fn verify(
        &self,
        _method: &Method,
        _uri: &Uri,
        _headers: &HeaderMap,
        _body: &[u8],
        _secret: &SecretString,
        _now: SystemTime,
    ) -> Result<(), SigV4Error> {
        Err(SigV4Error)
    }
}
