//! A full disk costs no acknowledged job: real nodes with their data dirs on
//! small loop-mounted ext4 filesystems, filled with a ballast file, driven
//! over REST and gRPC, killed with SIGKILL.
//!
//! - One node, round after round: fill the disk until the node refuses
//!   writes (507), free it, restart, submit 50 jobs, a second of quiet,
//!   `kill -9`, restart: every acknowledged job is there.
//! - Three nodes: a follower's disk fills (the other two keep committing;
//!   it catches up once space returns), then the leader's (it hands
//!   leadership to a peer with room; nothing acknowledged is lost).
//!
//! Needs root (mount); skipped otherwise unless DROVER_REQUIRE_FAULTS=1.

mod common;

use std::time::{Duration, Instant};

use common::small_fs::SmallFs;
use common::{wait_for, Cluster, RaftSettings};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Size of each node's filesystem.
const FS_MIB: u64 = 512;
/// The reserve the nodes keep (storage.min_free_bytes).
const RESERVE: u64 = 32 << 20;
/// What the ballast leaves above the reserve, for the submissions that
/// then fill the disk to it.
const HEADROOM: u64 = 3 << 20;
/// Padding of each filling job's command: large jobs fill faster.
const PAD: usize = 12 * 1024;
/// Jobs acknowledged after each restart, as in the scenario.
const JOBS_AFTER_RESTART: usize = 50;
/// Rounds of the single-node test; DROVER_FULL_DISK_ROUNDS overrides it
/// (benches/full-disk.sh runs 50).
const ROUNDS: usize = 10;
/// Bound of each wait.
const WAIT: Duration = Duration::from_secs(30);

fn settings(data_dirs: Vec<std::path::PathBuf>) -> RaftSettings {
    RaftSettings {
        data_dirs,
        extra_config: format!("\n[storage]\nmin_free_bytes = {RESERVE}\nmin_free_percent = 0\n"),
        // Snapshots too: they must also stay within the reserve.
        snapshot_threshold: 256,
        trailing_entries: 64,
        ..RaftSettings::default()
    }
}

fn rounds() -> usize {
    std::env::var("DROVER_FULL_DISK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS)
}

/// A REST client bound to one node.
struct Rest {
    http: reqwest::Client,
}

/// How one submission ended.
enum Submitted {
    Acked(String),
    /// 507: the disk is below its reserve; the problem document.
    Full(Value),
    /// Anything else (the node restarting, an election): status and body.
    Other(StatusCode, Value),
}

impl Rest {
    fn new() -> Rest {
        Rest {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("http client"),
        }
    }

    async fn submit(&self, base: &str, pad: usize) -> Submitted {
        let spec = json!({ "command": format!("true {}", "x".repeat(pad)) });
        let response = match self
            .http
            .post(format!("{base}/v1/jobs"))
            .json(&spec)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Submitted::Other(StatusCode::BAD_GATEWAY, json!(e.to_string())),
        };
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match status {
            StatusCode::OK | StatusCode::CREATED => Submitted::Acked(
                body["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("an acknowledged job has an id: {body}"))
                    .to_string(),
            ),
            StatusCode::INSUFFICIENT_STORAGE => Submitted::Full(body),
            other => Submitted::Other(other, body),
        }
    }

    /// Submits until the node answers 507 (the disk reached its reserve),
    /// recording every acknowledged job; returns the refusal.
    async fn fill(&self, base: &str, acked: &mut Vec<String>) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            match self.submit(base, PAD).await {
                Submitted::Acked(id) => acked.push(id),
                Submitted::Full(problem) => return problem,
                Submitted::Other(status, body) => {
                    panic!("while filling the disk: {status} {body}")
                }
            }
        }
        panic!("the node never refused a write while its disk filled");
    }

    /// Submits `n` jobs, each retried while the node is starting (503),
    /// recording the acknowledged ones.
    async fn submit_acked(&self, base: &str, n: usize, acked: &mut Vec<String>) {
        for i in 0..n {
            let deadline = Instant::now() + WAIT;
            loop {
                match self.submit(base, 64).await {
                    Submitted::Acked(id) => {
                        acked.push(id);
                        break;
                    }
                    Submitted::Other(status, _)
                        if Instant::now() < deadline
                            && (status == StatusCode::SERVICE_UNAVAILABLE
                                || status == StatusCode::BAD_GATEWAY) =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Submitted::Full(problem) => {
                        panic!("job {i}: refused for a full disk after space was freed: {problem}")
                    }
                    Submitted::Other(status, body) => panic!("job {i}: {status} {body}"),
                }
            }
        }
    }

    /// Every job in `acked` is readable from `base` (a 404 fails at once:
    /// an acknowledged job must never be reported missing; 503 is retried
    /// while the node catches up).
    async fn assert_all_present(&self, base: &str, acked: &[String], when: &str) {
        for (i, id) in acked.iter().enumerate() {
            let deadline = Instant::now() + WAIT;
            loop {
                let response = self.http.get(format!("{base}/v1/jobs/{id}")).send().await;
                match response.as_ref().map(|r| r.status()) {
                    Ok(StatusCode::OK) => break,
                    Ok(StatusCode::NOT_FOUND) => panic!(
                        "{when}: acknowledged job {id} ({} of {}) is missing",
                        i + 1,
                        acked.len()
                    ),
                    _ if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    other => panic!("{when}: job {id}: {other:?}"),
                }
            }
        }
    }

    async fn get(&self, url: &str) -> (StatusCode, Value) {
        match self.http.get(url).send().await {
            Ok(r) => {
                let status = r.status();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(e) => (StatusCode::BAD_GATEWAY, json!(e.to_string())),
        }
    }
}

