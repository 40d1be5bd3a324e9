//! Quotas through real `drover agent` processes: an owner at its queue
//! quota is refused (gRPC RESOURCE_EXHAUSTED, REST 429) while another owner
//! still submits; an owner at its active quota waits while its first job
//! runs; an owner at its output quota is refused until its jobs are
//! collected; the cap on the whole replicated state is reached with a clear
//! error, and a node that lost its data still catches up at it.

mod common;

use std::time::Duration;

use common::{submit, submit_job, wait_for, Cluster, RaftSettings};
use drover::proto::v1 as pb;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tonic::Code;

const ELECTION: Duration = Duration::from_secs(20);
const JOB_DONE: Duration = Duration::from_secs(60);

fn with_acl(extra: &str) -> RaftSettings {
    RaftSettings {
        acl: true,
        extra_config: extra.to_string(),
        ..RaftSettings::default()
    }
}

async fn state_of(client: &mut common::Client, id: &str) -> Option<String> {
    common::get_job(client, id).await.map(|job| job.state)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_at_its_queue_quota_is_refused_while_another_owner_still_submits() {
    let mut cluster = Cluster::start(1, with_acl("\n[quotas]\nmax_queued_per_owner = 3\n"));
    cluster.bootstrap_over_socket(ELECTION).await;
    let (_, alice) = cluster.create_token("alice", "submitter");
    let (_, bob) = cluster.create_token("bob", "submitter");
    let mut as_alice = cluster.client_with(0, Some(&alice)).await.expect("client");
    let mut as_bob = cluster.client_with(0, Some(&bob)).await.expect("client");

    // The executor is off: every job stays QUEUED.
    let mut hers = Vec::new();
    for i in 0..3 {
        let job = submit_job(&mut as_alice, &format!("echo {i}"))
            .await
            .expect("within the quota");
        hers.push(job.id);
    }
    let refused = submit_job(&mut as_alice, "echo 4")
        .await
        .expect_err("a fourth queued job");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("quotas.max_queued_per_owner"),
        "the key is named: {refused:?}"
    );

    // Over REST too: 429 problem+json with a retry hint.
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/v1/jobs", cluster.http_url(0)))
        .bearer_auth(&alice)
        .json(&json!({"command": "echo rest"}))
        .send()
        .await
        .expect("POST /v1/jobs");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("problem");
    assert_eq!(
        body["type"], "https://drover.dev/problems/resource-exhausted",
        "{body}"
    );

    // Bob is not affected.
    submit(&mut as_bob, "echo bob")
        .await
        .expect("another owner submits");

    // Nothing of Alice's refused submits was written.
    let mut admin = cluster.client(0).await.expect("admin client");
    let all = common::all_jobs(&mut admin, false).await.expect("list");
    assert_eq!(all.len(), 4, "three of Alice's and Bob's one");

    // The admin's token runs the cluster: the per-owner quotas bind tenants.
    for i in 0..5 {
        submit(&mut admin, &format!("echo backfill {i}"))
            .await
            .expect("an admin is not held to a submitter's quota");
    }

    // Stopping one of hers frees a place in her quota.
    as_alice
        .stop_job(pb::StopJobRequest {
            id: hers[0].clone(),
        })
        .await
        .expect("stop");
    submit(&mut as_alice, "echo again")
        .await
        .expect("a place came free");
}

