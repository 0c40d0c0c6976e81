//! Server limits shared by both services: message size, per-connection streams, request
//! timeout, and a global in-flight limit that sheds load with RESOURCE_EXHAUSTED instead of
//! queueing without bound.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use miniprogram_proto::ErrorReason;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

/// Flags for the limits, each with an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Largest request message accepted, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Concurrent requests per client connection.
    #[arg(long, env = "MAX_CONCURRENT_PER_CONNECTION", default_value_t = 256)]
    pub max_concurrent_per_connection: usize,
    /// Requests in flight across all connections; beyond it, RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Longest a unary request may run (streams are not cut).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
}

/// Checked limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_message_bytes: usize,
    pub max_concurrent_per_connection: usize,
    pub max_in_flight: usize,
    pub request_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrent_per_connection: 256,
            max_in_flight: 4096,
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl From<LimitArgs> for ServerLimits {
    fn from(a: LimitArgs) -> Self {
        ServerLimits {
            max_message_bytes: a.max_message_bytes.max(1024),
            max_concurrent_per_connection: a.max_concurrent_per_connection.max(1),
            max_in_flight: a.max_in_flight.max(1),
            request_timeout: a.request_timeout,
        }
    }
}

/// The limits every admitted call runs under: beyond a global in-flight count it is shed at
/// once (RESOURCE_EXHAUSTED, `REQUEST_TRAFFIC_EXCEED_LIMIT`) rather than queued, and once
/// admitted it has the request timeout to answer (DEADLINE_EXCEEDED, `REQUEST_TIMEOUT`). It
/// sits inside the RPC observer, so shed and timed-out calls are logged, counted and answered
/// with their request id like any other. Only the wait for the response head is bounded: a
/// server stream, once started, runs on.
#[derive(Debug, Clone)]
pub struct RequestLimitLayer {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl RequestLimitLayer {
    pub fn new(max_in_flight: usize, timeout: Duration) -> Self {
        RequestLimitLayer {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            timeout,
        }
    }
}

impl<S> Layer<S> for RequestLimitLayer {
    type Service = RequestLimit<S>;

    fn layer(&self, inner: S) -> RequestLimit<S> {
        RequestLimit {
            inner,
            permits: self.permits.clone(),
            timeout: self.timeout,
        }
    }
}

/// See [`RequestLimitLayer`].
#[derive(Debug, Clone)]
pub struct RequestLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl<S, B> Service<Request<B>> for RequestLimit<S>
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

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            metrics::counter!("grpc_server_shed_total").increment(1);
            let status = ErrorReason::RequestTrafficExceedLimit
                .status("the server is at its in-flight limit; retry later");
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let mut inner = crate::take_ready(&mut self.inner);
        let timeout = self.timeout;
        Box::pin(async move {
            let response = match tokio::time::timeout(timeout, inner.call(req)).await {
                Ok(response) => response,
                Err(_) => Ok(ErrorReason::RequestTimeout
                    .status("the call took longer than the server's REQUEST_TIMEOUT")
                    .into_http()),
            };
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow_service(
        delay: Duration,
    ) -> impl Service<
        Request<()>,
        Response = Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone {
        tower::service_fn(move |_req: Request<()>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::convert::Infallible>(tonic::Status::ok("").into_http())
        })
    }

    fn reason_of(response: &Response<tonic::body::Body>) -> (String, bool) {
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (
            code,
            response.headers().contains_key("grpc-status-details-bin"),
        )
    }

    #[tokio::test]
    async fn a_call_past_the_timeout_is_deadline_exceeded_with_a_reason() {
        use tower::ServiceExt;
        let service = RequestLimitLayer::new(1, Duration::from_millis(20))
            .layer(slow_service(Duration::from_secs(5)));
        let response = service.oneshot(Request::new(())).await.unwrap();
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(ErrorReason::of(&status), Some(ErrorReason::RequestTimeout));
    }

    #[tokio::test]
    async fn a_call_within_the_timeout_is_untouched() {
        use tower::ServiceExt;
        let service = RequestLimitLayer::new(1, Duration::from_secs(5))
            .layer(slow_service(Duration::from_millis(1)));
        let response = service.oneshot(Request::new(())).await.unwrap();
        assert_eq!(reason_of(&response), ("0".to_owned(), false));
    }
}
