//! Upgrades: databases written by an earlier version, kept as fixtures under
//! `faults/fixtures/<service>/<schema>/` (the newest migration they were written under), each as
//! an SQLite file and a PostgreSQL dump with a manifest of what was done to them (the ids,
//! secrets, codes and tokens handed out). Today's binaries start on each and everything in it
//! keeps working, as the README's upgrade notes say. Every migration adds the fixture made
//! before it (`make_upgrade_fixtures`, README "Upgrades"); `every_migration_has_a_fixture_made_before_it`
//! fails until it does. Also: replicas starting at once on one database migrate it safely.

use std::path::{Path, PathBuf};
use std::time::Duration;

use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use serde_json::{Value, json};
use sql_backend::testing::fresh_schema_url;

use crate::clients::{
    ALL_FEATURES, AuthClients, UserInfoClients, auth_code, consent_token, outcome,
};
use crate::process::{AUTH_SERVICE, Env, MASTER_KEY_HEX, ServiceProcess, USERINFO_SERVICE};
use crate::within;

use pb::Scope::{AuthBase, PhoneNumber, UserInfo};

/// The migration that dropped the first version's symmetric token keys: tokens minted under
/// a schema before it stop verifying after the upgrade (README, "Upgrading from the first
/// version"); tokens minted since keep verifying.
const KEYS_DROPPED_BY: u32 = 3;
/// The migration that began keeping consent records: fixtures written since hold them.
const RECORDS_FROM: u32 = 4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The migrations of `service` (its SQLite set, which the PostgreSQL set mirrors), by number.
fn migrations(service: &str) -> Vec<u32> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../migrations/{service}/sqlite"));
    let mut numbers: Vec<u32> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().to_str()?.get(..4)?.parse().ok())
        .collect();
    numbers.sort_unstable();
    numbers
}

