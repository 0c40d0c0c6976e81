//! TokenService: what mini program backends call with their app credential.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use miniprogram_proto::auth::v1 as pb;
use miniprogram_token::Clock;
use pb::token_service_server::TokenService;
use tonic::{Request, Response, Status};

use super::{authorization_header, scopes_to_proto, timestamp};
use crate::credentials::{AppAuthenticator, CallerRole, CallerRoles};
use crate::error::AuthError;
use crate::model::AppRecord;
use crate::tokens::{IntrospectedKind, TokenIssuer, TokenPair};
use miniprogram_proto::caller_credentials::{FORWARDED_PEER, VERIFIER_AUTHORIZATION};
use miniprogram_proto::client_address::TrustedProxies;

/// Longest token string accepted in a request.
const MAX_TOKEN_FIELD_LEN: usize = 4096;

/// Serves TokenService; every call first authenticates the app.
pub struct TokenGrpc {
    pub issuer: TokenIssuer,
    pub apps: AppCallers,
}

/// Authenticates mini program backends by their app credential, counting failures against
/// the address that really called.
#[derive(Clone)]
pub struct AppCallers {
    pub authenticator: Arc<AppAuthenticator>,
    pub clock: Arc<dyn Clock>,
    /// To recognise a verifier forwarding a backend's credential (see `FORWARDED_PEER`).
    pub callers: Arc<CallerRoles>,
    /// Proxies whose `x-forwarded-for` names the caller.
    pub trusted_proxies: TrustedProxies,
}

impl TokenGrpc {
    async fn app<T>(&self, request: &Request<T>) -> Result<AppRecord, AuthError> {
        self.apps.app(request).await
    }
}

impl AppCallers {
    /// The app whose credential the request carries.
    pub async fn app<T>(&self, request: &Request<T>) -> Result<AppRecord, AuthError> {
        let caller = self.caller(request);
        self.authenticator
            .authenticate(
                authorization_header(request.metadata()),
                caller,
                self.clock.now(),
            )
            .await
    }

    /// The address failed attempts count against: the backend a verifier forwards the
    /// credential of (only with the verifier's own credential), else the client a trusted
    /// proxy names, else the TCP peer.
    fn caller<T>(&self, request: &Request<T>) -> IpAddr {
        let metadata = request.metadata();
        let text = |key: &str| metadata.get(key).and_then(|v| v.to_str().ok());
        let forwarded = text(FORWARDED_PEER)
            .and_then(|p| p.parse::<IpAddr>().ok())
            .filter(|_| {
                self.callers
                    .authorize(text(VERIFIER_AUTHORIZATION), CallerRole::Verifier)
                    .is_ok()
            });
        forwarded
            .or_else(|| {
                self.trusted_proxies
                    .client_address(request.remote_addr().map(|a| a.ip()), metadata)
            })
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}

fn check_len(field: &'static str, value: &str) -> Result<(), AuthError> {
    if value.is_empty() {
        return Err(AuthError::InvalidArgument {
            field,
            problem: "is required",
        });
    }
    if value.len() > MAX_TOKEN_FIELD_LEN {
        return Err(AuthError::InvalidArgument {
            field,
            problem: "is longer than 4096 bytes",
        });
    }
    Ok(())
}

fn issued(
    outcome: Result<TokenPair, AuthError>,
    rpc: &'static str,
) -> Result<TokenPair, AuthError> {
    match &outcome {
        Ok(_) => metrics::counter!("tokens_issued_total", "kind" => "access", "rpc" => rpc).increment(1),
        Err(e) => metrics::counter!("token_failures_total", "rpc" => rpc, "reason" => super::status::reason(e).as_str())
            .increment(1),
    }
    outcome
}

/// ExchangeAuthCodeResponse and RefreshAccessTokenResponse carry the same six fields.
macro_rules! token_response {
    ($response:ident, $pair:expr) => {{
        let pair: TokenPair = $pair;
        pb::$response {
            access_token: pair.access_token,
            access_token_expire_time: Some(timestamp(pair.access_token_expires_at)),
            refresh_token: pair.refresh_token.into_string(),
            refresh_token_expire_time: Some(timestamp(pair.refresh_token_expires_at)),
            user_id: pair.app_user_id,
            scopes: scopes_to_proto(pair.scopes),
        }
    }};
}

#[tonic::async_trait]
impl TokenService for TokenGrpc {
    async fn exchange_auth_code(
        &self,
        request: Request<pb::ExchangeAuthCodeRequest>,
    ) -> Result<Response<pb::ExchangeAuthCodeResponse>, Status> {
        let app = self.app(&request).await?;
        let req = request.into_inner();
        check_len("auth_code", &req.auth_code)?;
        let pair = issued(
            self.issuer
                .exchange(&app, &req.auth_code, self.apps.clock.now())
                .await,
            "ExchangeAuthCode",
        )?;
        Ok(Response::new(token_response!(
            ExchangeAuthCodeResponse,
            pair
        )))
    }

    async fn refresh_access_token(
        &self,
        request: Request<pb::RefreshAccessTokenRequest>,
    ) -> Result<Response<pb::RefreshAccessTokenResponse>, Status> {
        let app = self.app(&request).await?;
        let req = request.into_inner();
        check_len("refresh_token", &req.refresh_token)?;
        let pair = issued(
            self.issuer
                .refresh(&app, &req.refresh_token, self.apps.clock.now())
                .await,
            "RefreshAccessToken",
        )?;
        Ok(Response::new(token_response!(
            RefreshAccessTokenResponse,
            pair
        )))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let app = self.app(&request).await?;
        let req = request.into_inner();
        check_len("token", &req.token)?;
        self.issuer
            .revoke(&app, &req.token, self.apps.clock.now())
            .await?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn introspect_token(
        &self,
        request: Request<pb::IntrospectTokenRequest>,
    ) -> Result<Response<pb::IntrospectTokenResponse>, Status> {
        let app = self.app(&request).await?;
        let req = request.into_inner();
        check_len("token", &req.token)?;
        let response = match self
            .issuer
            .introspect(&app, &req.token, self.apps.clock.now(), Instant::now())
            .await?
        {
            None => pb::IntrospectTokenResponse::default(),
            Some(i) => pb::IntrospectTokenResponse {
                active: true,
                scopes: scopes_to_proto(i.scopes),
                app_id: i.app_id,
                user_id: i.app_user_id,
                token_type: match i.kind {
                    IntrospectedKind::Access => pb::TokenType::Access,
                    IntrospectedKind::Refresh => pb::TokenType::Refresh,
                } as i32,
                issue_time: Some(timestamp(i.issued_at)),
                expire_time: Some(timestamp(i.expires_at)),
                token_id: i.token_id,
            },
        };
        Ok(Response::new(response))
    }
}
