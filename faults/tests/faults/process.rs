//! The services' binaries as child processes: started with exactly the environment given, on
//! 127.0.0.1:0 (the address read back from their JSON log), ready once health says SERVING, and
//! SIGKILLed when dropped. The log is kept for failure messages.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

pub const AUTH_SERVICE: &str = env!("CARGO_BIN_EXE_faults-auth-service");
pub const USERINFO_SERVICE: &str = env!("CARGO_BIN_EXE_faults-userinfo-service");

/// From spawn to SERVING, at most (a debug build on a busy 2-core machine).
const READY_WITHIN: Duration = Duration::from_secs(30);
/// The master key every test deployment seals under, as `MASTER_KEY` takes it.
pub const MASTER_KEY_HEX: &str = "2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a";

/// A binary's environment, nothing inherited.
#[derive(Debug, Clone)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// auth-service on `database_url`, with the test role tokens and master key.
    pub fn auth(database_url: &str) -> Env {
        use auth_service::testing::{TEST_ADMIN_TOKEN, TEST_VERIFIER_TOKEN, TEST_WALLET_TOKEN};
        Env(BTreeMap::new())
            .set("AUTH_ADDR", "127.0.0.1:0")
            .set("AUTH_DATABASE_URL", database_url)
            .set("ADMIN_TOKEN", TEST_ADMIN_TOKEN)
            .set("WALLET_TOKEN", TEST_WALLET_TOKEN)
            .set("VERIFIER_TOKEN", TEST_VERIFIER_TOKEN)
            .set("MASTER_KEY", MASTER_KEY_HEX)
            .set("LOG_FORMAT", "json")
    }

    /// userinfo-service on `database_url`, following the auth-service at `auth`.
    pub fn userinfo(database_url: &str, auth: SocketAddr) -> Env {
        use auth_service::testing::TEST_VERIFIER_TOKEN;
        use userinfo_service::testing::TEST_PROFILE_TOKEN;
        Env(BTreeMap::new())
            .set("USERINFO_ADDR", "127.0.0.1:0")
            .set("USERINFO_DATABASE_URL", database_url)
            .set("AUTH_URL", &format!("http://{auth}"))
            .set("PROFILE_TOKEN", TEST_PROFILE_TOKEN)
            .set("VERIFIER_TOKEN", TEST_VERIFIER_TOKEN)
            .set("LOG_FORMAT", "json")
    }

    pub fn set(mut self, name: &str, value: &str) -> Env {
        self.0.insert(name.to_owned(), value.to_owned());
        self
    }
}

/// A client channel to `addr` whose calls each give up after 10 s, connecting within 2 s.
pub fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap_or_else(|_| unreachable!("a socket address is a valid authority"))
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .connect_lazy()
}

/// A running service binary; SIGKILLed when dropped.
pub struct ServiceProcess {
    child: Child,
    pub addr: SocketAddr,
    pub channel: Channel,
    log: Arc<Mutex<String>>,
}

impl ServiceProcess {
    /// Starts `binary` with `env` and waits until it is SERVING.
    ///
    /// # Panics
    /// If it exits first or is not SERVING within 30 s (with its log).
    pub async fn start(binary: &str, env: &Env) -> ServiceProcess {
        Self::start_within(binary, env, READY_WITHIN).await
    }

    /// [`start`](Self::start) with another bound.
    pub async fn start_within(binary: &str, env: &Env, within: Duration) -> ServiceProcess {
        let started = Instant::now();
        let mut command = Command::new(binary);
        command
            .env_clear()
            .envs(&env.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the service binary");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let addr = Arc::new(Mutex::new(None));
        {
            let (log, addr) = (log.clone(), addr.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(bound) = bound_address(&line) {
                        *addr.lock().unwrap_or_else(|e| e.into_inner()) = Some(bound);
                    }
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let addr = loop {
            if let Some(addr) = *addr.lock().unwrap_or_else(|e| e.into_inner()) {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "{binary} exited ({status}) before listening:\n{}",
                    log.lock().unwrap_or_else(|e| e.into_inner())
                );
            }
            assert!(
                started.elapsed() < within,
                "{binary} did not listen within {within:?}:\n{}",
                log.lock().unwrap_or_else(|e| e.into_inner())
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let process = ServiceProcess {
            child,
            addr,
            channel: channel(addr),
            log,
        };
        let left = within.saturating_sub(started.elapsed());
        if !service_runtime::wait_until_serving(process.channel.clone(), left).await {
            panic!(
                "{binary} at {addr} was not SERVING within {within:?}:\n{}",
                process.log()
            );
        }
        process
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// SIGKILL: no drain, no clean close; waits for it to be gone and returns its log.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {}", self.pid());
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a "serving"/"listening" line of a service's JSON log.
fn bound_address(line: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let message = value.get("message")?.as_str()?;
    if !(message.ends_with("serving") || message.ends_with("listening")) {
        return None;
    }
    value.get("addr")?.as_str()?.parse().ok()
}
