//! Cases every [`AuthStore`] implementation must pass, and a macro that makes one
//! `#[tokio::test]` per case for a backend.

use std::sync::Arc;

use miniprogram_token::{Scope, ScopeSet, Timestamp};

use super::*;
use crate::apps::{Feature, FeatureSet};
use crate::clock::Clock;

fn t(n: i64) -> Timestamp {
    Timestamp::from_unix_nanos(n)
}

fn h(b: u8) -> SecretHash {
    [b; 32]
}

fn app(id: &str) -> AppRecord {
    AppRecord {
        app_id: id.into(),
        display_name: format!("App {id}"),
        secret_hash: h(1),
        features: FeatureSet::EMPTY.with(Feature::BasicUserInfo),
        created_at: t(1),
    }
}

fn code(b: u8, app_id: &str, grant: &str) -> AuthCodeRecord {
    AuthCodeRecord {
        code_hash: h(b),
        grant_id: grant.into(),
        app_id: app_id.into(),
        user_id: "user-1".into(),
        scopes: ScopeSet::of(&[Scope::AuthBase, Scope::PhoneNumber]),
        created_at: t(10),
        expires_at: t(100),
        purge_at: t(200),
    }
}

fn revocation(app_id: &str, user: Option<&str>, scopes: ScopeSet, at: i64) -> NewRevocation {
    NewRevocation {
        app_id: app_id.into(),
        user_id: user.map(Into::into),
        scopes,
        token_id: None,
        grant_id: None,
        issued_before: t(at),
        expire_at: t(at + 1000),
    }
}

