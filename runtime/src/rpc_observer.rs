//! One span per RPC (service, method, request id), its gRPC code and latency logged when it
//! ends, the request id returned in `x-request-id`, and per-RPC metrics. Nothing from the
//! request body or credentials is recorded, and a method takes a label or log value only if
//! the server serves it: a caller cannot grow the metrics or the log lines by inventing names.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::methods::ServedMethods;

/// The target of the line each call ends with. A failed call's line is INFO; an answered
/// one's is DEBUG, since metrics count those and a line per call at this rate would cost the
/// service a fifth of its throughput and flood the log (BENCHMARKS.md, "Log lines").
/// `RUST_LOG=info,rpc=debug` logs every answered call; failed calls' lines are capped at any
/// level ([`FAILURE_LINES_PER_SECOND`]).
pub const RPC_LOG_TARGET: &str = "rpc";
/// The metadata key carrying the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";
/// Longest caller-supplied request id kept; longer or non-printable ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;
/// The label and log value of a method the server does not serve.
const UNKNOWN: &str = "unknown";
/// Longest part of an unserved request path logged (for finding a misconfigured client).
const MAX_LOGGED_PATH_LEN: usize = 64;

/// Failed calls' lines logged per (method, code) in each second. Past it the lines are left
/// out and counted, and the next line logged says how many: a flood of refused calls (anyone's,
/// unauthenticated or shed) cannot fill the log at the rate it is sent. Metrics count every
/// call either way.
const FAILURE_LINES_PER_SECOND: u32 = 20;

/// The windows of [`FAILURE_LINES_PER_SECOND`], per served method (or "unknown") and code: a
/// fixed set of keys, so the table's size is bounded whatever the callers send.
#[derive(Debug, Default)]
struct FailureLines(Mutex<HashMap<(&'static str, &'static str, i32), FailureWindow>>);

#[derive(Debug)]
struct FailureWindow {
    started: Instant,
    logged: u32,
    left_out: u64,
}

impl FailureLines {
    /// Whether the failed call `key` ending at `now` gets its line: with how many lines of the
    /// same key were left out before it.
    fn admit(&self, key: (&'static str, &'static str, i32), now: Instant) -> Option<u64> {
        let mut windows = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let window = windows.entry(key).or_insert(FailureWindow {
            started: now,
            logged: 0,
            left_out: 0,
        });
        if now.saturating_duration_since(window.started) >= Duration::from_secs(1) {
            window.started = now;
            window.logged = 0;
        }
        if window.logged >= FAILURE_LINES_PER_SECOND {
            window.left_out += 1;
            return None;
        }
        window.logged += 1;
        Some(std::mem::take(&mut window.left_out))
    }
}

/// Wraps a gRPC server in [`RpcObserver`]s.
#[derive(Debug, Clone)]
pub struct RpcObserverLayer {
    methods: ServedMethods,
    failure_lines: Arc<FailureLines>,
}

impl RpcObserverLayer {
    /// `methods`: the only (service, method) pairs used as metric labels and log values;
    /// every other path is "unknown".
    pub fn new(methods: ServedMethods) -> Self {
        RpcObserverLayer {
            methods,
            failure_lines: Arc::default(),
        }
    }
}

impl<S> Layer<S> for RpcObserverLayer {
    type Service = RpcObserver<S>;

    fn layer(&self, inner: S) -> RpcObserver<S> {
        RpcObserver {
            inner,
            methods: self.methods.clone(),
            failure_lines: self.failure_lines.clone(),
        }
    }
}

/// See [`RpcObserverLayer`].
#[derive(Debug, Clone)]
pub struct RpcObserver<S> {
    inner: S,
    methods: ServedMethods,
    failure_lines: Arc<FailureLines>,
}

/// The start of an unserved request path, printable ASCII only, for the log.
fn loggable_path(path: &str) -> String {
    path.chars()
        .take(MAX_LOGGED_PATH_LEN)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// The label value of a gRPC code (static, so recording allocates nothing).
fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
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
        .unwrap_or_else(fresh_request_id)
}

