//! The REST API through real `drover agent` processes and a real HTTP client.
//! Every test but the last runs with the executor off (jobs stay QUEUED, no
//! Docker needed); the last follows a real job's output over SSE.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::sse::read_sse;
use common::{wait_for, Cluster, RaftSettings};
use futures::StreamExt as _;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const ELECTION: Duration = Duration::from_secs(20);
const PROBLEM: &str = "https://drover.dev/problems/";
/// A well-formed job id no job has.
const UNKNOWN_ID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// Sends a request with a raw body and content type; returns status,
/// headers and the body parsed as JSON (Null if it is not JSON).
async fn call(
    http: &Client,
    method: Method,
    url: &str,
    content_type: Option<&str>,
    body: Option<String>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = http.request(method.clone(), url);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("response body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

/// A GET that must answer 200; its JSON.
async fn get_ok(http: &Client, url: &str) -> Value {
    let (status, _, body) = call(http, Method::GET, url, None, None).await;
    assert_eq!(status, StatusCode::OK, "{url}: {body}");
    body
}

async fn submit(
    http: &Client,
    base: &str,
    spec: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    call(
        http,
        Method::POST,
        &format!("{base}/v1/jobs"),
        Some("application/json"),
        Some(spec.to_string()),
    )
    .await
}

/// Every job id, walking pages of `page_size`; also returns the page count.
async fn list_all(http: &Client, base: &str, page_size: u32) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let url = format!("{base}/v1/jobs?page_size={page_size}&page_token={token}");
        let (status, _, page) = call(http, Method::GET, &url, None, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        let jobs = page["jobs"].as_array().expect("jobs array");
        assert!(jobs.len() <= page_size as usize);
        ids.extend(
            jobs.iter()
                .map(|j| j["id"].as_str().expect("id").to_string()),
        );
        token = page["next_page_token"].as_str().expect("token").to_string();
        if token.is_empty() {
            return (ids, pages);
        }
        assert!(pages < 1000, "pagination does not end");
    }
}

/// Waits for the REST listener and a leader, so tests start from a ready node.
async fn wait_ready(http: &Client, base: &str) {
    wait_for("/v1/ready to answer 200", ELECTION, || async {
        let response = http.get(format!("{base}/v1/ready")).send().await.ok()?;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;
}

fn assert_problem(
    what: &str,
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    slug: &str,
) {
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{what}: {status} {body}"
    );
    assert_eq!(body["type"], format!("{PROBLEM}{slug}"), "{what}: {body}");
    assert_eq!(body["status"], status.as_u16(), "{what}: {body}");
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{what}: {body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "{what}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_get_list_with_pagination_and_stop_a_queued_job() {
    let cluster = Cluster::start(1, RaftSettings::default());
    let http = client();
    let base = cluster.http_url(0);
    wait_ready(&http, &base).await;

    // Submit: 201, the job JSON, its location and the leader's address.
    let spec = json!({
        "command": "echo hi",
        "env": { "GREETING": "hello" },
        "resources": { "cpu_millis": 250 },
        "retry": { "max_attempts": 3, "initial_backoff_ms": 500 },
        "priority": 5,
        "labels": { "team": "a" },
        "timeout_ms": 60000
    });
    let (status, headers, job) = submit(&http, &base, spec).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 26);
    assert_eq!(headers["location"], format!("/v1/jobs/{id}").as_str());
    assert_eq!(headers["x-drover-leader"], cluster.nodes[0].http.as_str());
    assert_eq!(
        headers["x-drover-leader-grpc"],
        cluster.nodes[0].api.as_str()
    );
    assert_eq!(job["state"], "QUEUED");
    assert_eq!(job["command"], "echo hi");
    assert_eq!(job["env"], json!({ "GREETING": "hello" }));
    assert_eq!(
        job["resources"],
        json!({ "cpu_millis": 250, "memory_mib": 128, "pids": 256 })
    );
    assert_eq!(job["retry"]["max_attempts"], 3);
    assert_eq!(job["priority"], 5);
    assert_eq!(job["labels"], json!({ "team": "a" }));
    assert_eq!(job["image"], "drover-job:latest");
    assert_eq!(job["attempts"], json!([]));
    assert_eq!(job["finished_at_ms"], Value::Null);

    // Get, locally and linearizably: the same job.
    for query in ["", "?consistent=true"] {
        let (status, _, got) = call(
            &http,
            Method::GET,
            &format!("{base}/v1/jobs/{id}{query}"),
            None,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got, job);
    }

    // Argument vector form and an idempotency key (a resubmission answers
    // with the first job).
    let keyed = json!({ "args": ["echo", "x"], "idempotency_key": "k1" });
    let (status, _, first) = submit(&http, &base, keyed.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["args"], json!(["echo", "x"]));
    assert_eq!(first["command"], Value::Null);
    let (_, _, again) = submit(&http, &base, keyed).await;
    assert_eq!(again["id"], first["id"]);

    // Five more; list 7 jobs over pages of 3: 3 pages, in submission order,
    // none missing, none repeated.
    let mut expected = vec![id.clone(), first["id"].as_str().expect("id").to_string()];
    for n in 0..5 {
        let (status, _, job) =
            submit(&http, &base, json!({ "command": format!("echo {n}") })).await;
        assert_eq!(status, StatusCode::CREATED);
        expected.push(job["id"].as_str().expect("id").to_string());
    }
    let (ids, pages) = list_all(&http, &base, 3).await;
    assert_eq!(pages, 3);
    assert_eq!(ids, expected);
    let (status, _, page) = call(
        &http,
        Method::GET,
        &format!("{base}/v1/jobs?consistent=true"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(7));
    assert_eq!(page["next_page_token"], "");

    // Stop a queued job: CANCELLED; stopping again changes nothing.
    for _ in 0..2 {
        let (status, _, stopped) = call(
            &http,
            Method::POST,
            &format!("{base}/v1/jobs/{id}/stop"),
            Some("application/json"),
            Some("{}".into()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{stopped}");
        assert_eq!(stopped["state"], "CANCELLED");
        assert!(stopped["finished_at_ms"].is_i64());
    }

    // Output of a job that never ran: no attempt, no chunks.
    let (status, _, output) = call(
        &http,
        Method::GET,
        &format!("{base}/v1/jobs/{id}/output"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{output}");
    assert_eq!(output["chunks"], json!([]));
}

/// (what, method, path, content type, body, accepted statuses, problem type)
type Case<'a> = (
    &'a str,
    Method,
    String,
    Option<&'a str>,
    Option<String>,
    &'a [u16],
    &'a str,
);

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_get_typed_problems_and_write_nothing() {
    let cluster = Cluster::start(1, RaftSettings::default());
    let http = client();
    let base = cluster.http_url(0);
    wait_ready(&http, &base).await;
    let (status, _, _) = submit(&http, &base, json!({ "command": "true" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let (before, _) = list_all(&http, &base, 1000).await;
    let index_before = cluster_index(&http, &base).await;

    let json_ct = Some("application/json");
    let huge = format!("{{\"command\": \"{}\"}}", "x".repeat(1 << 20));
    let long = json!({ "command": "x".repeat(20 * 1024) }).to_string();
    let cases: Vec<Case> = vec![
        (
            "empty command",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": ""}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "nothing to run",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some("{}".into()),
            &[400],
            "invalid-argument",
        ),
        (
            "1 MiB command (body over the limit)",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(huge),
            &[413],
            "payload-too-large",
        ),
        (
            "20 KiB command (over the spec limit)",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(long),
            &[400],
            "invalid-argument",
        ),
        (
            "invalid image reference",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "true", "image": "bad image!"}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "image outside the reference grammar",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "true", "image": "UPPER::bad@@"}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "image digest of the wrong length",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "true", "image": "busybox@sha256:zz"}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "NUL in a constraint key",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "true", "constraints": {"zo\u0000ne": "a"}}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "user given by name (it would resolve in the image)",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "true", "user": "root"}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "root user where the policy lets no job choose",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "true", "user": "0:0"}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "NUL in the user",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "true", "user": "1000\u0000"}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "NUL in a label value",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "true", "labels": {"team": "a\u0000"}}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "NUL in an env value",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "true", "env": {"A": "x\u0000"}}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "NUL in the idempotency key",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "true", "idempotency_key": "k\u0000"}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "absurd cpu",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "true", "resources": {"cpu_millis": 999999999}}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "negative memory",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "true", "resources": {"memory_mib": -5}}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "both command and args",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "true", "args": ["true"]}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "malformed JSON",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "wrong content type",
            Method::POST,
            "/v1/jobs".into(),
            Some("text/plain"),
            Some(r#"{"command": "true"}"#.into()),
            &[415],
            "unsupported-media-type",
        ),
        (
            "no content type",
            Method::POST,
            "/v1/jobs".into(),
            None,
            Some(r#"{"command": "true"}"#.into()),
            &[415],
            "unsupported-media-type",
        ),
        (
            "unknown field",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "true", "comand": "x"}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "unknown nested field",
            Method::POST,
            "/v1/jobs".into(),
            json_ct,
            Some(r#"{"command": "true", "resources": {"cpus": 1}}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "unknown job id",
            Method::GET,
            format!("/v1/jobs/{UNKNOWN_ID}"),
            None,
            None,
            &[404],
            "not-found",
        ),
        (
            "not a job id",
            Method::GET,
            "/v1/jobs/nope".into(),
            None,
            None,
            &[400],
            "invalid-argument",
        ),
        (
            "output of an unknown job",
            Method::GET,
            format!("/v1/jobs/{UNKNOWN_ID}/output"),
            None,
            None,
            &[404],
            "not-found",
        ),
        (
            "following the output of an unknown job",
            Method::GET,
            format!("/v1/jobs/{UNKNOWN_ID}/output?follow=true"),
            None,
            None,
            &[404],
            "not-found",
        ),
        (
            "stop of a bad id",
            Method::POST,
            "/v1/jobs/nope/stop".into(),
            json_ct,
            Some("{}".into()),
            &[400],
            "invalid-argument",
        ),
        (
            "a POST without a content type (a cross-origin page could send it)",
            Method::POST,
            format!("/v1/jobs/{UNKNOWN_ID}/stop"),
            None,
            None,
            &[415],
            "unsupported-media-type",
        ),
        (
            "a form-encoded POST",
            Method::POST,
            "/v1/nodes/1/drain".into(),
            Some("application/x-www-form-urlencoded"),
            Some("disable=true".into()),
            &[415],
            "unsupported-media-type",
        ),
        (
            "bad page token",
            Method::GET,
            "/v1/jobs?page_token=garbage".into(),
            None,
            None,
            &[400],
            "invalid-argument",
        ),
        (
            "page too large",
            Method::GET,
            "/v1/jobs?page_size=5000".into(),
            None,
            None,
            &[400],
            "invalid-argument",
        ),
        (
            "page size not a number",
            Method::GET,
            "/v1/jobs?page_size=many".into(),
            None,
            None,
            &[400],
            "invalid-argument",
        ),
        (
            "unknown query parameter",
            Method::GET,
            "/v1/jobs?pagesize=5".into(),
            None,
            None,
            &[400],
            "invalid-argument",
        ),
        (
            "node id not a number",
            Method::POST,
            "/v1/nodes/abc/drain".into(),
            json_ct,
            Some("{}".into()),
            &[400],
            "invalid-argument",
        ),
        (
            "drain body with an unknown field",
            Method::POST,
            "/v1/nodes/1/drain".into(),
            json_ct,
            Some(r#"{"deadline": 5}"#.into()),
            &[400],
            "invalid-argument",
        ),
        (
            "unknown route",
            Method::GET,
            "/v1/nope".into(),
            None,
            None,
            &[404],
            "not-found",
        ),
        (
            "wrong method",
            Method::DELETE,
            "/v1/jobs".into(),
            None,
            None,
            &[405],
            "method-not-allowed",
        ),
    ];
    for (what, method, path, content_type, body, statuses, slug) in cases {
        let (status, headers, problem) =
            call(&http, method, &format!("{base}{path}"), content_type, body).await;
        assert!(
            statuses.contains(&status.as_u16()),
            "{what}: got {status} {problem}"
        );
        assert_problem(what, status, &headers, &problem, slug);
    }

    let (after, _) = list_all(&http, &base, 1000).await;
    assert_eq!(after, before, "a bad input created a job");
    assert_eq!(
        cluster_index(&http, &base).await,
        index_before,
        "a bad input reached the log"
    );
}

