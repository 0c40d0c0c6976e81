//! Test plumbing for this crate's and other crates' tests: a real auth-service on
//! `127.0.0.1:0` with a temporary SQLite file, and clients that present credentials.

use std::net::SocketAddr;
use std::time::Duration;

use miniprogram_proto::auth::v1::{
    app_service_client::AppServiceClient, authorization_service_client::AuthorizationServiceClient,
    key_admin_service_client::KeyAdminServiceClient, key_service_client::KeyServiceClient,
    token_service_client::TokenServiceClient,
};
pub use miniprogram_proto::caller_credentials::CallerCredential as Credential;
use miniprogram_token::MasterKey;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::AuthConfig;
use crate::credentials::CallerTokens;

pub mod layers;
pub mod probe_clock;

/// An app as stored, for tests that start from the store.
pub fn app_record(app_id: &str, features: crate::model::FeatureSet) -> crate::model::AppRecord {
    crate::model::AppRecord {
        app_id: app_id.into(),
        display_name: format!("App {app_id}"),
        secret_hash: [0; 32],
        features,
        created_at: miniprogram_token::Timestamp::from_unix_nanos(1),
        declaration_version: 0,
        declared_scopes: miniprogram_token::ScopeSet::EMPTY,
        declared_at: miniprogram_token::Timestamp::from_unix_nanos(1),
    }
}

/// A client channel with a credential.
pub type Authed = InterceptedService<Channel, Credential>;

/// The role tokens of [`test_config`], as long as the services require (32 characters).
pub const TEST_ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123";
pub const TEST_WALLET_TOKEN: &str = "test-wallet-token-0123456789abcdef012";
pub const TEST_VERIFIER_TOKEN: &str = "test-verifier-token-0123456789abcdef0";
pub const TEST_PRIVACY_TOKEN: &str = "test-privacy-token-0123456789abcdef01";

/// A configuration for tests: fixed credentials, short lifetimes where a test needs them.
pub fn test_config(database_url: String) -> AuthConfig {
    AuthConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url,
        callers: CallerTokens {
            admin: TEST_ADMIN_TOKEN.into(),
            wallet: TEST_WALLET_TOKEN.into(),
            verifier: TEST_VERIFIER_TOKEN.into(),
            privacy: Some(TEST_PRIVACY_TOKEN.into()),
        },
        master_key: MasterKey::from_bytes(&[42; 32]).unwrap_or_else(|_| unreachable!("32 bytes")),
        previous_master_key: None,
        consent_token_ttl: Duration::from_secs(1800),
        access_token_ttl: Duration::from_secs(3600),
        refresh_token_ttl: Duration::from_secs(30 * 86400),
        auth_code_ttl: Duration::from_secs(300),
        prompt_ttl: Duration::from_secs(300),
        key_rotation_period: Duration::from_secs(86400),
        sweep_interval: Duration::from_secs(60),
        sweep_batch: 1000,
        failed_credential_budget: 10,
        failed_credential_window: Duration::from_secs(60),
        trusted_proxies: Default::default(),
        revocation_heartbeat: Duration::from_millis(200),
        revocation_quota_per_app: crate::revocations::DEFAULT_RULES_PER_APP,
        grant_bounds: crate::tokens::GrantBounds::default(),
        pending_bounds: crate::consent::PendingBounds::default(),
        privacy: crate::privacy::PrivacyPolicy::default(),
        drain_timeout: Duration::from_secs(2),
        limits: service_runtime::ServerLimits::default(),
        tls: None,
    }
}

