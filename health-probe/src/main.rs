//! `health-probe [ADDR [SERVICE]]`: asks `grpc.health.v1.Health/Check` at ADDR and exits 0
//! when the answer is SERVING, 1 otherwise (including no answer within three seconds), 2 on bad
//! usage. Shipped in the container image for `HEALTHCHECK` / compose health checks.
//!
//! Without ADDR it asks the address in `PROBE_ADDR`: the image's `HEALTHCHECK` has no
//! arguments, and whoever starts the container says there which service it runs.
//!
//! With `PROBE_TLS_CA_FILE` set, it speaks TLS, trusting that PEM CA, and checks the server's
//! certificate for the name in `PROBE_TLS_DOMAIN` (default `localhost`), so a service running
//! with `TLS_CERT_FILE` can still be probed from inside its own container.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next().or_else(|| std::env::var("PROBE_ADDR").ok()) else {
        eprintln!(
            "usage: health-probe ADDR [SERVICE], or PROBE_ADDR=ADDR health-probe   (PROBE_TLS_CA_FILE=ca.pem for TLS)"
        );
        return ExitCode::from(2);
    };
    let service = args.next().unwrap_or_default();
    let ca = match std::env::var_os("PROBE_TLS_CA_FILE").map(std::fs::read) {
        None => None,
        Some(Ok(pem)) => Some(pem),
        Some(Err(e)) => {
            eprintln!("PROBE_TLS_CA_FILE: {e}");
            return ExitCode::from(2);
        }
    };
    let scheme = if ca.is_some() { "https" } else { "http" };
    let url = if addr.contains("://") {
        addr
    } else {
        format!("{scheme}://{addr}")
    };
    let check = async {
        let mut endpoint = Endpoint::from_shared(url)?;
        if let Some(ca) = ca {
            let domain =
                std::env::var("PROBE_TLS_DOMAIN").unwrap_or_else(|_| String::from("localhost"));
            endpoint = endpoint.tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name(domain),
            )?;
        }
        let channel = endpoint.connect().await?;
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
