//! The Docker driver against the real engine.
//!
//! Without Docker these tests print a notice and pass, unless
//! `DROVER_REQUIRE_DOCKER=1` is set, in which case they fail. The job image is
//! built once by `tests/build-job-image.sh` (no registry needed).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use drover::executor::docker::{DockerConfig, DockerDriver};
use drover::executor::{
    Driver, ExecError, Handle, Outcome, OutputChunk, OutputSink, OutputStream, Reason, RunSpec,
    Started,
};

/// The driver, or `None` (with a notice) when Docker is unavailable and not required.
async fn driver() -> Option<DockerDriver> {
    let required = std::env::var("DROVER_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let config = DockerConfig {
        timeout_grace: Duration::from_millis(500),
        pull_timeout: Duration::from_secs(20),
        ..DockerConfig::default()
    };
    let driver = match DockerDriver::connect(config).await {
        Ok(d) => d,
        Err(e) if required => panic!("DROVER_REQUIRE_DOCKER=1 but Docker is unreachable: {e}"),
        Err(e) => {
            eprintln!("NOTICE: skipping Docker executor test, Docker unreachable: {e}");
            return None;
        }
    };
    if let Err(e) = common::job_image() {
        panic!("Docker is reachable but the job image cannot be built: {e}");
    }
    Some(driver)
}

fn spec(job_id: &str, command: &str) -> RunSpec {
    common::run_spec(job_id, command)
}

/// A job id unique to this test run.
fn job_id(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("t-{test}-{}-{nanos}", std::process::id())
}

/// Removes every container of `job` (by label), whatever happened.
async fn cleanup(driver: &DockerDriver, job: &str) {
    if let Ok(list) = driver.list().await {
        for c in list.into_iter().filter(|c| c.job_id == job) {
            let _ = driver.remove(&c.container_id).await;
        }
    }
}

async fn containers_of(driver: &DockerDriver, job: &str) -> usize {
    match driver.list().await {
        Ok(list) => list.iter().filter(|c| c.job_id == job).count(),
        Err(e) => panic!("list failed: {e}"),
    }
}

fn running(started: Result<Started, ExecError>) -> Handle {
    match started {
        Ok(Started::Running(h)) => h,
        other => panic!("expected a running container, got {other:?}"),
    }
}

