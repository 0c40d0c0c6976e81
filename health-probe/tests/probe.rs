//! The probe binary against a real auth-service, plaintext and TLS.

use std::process::Command;

use auth_service::testing::{TestAuthServer, test_pki};

fn probe(addr: &str, envs: &[(&str, &std::path::Path)]) -> std::process::ExitStatus {
    let mut command = Command::new(env!("CARGO_BIN_EXE_health-probe"));
    command.arg(addr).env_remove("PROBE_TLS_CA_FILE");
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
