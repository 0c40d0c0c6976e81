//! Test plumbing for this crate's and other crates' tests: a real auth-service on
//! `127.0.0.1:0` with a temporary SQLite file, and clients that present credentials.

use std::net::SocketAddr;
use std::time::Duration;

use miniprogram_proto::auth::v1::{
    app_service_client::AppServiceClient, authorization_service_client::AuthorizationServiceClient,
    key_service_client::KeyServiceClient, token_service_client::TokenServiceClient,
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

/// A client channel with a credential.
pub type Authed = InterceptedService<Channel, Credential>;

/// A configuration for tests: fixed credentials, short lifetimes where a test needs them.
pub fn test_config(database_url: String) -> AuthConfig {
    AuthConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url,
        callers: CallerTokens {
            admin: "test-admin-token".into(),
            wallet: "test-wallet-token".into(),
            verifier: "test-verifier-token".into(),
        },
        master_key: MasterKey::from_bytes(&[42; 32]).unwrap_or_else(|_| unreachable!("32 bytes")),
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
        revocation_heartbeat: Duration::from_millis(200),
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
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
        let mut health = HealthClient::new(self.channel.clone());
        for _ in 0..500 {
            if let Ok(r) = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                && r.into_inner().status == ServingStatus::Serving as i32
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("auth-service did not become ready");
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

    pub fn verifier(&self) -> KeyServiceClient<Authed> {
        KeyServiceClient::with_interceptor(
            self.channel.clone(),
            Credential::bearer(&self.config.callers.verifier),
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
    /// Starts again on the same address and database.
    pub async fn restart(mut self) -> TestAuthServer {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind the same port");
        let mut server = TestAuthServer::start_config(self.config.clone(), Some(listener)).await;
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
