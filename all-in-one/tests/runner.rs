//! The all-in-one binary itself: starts on the embedded default, prints credentials, stops
//! cleanly on SIGTERM, and a second start reuses the data (same credentials and demo app).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the binary in `dir` on free ports, reads its banner, sends SIGTERM; returns the
/// banner and the exit status.
fn run_once(dir: &std::path::Path) -> (String, std::process::ExitStatus) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_all-in-one"))
        .current_dir(dir)
        .env("AUTH_ADDR", "127.0.0.1:0")
        .env("USERINFO_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start all-in-one");
    let stdout = child.stdout.take().expect("stdout");
    let mut banner = String::new();
    let started = Instant::now();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read stdout");
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Ctrl-C stops") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no banner");
    }
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(killed.success());
    (banner, child.wait().expect("wait"))
}

fn value(banner: &str, key: &str) -> String {
    banner
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing from the banner:\n{banner}"))
        .to_owned()
}

#[test]
fn the_runner_stops_cleanly_and_a_second_start_reuses_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let (first, status) = run_once(dir.path());
    assert!(status.success(), "exit status {status:?}");
    assert!(first.contains("grpcurl -plaintext"), "{first}");
    let env_file = std::fs::read_to_string(dir.path().join("data/dev-credentials.env")).unwrap();
    assert!(env_file.contains(&value(&first, "ADMIN_TOKEN")));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("data/dev-credentials.env"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "credentials readable by others");
        let mode = std::fs::metadata(dir.path().join("data/master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "master key readable by others");
    }
    let (second, status) = run_once(dir.path());
    assert!(status.success());
    for key in [
        "ADMIN_TOKEN",
        "WALLET_TOKEN",
        "VERIFIER_TOKEN",
        "DEMO_APP_ID",
        "DEMO_APP_SECRET",
    ] {
        assert_eq!(
            value(&first, key),
            value(&second, key),
            "{key} changed across restarts"
        );
    }
}
