//! The auth-service binary: flags and environment in, a server out, until SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use auth_service::config::AuthArgs;
use clap::Parser;

/// auth-service: mini program registry, consent flow and token issuance over gRPC.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    args: AuthArgs,
    /// Dev mode: generate missing credentials and a master key under data/ (never in production).
    #[arg(long, env = "DEV_MODE")]
    dev: bool,
    #[command(flatten)]
    process: service_runtime::ProcessArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.process.init().await {
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
