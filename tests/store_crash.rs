//! Crash test: a child process persists Readies (and applies, snapshots and
//! compacts) in a loop, printing each index only after `persist` returned;
//! the parent kills it with SIGKILL at a random moment, reopens the store,
//! and checks that every acknowledged entry survived and that the job table
//! agrees with the applied index. Repeated over several rounds on the same
//! directory, so recovery itself is crashed into too.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover::jobs::{Command, JobId, JobSpec};
use drover::raft::{Entry, HardState, Payload, Ready};
use drover::store::Store;
use rand::{Rng, SeedableRng};

mod common;

const CLUSTER: &str = "crash-cluster";
const ENV_DIR: &str = "DROVER_STORE_CRASH_DIR";
/// Largest padding of an entry's command (see `pad_of`).
const ENV_PAD: &str = "DROVER_STORE_CRASH_PAD";
/// Rounds of spawn-and-kill; override with DROVER_STORE_CRASH_ROUNDS for a
/// longer soak.
const ROUNDS: usize = 8;
/// Every NOOP_EVERY-th index is a Noop; the others submit job `index`.
const NOOP_EVERY: u64 = 7;
const SNAPSHOT_EVERY: u64 = 500;
const TRAILING: u64 = 100;
/// Rounds of fill / free / restart / kill on a small filesystem.
const FULL_DISK_ROUNDS: usize = 15;
/// Size of that filesystem.
const SMALL_FS_MIB: u64 = 512;
/// Bound on how long the child may take to fill its disk.
const FILL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest padding of an entry's command in the full-disk test.
const FULL_DISK_PAD: usize = 2048;

fn job_id(index: u64) -> JobId {
    JobId::from_parts(1_700_000_000_000 + index, u128::from(index))
}

/// Bytes of padding in entry `index`'s command, below `max_pad` (0: none),
/// so entries of every size are written.
fn pad_of(index: u64, max_pad: usize) -> usize {
    match max_pad {
        0 => 0,
        max => (index.wrapping_mul(7919) % max as u64) as usize,
    }
}

fn entry(index: u64, term: u64, max_pad: usize) -> Entry {
    let payload = if index.is_multiple_of(NOOP_EVERY) {
        Payload::Noop
    } else {
        let pad = "x".repeat(pad_of(index, max_pad));
        let cmd = Command::Submit {
            id: job_id(index),
            spec: JobSpec::shell(format!("echo {index} {pad}")),
            submitted_at_ms: index as i64,
        };
        Payload::Command(cmd.encode().unwrap())
    };
    Entry {
        term,
        index,
        payload,
    }
}

/// Ends the child when a store call fails (a full disk): printed as
/// `FAILED <error>` for the parent, exit code 3.
fn or_exit<T>(result: Result<T, drover::store::StoreError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => {
            println!("FAILED {e}");
            std::process::exit(3);
        }
    }
}

/// The child's body. Runs only when re-executed by the tests below.
#[test]
#[ignore = "helper process of the crash tests"]
fn crash_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let max_pad: usize = std::env::var(ENV_PAD)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let store = or_exit(Store::open(Path::new(&dir), CLUSTER, 1));
    let r = or_exit(store.restored());
    let term = r.hard_state.term + 1;
    let snap_index = r.snapshot.as_ref().map_or(0, |(m, _)| m.index);
    let mut last = r.entries.last().map_or(snap_index, |e| e.index);
    // Catch the state machine up with the durable log first.
    let pending: Vec<Entry> = r
        .entries
        .iter()
        .filter(|e| e.index > r.applied)
        .cloned()
        .collect();
    or_exit(store.apply(&pending));
    let mut rng = rand::rngs::SmallRng::seed_from_u64(term);
    let mut next_snapshot = store.applied_index() + SNAPSHOT_EVERY;
    let mut snapshots = 0u64;
    println!(
        "START last={last} applied={} term={term}",
        store.applied_index()
    );
    loop {
        let n = rng.gen_range(1..=64);
        let entries: Vec<Entry> = (last + 1..=last + n)
            .map(|i| entry(i, term, max_pad))
            .collect();
        last += n;
        or_exit(store.persist(&Ready {
            entries: entries.clone(),
            hard_state: Some(HardState {
                term,
                vote: 1,
                commit: last,
            }),
            ..Ready::default()
        }));
        println!("ACK {last} {term}");
        or_exit(store.apply(&entries));
        if store.applied_index() >= next_snapshot {
            // As in the node, a failed snapshot is not fatal: the log stays
            // uncompacted and the next one retries.
            let (meta, data) = match store.create_snapshot() {
                Ok(snapshot) => snapshot,
                Err(e) => {
                    println!("SNAPSHOT FAILED {e}");
                    next_snapshot = store.applied_index() + SNAPSHOT_EVERY;
                    continue;
                }
            };
            snapshots += 1;
            if snapshots % 2 == 1 {
                // Exercise the install path under SIGKILL too: install our
                // own snapshot as if received (the log is all applied, so
                // this replaces the log and rewrites an identical table).
                or_exit(store.persist(&Ready {
                    snapshot: Some((meta.clone(), data)),
                    hard_state: Some(HardState {
                        term,
                        vote: 1,
                        commit: last,
                    }),
                    ..Ready::default()
                }));
                println!("INSTALLED {}", meta.index);
            } else {
                or_exit(store.compact_log(meta.index - TRAILING));
            }
            next_snapshot = meta.index + SNAPSHOT_EVERY;
        }
    }
}

