//! The disclosure ledger over gRPC: answered reads become ListDisclosures rows, counted in
//! memory and written off the request path, every flush interval and at a graceful stop.

use std::time::{Duration, Instant};

use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use tonic::Code;
use userinfo_service::testing::CallerCredential;

use super::{
    ALL_FEATURES, TestAuthServer, TestUserInfoServer, auth_code, consent_token, open_user_info,
    reason, upsert_profile, userinfo_for,
};

use pb::Scope::{AuthBase, PhoneNumber, UserInfo};
use upb::DisclosedData::{PhoneNumber as PhoneData, PublicProfile as PublicData};

/// An access token of `app_id` for `user` carrying the phone scope.
pub async fn phone_access_token(
    auth: &TestAuthServer,
    user: &str,
    app_id: &str,
    secret: &str,
) -> String {
    let code = auth_code(&auth.consent(user, app_id, &[AuthBase, PhoneNumber]).await);
    auth.backend(app_id, secret)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
        .await
        .expect("exchange")
        .into_inner()
        .access_token
}

pub async fn phone_number(
    userinfo: &TestUserInfoServer,
    app_id: &str,
    secret: &str,
    access_token: &str,
) -> Result<String, tonic::Status> {
    userinfo
        .backend(app_id, secret)
        .get_phone_number(upb::GetPhoneNumberRequest {
            access_token: access_token.into(),
        })
        .await
        .map(|r| r.into_inner().phone_number)
}

async fn list(
    userinfo: &TestUserInfoServer,
    request: upb::ListDisclosuresRequest,
) -> Result<upb::ListDisclosuresResponse, tonic::Status> {
    userinfo
        .profiles()
        .list_disclosures(request)
        .await
        .map(tonic::Response::into_inner)
}

/// The user's whole ledger as (app, kind, count), in its order.
async fn ledger_of(userinfo: &TestUserInfoServer, user: &str) -> Vec<(String, i32, u64)> {
    let request = upb::ListDisclosuresRequest {
        user_id: user.into(),
        ..Default::default()
    };
    let page = list(userinfo, request).await.expect("ListDisclosures");
    page.disclosures
        .into_iter()
        .map(|d| (d.app_id, d.data, d.count))
        .collect()
}

/// Polls the user's ledger every 20 ms for up to 10 s until it is `expected`.
async fn ledger_becomes(
    userinfo: &TestUserInfoServer,
    user: &str,
    expected: &[(String, i32, u64)],
) -> Vec<(String, i32, u64)> {
    let started = Instant::now();
    loop {
        let ledger = ledger_of(userinfo, user).await;
        if ledger == expected || started.elapsed() > Duration::from_secs(10) {
            return ledger;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Guards the ledger from the read to the row (`UserInfoReader`'s `ledger.record`, the
/// in-memory counters, the flusher spawned by `serve_with_listener`, the additive upsert):
/// 1,000 GetOpenUserInfo calls with one token are one row counting 1,000, and three
/// GetPhoneNumber calls one row counting 3, shown within seconds with a 200 ms interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_reads_are_one_row_counting_a_thousand() {
    let run = async {
        let auth = TestAuthServer::start().await;
        let userinfo = userinfo_for(&auth, |_| {}).await;
        upsert_profile(&userinfo, "u1").await;
        let (app_id, secret) = auth.create_app(&ALL_FEATURES).await;
        let consent = consent_token(&auth.consent("u1", &app_id, &[UserInfo]).await);
        let access = phone_access_token(&auth, "u1", &app_id, &secret).await;

        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (client, consent) = (userinfo.userinfo(), consent.clone());
            callers.spawn(async move {
                let mut client = client;
                for _ in 0..125 {
                    let request = upb::GetOpenUserInfoRequest {
                        consent_token: consent.clone(),
                    };
                    client.get_open_user_info(request).await.expect("read");
                }
            });
        }
        while let Some(done) = callers.join_next().await {
            done.expect("caller");
        }
        for _ in 0..3 {
            phone_number(&userinfo, &app_id, &secret, &access)
                .await
                .expect("phone number");
        }
        let expected = [
            (app_id.clone(), PhoneData as i32, 3),
            (app_id.clone(), PublicData as i32, 1000),
        ];
        assert_eq!(ledger_becomes(&userinfo, "u1", &expected).await, expected);
    };
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("within two minutes");
}

/// Guards the last flush in `serve_with_listener`: with an hour-long interval nothing is
/// written while the server runs, and the reads it answered are in the database once it has
/// stopped gracefully.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_writes_the_last_batch() {
    let run = async {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let auth = TestAuthServer::start().await;
        let userinfo = userinfo_for(&auth, |c| {
            c.database_url = url.clone();
            c.disclosures.flush_interval = Duration::from_secs(3600);
        })
        .await;
        upsert_profile(&userinfo, "u1").await;
        let (app_id, _) = auth.create_app(&ALL_FEATURES).await;
        let consent = consent_token(&auth.consent("u1", &app_id, &[UserInfo]).await);
        for _ in 0..5 {
            open_user_info(&userinfo, &consent).await.expect("read");
        }
        assert!(
            ledger_of(&userinfo, "u1").await.is_empty(),
            "not written yet"
        );
        userinfo.stop().await.expect("a clean stop");

        let store = userinfo_service::store::open(&url).await.expect("reopen");
        let rows = store
            .list_disclosures("u1", None, None, 10)
            .await
            .expect("list");
        store.close().await;
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].app_id.as_str(), rows[0].count),
            (app_id.as_str(), 5)
        );
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("within a minute");
}

