//! Server limits shared by both services, and the layer that admits each call: what a call
//! holds while its request arrives (request bytes, under a read timeout), the in-flight permit
//! it takes once its request is whole, the deadline it then has to answer, the pool and
//! lifetime of the health and reflection streams, and a pool per stream of the contract. Every
//! pool has a server-wide limit and a per-peer share. Anything beyond a limit is shed at once
//! with RESOURCE_EXHAUSTED rather than queued.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Frame;
use miniprogram_proto::ErrorReason;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::methods::{CallKind, Method, ServedMethods};
use crate::peers::{Peer, PeerPool, PoolGuard, Refusal};

// Defaults, and why, in README.md's "Limits" paragraph.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
const DEFAULT_MAX_CONCURRENT_PER_CONNECTION: usize = 256;
const DEFAULT_MAX_IN_FLIGHT: usize = 4096;
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
const DEFAULT_MAX_BUFFERED_REQUEST_BYTES: usize = 128 * 1024 * 1024;
const DEFAULT_MAX_CONTROL_STREAMS: usize = 256;
const DEFAULT_CONTROL_STREAM_LIFETIME: Duration = Duration::from_secs(300);
const DEFAULT_MAX_BUSINESS_STREAMS: usize = 1024;
const DEFAULT_PEER_SHARE_PERCENT: u8 = 25;
const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest keepalive interval and timeout a flag may set: pings any more often would
/// only load the callers.
const MIN_KEEPALIVE: Duration = Duration::from_secs(1);

/// What a call is charged against MAX_BUFFERED_REQUEST_BYTES besides its headers and body:
/// the stream's and the call's own state in h2, hyper, tonic and this layer. Measured with
/// userinfo-service's `half_sent_calls_do_not_starve_health_or_user_info`: about 5 KiB of RSS
/// per held call, the test's own h2 client included.
const CALL_OVERHEAD_BYTES: usize = 4096;
/// The gRPC length prefix in front of a message.
const GRPC_FRAME_HEADER_BYTES: usize = 5;

/// Flags for the limits, each with an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Largest request message accepted, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Concurrent requests per client connection.
    #[arg(long, env = "MAX_CONCURRENT_PER_CONNECTION", default_value_t = DEFAULT_MAX_CONCURRENT_PER_CONNECTION)]
    pub max_concurrent_per_connection: usize,
    /// Requests in flight across all connections; beyond it, RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Longest a unary request may run once admitted (streams are not cut).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Longest a request body (and a TLS handshake) may take to arrive.
    #[arg(long, env = "READ_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub read_timeout: Duration,
    /// Open client connections; beyond it, new ones are closed at once.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Bytes of request headers, bodies and per-call state held across all calls.
    #[arg(long, env = "MAX_BUFFERED_REQUEST_BYTES", default_value_t = DEFAULT_MAX_BUFFERED_REQUEST_BYTES)]
    pub max_buffered_request_bytes: usize,
    /// Health Watch and reflection streams open at once.
    #[arg(long, env = "MAX_CONTROL_STREAMS", default_value_t = DEFAULT_MAX_CONTROL_STREAMS)]
    pub max_control_streams: usize,
    /// Longest a health Watch or reflection stream stays open.
    #[arg(long, env = "CONTROL_STREAM_LIFETIME", default_value = "5m", value_parser = humantime::parse_duration)]
    pub control_stream_lifetime: Duration,
    /// Streams of each of WatchRevocations and WatchAuthorizationChanges open at once.
    #[arg(long, env = "MAX_BUSINESS_STREAMS", default_value_t = DEFAULT_MAX_BUSINESS_STREAMS)]
    pub max_business_streams: usize,
    /// Share (1-100) of each limit one peer address (IPv6: one /64) may hold.
    #[arg(long, env = "PEER_SHARE_PERCENT", default_value_t = DEFAULT_PEER_SHARE_PERCENT,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub peer_share_percent: u8,
    /// Silence on a connection after which the server sends an HTTP/2 PING (at least 1s).
    #[arg(long, env = "KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub keepalive_interval: Duration,
    /// How long the server waits for the PING's answer before it closes the connection and
    /// ends its calls and streams (at least 1s).
    #[arg(long, env = "KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub keepalive_timeout: Duration,
}

