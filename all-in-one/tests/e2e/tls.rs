use auth_service::testing::{TestAuthServer, test_pki};
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::userinfo::v1 as upb;
use userinfo_service::testing::TestUserInfoServer;

use super::{ALL_FEATURES, demo_profile};

#[tokio::test]
async fn both_servers_and_the_verifier_channel_speak_tls() {
    let (ca, server_tls) = test_pki();
    let auth = TestAuthServer::start_tls(server_tls.clone(), ca.clone()).await;
    let userinfo = TestUserInfoServer::start_with(auth.addr, &auth.config.callers.verifier, |c| {
        c.auth_url = format!("https://{}", auth.addr);
        c.auth_tls_ca_pem = Some(ca.clone());
        c.tls = Some(server_tls.clone());
    })
    .await;
    let created = auth
        .admin()
        .create_app(pb::CreateAppRequest {
            display_name: "TLS".into(),
            features: ALL_FEATURES.iter().map(|f| *f as i32).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    let app_id = created.app.unwrap().app_id;
    userinfo
        .profiles()
        .upsert_profile(upb::UpsertProfileRequest {
            profile: Some(demo_profile("u1")),
        })
        .await
        .unwrap();
    let mut wallet = auth.wallet();
    let Some(pb::request_authorization_response::Result::Prompt(p)) = wallet
        .request_authorization(pb::RequestAuthorizationRequest {
            user_id: "u1".into(),
            app_id,
            scopes: vec![pb::Scope::UserInfo as i32],
            trigger: pb::Trigger::UserTap as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .result
    else {
        panic!("expected prompt")
    };
    let Some(pb::resolve_prompt_response::Result::Grant(grant)) = wallet
        .resolve_prompt(pb::ResolvePromptRequest {
            prompt_id: p.prompt_id,
            user_id: "u1".into(),
            decision: pb::Decision::Allow as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .result
    else {
        panic!("expected grant")
    };
    let token = super::consent_token(&grant);
    let info = userinfo
        .userinfo()
        .get_open_user_info(upb::GetOpenUserInfoRequest {
            consent_token: token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.nick_name, "Wei");

    // A plaintext client is refused by the TLS server.
    let plain = service_runtime::client_channel(auth.addr, None);
    let err = pb::app_service_client::AppServiceClient::new(plain)
        .get_app(pb::GetAppRequest { app_id: "x".into() })
        .await
        .unwrap_err();
    assert!(
        miniprogram_proto::ErrorReason::of(&err).is_none(),
        "a plaintext call reached the service: {err:?}"
    );
}
