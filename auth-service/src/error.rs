//! What can go wrong in auth-service, in domain terms. `grpc::status` is the one table that
//! turns each variant into a gRPC status with the design's `ErrorInfo` reason.

use miniprogram_token::Scope;

use crate::model::Feature;
use crate::store::StoreError;

/// A failed request. Messages name what was wrong and never contain a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{field}: {problem}")]
    InvalidArgument {
        field: &'static str,
        problem: &'static str,
    },
    #[error("unknown scope; use SCOPE_USER_INFO, SCOPE_AUTH_BASE or SCOPE_PHONE_NUMBER")]
    InvalidScope,
    #[error(
        "userInfo must be requested alone; auth_base and phoneNumber may be combined with each other only"
    )]
    ScopesNotCombinable,
    #[error("authorization may not be asked for at app launch; ask after a user tap")]
    AuthorizationAtLaunch,
    #[error("no mini program with this app id")]
    AppNotFound,
    #[error("the mini program has not activated the feature {0:?}")]
    InsufficientIsvPermissions(Feature),
    #[error(
        "the mini program has declared no purpose for {0:?} (REQUIRE_PRIVACY_DECLARATION); declare one with SetPrivacyDeclaration"
    )]
    UndeclaredScope(Scope),
    #[error("version must be greater than the declaration version in force ({0})")]
    DeclarationVersionNotRaised(i64),
    #[error("the user has not authorized this, or has withdrawn the authorization")]
    InvalidAuthRelations,
    #[error("no such prompt for this user")]
    PromptNotFound,
    #[error("the prompt has expired; request authorization again")]
    PromptExpired,
    #[error("the prompt was already answered")]
    PromptAlreadyResolved,
    #[error("the auth code is not valid for this app")]
    InvalidCode,
    #[error("the auth code was already used; tokens issued from it are revoked")]
    UsedCode,
    #[error("the auth code has expired; get a new one")]
    ExpiredCode,
    #[error("the refresh token is not valid for this app")]
    InvalidRefreshToken,
    #[error("the refresh token was already used; its whole family is revoked")]
    UsedRefreshToken,
    #[error("the refresh token has expired; start again from an auth code")]
    ExpiredRefreshToken,
    #[error("the app credential is missing or wrong")]
    InvalidAuthClient,
    #[error("missing or unknown caller credential in `authorization` metadata")]
    UnauthenticatedCaller,
    #[error("this caller's credential does not permit this service")]
    CallerNotPermitted,
    #[error("too many failed attempts; retry later")]
    RequestTrafficExceedLimit,
    #[error(
        "this user has as many unanswered prompts for this app as MAX_OPEN_PROMPTS_PER_USER \
         allows; answer one, or retry once one expires"
    )]
    TooManyOpenPrompts,
    #[error("no token key is available")]
    NoTokenKey,
    #[error("the operating system's random source failed")]
    RandomUnavailable,
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
}
