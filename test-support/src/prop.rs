//! Property tests: how many cases a property runs, with which seed, and the watchdog that turns a
//! hanging case into a failure.
//!
//! Every property of the workspace runs through [`check`], so one set of knobs covers them all:
//!
//! - `PROPTEST_CASES`: cases per property; [`DEFAULT_CASES`] when unset (what CI runs).
//! - `PROPTEST_RNG_SEED`: the seed; [`DEFAULT_SEED`] when unset, so that a CI failure replays
//!   exactly (`scripts/proptest-soak.sh` passes a fresh seed on every run).
//! - `IMPULSE_PROPTEST_HANG_SECS`: how long one case may run before the process aborts as hung
//!   (default [`DEFAULT_HANG_SECS`]; generators cap input sizes, so a case takes microseconds).
//!
//! Each property prints `property <name>: <cases> cases in <time> (seed <seed>)` to stderr (seen
//! with `--nocapture`). Failures are not written to `proptest-regressions` files: a property
//! that finds a bug gets a named regression test next to it instead.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseResult, TestRunner};

/// Cases per property when `PROPTEST_CASES` is unset.
pub const DEFAULT_CASES: u32 = 100_000;

/// The seed when `PROPTEST_RNG_SEED` is unset.
pub const DEFAULT_SEED: u64 = 0x1a9b_d00d_5eed_0016;

/// How long one case may run, when `IMPULSE_PROPTEST_HANG_SECS` is unset.
pub const DEFAULT_HANG_SECS: u64 = 30;

/// proptest's settings for Impulse's properties (see the module documentation).
pub fn config() -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(DEFAULT_SEED);
    }
    config.failure_persistence = None;
    config
}

/// Runs `test` on [`config`]'s number of cases drawn from `strategy`; panics with the shrunk
/// failing input when a case fails or panics, and aborts the process when one case runs longer
/// than the hang limit.
pub fn check<S>(name: &str, strategy: S, test: impl Fn(S::Value) -> TestCaseResult)
where
    S: Strategy,
{
    let config = config();
    let (cases, seed) = (config.cases, config.rng_seed);
    let mut runner = TestRunner::new(config);
    let current: Arc<Mutex<Option<Instant>>> = Arc::default();
    let watchdog = Watchdog::start(name, current.clone());
    let started = Instant::now();
    let result = runner.run(&strategy, |value| {
        *lock(&current) = Some(Instant::now());
        let outcome = test(value);
        *lock(&current) = None;
        outcome
    });
    drop(watchdog);
    if let Err(err) = result {
        panic!("property {name} failed (seed {seed}): {err}");
    }
    eprintln!(
        "property {name}: {cases} cases in {:.2?} (seed {seed})",
        started.elapsed()
    );
}

/// Aborts the process when the case in `current` has run longer than the hang limit: a hung
/// case would otherwise hold the test binary until CI's own timeout, naming nothing.
struct Watchdog {
    /// Dropped to stop the watchdog.
    _stop: mpsc::Sender<()>,
}

