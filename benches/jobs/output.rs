//! Phase (c): one job writing a large output, captured and stored.

use super::*;

/// What the node stored of one attempt's output.
#[derive(Default)]
pub(crate) struct StoredOutput {
    pub(crate) stdout_bytes: u64,
    pub(crate) stderr_bytes: u64,
    /// Stdout bytes other than the `x` the job writes.
    pub(crate) unexpected_bytes: u64,
    pub(crate) chunks: u64,
    pub(crate) notices: Vec<String>,
    pub(crate) source: String,
}

pub(crate) struct OutputSample {
    pub(crate) job: pb::Job,
    /// SubmitJob sent -> SUCCEEDED seen.
    pub(crate) total: Duration,
    pub(crate) stored: Result<StoredOutput, String>,
}

impl OutputSample {
    /// started_at -> finished_at of the attempt, in seconds.
    pub(crate) fn run_secs(&self) -> Option<f64> {
        let a = self.job.attempts.last()?;
        (a.started_at_ms > 0 && a.finished_at_ms >= a.started_at_ms)
            .then(|| (a.finished_at_ms - a.started_at_ms) as f64 / 1e3)
    }

    pub(crate) fn complete(&self, expected: u64) -> bool {
        self.stored.as_ref().is_ok_and(|s| {
            s.stdout_bytes == expected && s.unexpected_bytes == 0 && s.notices.is_empty()
        })
    }
}

pub(crate) async fn read_stored_output(
    client: &mut DroverClient<Channel>,
    id: &str,
) -> Result<StoredOutput, String> {
    let deadline = Instant::now() + OUTPUT_READ_TIMEOUT;
    let mut stored = StoredOutput::default();
    let mut after_seq = None;
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "reading the output took over {OUTPUT_READ_TIMEOUT:?}"
            ));
        }
        let page = client
            .get_job_output(pb::GetJobOutputRequest {
                id: id.to_string(),
                attempt: 0,
                after_seq,
                max_bytes: OUTPUT_PAGE_BYTES,
            })
            .await
            .map_err(|s| format!("GetJobOutput: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        stored.source = page.source;
        let Some(last) = page.chunks.last() else {
            return Ok(stored);
        };
        if after_seq.is_some_and(|s| last.seq <= s) {
            return Err(format!("GetJobOutput: seq went back to {}", last.seq));
        }
        after_seq = Some(last.seq);
        for chunk in &page.chunks {
            stored.chunks += 1;
            match chunk.stream.as_str() {
                "stdout" => {
                    stored.stdout_bytes += chunk.data.len() as u64;
                    stored.unexpected_bytes +=
                        chunk.data.iter().filter(|b| **b != b'x').count() as u64;
                }
                "stderr" => stored.stderr_bytes += chunk.data.len() as u64,
                _ => {
                    if stored.notices.len() < 3 {
                        stored
                            .notices
                            .push(String::from_utf8_lossy(&chunk.data).trim().to_string());
                    }
                }
            }
        }
    }
}

pub(crate) async fn output_once(
    client: &mut DroverClient<Channel>,
    settings: &Settings,
) -> Result<OutputSample, String> {
    let spec = pb::JobSpec {
        command: settings.output_command(),
        resources: Some(pb::Resources {
            cpu_millis: OUTPUT_JOB_CPU_MILLIS,
            ..Default::default()
        }),
        ..Default::default()
    };
    let t0 = Instant::now();
    let id = submit(client, spec).await?;
    let (job, seen) =
        poll_until_terminal(client, &id, OUTPUT_POLL, t0 + OUTPUT_JOB_TIMEOUT).await?;
    if job.state != "SUCCEEDED" {
        return Err(describe_end(&job));
    }
    let total = seen.duration_since(t0);
    let stored = read_stored_output(client, &id).await;
    Ok(OutputSample { job, total, stored })
}

/// The engine alone, following a container's log the way Drover's driver
/// does: `docker run -d`, at once `docker logs -f` (bytes counted); whether
/// the container was still running when that follow ended; then, after
/// `docker wait`, `docker logs` without follow.
pub(crate) struct EngineFollow {
    pub(crate) followed_bytes: u64,
    pub(crate) running_after_follow: bool,
    pub(crate) after_exit_bytes: u64,
    /// The container's log driver and options, as the engine reports them.
    pub(crate) log_config: String,
}

