//! Compiles proto/ with protox (pure Rust) so no system `protoc` is needed,
//! and writes the client API's descriptor set for gRPC server reflection
//! (so `grpcurl` works against a node without the proto file).
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["proto/drover.proto", "proto/raft.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    let client_api = protox::compile(["proto/drover.proto"], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("drover_v1_descriptor.bin"),
        client_api.encode_to_vec(),
    )?;
    Ok(())
}
