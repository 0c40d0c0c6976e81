//! The auth-service binary: flags and environment in, a server out, until SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use auth_service::config::AuthArgs;
use clap::Parser;
use service_runtime::LogFormat;

/// auth-service: mini program registry, consent flow and token issuance over gRPC.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    args: AuthArgs,
    /// Dev mode: generate missing credentials and a master key under data/ (never in production).
    #[arg(long, env = "DEV_MODE")]
    dev: bool,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve Prometheus metrics at http://METRICS_ADDR/metrics (off when unset).
    #[arg(long, env = "METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    service_runtime::init_tracing(cli.log_format);
    if let Some(addr) = cli.metrics_addr
        && let Err(e) = service_runtime::spawn_metrics_endpoint(addr).await
    {
        eprintln!("auth-service: metrics endpoint: {e}");
        return ExitCode::FAILURE;
    }
    let config = match cli.args.into_config(cli.dev) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "refusing to start");
            eprintln!("auth-service: {e}");
            return ExitCode::from(2);
        }
    };
    match auth_service::serve(config, service_runtime::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "auth-service failed");
            ExitCode::FAILURE
        }
    }
}
