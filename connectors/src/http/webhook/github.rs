//! GitHub: `X-Hub-Signature-256: sha256=<hex>` over the raw body; no signed timestamp, so
//! replays are caught only through `X-GitHub-Delivery`, within the window.

use std::time::SystemTime;

use hmac::Mac;
use http::HeaderMap;

use super::{malformed, parse_hex_tag, single_header, Delivery, WebhookError, WebhookVerifier};

const SIGNATURE: &str = "x-hub-signature-256";
const DELIVERY: &str = "x-github-delivery";

/// The longest `X-GitHub-Delivery` remembered (GitHub sends a 36-character GUID).
const MAX_DELIVERY_LEN: usize = 256;

pub(super) fn verify(
    verifier: &WebhookVerifier,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<Delivery, WebhookError> {
    let signature = single_header(headers, SIGNATURE)?;
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return Err(malformed(SIGNATURE, "does not start with `sha256=`"));
    };
    let tag = parse_hex_tag(hex, SIGNATURE)?;
    let delivery = match single_header(headers, DELIVERY) {
        Ok(id) if !id.is_empty() && id.len() <= MAX_DELIVERY_LEN => Some(id.to_owned()),
        Ok(_) => return Err(malformed(DELIVERY, "must be 1 to 256 characters")),
        Err(WebhookError::MissingHeader(_)) => None,
        Err(err) => return Err(err),
    };
    if verifier.mac_of(&[body]).verify_slice(&tag).is_err() {
        return Err(WebhookError::SignatureMismatch);
    }
    Ok(Delivery {
        key: delivery,
        // A clock this close to the end of time keeps nothing rather than panicking.
        expires: now.checked_add(verifier.tolerance).unwrap_or(now),
    })
}
