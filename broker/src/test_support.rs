//! Fakes for the broker's unit tests: a scripted function target, a destination that fails
//! on demand, and configurations parsed from TOML text.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use impulse_config::{Config, FunctionConfig};
use impulse_connectors::contract::{Sink, SinkError};
use impulse_invoker::{Invocation, InvocationResponse, Invoke, InvokeError, TargetFuture};

use crate::functions::Function;

/// What a scripted target answers.
pub(crate) type Reply = Result<InvocationResponse, InvokeError>;

/// A function target that answers from a script, then with `answer` (or `{}`) once the script
/// runs out, and records the payload of every call.
#[derive(Clone, Default)]
pub(crate) struct ScriptedTarget {
    script: Arc<Mutex<Script>>,
}

/// Computes a reply from the invocation.
type Answer = Box<dyn FnMut(&Invocation) -> Reply + Send>;

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    answer: Option<Answer>,
    payloads: Vec<Bytes>,
    /// How long each call takes.
    duration: Duration,
}

impl ScriptedTarget {
    /// A target answering `replies` in order, then `{}`.
    pub(crate) fn new(replies: impl IntoIterator<Item = Reply>) -> Self {
        let target = Self::default();
        lock(&target.script).replies.extend(replies);
        target
    }

    /// A target answering every call with `answer(invocation)`.
    pub(crate) fn answering(answer: impl FnMut(&Invocation) -> Reply + Send + 'static) -> Self {
        let target = Self::default();
        lock(&target.script).answer = Some(Box::new(answer));
        target
    }

    /// The same target, taking `duration` to answer each call.
    pub(crate) fn taking(self, duration: Duration) -> Self {
        lock(&self.script).duration = duration;
        self
    }

    /// The payloads of every call so far.
    pub(crate) fn payloads(&self) -> Vec<Bytes> {
        lock(&self.script).payloads.clone()
    }

    /// How many calls were made.
    pub(crate) fn calls(&self) -> usize {
        lock(&self.script).payloads.len()
    }
}

impl Invoke for ScriptedTarget {
    type Future = TargetFuture;

    fn invoke(&self, invocation: Invocation) -> Self::Future {
        let mut script = lock(&self.script);
        script.payloads.push(invocation.payload.clone());
        let reply = match script.replies.pop_front() {
            Some(reply) => reply,
            None => match &mut script.answer {
                Some(answer) => answer(&invocation),
                None => Ok(ok()),
            },
        };
        let duration = script.duration;
        Box::pin(async move {
            tokio::time::sleep(duration).await;
            reply
        })
    }
}

/// A successful result, `{}`.
pub(crate) fn ok() -> InvocationResponse {
    InvocationResponse {
        payload: Bytes::from_static(b"{}"),
    }
}

/// A function error with Lambda's document.
pub(crate) fn function_error() -> InvokeError {
    InvokeError::Function {
        error_type: "Unhandled".into(),
        payload: Bytes::from_static(br#"{"errorType":"Boom","errorMessage":"asked to fail"}"#),
    }
}

/// Function `name` with the settings of `config` (JSON, serde defaults for the rest; the
/// target entry is a placeholder) calling `target`.
pub(crate) fn function(name: &str, config: serde_json::Value, target: &ScriptedTarget) -> Function {
    let mut config = config;
    config["target"] = serde_json::json!({ "type": "http", "endpoint": "http://127.0.0.1:9/" });
    let config: FunctionConfig = serde_json::from_value(config).expect("a valid function config");
    crate::functions::standalone(name, &config, target.clone())
}

/// A destination that refuses its first `failures` writes, then records what it is given.
#[derive(Default)]
pub(crate) struct FlakySink {
    failures: Mutex<u32>,
    written: Mutex<Vec<(String, serde_json::Value)>>,
}

impl FlakySink {
    /// A sink that fails `failures` writes first.
    pub(crate) fn failing(failures: u32) -> Arc<Self> {
        Arc::new(Self {
            failures: Mutex::new(failures),
            written: Mutex::default(),
        })
    }

    /// The records written so far, by key, parsed.
    pub(crate) fn written(&self) -> Vec<(String, serde_json::Value)> {
        lock(&self.written).clone()
    }
}

impl Sink for FlakySink {
    fn write(&self, key: &str, record: Bytes) -> BoxFuture<'_, Result<(), SinkError>> {
        let result = {
            let mut failures = lock(&self.failures);
            if *failures > 0 {
                *failures -= 1;
                Err(SinkError {
                    sink: "flaky".into(),
                    code: "unavailable",
                    message: "asked to fail".into(),
                })
            } else {
                let record = serde_json::from_slice(&record).expect("records are JSON");
                lock(&self.written).push((key.to_owned(), record));
                Ok(())
            }
        };
        Box::pin(async move { result })
    }
}

fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `text` parsed as the TOML file `file` (named in error messages), without environment
/// variables; panics with the errors when it does not parse.
pub(crate) fn toml_config(text: &str, file: &str) -> Config {
    impulse_config::parse(
        text,
        impulse_config::Format::Toml,
        file,
        &std::collections::BTreeMap::new(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}