pub(crate) async fn engine_follow_control(settings: &Settings) -> Result<EngineFollow, String> {
    let command = settings.output_command();
    let mut run = vec![
        "run".to_string(),
        "-d".to_string(),
        "--label".to_string(),
        settings.baseline_label(),
        settings.image.clone(),
    ];
    run.extend(["sh".to_string(), "-c".to_string(), command]);
    let docker = &settings.docker_bin;
    let started = run_process(docker, &run, Stdout::Count, SHORT_JOB_TIMEOUT).await?;
    let id = started.stdout_head.trim().to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("docker run -d printed {id:?}, not a container id"));
    }
    let args = |follow: bool| {
        let mut a = vec!["logs".to_string()];
        if follow {
            a.push("-f".to_string());
        }
        a.push(id.clone());
        a
    };
    let result = async {
        let followed = run_process(docker, &args(true), Stdout::Count, OUTPUT_JOB_TIMEOUT).await?;
        let inspect = vec![
            "inspect".to_string(),
            "-f".to_string(),
            "{{.State.Running}} {{json .HostConfig.LogConfig}}".to_string(),
            id.clone(),
        ];
        let running = run_process(docker, &inspect, Stdout::Count, SHORT_JOB_TIMEOUT).await?;
        let wait = vec!["wait".to_string(), id.clone()];
        run_process(docker, &wait, Stdout::Count, OUTPUT_JOB_TIMEOUT).await?;
        let after = run_process(docker, &args(false), Stdout::Count, OUTPUT_JOB_TIMEOUT).await?;
        let (state, log_config) = running
            .stdout_head
            .trim()
            .split_once(' ')
            .unwrap_or((running.stdout_head.trim(), ""));
        Ok(EngineFollow {
            followed_bytes: followed.stdout_bytes,
            running_after_follow: state == "true",
            after_exit_bytes: after.stdout_bytes,
            log_config: log_config.to_string(),
        })
    }
    .await;
    let rm = vec!["rm".to_string(), "-f".to_string(), id.clone()];
    if let Err(e) = run_timed(docker, &rm, CLEANUP_TIMEOUT).await {
        eprintln!("[jobs] removing the control container {id}: {e}");
    }
    result
}

#[derive(Default)]
pub(crate) struct OutputResult {
    pub(crate) drover: Vec<OutputSample>,
    pub(crate) docker: Vec<Duration>,
    pub(crate) engine: Vec<EngineFollow>,
    pub(crate) errors: Vec<String>,
    pub(crate) notes: PhaseNotes,
}

pub(crate) async fn run_output(settings: &Settings) -> OutputResult {
    let phase = Phase::Output;
    let mut result = OutputResult::default();
    eprintln!("[jobs] output: starting a 1-node cluster");
    let executor = Executor {
        cpu_millis: 0,
        memory_mib: 0,
        output_cap_bytes: settings.output_bytes() + (64 << 20),
    };
    let Some(mut cluster) = result.notes.start(settings, phase, 1, executor).await else {
        return result;
    };
    let Some(mut client) = result.notes.leader_client(&cluster, phase).await else {
        return result;
    };
    let command = settings.output_command();
    let baseline = docker_run_args(settings, &[], &["sh", "-c", &command]);
    for round in 0..settings.output_runs {
        for k in 0..2 {
            if (round + k) % 2 == 0 {
                match output_once(&mut client, settings).await {
                    Ok(sample) => {
                        eprintln!(
                            "[jobs] output {}/{}: drover {:.2} s submit->SUCCEEDED, run {} s",
                            round + 1,
                            settings.output_runs,
                            sample.total.as_secs_f64(),
                            fmt_num(sample.run_secs())
                        );
                        result.drover.push(sample);
                    }
                    Err(e) => result.errors.push(format!("drover: {e}")),
                }
            } else {
                match run_timed(&settings.docker_bin, &baseline, OUTPUT_JOB_TIMEOUT).await {
                    Ok(d) => {
                        eprintln!(
                            "[jobs] output {}/{}: docker run {:.2} s",
                            round + 1,
                            settings.output_runs,
                            d.as_secs_f64()
                        );
                        result.docker.push(d);
                    }
                    Err(e) => result.errors.push(format!("docker: {e}")),
                }
            }
        }
        // Not timed against anything: shows what the engine's own log
        // follow returns for the same output.
        match engine_follow_control(settings).await {
            Ok(c) => {
                eprintln!(
                    "[jobs] output {}/{}: engine control: docker logs -f {} bytes (still running after it: {}), docker logs after exit {} bytes",
                    round + 1,
                    settings.output_runs,
                    c.followed_bytes,
                    c.running_after_follow,
                    c.after_exit_bytes
                );
                result.engine.push(c);
            }
            Err(e) => result.errors.push(format!("engine control: {e}")),
        }
        if let Err(e) = cluster.check_alive() {
            result.notes.fail(phase, e);
            break;
        }
    }
    result.notes.finish(&cluster, settings, phase);
    result
}

