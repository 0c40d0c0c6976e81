use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The `ErrorInfo.domain` of every error either service returns.
pub const ERROR_DOMAIN: &str = "miniprogram.wallet";

/// Every `ErrorInfo.reason` the services use, with its gRPC code and the platform's JSAPI or
/// result code: the design's error table, in one place for both services and their clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorReason {
    InvalidAuthRelations,
    InsufficientIsvPermissions,
    AuthorizationAtLaunch,
    ScopesNotCombinable,
    InvalidScope,
    AppNotFound,
    ProfileNotFound,
    PromptNotFound,
    PromptExpired,
    PromptAlreadyResolved,
    InvalidCode,
    UsedCode,
    ExpiredCode,
    InvalidRefreshToken,
    UsedRefreshToken,
    ExpiredRefreshToken,
    InvalidAccessToken,
    ExpiredAccessToken,
    InvalidAuthClient,
    UnauthenticatedCaller,
    /// Not in the platform's table: a valid credential of a role this service does not serve.
    CallerNotPermitted,
    InvalidProfileField,
    /// Not in the platform's table: a malformed request field other than a profile field.
    InvalidArgument,
    RequestTrafficExceedLimit,
    RevocationStateStale,
    /// Not in the platform's table: a dependency (database, auth-service) is unreachable.
    ServiceUnavailable,
    /// Not in the platform's table: the call ran longer than the server's request timeout.
    RequestTimeout,
    /// Not in the platform's table: the request message exceeds the server's size limit.
    MessageTooLarge,
    /// Not in the platform's table: no such service or method on this server.
    UnknownMethod,
    /// Not in the platform's table: an unexpected failure; details are only in the server log.
    Internal,
}

impl ErrorReason {
    pub const ALL: [ErrorReason; 30] = [
        ErrorReason::InvalidAuthRelations,
        ErrorReason::InsufficientIsvPermissions,
        ErrorReason::AuthorizationAtLaunch,
        ErrorReason::ScopesNotCombinable,
        ErrorReason::InvalidScope,
        ErrorReason::AppNotFound,
        ErrorReason::ProfileNotFound,
        ErrorReason::PromptNotFound,
        ErrorReason::PromptExpired,
        ErrorReason::PromptAlreadyResolved,
        ErrorReason::InvalidCode,
        ErrorReason::UsedCode,
        ErrorReason::ExpiredCode,
        ErrorReason::InvalidRefreshToken,
        ErrorReason::UsedRefreshToken,
        ErrorReason::ExpiredRefreshToken,
        ErrorReason::InvalidAccessToken,
        ErrorReason::ExpiredAccessToken,
        ErrorReason::InvalidAuthClient,
        ErrorReason::UnauthenticatedCaller,
        ErrorReason::CallerNotPermitted,
        ErrorReason::InvalidProfileField,
        ErrorReason::InvalidArgument,
        ErrorReason::RequestTrafficExceedLimit,
        ErrorReason::RevocationStateStale,
        ErrorReason::ServiceUnavailable,
        ErrorReason::RequestTimeout,
        ErrorReason::MessageTooLarge,
        ErrorReason::UnknownMethod,
        ErrorReason::Internal,
    ];

