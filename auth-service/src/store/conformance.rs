//! Cases every [`AuthStore`] must pass, each run as a test on SQLite and on PostgreSQL.

use std::sync::Arc;

use miniprogram_token::{Scope, ScopeSet, Timestamp};

use sql_backend::Engine;
use sqlx::migrate::Migrator;

use super::*;
use crate::model::{
    AppRecord, AuthCodeRecord, AuthorizationChange, ChangeReason, ChangeSubject, ConsentEvent,
    ConsentRecord, Feature, FeatureSet, NewRevocation, PromptRecord, RefreshTokenRecord,
    ScopePurpose, SecretHash, StoredTokenKey, Trigger,
};
use miniprogram_token::RevocationRule;

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
        declaration_version: 0,
        declared_scopes: ScopeSet::EMPTY,
        declared_at: t(1),
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
        used_at: None,
        purge_at: t(200),
    }
}

/// An open prompt of `user_id` for `app_id` for the phone number.
fn open_prompt(b: u8, user_id: &str, app_id: &str, expires_at: i64) -> PromptRecord {
    PromptRecord {
        prompt_hash: h(b),
        user_id: user_id.into(),
        app_id: app_id.into(),
        scopes: ScopeSet::of(&[Scope::PhoneNumber]),
        previously_denied: false,
        created_at: t(0),
        expires_at: t(expires_at),
        resolved_at: None,
        declaration_version: 0,
        trigger: Some(Trigger::UserTap),
        purposes: Vec::new(),
    }
}

