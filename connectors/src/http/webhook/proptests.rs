//! Property tests of webhook verification: any headers are refused or accepted without a
//! panic; a request signed as its scheme says is accepted once; a body or header changed after
//! signing never is; no refusal shows the secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use impulse_config::WebhookScheme;
use impulse_test_support::prop::{body, check, header_name, header_value};
use proptest::prelude::*;
use proptest::sample::Index;

use super::{HmacSha256, WebhookError, WebhookVerifier};

const TOLERANCE: Duration = Duration::from_secs(300);
/// The clock the properties verify at.
const NOW: u64 = 1_800_000_000;

/// The secrets are canaries: no refusal may show them.
fn secret(scheme: WebhookScheme) -> &'static str {
    match scheme {
        WebhookScheme::StandardWebhooks => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        WebhookScheme::Github => "canary-github-secret-0123456789",
        WebhookScheme::Stripe => "whsec_canaryStripeSecret0123456789",
    }
}

fn mac(scheme: WebhookScheme, parts: &[&[u8]]) -> Vec<u8> {
    let key = scheme
        .signing_key(secret(scheme))
        .expect("the test secrets are valid");
    let mut mac = HmacSha256::new_from_slice(&key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// A delivery and what is done to it after it was signed.
#[derive(Debug, Clone)]
struct Delivery {
    scheme: WebhookScheme,
    /// `webhook-id` or `X-GitHub-Delivery` (GitHub: `None` leaves the header out).
    id: Option<String>,
    /// Seconds from [`NOW`] of the signed timestamp.
    skew: i64,
    body: Vec<u8>,
    tamper: Tamper,
}

#[derive(Debug, Clone)]
enum Tamper {
    None,
    /// A byte of the body changed, or one appended.
    Body(Index, u8),
    /// A header set to a random value (or added).
    Header(String, Vec<u8>),
    /// A header sent twice.
    Repeat(Index),
}

fn scheme() -> impl Strategy<Value = WebhookScheme> {
    proptest::sample::select(vec![
        WebhookScheme::StandardWebhooks,
        WebhookScheme::Github,
        WebhookScheme::Stripe,
    ])
}

fn delivery() -> impl Strategy<Value = Delivery> {
    let skew = prop_oneof![
        4 => -300i64..=300,
        1 => any::<i64>(),
        1 => -1_000i64..1_000,
    ];
    let tamper = prop_oneof![
        3 => Just(Tamper::None),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Tamper::Body(i, b)),
        1 => (header_name(), header_value()).prop_map(|(n, v)| Tamper::Header(n, v)),
        1 => any::<Index>().prop_map(Tamper::Repeat),
    ];
    (
        scheme(),
        proptest::option::of("[A-Za-z0-9_-]{1,40}"),
        skew,
        body(),
        tamper,
    )
        .prop_map(|(scheme, id, skew, body, tamper)| Delivery {
            scheme,
            id,
            skew,
            body,
            tamper,
        })
}

/// The headers a sender puts on `delivery` (before any tampering).
fn signed_headers(d: &Delivery) -> Vec<(&'static str, String)> {
    let timestamp = NOW.saturating_add_signed(d.skew).to_string();
    let id = d.id.clone().unwrap_or_else(|| "msg_1".to_owned());
    match d.scheme {
        WebhookScheme::StandardWebhooks => {
            let tag = mac(
                d.scheme,
                &[id.as_bytes(), b".", timestamp.as_bytes(), b".", &d.body],
            );
            let signature = base64::engine::general_purpose::STANDARD.encode(tag);
            vec![
                ("webhook-id", id),
                ("webhook-timestamp", timestamp),
                ("webhook-signature", format!("v1a,ignored v1,{signature}")),
            ]
        }
        WebhookScheme::Github => {
            let tag = hex::encode(mac(d.scheme, &[&d.body]));
            let mut headers = vec![("x-hub-signature-256", format!("sha256={tag}"))];
            if let Some(id) = &d.id {
                headers.push(("x-github-delivery", id.clone()));
            }
            headers
        }
        WebhookScheme::Stripe => {
            let tag = hex::encode(mac(d.scheme, &[timestamp.as_bytes(), b".", &d.body]));
            vec![(
                "stripe-signature",
                format!("t={timestamp},v0=ignored,v1={tag}"),
            )]
        }
    }
}

#[test]
fn signed_deliveries_verify_once_and_tampered_ones_never() {
    check("webhook::signed", delivery(), |d| {
        let verifier = WebhookVerifier::new(d.scheme, secret(d.scheme), TOLERANCE)
            .expect("the test secrets are valid");
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let mut headers = HeaderMap::new();
        for (name, value) in signed_headers(&d) {
            headers.append(
                name,
                HeaderValue::from_str(&value).expect("signed headers are visible ASCII"),
            );
        }
        let mut body = d.body.clone();
        let changed = match &d.tamper {
            Tamper::None => false,
            Tamper::Body(at, byte) => {
                let at = at.index(body.len() + 1);
                if at == body.len() {
                    body.push(*byte);
                } else {
                    body[at] = body[at].wrapping_add(1 + byte % 255);
                }
                true
            }
            Tamper::Header(name, value) => {
                let parsed = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(value),
                );
                let (Ok(name), Ok(value)) = parsed else {
                    return Ok(());
                };
                let trimmed = |v: &HeaderValue| v.as_bytes().trim_ascii().to_vec();
                let differs = headers
                    .get(&name)
                    .is_none_or(|before| trimmed(before) != trimmed(&value));
                let read = signed_headers(&d).iter().any(|(n, _)| *n == name.as_str());
                headers.insert(name.clone(), value);
                if name == "x-github-delivery" {
                    // Not signed: only its form and the replay memory depend on it.
                    let _any = verifier.verify(&headers, &body, now);
                    return Ok(());
                }
                read && differs
            }
            Tamper::Repeat(i) => {
                let names: Vec<HeaderName> = headers.keys().cloned().collect();
                let name = names[i.index(names.len())].clone();
                let value = headers[&name].clone();
                headers.append(name, value);
                true
            }
        };
        let first = verifier.verify(&headers, &body, now);
        if let Err(err) = &first {
            let shown = format!("{err} {err:?}");
            prop_assert!(!shown.contains(secret(d.scheme)));
        }
        if changed {
            prop_assert!(first.is_err(), "a tampered delivery verified: {:?}", d);
            return Ok(());
        }
        let in_window = d.skew.unsigned_abs() <= TOLERANCE.as_secs();
        let timestamped = d.scheme != WebhookScheme::Github;
        if !in_window && timestamped {
            prop_assert_eq!(first, Err(WebhookError::TimestampOutsideWindow));
            return Ok(());
        }
        prop_assert_eq!(&first, &Ok(()), "{:?}", d);
        let again = verifier.verify(&headers, &body, now);
        let remembered = d.scheme != WebhookScheme::Github || d.id.is_some();
        if remembered {
            prop_assert_eq!(again, Err(WebhookError::Replayed));
        } else {
            prop_assert_eq!(again, Ok(()));
        }
        Ok(())
    });
}

#[test]
fn any_headers_are_refused_or_accepted_without_panicking() {
    let headers = proptest::collection::vec((header_name(), header_value()), 0..6);
    check(
        "webhook::any_headers",
        (scheme(), headers, body(), any::<u64>()),
        |(scheme, pairs, body, now)| {
            let verifier = WebhookVerifier::new(scheme, secret(scheme), TOLERANCE)
                .expect("the test secrets are valid");
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(&value),
                ) {
                    headers.append(name, value);
                }
            }
            // Any clock, up to the far future: the window arithmetic must not overflow.
            let now = UNIX_EPOCH
                .checked_add(Duration::from_secs(now >> 8))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            // Random headers carry no valid signature (the HMAC is unforgeable here).
            prop_assert!(verifier.verify(&headers, &body, now).is_err());
            Ok(())
        },
    );
}
