//! ExportUserData's document: its structure is pinned (a renamed or removed key fails here,
//! and the README's documented format stays true), and a list cut at its limit says so.

use std::time::{Duration, Instant};

use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::auth::v1::Scope::{AuthBase, UserInfo};
use miniprogram_proto::userinfo::v1 as upb;
use miniprogram_token::Timestamp;
use serde_json::{Value, json};
use userinfo_service::model::{DisclosedFields, Disclosure, UtcDay};
use userinfo_service::user_data::MAX_EXPORTED_DISCLOSURES;

use super::{
    ALL_FEATURES, TestAuthServer, TestUserInfoServer, auth_code, consent_token, open_user_info,
    upsert_profile, userinfo_for,
};

/// The document with every value elided: objects keep their keys, a list keeps one element
/// holding every key its elements have, any other value becomes `"…"`.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(shape).reduce(merge).into_iter().collect())
        }
        _ => json!("…"),
    }
}

fn merge(a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Object(mut a), Value::Object(b)) => {
            for (k, v) in b {
                let merged = match a.remove(&k) {
                    Some(old) => merge(old, v),
                    None => v,
                };
                a.insert(k, merged);
            }
            Value::Object(a)
        }
        (Value::Array(a), Value::Array(b)) => {
            Value::Array(a.into_iter().chain(b).reduce(merge).into_iter().collect())
        }
        (a, _) => a,
    }
}

/// `miniprogram.user-data/v1`'s structure, as the README documents it; keys are only ever
/// added to it.
fn golden_v1() -> Value {
    json!({
        "format": "…",
        "user_id": "…",
        "exported_at": "…",
        "profile": {
            "real_name": "…", "phone_number": "…", "avatar": "…", "nick_name": "…",
            "gender": "…", "country_code": "…", "province": "…", "city": "…",
            "updated_at": "…"
        },
        "disclosures": [{"app_id": "…", "data": "…", "day": "…", "count": "…"}],
        "disclosures_truncated": "…",
        "authorizations": [{"app_id": "…", "app_display_name": "…", "scopes": ["…"],
                            "granted_at": "…"}],
        "consent_records": [{"record_id": "…", "app_id": "…", "event": "…", "scopes": ["…"],
                             "trigger": "…", "purposes": [{"scope": "…", "purpose": "…"}],
                             "declaration_version": "…", "recorded_at": "…"}],
        "consent_records_truncated": "…",
        "app_scoped_user_ids": [{"app_id": "…", "user_id": "…", "disclosed": "…"}]
    })
}

async fn export(userinfo: &TestUserInfoServer, user: &str) -> Value {
    let document = userinfo
        .profiles()
        .export_user_data(upb::ExportUserDataRequest {
            user_id: user.into(),
        })
        .await
        .expect("export")
        .into_inner()
        .document;
    serde_json::from_str(&document).expect("JSON")
}

/// Guards the export's `Document` and the types it holds (`ExportedProfile`,
/// `ExportedDisclosure`, auth-service's half): with every list filled (a declared purpose, a
/// read in the ledger, an exchanged code), the document's keys are exactly the golden's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_document_keeps_its_documented_keys() {
    let run = async {
        let auth = TestAuthServer::start().await;
        let userinfo = userinfo_for(&auth, |_| {}).await;
        let user = "u-export";
        upsert_profile(&userinfo, user).await;
        let (reader, _) = auth.create_app(&ALL_FEATURES).await;
        auth.admin()
            .set_privacy_declaration(pb::SetPrivacyDeclarationRequest {
                app_id: reader.clone(),
                version: 1,
                purposes: vec![pb::ScopePurpose {
                    scope: UserInfo as i32,
                    purpose: "To greet you by name".into(),
                }],
            })
            .await
            .expect("declare");
        let token = consent_token(&auth.consent(user, &reader, &[UserInfo]).await);
        open_user_info(&userinfo, &token).await.expect("read");
        let (backend, secret) = auth.create_app(&ALL_FEATURES).await;
        let grant = auth.consent(user, &backend, &[AuthBase]).await;
        auth.backend(&backend, &secret)
            .exchange_auth_code(pb::ExchangeAuthCodeRequest {
                auth_code: auth_code(&grant),
            })
            .await
            .expect("exchange");

        let started = Instant::now();
        let document = loop {
            let document = export(&userinfo, user).await;
            if document["disclosures"]
                .as_array()
                .is_some_and(|d| !d.is_empty())
            {
                break document;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no ledger row");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(document["format"], "miniprogram.user-data/v1");
        assert_eq!(document["disclosures_truncated"], false);
        assert_eq!(shape(&document), golden_v1(), "{document:#}");
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("within a minute");
}

/// Guards `disclosures_truncated` in `UserData::export` (the one row read past the limit):
/// with one ledger row more than an export carries, it carries the newest
/// `MAX_EXPORTED_DISCLOSURES` and says it was cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_cut_at_its_disclosure_limit_says_so() {
    let run = async {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("export.db").display());
        let auth = TestAuthServer::start().await;
        let userinfo = userinfo_for(&auth, |c| c.database_url = url.clone()).await;
        let user = "u-many-reads";
        upsert_profile(&userinfo, user).await;
        let today = UtcDay::of(Timestamp::now()).0;
        let kept = i64::from(MAX_EXPORTED_DISCLOSURES);
        let rows: Vec<Disclosure> = (0..=kept)
            .map(|back| Disclosure {
                user_id: user.into(),
                app_id: "mp-reader".into(),
                fields: DisclosedFields::PublicProfile,
                day: UtcDay(today - back),
                count: 1,
            })
            .collect();
        let store = userinfo_service::store::open(&url).await.expect("store");
        store.add_disclosures(&rows).await.expect("rows");
        store.close().await;

        let document = export(&userinfo, user).await;
        let disclosures = document["disclosures"].as_array().expect("list");
        assert_eq!(disclosures.len(), MAX_EXPORTED_DISCLOSURES as usize);
        assert_eq!(disclosures[0]["day"], UtcDay(today).date());
        assert_eq!(document["disclosures_truncated"], true);
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("within a minute");
}
