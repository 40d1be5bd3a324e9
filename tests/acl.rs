//! Access control through real `drover agent` processes with ACLs on:
//! bootstrap once, each role against each operation (gRPC and REST), job
//! ownership between two submitters, revocation that holds at once on every
//! node, and CORS limited to the configured origins.

mod common;

use std::time::Duration;

use common::{wait_for, Client, Cluster, RaftSettings};
use drover::proto::v1 as pb;
use reqwest::StatusCode;
use serde_json::Value;
use tonic::Code;

const ELECTION: Duration = Duration::from_secs(20);
const DASHBOARD: &str = "http://dash.example.test";

fn settings() -> RaftSettings {
    RaftSettings {
        acl: true,
        cors_origins: vec![DASHBOARD.to_string()],
        ..RaftSettings::default()
    }
}

/// Bootstraps over a node's unix socket as soon as a leader exists;
/// returns the secret and sets it as the cluster's token.
async fn bootstrap(cluster: &mut Cluster) -> String {
    cluster.bootstrap_over_socket(ELECTION).await
}

async fn submit(client: &mut Client, command: &str) -> Result<pb::Job, tonic::Status> {
    let spec = pb::JobSpec {
        command: command.into(),
        ..Default::default()
    };
    client
        .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
        .await
        .map(|r| r.into_inner().job.unwrap_or_default())
}

async fn submit_keyed(
    client: &mut Client,
    command: &str,
    key: &str,
) -> Result<pb::Job, tonic::Status> {
    let spec = pb::JobSpec {
        command: command.into(),
        idempotency_key: key.into(),
        ..Default::default()
    };
    client
        .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
        .await
        .map(|r| r.into_inner().job.unwrap_or_default())
}

