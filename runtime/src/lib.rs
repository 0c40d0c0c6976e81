//! The process around each service binary and the all-in-one runner: logging set-up, the
//! per-RPC observer (span, request id, metrics), server limits and load shedding, the metrics
//! endpoint, and the shutdown signal every binary drains on.
#![forbid(unsafe_code)]

mod connections;
mod limits;
mod methods;
mod metrics_endpoint;
mod peers;
pub mod private_files;
mod rpc_observer;
#[cfg(feature = "testing")]
pub mod testing;

pub use connections::{AdmittedConnection, LimitedIncoming};
pub use limits::{LimitArgs, RequestLimit, RequestLimitLayer, ServerLimits};
pub use methods::{CallKind, Method, ServedMethods};
pub use metrics_endpoint::{install_metrics_recorder, serve_metrics, spawn_metrics_endpoint};
pub use rpc_observer::{REQUEST_ID, RpcObserver, RpcObserverLayer};

/// Takes the service that `poll_ready` readied, leaving a fresh clone in its place (the tower
/// idiom for moving a ready service into a boxed future).
fn take_ready<S: Clone>(slot: &mut S) -> S {
    let clone = slot.clone();
    std::mem::replace(slot, clone)
}

/// The layer stack every server runs: the RPC observer outside, the request limits (in-flight
/// shedding, deadline) inside.
pub type ServerLayers = tower::layer::util::Stack<
    RequestLimitLayer,
    tower::layer::util::Stack<RpcObserverLayer, tower::layer::util::Identity>,
>;

/// Initial HTTP/2 flow-control window of each request stream: room for a request of the
/// default MAX_MESSAGE_BYTES, and the most a stream whose reader is busy leaves buffered.
const STREAM_WINDOW_BYTES: u32 = 64 * 1024;
/// Initial window of a whole connection: our requests are small, so this bounds what one
/// connection can have in flight towards the server without slowing real callers.
const CONNECTION_WINDOW_BYTES: u32 = 256 * 1024;
/// Largest header block accepted: callers send well under 1 KiB of metadata.
const MAX_HEADER_LIST_BYTES: u32 = 8 * 1024;

/// A tonic server builder with the shared limits and layers for a server mounting `services`
/// (fully qualified names, from the generated servers' `SERVICE_NAME`s) besides health and
/// reflection: per-connection stream limit (advertised to clients as HTTP/2
/// MAX_CONCURRENT_STREAMS, which h2 enforces, so excess calls wait on the client, not in a
/// server queue), small flow-control windows and header blocks, keepalive PINGs that close a
/// connection whose peer has vanished (with its streams, and the slots they hold), the request
/// limits ([`RequestLimitLayer`]) and the RPC observer.
pub fn server_builder(
    limits: &ServerLimits,
    services: &[&str],
) -> tonic::transport::Server<ServerLayers> {
    let per_connection = u32::try_from(limits.max_concurrent_per_connection).unwrap_or(u32::MAX);
    let methods = ServedMethods::new(services);
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(per_connection))
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .layer(RpcObserverLayer::new(methods.clone()))
        .layer(RequestLimitLayer::new(limits, methods))
}

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), `format` formats;
/// colours only when stderr is a terminal, so a log file holds plain text.
/// Calling it twice is harmless (the second call is ignored).
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT): the signal every binary drains on. The handlers
/// are installed when this is called, not when the future is first polled, so a signal that
/// arrives while the binary is still starting up drains it instead of killing it. Call it
/// first thing, inside the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match handlers {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                _ => {
                    if tokio::signal::ctrl_c().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Runs a server future; once `draining` is cancelled, gives in-flight calls `deadline` to
/// finish and then stops waiting for them.
pub async fn with_drain_deadline<E>(
    serve: impl std::future::Future<Output = Result<(), E>>,
    draining: tokio_util::sync::CancellationToken,
    deadline: std::time::Duration,
) -> Result<(), E> {
    tokio::pin!(serve);
    tokio::select! {
        result = &mut serve => result,
        () = async {
            draining.cancelled().await;
            tokio::time::sleep(deadline).await;
        } => {
            tracing::warn!(?deadline, "drain deadline passed; closing the remaining calls");
            Ok(())
        }
    }
}

/// TLS for a server: a PEM certificate chain and its private key, read at start-up.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls(<key redacted>)")
    }
}

/// Flags for serving over TLS (rustls); both or neither.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain to serve TLS with (with TLS_KEY_FILE).
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key for TLS_CERT_FILE.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// Reads the files; the error names the variable whose file could not be read.
    pub fn load(&self) -> Result<Option<ServerTls>, (&'static str, std::io::Error)> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some(ServerTls {
                cert_pem: std::fs::read(cert).map_err(|e| ("TLS_CERT_FILE", e))?,
                key_pem: std::fs::read(key).map_err(|e| ("TLS_KEY_FILE", e))?,
            })),
            _ => Ok(None),
        }
    }
}

