//! The methods a server serves, read from the descriptor sets compiled into the binary (the
//! contract's, health's and reflection's): the only values a method may take in a metric label
//! or a log field, and the shape of each call the request limits need to know.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use prost::Message;

/// The health service: its `Check` is answered from memory and never waits for a permit.
const HEALTH: &str = tonic_health::pb::health_server::SERVICE_NAME;
/// The reflection services every server mounts beside health.
const REFLECTION: [&str; 2] = [
    tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
    tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
];

/// How the request limits treat a call of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// A call of the contract: admitted by the in-flight pool once its request is decoded.
    Business,
    /// A server stream of the contract (`WatchRevocations`, `WatchAuthorizationChanges`): its
    /// task and its reads at every heartbeat outlive the response head, so it holds a slot of
    /// its own pool for as long as it is open.
    BusinessStream,
    /// Health `Check`: answered from memory in microseconds, so it takes no permit and no
    /// business load can fail a probe.
    Probe,
    /// Health `Watch` and reflection: long-lived and open to anyone, so they come from their
    /// own small pool and end after a lifetime.
    ControlStream,
}

/// One RPC of a compiled-in descriptor set.
#[derive(Debug)]
pub struct Method {
    /// Fully qualified service name, e.g. `miniprogram.auth.v1.AppService`.
    pub service: String,
    /// Method name, e.g. `CreateApp`.
    pub name: String,
    /// Whether the client streams its request (the request limits cannot wait for a whole body).
    pub client_streaming: bool,
    /// How the request limits admit its calls.
    pub kind: CallKind,
    path: String,
}

impl Method {
    /// The request path of its calls, `/service/method`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Every method of every descriptor set compiled into this binary.
static CATALOGUE: LazyLock<Vec<Method>> = LazyLock::new(|| {
    [
        miniprogram_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
    .into_iter()
    .flat_map(methods_of)
    .collect()
});

/// The methods of one encoded `FileDescriptorSet`. The sets are constants of the build; that
/// each decodes is pinned by `the_catalogue_holds_every_generated_service`.
fn methods_of(encoded: &[u8]) -> Vec<Method> {
    let set = prost_types::FileDescriptorSet::decode(encoded)
        .unwrap_or_else(|e| unreachable!("a compiled-in descriptor set decodes: {e}"));
    let mut methods = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let service_name = match file.package() {
                "" => service.name().to_owned(),
                package => format!("{package}.{}", service.name()),
            };
            for method in &service.method {
                let server_streaming = method.server_streaming();
                let client_streaming = method.client_streaming();
                let kind = if service_name == HEALTH && !server_streaming && !client_streaming {
                    CallKind::Probe
                } else if service_name == HEALTH || REFLECTION.contains(&service_name.as_str()) {
                    CallKind::ControlStream
                } else if server_streaming {
                    CallKind::BusinessStream
                } else {
                    CallKind::Business
                };
                methods.push(Method {
                    path: format!("/{service_name}/{}", method.name()),
                    service: service_name.clone(),
                    name: method.name().to_owned(),
                    client_streaming,
                    kind,
                });
            }
        }
    }
    methods
}

/// The methods one server serves, by request path. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ServedMethods {
    by_path: Arc<HashMap<&'static str, &'static Method>>,
}

impl ServedMethods {
    /// The methods of `services` (fully qualified names, from the generated servers'
    /// `SERVICE_NAME`s) plus health and both reflection versions, which every server mounts.
    pub fn new(services: &[&str]) -> Self {
        let served = |s: &str| s == HEALTH || REFLECTION.contains(&s) || services.contains(&s);
        let by_path = CATALOGUE
            .iter()
            .filter(|m| served(&m.service))
            .map(|m| (m.path.as_str(), m))
            .collect();
        ServedMethods {
            by_path: Arc::new(by_path),
        }
    }

    /// Every method this server serves.
    pub fn iter(&self) -> impl Iterator<Item = &'static Method> + '_ {
        self.by_path.values().copied()
    }

    /// The method a request path (`/service/method`) names, if this server serves it.
    pub fn lookup(&self, path: &str) -> Option<&'static Method> {
        self.by_path.get(path).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT: [&str; 8] = [
        miniprogram_proto::auth::v1::app_service_server::SERVICE_NAME,
        miniprogram_proto::auth::v1::authorization_service_server::SERVICE_NAME,
        miniprogram_proto::auth::v1::token_service_server::SERVICE_NAME,
        miniprogram_proto::auth::v1::key_service_server::SERVICE_NAME,
        miniprogram_proto::userinfo::v1::user_info_service_server::SERVICE_NAME,
        miniprogram_proto::userinfo::v1::profile_service_server::SERVICE_NAME,
        miniprogram_proto::auth::v1::authorization_change_service_server::SERVICE_NAME,
        miniprogram_proto::auth::v1::key_admin_service_server::SERVICE_NAME,
    ];

    #[test]
    fn the_catalogue_holds_every_generated_service() {
        for service in CONTRACT.iter().chain([&HEALTH]).chain(&REFLECTION) {
            assert!(
                CATALOGUE.iter().any(|m| m.service == *service),
                "{service} missing from the catalogue"
            );
        }
    }

    #[test]
    fn a_server_serves_only_what_it_mounts_plus_health_and_reflection() {
        let served = ServedMethods::new(&[CONTRACT[4]]);
        let m = served
            .lookup("/miniprogram.userinfo.v1.UserInfoService/GetOpenUserInfo")
            .unwrap();
        assert_eq!(
            (m.service.as_str(), m.name.as_str(), m.kind),
            (CONTRACT[4], "GetOpenUserInfo", CallKind::Business)
        );
        assert!(
            served
                .lookup("/miniprogram.auth.v1.AppService/CreateApp")
                .is_none()
        );
        assert!(
            served
                .lookup("/miniprogram.userinfo.v1.UserInfoService/Nope")
                .is_none()
        );
        assert!(
            served
                .lookup("/miniprogram.userinfo.v1.UserInfoService/")
                .is_none()
        );
    }

    #[test]
    fn health_check_is_a_probe_watch_and_reflection_are_control_streams() {
        let served = ServedMethods::new(&[]);
        let kind = |p: &str| served.lookup(p).map(|m| (m.kind, m.client_streaming));
        assert_eq!(
            kind("/grpc.health.v1.Health/Check"),
            Some((CallKind::Probe, false))
        );
        assert_eq!(
            kind("/grpc.health.v1.Health/Watch"),
            Some((CallKind::ControlStream, false))
        );
        for version in ["v1", "v1alpha"] {
            assert_eq!(
                kind(&format!(
                    "/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
                )),
                Some((CallKind::ControlStream, true))
            );
        }
    }

    #[test]
    fn the_contracts_streams_are_business_streams_with_a_unary_request() {
        let served = ServedMethods::new(&CONTRACT);
        for path in [
            "/miniprogram.auth.v1.KeyService/WatchRevocations",
            "/miniprogram.auth.v1.AuthorizationChangeService/WatchAuthorizationChanges",
        ] {
            let m = served.lookup(path).unwrap();
            assert_eq!(
                (m.kind, m.client_streaming),
                (CallKind::BusinessStream, false),
                "{path}"
            );
        }
    }
}