/// The node's last log index: unchanged means nothing was proposed.
async fn cluster_index(http: &Client, base: &str) -> u64 {
    let (status, _, cluster) = call(
        http,
        Method::GET,
        &format!("{base}/v1/cluster?local=true"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cluster}");
    cluster["last_log_index"].as_u64().expect("last_log_index")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_through_a_follower_reaches_the_leader() {
    let cluster = Cluster::start(3, RaftSettings::default());
    let leader = cluster.wait_leader(ELECTION).await;
    let http = client();
    for i in 0..3 {
        wait_ready(&http, &cluster.http_url(i)).await;
    }
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;

    let (status, headers, job) = submit(
        &http,
        &cluster.http_url(follower),
        json!({ "command": "echo via follower" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    // The leader's REST address, though only the leader knows it.
    assert_eq!(
        headers["x-drover-leader"],
        cluster.nodes[leader].http.as_str()
    );
    assert_eq!(
        headers["x-drover-leader-grpc"],
        cluster.nodes[leader].api.as_str()
    );
    let id = job["id"].as_str().expect("id");

    // A linearizable read on the other follower sees it at once.
    let url = format!("{}/v1/jobs/{id}?consistent=true", cluster.http_url(other));
    let (status, _, read) = call(&http, Method::GET, &url, None, None).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["id"], job["id"]);

    // A stop through a follower too.
    let url = format!("{}/v1/jobs/{id}/stop", cluster.http_url(other));
    let (status, _, stopped) = call(
        &http,
        Method::POST,
        &url,
        Some("application/json; charset=utf-8"),
        Some("{}".into()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(stopped["state"], "CANCELLED");

    // Every node's view of the cluster names the same leader and 3 voters.
    for i in 0..3 {
        let view = get_ok(&http, &format!("{}/v1/cluster", cluster.http_url(i))).await;
        assert_eq!(view["leader_id"], cluster.nodes[leader].id);
        assert_eq!(view["members"].as_array().map(Vec::len), Some(3));
        // By default the leader's view, asked through this node; with
        // ?local=true the node's own.
        assert_eq!(view["node_id"], cluster.nodes[leader].id, "{view}");
        assert_eq!(view["role"], "leader", "{view}");
        let url = format!("{}/v1/cluster?local=true", cluster.http_url(i));
        let own = get_ok(&http, &url).await;
        assert_eq!(own["node_id"], cluster.nodes[i].id, "{own}");
    }
    // The node table is empty with the executor off (no heartbeats).
    let (status, _, nodes) = call(
        &http,
        Method::GET,
        &format!("{}/v1/nodes", cluster.http_url(follower)),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(nodes, json!({ "nodes": [] }));
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness() {
    let mut cluster = Cluster::start(3, RaftSettings::default());
    let http = client();
    let leader = cluster.wait_leader(ELECTION).await;
    for i in 0..3 {
        let base = cluster.http_url(i);
        let (status, _, health) =
            call(&http, Method::GET, &format!("{base}/v1/health"), None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(health, json!({ "status": "ok" }));
        wait_ready(&http, &base).await;
    }
    // With the quorum gone, the survivor is alive but not ready (once it
    // notices: check-quorum makes a leader step down, a follower's election
    // fails).
    let survivor = (leader + 1) % 3;
    cluster.kill(leader);
    cluster.kill((leader + 2) % 3);
    let base = cluster.http_url(survivor);
    let (status, headers, problem) = wait_for("/v1/ready to answer 503", ELECTION, || async {
        let (status, headers, body) =
            call(&http, Method::GET, &format!("{base}/v1/ready"), None, None).await;
        (status == StatusCode::SERVICE_UNAVAILABLE).then_some((status, headers, body))
    })
    .await;
    assert_problem("not ready", status, &headers, &problem, "unavailable");
    assert_eq!(headers["retry-after"], "1");
    let (status, _, _) = call(&http, Method::GET, &format!("{base}/v1/health"), None, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_covers_every_route() {
    let cluster = Cluster::start(1, RaftSettings::default());
    let http = client();
    let base = cluster.http_url(0);
    wait_ready(&http, &base).await;
    let (status, headers, doc) = call(
        &http,
        Method::GET,
        &format!("{base}/v1/openapi.json"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string());
    // Generated clients send the token and call this node.
    assert_eq!(
        doc["components"]["securitySchemes"]["token"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"][0]["token"], json!([]));
    assert_eq!(doc["servers"][0]["url"], "/");
    assert_eq!(doc["paths"]["/v1/health"]["get"]["security"], json!([{}]));

    let expected: BTreeSet<(String, String)> = [
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs"),
        ("get", "/v1/jobs/{id}"),
        ("post", "/v1/jobs/{id}/stop"),
        ("get", "/v1/jobs/{id}/output"),
        ("get", "/v1/events"),
        ("get", "/v1/cluster"),
        ("get", "/v1/cluster/events"),
        ("get", "/v1/nodes"),
        ("post", "/v1/nodes/{id}/drain"),
        ("post", "/v1/acl/bootstrap"),
        ("post", "/v1/acl/tokens"),
        ("get", "/v1/acl/tokens"),
        ("delete", "/v1/acl/tokens/{accessor}"),
        ("get", "/v1/acl/token/self"),
        ("get", "/v1/health"),
        ("get", "/v1/ready"),
        ("get", "/metrics"),
        ("get", "/v1/openapi.json"),
        ("get", "/"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            assert!(
                operation["responses"].is_object(),
                "{method} {path} has no responses"
            );
            documented.insert((method.clone(), path.clone()));
        }
    }
    assert_eq!(
        documented, expected,
        "documented routes differ from the served ones"
    );
    // Every schema a document references exists.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap_or_default();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "missing schema {name}"
        );
    }

    // And the server serves each documented route (a served route's 404 is
    // about the object, never "no route").
    for (method, path) in &documented {
        let mut url = format!(
            "{base}{}",
            path.replace("/jobs/{id}", &format!("/jobs/{UNKNOWN_ID}"))
                .replace("{id}", "999")
                .replace("{accessor}", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
        );
        if path == "/v1/events" {
            // A bad filter answers at once; a good one streams forever.
            url += "?job_id=not-a-job-id";
        }
        if path == "/v1/cluster/events" {
            // Streams forever: its first event is enough.
            let response = http.get(&url).send().await.expect("cluster stream");
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            let mut body = response.bytes_stream();
            let first = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .expect("a first cluster event within 10 s");
            let text =
                String::from_utf8_lossy(&first.expect("a chunk").expect("bytes")).to_string();
            assert!(text.starts_with("event: cluster"), "{text}");
            continue;
        }
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let (content_type, body) = if method == Method::POST && path == "/v1/jobs" {
            (
                Some("application/json"),
                Some(json!({ "command": "true" }).to_string()),
            )
        } else {
            (None, None)
        };
        let (status, _, body) = call(&http, method.clone(), &url, content_type, body).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {url}");
        assert!(
            !body["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("no route")),
            "{method} {url} is documented but not served: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn output_is_followed_over_sse_until_the_end_event() {
    let Some(cluster) = Cluster::start_running_jobs(1, RaftSettings::default()) else {
        return;
    };
    let http = client();
    let base = cluster.http_url(0);
    wait_ready(&http, &base).await;
    let (status, _, job) = submit(
        &http,
        &base,
        json!({ "command": "echo a; sleep 1; echo b" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().expect("id");

    // Followed right after the submission: the stream waits for the attempt
    // to be placed and started, then streams live until it ends.
    let response = http
        .get(format!("{base}/v1/jobs/{id}/output?follow=true"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("follow output");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .is_ok_and(|v| v.starts_with("text/event-stream")));
    let events = read_sse(response, Duration::from_secs(60), |events| {
        events.last().is_some_and(|e| e.event == "end")
    })
    .await;
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| e.event == "chunk")
        .map(|e| serde_json::from_str(&e.data).expect("chunk JSON"))
        .collect();
    let text: String = chunks
        .iter()
        .map(|c| c["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(text, "a\nb\n", "events {events:?}");
    assert!(
        chunks.len() >= 2,
        "a and b arrive as separate chunks (1 s apart): {events:?}"
    );
    assert!(chunks
        .iter()
        .all(|c| c["stream"] == "stdout" && c["data_base64"].is_string()));
    assert!(
        events
            .iter()
            .all(|e| e.event == "chunk" || e.event == "end"),
        "{events:?}"
    );
    let end: Value = serde_json::from_str(&events[events.len() - 1].data).expect("end JSON");
    assert_eq!(end["attempt"], 1);

    // The same output as plain JSON once it is stored.
    let (status, _, output) = call(
        &http,
        Method::GET,
        &format!("{base}/v1/jobs/{id}/output"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text: String = output["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| c["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(text, "a\nb\n", "{output}");

    // The committed tail comes with the job, never with a list (a page of
    // 1,000 jobs would carry up to 64 KiB of each).
    let finished = wait_for("the result committed", Duration::from_secs(30), || async {
        let job = get_ok(&http, &format!("{base}/v1/jobs/{id}")).await;
        (job["state"] == "SUCCEEDED").then_some(job)
    })
    .await;
    assert_eq!(
        finished["attempts"][0]["output_tail"], "a\nb\n",
        "{finished}"
    );
    let cluster = get_ok(&http, &format!("{base}/v1/cluster?local=true")).await;
    assert_eq!(cluster["jobs"]["by_state"]["SUCCEEDED"], 1, "{cluster}");
    assert_eq!(cluster["jobs"]["by_state"]["QUEUED"], 0, "{cluster}");
    let page = get_ok(&http, &format!("{base}/v1/jobs")).await;
    let listed = page["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["id"] == id))
        .cloned()
        .expect("the job in the list");
    assert_eq!(listed["attempts"][0]["output_tail"], "", "{listed}");
    assert_eq!(listed["attempts"][0]["exit_code"], 0, "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_outside_the_policy_is_refused_at_submit_naming_the_key() {
    let settings = RaftSettings {
        extra_config: "\n[executor.policy]\nallowed_images = [\"drover-job:*\"]\n".into(),
        ..RaftSettings::default()
    };
    let cluster = Cluster::start(1, settings);
    let http = client();
    let base = cluster.http_url(0);
    wait_ready(&http, &base).await;
    let index_before = cluster_index(&http, &base).await;
    let (status, _, problem) = submit(
        &http,
        &base,
        json!({ "command": "true", "image": "busybox:latest" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["field"], "image", "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("executor.policy.allowed_images"),
        "{detail}"
    );
    assert_eq!(
        cluster_index(&http, &base).await,
        index_before,
        "nothing written"
    );
    // The default image matches the policy: a job without one is taken.
    let (status, _, job) = submit(&http, &base, json!({ "command": "true" })).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
}
