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

const CLUSTER: &str = "crash-cluster";
const ENV_DIR: &str = "DROVER_STORE_CRASH_DIR";
/// Rounds of spawn-and-kill; override with DROVER_STORE_CRASH_ROUNDS for a
/// longer soak.
const ROUNDS: usize = 8;
/// Every NOOP_EVERY-th index is a Noop; the others submit job `index`.
const NOOP_EVERY: u64 = 7;
const SNAPSHOT_EVERY: u64 = 500;
const TRAILING: u64 = 100;

fn job_id(index: u64) -> JobId {
    JobId::from_parts(1_700_000_000_000 + index, u128::from(index))
}

fn entry(index: u64, term: u64) -> Entry {
    let payload = if index.is_multiple_of(NOOP_EVERY) {
        Payload::Noop
    } else {
        let cmd = Command::Submit {
            id: job_id(index),
            spec: JobSpec::shell(format!("echo {index}")),
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

/// The child's body. Runs only when re-executed by `kill_9_loses_no_acknowledged_entry`.
#[test]
#[ignore = "helper process of kill_9_loses_no_acknowledged_entry"]
fn crash_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let store = Store::open(Path::new(&dir), CLUSTER, 1).unwrap();
    let r = store.restored().unwrap();
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
    store.apply(&pending).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(term);
    let mut next_snapshot = store.applied_index() + SNAPSHOT_EVERY;
    let mut snapshots = 0u64;
    println!(
        "START last={last} applied={} term={term}",
        store.applied_index()
    );
    loop {
        let n = rng.gen_range(1..=64);
        let entries: Vec<Entry> = (last + 1..=last + n).map(|i| entry(i, term)).collect();
        last += n;
        store
            .persist(&Ready {
                entries: entries.clone(),
                hard_state: Some(HardState {
                    term,
                    vote: 1,
                    commit: last,
                }),
                ..Ready::default()
            })
            .unwrap();
        println!("ACK {last} {term}");
        store.apply(&entries).unwrap();
        if store.applied_index() >= next_snapshot {
            let (meta, data) = store.create_snapshot().unwrap();
            snapshots += 1;
            if snapshots % 2 == 1 {
                // Exercise the install path under SIGKILL too: install our
                // own snapshot as if received (the log is all applied, so
                // this replaces the log and rewrites an identical table).
                store
                    .persist(&Ready {
                        snapshot: Some((meta.clone(), data)),
                        hard_state: Some(HardState {
                            term,
                            vote: 1,
                            commit: last,
                        }),
                        ..Ready::default()
                    })
                    .unwrap();
                println!("INSTALLED {}", meta.index);
            } else {
                store.compact_log(meta.index - TRAILING).unwrap();
            }
            next_snapshot = meta.index + SNAPSHOT_EVERY;
        }
    }
}

#[test]
fn kill_9_loses_no_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    // index -> term of every acknowledged entry, across rounds.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut max_acked_term = 0;
    let rounds = std::env::var("DROVER_STORE_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS);
    for round in 0..rounds {
        let mut child = Process::new(&exe)
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_DIR, dir.path())
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
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..600)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "child ended on its own: {status}");
        reader.join().unwrap();

        let lines = lines.lock().unwrap();
        let mut prev = None;
        let mut count = 0;
        for line in lines.iter() {
            // The test harness may print "test crash_child ... " before it.
            if let Some((_, rest)) = line.split_once("START last=") {
                let last: u64 = rest.split(' ').next().unwrap().parse().unwrap();
                prev = Some(last);
            } else if let Some(rest) = line.strip_prefix("ACK ") {
                let mut parts = rest.split(' ').map(|p| p.parse::<u64>().unwrap());
                let (index, term) = (parts.next().unwrap(), parts.next().unwrap());
                let from = prev.expect("ACK before START") + 1;
                for i in from..=index {
                    acked.insert(i, term);
                }
                max_acked_term = max_acked_term.max(term);
                prev = Some(index);
                count += 1;
            }
        }
        let max_acked = acked.keys().next_back().copied().unwrap_or(0);
        let installs = lines.iter().filter(|l| l.contains("INSTALLED")).count();
        eprintln!("round {round}: {count} acknowledged persists, {installs} snapshot installs, log acknowledged up to {max_acked}");

        // Reopen as the restarted node would and check.
        let store = Store::open(dir.path(), CLUSTER, 1).unwrap();
        let r = store.restored().unwrap();
        let snap_index = r.snapshot.as_ref().map_or(0, |(m, _)| m.index);
        let last = r.entries.last().map_or(snap_index, |e| e.index);
        assert!(
            last >= max_acked,
            "round {round}: log ends at {last}, acknowledged {max_acked}"
        );
        assert!(
            r.hard_state.term >= max_acked_term,
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
                entry(e.index, e.term).payload,
                "round {round}: entry {}",
                e.index
            );
            if let Some(&term) = acked.get(&e.index) {
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
            let page = store.list_jobs(rows.last(), 1000).unwrap();
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
        let snapshot_files = std::fs::read_dir(dir.path().join("snapshots"))
            .unwrap()
            .count();
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
    assert!(!acked.is_empty(), "the child never acknowledged anything");
}
