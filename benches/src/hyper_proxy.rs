//! R5 (BENCHMARKING.md, S5): the least a Rust reverse proxy does on Impulse's stack. A hyper
//! HTTP/1 server on a multi-thread Tokio runtime (the worker count Impulse gets) passes each
//! request's body to the target through Impulse's own `http` target and answers `200` with the
//! target's body. No routing, event encoding, response mapping, limiter or metrics: what
//! Impulse spends beyond R5 is its own; what R5 spends beyond nginx is the stack's.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use impulse_invoker::Invoke as _;

/// Serves on `listen`, proxying to `target`, until the process is killed.
///
/// # Errors
///
/// The runtime or the listener cannot be made.
pub fn serve(listen: SocketAddr, target: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let function = Arc::new(Forward {
            target: impulse_invoker::http::HttpFunction::new(
                impulse_invoker::http::HttpFunction::default_client(),
                &format!("http://{target}/"),
            )?,
            name: impulse_invoker::Name::new("r5"),
        });
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let function = Arc::clone(&function);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let function = Arc::clone(&function);
                    async move { function.forward(request).await }
                });
                // A connection's end (the load generator closing it) is no error of R5's.
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                    .ok();
            });
        }
    })
}

struct Forward {
    target: impulse_invoker::http::HttpFunction,
    name: impulse_invoker::Name,
}

impl Forward {
    async fn forward(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let payload = request.into_body().collect().await?.to_bytes();
        let invocation = impulse_invoker::Invocation {
            request_id: uuid::Uuid::new_v4().to_string(),
            function: self.name,
            trigger: self.name,
            payload,
            deadline: None,
            client_context: None,
            log_tail: None,
        };
        let (status, body) = match self.target.invoke(invocation).await {
            Ok(answer) => (StatusCode::OK, answer.payload),
            Err(e) => (StatusCode::BAD_GATEWAY, Bytes::from(e.to_string())),
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }
}
