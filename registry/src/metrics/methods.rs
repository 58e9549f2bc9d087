//! The gRPC methods the server serves, read from the descriptor sets it
//! also serves by reflection, so the metrics' labels come from the one list
//! that routing uses and a streaming method is typed as such without a
//! hand-kept list.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;

use super::grpc::Method;

/// `/package.Service/Method` → its labels.
#[derive(Debug, Default)]
pub struct KnownMethods {
    by_path: HashMap<String, Method>,
}

impl KnownMethods {
    /// Every method of every service in `sets` (encoded
    /// `FileDescriptorSet`s). A set that does not decode contributes
    /// nothing: its calls are then counted as `unknown`, which the unit
    /// tests would show.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Self {
        let mut by_path = HashMap::new();
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                tracing::warn!("a gRPC descriptor set does not decode; its calls count as unknown");
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = match package.as_str() {
                        "" => service.name().to_string(),
                        package => format!("{package}.{}", service.name()),
                    };
                    // Shared, so a call's labels cost a reference count,
                    // not an allocation.
                    let grpc_service = Arc::new(service_name);
                    for method in service.method {
                        let grpc_type = match (method.client_streaming(), method.server_streaming())
                        {
                            (false, false) => "unary",
                            (false, true) => "server_stream",
                            (true, false) => "client_stream",
                            (true, true) => "bidi_stream",
                        };
                        let name = method.name().to_string();
                        by_path.insert(
                            format!("/{grpc_service}/{name}"),
                            Method {
                                grpc_type,
                                grpc_service: Arc::clone(&grpc_service),
                                grpc_method: Arc::new(name),
                            },
                        );
                    }
                }
            }
        }
        KnownMethods { by_path }
    }

    /// The labels of the method at `path`, if the server serves it.
    pub fn get(&self, path: &str) -> Option<Method> {
        self.by_path.get(path).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_health_and_reflection_methods_are_known_with_their_types() {
        let known = KnownMethods::from_descriptor_sets(&[
            switchyard_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        ]);
        let of = |path: &str| {
            known
                .get(path)
                .map(|m| (m.grpc_type, m.grpc_method.as_str().to_string()))
        };
        assert_eq!(
            of("/switchyard.v1.Registry/Register"),
            Some(("unary", "Register".into()))
        );
        assert_eq!(
            of("/switchyard.v1.Registry/Watch"),
            Some(("server_stream", "Watch".into()))
        );
        assert_eq!(
            of("/switchyard.v1.Registry/KeepAlive"),
            Some(("bidi_stream", "KeepAlive".into()))
        );
        assert_eq!(
            of("/grpc.health.v1.Health/Check"),
            Some(("unary", "Check".into()))
        );
        assert_eq!(
            of("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Some(("bidi_stream", "ServerReflectionInfo".into()))
        );
        assert_eq!(of("/switchyard.v1.Registry/Nope"), None);
        assert_eq!(of("/x"), None);
    }
}
