//! Phase (a): the latency of one short job against `docker run`.

use super::*;

/// One Drover run of the latency phase.
pub(crate) struct DroverSample {
    /// SubmitJob sent -> SUCCEEDED seen (monotonic clock).
    pub(crate) total: Duration,
    /// SubmitJob round trip.
    pub(crate) submit_rpc: Duration,
    /// SubmitJob sent -> the output stream ended.
    pub(crate) stream_end: Duration,
    /// Unix ms when SubmitJob was sent and when SUCCEEDED was seen.
    pub(crate) sent_ms: i64,
    pub(crate) seen_ms: i64,
    pub(crate) job: pb::Job,
}

impl DroverSample {
    /// The record's segments: sent -> submitted -> assigned -> started ->
    /// finished -> seen, in ms (wall clock, one machine). They add up to
    /// `seen_ms - sent_ms`.
    pub(crate) fn segments(&self) -> Option<[i64; 5]> {
        let a = self.job.attempts.last()?;
        Some([
            self.job.submitted_at_ms - self.sent_ms,
            a.assigned_at_ms - self.job.submitted_at_ms,
            a.started_at_ms - a.assigned_at_ms,
            a.finished_at_ms - a.started_at_ms,
            self.seen_ms - a.finished_at_ms,
        ])
    }
}

pub(crate) const SEGMENTS: [&str; 5] = [
    "client sends SubmitJob → submitted_at (leader stamps the proposal)",
    "submitted_at → assigned_at (commit, apply, scheduler pass; stamped when the placement is proposed)",
    "assigned_at → started_at (placement committed and applied, container created and started; stamped after the start call returns)",
    "started_at → finished_at (the engine's FinishedAt; can be below 0: `true` may exit before the start call returns)",
    "finished_at → SUCCEEDED seen (exit noticed, output drained, Finished committed, client's next look)",
];

pub(crate) async fn drover_once(
    client: &mut DroverClient<Channel>,
) -> Result<DroverSample, String> {
    let sent = SystemTime::now();
    let t0 = Instant::now();
    let deadline = t0 + SHORT_JOB_TIMEOUT;
    let id = submit(client, shell_job("true")).await?;
    let submit_rpc = t0.elapsed();
    let follow = async {
        let mut stream = client
            .stream_job_output(pb::StreamJobOutputRequest {
                id: id.clone(),
                attempt: 0,
                follow: true,
                after_seq: None,
            })
            .await
            .map_err(|s| format!("StreamJobOutput: {}", s.message()))?
            .into_inner();
        while stream
            .message()
            .await
            .map_err(|s| format!("StreamJobOutput: {}", s.message()))?
            .is_some()
        {}
        Ok::<(), String>(())
    };
    tokio::time::timeout_at(deadline.into(), follow)
        .await
        .map_err(|_| format!("job {id}: output stream still open after {SHORT_JOB_TIMEOUT:?}"))??;
    let stream_end = t0.elapsed();
    let (job, seen) = poll_until_terminal(client, &id, LATENCY_POLL, deadline).await?;
    if job.state != "SUCCEEDED" {
        return Err(describe_end(&job));
    }
    let total = seen.duration_since(t0);
    let sent_ms = unix_ms(sent);
    Ok(DroverSample {
        total,
        submit_rpc,
        stream_end,
        sent_ms,
        seen_ms: sent_ms + total.as_millis() as i64,
        job,
    })
}

/// The flags Drover's docker driver gives a default job's container.
pub(crate) fn locked_flags() -> Vec<String> {
    [
        "--init",
        "--network",
        "none",
        "--cap-drop",
        "ALL",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,nosuid,nodev,size=64m",
        "--security-opt",
        "no-new-privileges",
        "--memory",
        "128m",
        "--memory-swap",
        "128m",
        "--cpus",
        "0.1",
        "--pids-limit",
        "256",
    ]
    .into_iter()
    .map(str::to_string)
    .collect()
}

pub(crate) fn docker_run_args(
    settings: &Settings,
    flags: &[String],
    command: &[&str],
) -> Vec<String> {
    let mut args = vec![
        "run".to_string(),
        "--rm".to_string(),
        "--label".to_string(),
        settings.baseline_label(),
    ];
    args.extend(flags.iter().cloned());
    args.push(settings.image.clone());
    args.extend(command.iter().map(|s| s.to_string()));
    args
}

#[derive(Default)]
pub(crate) struct LatencyResult {
    pub(crate) drover: Vec<DroverSample>,
    pub(crate) docker: Vec<Duration>,
    pub(crate) locked: Vec<Duration>,
    pub(crate) errors: Vec<String>,
    pub(crate) notes: PhaseNotes,
}

