//! No token, secret, auth code, prompt id or phone number appears in any log line at any level:
//! the whole flow runs with a TRACE subscriber writing to a buffer, which is then searched.

use std::io::Write;
use std::sync::{Arc, Mutex};

use auth_service::testing::TestAuthServer;
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
    let userinfo = TestUserInfoServer::start(
        auth.addr,
        &auth.config.callers.admin,
        &auth.config.callers.verifier,
    )
    .await;
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
    userinfo
        .profiles()
        .upsert_profile(upb::UpsertProfileRequest {
            profile: Some(upb::Profile {
                user_id: "log-user".into(),
                real_name: "Secret Realname".into(),
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
        auth.config.callers.admin.clone(),
        auth.config.callers.wallet.clone(),
        auth.config.callers.verifier.clone(),
    ];
    let mut wallet = auth.wallet();
    let ask = |scopes: Vec<i32>| pb::RequestAuthorizationRequest {
        user_id: "log-user".into(),
        app_id: app_id.clone(),
        scopes,
        trigger: pb::Trigger::UserTap as i32,
    };
    let mut consent = Vec::new();
    for scopes in [vec![1], vec![2, 3]] {
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
        let Some(pb::resolve_prompt_response::Result::Grant(g)) = wallet
            .resolve_prompt(pb::ResolvePromptRequest {
                prompt_id: prompt.prompt_id,
                user_id: "log-user".into(),
                decision: pb::Decision::Allow as i32,
            })
            .await
            .unwrap()
            .into_inner()
            .result
        else {
            panic!("expected grant")
        };
        consent.push(g);
    }
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
            consent_token: token,
        })
        .await
        .unwrap();
    let mut backend = auth.backend(&app_id, &secret);
    let pair = backend
        .exchange_auth_code(pb::ExchangeAuthCodeRequest {
            auth_code: code.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    secrets.extend([pair.access_token.clone(), pair.refresh_token.clone()]);
    let got = userinfo
        .backend(&app_id, &secret)
        .get_phone_number(upb::GetPhoneNumberRequest {
            access_token: pair.access_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.phone_number, phone);
    let refreshed = backend
        .refresh_access_token(pb::RefreshAccessTokenRequest {
            refresh_token: pair.refresh_token,
        })
        .await
        .unwrap()
        .into_inner();
    secrets.extend([refreshed.access_token, refreshed.refresh_token]);
    let replay = backend
        .exchange_auth_code(pb::ExchangeAuthCodeRequest { auth_code: code })
        .await;
    assert!(replay.is_err());
    let _ = auth
        .backend(&app_id, "wrong-secret-value")
        .introspect_token(pb::IntrospectTokenRequest { token: "x".into() })
        .await;
    secrets.push("wrong-secret-value".into());
    drop(userinfo);
    drop(auth);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("rpc finished"), "the capture saw no RPC logs");
    assert!(logs.lines().count() > 50, "suspiciously few log lines");
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret reached the logs: {}",
            &secret[..secret.len().min(12)]
        );
    }
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{app_id}:{secret}"));
    assert!(!logs.contains(&basic), "an app credential reached the logs");
}
