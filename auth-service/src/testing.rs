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
        revocation_quota_per_app: crate::revocations::DEFAULT_TOKEN_RULES_PER_APP,
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
    /// The database it will restart on, for tests that tamper with it while it is down.
    pub fn database_url(&self) -> &str {
        &self.config.database_url
    }

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

// === flows through the running server ===
impl TestAuthServer {
    /// Registers an app with `features`; returns its id and secret.
    pub async fn create_app(&self, features: &[pb::Feature]) -> (String, String) {
        let created = self
            .admin()
            .create_app(pb::CreateAppRequest {
                display_name: "Test Mini Program".into(),
                features: features.iter().map(|f| *f as i32).collect(),
            })
            .await
            .expect("create app")
            .into_inner();
        (created.app.expect("app").app_id, created.app_secret)
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
