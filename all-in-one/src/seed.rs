//! Demo data for an empty installation, created through the services' own gRPC APIs, and the
//! banner that tells a developer how to use it.

use std::net::SocketAddr;
use std::path::Path;

use auth_service::credentials::CallerTokens;
use miniprogram_proto::ErrorReason;
use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::caller_credentials::CallerCredential;
use miniprogram_proto::userinfo::v1 as upb;
use pb::app_service_client::AppServiceClient;
use tonic::Status;
use tonic::transport::Channel;
use upb::profile_service_client::ProfileServiceClient;

use crate::dev_state::DevState;

/// Demo users seeded into an empty profile store.
pub const DEMO_USERS: [&str; 2] = ["demo-user-1", "demo-user-2"];

fn demo_profiles() -> [upb::Profile; 2] {
    [
        upb::Profile {
            user_id: DEMO_USERS[0].into(),
            real_name: "Li Na".into(),
            phone_number: "+86 138 0000 0001".into(),
            avatar: "https://example.com/avatars/li-na.png".into(),
            nick_name: "Nana".into(),
            gender: "f".into(),
            country_code: "CN".into(),
            province: "Zhejiang".into(),
            city: "Hangzhou".into(),
            update_time: None,
        },
        upb::Profile {
            user_id: DEMO_USERS[1].into(),
            real_name: "Budi Santoso".into(),
            phone_number: "+62 812 0000 0002".into(),
            nick_name: "budi".into(),
            ..upb::Profile::default()
        },
    ]
}

async fn channel(addr: SocketAddr) -> Result<Channel, Status> {
    Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::internal(e.to_string()))
        .map(|e| e.connect_lazy())
}

