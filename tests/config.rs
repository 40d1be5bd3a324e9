//! `drover agent --config FILE --check` as an operator uses it before a
//! deploy: the effective configuration (file, then DROVER_* variables, then
//! flags) printed without starting anything, and clear errors that name the
//! file or variable and the key.

mod common;

use std::process::{Command, Output};

use common::drover_bin;

const ANNOTATED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/drover.toml");

fn check(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(drover_bin());
    command.args(["agent"]).args(args).arg("--check");
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("DROVER_")) {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().expect("run drover agent --check")
}

#[test]
fn check_prints_the_effective_config_with_overrides_in_order() {
    let out = check(
        &["--config", ANNOTATED, "--data-dir", "/srv/drover"],
        &[
            ("DROVER_NODE_ID", "2"),
            ("DROVER_DATA_DIR", "/from/env"),
            ("DROVER_RAFT_SNAPSHOT_THRESHOLD", "20000"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective: toml::Table =
        toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("the output is TOML");
    assert_eq!(effective["node_id"].as_integer(), Some(2), "env over file");
    assert_eq!(
        effective["data_dir"].as_str(),
        Some("/srv/drover"),
        "flag over env"
    );
    assert_eq!(
        effective["raft"]["snapshot_threshold"].as_integer(),
        Some(20000)
    );
    assert_eq!(
        effective["cluster_id"].as_str(),
        Some("prod"),
        "from the file"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("config OK"));
}

#[test]
fn check_names_the_file_or_variable_and_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(ANNOTATED).expect("read annotated config");
    let cases = [
        (
            text.replace("retain_max = 10000", "retain_maxx = 10000"),
            "retain_maxx",
        ),
        (
            text.replace("stop_grace = \"10s\"", "stop_grace = \"soon\""),
            "stop_grace",
        ),
        (
            text.replace("heartbeat_ticks = 1", "heartbeat_ticks = 20"),
            "raft.heartbeat_ticks",
        ),
    ];
    for (n, (bad, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{n}.toml"));
        std::fs::write(&path, bad).expect("write");
        let path_text = path.display().to_string();
        let out = check(&["--config", &path_text], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(&path_text), "names the file: {stderr}");
        assert!(stderr.contains(key), "names the key {key}: {stderr}");
    }
    let out = check(
        &["--config", ANNOTATED],
        &[("DROVER_SCHEDULER_NODE_DOWN_AFTER", "eventually")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("DROVER_SCHEDULER_NODE_DOWN_AFTER"),
        "{stderr}"
    );
    assert!(stderr.contains("node_down_after"), "{stderr}");
}
