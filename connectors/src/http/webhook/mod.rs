//! Webhook signature verification for HTTP triggers: Standard Webhooks v1, GitHub and Stripe.
//!
//! Pure and synchronous: [`WebhookVerifier::verify`] takes the request headers, the exact raw
//! body bytes (read under the trigger's body limit, never parsed or re-serialised first) and the
//! current time, and says whether the request may reach the function. Every scheme is
//! HMAC-SHA256, compared in constant time (`Mac::verify_slice`), so a verifier is never a
//! signing oracle. Checks run in this order: headers present and well formed, signed timestamp
//! inside the window, signature, replay. Only a request whose signature verified is
//! remembered, so unsigned traffic cannot fill the replay memory.
//!
//! # Replay memory
//!
//! Each verifier remembers the deliveries it accepted until their window closes and refuses the
//! same delivery again with [`WebhookError::Replayed`]:
//!
//! - Standard Webhooks: the signed `webhook-id` *and* `webhook-timestamp`, until the timestamp
//!   leaves the window (after that the timestamp check refuses it anyway). A sender re-signs
//!   each retry with a new timestamp under the same id, so a retry after a failed attempt is
//!   accepted while a copy of an accepted request is not; deduplicating on the id alone is the
//!   function's business (the id is in the event's headers).
//! - GitHub signs no timestamp: `X-GitHub-Delivery`, when present, is remembered for `tolerance`
//!   after acceptance. Outside that window, or without the header, a captured GitHub request
//!   verifies again: GitHub's scheme has no replay protection of its own.
//! - Stripe: the signed `t` and body, through their HMAC under this verifier's key (so dropping
//!   one of several `v1` signatures does not make a copy look new), until `t` leaves the window.
//!
//! The memory holds at most [`DEFAULT_REPLAY_CAPACITY`] unexpired deliveries per trigger
//! (configurable with [`WebhookVerifier::with_replay_capacity`]). When it is full the verifier
//! fails closed: a new delivery is refused with [`WebhookError::ReplayMemoryFull`] until old
//! ones expire, rather than evicting one that could then be replayed. Senders retry refused
//! deliveries, so a burst is delayed, not lost.
//!
//! Only `v1` (HMAC) signatures are checked; Standard Webhooks' asymmetric `v1a` (ed25519)
//! entries are ignored, so a sender that signs only with `v1a` is refused.

mod github;
mod replay;
mod standard;
mod stripe;

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use impulse_config::{WebhookConfig, WebhookScheme};
use secrecy::ExposeSecret;
use sha2::Sha256;

use self::replay::ReplayMemory;

/// How many unexpired deliveries one verifier remembers at most (about 10 MB at worst); with the
/// default 5-minute window that is over 300 deliveries a second, sustained.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// At most this many signatures in one header are tried (senders send one per active secret);
/// more is a malformed header, so a long header cannot make a request cost many HMACs.
const MAX_SIGNATURES: usize = 8;

type HmacSha256 = Hmac<Sha256>;

/// Verifies the webhook signatures of one HTTP trigger and remembers what it accepted.
///
/// Shared by every request of the trigger (`&self`); the replay memory is behind a mutex held
/// only for a map lookup and insert.
pub struct WebhookVerifier {
    scheme: WebhookScheme,
    /// Keyed once; each request works on a clone, so the secret is not re-processed per call.
    mac: HmacSha256,
    tolerance: Duration,
    replays: Mutex<ReplayMemory>,
}

/// Why a request was refused. The `Display` text is safe to log and to return to the client:
/// it never contains the secret or a computed signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// A header the scheme requires is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is present but not in the scheme's form.
    #[error("malformed header {header}: {problem}")]
    MalformedHeader {
        /// The header's name.
        header: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The signed timestamp is further from the broker's clock than the tolerance.
    #[error("timestamp outside the replay window")]
    TimestampOutsideWindow,
    /// No signature in the request matches the body under the configured secret.
    #[error("signature mismatch")]
    SignatureMismatch,
    /// The same signed delivery was already accepted within the window.
    #[error("delivery already accepted (replay)")]
    Replayed,
    /// The replay memory is full of unexpired deliveries; refused rather than forgetting one.
    #[error("too many deliveries in the replay window; retry later")]
    ReplayMemoryFull,
}

impl WebhookError {
    /// A stable code for logs and metric labels (a bounded set).
    pub const fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::MalformedHeader { .. } => "malformed_header",
            Self::TimestampOutsideWindow => "timestamp_outside_window",
            Self::SignatureMismatch => "signature_mismatch",
            Self::Replayed => "replay",
            Self::ReplayMemoryFull => "replay_memory_full",
        }
    }
}

/// The configured secret is not in the scheme's form (the message never contains it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {scheme} webhook secret: {message}")]
pub struct WebhookSecretError {
    scheme: &'static str,
    message: String,
}

/// What a scheme found in a request whose signature verified: the delivery to remember, and
/// until when.
#[derive(Debug)]
struct Delivery {
    /// `None`: nothing identifies the delivery (GitHub without `X-GitHub-Delivery`).
    key: Option<String>,
    expires: SystemTime,
}

// === impl WebhookVerifier ===

