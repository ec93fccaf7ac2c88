//! Each scheme against its published vector, then the ways a request can be refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use impulse_config::WebhookScheme;

use super::{HmacSha256, WebhookError, WebhookVerifier};

const TOLERANCE: Duration = Duration::from_secs(300);

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
            HeaderValue::from_str(value).expect("test header value"),
        );
    }
    map
}

fn verifier(scheme: WebhookScheme, secret: &str) -> WebhookVerifier {
    WebhookVerifier::new(scheme, secret, TOLERANCE).expect("valid test secret")
}

fn hmac(key: &[u8], content: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    mac.update(content);
    mac.finalize().into_bytes().to_vec()
}

// === Standard Webhooks ===

/// The Standard Webhooks test vector, published with its spec and reference libraries
/// (standard-webhooks/standard-webhooks, `libraries/*` tests).
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TIMESTAMP: u64 = 1_614_265_330;
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn sw_headers(id: &str, timestamp: u64, signature: &str) -> HeaderMap {
    headers(&[
        ("webhook-id", id),
        ("webhook-timestamp", &timestamp.to_string()),
        ("webhook-signature", signature),
    ])
}

/// A `v1,<base64>` signature computed here (the vector above checks the verifier's math).
fn sw_sign(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("test secret");
    let content = [format!("{id}.{timestamp}.").as_bytes(), body].concat();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(hmac(&key, &content))
    )
}

#[test]
fn standard_webhooks_published_vector_verifies() {
    let v = verifier(WebhookScheme::StandardWebhooks, SW_SECRET);
    let h = sw_headers(SW_ID, SW_TIMESTAMP, SW_SIGNATURE);
    assert_eq!(v.verify(&h, SW_BODY, at(SW_TIMESTAMP)), Ok(()));
    // The helper agrees with the vector, so the other tests sign correctly.
    assert_eq!(
        sw_sign(SW_SECRET, SW_ID, SW_TIMESTAMP, SW_BODY),
        SW_SIGNATURE
    );
}

#[test]
fn standard_webhooks_one_valid_signature_among_several_suffices() {
    let v = verifier(WebhookScheme::StandardWebhooks, SW_SECRET);
    let other = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let header = format!(
        "v1a,ZWQyNTUxOSBzaWduYXR1cmU= v1,bm9wZQ== {} {SW_SIGNATURE}",
        sw_sign(other, SW_ID, SW_TIMESTAMP, SW_BODY)
    );
    let h = sw_headers(SW_ID, SW_TIMESTAMP, &header);
    assert_eq!(v.verify(&h, SW_BODY, at(SW_TIMESTAMP + 10)), Ok(()));
}

