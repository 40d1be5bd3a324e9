//! Membership operations an operator runs for years: removing a dead node
//! from a 3-node cluster, replacing a node's disk (rejoining with an empty
//! data dir under the same id is refused with the steps; following them
//! works, with `drover node join`).

mod common;

use std::time::Duration;

use common::{wait_for, Cluster, Proc, RaftSettings};
use drover::proto::v1 as pb;

const ELECTION: Duration = Duration::from_secs(20);

async fn submit(cluster: &Cluster, node: usize) -> String {
    wait_for("a submission", ELECTION, || async {
        let mut client = cluster.client(node).await?;
        common::submit(&mut client, "true").await.ok()
    })
    .await
}

async fn voters(cluster: &Cluster, node: usize) -> Vec<u64> {
    let status = cluster.status(node).await.expect("status");
    status
        .members
        .iter()
        .filter(|m| m.suffrage == "voter")
        .map(|m| m.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_node_removed_and_a_replaced_disk_rejoins_only_the_right_way() {
    let mut cluster = Cluster::start(4, RaftSettings::default());
    let leader = cluster.wait_leader(ELECTION).await;
    submit(&cluster, leader).await;

    // A dead node (not the leader) is removed; the cluster goes on.
    let dead = (leader + 1) % 4;
    let dead_id = cluster.nodes[dead].id.to_string();
    cluster.kill(dead);
    let out = cluster.cli(&["operator", "raft", "remove-peer", "--id", &dead_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let leader = cluster.wait_leader(ELECTION).await;
    assert_eq!(voters(&cluster, leader).await.len(), 3);
    submit(&cluster, leader).await;

    // Another node's disk is replaced: it comes back empty under its id,
    // with its original config. Its peers refuse it and it stops, saying
    // what to do; the cluster is unaffected.
    let replaced = (0..4)
        .find(|&i| i != leader && i != dead)
        .expect("a follower");
    let replaced_id = cluster.nodes[replaced].id;
    cluster.kill(replaced);
    std::fs::remove_dir_all(&cluster.nodes[replaced].data_dir).expect("wipe");
    cluster.restart(replaced);
    let exit = wait_for("the replaced node to stop", ELECTION, || {
        let status = cluster.children[replaced].as_mut().and_then(Proc::try_wait);
        async move { status }
    })
    .await;
    assert!(!exit.success());
    let log = std::fs::read_to_string(&cluster.nodes[replaced].log_path).unwrap_or_default();
    assert!(log.contains("lost its data"), "{log}");
    assert!(log.contains("remove-peer"), "the way out is named: {log}");
    cluster.children[replaced] = None;
    submit(&cluster, leader).await;

    // Re-adding it without removing it first is refused too.
    let spec = cluster.nodes[replaced].clone();
    let id_text = replaced_id.to_string();
    let out = cluster.cli(&[
        "operator",
        "raft",
        "add-peer",
        "--id",
        &id_text,
        "--raft-addr",
        &spec.raft,
        "--api-addr",
        &spec.api,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("remove it first"));

    // The right way: remove it, start it empty without initial_members,
    // and join it from its own config with `drover node join`.
    let out = cluster.cli(&["operator", "raft", "remove-peer", "--id", &id_text]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&spec.data_dir).expect("wipe again");
    cluster.make_joiner(replaced);
    cluster.restart(replaced);
    let config = spec.config_path.display().to_string();
    let leader_addr = cluster.api_url(leader);
    let out = cluster.cli(&["node", "join", &leader_addr, "--config", &config]);
    assert!(
        out.status.success(),
        "node join: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let leader = cluster.wait_leader(ELECTION).await;
    let mut members = voters(&cluster, leader).await;
    members.sort();
    assert!(members.contains(&replaced_id), "{members:?}");
    assert_eq!(members.len(), 3);
    // It serves the table again, caught up.
    let id = submit(&cluster, leader).await;
    wait_for(
        "the rejoined node to have the new job",
        ELECTION,
        || async {
            let mut client = cluster.client(replaced).await?;
            client
                .get_job(pb::GetJobRequest {
                    id: id.clone(),
                    consistent: false,
                })
                .await
                .ok()
        },
    )
    .await;
}
