//! Running jobs end to end: real agent processes, real Docker containers,
//! the real CLI. Without Docker these tests print a notice and pass, unless
//! `DROVER_REQUIRE_DOCKER=1` (CI) makes that a failure.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{containers, wait_for, Cluster, RaftSettings};
use drover::proto::v1 as pb;

const ELECTION: Duration = Duration::from_secs(20);
const JOB_WAIT: Duration = Duration::from_secs(60);

/// Waits until job `id` satisfies `pred` (read from node `i`), returns it.
async fn wait_job(
    cluster: &Cluster,
    i: usize,
    id: &str,
    what: &str,
    pred: impl Fn(&pb::Job) -> bool,
) -> pb::Job {
    let deadline = std::time::Instant::now() + JOB_WAIT;
    let mut last = None;
    loop {
        if let Some(mut client) = cluster.client(i).await {
            last = common::get_job(&mut client, id).await;
            if let Some(job) = last.as_ref().filter(|j| pred(j)) {
                return job.clone();
            }
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out after {JOB_WAIT:?} waiting for job {id}: {what}; last seen {last:?}\nnode log:\n{}",
                cluster.log_tail(i)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn submit(client: &mut common::Client, spec: pb::JobSpec) -> String {
    client
        .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
        .await
        .expect("submit")
        .into_inner()
        .job
        .expect("job")
        .id
}

fn shell(command: &str) -> pb::JobSpec {
    pb::JobSpec {
        command: command.to_string(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_node_runs_jobs_with_every_outcome() {
    let Some(cluster) = Cluster::start_running_jobs(1, RaftSettings::default()) else {
        return;
    };
    cluster.wait_leader(ELECTION).await;

    // The README's first promise.
    let out = cluster.cli(&["job", "run", "--", "echo hello"]);
    assert_eq!(stdout(&out), "hello\n", "stderr: {}", stderr(&out));
    assert!(out.status.success());

    // Non-zero exit: the CLI exits with it; stdout and stderr are kept apart.
    let out = cluster.cli(&["job", "run", "--", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "out\n");
    assert!(stderr(&out).contains("err\n"), "{}", stderr(&out));

    // Timeout: TIMED_OUT within 3 s of the start, container gone.
    let out = cluster.cli(&[
        "job",
        "run",
        "--timeout",
        "1s",
        "--detach",
        "--",
        "sleep 60",
    ]);
    let id = stdout(&out).trim().to_string();
    let job = wait_job(&cluster, 0, &id, "timed out", |j| j.state == "TIMED_OUT").await;
    let a = &job.attempts[0];
    assert_eq!(a.reason, "TIMED_OUT");
    assert!(
        a.started_at_ms > 0 && a.finished_at_ms - a.started_at_ms < 3000,
        "{a:?}"
    );
    let name = format!("drover-{id}-1");
    wait_for(
        "the timed-out container to be removed",
        JOB_WAIT,
        || async { (!containers(&cluster.cluster_id).contains(&name)).then_some(()) },
    )
    .await;

    // A memory hog under 32 MiB is OOM_KILLED, not "exit 137".
    let out = cluster.cli(&[
        "job",
        "run",
        "--memory",
        "32",
        "--",
        "x=a; while true; do x=\"$x$x\"; done",
    ]);
    assert_eq!(out.status.code(), Some(137));
    assert!(stderr(&out).contains("OOM_KILLED"), "{}", stderr(&out));

    // Locked down: no network, read-only root, writable /tmp, own id in env.
    let out = cluster.cli(&[
        "job",
        "run",
        "--",
        "wget -q -T 2 http://1.1.1.1/ >/dev/null 2>&1 || echo no-network; \
         touch /x 2>/dev/null || echo read-only-root; touch /tmp/x && echo tmp-ok; \
         echo attempt=$DROVER_ATTEMPT id=${#DROVER_JOB_ID}",
    ]);
    assert_eq!(
        stdout(&out),
        "no-network\nread-only-root\ntmp-ok\nattempt=1 id=26\n",
        "{}",
        stderr(&out)
    );

    // Stop a running job: CANCELLED, container removed, stop is idempotent.
    let out = cluster.cli(&["job", "run", "-d", "--", "echo started; sleep 100"]);
    let id = stdout(&out).trim().to_string();
    // Live output of a running job (and no SIGTERM before the echo ran).
    wait_for("the running job's output", JOB_WAIT, || async {
        let logs = cluster.cli(&["job", "logs", &id]);
        (stdout(&logs) == "started\n").then_some(())
    })
    .await;
    let out = cluster.cli(&["job", "stop", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job = wait_job(&cluster, 0, &id, "cancelled", |j| j.state == "CANCELLED").await;
    assert_eq!(job.attempts[0].reason, "CANCELLED");
    let name = format!("drover-{id}-1");
    wait_for("the stopped container to be removed", JOB_WAIT, || async {
        (!containers(&cluster.cluster_id).contains(&name)).then_some(())
    })
    .await;
    let again = cluster.cli(&["job", "stop", &id, "--output", "json"]);
    assert!(again.status.success());
    let json: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(json["state"], "CANCELLED");
    // Its output survives on the node.
    let logs = cluster.cli(&["job", "logs", &id]);
    assert_eq!(stdout(&logs), "started\n");

    // Retries: fails twice, succeeds at attempt 3, backoff 1 s then 2 s.
    let out = cluster.cli(&[
        "job",
        "run",
        "--max-attempts",
        "3",
        "--backoff",
        "1s",
        "--output",
        "json",
        "--",
        "[ \"$DROVER_ATTEMPT\" -ge 3 ] || exit 1; echo third",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let json: serde_json::Value =
        serde_json::from_str(text.lines().last().unwrap_or_default()).expect("json");
    assert_eq!(json["state"], "SUCCEEDED");
    let attempts = json["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3);
    let at = |n: usize, key: &str| attempts[n][key].as_i64().unwrap_or(0);
    assert!(
        at(1, "assigned_at_ms") - at(0, "finished_at_ms") >= 1000,
        "{json}"
    );
    assert!(
        at(2, "assigned_at_ms") - at(1, "finished_at_ms") >= 2000,
        "{json}"
    );
    assert_eq!(attempts[0]["reason"], "EXIT_CODE");
    assert_eq!(attempts[2]["output_tail"], "third\n");

    // Idempotency: the same key returns the first job, never a second.
    let mut client = cluster.client(0).await.expect("client");
    let keyed = pb::JobSpec {
        idempotency_key: "nightly-2026-11-23".into(),
        ..shell("true")
    };
    let first = submit(&mut client, keyed.clone()).await;
    let second = submit(&mut client, keyed).await;
    assert_eq!(first, second);

    // A missing image that cannot be pulled fails the attempt with
    // IMAGE_UNAVAILABLE and the engine's message, not a hang.
    let missing = pb::JobSpec {
        image: "drover-missing-image:never".into(),
        ..shell("true")
    };
    let id = submit(&mut client, missing).await;
    let job = wait_job(&cluster, 0, &id, "failed", |j| j.state == "FAILED").await;
    assert_eq!(job.attempts[0].reason, "IMAGE_UNAVAILABLE");
    assert!(!job.attempts[0].message.is_empty());

    // Following a job (attempt 0) streams every attempt until the job ends.
    let retried = pb::JobSpec {
        retry: Some(pb::RetryPolicy {
            max_attempts: 2,
            initial_backoff_ms: 100,
            ..Default::default()
        }),
        ..shell("echo try $DROVER_ATTEMPT; [ \"$DROVER_ATTEMPT\" -ge 2 ]")
    };
    let id = submit(&mut client, retried).await;
    let mut stream = client
        .stream_job_output(pb::StreamJobOutputRequest {
            id: id.clone(),
            attempt: 0,
            follow: true,
            after_seq: None,
        })
        .await
        .expect("stream")
        .into_inner();
    let mut text = String::new();
    let mut attempts = Vec::new();
    let collect = async {
        while let Some(chunk) = stream.message().await.expect("chunk") {
            text.push_str(&String::from_utf8_lossy(&chunk.data));
            attempts.push(chunk.attempt);
        }
    };
    tokio::time::timeout(JOB_WAIT, collect)
        .await
        .expect("the stream ends with the job");
    assert_eq!(text, "try 1\ntry 2\n");
    assert_eq!(attempts.first(), Some(&1));
    assert_eq!(attempts.last(), Some(&2));
    let job = wait_job(&cluster, 0, &id, "succeeded", |j| j.state == "SUCCEEDED").await;
    assert_eq!(job.attempts.len(), 2);

    // Bad input is refused before anything is written.
    let bad = pb::JobSpec {
        resources: Some(pb::Resources {
            memory_mib: 1,
            ..Default::default()
        }),
        ..shell("true")
    };
    let err = client
        .submit_job(pb::SubmitJobRequest { spec: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_resource_exhausted() {
    // No executor: jobs stay queued, so the bound is reached.
    let cluster = Cluster::start(
        1,
        RaftSettings {
            queue_capacity: 3,
            ..RaftSettings::default()
        },
    );
    cluster.wait_leader(ELECTION).await;
    let mut client = cluster.client(0).await.expect("client");
    for _ in 0..3 {
        submit(&mut client, shell("true")).await;
    }
    let err = client
        .submit_job(pb::SubmitJobRequest {
            spec: Some(shell("true")),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    // A stop frees a place.
    let ids = common::all_job_ids(&mut client).await.expect("list");
    client
        .stop_job(pb::StopJobRequest { id: ids[0].clone() })
        .await
        .expect("stop a queued job");
    let labelled = pb::JobSpec {
        labels: [("team".to_string(), "a".to_string())].into(),
        ..shell("true")
    };
    let team_job = submit(&mut client, labelled).await;

    // Listing with filters, through the CLI.
    let list = |args: &[&str]| {
        let mut all = vec!["job", "list", "--output", "json", "--all"];
        all.extend_from_slice(args);
        let out = cluster.cli(&all);
        assert!(out.status.success(), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        json["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .map(|j| j["id"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(&["--state", "CANCELLED"]), [ids[0].clone()]);
    assert_eq!(list(&["--state", "queued"]).len(), 3);
    assert_eq!(list(&["--label", "team=a"]), [team_job]);
    assert_eq!(
        list(&["--state", "CANCELLED", "--state", "QUEUED"]).len(),
        4
    );
    let out = cluster.cli(&["job", "list", "--state", "DONE"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown state"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn finished_jobs_beyond_the_retention_count_are_collected() {
    let Some(cluster) = Cluster::start_running_jobs(
        1,
        RaftSettings {
            retain_max: 2,
            ..RaftSettings::default()
        },
    ) else {
        return;
    };
    cluster.wait_leader(ELECTION).await;
    let mut client = cluster.client(0).await.expect("client");
    let mut ids = Vec::new();
    for n in 0..4 {
        let id = submit(&mut client, shell(&format!("echo {n}"))).await;
        wait_job(&cluster, 0, &id, "succeeded", |j| j.state == "SUCCEEDED").await;
        ids.push(id);
    }
    // The two oldest go, through the log; the two newest stay.
    wait_for(
        "the oldest finished jobs to be collected",
        JOB_WAIT,
        || async {
            let mut client = cluster.client(0).await?;
            let left = common::all_job_ids(&mut client).await.ok()?;
            (left == ids[2..]).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_spread_jobs_and_rerun_the_work_of_a_killed_node() {
    let Some(mut cluster) = Cluster::start_running_jobs(
        3,
        RaftSettings {
            node_down_after_ms: 4000,
            ..RaftSettings::default()
        },
    ) else {
        return;
    };
    let leader = cluster.wait_leader(ELECTION).await;
    let mut client = cluster.client(leader).await.expect("client");
    wait_for("all three nodes ready", JOB_WAIT, || async {
        let mut client = cluster.client(leader).await?;
        let nodes = client
            .list_nodes(pb::ListNodesRequest { consistent: false })
            .await
            .ok()?
            .into_inner()
            .nodes;
        (nodes.iter().filter(|n| n.status == "READY").count() == 3).then_some(())
    })
    .await;

    // 60 jobs spread over all three nodes, each output committed.
    let mut ids = Vec::new();
    for n in 0..60 {
        ids.push(submit(&mut client, shell(&format!("sleep 1; echo job-{n}"))).await);
    }
    let mut used = BTreeSet::new();
    let mut ran_on = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let job = wait_job(&cluster, leader, id, "succeeded", |j| {
            j.state == "SUCCEEDED"
        })
        .await;
        assert_eq!(job.attempts.len(), 1);
        assert_eq!(
            job.attempts[0].output_tail,
            format!("job-{n}\n").into_bytes()
        );
        used.insert(job.attempts[0].node);
        ran_on.push((id.clone(), job.attempts[0].node, n));
    }
    assert_eq!(used.len(), 3, "jobs ran on nodes {used:?}");

    // Drain a node: nothing new lands there.
    let follower = (0..3).find(|&i| i != leader).unwrap_or(0);
    let drained_id = cluster.nodes[follower].id;
    let out = cluster.cli(&["node", "drain", &drained_id.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut batch = Vec::new();
    for _ in 0..9 {
        batch.push(submit(&mut client, shell("true")).await);
    }
    for id in &batch {
        let job = wait_job(&cluster, leader, id, "succeeded", |j| {
            j.state == "SUCCEEDED"
        })
        .await;
        assert_ne!(
            job.attempts[0].node, drained_id,
            "placed on a draining node"
        );
    }
    let out = cluster.cli(&["node", "drain", &drained_id.to_string(), "--disable"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // kill -9 and restart before the liveness timeout: the node reattaches
    // to its running container and the job finishes once, at attempt 1.
    let pinned = |command: &str, max_attempts: u32| pb::JobSpec {
        constraints: [("node".to_string(), drained_id.to_string())].into(),
        retry: Some(pb::RetryPolicy {
            max_attempts,
            ..Default::default()
        }),
        ..shell(command)
    };
    let id = submit(&mut client, pinned("echo before; sleep 4; echo after", 1)).await;
    wait_job(&cluster, leader, &id, "running", |j| j.state == "RUNNING").await;
    cluster.kill(follower);
    cluster.restart(follower);
    let job = wait_job(&cluster, leader, &id, "finished", |j| j.finished_at_ms > 0).await;
    assert_eq!(
        job.state,
        "SUCCEEDED",
        "{job:?}\n{}",
        cluster.log_tail(follower)
    );
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(job.attempts[0].output_tail, b"before\nafter\n".to_vec());

    // `job run` through node 1 of a job pinned to node 3: the output is
    // streamed live from the node that runs it, through the one asked.
    let out = cluster.cli(&[
        "job",
        "run",
        "--constraint",
        "node=3",
        "--",
        "echo far; sleep 1; echo away",
    ]);
    assert_eq!(stdout(&out), "far\naway\n", "{}", stderr(&out));

    // Drain with a deadline: a job still running there when it passes is
    // stopped and re-run elsewhere (NODE_DRAINED), with no retry policy.
    let mut spread = Vec::new();
    for _ in 0..3 {
        spread.push(submit(&mut client, shell("sleep 4; echo moved")).await);
    }
    let mut on_drained = None;
    for id in &spread {
        let job = wait_job(&cluster, leader, id, "running", |j| j.state == "RUNNING").await;
        if job.attempts[0].node == drained_id {
            on_drained = Some(id.clone());
        }
    }
    let evicted = on_drained.expect("one of three equal jobs on each of three nodes");
    let out = cluster.cli(&["node", "drain", &drained_id.to_string(), "--deadline", "1s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job = wait_job(&cluster, leader, &evicted, "succeeded", |j| {
        j.state == "SUCCEEDED"
    })
    .await;
    assert_eq!(job.attempts.len(), 2, "{job:?}");
    assert_eq!(job.attempts[0].reason, "NODE_DRAINED");
    assert_ne!(job.attempts[1].node, drained_id);
    let out = cluster.cli(&["node", "drain", &drained_id.to_string(), "--disable"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // kill -9 the LEADER while it runs jobs, and keep it down: a new leader
    // takes over scheduling, declares the old one down after its liveness
    // timeout, and its jobs end LOST and re-run elsewhere, each attempt
    // visible and each job finished exactly once.
    let leader_id = cluster.nodes[leader].id;
    let mut running = Vec::new();
    for _ in 0..6 {
        let spec = pb::JobSpec {
            retry: Some(pb::RetryPolicy {
                max_attempts: 3,
                initial_backoff_ms: 100,
                ..Default::default()
            }),
            ..shell("sleep 3; echo done")
        };
        running.push(submit(&mut client, spec).await);
    }
    let mut victims = Vec::new();
    for id in &running {
        let job = wait_job(&cluster, leader, id, "running", |j| j.state == "RUNNING").await;
        if job.attempts[0].node == leader_id {
            victims.push(id.clone());
        }
    }
    assert!(
        !victims.is_empty(),
        "no job ran on the leader (node {leader_id})"
    );
    cluster.kill(leader);
    let new_leader = cluster.wait_leader(ELECTION).await;
    for id in &running {
        let job = wait_job(&cluster, new_leader, id, "succeeded", |j| {
            j.state == "SUCCEEDED"
        })
        .await;
        if victims.contains(id) {
            assert_eq!(job.attempts.len(), 2, "{job:?}");
            assert_eq!(job.attempts[0].reason, "NODE_LOST");
            assert_ne!(job.attempts[1].node, leader_id);
        } else {
            assert_eq!(job.attempts.len(), 1, "{job:?}");
        }
        assert_eq!(
            job.attempts.last().map(|a| a.output_tail.clone()),
            Some(b"done\n".to_vec())
        );
    }
    // The dead node's results outlive it: a job it ran earlier still shows
    // its output, from the tail committed with the result.
    let (ran_there, n) = ran_on
        .iter()
        .find(|(_, node, _)| *node == leader_id)
        .map(|(id, _, n)| (id.clone(), *n))
        .expect("the 60 jobs ran on every node");
    let logs = cluster.cli(&["job", "logs", &ran_there]);
    assert_eq!(stdout(&logs), format!("job-{n}\n"), "{}", stderr(&logs));
    assert!(stderr(&logs).contains("unreachable"), "{}", stderr(&logs));
    // Output of a live node is fetched from it through any node.
    let logs = cluster.cli(&["job", "logs", &victims[0]]);
    assert_eq!(stdout(&logs), "done\n", "{}", stderr(&logs));

    // Back up, the old leader removes the containers of attempts it lost.
    cluster.restart(leader);
    wait_for(
        "the restarted node to remove its orphans",
        JOB_WAIT,
        || async {
            let left = containers(&cluster.cluster_id);
            let orphans: Vec<_> = victims
                .iter()
                .filter(|id| left.contains(&format!("drover-{id}-1")))
                .collect();
            orphans.is_empty().then_some(())
        },
    )
    .await;
}

/// Where `executor.policy.allowed_users` lists it, a job runs as the user
/// it asks for (`drover job run --user`), writes its own `/scratch` on
/// disk, and keeps its `user` across a restart (replayed from the log);
/// root, which the policy does not list, is refused at submit with the key.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_as_the_user_it_may_choose_and_writes_its_scratch() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let Some(mut cluster) = Cluster::start_running_jobs(
        1,
        RaftSettings {
            scratch_dir: Some(scratch.path().join("jobs")),
            extra_config: "\n[executor.policy]\nallowed_users = [\"1000:*\"]\n".into(),
            ..RaftSettings::default()
        },
    ) else {
        return;
    };
    cluster.wait_leader(ELECTION).await;
    let out = cluster.cli(&[
        "job",
        "run",
        "--user",
        "1000:1000",
        "--",
        "id -u; id -g; echo data >/scratch/f && cat /scratch/f; ls -ld /scratch | tr -s ' ' | cut -d' ' -f3",
    ]);
    assert_eq!(
        stdout(&out),
        "1000\n1000\ndata\n1000\n",
        "stderr: {}",
        stderr(&out)
    );
    let out = cluster.cli(&[
        "job",
        "run",
        "--",
        "id -u; ls -ld /scratch | tr -s ' ' | cut -d' ' -f3",
    ]);
    assert_eq!(stdout(&out), "65534\n65534\n", "stderr: {}", stderr(&out));

    let out = cluster.cli(&["job", "run", "--user", "0", "--", "id -u"]);
    assert!(!out.status.success(), "root was let in: {}", stdout(&out));
    assert!(
        stderr(&out).contains("executor.policy.allowed_users"),
        "{}",
        stderr(&out)
    );

    let mut client = cluster.client(0).await.expect("client");
    let id = submit(
        &mut client,
        pb::JobSpec {
            user: "1000".into(),
            ..shell("true")
        },
    )
    .await;
    wait_job(&cluster, 0, &id, "succeeded", |j| j.state == "SUCCEEDED").await;
    cluster.restart(0);
    cluster.wait_leader(ELECTION).await;
    let job = wait_job(&cluster, 0, &id, "back after the restart", |_| true).await;
    // Recorded as it runs: a bare UID gets the group of the same number.
    assert_eq!(job.spec.map(|s| s.user).as_deref(), Some("1000:1000"));
    let rest: serde_json::Value = reqwest::get(format!("{}/v1/jobs/{id}", cluster.http_url(0)))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(rest["user"], "1000:1000", "{rest}");
    let left: Vec<_> = std::fs::read_dir(scratch.path().join("jobs"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch directories left: {left:?}");
}

/// Nodes tell the leader what their sandbox policy allows: a job that asks
/// for a user only node 2 lets it have runs on node 2 every time (node 1
/// would refuse it, START_FAILED), whichever node it was submitted to, while
/// plain jobs still use both nodes; a user no node lists is refused at
/// submit, naming the key.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_asks_for_a_user_lands_only_on_nodes_that_allow_it() {
    let Some(cluster) = Cluster::start_running_jobs(
        2,
        RaftSettings {
            node_config: vec![(
                2,
                "\n[executor.policy]\nallowed_users = [\"1000:1000\"]\n".into(),
            )],
            ..RaftSettings::default()
        },
    ) else {
        return;
    };
    cluster.wait_leader(ELECTION).await;
    let mut node1 = cluster.client(0).await.expect("client");
    // Node 2's heartbeat says what it allows, into the replicated node table.
    common::wait_for("node 2 to offer its users", ELECTION, || {
        let mut client = node1.clone();
        async move {
            let nodes = client
                .list_nodes(pb::ListNodesRequest { consistent: true })
                .await
                .ok()?
                .into_inner()
                .nodes;
            nodes
                .iter()
                .any(|n| {
                    n.id == 2
                        && n.labels
                            .get("drover.users")
                            .is_some_and(|u| u == "1000:1000")
                })
                .then_some(())
        }
    })
    .await;
    let mut node2 = cluster.client(1).await.expect("client");
    let mut ids = Vec::new();
    for n in 0..4 {
        let spec = pb::JobSpec {
            user: "1000".into(),
            ..shell("id -u")
        };
        let client = if n % 2 == 0 { &mut node1 } else { &mut node2 };
        ids.push(submit(client, spec).await);
    }
    // Running side by side, so the least loaded node takes the next.
    let mut plain = Vec::new();
    for _ in 0..6 {
        plain.push(submit(&mut node1, shell("sleep 1")).await);
    }
    for id in &ids {
        let job = wait_job(&cluster, 0, id, "succeeded", |j| j.state == "SUCCEEDED").await;
        let attempt = &job.attempts[0];
        assert_eq!(attempt.node, 2, "placed on a node that refuses its user");
        assert_eq!(attempt.output_tail, b"1000\n");
    }
    let mut nodes = BTreeSet::new();
    for id in &plain {
        let job = wait_job(&cluster, 0, id, "succeeded", |j| j.state == "SUCCEEDED").await;
        nodes.insert(job.attempts[0].node);
    }
    assert_eq!(nodes, BTreeSet::from([1, 2]), "plain jobs use both nodes");
    for client in [&mut node1, &mut node2] {
        let refused = client
            .submit_job(pb::SubmitJobRequest {
                spec: Some(pb::JobSpec {
                    user: "0".into(),
                    ..shell("true")
                }),
            })
            .await
            .expect_err("no node lets a job be root");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains("executor.policy.allowed_users"),
            "{refused:?}"
        );
    }
}
