//! The all-in-one binary itself: starts on the embedded default, prints credentials and the
//! whole flow, stops cleanly on SIGTERM and on Ctrl-C (SIGINT), and a second start reuses the
//! data (same credentials, demo app and profiles).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the binary in `dir` on free ports, reads its banner, sends `signal` (TERM or INT,
/// what Ctrl-C sends); returns the banner, the exit status and the log.
fn run_once(dir: &std::path::Path, signal: &str) -> (String, std::process::ExitStatus, String) {
    run_with(dir, signal, "text", None, |_| {})
}

/// [`run_once`] with `LOG_FORMAT` set to `log_format`, `RUST_LOG` to `rust_log` (unset when
/// `None`), and `during` run with auth-service's address once the banner is out.
fn run_with(
    dir: &std::path::Path,
    signal: &str,
    log_format: &str,
    rust_log: Option<&str>,
    during: impl FnOnce(&str),
) -> (String, std::process::ExitStatus, String) {
    let log_path = dir.join(format!("all-in-one-{signal}.log"));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_all-in-one"));
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    let mut child = command
        .current_dir(dir)
        .env("AUTH_ADDR", "127.0.0.1:0")
        .env("USERINFO_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", log_format)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start all-in-one");
    // Read on a thread of its own, so a binary that prints nothing fails the wait below
    // instead of blocking the test on a read.
    let stdout = child.stdout.take().expect("stdout");
    let (lines, printed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = printed.recv_timeout(left) else {
            let _ = child.kill();
            panic!("no whole banner within 60 s:\n{banner}");
        };
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Ctrl-C stops") {
            break;
        }
    }
    let auth_addr = banner
        .lines()
        .find_map(|l| l.strip_prefix("auth-service "))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no auth-service address in the banner:\n{banner}"))
        .to_owned();
    during(&auth_addr);
    let killed = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(killed.success());
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if stopping.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("still running 30 s after SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(&log_path).expect("read log");
    (banner, status, log)
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
    let (first, status, first_log) = run_once(dir.path(), "TERM");
    assert!(status.success(), "exit status {status:?}");
    for step in [
        "AuthorizationService/RequestAuthorization",
        "AuthorizationService/ResolvePrompt",
        "UserInfoService/GetOpenUserInfo",
        "TokenService/ExchangeAuthCode",
        "UserInfoService/GetPhoneNumber",
        "AuthorizationService/RevokeAuthorization",
    ] {
        assert!(
            first.contains(step),
            "the banner's flow lacks {step}:\n{first}"
        );
    }
    assert!(first_log.contains("seeded the demo users"), "{first_log}");
    for db in ["auth.db", "userinfo.db"] {
        assert!(
            dir.path().join("data").join(db).exists(),
            "{db} is not under ./data"
        );
    }
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
    // Ctrl-C this time.
    let (second, status, second_log) = run_once(dir.path(), "INT");
    assert!(status.success(), "exit status {status:?} on SIGINT");
    assert!(
        !second_log.contains("seeded the demo users"),
        "the second start found the profile store empty:\n{second_log}"
    );
    for key in [
        "ADMIN_TOKEN",
        "PROFILE_TOKEN",
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

#[test]
fn log_format_json_writes_one_object_per_line_with_the_rpc_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (_, status, log) = run_with(dir.path(), "TERM", "json", Some("info,rpc=debug"), |_| {});
    assert!(status.success());
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let finished = lines
        .iter()
        .find(|l| l["message"] == "rpc finished")
        .unwrap_or_else(|| panic!("no rpc line in {log}"));
    for field in ["code", "latency_ms", "level", "timestamp"] {
        assert!(finished.get(field).is_some(), "{field} missing: {finished}");
    }
    let span = &finished["span"];
    for field in ["service", "method", "request_id"] {
        assert!(
            span.get(field).is_some(),
            "span {field} missing: {finished}"
        );
    }
}

/// Guards the level split in `RpcObserver::call` (`runtime/src/rpc_observer.rs`): at the
/// default level a failed call ends with an `rpc finished` line and an answered one (the
/// seeding's dozens) does not.
#[test]
fn at_the_default_level_failed_calls_are_logged_and_answered_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let (_, status, log) = run_with(dir.path(), "TERM", "text", None, |auth_addr| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let code = runtime.block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{auth_addr}"))
                .expect("endpoint")
                .timeout(Duration::from_secs(10))
                .connect()
                .await
                .expect("connect");
            let answer = service_runtime::is_serving(channel, "no.such.Service").await;
            answer.err().map(|status| status.code())
        });
        assert_eq!(code, Some(tonic::Code::NotFound));
    });
    assert!(status.success(), "exit status {status:?}");
    let rpc_lines: Vec<&str> = log.lines().filter(|l| l.contains("rpc finished")).collect();
    assert!(
        rpc_lines.iter().any(|l| l.contains("code=NotFound")),
        "the failed call left no line:\n{log}"
    );
    assert!(
        rpc_lines.iter().all(|l| !l.contains("code=Ok")),
        "answered calls were logged at the default level:\n{log}"
    );
}