pub async fn apps_round_trip(store: Arc<dyn AuthStore>) {
    store.insert_app(&app("a1")).await.unwrap();
    assert!(matches!(
        store.insert_app(&app("a1")).await,
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(store.get_app("a1").await.unwrap(), app("a1"));
    assert_eq!(store.get_app_for_grant("a1").await.unwrap(), app("a1"));
    assert!(matches!(
        store.get_app_for_grant("nope").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.get_app("nope").await,
        Err(StoreError::NotFound)
    ));
    store.set_app_secret("a1", &h(9)).await.unwrap();
    assert_eq!(store.get_app("a1").await.unwrap().secret_hash, h(9));
    assert!(matches!(
        store.set_app_secret("nope", &h(9)).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.count_apps().await.unwrap(), 1);
}

pub async fn disabling_a_feature_voids_refresh_tokens_and_logs_a_rule(store: Arc<dyn AuthStore>) {
    store.insert_app(&app("a1")).await.unwrap();
    store.insert_auth_code(&code(2, "a1", "g1")).await.unwrap();
    let redeemed = store
        .redeem_auth_code(&h(2), "a1", &h(3), t(5000), t(20))
        .await
        .unwrap();
    assert!(matches!(redeemed, CodeRedemption::Redeemed(_)));
    let clock = Clock::default();
    let r = revocation("a1", None, ScopeSet::of(&[Scope::PhoneNumber]), 30);
    let basic = FeatureSet::EMPTY.with(Feature::BasicUserInfo);
    let before = clock.now();
    let updated = store
        .set_features("a1", FeatureSet::EMPTY, basic, Some(&r), &clock)
        .await
        .unwrap();
    assert_eq!(updated.features, FeatureSet::EMPTY);
    assert!(
        store
            .get_refresh_token(&h(3))
            .await
            .unwrap()
            .revoked_at
            .is_some()
    );
    let rules = store.revocations_after(0, 10).await.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].scopes, ScopeSet::of(&[Scope::PhoneNumber]));
    assert!(
        rules[0].issued_before > before,
        "the rule is stamped inside the transaction, not with the caller's time"
    );
    assert_eq!(
        rules[0].expire_at.since(rules[0].issued_before),
        r.expire_at.since(r.issued_before),
        "restamping keeps the rule's lifetime"
    );
    assert!(matches!(
        store
            .set_features("nope", FeatureSet::EMPTY, basic, Some(&r), &clock)
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.revocations_after(0, 10).await.unwrap().len(),
        1,
        "failed call wrote nothing"
    );
}

pub async fn feature_changes_are_relative_and_never_lose_each_other(store: Arc<dyn AuthStore>) {
    store.insert_app(&app("a1")).await.unwrap();
    let clock = Clock::default();
    let (phone, codes) = tokio::join!(
        store.set_features(
            "a1",
            FeatureSet::EMPTY.with(Feature::PhoneNumber),
            FeatureSet::EMPTY,
            None,
            &clock
        ),
        store.set_features(
            "a1",
            FeatureSet::EMPTY.with(Feature::UserAuthorization),
            FeatureSet::EMPTY,
            None,
            &clock
        ),
    );
    phone.unwrap();
    codes.unwrap();
    let all = FeatureSet::EMPTY
        .with(Feature::BasicUserInfo)
        .with(Feature::PhoneNumber)
        .with(Feature::UserAuthorization);
    assert_eq!(store.get_app("a1").await.unwrap().features, all);
    let updated = store
        .set_features(
            "a1",
            FeatureSet::EMPTY,
            FeatureSet::EMPTY.with(Feature::PhoneNumber),
            None,
            &clock,
        )
        .await
        .unwrap();
    assert_eq!(updated.features, all.without(Feature::PhoneNumber));
    assert!(
        store.revocations_after(0, 10).await.unwrap().is_empty(),
        "no rule without a revocation"
    );
}

pub async fn decisions_grant_and_deny_atomically(store: Arc<dyn AuthStore>) {
    store.insert_app(&app("a1")).await.unwrap();
    let ui = ScopeSet::of(&[Scope::UserInfo]);
    store
        .record_decision("u1", "a1", ScopeSet::EMPTY, ui, t(1))
        .await
        .unwrap();
    let a = store.get_authorization("u1", "a1").await.unwrap().unwrap();
    assert_eq!((a.granted, a.denied), (ScopeSet::EMPTY, ui));
    store
        .record_decision("u1", "a1", ui, ScopeSet::EMPTY, t(2))
        .await
        .unwrap();
    let a = store.get_authorization("u1", "a1").await.unwrap().unwrap();
    assert_eq!((a.granted, a.denied), (ui, ScopeSet::EMPTY));
    let listed = store.list_authorizations("u1").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1, "App a1");
    assert!(store.get_authorization("u2", "a1").await.unwrap().is_none());
    // A late "deny" (say, of a second modal from a double tap) takes nothing back.
    store
        .record_decision("u1", "a1", ScopeSet::EMPTY, ui, t(3))
        .await
        .unwrap();
    let a = store.get_authorization("u1", "a1").await.unwrap().unwrap();
    assert_eq!((a.granted, a.denied), (ui, ScopeSet::EMPTY));
}

pub async fn withdrawal_removes_scopes_and_appends_rule(store: Arc<dyn AuthStore>) {
    store.insert_app(&app("a1")).await.unwrap();
    let both = ScopeSet::of(&[Scope::AuthBase, Scope::PhoneNumber]);
    store
        .record_decision("u1", "a1", both, ScopeSet::EMPTY, t(1))
        .await
        .unwrap();
    let unspent = |b: u8, scopes: ScopeSet| AuthCodeRecord {
        user_id: "u1".into(),
        scopes,
        expires_at: Timestamp::now().saturating_add(std::time::Duration::from_secs(60)),
        purge_at: Timestamp::now().saturating_add(std::time::Duration::from_secs(120)),
        ..code(b, "a1", &format!("g{b}"))
    };
    store
        .insert_auth_code(&unspent(
            7,
            ScopeSet::of(&[Scope::AuthBase, Scope::PhoneNumber]),
        ))
        .await
        .unwrap();
    store
        .insert_auth_code(&unspent(8, ScopeSet::of(&[Scope::AuthBase])))
        .await
        .unwrap();
    let clock = Clock::default();
    let r = revocation("a1", Some("u1"), ScopeSet::of(&[Scope::PhoneNumber]), 5);
    let remaining = store.withdraw_authorization(&r, &clock).await.unwrap();
    assert_eq!(remaining, ScopeSet::of(&[Scope::AuthBase]));
    let redeem = |b: u8| {
        let store = store.clone();
        async move {
            store
                .redeem_auth_code(&h(b), "a1", &h(b + 100), t(i64::MAX), Timestamp::now())
                .await
                .unwrap()
        }
    };
    assert_eq!(
        redeem(7).await,
        CodeRedemption::NotFound,
        "an unspent code carrying a withdrawn scope is gone"
    );
    assert!(
        matches!(redeem(8).await, CodeRedemption::Redeemed(_)),
        "a code of the scopes still granted survives"
    );
    let all = revocation("a1", Some("u1"), ScopeSet::EMPTY, 6);
    assert_eq!(
        store.withdraw_authorization(&all, &clock).await.unwrap(),
        ScopeSet::EMPTY
    );
    assert!(store.list_authorizations("u1").await.unwrap().is_empty());
    let seqs: Vec<u64> = store
        .revocations_after(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.sequence)
        .collect();
    assert_eq!(seqs.len(), 2);
    assert!(seqs[0] < seqs[1]);
    assert_eq!(store.revocations_after(seqs[0], 10).await.unwrap().len(), 1);
}

pub async fn a_rule_is_found_by_its_sequence_until_swept(store: Arc<dyn AuthStore>) {
    assert_eq!(store.revocation_at(1).await.unwrap(), None, "an empty log");
    let appended = store
        .append_revocation(&revocation("a1", Some("u1"), ScopeSet::EMPTY, 5))
        .await
        .unwrap();
    assert_eq!(
        store.revocation_at(appended.sequence).await.unwrap(),
        Some(appended.clone())
    );
    assert_eq!(store.revocation_at(u64::MAX).await.unwrap(), None);
    store.sweep_expired(t(10_000), 100).await.unwrap();
    assert_eq!(store.revocation_at(appended.sequence).await.unwrap(), None);
    let next = store
        .append_revocation(&revocation("a1", None, ScopeSet::EMPTY, 20_000))
        .await
        .unwrap();
    assert!(next.sequence > appended.sequence, "sequences never restart");
}

fn token_rule(app_id: &str, token_id: &str, at: i64) -> NewRevocation {
    NewRevocation {
        token_id: Some(token_id.into()),
        ..revocation(app_id, Some("u1"), ScopeSet::EMPTY, at)
    }
}

/// Guards the unique indexes of migration 0002 (without them the plain appends below write
/// copies) beside `revoke_token`'s check for a held rule: revoking one token again, even by
/// 50 calls at once, appends one rule.
pub async fn revoking_a_token_again_writes_nothing_even_at_once(store: Arc<dyn AuthStore>) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .revoke_token(&token_rule("a1", "t1", 100 + i), 10, t(0))
                .await
                .unwrap()
        });
    }
    let mut appended = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            TokenRevocation::Appended(_) => appended += 1,
            TokenRevocation::AlreadyRevoked => {}
            TokenRevocation::QuotaReached => panic!("one token is one rule"),
        }
    }
    assert_eq!(appended, 1);
    assert_eq!(store.revocations_after(0, 100).await.unwrap().len(), 1);
    assert!(
        matches!(
            store.append_revocation(&token_rule("a1", "t1", 500)).await,
            Err(StoreError::AlreadyExists)
        ),
        "a plain append of a held token rule writes nothing either"
    );
    let mut family = revocation("a1", Some("u1"), ScopeSet::EMPTY, 5);
    family.grant_id = Some("g1".into());
    store.append_revocation(&family).await.unwrap();
    family.issued_before = t(6);
    assert!(matches!(
        store.append_revocation(&family).await,
        Err(StoreError::AlreadyExists)
    ));
    assert!(matches!(
        store
            .revoke_token(&token_rule("a1", "t2", 100), 10, t(0))
            .await
            .unwrap(),
        TokenRevocation::Appended(_)
    ));
    assert_eq!(store.revocations_after(0, 100).await.unwrap().len(), 3);
}