/// Checked limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_message_bytes: usize,
    pub max_concurrent_per_connection: usize,
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub read_timeout: Duration,
    pub max_connections: usize,
    pub max_buffered_request_bytes: usize,
    pub max_control_streams: usize,
    pub control_stream_lifetime: Duration,
    pub max_business_streams: usize,
    pub peer_share_percent: u8,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_concurrent_per_connection: DEFAULT_MAX_CONCURRENT_PER_CONNECTION,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_buffered_request_bytes: DEFAULT_MAX_BUFFERED_REQUEST_BYTES,
            max_control_streams: DEFAULT_MAX_CONTROL_STREAMS,
            control_stream_lifetime: DEFAULT_CONTROL_STREAM_LIFETIME,
            max_business_streams: DEFAULT_MAX_BUSINESS_STREAMS,
            peer_share_percent: DEFAULT_PEER_SHARE_PERCENT,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
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
            read_timeout: a.read_timeout,
            max_connections: a.max_connections.max(1),
            // Room for at least one call of the largest message.
            max_buffered_request_bytes: a.max_buffered_request_bytes.max(
                a.max_message_bytes.max(1024) + GRPC_FRAME_HEADER_BYTES + 2 * CALL_OVERHEAD_BYTES,
            ),
            max_control_streams: a.max_control_streams.max(1),
            control_stream_lifetime: a.control_stream_lifetime,
            max_business_streams: a.max_business_streams.max(1),
            peer_share_percent: a.peer_share_percent.clamp(1, 100),
            keepalive_interval: a.keepalive_interval.max(MIN_KEEPALIVE),
            keepalive_timeout: a.keepalive_timeout.max(MIN_KEEPALIVE),
        }
    }
}

/// Which pool refused a call or a connection (a metric label value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pool {
    Connections,
    InFlight,
    RequestBytes,
    ControlStreams,
    BusinessStreams,
}

impl Pool {
    fn label(self) -> &'static str {
        match self {
            Pool::Connections => "connections",
            Pool::InFlight => "in_flight",
            Pool::RequestBytes => "request_bytes",
            Pool::ControlStreams => "control_streams",
            Pool::BusinessStreams => "business_streams",
        }
    }

    fn message(self, refusal: Refusal) -> &'static str {
        match (self, refusal) {
            (Pool::InFlight, Refusal::Server) => {
                "the server is at its in-flight limit (MAX_IN_FLIGHT); retry later"
            }
            (Pool::InFlight, Refusal::Peer) => {
                "this address holds its share of the in-flight limit (PEER_SHARE_PERCENT of MAX_IN_FLIGHT); retry later"
            }
            (Pool::RequestBytes, Refusal::Server) => {
                "the server holds as many request bytes as it may (MAX_BUFFERED_REQUEST_BYTES); retry later"
            }
            (Pool::RequestBytes, Refusal::Peer) => {
                "this address holds its share of the buffered request bytes (PEER_SHARE_PERCENT of MAX_BUFFERED_REQUEST_BYTES); retry later"
            }
            (Pool::ControlStreams, Refusal::Server) => {
                "the server has as many health Watch and reflection streams open as it allows (MAX_CONTROL_STREAMS); retry later"
            }
            (Pool::ControlStreams, Refusal::Peer) => {
                "this address holds its share of health Watch and reflection streams (PEER_SHARE_PERCENT of MAX_CONTROL_STREAMS); retry later"
            }
            (Pool::BusinessStreams, Refusal::Server) => {
                "the server has as many streams of this method open as it allows (MAX_BUSINESS_STREAMS); retry later"
            }
            (Pool::BusinessStreams, Refusal::Peer) => {
                "this address holds its share of this method's streams (PEER_SHARE_PERCENT of MAX_BUSINESS_STREAMS); retry later"
            }
            (Pool::Connections, _) => {
                "the server has as many connections as it allows (MAX_CONNECTIONS)"
            }
        }
    }

    /// Counts a refusal in `grpc_server_shed_total{pool, scope}`.
    pub(crate) fn count(self, refusal: Refusal) {
        metrics::counter!(
            "grpc_server_shed_total",
            "pool" => self.label(),
            "scope" => refusal.scope()
        )
        .increment(1);
    }

    fn shed(self, refusal: Refusal) -> Response<Body> {
        self.count(refusal);
        ErrorReason::RequestTrafficExceedLimit
            .status(self.message(refusal))
            .into_http()
    }
}

