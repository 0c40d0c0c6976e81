//! The processes under test: the echo baseline, the real auth-service and userinfo-service
//! binaries (one or more replicas each), and nginx in front of replicas. Each is a child
//! process on loopback, stopped when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

/// Reads a second per app and per token at userinfo-service: far above what the bench reaches.
const READ_LIMIT: &str = "1000000";

/// Role tokens (32+ characters, as the services require) and the master key of the run.
pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef0123";
pub const PROFILE_TOKEN: &str = "bench-profile-token-0123456789abcdef01";
pub const WALLET_TOKEN: &str = "bench-wallet-token-0123456789abcdef012";
pub const VERIFIER_TOKEN: &str = "bench-verifier-token-0123456789abcdef0";
const MASTER_KEY: &str = "2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a";

/// A child process with an address; terminated (SIGTERM, then SIGKILL) when dropped.
pub struct Process {
    pub name: String,
    pub addr: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Resident memory now and at its peak, in MiB (Linux `/proc`).
    pub fn memory_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()));
        let field = |name: &str| {
            status
                .as_deref()
                .ok()
                .and_then(|s| s.lines().find(|l| l.starts_with(name)))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Stops it and waits for it to exit (SIGKILL after 5 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Whether it has exited, and the tail of its log if so.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{} exited ({status}); log tail:\n{}",
                self.name,
                log_tail(&self.log)
            )),
            _ => None,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU time of process `pid` (its threads included), user + system.
pub fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat; what follows the name starts at field 3.
    let own = Duration::from_millis((ticks(11) + ticks(12)) * 10);
    // nginx works in child processes: theirs count too.
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .map(cpu_of)
        .sum::<Duration>();
    own + children
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A free loopback port (bound and released: another process could take it meanwhile,
/// which on a bench machine does not happen).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// A lazily connected plaintext channel with `TCP_NODELAY`.
pub fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a socket address is a valid authority")
        .tcp_nodelay(true)
        .connect_lazy()
}

/// `n` channels to `addr`: the callers spread over them, as over HTTP/2 connections.
pub fn channels(addr: SocketAddr, n: usize) -> Vec<Channel> {
    (0..n.max(1)).map(|_| channel(addr)).collect()
}

fn spawn(
    name: &str,
    program: &Path,
    args: &[&str],
    envs: &[(&str, String)],
    addr: SocketAddr,
    dir: &Path,
) -> Process {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("create a log file");
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(std::env::var_os("RUST_LOG").map(|filter| ("RUST_LOG", filter)))
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    Process {
        name: name.to_owned(),
        addr,
        child: Some(child),
        log,
    }
}

/// Where the service binaries are, and the directory the run keeps its files in.
pub struct Launcher {
    pub bin_dir: PathBuf,
    pub dir: PathBuf,
}

impl Launcher {
    /// The echo baseline: this binary in `--echo-server` mode (a bare tonic server answering
    /// health Check, no layers), in a process of its own like the services.
    pub fn echo(&self) -> Process {
        let addr = free_addr();
        let exe = std::env::current_exe().expect("the bench binary's path");
        let listen = addr.to_string();
        spawn(
            "echo",
            &exe,
            &["--echo-server", &listen],
            &[],
            addr,
            &self.dir,
        )
    }

    /// auth-service on `database_url` at `addr`, with production defaults but for the secrets
    /// and the refresh bound.
    pub fn auth(&self, name: &str, database_url: &str, addr: SocketAddr) -> Process {
        let envs = [
            ("AUTH_ADDR", addr.to_string()),
            ("AUTH_DATABASE_URL", database_url.to_owned()),
            ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("WALLET_TOKEN", WALLET_TOKEN.to_owned()),
            ("VERIFIER_TOKEN", VERIFIER_TOKEN.to_owned()),
            ("MASTER_KEY", MASTER_KEY.to_owned()),
            ("DRAIN_TIMEOUT", "1s".to_owned()),
            // The refresh scenario rotates each caller's chain as fast as it can, past the
            // default bound of a grant's refreshes on a fast machine; the check costs the same.
            ("MAX_REFRESHES_PER_GRANT", u32::MAX.to_string()),
            // The authorize-prompt scenario never answers its prompts; at a small --scale it
            // asks each user for more than the bound of open prompts. The count costs the same.
            ("MAX_OPEN_PROMPTS_PER_USER", u32::MAX.to_string()),
        ];
        let program = self.bin_dir.join("auth-service");
        spawn(name, &program, &[], &envs, addr, &self.dir)
    }