/// Guards the quota count in `revoke_token` and its check for a held rule (which comes first,
/// so revoking a token again is never refused): an app holding `quota` live token rules gets
/// no more; other apps, repeats and rules past their expiry don't count against it.
pub async fn token_revocations_stop_at_the_app_quota(store: Arc<dyn AuthStore>) {
    for token in ["t1", "t2"] {
        assert!(matches!(
            store
                .revoke_token(&token_rule("a1", token, 100), 2, t(0))
                .await
                .unwrap(),
            TokenRevocation::Appended(_)
        ));
    }
    assert_eq!(
        store
            .revoke_token(&token_rule("a1", "t3", 100), 2, t(0))
            .await
            .unwrap(),
        TokenRevocation::QuotaReached
    );
    assert_eq!(
        store
            .revoke_token(&token_rule("a1", "t1", 200), 2, t(0))
            .await
            .unwrap(),
        TokenRevocation::AlreadyRevoked,
        "a token already revoked is not refused"
    );
    assert!(matches!(
        store
            .revoke_token(&token_rule("a2", "t3", 100), 2, t(0))
            .await
            .unwrap(),
        TokenRevocation::Appended(_)
    ));
    assert_eq!(store.revocations_after(0, 100).await.unwrap().len(), 3);
    // The rules of t1 and t2 expire at t(1100), in the quota window that ends at
    // QUOTA_WINDOW_NANOS: they count until then, and no longer after.
    let window_end = t(QUOTA_WINDOW_NANOS);
    assert_eq!(
        store
            .revoke_token(&token_rule("a1", "t3", 2000), 2, t(QUOTA_WINDOW_NANOS - 1))
            .await
            .unwrap(),
        TokenRevocation::QuotaReached
    );
    let later = |token: &'static str| token_rule("a1", token, QUOTA_WINDOW_NANOS);
    assert!(matches!(
        store
            .revoke_token(&later("t3"), 2, window_end)
            .await
            .unwrap(),
        TokenRevocation::Appended(_)
    ));
    let swept = store.sweep_expired(window_end, 100).await.unwrap();
    assert_eq!(
        (swept.revocations, swept.revocation_quota),
        (3, 2),
        "the rules and the ended windows of both apps"
    );
    assert!(matches!(
        store
            .revoke_token(&later("t4"), 2, window_end)
            .await
            .unwrap(),
        TokenRevocation::Appended(_)
    ));
    assert_eq!(
        store
            .revoke_token(&later("t5"), 2, window_end)
            .await
            .unwrap(),
        TokenRevocation::QuotaReached,
        "the windows still open count after the sweep"
    );
}

