//! A job's network, by the sandbox policy: refused at submit unless
//! `executor.policy.allow_network` is on and the caller's role is in
//! `executor.policy.network_roles` (through real agents, gRPC and REST);
//! and on real containers, a job granted a network joins the node's own
//! job network, from which it reaches neither this host (a listener on
//! every address of the host) nor another job, while a container on a
//! plain network this test makes does reach that listener (the control).
//!
//! Needs Docker, root and iptables: skipped with a notice without them,
//! unless `DROVER_REQUIRE_DOCKER=1`, which makes them failures. Every
//! container, network and firewall rule made here is removed, also when
//! the test fails.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{submit_job, Cluster, RaftSettings};
use drover::executor::docker::{DockerConfig, DockerDriver};
use drover::executor::network::JobNetwork;
use drover::executor::{Driver, OutputChunk, OutputSink, Reason, RunSpec, Started};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tonic::Code;

const ELECTION: Duration = Duration::from_secs(20);
const IMAGE: &str = "drover-job:latest";

/// Submits `true` asking for a network.
async fn submit_with_network(client: &mut common::Client) -> Result<(), tonic::Status> {
    let spec = drover::proto::v1::JobSpec {
        command: "true".into(),
        network: true,
        ..Default::default()
    };
    client
        .submit_job(drover::proto::v1::SubmitJobRequest { spec: Some(spec) })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_is_refused_at_submit_unless_the_policy_and_the_role_allow_it() {
    // The default policy: no job gets a network.
    let cluster = Cluster::start(1, RaftSettings::default());
    cluster.wait_leader(ELECTION).await;
    let mut client = cluster.client(0).await.expect("client");
    let refused = submit_with_network(&mut client)
        .await
        .expect_err("no network by default");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("executor.policy.allow_network"),
        "{refused:?}"
    );
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/v1/jobs", cluster.http_url(0)))
        .json(&json!({"command": "true", "network": true}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("problem");
    assert_eq!(body["field"], "network", "{body}");
    assert!(common::all_jobs(&mut client, false)
        .await
        .expect("list")
        .is_empty());
    drop(cluster);

    // Allowed, for operators only: a submitter is refused, an operator not.
    let mut cluster = Cluster::start(
        1,
        RaftSettings {
            acl: true,
            extra_config:
                "\n[executor.policy]\nallow_network = true\nnetwork_roles = [\"operator\"]\n".into(),
            ..RaftSettings::default()
        },
    );
    cluster.bootstrap_over_socket(ELECTION).await;
    let (_, submitter) = cluster.create_token("ci", "submitter");
    let (_, operator) = cluster.create_token("ops", "operator");
    let mut as_submitter = cluster
        .client_with(0, Some(&submitter))
        .await
        .expect("client");
    let refused = submit_with_network(&mut as_submitter)
        .await
        .expect_err("not the submitter's role");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("executor.policy.network_roles"),
        "{refused:?}"
    );
    let mut as_operator = cluster
        .client_with(0, Some(&operator))
        .await
        .expect("client");
    submit_with_network(&mut as_operator)
        .await
        .expect("an operator may");
    submit_job(&mut as_submitter, "true")
        .await
        .expect("a submitter's job without a network");
}

/// Removes what the container test made, whatever happened.
struct Leftovers {
    networks: Vec<String>,
    rules: Vec<Vec<String>>,
    label: String,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        common::remove_containers(&self.label);
        let run = |args: &[&str]| {
            let _ = Command::new(args[0]).args(&args[1..]).output();
        };
        for network in &self.networks {
            run(&["docker", "network", "rm", network]);
        }
        for rule in &self.rules {
            let mut args = vec!["iptables", "-w", "-D"];
            args.extend(rule.iter().map(String::as_str));
            run(&args);
        }
    }
}

