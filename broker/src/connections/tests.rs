//! The connection limits against real sockets: what a slow, idle or excess client gets, and
//! what shutdown waits for.

use std::net::SocketAddr;

use axum::routing::get;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::*;

/// Bound on waits for something the server must do within about a second.
const WITHIN: Duration = Duration::from_secs(10);

fn limits() -> Limits {
    Limits {
        listener: "test",
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        max_connections: 100,
    }
}

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

async fn start(router: Router, limits: Limits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(
        listener,
        router,
        None,
        limits,
        stop.clone().cancelled_owned(),
    ));
    Server { addr, stop, task }
}

fn hello() -> Router {
    Router::new().route("/", get(|| async { "hello" }))
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

/// Reads until the server closes the connection; everything it sent. Panics if it stays open
/// beyond [`WITHIN`].
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(WITHIN, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&received).into_owned()
}

/// Reads one response's head and body of `hello` (`Content-Length: 5`).
async fn one_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&received).ends_with("hello") {
        let n = tokio::time::timeout(WITHIN, stream.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed before the response");
        received.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_header_sent_too_slowly_closes_the_connection() {
    let server = start(hello(), limits()).await;
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: te")
        .await
        .expect("write");
    let answer = until_closed(&mut slow).await;
    assert!(!answer.contains("hello"), "{answer}");

    // A connection that sends nothing at all is closed too.
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    until_closed(&mut silent).await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let limits = Limits {
        // Longer than the idle timeout, so that only the idle timeout can close it.
        header_read_timeout: Duration::from_secs(300),
        ..limits()
    };
    let server = start(hello(), limits).await;
    let mut client = TcpStream::connect(server.addr).await.expect("connect");
    for _ in 0..2 {
        client.write_all(GET).await.expect("write");
        let response = one_response(&mut client).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let rest = until_closed(&mut client).await;
    assert_eq!(rest, "");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let limits = Limits {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(300),
        idle_timeout: Duration::from_secs(300),
        ..limits()
    };
    let server = start(hello(), limits).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut client = TcpStream::connect(server.addr).await.expect("connect");
        client.write_all(GET).await.expect("write");
        one_response(&mut client).await;
        held.push(client);
    }
    let mut excess = TcpStream::connect(server.addr).await.expect("connect");
    // Written before or after the server closes it; either way no answer comes.
    excess.write_all(GET).await.ok();
    assert_eq!(until_closed(&mut excess).await, "");

    // A slot freed is a slot for the next client.
    drop(held.pop());
    let reconnected = tokio::time::timeout(WITHIN, async {
        loop {
            let mut client = TcpStream::connect(server.addr).await.expect("connect");
            client.write_all(GET).await.ok();
            let mut buf = [0u8; 64];
            if matches!(client.read(&mut buf).await, Ok(n) if n > 0) {
                break;
            }
        }
    })
    .await;
    assert!(reconnected.is_ok(), "no slot was freed");
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_and_drops_silent_clients() {
    let (started_tx, mut started) = mpsc::channel::<()>(1);
    let (release_tx, release) = oneshot::channel::<()>();
    let release = Arc::new(tokio::sync::Mutex::new(Some(release)));
    let router = hello().route(
        "/slow",
        get(move || {
            let started_tx = started_tx.clone();
            let release = release.clone();
            async move {
                started_tx.send(()).await.ok();
                if let Some(release) = release.lock().await.take() {
                    release.await.ok();
                }
                "slow done"
            }
        }),
    );
    let limits = Limits {
        header_read_timeout: Duration::from_secs(300),
        idle_timeout: Duration::from_secs(300),
        ..limits()
    };
    let mut server = start(router, limits).await;

    let mut half_header = TcpStream::connect(server.addr).await.expect("connect");
    half_header
        .write_all(b"GET / HTTP/1.1\r\nHo")
        .await
        .expect("write");
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    idle.write_all(GET).await.expect("write");
    one_response(&mut idle).await;
    let mut in_flight = TcpStream::connect(server.addr).await.expect("connect");
    in_flight
        .write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write");
    started.recv().await.expect("the slow request started");

    server.stop.cancel();
    until_closed(&mut half_header).await;
    assert_eq!(until_closed(&mut idle).await, "");
    assert!(
        !server.task.is_finished(),
        "serve returned with a request in flight"
    );

    release_tx.send(()).expect("release the slow request");
    let answer = until_closed(&mut in_flight).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("slow done"),
        "{answer}"
    );
    tokio::time::timeout(WITHIN, &mut server.task)
        .await
        .expect("serve returns once the last request is answered")
        .expect("no panic")
        .expect("no error");
}
