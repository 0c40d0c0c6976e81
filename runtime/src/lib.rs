//! The process around each service binary and the all-in-one runner: logging set-up and
//! the shutdown signal every binary drains on.
#![forbid(unsafe_code)]

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

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), `format` formats.
/// Calling it twice is harmless (the second call is ignored).
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Resolves on SIGTERM or Ctrl-C: the signal every binary drains on.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
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