#[tokio::test(flavor = "multi_thread")]
async fn active_and_output_quotas_hold_an_owner_back_on_real_containers() {
    let settings =
        with_acl("\n[quotas]\nmax_active_per_owner = 1\nmax_output_bytes_per_owner = 100\n");
    let Some(mut cluster) = Cluster::start_running_jobs(1, settings) else {
        return;
    };
    cluster.bootstrap_over_socket(ELECTION).await;
    let (_, alice) = cluster.create_token("alice", "submitter");
    let (_, bob) = cluster.create_token("bob", "submitter");
    let mut as_alice = cluster.client_with(0, Some(&alice)).await.expect("client");
    let mut as_bob = cluster.client_with(0, Some(&bob)).await.expect("client");

    // Two jobs of Alice's: the second waits in the queue while the first
    // runs, although the node has room for both.
    let first = submit(&mut as_alice, "sleep 3; echo first")
        .await
        .expect("first");
    let second = submit(&mut as_alice, "echo second").await.expect("second");
    wait_for("Alice's first job to run", JOB_DONE, || async {
        let mut c = as_alice.clone();
        (state_of(&mut c, &first).await == Some("RUNNING".to_string())).then_some(())
    })
    .await;
    assert_eq!(
        state_of(&mut as_alice, &second).await,
        Some("QUEUED".to_string()),
        "held by quotas.max_active_per_owner"
    );
    // Bob's job is placed beside Alice's running one.
    let his = submit(&mut as_bob, "echo bob").await.expect("bob");
    wait_for("Bob's job to finish", JOB_DONE, || async {
        let mut c = as_bob.clone();
        (state_of(&mut c, &his).await == Some("SUCCEEDED".to_string())).then_some(())
    })
    .await;
    for id in [&first, &second] {
        wait_for("Alice's jobs to finish in turn", JOB_DONE, || async {
            let mut c = as_alice.clone();
            (state_of(&mut c, id).await == Some("SUCCEEDED".to_string())).then_some(())
        })
        .await;
    }

    // 200 bytes of output (and a newline): over her 100-byte output
    // quota, so her next submit is refused, and Bob's is not.
    let loud = submit(&mut as_alice, "head -c 200 /dev/zero | tr '\\0' x; echo")
        .await
        .expect("loud job");
    wait_for("the loud job to finish", JOB_DONE, || async {
        let mut c = as_alice.clone();
        (state_of(&mut c, &loud).await == Some("SUCCEEDED".to_string())).then_some(())
    })
    .await;
    let refused = submit(&mut as_alice, "true")
        .await
        .expect_err("over the output quota");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("quotas.max_output_bytes_per_owner"),
        "{refused:?}"
    );
    submit(&mut as_bob, "true")
        .await
        .expect("bob still submits");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_state_cap_is_reached_with_a_clear_error_and_a_wiped_node_still_catches_up() {
    // 2 MiB of state at most; a snapshot every 20 entries so the log a
    // rejoining node needs is gone and it must install one.
    let settings = RaftSettings {
        snapshot_threshold: 20,
        trailing_entries: 5,
        extra_config: "\n[quotas]\nmax_state_bytes = 2097152\n".into(),
        ..RaftSettings::default()
    };
    let mut cluster = Cluster::start(3, settings);
    let leader = cluster.wait_leader(ELECTION).await;
    let mut client = cluster.client(leader).await.expect("client");
    // 15 KiB commands: about 140 jobs fill the cap.
    let big = format!("echo {}", "x".repeat(15 * 1024));
    let mut accepted = 0;
    let refused = loop {
        match submit(&mut client, &big).await {
            Ok(_) => accepted += 1,
            Err(status) => break status,
        }
        assert!(accepted < 1000, "the cap was never reached");
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("quotas.max_state_bytes"),
        "{refused:?}"
    );
    assert!(accepted > 100, "only {accepted} jobs before the cap");
    // Small jobs may still fit the rest, then they are refused too: the
    // cap holds for every job.
    let mut small = 0;
    let refused = loop {
        match submit(&mut client, "true").await {
            Ok(_) => small += 1,
            Err(status) => break status,
        }
        assert!(small < 1000, "small jobs were never refused");
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    accepted += small;
    let status = cluster.status(leader).await.expect("status");
    let counts = status.jobs.expect("job counts");
    assert_eq!(counts.total, accepted);
    assert!(counts.state_bytes <= counts.max_state_bytes, "{counts:?}");
    assert_eq!(counts.max_state_bytes, 2_097_152);

    // A follower loses its data: removed, wiped, joined again, it catches
    // up by snapshot install with the table at the cap.
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let id = cluster.nodes[follower].id.to_string();
    cluster.kill(follower);
    let out = cluster.cli(&["operator", "raft", "remove-peer", "--id", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&cluster.nodes[follower].data_dir).expect("wipe");
    cluster.make_joiner(follower);
    cluster.restart(follower);
    let config = cluster.nodes[follower].config_path.display().to_string();
    let out = cluster.cli(&[
        "node",
        "join",
        &cluster.api_url(leader),
        "--config",
        &config,
    ]);
    assert!(
        out.status.success(),
        "node join: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the wiped node to hold the whole table",
        ELECTION,
        || async {
            let counts = cluster.status(follower).await?.jobs?;
            (counts.total == accepted).then_some(())
        },
    )
    .await;
    let theirs = cluster.status(follower).await.and_then(|s| s.jobs);
    assert_eq!(
        theirs.map(|c| c.state_bytes),
        Some(counts.state_bytes),
        "the same table, byte for byte in its count"
    );
}