fn refresh(b: u8, family: &str, expires_at: i64) -> RefreshTokenRecord {
    RefreshTokenRecord {
        token_hash: h(b),
        family_id: family.into(),
        app_id: "a1".into(),
        user_id: "user-1".into(),
        scopes: ScopeSet::of(&[Scope::AuthBase, Scope::PhoneNumber]),
        created_at: t(20),
        expires_at: t(expires_at),
        used_at: None,
        revoked_at: None,
        generation: 1,
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

/// Spends code `b` of app a1 in a transaction of its own, as an exchange does.
async fn spend(store: &dyn AuthStore, b: u8, now: i64) -> Option<AuthCodeRecord> {
    let mut tx = store.begin().await.unwrap();
    let spent = tx.grants().spend_code(&h(b), "a1", t(now)).await.unwrap();
    tx.commit().await.unwrap();
    spent
}

pub async fn apps_round_trip(store: Arc<dyn AuthStore>) {
    let mut repos = store.repositories();
    let apps = repos.apps();
    apps.insert(&app("a1")).await.unwrap();
    assert!(matches!(
        apps.insert(&app("a1")).await,
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(apps.get("a1").await.unwrap(), Some(app("a1")));
    assert_eq!(apps.get_in_order("a1").await.unwrap(), Some(app("a1")));
    assert_eq!(apps.get_in_order("nope").await.unwrap(), None);
    assert_eq!(apps.get("nope").await.unwrap(), None);
    assert!(apps.set_secret("a1", &h(9)).await.unwrap());
    assert_eq!(apps.get("a1").await.unwrap().unwrap().secret_hash, h(9));
    assert!(!apps.set_secret("nope", &h(9)).await.unwrap());
    assert_eq!(apps.count().await.unwrap(), 1);
}

/// A feature switch with its revocation in one transaction; a dropped transaction keeps
/// nothing it wrote.
pub async fn disabling_a_feature_voids_refresh_tokens_and_logs_a_rule(store: Arc<dyn AuthStore>) {
    store
        .repositories()
        .apps()
        .insert(&app("a1"))
        .await
        .unwrap();
    let mut repos = store.repositories();
    repos
        .grants()
        .insert_code(&code(2, "a1", "g1"))
        .await
        .unwrap();
    let token = refresh(3, "g1", 5000);
    repos.grants().insert_refresh_token(&token).await.unwrap();
    let phone = ScopeSet::of(&[Scope::PhoneNumber]);
    let basic = FeatureSet::EMPTY.with(Feature::BasicUserInfo);
    let mut tx = store.begin().await.unwrap();
    let updated = tx.apps().switch_features("a1", FeatureSet::EMPTY, basic);
    assert_eq!(updated.await.unwrap().unwrap().features, FeatureSet::EMPTY);
    let grants = tx.grants();
    grants
        .revoke_tokens_carrying("a1", None, phone, t(30))
        .await
        .unwrap();
    let r = revocation("a1", None, phone, 30);
    tx.revocations().append(&r).await.unwrap();
    tx.commit().await.unwrap();
    let revoked = repos.grants().refresh_token(&h(3)).await.unwrap();
    assert_eq!(revoked.unwrap().revoked_at, Some(t(30)));
    let rules = repos.revocations().after(0, 10).await.unwrap();
    assert_eq!((rules.len(), rules[0].scopes), (1, phone));

    let mut tx = store.begin().await.unwrap();
    tx.revocations().append(&r).await.unwrap();
    let missing = tx.apps().switch_features("nope", FeatureSet::EMPTY, basic);
    assert_eq!(missing.await.unwrap(), None);
    drop(tx);
    assert_eq!(
        repos.revocations().after(0, 10).await.unwrap().len(),
        1,
        "a transaction dropped uncommitted wrote nothing"
    );
}

pub async fn feature_changes_are_relative_and_never_lose_each_other(store: Arc<dyn AuthStore>) {
    store
        .repositories()
        .apps()
        .insert(&app("a1"))
        .await
        .unwrap();
    let switch = |on: Feature| {
        let store = store.clone();
        async move {
            let on = FeatureSet::EMPTY.with(on);
            let mut repos = store.repositories();
            let switched = repos.apps().switch_features("a1", on, FeatureSet::EMPTY);
            switched.await.unwrap().unwrap()
        }
    };
    tokio::join!(
        switch(Feature::PhoneNumber),
        switch(Feature::UserAuthorization)
    );
    let all = FeatureSet::EMPTY
        .with(Feature::BasicUserInfo)
        .with(Feature::PhoneNumber)
        .with(Feature::UserAuthorization);
    let mut repos = store.repositories();
    assert_eq!(repos.apps().get("a1").await.unwrap().unwrap().features, all);
    let off = FeatureSet::EMPTY.with(Feature::PhoneNumber);
    let updated = repos.apps().switch_features("a1", FeatureSet::EMPTY, off);
    let updated = updated.await.unwrap().unwrap();
    assert_eq!(updated.features, all.without(Feature::PhoneNumber));
}

pub async fn decisions_grant_and_deny_atomically(store: Arc<dyn AuthStore>) {
    store
        .repositories()
        .apps()
        .insert(&app("a1"))
        .await
        .unwrap();
    let mut repos = store.repositories();
    let consents = repos.consents();
    let ui = ScopeSet::of(&[Scope::UserInfo]);
    let none = ScopeSet::EMPTY;
    consents
        .record_decision(&crate::store::Decision::new("u1", "a1", none, ui, t(1)))
        .await
        .unwrap();
    let a = consents.authorization("u1", "a1").await.unwrap().unwrap();
    assert_eq!((a.granted, a.denied), (none, ui));
    consents
        .record_decision(&crate::store::Decision::new("u1", "a1", ui, none, t(2)))
        .await
        .unwrap();
    let a = consents.authorization("u1", "a1").await.unwrap().unwrap();
    assert_eq!((a.granted, a.denied), (ui, none));
    let listed = consents.list("u1").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1, "App a1");
    assert!(consents.authorization("u2", "a1").await.unwrap().is_none());
    // A late "deny" (say, of a second modal from a double tap) takes nothing back.
    consents
        .record_decision(&crate::store::Decision::new("u1", "a1", none, ui, t(3)))
        .await
        .unwrap();
    let a = consents.authorization("u1", "a1").await.unwrap().unwrap();
    assert_eq!((a.granted, a.denied), (ui, none));
}

/// A withdrawal as the consent flow runs it: scopes taken back, unspent codes carrying them
/// deleted, the user's refresh tokens carrying them revoked (no other user's), a rule appended.
pub async fn withdrawal_removes_scopes_and_appends_rule(store: Arc<dyn AuthStore>) {
    store
        .repositories()
        .apps()
        .insert(&app("a1"))
        .await
        .unwrap();
    let both = ScopeSet::of(&[Scope::AuthBase, Scope::PhoneNumber]);
    let (phone, base) = (
        ScopeSet::of(&[Scope::PhoneNumber]),
        ScopeSet::of(&[Scope::AuthBase]),
    );
    let mut repos = store.repositories();
    let consents = repos.consents();
    consents
        .record_decision(&crate::store::Decision::new(
            "u1",
            "a1",
            both,
            ScopeSet::EMPTY,
            t(1),
        ))
        .await
        .unwrap();
    let grants = repos.grants();
    for (b, scopes) in [(7, both), (8, base)] {
        let c = AuthCodeRecord {
            user_id: "u1".into(),
            scopes,
            ..code(b, "a1", &format!("g{b}"))
        };
        grants.insert_code(&c).await.unwrap();
    }
    let theirs = RefreshTokenRecord {
        user_id: "u2".into(),
        ..refresh(9, "g9", 5000)
    };
    grants.insert_refresh_token(&theirs).await.unwrap();
    let withdraw = |scopes: ScopeSet, at: i64| {
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            let remaining = tx.consents().withdraw("u1", "a1", scopes).await.unwrap();
            tx.consents().stamp("u1", "a1", t(at)).await.unwrap();
            let grants = tx.grants();
            grants
                .delete_unspent_codes("a1", "u1", scopes)
                .await
                .unwrap();
            let revoke = grants.revoke_tokens_carrying("a1", Some("u1"), scopes, t(at));
            revoke.await.unwrap();
            let rule = revocation("a1", Some("u1"), scopes, at);
            tx.revocations().append(&rule).await.unwrap();
            tx.commit().await.unwrap();
            remaining
        }
    };
    assert_eq!(withdraw(phone, 5).await, Some(base));
    let grants = repos.grants();
    assert_eq!(
        grants.code(&h(7)).await.unwrap(),
        None,
        "a code carrying a withdrawn scope is gone"
    );
    assert!(
        grants.code(&h(8)).await.unwrap().is_some(),
        "a code of the scopes still granted stays"
    );
    let theirs = grants.refresh_token(&h(9)).await.unwrap().unwrap();
    assert_eq!(
        theirs.revoked_at, None,
        "another user's token is not touched"
    );
    let all = ScopeSet::of(&Scope::ALL);
    assert_eq!(withdraw(all, 6).await, Some(ScopeSet::EMPTY));
    let consents = repos.consents();
    let listed = consents.list("u1").await.unwrap();
    assert!(listed.iter().all(|(a, _)| a.granted.is_empty()));
    assert_eq!(
        consents
            .authorization("u1", "a1")
            .await
            .unwrap()
            .unwrap()
            .updated_at,
        t(6)
    );
    assert_eq!(consents.withdraw("u2", "a1", all).await.unwrap(), None);
    let rules = repos.revocations().after(0, 10).await.unwrap();
    let seqs: Vec<u64> = rules.iter().map(|r| r.sequence).collect();
    assert_eq!(seqs.len(), 2);
    assert!(seqs[0] < seqs[1]);
    assert_eq!(
        repos.revocations().after(seqs[0], 10).await.unwrap().len(),
        1
    );
}

pub async fn a_rule_is_found_by_its_sequence_until_swept(store: Arc<dyn AuthStore>) {
    let mut repos = store.repositories();
    let log = repos.revocations();
    assert_eq!(log.at(1).await.unwrap(), None, "an empty log");
    let rule = revocation("a1", Some("u1"), ScopeSet::EMPTY, 5);
    let appended = log.append(&rule).await.unwrap().expect("appended");
    assert_eq!(
        log.at(appended.sequence).await.unwrap(),
        Some(appended.clone())
    );
    assert_eq!(log.at(u64::MAX).await.unwrap(), None);
    store.sweep_expired(t(10_000), 100).await.unwrap();
    let log = repos.revocations();
    assert_eq!(log.at(appended.sequence).await.unwrap(), None);
    let next = revocation("a1", None, ScopeSet::EMPTY, 20_000);
    let next = log.append(&next).await.unwrap().expect("appended");
    assert!(next.sequence > appended.sequence, "sequences never restart");
}

fn token_rule(app_id: &str, token_id: &str, at: i64) -> NewRevocation {
    NewRevocation {
        token_id: Some(token_id.into()),
        ..revocation(app_id, Some("u1"), ScopeSet::EMPTY, at)
    }
}

/// Guards the unique indexes of migration 0002 (without them the appends below write copies):
/// a rule for a token or a grant family the log already holds is not appended, even by 50
/// transactions at once.
pub async fn revoking_a_token_again_writes_nothing_even_at_once(store: Arc<dyn AuthStore>) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut tx = store.begin().await.unwrap();
            let rule = token_rule("a1", "t1", 100 + i);
            let appended = tx.revocations().append(&rule).await.unwrap();
            tx.commit().await.unwrap();
            appended.is_some()
        });
    }
    let mut appended = 0;
    while let Some(outcome) = tasks.join_next().await {
        appended += usize::from(outcome.unwrap());
    }
    assert_eq!(appended, 1);
    let mut repos = store.repositories();
    let log = repos.revocations();
    assert!(
        log.holds_token_rule(&token_rule("a1", "t1", 500))
            .await
            .unwrap()
    );
    let again = log.append(&token_rule("a1", "t1", 500)).await.unwrap();
    assert_eq!(again, None, "nor outside a transaction");
    let mut family = revocation("a1", Some("u1"), ScopeSet::EMPTY, 5);
    family.grant_id = Some("g1".into());
    assert!(log.append(&family).await.unwrap().is_some());
    family.issued_before = t(6);
    assert_eq!(log.append(&family).await.unwrap(), None);
    assert!(
        !log.holds_token_rule(&token_rule("a1", "t2", 100))
            .await
            .unwrap()
    );
    assert!(
        log.append(&token_rule("a1", "t2", 100))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(log.after(0, 100).await.unwrap().len(), 3);
}

/// Guards the per-app count of token and family rules (`counted` in the SQL store's `append`):
/// each token or grant-family rule appended counts for its app until the end of the window it
/// expires in; other rules and other apps don't count; a sweep drops the ended windows only.
pub async fn app_rules_are_counted_per_app_until_their_window_ends(store: Arc<dyn AuthStore>) {
    let mut repos = store.repositories();
    let log = repos.revocations();
    for (app, token) in [("a1", "t1"), ("a1", "t2"), ("a2", "t3")] {
        log.append(&token_rule(app, token, 100)).await.unwrap();
    }
    log.append(&revocation("a1", Some("u1"), ScopeSet::EMPTY, 100))
        .await
        .unwrap();
    let family = NewRevocation {
        grant_id: Some("g1".into()),
        ..revocation("a1", Some("u1"), ScopeSet::EMPTY, 100)
    };
    log.append(&family).await.unwrap();
    assert_eq!(log.live_app_rules("a1", t(0)).await.unwrap(), 3);
    assert_eq!(log.live_app_rules("a2", t(0)).await.unwrap(), 1);
    // The rules expire at t(1100), in the window that ends at QUOTA_WINDOW_NANOS.
    let window_end = t(QUOTA_WINDOW_NANOS);
    let last = t(QUOTA_WINDOW_NANOS - 1);
    assert_eq!(log.live_app_rules("a1", last).await.unwrap(), 3);
    assert_eq!(log.live_app_rules("a1", window_end).await.unwrap(), 0);
    let later = token_rule("a1", "t4", QUOTA_WINDOW_NANOS);
    log.append(&later).await.unwrap();
    let swept = store.sweep_expired(window_end, 100).await.unwrap();
    assert_eq!(
        (swept["revocations"], swept["revocation_quota"]),
        (5, 2),
        "the rules and the ended windows of both apps"
    );
    let log = repos.revocations();
    assert_eq!(
        log.live_app_rules("a1", window_end).await.unwrap(),
        1,
        "open windows stay"
    );
}

