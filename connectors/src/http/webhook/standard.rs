//! Standard Webhooks v1 (Svix): `webhook-signature: v1,<base64> …` over
//! `{webhook-id}.{webhook-timestamp}.{body}`.

use std::time::SystemTime;

use base64::Engine as _;
use http::HeaderMap;

use super::{
    any_matches, malformed, parse_timestamp, single_header, Delivery, WebhookError,
    WebhookVerifier, MAX_SIGNATURES,
};

const ID: &str = "webhook-id";
const TIMESTAMP: &str = "webhook-timestamp";
const SIGNATURE: &str = "webhook-signature";

/// The longest `webhook-id` accepted; ids are short (`msg_` and a few dozen characters), and
/// each accepted one is remembered.
const MAX_ID_LEN: usize = 256;

pub(super) fn verify(
    verifier: &WebhookVerifier,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<Delivery, WebhookError> {
    let id = single_header(headers, ID)?;
    let timestamp = single_header(headers, TIMESTAMP)?;
    let signature = single_header(headers, SIGNATURE)?;
    // A `.` would make the signed content ambiguous (`a.b` + `c` vs `a` + `b.c`).
    if id.is_empty() || id.len() > MAX_ID_LEN || id.contains('.') {
        return Err(malformed(ID, "must be 1 to 256 characters without `.`"));
    }
    let seconds = parse_timestamp(timestamp, TIMESTAMP)?;
    let candidates = signatures(signature)?;
    let expires = verifier.check_timestamp(seconds, now)?;
    let mac = verifier.mac_of(&[id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
    if !any_matches(&mac, &candidates) {
        return Err(WebhookError::SignatureMismatch);
    }
    Ok(Delivery {
        // The id has no `.`, so `id.timestamp` names one (id, timestamp) pair.
        key: Some(format!("{id}.{seconds}")),
        expires,
    })
}

/// The decoded `v1` signatures of a `webhook-signature` header: space-separated
/// `<version>,<base64>` entries, of which other versions (`v1a`, ed25519) are skipped.
fn signatures(header: &str) -> Result<Vec<Vec<u8>>, WebhookError> {
    let mut found = Vec::new();
    for entry in header.split_whitespace() {
        let Some((version, value)) = entry.split_once(',') else {
            return Err(malformed(
                SIGNATURE,
                "an entry is not `<version>,<signature>`",
            ));
        };
        if version != "v1" {
            continue;
        }
        if found.len() == MAX_SIGNATURES {
            return Err(malformed(SIGNATURE, "too many signatures"));
        }
        let tag = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| malformed(SIGNATURE, "a v1 signature is not base64"))?;
        found.push(tag);
    }
    if found.is_empty() {
        return Err(malformed(SIGNATURE, "no v1 signature"));
    }
    Ok(found)
}
