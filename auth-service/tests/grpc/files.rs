//! What the auth-service binary leaves on disk, and what it refuses to start with.

use auth_service::testing::{
    TEST_ADMIN_TOKEN, TEST_VERIFIER_TOKEN, TEST_WALLET_TOKEN, assert_private, refused_start,
    start_with_open_umask,
};

/// Guards `service_runtime::private_files::prepare_sqlite_database` in the SQLite store's
/// `open`: under umask 000 the data directory the binary creates is 0700 and the database
/// with its -wal and -shm files 0600 (names and app secrets' hashes inside).
#[cfg(unix)]
#[test]
fn the_database_and_its_directory_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("data/auth.db").display());
    let master_key = "0f".repeat(32);
    let _running = start_with_open_umask(
        env!("CARGO_BIN_EXE_auth-service").as_ref(),
        dir.path(),
        &[
            ("AUTH_ADDR", "127.0.0.1:0"),
            ("AUTH_DATABASE_URL", &url),
            ("ADMIN_TOKEN", TEST_ADMIN_TOKEN),
            ("WALLET_TOKEN", TEST_WALLET_TOKEN),
            ("VERIFIER_TOKEN", TEST_VERIFIER_TOKEN),
            ("MASTER_KEY", &master_key),
        ],
        "auth-service serving",
    );
    assert_private(
        &dir.path().join("data"),
        &["auth.db", "auth.db-wal", "auth.db-shm"],
    );
}

/// Guards `check_role_tokens`: the binary refuses a short role token and names it.
#[test]
fn a_short_role_token_refuses_start_and_is_named() {
    let master_key = "0f".repeat(32);
    let stderr = refused_start(
        env!("CARGO_BIN_EXE_auth-service").as_ref(),
        &[
            ("ADMIN_TOKEN", TEST_ADMIN_TOKEN),
            ("WALLET_TOKEN", "wallet-token-under-32"),
            ("VERIFIER_TOKEN", TEST_VERIFIER_TOKEN),
            ("MASTER_KEY", &master_key),
            ("AUTH_ADDR", "127.0.0.1:0"),
        ],
    );
    assert!(stderr.contains("WALLET_TOKEN"), "{stderr}");
    assert!(!stderr.contains("wallet-token-under-32"), "{stderr}");
}
