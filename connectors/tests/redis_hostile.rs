//! The Redis queue against a server that answers with garbage: bytes that are not RESP, and
//! well-formed replies of the wrong shape (a stream entry without fields, a number where an
//! entry should be, the same page of entries however far the reader got). Connecting and
//! enqueueing end with an error naming the server within the client's timeouts; the consumer
//! keeps retrying, as it does while Redis is down, but with backoff, never in a tight loop.
//! Never a panic, and never an event reported as delivered or enqueued.
//!
//! The server is a few lines of Tokio in this file: a real socket, speaking just enough RESP
//! to read a command's name.

#![cfg(feature = "redis")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use impulse_connectors::contract::{Queue, QueuedEvent};
use impulse_connectors::redis::RedisQueue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Longer than the client's connect and response timeouts together.
const BOUND: Duration = Duration::from_secs(20);

/// What the server answers.
#[derive(Debug, Clone, Copy)]
enum Hostility {
    /// Bytes that are not RESP, to anything.
    Noise,
    /// Valid RESP: `+OK` to set-up commands, malformed stream replies to reads, errors to
    /// writes.
    WrongShapes,
}

/// A server on 127.0.0.1 answering every command as `hostility` says; its `redis://` URL and
/// the number of XREADGROUP commands it received.
async fn hostile_server(hostility: Hostility) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("redis://{}", listener.local_addr().expect("addr"));
    let reads = Arc::new(AtomicUsize::new(0));
    let counted = reads.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let reads = counted.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = socket.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    while let Some((command, used)) = next_command(&buffer) {
                        buffer.drain(..used);
                        if command == "XREADGROUP" {
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        let reply = answer(hostility, &command);
                        if socket.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, reads)
}

/// The name of the first complete command in `buffer` (an array of bulk strings, as clients
/// send them) and the bytes it takes.
fn next_command(buffer: &[u8]) -> Option<(String, usize)> {
    let mut at = 0;
    let line = |at: &mut usize| -> Option<String> {
        let end = buffer[*at..].windows(2).position(|w| w == b"\r\n")? + *at;
        let text = String::from_utf8_lossy(&buffer[*at..end]).into_owned();
        *at = end + 2;
        Some(text)
    };
    let count: usize = line(&mut at)?.strip_prefix('*')?.parse().ok()?;
    let mut name = None;
    for _ in 0..count {
        let len: usize = line(&mut at)?.strip_prefix('$')?.parse().ok()?;
        if buffer.len() < at + len + 2 {
            return None;
        }
        let value = String::from_utf8_lossy(&buffer[at..at + len]).to_uppercase();
        name.get_or_insert(value);
        at += len + 2;
    }
    Some((name.unwrap_or_default(), at))
}

fn answer(hostility: Hostility, command: &str) -> &'static [u8] {
    match hostility {
        Hostility::Noise => b"\x00\xffnot RESP at all\r\n\x7f",
        Hostility::WrongShapes => match command {
            // RESP2, please; then whatever the client sets up succeeds.
            "HELLO" => b"-ERR unknown command 'HELLO'\r\n",
            "XREADGROUP" => {
                // One stream with: an entry whose fields are a number, an entry without the
                // event field, and a number where an entry should be.
                b"*1\r\n*2\r\n$1\r\nq\r\n*3\r\n*2\r\n$3\r\n1-1\r\n:7\r\n*2\r\n$3\r\n2-1\r\n*2\r\n$5\r\nother\r\n$1\r\nx\r\n:42\r\n"
            }
            "XAUTOCLAIM" => b"*2\r\n:1\r\n$5\r\nnoise\r\n",
            "XADD" | "XACK" | "EVALSHA" | "EVAL" | "SCRIPT" => b"-ERR hostile server\r\n",
            _ => b"+OK\r\n",
        },
    }
}

fn event() -> QueuedEvent {
    QueuedEvent {
        id: "hostile-1".into(),
        function: "f".to_owned(),
        trigger: "invoke".to_owned(),
        payload: Bytes::from_static(b"{}"),
        enqueued_at: SystemTime::now(),
        attempts: 0,
        function_retries: 0,
        pending_destination: None,
    }
}

#[tokio::test]
async fn a_server_that_is_not_redis_is_refused_at_connect() {
    let (url, _) = hostile_server(Hostility::Noise).await;
    let connected = tokio::time::timeout(
        BOUND,
        RedisQueue::connect(&url, "q", "c", Duration::from_secs(30)),
    )
    .await
    .expect("connect gives up within the client's timeouts");
    let err = connected.expect_err("noise is not a Redis");
    assert!(err.to_string().contains(&url), "{err}");
}

#[tokio::test]
async fn malformed_replies_are_errors_never_deliveries() {
    let (url, reads) = hostile_server(Hostility::WrongShapes).await;
    let queue = tokio::time::timeout(
        BOUND,
        RedisQueue::connect(&url, "q", "c", Duration::from_secs(30)),
    )
    .await
    .expect("connect ends")
    .expect("set-up commands were answered +OK");

    let enqueued = tokio::time::timeout(BOUND, queue.enqueue(event()))
        .await
        .expect("enqueue ends");
    let err = enqueued.expect_err("an error reply is not a durable enqueue");
    assert!(err.to_string().contains("hostile server"), "{err}");

    // The read gets entries it cannot use, and the same page again however far it has read:
    // it gives up on the page and retries later, as while Redis is down, handing nothing out.
    let watched = Duration::from_secs(3);
    let delivered = tokio::time::timeout(watched, queue.next()).await;
    assert!(delivered.is_err(), "nothing is delivered: {delivered:?}");
    // 100 ms doubling to 5 s: a handful of pages in 3 s; a loop on the same page would read
    // thousands.
    let pages = reads.load(Ordering::Relaxed);
    assert!((2..=20).contains(&pages), "{pages} pages read");
}
