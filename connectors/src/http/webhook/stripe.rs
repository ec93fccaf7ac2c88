//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]` over `{t}.{body}`.

use std::time::SystemTime;

use hmac::Mac;
use http::HeaderMap;

use super::{
    any_matches, malformed, parse_hex_tag, parse_timestamp, single_header, Delivery, WebhookError,
    WebhookVerifier, MAX_SIGNATURES,
};

const SIGNATURE: &str = "stripe-signature";

pub(super) fn verify(
    verifier: &WebhookVerifier,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<Delivery, WebhookError> {
    let header = single_header(headers, SIGNATURE)?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            return Err(malformed(SIGNATURE, "an item is not `<key>=<value>`"));
        };
        match key {
            "t" if timestamp.is_some() => {
                return Err(malformed(SIGNATURE, "more than one `t`"));
            }
            "t" => timestamp = Some(value),
            "v1" if candidates.len() == MAX_SIGNATURES => {
                return Err(malformed(SIGNATURE, "too many signatures"));
            }
            "v1" => candidates.push(parse_hex_tag(value, SIGNATURE)?),
            // `v0` (test-mode) and schemes Stripe may add later are not ours to check.
            _ => {}
        }
    }
    let Some(t) = timestamp else {
        return Err(malformed(SIGNATURE, "no `t` timestamp"));
    };
    if candidates.is_empty() {
        return Err(malformed(SIGNATURE, "no v1 signature"));
    }
    let seconds = parse_timestamp(t, SIGNATURE)?;
    let expires = verifier.check_timestamp(seconds, now)?;
    let mac = verifier.mac_of(&[t.as_bytes(), b".", body]);
    if !any_matches(&mac, &candidates) {
        return Err(WebhookError::SignatureMismatch);
    }
    // The tag under our own key names (t, body) whichever of several `v1`s the request carried.
    Ok(Delivery {
        key: Some(hex::encode(mac.finalize().into_bytes())),
        expires,
    })
}