/// Makes sure the demo app exists (creating it if the remembered one is gone) and the demo
/// users exist (creating them if the profile store has none of them).
pub async fn seed(
    auth_addr: SocketAddr,
    userinfo_addr: SocketAddr,
    callers: &CallerTokens,
    state: &mut DevState,
) -> Result<(), Status> {
    let mut apps = AppServiceClient::with_interceptor(
        channel(auth_addr).await?,
        CallerCredential::bearer(&callers.admin),
    );
    let known = if state.demo_app_id.is_empty() {
        false
    } else {
        match apps
            .get_app(pb::GetAppRequest {
                app_id: state.demo_app_id.clone(),
            })
            .await
        {
            Ok(_) => true,
            Err(e) if ErrorReason::of(&e) == Some(ErrorReason::AppNotFound) => false,
            Err(e) => return Err(e),
        }
    };
    if !known {
        let created = apps
            .create_app(pb::CreateAppRequest {
                display_name: "Demo Mini Program".into(),
                features: vec![
                    pb::Feature::BasicUserInfo as i32,
                    pb::Feature::PhoneNumber as i32,
                    pb::Feature::UserAuthorization as i32,
                ],
            })
            .await?
            .into_inner();
        state.demo_app_id = created.app.map(|a| a.app_id).unwrap_or_default();
        state.demo_app_secret = created.app_secret;
        tracing::info!(app_id = %state.demo_app_id, "seeded the demo mini program");
    }

    let mut profiles = ProfileServiceClient::with_interceptor(
        channel(userinfo_addr).await?,
        CallerCredential::bearer(&state.profile_token),
    );
    let mut tries = 0;
    let existing = loop {
        match profiles
            .get_profile(upb::GetProfileRequest {
                user_id: DEMO_USERS[0].into(),
            })
            .await
        {
            Ok(_) => break true,
            Err(e) if ErrorReason::of(&e) == Some(ErrorReason::ProfileNotFound) => break false,
            Err(e) if tries < 50 && e.code() == tonic::Code::Unavailable => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    };
    if !existing {
        for profile in demo_profiles() {
            profiles
                .upsert_profile(upb::UpsertProfileRequest {
                    profile: Some(profile),
                })
                .await?;
        }
        tracing::info!("seeded the demo users");
    }
    Ok(())
}

/// Marks the start of the ready-to-run flow in the banner (CI runs what lies between).
pub const FLOW_START: &str = "---8<--- whole flow, ready to paste into a shell in this directory";
/// Marks its end.
pub const FLOW_END: &str = "---8<--- end of flow";

/// What the runner prints once both services are up: credentials, then the whole flow as
/// grpcurl commands that pass each step's result on in shell variables.
pub fn banner(
    auth_addr: SocketAddr,
    userinfo_addr: SocketAddr,
    data_dir: &Path,
    state: &DevState,
) -> String {
    let env_file = data_dir.join(crate::dev_state::FILE_NAME);
    let env_file = env_file.display();
    format!(
        r#"
=== all-in-one is up (dev mode: credentials below are for development only) ===
auth-service      {auth_addr}
userinfo-service  {userinfo_addr}
demo users        {user1}, {user2}
credentials       {env_file}
  ADMIN_TOKEN={admin}
  PROFILE_TOKEN={profile}
  WALLET_TOKEN={wallet}
  VERIFIER_TOKEN={verifier}
  DEMO_APP_ID={app_id}
  DEMO_APP_SECRET={app_secret}

Try the whole flow with grpcurl (and python3, to pick fields out of its JSON) from another
shell; README.md explains each step.
{FLOW_START}
set -a; . {env_file}; set +a
AUTH={auth_addr}; USERINFO={userinfo_addr}; WALLET="authorization: Bearer $WALLET_TOKEN"
jget() {{ python3 -c 'import json,sys
d=json.load(sys.stdin)
for k in sys.argv[1:]: d=d[k]
print(d)' "$@"; }}
# 1. Basic info: the user taps, the wallet shows the modal, the user allows, the mini program reads.
PROMPT_ID=$(grpcurl -plaintext -H "$WALLET" -d '{{"user_id":"{user1}","app_id":"'"$DEMO_APP_ID"'","scopes":["SCOPE_USER_INFO"],"trigger":"TRIGGER_USER_TAP"}}' $AUTH miniprogram.auth.v1.AuthorizationService/RequestAuthorization | jget prompt promptId)
CONSENT_TOKEN=$(grpcurl -plaintext -H "$WALLET" -d '{{"prompt_id":"'"$PROMPT_ID"'","user_id":"{user1}","decision":"DECISION_ALLOW"}}' $AUTH miniprogram.auth.v1.AuthorizationService/ResolvePrompt | jget grant consentToken)
grpcurl -plaintext -d '{{"consent_token":"'"$CONSENT_TOKEN"'"}}' $USERINFO miniprogram.userinfo.v1.UserInfoService/GetOpenUserInfo
# 2. Phone number: its own modal, an auth code, the backend's exchange with the app secret.
PROMPT_ID=$(grpcurl -plaintext -H "$WALLET" -d '{{"user_id":"{user1}","app_id":"'"$DEMO_APP_ID"'","scopes":["SCOPE_AUTH_BASE","SCOPE_PHONE_NUMBER"],"trigger":"TRIGGER_USER_TAP"}}' $AUTH miniprogram.auth.v1.AuthorizationService/RequestAuthorization | jget prompt promptId)
AUTH_CODE=$(grpcurl -plaintext -H "$WALLET" -d '{{"prompt_id":"'"$PROMPT_ID"'","user_id":"{user1}","decision":"DECISION_ALLOW"}}' $AUTH miniprogram.auth.v1.AuthorizationService/ResolvePrompt | jget grant authCode)
APP_BASIC="authorization: Basic $(printf '%s:%s' "$DEMO_APP_ID" "$DEMO_APP_SECRET" | base64 | tr -d '\n')"
ACCESS_TOKEN=$(grpcurl -plaintext -H "$APP_BASIC" -d '{{"auth_code":"'"$AUTH_CODE"'"}}' $AUTH miniprogram.auth.v1.TokenService/ExchangeAuthCode | jget accessToken)
grpcurl -plaintext -H "$APP_BASIC" -d '{{"access_token":"'"$ACCESS_TOKEN"'"}}' $USERINFO miniprogram.userinfo.v1.UserInfoService/GetPhoneNumber
# 3. Withdrawal in the wallet's settings: the consent token stops working (40003), and the next tap prompts again.
grpcurl -plaintext -H "$WALLET" -d '{{"user_id":"{user1}","app_id":"'"$DEMO_APP_ID"'"}}' $AUTH miniprogram.auth.v1.AuthorizationService/RevokeAuthorization
sleep 1
grpcurl -plaintext -d '{{"consent_token":"'"$CONSENT_TOKEN"'"}}' $USERINFO miniprogram.userinfo.v1.UserInfoService/GetOpenUserInfo || echo "refused, as it should be"
{FLOW_END}
Ctrl-C stops both services.
"#,
        user1 = DEMO_USERS[0],
        user2 = DEMO_USERS[1],
        admin = state.admin_token,
        profile = state.profile_token,
        wallet = state.wallet_token,
        verifier = state.verifier_token,
        app_id = state.demo_app_id,
        app_secret = state.demo_app_secret,
    )
}
