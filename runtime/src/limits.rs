//! Server limits shared by both services: message size, per-connection concurrency, request
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

/// Sheds requests beyond a global in-flight count.
#[derive(Debug, Clone)]
pub struct InFlightLimitLayer {
    permits: Arc<Semaphore>,
}

impl InFlightLimitLayer {
    pub fn new(max_in_flight: usize) -> Self {
        InFlightLimitLayer {
            permits: Arc::new(Semaphore::new(max_in_flight)),
        }
    }
}

impl<S> Layer<S> for InFlightLimitLayer {
    type Service = InFlightLimit<S>;

    fn layer(&self, inner: S) -> InFlightLimit<S> {
        InFlightLimit {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// See [`InFlightLimitLayer`].
#[derive(Debug, Clone)]
pub struct InFlightLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, B> Service<Request<B>> for InFlightLimit<S>
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
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(req).await;
            drop(permit);
            response
        })
    }
}