/// The pools and timeouts every call of one server is admitted under. It sits inside the RPC
/// observer, so shed and timed-out calls are logged, counted and answered with their request
/// id like any other.
///
/// A call of a method the server does not serve passes straight through (the router or an
/// interceptor answers it at once, without reading its body). Any other call:
/// 1. is charged its headers plus a fixed overhead against MAX_BUFFERED_REQUEST_BYTES (global
///    and per peer), and then each body byte as it arrives;
/// 2. unless its request is a client stream, has READ_TIMEOUT to deliver its whole body, which
///    must fit MAX_MESSAGE_BYTES; only then
/// 3. takes an in-flight permit (business calls), nothing (health Check), a control-stream
///    slot (health Watch, reflection) or a business-stream slot (WatchRevocations,
///    WatchAuthorizationChanges), and has REQUEST_TIMEOUT to produce its response head.
///
/// A unary call gives everything back with its response head; a stream keeps its bytes and
/// slot until it ends, which a control stream does after CONTROL_STREAM_LIFETIME at the latest.
/// A business stream is not cut: its callers resume where they were, and the pool bounds it.
#[derive(Debug, Clone)]
pub struct RequestLimitLayer {
    admission: Arc<Admission>,
}

#[derive(Debug)]
struct Admission {
    methods: ServedMethods,
    in_flight: Arc<PeerPool>,
    request_bytes: Arc<PeerPool>,
    control_streams: Arc<PeerPool>,
    /// A pool per streaming method, so app backends' change streams never take the slots
    /// the verifiers' revocation streams need.
    business_streams: HashMap<&'static str, Arc<PeerPool>>,
    max_body_bytes: usize,
    read_timeout: Duration,
    request_timeout: Duration,
    control_stream_lifetime: Duration,
}

impl RequestLimitLayer {
    /// Limits for a server serving `methods`.
    pub fn new(limits: &ServerLimits, methods: ServedMethods) -> Self {
        let share = limits.peer_share_percent;
        let business_streams = methods
            .iter()
            .filter(|m| m.kind == CallKind::BusinessStream)
            .map(|m| (m.path(), PeerPool::new(limits.max_business_streams, share)))
            .collect();
        RequestLimitLayer {
            admission: Arc::new(Admission {
                methods,
                in_flight: PeerPool::new(limits.max_in_flight, share),
                request_bytes: PeerPool::new(limits.max_buffered_request_bytes, share),
                control_streams: PeerPool::new(limits.max_control_streams, share),
                business_streams,
                max_body_bytes: limits.max_message_bytes + GRPC_FRAME_HEADER_BYTES,
                read_timeout: limits.read_timeout,
                request_timeout: limits.request_timeout,
                control_stream_lifetime: limits.control_stream_lifetime,
            }),
        }
    }
}

impl<S> Layer<S> for RequestLimitLayer {
    type Service = RequestLimit<S>;

    fn layer(&self, inner: S) -> RequestLimit<S> {
        RequestLimit {
            inner,
            admission: self.admission.clone(),
        }
    }
}

/// See [`RequestLimitLayer`].
#[derive(Debug, Clone)]
pub struct RequestLimit<S> {
    inner: S,
    admission: Arc<Admission>,
}

impl<S> Service<Request<Body>> for RequestLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = crate::take_ready(&mut self.inner);
        match self.admission.methods.lookup(req.uri().path()) {
            None => {
                let mut inner = inner;
                Box::pin(inner.call(req))
            }
            Some(method) => Box::pin(self.admission.clone().run(method, req, inner)),
        }
    }
}

