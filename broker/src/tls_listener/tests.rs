//! Real-socket tests of both listener paths: TLS with the peer address, plain HTTP refused on
//! a TLS port, the handshake deadline, and graceful shutdown.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use impulse_test_support::tls::{PkiFiles, TestPki};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::*;

struct Fixture {
    pki: TestPki,
    files: PkiFiles,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().expect("a temp dir");
    Fixture {
        files: pki.write_to(dir.path()),
        pki,
        _dir: dir,
    }
}

fn server_tls(files: &PkiFiles) -> ServerTlsConfig {
    ServerTlsConfig {
        certificate: files.server_certificate.clone(),
        key: files.server_key.clone(),
    }
}

/// A client trusting only the test CA.
fn client(pki: &TestPki) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(pki.ca.as_bytes()).expect("the CA");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("a client")
}

/// Serves `router` over TLS on a free port until `stop` is cancelled.
async fn start(
    router: Router,
    files: &PkiFiles,
    stop: &CancellationToken,
) -> (SocketAddr, tokio::task::JoinHandle<io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = acceptor(&server_tls(files)).expect("acceptor");
    let limits = crate::connections::Limits::new("server", &Default::default());
    let server = tokio::spawn(crate::connections::serve(
        listener,
        router,
        Some(acceptor),
        limits,
        stop.clone().cancelled_owned(),
    ));
    (addr, server)
}

fn peer_router() -> Router {
    Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    )
}

#[tokio::test]
async fn serves_https_and_tells_handlers_the_peer() {
    let f = fixture();
    let stop = CancellationToken::new();
    let (addr, _server) = start(peer_router(), &f.files, &stop).await;
    let response = client(&f.pki)
        .get(format!("https://localhost:{}/peer", addr.port()))
        .send()
        .await
        .expect("an https answer");
    assert_eq!(response.status(), 200);
    let peer = response.text().await.expect("body");
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
}

#[tokio::test]
async fn plain_http_and_untrusting_clients_are_refused() {
    let f = fixture();
    let stop = CancellationToken::new();
    let (addr, _server) = start(peer_router(), &f.files, &stop).await;
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/peer", addr.port()))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    let other = TestPki::generate_named("Another CA");
    let untrusting = client(&other)
        .get(format!("https://localhost:{}/peer", addr.port()))
        .send()
        .await;
    assert!(untrusting.is_err(), "{untrusting:?}");
    // The listener is still serving.
    let response = client(&f.pki)
        .get(format!("https://localhost:{}/peer", addr.port()))
        .send()
        .await
        .expect("an https answer");
    assert_eq!(response.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_handshakes_is_closed_after_the_deadline() {
    let f = fixture();
    let stop = CancellationToken::new();
    let (addr, _server) = start(peer_router(), &f.files, &stop).await;
    let started = tokio::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0_u8; 16];
    // The paused clock advances whenever every task waits: the server's deadline fires, and
    // it closes the socket.
    let read = silent.read(&mut buf).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Closed by this deadline, not by hyper's 30 s header-read timeout.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= HANDSHAKE_TIMEOUT && elapsed < HANDSHAKE_TIMEOUT + Duration::from_secs(1),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let f = fixture();
    let (entered_tx, mut entered) = mpsc::channel::<()>(1);
    let (release_tx, release) = oneshot::channel::<()>();
    let release = std::sync::Arc::new(tokio::sync::Mutex::new(Some(release)));
    let router = Router::new().route(
        "/slow",
        get(move || {
            let entered_tx = entered_tx.clone();
            let release = release.clone();
            async move {
                entered_tx.send(()).await.expect("the test waits");
                if let Some(release) = release.lock().await.take() {
                    release.await.expect("the test releases");
                }
                "finished"
            }
        }),
    );
    let stop = CancellationToken::new();
    let (addr, server) = start(router, &f.files, &stop).await;
    let request = tokio::spawn(
        client(&f.pki)
            .get(format!("https://localhost:{}/slow", addr.port()))
            .send(),
    );
    entered.recv().await.expect("the handler started");
    stop.cancel();
    release_tx.send(()).expect("the handler waits");
    let response = request.await.expect("joined").expect("the answer");
    assert_eq!(response.text().await.expect("body"), "finished");
    server
        .await
        .expect("joined")
        .expect("served until shutdown");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let f = fixture();
    let mismatched = ServerTlsConfig {
        certificate: f.files.server_certificate.clone(),
        key: f.files.client_key.clone(),
    };
    let Err(err) = acceptor(&mismatched) else {
        panic!("a mismatched key was accepted");
    };
    let message = err.to_string();
    assert!(message.starts_with("server.tls: "), "{message}");
    let key_line = f.pki.client.key.lines().nth(1).expect("a base64 line");
    assert!(!message.contains(key_line), "{message}");

    let missing = ServerTlsConfig {
        certificate: f.files.server_certificate.with_file_name("missing.pem"),
        ..server_tls(&f.files)
    };
    let Err(err) = acceptor(&missing) else {
        panic!("a missing file was accepted");
    };
    assert!(
        err.to_string()
            .starts_with("server.tls.certificate: cannot read "),
        "{err}"
    );
}
