//! The dashboard under a big job table, in a real headless Chromium:
//!
//! - **first render** of the jobs view (navigation start to the first page
//!   of rows on screen, the page's own `drover:jobs-first-page` mark), with
//!   100 jobs in the table (the baseline) and again with 100,000;
//! - **event to screen**: from just before a submit or a stop is sent to
//!   the moment the page shows the new row or the new state (a
//!   MutationObserver stamps each change with the page's clock, the same
//!   wall clock as the bench's);
//! - **a burst**: 1,000 submissions as fast as 64 clients can, while the
//!   view is open: when the newest job reached the screen after the last
//!   acknowledgement, how many rows the page built or removed (a re-render
//!   of the table would be 1,000s), and how many requests it made.
//!
//! One node on loopback (executor off: jobs stay QUEUED, so the table is
//! what is measured), the shipped defaults except a queue big enough for
//! the table. Medians of `BENCH_UI_RUNS` runs; the report is printed and
//! written to `benches/DASHBOARD_RESULTS.md`.
//!
//! | variable | default | what |
//! | --- | --- | --- |
//! | `BENCH_UI_JOBS` | 100000 | jobs in the big table |
//! | `BENCH_UI_RUNS` | 7 | first renders and event round trips measured |
//! | `BENCH_UI_BURST` | 1000 | jobs in the burst |
//! | `DROVER_BIN` | the release `drover` cargo built for this bench | agent binary |

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::browser::Browser;
use common::cluster::Servers;
use drover::proto::v1 as pb;
use drover::proto::v1::drover_client::DroverClient;
use serde_json::Value;
use tonic::transport::Channel;

const CLIENTS: usize = 64;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Submits `count` jobs that stay queued, from `CLIENTS` concurrent callers.
async fn fill(channel: &Channel, count: usize) -> Result<Duration, String> {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS.min(count.max(1)) {
        let mut client = DroverClient::new(channel.clone());
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                let spec = pb::JobSpec {
                    command: "true".into(),
                    ..Default::default()
                };
                client
                    .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
                    .await
                    .map_err(|s| format!("submit: {s}"))?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| format!("submitter: {e}"))??;
    }
    Ok(started.elapsed())
}

/// The first render of the jobs view, `runs` times, in milliseconds from
/// navigation start (each run a fresh page load).
async fn first_renders(browser: &Browser, base: &str, runs: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for run in 0..runs {
        browser.goto(&format!("{base}/ui/?run={run}#/jobs")).await;
        let at = browser
            .wait_js(
                "the first page of jobs",
                Duration::from_secs(60),
                "const m = performance.getEntriesByName('drover:jobs-first-page')[0]; \
                 return m && document.querySelectorAll('#jobs-table tbody tr[data-job-id]').length ? m.startTime : 0",
            )
            .await;
        out.push(at.as_f64().unwrap_or(f64::NAN));
    }
    out
}

/// Stamps, in the page, when each job row appeared and each state changed.
const OBSERVE: &str = "
  performance.setResourceTimingBufferSize(1000000);
  window.seen = { rows: {}, states: {}, built: 0, removed: 0 };
  const body = document.querySelector('#jobs-table tbody');
  new MutationObserver((records) => {
    const at = Date.now();
    for (const r of records) {
      if (r.type === 'childList') {
        for (const n of r.addedNodes) if (n.dataset && n.dataset.jobId) {
          window.seen.built++;
          window.seen.rows[n.dataset.jobId] ??= at;
        }
        window.seen.removed += [...r.removedNodes].filter((n) => n.dataset && n.dataset.jobId).length;
      } else if (r.attributeName === 'data-state' && r.target.dataset.jobId) {
        window.seen.states[r.target.dataset.jobId + ':' + r.target.dataset.state] ??= at;
      }
    }
  }).observe(body, { childList: true, subtree: true, attributes: true, attributeFilter: ['data-state'] });
  return true;";

/// Event to screen: a submit (new row) and a stop (CANCELLED), `runs`
/// times each; milliseconds from just before the call to the page's stamp.
async fn event_to_screen(
    browser: &Browser,
    client: &mut DroverClient<Channel>,
    runs: usize,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>), String> {
    let (mut rows, mut stops, mut acks) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let before = now_ms();
        let spec = pb::JobSpec {
            command: "true".into(),
            ..Default::default()
        };
        let job = client
            .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
            .await
            .map_err(|s| format!("submit: {s}"))?
            .into_inner()
            .job
            .ok_or("no job")?;
        acks.push(now_ms() - before);
        let shown = browser
            .wait_js(
                "the new row",
                Duration::from_secs(30),
                &format!("return window.seen.rows['{}'] || 0", job.id),
            )
            .await;
        rows.push(shown.as_f64().unwrap_or(f64::NAN) - before);

        let before = now_ms();
        client
            .stop_job(pb::StopJobRequest { id: job.id.clone() })
            .await
            .map_err(|s| format!("stop: {s}"))?;
        let shown = browser
            .wait_js(
                "the CANCELLED state",
                Duration::from_secs(30),
                &format!("return window.seen.states['{}:CANCELLED'] || 0", job.id),
            )
            .await;
        stops.push(shown.as_f64().unwrap_or(f64::NAN) - before);
    }
    Ok((rows, stops, acks))
}

struct Burst {
    jobs: usize,
    submit: Duration,
    after_last_ack_ms: f64,
    built: u64,
    removed: u64,
    requests: u64,
}

