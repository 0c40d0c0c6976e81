//! What the userinfo-service binary leaves on disk, and what it refuses to start with.

use auth_service::testing::{
    TEST_ADMIN_TOKEN, TEST_VERIFIER_TOKEN, assert_private, start_with_open_umask,
};
use userinfo_service::testing::TEST_PROFILE_TOKEN;

/// Guards `service_runtime::private_files::prepare_sqlite_database` in the SQLite store's
/// `open`: under umask 000 the data directory the binary creates is 0700 and the database
/// with its -wal and -shm files 0600 (names and phone numbers inside).
#[cfg(unix)]
#[test]
fn the_database_and_its_directory_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("data/userinfo.db").display());
    let _running = start_with_open_umask(
        env!("CARGO_BIN_EXE_userinfo-service").as_ref(),
        dir.path(),
        &[
            ("USERINFO_ADDR", "127.0.0.1:0"),
            ("USERINFO_DATABASE_URL", &url),
            // Nothing listens there: the store opens before auth-service is needed.
            ("AUTH_URL", "http://127.0.0.1:1"),
            ("PROFILE_TOKEN", TEST_PROFILE_TOKEN),
            ("VERIFIER_TOKEN", TEST_VERIFIER_TOKEN),
        ],
        "userinfo-service listening",
    );
    assert_private(
        &dir.path().join("data"),
        &["userinfo.db", "userinfo.db-wal", "userinfo.db-shm"],
    );
}

fn refused_start(envs: &[(&str, &str)]) -> String {
    let mut envs = envs.to_vec();
    envs.push(("USERINFO_ADDR", "127.0.0.1:0"));
    auth_service::testing::refused_start(env!("CARGO_BIN_EXE_userinfo-service").as_ref(), &envs)
}

/// Guards `check_auth_url`: plaintext to a remote auth-service refuses start, naming the
/// variable and the opt-in.
#[test]
fn a_plaintext_auth_url_to_a_remote_host_refuses_start() {
    let stderr = refused_start(&[
        ("AUTH_URL", "http://auth.example.com:50051"),
        ("PROFILE_TOKEN", TEST_PROFILE_TOKEN),
        ("VERIFIER_TOKEN", TEST_VERIFIER_TOKEN),
    ]);
    assert!(
        stderr.contains("AUTH_URL") && stderr.contains("AUTH_ALLOW_PLAINTEXT"),
        "{stderr}"
    );
}

/// Guards `check_role_tokens`: a short token refuses start and is named, not quoted.
#[test]
fn a_short_role_token_refuses_start_and_is_named() {
    let stderr = refused_start(&[
        ("PROFILE_TOKEN", "profile-token-under-32"),
        ("VERIFIER_TOKEN", TEST_VERIFIER_TOKEN),
    ]);
    assert!(stderr.contains("PROFILE_TOKEN"), "{stderr}");
    assert!(!stderr.contains("profile-token-under-32"), "{stderr}");
}

/// Guards `refuse_auth_service_tokens`, and its place before the check for missing
/// credentials: the console's credential in userinfo-service's environment refuses start,
/// naming it and what to give instead, without quoting it; also in the environment of a
/// deployment upgraded as it was (ADMIN_TOKEN, no PROFILE_TOKEN yet), which hears why rather
/// than only that PROFILE_TOKEN is missing.
#[test]
fn the_consoles_credential_refuses_start() {
    let upgraded = [
        ("ADMIN_TOKEN", TEST_ADMIN_TOKEN),
        ("VERIFIER_TOKEN", TEST_VERIFIER_TOKEN),
    ];
    let given = [
        upgraded.as_slice(),
        &[("PROFILE_TOKEN", TEST_PROFILE_TOKEN)],
    ]
    .concat();
    for envs in [upgraded.as_slice(), &given] {
        let stderr = refused_start(envs);
        assert!(
            stderr.contains("ADMIN_TOKEN") && stderr.contains("PROFILE_TOKEN"),
            "{stderr}"
        );
        assert!(!stderr.contains(TEST_ADMIN_TOKEN), "{stderr}");
    }
}
