//! Key refetch on an unknown key id: every caller waiting on a refetch gets the new key, and
//! refetches are rate limited.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use miniprogram_proto::auth::v1::Scope::UserInfo;
use miniprogram_token::{KeyRing, Scope, SigningKey, Timestamp, TokenClaims, TokenKind};
use miniprogram_token::{TokenCheckError, TokenVerifier};
use tokio::sync::watch;
use userinfo_service::disclosures::DisclosureLedger;
use userinfo_service::error::UserInfoError;
use userinfo_service::grpc::auth_client::AuthServiceLink;
use userinfo_service::model::{Profile, PublicProfile};
use userinfo_service::profile_cache::PublicProfileCache;
use userinfo_service::read_limits::ReadLimiter;
use userinfo_service::testing::generous_read_limits;
use userinfo_service::userinfo::{KeySource, ReadOversight, UserInfoReader};

use super::{ALL_FEATURES, TestAuthServer, consent_token, open_user_info, upsert_profile};

/// Consents until auth-service issues a token under a key other than `old_token`'s.
async fn token_under_a_new_key(auth: &TestAuthServer, app_id: &str, old_token: &str) -> String {
    let old_kid = KeyRing::key_id_of(old_token).expect("key id");
    let started = Instant::now();
    loop {
        // auth-service rotates on a background tick at least 1 s apart, or when keys are
        // listed. With a 1 s period the tick can land just after the old key retired, so list
        // the keys first, as a verifier would; the next consent then finds a current key.
        auth.verifier()
            .list_token_keys(miniprogram_proto::auth::v1::ListTokenKeysRequest {})
            .await
            .expect("list keys");
        let token = consent_token(&auth.consent("u1", app_id, &[UserInfo]).await);
        if KeyRing::key_id_of(&token).expect("key id") != old_kid {
            return token;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no key rotation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn after_a_key_rotation_concurrent_calls_with_a_new_key_token_all_succeed() {
    let auth = TestAuthServer::start_with(|a| a.key_rotation_period = Duration::from_secs(1)).await;
    let (app_id, _) = auth.create_app(&ALL_FEATURES).await;
    let first = consent_token(&auth.consent("u1", &app_id, &[UserInfo]).await);
    let userinfo = super::userinfo_for(&auth, |u| {
        u.key_refetch_interval = Duration::from_secs(60);
    })
    .await;
    upsert_profile(&userinfo, "u1").await;
    open_user_info(&userinfo, &first).await.expect("old key");
    let rotated = token_under_a_new_key(&auth, &app_id, &first).await;

    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (client, token) = (userinfo.userinfo(), rotated.clone());
        calls.spawn(async move {
            let mut client = client;
            client
                .get_open_user_info(miniprogram_proto::userinfo::v1::GetOpenUserInfoRequest {
                    consent_token: token,
                })
                .await
        });
    }
    let mut failures = Vec::new();
    while let Some(result) = calls.join_next().await {
        if let Err(status) = result.expect("task") {
            failures.push(super::reason(&status));
        }
    }
    assert!(failures.is_empty(), "failed calls: {failures:?}");
}

/// The real link to auth-service, counting ListTokenKeys calls and holding each until
/// `release` says so (so callers can pile up behind a refetch in flight).
struct CountedKeys {
    link: AuthServiceLink,
    calls: AtomicUsize,
    release: watch::Receiver<bool>,
}

#[async_trait]
impl KeySource for CountedKeys {
    async fn fetch_keys(&self) -> Result<Vec<miniprogram_token::VerifyingKey>, UserInfoError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut release = self.release.clone();
        let _ = release.wait_for(|open| *open).await;
        self.link.fetch_keys().await
    }
}

struct ReaderUnderTest {
    reader: Arc<UserInfoReader>,
    keys: Arc<CountedKeys>,
    verifier: Arc<TokenVerifier>,
    release: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// A reader over a real SQLite store holding u1's profile, with auth-service's current keys
/// and a fresh revocation view, refetching keys at most once a minute.
async fn reader_for(auth: &TestAuthServer) -> ReaderUnderTest {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = userinfo_service::store::open(&format!(
        "sqlite://{}",
        dir.path().join("userinfo.db").display()
    ))
    .await
    .expect("store");
    store
        .upsert(&Profile {
            user_id: "u1".into(),
            real_name: "Zhang Wei".into(),
            phone_number: "+86 138 0013 8000".into(),
            public: PublicProfile {
                nick_name: "Wei".into(),
                ..PublicProfile::default()
            },
            updated_at: Timestamp::now(),
        })
        .await
        .expect("profile");
    let link = AuthServiceLink::new(
        &format!("http://{}", auth.addr),
        &auth.config.callers.verifier,
        None,
    )
    .expect("link");
    let verifier = Arc::new(TokenVerifier::new(Duration::from_secs(3600)));
    assert!(verifier.replace_keys(link.fetch_keys().await.expect("keys")));
    verifier.mark_caught_up(Instant::now());
    let (release, released) = watch::channel(false);
    let keys = Arc::new(CountedKeys {
        link: link.clone(),
        calls: AtomicUsize::new(0),
        release: released,
    });
    let reader = Arc::new(UserInfoReader::new(
        store.clone(),
        Arc::new(PublicProfileCache::new(Duration::ZERO)),
        verifier.clone(),
        keys.clone(),
        Arc::new(link),
        Duration::from_secs(60),
        ReadOversight {
            limits: Arc::new(ReadLimiter::new(generous_read_limits())),
            ledger: Arc::new(DisclosureLedger::new(store, 1000)),
        },
    ));
    ReaderUnderTest {
        reader,
        keys,
        verifier,
        release,
        _dir: dir,
    }
}

/// Runs `count` concurrent reads of `token`; lets the held key listing go once they have
/// had time to queue behind it.
async fn concurrent_reads(
    r: &ReaderUnderTest,
    token: &str,
    count: usize,
) -> Vec<Result<PublicProfile, UserInfoError>> {
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..count {
        let (reader, token) = (r.reader.clone(), token.to_owned());
        reads.spawn(async move {
            reader
                .open_user_info(&token, Timestamp::now(), Instant::now())
                .await
        });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = r.release.send(true);
    let mut results = Vec::new();
    while let Some(result) = reads.join_next().await {
        results.push(result.expect("task"));
    }
    results
}

#[tokio::test]
async fn callers_queued_behind_a_refetch_find_the_new_key_and_it_is_fetched_once() {
    let auth = TestAuthServer::start_with(|a| a.key_rotation_period = Duration::from_secs(1)).await;
    let (app_id, _) = auth.create_app(&ALL_FEATURES).await;
    let first = consent_token(&auth.consent("u1", &app_id, &[UserInfo]).await);
    let r = reader_for(&auth).await;
    let rotated = token_under_a_new_key(&auth, &app_id, &first).await;
    assert_eq!(
        r.verifier
            .check(
                TokenKind::Consent,
                &rotated,
                Timestamp::now(),
                Instant::now()
            )
            .err(),
        Some(TokenCheckError::UnknownKey)
    );

    let results = concurrent_reads(&r, &rotated, 24).await;
    let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "failed reads: {failures:?}");
    assert_eq!(r.keys.calls.load(Ordering::SeqCst), 1);
}

/// A well-formed token under a key auth-service never listed.
fn token_under_an_unlisted_key() -> String {
    let now = Timestamp::now();
    let ring = KeyRing::signing([SigningKey::generate(
        "never-listed".into(),
        now,
        now.saturating_add(Duration::from_secs(3600)),
        now.saturating_add(Duration::from_secs(7200)),
    )
    .expect("key")]);
    let claims = TokenClaims {
        app_id: "app".into(),
        user_id: "u1".into(),
        scopes: [Scope::UserInfo].into_iter().collect(),
        issued_at: now.unix_nanos(),
        expires_at: now.saturating_add(Duration::from_secs(600)).unix_nanos(),
        token_id: "t1".into(),
        grant_id: "g1".into(),
    };
    ring.mint(TokenKind::Consent, &claims, now).expect("mint")
}

#[tokio::test]
async fn unknown_key_ids_refetch_keys_at_most_once_per_interval() {
    let auth = TestAuthServer::start().await;
    let r = reader_for(&auth).await;
    let unlisted = token_under_an_unlisted_key();
    for _ in 0..2 {
        let results = concurrent_reads(&r, &unlisted, 16).await;
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(UserInfoError::InvalidAccessToken))),
            "{results:?}"
        );
    }
    assert_eq!(r.keys.calls.load(Ordering::SeqCst), 1);
}
