//! Generates the `switchyard.v1` types, client and server, plus the file
//! descriptor set that gRPC server reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("switchyard_v1_descriptor.bin"))
        .compile_protos(&["proto/switchyard/v1/registry.proto"], &["proto"])
        .map_err(|error| {
            format!(
                "{error}\nhint: protoc is needed to build Switchyard; on Debian run \
                 `apt-get install -y protobuf-compiler` (the README's commands do this)"
            )
        })?;
    Ok(())
}