/// Guards `create_private_dir` for the data directory and `prepare_sqlite_database` in both
/// stores, as the all-in-one runs them: under umask 000, `data/` is 0700 and every file in it
/// (both databases with their -wal and -shm, the credentials, the master key) 0600.
#[cfg(unix)]
#[test]
fn every_file_under_data_is_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let _running = auth_service::testing::start_with_open_umask(
        env!("CARGO_BIN_EXE_all-in-one").as_ref(),
        dir.path(),
        &[
            ("AUTH_ADDR", "127.0.0.1:0"),
            ("USERINFO_ADDR", "127.0.0.1:0"),
        ],
        "all-in-one ready",
    );
    let data = dir.path().join("data");
    let expected = [
        "auth.db",
        "auth.db-wal",
        "auth.db-shm",
        "userinfo.db",
        "userinfo.db-wal",
        "userinfo.db-shm",
        "dev-credentials.env",
        "master.key",
    ];
    auth_service::testing::assert_private(&data, &expected);
    let present: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for name in &present {
        assert!(
            expected.contains(&name.as_str()),
            "{name} under data/ is not checked"
        );
    }
}

/// Guards `check_profile_token`: in one process serving both services, ProfileService's token
/// given as the console's refuses start, naming the roles and quoting neither; a short one is
/// named too.
#[test]
fn a_profile_token_shared_with_the_console_or_too_short_refuses_start() {
    let refused_with = |tokens: &[(&str, &str)]| {
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_all-in-one"));
        let addrs = [
            ("AUTH_ADDR", "127.0.0.1:0"),
            ("USERINFO_ADDR", "127.0.0.1:0"),
        ];
        auth_service::testing::refused_start(binary, &[&addrs[..], tokens].concat())
    };
    let shared = "one-token-for-two-roles-0123456789abcdef";
    let stderr = refused_with(&[("ADMIN_TOKEN", shared), ("PROFILE_TOKEN", shared)]);
    assert!(
        stderr.contains("PROFILE_TOKEN, ADMIN_TOKEN") && stderr.contains("own"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(shared),
        "the value is not echoed: {stderr}"
    );
    let short = "profile-token-under-32";
    let stderr = refused_with(&[("PROFILE_TOKEN", short)]);
    assert!(stderr.contains("PROFILE_TOKEN"), "{stderr}");
    assert!(!stderr.contains(short), "the value is not echoed: {stderr}");
}

/// Guards the generation of a missing `PROFILE_TOKEN` in `DevState::load_or_create`: a data
/// directory whose credentials file was written before that token existed starts, keeps its
/// console token, and gets a ProfileService token of its own, remembered for the next start.
#[test]
fn a_credentials_file_from_before_the_profile_token_gets_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let admin = "console-token-of-an-older-install-0123456789";
    let old = format!(
        "ADMIN_TOKEN={admin}\nWALLET_TOKEN=wallet-token-of-an-older-install-0123456789\n\
         VERIFIER_TOKEN=verifier-token-of-an-older-install-012345678\n"
    );
    std::fs::write(data.join("dev-credentials.env"), old).unwrap();
    let (banner, status, log) = run_once(dir.path(), "TERM");
    assert!(status.success(), "exit status {status:?}:\n{log}");
    assert_eq!(value(&banner, "ADMIN_TOKEN"), admin);
    let profile = value(&banner, "PROFILE_TOKEN");
    assert!(profile.len() >= 32 && profile != admin, "{banner}");
    let remembered = std::fs::read_to_string(data.join("dev-credentials.env")).unwrap();
    assert!(
        remembered.contains(&format!("PROFILE_TOKEN={profile}")),
        "{remembered}"
    );
}
