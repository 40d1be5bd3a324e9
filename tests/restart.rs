//! Rolling restarts, as an operator does them for an upgrade: each node of a
//! 3-node cluster in turn gets SIGTERM (`systemctl stop`) and is started
//! again, while jobs run and new ones are submitted. Nothing acknowledged is
//! lost, no job runs twice, a leader hands leadership over before leaving
//! (no election gap), and running containers are reattached after the
//! restart.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{remove_containers, wait_for, Cluster, RaftSettings};
use drover::proto::v1 as pb;

const ELECTION: Duration = Duration::from_secs(20);

/// Submits `sleep 1; echo N` jobs one after another, through whichever node
/// answers, until told to stop; records every acknowledged job by its
/// idempotency key. A submission whose fate is unknown (the node went down
/// mid-call) is retried with the same key, so it can never run twice.
async fn submitter(
    addresses: Vec<String>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
) {
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("job-{n}");
        let spec = pb::JobSpec {
            command: format!("sleep 1; echo {n}"),
            idempotency_key: key.clone(),
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        'retry: loop {
            assert!(
                Instant::now() < deadline,
                "submission {key} never acknowledged"
            );
            for addr in &addresses {
                let Ok(endpoint) = tonic::transport::Endpoint::from_shared(addr.clone()) else {
                    continue;
                };
                let Ok(channel) = endpoint
                    .connect_timeout(Duration::from_millis(300))
                    .timeout(Duration::from_secs(15))
                    .connect()
                    .await
                else {
                    continue;
                };
                let mut client = pb::drover_client::DroverClient::new(channel);
                let request = pb::SubmitJobRequest {
                    spec: Some(spec.clone()),
                };
                if let Ok(response) = client.submit_job(request).await {
                    let id = response.into_inner().job.map(|j| j.id).unwrap_or_default();
                    acked.lock().expect("acked").insert(key.clone(), id);
                    break 'retry;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// The job once it has ended (read linearizably), waiting up to 120 s.
async fn ended(client: &common::Client, id: &str) -> pb::Job {
    wait_for("a job to end", Duration::from_secs(120), || {
        let mut client = client.clone();
        let id = id.to_string();
        async move {
            let job = client
                .get_job(pb::GetJobRequest {
                    id,
                    consistent: true,
                })
                .await
                .ok()?
                .into_inner()
                .job?;
            matches!(
                job.state.as_str(),
                "SUCCEEDED" | "FAILED" | "TIMED_OUT" | "CANCELLED" | "LOST"
            )
            .then_some(job)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_loses_and_duplicates_nothing() {
    let Some(mut cluster) = Cluster::start_running_jobs(3, RaftSettings::default()) else {
        return;
    };
    cluster.wait_leader(ELECTION).await;
    let addresses: Vec<String> = (0..3).map(|i| cluster.api_url(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let load = tokio::spawn(submitter(addresses, stop.clone(), acked.clone()));
    wait_for("some jobs acknowledged", ELECTION, || async {
        (acked.lock().expect("acked").len() >= 3).then_some(())
    })
    .await;

    // The leader last: when it leaves, there is no election.
    let first_leader = cluster.wait_leader(ELECTION).await;
    let order: Vec<usize> = (0..3)
        .filter(|&i| i != first_leader)
        .chain([first_leader])
        .collect();
    // Jobs running on a node when it stopped, by node id.
    let mut running_at_stop: Vec<(u64, String)> = Vec::new();
    let mut handovers = 0;
    for i in order {
        let was_leader = cluster.wait_leader(ELECTION).await == i;
        let node_id = cluster.nodes[i].id;
        // A job pinned to this node, running when the node stops.
        let pinned = wait_for("a pinned job submitted", ELECTION, || async {
            let mut client = cluster.client(i).await?;
            let spec = pb::JobSpec {
                command: "sleep 2; echo pinned".into(),
                constraints: [("node".to_string(), node_id.to_string())].into(),
                idempotency_key: format!("pinned-{node_id}"),
                ..Default::default()
            };
            let job = client
                .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
                .await
                .ok()?
                .into_inner()
                .job?;
            Some(job.id)
        })
        .await;
        wait_for("the pinned job to run", Duration::from_secs(60), || async {
            let mut client = cluster.client(i).await?;
            let job = client
                .get_job(pb::GetJobRequest {
                    id: pinned.clone(),
                    consistent: false,
                })
                .await
                .ok()?
                .into_inner()
                .job?;
            (job.state == "RUNNING").then_some(())
        })
        .await;
        running_at_stop.push((node_id, pinned));
        let term_before = cluster.status(i).await.map(|s| s.term).unwrap_or(0);
        let status = cluster.terminate(i).expect("the node exits on SIGTERM");
        assert!(status.success(), "node {i} exited with {status} on SIGTERM");
        if was_leader {
            // Handed over before leaving: a survivor leads at once, in the
            // very next term (a transfer, not an election after a timeout).
            let survivor = (i + 1) % 3;
            let status = cluster.status(survivor).await.expect("survivor status");
            assert!(
                status.leader_id != 0 && status.leader_id != cluster.nodes[i].id,
                "no leader right after the leader stopped: {status:?}"
            );
            assert_eq!(status.term, term_before + 1, "{status:?}");
            handovers += 1;
        }
        // Jobs keep being accepted while the node is down.
        let before = acked.lock().expect("acked").len();
        wait_for(
            "a job acknowledged while a node is down",
            ELECTION,
            || async { (acked.lock().expect("acked").len() > before).then_some(()) },
        )
        .await;
        cluster.restart(i);
        wait_for("the restarted node to catch up", ELECTION, || async {
            let status = cluster.status(i).await?;
            let leader = cluster.status(cluster.wait_leader(ELECTION).await).await?;
            (status.leader_id != 0 && status.applied_index + 5 >= leader.commit_index).then_some(())
        })
        .await;
    }
    assert!(handovers >= 1, "no stopped node was the leader");
    stop.store(true, Ordering::Relaxed);
    load.await.expect("submitter");

    // Every acknowledged job ends SUCCEEDED, after exactly one attempt.
    let acked = acked.lock().expect("acked").clone();
    let leader = cluster.wait_leader(ELECTION).await;
    let mut client = cluster.client(leader).await.expect("client");
    for (key, id) in &acked {
        let job = ended(&client, id).await;
        assert_eq!(job.state, "SUCCEEDED", "{key}: {job:?}");
        assert_eq!(job.attempts.len(), 1, "{key} ran more than once: {job:?}");
    }
    // Containers running across a stop were reattached: those jobs ended
    // with their one attempt on the node that restarted.
    assert_eq!(running_at_stop.len(), 3, "one pinned job per stop");
    for (node, id) in &running_at_stop {
        let job = ended(&client, id).await;
        assert_eq!(job.state, "SUCCEEDED", "{job:?}");
        assert_eq!(job.attempts.len(), 1, "{job:?}");
        assert_eq!(job.attempts[0].node, *node, "{job:?}");
    }
    // One job per key: the listing holds no duplicate submission.
    let mut keys = BTreeMap::new();
    for job in common::all_jobs(&mut client, false).await.expect("list") {
        let key = job.spec.map(|s| s.idempotency_key).unwrap_or_default();
        *keys.entry(key).or_insert(0) += 1;
    }
    keys.retain(|key, _| !key.starts_with("pinned-"));
    assert_eq!(keys.len(), acked.len(), "every acknowledged job listed");
    assert!(
        keys.values().all(|&n| n == 1),
        "a key listed twice: {keys:?}"
    );
    remove_containers(&cluster.cluster_id);
    drop(client);
    let _ = &mut cluster;
}
