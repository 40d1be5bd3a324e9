//! Watching job state changes through real `drover agent` processes: over
//! gRPC (WatchJobs), the CLI (`drover job watch`) and REST (SSE at
//! `/v1/events`). The executor is off, so jobs stay QUEUED until stopped and
//! the only changes are the ones a test makes; the last test runs a job in
//! Docker and watches it through its retry.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::sse::read_sse;
use common::{drover_bin, wait_for, Cluster, RaftSettings};
use drover::proto::v1 as pb;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

const ELECTION: Duration = Duration::from_secs(20);
/// How long a test waits for events it expects.
const EVENTS_WAIT: Duration = Duration::from_secs(30);
const PROBLEM: &str = "https://drover.dev/problems/";

/// (index, kind, job id, state) of an event: what the tests compare.
type Seen = (u64, String, String, String);

fn seen(e: &pb::JobEvent) -> Seen {
    (e.index, e.kind.clone(), e.job_id.clone(), e.state.clone())
}

async fn client_of(cluster: &Cluster, i: usize) -> common::Client {
    wait_for("a gRPC connection", ELECTION, || cluster.client(i)).await
}

async fn list_index(client: &mut common::Client) -> u64 {
    let page = client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect("list jobs")
        .into_inner();
    assert!(page.index > 0, "a list names the index it was read at");
    page.index
}

