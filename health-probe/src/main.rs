//! `health-probe ADDR [SERVICE]`: asks `grpc.health.v1.Health/Check` at `http://ADDR` and exits
//! 0 when the answer is SERVING, 1 otherwise (including no answer within three seconds).
//! Shipped in the container image for `HEALTHCHECK` / compose health checks.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next() else {
        eprintln!("usage: health-probe ADDR [SERVICE]");
        return ExitCode::from(2);
    };
    let service = args.next().unwrap_or_default();
    let url = if addr.contains("://") {
        addr
    } else {
        format!("http://{addr}")
    };
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(url)?
            .connect()
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(service_runtime::is_serving(channel, &service).await?)
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => {
            eprintln!("not serving");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("health check failed: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("health check timed out");
            ExitCode::FAILURE
        }
    }
}
