//! Erasure: after DeleteProfile no byte of the profile (nor of the user's ledger rows) is
//! left in the database's files. SQLite: the database file and its WAL are searched.
//! PostgreSQL (with `ERASURE_VACUUM_FULL`): the tables' files, read from the server's data
//! directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1::Scope::UserInfo;
use miniprogram_proto::userinfo::v1 as upb;
use sql_backend::Engine;
use sqlx::Row;
use userinfo_service::store::Vacuum;

use super::{
    ALL_FEATURES, TestAuthServer, TestUserInfoServer, consent_token, open_user_info, reason,
    userinfo_for,
};

/// A profile whose every text field holds a string made for this run, and those strings.
fn marked_profile() -> (upb::Profile, Vec<String>) {
    let random = miniprogram_token::random_bytes().expect("random");
    let mark: String = random[..8].iter().map(|b| format!("{b:02x}")).collect();
    let digits: String = random[8..19]
        .iter()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    let profile = upb::Profile {
        user_id: format!("erasable-{mark}"),
        real_name: format!("Realname{mark}"),
        phone_number: digits.clone(),
        avatar: format!("https://cdn.example.com/{mark}avatar.png"),
        nick_name: format!("Nick{mark}"),
        gender: "f".into(),
        country_code: "CN".into(),
        province: format!("Province{mark}"),
        city: format!("City{mark}"),
        update_time: None,
    };
    let marks = vec![
        profile.user_id.clone(),
        profile.real_name.clone(),
        digits,
        format!("{mark}avatar"),
        profile.nick_name.clone(),
        profile.province.clone(),
        profile.city.clone(),
    ];
    (profile, marks)
}

/// The marks found in any of `files` (a missing file holds none).
fn marks_in(files: &[PathBuf], marks: &[String]) -> Vec<String> {
    let contents: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    marks
        .iter()
        .filter(|m| {
            contents
                .iter()
                .any(|c| c.windows(m.len()).any(|w| w == m.as_bytes()))
        })
        .cloned()
        .collect()
}

fn sqlite_files(url: &str) -> Vec<PathBuf> {
    let db = PathBuf::from(url.trim_start_matches("sqlite://"));
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    vec![db, wal]
}

/// The data files of the personal tables (heap and indexes), after a checkpoint has written
/// every dirty page; `None` when the server's data directory can't be read from here.
async fn postgres_files(url: &str) -> Option<Vec<PathBuf>> {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    sqlx::query("CHECKPOINT")
        .execute(&pool)
        .await
        .expect("CHECKPOINT (the test database's user must be a superuser)");
    let dir: String = sqlx::query("SELECT current_setting('data_directory')")
        .fetch_one(&pool)
        .await
        .expect("data_directory")
        .get(0);
    let mut files = Vec::new();
    for relation in [
        "profiles",
        "profiles_pkey",
        "disclosures",
        "disclosures_pkey",
    ] {
        let path: String = sqlx::query("SELECT pg_relation_filepath($1::regclass)")
            .bind(relation)
            .fetch_one(&pool)
            .await
            .expect("pg_relation_filepath")
            .get(0);
        files.push(Path::new(&dir).join(path));
    }
    pool.close().await;
    files
        .iter()
        .all(|f| std::fs::metadata(f).is_ok())
        .then_some(files)
}

/// A profile with marked strings, read through both paths, with a ledger row written.
async fn read_a_marked_profile(
    auth: &TestAuthServer,
    userinfo: &TestUserInfoServer,
) -> (String, Vec<String>) {
    let (profile, marks) = marked_profile();
    let user = profile.user_id.clone();
    userinfo
        .profiles()
        .upsert_profile(upb::UpsertProfileRequest {
            profile: Some(profile),
        })
        .await
        .expect("upsert");
    userinfo
        .profiles()
        .get_profile(upb::GetProfileRequest {
            user_id: user.clone(),
        })
        .await
        .expect("get");
    let (app_id, _) = auth.create_app(&ALL_FEATURES).await;
    let token = consent_token(&auth.consent(&user, &app_id, &[UserInfo]).await);
    open_user_info(userinfo, &token).await.expect("read");
    let started = Instant::now();
    loop {
        let ledger = userinfo
            .profiles()
            .list_disclosures(upb::ListDisclosuresRequest {
                user_id: user.clone(),
                ..Default::default()
            })
            .await
            .expect("ledger")
            .into_inner();
        if !ledger.disclosures.is_empty() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no ledger row");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (user, marks)
}

async fn delete(userinfo: &TestUserInfoServer, user: &str) -> Result<(), tonic::Status> {
    userinfo
        .profiles()
        .delete_profile(upb::DeleteProfileRequest {
            user_id: user.into(),
        })
        .await
        .map(drop)
}

/// Guards SQLite's `secure_delete` (set in sql-backend's `try_open_sqlite`) and the WAL
/// checkpoint in `Pools::scrub`, which `ProfileStore::delete` runs: before the delete every
/// marked string is in the database file or its WAL; after it, none is in either. A second
/// DeleteProfile is PROFILE_NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_profile_leaves_no_bytes_in_the_sqlite_file_or_its_wal() {
    let run = async {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("erasure.db").display());
        let auth = TestAuthServer::start().await;
        let userinfo = userinfo_for(&auth, |c| c.database_url = url.clone()).await;
        let (user, marks) = read_a_marked_profile(&auth, &userinfo).await;
        let files = sqlite_files(&url);
        assert_eq!(
            marks_in(&files, &marks),
            marks,
            "the search finds what is there"
        );

        delete(&userinfo, &user).await.expect("delete");
        assert_eq!(marks_in(&files, &marks), Vec::<String>::new());
        let err = delete(&userinfo, &user).await.unwrap_err();
        assert_eq!(reason(&err), ErrorReason::ProfileNotFound);
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("within a minute");
}