async fn watch(
    client: &mut common::Client,
    from_index: u64,
) -> Result<tonic::Streaming<pb::JobEvent>, tonic::Status> {
    client
        .watch_jobs(pb::WatchJobsRequest {
            from_index,
            job_id: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Events of `stream` up to and including the CREATED event of `marker`.
async fn events_until(stream: &mut tonic::Streaming<pb::JobEvent>, marker: &str) -> Vec<Seen> {
    let deadline = tokio::time::Instant::now() + EVENTS_WAIT;
    let mut events = Vec::new();
    loop {
        let next = tokio::time::timeout_at(deadline, stream.message()).await;
        let event = match next {
            Ok(Ok(Some(event))) => event,
            other => panic!("no event for the marker job {marker}: {other:?}; so far {events:?}"),
        };
        let done = event.job_id == marker && event.kind == "CREATED";
        events.push(seen(&event));
        if done {
            return events;
        }
    }
}

async fn submit(client: &mut common::Client, command: &str) -> pb::Job {
    common::submit_job(client, command).await.expect("submit")
}

/// Three jobs submitted, the second stopped, then a marker job: returns the
/// events a watch from before them must show, in order.
async fn make_changes(client: &mut common::Client) -> (Vec<Seen>, String) {
    let mut jobs = Vec::new();
    for n in 0..3 {
        jobs.push(submit(client, &format!("echo {n}")).await);
    }
    let stopped = client
        .stop_job(pb::StopJobRequest {
            id: jobs[1].id.clone(),
        })
        .await
        .expect("stop")
        .into_inner()
        .job
        .expect("a job");
    assert_eq!(stopped.state, "CANCELLED");
    // Stopping again changes nothing, so it makes no event.
    client
        .stop_job(pb::StopJobRequest {
            id: jobs[1].id.clone(),
        })
        .await
        .expect("stop again");
    let marker = submit(client, "echo marker").await;
    let created = |job: &pb::Job| {
        (
            job.index,
            "CREATED".to_string(),
            job.id.clone(),
            "QUEUED".to_string(),
        )
    };
    let mut expected: Vec<Seen> = jobs.iter().map(created).collect();
    // The cancel's index is between the third job's and the marker's.
    expected.push((0, "UPDATED".into(), jobs[1].id.clone(), "CANCELLED".into()));
    expected.push(created(&marker));
    (expected, marker.id)
}

/// Checks `got` against `expected` (whose cancel index is unknown: 0) and
/// that indexes rise strictly, all after `from`.
fn assert_events(what: &str, got: &[Seen], expected: &[Seen], from: u64) {
    assert_eq!(got.len(), expected.len(), "{what}: {got:?}");
    for (g, e) in got.iter().zip(expected) {
        assert_eq!((&g.1, &g.2, &g.3), (&e.1, &e.2, &e.3), "{what}: {got:?}");
        if e.0 != 0 {
            assert_eq!(g.0, e.0, "{what}: {got:?}");
        }
    }
    assert!(got[0].0 > from, "{what}: {got:?} starts after {from}");
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "{what}: indexes rise: {got:?}"
    );
}

/// Runs `drover job watch` with `args`; its stdout lines arrive on the
/// returned channel. The child is killed by the caller.
fn cli_watch(
    cluster: &Cluster,
    args: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(drover_bin())
        .args(["job", "watch"])
        .args(args)
        .env("DROVER_ADDR", cluster.addresses())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run drover job watch");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn list_then_watch_sees_every_change_once_in_order() {
    let cluster = Cluster::start(1, RaftSettings::default());
    cluster.wait_leader(ELECTION).await;
    let mut client = client_of(&cluster, 0).await;
    let from = list_index(&mut client).await;

    // One watch is live before the changes, the others replay them.
    let mut live = watch(&mut client, from).await.expect("watch");
    let from_text = from.to_string();
    let (mut cli, lines) = cli_watch(&cluster, &["--from-index", &from_text, "--output", "json"]);
    let (expected, marker) = make_changes(&mut client).await;
    let got = events_until(&mut live, &marker).await;
    assert_events("live watch", &got, &expected, from);
    let mut replay = watch(&mut client, from).await.expect("watch");
    let replayed = events_until(&mut replay, &marker).await;
    assert_eq!(replayed, got, "a replay shows what the live watch saw");

    // The CLI prints the same events, one JSON object per line.
    let mut printed = Vec::new();
    let deadline = std::time::Instant::now() + EVENTS_WAIT;
    while printed.len() < expected.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            let _ = cli.kill();
            let out = cli.wait_with_output().expect("cli output");
            panic!(
                "the CLI printed {printed:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let event: Value = serde_json::from_str(&line).expect("a JSON line");
        printed.push((
            event["index"].as_u64().expect("index"),
            event["kind"].as_str().expect("kind").to_string(),
            event["job_id"].as_str().expect("job_id").to_string(),
            event["state"].as_str().expect("state").to_string(),
        ));
    }
    let _ = cli.kill();
    let _ = cli.wait();
    assert_eq!(printed, got, "the CLI prints what gRPC sends");

    // A filtered watch sees only its job.
    let cancelled = &expected[3].2;
    let mut one = client
        .watch_jobs(pb::WatchJobsRequest {
            from_index: from,
            job_id: cancelled.clone(),
        })
        .await
        .expect("watch one job")
        .into_inner();
    let mut mine = Vec::new();
    while mine.len() < 2 {
        let event = tokio::time::timeout(EVENTS_WAIT, one.message())
            .await
            .expect("an event in time")
            .expect("no error")
            .expect("the stream goes on");
        assert_eq!(&event.job_id, cancelled);
        assert!(event.last_in_entry);
        mine.push(event.state);
    }
    assert_eq!(mine, ["QUEUED", "CANCELLED"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_serves_the_same_events_as_the_leader() {
    let cluster = Cluster::start(3, RaftSettings::default());
    let leader = cluster.wait_leader(ELECTION).await;
    let follower = (leader + 1) % 3;
    let mut on_follower = client_of(&cluster, follower).await;
    let mut on_leader = client_of(&cluster, leader).await;
    // Listed on the follower, watched on both.
    let from = list_index(&mut on_follower).await;
    let mut follower_watch = watch(&mut on_follower, from).await.expect("watch");
    let mut leader_watch = watch(&mut on_leader, from).await.expect("watch");
    // Written through the follower (forwarded to the leader).
    let (expected, marker) = make_changes(&mut on_follower).await;
    let from_follower = events_until(&mut follower_watch, &marker).await;
    assert_events("follower watch", &from_follower, &expected, from);
    let from_leader = events_until(&mut leader_watch, &marker).await;
    assert_eq!(
        from_leader, from_follower,
        "every node derives the same events"
    );
    // The third node, watched afterwards, replays the same.
    let third = (leader + 2) % 3;
    let mut on_third = client_of(&cluster, third).await;
    let mut replay = watch(&mut on_third, from).await.expect("watch");
    assert_eq!(events_until(&mut replay, &marker).await, from_follower);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_from_before_a_restart_is_out_of_range() {
    let mut cluster = Cluster::start(1, RaftSettings::default());
    cluster.wait_leader(ELECTION).await;
    let mut client = client_of(&cluster, 0).await;
    let first = submit(&mut client, "echo 1").await;
    // A later write's fsync also covers the first one's apply.
    submit(&mut client, "echo 2").await;
    cluster.kill(0);
    cluster.restart(0);
    cluster.wait_leader(ELECTION).await;
    let mut client = client_of(&cluster, 0).await;

    // The events of the entries applied before the restart are gone.
    let status = watch(&mut client, first.index - 1)
        .await
        .expect_err("the events before the restart are not held");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("list"), "{status:?}");

    // Same over REST: 410 with a problem.
    let base = cluster.http_url(0);
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{base}/v1/events?from_index={}", first.index - 1))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("GET /v1/events");
    assert_eq!(response.status(), StatusCode::GONE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.expect("a problem");
    assert_eq!(problem["type"], format!("{PROBLEM}out-of-range"));
    assert_eq!(problem["status"], 410);

    // And the CLI says so, with exit code 1.
    let out = cluster.cli(&["job", "watch", "--from-index", "1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no longer holds the job events after index 1"),
        "{out:?}"
    );

    // Listing again gives an index to watch from.
    let from = list_index(&mut client).await;
    let mut stream = watch(&mut client, from)
        .await
        .expect("watch from a new list");
    let job = submit(&mut client, "echo 3").await;
    let got = events_until(&mut stream, &job.id).await;
    assert_eq!(
        got,
        vec![(job.index, "CREATED".into(), job.id.clone(), "QUEUED".into())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_watch_resumes_with_last_event_id() {
    let cluster = Cluster::start(1, RaftSettings::default());
    cluster.wait_leader(ELECTION).await;
    let mut client = client_of(&cluster, 0).await;
    let base = cluster.http_url(0);
    let http = reqwest::Client::new();
    let page: Value = http
        .get(format!("{base}/v1/jobs"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("a page");
    let from = page["index"].as_u64().expect("the list's index");
    let a = submit(&mut client, "echo a").await;
    let b = submit(&mut client, "echo b").await;

    let url = format!("{base}/v1/events?from_index={from}");
    let response = http.get(&url).send().await.expect("watch");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .is_ok_and(|v| v.starts_with("text/event-stream")));
    let events = read_sse(response, EVENTS_WAIT, |e| e.len() >= 2).await;
    let json: Vec<Value> = events
        .iter()
        .map(|e| {
            assert_eq!(e.event, "job", "{e:?}");
            serde_json::from_str(&e.data).expect("event JSON")
        })
        .collect();
    assert_eq!(json[0]["job_id"], a.id.as_str());
    assert_eq!(json[0]["kind"], "CREATED");
    assert_eq!(json[0]["state"], "QUEUED");
    assert_eq!(json[0]["reason"], Value::Null);
    assert_eq!(json[1]["job_id"], b.id.as_str());
    assert_eq!(events[1].id, Some(b.index.to_string()), "id: the index");
    // The connection is gone (dropped with its body); changes go on.
    client
        .stop_job(pb::StopJobRequest { id: a.id.clone() })
        .await
        .expect("stop");
    let c = submit(&mut client, "echo c").await;

    // Reconnect as an EventSource does: same URL, Last-Event-ID.
    let response = http
        .get(&url)
        .header("last-event-id", b.index.to_string())
        .send()
        .await
        .expect("resume");
    assert_eq!(response.status(), StatusCode::OK);
    let events = read_sse(response, EVENTS_WAIT, |e| e.len() >= 2).await;
    let json: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).expect("event JSON"))
        .collect();
    assert_eq!(json[0]["job_id"], a.id.as_str(), "{json:?}");
    assert_eq!(json[0]["kind"], "UPDATED");
    assert_eq!(json[0]["state"], "CANCELLED");
    assert_eq!(
        json[0]["reason"],
        Value::Null,
        "a job stopped while queued has no attempt: {json:?}"
    );
    assert_eq!(json[1]["job_id"], c.id.as_str());
    assert!(json[0]["index"].as_u64() > Some(b.index));
    assert_eq!(events[1].id, Some(c.index.to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn open_watches_end_when_the_node_shuts_down() {
    let mut cluster = Cluster::start(1, RaftSettings::default());
    cluster.wait_leader(ELECTION).await;
    let mut client = client_of(&cluster, 0).await;
    let mut stream = watch(&mut client, 0).await.expect("watch from now");
    let base = cluster.http_url(0);
    let sse = reqwest::Client::new()
        .get(format!("{base}/v1/events"))
        .send()
        .await
        .expect("SSE watch");
    assert_eq!(sse.status(), StatusCode::OK);

    assert!(cluster.is_running(0));
    cluster.signal(0, libc::SIGTERM);
    let ended = tokio::time::timeout(Duration::from_secs(15), stream.message())
        .await
        .expect("the watch ends at shutdown");
    match ended {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        Ok(None) => {}
        Ok(Some(event)) => panic!("no change was made, yet {event:?}"),
    }
    let mut body = sse.bytes_stream();
    let sse_end = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(sse_end.is_ok(), "the SSE watch ends at shutdown");
    let exited = cluster.wait_exit(0, Duration::from_secs(15));
    assert!(
        exited.is_some_and(|s| s.success()),
        "a clean exit within 15 s: {exited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_job_is_watched_through_every_attempt() {
    let Some(cluster) = Cluster::start_running_jobs(1, RaftSettings::default()) else {
        return;
    };
    cluster.wait_leader(ELECTION).await;
    let mut client = client_of(&cluster, 0).await;
    let spec = pb::JobSpec {
        command: "[ \"$DROVER_ATTEMPT\" -ge 2 ] || exit 3".into(),
        retry: Some(pb::RetryPolicy {
            max_attempts: 2,
            initial_backoff_ms: 100,
            ..Default::default()
        }),
        ..Default::default()
    };
    let job = client
        .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
        .await
        .expect("submit")
        .into_inner()
        .job
        .expect("a job");
    // Watched after the submission, from just before it: nothing is lost.
    let mut stream = client
        .watch_jobs(pb::WatchJobsRequest {
            from_index: job.index - 1,
            job_id: job.id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut got: Vec<(String, u32, u64, String)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.last().is_none_or(|(state, ..)| state != "SUCCEEDED") {
        let event = match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(event))) => event,
            other => panic!("{other:?}; so far {got:?}\n{}", cluster.log_tail(0)),
        };
        assert!(event.at_ms > 0, "{event:?}");
        got.push((event.state, event.attempt, event.node, event.reason));
    }
    let step = |state: &str, attempt: u32, node: u64, reason: &str| {
        (state.to_string(), attempt, node, reason.to_string())
    };
    assert_eq!(
        got,
        vec![
            step("QUEUED", 0, 0, ""),
            step("ASSIGNED", 1, 1, ""),
            step("RUNNING", 1, 1, ""),
            // The first attempt failed: a retry, queued again.
            step("QUEUED", 1, 1, "EXIT_CODE"),
            step("ASSIGNED", 2, 1, ""),
            step("RUNNING", 2, 1, ""),
            step("SUCCEEDED", 2, 1, "EXIT_CODE"),
        ]
    );
}

/// One token cannot take every watch slot of a node: past its own cap it
/// gets RESOURCE_EXHAUSTED, another token still watches, and a closed
/// watch gives its slot back.
#[tokio::test(flavor = "multi_thread")]
async fn one_token_holds_at_most_its_share_of_watches() {
    const PER_TOKEN: usize = 64; // api::caps::WATCHES_PER_TOKEN
    let settings = RaftSettings {
        acl: true,
        ..RaftSettings::default()
    };
    let mut cluster = Cluster::start(1, settings);
    cluster.bootstrap_over_socket(ELECTION).await;
    let token = |name: &str| cluster.create_token(name, "viewer").1;
    let (greedy, other) = (token("greedy"), token("other"));
    let mut greedy_client = cluster.client_with(0, Some(&greedy)).await.expect("client");
    let mut held = Vec::new();
    for _ in 0..PER_TOKEN {
        let stream = greedy_client
            .watch_jobs(pb::WatchJobsRequest::default())
            .await
            .expect("a watch within the cap")
            .into_inner();
        held.push(stream);
    }
    let refused = greedy_client
        .watch_jobs(pb::WatchJobsRequest::default())
        .await
        .expect_err("one watch too many");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.message().contains("this token"), "{refused:?}");

    let mut other_client = cluster.client_with(0, Some(&other)).await.expect("client");
    other_client
        .watch_jobs(pb::WatchJobsRequest::default())
        .await
        .expect("another token still watches");

    // Followed output is capped the same way (a queued job: the streams
    // wait for it to start, each holding its slot).
    let mut admin = cluster.client(0).await.expect("admin client");
    let job = common::submit(&mut admin, "true").await.expect("submit");
    let follow = || pb::StreamJobOutputRequest {
        id: job.clone(),
        follow: true,
        ..Default::default()
    };
    let mut followed = Vec::new();
    for _ in 0..PER_TOKEN {
        let stream = greedy_client
            .stream_job_output(follow())
            .await
            .expect("a followed output within the cap")
            .into_inner();
        followed.push(stream);
    }
    let refused = greedy_client
        .stream_job_output(follow())
        .await
        .expect_err("one followed output too many");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );

    // Closing one gives its slot back (the server notices the reset).
    drop(held.pop());
    wait_for("a slot back", ELECTION, || {
        let mut client = greedy_client.clone();
        async move {
            client
                .watch_jobs(pb::WatchJobsRequest::default())
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
}
