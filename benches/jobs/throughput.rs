//! Phase (b): many short jobs on three nodes.

use super::*;

#[derive(Default)]
pub(crate) struct ThroughputResult {
    pub(crate) submitted: usize,
    pub(crate) submit_errors: Vec<String>,
    /// First submit -> last SubmitJob acknowledged.
    pub(crate) submit_phase: Duration,
    /// First submit -> the poll that saw the last job terminal.
    pub(crate) total: Option<Duration>,
    pub(crate) jobs: Vec<pb::Job>,
    pub(crate) notes: PhaseNotes,
}

pub(crate) async fn submit_many(
    mut client: DroverClient<Channel>,
    count: usize,
) -> (Vec<String>, Vec<String>) {
    let mut ids = Vec::with_capacity(count);
    let mut errors = Vec::new();
    for _ in 0..count {
        match submit(&mut client, shell_job("true")).await {
            Ok(id) => ids.push(id),
            Err(e) => errors.push(e),
        }
    }
    (ids, errors)
}

/// Every job of the cluster, all pages (bounded).
pub(crate) async fn list_all(client: &mut DroverClient<Channel>) -> Result<Vec<pb::Job>, String> {
    let mut jobs = Vec::new();
    let mut token = String::new();
    for _ in 0..1000 {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                page_size: 1000,
                page_token: token,
                consistent: false,
                ..Default::default()
            })
            .await
            .map_err(|s| format!("ListJobs: {}", s.message()))?
            .into_inner();
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return Ok(jobs);
        }
        token = page.next_page_token;
    }
    Err("ListJobs: more than 1000 pages".into())
}

pub(crate) async fn run_throughput(settings: &Settings) -> ThroughputResult {
    let phase = Phase::Throughput;
    let mut result = ThroughputResult::default();
    eprintln!("[jobs] throughput: starting a 3-node cluster");
    let executor = Executor {
        cpu_millis: THROUGHPUT_NODE_CPU_MILLIS,
        memory_mib: THROUGHPUT_NODE_MEMORY_MIB,
        output_cap_bytes: 64 << 20,
    };
    let Some(mut cluster) = result.notes.start(settings, phase, 3, executor).await else {
        return result;
    };
    let mut clients = Vec::new();
    for _ in 0..settings.clients {
        let Some(client) = result.notes.leader_client(&cluster, phase).await else {
            return result;
        };
        clients.push(client);
    }
    let Some(mut poller) = result.notes.leader_client(&cluster, phase).await else {
        return result;
    };
    eprintln!(
        "[jobs] throughput: submitting {} jobs with {} clients",
        settings.jobs, settings.clients
    );
    let start = Instant::now();
    let deadline = start + THROUGHPUT_TIMEOUT;
    let mut tasks = tokio::task::JoinSet::new();
    for (k, client) in clients.into_iter().enumerate() {
        let share =
            settings.jobs / settings.clients + usize::from(k < settings.jobs % settings.clients);
        tasks.spawn(submit_many(client, share));
    }
    let mut ids: HashSet<String> = HashSet::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((submitted, errors)) => {
                ids.extend(submitted);
                result.submit_errors.extend(errors);
            }
            Err(e) => result.submit_errors.push(format!("client task: {e}")),
        }
    }
    result.submit_phase = start.elapsed();
    result.submitted = ids.len();
    eprintln!(
        "[jobs] throughput: {} submitted in {:.2} s, waiting for them to finish",
        ids.len(),
        result.submit_phase.as_secs_f64()
    );
    // Poll until every submitted job is terminal.
    let mut finished: HashMap<String, pb::Job> = HashMap::new();
    loop {
        if let Err(e) = cluster.check_alive() {
            result.notes.fail(phase, e);
            break;
        }
        match list_all(&mut poller).await {
            Ok(jobs) => {
                for job in jobs {
                    if ids.contains(&job.id) && is_terminal(&job.state) {
                        finished.entry(job.id.clone()).or_insert(job);
                    }
                }
            }
            Err(e) => eprintln!("[jobs] throughput: poll: {e}"),
        }
        if finished.len() == ids.len() {
            result.total = Some(start.elapsed());
            break;
        }
        if Instant::now() > deadline {
            result.notes.fail(
                phase,
                format!(
                    "{} of {} jobs still not finished after {THROUGHPUT_TIMEOUT:?}",
                    ids.len() - finished.len(),
                    ids.len()
                ),
            );
            break;
        }
        tokio::time::sleep(THROUGHPUT_POLL).await;
    }
    let mut jobs: Vec<pb::Job> = finished.into_values().collect();
    jobs.sort_by(|a, b| a.id.cmp(&b.id));
    result.jobs = jobs;
    result.notes.finish(&cluster, settings, phase);
    result
}