/// Whether this machine can run the container half: Docker, root and
/// iptables. A failure with `DROVER_REQUIRE_DOCKER=1`.
fn can_fence() -> bool {
    if !common::docker_ready() {
        return false;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    let iptables = Command::new("iptables")
        .args(["-w", "-L", "INPUT", "-n"])
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var("DROVER_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    if !(root && iptables) {
        assert!(
            !required,
            "DROVER_REQUIRE_DOCKER=1 but root with iptables is missing"
        );
        eprintln!("NOTICE: skipping the job network test: needs root and iptables");
        return false;
    }
    true
}

/// A job that asks for a network, bounded in time.
fn spec(job: &str, command: &str) -> RunSpec {
    RunSpec {
        timeout: Some(Duration::from_secs(30)),
        network: true,
        ..common::run_spec(job, command)
    }
}

/// Runs a job to its end; its stdout.
async fn run(driver: &DockerDriver, spec: &RunSpec) -> (Reason, String) {
    let (sink, mut rx) = OutputSink::lossless_channel(1024);
    let handle = match driver.start(spec, Some(sink)).await.expect("start") {
        Started::Running(handle) => handle,
        Started::Finished(outcome) => return (outcome.reason, String::new()),
    };
    let outcome = driver.wait(handle).await.expect("wait");
    let mut out = String::new();
    while let Ok(OutputChunk { data, .. }) = rx.try_recv() {
        out.push_str(&String::from_utf8_lossy(&data));
    }
    (outcome.reason, out)
}

/// The shell that finds the default gateway (this host, seen from the
/// container) and tries a TCP connection to `port` on it.
fn to_host(port: u16) -> String {
    format!(
        "gw=$(ip route | awk '/default/ {{print $3}}'); \
         nc -w 2 $gw {port} </dev/null && echo reached-host || echo host-blocked"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_network_reaches_neither_the_host_nor_other_jobs() {
    if !can_fence() {
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let cluster = format!("test-net-{}-{nanos}", std::process::id());
    let owner = vec![
        ("drover.cluster".to_string(), cluster.clone()),
        ("drover.node".to_string(), "1".to_string()),
    ];
    let network = JobNetwork::for_owner(&owner);
    let control = format!("drover-test-control-{}-{nanos}", std::process::id());
    let _leftovers = Leftovers {
        networks: vec![network.name.clone(), control.clone()],
        rules: network.rules(),
        label: cluster.clone(),
    };

    // A listener on every address of this host, counting connections.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    let accepting = tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });

    let config = DockerConfig {
        owner_labels: owner,
        policy: drover::jobs::policy::SandboxPolicy {
            allow_network: true,
            ..Default::default()
        },
        ..DockerConfig::default()
    };
    let driver = DockerDriver::connect(config).await.expect("driver");

    // A job on the job network: it has an interface, and the host is out
    // of reach.
    let (reason, out) = run(
        &driver,
        &spec(
            &format!("{cluster}-a"),
            &format!("ls /sys/class/net; {}", to_host(port)),
        ),
    )
    .await;
    assert_eq!(reason, Reason::Exited(0), "{out}");
    assert!(out.contains("eth0"), "a network interface: {out}");
    assert!(out.contains("host-blocked"), "{out}");
    assert_eq!(reached.load(Ordering::SeqCst), 0, "the host was reached");

    // Another job is out of reach too: one listens, the other knocks.
    let listen = spec(
        &format!("{cluster}-b"),
        "ip -4 addr show eth0 | awk '/inet / {print $2}' | cut -d/ -f1 > /tmp/ip; \
         cat /tmp/ip; nc -l -p 8080 -w 10 </dev/null; true",
    );
    let (sink, mut rx) = OutputSink::lossless_channel(64);
    let listening = match driver.start(&listen, Some(sink)).await.expect("start") {
        Started::Running(handle) => handle,
        Started::Finished(outcome) => panic!("the listener did not start: {outcome:?}"),
    };
    let ip = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the listening job's address")
        .map(|c| String::from_utf8_lossy(&c.data).trim().to_string())
        .expect("an address");
    let (reason, out) = run(
        &driver,
        &spec(
            &format!("{cluster}-c"),
            &format!("nc -w 2 {ip} 8080 </dev/null && echo reached-job || echo job-blocked"),
        ),
    )
    .await;
    assert_eq!(reason, Reason::Exited(0), "{out}");
    assert!(out.contains("job-blocked"), "job at {ip}: {out}");
    let listener_job = format!("{cluster}-b");
    let (stopped, _) = tokio::join!(
        driver.stop(&listener_job, 1, Duration::from_secs(1)),
        driver.wait(listening),
    );
    stopped.expect("stop the listening job");

    // The control: a plain bridge network this test makes, without the
    // rule, does reach the listener, so the test can tell.
    let made = Command::new("docker")
        .args(["network", "create", "--label"])
        .arg(format!("drover.cluster={cluster}"))
        .arg(&control)
        .output()
        .expect("docker network create");
    assert!(made.status.success(), "{made:?}");
    let ran = Command::new("docker")
        .args(["run", "--rm", "--network", &control, "--label"])
        .arg(format!("drover.cluster={cluster}"))
        .args([IMAGE, "sh", "-c", &to_host(port)])
        .output()
        .expect("docker run");
    let said = String::from_utf8_lossy(&ran.stdout);
    assert!(said.contains("reached-host"), "{said} {ran:?}");
    assert!(reached.load(Ordering::SeqCst) >= 1);
    accepting.abort();
}
