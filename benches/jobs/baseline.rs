//! Processes the bench runs besides the agents: the `docker run`
//! baselines, timed, and the removal of their containers.

use super::*;

/// What a process run by [`run_process`] did.
pub(crate) struct Ran {
    /// From just before the spawn to its exit.
    pub(crate) elapsed: Duration,
    /// Bytes it wrote to stdout (0 unless counted).
    pub(crate) stdout_bytes: u64,
    /// The first bytes of its stdout, as text (empty unless counted).
    pub(crate) stdout_head: String,
}

/// Where a child's stdout goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stdout {
    /// `> /dev/null`.
    Null,
    /// A pipe the bench reads to its end, counting the bytes.
    Count,
}

/// Bytes of a counted stdout kept as text.
pub(crate) const STDOUT_HEAD: usize = 256;

/// Runs a process to its end (at most `limit`, then SIGKILL) with stdin
/// closed and stderr captured; fails unless it exits 0.
pub(crate) async fn run_process(
    program: &Path,
    args: &[String],
    stdout: Stdout,
    limit: Duration,
) -> Result<Ran, String> {
    let what = format!(
        "{} {}",
        program.display(),
        args.iter()
            .map(|a| if a.len() > 60 { "…" } else { a.as_str() })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(match stdout {
            Stdout::Null => Stdio::null(),
            Stdout::Count => Stdio::piped(),
        })
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {what}: {e}"))?;
    let pid = child.id();
    let out_pipe = child.stdout.take();
    let err_pipe = child.stderr.take();
    // The blocking reads and wait run on their own threads; both pipes are
    // read to their end before the wait, so a chatty child cannot fill a
    // pipe and hang.
    let mut waiter = tokio::task::spawn_blocking(move || {
        let stderr_reader = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = err_pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        });
        let mut bytes = 0u64;
        let mut head = Vec::new();
        let mut read_error = None;
        if let Some(mut pipe) = out_pipe {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        bytes += n as u64;
                        let room = STDOUT_HEAD.saturating_sub(head.len());
                        head.extend_from_slice(&buf[..n.min(room)]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        read_error = Some(e);
                        break;
                    }
                }
            }
        }
        let stderr_text = stderr_reader.join().unwrap_or_default();
        let status = child.wait();
        (status, Instant::now(), bytes, head, read_error, stderr_text)
    });
    let (status, ended, bytes, head, read_error, stderr_text) =
        match tokio::time::timeout(limit, &mut waiter).await {
            Ok(joined) => joined.map_err(|e| format!("waiting for {what}: {e}"))?,
            Err(_) => {
                // Not reaped yet (the waiter has not returned), so the pid
                // is still this child's.
                common::process::send(pid, libc::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(10), waiter).await;
                return Err(format!("{what} did not end within {limit:?}; killed"));
            }
        };
    let status = status.map_err(|e| format!("wait for {what}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "{what} failed ({status}): {}",
            stderr_text.trim().chars().take(400).collect::<String>()
        ));
    }
    if let Some(e) = read_error {
        return Err(format!("reading the stdout of {what}: {e}"));
    }
    Ok(Ran {
        elapsed: ended.duration_since(started),
        stdout_bytes: bytes,
        stdout_head: String::from_utf8_lossy(&head).into_owned(),
    })
}

/// Wall time of a process run with stdout to /dev/null.
pub(crate) async fn run_timed(
    program: &Path,
    args: &[String],
    limit: Duration,
) -> Result<Duration, String> {
    run_process(program, args, Stdout::Null, limit)
        .await
        .map(|r| r.elapsed)
}

/// Containers labelled `drover.cluster=<cluster>`, running or not; removes
/// them. Returns how many there were.
pub(crate) fn remove_containers(docker: &Path, label: &str) -> Result<usize, String> {
    let listed = Command::new(docker)
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label={label}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("docker ps: {e}"))?;
    if !listed.status.success() {
        return Err(format!(
            "docker ps --filter label={label}: {}",
            String::from_utf8_lossy(&listed.stderr).trim()
        ));
    }
    let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let mut child = Command::new(docker)
        .args(["rm", "-f"])
        .args(&ids)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("docker rm: {e}"))?;
    let deadline = Instant::now() + CLEANUP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(ids.len()),
            Ok(Some(status)) => return Err(format!("docker rm -f of {label}: {status}")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "docker rm -f of {label} took over {CLEANUP_TIMEOUT:?}"
                ));
            }
            Err(e) => return Err(format!("docker rm: {e}")),
        }
    }
}
