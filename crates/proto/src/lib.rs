//! Generated Protobuf messages and gRPC stubs for Tributary's services.

#![allow(clippy::all, missing_docs)]

pub mod codec;

/// `tributary.contribution.v1`: connectors push records.
pub mod contribution {
    pub mod v1 {
        tonic::include_proto!("tributary.contribution.v1");
    }
}

/// `tributary.catalog.v1`: consumers read the visible catalog.
pub mod catalog {
    pub mod v1 {
        tonic::include_proto!("tributary.catalog.v1");
    }
}

/// `tributary.admin.v1`: operators manage entity types, connectors and consumers.
pub mod admin {
    pub mod v1 {
        tonic::include_proto!("tributary.admin.v1");
    }
}

/// `tributary.provider.v1`: external pull providers, called by Tributary's engine.
pub mod provider {
    pub mod v1 {
        tonic::include_proto!("tributary.provider.v1");
    }
}

/// The encoded `FileDescriptorSet` of every Tributary proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tributary_descriptor");
