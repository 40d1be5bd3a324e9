//! `drover job watch`: job state changes as they are applied, one line
//! each, from a log index on (or from now).

use std::time::Duration;

use super::{Client, Failure, Output};
use crate::api::json;
use crate::proto::v1 as pb;

/// `drover job watch [--from-index N] [ID]`: prints every event until the
/// stream fails (or the user interrupts); a watch of one job ends, with
/// success, once that job has ended (or was deleted), so a script can wait
/// on it. A failure names the index to resume from, so nothing is missed
/// across a reconnect.
pub async fn watch(
    client: &mut Client,
    output: Output,
    from_index: u64,
    id: Option<String>,
) -> Result<(), Failure> {
    let one_job = id.clone();
    let mut request = tonic::Request::new(pb::WatchJobsRequest {
        from_index,
        job_id: id.unwrap_or_default(),
    });
    // A watch lasts as long as the user wants: no deadline on the stream
    // (the connection's keepalive notices a dead node).
    request.set_timeout(Duration::from_secs(365 * 24 * 3600));
    let mut stream = client.watch_jobs(request).await?.into_inner();
    // A job that has already ended sends no more events: watching it from
    // now would wait forever. Checked after the watch started, so an end in
    // between arrives as an event.
    if let (Some(id), 0) = (&one_job, from_index) {
        let job = client
            .get_job(super::call(
                pb::GetJobRequest {
                    id: id.clone(),
                    consistent: false,
                },
                super::CALL_TIMEOUT,
            ))
            .await?
            .into_inner()
            .job
            .unwrap_or_default();
        if super::run::terminal(&job.state) {
            eprintln!("drover: job {id} has already ended ({})", job.state);
            return Ok(());
        }
    }
    if output != Output::Json {
        println!(
            "{:<8}  {:<26}  {:<7}  {:<10}  {:<7}  {:<4}  {:<17}  AT",
            "INDEX", "JOB", "EVENT", "STATE", "ATTEMPT", "NODE", "REASON"
        );
    }
    // Every event of the entries up to here was printed.
    let mut resume = from_index;
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) => return Ok(()),
            Err(status) => {
                let mut failure = Failure::from(status);
                if resume > 0 {
                    failure.message += &format!(" (resume with --from-index {resume})");
                }
                return Err(failure);
            }
        };
        match output {
            Output::Json => println!("{}", json::to_value(&json::JobEventJson::from(&event))),
            Output::Table | Output::Wide => {
                let dash = |s: &str| {
                    if s.is_empty() {
                        "-".to_string()
                    } else {
                        s.to_string()
                    }
                };
                let number = |n: u64| {
                    if n == 0 {
                        "-".to_string()
                    } else {
                        n.to_string()
                    }
                };
                let at = if event.at_ms == 0 {
                    "-".to_string()
                } else {
                    clock_time(event.at_ms)
                };
                println!(
                    "{:<8}  {:<26}  {:<7}  {:<10}  {:<7}  {:<4}  {:<17}  {}",
                    event.index,
                    event.job_id,
                    event.kind,
                    dash(&event.state),
                    number(u64::from(event.attempt)),
                    number(event.node),
                    dash(&event.reason),
                    at
                );
            }
        }
        if event.last_in_entry {
            resume = event.index;
        }
        let ended = super::run::terminal(&event.state) || event.kind == "DELETED";
        if one_job.is_some() && ended {
            return Ok(());
        }
    }
}

/// The time of day of `ms` (Unix milliseconds) in UTC, `14:03:27Z`: what
/// a watch line needs to line events up with logs and each other.
fn clock_time(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    let text = humantime::format_rfc3339_seconds(at).to_string();
    // "2026-12-03T14:03:27Z": the date is today's in a live watch.
    text.get(11..).unwrap_or(&text).to_string()
}
