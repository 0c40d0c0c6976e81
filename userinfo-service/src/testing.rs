//! Test plumbing: a real userinfo-service on `127.0.0.1:0` with a temporary SQLite file,
//! pointed at an auth-service, and clients that present credentials.

use std::net::SocketAddr;
use std::time::Duration;

pub use miniprogram_proto::caller_credentials::CallerCredential;
use miniprogram_proto::userinfo::v1::{
    profile_service_client::ProfileServiceClient, user_info_service_client::UserInfoServiceClient,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::UserInfoConfig;
use crate::disclosures::DisclosureSettings;
use crate::read_limits::{RateLimit, ReadLimits};

/// A client channel with a credential.
pub type Authed = InterceptedService<Channel, CallerCredential>;

/// ProfileService's credential in tests (no other role's token: auth-service knows none of it).
pub const TEST_PROFILE_TOKEN: &str = "test-profile-token-0123456789abcdef01";

/// A configuration for tests, pointed at `auth_addr`.
pub fn test_config(
    database_url: String,
    auth_addr: SocketAddr,
    verifier_token: &str,
) -> UserInfoConfig {
    UserInfoConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url,
        auth_url: format!("http://{auth_addr}"),
        profile_token: TEST_PROFILE_TOKEN.to_owned(),
        verifier_token: verifier_token.to_owned(),
        privacy_token: None,
        erasure_retry_interval: Duration::from_millis(200),
        erasure_vacuum: crate::store::Vacuum::Plain,
        revocation_stale_after: Duration::from_secs(10),
        key_refetch_interval: Duration::from_millis(200),
        drain_timeout: Duration::from_secs(2),
        profile_cache_ttl: Duration::from_secs(1),
        limits: service_runtime::ServerLimits::default(),
        tls: None,
        auth_tls_ca_pem: None,
        trusted_proxies: Default::default(),
        read_limits: generous_read_limits(),
        disclosures: DisclosureSettings {
            flush_interval: Duration::from_millis(200),
            max_pending: 100_000,
            retention: Duration::from_secs(400 * 86_400),
        },
    }
}

/// Read limits far above what any test (or the bench, at tens of thousands of calls a
/// second) asks for, so the limiter runs on every read but refuses none; tests of the
/// limits set their own.
pub fn generous_read_limits() -> ReadLimits {
    let limit = RateLimit::new(1e6, std::num::NonZeroU32::new(1_000_000).expect("not zero"));
    ReadLimits {
        per_app: limit,
        per_token: limit,
    }
}

/// A running userinfo-service; stops when dropped or stopped.
pub struct TestUserInfoServer {
    pub addr: SocketAddr,
    pub config: UserInfoConfig,
    pub channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), crate::ServeError>>>,
    _dir: tempfile::TempDir,
}

impl TestUserInfoServer {
    /// Starts against auth-service at `auth_addr` and waits until it is SERVING (keys loaded
    /// and the revocation stream caught up).
    pub async fn start(auth_addr: SocketAddr, verifier_token: &str) -> Self {
        Self::start_with(auth_addr, verifier_token, |_| {}).await
    }

    /// [`start`](Self::start), after `adjust` edits the configuration.
    pub async fn start_with(
        auth_addr: SocketAddr,
        verifier_token: &str,
        adjust: impl FnOnce(&mut UserInfoConfig),
    ) -> Self {
        let server = Self::launch_with(auth_addr, verifier_token, adjust).await;
        server.wait_serving().await;
        server
    }

    /// Starts like [`start_with`](Self::start_with) but returns at once, without waiting for
    /// SERVING (for tests of what happens before it).
    pub async fn launch_with(
        auth_addr: SocketAddr,
        verifier_token: &str,
        adjust: impl FnOnce(&mut UserInfoConfig),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("userinfo.db").display());
        let mut config = test_config(url, auth_addr, verifier_token);
        adjust(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::serve_with_listener(
            config.clone(),
            listener,
            async {
                let _ = rx.await;
            },
        ));
        // In TLS tests one CA signs every certificate: trust the one configured for auth.
        let ca = config.tls.as_ref().and(config.auth_tls_ca_pem.clone());
        let channel = service_runtime::client_channel(addr, ca.as_deref());
        TestUserInfoServer {
            addr,
            config,
            channel,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Waits until health says SERVING.
    ///
    /// # Panics
    /// If it does not within 10 s (a test failure).
    pub async fn wait_serving(&self) {
        let ready =
            service_runtime::wait_until_serving(self.channel.clone(), Duration::from_secs(10))
                .await;
        assert!(ready, "userinfo-service did not become ready");
    }

    pub fn profiles(&self) -> ProfileServiceClient<Authed> {
        ProfileServiceClient::with_interceptor(
            self.channel.clone(),
            CallerCredential::bearer(&self.config.profile_token),
        )
    }

    /// UserInfoService as mini program code calls it (no credential).
    pub fn userinfo(&self) -> UserInfoServiceClient<Authed> {
        UserInfoServiceClient::with_interceptor(self.channel.clone(), CallerCredential::none())
    }

    /// UserInfoService as a mini program backend calls it.
    pub fn backend(&self, app_id: &str, secret: &str) -> UserInfoServiceClient<Authed> {
        UserInfoServiceClient::with_interceptor(
            self.channel.clone(),
            CallerCredential::basic(app_id, secret),
        )
    }

    pub async fn stop(mut self) -> Result<(), crate::ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for TestUserInfoServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A complete profile with every field set, for `user_id`.
pub fn demo_profile(user_id: &str) -> miniprogram_proto::userinfo::v1::Profile {
    miniprogram_proto::userinfo::v1::Profile {
        user_id: user_id.into(),
        real_name: "Zhang Wei".into(),
        phone_number: "+86 138 0013 8000".into(),
        avatar: "https://cdn.example.com/avatars/zw.png".into(),
        nick_name: "Wei".into(),
        gender: "m".into(),
        country_code: "CN".into(),
        province: "Zhejiang".into(),
        city: "Hangzhou".into(),
        update_time: None,
    }
}