/// The child's acknowledgements, gathered over every round.
#[derive(Default)]
struct Acks {
    /// index -> term of every acknowledged entry.
    acked: BTreeMap<u64, u64>,
    max_term: u64,
}

impl Acks {
    /// Records the ACK lines of one child run; returns how many there were.
    fn record(&mut self, lines: &[String]) -> usize {
        let mut prev = None;
        let mut count = 0;
        for line in lines {
            // The test harness may print "test crash_child ... " before it.
            if let Some((_, rest)) = line.split_once("START last=") {
                let last: u64 = rest.split(' ').next().unwrap().parse().unwrap();
                prev = Some(last);
            } else if let Some(rest) = line.strip_prefix("ACK ") {
                let mut parts = rest.split(' ').map(|p| p.parse::<u64>().unwrap());
                let (index, term) = (parts.next().unwrap(), parts.next().unwrap());
                let from = prev.expect("ACK before START") + 1;
                for i in from..=index {
                    self.acked.insert(i, term);
                }
                self.max_term = self.max_term.max(term);
                prev = Some(index);
                count += 1;
            }
        }
        count
    }

    fn max_index(&self) -> u64 {
        self.acked.keys().next_back().copied().unwrap_or(0)
    }
}

/// Runs the child on `dir` until it ends by itself or, with `kill_after`,
/// until it is killed with SIGKILL then; returns whether it ended on its own
/// and what it printed.
fn run_child(dir: &Path, pad: usize, kill_after: Option<Duration>) -> (bool, Vec<String>) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Process::new(&exe)
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DIR, dir)
        .env(ENV_PAD, pad.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        })
    };
    let ended_alone = match kill_after {
        Some(after) => {
            std::thread::sleep(after);
            let ended = child.try_wait().unwrap().is_some();
            let _ = child.kill(); // SIGKILL
            ended
        }
        None => {
            // Bounded: a child that cannot fill its disk in time is killed.
            let deadline = std::time::Instant::now() + FILL_TIMEOUT;
            loop {
                if child.try_wait().unwrap().is_some() {
                    break true;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    child.wait().unwrap();
    reader.join().unwrap();
    let lines = std::mem::take(&mut *lines.lock().unwrap());
    (ended_alone, lines)
}

/// Reopens the store as the restarted node would and checks that every
/// acknowledged entry survived and the job table agrees with the applied
/// index.
fn check_recovered(dir: &Path, acks: &Acks, max_pad: usize, round: usize) {
    let max_acked = acks.max_index();
    let store = Store::open(dir, CLUSTER, 1).unwrap();
    let r = store.restored().unwrap();
    let snap_index = r.snapshot.as_ref().map_or(0, |(m, _)| m.index);
    let last = r.entries.last().map_or(snap_index, |e| e.index);
    assert!(
        last >= max_acked,
        "round {round}: log ends at {last}, acknowledged {max_acked}"
    );
    assert!(
        r.hard_state.term >= acks.max_term,
        "round {round}: hard state {:?}",
        r.hard_state
    );
    if let Some(first) = r.entries.first() {
        assert!(
            first.index <= snap_index + 1,
            "round {round}: log starts at {}",
            first.index
        );
    }
    for e in &r.entries {
        assert_eq!(
            e.payload,
            entry(e.index, e.term, max_pad).payload,
            "round {round}: entry {}",
            e.index
        );
        if let Some(&term) = acks.acked.get(&e.index) {
            assert_eq!(e.term, term, "round {round}: entry {} term", e.index);
        }
    }
    // The job table agrees with the applied index: applies are atomic.
    let applied = store.applied_index();
    assert_eq!(r.applied, applied);
    assert!(
        applied <= last && applied >= snap_index,
        "round {round}: applied {applied}"
    );
    assert_eq!(
        store.job_count(),
        applied - applied / NOOP_EVERY,
        "round {round}: job count at applied {applied}"
    );
    // Rows, the queue index and the counters agree: no half apply.
    let mut rows = Vec::new();
    loop {
        let page = store
            .list_jobs(&drover::jobs::JobScan::default(), rows.last(), 1000)
            .unwrap();
        if page.is_empty() {
            break;
        }
        rows.extend(page.iter().map(|j| j.id));
    }
    assert_eq!(rows.len() as u64, store.job_count(), "round {round}: rows");
    let queued = store
        .queued_jobs()
        .map(|q| q.unwrap().0)
        .collect::<Vec<_>>();
    assert_eq!(queued.len() as u64, store.queued_count(), "round {round}");
    assert_eq!(
        queued.len(),
        rows.len(),
        "round {round}: every job is queued"
    );
    let snapshot_files = std::fs::read_dir(dir.join("snapshots")).unwrap().count();
    assert!(
        snapshot_files <= 1,
        "round {round}: {snapshot_files} snapshot files kept"
    );
    if applied > 0 && !applied.is_multiple_of(NOOP_EVERY) {
        let job = store
            .get_job(&job_id(applied))
            .unwrap()
            .expect("last applied job");
        assert_eq!(job.index, applied);
    }
    let next = applied + 1 + u64::from((applied + 1).is_multiple_of(NOOP_EVERY));
    assert!(
        store.get_job(&job_id(next)).unwrap().is_none(),
        "round {round}: job beyond applied"
    );
}

fn rounds(default: usize) -> usize {
    std::env::var("DROVER_STORE_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
}

#[test]
fn kill_9_loses_no_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut acks = Acks::default();
    for round in 0..rounds(ROUNDS) {
        let after = Duration::from_millis(rng.gen_range(100..600));
        let (ended_alone, lines) = run_child(dir.path(), 0, Some(after));
        assert!(!ended_alone, "child ended on its own: {lines:?}");
        let count = acks.record(&lines);
        let installs = lines.iter().filter(|l| l.contains("INSTALLED")).count();
        eprintln!(
            "round {round}: {count} acknowledged persists, {installs} snapshot installs, log acknowledged up to {}",
            acks.max_index()
        );
        check_recovered(dir.path(), &acks, 0, round);
    }
    assert!(
        !acks.acked.is_empty(),
        "the child never acknowledged anything"
    );
}

/// A full disk must cost nothing acknowledged: the child writes until its
/// filesystem is full and a write fails, space is freed, the child is
/// restarted and killed with SIGKILL, and the store must hold every entry
/// acknowledged in either run.
#[test]
fn a_full_disk_then_kill_9_loses_no_acknowledged_entry() {
    let Some(fs) = common::small_fs::SmallFs::create_or_skip(SMALL_FS_MIB) else {
        return;
    };
    let dir = fs.path().join("data");
    let mut rng = rand::thread_rng();
    let mut acks = Acks::default();
    for round in 0..rounds(FULL_DISK_ROUNDS) {
        fs.fill_leaving(rng.gen_range(256 << 10..4 << 20));
        let (ended_alone, lines) = run_child(&dir, FULL_DISK_PAD, None);
        assert!(
            ended_alone,
            "round {round}: the child did not fill the disk in {FILL_TIMEOUT:?}"
        );
        let filled = acks.record(&lines);
        let failure = lines.iter().find(|l| l.starts_with("FAILED ")).cloned();
        fs.free_ballast();
        let after = Duration::from_millis(rng.gen_range(100..600));
        let (ended_alone, lines) = run_child(&dir, FULL_DISK_PAD, Some(after));
        assert!(
            !ended_alone,
            "round {round}: the child ended after space was freed: {lines:?}"
        );
        let count = acks.record(&lines);
        eprintln!(
            "round {round}: {filled} persists until {failure:?}, then {count}; acknowledged up to {}",
            acks.max_index()
        );
        check_recovered(&dir, &acks, FULL_DISK_PAD, round);
    }
    assert!(
        !acks.acked.is_empty(),
        "the child never acknowledged anything"
    );
}
