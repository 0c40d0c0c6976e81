//! The one table from [`AuthError`] to a gRPC status with the design's `ErrorInfo` reason.
//! Exhaustive, with no wildcard: a new variant forces a decision here.

use miniprogram_proto::ErrorReason;
use tonic::Status;

use crate::error::AuthError;
use crate::store::StoreError;

/// The reason an error travels under.
pub fn reason(e: &AuthError) -> ErrorReason {
    match e {
        AuthError::InvalidArgument { .. } => ErrorReason::InvalidArgument,
        AuthError::InvalidScope => ErrorReason::InvalidScope,
        AuthError::ScopesNotCombinable => ErrorReason::ScopesNotCombinable,
        AuthError::AuthorizationAtLaunch => ErrorReason::AuthorizationAtLaunch,
        AuthError::AppNotFound => ErrorReason::AppNotFound,
        AuthError::InsufficientIsvPermissions(_) | AuthError::UndeclaredScope(_) => {
            ErrorReason::InsufficientIsvPermissions
        }
        AuthError::DeclarationVersionNotRaised(_) => ErrorReason::InvalidArgument,
        AuthError::InvalidAuthRelations => ErrorReason::InvalidAuthRelations,
        AuthError::PromptNotFound => ErrorReason::PromptNotFound,
        AuthError::PromptExpired => ErrorReason::PromptExpired,
        AuthError::PromptAlreadyResolved => ErrorReason::PromptAlreadyResolved,
        AuthError::InvalidCode => ErrorReason::InvalidCode,
        AuthError::UsedCode => ErrorReason::UsedCode,
        AuthError::ExpiredCode => ErrorReason::ExpiredCode,
        AuthError::InvalidRefreshToken => ErrorReason::InvalidRefreshToken,
        AuthError::UsedRefreshToken => ErrorReason::UsedRefreshToken,
        AuthError::ExpiredRefreshToken => ErrorReason::ExpiredRefreshToken,
        AuthError::InvalidAuthClient => ErrorReason::InvalidAuthClient,
        AuthError::UnauthenticatedCaller => ErrorReason::UnauthenticatedCaller,
        AuthError::CallerNotPermitted => ErrorReason::CallerNotPermitted,
        AuthError::RequestTrafficExceedLimit | AuthError::TooManyOpenPrompts => {
            ErrorReason::RequestTrafficExceedLimit
        }
        AuthError::Store(StoreError::Unavailable(_)) => ErrorReason::ServiceUnavailable,
        AuthError::NoTokenKey
        | AuthError::RandomUnavailable
        | AuthError::Store(
            StoreError::AlreadyExists | StoreError::UnsupportedUrl | StoreError::Internal(_),
        ) => ErrorReason::Internal,
    }
}

/// Builds the status; internal failures are logged with their cause and answered with a
/// message that reveals nothing.
pub fn to_status(e: AuthError) -> Status {
    let reason = reason(&e);
    match reason {
        ErrorReason::Internal | ErrorReason::ServiceUnavailable => {
            tracing::error!(error = %e, reason = reason.as_str(), "request failed");
            reason.status(if reason == ErrorReason::Internal {
                "internal error; it has been logged"
            } else {
                "a dependency is unavailable; retry later"
            })
        }
        _ => reason.status(e.to_string()),
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Status {
        to_status(e)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;
    use crate::model::Feature;

    fn every_variant() -> Vec<AuthError> {
        vec![
            AuthError::InvalidArgument {
                field: "f",
                problem: "p",
            },
            AuthError::InvalidScope,
            AuthError::ScopesNotCombinable,
            AuthError::AuthorizationAtLaunch,
            AuthError::AppNotFound,
            AuthError::InsufficientIsvPermissions(Feature::BasicUserInfo),
            AuthError::InvalidAuthRelations,
            AuthError::PromptNotFound,
            AuthError::PromptExpired,
            AuthError::PromptAlreadyResolved,
            AuthError::InvalidCode,
            AuthError::UsedCode,
            AuthError::ExpiredCode,
            AuthError::InvalidRefreshToken,
            AuthError::UsedRefreshToken,
            AuthError::ExpiredRefreshToken,
            AuthError::InvalidAuthClient,
            AuthError::UnauthenticatedCaller,
            AuthError::CallerNotPermitted,
            AuthError::RequestTrafficExceedLimit,
            AuthError::TooManyOpenPrompts,
            AuthError::NoTokenKey,
            AuthError::RandomUnavailable,
            AuthError::Store(StoreError::Internal(Arc::new(sqlx::Error::PoolClosed))),
            AuthError::Store(StoreError::Unavailable(Arc::new(sqlx::Error::PoolTimedOut))),
        ]
    }

    #[test]
    fn every_variant_maps_to_a_status_carrying_its_reason() {
        for e in every_variant() {
            let expected = reason(&e);
            let status = to_status(e);
            assert_eq!(ErrorReason::of(&status), Some(expected));
            assert_eq!(status.code(), expected.code());
        }
    }

    #[test]
    fn every_auth_reason_of_the_design_is_reachable() {
        let reached: HashSet<_> = every_variant().iter().map(reason).collect();
        for r in [
            ErrorReason::InvalidAuthRelations,
            ErrorReason::InsufficientIsvPermissions,
            ErrorReason::AuthorizationAtLaunch,
            ErrorReason::ScopesNotCombinable,
            ErrorReason::InvalidScope,
            ErrorReason::AppNotFound,
            ErrorReason::PromptNotFound,
            ErrorReason::PromptExpired,
            ErrorReason::PromptAlreadyResolved,
            ErrorReason::InvalidCode,
            ErrorReason::UsedCode,
            ErrorReason::ExpiredCode,
            ErrorReason::InvalidRefreshToken,
            ErrorReason::UsedRefreshToken,
            ErrorReason::ExpiredRefreshToken,
            ErrorReason::InvalidAuthClient,
            ErrorReason::UnauthenticatedCaller,
            ErrorReason::RequestTrafficExceedLimit,
        ] {
            assert!(reached.contains(&r), "{r:?} unreachable");
        }
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let status = to_status(AuthError::Store(StoreError::Internal(Arc::new(
            sqlx::Error::Protocol("secret table detail".into()),
        ))));
        assert!(!status.message().contains("secret table detail"));
    }
}
