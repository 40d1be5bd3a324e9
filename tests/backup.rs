//! Backup and restore as an operator runs them, with the real CLI against a
//! real 3-node cluster (ACLs on): a backup of 20,000 jobs saved while
//! writes go on, inspected, refused when a byte is flipped, restored online
//! (every node ends with exactly the backup's jobs), and, after the whole
//! cluster's data is destroyed, restored offline into a new node that the
//! others join: every job and every token back.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{json_of, wait_for, Client, Cluster, RaftSettings};
use drover::proto::v1 as pb;

const ELECTION: Duration = Duration::from_secs(20);
const JOBS: usize = 20_000;

async fn submit(client: &mut Client, n: usize) -> pb::Job {
    common::submit_job(client, &format!("echo {n}"))
        .await
        .expect("submit")
}

/// Every job on node `i`, read linearizably: (id, creation index).
async fn all_jobs(cluster: &Cluster, i: usize) -> Vec<(String, u64)> {
    let mut client = cluster.client(i).await.expect("client");
    let jobs = common::all_jobs(&mut client, true).await.expect("list");
    jobs.into_iter().map(|j| (j.id, j.index)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn save_under_load_inspect_refuse_damage_restore_online_and_after_disaster() {
    let mut cluster = Cluster::start(
        3,
        RaftSettings {
            acl: true,
            ..RaftSettings::default()
        },
    );
    let admin = cluster.bootstrap_over_socket(ELECTION).await;
    let leader = cluster.wait_leader(ELECTION).await;
    let f = (leader + 1) % 3;
    let viewer = json_of(
        &cluster.cli(&[
            "acl", "token", "create", "--name", "dash", "--role", "viewer", "--output", "json",
        ]),
        "token create",
    )["secret"]
        .as_str()
        .expect("secret")
        .to_string();

    // 20,000 jobs (the executor is off: they stay queued).
    let mut tasks = Vec::new();
    for w in 0..32 {
        let mut client = cluster.client(leader).await.expect("client");
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (w..JOBS).step_by(32) {
                ids.push(submit(&mut client, n).await.id);
            }
            ids
        }));
    }
    let mut before_save = BTreeSet::new();
    for t in tasks {
        before_save.extend(t.await.expect("submitter"));
    }
    assert_eq!(before_save.len(), JOBS);

    // Save through a follower while a writer keeps submitting.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut client = cluster.client(f).await.expect("client");
        tokio::spawn(async move {
            let mut n = JOBS;
            while !stop.load(Ordering::Relaxed) {
                submit(&mut client, n).await;
                n += 1;
            }
            n - JOBS
        })
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("backup.snap");
    let file_text = file.display().to_string();
    let mut save = std::process::Command::new(common::drover_bin());
    save.args([
        "operator", "snapshot", "save", &file_text, "--output", "json",
    ])
    .env("DROVER_ADDR", cluster.api_url(f))
    .env("DROVER_TOKEN", &admin);
    let saved = tokio::task::spawn_blocking(move || save.output())
        .await
        .expect("join")
        .expect("run save");
    stop.store(true, Ordering::Relaxed);
    let written_during = writer.await.expect("writer");
    let saved = json_of(&saved, "snapshot save");
    let backup_index = saved["header"]["index"].as_u64().expect("index");
    assert!(written_during > 0, "the writer ran during the save");

    // Inspect: the header and counts; every job acknowledged before the
    // save is in it, and it is exactly the jobs created up to its index.
    let inspected = json_of(
        &cluster.cli(&[
            "operator", "snapshot", "inspect", &file_text, "--output", "json",
        ]),
        "inspect",
    );
    assert_eq!(
        inspected["header"]["cluster_id"],
        cluster.cluster_id.as_str()
    );
    assert_eq!(inspected["header"]["format"], 1);
    assert_eq!(inspected["tokens"], 2);
    assert_eq!(inspected["acl_bootstrapped"], true);
    let in_backup = inspected["jobs"].as_u64().expect("jobs") as usize;
    assert_eq!(
        inspected["jobs_by_state"]["QUEUED"].as_u64(),
        Some(in_backup as u64)
    );
    let live = all_jobs(&cluster, leader).await;
    let expected: BTreeSet<String> = live
        .iter()
        .filter(|(_, index)| *index <= backup_index)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(expected.is_superset(&before_save));
    assert_eq!(in_backup, expected.len(), "a consistent point in time");
    assert!(
        live.len() > in_backup,
        "writes after the backup's index exist"
    );

    // A flipped byte is refused by inspect and by restore, before anything
    // is touched.
    let mut damaged = std::fs::read(&file).expect("read backup");
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x20;
    let bad = dir.path().join("damaged.snap");
    std::fs::write(&bad, &damaged).expect("write damaged");
    let bad_text = bad.display().to_string();
    let commit_before = cluster.status(leader).await.expect("status").commit_index;
    for args in [
        vec!["operator", "snapshot", "inspect", bad_text.as_str()],
        vec!["operator", "snapshot", "restore", bad_text.as_str()],
    ] {
        let out = cluster.cli(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("corrupt"), "{args:?}: {stderr}");
    }
    let commit_after = cluster.status(leader).await.expect("status").commit_index;
    assert_eq!(
        commit_before, commit_after,
        "a refused restore writes nothing"
    );

    // Online restore through a follower: every node ends with exactly the
    // backup's jobs (those submitted after it are gone).
    let restored = json_of(
        &cluster.cli(&[
            "operator", "snapshot", "restore", &file_text, "--output", "json",
        ]),
        "restore",
    );
    assert_eq!(restored["jobs"].as_u64(), Some(in_backup as u64));
    assert_eq!(restored["tokens"], 2);
    for i in 0..3 {
        let ids: BTreeSet<String> = all_jobs(&cluster, i)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, expected, "node {i} after the online restore");
    }

    // Disaster: every node and its data gone. Seed a new node 1 from the
    // backup, start it, and add the others, empty, to it.
    for i in 0..3 {
        cluster.kill(i);
        std::fs::remove_dir_all(&cluster.nodes[i].data_dir).expect("remove data dir");
    }
    let node1 = cluster.nodes[0].clone();
    let node1_dir = node1.data_dir.display().to_string();
    let seeded = json_of(
        &cluster.cli(&[
            "operator",
            "snapshot",
            "restore",
            &file_text,
            "--data-dir",
            &node1_dir,
            "--node-id",
            "1",
            "--raft-addr",
            &node1.raft,
            "--api-addr",
            &node1.api,
            "--output",
            "json",
        ]),
        "offline restore",
    );
    assert_eq!(seeded["jobs"].as_u64(), Some(in_backup as u64));
    // Seeding never overwrites a node.
    let again = cluster.cli(&[
        "operator",
        "snapshot",
        "restore",
        &file_text,
        "--data-dir",
        &node1_dir,
        "--node-id",
        "1",
    ]);
    assert_eq!(again.status.code(), Some(1));
    cluster.restart(0);
    wait_for("node 1 to lead its new cluster", ELECTION, || async {
        let status = cluster.status(0).await?;
        (status.role == "leader").then_some(())
    })
    .await;
    for i in 1..3 {
        cluster.make_joiner(i);
        cluster.restart(i);
        let spec = cluster.nodes[i].clone();
        let id = spec.id.to_string();
        let out = cluster.cli(&[
            "operator",
            "raft",
            "add-peer",
            "--id",
            &id,
            "--raft-addr",
            &spec.raft,
            "--api-addr",
            &spec.api,
        ]);
        assert!(
            out.status.success(),
            "add-peer {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for i in 0..3 {
        let ids: BTreeSet<String> = all_jobs(&cluster, i)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, expected, "node {i} of the rebuilt cluster");
    }
    // The tokens came back: the old secrets work, with their roles.
    let mut as_viewer = cluster.client_with(2, Some(&viewer)).await.expect("client");
    let me = as_viewer
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("the viewer token works")
        .into_inner();
    assert_eq!(me.role, "viewer");
    let err = as_viewer
        .submit_job(pb::SubmitJobRequest {
            spec: Some(pb::JobSpec {
                command: "true".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("a viewer cannot submit");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let tokens = json_of(
        &cluster.cli(&["acl", "token", "list", "--output", "json"]),
        "tokens",
    );
    assert_eq!(tokens.as_array().map(Vec::len), Some(2));
}
