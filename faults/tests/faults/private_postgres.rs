//! A PostgreSQL server of the test's own (initdb into a temporary directory, a free port), so a
//! test can stop and restart it under load without disturbing the server other tests share.
//! Uses the PostgreSQL binaries installed on the machine (`initdb` on PATH, or Debian's
//! `/usr/lib/postgresql/15/bin`); as root, runs them as the `postgres` user, as
//! `.ci/start-postgres.sh` does.

use std::path::PathBuf;
use std::process::{Command, Output};

/// A private PostgreSQL server; stopped (immediately) when dropped.
pub struct PrivatePostgres {
    data: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// initdb and start.
    ///
    /// # Panics
    /// When the binaries are missing or the server does not start (with its output).
    pub fn start() -> PrivatePostgres {
        let bin = binaries();
        let data = tempfile::Builder::new()
            .prefix("faults-pg")
            .tempdir()
            .expect("temp dir");
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown").arg("postgres").arg(data.path()));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = PrivatePostgres {
            data,
            bin,
            port,
            as_postgres,
        };
        let pgdata = server.pgdata();
        run(server.command("initdb").args([
            "-D",
            &pgdata,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]));
        server.start_again();
        server
    }

    /// A URL for database `name` (`postgres` exists from the start).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name`; its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let admin = sqlx::PgPool::connect(&self.url("postgres"))
            .await
            .expect("connect to the private server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;
        self.url(name)
    }

    /// Stops the server (`fast`: connections are terminated, as in a restart or failover).
    pub fn stop(&self) {
        let pgdata = self.pgdata();
        run(self
            .command("pg_ctl")
            .args(["-D", &pgdata, "-m", "fast", "-w", "stop"]));
    }

    /// Starts the server again on the same port and data.
    pub fn start_again(&self) {
        let pgdata = self.pgdata();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {pgdata} -c fsync=off -c max_connections=200",
            self.port
        );
        let log = format!("{pgdata}/server.log");
        run(self
            .command("pg_ctl")
            .args(["-D", &pgdata, "-l", &log, "-w", "-o", &options, "start"]));
    }

    fn pgdata(&self) -> String {
        self.data.path().display().to_string()
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let pgdata = self.pgdata();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &pgdata, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
fn binaries() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("initdb"))
            .find(|candidate| candidate.is_file())
    });
    let initdb = on_path
        .and_then(|p| std::fs::canonicalize(p).ok())
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin/initdb"));
    let dir = initdb
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    assert!(
        dir.join("pg_ctl").is_file(),
        "no PostgreSQL binaries (initdb, pg_ctl) at {}: install PostgreSQL (CI's image has 15)",
        dir.display()
    );
    dir
}
