//! The pool against a raw HTTP/1 server on a real socket, which counts the connections it
//! accepted and decides how each ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Barrier};

use super::*;

/// How the server ends a connection after each answer.
#[derive(Clone, Copy)]
enum After {
    /// Keeps it open for the next request.
    KeepAlive,
    /// Answers with `connection: close`, then closes it.
    CloseHeader,
    /// Keeps it open until told to close it, then closes it without a word, as a server
    /// whose keep-alive timeout ran out does.
    CloseWhenTold,
}

struct RawServer {
    uri: http::Uri,
    accepted: Arc<AtomicUsize>,
    /// A message per connection the server closed.
    closed: mpsc::UnboundedReceiver<()>,
    /// `true` tells [`After::CloseWhenTold`] connections to close.
    close: watch::Sender<bool>,
}

impl RawServer {
    /// Tells an [`After::CloseWhenTold`] server to close its one connection, and waits until
    /// it did.
    async fn close_its_connection(&mut self) {
        self.close.send_replace(true);
        self.closed
            .recv()
            .await
            .expect("the server closed the connection");
    }
}

/// A server answering `200 {"n":<request number on its connection>}` to every request. With
/// `together`, each answer waits until that many requests arrived.
async fn serve(after: After, together: Option<usize>) -> RawServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let uri = format!("http://{}/invoke", listener.local_addr().expect("address"))
        .parse()
        .expect("a URI");
    let accepted = Arc::new(AtomicUsize::new(0));
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let barrier = together.map(|n| Arc::new(Barrier::new(n)));
    let (close, told) = watch::channel(false);
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let closed = closed_tx.clone();
            let barrier = barrier.clone();
            let told = told.clone();
            tokio::spawn(async move {
                answer_each(stream, after, barrier, told).await;
                closed.send(()).ok();
            });
        }
    });
    RawServer {
        uri,
        accepted,
        closed,
        close,
    }
}

