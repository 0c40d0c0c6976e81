//! The gRPC face of userinfo-service: proto <-> domain mapping, the two services, and the
//! client side of auth-service.

pub mod auth_client;
pub mod profiles;
pub mod status;
pub mod userinfo;

use tonic::metadata::MetadataMap;

/// The `authorization` header, if present and printable.
pub(crate) fn authorization_header(metadata: &MetadataMap) -> Option<&str> {
    metadata.get("authorization").and_then(|v| v.to_str().ok())
}
