//! A real HTTP function for tests: records every event it receives and answers as told.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc;

/// What the function received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The event, parsed.
    pub event: Value,
    /// The request headers Impulse sent.
    pub headers: HeaderMap,
    /// When the request arrived (its body read), stamped by the server rather than by the
    /// test task that reads it later.
    pub at: std::time::Instant,
}

type Handler = Arc<dyn Fn(Value) -> BoxFuture<'static, Response> + Send + Sync>;

/// A function endpoint on 127.0.0.1 with an ephemeral port.
#[derive(Debug)]
pub struct FunctionServer {
    /// Where it listens.
    pub addr: SocketAddr,
    received: mpsc::UnboundedReceiver<Received>,
}

impl FunctionServer {
    /// Starts a function that answers every event with `respond(event)`.
    pub async fn start<F, Fut, R>(respond: F) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = R> + Send + 'static,
        R: IntoResponse,
    {
        let handler: Handler = Arc::new(move |event| {
            let fut = respond(event);
            Box::pin(async move { fut.await.into_response() })
        });
        let (tx, received) = mpsc::unbounded_channel();
        let app = Router::new().route(
            "/",
            post(move |headers: HeaderMap, body: Bytes| {
                let handler = handler.clone();
                let tx = tx.clone();
                async move {
                    let at = std::time::Instant::now();
                    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
                        return (StatusCode::BAD_REQUEST, "not json").into_response();
                    };
                    // The test may have stopped listening; the answer still goes out.
                    tx.send(Received {
                        event: event.clone(),
                        headers,
                        at,
                    })
                    .ok();
                    handler(event).await
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, received }
    }

    /// The endpoint to put in a function's `target`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The next event the function received (waits at most 10 s).
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.received.recv())
            .await
            .expect("the function received an event within 10 s")
            .expect("the function server is running")
    }
}
