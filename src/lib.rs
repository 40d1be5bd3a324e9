//! Drover: a durable distributed job scheduler for shell commands.

pub mod jobs;
pub mod raft;
pub mod store;

/// Generated gRPC code.
pub mod proto {
    /// The client API (`drover.v1`).
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("drover.v1");
    }
    /// The peer protocol (`drover.raft.v1`).
    pub mod raft {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("drover.raft.v1");
    }
}