#[test]
fn standard_webhooks_refusals() {
    let now = at(SW_TIMESTAMP);
    let v = || verifier(WebhookScheme::StandardWebhooks, SW_SECRET);
    let good = || sw_headers(SW_ID, SW_TIMESTAMP, SW_SIGNATURE);

    // Wrong secret.
    let wrong = verifier(
        WebhookScheme::StandardWebhooks,
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    assert_eq!(
        wrong.verify(&good(), SW_BODY, now),
        Err(WebhookError::SignatureMismatch)
    );
    // Tampered body, and the same JSON re-serialised with other whitespace.
    assert_eq!(
        v().verify(&good(), br#"{"test": 2432232315}"#, now),
        Err(WebhookError::SignatureMismatch)
    );
    assert_eq!(
        v().verify(&good(), br#"{"test":2432232314}"#, now),
        Err(WebhookError::SignatureMismatch)
    );
    // Another id or timestamp than the one signed.
    let h = sw_headers("msg_other", SW_TIMESTAMP, SW_SIGNATURE);
    assert_eq!(
        v().verify(&h, SW_BODY, now),
        Err(WebhookError::SignatureMismatch)
    );
    let h = sw_headers(SW_ID, SW_TIMESTAMP + 1, SW_SIGNATURE);
    assert_eq!(
        v().verify(&h, SW_BODY, now),
        Err(WebhookError::SignatureMismatch)
    );
    // Only the edge of the window is inside it, both ways.
    assert_eq!(v().verify(&good(), SW_BODY, at(SW_TIMESTAMP + 300)), Ok(()));
    assert_eq!(v().verify(&good(), SW_BODY, at(SW_TIMESTAMP - 300)), Ok(()));
    assert_eq!(
        v().verify(&good(), SW_BODY, at(SW_TIMESTAMP + 301)),
        Err(WebhookError::TimestampOutsideWindow)
    );
    assert_eq!(
        v().verify(&good(), SW_BODY, at(SW_TIMESTAMP - 301)),
        Err(WebhookError::TimestampOutsideWindow)
    );
    // A timestamp beyond what the clock can represent is refused, not a panic.
    let far = headers(&[
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "9999999999999999999"),
        ("webhook-signature", SW_SIGNATURE),
    ]);
    assert_eq!(
        v().verify(&far, SW_BODY, now),
        Err(WebhookError::TimestampOutsideWindow)
    );
}

#[test]
fn standard_webhooks_missing_and_malformed_headers() {
    let v = verifier(WebhookScheme::StandardWebhooks, SW_SECRET);
    let now = at(SW_TIMESTAMP);
    let ts = SW_TIMESTAMP.to_string();
    for (missing, h) in [
        (
            "webhook-id",
            headers(&[
                ("webhook-timestamp", &ts),
                ("webhook-signature", SW_SIGNATURE),
            ]),
        ),
        (
            "webhook-timestamp",
            headers(&[("webhook-id", SW_ID), ("webhook-signature", SW_SIGNATURE)]),
        ),
        (
            "webhook-signature",
            headers(&[("webhook-id", SW_ID), ("webhook-timestamp", &ts)]),
        ),
    ] {
        assert_eq!(
            v.verify(&h, SW_BODY, now),
            Err(WebhookError::MissingHeader(missing))
        );
    }
    let malformed = |id: &str, timestamp: &str, signature: &str| {
        let h = headers(&[
            ("webhook-id", id),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", signature),
        ]);
        match v.verify(&h, SW_BODY, now) {
            Err(WebhookError::MalformedHeader { header, .. }) => header,
            other => panic!("expected a malformed header, got {other:?}"),
        }
    };
    assert_eq!(malformed("msg.1", &ts, SW_SIGNATURE), "webhook-id");
    assert_eq!(malformed("", &ts, SW_SIGNATURE), "webhook-id");
    assert_eq!(
        malformed(SW_ID, "1614265330.5", SW_SIGNATURE),
        "webhook-timestamp"
    );
    assert_eq!(malformed(SW_ID, "-1", SW_SIGNATURE), "webhook-timestamp");
    assert_eq!(malformed(SW_ID, &ts, "g0hM9SsE"), "webhook-signature");
    assert_eq!(malformed(SW_ID, &ts, "v1,not base64!"), "webhook-signature");
    assert_eq!(malformed(SW_ID, &ts, "v1a,c2ln"), "webhook-signature");
    assert_eq!(
        malformed(SW_ID, &ts, &[SW_SIGNATURE; 9].join(" ")),
        "webhook-signature"
    );
    // A header sent twice is refused rather than one of its values picked.
    let mut h = sw_headers(SW_ID, SW_TIMESTAMP, SW_SIGNATURE);
    h.append("webhook-id", HeaderValue::from_static("msg_2"));
    assert!(matches!(
        v.verify(&h, SW_BODY, now),
        Err(WebhookError::MalformedHeader {
            header: "webhook-id",
            ..
        })
    ));
}

#[test]
fn standard_webhooks_replays_are_refused_for_the_window_and_retries_are_not() {
    let v = verifier(WebhookScheme::StandardWebhooks, SW_SECRET);
    let h = sw_headers(SW_ID, SW_TIMESTAMP, SW_SIGNATURE);
    assert_eq!(v.verify(&h, SW_BODY, at(SW_TIMESTAMP)), Ok(()));
    assert_eq!(
        v.verify(&h, SW_BODY, at(SW_TIMESTAMP + 1)),
        Err(WebhookError::Replayed)
    );
    assert_eq!(
        v.verify(&h, SW_BODY, at(SW_TIMESTAMP + 300)),
        Err(WebhookError::Replayed)
    );
    // After the window the timestamp check refuses it: the memory could forget it.
    assert_eq!(
        v.verify(&h, SW_BODY, at(SW_TIMESTAMP + 301)),
        Err(WebhookError::TimestampOutsideWindow)
    );
    // The sender's retry: the same id, re-signed with a fresh timestamp.
    let retry_at = SW_TIMESTAMP + 60;
    let retry = sw_headers(
        SW_ID,
        retry_at,
        &sw_sign(SW_SECRET, SW_ID, retry_at, SW_BODY),
    );
    assert_eq!(v.verify(&retry, SW_BODY, at(retry_at)), Ok(()));
    // A refused request is not remembered: a bad signature does not burn the id.
    let fresh = verifier(WebhookScheme::StandardWebhooks, SW_SECRET);
    let forged = sw_headers(SW_ID, SW_TIMESTAMP, "v1,bm9wZQ==");
    assert_eq!(
        fresh.verify(&forged, SW_BODY, at(SW_TIMESTAMP)),
        Err(WebhookError::SignatureMismatch)
    );
    assert_eq!(fresh.verify(&h, SW_BODY, at(SW_TIMESTAMP)), Ok(()));
}

#[test]
fn a_full_replay_memory_fails_closed() {
    let v = verifier(WebhookScheme::StandardWebhooks, SW_SECRET).with_replay_capacity(2);
    let now = at(SW_TIMESTAMP);
    let send = |id: &str| {
        let h = sw_headers(
            id,
            SW_TIMESTAMP,
            &sw_sign(SW_SECRET, id, SW_TIMESTAMP, SW_BODY),
        );
        v.verify(&h, SW_BODY, now)
    };
    assert_eq!(send("msg_1"), Ok(()));
    assert_eq!(send("msg_2"), Ok(()));
    assert_eq!(send("msg_3"), Err(WebhookError::ReplayMemoryFull));
    assert_eq!(send("msg_1"), Err(WebhookError::Replayed));
}

// === GitHub ===

/// GitHub's documented example ("Validating webhook deliveries", docs.github.com).
const GH_SECRET: &str = "It's a Secret to Everybody";
const GH_BODY: &[u8] = b"Hello, World!";
const GH_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
const GH_DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

#[test]
fn github_published_example_verifies() {
    let v = verifier(WebhookScheme::Github, GH_SECRET);
    let h = headers(&[("x-hub-signature-256", GH_SIGNATURE)]);
    assert_eq!(v.verify(&h, GH_BODY, at(0)), Ok(()));
    // Without a delivery id nothing identifies the request: it verifies again (documented).
    assert_eq!(v.verify(&h, GH_BODY, at(1)), Ok(()));
    // Header names are case-insensitive; hex may be upper case.
    let h = headers(&[(
        "X-Hub-Signature-256",
        &GH_SIGNATURE
            .to_ascii_uppercase()
            .replace("SHA256=", "sha256="),
    )]);
    assert_eq!(v.verify(&h, GH_BODY, at(2)), Ok(()));
}

#[test]
fn github_refusals() {
    let v = verifier(WebhookScheme::Github, GH_SECRET);
    let good = headers(&[
        ("x-hub-signature-256", GH_SIGNATURE),
        ("x-github-delivery", GH_DELIVERY),
    ]);
    let wrong = verifier(WebhookScheme::Github, "It's a Secret to Everybody!");
    assert_eq!(
        wrong.verify(&good, GH_BODY, at(0)),
        Err(WebhookError::SignatureMismatch)
    );
    assert_eq!(
        v.verify(&good, b"Hello, World?", at(0)),
        Err(WebhookError::SignatureMismatch)
    );
    assert_eq!(
        v.verify(&headers(&[]), GH_BODY, at(0)),
        Err(WebhookError::MissingHeader("x-hub-signature-256"))
    );
    for bad in [
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256=757107ea",
        "sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    ] {
        let h = headers(&[("x-hub-signature-256", bad)]);
        assert!(
            matches!(
                v.verify(&h, GH_BODY, at(0)),
                Err(WebhookError::MalformedHeader {
                    header: "x-hub-signature-256",
                    ..
                })
            ),
            "{bad}"
        );
    }
    // A delivery is refused again within the window, accepted after it.
    assert_eq!(v.verify(&good, GH_BODY, at(1000)), Ok(()));
    assert_eq!(
        v.verify(&good, GH_BODY, at(1300)),
        Err(WebhookError::Replayed)
    );
    assert_eq!(v.verify(&good, GH_BODY, at(1301)), Ok(()));
}

// === Stripe ===

/// A secret in Stripe's form; the vector below was computed with Python's `hmac` module:
/// `hmac.new(secret.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()`.
const ST_SECRET: &str = "whsec_0123456789abcdefABCDEF0123456789";
const ST_T: u64 = 1_700_000_000;
const ST_BODY: &[u8] =
    b"{\n  \"id\": \"evt_1NG8Du2eZvKYlo2CUI79vXWy\",\n  \"object\": \"event\"\n}";
const ST_V1: &str = "cbb740b3f24d32cabf4e71d5de784a155f755a92df0f4dceccf9dd771caf2337";

fn st_headers(value: &str) -> HeaderMap {
    headers(&[("stripe-signature", value)])
}

fn st_sign(secret: &str, t: u64, body: &[u8]) -> String {
    hex::encode(hmac(
        secret.as_bytes(),
        &[format!("{t}.").as_bytes(), body].concat(),
    ))
}

#[test]
fn stripe_vector_verifies_with_the_whole_secret_as_key() {
    let v = verifier(WebhookScheme::Stripe, ST_SECRET);
    let h = st_headers(&format!("t={ST_T},v1={ST_V1}"));
    assert_eq!(v.verify(&h, ST_BODY, at(ST_T)), Ok(()));
    assert_eq!(st_sign(ST_SECRET, ST_T, ST_BODY), ST_V1);
}

#[test]
fn stripe_one_valid_signature_among_several_suffices() {
    let v = verifier(WebhookScheme::Stripe, ST_SECRET);
    let old = st_sign("whsec_OLDOLDOLDOLDOLDOLDOLD0", ST_T, ST_BODY);
    let h = st_headers(&format!(
        "t={ST_T},v1={old},v1={ST_V1},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
    ));
    assert_eq!(v.verify(&h, ST_BODY, at(ST_T + 5)), Ok(()));
}

#[test]
fn stripe_refusals() {
    let v = || verifier(WebhookScheme::Stripe, ST_SECRET);
    let good = st_headers(&format!("t={ST_T},v1={ST_V1}"));
    let wrong = verifier(
        WebhookScheme::Stripe,
        "whsec_0123456789abcdefABCDEF0123456780",
    );
    assert_eq!(
        wrong.verify(&good, ST_BODY, at(ST_T)),
        Err(WebhookError::SignatureMismatch)
    );
    // Tampered, and the same JSON re-serialised compactly.
    assert_eq!(
        v().verify(&good, &ST_BODY.to_ascii_uppercase(), at(ST_T)),
        Err(WebhookError::SignatureMismatch)
    );
    assert_eq!(
        v().verify(
            &good,
            br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event"}"#,
            at(ST_T)
        ),
        Err(WebhookError::SignatureMismatch)
    );
    // The signed `t` cannot be moved.
    let moved = st_headers(&format!("t={},v1={ST_V1}", ST_T + 1));
    assert_eq!(
        v().verify(&moved, ST_BODY, at(ST_T)),
        Err(WebhookError::SignatureMismatch)
    );
    // Too old, too far ahead.
    assert_eq!(
        v().verify(&good, ST_BODY, at(ST_T + 301)),
        Err(WebhookError::TimestampOutsideWindow)
    );
    assert_eq!(
        v().verify(&good, ST_BODY, at(ST_T - 301)),
        Err(WebhookError::TimestampOutsideWindow)
    );
    assert_eq!(
        v().verify(&headers(&[]), ST_BODY, at(ST_T)),
        Err(WebhookError::MissingHeader("stripe-signature"))
    );
    for bad in [
        format!("v1={ST_V1}"),
        format!("t={ST_T}"),
        format!("t={ST_T},v0={ST_V1}"),
        format!("t={ST_T},t={ST_T},v1={ST_V1}"),
        format!("t=soon,v1={ST_V1}"),
        format!("t={ST_T},v1=abc"),
        format!("t={ST_T};v1={ST_V1}"),
        format!("t={ST_T}{}", format!(",v1={ST_V1}").repeat(9)),
    ] {
        assert!(
            matches!(
                v().verify(&st_headers(&bad), ST_BODY, at(ST_T)),
                Err(WebhookError::MalformedHeader {
                    header: "stripe-signature",
                    ..
                })
            ),
            "{bad}"
        );
    }
}

#[test]
fn stripe_replays_are_refused_even_with_a_signature_dropped() {
    let v = verifier(WebhookScheme::Stripe, ST_SECRET);
    let other = st_sign("whsec_OLDOLDOLDOLDOLDOLDOLD0", ST_T, ST_BODY);
    let both = st_headers(&format!("t={ST_T},v1={other},v1={ST_V1}"));
    assert_eq!(v.verify(&both, ST_BODY, at(ST_T)), Ok(()));
    let one = st_headers(&format!("t={ST_T},v1={ST_V1}"));
    assert_eq!(
        v.verify(&one, ST_BODY, at(ST_T + 10)),
        Err(WebhookError::Replayed)
    );
    // Stripe's retry is signed at a new `t`: a new delivery.
    let t = ST_T + 20;
    let retry = st_headers(&format!("t={t},v1={}", st_sign(ST_SECRET, t, ST_BODY)));
    assert_eq!(v.verify(&retry, ST_BODY, at(t)), Ok(()));
}

// === what reaches logs ===

#[test]
fn reasons_and_debug_never_show_the_secret_or_a_signature() {
    let secret = "whsec_canarycanarycanarycanary0";
    let v = verifier(WebhookScheme::Stripe, secret);
    let debug = format!("{v:?}");
    assert!(!debug.contains("canary"), "{debug}");
    let expected = st_sign(secret, ST_T, ST_BODY);
    let mut reasons = Vec::new();
    for header in [
        format!("t={ST_T},v1={ST_V1}"),
        format!("t={ST_T},v1=zz"),
        format!("t={},v1={ST_V1}", ST_T + 1000),
    ] {
        let err = v
            .verify(&st_headers(&header), ST_BODY, at(ST_T))
            .expect_err("refused");
        reasons.push(format!("{err} {err:?} {}", err.code()));
    }
    for reason in &reasons {
        assert!(!reason.contains("canary"), "{reason}");
        assert!(!reason.contains(&expected), "{reason}");
        assert!(!reason.contains(ST_V1), "{reason}");
    }
    assert_eq!(
        reasons[0],
        "signature mismatch SignatureMismatch signature_mismatch"
    );
}

#[test]
fn secrets_in_the_wrong_form_are_refused_without_echo() {
    let err = WebhookVerifier::new(WebhookScheme::StandardWebhooks, "canary-secret", TOLERANCE)
        .expect_err("no whsec_ prefix");
    let text = err.to_string();
    assert!(
        text.starts_with("invalid standard-webhooks webhook secret: "),
        "{text}"
    );
    assert!(!text.contains("canary"), "{text}");
}
