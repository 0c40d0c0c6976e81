//! The one check every wallet user id and app id in a request passes.

use crate::error::AuthError;

/// Longest wallet user id or app id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Checks an id field: non-empty, bounded, printable.
pub fn check_id(field: &'static str, value: &str) -> Result<(), AuthError> {
    if value.is_empty() {
        return Err(AuthError::InvalidArgument {
            field,
            problem: "is required",
        });
    }
    if value.len() > MAX_ID_LEN {
        return Err(AuthError::InvalidArgument {
            field,
            problem: "is longer than 128 bytes",
        });
    }
    if value.chars().any(char::is_control) {
        return Err(AuthError::InvalidArgument {
            field,
            problem: "contains control characters",
        });
    }
    Ok(())
}