/// Guards the granted-scopes check in `withdraw_authorization`: withdrawing what is not
/// granted (again, or never) appends no rule.
pub async fn withdrawing_what_is_not_granted_appends_no_rule(store: Arc<dyn AuthStore>) {
    store.insert_app(&app("a1")).await.unwrap();
    let phone = ScopeSet::of(&[Scope::PhoneNumber]);
    store
        .record_decision("u1", "a1", phone, ScopeSet::EMPTY, t(1))
        .await
        .unwrap();
    let clock = Clock::default();
    let ui = revocation("a1", Some("u1"), ScopeSet::of(&[Scope::UserInfo]), 5);
    assert_eq!(
        store.withdraw_authorization(&ui, &clock).await.unwrap(),
        phone
    );
    assert!(store.revocations_after(0, 10).await.unwrap().is_empty());
    let all = revocation("a1", Some("u1"), ScopeSet::EMPTY, 6);
    for _ in 0..3 {
        store.withdraw_authorization(&all, &clock).await.unwrap();
    }
    let never = revocation("a1", Some("u2"), ScopeSet::EMPTY, 7);
    assert_eq!(
        store.withdraw_authorization(&never, &clock).await.unwrap(),
        ScopeSet::EMPTY
    );
    let rules = store.revocations_after(0, 10).await.unwrap();
    assert_eq!(rules.len(), 1, "only the withdrawal that took something");
    assert_eq!(rules[0].user_id.as_deref(), Some("u1"));
}