/// A request id for a call that brought none: a process-wide counter through a bijective mix
/// keyed once from the OS, so ids never repeat within a process (whatever the key: zero if the
/// OS had none to give), look random across replicas, and cost no system call (one per call
/// was 1.5% of a cached read; BENCHMARKS.md).
fn fresh_request_id() -> String {
    static KEY: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let key = *KEY.get_or_init(|| getrandom::u64().unwrap_or_default());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", mix(key.wrapping_add(n)))
}

/// SplitMix64's finaliser: a bijection on `u64`, so distinct inputs give distinct ids.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
        let method = self.methods.lookup(req.uri().path());
        let (service_label, method_label) = method.map_or((UNKNOWN, UNKNOWN), |m| {
            (m.service.as_str(), m.name.as_str())
        });
        let span = tracing::info_span!(
            "rpc",
            service = service_label,
            method = method_label,
            request_id = %id,
            path = tracing::field::Empty,
        );
        if method.is_none() {
            span.record("path", loggable_path(req.uri().path()).as_str());
        }
        let mut inner = crate::take_ready(&mut self.inner);
        let failure_lines = self.failure_lines.clone();
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
                if code == tonic::Code::Ok {
                    tracing::debug!(target: RPC_LOG_TARGET, code = ?code, latency_ms, "rpc finished");
                } else if tracing::enabled!(target: RPC_LOG_TARGET, tracing::Level::INFO) {
                    let key = (service_label, method_label, code as i32);
                    if let Some(left_out) = failure_lines.admit(key, Instant::now()) {
                        tracing::info!(target: RPC_LOG_TARGET, code = ?code, latency_ms, left_out, "rpc finished");
                    }
                }
                metrics::counter!(
                    "grpc_server_handled_total",
                    "service" => service_label,
                    "method" => method_label,
                    "code" => code_label(code)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the window in `FailureLines::admit`: within a second, one (method, code) gets
    /// `FAILURE_LINES_PER_SECOND` lines and the rest are counted; another code or method
    /// still gets its own; the first line of the next second says how many were left out.
    #[test]
    fn failed_calls_lines_are_bounded_per_method_and_code_each_second() {
        let lines = FailureLines::default();
        let start = Instant::now();
        let key = ("svc", "Method", tonic::Code::Unauthenticated as i32);
        for n in 0..FAILURE_LINES_PER_SECOND {
            assert_eq!(lines.admit(key, start), Some(0), "line {n}");
        }
        for _ in 0..5 {
            assert_eq!(lines.admit(key, start + Duration::from_millis(900)), None);
        }
        let other_code = ("svc", "Method", tonic::Code::NotFound as i32);
        assert_eq!(lines.admit(other_code, start), Some(0));
        assert_eq!(lines.admit(("svc", "Other", key.2), start), Some(0));
        let next_second = start + Duration::from_secs(1);
        assert_eq!(lines.admit(key, next_second), Some(5), "the lines left out");
        assert_eq!(lines.admit(key, next_second), Some(0));
    }

    #[test]
    fn a_logged_path_is_bounded_and_printable() {
        let path = format!("/svc/{}\n\u{7f}é", "x".repeat(500));
        let logged = loggable_path(&path);
        assert_eq!(logged.chars().count(), MAX_LOGGED_PATH_LEN);
        assert!(logged.bytes().all(|b| b.is_ascii_graphic()));
        assert_eq!(loggable_path("/a/b\nc"), "/a/b?c");
    }

    /// Guards `fresh_request_id`'s counter: without the increment every id is the same.
    #[test]
    fn fresh_request_ids_are_distinct_hex_of_sixteen_digits() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| fresh_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(
            ids.iter()
                .all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }

    #[test]
    fn every_code_has_its_own_label() {
        let labels: std::collections::HashSet<_> = (0..=16)
            .map(|i| code_label(tonic::Code::from_i32(i)))
            .collect();
        assert_eq!(labels.len(), 17);
        assert_eq!(code_label(tonic::Code::Unauthenticated), "Unauthenticated");
    }
}
