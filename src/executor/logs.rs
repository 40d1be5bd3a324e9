//! A container's output, read back from the engine's log: followed while
//! the container runs, then read once more for what the follow missed.

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::LogsOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;

use super::{OutputChunk, OutputSink, OutputStream};

/// Follows the container's log into `sink` until the container stops,
/// then reads once more what was logged after the last entry it saw:
/// the engine's follow can end before it reads the container's last
/// entry (a final line without a newline is logged as the container's
/// output pipe closes, racing the end of the follow), and a job's last
/// words are often its most important.
pub(super) fn follow(
    docker: Docker,
    name: &str,
    mut sink: OutputSink,
    patience: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    let name = name.to_string();
    tokio::spawn(async move {
        let options = |follow: bool, since: i32| {
            LogsOptionsBuilder::default()
                .follow(follow)
                .stdout(true)
                .stderr(true)
                .timestamps(true)
                .since(since)
                .build()
        };
        let mut last_seen = None;
        let followed = docker.logs(&name, Some(options(true, 0)));
        if forward_log(&name, followed, &mut sink, &mut last_seen, false).await {
            let since = last_seen
                .as_deref()
                .and_then(|at| humantime::parse_rfc3339_weak(at).ok())
                .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |at| i32::try_from(at.as_secs()).unwrap_or(i32::MAX));
            let rest = docker.logs(&name, Some(options(false, since)));
            forward_log(&name, rest, &mut sink, &mut last_seen, true).await;
        }
        sink.finish(patience).await;
    })
}

/// Forwards log entries (each `<RFC 3339 time> <bytes>`, as the engine
/// sends them with `timestamps`) to `sink` without their time, and keeps
/// the time of the last one sent in `last_seen`. A `catch_up` read starts
/// where an earlier read of the same log left off: it skips entries up to
/// and including the one at `last_seen` (the log's order is the same in
/// every read; its times need not be, stdout and stderr being timed apart).
/// Returns whether the reader is still there.
async fn forward_log(
    container: &str,
    mut logs: impl futures::Stream<Item = Result<LogOutput, DockerError>> + Unpin,
    sink: &mut OutputSink,
    last_seen: &mut Option<String>,
    catch_up: bool,
) -> bool {
    let mut skipping = catch_up && last_seen.is_some();
    while let Some(item) = logs.next().await {
        let (stream, entry) = match item {
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                (OutputStream::Stdout, message)
            }
            Ok(LogOutput::StdErr { message }) => (OutputStream::Stderr, message),
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(e) => {
                tracing::warn!(%container, error = %e, "output stream ended with an error");
                return true;
            }
        };
        let (at, data) = split_timestamp(entry);
        if skipping {
            skipping = at != *last_seen;
            continue;
        }
        if at.is_some() {
            *last_seen = at;
        }
        if !sink.send(OutputChunk { stream, data }).await {
            return false; // the reader is gone; the job goes on
        }
    }
    true
}

/// `<time> <bytes>` into the time and the bytes; an entry without a time
/// (not expected) is all bytes.
fn split_timestamp(entry: bytes::Bytes) -> (Option<String>, bytes::Bytes) {
    let Some(space) = entry.iter().take(40).position(|&b| b == b' ') else {
        return (None, entry);
    };
    match std::str::from_utf8(&entry[..space]) {
        Ok(at) if at.ends_with('Z') && at.contains('T') => {
            (Some(at.to_string()), entry.slice(space + 1..))
        }
        _ => (None, entry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_lose_their_time_and_nothing_else() {
        let (at, data) = split_timestamp(bytes::Bytes::from_static(
            b"2026-12-07T02:30:00.123456789Z no newline at the end",
        ));
        assert_eq!(at.as_deref(), Some("2026-12-07T02:30:00.123456789Z"));
        assert_eq!(&data[..], b"no newline at the end");
        let (at, data) = split_timestamp(bytes::Bytes::from_static(b"2026-12-07T02:30:00Z "));
        assert_eq!(at.as_deref(), Some("2026-12-07T02:30:00Z"));
        assert!(data.is_empty());
        for untimed in [&b"plain words"[..], b"", b"nospace"] {
            let (at, data) = split_timestamp(bytes::Bytes::copy_from_slice(untimed));
            assert_eq!((at, &data[..]), (None, untimed));
        }
    }
}
