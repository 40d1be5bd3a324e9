//! The node image and docker-compose.yml on the real Docker engine: the image
//! is built without a registry (docker/build-local-image.sh, from the binary
//! under test), certificates are made by config/compose/make-certs.sh, the
//! shipped compose file brings up 3 nodes (mutual TLS on every port) that run their jobs
//! as sibling containers through the host's socket, a job runs, one node
//! container is stopped and jobs still run, it is started again and catches
//! up, and everything the project created is removed.
//!
//! The test talks only to 127.0.0.1 ports picked free for this run; the
//! compose project, its network and volumes, and the cluster id (which labels
//! the job containers) are unique to the run, so it never touches another
//! cluster on the same engine.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{docker_ready, drover_bin, free_port, wait_for};
use drover::config::Config;
use serde_json::{json, Value};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Bound on one docker / compose command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// From `up` to a leader known by every node.
const READY: Duration = Duration::from_secs(60);
/// A job from submission to its end (a container start is ~0.5 s here).
const JOB: Duration = Duration::from_secs(60);
/// A stopped node declared DOWN: the configs' node_down_after (10 s) and then some.
const NODE_DOWN: Duration = Duration::from_secs(40);

/// The shipped container configs parse and validate, bind every interface
/// and keep their data in the image's volume; the compose ones name their
/// peers by service name. (No Docker needed.)
#[test]
fn container_configs_are_valid() {
    let repo = Path::new(REPO);
    for n in 1..=3u64 {
        let path = repo.join(format!("config/compose/node{n}.toml"));
        let config = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.node_id, n);
        assert_eq!(config.data_dir, Path::new("/var/lib/drover"));
        assert!(config.listen.api.ip().is_unspecified(), "{path:?}");
        assert_eq!(config.listen.api.port(), 7700);
        assert_eq!(config.listen.raft.port(), 7701);
        assert_eq!(config.listen.http.map(|a| a.port()), Some(7702));
        let members: Vec<(u64, &str, &str)> = config
            .initial_members
            .iter()
            .map(|m| (m.id, m.raft_addr.as_str(), m.api_addr.as_str()))
            .collect();
        assert_eq!(
            members,
            [
                (1, "node1:7701", "node1:7700"),
                (2, "node2:7701", "node2:7700"),
                (3, "node3:7701", "node3:7700"),
            ]
        );
        assert_eq!(
            config.executor.labels.get("node"),
            Some(&n.to_string()),
            "{path:?}"
        );
    }
    let single =
        Config::from_file(&repo.join("config/container.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(single.data_dir, Path::new("/var/lib/drover"));
    assert!(single.listen.api.ip().is_unspecified());
    assert_eq!(single.initial_members.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_runs_jobs_while_a_node_is_stopped_and_after_it_restarts() {
    if !docker_ready() {
        return;
    }
    let Some(compose) = compose_command() else {
        let required = std::env::var("DROVER_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "DROVER_REQUIRE_DOCKER=1 but neither `docker compose` nor `docker-compose` works"
        );
        eprintln!("NOTICE: skipping the compose test: no `docker compose` or `docker-compose`");
        return;
    };
    let started = Instant::now();

    // The image, from the binary under test (a debug build is fine).
    let build = run(Command::new("bash")
        .arg(Path::new(REPO).join("docker/build-local-image.sh"))
        .arg("--binary")
        .arg(drover_bin())
        .arg("--no-tag")
        .env_remove("DROVER_IMAGE"));
    assert_success("build-local-image.sh", &build);
    let image = String::from_utf8_lossy(&build.stdout).trim().to_string();
    assert!(image.starts_with("drover:local-"), "image name: {image:?}");
    eprintln!("image {image} ready after {:?}", started.elapsed());

    // The shipped node configs with a cluster id of this run only.
    let serial = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 1_000_000);
    let project = format!("drover-compose-test-{}-{serial}", std::process::id());
    let configs = tempfile::tempdir().expect("temp dir");
    for n in 1..=3 {
        let shipped = Path::new(REPO).join(format!("config/compose/node{n}.toml"));
        let text = std::fs::read_to_string(&shipped).expect("read the shipped node config");
        let from = "cluster_id = \"drover-compose\"";
        assert_eq!(
            text.matches(from).count(),
            1,
            "{shipped:?} names its cluster once"
        );
        let text = text.replace(from, &format!("cluster_id = \"{project}\""));
        std::fs::write(configs.path().join(format!("node{n}.toml")), text).expect("write config");
    }

    // Certificates for this run's cluster id, by the shipped script.
    let tls = tempfile::tempdir().expect("temp dir");
    let certs = run(Command::new("bash")
        .arg(Path::new(REPO).join("config/compose/make-certs.sh"))
        .arg(drover_bin())
        .arg(tls.path())
        .arg(&project));
    assert_success("config/compose/make-certs.sh", &certs);

    let (socket, gid) = docker_socket();
    let mut ports = Vec::new(); // (api, http) of node1..3 on the host's loopback
    let mut env = vec![
        ("DROVER_IMAGE".to_string(), image.clone()),
        ("DROVER_DOCKER_GID".to_string(), gid.to_string()),
        (
            "DROVER_DOCKER_SOCKET".to_string(),
            socket.display().to_string(),
        ),
        (
            "DROVER_COMPOSE_CONFIG".to_string(),
            configs.path().display().to_string(),
        ),
        (
            "DROVER_COMPOSE_TLS".to_string(),
            tls.path().display().to_string(),
        ),
    ];
    for n in 1..=3 {
        let (api, http) = (free_port(), free_port());
        env.push((format!("DROVER_NODE{n}_API_PORT"), api.to_string()));
        env.push((format!("DROVER_NODE{n}_HTTP_PORT"), http.to_string()));
        ports.push((api, http));
    }
    // Torn down by Drop if anything below panics.
    let mut project = Project {
        compose,
        name: project,
        env,
        down: false,
    };
    project.compose(&["up", "-d"]);
    eprintln!("compose up after {:?}", started.elapsed());

    let http = Https {
        ca: tls.path().join("ca.pem"),
    };
    let base = |n: usize| format!("https://127.0.0.1:{}", ports[n - 1].1);
    for n in 1..=3 {
        wait_ready(&http, &base(n)).await;
    }
    eprintln!("3 nodes ready after {:?}", started.elapsed());
    // Every port is TLS: the REST API says so, and plaintext gets nothing.
    let view = get(&http, &format!("{}/v1/cluster", base(1))).await;
    assert_eq!(view["transport_security"], "tls", "{view}");
    assert!(
        http.call(
            "GET",
            &format!("http://127.0.0.1:{}/v1/cluster", ports[0].1),
            None
        )
        .is_none(),
        "plaintext HTTP answered"
    );

    // The gRPC port is published too: the CLI under test lists the members
    // through it, with the addresses they reach each other by.
    let peers = run(Command::new(drover_bin())
        .args(["operator", "raft", "list-peers", "--output", "json"])
        .env("DROVER_ADDR", format!("127.0.0.1:{}", ports[0].0))
        .env("DROVER_CACERT", tls.path().join("ca.pem"))
        .env("DROVER_CLIENT_CERT", tls.path().join("client-cli.pem"))
        .env("DROVER_CLIENT_KEY", tls.path().join("client-cli-key.pem")));
    assert_success("drover operator raft list-peers", &peers);
    let peers: Value = serde_json::from_slice(&peers.stdout).expect("list-peers JSON");
    let addrs: Vec<&str> = peers["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["raft_addr"].as_str())
        .collect();
    assert_eq!(addrs, ["node1:7701", "node2:7701", "node3:7701"], "{peers}");

    // A job through node1.
    let first = run_job(
        &http,
        &base(1),
        json!({"command": "echo hello from compose"}),
    )
    .await;
    assert_eq!(first["state"], "SUCCEEDED", "{first}");
    let tail = first["attempts"][0]["output_tail"].as_str().unwrap_or("");
    assert_eq!(tail, "hello from compose\n", "{first}");

    // Stop a node that neither leads nor is the one the test talks to.
    let cluster = get(&http, &format!("{}/v1/cluster", base(1))).await;
    let leader = cluster["leader_id"].as_u64().expect("leader_id");
    let victim: usize = if leader == 2 { 3 } else { 2 };
    // Stopped before its executor registered, it would have no node record
    // to be declared DOWN.
    wait_node_status(&http, &base(1), victim, "READY", READY).await;
    project.compose(&["stop", &format!("node{victim}")]);
    // The agent is PID 1 of its container: it must act on SIGTERM itself
    // (the engine would SIGKILL it after the grace period: exit 137).
    let container = project.output(&["ps", "-q", &format!("node{victim}")]);
    let exit = docker_lines(&["inspect", "-f", "{{.State.ExitCode}}", container.trim()]);
    assert_eq!(exit, ["0"], "exit code of the stopped node{victim}");
    eprintln!(
        "node{victim} stopped (leader: node{leader}) after {:?}",
        started.elapsed()
    );
    wait_node_status(&http, &base(1), victim, "DOWN", NODE_DOWN).await;

    // Two of three still commit and run jobs, on the nodes that are up.
    let second = run_job(&http, &base(1), json!({"command": "echo still running"})).await;
    assert_eq!(second["state"], "SUCCEEDED", "{second}");
    assert_ne!(second["attempts"][0]["node"], victim, "{second}");
    let commit = get(&http, &format!("{}/v1/cluster", base(1))).await["commit_index"]
        .as_u64()
        .expect("commit_index");

    // Started again, it rejoins with its volume, catches up and runs jobs.
    project.compose(&["start", &format!("node{victim}")]);
    wait_ready(&http, &base(victim)).await;
    wait_for("the restarted node to catch up", READY, || async {
        let status = get_opt(&http, &format!("{}/v1/cluster?local=true", base(victim))).await?;
        (status["applied_index"].as_u64()? >= commit).then_some(())
    })
    .await;
    wait_node_status(&http, &base(1), victim, "READY", READY).await;
    eprintln!("node{victim} back after {:?}", started.elapsed());
    let pinned = run_job(
        &http,
        &base(1),
        json!({"command": "echo on the restarted node", "constraints": {"node": victim.to_string()}}),
    )
    .await;
    assert_eq!(pinned["state"], "SUCCEEDED", "{pinned}");
    assert_eq!(pinned["attempts"][0]["node"], victim, "{pinned}");

    // Down with volumes: nothing of the project is left on the engine.
    project.down();
    let label = format!("label=com.docker.compose.project={}", project.name);
    for (kind, list) in [("container", "-aq"), ("volume", "-q"), ("network", "-q")] {
        let left = docker_lines(&[kind, "ls", list, "--filter", &label]);
        assert!(left.is_empty(), "{kind}s left by the project: {left:?}");
    }
    eprintln!("done after {:?}", started.elapsed());
}

/// A compose project on the engine, torn down (with its volumes and the job
/// containers of its cluster) when dropped, also when the test panics.
struct Project {
    compose: Vec<String>,
    name: String,
    env: Vec<(String, String)>,
    down: bool,
}

impl Project {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.compose[0]);
        command
            .args(&self.compose[1..])
            .arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(Path::new(REPO).join("docker-compose.yml"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs a compose command; panics with its output if it fails.
    fn compose(&self, args: &[&str]) {
        self.output(args);
    }

    /// Runs a compose command and returns its stdout; panics with its
    /// output if it fails.
    fn output(&self, args: &[&str]) -> String {
        let out = run(&mut self.command(args));
        assert_success(&format!("compose {}", args.join(" ")), &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn down(&mut self) {
        self.down = true;
        let out =
            run(&mut self.command(&["down", "--volumes", "--remove-orphans", "--timeout", "10"]));
        // Job containers run on the host's engine, outside the project.
        common::remove_containers(&self.name);
        assert_success("compose down", &out);
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        if std::thread::panicking() {
            let logs = run(&mut self.command(&["logs", "--no-color", "--tail", "40"]));
            eprintln!(
                "---- compose logs of {}:\n{}{}",
                self.name,
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        self.down = true;
        let _ =
            run(&mut self.command(&["down", "--volumes", "--remove-orphans", "--timeout", "10"]));
        common::remove_containers(&self.name);
    }
}

/// `docker compose` (the v2 plugin) if it answers, else `docker-compose`.
fn compose_command() -> Option<Vec<String>> {
    for candidate in [&["docker", "compose"][..], &["docker-compose"][..]] {
        let works = Command::new(candidate[0])
            .args(&candidate[1..])
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if works {
            return Some(candidate.iter().map(|s| s.to_string()).collect());
        }
    }
    None
}

/// The engine's Unix socket (from DOCKER_HOST, or the default) and its group,
/// which the agents get so that they can use it.
fn docker_socket() -> (PathBuf, u32) {
    use std::os::unix::fs::MetadataExt;
    let socket = match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => {
            PathBuf::from(host.strip_prefix("unix://").unwrap_or_else(|| {
                panic!("the compose test mounts a local socket; DOCKER_HOST={host}")
            }))
        }
        _ => PathBuf::from("/var/run/docker.sock"),
    };
    let meta = std::fs::metadata(&socket).unwrap_or_else(|e| panic!("{socket:?}: {e}"));
    (socket, meta.gid())
}

/// Runs a command to its end, killing it after COMMAND_TIMEOUT.
fn run(command: &mut Command) -> Output {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    // Drain the pipes on threads so a chatty command never blocks on them.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for a command") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Lines of a docker command's stdout (empty when it fails).
fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = run(Command::new("docker").args(args));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The REST API over HTTPS, verified against the cluster's CA: curl (the
/// test's HTTP client is built without TLS).
struct Https {
    ca: PathBuf,
}

impl Https {
    /// The status and JSON body of one request (None: no answer).
    fn call(&self, method: &str, url: &str, body: Option<&Value>) -> Option<(u16, Value)> {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--max-time", "10", "-X", method, "--cacert"])
            .arg(&self.ca)
            .args(["-w", "\n%{http_code}"]);
        if let Some(body) = body {
            command
                .args(["-H", "content-type: application/json", "--data-binary"])
                .arg(body.to_string());
        }
        let out = run(command.arg(url));
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n')?;
        Some((
            code.trim().parse().ok()?,
            serde_json::from_str(body).unwrap_or(Value::Null),
        ))
    }
}

async fn get_opt(http: &Https, url: &str) -> Option<Value> {
    match http.call("GET", url, None)? {
        (200, body) => Some(body),
        _ => None,
    }
}

async fn get(http: &Https, url: &str) -> Value {
    let (status, body) = http
        .call("GET", url, None)
        .unwrap_or_else(|| panic!("GET {url}: no answer"));
    assert_eq!(status, 200, "GET {url}: {body}");
    body
}

/// Until the node's /v1/ready answers 200: a leader is known and it applied
/// the log.
async fn wait_ready(http: &Https, base: &str) {
    wait_for(&format!("{base}/v1/ready to answer 200"), READY, || async {
        let (status, _) = http.call("GET", &format!("{base}/v1/ready"), None)?;
        (status == 200).then_some(())
    })
    .await;
}

/// Until node `id` has `status` in the node table served at `base`.
async fn wait_node_status(http: &Https, base: &str, id: usize, status: &str, timeout: Duration) {
    wait_for(&format!("node {id} to be {status}"), timeout, || async {
        let nodes = get_opt(http, &format!("{base}/v1/nodes")).await?;
        let node = nodes["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["id"] == id)?
            .clone();
        (node["status"] == status).then_some(())
    })
    .await;
}

/// Submits a job through `base` and returns it once it has ended.
async fn run_job(http: &Https, base: &str, spec: Value) -> Value {
    let (status, job) = http
        .call("POST", &format!("{base}/v1/jobs"), Some(&spec))
        .unwrap_or_else(|| panic!("POST /v1/jobs: no answer"));
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().expect("job id").to_string();
    let ended = ["SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "LOST"];
    wait_for(&format!("job {id} ({spec}) to end"), JOB, || async {
        let job = get_opt(http, &format!("{base}/v1/jobs/{id}")).await?;
        ended.contains(&job["state"].as_str()?).then_some(job)
    })
    .await
}
