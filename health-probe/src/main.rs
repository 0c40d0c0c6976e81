//! `health-probe ADDR [SERVICE]`: asks `grpc.health.v1.Health/Check` at `http://ADDR` and exits
//! 0 when the answer is SERVING, 1 otherwise (including no answer within three seconds).
//! Shipped in the container image for `HEALTHCHECK` / compose health checks.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

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
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest { service })
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(response.into_inner().status)
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(status)) if status == ServingStatus::Serving as i32 => ExitCode::SUCCESS,
        Ok(Ok(status)) => {
            eprintln!("not serving (status {status})");
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