/// Guards `hold_app_rules`: while one transaction holds an app's count of rules, another that
/// asks for them waits until it ends (PostgreSQL's advisory lock; SQLite's one writer), so a
/// count and the append after it never interleave with another's.
pub async fn an_apps_token_rules_are_held_by_one_transaction_at_a_time(store: Arc<dyn AuthStore>) {
    let mut first = store.begin().await.unwrap();
    first.revocations().hold_app_rules("a1").await.unwrap();
    let second = tokio::spawn({
        let store = store.clone();
        async move {
            let mut tx = store.begin_holding_app_rules("a1").await.unwrap();
            let live = tx.revocations().live_app_rules("a1", t(0)).await.unwrap();
            tx.commit().await.unwrap();
            live
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second waits for the first");
    first
        .revocations()
        .append(&token_rule("a1", "t1", 100))
        .await
        .unwrap();
    first.commit().await.unwrap();
    assert_eq!(
        second.await.unwrap(),
        1,
        "and then counts what the first appended"
    );
    let mut repos = store.repositories();
    let outside = repos.revocations().hold_app_rules("a1").await;
    assert!(outside.is_err(), "only a transaction holds them");
}

/// A log as an older version left it: a rule per repeated revocation of one token, of one
/// family and of one authorization.
fn older_log() -> Vec<NewRevocation> {
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

/// Writes [`older_log`] into a database migrated as far as `migrator` goes.
async fn write_older_log(url: &str, migrator: &'static Migrator) {
    let migrations = sql_backend::Migrations {
        sqlite: migrator,
        postgres: migrator,
    };
    let pools = sql_backend::Pools::open(url, migrations).await.unwrap();
    let mut session = pools.session();
    let insert = "INSERT INTO revocations
                    (app_id, user_id, scopes, token_id, grant_id, issued_before, expire_at)
                  VALUES ($1, $2, $3, $4, $5, $6, $7)";
    for r in older_log() {
        let args = sql_backend::args! {
            &r.app_id, &r.user_id, r.scopes, &r.token_id, &r.grant_id, r.issued_before,
            r.expire_at
        };
        session.execute(insert, args).await.unwrap();
    }
    pools.close().await;
}

/// Migration 0002 on a log an older version wrote (a rule per repeated revocation) leaves the
/// latest rule of the token and of the family, and every withdrawal (each has a cut-off of
/// its own), so its unique indexes can be built; the token rule kept is counted.
async fn migration_0002_leaves_one_rule_per_revoked_token_or_family(engine: Engine, url: String) {
    let dir = tempfile::tempdir().unwrap();
    let (name, text) = match engine {
        Engine::Sqlite => (
            "sqlite",
            include_str!("../../../migrations/auth/sqlite/0001_init.sql"),
        ),
        Engine::Postgres => (
            "postgres",
            include_str!("../../../migrations/auth/postgres/0001_init.sql"),
        ),
    };
    let first = dir.path().join(name);
    std::fs::create_dir_all(&first).unwrap();
    std::fs::write(first.join("0001_init.sql"), text).unwrap();
    let migrator = Box::leak(Box::new(sqlx::migrate::Migrator::new(first).await.unwrap()));
    write_older_log(&url, migrator).await;
    let store = super::open(&url).await.expect("0002 runs");
    let mut repos = store.repositories();
    let rules = repos.revocations().after(0, 100).await.unwrap();
    let count = |f: fn(&RevocationRule) -> bool| rules.iter().filter(|r| f(r)).count();
    assert_eq!(count(|r| r.token_id.is_some()), 1, "{engine:?}");
    assert_eq!(count(|r| r.grant_id.is_some()), 1, "{engine:?}");
    assert_eq!(
        count(|r| r.token_id.is_none() && r.grant_id.is_none()),
        3,
        "{engine:?}"
    );
    assert!(
        rules
            .iter()
            .filter(|r| r.token_id.is_some() || r.grant_id.is_some())
            .all(|r| r.issued_before == t(200)),
        "{engine:?}: the latest (widest) rule of each target is kept"
    );
    let live = repos
        .revocations()
        .live_app_rules("a1", t(0))
        .await
        .unwrap();
    assert_eq!(
        live, 1,
        "{engine:?}: the token rule kept counts against its app"
    );
}
sql_backend::on_each_engine!(migration_0002_leaves_one_rule_per_revoked_token_or_family);

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
        declaration_version: 3,
        trigger: Some(Trigger::UserTap),
        purposes: vec![
            ScopePurpose {
                scope: Scope::UserInfo,
                purpose: "avatar, as shown".into(),
            },
            ScopePurpose {
                scope: Scope::PhoneNumber,
                purpose: "送货 🚚 \"quoted\"".into(),
            },
        ],
    };
    let mut repos = store.repositories();
    repos.consents().insert_prompt(&p).await.unwrap();
    assert_eq!(repos.consents().prompt(&h(4)).await.unwrap(), Some(p));
    let mut wins = 0;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut repos = store.repositories();
            repos.consents().resolve_prompt(&h(4), t(2)).await.unwrap()
        });
    }
    while let Some(won) = tasks.join_next().await {
        wins += u32::from(won.unwrap());
    }
    assert_eq!(wins, 1);
    let resolved = repos.consents().prompt(&h(4)).await.unwrap().unwrap();
    assert_eq!(resolved.resolved_at, Some(t(2)));
    assert_eq!(repos.consents().prompt(&h(5)).await.unwrap(), None);
}

pub async fn auth_code_is_single_use_under_concurrency(store: Arc<dyn AuthStore>) {
    let mut repos = store.repositories();
    repos
        .grants()
        .insert_code(&code(2, "a1", "g1"))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.spawn(async move { spend(store.as_ref(), 2, 20).await });
    }
    let mut spent = 0;
    while let Some(outcome) = tasks.join_next().await {
        if let Some(c) = outcome.unwrap() {
            assert_eq!((c.grant_id.as_str(), c.used_at), ("g1", Some(t(20))));
            spent += 1;
        }
    }
    assert_eq!(spent, 1);
    let used = repos.grants().code(&h(2)).await.unwrap().unwrap();
    assert_eq!(used.used_at, Some(t(20)), "a replay finds the code used");
}

/// The facts an exchange decides from: no spend for another app's code, an expired one or an
/// unknown one, and an unspent code stays unspent.
pub async fn auth_code_outcomes(store: Arc<dyn AuthStore>) {
    let mut repos = store.repositories();
    repos
        .grants()
        .insert_code(&code(2, "a1", "g1"))
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.grants().spend_code(&h(2), "other", t(20)).await.unwrap(),
        None
    );
    assert_eq!(
        tx.grants().spend_code(&h(2), "a1", t(100)).await.unwrap(),
        None
    );
    assert_eq!(
        tx.grants().spend_code(&h(9), "a1", t(20)).await.unwrap(),
        None
    );
    tx.commit().await.unwrap();
    assert_eq!(repos.grants().code(&h(9)).await.unwrap(), None);
    let unspent = repos.grants().code(&h(2)).await.unwrap();
    assert_eq!(
        unspent,
        Some(code(2, "a1", "g1")),
        "not spent by a failed redemption"
    );
}