/// A log as an older version left it: a rule per repeated revocation of one token, of one
/// family and of one authorization.
pub fn older_log() -> Vec<NewRevocation> {
    let mut family = revocation("a1", Some("u1"), ScopeSet::EMPTY, 0);
    family.grant_id = Some("g1".into());
    let withdrawal = revocation("a1", Some("u1"), ScopeSet::of(&[Scope::UserInfo]), 0);
    (0..3)
        .flat_map(|i| {
            let at = |r: &NewRevocation| NewRevocation {
                issued_before: t(100 * i),
                expire_at: t(100 * i + 1000),
                ..r.clone()
            };
            [at(&token_rule("a1", "t1", 0)), at(&family), at(&withdrawal)]
        })
        .collect()
}

/// After migration 0002 ran on [`older_log`]: the latest rule of the token and of the family
/// is left, and every withdrawal (each has a cut-off of its own); the token rule is counted.
pub async fn older_log_migrated(store: &dyn AuthStore) {
    let rules = store.revocations_after(0, 100).await.unwrap();
    let count = |f: fn(&RevocationRule) -> bool| rules.iter().filter(|r| f(r)).count();
    assert_eq!(count(|r| r.token_id.is_some()), 1);
    assert_eq!(count(|r| r.grant_id.is_some()), 1);
    assert_eq!(count(|r| r.token_id.is_none() && r.grant_id.is_none()), 3);
    assert!(
        rules
            .iter()
            .filter(|r| r.token_id.is_some() || r.grant_id.is_some())
            .all(|r| r.issued_before == t(200)),
        "the latest (widest) rule of each target is kept"
    );
    assert_eq!(
        store
            .revoke_token(&token_rule("a1", "t9", 0), 1, t(0))
            .await
            .unwrap(),
        TokenRevocation::QuotaReached,
        "the token rule kept counts against its app's quota"
    );
}