    /// userinfo-service on `database_url` at `addr`, following auth-service at `auth`.
    pub fn userinfo(
        &self,
        name: &str,
        database_url: &str,
        addr: SocketAddr,
        auth: SocketAddr,
        profile_cache_ttl: &str,
    ) -> Process {
        let envs = [
            ("USERINFO_ADDR", addr.to_string()),
            ("USERINFO_DATABASE_URL", database_url.to_owned()),
            ("AUTH_URL", format!("http://{auth}")),
            ("PROFILE_TOKEN", PROFILE_TOKEN.to_owned()),
            ("VERIFIER_TOKEN", VERIFIER_TOKEN.to_owned()),
            ("PROFILE_CACHE_TTL", profile_cache_ttl.to_owned()),
            ("DRAIN_TIMEOUT", "1s".to_owned()),
            // The scraping limits still check every read, but refuse none: a few hundred
            // tokens at the default 10 a second each would cap the read scenarios, measuring
            // the limit instead of the service.
            ("READ_LIMIT_PER_APP", READ_LIMIT.to_owned()),
            ("READ_LIMIT_PER_TOKEN", READ_LIMIT.to_owned()),
        ];
        let program = self.bin_dir.join("userinfo-service");
        spawn(name, &program, &[], &envs, addr, &self.dir)
    }

    /// nginx balancing gRPC (`grpc_pass`, round robin, kept-alive upstream connections) over
    /// each group's replicas: one listening address per group, in the groups' order.
    pub fn nginx(
        &self,
        name: &str,
        groups: &[(&str, Vec<SocketAddr>)],
    ) -> (Process, Vec<SocketAddr>) {
        let mut conf = format!(
            "daemon off;\nworker_processes 2;\npid {dir}/{name}.pid;\nerror_log {dir}/{name}-error.log warn;\n\
             events {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  \
             client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n  \
             fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  \
             scgi_temp_path {dir}/scgi;\n  http2_max_concurrent_streams 1024;\n  \
             keepalive_requests 100000000;\n  keepalive_timeout 1h;\n",
            dir = self.dir.display()
        );
        let mut listens = Vec::new();
        for (name, replicas) in groups {
            let listen = free_addr();
            listens.push(listen);
            conf.push_str(&format!("  upstream {name} {{\n"));
            for r in replicas {
                conf.push_str(&format!("    server {r};\n"));
            }
            conf.push_str(&format!(
                "    keepalive 64;\n    keepalive_requests 100000000;\n  }}\n  server {{\n    listen {listen} http2;\n    \
                 location / {{ grpc_pass grpc://{name}; grpc_read_timeout 1h; grpc_send_timeout 1h; }}\n  }}\n"
            ));
        }
        conf.push_str("}\n");
        let path = self.dir.join(format!("{name}.conf"));
        std::fs::write(&path, conf).expect("write nginx.conf");
        let path = path.display().to_string();
        let first = listens.first().copied().unwrap_or_else(free_addr);
        let process = spawn(
            name,
            Path::new("nginx"),
            &["-c", &path, "-e", "stderr"],
            &[],
            first,
            &self.dir,
        );
        (process, listens)
    }
}

/// Waits until `process` answers health Check SERVING; how long that took from `since`.
pub async fn wait_serving(process: &mut Process, since: Instant, within: Duration) -> Duration {
    let channel = channel(process.addr);
    let deadline = Instant::now() + within;
    loop {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let serving = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .is_ok_and(|r| r.into_inner().status == 1);
        if serving {
            return since.elapsed();
        }
        if let Some(why) = process.exited() {
            panic!("{why}");
        }
        assert!(
            Instant::now() < deadline,
            "{} was not SERVING within {within:?}; log tail:\n{}",
            process.name,
            log_tail(&process.log)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Serves the echo baseline on `listen` until killed.
pub async fn serve_echo(listen: SocketAddr) {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .expect("bind the echo address");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let _ = tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming(incoming)
        .await;
}
