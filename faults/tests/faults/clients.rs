//! The generated clients of a running service, each presenting its caller's credential, and the
//! few flows the fault tests drive (a tap, a prompt allowed, a code exchanged).

use miniprogram_proto::auth::v1 as pb;
use miniprogram_proto::caller_credentials::CallerCredential;
use miniprogram_proto::userinfo::v1 as upb;
use pb::app_service_client::AppServiceClient;
use pb::authorization_service_client::AuthorizationServiceClient;
use pb::key_admin_service_client::KeyAdminServiceClient;
use pb::key_service_client::KeyServiceClient;
use pb::token_service_client::TokenServiceClient;
use tonic::Status;
use tonic::transport::Channel;
use upb::profile_service_client::ProfileServiceClient;
use upb::user_info_service_client::UserInfoServiceClient;

pub use auth_service::testing::{ALL_FEATURES, Authed, auth_code, consent_token, reason};

/// An auth-service's clients, as each caller holds them.
#[derive(Clone)]
pub struct AuthClients(pub Channel);

impl AuthClients {
    pub fn admin(&self) -> AppServiceClient<Authed> {
        let credential = CallerCredential::bearer(auth_service::testing::TEST_ADMIN_TOKEN);
        AppServiceClient::with_interceptor(self.0.clone(), credential)
    }

    pub fn key_admin(&self) -> KeyAdminServiceClient<Authed> {
        let credential = CallerCredential::bearer(auth_service::testing::TEST_ADMIN_TOKEN);
        KeyAdminServiceClient::with_interceptor(self.0.clone(), credential)
    }

    pub fn wallet(&self) -> AuthorizationServiceClient<Authed> {
        let credential = CallerCredential::bearer(auth_service::testing::TEST_WALLET_TOKEN);
        AuthorizationServiceClient::with_interceptor(self.0.clone(), credential)
    }

    pub fn verifier(&self) -> KeyServiceClient<Authed> {
        let credential = CallerCredential::bearer(auth_service::testing::TEST_VERIFIER_TOKEN);
        KeyServiceClient::with_interceptor(self.0.clone(), credential)
    }

    pub fn backend(&self, app_id: &str, secret: &str) -> TokenServiceClient<Authed> {
        TokenServiceClient::with_interceptor(
            self.0.clone(),
            CallerCredential::basic(app_id, secret),
        )
    }

    /// Registers a mini program with `features`: its id and secret.
    pub async fn create_app(&self, features: &[pb::Feature]) -> (String, String) {
        auth_service::testing::register_app(self.admin(), "Fault Test Mini Program", features).await
    }

    /// A tap asking for `scopes`: the grant, or the prompt to answer.
    pub async fn request(
        &self,
        user: &str,
        app_id: &str,
        scopes: &[pb::Scope],
    ) -> Result<pb::request_authorization_response::Result, Status> {
        let response = self
            .wallet()
            .request_authorization(pb::RequestAuthorizationRequest {
                user_id: user.into(),
                app_id: app_id.into(),
                scopes: scopes.iter().map(|s| *s as i32).collect(),
                trigger: pb::Trigger::UserTap as i32,
            })
            .await?;
        response
            .into_inner()
            .result
            .ok_or_else(|| Status::internal("no result"))
    }

    /// Tap, prompt (if any), allow: the grant.
    pub async fn consent(
        &self,
        user: &str,
        app_id: &str,
        scopes: &[pb::Scope],
    ) -> Result<pb::Grant, Status> {
        use pb::request_authorization_response::Result as Asked;
        use pb::resolve_prompt_response::Result as Answered;
        let prompt = match self.request(user, app_id, scopes).await? {
            Asked::Grant(grant) => return Ok(grant),
            Asked::Prompt(prompt) => prompt,
        };
        let answered = self
            .wallet()
            .resolve_prompt(pb::ResolvePromptRequest {
                prompt_id: prompt.prompt_id,
                user_id: user.into(),
                decision: pb::Decision::Allow as i32,
            })
            .await?
            .into_inner()
            .result;
        match answered {
            Some(Answered::Grant(grant)) => Ok(grant),
            other => Err(Status::internal(format!("allowed, got {other:?}"))),
        }
    }

    /// The user withdraws `scopes` (all when empty) from `app_id`.
    pub async fn withdraw(
        &self,
        user: &str,
        app_id: &str,
        scopes: &[pb::Scope],
    ) -> Result<(), Status> {
        self.wallet()
            .revoke_authorization(pb::RevokeAuthorizationRequest {
                user_id: user.into(),
                app_id: app_id.into(),
                scopes: scopes.iter().map(|s| *s as i32).collect(),
            })
            .await
            .map(drop)
    }

    pub async fn exchange(
        &self,
        app_id: &str,
        secret: &str,
        code: &str,
    ) -> Result<pb::ExchangeAuthCodeResponse, Status> {
        self.backend(app_id, secret)
            .exchange_auth_code(pb::ExchangeAuthCodeRequest {
                auth_code: code.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn refresh(
        &self,
        app_id: &str,
        secret: &str,
        refresh_token: &str,
    ) -> Result<pb::RefreshAccessTokenResponse, Status> {
        self.backend(app_id, secret)
            .refresh_access_token(pb::RefreshAccessTokenRequest {
                refresh_token: refresh_token.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Whether IntrospectToken calls `token` active for the app.
    pub async fn active(&self, app_id: &str, secret: &str, token: &str) -> Result<bool, Status> {
        self.backend(app_id, secret)
            .introspect_token(pb::IntrospectTokenRequest {
                token: token.into(),
            })
            .await
            .map(|r| r.into_inner().active)
    }
}

/// A userinfo-service's clients.
#[derive(Clone)]
pub struct UserInfoClients(pub Channel);

impl UserInfoClients {
    pub fn profiles(&self) -> ProfileServiceClient<Authed> {
        let credential = CallerCredential::bearer(userinfo_service::testing::TEST_PROFILE_TOKEN);
        ProfileServiceClient::with_interceptor(self.0.clone(), credential)
    }

    pub fn backend(&self, app_id: &str, secret: &str) -> UserInfoServiceClient<Authed> {
        let credential = CallerCredential::basic(app_id, secret);
        UserInfoServiceClient::with_interceptor(self.0.clone(), credential)
    }

    pub async fn open_user_info(
        &self,
        consent_token: &str,
    ) -> Result<upb::GetOpenUserInfoResponse, Status> {
        UserInfoServiceClient::with_interceptor(self.0.clone(), CallerCredential::none())
            .get_open_user_info(upb::GetOpenUserInfoRequest {
                consent_token: consent_token.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn upsert(&self, profile: upb::Profile) -> Result<(), Status> {
        self.profiles()
            .upsert_profile(upb::UpsertProfileRequest {
                profile: Some(profile),
            })
            .await
            .map(drop)
    }
}

/// The reason a call failed with, or `None` for a call that succeeded, as a short label for
/// assertion messages.
pub fn outcome<T>(result: &Result<T, Status>) -> String {
    match result {
        Ok(_) => "OK".into(),
        Err(e) => match miniprogram_proto::ErrorReason::of(e) {
            Some(reason) => format!("{reason:?}"),
            None => format!("{:?} without ErrorInfo: {}", e.code(), e.message()),
        },
    }
}