impl Watchdog {
    fn start(name: &str, current: Arc<Mutex<Option<Instant>>>) -> Self {
        let limit = Duration::from_secs(
            std::env::var("IMPULSE_PROPTEST_HANG_SECS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_HANG_SECS),
        );
        let (stop, stopped) = mpsc::channel::<()>();
        let name = name.to_owned();
        std::thread::spawn(move || loop {
            match stopped.recv_timeout(Duration::from_secs(1)) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            let running_since = *lock(&current);
            if running_since.is_some_and(|since| since.elapsed() > limit) {
                eprintln!(
                    "property {name}: one case has run for more than {limit:?}: a hang. \
                     Rerun with the same PROPTEST_RNG_SEED to replay it."
                );
                std::process::abort();
            }
        });
        Self { _stop: stop }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === generators shared by several crates' properties ===

/// Draws a structured value's choices from a byte string.
///
/// The shared generators below are built on it: proptest makes one random byte vector per case
/// (cheap even unoptimised, where composing many small strategies is not), a builder reads its choices from it, and shrinking the bytes (shorter,
/// smaller) shrinks the value toward simple ones. Past the end every draw is 0.
#[derive(Debug)]
pub struct Draw<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// Characters strings are drawn from: letters and digits, JSON's escapes, control characters,
/// multi-byte UTF-8 and the punctuation the parsers split on.
const CHARS: &[char] = &[
    'a', 'b', 'c', 'x', 'A', 'Z', '0', '1', '9', ' ', '-', '_', '.', '/', ':', ';', ',', '=', '@',
    '%', '+', '*', '?', '#', '&', '"', '\\', '\'', '{', '}', '[', ']', '\n', '\r', '\t', '\0',
    '\u{1f}', '\u{7f}', 'é', '€', '😀', '\u{2028}', '\u{feff}',
];

impl<'a> Draw<'a> {
    /// Draws from `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// The next byte; 0 past the end.
    pub fn byte(&mut self) -> u8 {
        let byte = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        byte
    }

    /// A number below `n` (at most 256 choices; 0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::from(self.byte()) % n
    }

    /// True `chance` times in 256.
    pub fn chance(&mut self, chance: u8) -> bool {
        self.byte() < chance
    }

    /// One of `items`, which MUST NOT be empty.
    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    /// Eight bytes as a `u64`.
    pub fn u64(&mut self) -> u64 {
        (0..8).fold(0, |n, _| (n << 8) | u64::from(self.byte()))
    }

    /// Up to `max` characters from a set that stresses parsers (see `CHARS`).
    pub fn string(&mut self, max: usize) -> String {
        let len = self.below(max + 1);
        (0..len).map(|_| self.pick(CHARS)).collect()
    }

    /// Up to `max` characters of `alphabet`.
    pub fn string_of(&mut self, alphabet: &[u8], max: usize) -> String {
        let len = self.below(max + 1);
        (0..len).map(|_| char::from(self.pick(alphabet))).collect()
    }

    /// A JSON value nested at most `depth` deep: every scalar kind, edge numbers included.
    pub fn json(&mut self, depth: usize) -> serde_json::Value {
        use serde_json::Value;
        let kinds = if depth == 0 { 6 } else { 8 };
        match self.below(kinds) {
            0 => Value::Null,
            1 => Value::Bool(self.byte() & 1 == 1),
            2 => Value::from(i64::from(self.byte()) - 128),
            3 => Value::from(self.u64() as i64),
            // NaN and the infinities become null.
            4 => Value::from(f64::from_bits(self.u64())),
            5 => Value::String(self.string(12)),
            6 => {
                let len = self.below(5);
                Value::Array((0..len).map(|_| self.json(depth - 1)).collect())
            }
            _ => {
                let len = self.below(5);
                Value::Object(
                    (0..len)
                        .map(|_| (self.string(6), self.json(depth - 1)))
                        .collect(),
                )
            }
        }
    }
}

/// A value built by `build` from random bytes (at most `max_bytes` of them); see [`Draw`].
pub fn drawn<T: std::fmt::Debug>(
    max_bytes: usize,
    build: impl Fn(&mut Draw<'_>) -> T,
) -> impl Strategy<Value = T> {
    proptest::collection::vec(any::<u8>(), 0..max_bytes)
        .prop_map(move |bytes| build(&mut Draw::new(&bytes)))
}

/// Any JSON value, nested at most four deep.
pub fn json() -> impl Strategy<Value = serde_json::Value> {
    drawn(256, |d| d.json(4))
}

/// Kafka trigger filter patterns (`impulse_config::filter`'s grammar), mostly valid: real
/// fields and matchers with random names, arguments and values, and now and then a part that
/// breaks a rule (an unknown matcher, an empty list, a wrong argument type, any JSON).
pub fn filter_patterns() -> impl Strategy<Value = Vec<serde_json::Value>> {
    drawn(512, |d| {
        let count = if d.chance(8) { d.below(8) } else { d.below(4) };
        (0..count).map(|_| filter_pattern(d)).collect()
    })
}

fn filter_pattern(d: &mut Draw<'_>) -> serde_json::Value {
    use serde_json::{Map, Value};
    if d.chance(12) {
        return d.json(3);
    }
    let mut pattern = Map::new();
    for part in ["value", "key", "headers"] {
        if d.chance(128) {
            let node = if part == "headers" && !d.chance(16) {
                let count = d.below(3);
                Value::Object(
                    (0..count)
                        .map(|_| (field_name(d), filter_node(d, 2)))
                        .collect(),
                )
            } else {
                filter_node(d, 3)
            };
            pattern.insert(part.to_owned(), node);
        }
    }
    if d.chance(8) {
        pattern.insert(field_name(d), filter_node(d, 1));
    }
    Value::Object(pattern)
}

fn field_name(d: &mut Draw<'_>) -> String {
    if d.chance(200) {
        d.pick(&["type", "id", "n", "tags", "a", "content-type", ""])
            .to_owned()
    } else {
        d.string(6)
    }
}

fn filter_node(d: &mut Draw<'_>, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    if depth > 0 && d.chance(96) {
        let count = if d.chance(16) { 0 } else { 1 + d.below(3) };
        return Value::Object(
            (0..count)
                .map(|_| (field_name(d), filter_node(d, depth - 1)))
                .collect(),
        );
    }
    if d.chance(8) {
        return d.json(2);
    }
    let count = if d.chance(16) { 0 } else { 1 + d.below(3) };
    Value::Array((0..count).map(|_| filter_matcher(d)).collect())
}

fn filter_scalar(d: &mut Draw<'_>) -> serde_json::Value {
    use serde_json::Value;
    match d.below(6) {
        0 => Value::Null,
        1 => Value::Bool(d.byte() & 1 == 1),
        2 => Value::from(i64::from(d.byte() % 50) - 3),
        3 => Value::from(f64::from_bits(d.u64())),
        4 => Value::from(d.pick(&["order", "refund", "ab", "a", "", "42", "null", "true"])),
        _ => Value::String(d.string(4)),
    }
}

fn filter_matcher(d: &mut Draw<'_>) -> serde_json::Value {
    use serde_json::{json, Value};
    match d.below(14) {
        0..=5 => filter_scalar(d),
        6 | 7 => {
            let prefix = if d.chance(230) {
                Value::String(d.string_of(b"abc0123", 3))
            } else {
                d.json(1)
            };
            json!({ "prefix": prefix })
        }
        8 | 9 => {
            let pairs = if d.chance(16) {
                d.below(4)
            } else {
                1 + d.below(2)
            };
            let mut items = Vec::new();
            for _ in 0..pairs {
                items.push(if d.chance(230) {
                    json!(d.pick(&["<", "<=", "=", ">", ">="]))
                } else {
                    d.json(1)
                });
                items.push(if d.chance(230) {
                    filter_scalar(d)
                } else {
                    d.json(1)
                });
            }
            if d.chance(16) {
                items.pop();
            }
            json!({ "numeric": items })
        }
        10 => {
            let exists = if d.chance(230) {
                Value::Bool(d.byte() & 1 == 1)
            } else {
                d.json(1)
            };
            json!({ "exists": exists })
        }
        11 | 12 => {
            let excluded = match d.below(5) {
                0 | 1 => filter_scalar(d),
                2 => Value::Array((0..d.below(3)).map(|_| filter_scalar(d)).collect()),
                3 => json!({ "prefix": d.string_of(b"ab", 2) }),
                _ => d.json(2),
            };
            json!({ "anything-but": excluded })
        }
        _ => d.json(2),
    }
}

/// Header names: ones Impulse reads, and random tokens.
pub fn header_name() -> impl Strategy<Value = String> {
    drawn(16, header_name_from)
}

/// A header name drawn from `d`: one Impulse reads (mostly), or a random token.
pub fn header_name_from(d: &mut Draw<'_>) -> String {
    const NAMES: &[&str] = &[
        "host",
        "content-type",
        "content-length",
        "cookie",
        "user-agent",
        "authorization",
        "origin",
        "x-amz-date",
        "date",
        "x-amz-invocation-type",
        "x-amz-log-type",
        "x-amz-client-context",
        "x-amz-content-sha256",
        "x-amz-security-token",
        "access-control-request-method",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-hub-signature-256",
        "x-github-delivery",
        "stripe-signature",
        "lambda-runtime-function-error-type",
        "lambda-runtime-invocation-id",
        "x-multi",
    ];
    if d.chance(200) {
        d.pick(NAMES).to_owned()
    } else {
        let name = d.string_of(b"abcxyz0189!#$%&'*+.^_`|~-", 12);
        if name.is_empty() {
            "x".to_owned()
        } else {
            name
        }
    }
}

/// Bytes a header value may hold (visible ASCII, space, tab and obs-text), with real shapes
/// (tokens, numbers, lists) more often than noise; at most 64 bytes.
pub fn header_value() -> impl Strategy<Value = Vec<u8>> {
    drawn(80, header_value_from)
}

/// A header value drawn from `d` (see [`header_value`]).
pub fn header_value_from(d: &mut Draw<'_>) -> Vec<u8> {
    match d.below(4) {
        0 => d
            .string_of(b" !\"#,-./0123456789:;=?@ABCXYZ[]abcxyz{}~", 40)
            .into_bytes(),
        1 => d
            .string_of(b"ABCXYZabcxyz0123456789_.=/+-", 32)
            .into_bytes(),
        2 => {
            let count = 1 + d.below(4);
            let items: Vec<String> = (0..count).map(|_| d.string_of(b"abcz019", 6)).collect();
            items.join(", ").into_bytes()
        }
        _ => {
            let len = d.below(64);
            (0..len)
                .map(|_| match d.byte() {
                    b'\t' => b'\t',
                    b @ 0..=0x1f => b + 0x20,
                    0x7f => b'~',
                    b => b,
                })
                .collect()
        }
    }
}

/// A request body: empty, any bytes, text, JSON, or JSON with a byte changed (often leaving it
/// JSON with invalid UTF-8 inside a string).
pub fn body() -> impl Strategy<Value = Vec<u8>> {
    drawn(384, body_from)
}

/// A body drawn from `d` (see [`body`]).
pub fn body_from(d: &mut Draw<'_>) -> Vec<u8> {
    match d.below(5) {
        0 => Vec::new(),
        1 => {
            let len = d.below(256);
            (0..len).map(|_| d.byte()).collect()
        }
        2 => d.string(64).into_bytes(),
        3 => d.json(3).to_string().into_bytes(),
        _ => {
            let mut bytes = d.json(3).to_string().into_bytes();
            let at = d.below(bytes.len().min(256));
            bytes[at] = d.byte();
            bytes
        }
    }
}