/// The scenario after a restart: 50 acknowledged jobs, a second of
/// quiet, `kill -9`, restart; then every job acknowledged so far is there.
async fn write_then_kill_9(
    cluster: &mut Cluster,
    rest: &Rest,
    acked: &mut Vec<String>,
    round: usize,
) {
    let base = cluster.http_url(0);
    rest.submit_acked(&base, JOBS_AFTER_RESTART, acked).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill(0);
    cluster.restart(0);
    rest.assert_all_present(&base, acked, &format!("round {round}, after kill -9"))
        .await;
}

/// The refusal a full disk gets: 507, problem JSON naming the disk.
fn assert_full_disk_refusal(problem: &Value, fs: &SmallFs) {
    assert_eq!(problem["status"], 507, "{problem}");
    let kind = problem["type"].as_str().unwrap_or_default();
    assert!(kind.ends_with("insufficient-storage"), "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("is full") && detail.contains(&fs.path().display().to_string()),
        "the refusal names the full disk: {detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_refuses_writes_then_loses_nothing_across_kill_9() {
    let Some(fs) = SmallFs::create_or_skip(FS_MIB) else {
        return;
    };
    let mut cluster = Cluster::start(1, settings(vec![fs.path().join("node1")]));
    let base = cluster.http_url(0);
    let rest = Rest::new();
    let mut acked = Vec::new();
    let started = Instant::now();
    for round in 0..rounds() {
        // Fill: a ballast takes all but a little above the reserve, then
        // jobs take the rest until the node refuses them.
        cluster.wait_leader(WAIT).await;
        fs.fill_leaving(RESERVE + HEADROOM);
        let refusal = rest.fill(&base, &mut acked).await;
        assert_full_disk_refusal(&refusal, &fs);
        if round == 0 {
            // The state shows everywhere an operator looks.
            let (status, ready) = rest.get(&format!("{base}/v1/ready")).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
            assert!(
                ready["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("disk"),
                "{ready}"
            );
            let (_, view) = rest.get(&format!("{base}/v1/cluster?local=true")).await;
            assert_eq!(view["storage"]["state"], "low", "{view}");
            assert_eq!(view["storage"]["reserve_bytes"], RESERVE, "{view}");
            assert!(view["members"][0]["disk_low"] == true, "{view}");
            let text = rest
                .http
                .get(format!("{base}/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("metrics text");
            assert!(
                text.lines()
                    .any(|l| l.starts_with("drover_storage_low ") && !l.ends_with(" 0")),
                "drover_storage_low is set"
            );
            // gRPC says RESOURCE_EXHAUSTED, with the same message.
            let mut client = cluster.client(0).await.expect("gRPC client");
            let status = common::submit(&mut client, "true")
                .await
                .expect_err("a full disk refuses a gRPC submission too");
            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
            assert!(status.message().contains("is full"), "{status:?}");
            // Reads go on while writes are refused.
            rest.assert_all_present(&base, &acked, "while the disk is full")
                .await;
        }

        // Free: the node accepts writes again by itself.
        fs.free_ballast();
        wait_for(
            "writes accepted again after freeing space",
            WAIT,
            || async {
                match rest.submit(&base, 64).await {
                    Submitted::Acked(id) => Some(id),
                    _ => None,
                }
            },
        )
        .await;

        // Restart, 50 acknowledged jobs, a second of quiet, kill -9.
        cluster.kill(0);
        cluster.restart(0);
        write_then_kill_9(&mut cluster, &rest, &mut acked, round).await;
        eprintln!(
            "round {round}: {} jobs acknowledged and present, {} MiB free ({:?})",
            acked.len(),
            fs.available() >> 20,
            started.elapsed()
        );
    }
    assert!(
        cluster.log_tail(0).contains("disk space below the reserve"),
        "the node logged the full disk"
    );
}

/// The gRPC cluster status of node `i` (None while it is down).
async fn storage_state(cluster: &Cluster, i: usize) -> Option<String> {
    Some(cluster.status(i).await?.storage?.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_follower_drops_out_and_catches_up_and_a_full_leader_hands_over() {
    let disks: Vec<SmallFs> = match (0..3).map(|_| SmallFs::create_or_skip(256)).collect() {
        Some(disks) => disks,
        None => return,
    };
    let dirs = disks.iter().map(|d| d.path().join("data")).collect();
    let mut cluster = Cluster::start(3, settings(dirs));
    let rest = Rest::new();
    let mut acked = Vec::new();
    let leader = cluster.wait_leader(WAIT).await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    rest.submit_acked(&cluster.http_url(leader), 10, &mut acked)
        .await;

    // A follower's disk fills past half its reserve: it takes no more
    // replicated data and refuses new work; the other two keep committing.
    disks[follower].fill_leaving(RESERVE / 4);
    wait_for("the follower to see its disk exhausted", WAIT, || async {
        (storage_state(&cluster, follower).await.as_deref() == Some("exhausted")).then_some(())
    })
    .await;
    eprintln!("node {} (follower) exhausted its disk", follower + 1);
    let before = cluster
        .status(leader)
        .await
        .expect("leader status")
        .commit_index;
    rest.submit_acked(&cluster.http_url(leader), 100, &mut acked)
        .await;
    let leader_view = cluster.status(leader).await.expect("leader status");
    assert!(
        leader_view.commit_index >= before + 100,
        "the cluster kept committing"
    );
    let full_member = leader_view
        .members
        .iter()
        .find(|m| m.id == cluster.nodes[follower].id)
        .expect("the follower is a member");
    assert!(
        full_member.disk_low,
        "the leader sees the follower's full disk: {leader_view:?}"
    );
    match rest.submit(&cluster.http_url(follower), 64).await {
        Submitted::Full(problem) => assert_full_disk_refusal(&problem, &disks[follower]),
        Submitted::Acked(id) => panic!("a node with a full disk acknowledged job {id}"),
        Submitted::Other(status, body) => panic!("expected 507, got {status} {body}"),
    }
    let follower_view = cluster.status(follower).await.expect("follower status");
    assert!(
        follower_view.applied_index < leader_view.commit_index,
        "the full follower took no more entries ({} of {})",
        follower_view.applied_index,
        leader_view.commit_index
    );

    // Space returns: the follower catches up by itself.
    disks[follower].free_ballast();
    let target = cluster
        .status(leader)
        .await
        .expect("leader status")
        .commit_index;
    wait_for("the follower to catch up", WAIT, || async {
        let s = cluster.status(follower).await?;
        (s.applied_index >= target && s.storage?.state == "ok").then_some(())
    })
    .await;
    rest.assert_all_present(
        &cluster.http_url(follower),
        &acked,
        "on the follower after it caught up",
    )
    .await;
    eprintln!("node {} caught up with {} jobs", follower + 1, acked.len());

    // The leader's disk drops below its reserve: it hands leadership to a
    // peer with room, and the cluster goes on taking jobs there.
    disks[leader].fill_leaving(RESERVE * 3 / 4);
    let new_leader = wait_for("the full leader to hand over", WAIT, || async {
        let s = cluster.status(other).await?;
        let new = cluster.nodes.iter().position(|n| n.id == s.leader_id)?;
        (new != leader).then_some(new)
    })
    .await;
    assert!(
        cluster
            .log_tail(leader)
            .contains("handing leadership to node"),
        "the old leader said why it handed over"
    );
    eprintln!(
        "node {} handed leadership to node {}",
        leader + 1,
        new_leader + 1
    );
    rest.submit_acked(&cluster.http_url(new_leader), 50, &mut acked)
        .await;
    assert_eq!(
        storage_state(&cluster, leader).await.as_deref(),
        Some("low")
    );

    // Nothing acknowledged is lost: free the disk, kill -9 every node,
    // restart them, and read every job from every node.
    disks[leader].free_ballast();
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_leader(WAIT).await;
    eprintln!("every node restarted after kill -9");
    for i in 0..3 {
        rest.assert_all_present(
            &cluster.http_url(i),
            &acked,
            &format!("node {} after kill -9", i + 1),
        )
        .await;
    }
}

/// Rounds of the reserve-off test: each runs the store into real ENOSPC.
const ENOSPC_ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reserve_enospc_stops_the_node_with_its_cause_and_it_restarts_with_every_job() {
    let Some(fs) = SmallFs::create_or_skip(FS_MIB) else {
        return;
    };
    let mut settings = settings(vec![fs.path().join("node1")]);
    settings.extra_config = "\n[storage]\nmin_free_bytes = 0\nmin_free_percent = 0\n".into();
    let mut cluster = Cluster::start(1, settings);
    let base = cluster.http_url(0);
    let rest = Rest::new();
    let mut acked = Vec::new();
    for round in 0..ENOSPC_ROUNDS {
        cluster.wait_leader(WAIT).await;
        // Nothing guards the disk: jobs fill it until a write fails in the
        // store, which stops the node.
        fs.fill_leaving(2 << 20);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(
                Instant::now() < deadline,
                "round {round}: the disk never filled"
            );
            match rest.submit(&base, PAD).await {
                Submitted::Acked(id) => acked.push(id),
                Submitted::Full(problem) => panic!("no reserve, yet a 507: {problem}"),
                Submitted::Other(..) => break,
            }
        }
        let status = cluster
            .wait_exit(0, WAIT)
            .unwrap_or_else(|| panic!("round {round}: the node kept running on a full disk"));
        assert!(
            !status.success(),
            "a node stopped by a storage failure exits non-zero"
        );
        let log = cluster.log_tail(0);
        assert!(
            log.contains("node stopped:") && log.contains("the disk is full"),
            "the node named the cause when it stopped:\n{log}"
        );
        assert!(
            !log.contains("another process"),
            "nothing else holds the data dir:\n{log}"
        );

        // Space freed, restart: every acknowledged job is there, new ones
        // are acknowledged, and they survive kill -9 too.
        fs.free_ballast();
        cluster.restart(0);
        rest.assert_all_present(&base, &acked, &format!("round {round}, after the restart"))
            .await;
        write_then_kill_9(&mut cluster, &rest, &mut acked, round).await;
        eprintln!(
            "round {round}: {} jobs acknowledged and present",
            acked.len()
        );
    }
}
