//! `GET /metrics` through real `drover agent` processes: every value is read
//! by parsing the served text, before and after something happens, and must
//! move the way the README says. Also checks `--log-format json`: every log
//! line is a JSON object, and (with Docker) an attempt's lines carry its job
//! id and attempt number as fields.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{wait_for, Cluster, RaftSettings};
use reqwest::{Client, StatusCode};
use serde_json::Value;

const ELECTION: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_secs(30);
const JOB_WAIT: Duration = Duration::from_secs(60);

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone)]
struct Scrape {
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of `name` with exactly `labels`; panics if absent, so a
    /// renamed metric fails loudly rather than reading as 0.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.try_get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in the scrape"))
    }

    fn try_get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    fn role(&self) -> Option<&str> {
        ["leader", "follower", "candidate", "pre_candidate"]
            .into_iter()
            .find(|r| self.get("drover_raft_role", &[("role", r)]) == 1.0)
    }
}

/// Parses the Prometheus / OpenMetrics text format: comments skipped,
/// label values unescaped (`\\`, `\"`, `\n`), an optional timestamp ignored.
fn parse(text: &str) -> Scrape {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("sample without a value: {line:?}"));
        let name = line[..name_end].to_string();
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            let mut consumed = None;
            loop {
                // key
                let mut key = String::new();
                while let Some(&(i, c)) = chars.peek() {
                    if c == '}' {
                        consumed = Some(i + 1);
                        break;
                    }
                    chars.next();
                    if c == '=' {
                        break;
                    }
                    if c != ',' {
                        key.push(c);
                    }
                }
                if consumed.is_some() {
                    break;
                }
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line:?}");
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => panic!("dangling escape in {line:?}"),
                        },
                        Some((_, '"')) => break,
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value in {line:?}"),
                    }
                }
                labels.insert(key, value);
            }
            rest = &inner[consumed.expect("closing brace")..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("sample without a value: {line:?}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    Scrape { samples }
}

#[test]
fn the_parser_reads_labels_escapes_and_special_values() {
    let scrape = parse(
        "# HELP x a help\n# TYPE x gauge\nx 3\ny_total{a=\"1\",b=\"q\\\"uote\\\\\"} 2.5\n\
         h_bucket{le=\"+Inf\"} 7 1700000000\nz +Inf\n# EOF\n",
    );
    assert_eq!(scrape.get("x", &[]), 3.0);
    assert_eq!(
        scrape.get("y_total", &[("a", "1"), ("b", "q\"uote\\")]),
        2.5
    );
    assert_eq!(scrape.get("h_bucket", &[("le", "+Inf")]), 7.0);
    assert_eq!(scrape.get("z", &[]), f64::INFINITY);
    assert!(scrape.try_get("y_total", &[("a", "1")]).is_none());
}

/// Scrapes node `i` without any token; None while it does not answer.
async fn scrape(http: &Client, cluster: &Cluster, i: usize) -> Option<Scrape> {
    let response = http
        .get(format!("{}/metrics", cluster.http_url(i)))
        .send()
        .await
        .ok()?;
    assert_eq!(response.status(), StatusCode::OK, "/metrics of node {i}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.ok()?;
    assert!(
        text.ends_with("# EOF\n"),
        "an OpenMetrics scrape ends with # EOF"
    );
    Some(parse(&text))
}

/// Scrapes every node in `nodes` until `ok` holds for all of them together.
async fn scrape_until(
    http: &Client,
    cluster: &Cluster,
    nodes: &[usize],
    what: &str,
    ok: impl Fn(&[Scrape]) -> bool,
) -> Vec<Scrape> {
    wait_for(what, SETTLE, || async {
        let mut all = Vec::new();
        for &i in nodes {
            all.push(scrape(http, cluster, i).await?);
        }
        ok(&all).then_some(all)
    })
    .await
}

/// A settled cluster: all in one term > 0, exactly one leader that every
/// node names, everything committed is applied.
fn settled(scrapes: &[Scrape]) -> bool {
    let term = scrapes[0].get("drover_raft_term", &[]);
    let leaders = scrapes
        .iter()
        .filter(|s| s.role() == Some("leader"))
        .count();
    let named = scrapes[0].get("drover_raft_leader", &[]);
    term > 0.0
        && leaders == 1
        && named > 0.0
        && scrapes.iter().all(|s| {
            s.get("drover_raft_term", &[]) == term
                && s.get("drover_raft_leader", &[]) == named
                && s.get("drover_raft_apply_lag", &[]) == 0.0
        })
}

/// Every line of node `i`'s log is a JSON object from the tracing
/// subscriber, except the one plain banner the agent prints on stdout.
fn json_log_lines(cluster: &Cluster, i: usize) -> Vec<Value> {
    let text = std::fs::read_to_string(&cluster.nodes[i].log_path).expect("node log");
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with("drover node ") {
            continue; // "drover node N listening: ..." (stdout, for humans)
        }
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("node {i} logged a non-JSON line ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
        lines.push(value);
    }
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_with_writes_and_leader_changes() {
    // ACLs on: /metrics must answer without a token all the same.
    let mut cluster = Cluster::start(
        3,
        RaftSettings {
            acl: true,
            agent_args: vec!["--log-format".into(), "json".into()],
            ..RaftSettings::default()
        },
    );
    let http = client();
    // Bootstrap once a leader exists: before, no token exists and every
    // authenticated call (cluster.wait_leader's included) is refused.
    cluster.bootstrap_over_socket(ELECTION).await;
    let unauthenticated = http
        .get(format!("{}/v1/jobs", cluster.http_url(0)))
        .send()
        .await
        .expect("GET /v1/jobs");
    assert_eq!(
        unauthenticated.status(),
        StatusCode::UNAUTHORIZED,
        "ACLs are on, yet /metrics is scraped without a token below"
    );

    let all = [0, 1, 2];
    let before = scrape_until(&http, &cluster, &all, "a settled cluster", settled).await;
    let leader = before
        .iter()
        .position(|s| s.role() == Some("leader"))
        .expect("one leader");
    for (i, s) in before.iter().enumerate() {
        assert!(s.get("drover_raft_term", &[]) > 0.0, "node {i}");
        assert!(
            s.get("drover_raft_leader_changes_total", &[]) >= 1.0,
            "node {i} has seen its first leader"
        );
        assert_eq!(s.get("drover_jobs", &[("state", "queued")]), 0.0);
        assert_eq!(s.get("drover_queue_depth", &[]), 0.0);
        assert_eq!(s.get("drover_queue_capacity", &[]), 100_000.0);
        assert_eq!(s.get("drover_executor_running_containers", &[]), 0.0);
    }

    // Five jobs through the leader: the executor is off, so they stay QUEUED.
    const JOBS: f64 = 5.0;
    let mut client = cluster.client(leader).await.expect("leader client");
    for n in 0..JOBS as usize {
        common::submit(&mut client, &format!("echo {n}"))
            .await
            .expect("submit");
    }
    let after = scrape_until(&http, &cluster, &all, "every node to apply the jobs", |s| {
        settled(s) && s.iter().all(|s| s.get("drover_queue_depth", &[]) == JOBS)
    })
    .await;
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        for index in [
            "drover_raft_commit_index",
            "drover_raft_applied_index",
            "drover_raft_last_index",
        ] {
            assert!(
                a.get(index, &[]) >= b.get(index, &[]) + JOBS,
                "node {i}: {index} moved from {} to {}",
                b.get(index, &[]),
                a.get(index, &[])
            );
        }
        assert!(
            a.get("drover_store_fsync_duration_seconds_count", &[])
                > b.get("drover_store_fsync_duration_seconds_count", &[]),
            "node {i} fsynced the new entries"
        );
        assert!(a.get("drover_store_fsync_duration_seconds_sum", &[]) > 0.0);
        assert_eq!(
            a.get(
                "drover_store_fsync_duration_seconds_bucket",
                &[("le", "+Inf")]
            ),
            a.get("drover_store_fsync_duration_seconds_count", &[])
        );
        assert_eq!(a.get("drover_jobs", &[("state", "queued")]), JOBS);
        assert_eq!(a.get("drover_jobs", &[("state", "active")]), 0.0);
        assert_eq!(a.get("drover_jobs", &[("state", "finished")]), 0.0);
    }
    let committed = |s: &Scrape| s.get("drover_raft_proposals_committed_total", &[]);
    assert!(
        committed(&after[leader]) >= committed(&before[leader]) + JOBS,
        "the leader answered {} proposals before and {} after",
        committed(&before[leader]),
        committed(&after[leader])
    );

    // Kill the leader: each survivor sees a new one.
    cluster.kill(leader);
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let changes = |s: &Scrape| s.get("drover_raft_leader_changes_total", &[]);
    let later = scrape_until(&http, &cluster, &survivors, "a new leader", |s| {
        s.iter().filter(|s| s.role() == Some("leader")).count() == 1
            && s.iter().all(|s| {
                let named = s.get("drover_raft_leader", &[]);
                named > 0.0 && named != (leader + 1) as f64
            })
    })
    .await;
    for (&i, s) in survivors.iter().zip(&later) {
        assert!(
            changes(s) > changes(&after[i]),
            "node {i}: leader changes {} before the kill, {} after",
            changes(&after[i]),
            changes(s)
        );
        assert!(s.get("drover_raft_term", &[]) > after[i].get("drover_raft_term", &[]));
    }

    // --log-format json: every line of every node is a JSON object.
    for i in all {
        assert!(!json_log_lines(&cluster, i).is_empty(), "node {i} logged");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn running_containers_follow_a_job_and_logs_name_its_attempt() {
    let Some(cluster) = Cluster::start_running_jobs(
        1,
        RaftSettings {
            agent_args: vec!["--log-format".into(), "json".into()],
            ..RaftSettings::default()
        },
    ) else {
        return;
    };
    let http = client();
    cluster.wait_leader(ELECTION).await;
    let before = scrape_until(&http, &cluster, &[0], "a leader", settled).await;
    assert_eq!(
        before[0].get("drover_executor_running_containers", &[]),
        0.0
    );

    let mut client = cluster.client(0).await.expect("client");
    let id = common::submit(&mut client, "sleep 4")
        .await
        .expect("submit");
    let running = wait_for("the container to run", JOB_WAIT, || async {
        let s = scrape(&http, &cluster, 0).await?;
        (s.get("drover_executor_running_containers", &[]) == 1.0).then_some(s)
    })
    .await;
    assert_eq!(running.get("drover_queue_depth", &[]), 0.0);
    let done = wait_for(
        "the job to end and its container to go",
        JOB_WAIT,
        || async {
            let s = scrape(&http, &cluster, 0).await?;
            (s.get("drover_executor_running_containers", &[]) == 0.0
                && s.get("drover_jobs", &[("state", "finished")]) == 1.0)
                .then_some(s)
        },
    )
    .await;
    assert_eq!(done.get("drover_jobs", &[("state", "active")]), 0.0);
    for op in ["connect", "list", "start", "wait", "stop", "remove"] {
        assert_eq!(
            done.get("drover_executor_errors_total", &[("op", op)]),
            0.0,
            "{op}"
        );
    }

    // The attempt's log lines carry its job id and attempt number.
    let lines = json_log_lines(&cluster, 0);
    let ended = lines.iter().find(|l| {
        l["fields"]["message"] == "attempt ended"
            && l["span"]["name"] == "attempt"
            && l["span"]["job"] == id.as_str()
            && l["span"]["attempt"] == 1
    });
    assert!(
        ended.is_some(),
        "no `attempt ended` line with job {id} and attempt 1 in:\n{}",
        lines
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