/// Guards `Vacuum::Full` in sql-backend's PostgreSQL `scrub`, which `ProfileStore::delete`
/// runs with `ERASURE_VACUUM_FULL=true`: the search finds every marked string in the tables'
/// files before, and none after DeleteProfile (a plain `VACUUM` leaves them in the pages' free
/// space, as the README says). It reads the server's data directory, so it needs a local server
/// and the test run as root or as the server's user (`.ci/start-postgres.sh` and CI do both);
/// where it can't read the files it fails rather than check less.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: needs TEST_DATABASE_URL; run with -- --ignored postgres"]
async fn a_deleted_profile_leaves_no_bytes_in_postgres_with_erasure_vacuum_full() {
    let run = async {
        let url = sql_backend::testing::fresh_schema_url("erasure").await;
        assert_eq!(Engine::of(&url).ok(), Some(Engine::Postgres));
        let auth = TestAuthServer::start().await;
        let userinfo = userinfo_for(&auth, |c| {
            c.database_url = url.clone();
            c.erasure_vacuum = Vacuum::Full;
        })
        .await;
        let (user, marks) = read_a_marked_profile(&auth, &userinfo).await;
        let files = postgres_files(&url).await.expect(
            "PostgreSQL's data directory is not readable here: run the test as root or as the \
             server's user, against a local server",
        );
        assert_eq!(
            marks_in(&files, &marks),
            marks,
            "the search finds what is there"
        );

        delete(&userinfo, &user).await.expect("delete");
        let err = userinfo
            .profiles()
            .get_profile(upb::GetProfileRequest {
                user_id: user.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), ErrorReason::ProfileNotFound);
        let files = postgres_files(&url).await.expect("still readable");
        assert_eq!(marks_in(&files, &marks), Vec::<String>::new());
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("within a minute");
}

/// Guards the profile delete in `UserData::resume`: a process that died after
/// `mark_erasure_pending` and before deleting the profile leaves a pending record and a live
/// profile; on restart the erasure resumes and deletes and scrubs the profile (no marked string
/// left in the SQLite file or its WAL, the user id included once the record is cleared) as
/// well as ending the user's authorizations at auth-service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_erasure_deletes_the_profile_too() {
    let run = async {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("resume.db").display());
        let auth = TestAuthServer::start().await;
        let (app_id, _) = auth.create_app(&ALL_FEATURES).await;
        let (profile, marks) = marked_profile();
        let user = profile.user_id.clone();
        auth.consent(&user, &app_id, &[UserInfo]).await;

        // The first life: the profile is written, then the erasure is recorded as the
        // process dies, before the profile is deleted.
        let first = userinfo_for(&auth, |c| c.database_url = url.clone()).await;
        first
            .profiles()
            .upsert_profile(upb::UpsertProfileRequest {
                profile: Some(profile),
            })
            .await
            .expect("upsert");
        first.stop().await.expect("stopped");
        let store = userinfo_service::store::open(&url).await.expect("store");
        store
            .mark_erasure_pending(&user, miniprogram_token::Timestamp::now())
            .await
            .expect("pending");
        store.close().await;
        let files = sqlite_files(&url);
        assert_eq!(marks_in(&files, &marks), marks, "the profile is there");
        assert_eq!(auth.authorizations(&user).await.len(), 1);

        let second = userinfo_for(&auth, |c| c.database_url = url.clone()).await;
        let started = Instant::now();
        while !marks_in(&files, &marks).is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "left after the resumed erasure: {:?}",
                marks_in(&files, &marks)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let err = second
            .profiles()
            .get_profile(upb::GetProfileRequest {
                user_id: user.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), ErrorReason::ProfileNotFound);
        assert!(auth.authorizations(&user).await.is_empty());
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("within a minute");
}
