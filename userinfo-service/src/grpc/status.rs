//! The one table from [`UserInfoError`] to a gRPC status with the design's reason.

use miniprogram_proto::ErrorReason;
use tonic::Status;
use tonic_types::FieldViolation;

use crate::error::UserInfoError;
use crate::store::StoreError;

/// The reason an error travels under. Exhaustive: a new variant forces a decision here.
pub fn reason(e: &UserInfoError) -> ErrorReason {
    match e {
        UserInfoError::InvalidAuthRelations => ErrorReason::InvalidAuthRelations,
        UserInfoError::InvalidAccessToken => ErrorReason::InvalidAccessToken,
        UserInfoError::ExpiredAccessToken => ErrorReason::ExpiredAccessToken,
        UserInfoError::RevocationStateStale => ErrorReason::RevocationStateStale,
        UserInfoError::ProfileNotFound => ErrorReason::ProfileNotFound,
        UserInfoError::InvalidProfileField(_) => ErrorReason::InvalidProfileField,
        UserInfoError::InvalidArgument { .. } => ErrorReason::InvalidArgument,
        UserInfoError::InvalidAuthClient => ErrorReason::InvalidAuthClient,
        UserInfoError::RequestTrafficExceedLimit | UserInfoError::ReadLimitExceeded => {
            ErrorReason::RequestTrafficExceedLimit
        }
        UserInfoError::UnauthenticatedCaller => ErrorReason::UnauthenticatedCaller,
        UserInfoError::CallerNotPermitted => ErrorReason::CallerNotPermitted,
        UserInfoError::AuthServiceUnavailable(_)
        | UserInfoError::Store(StoreError::Unavailable(_)) => ErrorReason::ServiceUnavailable,
        UserInfoError::Internal(_) => ErrorReason::Internal,
        UserInfoError::Store(
            StoreError::AlreadyExists | StoreError::UnsupportedUrl | StoreError::Internal(_),
        ) => ErrorReason::Internal,
    }
}

/// Builds the status; internal failures are logged and answered with a generic message.
pub fn to_status(e: UserInfoError) -> Status {
    let reason = reason(&e);
    match (reason, e) {
        (ErrorReason::Internal, e) => {
            tracing::error!(error = %e, "request failed");
            reason.status("internal error; it has been logged")
        }
        (ErrorReason::ServiceUnavailable, e) => {
            tracing::warn!(error = %e, "dependency unavailable");
            reason.status("a dependency is unavailable; retry later")
        }
        (_, UserInfoError::InvalidProfileField(violations)) => {
            let message = UserInfoError::InvalidProfileField(violations.clone()).to_string();
            reason.status_with_violations(
                message,
                violations
                    .into_iter()
                    .map(|v| FieldViolation::new(v.field, v.description))
                    .collect(),
            )
        }
        (_, e) => reason.status(e.to_string()),
    }
}

impl From<UserInfoError> for Status {
    fn from(e: UserInfoError) -> Status {
        to_status(e)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tonic_types::StatusExt;

    use super::*;
    use crate::model::FieldViolation as Violation;

    #[test]
    fn every_variant_maps_to_its_reason_and_profile_fields_carry_violations() {
        let all = vec![
            UserInfoError::InvalidAuthRelations,
            UserInfoError::InvalidAccessToken,
            UserInfoError::ExpiredAccessToken,
            UserInfoError::RevocationStateStale,
            UserInfoError::ProfileNotFound,
            UserInfoError::InvalidProfileField(vec![Violation {
                field: "profile.gender",
                description: "bad",
            }]),
            UserInfoError::InvalidArgument {
                field: "f",
                problem: "p",
            },
            UserInfoError::InvalidAuthClient,
            UserInfoError::RequestTrafficExceedLimit,
            UserInfoError::ReadLimitExceeded,
            UserInfoError::UnauthenticatedCaller,
            UserInfoError::CallerNotPermitted,
            UserInfoError::AuthServiceUnavailable("down".into()),
            UserInfoError::Internal("broken"),
            UserInfoError::Store(StoreError::Internal(Arc::new(sqlx::Error::PoolClosed))),
        ];
        for e in all {
            let expected = reason(&e);
            let status = to_status(e);
            assert_eq!(ErrorReason::of(&status), Some(expected));
            assert_eq!(status.code(), expected.code());
            if expected == ErrorReason::InvalidProfileField {
                let bad = status.get_details_bad_request().unwrap();
                assert_eq!(bad.field_violations[0].field, "profile.gender");
            }
        }
    }
}
