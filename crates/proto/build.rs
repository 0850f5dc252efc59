//! Generates the gRPC code into OUT_DIR with the vendored protoc, so a fresh clone builds
//! without protoc installed, and writes the descriptor set that server reflection serves.
//!
//! The Contribution service's server is generated a second time, with `google.protobuf.Struct`
//! as `crate::json::JsonObject` (ADR 0022): the messages that carry records decode their
//! entities straight into JSON. Every other message of that service is the first generation's
//! type (an extern path), so only the request types carrying records exist twice.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};

const CONTRIBUTION: &str = "tributary/contribution/v1/contribution.proto";
const CONTRIBUTION_PACKAGE: &str = ".tributary.contribution.v1";
const STRUCT: &str = ".google.protobuf.Struct";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded; prost-build reads PROTOC from the environment.
    std::env::set_var("PROTOC", protoc);

    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        CONTRIBUTION,
        "tributary/catalog/v1/catalog.proto",
        "tributary/admin/v1/admin.proto",
        "tributary/provider/v1/provider.proto",
    ];
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("tributary_descriptor.bin");
    tonic_prost_build::configure()
        // Undecodable requests are the client's fault: INVALID_ARGUMENT, not prost's INTERNAL.
        .codec_path("crate::codec::ProtoCodec")
        .file_descriptor_set_path(&descriptor_path)
        .compile_protos(
            &files.map(|f| proto_root.join(f)),
            std::slice::from_ref(&proto_root),
        )?;
    generate_json_contribution_server(&proto_root, &out_dir, &descriptor_path)?;
    for file in files {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }
    Ok(())
}

/// The Contribution server with `Struct` fields as JSON, into `OUT_DIR/json`.
fn generate_json_contribution_server(
    proto_root: &Path,
    out_dir: &Path,
    descriptor_path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let descriptors = FileDescriptorSet::decode(std::fs::read(descriptor_path)?.as_slice())?;
    let contribution = descriptors
        .file
        .iter()
        .find(|f| f.name() == CONTRIBUTION)
        .ok_or("contribution.proto is missing from the descriptor set")?;
    if contribution
        .message_type
        .iter()
        .any(|m| !m.nested_type.is_empty())
    {
        return Err(
            "contribution.proto nests a message: messages_holding_struct must see it".into(),
        );
    }
    let with_struct = messages_holding_struct(&contribution.message_type);
    let mut config = tonic_prost_build::configure()
        .build_client(false)
        .codec_path("crate::codec::ProtoCodec")
        .out_dir(out_dir.join("json"))
        .extern_path(STRUCT, "crate::json::JsonObject");
    for message in &contribution.message_type {
        if !with_struct.contains(&qualified(message.name())) {
            config = shared_type(config, message.name());
        }
    }
    for enumeration in &contribution.enum_type {
        config = shared_type(config, enumeration.name());
    }
    std::fs::create_dir_all(out_dir.join("json"))?;
    config.compile_protos(
        &[proto_root.join(CONTRIBUTION)],
        &[proto_root.to_path_buf()],
    )?;
    Ok(())
}

fn shared_type(config: tonic_prost_build::Builder, name: &str) -> tonic_prost_build::Builder {
    config.extern_path(
        qualified(name),
        format!("crate::contribution::v1::{}", name),
    )
}

fn qualified(name: &str) -> String {
    format!("{CONTRIBUTION_PACKAGE}.{name}")
}

/// The package's messages that hold a `Struct`, directly or through another of its messages
/// (top-level messages only: the package nests none).
fn messages_holding_struct(messages: &[DescriptorProto]) -> HashSet<String> {
    let mut holding: HashSet<String> = [STRUCT.to_owned()].into();
    loop {
        let before = holding.len();
        for message in messages {
            if message
                .field
                .iter()
                .any(|f| holding.contains(f.type_name()))
            {
                holding.insert(qualified(message.name()));
            }
        }
        if holding.len() == before {
            return holding;
        }
    }
}
