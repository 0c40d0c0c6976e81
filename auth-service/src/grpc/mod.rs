//! The gRPC face of auth-service: proto <-> domain conversion and the services. Nothing
//! here decides policy; it maps.

pub mod apps;
pub mod authorization;
pub mod caller_check;
pub mod changes;
pub mod keys;
pub mod status;
pub mod tokens;

use miniprogram_proto::auth::v1 as pb;
use miniprogram_token::{Scope, ScopeSet};
use tonic::metadata::MetadataMap;

use crate::error::AuthError;
use crate::model::{Feature, ScopePurpose};

/// Most scopes a request may list (there are three).
const MAX_SCOPES: usize = 3;

pub(crate) use miniprogram_proto::wire_time::to_proto as timestamp;

pub(crate) fn scope_from_proto(value: i32) -> Result<Scope, AuthError> {
    match pb::Scope::try_from(value) {
        Ok(pb::Scope::UserInfo) => Ok(Scope::UserInfo),
        Ok(pb::Scope::AuthBase) => Ok(Scope::AuthBase),
        Ok(pb::Scope::PhoneNumber) => Ok(Scope::PhoneNumber),
        Ok(pb::Scope::Unspecified) | Err(_) => Err(AuthError::InvalidScope),
    }
}

/// A requested scope list as a set: every entry must be a known scope, at most three.
pub(crate) fn scopes_from_proto(values: &[i32]) -> Result<ScopeSet, AuthError> {
    if values.len() > MAX_SCOPES {
        return Err(AuthError::InvalidScope);
    }
    values.iter().map(|v| scope_from_proto(*v)).collect()
}

pub(crate) fn scope_to_proto(scope: Scope) -> pb::Scope {
    match scope {
        Scope::UserInfo => pb::Scope::UserInfo,
        Scope::AuthBase => pb::Scope::AuthBase,
        Scope::PhoneNumber => pb::Scope::PhoneNumber,
    }
}

pub(crate) fn scopes_to_proto(scopes: ScopeSet) -> Vec<i32> {
    scopes.iter().map(|s| scope_to_proto(s) as i32).collect()
}

pub(crate) fn feature_from_proto(value: i32) -> Result<Feature, AuthError> {
    match pb::Feature::try_from(value) {
        Ok(pb::Feature::BasicUserInfo) => Ok(Feature::BasicUserInfo),
        Ok(pb::Feature::PhoneNumber) => Ok(Feature::PhoneNumber),
        Ok(pb::Feature::UserAuthorization) => Ok(Feature::UserAuthorization),
        Ok(pb::Feature::Unspecified) | Err(_) => Err(AuthError::InvalidArgument {
            field: "feature",
            problem: "must be FEATURE_BASIC_USER_INFO, FEATURE_PHONE_NUMBER or FEATURE_USER_AUTHORIZATION",
        }),
    }
}

pub(crate) fn feature_to_proto(feature: Feature) -> pb::Feature {
    match feature {
        Feature::BasicUserInfo => pb::Feature::BasicUserInfo,
        Feature::PhoneNumber => pb::Feature::PhoneNumber,
        Feature::UserAuthorization => pb::Feature::UserAuthorization,
    }
}

/// Declared purposes from the wire: known scopes only, at most one per scope (checked by the
/// registry), at most three.
pub(crate) fn purposes_from_proto(
    values: &[pb::ScopePurpose],
) -> Result<Vec<ScopePurpose>, AuthError> {
    if values.len() > MAX_SCOPES {
        return Err(AuthError::InvalidArgument {
            field: "purposes",
            problem: "declares at most three scopes",
        });
    }
    values
        .iter()
        .map(|p| {
            Ok(ScopePurpose {
                scope: scope_from_proto(p.scope)?,
                purpose: p.purpose.clone(),
            })
        })
        .collect()
}

pub(crate) fn purposes_to_proto(purposes: Vec<ScopePurpose>) -> Vec<pb::ScopePurpose> {
    purposes
        .into_iter()
        .map(|p| pb::ScopePurpose {
            scope: scope_to_proto(p.scope) as i32,
            purpose: p.purpose,
        })
        .collect()
}

/// The `authorization` header, if present and printable.
pub(crate) fn authorization_header(metadata: &MetadataMap) -> Option<&str> {
    metadata.get("authorization").and_then(|v| v.to_str().ok())
}
