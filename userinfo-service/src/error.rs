//! What can go wrong in userinfo-service, in domain terms; `grpc::status` maps each variant.

use crate::model::FieldViolation;
use crate::store::StoreError;

/// A failed request. Messages never contain a token, a secret or a phone number.
#[derive(Debug, thiserror::Error)]
pub enum UserInfoError {
    #[error("the user has not authorized this mini program, or withdrew the authorization")]
    InvalidAuthRelations,
    #[error("the token is not valid")]
    InvalidAccessToken,
    #[error("the token has expired")]
    ExpiredAccessToken,
    #[error("the revocation state is stale; retry shortly")]
    RevocationStateStale,
    #[error("no profile for this user")]
    ProfileNotFound,
    #[error("invalid profile fields: {}", .0.iter().map(|v| v.field).collect::<Vec<_>>().join(", "))]
    InvalidProfileField(Vec<FieldViolation>),
    #[error("{field}: {problem}")]
    InvalidArgument {
        field: &'static str,
        problem: &'static str,
    },
    #[error("the app credential is missing or wrong")]
    InvalidAuthClient,
    #[error("too many failed attempts; retry later")]
    RequestTrafficExceedLimit,
    #[error("too many reads by this app or with this token; retry later")]
    ReadLimitExceeded,
    #[error("missing or unknown caller credential in `authorization` metadata")]
    UnauthenticatedCaller,
    #[error("this caller's credential does not permit this service")]
    CallerNotPermitted,
    #[error("auth-service is unreachable: {0}")]
    AuthServiceUnavailable(String),
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
}
