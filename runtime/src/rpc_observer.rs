//! One span per RPC (service, method, request id), its gRPC code and latency logged when it
//! ends, the request id returned in `x-request-id`, and per-RPC metrics. Nothing from the
//! request body or credentials is recorded.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

/// The metadata key carrying the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";
/// Longest caller-supplied request id kept; longer or non-printable ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Wraps a gRPC server in [`RpcObserver`]s.
#[derive(Debug, Clone)]
pub struct RpcObserverLayer {
    known_services: Arc<[&'static str]>,
}

impl RpcObserverLayer {
    /// `known_services`: fully qualified names used as metric labels; others are "unknown",
    /// so arbitrary request paths can't grow the label set.
    pub fn new(known_services: &[&'static str]) -> Self {
        RpcObserverLayer {
            known_services: known_services.into(),
        }
    }
}

impl<S> Layer<S> for RpcObserverLayer {
    type Service = RpcObserver<S>;

    fn layer(&self, inner: S) -> RpcObserver<S> {
        RpcObserver {
            inner,
            known_services: self.known_services.clone(),
        }
    }
}

/// See [`RpcObserverLayer`].
#[derive(Debug, Clone)]
pub struct RpcObserver<S> {
    inner: S,
    known_services: Arc<[&'static str]>,
}

fn request_id(req: &Request<impl Sized>) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= MAX_REQUEST_ID_LEN
                && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| {
            getrandom::u64()
                .map(|n| format!("{n:016x}"))
                .unwrap_or_else(|_| String::from("0000000000000000"))
        })
}

/// The gRPC code of a response whose status travels in its headers (errors, mostly);
/// a response whose status comes in trailers started fine: OK.
fn grpc_code(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

/// An error the gRPC framework answered on its own (unknown method, oversized or undecodable
/// message), which carries no details: the same code family with an `ErrorInfo`, so every
/// error a client sees has a reason.
fn with_reason_if_missing(code: tonic::Code, headers: &http::HeaderMap) -> Option<tonic::Status> {
    if code == tonic::Code::Ok || headers.contains_key("grpc-status-details-bin") {
        return None;
    }
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    miniprogram_proto::ErrorReason::for_framework_error(code, message)
        .map(|(reason, message)| reason.status(message))
}

impl<S, B> Service<Request<B>> for RpcObserver<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let id = request_id(&req);
        let header = HeaderValue::from_str(&id).ok();
        if let Some(h) = &header {
            req.headers_mut().insert(REQUEST_ID, h.clone());
        }
        let path = req.uri().path().trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        let service = self.known_services.iter().find(|s| **s == service).copied();
        let method = method.to_owned();
        let span = tracing::info_span!(
            "rpc",
            service = service.unwrap_or("unknown"),
            method = %method,
            request_id = %id,
        );
        let mut inner = crate::take_ready(&mut self.inner);
        Box::pin(
            async move {
                let mut result = inner.call(req).await;
                let latency = started.elapsed();
                let code = match &mut result {
                    Ok(response) => {
                        let mut code = grpc_code(response.headers());
                        if let Some(status) = with_reason_if_missing(code, response.headers()) {
                            code = status.code();
                            *response = status.into_http();
                        }
                        if let Some(h) = header {
                            response.headers_mut().insert(REQUEST_ID, h);
                        }
                        code
                    }
                    Err(_) => tonic::Code::Internal,
                };
                let latency_ms = latency.as_secs_f64() * 1000.0;
                tracing::info!(code = ?code, latency_ms, "rpc finished");
                let known = service.filter(|_| code != tonic::Code::Unimplemented);
                let (service_label, method_label) = match known {
                    Some(s) => (s, method),
                    None => ("unknown", String::from("unknown")),
                };
                metrics::counter!(
                    "grpc_server_handled_total",
                    "service" => service_label,
                    "method" => method_label.clone(),
                    "code" => format!("{code:?}")
                )
                .increment(1);
                metrics::histogram!(
                    "grpc_server_handling_seconds",
                    "service" => service_label,
                    "method" => method_label
                )
                .record(latency.as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
}
