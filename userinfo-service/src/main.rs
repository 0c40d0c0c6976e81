//! The userinfo-service binary: flags and environment in, a server out, until SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use service_runtime::LogFormat;
use userinfo_service::config::UserInfoArgs;

/// userinfo-service: public profile fields for mini programs, checked against auth-service tokens.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    args: UserInfoArgs,
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
        eprintln!("userinfo-service: metrics endpoint: {e}");
        return ExitCode::FAILURE;
    }
    let config = match cli.args.into_config() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "refusing to start");
            eprintln!("userinfo-service: {e}");
            return ExitCode::from(2);
        }
    };
    match userinfo_service::serve(config, service_runtime::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "userinfo-service failed");
            ExitCode::FAILURE
        }
    }
}
