//! userinfo-service: the wallet's profile store, and the public fields (or, under its own
//! scope, the phone number) a mini program may read, after checking its token locally
//! against keys and revocations followed from auth-service.
#![forbid(unsafe_code)]

pub mod config;
pub mod disclosures;
pub mod error;
pub mod grpc;
pub mod model;
pub mod profile_cache;
pub mod profiles;
pub mod read_limits;
pub mod readiness;
pub mod store;
pub mod user_data;
pub mod userinfo;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use miniprogram_proto::caller_credentials::TokenDigest;
use miniprogram_proto::userinfo::v1::profile_service_server::ProfileServiceServer;
use miniprogram_proto::userinfo::v1::user_info_service_server::UserInfoServiceServer;
use miniprogram_token::{Clock, SystemClock};
use service_runtime::ServerLayers;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Router;
use tonic::{Request, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::config::UserInfoConfig;
use crate::disclosures::DisclosureLedger;
use crate::error::UserInfoError;
use crate::grpc::auth_client::{self, AuthServiceLink, LinkError};
use crate::profile_cache::PublicProfileCache;
use crate::profiles::ProfileRegistry;
use crate::read_limits::ReadLimiter;
use crate::readiness::HealthGate;
use crate::store::StoreError;
use crate::user_data::UserData;
use crate::userinfo::{ReadOversight, UserInfoReader};
use miniprogram_token::TokenVerifier;

/// The gRPC service names this server answers for (besides health and reflection).
pub const SERVICE_NAMES: [&str; 2] = [
    miniprogram_proto::userinfo::v1::user_info_service_server::SERVICE_NAME,
    miniprogram_proto::userinfo::v1::profile_service_server::SERVICE_NAME,
];

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("auth-service link: {0}")]
    Link(#[from] LinkError),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds `config.addr` and serves until `shutdown` resolves.
pub async fn serve(
    config: UserInfoConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(config.addr).await?;
    serve_with_listener(config, listener, shutdown).await
}

/// ProfileService's check: the profile token passes; the verifier token is a known caller
/// without permission. Tokens are compared as SHA-256 digests in constant time, so timing
/// reveals neither a prefix nor a token's length.
fn profile_check(
    profile: Arc<TokenDigest>,
    verifier: Arc<TokenDigest>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        let header = grpc::authorization_header(request.metadata());
        let presented = TokenDigest::of(
            miniprogram_proto::caller_credentials::bearer_token(header)
                .ok_or(UserInfoError::UnauthenticatedCaller)?,
        );
        if profile.matches(&presented) {
            Ok(request)
        } else if verifier.matches(&presented) {
            Err(UserInfoError::CallerNotPermitted.into())
        } else {
            Err(UserInfoError::UnauthenticatedCaller.into())
        }
    }
}

/// Serves on an already bound listener until `shutdown` resolves.
pub async fn serve_with_listener(
    config: UserInfoConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    service_runtime::set_health(&health, &SERVICE_NAMES, ServingStatus::NotServing).await;

    let store = store::open_with(&config.database_url, config.erasure_vacuum).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
    let link = auth_link(&config)?;
    let verifier = Arc::new(TokenVerifier::new(config.revocation_stale_after));
    let cache = Arc::new(PublicProfileCache::new(config.profile_cache_ttl));
    let disclosures = config.disclosures;
    let ledger = Arc::new(DisclosureLedger::new(
        store.clone(),
        disclosures.max_pending,
    ));
    let limits = Arc::new(ReadLimiter::new(config.read_limits));
    let reader = Arc::new(UserInfoReader::new(
        store.clone(),
        cache.clone(),
        verifier.clone(),
        Arc::new(link.clone()),
        Arc::new(link.clone()),
        config.key_refetch_interval,
        ReadOversight {
            limits: limits.clone(),
            ledger: ledger.clone(),
        },
    ));

    let draining = tokio_util::sync::CancellationToken::new();
    let health_gate = HealthGate::new(health.clone(), &SERVICE_NAMES, draining.clone());
    let mut background = tokio::task::JoinSet::new();
    background.spawn(follow_auth_service(link.clone(), verifier.clone()));
    background.spawn(health_gate.clone().follow(verifier.clone(), clock.clone()));
    background.spawn(report_revocation_state(verifier.clone(), clock.clone()));
    background.spawn(limits.run_pruning());
    background.spawn(ledger.clone().run_flushing(disclosures.flush_interval));
    background.spawn(
        ledger
            .clone()
            .run_sweeping(disclosures.retention, clock.clone()),
    );

    let profiles = ProfileRegistry::new(store.clone(), cache, ledger.clone());
    let user_data = UserData::new(store.clone(), profiles.clone(), Arc::new(link), clock);
    background.spawn(user_data::run(
        user_data.clone(),
        config.erasure_retry_interval,
    ));
    let router = router(&config, reader, profiles, user_data, health_service)?;

    let addr = listener.local_addr()?;
    tracing::info!(%addr, auth_url = %config.auth_url, "userinfo-service listening");
    let shutdown = async move {
        shutdown.await;
        health_gate.begin_drain().await;
    };
    let result = service_runtime::serve_until_drained(
        router,
        listener,
        &config.limits,
        shutdown,
        health,
        &SERVICE_NAMES,
        draining,
        config.drain_timeout,
    )
    .await;
    background.shutdown().await;
    // Every call has been answered: the reads counted since the last flush are written now.
    if let Err(e) = ledger.flush().await {
        tracing::error!(error = %e, "the last disclosure batch could not be written");
    }
    store.close().await;
    tracing::info!("userinfo-service stopped");
    Ok(result?)
}