/// Runs to completion with output captured; returns the outcome and stdout/stderr.
async fn run(driver: &DockerDriver, spec: &RunSpec) -> (Outcome, String, String) {
    let (sink, mut rx) = OutputSink::channel(1024);
    let handle = running(driver.start(spec, Some(sink)).await);
    let name = handle.name.clone();
    let outcome = match tokio::time::timeout(Duration::from_secs(30), driver.wait(handle)).await {
        Ok(Ok(outcome)) => outcome,
        other => {
            let _ = driver.remove(&name).await;
            panic!("wait did not finish within 30 s: {other:?}");
        }
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Ok(OutputChunk { stream, data }) = rx.try_recv() {
        match stream {
            OutputStream::Stdout => out.extend_from_slice(&data),
            OutputStream::Stderr => err.extend_from_slice(&data),
            OutputStream::Notice => panic!("unexpected notice {data:?}"),
        }
    }
    (
        outcome,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Polls `check` until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn echo_hello_succeeds_with_output_and_container_removed() {
    let Some(d) = driver().await else { return };
    let job = job_id("echo");
    let (outcome, out, _) = run(&d, &spec(&job, "echo hello")).await;
    cleanup(&d, &job).await;
    assert_eq!(outcome.reason, Reason::Exited(0));
    assert_eq!(outcome.exit_code, Some(0));
    assert!(outcome.succeeded());
    assert!(outcome.finished_at >= outcome.started_at);
    assert_eq!(out, "hello\n");
    assert_eq!(containers_of(&d, &job).await, 0);
}

#[tokio::test]
async fn exit_code_is_reported() {
    let Some(d) = driver().await else { return };
    let job = job_id("exit3");
    let (outcome, _, err) = run(&d, &spec(&job, "echo oops >&2; exit 3")).await;
    cleanup(&d, &job).await;
    assert_eq!(outcome.reason, Reason::Exited(3));
    assert_eq!(outcome.exit_code, Some(3));
    assert_eq!(err, "oops\n");
}

#[tokio::test]
async fn timeout_kills_and_removes_within_3s() {
    let Some(d) = driver().await else { return };
    let job = job_id("timeout");
    let s = RunSpec {
        timeout: Some(Duration::from_secs(1)),
        ..spec(&job, "sleep 60")
    };
    let t0 = Instant::now();
    let handle = running(d.start(&s, None).await);
    let outcome = tokio::time::timeout(Duration::from_secs(10), d.wait(handle)).await;
    let elapsed = t0.elapsed();
    let gone = containers_of(&d, &job).await == 0;
    cleanup(&d, &job).await;
    let outcome = outcome.expect("wait hung").expect("wait failed");
    assert_eq!(outcome.reason, Reason::TimedOut);
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert!(gone, "container still there");
}

#[tokio::test]
async fn memory_hog_is_oom_killed() {
    let Some(d) = driver().await else { return };
    let job = job_id("oom");
    // dd allocates its 64 MiB block and fills it from /dev/zero at once.
    let s = RunSpec {
        memory_mib: 32,
        timeout: Some(Duration::from_secs(20)),
        ..spec(&job, "dd if=/dev/zero of=/dev/null bs=64M count=1")
    };
    let (outcome, _, _) = run(&d, &s).await;
    cleanup(&d, &job).await;
    assert_eq!(outcome.reason, Reason::OomKilled, "{outcome:?}");
}

#[tokio::test]
async fn no_network_by_default() {
    let Some(d) = driver().await else { return };
    let job = job_id("net");
    // Only loopback exists, and reaching out (Docker's default gateway) fails.
    let (outcome, out, _) = run(
        &d,
        &spec(
            &job,
            "ls /sys/class/net; wget -q -T 2 -O /dev/null http://172.17.0.1:2375/ && echo reached",
        ),
    )
    .await;
    cleanup(&d, &job).await;
    assert_eq!(out, "lo\n");
    assert_ne!(outcome.exit_code, Some(0), "{outcome:?}");

    // A job that asks for a network on a node whose policy gives none is
    // refused where it would run, whatever let it in (the granted network
    // is tests/network.rs's).
    let job2 = job_id("net-on");
    let s = RunSpec {
        network: true,
        ..spec(&job2, "ls /sys/class/net")
    };
    let started = d.start(&s, None).await;
    cleanup(&d, &job2).await;
    match started {
        Ok(Started::Finished(o)) => match o.reason {
            Reason::Refused(msg) => assert!(msg.contains("allow_network"), "{msg}"),
            other => panic!("expected a refusal, got {other:?}"),
        },
        other => panic!("expected a finished outcome, got {other:?}"),
    }
    assert_eq!(containers_of(&d, &job2).await, 0);
}

#[tokio::test]
async fn root_fs_is_read_only_and_tmp_is_writable() {
    let Some(d) = driver().await else { return };
    let job = job_id("rofs");
    let (outcome, out, err) = run(
        &d,
        &spec(
            &job,
            "if echo x > /x; then echo wrote-root; fi; echo ok > /tmp/f && cat /tmp/f",
        ),
    )
    .await;
    cleanup(&d, &job).await;
    assert_eq!(outcome.reason, Reason::Exited(0));
    assert_eq!(out, "ok\n");
    assert!(err.contains("Read-only file system"), "{err:?}");
}

#[tokio::test]
async fn stop_cancels_and_removes() {
    let Some(d) = driver().await else { return };
    let job = job_id("stop");
    let s = spec(&job, "echo started; sleep 60");
    let (sink, mut rx) = OutputSink::channel(16);
    let handle = running(d.start(&s, Some(sink)).await);
    // Stop once the job has visibly started.
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    assert!(
        matches!(first, Ok(Some(ref c)) if c.data.as_ref() == b"started\n"),
        "{first:?}"
    );
    let t0 = Instant::now();
    let (stopped, outcome) = tokio::join!(
        d.stop(&job, 1, Duration::from_secs(1)),
        tokio::time::timeout(Duration::from_secs(10), d.wait(handle)),
    );
    let gone = containers_of(&d, &job).await == 0;
    cleanup(&d, &job).await;
    stopped.expect("stop failed");
    let outcome = outcome.expect("wait hung").expect("wait failed");
    assert_eq!(outcome.reason, Reason::Cancelled);
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(gone);
    // Stopping again (nothing left) is fine.
    d.stop(&job, 1, Duration::from_secs(1))
        .await
        .expect("second stop failed");
}

#[tokio::test]
async fn missing_image_is_unavailable_quickly() {
    let Some(d) = driver().await else { return };
    let job = job_id("noimg");
    let s = RunSpec {
        image: "drover-missing:none".into(),
        ..spec(&job, "true")
    };
    let t0 = Instant::now();
    let started = tokio::time::timeout(Duration::from_secs(25), d.start(&s, None)).await;
    cleanup(&d, &job).await;
    match started {
        Ok(Ok(Started::Finished(o))) => match o.reason {
            Reason::ImageUnavailable(msg) => assert!(msg.contains("drover-missing"), "{msg}"),
            other => panic!("expected ImageUnavailable, got {other:?}"),
        },
        other => panic!("expected a finished outcome, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(25));
}

#[tokio::test]
async fn env_and_labels_identify_the_attempt() {
    let Some(d) = driver().await else { return };
    let job = job_id("env");
    let s = RunSpec {
        attempt: 7,
        env: vec![
            ("GREETING".into(), "hi there".into()),
            ("DROVER_ATTEMPT".into(), "forged".into()),
        ],
        ..spec(
            &job,
            "echo \"$DROVER_JOB_ID $DROVER_ATTEMPT $GREETING\"; sleep 30",
        )
    };
    let (sink, mut rx) = OutputSink::channel(16);
    let handle = running(d.start(&s, Some(sink)).await);
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    let listed = d.list().await;
    let _ = d.stop(&job, 7, Duration::from_secs(0)).await;
    let waited = tokio::time::timeout(Duration::from_secs(10), d.wait(handle)).await;
    cleanup(&d, &job).await;

    let first = first.ok().flatten().expect("no output");
    assert_eq!(
        String::from_utf8_lossy(&first.data),
        format!("{job} 7 hi there\n")
    );
    let listed = listed.expect("list failed");
    let mine: Vec<_> = listed.iter().filter(|c| c.job_id == job).collect();
    assert_eq!(mine.len(), 1, "{listed:?}");
    assert_eq!(mine[0].attempt, Some(7));
    assert_eq!(mine[0].name, format!("drover-{job}-7"));
    assert!(mine[0].running);
    assert!(waited.is_ok());
}

#[tokio::test]
async fn container_is_locked_down() {
    let Some(d) = driver().await else { return };
    let job = job_id("caps");
    // No capabilities at all, no_new_privs set, Docker's default seccomp
    // filter in force (mode 2), pids limited.
    let (outcome, out, _) = run(
        &d,
        &spec(
            &job,
            "grep -E '^(CapEff|CapPrm|NoNewPrivs|Seccomp)' /proc/self/status; cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max",
        ),
    )
    .await;
    cleanup(&d, &job).await;
    assert_eq!(outcome.reason, Reason::Exited(0));
    let fields: HashMap<&str, &str> = out
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect();
    assert_eq!(fields.get("CapEff"), Some(&"0000000000000000"), "{out}");
    assert_eq!(fields.get("CapPrm"), Some(&"0000000000000000"), "{out}");
    assert_eq!(fields.get("NoNewPrivs"), Some(&"1"), "{out}");
    assert_eq!(fields.get("Seccomp"), Some(&"2"), "{out}");
    assert!(out.lines().any(|l| l == "64"), "pids limit missing: {out}");
}

#[tokio::test]
async fn slow_reader_never_blocks_the_job() {
    let Some(d) = driver().await else { return };
    let job = job_id("flood");
    // A 1-slot channel read only every 100 ms while the job writes ~2 MB.
    let (sink, mut rx) = OutputSink::channel(1);
    let reader = tokio::spawn(async move {
        let mut chunks = Vec::new();
        while let Some(chunk) = rx.recv().await {
            chunks.push(chunk);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        chunks
    });
    let t0 = Instant::now();
    let handle = running(
        d.start(
            &spec(&job, "yes drover | head -c 2000000; echo done"),
            Some(sink),
        )
        .await,
    );
    let outcome = tokio::time::timeout(Duration::from_secs(20), d.wait(handle)).await;
    cleanup(&d, &job).await;
    let outcome = outcome.expect("job blocked").expect("wait failed");
    assert_eq!(outcome.reason, Reason::Exited(0));
    let ran = outcome
        .finished_at
        .duration_since(outcome.started_at)
        .unwrap_or_default();
    assert!(ran < Duration::from_secs(5), "job took {ran:?}");
    let chunks = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("reader hung")
        .expect("reader panicked");
    let notice = chunks
        .iter()
        .find(|c| c.stream == OutputStream::Notice)
        .map(|c| String::from_utf8_lossy(&c.data).into_owned())
        .unwrap_or_default();
    assert!(notice.contains("bytes of output dropped"), "{notice:?}");
    assert!(t0.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn stale_containers_are_found_by_label_and_removed() {
    let Some(d) = driver().await else { return };
    let job = job_id("orphan");
    let _handle = running(d.start(&spec(&job, "sleep 60"), None).await);
    // A second start of the same attempt is refused, not duplicated.
    let dup = d.start(&spec(&job, "sleep 60"), None).await;
    assert!(matches!(dup, Err(ExecError::AlreadyExists(_))), "{dup:?}");
    assert_eq!(containers_of(&d, &job).await, 1);
    cleanup(&d, &job).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            containers_of(&d, &job).await == 0
        })
        .await
    );
}

#[tokio::test]
async fn reattach_by_label_then_stop_and_wait() {
    let Some(d) = driver().await else { return };
    let job = job_id("reattach");
    let s = RunSpec {
        attempt: 3,
        ..spec(&job, "sleep 60")
    };
    // Start, then forget the handle as a crashed node would.
    drop(running(d.start(&s, None).await));
    let found = d.list().await.expect("list failed");
    let info = found
        .iter()
        .find(|c| c.job_id == job)
        .cloned()
        .expect("container not found by label");
    assert_eq!(info.attempt, Some(3));
    let handle = Handle::reattach(&info, None);
    let (stopped, outcome) = tokio::join!(
        d.stop(&job, 3, Duration::from_secs(1)),
        tokio::time::timeout(Duration::from_secs(10), d.wait(handle)),
    );
    cleanup(&d, &job).await;
    stopped.expect("stop failed");
    let outcome = outcome.expect("wait hung").expect("wait failed");
    assert_eq!(outcome.reason, Reason::Cancelled);
    assert_eq!(containers_of(&d, &job).await, 0);
}

/// A driver under a given sandbox policy.
async fn driver_with(policy: drover::jobs::policy::SandboxPolicy) -> Option<DockerDriver> {
    driver().await?;
    let config = DockerConfig {
        timeout_grace: Duration::from_millis(500),
        pull_timeout: Duration::from_secs(20),
        policy,
        ..DockerConfig::default()
    };
    Some(DockerDriver::connect(config).await.expect("driver"))
}

/// Hostile and careless jobs against the default sandbox policy: each
/// stays inside its limits, and says so in its output.
#[tokio::test]
async fn hostile_jobs_stay_inside_the_sandbox() {
    let Some(d) = driver_with(Default::default()).await else {
        return;
    };
    // (what, command, what its output must contain)
    let table = [
        ("not root", "id -u; id -g", "65534\n65534\n"),
        (
            // busybox's shell cannot open fds past 9, so the proof is the
            // limit itself: set hard and soft, and not raisable from inside.
            "an fd bomb meets a hard open-files limit it cannot raise",
            "grep 'Max open files' /proc/self/limits | tr -s ' '; \
             ulimit -n 4096 2>/dev/null && echo raised || echo refused",
            "Max open files 1024 1024 files \nrefused\n",
        ),
        (
            "a fork bomb stops at the pids limit",
            // A fork that fails ends the shell: the bomb runs in a
            // subshell that notes how many it started.
            "( n=0; while [ $n -lt 500 ]; do sleep 30 & n=$((n+1)); echo $n >/tmp/n; done ) 2>/dev/null; \
             echo started $(cat /tmp/n); killall sleep 2>/dev/null; true",
            "started ",
        ),
        (
            "no Docker socket or host path",
            "ls /var/run/docker.sock /run/docker.sock 2>&1; grep -c ' /work\\| /root\\| /home' /proc/mounts || true",
            "No such file",
        ),
    ];
    for (what, command, expected) in table {
        let job = job_id("hostile");
        let (outcome, out, err) = run(&d, &spec(&job, command)).await;
        cleanup(&d, &job).await;
        assert!(
            out.contains(expected),
            "{what}: {outcome:?}\nstdout: {out}\nstderr: {err}"
        );
        if what.starts_with("a fork bomb") {
            let started: u32 = out
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(u32::MAX);
            assert!(
                started < 64,
                "{what}: {started} processes under a pids limit of 64"
            );
        }
        if what.starts_with("no Docker") {
            assert!(
                out.trim_end().ends_with('0'),
                "{what}: host paths mounted: {out}"
            );
        }
    }
}

/// `allowed_images` and `pull` are enforced by the executor too, whatever
/// the submitting node let through.
#[tokio::test]
async fn the_image_policy_is_enforced_where_the_job_runs() {
    let allow_only_registry = drover::jobs::policy::SandboxPolicy {
        allowed_images: vec!["registry.internal/*".into()],
        ..Default::default()
    };
    let Some(d) = driver_with(allow_only_registry).await else {
        return;
    };
    let job = job_id("policy");
    let started = d.start(&spec(&job, "true"), None).await;
    cleanup(&d, &job).await;
    match started {
        Ok(Started::Finished(o)) => match o.reason {
            Reason::ImageUnavailable(msg) => {
                assert!(msg.contains("allowed_images"), "{msg}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        },
        other => panic!("expected a finished outcome, got {other:?}"),
    }

    // pull = "never": a missing image fails at once, no registry asked.
    let never = drover::jobs::policy::SandboxPolicy {
        pull: drover::jobs::policy::PullPolicy::Never,
        ..Default::default()
    };
    let d = driver_with(never).await.expect("driver");
    let job = job_id("never");
    let missing = RunSpec {
        image: "registry.invalid/drover-missing:none".into(),
        ..spec(&job, "true")
    };
    let t0 = Instant::now();
    let started = d.start(&missing, None).await;
    cleanup(&d, &job).await;
    match started {
        Ok(Started::Finished(o)) => match o.reason {
            Reason::ImageUnavailable(msg) => assert!(msg.contains("pull = \"never\""), "{msg}"),
            other => panic!("expected ImageUnavailable, got {other:?}"),
        },
        other => panic!("expected a finished outcome, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "no pull was tried");
    // The local image still runs.
    let job = job_id("never-local");
    let (outcome, out, _) = run(&d, &spec(&job, "echo local")).await;
    cleanup(&d, &job).await;
    assert_eq!(outcome.reason, Reason::Exited(0));
    assert_eq!(out, "local\n");
}

/// A job runs as the `UID:GID` it asks for only where
/// `executor.policy.allowed_users` lists it; anything else, root first of
/// all, is refused where it would run, naming the key.
#[tokio::test]
async fn a_job_chooses_its_user_only_where_the_policy_allows() {
    let policy = drover::jobs::policy::SandboxPolicy {
        allowed_users: vec!["1000:*".into()],
        ..Default::default()
    };
    let Some(d) = driver_with(policy).await else {
        return;
    };
    let job = job_id("user");
    let chosen = RunSpec {
        user: Some("1000:2000".into()),
        ..spec(&job, "id -u; id -g")
    };
    let (outcome, out, err) = run(&d, &chosen).await;
    cleanup(&d, &job).await;
    assert_eq!(outcome.reason, Reason::Exited(0), "{err}");
    assert_eq!(out, "1000\n2000\n");
    for refused in ["0", "0:0", "1001:1001"] {
        let job = job_id("user-refused");
        let asked = RunSpec {
            user: Some(refused.into()),
            ..spec(&job, "id -u")
        };
        let started = d.start(&asked, None).await;
        let left = containers_of(&d, &job).await;
        cleanup(&d, &job).await;
        match started {
            Ok(Started::Finished(Outcome {
                reason: Reason::Refused(msg),
                ..
            })) => assert!(msg.contains("executor.policy.allowed_users"), "{msg}"),
            other => panic!("{refused}: expected a refusal, got {other:?}"),
        }
        assert_eq!(left, 0, "{refused}: no container was made");
    }
}

/// Seconds a job's `dd` of `mib` MiB with direct I/O to `/scratch` took,
/// timed inside the container (busybox's `date` has no sub-second field;
/// `/proc/uptime` counts hundredths).
async fn timed_scratch_write(d: &DockerDriver, job: &str, mib: u32) -> f64 {
    let command = format!(
        "read s _ </proc/uptime; \
         dd if=/dev/zero of=/scratch/f bs=1M count={mib} oflag=direct 2>/dev/null || exit 3; \
         read e _ </proc/uptime; echo $s $e; ls -ln /scratch"
    );
    let (outcome, out, err) = run(d, &spec(job, &command)).await;
    cleanup(d, job).await;
    assert_eq!(outcome.reason, Reason::Exited(0), "{out}\n{err}");
    let mut lines = out.lines();
    let times: Vec<f64> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    assert_eq!(times.len(), 2, "start and end: {out}");
    // The file belongs to the container's user (65534), not root.
    let owner: Vec<&str> = lines
        .find(|l| l.ends_with(" f"))
        .map(|l| l.split_whitespace().skip(2).take(2).collect())
        .unwrap_or_default();
    assert_eq!(owner, ["65534", "65534"], "owner of /scratch/f: {out}");
    times[1] - times[0]
}

/// With `executor.scratch_dir` each attempt gets its own writable
/// `/scratch` on disk, and `io_write_bps` holds its writes to that rate: a
/// direct-I/O `dd` under a 10 MiB/s limit runs within 20 % of it, while the
/// same `dd` without the limit is faster than that band. The directory is
/// gone with the container.
#[tokio::test]
async fn scratch_writes_are_held_to_the_io_limit() {
    let Some(fs) = common::small_fs::SmallFs::create_or_skip(256) else {
        return;
    };
    if driver().await.is_none() {
        return;
    }
    let scratch = fs.path().join("scratch");
    let connect = |io_write_bps: u64| {
        DockerDriver::connect(DockerConfig {
            scratch_dir: Some(scratch.clone()),
            policy: drover::jobs::policy::SandboxPolicy {
                io_write_bps,
                ..Default::default()
            },
            ..DockerConfig::default()
        })
    };
    const LIMIT: u64 = 10 << 20;
    const MIB: u32 = 32;
    let limited = connect(LIMIT).await.expect("driver");
    let job = job_id("io-limited");
    let seconds = timed_scratch_write(&limited, &job, MIB).await;
    let rate = f64::from(MIB) * f64::from(1u32 << 20) / seconds;
    let limit = LIMIT as f64;
    assert!(
        (0.8 * limit..=1.2 * limit).contains(&rate),
        "{MIB} MiB in {seconds:.2} s = {:.1} MiB/s under a 10 MiB/s limit",
        rate / f64::from(1u32 << 20)
    );
    let free = connect(0).await.expect("driver");
    let job = job_id("io-free");
    let seconds = timed_scratch_write(&free, &job, MIB).await;
    let rate = f64::from(MIB) * f64::from(1u32 << 20) / seconds.max(0.01);
    assert!(
        rate > 1.2 * limit,
        "without a limit the same write ran at only {:.1} MiB/s: the bound above proves nothing",
        rate / f64::from(1u32 << 20)
    );
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch directories left: {left:?}");
}

/// A job's last words without a newline reach its output: the engine logs
/// them as the container's pipe closes, which its follow can miss (it did
/// in about half of the runs before the driver read the log once more).
#[tokio::test]
async fn a_last_line_without_a_newline_is_never_lost() {
    let Some(d) = driver().await else {
        return;
    };
    for n in 0..8 {
        let job = job_id("no-newline");
        let (outcome, out, err) =
            run(&d, &spec(&job, "echo first; printf oops >&2; printf last")).await;
        cleanup(&d, &job).await;
        assert_eq!(outcome.reason, Reason::Exited(0));
        assert_eq!(
            (out.as_str(), err.as_str()),
            ("first\nlast", "oops"),
            "run {n}"
        );
    }
}