pub async fn prompts_resolve_once(store: Arc<dyn AuthStore>) {
    let p = PromptRecord {
        prompt_hash: h(4),
        user_id: "u1".into(),
        app_id: "a1".into(),
        scopes: ScopeSet::of(&[Scope::UserInfo]),
        previously_denied: true,
        created_at: t(1),
        expires_at: t(100),
        resolved_at: None,
    };
    store.insert_prompt(&p).await.unwrap();
    assert_eq!(store.get_prompt(&h(4)).await.unwrap(), p);
    let mut wins = 0;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.spawn(async move { store.resolve_prompt(&h(4), t(2)).await.unwrap() });
    }
    while let Some(won) = tasks.join_next().await {
        wins += u32::from(won.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(
        store.get_prompt(&h(4)).await.unwrap().resolved_at,
        Some(t(2))
    );
    assert!(matches!(
        store.get_prompt(&h(5)).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn auth_code_is_single_use_under_concurrency(store: Arc<dyn AuthStore>) {
    store.insert_auth_code(&code(2, "a1", "g1")).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50u8 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .redeem_auth_code(&h(2), "a1", &[100 + i; 32], t(5000), t(20))
                .await
                .unwrap()
        });
    }
    let mut redeemed = 0;
    let mut replays = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            CodeRedemption::Redeemed(c) => {
                assert_eq!(c.grant_id, "g1");
                redeemed += 1;
            }
            CodeRedemption::AlreadyUsed(_) => replays += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((redeemed, replays), (1, 49));
}

pub async fn auth_code_outcomes(store: Arc<dyn AuthStore>) {
    store.insert_auth_code(&code(2, "a1", "g1")).await.unwrap();
    assert_eq!(
        store
            .redeem_auth_code(&h(2), "other", &h(3), t(5000), t(20))
            .await
            .unwrap(),
        CodeRedemption::NotFound
    );
    assert_eq!(
        store
            .redeem_auth_code(&h(2), "a1", &h(3), t(5000), t(100))
            .await
            .unwrap(),
        CodeRedemption::Expired
    );
    assert_eq!(
        store
            .redeem_auth_code(&h(9), "a1", &h(3), t(5000), t(20))
            .await
            .unwrap(),
        CodeRedemption::NotFound
    );
    let rec = store.get_refresh_token(&h(3)).await;
    assert!(
        matches!(rec, Err(StoreError::NotFound)),
        "no refresh token for a failed redemption"
    );
}

pub async fn a_spent_code_is_kept_while_its_refresh_family_can_live(store: Arc<dyn AuthStore>) {
    // The code's own purge time is t(200); its first refresh token lives until t(5000), and a
    // rotation at t(30) extends the family to t(6000).
    store.insert_auth_code(&code(2, "a1", "g1")).await.unwrap();
    store
        .redeem_auth_code(&h(2), "a1", &h(3), t(5000), t(20))
        .await
        .unwrap();
    store
        .rotate_refresh_token(&h(3), "a1", &h(4), t(6000), t(30))
        .await
        .unwrap();
    let swept = store.sweep_expired(t(5500), 100).await.unwrap();
    assert_eq!(swept.auth_codes, 0, "the code outlives its own purge time");
    assert!(
        matches!(
            store
                .redeem_auth_code(&h(2), "a1", &h(9), t(7000), t(5500))
                .await
                .unwrap(),
            CodeRedemption::AlreadyUsed(_)
        ),
        "a late replay is still recognised, so it can void the family"
    );
    let swept = store.sweep_expired(t(6000), 100).await.unwrap();
    assert_eq!(
        swept.auth_codes, 1,
        "gone with the family's last refresh token"
    );
}

pub async fn refresh_rotation_and_family_revocation(store: Arc<dyn AuthStore>) {
    store.insert_auth_code(&code(2, "a1", "g1")).await.unwrap();
    store
        .redeem_auth_code(&h(2), "a1", &h(3), t(5000), t(20))
        .await
        .unwrap();
    let first = store
        .rotate_refresh_token(&h(3), "a1", &h(4), t(6000), t(30))
        .await
        .unwrap();
    assert!(matches!(first, RefreshRotation::Rotated(ref r) if r.family_id == "g1"));
    let reuse = store
        .rotate_refresh_token(&h(3), "a1", &h(5), t(6000), t(40))
        .await
        .unwrap();
    assert!(matches!(reuse, RefreshRotation::AlreadyUsed(_)));
    assert_eq!(
        store
            .rotate_refresh_token(&h(4), "other", &h(5), t(6000), t(40))
            .await
            .unwrap(),
        RefreshRotation::NotFound
    );
    let mut r = revocation("a1", Some("user-1"), ScopeSet::EMPTY, 50);
    r.grant_id = Some("g1".into());
    assert!(store.revoke_family("g1", &r, t(50)).await.unwrap());
    assert!(
        !store.revoke_family("g1", &r, t(51)).await.unwrap(),
        "second revocation is a no-op"
    );
    assert_eq!(
        store
            .rotate_refresh_token(&h(4), "a1", &h(5), t(6000), t(60))
            .await
            .unwrap(),
        RefreshRotation::Revoked
    );
    assert_eq!(store.revocations_after(0, 10).await.unwrap().len(), 1);
    let rules = store
        .revocations_for_subject("a1", "user-1", t(40))
        .await
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert!(
        store
            .revocations_for_subject("a1", "user-1", t(51))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn refresh_token_expiry(store: Arc<dyn AuthStore>) {
    store.insert_auth_code(&code(2, "a1", "g1")).await.unwrap();
    store
        .redeem_auth_code(&h(2), "a1", &h(3), t(50), t(20))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_refresh_token(&h(3), "a1", &h(4), t(6000), t(50))
            .await
            .unwrap(),
        RefreshRotation::Expired
    );
}

pub async fn token_keys_round_trip(store: Arc<dyn AuthStore>) {
    let k = StoredTokenKey {
        key_id: "k1".into(),
        sealed_key: "sealed".into(),
        created_at: t(1),
        retire_at: t(2),
        expire_at: t(3),
    };
    store.insert_token_key(&k).await.unwrap();
    assert!(matches!(
        store.insert_token_key(&k).await,
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(store.list_token_keys().await.unwrap(), vec![k.clone()]);

    assert!(!store.reseal_token_key("k1", "other", "new").await.unwrap());
    assert!(
        store
            .reseal_token_key("k1", "sealed", "resealed")
            .await
            .unwrap()
    );
    assert!(
        !store
            .reseal_token_key("k1", "sealed", "again")
            .await
            .unwrap()
    );
    let resealed = StoredTokenKey {
        sealed_key: "resealed".into(),
        ..k.clone()
    };
    assert_eq!(
        store.list_token_keys().await.unwrap(),
        vec![resealed.clone()]
    );

    // Retired at t(1)+1: it neither mints nor verifies from then on; once dead, it stays so.
    let at = Timestamp::from_unix_nanos(t(1).unix_nanos() + 1);
    assert!(store.retire_token_key("k1", at).await.unwrap());
    assert_eq!(
        store.list_token_keys().await.unwrap(),
        vec![StoredTokenKey {
            retire_at: at,
            expire_at: at,
            ..resealed
        }]
    );
    assert!(!store.retire_token_key("k1", t(2)).await.unwrap());
    assert!(!store.retire_token_key("nope", t(0)).await.unwrap());
}

pub async fn sealed_secrets_are_stored_once_and_resealed_in_place(store: Arc<dyn AuthStore>) {
    assert_eq!(store.get_sealed_secret("pairwise").await.unwrap(), None);
    store
        .insert_sealed_secret("pairwise", "first", t(1))
        .await
        .unwrap();
    assert!(matches!(
        store.insert_sealed_secret("pairwise", "second", t(2)).await,
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(
        store
            .get_sealed_secret("pairwise")
            .await
            .unwrap()
            .as_deref(),
        Some("first")
    );
    assert!(
        !store
            .reseal_secret("pairwise", "second", "x")
            .await
            .unwrap()
    );
    assert!(
        store
            .reseal_secret("pairwise", "first", "third")
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_sealed_secret("pairwise")
            .await
            .unwrap()
            .as_deref(),
        Some("third")
    );
}

pub async fn sweep_removes_only_expired_rows_in_batches(store: Arc<dyn AuthStore>) {
    for i in 0..5u8 {
        let mut c = code(i, "a1", &format!("g{i}"));
        c.purge_at = t(if i < 3 { 100 } else { 10_000 });
        store.insert_auth_code(&c).await.unwrap();
    }
    // Rules expire 1000ns after their instant: two of these are gone by t=1000.
    for at in [-500, -100, 500, 900] {
        store
            .append_revocation(&revocation("a1", None, ScopeSet::EMPTY, at))
            .await
            .unwrap();
    }
    let first = store.sweep_expired(t(1000), 2).await.unwrap();
    assert_eq!((first.auth_codes, first.revocations), (2, 2));
    let second = store.sweep_expired(t(1000), 2).await.unwrap();
    assert_eq!((second.auth_codes, second.revocations), (1, 0));
    assert!(matches!(
        store
            .redeem_auth_code(&h(4), "a1", &h(50), t(5000), t(20))
            .await
            .unwrap(),
        CodeRedemption::Redeemed(_)
    ));
    assert_eq!(store.revocations_after(0, 10).await.unwrap().len(), 2);
}

/// Makes one `#[tokio::test]` per conformance case, each on a fresh store from `$factory`.
#[macro_export]
macro_rules! auth_store_conformance {
    ($factory:path) => {
        $crate::auth_store_conformance!(@cases $factory,
            apps_round_trip,
            disabling_a_feature_voids_refresh_tokens_and_logs_a_rule,
            feature_changes_are_relative_and_never_lose_each_other,
            decisions_grant_and_deny_atomically,
            withdrawal_removes_scopes_and_appends_rule,
            a_rule_is_found_by_its_sequence_until_swept,
            revoking_a_token_again_writes_nothing_even_at_once,
            token_revocations_stop_at_the_app_quota,
            withdrawing_what_is_not_granted_appends_no_rule,
            prompts_resolve_once,
            auth_code_is_single_use_under_concurrency,
            auth_code_outcomes,
            refresh_rotation_and_family_revocation,
            a_spent_code_is_kept_while_its_refresh_family_can_live,
            refresh_token_expiry,
            token_keys_round_trip,
            sealed_secrets_are_stored_once_and_resealed_in_place,
            sweep_removes_only_expired_rows_in_batches,
        );
    };
    (@cases $factory:path, $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some((store, _guard)) = $factory().await else { return };
                $crate::store::conformance::$case(store).await;
            }
        )+
    };
}
