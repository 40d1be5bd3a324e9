//! Real `drover agent` processes on loopback: leader loss, restart after
//! kill -9, catch-up by snapshot install, and runtime membership changes.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{all_job_ids, submit, wait_for, Cluster, RaftSettings};
use drover::proto::v1 as pb;

const ELECTION: Duration = Duration::from_secs(20);
const CATCH_UP: Duration = Duration::from_secs(60);

/// Submits `n` jobs through node `via` (retrying on transient UNAVAILABLE
/// during elections) and returns the acknowledged ids.
async fn submit_many(cluster: &Cluster, via: usize, n: usize, tag: &str) -> Vec<String> {
    let client = wait_for("a client connection", ELECTION, || cluster.client(via)).await;
    let mut acked = Vec::new();
    for k in 0..n {
        let id = wait_for("an acknowledged submission", ELECTION, || {
            let mut client = client.clone();
            let cmd = format!("echo {tag}-{k}");
            async move { submit(&mut client, &cmd).await.ok() }
        })
        .await;
        acked.push(id);
    }
    acked
}

/// Waits until node `i` has every id in `expected` in its local table.
async fn wait_has_all(cluster: &Cluster, i: usize, expected: &[String]) {
    let want: BTreeSet<String> = expected.iter().cloned().collect();
    let ok = tokio::time::timeout(CATCH_UP, async {
        loop {
            if let Some(mut client) = cluster.client(i).await {
                if let Ok(ids) = all_job_ids(&mut client).await {
                    let have: BTreeSet<String> = ids.into_iter().collect();
                    if want.is_subset(&have) {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "node {} is missing acknowledged jobs; log tail:\n{}",
        i + 1,
        cluster.log_tail(i)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_killed_new_leader_elected_and_no_acknowledged_job_lost() {
    let mut cluster = Cluster::start(3, RaftSettings::default());
    let leader = cluster.wait_leader(ELECTION).await;
    let follower = (leader + 1) % 3;

    // Through a follower: exercises forwarding to the leader.
    let mut acked = submit_many(&cluster, follower, 40, "before").await;

    cluster.kill(leader);
    let new_leader = cluster.wait_leader(ELECTION).await;
    assert_ne!(new_leader, leader, "a killed node cannot lead");
    let status = cluster
        .status(new_leader)
        .await
        .expect("status of the new leader");
    assert!(status.term > 0);

    acked.extend(submit_many(&cluster, new_leader, 20, "after").await);

    // Every node, the killed one restarted, has every acknowledged job.
    cluster.restart(leader);
    for i in 0..3 {
        wait_has_all(&cluster, i, &acked).await;
    }

    // Then kill -9 and restart every node at once: still nothing lost.
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_leader(ELECTION).await;
    for i in 0..3 {
        wait_has_all(&cluster, i, &acked).await;
        let mut client = cluster.client(i).await.expect("client");
        let ids = all_job_ids(&mut client).await.expect("list");
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "no job listed twice on node {}",
            i + 1
        );
    }
}

/// Writers keep submitting through every node while the leader is killed
/// with SIGKILL mid-stream: every submission that was acknowledged, even one
/// acknowledged a moment before the kill, is on every node afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn writes_in_flight_when_the_leader_dies_are_never_lost_once_acknowledged() {
    let mut cluster = Cluster::start(3, RaftSettings::default());
    let leader = cluster.wait_leader(ELECTION).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6 {
        let Some(mut client) = cluster.client(w % 3).await else {
            panic!("cannot connect to node {}", w % 3 + 1);
        };
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut k = 0u32;
            // Bounded: at most 2,000 attempts per writer.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && k < 2000 {
                k += 1;
                if let Ok(id) = submit(&mut client, &format!("echo w{w}-{k}")).await {
                    acked.push(id);
                }
            }
            acked
        }));
    }
    // Let writes flow, then kill the leader in the middle of them.
    wait_for("some acknowledged writes", ELECTION, || async {
        let mut client = cluster.client(leader).await?;
        let ids = all_job_ids(&mut client).await.ok()?;
        (ids.len() >= 50).then_some(())
    })
    .await;
    cluster.kill(leader);
    cluster.wait_leader(ELECTION).await;
    // Keep writing under the new leader for a moment (until more commit).
    let survivor = (leader + 1) % 3;
    let mut client = cluster
        .client(survivor)
        .await
        .expect("client of a surviving node");
    let before = all_job_ids(&mut client).await.map(|v| v.len()).unwrap_or(0);
    wait_for("writes under the new leader", ELECTION, || async {
        let mut client = cluster.client(survivor).await?;
        let n = all_job_ids(&mut client).await.ok()?.len();
        (n >= before + 20).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.expect("writer task"));
    }
    assert!(
        acked.len() >= 70,
        "writers got acknowledgements: {}",
        acked.len()
    );
    cluster.restart(leader);
    for i in 0..3 {
        wait_has_all(&cluster, i, &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stopped_node_catches_up_by_snapshot_install() {
    let settings = RaftSettings {
        snapshot_threshold: 50,
        trailing_entries: 5,
        ..RaftSettings::default()
    };
    let mut cluster = Cluster::start(3, settings);
    let leader = cluster.wait_leader(ELECTION).await;
    let lagging = (leader + 2) % 3;
    let mut acked = submit_many(&cluster, leader, 5, "early").await;
    wait_has_all(&cluster, lagging, &acked).await;

    cluster.kill(lagging);
    let leader = cluster.wait_leader(ELECTION).await;
    acked.extend(submit_many(&cluster, leader, 160, "while-down").await);
    let status = cluster.status(leader).await.expect("leader status");
    assert!(
        status.snapshot_index > 50,
        "the leader compacted its log: {status:?}"
    );

    cluster.restart(lagging);
    wait_has_all(&cluster, lagging, &acked).await;
    let status = wait_for("the restarted node's status", ELECTION, || {
        cluster.status(lagging)
    })
    .await;
    assert!(
        status.snapshots_installed >= 1,
        "the restarted node caught up by installing a snapshot: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn learner_joins_is_promoted_and_a_node_is_removed() {
    let mut cluster = Cluster::start(3, RaftSettings::default());
    let leader = cluster.wait_leader(ELECTION).await;
    let acked = submit_many(&cluster, leader, 20, "base").await;

    let joiner = cluster.start_joiner();
    let spec = cluster.nodes[joiner].clone();
    let out = cluster.cli(&[
        "operator",
        "raft",
        "add-peer",
        "--id",
        &spec.id.to_string(),
        "--raft-addr",
        &spec.raft,
        "--api-addr",
        &spec.api,
        "--output",
        "json",
    ]);
    assert!(
        out.status.success(),
        "add-peer failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.log_tail(joiner)
    );
    let members: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("add-peer prints JSON");
    let joined = members["members"]
        .as_array()
        .expect("members array")
        .iter()
        .find(|m| m["id"] == spec.id)
        .expect("the new node is listed");
    assert_eq!(joined["suffrage"], "voter", "promoted after catching up");
    wait_has_all(&cluster, joiner, &acked).await;

    // Remove a follower that is not the joiner.
    let leader = cluster.wait_leader(ELECTION).await;
    let victim = (0..3).find(|i| *i != leader).expect("a follower");
    let victim_id = cluster.nodes[victim].id;
    let out = cluster.cli(&[
        "operator",
        "raft",
        "remove-peer",
        "--id",
        &victim_id.to_string(),
    ]);
    assert!(
        out.status.success(),
        "remove-peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.kill(victim);

    let out = cluster.cli(&["operator", "raft", "list-peers", "--output", "json"]);
    assert!(
        out.status.success(),
        "list-peers failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("list-peers prints JSON");
    let ids: BTreeSet<u64> = status["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["id"].as_u64())
        .collect();
    assert!(
        !ids.contains(&victim_id),
        "removed node still listed: {ids:?}"
    );
    assert!(ids.contains(&spec.id));
    assert_eq!(ids.len(), 3);

    // The cluster still commits with the new membership.
    let leader = cluster.wait_leader(ELECTION).await;
    let more = submit_many(&cluster, leader, 5, "after-remove").await;
    wait_has_all(&cluster, joiner, &more).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_typed_errors() {
    let cluster = Cluster::start(1, RaftSettings::default());
    cluster.wait_leader(ELECTION).await;
    let mut client = cluster.client(0).await.expect("client");
    let empty = pb::JobSpec {
        command: String::new(),
        ..Default::default()
    };
    let err = client
        .submit_job(pb::SubmitJobRequest { spec: Some(empty) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let huge = pb::JobSpec {
        command: "x".repeat(100_000),
        ..Default::default()
    };
    let err = client
        .submit_job(pb::SubmitJobRequest { spec: Some(huge) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = client
        .get_job(pb::GetJobRequest {
            id: "nope".into(),
            consistent: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV".to_string();
    let err = client
        .get_job(pb::GetJobRequest {
            id: unknown,
            consistent: true,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = client
        .list_jobs(pb::ListJobsRequest {
            page_size: 5000,
            page_token: String::new(),
            consistent: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // The same bad specs the REST test refuses, over gRPC: each gets
    // INVALID_ARGUMENT and writes nothing to the log.
    let before = cluster.status(0).await.expect("status").last_log_index;
    let base = || pb::JobSpec {
        command: "true".into(),
        ..Default::default()
    };
    let bad_specs = [
        (
            "1 MiB command",
            pb::JobSpec {
                command: "x".repeat(1 << 20),
                ..base()
            },
        ),
        (
            "both command and args",
            pb::JobSpec {
                args: vec!["ls".into()],
                ..base()
            },
        ),
        (
            "invalid image reference",
            pb::JobSpec {
                image: "Bad Image!".into(),
                ..base()
            },
        ),
        (
            "image outside the reference grammar",
            pb::JobSpec {
                image: "UPPER::bad@@".into(),
                ..base()
            },
        ),
        (
            "image digest of the wrong length",
            pb::JobSpec {
                image: "busybox@sha256:zz".into(),
                ..base()
            },
        ),
        (
            "NUL in a constraint key",
            pb::JobSpec {
                constraints: [("zo\0ne".to_string(), "a".to_string())].into(),
                ..base()
            },
        ),
        (
            "user given by name",
            pb::JobSpec {
                user: "root".into(),
                ..base()
            },
        ),
        (
            "a user the policy does not list",
            pb::JobSpec {
                user: "0".into(),
                ..base()
            },
        ),
        (
            "NUL in a label value",
            pb::JobSpec {
                labels: [("team".to_string(), "a\0".to_string())].into(),
                ..base()
            },
        ),
        (
            "memory below Docker's minimum",
            pb::JobSpec {
                resources: Some(pb::Resources {
                    memory_mib: 1,
                    ..Default::default()
                }),
                ..base()
            },
        ),
        (
            "absurd cpu",
            pb::JobSpec {
                resources: Some(pb::Resources {
                    cpu_millis: u32::MAX,
                    ..Default::default()
                }),
                ..base()
            },
        ),
        (
            "priority out of range",
            pb::JobSpec {
                priority: -5000,
                ..base()
            },
        ),
        (
            "reserved env name",
            pb::JobSpec {
                env: vec![pb::EnvVar {
                    name: "DROVER_ATTEMPT".into(),
                    value: "9".into(),
                }],
                ..base()
            },
        ),
        (
            "timeout over 30 days",
            pb::JobSpec {
                timeout_ms: u64::MAX,
                ..base()
            },
        ),
        (
            "zero-length idempotency key is fine, a huge one is not",
            pb::JobSpec {
                idempotency_key: "k".repeat(10_000),
                ..base()
            },
        ),
    ];
    for (what, spec) in bad_specs {
        let err = client
            .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err:?}");
    }
    // Other refused calls: (what, the code expected, the answer).
    let refused = vec![
        (
            "bad page token",
            tonic::Code::InvalidArgument,
            client
                .list_jobs(pb::ListJobsRequest {
                    page_token: "not-a-token".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "bad state filter",
            tonic::Code::InvalidArgument,
            client
                .list_jobs(pb::ListJobsRequest {
                    states: vec!["DONE".into()],
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "stop of an unknown job",
            tonic::Code::NotFound,
            client
                .stop_job(pb::StopJobRequest {
                    id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
                })
                .await
                .map(drop),
        ),
        (
            "drain of an unknown node",
            tonic::Code::NotFound,
            client
                .drain_node(pb::DrainNodeRequest {
                    id: 99,
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
    ];
    for (what, code, answer) in refused {
        let err = answer.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err:?}");
    }
    // Nothing was written by the refused requests.
    let ids = all_job_ids(&mut client).await.expect("list");
    assert!(ids.is_empty(), "refused submissions wrote jobs: {ids:?}");
    let after = cluster.status(0).await.expect("status").last_log_index;
    assert_eq!(after, before, "refused requests wrote to the log");

    // The CLI: clear message and exit code 1 for a refused request, 3 when
    // nothing is reachable.
    let out = cluster.cli(&["job", "status", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job with id"));
    let out = std::process::Command::new(common::drover_bin())
        .args(["job", "status", "--address", "http://127.0.0.1:1"])
        .output()
        .expect("run cli");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_submit_and_status_round_trip() {
    let cluster = Cluster::start(1, RaftSettings::default());
    cluster.wait_leader(ELECTION).await;
    let out = cluster.cli(&["job", "submit", "--output", "json", "--", "echo", "hello"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let id = job["id"].as_str().expect("id").to_string();
    assert_eq!(job["args"], serde_json::json!(["echo", "hello"]));
    let out = cluster.cli(&["job", "status", &id, "--output", "json", "--consistent"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(read["id"], id.as_str());
    assert_eq!(read["state"], "QUEUED");
}

/// A data dir is never silently reused by another cluster or node id.
#[tokio::test(flavor = "multi_thread")]
async fn data_dir_of_another_cluster_or_node_is_refused() {
    let mut cluster = Cluster::start(1, RaftSettings::default());
    cluster.wait_leader(ELECTION).await;
    cluster.kill(0);
    let spec = cluster.nodes[0].clone();
    let original = std::fs::read_to_string(&spec.config_path).expect("config");
    for (change, expect) in [
        (
            original.replace(&cluster.cluster_id, "another-cluster"),
            "cluster",
        ),
        (
            original
                .replace("node_id = 1", "node_id = 7")
                .replace("id = 1\n", "id = 7\n"),
            "node",
        ),
    ] {
        let path = cluster.dir.path().join("changed.toml");
        std::fs::write(&path, change).expect("write config");
        let out = std::process::Command::new(common::drover_bin())
            .args(["agent", "--config"])
            .arg(&path)
            .output()
            .expect("run agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "agent must refuse the data dir");
        assert!(
            stderr.to_lowercase().contains(expect),
            "message names the {expect}: {stderr}"
        );
    }
    // The original config still starts and has its data.
    cluster.restart(0);
    cluster.wait_leader(ELECTION).await;
}

/// Leadership moves on request, and a consistent read on any node sees every
/// write acknowledged before it, at once (ReadIndex), while a plain read is
/// local.
#[tokio::test(flavor = "multi_thread")]
async fn transfer_leader_and_consistent_reads_on_followers() {
    let cluster = Cluster::start(3, RaftSettings::default());
    let leader = cluster.wait_leader(ELECTION).await;
    let target = (leader + 1) % 3;
    let target_id = cluster.nodes[target].id.to_string();
    let out = cluster.cli(&["operator", "raft", "transfer-leader", "--to", &target_id]);
    assert!(
        out.status.success(),
        "transfer-leader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The old leader answered once it saw the target lead; the target's own
    // status follows within a loop turn.
    wait_for("the target to report itself leader", ELECTION, || async {
        let status = cluster.status(target).await?;
        (status.role == "leader").then_some(())
    })
    .await;

    // Write through one follower, read consistently through the other, with
    // no waiting in between: the read must see the write.
    let followers: Vec<usize> = (0..3).filter(|i| *i != target).collect();
    let mut writer = cluster.client(followers[0]).await.expect("client");
    let mut reader = cluster.client(followers[1]).await.expect("client");
    for k in 0..20 {
        let id = submit(&mut writer, &format!("echo read-{k}"))
            .await
            .expect("submit");
        let job = reader
            .get_job(pb::GetJobRequest {
                id: id.clone(),
                consistent: true,
            })
            .await
            .unwrap_or_else(|e| panic!("consistent read of {id} right after its ack: {e:?}"));
        assert_eq!(job.into_inner().job.map(|j| j.id), Some(id));
    }
}

/// grpcurl and other tools discover the API by server reflection, without
/// the proto file.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_answers_server_reflection() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let cluster = Cluster::start(1, RaftSettings::default());
    cluster.wait_leader(ELECTION).await;
    let channel = tonic::transport::Endpoint::from_shared(cluster.api_url(0))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    let reply = replies.message().await.expect("reply").expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"drover.v1.Drover".to_string()), "{names:?}");
    // The peer protocol is not advertised to clients.
    assert!(
        !names.iter().any(|n| n.starts_with("drover.raft")),
        "{names:?}"
    );
}

#[test]
fn the_cli_prints_shell_completions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(common::drover_bin())
            .args(["completions", shell])
            .output()
            .expect("run drover");
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("drover") && text.contains("transfer-leader"),
            "{shell}"
        );
    }
    let out = std::process::Command::new(common::drover_bin())
        .args(["completions", "tcsh"])
        .output()
        .expect("run drover");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}
