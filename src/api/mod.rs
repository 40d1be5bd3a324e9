//! Front ends. Every operation lives in one place and is reached the same way
//! from every protocol; for now that is the gRPC service.

mod convert;
pub mod grpc;
mod server;

pub use server::serve;
