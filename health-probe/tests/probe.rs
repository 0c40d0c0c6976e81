//! The probe binary against a real auth-service, plaintext and TLS.

use std::process::Command;

use auth_service::testing::{TestAuthServer, test_pki};

fn probe(addr: &str, envs: &[(&str, &std::path::Path)]) -> std::process::ExitStatus {
    let mut command = Command::new(env!("CARGO_BIN_EXE_health-probe"));
    command
        .arg(addr)
        .env_remove("PROBE_TLS_CA_FILE")
        .env_remove("PROBE_ADDR");
    for (key, value) in envs {
        command.env(key, value);
    }
    command.status().expect("run health-probe")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_server_passes_and_a_closed_port_fails() {
    let server = TestAuthServer::start().await;
    let addr = server.addr.to_string();
    assert!(probe(&addr, &[]).success());
    server.stop().await.unwrap();
    assert_eq!(probe(&addr, &[]).code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_ca_file_it_probes_a_tls_server_and_plaintext_alone_does_not() {
    let (ca, server_tls) = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let server = TestAuthServer::start_tls(server_tls, ca).await;
    let addr = server.addr.to_string();
    assert!(probe(&addr, &[("PROBE_TLS_CA_FILE", &ca_file)]).success());
    assert_eq!(probe(&addr, &[]).code(), Some(1), "plaintext to a TLS port");
    let missing = dir.path().join("missing.pem");
    assert_eq!(
        probe(&addr, &[("PROBE_TLS_CA_FILE", &missing)]).code(),
        Some(2),
        "an unreadable CA file is a usage error"
    );
}

/// Guards the `PROBE_ADDR` fallback in `main`: the image's `HEALTHCHECK` runs `health-probe`
/// without arguments, so the address must come from the environment, and with neither it is a
/// usage error rather than a probe of some default address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_argument_it_probes_probe_addr() {
    let server = TestAuthServer::start().await;
    let bare = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_health-probe"));
        command
            .env_remove("PROBE_TLS_CA_FILE")
            .env_remove("PROBE_ADDR");
        command
    };
    let from_env = bare()
        .env("PROBE_ADDR", server.addr.to_string())
        .status()
        .expect("run health-probe");
    assert!(from_env.success(), "PROBE_ADDR names a serving server");
    let neither = bare().status().expect("run health-probe");
    assert_eq!(neither.code(), Some(2), "no ADDR and no PROBE_ADDR");
    server.stop().await.unwrap();
}
