//! The `drover` CLI end to end, as a user drives it: the real binary against
//! a 3-node cluster with ACLs on and real containers, talking only to a
//! follower. Submit, watch the job finish, read and follow its output, stop
//! a running job, and page through 2,500 jobs with nothing duplicated or
//! missing; every answer read back as `--output json`.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{drover_bin, json_of, remove_containers, wait_for, Cluster, RaftSettings};
use drover::proto::v1 as pb;
use serde_json::Value;

const ELECTION: Duration = Duration::from_secs(20);
const BULK_JOBS: usize = 2_500;

/// Runs the CLI against one node only (the follower), with the token.
fn cli_at(cluster: &Cluster, node: usize, args: &[&str]) -> Output {
    Command::new(drover_bin())
        .args(args)
        .env("DROVER_ADDR", cluster.api_url(node))
        .env("DROVER_TOKEN", cluster.token.as_deref().unwrap_or_default())
        .output()
        .expect("run drover")
}

fn submit(cluster: &Cluster, node: usize, command: &str) -> Value {
    json_of(
        &cli_at(
            cluster,
            node,
            &["job", "submit", "--output", "json", "--", command],
        ),
        "job submit",
    )
}

fn state_of(cluster: &Cluster, node: usize, id: &str) -> String {
    let job = json_of(
        &cli_at(cluster, node, &["job", "status", id, "--output", "json"]),
        "job status",
    );
    job["state"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_drives_a_three_node_cluster_through_a_follower() {
    let Some(mut cluster) = Cluster::start_running_jobs(
        3,
        RaftSettings {
            acl: true,
            ..RaftSettings::default()
        },
    ) else {
        return;
    };
    // Bootstrap through the CLI as an operator on a node's machine would:
    // over its unix socket (without TLS, the leader's; the others say so).
    let admin = wait_for("bootstrap", ELECTION, || async {
        for i in 0..3 {
            let socket = format!("unix://{}", cluster.socket_path(i).display());
            let out = cli_at(
                &cluster,
                i,
                &["acl", "bootstrap", "--address", &socket, "--output", "json"],
            );
            if out.status.success() {
                let v: Value = serde_json::from_slice(&out.stdout).ok()?;
                return v["secret"].as_str().map(str::to_string);
            }
        }
        None
    })
    .await;
    cluster.token = Some(admin);
    let leader = cluster.wait_leader(ELECTION).await;
    let f = (leader + 1) % 3;
    // Each executor first connects to Docker and catches up with the log;
    // a loaded machine can take a while.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let nodes = json_of(
            &cli_at(&cluster, f, &["node", "status", "--output", "json"]),
            "node status",
        );
        let ready = nodes["nodes"]
            .as_array()
            .map_or(0, |n| n.iter().filter(|n| n["status"] == "READY").count());
        if ready == 3 {
            break;
        }
        if Instant::now() > deadline {
            let logs: String = (0..3)
                .map(|i| format!("\n--- node {} ---\n{}", i + 1, cluster.log_tail(i)))
                .collect();
            panic!("not three ready nodes within 90 s: {nodes}{logs}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Submit through the follower; watch it from the entry that created it
    // until it ends: every state once, in log order.
    let job = submit(&cluster, f, "echo hello; sleep 1; echo world");
    let id = job["id"].as_str().expect("id").to_string();
    let created_at = job["index"].as_u64().expect("index");
    let from = (created_at - 1).to_string();
    let mut watch = Command::new(drover_bin())
        .args([
            "job",
            "watch",
            &id,
            "--from-index",
            &from,
            "--output",
            "json",
        ])
        .env("DROVER_ADDR", cluster.api_url(f))
        .env("DROVER_TOKEN", cluster.token.as_deref().unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start drover job watch");
    let stdout = watch.stdout.take().expect("watch stdout");
    let events = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut events = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("watch output");
            let event: Value = serde_json::from_str(&line).expect("event JSON");
            let state = event["state"].as_str().unwrap_or_default().to_string();
            events.push(event);
            if state == "SUCCEEDED" || Instant::now() > deadline {
                break;
            }
        }
        events
    })
    .await
    .expect("watch reader");
    let status = watch.wait().expect("watch exit");
    assert!(status.success(), "watch of a finished job exits 0");
    let states: Vec<&str> = events.iter().filter_map(|e| e["state"].as_str()).collect();
    assert_eq!(
        states,
        ["QUEUED", "ASSIGNED", "RUNNING", "SUCCEEDED"],
        "{events:?}"
    );
    let indexes: Vec<u64> = events.iter().filter_map(|e| e["index"].as_u64()).collect();
    assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");
    assert_eq!(indexes[0], created_at);
    // Watching the job from now, once it has ended, returns at once.
    let late = Command::new("timeout")
        .arg("20")
        .arg(drover_bin())
        .args(["job", "watch", &id])
        .env("DROVER_ADDR", cluster.api_url(f))
        .env("DROVER_TOKEN", cluster.token.as_deref().unwrap_or_default())
        .output()
        .expect("run drover job watch");
    assert!(late.status.success(), "watch of an ended job: {late:?}");
    assert!(String::from_utf8_lossy(&late.stderr).contains("already ended"));

    // Its output, stored on the node that ran it, fetched via the follower.
    let out = cli_at(&cluster, f, &["job", "logs", &id]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nworld\n");

    // Follow a running job's output live to its end.
    let job = submit(
        &cluster,
        f,
        "for i in 1 2 3; do echo line$i; sleep 0.3; done",
    );
    let id2 = job["id"].as_str().expect("id").to_string();
    let out = cli_at(&cluster, f, &["job", "logs", "-f", &id2]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line1\nline2\nline3\n"
    );

    // Stop a running job.
    let job = submit(&cluster, f, "sleep 300");
    let long = job["id"].as_str().expect("id").to_string();
    wait_for("the long job to run", Duration::from_secs(60), || async {
        (state_of(&cluster, f, &long) == "RUNNING").then_some(())
    })
    .await;
    let stopped = json_of(
        &cli_at(&cluster, f, &["job", "stop", &long, "--output", "json"]),
        "job stop",
    );
    assert_eq!(stopped["state"], "CANCELLED");
    assert_eq!(stopped["attempts"][0]["reason"], "CANCELLED");

    // 2,500 more jobs (held in the queue by a constraint no node meets),
    // submitted concurrently; then paged through with the CLI.
    let mut submitted: BTreeSet<String> = [id, id2, long].into_iter().collect();
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let mut client = cluster.client(f).await.expect("client");
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (worker..BULK_JOBS).step_by(16) {
                let spec = pb::JobSpec {
                    command: format!("echo {n}"),
                    constraints: [("node".to_string(), "none".to_string())].into(),
                    ..Default::default()
                };
                let job = client
                    .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
                    .await
                    .expect("bulk submit")
                    .into_inner()
                    .job
                    .expect("job");
                ids.push(job.id);
            }
            ids
        }));
    }
    for task in tasks {
        submitted.extend(task.await.expect("submitter"));
    }
    assert_eq!(submitted.len(), BULK_JOBS + 3);

    // `--all` walks every page (100 each by default).
    let listed = json_of(
        &cli_at(&cluster, f, &["job", "list", "--all", "--output", "json"]),
        "job list --all",
    );
    let ids: Vec<String> = listed["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["id"].as_str().map(str::to_string))
        .collect();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "no job listed twice");
    assert_eq!(unique, submitted, "every job listed, none missing");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "submission order");

    // By hand, page by page, with the tokens the CLI prints.
    let mut token = String::new();
    let mut paged = Vec::new();
    let mut pages = 0;
    loop {
        let page = json_of(
            &cli_at(
                &cluster,
                f,
                &[
                    "job",
                    "list",
                    "--page-size",
                    "1000",
                    "--page-token",
                    &token,
                    "--output",
                    "json",
                ],
            ),
            "job list page",
        );
        pages += 1;
        paged.extend(
            page["jobs"]
                .as_array()
                .expect("jobs")
                .iter()
                .filter_map(|j| j["id"].as_str().map(str::to_string)),
        );
        match page["next_page_token"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_string(),
            _ => break,
        }
        assert!(pages <= 4, "too many pages");
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, ids);

    // A page size over the maximum is a clear error with exit code 1.
    let out = cli_at(&cluster, f, &["job", "list", "--page-size", "5000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("maximum"));

    remove_containers(&cluster.cluster_id);
}