pub(crate) fn render_output(out: &mut String, settings: &Settings, r: &OutputResult) {
    let expected = settings.output_bytes();
    let mib = settings.output_mib as f64;
    let _ = writeln!(
        out,
        "## (c) A job writing {} MiB to stdout\n\n\
         1 node, `executor.output_cap_bytes` = {} MiB. The job: `{}` with {} millicores \
         (`tr` because Docker's json-file log driver would store each NUL byte as the six characters `\\u0000`). \
         Drover is polled with `GetJob` every {} ms. Baseline: `docker run --rm IMAGE sh -c '…' > /dev/null` \
         (stdout to /dev/null), wall time of the CLI process. {} rounds, interleaved, the order alternating.\n",
        settings.output_mib,
        (expected + (64 << 20)) >> 20,
        settings.output_command(),
        OUTPUT_JOB_CPU_MILLIS,
        OUTPUT_POLL.as_millis(),
        settings.output_runs
    );
    let run = stats(r.drover.iter().filter_map(OutputSample::run_secs).collect());
    let total = stats(r.drover.iter().map(|s| s.total.as_secs_f64()).collect());
    let docker = stats(r.docker.iter().map(|d| d.as_secs_f64()).collect());
    let rate = |secs: Option<f64>| secs.filter(|s| *s > 0.0).map(|s| mib / s);
    out.push_str(
        "| measure | runs | median s | MiB/s at the median | min s | max s | MiB/s vs docker run |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, s) in [
        ("drover: container started → finished (record)", run),
        (
            "drover: submit → SUCCEEDED (output stored, result committed)",
            total,
        ),
        ("`docker run --rm … > /dev/null` (wall)", docker),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            s.n,
            fmt_num(s.p50),
            fmt_num(rate(s.p50)),
            fmt_num(s.min),
            fmt_num(s.max),
            fmt_ratio(rate(s.p50), rate(docker.p50))
        );
    }
    out.push_str(
        "\nStored output per Drover run (paged back with `GetJobOutput`, 2 MiB pages):\n\n\
         | run | started → finished s | submit → SUCCEEDED s | stdout bytes stored | expected | non-`x` bytes | chunks | notices |\n\
         |---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for (i, s) in r.drover.iter().enumerate() {
        let (bytes, unexpected, chunks, notices) = match &s.stored {
            Ok(st) => (
                st.stdout_bytes.to_string(),
                st.unexpected_bytes.to_string(),
                st.chunks.to_string(),
                if st.notices.is_empty() {
                    format!("none (source {})", st.source)
                } else {
                    st.notices.join(" / ").replace('|', "/")
                },
            ),
            Err(e) => (
                "–".into(),
                "–".into(),
                "–".into(),
                format!("read failed: {e}"),
            ),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {bytes} | {expected} | {unexpected} | {chunks} | {notices} |",
            i + 1,
            fmt_num(s.run_secs()),
            s.total.as_secs_f64(),
        );
    }
    let complete = r.drover.iter().filter(|s| s.complete(expected)).count();
    let _ = writeln!(
        out,
        "\n**{complete} of {} Drover runs stored the whole output** (every byte, nothing else, no notice).\n",
        r.drover.len()
    );
    if !r.engine.is_empty() {
        let list = |f: fn(&EngineFollow) -> String| {
            r.engine
                .iter()
                .map(|c| f(c).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "Engine control, once per round and untimed: the same command in `docker run -d`, at once \
             `docker logs -f` (how Drover's driver reads output: the engine's log API with follow), bytes counted: \
             {} (expected {expected} each); container still running when that follow ended: {}; \
             `docker logs` without follow after `docker wait` (what the engine kept): {}. \
             The containers' log config: `{}`.\n",
            list(|c| c.followed_bytes.to_string()),
            list(|c| c.running_after_follow.to_string()),
            list(|c| c.after_exit_bytes.to_string()),
            r.engine.first().map_or("", |c| c.log_config.as_str())
        );
    }
    render_errors(out, &r.errors);
}