/// [`server_builder`] plus TLS when configured; a handshake gets READ_TIMEOUT.
pub fn server_builder_with_tls(
    limits: &ServerLimits,
    services: &[&str],
    tls: Option<&ServerTls>,
) -> Result<tonic::transport::Server<ServerLayers>, tonic::transport::Error> {
    let builder = server_builder(limits, services);
    match tls {
        None => Ok(builder),
        Some(tls) => builder.tls_config(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(
                    &tls.cert_pem,
                    &tls.key_pem,
                ))
                .timeout(limits.read_timeout),
        ),
    }
}

/// How long a call of a [`client_channel`] may wait for its answer (the response headers).
pub const CLIENT_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A lazily connecting client channel to `addr`: plaintext, or TLS trusting `ca_pem` for the
/// name `localhost` (what the test certificates and local setups use). Each call gives up after
/// [`CLIENT_CALL_TIMEOUT`], so a server that hangs fails a test or a bench run instead of
/// holding it.
///
/// # Panics
/// Never for a socket address; the URI is always well formed.
pub fn client_channel(
    addr: std::net::SocketAddr,
    ca_pem: Option<&[u8]>,
) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    let plain = || {
        Channel::from_shared(format!("http://{addr}"))
            .map(|e| e.timeout(CLIENT_CALL_TIMEOUT).connect_lazy())
    };
    let tls = |ca: &[u8]| {
        Channel::from_shared(format!("https://{addr}"))
            .ok()?
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name("localhost"),
            )
            .ok()
            .map(|e| e.timeout(CLIENT_CALL_TIMEOUT).connect_lazy())
    };
    match ca_pem {
        None => plain().unwrap_or_else(|_| unreachable!("a socket address is a valid authority")),
        Some(ca) => {
            tls(ca).unwrap_or_else(|| unreachable!("a socket address is a valid authority"))
        }
    }
}

/// Sets the health of every name in `services` and of the whole server (`""`).
pub async fn set_health(
    health: &tonic_health::server::HealthReporter,
    services: &[&'static str],
    status: tonic_health::ServingStatus,
) {
    for name in services.iter().copied().chain([""]) {
        health.set_service_status(name, status).await;
    }
}

/// Serves `router` on `listener`, within the connection limits, until `shutdown` resolves,
/// then drains: health goes NOT_SERVING (health watchers receive it, and then their streams
/// end so they do not hold the connection open), `draining` is cancelled (so our server
/// streams end), and in-flight calls get `deadline` to finish.
#[allow(clippy::too_many_arguments)]
pub async fn serve_until_drained(
    router: tonic::transport::server::Router<ServerLayers>,
    listener: tokio::net::TcpListener,
    limits: &ServerLimits,
    shutdown: impl std::future::Future<Output = ()>,
    health: tonic_health::server::HealthReporter,
    services: &'static [&'static str],
    draining: tokio_util::sync::CancellationToken,
    deadline: std::time::Duration,
) -> Result<(), tonic::transport::Error> {
    let signal = {
        let draining = draining.clone();
        let mut health = health;
        async move {
            shutdown.await;
            set_health(&health, services, tonic_health::ServingStatus::NotServing).await;
            // Dropping each status ends its Watch streams once they have sent NOT_SERVING; set
            // again, Check keeps answering NOT_SERVING (not NOT_FOUND) while the drain lasts.
            for name in services.iter().copied().chain([""]) {
                health.clear_service_status(name).await;
            }
            set_health(&health, services, tonic_health::ServingStatus::NotServing).await;
            tracing::info!("draining");
            draining.cancel();
        }
    };
    let serve = router.serve_with_incoming_shutdown(LimitedIncoming::new(listener, limits), signal);
    with_drain_deadline(serve, draining, deadline).await
}

/// Flags every binary takes: log format and the metrics endpoint.
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessArgs {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve Prometheus metrics at http://METRICS_ADDR/metrics (off when unset).
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl ProcessArgs {
    /// Installs logging and, when asked for, the metrics endpoint.
    pub async fn init(&self) -> std::io::Result<()> {
        init_tracing(self.log_format);
        if let Some(addr) = self.metrics_addr {
            spawn_metrics_endpoint(addr).await?;
        }
        Ok(())
    }
}

/// Whether the server behind `channel` reports `service` (`""`: the whole server) SERVING.
pub async fn is_serving(
    channel: tonic::transport::Channel,
    service: &str,
) -> Result<bool, tonic::Status> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status == ServingStatus::Serving as i32)
}

/// Polls [`is_serving`] every 10 ms until it says yes or `within` has passed.
pub async fn wait_until_serving(
    channel: tonic::transport::Channel,
    within: std::time::Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if let Ok(true) = is_serving(channel.clone(), "").await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}