/// Every operation once, as `token`, against node `node`: the gRPC code of
/// each (Ok or the error). Operations that would change the cluster are
/// aimed at things that do not exist, so an allowed call answers NOT_FOUND
/// or INVALID_ARGUMENT and a refused one PERMISSION_DENIED: the access check
/// runs before anything else.
async fn operations(
    cluster: &Cluster,
    node: usize,
    token: Option<&str>,
    own_job: &str,
) -> Vec<(&'static str, Code)> {
    let mut c = cluster.client_with(node, token).await.expect("client");
    let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
    vec![
        ("submit", code(submit(&mut c, "true").await.map(|_| ()))),
        (
            "get",
            code(
                c.get_job(pb::GetJobRequest {
                    id: own_job.into(),
                    consistent: false,
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "list",
            code(
                c.list_jobs(pb::ListJobsRequest::default())
                    .await
                    .map(|_| ()),
            ),
        ),
        (
            "output",
            code(
                c.get_job_output(pb::GetJobOutputRequest {
                    id: own_job.into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "stop",
            code(
                c.stop_job(pb::StopJobRequest {
                    id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "cluster",
            code(
                c.get_cluster_status(pb::GetClusterStatusRequest::default())
                    .await
                    .map(|_| ()),
            ),
        ),
        (
            "nodes",
            code(
                c.list_nodes(pb::ListNodesRequest::default())
                    .await
                    .map(|_| ()),
            ),
        ),
        (
            "drain",
            code(
                c.drain_node(pb::DrainNodeRequest {
                    id: 99,
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "remove-peer",
            code(
                c.remove_peer(pb::RemovePeerRequest { id: 99 })
                    .await
                    .map(|_| ()),
            ),
        ),
        (
            "transfer-leader",
            code(
                c.transfer_leader(pb::TransferLeaderRequest { to: 99 })
                    .await
                    .map(|_| ()),
            ),
        ),
        (
            "list-tokens",
            code(c.list_tokens(pb::ListTokensRequest {}).await.map(|_| ())),
        ),
        (
            "revoke-token",
            code(
                c.revoke_token(pb::RevokeTokenRequest {
                    accessor: "no-such-accessor".into(),
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "whoami",
            code(c.who_am_i(pb::WhoAmIRequest {}).await.map(|_| ())),
        ),
    ]
}

/// What each operation answers when the role may perform it (`allowed`)
/// given the targets `operations` picks.
fn allowed_code(op: &str) -> Code {
    match op {
        "stop" | "drain" | "remove-peer" | "revoke-token" => Code::NotFound,
        "transfer-leader" => Code::InvalidArgument,
        _ => Code::Ok,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roles_ownership_revocation_and_cors() {
    let mut cluster = Cluster::start(3, settings());
    // Nobody can race the operator to bootstrap over the network: without a
    // provisioned secret, TCP (gRPC and REST) is refused, on every node.
    for i in 0..3 {
        let refused = wait_for("bootstrap over TCP refused", ELECTION, || async {
            let mut client = cluster.client_with(i, None).await?;
            match client.acl_bootstrap(pb::AclBootstrapRequest {}).await {
                Err(s) if s.code() == Code::PermissionDenied => Some(s),
                Err(s) if s.code() == Code::Unavailable => None,
                other => panic!("bootstrap over TCP: {other:?}"),
            }
        })
        .await;
        assert!(refused.message().contains("local socket"), "{refused:?}");
    }
    let rest = reqwest::Client::new()
        .post(format!("{}/v1/acl/bootstrap", cluster.http_url(1)))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("REST bootstrap");
    assert_eq!(rest.status(), StatusCode::FORBIDDEN);
    let admin = bootstrap(&mut cluster).await;
    let leader = cluster.wait_leader(ELECTION).await;
    let follower = (leader + 1) % 3;

    // Cluster status names each member's last contact: on the leader every
    // follower is fresh (heartbeats), and a node never reports itself.
    let status = wait_for("fresh followers", ELECTION, || async {
        let status = cluster.status(leader).await?;
        let fresh = status
            .members
            .iter()
            .filter(|m| m.last_contact_ms.is_some_and(|ms| ms < 5_000))
            .count();
        (fresh == 2).then_some(status)
    })
    .await;
    let me = status.members.iter().find(|m| m.is_leader).expect("leader");
    assert_eq!(me.last_contact_ms, None);

    // Bootstrap works once: a second call is refused, by gRPC and the CLI.
    let mut anonymous = cluster.client_with(follower, None).await.expect("client");
    let again = anonymous
        .acl_bootstrap(pb::AclBootstrapRequest {})
        .await
        .expect_err("second bootstrap");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    let out = cluster.cli(&["acl", "bootstrap"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already bootstrapped"));

    let (_, operator) = cluster.create_token("ops", "operator");
    let (alice_id, alice) = cluster.create_token("alice", "submitter");
    let (_, bob) = cluster.create_token("bob", "submitter");
    let (_, viewer) = cluster.create_token("dash", "viewer");

    // Every token is listed (never with its secret), on any node.
    let out = cluster.cli(&["acl", "token", "list", "--output", "json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("list JSON");
    let names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["bootstrap", "ops", "alice", "bob", "dash"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("drv_"));

    // No token, a malformed header, an unknown token: UNAUTHENTICATED.
    let err = anonymous
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let mut forged = cluster
        .client_with(follower, Some("drv_0000"))
        .await
        .expect("client");
    let err = forged
        .get_cluster_status(pb::GetClusterStatusRequest::default())
        .await
        .expect_err("unknown token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Alice's and Bob's jobs, submitted through a follower: the owner comes
    // from the token.
    let mut alice_client = cluster
        .client_with(follower, Some(&alice))
        .await
        .expect("client");
    let alice_job = submit(&mut alice_client, "echo alice")
        .await
        .expect("alice submits");
    assert_eq!(alice_job.owner, alice_id);
    let mut bob_client = cluster
        .client_with(leader, Some(&bob))
        .await
        .expect("client");
    let bob_job = submit(&mut bob_client, "echo bob")
        .await
        .expect("bob submits");
    assert_ne!(bob_job.owner, alice_id);

    // Idempotency keys are per owner: Bob's "nightly" is his own job, not
    // Alice's (nor a refusal naming hers); each resubmission finds its own.
    let alice_nightly = submit_keyed(&mut alice_client, "echo alice nightly", "nightly")
        .await
        .expect("alice's key");
    let bob_nightly = submit_keyed(&mut bob_client, "echo bob nightly", "nightly")
        .await
        .expect("bob's key is his own");
    assert_ne!(bob_nightly.id, alice_nightly.id);
    assert_ne!(bob_nightly.owner, alice_id);
    let again = submit_keyed(&mut alice_client, "echo alice again", "nightly")
        .await
        .expect("alice resubmits");
    assert_eq!(
        again.id, alice_nightly.id,
        "the first job answers a resubmission"
    );
    let again = submit_keyed(&mut bob_client, "echo bob again", "nightly")
        .await
        .expect("bob resubmits");
    assert_eq!(again.id, bob_nightly.id);

    // The matrix: each role against each operation, via a follower.
    let roles: [(&str, Option<&str>); 5] = [
        ("admin", Some(&admin)),
        ("operator", Some(&operator)),
        ("submitter", Some(&alice)),
        ("viewer", Some(&viewer)),
        ("none", None),
    ];
    for (role, token) in roles {
        for (op, got) in operations(&cluster, follower, token, &alice_job.id).await {
            let allowed = match role {
                "admin" => true,
                "operator" => !matches!(op, "list-tokens" | "revoke-token"),
                "submitter" => matches!(
                    op,
                    "submit" | "get" | "list" | "output" | "stop" | "cluster" | "nodes" | "whoami"
                ),
                "viewer" => matches!(
                    op,
                    "get" | "list" | "output" | "cluster" | "nodes" | "whoami"
                ),
                _ => false,
            };
            let expected = match (allowed, role) {
                (true, _) => allowed_code(op),
                (false, "none") => Code::Unauthenticated,
                (false, _) => Code::PermissionDenied,
            };
            assert_eq!(got, expected, "{role} {op}");
        }
    }
    // Token creation too (it would leave tokens behind, so once per role).
    for (role, token) in [
        ("operator", &operator),
        ("submitter", &alice),
        ("viewer", &viewer),
    ] {
        let mut c = cluster
            .client_with(follower, Some(token))
            .await
            .expect("client");
        let err = c
            .create_token(pb::CreateTokenRequest {
                name: "x".into(),
                role: "admin".into(),
            })
            .await
            .expect_err("only admins create tokens");
        assert_eq!(err.code(), Code::PermissionDenied, "{role}");
    }

    // Alice sees and stops only her own jobs.
    let err = alice_client
        .get_job(pb::GetJobRequest {
            id: bob_job.id.clone(),
            consistent: false,
        })
        .await
        .expect_err("alice reads bob's job");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = alice_client
        .stop_job(pb::StopJobRequest {
            id: bob_job.id.clone(),
        })
        .await
        .expect_err("alice stops bob's job");
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut alice_at_leader = cluster
        .client_with(leader, Some(&alice))
        .await
        .expect("client");
    let err = alice_at_leader
        .stop_job(pb::StopJobRequest {
            id: bob_job.id.clone(),
        })
        .await
        .expect_err("alice stops bob's job at the leader");
    assert_eq!(err.code(), Code::PermissionDenied);
    let mine = alice_client
        .list_jobs(pb::ListJobsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("alice lists")
        .into_inner()
        .jobs;
    assert!(!mine.is_empty());
    assert!(mine.iter().all(|j| j.owner == alice_id), "{mine:?}");
    // Asking for Bob's jobs by owner still shows only her own (none).
    let bobs = alice_client
        .list_jobs(pb::ListJobsRequest {
            owner: bob_job.owner.clone(),
            ..Default::default()
        })
        .await
        .expect("alice lists bob's")
        .into_inner()
        .jobs;
    assert!(bobs.is_empty(), "{bobs:?}");
    let stopped = alice_client
        .stop_job(pb::StopJobRequest {
            id: alice_job.id.clone(),
        })
        .await
        .expect("alice stops her own job")
        .into_inner();
    assert_eq!(stopped.job.expect("job").state, "CANCELLED");
    // Her watch carries only her jobs' changes: replayed from before both
    // submissions up to her stop, nothing of Bob's.
    let from = alice_job.index.min(bob_job.index) - 1;
    let mut events = alice_client
        .watch_jobs(pb::WatchJobsRequest {
            from_index: from,
            job_id: String::new(),
        })
        .await
        .expect("alice watches")
        .into_inner();
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(ELECTION, events.message())
            .await
            .expect("events in time")
            .expect("event stream")
            .expect("an event");
        let done = event.job_id == alice_job.id && event.state == "CANCELLED";
        seen.push(event);
        if done {
            break;
        }
    }
    assert!(seen.iter().all(|e| e.job_id != bob_job.id), "{seen:?}");
    let err = alice_client
        .watch_jobs(pb::WatchJobsRequest {
            from_index: 0,
            job_id: bob_job.id.clone(),
        })
        .await
        .expect_err("alice watches bob's job");
    assert_eq!(err.code(), Code::PermissionDenied);
    // An operator sees everyone's jobs, and can filter by owner.
    let out = cluster.cli(&["job", "list", "--owner", &alice_id, "--output", "json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("list JSON");
    let jobs = listed["jobs"].as_array().expect("jobs array");
    assert!(
        jobs.iter().all(|j| j["owner"] == alice_id.as_str()),
        "{listed}"
    );
    assert!(jobs.iter().any(|j| j["id"] == alice_job.id.as_str()));

    // REST makes the same checks: 401 with WWW-Authenticate, 403, problems.
    let http = reqwest::Client::new();
    let base = cluster.http_url(follower);
    let response = http
        .get(format!("{base}/v1/jobs"))
        .send()
        .await
        .expect("GET /v1/jobs");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(
        problem["type"],
        "https://drover.dev/problems/unauthenticated"
    );
    let response = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&viewer)
        .json(&serde_json::json!({"command": "true"}))
        .send()
        .await
        .expect("POST /v1/jobs");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = http
        .get(format!("{base}/v1/jobs/{}", bob_job.id))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("GET bob's job");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = http
        .get(format!("{base}/v1/jobs/{}", alice_job.id))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("GET alice's job");
    assert_eq!(response.status(), StatusCode::OK);
    // Probes need no token.
    let response = http
        .get(format!("{base}/v1/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(response.status(), StatusCode::OK);

    // CORS: the configured origin is allowed, any other gets no grant.
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, format!("{base}/v1/jobs"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let ok = preflight(DASHBOARD).await.expect("preflight");
    assert_eq!(
        ok.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some(DASHBOARD)
    );
    let other = preflight("http://evil.example.test")
        .await
        .expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // Revocation holds at once on every node: no wait between the revoke
    // returning and the checks.
    let out = cluster.cli(&["acl", "token", "revoke", &alice_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in 0..3 {
        let mut c = cluster
            .client_with(node, Some(&alice))
            .await
            .expect("client");
        let err = c
            .list_jobs(pb::ListJobsRequest::default())
            .await
            .expect_err("revoked token");
        assert_eq!(err.code(), Code::Unauthenticated, "node {node}");
    }
    // Bob is unaffected; revoking again is NOT_FOUND.
    submit(&mut bob_client, "true")
        .await
        .expect("bob still submits");
    let out = cluster.cli(&["acl", "token", "revoke", &alice_id]);
    assert_eq!(out.status.code(), Some(1));

    // Tokens are replicated state: a restarted node still knows them.
    cluster.kill(follower);
    cluster.restart(follower);
    wait_for("restarted follower knows bob", ELECTION, || async {
        let mut c = cluster.client_with(follower, Some(&bob)).await?;
        c.who_am_i(pb::WhoAmIRequest {})
            .await
            .ok()
            .filter(|t| t.get_ref().name == "bob")
    })
    .await;
}
