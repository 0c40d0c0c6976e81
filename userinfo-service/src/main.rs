//! The userinfo-service binary: flags and environment in, a server out, until SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use userinfo_service::config::UserInfoArgs;

/// userinfo-service: public profile fields for mini programs, checked against auth-service tokens.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    args: UserInfoArgs,
    #[command(flatten)]
    process: service_runtime::ProcessArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.process.init().await {
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
