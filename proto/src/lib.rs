//! The gRPC contract of the mini-program user-information services: generated clients and
//! servers for `miniprogram.auth.v1` and `miniprogram.userinfo.v1`, the encoded descriptor set
//! for server reflection, and the table of error reasons both services answer with.
#![forbid(unsafe_code)]

pub mod caller_credentials;
pub mod client_address;
mod error_reason;
pub mod wire_time;

pub use error_reason::{ERROR_DOMAIN, ErrorReason};

/// `miniprogram.auth.v1`: apps, consent, tokens and keys.
pub mod auth {
    pub mod v1 {
        #![allow(clippy::all)]
        tonic::include_proto!("miniprogram.auth.v1");
    }
}

/// `miniprogram.userinfo.v1`: public profile fields and the phone number.
pub mod userinfo {
    pub mod v1 {
        #![allow(clippy::all)]
        tonic::include_proto!("miniprogram.userinfo.v1");
    }
}

/// The encoded `FileDescriptorSet` of every file of the contract (and its imports), for
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("miniprogram_descriptor");

/// A reflection builder that knows the contract's, the health service's and the error
/// details' descriptors and
/// lists only `services` (the ones the server mounts) plus `grpc.health.v1.Health`. Build it
/// twice, with `build_v1` and `build_v1alpha`, so grpcurl and grpcio clients both find it.
pub fn reflection(services: &[&str]) -> tonic_reflection::server::Builder<'static> {
    services.iter().fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc.ErrorInfo / BadRequest, so reflection clients can decode error details.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            // Both reflection protocols' own descriptors, whichever one a builder serves, so a
            // client of either version can describe every service the server lists.
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection"),
        |builder, name| builder.with_service_name(*name),
    )
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn descriptor_set_decodes_and_holds_every_service() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| {
                let package = f.package().to_owned();
                f.service
                    .iter()
                    .map(move |s| format!("{package}.{}", s.name()))
            })
            .collect();
        for expected in [
            "miniprogram.auth.v1.AppService",
            "miniprogram.auth.v1.AuthorizationService",
            "miniprogram.auth.v1.TokenService",
            "miniprogram.auth.v1.KeyService",
            "miniprogram.auth.v1.KeyAdminService",
            "miniprogram.userinfo.v1.UserInfoService",
            "miniprogram.userinfo.v1.ProfileService",
        ] {
            assert!(
                services.iter().any(|s| s == expected),
                "{expected} missing from {services:?}"
            );
        }
    }
}