pub async fn a_spent_code_is_kept_while_its_refresh_family_can_live(store: Arc<dyn AuthStore>) {
    // The code's own purge time is t(200); its family lives until t(5000), then t(6000).
    let mut repos = store.repositories();
    repos
        .grants()
        .insert_code(&code(2, "a1", "g1"))
        .await
        .unwrap();
    assert!(spend(store.as_ref(), 2, 20).await.is_some());
    for until in [5000, 6000, 300] {
        repos
            .grants()
            .keep_code_until("g1", t(until))
            .await
            .unwrap();
    }
    let swept = store.sweep_expired(t(5500), 100).await.unwrap();
    assert_eq!(
        swept["auth_codes"], 0,
        "the code outlives its own purge time"
    );
    let late = repos.grants().code(&h(2)).await.unwrap().unwrap();
    assert_eq!(
        late.used_at,
        Some(t(20)),
        "a late replay is still recognised"
    );
    let swept = store.sweep_expired(t(6000), 100).await.unwrap();
    assert_eq!(
        swept["auth_codes"], 1,
        "gone with the family's last refresh token"
    );
}

pub async fn refresh_rotation_and_family_revocation(store: Arc<dyn AuthStore>) {
    let mut repos = store.repositories();
    repos
        .grants()
        .insert_code(&code(2, "a1", "g1"))
        .await
        .unwrap();
    for token in [refresh(3, "g1", 5000), refresh(4, "g1", 6000)] {
        repos.grants().insert_refresh_token(&token).await.unwrap();
    }
    let mut tx = store.begin().await.unwrap();
    let first = tx
        .grants()
        .spend_refresh_token(&h(3), "a1", t(30))
        .await
        .unwrap();
    assert_eq!(
        first.map(|r| (r.family_id, r.used_at)),
        Some(("g1".into(), Some(t(30))))
    );
    assert_eq!(
        tx.grants()
            .spend_refresh_token(&h(3), "a1", t(40))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        tx.grants()
            .spend_refresh_token(&h(4), "other", t(40))
            .await
            .unwrap(),
        None
    );
    tx.commit().await.unwrap();
    let reused = repos.grants().refresh_token(&h(3)).await.unwrap().unwrap();
    assert_eq!(reused.used_at, Some(t(30)), "a reuse finds the token used");

    let grants = repos.grants();
    assert!(!grants.family_revoked("g1").await.unwrap());
    assert!(grants.mark_family_revoked("g1", t(50)).await.unwrap());
    assert!(
        !grants.mark_family_revoked("g1", t(51)).await.unwrap(),
        "marked once"
    );
    assert!(grants.family_revoked("g1").await.unwrap());
    assert!(!grants.mark_family_revoked("no-code", t(51)).await.unwrap());
    assert!(!grants.family_revoked("no-code").await.unwrap());
    grants.revoke_family_tokens("g1", t(50)).await.unwrap();
    let revoked = grants.refresh_token(&h(4)).await.unwrap().unwrap();
    assert_eq!((revoked.used_at, revoked.revoked_at), (None, Some(t(50))));
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.grants()
            .spend_refresh_token(&h(4), "a1", t(60))
            .await
            .unwrap(),
        None
    );
    drop(tx);

    let mut r = revocation("a1", Some("user-1"), ScopeSet::EMPTY, 50);
    r.grant_id = Some("g1".into());
    let log = repos.revocations();
    log.append(&r).await.unwrap();
    assert_eq!(
        log.for_subject("a1", "user-1", t(40)).await.unwrap().len(),
        1
    );
    assert!(
        log.for_subject("a1", "user-1", t(51))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        log.for_subject("a1", "user-2", t(40))
            .await
            .unwrap()
            .is_empty()
    );
}

/// A user's grants for an app (exchanged codes) beyond the kept ones lose their codes and
/// refresh tokens: grants revoked as a family go first, then the least recently refreshed (the
/// earliest `purge_at`); the new grant is kept whatever its age; unexchanged codes, other
/// users' and other apps' grants stay. A token's generation comes back as stored.
pub async fn grants_beyond_the_kept_ones_are_evicted_least_recently_refreshed_first(
    store: Arc<dyn AuthStore>,
) {
    let mut repos = store.repositories();
    let exchanged = |b: u8, app_id: &str, user_id: &str, purge_at: i64| AuthCodeRecord {
        user_id: user_id.into(),
        used_at: Some(t(20)),
        purge_at: t(purge_at),
        ..code(b, app_id, &format!("g{b}"))
    };
    let codes = [
        exchanged(1, "a1", "user-1", 100),
        exchanged(2, "a1", "user-1", 400),
        exchanged(3, "a1", "user-1", 300),
        exchanged(4, "a1", "user-1", 500),
        exchanged(5, "a1", "user-1", 200),
        code(6, "a1", "g6"),
        exchanged(7, "a1", "user-2", 1),
        exchanged(8, "a2", "user-1", 1),
    ];
    let grants = repos.grants();
    for c in &codes {
        grants.insert_code(c).await.unwrap();
        let token = RefreshTokenRecord {
            user_id: c.user_id.clone(),
            app_id: c.app_id.clone(),
            generation: u64::from(c.code_hash[0]),
            ..refresh(c.code_hash[0] + 20, &c.grant_id, 5000)
        };
        grants.insert_refresh_token(&token).await.unwrap();
    }
    assert!(grants.mark_family_revoked("g4", t(30)).await.unwrap());
    let mut tx = store.begin().await.unwrap();
    let evicted = tx.grants().evict_grants_beyond(("a1", "user-1"), "g1", 3);
    assert_eq!(
        evicted.await.unwrap(),
        2,
        "g4 (revoked), then g5 (oldest), go"
    );
    tx.commit().await.unwrap();
    let grants = repos.grants();
    for b in 1..=8 {
        let kept = ![4, 5].contains(&b);
        let code = grants.code(&h(b)).await.unwrap();
        let token = grants.refresh_token(&h(b + 20)).await.unwrap();
        assert_eq!(
            (code.is_some(), token.is_some()),
            (kept, kept),
            "grant g{b}"
        );
    }
    let kept = grants.refresh_token(&h(22)).await.unwrap().unwrap();
    assert_eq!(kept.generation, 2);
}

/// Token `b` of `family` at `generation`, spent or not.
fn rotated(b: u8, family: &str, generation: u64, spent: bool) -> RefreshTokenRecord {
    RefreshTokenRecord {
        generation,
        used_at: spent.then(|| t(30)),
        ..refresh(b, family, 5000)
    }
}

/// A family's spent refresh token of one generation is deleted; its other ones, its unspent
/// one and other families' stay.
pub async fn a_familys_spent_refresh_token_of_a_generation_is_forgotten(store: Arc<dyn AuthStore>) {
    let mut repos = store.repositories();
    let grants = repos.grants();
    let tokens = [
        rotated(1, "g1", 1, true),
        rotated(2, "g1", 2, true),
        rotated(3, "g1", 3, false),
        rotated(4, "g2", 1, true),
    ];
    for token in &tokens {
        grants.insert_refresh_token(token).await.unwrap();
    }
    assert_eq!(grants.forget_spent_refresh_token("g1", 1).await.unwrap(), 1);
    assert_eq!(grants.forget_spent_refresh_token("g1", 1).await.unwrap(), 0);
    for b in 1..=4 {
        let kept = grants.refresh_token(&h(b)).await.unwrap().is_some();
        assert_eq!(kept, b != 1, "token {b}");
    }
    assert_eq!(
        grants.forget_spent_refresh_token("g1", 3).await.unwrap(),
        0,
        "never the unspent one"
    );
}