/// A running auth-service; stops (and waits for the drain) when dropped or [`stop`]ped.
///
/// [`stop`]: TestAuthServer::stop
pub struct TestAuthServer {
    pub addr: SocketAddr,
    pub config: AuthConfig,
    pub channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), crate::ServeError>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestAuthServer {
    /// Starts a server with a fresh database and [`test_config`].
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server with a fresh database, after `adjust` edits the config.
    pub async fn start_with(adjust: impl FnOnce(&mut AuthConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("auth.db").display());
        let mut config = test_config(url);
        adjust(&mut config);
        let mut server = Self::start_config(config, None).await;
        server._dir = Some(dir);
        server
    }

    /// Starts a server with `config` on `listener` (or a fresh port), e.g. to restart on the
    /// same database.
    pub async fn start_config(config: AuthConfig, listener: Option<TcpListener>) -> Self {
        Self::start_config_with_ca(config, listener, None).await
    }

    /// Starts a TLS server (`server_tls`) with a fresh database; clients trust `ca_pem`.
    pub async fn start_tls(server_tls: service_runtime::ServerTls, ca_pem: Vec<u8>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(format!("sqlite://{}", dir.path().join("auth.db").display()));
        config.tls = Some(server_tls);
        let mut server = Self::start_config_with_ca(config, None, Some(ca_pem)).await;
        server._dir = Some(dir);
        server
    }

    async fn start_config_with_ca(
        config: AuthConfig,
        listener: Option<TcpListener>,
        ca_pem: Option<Vec<u8>>,
    ) -> Self {
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        };
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::serve_with_listener(
            config.clone(),
            listener,
            async {
                let _ = rx.await;
            },
        ));
        let channel = service_runtime::client_channel(addr, ca_pem.as_deref());
        let server = TestAuthServer {
            addr,
            config,
            channel,
            shutdown: Some(tx),
            task: Some(task),
            _dir: None,
        };
        server.wait_ready().await;
        server
    }

    /// Waits until the health service says SERVING (the listener queues connections from the
    /// start, so this only waits for migrations and keys).
    async fn wait_ready(&self) {
        let ready =
            service_runtime::wait_until_serving(self.channel.clone(), Duration::from_secs(5)).await;
        assert!(ready, "auth-service did not become ready");
    }

    pub fn admin(&self) -> AppServiceClient<Authed> {
        AppServiceClient::with_interceptor(
            self.channel.clone(),
            Credential::bearer(&self.config.callers.admin),
        )
    }

    pub fn wallet(&self) -> AuthorizationServiceClient<Authed> {
        AuthorizationServiceClient::with_interceptor(
            self.channel.clone(),
            Credential::bearer(&self.config.callers.wallet),
        )
    }

    pub fn key_admin(&self) -> KeyAdminServiceClient<Authed> {
        KeyAdminServiceClient::with_interceptor(
            self.channel.clone(),
            Credential::bearer(&self.config.callers.admin),
        )
    }

    pub fn verifier(&self) -> KeyServiceClient<Authed> {
        KeyServiceClient::with_interceptor(
            self.channel.clone(),
            Credential::bearer(&self.config.callers.verifier),
        )
    }

    pub fn changes(
        &self,
        app_id: &str,
        secret: &str,
    ) -> pb::authorization_change_service_client::AuthorizationChangeServiceClient<Authed> {
        pb::authorization_change_service_client::AuthorizationChangeServiceClient::with_interceptor(
            self.channel.clone(),
            Credential::basic(app_id, secret),
        )
    }

    pub fn backend(&self, app_id: &str, secret: &str) -> TokenServiceClient<Authed> {
        TokenServiceClient::with_interceptor(
            self.channel.clone(),
            Credential::basic(app_id, secret),
        )
    }

    /// Signals shutdown and waits for the server to drain and exit.
    pub async fn stop(mut self) -> Result<(), crate::ServeError> {
        self.stop_inner().await
    }

    /// Stops the server but keeps its database and address, to [`StoppedAuthServer::restart`].
    pub async fn pause(mut self) -> StoppedAuthServer {
        let _ = self.stop_inner().await;
        StoppedAuthServer {
            addr: self.addr,
            config: self.config.clone(),
            dir: self._dir.take(),
        }
    }

    async fn stop_inner(&mut self) -> Result<(), crate::ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

/// A stopped server whose database and address are kept for a restart.
pub struct StoppedAuthServer {
    pub addr: SocketAddr,
    config: AuthConfig,
    dir: Option<tempfile::TempDir>,
}

impl StoppedAuthServer {
    /// The database it will restart on, for tests that tamper with it while it is down.
    pub fn database_url(&self) -> &str {
        &self.config.database_url
    }

    /// Starts again on the same address and database.
    pub async fn restart(self) -> TestAuthServer {
        self.restart_with(|_| {}).await
    }

