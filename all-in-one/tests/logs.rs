//! No token, secret, auth code, prompt id, phone number or real name appears in any log line at
//! any level: the whole flow (deny and allow, exchange, refresh, revocations, a secret rotation,
//! and the error paths of bad secrets, spent codes, prompts and refresh tokens) runs with a TRACE
//! subscriber writing to a buffer, which is then searched.

use std::io::Write;
use std::sync::{Arc, Mutex};

use auth_service::testing::{TestAuthServer, reason};
use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use userinfo_service::testing::TestUserInfoServer;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_log_line_at_trace_level() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let auth = TestAuthServer::start().await;
    let userinfo = TestUserInfoServer::start(auth.addr, &auth.config.callers.verifier).await;
    let created = auth
        .admin()
        .create_app(pb::CreateAppRequest {
            display_name: "Log Test".into(),
            features: vec![1, 2, 3],
        })
        .await
        .unwrap()
        .into_inner();
    let (app_id, secret) = (created.app.unwrap().app_id, created.app_secret);
    let phone = "+86 139 1234 5678";
    let real_name = "Secret Realname";
    userinfo
        .profiles()
        .upsert_profile(upb::UpsertProfileRequest {
            profile: Some(upb::Profile {
                user_id: "log-user".into(),
                real_name: real_name.into(),
                phone_number: phone.into(),
                nick_name: "nick".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut secrets = vec![
        secret.clone(),
        phone.to_owned(),
        real_name.to_owned(),
        auth.config.callers.admin.clone(),
        auth.config.callers.wallet.clone(),
        auth.config.callers.verifier.clone(),
        userinfo.config.profile_token.clone(),
    ];
    let mut wallet = auth.wallet();
    let ask = |scopes: Vec<i32>| pb::RequestAuthorizationRequest {
        user_id: "log-user".into(),
        app_id: app_id.clone(),
        scopes,
        trigger: pb::Trigger::UserTap as i32,
    };
    let answer = |prompt_id: &str, decision: pb::Decision| pb::ResolvePromptRequest {
        prompt_id: prompt_id.into(),
        user_id: "log-user".into(),
        decision: decision as i32,
    };

    // The user first refuses the basic-info modal, then is asked again and allows it; then the
    // phone modal.
    let mut consent = Vec::new();
    for (scopes, first_answer) in [
        (vec![1], pb::Decision::Deny),
        (vec![1], pb::Decision::Allow),
        (vec![2, 3], pb::Decision::Allow),
    ] {
        let Some(pb::request_authorization_response::Result::Prompt(prompt)) = wallet
            .request_authorization(ask(scopes))
            .await
            .unwrap()
            .into_inner()
            .result
        else {
            panic!("expected prompt")
        };
        secrets.push(prompt.prompt_id.clone());
        match wallet
            .resolve_prompt(answer(&prompt.prompt_id, first_answer))
            .await
            .unwrap()
            .into_inner()
            .result
        {
            Some(pb::resolve_prompt_response::Result::Grant(g)) => consent.push(g),
            Some(pb::resolve_prompt_response::Result::Denial(d)) => {
                assert_eq!(first_answer, pb::Decision::Deny);
                assert!(d.may_ask_again);
            }
            None => panic!("no result"),
        }
        // Error path: the prompt is single-use.
        let err = wallet
            .resolve_prompt(answer(&prompt.prompt_id, pb::Decision::Allow))
            .await
            .unwrap_err();
        assert_eq!(reason(&err), ErrorReason::PromptAlreadyResolved);
    }
    assert_eq!(consent.len(), 2, "a denial and two grants");
    let token = match &consent[0].credential {
        Some(pb::grant::Credential::ConsentToken(t)) => t.clone(),
        _ => panic!(),
    };
    let code = match &consent[1].credential {
        Some(pb::grant::Credential::AuthCode(c)) => c.clone(),
        _ => panic!(),
    };
    secrets.extend([token.clone(), code.clone()]);
    userinfo
        .userinfo()
        .get_open_user_info(upb::GetOpenUserInfoRequest {
            consent_token: token.clone(),
        })
        .await
        .unwrap();

    // Error path: a bad app secret, on both services.
    let wrong = "wrong-secret-value";
    secrets.push(wrong.into());
    let err = auth
        .backend(&app_id, wrong)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: code.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidAuthClient);
    let err = auth
        .backend(&app_id, wrong)
        .introspect_token(pb::IntrospectTokenRequest { token: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidAuthClient);

    let mut backend = auth.backend(&app_id, &secret);
    let pair = backend
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: code.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    secrets.extend([pair.access_token.clone(), pair.refresh_token.clone()]);
    let err = userinfo
        .backend(&app_id, wrong)
        .get_phone_number(upb::GetPhoneNumberRequest {
            access_token: pair.access_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidAuthClient);
    let got = userinfo
        .backend(&app_id, &secret)
        .get_phone_number(upb::GetPhoneNumberRequest {
            access_token: pair.access_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.phone_number, phone);
    let described = backend
        .introspect_token(pb::IntrospectTokenRequest {
            token: pair.access_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(described.active);
    let refreshed = backend
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: pair.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    secrets.extend([
        refreshed.access_token.clone(),
        refreshed.refresh_token.clone(),
    ]);
    // Error paths: a spent refresh token, a replayed code.
    let err = backend
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: pair.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::UsedRefreshToken);
    let err = backend
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::UsedCode);
    backend
        .revoke_token(pb::RevokeTokenRequest {
            token: refreshed.refresh_token,
        })
        .await
        .unwrap();

    // The user withdraws everything in the wallet's settings; the consent token stops working.
    wallet
        .revoke_authorization(pb::RevokeAuthorizationRequest {
            user_id: "log-user".into(),
            app_id: app_id.clone(),
            scopes: vec![],
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let err = loop {
        match userinfo
            .userinfo()
            .get_open_user_info(upb::GetOpenUserInfoRequest {
                consent_token: token.clone(),
            })
            .await
        {
            Err(e) => break e,
            Ok(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "withdrawal never arrived"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(reason(&err), ErrorReason::InvalidAuthRelations);

    // The console rotates the secret: the old one stops working, the new one works.
    let new_secret = auth.rotate_secret(&app_id).await;
    assert_ne!(new_secret, secret);
    secrets.push(new_secret.clone());
    let Some(pb::request_authorization_response::Result::Grant(silent)) = wallet
        .request_authorization(ask(vec![2]))
        .await
        .unwrap()
        .into_inner()
        .result
    else {
        panic!("auth_base grants at once")
    };
    let Some(pb::grant::Credential::AuthCode(code2)) = silent.credential else {
        panic!("auth_base yields a code")
    };
    secrets.push(code2.clone());
    let err = auth
        .backend(&app_id, &secret)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: code2.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), ErrorReason::InvalidAuthClient);
    let pair2 = auth
        .backend(&app_id, &new_secret)
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code2 })
        .await
        .unwrap()
        .into_inner();
    secrets.extend([pair2.access_token, pair2.refresh_token]);
    drop(userinfo);
    drop(auth);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("rpc finished"), "the capture saw no RPC logs");
    assert!(logs.lines().count() > 50, "suspiciously few log lines");
    for secret in &secrets {
        assert!(!secret.is_empty());
        assert!(
            !logs.contains(secret.as_str()),
            "a secret reached the logs: {}",
            &secret[..secret.len().min(12)]
        );
    }
    use base64::Engine;
    for s in [&secret, &new_secret, wrong] {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{app_id}:{s}"));
        assert!(!logs.contains(&basic), "an app credential reached the logs");
    }
}
