//! The target function: a hyper HTTP/1 server on one worker thread (a current-thread runtime
//! on its own OS thread) that answers `200 {}` and tallies the records of the events it gets:
//! Lambda Kafka events and Impulse's Redis stream events.
//!
//! Every request body is parsed as either event; each record's position is marked in a bitmap,
//! so the tally tells distinct records from duplicates: a Kafka record's `partition` and
//! `offset`, a Redis entry's id `<ms>-<seq>` as partition 0 and offset `seq` (the benches write
//! entries with explicit ids sharing one `ms`). The other fields are skipped by the parser
//! without being decoded. Impulse and the baseline are counted by the same code.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::oneshot;

/// A running target function.
#[derive(Debug)]
pub struct Target {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread_stat: PathBuf,
}

/// What the target has seen since the last [`Target::reset`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests answered.
    pub requests: u64,
    /// Records received, duplicates included.
    pub records: u64,
    /// Distinct `(partition, offset)` pairs.
    pub distinct: u64,
    /// Records received again.
    pub duplicates: u64,
    /// Requests whose body was not an event the target knows (answered 400).
    pub bad_requests: u64,
    /// Most connections open at once. An HTTP/1 connection carries one request at a time, so
    /// this bounds the requests in flight (a one-thread target that answers at once never sees
    /// two requests being handled together, so it cannot count in-flight requests directly).
    pub max_connections: usize,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    connections: AtomicUsize,
    max_connections: AtomicUsize,
}

#[derive(Debug, Default)]
struct State {
    tally: Tally,
    /// Per partition, a bitmap of offsets seen.
    seen: Vec<Vec<u64>>,
    /// Distinct counts still to report, ascending, with when they were reached.
    marks: Vec<(u64, oneshot::Sender<Instant>)>,
}

#[derive(Deserialize)]
struct Event {
    /// Kafka: records by `topic-partition`.
    #[serde(default)]
    records: HashMap<String, Vec<Record>>,
    /// Redis streams: the batch's entries.
    #[serde(default, rename = "Records")]
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    id: String,
}

impl Entry {
    /// The sequence part of the id, as the entry's offset in partition 0.
    fn position(&self) -> Option<Record> {
        let (_, seq) = self.id.split_once('-')?;
        Some(Record {
            partition: 0,
            offset: seq.parse().ok()?,
        })
    }
}

#[derive(Deserialize)]
struct Record {
    partition: usize,
    offset: usize,
}

impl Target {
    /// Binds 127.0.0.1:0 and starts serving on a new thread.
    pub fn start() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let serving = shared.clone();
        std::thread::Builder::new()
            .name("target".to_owned())
            .spawn(move || {
                let stat = crate::proc::current_thread_stat();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let runtime = match (stat, runtime) {
                    (Ok(stat), Ok(runtime)) => {
                        tx.send(Ok(stat)).ok();
                        runtime
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        tx.send(Err(e)).ok();
                        return;
                    }
                };
                runtime.block_on(serve(listener, serving));
            })?;
        let thread_stat = rx.recv()??;
        Ok(Self {
            addr,
            shared,
            thread_stat,
        })
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// `/proc/…/stat` of the target's thread (its CPU time, apart from the bench's).
    pub fn thread_stat(&self) -> &std::path::Path {
        &self.thread_stat
    }

    /// Clears the tally and arms one notification per count in `marks`: each receiver gets the
    /// instant the distinct count first reached its value.
    pub fn reset(&self, marks: &[u64]) -> Vec<oneshot::Receiver<Instant>> {
        let mut state = self.shared.lock();
        state.tally = Tally::default();
        state.seen.clear();
        let mut receivers = Vec::with_capacity(marks.len());
        let mut armed = Vec::with_capacity(marks.len());
        for &mark in marks {
            let (tx, rx) = oneshot::channel();
            armed.push((mark, tx));
            receivers.push(rx);
        }
        armed.sort_by_key(|(mark, _)| *mark);
        state.marks = armed;
        let open = self.shared.connections.load(Ordering::Relaxed);
        self.shared.max_connections.store(open, Ordering::Relaxed);
        receivers
    }

    /// The tally so far.
    pub fn tally(&self) -> Tally {
        let mut tally = self.shared.lock().tally;
        tally.max_connections = self.shared.max_connections.load(Ordering::Relaxed);
        tally
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tallies one event; `false` when it is neither event (or a Redis entry id is not
    /// `<ms>-<seq>`).
    fn count(&self, body: &[u8]) -> bool {
        let event = serde_json::from_slice::<Event>(body)
            .ok()
            .and_then(|event| {
                let entries: Option<Vec<Record>> =
                    event.entries.iter().map(Entry::position).collect();
                Some((event.records, entries?))
            });
        let Some((records, entries)) = event else {
            self.lock().tally.bad_requests += 1;
            return false;
        };
        let now = Instant::now();
        let mut state = self.lock();
        let state = &mut *state;
        state.tally.requests += 1;
        for record in records.values().flatten().chain(&entries) {
            state.tally.records += 1;
            if state.seen.len() <= record.partition {
                state.seen.resize_with(record.partition + 1, Vec::new);
            }
            let bits = &mut state.seen[record.partition];
            let (word, bit) = (record.offset / 64, 1u64 << (record.offset % 64));
            if bits.len() <= word {
                bits.resize(word + 1, 0);
            }
            if bits[word] & bit == 0 {
                bits[word] |= bit;
                state.tally.distinct += 1;
            } else {
                state.tally.duplicates += 1;
            }
        }
        let reached = state
            .marks
            .iter()
            .take_while(|(mark, _)| *mark <= state.tally.distinct)
            .count();
        for (_, tx) in state.marks.drain(..reached) {
            tx.send(now).ok();
        }
        true
    }
}

async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("target: cannot listen: {e}");
            return;
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        stream.set_nodelay(true).ok();
        let shared = shared.clone();
        let open = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
        shared.max_connections.fetch_max(open, Ordering::Relaxed);
        tokio::spawn(async move {
            let counter = shared.clone();
            let service =
                hyper::service::service_fn(move |request| handle(request, shared.clone()));
            // A client closing its connection ends it; nothing to report.
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
                .ok();
            counter.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let counted = match request.into_body().collect().await {
        Ok(body) => shared.count(&body.to_bytes()),
        Err(_) => false,
    };
    let response = if counted {
        Response::builder()
            .status(StatusCode::OK)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))
    } else {
        Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Full::new(Bytes::from_static(
                b"not an event the target knows",
            )))
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