/// The link to auth-service: as the verifier, and for exports and erasures when
/// `PRIVACY_TOKEN` is set.
fn auth_link(config: &UserInfoConfig) -> Result<AuthServiceLink, ServeError> {
    let link = AuthServiceLink::new(
        &config.auth_url,
        &config.verifier_token,
        config.auth_tls_ca_pem.as_deref(),
    )?;
    match &config.privacy_token {
        Some(token) => Ok(link.with_privacy_token(token)?),
        None => {
            tracing::warn!(
                "PRIVACY_TOKEN is not set: ExportUserData is unavailable and erasures stay pending at auth-service"
            );
            Ok(link)
        }
    }
}

/// Loads the token keys, then follows the revocation stream for as long as the server runs.
async fn follow_auth_service(link: AuthServiceLink, verifier: Arc<TokenVerifier>) {
    auth_client::load_keys(&link, &verifier).await;
    tracing::info!("token keys loaded; following revocations");
    auth_client::follow_revocations(link, verifier).await;
}

/// The server: health, reflection, and our two services (profiles behind their own credential).
fn router(
    config: &UserInfoConfig,
    reader: Arc<UserInfoReader>,
    profiles: ProfileRegistry,
    user_data: UserData,
    health_service: HealthServer<impl Health>,
) -> Result<Router<ServerLayers>, ServeError> {
    let profile = Arc::new(TokenDigest::of(&config.profile_token));
    let verifier_token = Arc::new(TokenDigest::of(&config.verifier_token));
    let max = config.limits.max_message_bytes;
    let tls = config.tls.as_ref();
    let builder = service_runtime::server_builder_with_tls(&config.limits, &SERVICE_NAMES, tls);
    let reflection = || miniprogram_proto::reflection(&SERVICE_NAMES);
    Ok(builder?
        .add_service(health_service.max_decoding_message_size(max))
        .add_service(reflection().build_v1()?.max_decoding_message_size(max))
        .add_service(reflection().build_v1alpha()?.max_decoding_message_size(max))
        .add_service(
            UserInfoServiceServer::new(grpc::userinfo::UserInfoGrpc {
                reader,
                trusted_proxies: config.trusted_proxies.clone(),
            })
            .max_decoding_message_size(max),
        )
        .add_service(InterceptedService::new(
            ProfileServiceServer::new(grpc::profiles::ProfileGrpc {
                profiles,
                user_data,
            })
            .max_decoding_message_size(max),
            profile_check(profile, verifier_token),
        )))
}

/// Sets the revocation gauges every second, forever: stream lag and rules held.
async fn report_revocation_state(verifier: Arc<TokenVerifier>, clock: Arc<dyn Clock>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let lag = verifier
            .silence(clock.monotonic())
            .map_or(f64::INFINITY, |d| d.as_secs_f64());
        metrics::gauge!("revocation_stream_lag_seconds").set(lag);
        metrics::gauge!("revocation_rules").set(verifier.rule_count() as f64);
    }
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests {
    /// Arrows point down, gRPC -> services -> store -> model, never around a cycle: guards
    /// that no store file imports a service and that the model imports nothing of ours.
    #[test]
    fn arrows_point_down() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let services: &[&str] = &[
            "error",
            "disclosures",
            "user_data",
            "read_limits",
            "profiles",
            "profile_cache",
            "userinfo",
            "verifier",
            "readiness",
            "config",
        ];
        let layers = [&["model"][..], &["store"], services, &["grpc"]];
        auth_service::testing::layers::assert_arrows_point_down(&src, &layers);
    }
}