impl WebhookVerifier {
    /// A verifier for `scheme` with the secret as the sender issued it (see
    /// [`WebhookScheme::signing_key`]) and a replay window of `tolerance`.
    ///
    /// # Errors
    ///
    /// When `secret` is not in the scheme's form.
    pub fn new(
        scheme: WebhookScheme,
        secret: &str,
        tolerance: Duration,
    ) -> Result<Self, WebhookSecretError> {
        let key = scheme
            .signing_key(secret)
            .map_err(|message| WebhookSecretError {
                scheme: scheme.as_str(),
                message,
            })?;
        // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        let mac = HmacSha256::new_from_slice(&key).map_err(|_| WebhookSecretError {
            scheme: scheme.as_str(),
            message: "cannot key HMAC-SHA256".to_owned(),
        })?;
        Ok(Self {
            scheme,
            mac,
            tolerance,
            replays: Mutex::new(ReplayMemory::new(DEFAULT_REPLAY_CAPACITY)),
        })
    }

    /// A verifier for a trigger's `[webhook]` table.
    ///
    /// # Errors
    ///
    /// When the secret is missing or not in the scheme's form (validation refuses both first).
    pub fn from_config(config: &WebhookConfig) -> Result<Self, WebhookSecretError> {
        let Some(secret) = &config.secret else {
            return Err(WebhookSecretError {
                scheme: config.scheme.as_str(),
                message: "not set".to_owned(),
            });
        };
        Self::new(config.scheme, secret.expose_secret(), config.tolerance)
    }

    /// The same verifier remembering at most `capacity` unexpired deliveries.
    #[must_use]
    pub fn with_replay_capacity(self, capacity: usize) -> Self {
        Self {
            replays: Mutex::new(ReplayMemory::new(capacity)),
            ..self
        }
    }

    /// The scheme this verifier checks.
    pub fn scheme(&self) -> WebhookScheme {
        self.scheme
    }

    /// Verifies one request: `body` MUST be the exact bytes received. On success the delivery
    /// is remembered until its window closes, so the same request verified again is refused.
    ///
    /// # Errors
    ///
    /// Why the request must not reach the function.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), WebhookError> {
        let delivery = match self.scheme {
            WebhookScheme::StandardWebhooks => standard::verify(self, headers, body, now)?,
            WebhookScheme::Github => github::verify(self, headers, body, now)?,
            WebhookScheme::Stripe => stripe::verify(self, headers, body, now)?,
        };
        let Some(key) = delivery.key else {
            return Ok(());
        };
        self.replays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remember(key, delivery.expires, now)
    }

    /// Refuses a signed Unix timestamp further than the tolerance from `now`, either way (a
    /// future timestamp would otherwise stretch a captured request's useful life); returns when
    /// its window closes.
    fn check_timestamp(&self, timestamp: u64, now: SystemTime) -> Result<SystemTime, WebhookError> {
        // Checked: a 19-digit timestamp is past what `SystemTime` can hold.
        let signed = UNIX_EPOCH
            .checked_add(Duration::from_secs(timestamp))
            .ok_or(WebhookError::TimestampOutsideWindow)?;
        let distance = match now.duration_since(signed) {
            Ok(age) => age,
            Err(ahead) => ahead.duration(),
        };
        if distance > self.tolerance {
            return Err(WebhookError::TimestampOutsideWindow);
        }
        signed
            .checked_add(self.tolerance)
            .ok_or(WebhookError::TimestampOutsideWindow)
    }

    /// An HMAC of `parts` concatenated, under this verifier's key.
    fn mac_of(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac
    }
}

impl fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The keyed MAC is left out: it is derived from the secret.
        f.debug_struct("WebhookVerifier")
            .field("scheme", &self.scheme)
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

// === shared parsing ===

/// Whether any candidate equals `mac`'s tag, each compared in constant time.
fn any_matches(mac: &HmacSha256, candidates: &[Vec<u8>]) -> bool {
    // Every candidate is compared (no early exit), so timing says nothing about which matched.
    candidates.iter().fold(false, |found, c| {
        mac.clone().verify_slice(c).is_ok() | found
    })
}

/// The one value of header `name`, as visible ASCII.
fn single_header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, WebhookError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Err(WebhookError::MissingHeader(name));
    };
    if values.next().is_some() {
        return Err(malformed(name, "sent more than once"));
    }
    value
        .to_str()
        .map(str::trim)
        .map_err(|_| malformed(name, "not visible ASCII"))
}

/// A Unix timestamp in seconds: decimal digits only (so never a `.`).
fn parse_timestamp(value: &str, header: &'static str) -> Result<u64, WebhookError> {
    if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(header, "timestamp is not Unix seconds"));
    }
    value
        .parse()
        .map_err(|_| malformed(header, "timestamp is not Unix seconds"))
}

/// A hex-encoded SHA-256 tag (64 hex digits, either case).
fn parse_hex_tag(value: &str, header: &'static str) -> Result<Vec<u8>, WebhookError> {
    if value.len() != 64 {
        return Err(malformed(header, "signature is not 64 hex digits"));
    }
    hex::decode(value).map_err(|_| malformed(header, "signature is not 64 hex digits"))
}

fn malformed(header: &'static str, problem: &'static str) -> WebhookError {
    WebhookError::MalformedHeader { header, problem }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
