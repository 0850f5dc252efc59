//! Generated Protobuf messages and gRPC stubs for Tributary's services.

pub mod codec;
pub mod json;

/// `tributary.contribution.v1`: connectors push records.
#[allow(clippy::all, missing_docs)]
pub mod contribution {
    pub mod v1 {
        tonic::include_proto!("tributary.contribution.v1");

        /// The Contribution server's side of the same wire: the requests that carry records
        /// decode `google.protobuf.Struct` straight into JSON ([`crate::json::JsonObject`]);
        /// every other message is this module's.
        pub mod json {
            include!(concat!(
                env!("OUT_DIR"),
                "/json/tributary.contribution.v1.rs"
            ));
        }
    }
}

/// `tributary.catalog.v1`: consumers read the visible catalog.
#[allow(clippy::all, missing_docs)]
pub mod catalog {
    pub mod v1 {
        tonic::include_proto!("tributary.catalog.v1");
    }
}

/// `tributary.admin.v1`: operators manage entity types, connectors and consumers.
#[allow(clippy::all, missing_docs)]
pub mod admin {
    pub mod v1 {
        tonic::include_proto!("tributary.admin.v1");
    }
}

/// `tributary.provider.v1`: external pull providers, called by Tributary's engine.
#[allow(clippy::all, missing_docs)]
pub mod provider {
    pub mod v1 {
        tonic::include_proto!("tributary.provider.v1");
    }
}

/// The encoded `FileDescriptorSet` of every Tributary proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tributary_descriptor");