    /// Starts again on the same address and database, after `adjust` edits the config
    /// (a new master key, say).
    pub async fn restart_with(mut self, adjust: impl FnOnce(&mut AuthConfig)) -> TestAuthServer {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind the same port");
        let mut config = self.config.clone();
        adjust(&mut config);
        let mut server = TestAuthServer::start_config(config, Some(listener)).await;
        server._dir = self.dir.take();
        server
    }
}

impl Drop for TestAuthServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

use miniprogram_proto::auth::v1 as pb;

/// The reason a failed call carries.
///
/// # Panics
/// When the status carries no `ErrorInfo` of ours (which is itself a test failure).
pub fn reason(status: &tonic::Status) -> miniprogram_proto::ErrorReason {
    miniprogram_proto::ErrorReason::of(status)
        .unwrap_or_else(|| panic!("no ErrorInfo on {status:?}"))
}

/// Every feature, for apps that may ask for anything.
pub const ALL_FEATURES: [pb::Feature; 3] = [
    pb::Feature::BasicUserInfo,
    pb::Feature::PhoneNumber,
    pb::Feature::UserAuthorization,
];

/// The consent token of a grant.
pub fn consent_token(grant: &pb::Grant) -> String {
    match &grant.credential {
        Some(pb::grant::Credential::ConsentToken(t)) => t.clone(),
        other => panic!("expected consent token, got {other:?}"),
    }
}

/// The auth code of a grant.
pub fn auth_code(grant: &pb::Grant) -> String {
    match &grant.credential {
        Some(pb::grant::Credential::AuthCode(c)) => c.clone(),
        other => panic!("expected auth code, got {other:?}"),
    }
}

/// Registers an app named `display_name` with `features` through the console client `admin`
/// (of an in-process server or a process of its own): its id and secret.
pub async fn register_app(
    mut admin: AppServiceClient<Authed>,
    display_name: &str,
    features: &[pb::Feature],
) -> (String, String) {
    let created = admin
        .create_app(pb::CreateAppRequest {
            display_name: display_name.into(),
            features: features.iter().map(|f| *f as i32).collect(),
        })
        .await
        .expect("create app")
        .into_inner();
    (created.app.expect("app").app_id, created.app_secret)
}

// === flows through the running server ===
impl TestAuthServer {
    /// Registers an app with `features`; returns its id and secret.
    pub async fn create_app(&self, features: &[pb::Feature]) -> (String, String) {
        register_app(self.admin(), "Test Mini Program", features).await
    }

    /// RequestAuthorization as the wallet gateway.
    pub async fn request(
        &self,
        user: &str,
        app_id: &str,
        scopes: &[pb::Scope],
        trigger: pb::Trigger,
    ) -> Result<pb::request_authorization_response::Result, tonic::Status> {
        self.wallet()
            .request_authorization(pb::RequestAuthorizationRequest {
                user_id: user.into(),
                app_id: app_id.into(),
                scopes: scopes.iter().map(|s| *s as i32).collect(),
                trigger: trigger as i32,
            })
            .await
            .map(|r| r.into_inner().result.expect("result"))
    }

    /// ResolvePrompt as the wallet gateway.
    pub async fn resolve(
        &self,
        prompt_id: &str,
        user: &str,
        decision: pb::Decision,
    ) -> Result<pb::resolve_prompt_response::Result, tonic::Status> {
        self.wallet()
            .resolve_prompt(pb::ResolvePromptRequest {
                prompt_id: prompt_id.into(),
                user_id: user.into(),
                decision: decision as i32,
            })
            .await
            .map(|r| r.into_inner().result.expect("result"))
    }

    /// RevokeAuthorization as the wallet gateway: withdraws `scopes` (all when empty).
    pub async fn withdraw(&self, user: &str, app_id: &str, scopes: &[pb::Scope]) {
        self.wallet()
            .revoke_authorization(pb::RevokeAuthorizationRequest {
                user_id: user.into(),
                app_id: app_id.into(),
                scopes: scopes.iter().map(|s| *s as i32).collect(),
            })
            .await
            .expect("revoke authorization");
    }

    /// ListAuthorizations as the wallet gateway: the user's settings page.
    pub async fn authorizations(&self, user: &str) -> Vec<pb::Authorization> {
        self.wallet()
            .list_authorizations(pb::ListAuthorizationsRequest {
                user_id: user.into(),
            })
            .await
            .expect("list authorizations")
            .into_inner()
            .authorizations
    }