pub(crate) async fn run_latency(settings: &Settings) -> LatencyResult {
    let phase = Phase::Latency;
    let mut result = LatencyResult::default();
    eprintln!("[jobs] latency: starting a 1-node cluster");
    let executor = Executor {
        cpu_millis: 0,
        memory_mib: 0,
        output_cap_bytes: 64 << 20,
    };
    let Some(mut cluster) = result.notes.start(settings, phase, 1, executor).await else {
        return result;
    };
    let plain = docker_run_args(settings, &[], &["true"]);
    let locked = docker_run_args(settings, &locked_flags(), &["true"]);
    let Some(mut client) = result.notes.leader_client(&cluster, phase).await else {
        return result;
    };
    // Unmeasured warm-up of the baselines (the cluster ran one job already).
    for args in [&plain, &locked] {
        if let Err(e) = run_timed(&settings.docker_bin, args, SHORT_JOB_TIMEOUT).await {
            result.notes.fail(phase, format!("baseline warm-up: {e}"));
            return result;
        }
    }
    let kinds = if settings.locked_baseline { 3 } else { 2 };
    for round in 0..settings.latency_runs {
        // Rotate who goes first, so neither side always runs right after
        // the other's container teardown.
        for k in 0..kinds {
            match (round + k) % kinds {
                0 => match drover_once(&mut client).await {
                    Ok(s) => result.drover.push(s),
                    Err(e) => result.errors.push(format!("drover: {e}")),
                },
                1 => match run_timed(&settings.docker_bin, &plain, SHORT_JOB_TIMEOUT).await {
                    Ok(d) => result.docker.push(d),
                    Err(e) => result.errors.push(format!("docker: {e}")),
                },
                _ => match run_timed(&settings.docker_bin, &locked, SHORT_JOB_TIMEOUT).await {
                    Ok(d) => result.locked.push(d),
                    Err(e) => result.errors.push(format!("docker (Drover's flags): {e}")),
                },
            }
        }
        if let Err(e) = cluster.check_alive() {
            result.notes.fail(phase, e);
            break;
        }
        if result.errors.len() > settings.latency_runs {
            result
                .notes
                .fail(phase, "too many errors, giving up".into());
            break;
        }
        if let (Some(d), Some(b)) = (result.drover.last(), result.docker.last()) {
            eprintln!(
                "[jobs] latency {}/{}: drover {:.0} ms, docker run {:.0} ms",
                round + 1,
                settings.latency_runs,
                ms(d.total),
                ms(*b)
            );
        }
    }
    result.notes.finish(&cluster, settings, phase);
    result
}

pub(crate) fn render_latency(out: &mut String, settings: &Settings, r: &LatencyResult) {
    let _ = writeln!(
        out,
        "## (a) One `true` job: submit to SUCCEEDED vs `docker run`\n\n\
         1 node (default Raft and scheduler settings, executor on{}), one client on one connection. \
         {} rounds after one unmeasured run of each; each round runs every variant once, the order rotating. \
         Drover: wall time from sending `SubmitJob` to the first `GetJob` that shows SUCCEEDED \
         (`StreamJobOutput` with follow until the stream ends, which is when the attempt's output closes, \
         then `GetJob` every {} ms). Docker: wall time of the `docker` CLI process, spawned by the bench.\n",
        if settings.tls {
            ", mutual TLS on every port"
        } else {
            ", plaintext"
        },
        settings.latency_runs,
        LATENCY_POLL.as_millis()
    );
    let drover = stats(r.drover.iter().map(|s| ms(s.total)).collect());
    let docker = stats(r.docker.iter().map(|d| ms(*d)).collect());
    let locked = stats(r.locked.iter().map(|d| ms(*d)).collect());
    out.push_str(
        "| variant | runs | median ms | p90 ms | min ms | max ms | median vs docker run |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    let mut row = |name: &str, s: &Stats| {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            s.n,
            fmt_num(s.p50),
            fmt_num(s.p90),
            fmt_num(s.min),
            fmt_num(s.max),
            fmt_ratio(s.p50, docker.p50)
        );
    };
    row("drover: submit → SUCCEEDED", &drover);
    row("`docker run --rm IMAGE true`", &docker);
    if settings.locked_baseline {
        row("`docker run --rm` + Drover's container flags ¹", &locked);
    }
    let _ = writeln!(
        out,
        "\n**drover / docker run: {} at the median, {} at p90** (target: within 1.20x).\n",
        fmt_ratio(drover.p50, docker.p50),
        fmt_ratio(drover.p90, docker.p90)
    );
    if settings.locked_baseline {
        let _ = writeln!(
            out,
            "¹ `{}`: what Drover's driver asks of the engine for a default job, \
             to separate the cost of the lock-down from Drover's own.\n",
            locked_flags().join(" ")
        );
    }
    out.push_str(
        "Where Drover's time goes, from the job record (Unix ms, all clocks on this machine; \
         each run's segments add up to its total):\n\n",
    );
    out.push_str("| segment | median ms | p90 ms | min ms | max ms |\n|---|---:|---:|---:|---:|\n");
    let segments: Vec<[i64; 5]> = r.drover.iter().filter_map(DroverSample::segments).collect();
    for (i, name) in SEGMENTS.iter().enumerate() {
        let s = stats(segments.iter().map(|seg| seg[i] as f64).collect());
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} |",
            fmt_num(s.p50),
            fmt_num(s.p90),
            fmt_num(s.min),
            fmt_num(s.max)
        );
    }
    let rpc = stats(r.drover.iter().map(|s| ms(s.submit_rpc)).collect());
    let stream = stats(
        r.drover
            .iter()
            .map(|s| ms(s.total.saturating_sub(s.stream_end)))
            .collect(),
    );
    let _ = writeln!(
        out,
        "\nAlso: the `SubmitJob` round trip (commit + apply) took {} ms at the median (p90 {}); \
         after the output stream ended, SUCCEEDED showed up {} ms later at the median (p90 {}).\n",
        fmt_num(rpc.p50),
        fmt_num(rpc.p90),
        fmt_num(stream.p50),
        fmt_num(stream.p90)
    );
    render_errors(out, &r.errors);
}