/// A refresh that holds its family's code row and its token's row, then forgets an older
/// spent token, and a withdrawal revoking the user's tokens at the same time both commit.
/// Guards `used_at IS NULL` in `revoke_tokens_carrying`: without it the withdrawal, on
/// PostgreSQL, took the old spent token's row and then waited on the refresh's, while the
/// refresh waited on the old one, and PostgreSQL aborted one of them as a deadlock.
pub async fn a_refresh_and_a_withdrawal_at_once_both_commit(store: Arc<dyn AuthStore>) {
    let mut repos = store.repositories();
    let spent_code = AuthCodeRecord {
        used_at: Some(t(20)),
        ..code(1, "a1", "g1")
    };
    repos.grants().insert_code(&spent_code).await.unwrap();
    for token in [rotated(2, "g1", 1, true), rotated(3, "g1", 66, false)] {
        repos.grants().insert_refresh_token(&token).await.unwrap();
    }
    let mut refresh = store.begin_spending(&h(3)).await.unwrap();
    let token = h(3);
    let spent = refresh.grants().spend_refresh_token(&token, "a1", t(40));
    assert!(spent.await.unwrap().is_some());
    let withdrawal = tokio::spawn({
        let store = store.clone();
        async move {
            let mut tx = store.begin().await?;
            let every = ScopeSet::of(&Scope::ALL);
            let revoke = tx
                .grants()
                .revoke_tokens_carrying("a1", Some("user-1"), every, t(41));
            revoke.await?;
            tx.commit().await
        }
    });
    // The withdrawal meanwhile waits on the spent row (PostgreSQL) or for the writer (SQLite).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let forgotten = refresh.grants().forget_spent_refresh_token("g1", 1).await;
    assert_eq!(forgotten.unwrap(), 1);
    refresh.commit().await.unwrap();
    let withdrawn = tokio::time::timeout(std::time::Duration::from_secs(10), withdrawal).await;
    withdrawn.expect("the withdrawal ends").unwrap().unwrap();
}