    /// RotateAppSecret as the console: the new secret.
    pub async fn rotate_secret(&self, app_id: &str) -> String {
        self.admin()
            .rotate_app_secret(pb::RotateAppSecretRequest {
                app_id: app_id.into(),
            })
            .await
            .expect("rotate secret")
            .into_inner()
            .app_secret
    }

    /// Tap, prompt (if any), allow: the grant for `scopes`.
    pub async fn consent(&self, user: &str, app_id: &str, scopes: &[pb::Scope]) -> pb::Grant {
        match self
            .request(user, app_id, scopes, pb::Trigger::UserTap)
            .await
            .expect("request")
        {
            pb::request_authorization_response::Result::Grant(g) => g,
            pb::request_authorization_response::Result::Prompt(p) => {
                match self
                    .resolve(&p.prompt_id, user, pb::Decision::Allow)
                    .await
                    .expect("resolve")
                {
                    pb::resolve_prompt_response::Result::Grant(g) => g,
                    other => panic!("expected grant, got {other:?}"),
                }
            }
        }
    }
}

/// A CA generated for a test, and a `localhost` / `127.0.0.1` server certificate it signed:
/// (the CA's PEM, the server's TLS identity).
pub fn test_pki() -> (Vec<u8>, service_runtime::ServerTls) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let leaf_key = KeyPair::generate().expect("server key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&leaf_key, &ca)
        .expect("server certificate");
    (
        ca.pem().into_bytes(),
        service_runtime::ServerTls {
            cert_pem: leaf.pem().into_bytes(),
            key_pem: leaf_key.serialize_pem().into_bytes(),
        },
    )
}

/// A service binary started by a test; killed when dropped.
pub struct RunningBinary(std::process::Child);

impl Drop for RunningBinary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `binary` in `dir` with exactly `envs`, under umask 000 (the most permissive there
/// is), and returns once a line of its log (stderr) contains `ready`.
///
/// # Panics
/// If it exits, or does not log `ready` within 30 s (a test failure).
pub fn start_with_open_umask(
    binary: &std::path::Path,
    dir: &std::path::Path,
    envs: &[(&str, &str)],
    ready: &str,
) -> RunningBinary {
    use std::io::BufRead;
    let mut child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 000 && exec \"$0\"")
        .arg(binary)
        .current_dir(dir)
        .env_clear()
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the binary");
    let stderr = child.stderr.take().expect("stderr");
    let running = RunningBinary(child);
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_owned();
    std::thread::spawn(move || {
        let mut log = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            log.push_str(&line);
            log.push('\n');
            // Reading on after `ready` keeps the child from blocking on a full pipe.
            if line.contains(&ready) {
                let _ = tx.send(Ok(()));
            }
        }
        let _ = tx.send(Err(log));
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => running,
        Ok(Err(log)) => panic!("the binary exited before it was ready:\n{log}"),
        Err(_) => panic!("the binary was not ready within 30 s"),
    }
}

/// Asserts that `dir` is mode 0700 and each of `files` in it exists with mode 0600.
///
/// # Panics
/// When one is missing or has another mode (a test failure).
#[cfg(unix)]
pub fn assert_private(dir: &std::path::Path, files: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(dir), 0o700, "{} is not 0700", dir.display());
    for file in files {
        let path = dir.join(file);
        assert_eq!(mode(&path), 0o600, "{} is not 0600", path.display());
    }
}

/// Runs `binary` in a fresh directory with exactly `envs`, expecting it to refuse to start;
/// returns its log (stderr).
///
/// # Panics
/// If it is still running after 20 s (it started instead: it is killed) or exits with
/// success (a test failure).
pub fn refused_start(binary: &std::path::Path, envs: &[(&str, &str)]) -> String {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = std::process::Command::new(binary)
        .current_dir(dir.path())
        .env_clear()
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the binary");
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(status) => break status,
            None if started.elapsed() > Duration::from_secs(20) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("still running after 20 s: it started instead of refusing");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut log = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut log);
    }
    assert!(!status.success(), "it started and exited cleanly:\n{log}");
    log
}