async fn burst(browser: &Browser, channel: &Channel, jobs: usize) -> Result<Burst, String> {
    browser
        .js(
            "window.seen.built = 0; window.seen.removed = 0; \
             window.requestsBefore = performance.getEntriesByType('resource').length; return true",
            vec![],
        )
        .await;
    let submit = fill(channel, jobs).await?;
    let acked = now_ms();
    // The newest job is the one the list shows first once it caught up.
    let mut client = DroverClient::new(channel.clone());
    let newest = client
        .list_jobs(pb::ListJobsRequest {
            page_size: 1,
            newest_first: true,
            ..Default::default()
        })
        .await
        .map_err(|s| format!("list: {s}"))?
        .into_inner()
        .jobs
        .into_iter()
        .next()
        .ok_or("no job")?
        .id;
    let shown = browser
        .wait_js(
            "the newest job at the top",
            Duration::from_secs(60),
            &format!(
                "const first = document.querySelector('#jobs-table tbody tr'); \
                 return first && first.dataset.jobId === '{newest}' ? (window.seen.rows['{newest}'] || Date.now()) : 0"
            ),
        )
        .await;
    let counts = browser
        .js(
            "return [window.seen.built, window.seen.removed, \
             performance.getEntriesByType('resource').length - window.requestsBefore]",
            vec![],
        )
        .await;
    let at = |i: usize| counts.get(i).and_then(Value::as_u64).unwrap_or(0);
    Ok(Burst {
        jobs,
        submit,
        after_last_ack_ms: shown.as_f64().unwrap_or(f64::NAN) - acked,
        built: at(0),
        removed: at(1),
        requests: at(2),
    })
}

fn summary(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    let m = median(&mut sorted);
    format!(
        "{m:.0} ms (min {:.0}, max {:.0})",
        sorted.first().copied().unwrap_or(f64::NAN),
        sorted.last().copied().unwrap_or(f64::NAN)
    )
}

async fn run() -> Result<String, String> {
    let jobs = env_usize("BENCH_UI_JOBS", 100_000).max(200);
    let runs = env_usize("BENCH_UI_RUNS", 7).max(1);
    let burst_jobs = env_usize("BENCH_UI_BURST", 1000);
    let drover = std::env::var_os("DROVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_drover")));

    let mut servers = Servers::new("drover-bench-ui-")?;
    let ports = Servers::ports(1);
    let http = common::agent::free_port();
    let sections = format!(
        "[log]\nlevel = \"warn\"\n\n[executor]\nenabled = false\n\n\
         [scheduler]\nqueue_capacity = {}\n\n[limits]\nrate = 0\n",
        jobs + burst_jobs + 10 * runs + 100
    );
    let config = servers.write_agent_config("bench-ui", 0, &ports, Some(http), &sections)?;
    servers.spawn_agent(&drover, 0, &config, ports[0].0, None)?;
    let base = format!("http://127.0.0.1:{http}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let channel = loop {
        servers.check_alive()?;
        if let Ok(channel) = servers.channel(0, REQUEST_TIMEOUT).await {
            let mut client = DroverClient::new(channel.clone());
            let ready = client
                .get_cluster_status(pb::GetClusterStatusRequest::default())
                .await
                .is_ok_and(|s| s.get_ref().role == "leader");
            if ready {
                break channel;
            }
        }
        if Instant::now() > deadline {
            return Err(servers.not_ready(Duration::from_secs(60), "no leader"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let browser = Browser::start(1280, 900).await;

    fill(&channel, 100).await?;
    let small = first_renders(&browser, &base, runs).await;
    eprintln!("[bench] first render with 100 jobs: {}", summary(&small));
    let took = fill(&channel, jobs - 100).await?;
    eprintln!("[bench] filled {jobs} jobs in {:.1} s", took.as_secs_f64());
    let big = first_renders(&browser, &base, runs).await;
    eprintln!("[bench] first render with {jobs} jobs: {}", summary(&big));

    browser.js(OBSERVE, vec![]).await;
    let mut client = DroverClient::new(channel.clone());
    let (rows, stops, acks) = event_to_screen(&browser, &mut client, runs).await?;
    let burst = burst(&browser, &channel, burst_jobs).await?;
    servers.check_alive()?;

    let ratio = median(&mut big.clone()) / median(&mut small.clone());
    let when = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(format!(
        "# Dashboard bench\n\n\
         `cargo bench --bench dashboard` (unix time {when}): one node on loopback, \
         executor off (jobs stay QUEUED), headless Chromium through chromedriver, \
         {runs} runs each; medians. The machine is shared and noisy: compare within a run.\n\n\
         | measure | result |\n| --- | --- |\n\
         | first render of the jobs view, 100 jobs in the table (baseline) | {} |\n\
         | first render, {jobs} jobs in the table | {} |\n\
         | ratio {jobs} / 100 jobs | {ratio:.2}x |\n\
         | submit acknowledged (gRPC, for reference) | {} |\n\
         | submit to its row on screen | {} |\n\
         | stop to CANCELLED on screen | {} |\n\
         | burst: {} submits from {CLIENTS} clients | {:.0} ms |\n\
         | burst: last acknowledgement to the newest row at the top | {:.0} ms |\n\
         | burst: rows the page built / removed | {} / {} |\n\
         | burst: requests the page made | {} |\n",
        summary(&small),
        summary(&big),
        summary(&acks),
        summary(&rows),
        summary(&stops),
        burst.jobs,
        burst.submit.as_secs_f64() * 1000.0,
        burst.after_last_ack_ms,
        burst.built,
        burst.removed,
        burst.requests,
    ))
}

fn main() {
    common::report_main(
        "dashboard",
        concat!(env!("CARGO_MANIFEST_DIR"), "/benches/DASHBOARD_RESULTS.md"),
        run,
    );
}