/// The fixtures of `service`: (schema, directory), oldest first.
fn fixtures_of(service: &str) -> Vec<(u32, PathBuf)> {
    let dir = fixtures().join(service);
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| {
                    let e = e.ok()?;
                    Some((e.file_name().to_str()?.parse().ok()?, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn manifest(dir: &Path, engine: &str) -> Value {
    let path = dir.join(format!("manifest.{engine}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(value, |v, key| &v[*key])
        .as_str()
        .unwrap_or_else(|| panic!("manifest lacks {path:?}"))
}

/// Guards the rule that every migration adds a fixture (README, "Upgrades"): for each service,
/// a fixture written under the schema just before its newest migration exists (none is needed
/// while a service has one migration). Adding migration N without `fixtures/<service>/<N-1>/`
/// fails here.
#[test]
fn every_migration_has_a_fixture_made_before_it() {
    for service in ["auth", "userinfo"] {
        let numbers = migrations(service);
        let newest = *numbers.last().expect("migrations");
        let before = numbers.iter().rev().nth(1).copied();
        let have: Vec<u32> = fixtures_of(service)
            .into_iter()
            .map(|(schema, _)| schema)
            .collect();
        if let Some(before) = before {
            assert!(
                have.contains(&before),
                "{service}: migration {newest:04} needs a fixture written under schema {before:04} \
                 (faults/fixtures/{service}/{before:04}/, made by `make_upgrade_fixtures` with the \
                 binaries from before the migration; README, \"Upgrades\"); have {have:?}"
            );
        }
        for (schema, dir) in fixtures_of(service) {
            for file in [
                format!("{service}.db"),
                format!("{service}.sql"),
                "manifest.sqlite.json".into(),
                "manifest.postgres.json".into(),
            ] {
                assert!(
                    dir.join(&file).is_file(),
                    "{service} fixture {schema:04} lacks {file}"
                );
            }
        }
    }
}

/// A fixture's SQLite file, copied where today's binary may change it.
fn sqlite_copy(dir: &Path, service: &str, into: &Path) -> String {
    let file = into.join(format!("{service}.db"));
    std::fs::copy(dir.join(format!("{service}.db")), &file).expect("copy the fixture");
    format!("sqlite://{}", file.display())
}

/// A fixture's PostgreSQL dump, restored into a fresh schema of the test server.
async fn postgres_restore(dir: &Path, service: &str) -> String {
    let url = fresh_schema_url(&format!("faults_fixture_{service}")).await;
    let dump = std::fs::read_to_string(dir.join(format!("{service}.sql"))).expect("read the dump");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(dump))
        .execute(&pool)
        .await
        .expect("restore the dump");
    pool.close().await;
    url
}

/// Checks that everything a fixture's manifest records still works through today's
/// auth-service at `auth` (and a userinfo-service following it on `userinfo_database`).
async fn check_auth_fixture(
    schema: u32,
    m: &Value,
    auth: &AuthClients,
    auth_addr: std::net::SocketAddr,
    userinfo_database: &str,
) {
    let (a_id, a_secret) = (text(m, &["app_a", "app_id"]), text(m, &["app_a", "secret"]));
    let (b_id, b_secret) = (text(m, &["app_b", "app_id"]), text(m, &["app_b", "secret"]));
    for (app_id, features) in [(a_id, 3), (b_id, 1)] {
        let app = auth
            .admin()
            .get_app(pb::GetAppRequest {
                app_id: app_id.into(),
            })
            .await;
        let app = app
            .expect("an app of the fixture")
            .into_inner()
            .app
            .expect("app");
        assert_eq!(app.features.len(), features, "{app_id}'s features");
    }
    let holds = |user: &str| {
        let auth = auth.clone();
        let (user, a_id) = (user.to_owned(), a_id.to_owned());
        async move {
            let listed = auth
                .wallet()
                .list_authorizations(pb::ListAuthorizationsRequest { user_id: user })
                .await;
            listed
                .expect("list")
                .into_inner()
                .authorizations
                .into_iter()
                .find(|x| x.app_id == a_id)
                .map(|x| x.scopes.len())
        }
    };
    assert_eq!(holds("u1").await, Some(3), "u1's consents");
    assert_eq!(holds("u2").await, None, "u2's withdrawal");
    if schema >= RECORDS_FROM {
        let listed = auth
            .wallet()
            .list_consent_records(pb::ListConsentRecordsRequest {
                user_id: "u2".into(),
                ..Default::default()
            })
            .await;
        let events: Vec<_> = listed
            .expect("u2's consent records")
            .into_inner()
            .records
            .iter()
            .map(|r| r.event())
            .collect();
        use pb::ConsentEvent::{Granted, Prompted, Withdrawn};
        assert_eq!(
            events,
            [Withdrawn, Granted, Prompted],
            "u2's history, written before the upgrade"
        );
    }

    let app_user_id = text(m, &["u1", "app_user_id"]);
    let access_token = text(m, &["u1", "access_token"]);
    let active = auth
        .active(a_id, a_secret, access_token)
        .await
        .expect("introspect");
    assert_eq!(
        active,
        schema >= KEYS_DROPPED_BY,
        "an access token minted under schema {schema:04}"
    );
    let refreshed = auth
        .refresh(a_id, a_secret, text(m, &["u1", "refresh_token"]))
        .await;
    let refreshed = refreshed
        .unwrap_or_else(|e| panic!("the fixture's refresh token: {}", outcome::<()>(&Err(e))));
    assert_eq!(
        refreshed.user_id, app_user_id,
        "the app user id changed across the upgrade"
    );
    assert!(
        auth.active(a_id, a_secret, &refreshed.access_token)
            .await
            .unwrap(),
        "a new access token"
    );
    let exchanged = auth
        .exchange(a_id, a_secret, text(m, &["u1", "unspent_code"]))
        .await;
    let exchanged = exchanged
        .unwrap_or_else(|e| panic!("the fixture's unspent code: {}", outcome::<()>(&Err(e))));
    assert_eq!(
        exchanged.user_id, app_user_id,
        "the app user id changed across the upgrade"
    );
    let replay = auth
        .exchange(a_id, a_secret, text(m, &["u1", "spent_code"]))
        .await;
    assert_eq!(outcome(&replay), "UsedCode", "the fixture's spent code");
    let reuse = auth
        .refresh(a_id, a_secret, text(m, &["u1", "rotated_refresh_token"]))
        .await;
    assert_eq!(
        outcome(&reuse),
        "UsedRefreshToken",
        "the fixture's rotated refresh token"
    );

    // A verifier started now replays the log the fixture holds: u2's withdrawal and app B's
    // revoked token are there; tokens of the fixture verify unless their keys were dropped.
    let userinfo = ServiceProcess::start(
        USERINFO_SERVICE,
        &Env::userinfo(userinfo_database, auth_addr),
    )
    .await;
    let u = UserInfoClients(userinfo.channel.clone());
    for user in ["u1", "u2", "u3", "u4"] {
        u.upsert(userinfo_service::testing::demo_profile(user))
            .await
            .unwrap();
    }
    let expected_old = if schema >= KEYS_DROPPED_BY {
        "OK"
    } else {
        "InvalidAccessToken"
    };
    let old = u.open_user_info(text(m, &["u1", "consent_token"])).await;
    assert_eq!(
        outcome(&old),
        expected_old,
        "u1's consent token from the fixture"
    );
    for (user, key) in [
        ("u2", "withdrawn_consent_token"),
        ("u3", "revoked_consent_token"),
    ] {
        let old = u.open_user_info(text(m, &[user, key])).await;
        let expected = if schema >= KEYS_DROPPED_BY {
            "InvalidAuthRelations"
        } else {
            "InvalidAccessToken"
        };
        assert_eq!(outcome(&old), expected, "{user}'s {key}");
    }
    let mut stream = auth
        .verifier()
        .watch_revocations(pb::WatchRevocationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut rules = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the log within 5 s")
        .unwrap()
    {
        match message.event {
            Some(event) => rules.push(event),
            None if message.heartbeat => break,
            None => {}
        }
    }
    assert!(
        rules
            .iter()
            .any(|r| r.app_id == a_id && r.user_id == "u2" && r.token_id.is_empty()),
        "u2's withdrawal rule: {rules:?}"
    );
    assert!(
        rules
            .iter()
            .any(|r| r.app_id == b_id && !r.token_id.is_empty()),
        "app B's token rule: {rules:?}"
    );

    // New flows on the old data.
    let fresh = consent_token(&auth.consent("u4", a_id, &[UserInfo]).await.unwrap());
    assert_eq!(
        outcome(&u.open_user_info(&fresh).await),
        "OK",
        "a consent token minted after the upgrade"
    );
    let again = consent_token(&auth.consent("u1", a_id, &[UserInfo]).await.unwrap());
    assert_eq!(
        outcome(&u.open_user_info(&again).await),
        "OK",
        "u1 granted silently after the upgrade"
    );
    auth.withdraw("u1", a_id, &[]).await.unwrap();
    let started = std::time::Instant::now();
    while outcome(&u.open_user_info(&again).await) != "InvalidAuthRelations" {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a withdrawal after the upgrade"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b_token = consent_token(&auth.consent("u3", b_id, &[UserInfo]).await.unwrap());
    let revoked = auth
        .backend(b_id, b_secret)
        .revoke_token(pb::RevokeTokenRequest {
            token: b_token.clone(),
        })
        .await;
    assert_eq!(outcome(&revoked), "OK", "RevokeToken after the upgrade");
    let started = std::time::Instant::now();
    while outcome(&u.open_user_info(&b_token).await) != "InvalidAuthRelations" {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a token revoked after the upgrade"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Today's auth-service on each auth fixture's SQLite file. Guards the migrations after each
/// fixture's schema (`migrations/auth/sqlite`) and the start-up steps that adopt older data
/// (`keys::pairwise_secret` keeping the pairwise-id secret an older version derived) against
/// what older versions wrote, as the README's upgrade notes promise: apps, secrets, consents,
/// consent records, refresh tokens, unspent codes and the revocation log carry over, spent
/// codes and rotated refresh tokens stay spent, app user ids do not change. Seen failing with
/// a fresh random pairwise-id secret on a database that has apps (app user ids changed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_auth_database_of_every_earlier_schema_keeps_working_sqlite() {
    let _quiet = crate::alongside_others().await;
    within(Duration::from_secs(90), "auth fixtures on SQLite", async {
        for (schema, dir) in fixtures_of("auth") {
            let m = manifest(&dir, "sqlite");
            let tmp = tempfile::tempdir().unwrap();
            let url = sqlite_copy(&dir, "auth", tmp.path());
            let env = Env::auth(&url).set("MASTER_KEY", text(&m, &["master_key_hex"]));
            let auth = ServiceProcess::start(AUTH_SERVICE, &env).await;
            let userinfo_database =
                format!("sqlite://{}", tmp.path().join("userinfo.db").display());
            check_auth_fixture(
                schema,
                &m,
                &AuthClients(auth.channel.clone()),
                auth.addr,
                &userinfo_database,
            )
            .await;
        }
    })
    .await;
}

/// Today's auth-service on each auth fixture's PostgreSQL dump, two replicas starting at once
/// (both run the migrations; PostgreSQL's migration lock orders them). The same checks as on
/// SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn an_auth_database_of_every_earlier_schema_keeps_working_postgres() {
    let _quiet = crate::alongside_others().await;
    within(
        Duration::from_secs(90),
        "auth fixtures on PostgreSQL",
        async {
            for (schema, dir) in fixtures_of("auth") {
                let m = manifest(&dir, "postgres");
                let url = postgres_restore(&dir, "auth").await;
                let env = Env::auth(&url).set("MASTER_KEY", text(&m, &["master_key_hex"]));
                let (a, b) = tokio::join!(
                    ServiceProcess::start(AUTH_SERVICE, &env),
                    ServiceProcess::start(AUTH_SERVICE, &env)
                );
                let userinfo_database = fresh_schema_url("faults_userinfo").await;
                check_auth_fixture(
                    schema,
                    &m,
                    &AuthClients(b.channel.clone()),
                    a.addr,
                    &userinfo_database,
                )
                .await;
            }
        },
    )
    .await;
}

/// The profiles a userinfo fixture holds, exactly, through today's userinfo-service.
async fn check_userinfo_fixture(m: &Value, userinfo: &UserInfoClients) {
    let profiles = m["profiles"].as_array().expect("profiles");
    for expected in profiles {
        let user_id = expected["user_id"].as_str().expect("user_id");
        let found = userinfo
            .profiles()
            .get_profile(upb::GetProfileRequest {
                user_id: user_id.into(),
            })
            .await;
        let found = found
            .expect("a profile of the fixture")
            .into_inner()
            .profile
            .expect("profile");
        assert_eq!(
            profile_json(&found),
            *expected,
            "{user_id} across the upgrade"
        );
    }
    userinfo
        .upsert(userinfo_service::testing::demo_profile("after-upgrade"))
        .await
        .expect("a write after the upgrade");
}

fn profile_json(p: &upb::Profile) -> Value {
    json!({
        "user_id": p.user_id, "real_name": p.real_name, "phone_number": p.phone_number,
        "avatar": p.avatar, "nick_name": p.nick_name, "gender": p.gender,
        "country_code": p.country_code, "province": p.province, "city": p.city,
    })
}

/// Today's userinfo-service on each userinfo fixture, SQLite and PostgreSQL (two replicas at
/// once): every profile reads back exactly. Guards `migrations/userinfo` against what older
/// versions wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_userinfo_database_of_every_earlier_schema_keeps_working_sqlite() {
    let _quiet = crate::alongside_others().await;
    within(
        Duration::from_secs(60),
        "userinfo fixtures on SQLite",
        async {
            let tmp = tempfile::tempdir().unwrap();
            let auth = ServiceProcess::start(
                AUTH_SERVICE,
                &Env::auth(&format!(
                    "sqlite://{}",
                    tmp.path().join("auth.db").display()
                )),
            )
            .await;
            for (_, dir) in fixtures_of("userinfo") {
                let url = sqlite_copy(&dir, "userinfo", tmp.path());
                let userinfo =
                    ServiceProcess::start(USERINFO_SERVICE, &Env::userinfo(&url, auth.addr)).await;
                check_userinfo_fixture(
                    &manifest(&dir, "sqlite"),
                    &UserInfoClients(userinfo.channel.clone()),
                )
                .await;
            }
        },
    )
    .await;
}

/// [`a_userinfo_database_of_every_earlier_schema_keeps_working_sqlite`] on the PostgreSQL dumps,
/// two replicas starting at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn a_userinfo_database_of_every_earlier_schema_keeps_working_postgres() {
    let _quiet = crate::alongside_others().await;
    within(
        Duration::from_secs(60),
        "userinfo fixtures on PostgreSQL",
        async {
            let tmp = tempfile::tempdir().unwrap();
            let auth = ServiceProcess::start(
                AUTH_SERVICE,
                &Env::auth(&format!(
                    "sqlite://{}",
                    tmp.path().join("auth.db").display()
                )),
            )
            .await;
            for (_, dir) in fixtures_of("userinfo") {
                let url = postgres_restore(&dir, "userinfo").await;
                let env = Env::userinfo(&url, auth.addr);
                let (one, two) = tokio::join!(
                    ServiceProcess::start(USERINFO_SERVICE, &env),
                    ServiceProcess::start(USERINFO_SERVICE, &env)
                );
                check_userinfo_fixture(
                    &manifest(&dir, "postgres"),
                    &UserInfoClients(one.channel.clone()),
                )
                .await;
                drop(two);
            }
        },
    )
    .await;
}

/// Four auth-service and two userinfo-service replicas started at once on empty PostgreSQL
/// schemas: every one becomes SERVING, each migration is applied once, and they serve together
/// (a token one auth replica mints verifies at a userinfo replica following another). Guards
/// the migration lock sqlx takes on PostgreSQL (`Migrator::run`, a session advisory lock,
/// in sql-backend's `Pools::open`). Seen failing with migrations run without it
/// (`Migrator::set_locking(false)`): replicas failed to start on duplicate tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn postgres_replicas_starting_at_once_migrate_safely() {
    let _quiet = crate::alongside_others().await;
    within(Duration::from_secs(90), "replicas starting at once", async {
        let auth_database = fresh_schema_url("faults_auth").await;
        let env = Env::auth(&auth_database);
        let (a, b, c, d) = tokio::join!(
            ServiceProcess::start(AUTH_SERVICE, &env),
            ServiceProcess::start(AUTH_SERVICE, &env),
            ServiceProcess::start(AUTH_SERVICE, &env),
            ServiceProcess::start(AUTH_SERVICE, &env)
        );
        let userinfo_database = fresh_schema_url("faults_userinfo").await;
        let (one, two) = (Env::userinfo(&userinfo_database, a.addr), Env::userinfo(&userinfo_database, d.addr));
        let (one, two) = tokio::join!(ServiceProcess::start(USERINFO_SERVICE, &one), ServiceProcess::start(USERINFO_SERVICE, &two));
        for (database, service) in [(&auth_database, "auth"), (&userinfo_database, "userinfo")] {
            let pool = sqlx::PgPool::connect(database).await.unwrap();
            let applied: Vec<(i64, i64)> = sqlx::query_as("SELECT version, COUNT(*) FROM _sqlx_migrations GROUP BY version ORDER BY version")
                .fetch_all(&pool)
                .await
                .unwrap();
            pool.close().await;
            let expected: Vec<(i64, i64)> = migrations(service).into_iter().map(|n| (i64::from(n), 1)).collect();
            assert_eq!(applied, expected, "{service}: each migration applied once");
        }
        let (app_id, _) = AuthClients(b.channel.clone()).create_app(&ALL_FEATURES).await;
        UserInfoClients(one.channel.clone()).upsert(userinfo_service::testing::demo_profile("u1")).await.unwrap();
        for minting in [&a, &b, &c, &d] {
            let token = consent_token(&AuthClients(minting.channel.clone()).consent("u1", &app_id, &[UserInfo]).await.unwrap());
            for verifying in [&one, &two] {
                let seen = UserInfoClients(verifying.channel.clone()).open_user_info(&token).await;
                assert_eq!(outcome(&seen), "OK", "a token of one replica at a verifier of another");
            }
        }
    })
    .await;
}

/// Three auth-service processes started at once on one new SQLite file (as a supervisor may
/// overlap an old and a new process): every one becomes SERVING and the file holds each
/// migration once. Guards `migrate_sqlite` (sql-backend), which carries on after losing a race
/// to another process; seen failing without it (a process exited: "table sealed_secrets
/// already exists").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_starting_at_once_on_one_sqlite_file_migrate_it_once() {
    let _quiet = crate::alongside_others().await;
    within(
        Duration::from_secs(60),
        "processes starting at once on SQLite",
        async {
            let tmp = tempfile::tempdir().unwrap();
            let file = tmp.path().join("auth.db");
            let env = Env::auth(&format!("sqlite://{}", file.display()));
            let (_a, _b, _c) = tokio::join!(
                ServiceProcess::start(AUTH_SERVICE, &env),
                ServiceProcess::start(AUTH_SERVICE, &env),
                ServiceProcess::start(AUTH_SERVICE, &env)
            );
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
                .await
                .unwrap();
            let applied: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT version, COUNT(*) FROM _sqlx_migrations GROUP BY version ORDER BY version",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            pool.close().await;
            let expected: Vec<(i64, i64)> = migrations("auth")
                .into_iter()
                .map(|n| (i64::from(n), 1))
                .collect();
            assert_eq!(applied, expected);
        },
    )
    .await;
}

/// Writes the fixtures of the binaries named by `FIXTURE_AUTH_SERVICE` and
/// `FIXTURE_USERINFO_SERVICE` (built from the commit before a new migration) into
/// `faults/fixtures/<service>/<schema>/`: the SQLite files, PostgreSQL dumps (of databases on
/// `TEST_DATABASE_URL`'s server, `pg_dump` on PATH) and manifests. See README, "Upgrades".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "writes fixtures: run by hand with FIXTURE_AUTH_SERVICE and FIXTURE_USERINFO_SERVICE"]
async fn make_upgrade_fixtures() {
    let _quiet = crate::alongside_others().await;
    within(
        Duration::from_secs(300),
        "writing the fixtures",
        write_fixtures(),
    )
    .await;
}

/// The body of [`make_upgrade_fixtures`].
async fn write_fixtures() {
    let auth_binary = std::env::var("FIXTURE_AUTH_SERVICE")
        .expect("FIXTURE_AUTH_SERVICE: the older auth-service binary");
    let userinfo_binary = std::env::var("FIXTURE_USERINFO_SERVICE")
        .expect("FIXTURE_USERINFO_SERVICE: the older userinfo-service binary");
    let server = std::env::var(sql_backend::testing::URL_ENV)
        .expect("TEST_DATABASE_URL: a server to dump from");
    let tmp = tempfile::tempdir().unwrap();
    for engine in ["sqlite", "postgres"] {
        let (auth_url, userinfo_url) = match engine {
            "sqlite" => (
                format!("sqlite://{}", tmp.path().join("auth.db").display()),
                format!("sqlite://{}", tmp.path().join("userinfo.db").display()),
            ),
            _ => (
                new_database(&server, "fixture_auth").await,
                new_database(&server, "fixture_userinfo").await,
            ),
        };
        let long = "36500d";
        let auth_env = Env::auth(&auth_url)
            .set("CONSENT_TOKEN_TTL", long)
            .set("ACCESS_TOKEN_TTL", long)
            .set("REFRESH_TOKEN_TTL", long)
            .set("AUTH_CODE_TTL", long)
            .set("KEY_ROTATION_PERIOD", long);
        let auth = ServiceProcess::start(&auth_binary, &auth_env).await;
        let userinfo =
            ServiceProcess::start(&userinfo_binary, &Env::userinfo(&userinfo_url, auth.addr)).await;
        let (auth_manifest, userinfo_manifest) = write_fixture_data(
            &AuthClients(auth.channel.clone()),
            &UserInfoClients(userinfo.channel.clone()),
        )
        .await;
        for mut service in [userinfo, auth] {
            service.signal("TERM");
            let started = std::time::Instant::now();
            while service.is_running() && started.elapsed() < Duration::from_secs(20) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        for (service, url, manifest) in [
            ("auth", &auth_url, auth_manifest),
            ("userinfo", &userinfo_url, userinfo_manifest),
        ] {
            let (schema, contents) = match engine {
                "sqlite" => sqlite_fixture(url).await,
                _ => postgres_fixture(url).await,
            };
            let dir = fixtures().join(service).join(format!("{schema:04}"));
            std::fs::create_dir_all(&dir).unwrap();
            let ext = if engine == "sqlite" { "db" } else { "sql" };
            std::fs::write(dir.join(format!("{service}.{ext}")), contents).unwrap();
            let manifest = serde_json::to_string_pretty(&manifest).unwrap() + "\n";
            std::fs::write(dir.join(format!("manifest.{engine}.json")), manifest).unwrap();
            eprintln!("wrote {}", dir.display());
        }
    }
}

/// The flows a fixture records, through the older binaries; the manifests of auth and userinfo.
async fn write_fixture_data(auth: &AuthClients, userinfo: &UserInfoClients) -> (Value, Value) {
    let (a_id, a_secret) = auth.create_app(&ALL_FEATURES).await;
    let (b_id, b_secret) = auth.create_app(&[pb::Feature::BasicUserInfo]).await;
    let consent = consent_token(&auth.consent("u1", &a_id, &[UserInfo]).await.unwrap());
    let spent = auth_code(
        &auth
            .consent("u1", &a_id, &[AuthBase, PhoneNumber])
            .await
            .unwrap(),
    );
    let first = auth.exchange(&a_id, &a_secret, &spent).await.unwrap();
    let second = auth
        .refresh(&a_id, &a_secret, &first.refresh_token)
        .await
        .unwrap();
    let unspent = auth_code(
        &auth
            .consent("u1", &a_id, &[AuthBase, PhoneNumber])
            .await
            .unwrap(),
    );
    let withdrawn = consent_token(&auth.consent("u2", &a_id, &[UserInfo]).await.unwrap());
    auth.withdraw("u2", &a_id, &[]).await.unwrap();
    let revoked = consent_token(&auth.consent("u3", &b_id, &[UserInfo]).await.unwrap());
    auth.backend(&b_id, &b_secret)
        .revoke_token(pb::RevokeTokenRequest {
            token: revoked.clone(),
        })
        .await
        .unwrap();
    let auth_manifest = json!({
        "master_key_hex": MASTER_KEY_HEX,
        "app_a": { "app_id": a_id, "secret": a_secret },
        "app_b": { "app_id": b_id, "secret": b_secret },
        "u1": {
            "consent_token": consent,
            "access_token": second.access_token,
            "refresh_token": second.refresh_token,
            "rotated_refresh_token": first.refresh_token,
            "spent_code": spent,
            "unspent_code": unspent,
            "app_user_id": first.user_id,
        },
        "u2": { "withdrawn_consent_token": withdrawn },
        "u3": { "revoked_consent_token": revoked },
    });
    let mut profiles = Vec::new();
    for profile in [
        userinfo_service::testing::demo_profile("p1"),
        upb::Profile {
            nick_name: "小明 🐼".into(),
            avatar: String::new(),
            gender: String::new(),
            country_code: String::new(),
            province: String::new(),
            city: String::new(),
            ..userinfo_service::testing::demo_profile("用户-🙂")
        },
        upb::Profile {
            gender: "f".into(),
            ..userinfo_service::testing::demo_profile("p3")
        },
    ] {
        profiles.push(profile_json(&profile));
        userinfo.upsert(profile).await.unwrap();
    }
    (auth_manifest, json!({ "profiles": profiles }))
}

/// A new database on the server of `server` (a URL), for a fixture; its URL.
async fn new_database(server: &str, prefix: &str) -> String {
    let name = format!(
        "{prefix}_{}",
        hex::encode(&miniprogram_token::random_bytes().unwrap()[..4])
    );
    let admin = sqlx::PgPool::connect(server).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let base = server.rsplit_once('/').map_or(server, |(base, _)| base);
    format!("{base}/{name}")
}

/// A stopped service's SQLite file as a fixture: its WAL folded in and switched to a rollback
/// journal, so the one file is the whole database. (schema, bytes)
async fn sqlite_fixture(url: &str) -> (u32, Vec<u8>) {
    use sqlx::Connection;
    let mut one = sqlx::SqliteConnection::connect(url).await.unwrap();
    for pragma in [
        "PRAGMA wal_checkpoint(TRUNCATE)",
        "PRAGMA journal_mode=DELETE",
    ] {
        sqlx::query(pragma).execute(&mut one).await.unwrap();
    }
    let newest = "SELECT MAX(version) FROM _sqlx_migrations";
    let (schema,): (i64,) = sqlx::query_as(newest).fetch_one(&mut one).await.unwrap();
    one.close().await.unwrap();
    let path = url.trim_start_matches("sqlite://");
    (schema as u32, std::fs::read(path).unwrap())
}

/// A database as a plain SQL dump that restores into whatever schema the connection's
/// `search_path` names: `pg_dump --inserts` without owners, privileges, settings, psql
/// commands or the `public.` qualifier. (schema, text)
async fn postgres_fixture(url: &str) -> (u32, Vec<u8>) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let (schema,): (i64,) = sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    let dumped = std::process::Command::new("pg_dump")
        .args([
            "--no-owner",
            "--no-privileges",
            "--inserts",
            "--schema=public",
            "--dbname",
            url,
        ])
        .output()
        .expect("run pg_dump");
    assert!(
        dumped.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dumped.stderr)
    );
    let dump = String::from_utf8(dumped.stdout).unwrap();
    let mut plain = String::from(
        "-- Written by `make_upgrade_fixtures` (faults/tests/faults/upgrades.rs) with pg_dump.\n",
    );
    for line in dump.lines() {
        let skip = line.starts_with("--")
            || line.starts_with("SET ")
            || line.starts_with("SELECT pg_catalog.set_config")
            || line.starts_with('\\')
            || line.starts_with("CREATE SCHEMA")
            || line.starts_with("COMMENT ON SCHEMA")
            || (line.is_empty() && plain.ends_with("\n\n"));
        if !skip {
            plain.push_str(&line.replace("public.", ""));
            plain.push('\n');
        }
    }
    (schema as u32, plain.into_bytes())
}