/// Answers the requests of one connection until the client closes it or `after` says to.
async fn answer_each(
    mut stream: TcpStream,
    after: After,
    barrier: Option<Arc<Barrier>>,
    mut told: watch::Receiver<bool>,
) {
    let mut answered = 0;
    loop {
        let request = tokio::select! {
            read = read_request(&mut stream) => read,
            _ = told.wait_for(|close| *close), if matches!(after, After::CloseWhenTold) => false,
        };
        if !request {
            return;
        }
        if let Some(barrier) = &barrier {
            barrier.wait().await;
        }
        answered += 1;
        let body = format!(r#"{{"n":{answered}}}"#);
        let close = if matches!(after, After::CloseHeader) {
            "connection: close\r\n"
        } else {
            ""
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{close}\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() || matches!(after, After::CloseHeader)
        {
            return;
        }
    }
}

/// Reads one request (head and `content-length` body); false at the end of the stream.
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.is_ok()
}

fn request(uri: &http::Uri) -> http::Request<Body> {
    let mut request = http::Request::new(Full::new(Bytes::from_static(b"{}")));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri.path().parse().expect("a path");
    let host = uri.authority().expect("an authority").as_str();
    request.headers_mut().insert(
        http::header::HOST,
        http::HeaderValue::from_str(host).expect("a header value"),
    );
    request
}

/// One exchange through `pool`; the body of the answer.
async fn post(pool: &ConnectionPool, uri: &http::Uri) -> Result<Bytes, PoolError> {
    let (response, mut connection) = pool.send(request(uri)).await?;
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = connection
        .drive(response.into_body().collect())
        .await
        .map_err(PoolError::Http)?
        .to_bytes();
    pool.put_back(connection);
    Ok(body)
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let server = serve(After::KeepAlive, None).await;
    let pool = ConnectionPool::new(server.uri.clone());
    for n in 1..=3 {
        let body = post(&pool, &server.uri).await.expect("an answer");
        assert_eq!(body, format!(r#"{{"n":{n}}}"#));
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}

/// Four requests at once through `pool`, each in a task of its own; their answers' bodies.
async fn post_four_at_once(pool: &Arc<ConnectionPool>, uri: &http::Uri) -> Vec<Bytes> {
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let (pool, uri) = (Arc::clone(pool), uri.clone());
            tokio::spawn(async move { post(&pool, &uri).await.expect("an answer") })
        })
        .collect();
    let mut bodies = Vec::new();
    for call in calls {
        bodies.push(call.await.expect("joined"));
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_open_a_connection_each_and_reuse_them() {
    let server = serve(After::KeepAlive, Some(4)).await;
    let pool = Arc::new(ConnectionPool::new(server.uri.clone()));
    // The server answers once four requests arrived: four connections.
    for body in post_four_at_once(&pool, &server.uri).await {
        assert_eq!(body, r#"{"n":1}"#);
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 4);
    // Four idle connections now; the next four requests, together again, take them.
    for body in post_four_at_once(&pool, &server.uri).await {
        assert_eq!(body, r#"{"n":2}"#);
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_connection_closed_by_its_answer_is_not_reused() {
    let server = serve(After::CloseHeader, None).await;
    let pool = ConnectionPool::new(server.uri.clone());
    for _ in 0..2 {
        let body = post(&pool, &server.uri).await.expect("an answer");
        assert_eq!(body, r#"{"n":1}"#);
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced() {
    let mut server = serve(After::CloseWhenTold, None).await;
    let pool = ConnectionPool::new(server.uri.clone());
    post(&pool, &server.uri).await.expect("an answer");
    server.close_its_connection().await;
    // The close reaches the client through the runtime's I/O driver, which a yield lets run
    // (as it has long run when a server's keep-alive timeout closes an idle connection).
    tokio::task::yield_now().await;
    server.close.send_replace(false);
    let body = post(&pool, &server.uri).await.expect("an answer");
    assert_eq!(body, r#"{"n":1}"#, "answered on a new connection");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_abandoned_request_closes_its_connection() {
    let mut server = serve(After::KeepAlive, Some(2)).await;
    let pool = ConnectionPool::new(server.uri.clone());
    // The server holds every answer until two requests arrived: the caller gives up first.
    let abandoned =
        tokio::time::timeout(Duration::from_millis(50), pool.send(request(&server.uri)));
    assert!(abandoned.await.is_err(), "the answer was held");
    // The next request is the second one: it goes out on a new connection.
    let body = post(&pool, &server.uri).await.expect("an answer");
    assert_eq!(body, r#"{"n":1}"#, "answered on a new connection");
    server
        .closed
        .recv()
        .await
        .expect("the abandoned connection was closed");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn connections_idle_past_the_timeout_are_not_reused() {
    let server = serve(After::KeepAlive, None).await;
    let pool = ConnectionPool::new(server.uri.clone());
    post(&pool, &server.uri).await.expect("an answer");
    tokio::time::advance(IDLE_TIMEOUT).await;
    let body = post(&pool, &server.uri).await.expect("an answer");
    assert_eq!(body, r#"{"n":1}"#, "answered on a new connection");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_sweep_closes_connections_idle_past_the_timeout() {
    let mut server = serve(After::KeepAlive, None).await;
    let pool = ConnectionPool::new(server.uri.clone());
    post(&pool, &server.uri).await.expect("an answer");
    let idle_since = Instant::now();
    // Paused time runs ahead to the sweeps while the server waits for the close.
    tokio::time::timeout(2 * IDLE_TIMEOUT, server.closed.recv())
        .await
        .expect("the sweep closed the idle connection")
        .expect("the server runs");
    assert!(
        idle_since.elapsed() >= IDLE_TIMEOUT,
        "{:?}",
        idle_since.elapsed()
    );
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_sweep_drops_idle_connections_the_server_closed() {
    let mut server = serve(After::CloseWhenTold, None).await;
    let pool = ConnectionPool::new(server.uri.clone());
    post(&pool, &server.uri).await.expect("an answer");
    assert_eq!(pool.idle_count(), 1);
    server.close_its_connection().await;
    let closed_at = Instant::now();
    impulse_test_support::wait::wait_until(
        "the sweep dropped the connection",
        Duration::from_secs(10),
        || pool.idle_count() == 0,
    )
    .await;
    assert!(
        closed_at.elapsed() < IDLE_TIMEOUT,
        "dropped by a sweep before the idle timeout: {:?}",
        closed_at.elapsed()
    );
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let uri: http::Uri = format!("http://{}/", listener.local_addr().expect("address"))
        .parse()
        .expect("a URI");
    drop(listener);
    let pool = ConnectionPool::new(uri.clone());
    let error = pool.send(request(&uri)).await.err().expect("no answer");
    assert!(matches!(error, PoolError::Connect(_)), "{error:?}");
}
