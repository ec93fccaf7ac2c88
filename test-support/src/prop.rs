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
    eprintln!(
        "property {name}: {cases} cases in {:.2?} (seed {seed})",
        started.elapsed()
    );
    if let Err(err) = result {
        panic!("property {name} failed (seed {seed}): {err}");
    }
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

/// Any JSON value: every scalar kind (edge numbers, escapes and non-ASCII in strings), nested
/// at most four deep, with at most about 30 nodes.
pub fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        "(\\PC|[\"\\\\\n\t\u{0}])*".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                "(\\PC|[\"\\\\]){0,8}",
                inner,
                0..6
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Kafka trigger filter patterns (`impulse_config::filter`'s grammar), mostly valid: real
/// fields and matchers with random names, arguments and values, and now and then a part that
/// breaks a rule (an unknown matcher, an empty list, a wrong argument type, any JSON).
pub fn filter_patterns() -> impl Strategy<Value = Vec<serde_json::Value>> {
    proptest::collection::vec(filter_pattern(), 0..7)
}

fn filter_pattern() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Map, Value};
    let headers = proptest::collection::vec((field_name(), filter_node()), 0..3).prop_map(|h| {
        Value::Object(h.into_iter().collect::<Map<String, Value>>())
    });
    prop_oneof![
        12 => (
            proptest::option::of(filter_node()),
            proptest::option::of(filter_node()),
            proptest::option::of(headers),
        )
            .prop_map(|(value, key, headers)| {
                let mut pattern = Map::new();
                for (name, part) in [("value", value), ("key", key), ("headers", headers)] {
                    if let Some(part) = part {
                        pattern.insert(name.to_owned(), part);
                    }
                }
                Value::Object(pattern)
            }),
        1 => json(),
        1 => (field_name(), filter_node()).prop_map(|(name, node)| serde_json::json!({ name: node })),
    ]
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec!["type", "id", "n", "tags", "a", "content-type", ""])
            .prop_map(str::to_owned),
        "\\PC{0,6}",
    ]
}

fn filter_node() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Map, Value};
    let leaf = proptest::collection::vec(filter_matcher(), 0..4).prop_map(Value::Array);
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            3 => proptest::collection::vec((field_name(), inner.clone()), 0..3)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
            1 => inner,
        ]
    })
}

fn filter_matcher() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..50).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        proptest::sample::select(vec!["order", "refund", "ab", "a", "", "42", "null", "true"])
            .prop_map(|s| Value::String(s.to_owned())),
        "\\PC{0,4}".prop_map(Value::String),
    ];
    let op = prop_oneof![
        proptest::sample::select(vec!["<", "<=", "=", ">", ">="]).prop_map(|s| json!(s)),
        json().prop_map(|v| v),
    ];
    let bound = prop_oneof![(-5i64..50).prop_map(|n| json!(n)), any::<f64>().prop_map(|f| json!(f)), json()];
    prop_oneof![
        6 => scalar.clone(),
        2 => prop_oneof!["[a-z0-9]{0,3}".prop_map(Value::String), json()]
            .prop_map(|p| json!({ "prefix": p })),
        2 => proptest::collection::vec((op, bound), 0..3)
            .prop_map(|pairs| {
                json!({ "numeric": pairs.into_iter().flat_map(|(o, b)| [o, b]).collect::<Vec<_>>() })
            }),
        1 => prop_oneof![any::<bool>().prop_map(Value::Bool), json()]
            .prop_map(|e| json!({ "exists": e })),
        2 => prop_oneof![
            scalar.clone(),
            proptest::collection::vec(scalar, 0..3).prop_map(Value::Array),
            "[a-z]{0,2}".prop_map(|p| json!({ "prefix": p })),
            json(),
        ]
        .prop_map(|v| json!({ "anything-but": v })),
        1 => json(),
    ]
}

/// Bytes a header value may hold (visible ASCII, space, tab and obs-text), with real shapes
/// (tokens, numbers, lists, quoted strings) more often than noise; at most 80 bytes.
pub fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~]{0,40}".prop_map(String::into_bytes),
        "[A-Za-z0-9_.=/+-]{0,32}".prop_map(String::into_bytes),
        "[a-z]{1,8}(, ?[a-z0-9]{1,8}){0,4}".prop_map(String::into_bytes),
        proptest::collection::vec(
            prop_oneof![0x20u8..0x7f, Just(b'\t'), 0x80u8..=0xff],
            0..80
        ),
    ]
}

/// Header names: ones Impulse reads, and random tokens.
pub fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "host", "content-type", "content-length", "cookie", "user-agent", "authorization",
            "origin", "x-amz-date", "x-amz-invocation-type", "x-amz-log-type",
            "x-amz-client-context", "x-amz-content-sha256", "x-amz-security-token",
            "access-control-request-method", "webhook-id", "webhook-timestamp",
            "webhook-signature", "x-hub-signature-256", "x-github-delivery", "stripe-signature",
            "lambda-runtime-function-error-type", "lambda-runtime-invocation-id", "x-multi",
        ])
        .prop_map(str::to_owned),
        "[a-z0-9!#$%&'*+.^_`|~-]{1,16}",
    ]
}

/// A request body: empty, any bytes, text, JSON, or JSON with a byte changed (often leaving it
/// JSON with invalid UTF-8 inside a string); at most about 1 KiB.
pub fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 0..256),
        "\\PC{0,64}".prop_map(String::into_bytes),
        json().prop_map(|v| v.to_string().into_bytes()),
        (json(), any::<proptest::sample::Index>(), any::<u8>()).prop_map(|(v, at, byte)| {
            let mut bytes = v.to_string().into_bytes();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            bytes
        }),
    ]
}
