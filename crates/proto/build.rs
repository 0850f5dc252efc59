//! Generates the gRPC code into OUT_DIR with the vendored protoc, so a fresh clone builds
//! without protoc installed, and writes the descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded; prost-build reads PROTOC from the environment.
    std::env::set_var("PROTOC", protoc);

    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "tributary/contribution/v1/contribution.proto",
        "tributary/catalog/v1/catalog.proto",
        "tributary/admin/v1/admin.proto",
        "tributary/provider/v1/provider.proto",
    ];
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Undecodable requests are the client's fault: INVALID_ARGUMENT, not prost's INTERNAL.
        .codec_path("crate::codec::ProtoCodec")
        .file_descriptor_set_path(out_dir.join("tributary_descriptor.bin"))
        .compile_protos(
            &files.map(|f| proto_root.join(f)),
            std::slice::from_ref(&proto_root),
        )?;
    for file in files {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }
    Ok(())
}
