//! Drover: a durable distributed job scheduler for shell commands.
//!
//! Module map (see docs/ARCHITECTURE.md): `raft` is the pure consensus core, `store` the
//! only code touching sled, `jobs` the job model and state machine commands,
//! `node` wires core, store and transport, `api` serves clients, `client` is
//! the CLI, `config` the node configuration, `executor` runs job attempts in
//! Docker containers.

pub mod acl;
pub mod api;
pub mod client;
pub mod config;
pub mod executor;
pub mod jobs;
pub mod node;
pub mod raft;
pub mod scheduler;
pub mod store;
pub mod tls;

/// Generated gRPC code.
pub mod proto {
    /// The client API (`drover.v1`).
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("drover.v1");

        /// The encoded descriptor set of `drover.proto`, served by gRPC
        /// reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            include_bytes!(concat!(env!("OUT_DIR"), "/drover_v1_descriptor.bin"));
    }
    /// The peer protocol (`drover.raft.v1`).
    pub mod raft {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("drover.raft.v1");
    }
}