impl Admission {
    async fn run<S>(
        self: Arc<Self>,
        method: &'static Method,
        req: Request<Body>,
        mut inner: S,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Service<Request<Body>, Response = Response<Body>>,
    {
        let peer = Peer::of_request(&req);
        let mut held = match self.request_bytes.try_take(peer, charge_of(&req)) {
            Ok(held) => held,
            Err(refusal) => return Ok(Pool::RequestBytes.shed(refusal)),
        };
        let req = if method.client_streaming {
            req
        } else {
            let read = read_whole_body(req, &mut held, self.max_body_bytes);
            match tokio::time::timeout(self.read_timeout, read).await {
                Ok(Ok(req)) => req,
                Ok(Err(refused)) => return Ok(refused),
                Err(_) => {
                    return Ok(ErrorReason::RequestTimeout
                        .status("the request body did not arrive within the server's READ_TIMEOUT")
                        .into_http());
                }
            }
        };
        let slot = match method.kind {
            CallKind::Probe => None,
            CallKind::Business => match self.in_flight.try_take(peer, 1) {
                Ok(permit) => Some(permit),
                Err(refusal) => return Ok(Pool::InFlight.shed(refusal)),
            },
            CallKind::ControlStream => match self.control_streams.try_take(peer, 1) {
                Ok(slot) => Some(slot),
                Err(refusal) => return Ok(Pool::ControlStreams.shed(refusal)),
            },
            CallKind::BusinessStream => {
                let pool = self.business_streams.get(method.path());
                match pool.map_or(Err(Refusal::Server), |pool| pool.try_take(peer, 1)) {
                    Ok(slot) => Some(slot),
                    Err(refusal) => return Ok(Pool::BusinessStreams.shed(refusal)),
                }
            }
        };
        let response = match tokio::time::timeout(self.request_timeout, inner.call(req)).await {
            Ok(response) => response?,
            Err(_) => {
                return Ok(ErrorReason::RequestTimeout
                    .status("the call took longer than the server's REQUEST_TIMEOUT")
                    .into_http());
            }
        };
        let deadline = match method.kind {
            CallKind::ControlStream => {
                Some(Box::pin(tokio::time::sleep(self.control_stream_lifetime)))
            }
            CallKind::BusinessStream => None,
            CallKind::Probe | CallKind::Business => return Ok(response),
        };
        let (parts, body) = response.into_parts();
        let body = HeldStream {
            inner: body,
            deadline,
            ended: false,
            _held: (held, slot),
        };
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

/// What a call holds before its body: its headers as HPACK counts them (name, value, 32 bytes)
/// and the fixed per-call overhead.
fn charge_of<B>(req: &Request<B>) -> usize {
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum::<usize>()
        + req.uri().path().len()
        + CALL_OVERHEAD_BYTES
}

/// Reads a unary request's whole body, charging each byte to `held`; refuses a body past
/// `max` bytes as soon as it gets there. The answer, on refusal, is the response to send.
async fn read_whole_body(
    req: Request<Body>,
    held: &mut PoolGuard,
    max: usize,
) -> Result<Request<Body>, Response<Body>> {
    let (parts, mut body) = req.into_parts();
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) =
        std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
    {
        let Ok(frame) = frame else {
            return Err(tonic::Status::cancelled("the request body was cut off").into_http());
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len = len.saturating_add(data.len());
        if len > max {
            return Err(ErrorReason::MessageTooLarge
                .status(
                    "the request message is larger than this server accepts (MAX_MESSAGE_BYTES)",
                )
                .into_http());
        }
        if let Err(refusal) = held.grow(data.len()) {
            return Err(Pool::RequestBytes.shed(refusal));
        }
        match &mut joined {
            Some(joined) => joined.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut both = BytesMut::with_capacity(first.len() + data.len());
                both.extend_from_slice(&first);
                both.extend_from_slice(&data);
                joined = Some(both);
            }
        }
    }
    let whole = joined.map_or(first, BytesMut::freeze);
    Ok(Request::from_parts(
        parts,
        Body::new(http_body_util::Full::new(whole)),
    ))
}

/// The response body of a stream: holds the call's request bytes and slot until the stream
/// ends, and ends it (UNAVAILABLE, `SERVICE_UNAVAILABLE`: open a new one) at its deadline, a
/// control stream's CONTROL_STREAM_LIFETIME.
struct HeldStream {
    inner: Body,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    ended: bool,
    _held: (PoolGuard, Option<PoolGuard>),
}

impl http_body::Body for HeldStream {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.ended = true;
            this.inner = Body::empty();
            let mut trailers = http::HeaderMap::new();
            let status = ErrorReason::ServiceUnavailable
                .status("this stream reached the server's CONTROL_STREAM_LIFETIME; open a new one");
            return Poll::Ready(
                status
                    .add_header(&mut trailers)
                    .ok()
                    .map(|()| Ok(Frame::trailers(trailers))),
            );
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = &polled {
            this.ended = true;
        }
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && frame.is_trailers()
        {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tonic::transport::server::TcpConnectInfo;
    use tower::ServiceExt;

    use super::*;

    const GET_OPEN_USER_INFO: &str = "/miniprogram.userinfo.v1.UserInfoService/GetOpenUserInfo";
    const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
    const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";
    const WATCH_REVOCATIONS: &str = "/miniprogram.auth.v1.KeyService/WatchRevocations";
    const WATCH_CHANGES: &str =
        "/miniprogram.auth.v1.AuthorizationChangeService/WatchAuthorizationChanges";

    fn layer(adjust: impl FnOnce(&mut ServerLimits)) -> RequestLimitLayer {
        let mut limits = ServerLimits::default();
        adjust(&mut limits);
        RequestLimitLayer::new(
            &limits,
            ServedMethods::new(&[
                miniprogram_proto::userinfo::v1::user_info_service_server::SERVICE_NAME,
                miniprogram_proto::auth::v1::key_service_server::SERVICE_NAME,
                miniprogram_proto::auth::v1::authorization_change_service_server::SERVICE_NAME,
            ]),
        )
    }

    /// A service that answers OK after `delay`, with a body that never ends when `streams`.
    fn answering_after(
        delay: Duration,
        streams: bool,
    ) -> impl Service<
        Request<Body>,
        Response = Response<Body>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(move |_req: Request<Body>| async move {
            tokio::time::sleep(delay).await;
            let body = if streams {
                Body::new(http_body_util::StreamBody::new(futures_pending()))
            } else {
                Body::empty()
            };
            let mut response = Response::new(body);
            response
                .headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            Ok::<_, std::convert::Infallible>(response)
        })
    }

    fn futures_pending()
    -> impl tokio_stream::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>> + Send {
        tokio_stream::pending()
    }

    /// A request for `path` from `peer`, its body complete (`Some`) or never arriving.
    fn request(path: &str, peer: &str, body: Option<&'static [u8]>) -> Request<Body> {
        let body = match body {
            Some(bytes) => Body::new(http_body_util::Full::new(Bytes::from_static(bytes))),
            None => Body::new(http_body_util::StreamBody::new(futures_pending())),
        };
        let mut req = Request::builder().uri(path).body(body).unwrap();
        req.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(SocketAddr::new(peer.parse().unwrap(), 40000)),
        });
        req
    }