/// An exchange evicting two grants and a feature switch-off revoking the app's refresh tokens
/// at the same time both commit, whichever grant is evicted first and whichever token was
/// written first. Guards the grant id order of `evict_grants_beyond` (the first layout) and
/// of the row locks `revoke_tokens_carrying` takes (the second): without either, on
/// PostgreSQL, each held one family's tokens and waited on the other's, and PostgreSQL
/// aborted one of them as a deadlock.
pub async fn an_eviction_and_a_feature_switch_off_at_once_both_commit(store: Arc<dyn AuthStore>) {
    // (app, purge_at of gA and gZ, which grant's code is held meanwhile); tZ is written first
    // in the second layout, so a switch-off scanning in table order meets it first.
    for (app_id, purge, held, z_first) in [
        ("a1", (100, 300), "gA", false),
        ("a2", (300, 100), "gZ", true),
    ] {
        let mut repos = store.repositories();
        let grants = repos.grants();
        let exchanged = |b: u8, grant: &str, purge_at: i64| AuthCodeRecord {
            used_at: Some(t(20)),
            purge_at: t(purge_at),
            ..code(b, app_id, grant)
        };
        let token = |b: u8, grant: &str| RefreshTokenRecord {
            app_id: app_id.into(),
            ..refresh(b, grant, 5000)
        };
        let (a, z) = (b'A', b'Z');
        grants
            .insert_code(&exchanged(a, "gA", purge.0))
            .await
            .unwrap();
        grants
            .insert_code(&exchanged(z, "gZ", purge.1))
            .await
            .unwrap();
        let tokens = if z_first {
            [token(z + 1, "gZ"), token(a + 1, "gA")]
        } else {
            [token(a + 1, "gA"), token(z + 1, "gZ")]
        };
        for tk in &tokens {
            grants.insert_refresh_token(tk).await.unwrap();
        }
        let mut holder = store.begin().await.unwrap();
        holder.grants().keep_code_until(held, t(400)).await.unwrap();
        let eviction = tokio::spawn({
            let store = store.clone();
            async move {
                let mut tx = store.begin().await?;
                let evicted = tx
                    .grants()
                    .evict_grants_beyond((app_id, "user-1"), "gN", 1)
                    .await?;
                tx.commit().await.map(|()| evicted)
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let switch_off = tokio::spawn({
            let store = store.clone();
            async move {
                let mut tx = store.begin().await?;
                let phone = ScopeSet::of(&[Scope::PhoneNumber]);
                tx.grants()
                    .revoke_tokens_carrying(app_id, None, phone, t(41))
                    .await?;
                tx.commit().await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        holder.commit().await.unwrap();
        let within = std::time::Duration::from_secs(10);
        let evicted = tokio::time::timeout(within, eviction)
            .await
            .expect("the eviction ends");
        assert_eq!(
            evicted.unwrap().expect("the eviction commits"),
            2,
            "{app_id}"
        );
        let switched = tokio::time::timeout(within, switch_off)
            .await
            .expect("the switch-off ends");
        switched.unwrap().expect("the switch-off commits");
    }
}

/// A user's unspent codes for an app beyond the kept ones are deleted, the earliest issued
/// first; the new code is kept whatever its age; spent codes, other users' and other apps'
/// codes stay.
pub async fn unspent_codes_beyond_the_kept_ones_are_deleted_earliest_first(
    store: Arc<dyn AuthStore>,
) {
    let issued = |b: u8, app_id: &str, user_id: &str, at: i64| AuthCodeRecord {
        user_id: user_id.into(),
        created_at: t(at),
        ..code(b, app_id, &format!("g{b}"))
    };
    let codes = [
        issued(1, "a1", "user-1", 10),
        issued(2, "a1", "user-1", 40),
        issued(3, "a1", "user-1", 30),
        issued(4, "a1", "user-1", 20),
        AuthCodeRecord {
            used_at: Some(t(50)),
            ..issued(5, "a1", "user-1", 1)
        },
        issued(6, "a1", "user-2", 1),
        issued(7, "a2", "user-1", 1),
    ];
    let mut repos = store.repositories();
    for c in &codes {
        repos.grants().insert_code(c).await.unwrap();
    }
    let mut tx = store.begin().await.unwrap();
    let new_code = h(1);
    let evicted = tx
        .grants()
        .evict_unspent_codes_beyond(("a1", "user-1"), &new_code, 2);
    assert_eq!(
        evicted.await.unwrap(),
        2,
        "the new code 1 and the latest other, 2, stay"
    );
    tx.commit().await.unwrap();
    for b in 1..=7 {
        let kept = ![3, 4].contains(&b);
        let found = repos.grants().code(&h(b)).await.unwrap();
        assert_eq!(found.is_some(), kept, "code {b}");
    }
}

/// Guards the outer `used_at IS NULL` of the eviction of unspent codes: an eviction that meets
/// a code an exchange is spending (on PostgreSQL: locked, after the eviction's snapshot) leaves
/// it once the exchange commits, so the grant keeps its code (a replay is USED_CODE and revokes
/// the family). On SQLite the eviction waits for the writer and sees the code spent.
pub async fn an_eviction_racing_an_exchange_leaves_the_spent_code(store: Arc<dyn AuthStore>) {
    let mut repos = store.repositories();
    repos
        .grants()
        .insert_code(&code(1, "a1", "g1"))
        .await
        .unwrap();
    let mut exchange = store.begin().await.unwrap();
    let spent = exchange.grants().spend_code(&h(1), "a1", t(20)).await;
    assert!(spent.unwrap().is_some());
    let eviction = tokio::spawn({
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            tx.grants().insert_code(&code(2, "a1", "g2")).await.unwrap();
            let new_code = h(2);
            let evict = tx
                .grants()
                .evict_unspent_codes_beyond(("a1", "user-1"), &new_code, 1);
            let evicted = evict.await.unwrap();
            tx.commit().await.unwrap();
            evicted
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    exchange.commit().await.unwrap();
    assert_eq!(eviction.await.unwrap(), 0, "nothing unspent to evict");
    let kept = repos.grants().code(&h(1)).await.unwrap();
    assert_eq!(
        kept.and_then(|c| c.used_at),
        Some(t(20)),
        "the spent code stays"
    );
}

/// What waits for one user and app is held by one transaction at a time: a second count waits
/// for the first transaction and then sees its prompt; other users and apps do not wait.
pub async fn a_users_pending_are_held_by_one_transaction_at_a_time(store: Arc<dyn AuthStore>) {
    let mut first = store.begin().await.unwrap();
    first.consents().hold_pending("u1", "a1").await.unwrap();
    let second = tokio::spawn({
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            tx.consents().hold_pending("u1", "a1").await.unwrap();
            let open = tx.consents().open_prompts("u1", "a1", t(0)).await.unwrap();
            tx.commit().await.unwrap();
            open
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second waits for the first");
    let prompt = open_prompt(1, "u1", "a1", 100);
    first.consents().insert_prompt(&prompt).await.unwrap();
    first.commit().await.unwrap();
    assert_eq!(
        second.await.unwrap(),
        1,
        "and then counts the first's prompt"
    );
    let mut repos = store.repositories();
    let outside = repos.consents().hold_pending("u1", "a1").await;
    assert!(outside.is_err(), "only a transaction holds them");
}

/// Open prompts are counted per user and app: answered and expired ones are not.
pub async fn open_prompts_are_counted_per_user_and_app(store: Arc<dyn AuthStore>) {
    let mut repos = store.repositories();
    let consents = repos.consents();
    for p in [
        open_prompt(1, "u1", "a1", 100),
        open_prompt(2, "u1", "a1", 100),
        open_prompt(3, "u1", "a1", 100),
        open_prompt(4, "u1", "a1", 50),
        open_prompt(5, "u2", "a1", 100),
        open_prompt(6, "u1", "a2", 100),
    ] {
        consents.insert_prompt(&p).await.unwrap();
    }
    assert!(consents.resolve_prompt(&h(3), t(2)).await.unwrap());
    assert_eq!(consents.open_prompts("u1", "a1", t(49)).await.unwrap(), 3);
    assert_eq!(consents.open_prompts("u1", "a1", t(50)).await.unwrap(), 2);
    assert_eq!(consents.open_prompts("u3", "a1", t(50)).await.unwrap(), 0);
}

pub async fn refresh_token_expiry(store: Arc<dyn AuthStore>) {
    let mut repos = store.repositories();
    repos
        .grants()
        .insert_refresh_token(&refresh(3, "g1", 50))
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.grants()
            .spend_refresh_token(&h(3), "a1", t(50))
            .await
            .unwrap(),
        None
    );
    tx.commit().await.unwrap();
    let expired = repos.grants().refresh_token(&h(3)).await.unwrap().unwrap();
    assert_eq!((expired.used_at, expired.revoked_at), (None, None));
}

pub async fn token_keys_round_trip(store: Arc<dyn AuthStore>) {
    let k = StoredTokenKey {
        key_id: "k1".into(),
        sealed_key: "sealed".into(),
        created_at: t(1),
        retire_at: t(2),
        expire_at: t(3),
    };
    let mut repos = store.repositories();
    repos.keys().insert(&k).await.unwrap();
    assert!(matches!(
        repos.keys().insert(&k).await,
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(repos.keys().list().await.unwrap(), vec![k.clone()]);

    let keys = repos.keys();
    assert!(!keys.reseal("k1", "other", "new").await.unwrap());
    assert!(keys.reseal("k1", "sealed", "resealed").await.unwrap());
    assert!(!keys.reseal("k1", "sealed", "again").await.unwrap());
    let resealed = StoredTokenKey {
        sealed_key: "resealed".into(),
        ..k.clone()
    };
    assert_eq!(keys.list().await.unwrap(), vec![resealed.clone()]);

    // Retired at t(2): it neither mints nor verifies from then on; once dead, it stays so.
    let at = t(2);
    assert!(keys.retire("k1", at).await.unwrap());
    let retired = StoredTokenKey {
        retire_at: at,
        expire_at: at,
        ..resealed
    };
    assert_eq!(keys.list().await.unwrap(), vec![retired]);
    assert!(!keys.retire("k1", t(2)).await.unwrap());
    assert!(!keys.retire("nope", t(0)).await.unwrap());
}

pub async fn sealed_secrets_are_stored_once_and_resealed_in_place(store: Arc<dyn AuthStore>) {
    let mut repos = store.repositories();
    let keys = repos.keys();
    assert_eq!(keys.secret("pairwise").await.unwrap(), None);
    keys.insert_secret("pairwise", "first", t(1)).await.unwrap();
    assert!(matches!(
        keys.insert_secret("pairwise", "second", t(2)).await,
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(
        keys.secret("pairwise").await.unwrap().as_deref(),
        Some("first")
    );
    assert!(!keys.reseal_secret("pairwise", "second", "x").await.unwrap());
    assert!(
        keys.reseal_secret("pairwise", "first", "third")
            .await
            .unwrap()
    );
    assert_eq!(
        keys.secret("pairwise").await.unwrap().as_deref(),
        Some("third")
    );
}

pub async fn sweep_removes_only_expired_rows_in_batches(store: Arc<dyn AuthStore>) {
    let mut repos = store.repositories();
    for i in 0..5u8 {
        let mut c = code(i, "a1", &format!("g{i}"));
        c.purge_at = t(if i < 3 { 100 } else { 10_000 });
        repos.grants().insert_code(&c).await.unwrap();
    }
    // Rules expire 1000ns after their instant: two of these are gone by t=1000.
    for at in [-500, -100, 500, 900] {
        let rule = revocation("a1", None, ScopeSet::EMPTY, at);
        repos.revocations().append(&rule).await.unwrap();
    }
    let first = store.sweep_expired(t(1000), 2).await.unwrap();
    assert_eq!((first["auth_codes"], first["revocations"]), (2, 2));
    let second = store.sweep_expired(t(1000), 2).await.unwrap();
    assert_eq!((second["auth_codes"], second["revocations"]), (1, 0));
    assert!(spend(store.as_ref(), 4, 20).await.is_some());
    assert_eq!(repos.revocations().after(0, 10).await.unwrap().len(), 2);
}

fn record(user: &str, app_id: &str, event: ConsentEvent, at: i64) -> ConsentRecord {
    ConsentRecord {
        record_id: 0,
        user_id: user.into(),
        app_id: app_id.into(),
        event,
        scopes: ScopeSet::of(&[Scope::UserInfo]),
        trigger: Some(Trigger::UserTap),
        purposes: vec![ScopePurpose {
            scope: Scope::UserInfo,
            purpose: "Orders \u{1f600} \"quoted\"".into(),
        }],
        declaration_version: 3,
        recorded_at: t(at),
        expire_at: t(at + 1000),
    }
}

/// Consent records come back newest first, per user, filtered by app, paged below a record
/// id, with every field as appended (purposes included).
pub async fn consent_records_page_newest_first(store: Arc<dyn AuthStore>) {
    let mut repos = store.repositories();
    let events = [
        ConsentEvent::Prompted,
        ConsentEvent::Denied,
        ConsentEvent::Granted,
        ConsentEvent::Withdrawn,
        ConsentEvent::VoidedByFeatureChange,
        ConsentEvent::VoidedByErasure,
    ];
    for (i, event) in events.into_iter().enumerate() {
        let app_id = if i % 2 == 0 { "a1" } else { "a2" };
        let r = record("u1", app_id, event, i as i64 + 1);
        repos.privacy().append_record(&r).await.unwrap();
    }
    repos
        .privacy()
        .append_record(&record("u2", "a1", ConsentEvent::Granted, 9))
        .await
        .unwrap();
    let all = repos.privacy().records("u1", None, 0, 100).await.unwrap();
    let seen: Vec<_> = all.iter().map(|r| r.event).collect();
    let mut newest_first = events.to_vec();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    assert!(all.windows(2).all(|w| w[0].record_id > w[1].record_id));
    let mut expected = record("u1", "a2", ConsentEvent::VoidedByErasure, 6);
    expected.record_id = all[0].record_id;
    assert_eq!(all[0], expected, "every field as appended");
    let a1 = repos
        .privacy()
        .records("u1", Some("a1"), 0, 100)
        .await
        .unwrap();
    assert_eq!(a1.len(), 3);
    assert!(a1.iter().all(|r| r.app_id == "a1"));
    let page = repos
        .privacy()
        .records("u1", None, all[1].record_id, 2)
        .await
        .unwrap();
    assert_eq!(
        page,
        all[2..4].to_vec(),
        "below a record id, at most the limit"
    );
}

/// u1's authorization for a1, which must stand.
async fn standing(repos: &mut dyn Repositories) -> crate::model::AuthorizationRecord {
    let standing = repos.consents().authorization("u1", "a1").await.unwrap();
    standing.expect("u1's authorization for a1")
}

/// A decision adds what it grants and records what it denies unless granted; the declaration
/// version rises with it and never falls (what lapsed under a newer one is the service's to
/// withdraw first). A grant id is taken when a consent scope is first granted, kept while one
/// stands, and cleared by the withdrawal that takes the last one.
pub async fn decisions_keep_the_declaration_version_and_grant_id(store: Arc<dyn AuthStore>) {
    store
        .repositories()
        .apps()
        .insert(&app("a1"))
        .await
        .unwrap();
    let mut repos = store.repositories();
    let (ui, base) = (
        ScopeSet::of(&[Scope::UserInfo]),
        ScopeSet::of(&[Scope::AuthBase]),
    );
    let none = ScopeSet::EMPTY;
    let decide = |grant, version, grant_ref| Decision {
        version,
        grant_ref,
        ..Decision::new("u1", "a1", grant, none, t(1))
    };
    let kept = repos
        .consents()
        .record_decision(&decide(base, 0, Some("g0")))
        .await
        .unwrap();
    assert_eq!(kept, None, "auth_base alone takes no grant id");
    let kept = repos
        .consents()
        .record_decision(&decide(ui, 1, Some("g1")))
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("g1"));
    let kept = repos
        .consents()
        .record_decision(&decide(ui, 1, Some("g2")))
        .await
        .unwrap();
    assert_eq!(
        kept.as_deref(),
        Some("g1"),
        "kept while a consent scope stands"
    );
    let a = standing(repos.as_mut()).await;
    assert_eq!((a.granted, a.declaration_version), (ui.union(base), 1));
    let phone = ScopeSet::of(&[Scope::PhoneNumber]);
    repos
        .consents()
        .record_decision(&decide(phone, 2, Some("g3")))
        .await
        .unwrap();
    let a = standing(repos.as_mut()).await;
    assert_eq!(
        (a.granted, a.declaration_version, a.grant_ref.as_deref()),
        (phone.union(base).union(ui), 2, Some("g1")),
        "a newer version rises and drops nothing"
    );
    repos
        .consents()
        .record_decision(&decide(ui, 1, Some("g4")))
        .await
        .unwrap();
    let a = standing(repos.as_mut()).await;
    assert_eq!(a.declaration_version, 2, "an older version lowers nothing");
    let denial = Decision {
        version: 3,
        ..Decision::new("u1", "a1", none, phone.union(ui), t(2))
    };
    repos.consents().record_decision(&denial).await.unwrap();
    let a = standing(repos.as_mut()).await;
    assert_eq!(
        (a.granted, a.denied),
        (phone.union(base).union(ui), none),
        "what stays granted is not denied"
    );
    let mut tx = store.begin().await.unwrap();
    tx.consents()
        .withdraw("u1", "a1", ui.union(phone))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let a = standing(repos.as_mut()).await;
    assert_eq!(
        (a.granted, a.grant_ref),
        (base, None),
        "the last consent scope took it"
    );
}

/// A declaration replaces the last one only when its version rises, all at once.
/// The app's declaration (version, purposes) as `declaration_in_force` reads it.
async fn in_force(repos: &mut dyn Repositories, app_id: &str) -> Option<(i64, Vec<ScopePurpose>)> {
    repos.privacy().declaration_in_force(app_id).await.unwrap()
}

pub async fn declarations_replace_only_upwards(store: Arc<dyn AuthStore>) {
    store
        .repositories()
        .apps()
        .insert(&app("a1"))
        .await
        .unwrap();
    let mut repos = store.repositories();
    let purpose = |scope, text: &str| ScopePurpose {
        scope,
        purpose: text.into(),
    };
    let v1 = [
        purpose(Scope::UserInfo, "avatar"),
        purpose(Scope::PhoneNumber, "delivery"),
    ];
    assert_eq!(in_force(repos.as_mut(), "a1").await, Some((0, Vec::new())));
    assert_eq!(in_force(repos.as_mut(), "nope").await, None);
    let app = repos
        .privacy()
        .replace_declaration("a1", 1, &v1, t(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(app.declaration_version, 1);
    assert_eq!(
        app.declared_scopes,
        ScopeSet::of(&[Scope::UserInfo, Scope::PhoneNumber])
    );
    assert_eq!(app.declared_at, t(5));
    assert_eq!(
        repos.privacy().declaration("a1").await.unwrap(),
        v1.to_vec()
    );
    assert_eq!(in_force(repos.as_mut(), "a1").await, Some((1, v1.to_vec())));
    let stale = [purpose(Scope::AuthBase, "login")];
    assert!(
        repos
            .privacy()
            .replace_declaration("a1", 1, &stale, t(6))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        repos
            .privacy()
            .replace_declaration("nope", 9, &stale, t(6))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        repos.privacy().declaration("a1").await.unwrap(),
        v1.to_vec(),
        "unchanged"
    );
    let v2 = [purpose(Scope::AuthBase, "login")];
    repos
        .privacy()
        .replace_declaration("a1", 2, &v2, t(7))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        repos.privacy().declaration("a1").await.unwrap(),
        v2.to_vec()
    );
    assert_eq!(in_force(repos.as_mut(), "a1").await, Some((2, v2.to_vec())));
    let app = repos.apps().get("a1").await.unwrap().unwrap();
    assert_eq!(
        (app.declaration_version, app.declared_scopes),
        (2, ScopeSet::of(&[Scope::AuthBase]))
    );
}

/// Changes are listed per app in sequence order after a cursor; a feature switch appends one
/// per user whose grant carries the scope and whom the app can name (by the id it was given,
/// else the grant id), records the voiding for each, and takes the scope from every grant.
/// `erase_user` leaves nothing of the user's authorizations, prompts, codes or tokens.
pub async fn changes_and_voiding_per_app(store: Arc<dyn AuthStore>) {
    for a in ["a1", "a2"] {
        store.repositories().apps().insert(&app(a)).await.unwrap();
    }
    let mut repos = store.repositories();
    let (ui, phone) = (
        ScopeSet::of(&[Scope::UserInfo]),
        ScopeSet::of(&[Scope::PhoneNumber]),
    );
    let decide = |user, app_id, grant, grant_ref| Decision {
        grant_ref,
        ..Decision::new(user, app_id, grant, ScopeSet::EMPTY, t(1))
    };
    let consents = repos.consents();
    consents
        .record_decision(&decide("named", "a1", phone, Some("g-named")))
        .await
        .unwrap();
    consents
        .disclose_user_id("named", "a1", "open-named")
        .await
        .unwrap();
    consents
        .disclose_user_id("named", "a1", "open-other")
        .await
        .unwrap();
    consents
        .record_decision(&decide("reader", "a1", ui, Some("g-reader")))
        .await
        .unwrap();
    consents
        .record_decision(&decide("reader", "a2", phone, Some("g-elsewhere")))
        .await
        .unwrap();
    consents
        .record_decision(&decide(
            "unnamed",
            "a1",
            ScopeSet::of(&[Scope::AuthBase]),
            None,
        ))
        .await
        .unwrap();
    let single = AuthorizationChange {
        sequence: 0,
        app_id: "a1".into(),
        subject: ChangeSubject::Grant("g-first".into()),
        scopes: ui,
        reason: ChangeReason::Withdrawn,
        changed_at: t(2),
        expire_at: t(1000),
    };
    let mut tx = store.begin().await.unwrap();
    tx.revocations()
        .append(&revocation("a1", Some("reader"), ui, 2))
        .await
        .unwrap();
    tx.privacy().append_change(&single).await.unwrap();
    tx.commit().await.unwrap();
    let all = ScopeSet::of(&Scope::ALL);
    let mut tx = store.begin().await.unwrap();
    tx.revocations()
        .append(&revocation("a1", None, all, 3))
        .await
        .unwrap();
    let told = tx.privacy().append_changes_for_scopes(
        "a1",
        all,
        ChangeReason::FeatureDisabled,
        t(3),
        t(1000),
    );
    assert_eq!(
        told.await.unwrap(),
        2,
        "the unnamed user's app holds nothing that names them"
    );
    let event = ConsentEvent::VoidedByFeatureChange;
    let recorded = tx
        .privacy()
        .append_records_for_scopes("a1", all, event, t(3), t(1000));
    assert_eq!(recorded.await.unwrap(), 3);
    assert_eq!(
        tx.consents()
            .withdraw_from_all("a1", ui.union(phone))
            .await
            .unwrap(),
        2
    );
    tx.commit().await.unwrap();

    let feed = repos.privacy().changes_after("a1", 0, 100).await.unwrap();
    let subjects: Vec<_> = feed
        .iter()
        .map(|c| (c.subject.clone(), c.scopes, c.reason))
        .collect();
    assert_eq!(
        subjects,
        [
            (
                ChangeSubject::Grant("g-first".into()),
                ui,
                ChangeReason::Withdrawn
            ),
            (
                ChangeSubject::AppUserId("open-named".into()),
                phone,
                ChangeReason::FeatureDisabled
            ),
            (
                ChangeSubject::Grant("g-reader".into()),
                ui,
                ChangeReason::FeatureDisabled
            ),
        ]
    );
    assert!(feed.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert_eq!(
        repos
            .privacy()
            .changes_after("a1", feed[0].sequence, 1)
            .await
            .unwrap(),
        feed[1..2].to_vec()
    );
    assert!(
        repos
            .privacy()
            .changes_after("a2", 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let voided = repos
        .privacy()
        .records("reader", Some("a1"), 0, 10)
        .await
        .unwrap();
    assert_eq!(
        (voided[0].event, voided[0].scopes, voided[0].trigger),
        (event, ui, None)
    );
    let reader = repos
        .consents()
        .authorization("reader", "a1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((reader.granted, reader.grant_ref), (ScopeSet::EMPTY, None));
    let elsewhere = repos
        .consents()
        .authorization("reader", "a2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(elsewhere.granted, phone, "another app's grant untouched");

    let grants = repos.grants();
    grants
        .insert_code(&AuthCodeRecord {
            user_id: "reader".into(),
            ..code(7, "a2", "g7")
        })
        .await
        .unwrap();
    let token = RefreshTokenRecord {
        user_id: "reader".into(),
        ..refresh(8, "g7", 5000)
    };
    grants.insert_refresh_token(&token).await.unwrap();
    let p = PromptRecord {
        prompt_hash: h(9),
        user_id: "reader".into(),
        app_id: "a2".into(),
        scopes: ui,
        previously_denied: false,
        created_at: t(1),
        expires_at: t(100),
        resolved_at: None,
        declaration_version: 0,
        trigger: None,
        purposes: Vec::new(),
    };
    repos.consents().insert_prompt(&p).await.unwrap();
    repos.consents().erase_user("reader").await.unwrap();
    assert!(repos.consents().list("reader").await.unwrap().is_empty());
    assert!(repos.consents().prompt(&h(9)).await.unwrap().is_none());
    assert!(repos.grants().code(&h(7)).await.unwrap().is_none());
    assert!(repos.grants().refresh_token(&h(8)).await.unwrap().is_none());
    assert_eq!(
        repos.consents().list("named").await.unwrap().len(),
        1,
        "nobody else's"
    );
    assert_eq!(
        repos
            .privacy()
            .records("reader", None, 0, 10)
            .await
            .unwrap()
            .len(),
        1,
        "records outlive erasure"
    );
}

sql_backend::conformance!(
    crate::store::open;
    apps_round_trip,
    disabling_a_feature_voids_refresh_tokens_and_logs_a_rule,
    feature_changes_are_relative_and_never_lose_each_other,
    decisions_grant_and_deny_atomically,
    withdrawal_removes_scopes_and_appends_rule,
    a_rule_is_found_by_its_sequence_until_swept,
    revoking_a_token_again_writes_nothing_even_at_once,
    app_rules_are_counted_per_app_until_their_window_ends,
    an_apps_token_rules_are_held_by_one_transaction_at_a_time,
    prompts_resolve_once,
    auth_code_is_single_use_under_concurrency,
    auth_code_outcomes,
    refresh_rotation_and_family_revocation,
    a_spent_code_is_kept_while_its_refresh_family_can_live,
    refresh_token_expiry,
    grants_beyond_the_kept_ones_are_evicted_least_recently_refreshed_first,
    a_familys_spent_refresh_token_of_a_generation_is_forgotten,
    a_refresh_and_a_withdrawal_at_once_both_commit,
    an_eviction_and_a_feature_switch_off_at_once_both_commit,
    unspent_codes_beyond_the_kept_ones_are_deleted_earliest_first,
    open_prompts_are_counted_per_user_and_app,
    an_eviction_racing_an_exchange_leaves_the_spent_code,
    a_users_pending_are_held_by_one_transaction_at_a_time,
    token_keys_round_trip,
    sealed_secrets_are_stored_once_and_resealed_in_place,
    sweep_removes_only_expired_rows_in_batches,
    consent_records_page_newest_first,
    decisions_keep_the_declaration_version_and_grant_id,
    declarations_replace_only_upwards,
    changes_and_voiding_per_app,
);