/// ListDisclosures: pages follow the token to the end, the app filter applies, bad
/// arguments are INVALID_ARGUMENT, and only the profile credential (PROFILE_TOKEN) may call it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_disclosures_pages_filters_and_checks_its_arguments() {
    let run = async {
        let auth = TestAuthServer::start().await;
        let userinfo = userinfo_for(&auth, |_| {}).await;
        upsert_profile(&userinfo, "u1").await;
        let mut apps = Vec::new();
        for _ in 0..3 {
            let (app_id, _) = auth.create_app(&ALL_FEATURES).await;
            let consent = consent_token(&auth.consent("u1", &app_id, &[UserInfo]).await);
            open_user_info(&userinfo, &consent).await.expect("read");
            apps.push(app_id);
        }
        apps.sort();
        apps.reverse();
        let expected: Vec<_> = apps
            .iter()
            .map(|app| (app.clone(), PublicData as i32, 1))
            .collect();
        assert_eq!(ledger_becomes(&userinfo, "u1", &expected).await, expected);

        let mut seen = Vec::new();
        let mut page_token = String::new();
        for page in 0.. {
            let response = list(
                &userinfo,
                upb::ListDisclosuresRequest {
                    user_id: "u1".into(),
                    page_size: 2,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect("page");
            assert!(response.disclosures.len() <= 2, "page {page}");
            seen.extend(response.disclosures.into_iter().map(|d| d.app_id));
            page_token = response.next_page_token;
            if page_token.is_empty() {
                break;
            }
        }
        assert_eq!(seen, apps);

        let only = list(
            &userinfo,
            upb::ListDisclosuresRequest {
                user_id: "u1".into(),
                app_id: apps[1].clone(),
                ..Default::default()
            },
        )
        .await
        .expect("filtered");
        assert_eq!(only.disclosures.len(), 1);
        assert_eq!(only.disclosures[0].app_id, apps[1]);
        let day = &only.disclosures[0].day;
        assert!(day.len() == 10 && day.starts_with("20"), "{day}");

        for bad in [
            upb::ListDisclosuresRequest {
                user_id: "u1".into(),
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            upb::ListDisclosuresRequest {
                user_id: "u1".into(),
                page_size: -1,
                ..Default::default()
            },
            upb::ListDisclosuresRequest::default(),
        ] {
            let err = list(&userinfo, bad).await.unwrap_err();
            assert_eq!(
                (err.code(), reason(&err)),
                (Code::InvalidArgument, ErrorReason::InvalidArgument)
            );
        }
        let mut stranger = upb::profile_service_client::ProfileServiceClient::with_interceptor(
            userinfo.channel.clone(),
            CallerCredential::none(),
        );
        let err = stranger
            .list_disclosures(upb::ListDisclosuresRequest {
                user_id: "u1".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), ErrorReason::UnauthenticatedCaller);
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("within a minute");
}