    fn outcome(response: &Response<Body>) -> (tonic::Code, Option<ErrorReason>) {
        match tonic::Status::from_header_map(response.headers()) {
            Some(status) => (status.code(), ErrorReason::of(&status)),
            None => (tonic::Code::Ok, None),
        }
    }

    async fn call<S>(service: &S, req: Request<Body>) -> Response<Body>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Clone,
        S::Error: std::fmt::Debug,
    {
        tokio::time::timeout(Duration::from_secs(5), service.clone().oneshot(req))
            .await
            .expect("the call answered within 5 s")
            .unwrap()
    }

    fn parsed(argv: &[&str]) -> ServerLimits {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            limits: LimitArgs,
        }
        let argv = std::iter::once("server").chain(argv.iter().copied());
        ServerLimits::from(
            <Flags as clap::Parser>::try_parse_from(argv)
                .unwrap()
                .limits,
        )
    }

    #[test]
    fn the_flags_defaults_are_the_limits_defaults() {
        assert_eq!(parsed(&[]), ServerLimits::default());
    }

    /// Guards `MIN_KEEPALIVE` in `From<LimitArgs>`: a zero or tiny keepalive would have the
    /// server ping every caller without pause.
    #[test]
    fn keepalive_flags_are_raised_to_a_second() {
        let limits = parsed(&["--keepalive-interval", "0s", "--keepalive-timeout", "10ms"]);
        assert_eq!(
            (limits.keepalive_interval, limits.keepalive_timeout),
            (MIN_KEEPALIVE, MIN_KEEPALIVE)
        );
    }

    #[tokio::test]
    async fn a_call_past_the_timeout_is_deadline_exceeded_with_a_reason() {
        let service = layer(|l| l.request_timeout = Duration::from_millis(20))
            .layer(answering_after(Duration::from_secs(5), false));
        let response = call(&service, request(GET_OPEN_USER_INFO, "10.0.0.1", Some(b""))).await;
        assert_eq!(
            outcome(&response),
            (
                tonic::Code::DeadlineExceeded,
                Some(ErrorReason::RequestTimeout)
            )
        );
    }

    #[tokio::test]
    async fn a_call_within_the_timeout_is_untouched() {
        let service = layer(|_| {}).layer(answering_after(Duration::from_millis(1), false));
        let response = call(
            &service,
            request(GET_OPEN_USER_INFO, "10.0.0.1", Some(b"x")),
        )
        .await;
        assert_eq!(outcome(&response), (tonic::Code::Ok, None));
    }

    /// Guards the order in `Admission::run`: the body is read (step 2) before the in-flight
    /// permit is taken (step 3), so a call whose body never comes holds no permit.
    #[tokio::test]
    async fn a_call_waiting_for_its_body_holds_no_in_flight_permit() {
        let service =
            layer(|l| l.max_in_flight = 1).layer(answering_after(Duration::from_millis(1), false));
        let waiting = tokio::spawn({
            let service = service.clone();
            async move {
                service
                    .oneshot(request(GET_OPEN_USER_INFO, "10.0.0.1", None))
                    .await
            }
        });
        tokio::task::yield_now().await;
        let response = call(
            &service,
            request(GET_OPEN_USER_INFO, "10.0.0.1", Some(b"x")),
        )
        .await;
        assert_eq!(outcome(&response), (tonic::Code::Ok, None));
        assert_eq!(service.admission.in_flight.in_use(), 0);
        assert!(!waiting.is_finished());
        waiting.abort();
    }

    /// Guards the READ_TIMEOUT around `read_whole_body`, and that the bytes a waiting call
    /// held are given back.
    #[tokio::test]
    async fn a_body_that_does_not_arrive_within_the_read_timeout_is_answered() {
        let service = layer(|l| l.read_timeout = Duration::from_millis(50))
            .layer(answering_after(Duration::from_millis(1), false));
        let response = call(&service, request(GET_OPEN_USER_INFO, "10.0.0.1", None)).await;
        assert_eq!(
            outcome(&response),
            (
                tonic::Code::DeadlineExceeded,
                Some(ErrorReason::RequestTimeout)
            )
        );
        assert_eq!(service.admission.request_bytes.in_use(), 0);
    }

    /// Guards the size check in `read_whole_body`.
    #[tokio::test]
    async fn a_body_past_max_message_bytes_is_refused() {
        static BIG: [u8; 2048] = [0; 2048];
        let service = layer(|l| l.max_message_bytes = 1024)
            .layer(answering_after(Duration::from_millis(1), false));
        let response = call(
            &service,
            request(GET_OPEN_USER_INFO, "10.0.0.1", Some(&BIG)),
        )
        .await;
        assert_eq!(
            outcome(&response),
            (
                tonic::Code::ResourceExhausted,
                Some(ErrorReason::MessageTooLarge)
            )
        );
    }

    /// Guards the per-peer share of the in-flight pool (`PeerPool::take`'s peer check).
    #[tokio::test]
    async fn one_address_cannot_take_more_than_its_share_of_in_flight_permits() {
        let service = layer(|l| {
            l.max_in_flight = 8;
            l.peer_share_percent = 25;
        })
        .layer(answering_after(Duration::from_secs(30), false));
        let mut slow = tokio::task::JoinSet::new();
        for _ in 0..2 {
            let service = service.clone();
            slow.spawn(service.oneshot(request(GET_OPEN_USER_INFO, "10.0.0.1", Some(b"x"))));
        }
        while service.admission.in_flight.in_use() < 2 {
            tokio::task::yield_now().await;
        }
        let refused = call(
            &service,
            request(GET_OPEN_USER_INFO, "10.0.0.1", Some(b"x")),
        )
        .await;
        assert_eq!(
            outcome(&refused),
            (
                tonic::Code::ResourceExhausted,
                Some(ErrorReason::RequestTrafficExceedLimit)
            )
        );
        let other = tokio::spawn(service.clone().oneshot(request(
            GET_OPEN_USER_INFO,
            "10.0.0.2",
            Some(b"x"),
        )));
        while service.admission.in_flight.in_use() < 3 {
            tokio::task::yield_now().await;
        }
        other.abort();
        slow.abort_all();
    }

    /// Guards `CallKind::Probe` taking no permit: a health Check is answered while business
    /// calls hold every in-flight permit.
    #[tokio::test]
    async fn health_check_needs_no_in_flight_permit() {
        let service = layer(|l| {
            l.max_in_flight = 1;
            l.peer_share_percent = 100;
        })
        .layer(answering_after(Duration::from_millis(50), false));
        let busy = tokio::spawn(service.clone().oneshot(request(
            GET_OPEN_USER_INFO,
            "10.0.0.1",
            Some(b"x"),
        )));
        while service.admission.in_flight.in_use() < 1 {
            tokio::task::yield_now().await;
        }
        let response = call(&service, request(HEALTH_CHECK, "10.0.0.1", Some(b""))).await;
        assert_eq!(outcome(&response), (tonic::Code::Ok, None));
        busy.abort();
    }

    /// Guards the control-stream pool and `HeldStream`'s lifetime: a second Watch is refused
    /// while the only slot is held; the first ends with UNAVAILABLE after its lifetime and
    /// gives its slot and bytes back.
    #[tokio::test]
    async fn control_streams_are_capped_and_end_after_their_lifetime() {
        let service = layer(|l| {
            l.max_control_streams = 1;
            l.control_stream_lifetime = Duration::from_millis(100);
        })
        .layer(answering_after(Duration::ZERO, true));
        let watch = call(&service, request(HEALTH_WATCH, "10.0.0.1", Some(b""))).await;
        assert_eq!(outcome(&watch), (tonic::Code::Ok, None));
        let refused = call(&service, request(HEALTH_WATCH, "10.0.0.2", Some(b""))).await;
        assert_eq!(
            outcome(&refused),
            (
                tonic::Code::ResourceExhausted,
                Some(ErrorReason::RequestTrafficExceedLimit)
            )
        );
        let mut body = watch.into_body();
        let frame = tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)),
        )
        .await
        .expect("the stream ended within 5 s")
        .expect("a frame")
        .expect("trailers, not an error");
        let trailers = frame.into_trailers().expect("trailers");
        let status = tonic::Status::from_header_map(&trailers).unwrap();
        assert_eq!(
            (status.code(), ErrorReason::of(&status)),
            (
                tonic::Code::Unavailable,
                Some(ErrorReason::ServiceUnavailable)
            )
        );
        drop(body);
        assert_eq!(service.admission.control_streams.in_use(), 0);
        assert_eq!(service.admission.request_bytes.in_use(), 0);
    }

    /// Guards the business-stream pools (`CallKind::BusinessStream` in `Admission::run`, one
    /// pool per method) and `HeldStream` without a deadline: a second WatchRevocations is
    /// refused while the only slot is held, a change stream still has its own, the first is
    /// not cut at the control streams' lifetime, and once it is dropped its slot and bytes are
    /// given back.
    #[tokio::test]
    async fn business_streams_are_capped_and_hold_their_slot_until_they_end() {
        let service = layer(|l| {
            l.max_business_streams = 1;
            l.control_stream_lifetime = Duration::from_millis(10);
        })
        .layer(answering_after(Duration::ZERO, true));
        let watch = call(&service, request(WATCH_REVOCATIONS, "10.0.0.1", Some(b""))).await;
        assert_eq!(outcome(&watch), (tonic::Code::Ok, None));
        let refused = call(&service, request(WATCH_REVOCATIONS, "10.0.0.2", Some(b""))).await;
        assert_eq!(
            outcome(&refused),
            (
                tonic::Code::ResourceExhausted,
                Some(ErrorReason::RequestTrafficExceedLimit)
            )
        );
        let changes = call(&service, request(WATCH_CHANGES, "10.0.0.2", Some(b""))).await;
        assert_eq!(outcome(&changes), (tonic::Code::Ok, None));
        drop(changes);
        let in_use = |service: &RequestLimit<_>| -> usize {
            let pools = service.admission.business_streams.values();
            pools.map(|pool| pool.in_use()).sum()
        };
        let mut body = watch.into_body();
        let next = tokio::time::timeout(
            Duration::from_millis(200),
            std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)),
        );
        assert!(next.await.is_err(), "the stream ran on past 200 ms");
        assert_eq!(in_use(&service), 1);
        drop(body);
        assert_eq!(in_use(&service), 0);
        assert_eq!(service.admission.request_bytes.in_use(), 0);
        let again = call(&service, request(WATCH_REVOCATIONS, "10.0.0.2", Some(b""))).await;
        assert_eq!(outcome(&again), (tonic::Code::Ok, None));
    }

    /// Guards the request-bytes charge taken at HEADERS (`charge_of`): waiting calls count
    /// against their address's share, so one address cannot pile up held calls for ever.
    #[tokio::test]
    async fn waiting_calls_are_charged_and_limited_per_address() {
        let service = layer(|l| {
            l.max_buffered_request_bytes = 8 * CALL_OVERHEAD_BYTES;
            l.peer_share_percent = 50;
        })
        .layer(answering_after(Duration::from_millis(1), false));
        let mut waiting = Vec::new();
        let mut refused = None;
        for _ in 0..8 {
            let service = service.clone();
            let mut task =
                tokio::spawn(service.oneshot(request(GET_OPEN_USER_INFO, "10.0.0.1", None)));
            tokio::select! {
                answered = &mut task => { refused = Some(answered.unwrap().unwrap()); break; }
                () = tokio::time::sleep(Duration::from_millis(20)) => waiting.push(task),
            }
        }
        let refused = refused.expect("the address's share ran out");
        assert_eq!(
            outcome(&refused),
            (
                tonic::Code::ResourceExhausted,
                Some(ErrorReason::RequestTrafficExceedLimit)
            )
        );
        let other = call(
            &service,
            request(GET_OPEN_USER_INFO, "10.0.0.2", Some(b"x")),
        )
        .await;
        assert_eq!(outcome(&other), (tonic::Code::Ok, None));
        assert_eq!(
            waiting.len(),
            3,
            "each waiting call holds about CALL_OVERHEAD_BYTES"
        );
        waiting.iter().for_each(tokio::task::JoinHandle::abort);
    }

    #[tokio::test]
    async fn an_unknown_method_passes_through_without_a_charge() {
        let service = layer(|l| l.max_buffered_request_bytes = 1)
            .layer(answering_after(Duration::from_millis(1), false));
        let response = call(
            &service,
            request(
                "/miniprogram.userinfo.v1.UserInfoService/Nope",
                "10.0.0.1",
                None,
            ),
        )
        .await;
        assert_eq!(outcome(&response), (tonic::Code::Ok, None));
    }
}
