//! Compiles proto/ with protox (pure Rust) so no system `protoc` is needed,
//! and writes the client API's descriptor set for gRPC server reflection
//! (so `grpcurl` works against a node without the proto file). Also
//! records the commit built, for `drover --version`.
use prost::Message;

/// The commit of the checkout being built ("unknown" outside a git
/// checkout), and the files whose change means a new commit.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    // Watched only where they exist: a missing path would rerun this
    // script (and rebuild the crate) on every build.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = std::path::PathBuf::from(dir);
        let mut watched = vec![dir.join("HEAD"), dir.join("packed-refs")];
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(dir.join(head));
        }
        for path in watched.into_iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rustc-env=DROVER_COMMIT={}", commit());
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
