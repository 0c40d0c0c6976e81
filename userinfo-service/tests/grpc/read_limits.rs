//! Scraping limits: GetOpenUserInfo and GetPhoneNumber refused with
//! REQUEST_TRAFFIC_EXCEED_LIMIT past an app's or a token's budget, each budget apart, each
//! refusal counted in `read_limit_refusals_total{method, reason}`. Each test touches the
//! series of one method only, so their counts can be compared exactly.

use std::num::NonZeroU32;
use std::time::Duration;

use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1::Scope::UserInfo;
use tonic::Code;
use userinfo_service::read_limits::{RateLimit, ReadLimits};

use super::disclosures::{phone_access_token, phone_number};
use super::{
    ALL_FEATURES, TestAuthServer, consent_token, open_user_info, reason, upsert_profile,
    userinfo_for,
};

/// A burst of `burst`, refilled at one call per thousand seconds: nothing comes back while
/// a test runs.
fn burst_only(burst: u32) -> Option<RateLimit> {
    RateLimit::new(0.001, NonZeroU32::new(burst).expect("a burst"))
}

/// The value of `read_limit_refusals_total{method, reason}` in the process's metrics.
fn refusals(method: &str, why: &str) -> u64 {
    let handle = service_runtime::install_metrics_recorder().expect("a metrics recorder");
    let (method, why) = (format!("method=\"{method}\""), format!("reason=\"{why}\""));
    handle
        .render()
        .lines()
        .find(|l| {
            l.starts_with("read_limit_refusals_total{") && l.contains(&method) && l.contains(&why)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn assert_limited<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(
        (err.code(), reason(&err)),
        (
            Code::ResourceExhausted,
            ErrorReason::RequestTrafficExceedLimit
        ),
        "{what}"
    );
}

/// Guards both checks in `ReadLimiter::check` for GetOpenUserInfo, and its metric: an app
/// over its budget is refused whichever token it presents while another app reads on; a
/// token over its budget is refused while another token of the same app reads on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_open_user_info_is_limited_per_app_and_per_token() {
    let run = async {
        service_runtime::install_metrics_recorder().expect("a metrics recorder");
        let (app_before, token_before) = (
            refusals("GetOpenUserInfo", "per_app"),
            refusals("GetOpenUserInfo", "per_token"),
        );
        let auth = TestAuthServer::start().await;
        let (app_a, _) = auth.create_app(&ALL_FEATURES).await;
        let (app_b, _) = auth.create_app(&ALL_FEATURES).await;
        let a1 = consent_token(&auth.consent("u1", &app_a, &[UserInfo]).await);
        let a2 = consent_token(&auth.consent("u2", &app_a, &[UserInfo]).await);
        let b1 = consent_token(&auth.consent("u1", &app_b, &[UserInfo]).await);

        let per_app = userinfo_for(&auth, |c| {
            c.read_limits = ReadLimits {
                per_app: burst_only(3),
                per_token: None,
            }
        })
        .await;
        upsert_profile(&per_app, "u1").await;
        upsert_profile(&per_app, "u2").await;
        for token in [&a1, &a1, &a2] {
            open_user_info(&per_app, token)
                .await
                .expect("within the app's budget");
        }
        assert_limited(open_user_info(&per_app, &a2).await, "app A, fourth read");
        assert_limited(open_user_info(&per_app, &a1).await, "app A, another token");
        open_user_info(&per_app, &b1).await.expect("app B reads on");

        let per_token = userinfo_for(&auth, |c| {
            c.read_limits = ReadLimits {
                per_app: None,
                per_token: burst_only(2),
            }
        })
        .await;
        upsert_profile(&per_token, "u1").await;
        upsert_profile(&per_token, "u2").await;
        for _ in 0..2 {
            open_user_info(&per_token, &a1)
                .await
                .expect("within the token's budget");
        }
        assert_limited(
            open_user_info(&per_token, &a1).await,
            "token a1, third read",
        );
        open_user_info(&per_token, &a2)
            .await
            .expect("another token of app A reads on");

        assert_eq!(refusals("GetOpenUserInfo", "per_app") - app_before, 2);
        assert_eq!(refusals("GetOpenUserInfo", "per_token") - token_before, 1);
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("within a minute");
}

/// Guards both checks for GetPhoneNumber, and that the two methods have budgets of their own
/// (`ReadLimiter::tables`): an app whose GetPhoneNumber budget is spent still reads public
/// profiles, and a token over its budget leaves another token of the app working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_phone_number_is_limited_per_app_and_per_token_apart_from_get_open_user_info() {
    let run = async {
        service_runtime::install_metrics_recorder().expect("a metrics recorder");
        let (app_before, token_before) = (
            refusals("GetPhoneNumber", "per_app"),
            refusals("GetPhoneNumber", "per_token"),
        );
        let auth = TestAuthServer::start().await;
        let (app, secret) = auth.create_app(&ALL_FEATURES).await;
        let p1 = phone_access_token(&auth, "u1", &app, &secret).await;
        let p2 = phone_access_token(&auth, "u2", &app, &secret).await;
        let consent = consent_token(&auth.consent("u1", &app, &[UserInfo]).await);

        let per_app = userinfo_for(&auth, |c| {
            c.read_limits = ReadLimits {
                per_app: burst_only(2),
                per_token: None,
            }
        })
        .await;
        upsert_profile(&per_app, "u1").await;
        upsert_profile(&per_app, "u2").await;
        for token in [&p1, &p2] {
            phone_number(&per_app, &app, &secret, token)
                .await
                .expect("within the app's budget");
        }
        assert_limited(
            phone_number(&per_app, &app, &secret, &p1).await,
            "the app's third phone read",
        );
        for _ in 0..2 {
            open_user_info(&per_app, &consent)
                .await
                .expect("GetOpenUserInfo has a budget of its own");
        }

        let per_token = userinfo_for(&auth, |c| {
            c.read_limits = ReadLimits {
                per_app: None,
                per_token: burst_only(1),
            }
        })
        .await;
        upsert_profile(&per_token, "u1").await;
        upsert_profile(&per_token, "u2").await;
        phone_number(&per_token, &app, &secret, &p1)
            .await
            .expect("token p1's one read");
        assert_limited(
            phone_number(&per_token, &app, &secret, &p1).await,
            "token p1, second read",
        );
        phone_number(&per_token, &app, &secret, &p2)
            .await
            .expect("token p2 reads on");

        assert_eq!(refusals("GetPhoneNumber", "per_app") - app_before, 1);
        assert_eq!(refusals("GetPhoneNumber", "per_token") - token_before, 1);
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("within a minute");
}