pub(crate) fn render_throughput(out: &mut String, settings: &Settings, r: &ThroughputResult) {
    let _ = writeln!(
        out,
        "## (b) {} `true` jobs on a 3-node cluster\n\n\
         Each node offers {} millicores and {} MiB (default jobs ask 100 and 128, so capacity never limits). \
         {} clients, one connection each to the leader, submit back to back (closed loop); then `ListJobs` \
         on the leader every {} ms until every job is terminal. jobs/s = jobs / (first submit → the poll \
         that saw the last one finished). Latencies from the records: placement = `assigned_at - submitted_at`, \
         queue-to-start = `started_at - submitted_at` (started_at is stamped by the node once the container \
         has been started).\n",
        settings.jobs,
        THROUGHPUT_NODE_CPU_MILLIS,
        THROUGHPUT_NODE_MEMORY_MIB,
        settings.clients,
        THROUGHPUT_POLL.as_millis()
    );
    let succeeded = r.jobs.iter().filter(|j| j.state == "SUCCEEDED").count();
    let rate = r
        .total
        .map(|t| format!("{:.1}", succeeded as f64 / t.as_secs_f64().max(1e-9)));
    out.push_str(
        "| jobs submitted | SUCCEEDED | other end | submit phase s | submits/s | first submit → last SUCCEEDED s | jobs/s |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let _ = writeln!(
        out,
        "| {} | {} | {} | {:.2} | {:.0} | {} | **{}** |\n",
        r.submitted,
        succeeded,
        r.jobs.len() - succeeded,
        r.submit_phase.as_secs_f64(),
        r.submitted as f64 / r.submit_phase.as_secs_f64().max(1e-9),
        r.total
            .map_or("–".into(), |t| format!("{:.2}", t.as_secs_f64())),
        rate.unwrap_or_else(|| "–".into())
    );
    let first_attempt = |j: &pb::Job| j.attempts.first().cloned();
    let placement = stats(
        r.jobs
            .iter()
            .filter_map(|j| Some((first_attempt(j)?.assigned_at_ms - j.submitted_at_ms) as f64))
            .collect(),
    );
    // Of started first attempts only (a job cancelled before it ran has none).
    let started = |span: fn(&pb::Job, &pb::Attempt) -> i64| {
        stats(
            r.jobs
                .iter()
                .filter_map(|j| {
                    let a = first_attempt(j)?;
                    (a.started_at_ms > 0).then(|| span(j, &a) as f64)
                })
                .collect(),
        )
    };
    let queue_to_start = started(|j, a| a.started_at_ms - j.submitted_at_ms);
    let run = started(|_, a| a.finished_at_ms - a.started_at_ms);
    out.push_str("| latency | jobs | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|\n");
    for (name, s) in [
        ("placement (submitted → assigned)", placement),
        ("queue-to-start (submitted → started)", queue_to_start),
        ("run (started → finished)", run),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} |",
            s.n,
            fmt_num(s.p50),
            fmt_num(s.p99),
            fmt_num(s.max)
        );
    }
    let mut per_node: BTreeMap<u64, usize> = BTreeMap::new();
    for job in &r.jobs {
        if let Some(a) = job.attempts.last() {
            *per_node.entry(a.node).or_default() += 1;
        }
    }
    let spread: Vec<String> = per_node
        .iter()
        .map(|(node, n)| format!("node {node}: {n}"))
        .collect();
    let _ = writeln!(
        out,
        "\nJobs per node: {}. At most {} containers ran at once (from the attempts' started/finished stamps).\n",
        if spread.is_empty() {
            "–".to_string()
        } else {
            spread.join(", ")
        },
        max_concurrent(&r.jobs)
    );
    let mut errors = r.submit_errors.clone();
    for job in r.jobs.iter().filter(|j| j.state != "SUCCEEDED").take(5) {
        errors.push(describe_end(job));
    }
    render_errors(out, &errors);
}

/// Most attempts whose [started, finished] intervals overlap.
pub(crate) fn max_concurrent(jobs: &[pb::Job]) -> usize {
    let mut events: Vec<(i64, i32)> = Vec::new();
    for a in jobs.iter().flat_map(|j| j.attempts.iter()) {
        if a.started_at_ms > 0 && a.finished_at_ms > 0 {
            events.push((a.started_at_ms, 1));
            events.push((a.finished_at_ms.max(a.started_at_ms), -1));
        }
    }
    // Ends before starts at the same ms: touching intervals do not overlap.
    events.sort();
    let mut now = 0i32;
    let mut best = 0i32;
    for (_, delta) in events {
        now += delta;
        best = best.max(now);
    }
    best as usize
}