    /// The wire name, as in `ErrorInfo.reason`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorReason::InvalidAuthRelations => "INVALID_AUTH_RELATIONS",
            ErrorReason::InsufficientIsvPermissions => "INSUFFICIENT_ISV_PERMISSIONS",
            ErrorReason::AuthorizationAtLaunch => "AUTHORIZATION_AT_LAUNCH",
            ErrorReason::ScopesNotCombinable => "SCOPES_NOT_COMBINABLE",
            ErrorReason::InvalidScope => "INVALID_SCOPE",
            ErrorReason::AppNotFound => "APP_NOT_FOUND",
            ErrorReason::ProfileNotFound => "PROFILE_NOT_FOUND",
            ErrorReason::PromptNotFound => "PROMPT_NOT_FOUND",
            ErrorReason::PromptExpired => "PROMPT_EXPIRED",
            ErrorReason::PromptAlreadyResolved => "PROMPT_ALREADY_RESOLVED",
            ErrorReason::InvalidCode => "INVALID_CODE",
            ErrorReason::UsedCode => "USED_CODE",
            ErrorReason::ExpiredCode => "EXPIRED_CODE",
            ErrorReason::InvalidRefreshToken => "INVALID_REFRESH_TOKEN",
            ErrorReason::UsedRefreshToken => "USED_REFRESH_TOKEN",
            ErrorReason::ExpiredRefreshToken => "EXPIRED_REFRESH_TOKEN",
            ErrorReason::InvalidAccessToken => "INVALID_ACCESS_TOKEN",
            ErrorReason::ExpiredAccessToken => "EXPIRED_ACCESS_TOKEN",
            ErrorReason::InvalidAuthClient => "INVALID_AUTH_CLIENT",
            ErrorReason::UnauthenticatedCaller => "UNAUTHENTICATED_CALLER",
            ErrorReason::CallerNotPermitted => "CALLER_NOT_PERMITTED",
            ErrorReason::InvalidProfileField => "INVALID_PROFILE_FIELD",
            ErrorReason::InvalidArgument => "INVALID_ARGUMENT",
            ErrorReason::RequestTrafficExceedLimit => "REQUEST_TRAFFIC_EXCEED_LIMIT",
            ErrorReason::RevocationStateStale => "REVOCATION_STATE_STALE",
            ErrorReason::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorReason::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorReason::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorReason::UnknownMethod => "UNKNOWN_METHOD",
            ErrorReason::Internal => "INTERNAL",
        }
    }

    pub fn from_wire(reason: &str) -> Option<ErrorReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == reason)
    }

    /// The gRPC status code the reason travels under.
    pub const fn code(self) -> Code {
        match self {
            ErrorReason::InvalidAuthRelations
            | ErrorReason::InsufficientIsvPermissions
            | ErrorReason::CallerNotPermitted => Code::PermissionDenied,
            ErrorReason::AuthorizationAtLaunch
            | ErrorReason::PromptExpired
            | ErrorReason::PromptAlreadyResolved
            | ErrorReason::UsedCode
            | ErrorReason::ExpiredCode
            | ErrorReason::UsedRefreshToken
            | ErrorReason::ExpiredRefreshToken => Code::FailedPrecondition,
            ErrorReason::ScopesNotCombinable
            | ErrorReason::InvalidScope
            | ErrorReason::InvalidCode
            | ErrorReason::InvalidRefreshToken
            | ErrorReason::InvalidProfileField
            | ErrorReason::InvalidArgument => Code::InvalidArgument,
            ErrorReason::AppNotFound
            | ErrorReason::ProfileNotFound
            | ErrorReason::PromptNotFound => Code::NotFound,
            ErrorReason::InvalidAccessToken
            | ErrorReason::ExpiredAccessToken
            | ErrorReason::InvalidAuthClient
            | ErrorReason::UnauthenticatedCaller => Code::Unauthenticated,
            ErrorReason::RequestTrafficExceedLimit | ErrorReason::MessageTooLarge => {
                Code::ResourceExhausted
            }
            ErrorReason::RequestTimeout => Code::DeadlineExceeded,
            ErrorReason::UnknownMethod => Code::Unimplemented,
            ErrorReason::RevocationStateStale | ErrorReason::ServiceUnavailable => {
                Code::Unavailable
            }
            ErrorReason::Internal => Code::Internal,
        }
    }

    /// The JSAPI error a wallet's bridge shows the mini program, where the platform has one.
    pub const fn jsapi(self) -> Option<(&'static str, &'static str)> {
        match self {
            ErrorReason::InvalidAuthRelations => Some(("40003", "isv.invalid-auth-relations")),
            ErrorReason::InsufficientIsvPermissions => {
                Some(("40006", "isv.insufficient-isv-permissions"))
            }
            _ => None,
        }
    }

    /// Whether the reason is one of the platform's applyToken / inquiryUserInfo result codes,
    /// which travel as `result_code` metadata under their own name.
    pub const fn is_result_code(self) -> bool {
        matches!(
            self,
            ErrorReason::InvalidCode
                | ErrorReason::UsedCode
                | ErrorReason::ExpiredCode
                | ErrorReason::InvalidRefreshToken
                | ErrorReason::UsedRefreshToken
                | ErrorReason::ExpiredRefreshToken
                | ErrorReason::InvalidAccessToken
                | ErrorReason::ExpiredAccessToken
        )
    }

    fn metadata(self) -> HashMap<String, String> {
        let mut metadata = HashMap::new();
        if let Some((code, sub_code)) = self.jsapi() {
            metadata.insert("jsapi_code".to_owned(), code.to_owned());
            metadata.insert("jsapi_sub_code".to_owned(), sub_code.to_owned());
        }
        if self.is_result_code() {
            metadata.insert("result_code".to_owned(), self.as_str().to_owned());
        }
        metadata
    }

    /// A status with this reason's code and an `ErrorInfo` carrying it.
    pub fn status(self, message: impl Into<String>) -> Status {
        Status::with_error_details(
            self.code(),
            message,
            ErrorDetails::with_error_info(self.as_str(), ERROR_DOMAIN, self.metadata()),
        )
    }

    /// As [`ErrorReason::status`], plus a `BadRequest` with one violation per field.
    pub fn status_with_violations(
        self,
        message: impl Into<String>,
        violations: Vec<FieldViolation>,
    ) -> Status {
        let mut details =
            ErrorDetails::with_error_info(self.as_str(), ERROR_DOMAIN, self.metadata());
        for v in violations {
            details.add_bad_request_violation(v.field, v.description);
        }
        Status::with_error_details(self.code(), message, details)
    }

    /// The reason to attach to an error the gRPC framework produced on its own (no details),
    /// from its code and message: an unknown method, an oversized or undecodable request
    /// message, a timeout. Returns the reason and a fixed message, so nothing of the request
    /// is echoed. The code changes only where the framework's is wrong for the caller (an
    /// undecodable request is the caller's INVALID_ARGUMENT, not our INTERNAL); `None` for
    /// codes whose meaning clients rely on as they are (health's NOT_FOUND for an unknown
    /// service, say).
    pub fn for_framework_error(code: Code, message: &str) -> Option<(ErrorReason, &'static str)> {
        Some(match code {
            Code::Unimplemented => (
                ErrorReason::UnknownMethod,
                "this server has no such service or method; list them with server reflection",
            ),
            Code::OutOfRange | Code::ResourceExhausted => (
                ErrorReason::MessageTooLarge,
                "the request message is larger than this server accepts (MAX_MESSAGE_BYTES)",
            ),
            Code::Internal if message.contains("decode") => (
                ErrorReason::InvalidArgument,
                "the request could not be decoded as the method's request message",
            ),
            Code::Internal | Code::Unknown => (
                ErrorReason::Internal,
                "the server could not handle this call; see its logs",
            ),
            Code::DeadlineExceeded => (
                ErrorReason::RequestTimeout,
                "the call ran out of time; retry, or raise the deadline",
            ),
            _ => return None,
        })
    }

    /// The reason a status carries, if it carries one of ours.
    pub fn of(status: &Status) -> Option<ErrorReason> {
        status
            .get_details_error_info()
            .filter(|info| info.domain == ERROR_DOMAIN)
            .and_then(|info| Self::from_wire(&info.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_a_status() {
        for reason in ErrorReason::ALL {
            let status = reason.status("message");
            assert_eq!(status.code(), reason.code());
            assert_eq!(ErrorReason::of(&status), Some(reason));
            let info = status.get_details_error_info().unwrap();
            assert_eq!(
                info.metadata.get("jsapi_code").map(String::as_str),
                reason.jsapi().map(|j| j.0)
            );
        }
    }

    #[test]
    fn platform_codes_match_the_design() {
        assert_eq!(
            ErrorReason::InvalidAuthRelations.jsapi(),
            Some(("40003", "isv.invalid-auth-relations"))
        );
        assert_eq!(
            ErrorReason::InsufficientIsvPermissions.jsapi(),
            Some(("40006", "isv.insufficient-isv-permissions"))
        );
        assert_eq!(
            ErrorReason::InsufficientIsvPermissions.code(),
            Code::PermissionDenied
        );
    }
}
