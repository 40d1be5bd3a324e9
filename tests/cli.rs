//! The `drover` CLI end to end, as a user drives it: the real binary against
//! a 3-node cluster with ACLs on and real containers, talking only to a
//! follower. Submit, watch the job finish, read and follow its output, stop
//! a running job, and page through 2,500 jobs with nothing duplicated or
//! missing; every answer read back as `--output json`. Then what a new
//! user meets: every error's one line and exit code, the job table, short
//! ids, a submit through a killed leader, and Ctrl-C on `job run`.

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
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first");

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

    // A page size over the maximum is a usage error: exit code 2.
    let out = cli_at(&cluster, f, &["job", "list", "--page-size", "5000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("maximum"));

    remove_containers(&cluster.cluster_id);
}

/// Runs the CLI with `args` and these environment variables, no token.
fn cli_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(drover_bin());
    command.args(args).env_remove("DROVER_TOKEN");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run drover")
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts `out` failed with `code` and a one-line message containing
/// `text` and no gRPC code name.
fn assert_fails(out: &Output, code: i32, text: &str) {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(code), "{text}: {err}");
    assert!(err.contains(text), "wanted {text:?} in: {err}");
    for name in [
        "InvalidArgument",
        "NotFound",
        "Unavailable",
        "Cancelled",
        "Internal:",
    ] {
        assert!(!err.contains(name), "a gRPC code name in: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_says_what_failed_where_and_what_to_do_with_one_exit_code_per_cause() {
    let cluster = Cluster::start(1, RaftSettings::default());
    cluster.wait_leader(ELECTION).await;
    let api = cluster.api_url(0);
    let at = |args: &[&str]| cli_env(args, &[("DROVER_ADDR", api.as_str())]);

    // Nothing listening: exit 3, the address, and how to start a node.
    let out = cli_env(&["job", "list"], &[("DROVER_ADDR", "http://127.0.0.1:1")]);
    assert_fails(&out, 3, "http://127.0.0.1:1");
    assert!(stderr_of(&out).contains("is a node running there"));
    assert_eq!(stderr_of(&out).lines().count(), 1, "one line");
    // The REST port instead of the API port.
    let out = cli_env(&["job", "list"], &[("DROVER_ADDR", &cluster.http_url(0))]);
    assert_fails(&out, 3, "REST port");
    // A port that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = format!("http://{}", silent.local_addr().expect("addr"));
    let out = cli_env(&["job", "list"], &[("DROVER_ADDR", &silent_addr)]);
    assert_fails(&out, 3, "no answer from");
    drop(silent);

    // Bad input is exit 2; a refusal by the cluster is exit 1.
    assert_fails(&at(&["job", "status", "not-a-job-id"]), 2, "not a job id");
    assert_fails(
        &at(&["job", "status", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]),
        1,
        "no job with id 01ARZ3NDEKTSV4RRFFQ69G5FAV",
    );
    assert_fails(
        &at(&["job", "stop", "7ZZZZ"]),
        1,
        "no job id starts with `7ZZZZ`",
    );
    assert_fails(
        &at(&["job", "run", "--timeout", "soon", "--", "true"]),
        2,
        "soon",
    );

    // A typo gets the nearest command; --version names the build.
    let out = cli_env(&["jbo"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("did you mean `job`?"),
        "{}",
        stderr_of(&out)
    );
    let out = cli_env(&["--version"], &[]);
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with("drover ") && version.contains("(commit "),
        "{version}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn job_list_is_newest_first_fits_the_terminal_and_ids_can_be_shortened() {
    let cluster = Cluster::start(1, RaftSettings::default());
    cluster.wait_leader(ELECTION).await;
    let api = cluster.api_url(0);
    let at = |args: &[&str], columns: &str| {
        cli_env(args, &[("DROVER_ADDR", api.as_str()), ("COLUMNS", columns)])
    };
    let out = at(&["job", "list"], "80");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("no jobs yet"),
        "{}",
        stderr_of(&out)
    );

    // No executor: the jobs stay QUEUED, in submission order.
    let mut ids = Vec::new();
    for i in 0..3 {
        let long = format!("echo {i}; {}", "sleep 1; ".repeat(20));
        let out = at(&["job", "submit", "--", &long], "80");
        assert!(out.status.success(), "{}", stderr_of(&out));
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    for columns in ["60", "80", "132"] {
        let out = at(&["job", "list"], columns);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("ID ") && lines[0].contains("STATE"),
            "{text}"
        );
        // Room for every default column from 80 on; narrower, NODE goes first.
        assert_eq!(lines[0].contains("NODE"), columns != "60", "{text}");
        assert!(lines[1].starts_with(&ids[2]), "newest first: {text}");
        assert!(lines[3].starts_with(&ids[0]), "{text}");
        let width: usize = columns.parse().expect("a number");
        assert!(
            lines.iter().all(|l| l.chars().count() <= width),
            "{columns}: {text}"
        );
    }
    let wide = at(&["job", "list", "-o", "wide"], "60");
    let text = String::from_utf8_lossy(&wide.stdout).into_owned();
    assert!(
        text.contains("IMAGE") && text.contains(&"sleep 1; ".repeat(19)),
        "{text}"
    );
    let oldest = at(&["job", "list", "--oldest-first"], "80");
    let text = String::from_utf8_lossy(&oldest.stdout).into_owned();
    assert!(
        text.lines().nth(1).is_some_and(|l| l.starts_with(&ids[0])),
        "{text}"
    );

    // A unique start of an id names its job, in lower case too; one that
    // several ids share is refused with two of them.
    let newest = &ids[2];
    let short = newest[..20].to_lowercase();
    let out = at(&["job", "status", &short, "-o", "json"], "80");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let job: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(job["id"], newest.as_str());
    let shared: String = ids[0]
        .chars()
        .zip(ids[1].chars())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a)
        .collect();
    assert!(
        shared.len() >= 2,
        "ids of one second share their start: {ids:?}"
    );
    assert_fails(
        &at(&["job", "stop", &shared], "80"),
        2,
        "more than one job id",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_submit_through_a_killed_leader_goes_to_the_next_address() {
    let mut cluster = Cluster::start(3, RaftSettings::default());
    let leader = cluster.wait_leader(ELECTION).await;
    // Asked through a follower, list-peers shows the leader's view: every
    // member's progress; `--local` is the follower's own, which knows none.
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let peers = |extra: &[&str]| {
        let mut args = vec!["operator", "raft", "list-peers", "-o", "json"];
        args.extend(extra);
        let out = cli_at(&cluster, follower, &args);
        assert!(out.status.success(), "{}", stderr_of(&out));
        let view: Value = serde_json::from_slice(&out.stdout).expect("json");
        view["members"].as_array().expect("members").clone()
    };
    wait_for("the leader's view of every member", ELECTION, || async {
        peers(&[])
            .iter()
            .all(|m| m["match_index"].as_u64().is_some_and(|i| i > 0))
            .then_some(())
    })
    .await;
    assert!(
        peers(&["--local"])
            .iter()
            .all(|m| m["match_index"].is_null()),
        "a follower knows no one's progress"
    );
    let text = cli_at(
        &cluster,
        follower,
        &["operator", "raft", "list-peers", "--local"],
    );
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("  -  "),
        "unknown shown as -"
    );
    // The dead leader first: the CLI must move on by itself.
    let mut order = vec![leader];
    order.extend((0..3).filter(|i| *i != leader));
    let addresses: Vec<String> = order.iter().map(|i| cluster.api_url(*i)).collect();
    let addresses = addresses.join(",");
    cluster.kill(leader);
    let started = Instant::now();
    let out = cli_env(
        &["job", "submit", "--", "true"],
        &[("DROVER_ADDR", addresses.as_str())],
    );
    assert!(
        out.status.success(),
        "submit after a leader kill: {}",
        stderr_of(&out)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eprintln!("submitted {id} {:?} after the kill", started.elapsed());
    let survivor = order[1];
    let out = cli_at(&cluster, survivor, &["job", "status", &id, "-o", "json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_on_job_run_stops_the_job_and_a_second_leaves_it_running() {
    let Some(cluster) = Cluster::start_running_jobs(1, RaftSettings::default()) else {
        return;
    };
    cluster.wait_leader(ELECTION).await;
    let api = cluster.api_url(0);
    for presses in [1, 2] {
        // The job ignores SIGTERM, so a stop takes the node's stop grace
        // (2 s here) and a second Ctrl-C lands while it is being stopped.
        let mut child = Command::new(drover_bin())
            .args(["job", "run", "--", "trap '' TERM; echo started; sleep 60"])
            .env("DROVER_ADDR", &api)
            .env_remove("DROVER_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn job run");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the job's first line");
        assert_eq!(line, "started\n");
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        let pressed = Instant::now();
        for _ in 0..presses {
            // SAFETY: kill(2) on our own child, not yet waited for.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = child.wait_with_output().expect("job run exits");
        let left_after = pressed.elapsed();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(130), "{err}");
        let id = err
            .split_whitespace()
            .find(|w| w.len() == 26)
            .expect("the job id in the message")
            .to_string();
        assert!(err.contains(&format!("stopping job {id}")), "{err}");
        let state = || {
            let out = cli_env(
                &["job", "status", &id, "-o", "json"],
                &[("DROVER_ADDR", api.as_str())],
            );
            let job: Value = serde_json::from_slice(&out.stdout).expect("json");
            job["state"].as_str().unwrap_or_default().to_string()
        };
        if presses == 1 {
            // It waited for the end, then said how the job ended.
            assert_eq!(state(), "CANCELLED", "{err}");
            assert!(err.contains(&format!("job {id} CANCELLED")), "{err}");
        } else {
            assert!(
                err.contains(&format!("still running: drover job stop {id}")),
                "{err}"
            );
            assert!(
                left_after < Duration::from_secs(2),
                "left at once, not after the stop grace: {left_after:?}"
            );
            wait_for(
                "the stopped job to end",
                Duration::from_secs(30),
                || async { (state() == "CANCELLED").then_some(()) },
            )
            .await;
        }
    }
    remove_containers(&cluster.cluster_id);
}
