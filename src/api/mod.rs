//! Front ends. Every operation lives in one place, the gRPC service
//! (`grpc`), and is reached the same way from every protocol: the REST API
//! (`http`) converts JSON to the same request messages and calls the same
//! service methods in process. `json` holds the JSON shapes the REST API and
//! the CLI share.

pub mod accept;
pub mod auth;
mod caps;
mod convert;
pub mod grpc;
pub mod http;
pub mod json;
mod local_socket;
pub mod rate;
mod server;
mod watch;

pub use server::serve;
