//! Integration tests of the sled store, on a real database in a temp dir.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use drover::jobs::Applied;
use drover::jobs::{Command, Job, JobId, JobScan, JobSpec, JobState};
use drover::raft::{
    ConfChange, Entry, HardState, Membership, Payload, PeerInfo, Ready, SnapshotMeta,
};
use drover::store::migrations::{self, Migration};
use drover::store::{Store, StoreError};
use sled::Transactional;

const CLUSTER: &str = "test-cluster";

/// Opens the store, waiting (bounded) for sled's background threads of a
/// just-dropped instance to release the directory's file lock.
fn open(dir: &Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir, CLUSTER, 1) {
            Ok(store) => return store,
            Err(StoreError::Sled { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("open {}: {e}", dir.display()),
        }
    }
}

fn peer(n: u64) -> PeerInfo {
    PeerInfo {
        raft_addr: format!("10.0.0.{n}:7000"),
        api_addr: format!("10.0.0.{n}:8000"),
    }
}

fn membership(voters: &[u64]) -> Membership {
    Membership {
        voters: voters.iter().map(|&n| (n, peer(n))).collect(),
        learners: BTreeMap::new(),
    }
}

fn job_id(n: u64) -> JobId {
    JobId::from_parts(1_700_000_000_000 + n, u128::from(n))
}

fn submit(index: u64, term: u64, n: u64) -> Entry {
    let cmd = Command::Submit {
        id: job_id(n),
        spec: JobSpec::shell(format!("echo {n}")),
        submitted_at_ms: 1_700_000_000_000 + n as i64,
    };
    Entry {
        term,
        index,
        payload: Payload::Command(cmd.encode().unwrap()),
    }
}

/// Entries `from..=to`, each submitting job `index`.
fn submits(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to).map(|i| submit(i, term, i)).collect()
}

fn append(store: &Store, entries: Vec<Entry>, hs: Option<HardState>) {
    let rd = Ready {
        entries,
        hard_state: hs,
        ..Ready::default()
    };
    store.persist(&rd).expect("persist");
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote, commit }
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.index).collect()
}

#[test]
fn persist_and_restore_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let entries = submits(1, 5, 1);
    {
        let store = open(dir.path());
        assert!(store.is_fresh());
        seed_membership(&store, &[1, 2, 3]);
        assert!(!store.is_fresh());
        let rd = Ready {
            entries: entries.clone(),
            hard_state: Some(hs(1, 1, 3)),
            membership: Some(membership(&[1, 2, 3])),
            ..Ready::default()
        };
        store.persist(&rd).unwrap();
    }
    let store = open(dir.path());
    assert!(!store.is_fresh());
    let r = store.restored().unwrap();
    assert_eq!(r.hard_state, hs(1, 1, 3));
    assert_eq!(r.membership, membership(&[1, 2, 3]));
    assert!(r.snapshot.is_none());
    assert_eq!(r.entries, entries);
    assert_eq!(r.applied, 0);
}

#[test]
fn fresh_store_restores_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = store.restored().unwrap();
    assert_eq!(r.hard_state, HardState::default());
    assert!(r.entries.is_empty() && r.snapshot.is_none() && r.applied == 0);
    assert_eq!(store.schema_version(), migrations::SCHEMA_VERSION);
}

#[test]
fn conflicting_suffix_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        append(&store, submits(1, 10, 1), Some(hs(1, 1, 0)));
        // A new leader of term 2 overwrites from index 6 with two entries.
        append(&store, submits(6, 7, 2), Some(hs(2, 2, 0)));
    }
    let store = open(dir.path());
    let r = store.restored().unwrap();
    assert_eq!(indexes(&r.entries), (1..=7).collect::<Vec<_>>());
    assert!(r.entries[..5].iter().all(|e| e.term == 1));
    assert!(r.entries[5..].iter().all(|e| e.term == 2));
    assert_eq!(r.hard_state, hs(2, 2, 0));
    // Appending right after the new end works; a gap is refused.
    append(&store, submits(8, 8, 2), None);
    let err = store
        .persist(&Ready {
            entries: submits(10, 10, 2),
            ..Ready::default()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Contract(_)), "{err}");
    assert_eq!(indexes(&store.restored().unwrap().entries).last(), Some(&8));
}

#[test]
fn exactly_one_fsync_per_persist() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let before = store.fsync_count();
    store.persist(&Ready::default()).unwrap();
    assert_eq!(store.fsync_count(), before, "nothing to persist, no fsync");
    for batch in 0..10u64 {
        let n = store.fsync_count();
        append(
            &store,
            submits(batch * 64 + 1, batch * 64 + 64, 1),
            Some(hs(1, 1, batch * 64)),
        );
        assert_eq!(store.fsync_count(), n + 1);
    }
    let n = store.fsync_count();
    store
        .persist(&Ready {
            hard_state: Some(hs(2, 0, 0)),
            ..Ready::default()
        })
        .unwrap();
    assert_eq!(store.fsync_count(), n + 1);
    assert!(store.last_fsync_duration() <= store.max_fsync_duration());
}

#[test]
fn hard_state_going_backwards_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, vec![], Some(hs(5, 2, 0)));
    for bad in [hs(4, 0, 0), hs(5, 3, 0)] {
        let err = store
            .persist(&Ready {
                hard_state: Some(bad),
                ..Ready::default()
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::Contract(_)), "{err}");
    }
    assert_eq!(store.restored().unwrap().hard_state, hs(5, 2, 0));
}

#[test]
fn apply_builds_the_job_table_and_is_idempotent_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = submits(1, 3, 1);
    entries.push(Entry {
        term: 1,
        index: 4,
        payload: Payload::Noop,
    });
    entries.push(submit(5, 1, 2)); // duplicate of job 2
    entries.push(Entry {
        term: 1,
        index: 6,
        payload: Payload::Command(vec![0xde, 0xad]),
    });
    entries.push(Entry {
        term: 1,
        index: 7,
        payload: Payload::ConfChange(ConfChange::AddLearner {
            id: 4,
            info: peer(4),
        }),
    });
    {
        let store = open(dir.path());
        append(&store, entries.clone(), Some(hs(1, 1, 7)));
        let fsyncs = store.fsync_count();
        let out = store.apply(&entries).unwrap();
        assert_eq!(store.fsync_count(), fsyncs, "apply does not fsync");
        assert_eq!(out.len(), 7);
        match &out[0] {
            Applied::Job(job) => {
                assert_eq!(job.id, job_id(1));
                assert_eq!(job.state, JobState::Queued);
                assert_eq!(job.index, 1);
                assert_eq!(job.spec, JobSpec::shell("echo 1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out[3], Applied::Noop);
        match &out[4] {
            Applied::DuplicateJob(job) => assert_eq!(job.index, 2, "the original job"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(&out[5], Applied::Rejected { .. }));
        // No founding membership in this store: the change applies to empty.
        let mut expected = Membership::default();
        expected.learners.insert(4, peer(4));
        assert_eq!(out[6], Applied::ConfChange(expected.clone()));
        assert_eq!(store.applied_index(), 7);
        assert_eq!(store.job_count(), 3);
        assert_eq!(store.applied_membership().unwrap(), expected);
        // Make the applies durable as a clean shutdown would (a snapshot
        // flushes everything before it).
        store.create_snapshot().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.applied_index(), 7);
    assert_eq!(store.restored().unwrap().applied, 7);
    // Re-delivering entries after a restart changes nothing.
    let out = store.apply(&entries).unwrap();
    assert!(out.iter().all(|a| *a == Applied::AlreadyApplied));
    assert_eq!(store.job_count(), 3);
    let job = store.get_job(&job_id(2)).unwrap().unwrap();
    assert_eq!(job.index, 2);
    assert!(store.get_job(&job_id(99)).unwrap().is_none());
}

#[test]
fn apply_refuses_a_gap_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, submits(1, 5, 1), None);
    store.apply(&submits(1, 2, 1)).unwrap();
    let err = store.apply(&submits(4, 5, 1)).unwrap_err();
    assert!(matches!(err, StoreError::Contract(_)), "{err}");
    assert_eq!(store.applied_index(), 2);
    assert_eq!(store.job_count(), 2);
    // A batch that straddles the applied index applies only the new part.
    let out = store.apply(&submits(2, 4, 1)).unwrap();
    assert_eq!(out[0], Applied::AlreadyApplied);
    assert!(matches!(out[1], Applied::Job(_)));
    assert_eq!(store.applied_index(), 4);
}

#[test]
fn list_jobs_paginates_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, submits(1, 25, 1), None);
    store.apply(&submits(1, 25, 1)).unwrap();
    let mut seen: Vec<Job> = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_jobs(&JobScan::default(), cursor.as_ref(), 10)
            .unwrap();
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|j| j.id);
        seen.extend(page);
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(
        seen.iter().map(|j| j.id).collect::<Vec<_>>(),
        (1..=25).map(job_id).collect::<Vec<_>>()
    );
}

#[test]
fn list_jobs_pages_newest_first_and_within_an_id_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, submits(1, 25, 1), None);
    store.apply(&submits(1, 25, 1)).unwrap();
    let all_pages = |scan: JobScan| {
        let (mut seen, mut cursor) = (Vec::new(), None);
        loop {
            let page = store.list_jobs(&scan, cursor.as_ref(), 7).unwrap();
            let Some(last) = page.last().map(|j| j.id) else {
                return seen;
            };
            cursor = Some(last);
            seen.extend(page.into_iter().map(|j| j.id));
        }
    };
    let newest = JobScan {
        newest_first: true,
        ..JobScan::default()
    };
    let expected: Vec<_> = (1..=25).rev().map(job_id).collect();
    assert_eq!(all_pages(newest), expected);

    // A prefix of job 12's text is one range of the table, either way.
    let twelve = job_id(12).to_string();
    let (first, last) = JobId::prefix_range(&twelve[..24].to_lowercase()).expect("a prefix");
    assert!(first <= job_id(12) && job_id(12) <= last);
    for newest_first in [false, true] {
        let scan = JobScan {
            newest_first,
            first: Some(first),
            last: Some(last),
        };
        let found = all_pages(scan);
        assert!(found.contains(&job_id(12)), "{found:?}");
        assert!(found
            .iter()
            .all(|id| id.to_string().starts_with(&twelve[..24])));
    }
    let whole = JobId::prefix_range(&twelve).expect("a whole id is a prefix");
    assert_eq!(whole, (job_id(12), job_id(12)));
    assert_eq!(JobId::prefix_range("8"), None, "no ULID starts above 7");
    assert_eq!(JobId::prefix_range("01I"), None, "I is not in the alphabet");
    assert_eq!(JobId::prefix_range(""), None);
}

#[test]
fn snapshot_moves_the_state_machine_to_another_store() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = open(leader_dir.path());
    found_cluster(&leader, &[1, 2]);
    // The genesis snapshot holds index 1.
    let mut entries = submits(2, 41, 1);
    entries.push(Entry {
        term: 1,
        index: 42,
        payload: Payload::ConfChange(ConfChange::AddLearner {
            id: 3,
            info: peer(3),
        }),
    });
    entries.push(Entry {
        term: 1,
        index: 43,
        payload: Payload::ConfChange(ConfChange::Promote { id: 3 }),
    });
    append(&leader, entries.clone(), Some(hs(1, 1, 43)));
    leader.apply(&entries).unwrap();
    let (meta, data) = leader.create_snapshot().unwrap();
    assert_eq!(meta.index, 43);
    assert_eq!(meta.term, 1);
    assert_eq!(meta.membership, membership(&[1, 2, 3]));

    let follower = Store::open(follower_dir.path(), CLUSTER, 3).unwrap();
    // The follower had a stale, divergent log that the snapshot replaces.
    append(&follower, submits(1, 50, 1), Some(hs(1, 0, 0)));
    let fsyncs = follower.fsync_count();
    follower
        .persist(&Ready {
            snapshot: Some((meta.clone(), data.clone())),
            entries: submits(44, 45, 2),
            hard_state: Some(hs(2, 0, 43)),
            membership: Some(meta.membership.clone()),
            ..Ready::default()
        })
        .unwrap();
    assert_eq!(follower.fsync_count(), fsyncs + 1);
    let check = |s: &Store| {
        assert_eq!(s.applied_index(), 43);
        assert_eq!(s.job_count(), 40);
        assert_eq!(
            s.list_jobs(&JobScan::default(), None, 1000).unwrap(),
            leader.list_jobs(&JobScan::default(), None, 1000).unwrap()
        );
        assert_eq!(s.applied_membership().unwrap(), membership(&[1, 2, 3]));
        let r = s.restored().unwrap();
        assert_eq!(r.snapshot.as_ref().map(|(m, _)| m), Some(&meta));
        assert_eq!(
            r.snapshot.as_ref().map(|(_, d)| d.as_slice()),
            Some(data.as_slice())
        );
        assert_eq!(indexes(&r.entries), vec![44, 45]);
        assert_eq!(r.membership, membership(&[1, 2, 3]));
        assert_eq!(r.applied, 43);
    };
    check(&follower);
    drop(follower);
    let follower = Store::open(follower_dir.path(), CLUSTER, 3).unwrap();
    check(&follower);
    // Applying continues after the snapshot.
    let out = follower.apply(&submits(44, 45, 2)).unwrap();
    assert!(matches!(out[1], Applied::Job(_)));
    assert_eq!(follower.job_count(), 42);
    // Exactly one snapshot file is kept.
    let files = std::fs::read_dir(follower_dir.path().join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(files, 1);
}

#[test]
fn a_bad_received_snapshot_is_refused_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let src_dir = tempfile::tempdir().unwrap();
    let src = open(src_dir.path());
    append(&src, submits(1, 3, 1), None);
    src.apply(&submits(1, 3, 1)).unwrap();
    let (meta, data) = src.create_snapshot().unwrap();

    let store = open(dir.path());
    append(&store, submits(1, 2, 1), Some(hs(1, 0, 0)));
    let mut bad = (*data).clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    let err = store
        .persist(&Ready {
            snapshot: Some((meta.clone(), Arc::new(bad))),
            ..Ready::default()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::BadSnapshot(_)), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    // Meta that does not describe the data is refused too.
    let wrong = SnapshotMeta {
        index: meta.index + 1,
        ..meta.clone()
    };
    let err = store
        .persist(&Ready {
            snapshot: Some((wrong, data.clone())),
            ..Ready::default()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::BadSnapshot(_)), "{err}");
    let r = store.restored().unwrap();
    assert!(r.snapshot.is_none());
    assert_eq!(indexes(&r.entries), vec![1, 2]);
}

#[test]
fn a_corrupted_snapshot_file_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        append(&store, submits(1, 3, 1), None);
        store.apply(&submits(1, 3, 1)).unwrap();
        store.create_snapshot().unwrap();
    }
    let snap_dir = dir.path().join("snapshots");
    let file = std::fs::read_dir(&snap_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let err = Store::open(dir.path(), CLUSTER, 1).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("checksum") && msg.contains("corrupt"), "{msg}");
    // A missing file is refused as well.
    std::fs::remove_file(&file).unwrap();
    let err = Store::open(dir.path(), CLUSTER, 1).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[test]
fn compaction_keeps_the_log_after_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, submits(1, 20, 1), Some(hs(1, 1, 20)));
    store.apply(&submits(1, 10, 1)).unwrap();
    // Nothing may be compacted before a snapshot covers it.
    assert!(matches!(store.compact_log(5), Err(StoreError::Contract(_))));
    let (meta, _) = store.create_snapshot().unwrap();
    assert_eq!(meta.index, 10);
    assert!(matches!(
        store.compact_log(11),
        Err(StoreError::Contract(_))
    ));
    // Keep three trailing entries below the snapshot.
    store.compact_log(7).unwrap();
    let r = store.restored().unwrap();
    assert_eq!(indexes(&r.entries), (8..=20).collect::<Vec<_>>());
    store.compact_log(10).unwrap();
    drop(store);
    let store = open(dir.path());
    let r = store.restored().unwrap();
    assert_eq!(indexes(&r.entries), (11..=20).collect::<Vec<_>>());
    assert_eq!(r.snapshot.map(|(m, _)| m.index), Some(10));
    // With the whole log compacted, appending continues after the snapshot.
    store.apply(&submits(11, 20, 1)).unwrap();
    store.create_snapshot().unwrap();
    store.compact_log(20).unwrap();
    assert!(store.restored().unwrap().entries.is_empty());
    let err = store
        .persist(&Ready {
            entries: submits(22, 22, 1),
            ..Ready::default()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Contract(_)), "{err}");
    append(&store, submits(21, 21, 1), None);
    assert_eq!(indexes(&store.restored().unwrap().entries), vec![21]);
}

#[test]
fn open_refuses_another_cluster_node_or_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let err = Store::open(dir.path(), "other-cluster", 1).unwrap_err();
    assert!(matches!(err, StoreError::WrongCluster { .. }), "{err}");
    assert!(err.to_string().contains("other-cluster"), "{err}");
    let err = Store::open(dir.path(), CLUSTER, 2).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::WrongNode {
                found: 1,
                expected: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        Store::open(dir.path(), CLUSTER, 0),
        Err(StoreError::InvalidArgument(_))
    ));

    // Pretend a newer Drover wrote the store.
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert(
            "schema_version",
            &(migrations::SCHEMA_VERSION + 1).to_be_bytes()[..],
        )
        .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path(), CLUSTER, 1).unwrap_err();
    assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("written by a newer Drover: upgrade the binary or restore a backup"),
        "{err}"
    );
}

#[test]
fn open_refuses_an_undecodable_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        append(&store, vec![], Some(hs(3, 1, 0)));
    }
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        db.open_tree("raft_state")
            .unwrap()
            .insert("hard_state", &[0xff; 3][..])
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path(), CLUSTER, 1).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[test]
fn a_store_at_version_0_is_migrated() {
    // What a crash during the very first open leaves: identity recorded,
    // layout never initialised.
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert("cluster_id", CLUSTER.as_bytes()).unwrap();
        meta.insert("node_id", &1u64.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.schema_version(), migrations::SCHEMA_VERSION);
    append(&store, submits(1, 1, 1), None);
}

/// A made-up next version for the test: adds an index of jobs by state,
/// built from the existing rows, atomically with the version bump.
fn m_next_jobs_by_state(db: &sled::Db) -> Result<(), String> {
    let jobs = db.open_tree("jobs").map_err(|e| e.to_string())?;
    let index = db.open_tree("jobs_by_state").map_err(|e| e.to_string())?;
    let meta = db.open_tree("meta").map_err(|e| e.to_string())?;
    let rows: Vec<sled::IVec> = jobs
        .iter()
        .keys()
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    (&meta, &index)
        .transaction(|(meta, index)| {
            if migrations::read_schema_version_tx(meta)? != Ok(CURRENT) {
                return sled::transaction::abort("expected the current version".to_string());
            }
            for key in &rows {
                let mut k = vec![0u8]; // state Queued
                k.extend_from_slice(key);
                index.insert(k, &[][..])?;
            }
            migrations::write_schema_version_tx(meta, NEXT)?;
            Ok(())
        })
        .map_err(|e| format!("{e:?}"))
}

const CURRENT: u32 = migrations::SCHEMA_VERSION;
const NEXT: u32 = migrations::SCHEMA_VERSION + 1;

fn failing_migration(_: &sled::Db) -> Result<(), String> {
    Err("disk on fire".into())
}

#[test]
fn a_store_is_migrated_to_the_next_version() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        append(&store, submits(1, 5, 1), Some(hs(1, 1, 5)));
        store.apply(&submits(1, 5, 1)).unwrap();
        store.create_snapshot().unwrap();
    }
    let mut next: Vec<Migration> = migrations::MIGRATIONS.to_vec();

    // A failing migration leaves the store at the current version, usable.
    next.push(Migration {
        version: NEXT,
        name: "broken",
        up: failing_migration,
    });
    let err = Store::open_with_migrations(dir.path(), CLUSTER, 1, &next).unwrap_err();
    assert!(
        matches!(err, StoreError::Migration { version, .. } if version == NEXT),
        "{err}"
    );
    assert_eq!(open(dir.path()).schema_version(), CURRENT);

    let last = next.len() - 1;
    next[last] = Migration {
        version: NEXT,
        name: "jobs_by_state",
        up: m_next_jobs_by_state,
    };
    {
        let store = Store::open_with_migrations(dir.path(), CLUSTER, 1, &next).unwrap();
        assert_eq!(store.schema_version(), NEXT);
        assert_eq!(store.job_count(), 5);
        assert_eq!(store.restored().unwrap().hard_state, hs(1, 1, 5));
    }
    // Re-opening runs nothing again.
    let store = Store::open_with_migrations(dir.path(), CLUSTER, 1, &next).unwrap();
    assert_eq!(
        store
            .list_jobs(&JobScan::default(), None, 10)
            .unwrap()
            .len(),
        5
    );
    drop(store);
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        assert_eq!(db.open_tree("jobs_by_state").unwrap().len(), 5);
    }
    // This binary now refuses the store.
    let err = Store::open(dir.path(), CLUSTER, 1).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NewerSchema { found, supported, .. } if found == NEXT && supported == CURRENT
        ),
        "{err}"
    );
}

/// Version 1's encodings, written by hand as the binary of that version did
/// (same field order, so bincode lays them out identically).
mod v1 {
    use serde::Serialize;

    #[derive(Serialize)]
    pub struct Spec {
        pub command: Option<String>,
        pub args: Vec<String>,
    }

    #[derive(Serialize)]
    pub struct Job {
        pub id: drover::jobs::JobId,
        pub spec: Spec,
        pub state: drover::jobs::JobState,
        pub submitted_at_ms: i64,
        pub index: u64,
    }

    #[derive(Serialize)]
    pub struct SmMeta {
        pub applied_index: u64,
        pub applied_term: u64,
        pub membership: drover::raft::Membership,
        pub job_count: u64,
    }
}

#[test]
fn a_version_1_store_with_jobs_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let codec = bincode::config::standard();
    let ids: Vec<JobId> = (1..=3)
        .map(|n| JobId::from_parts(n, u128::from(n)))
        .collect();
    {
        // A store at schema 1 with three queued jobs, as version 1 wrote it.
        let store =
            Store::open_with_migrations(dir.path(), CLUSTER, 1, &migrations::MIGRATIONS[..1])
                .unwrap();
        assert_eq!(store.schema_version(), 1);
        drop(store);
        let db = sled::open(dir.path().join("db")).unwrap();
        let jobs = db.open_tree("jobs").unwrap();
        for (n, id) in ids.iter().enumerate() {
            let row = v1::Job {
                id: *id,
                spec: v1::Spec {
                    command: Some(format!("echo {n}")),
                    args: vec![],
                },
                state: drover::jobs::JobState::Queued,
                submitted_at_ms: 1000 + n as i64,
                index: n as u64 + 2,
            };
            jobs.insert(
                id.to_bytes(),
                bincode::serde::encode_to_vec(&row, codec).unwrap(),
            )
            .unwrap();
        }
        let sm = v1::SmMeta {
            applied_index: 4,
            applied_term: 1,
            membership: Default::default(),
            job_count: 3,
        };
        db.open_tree("sm_meta")
            .unwrap()
            .insert("state", bincode::serde::encode_to_vec(&sm, codec).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.schema_version(), migrations::SCHEMA_VERSION);
    assert_eq!(store.job_count(), 3);
    assert_eq!(store.queued_count(), 3);
    assert_eq!(store.applied_index(), 4);
    let job = store.get_job(&ids[1]).unwrap().unwrap();
    assert_eq!(job.spec.command.as_deref(), Some("echo 1"));
    assert_eq!(job.state, drover::jobs::JobState::Queued);
    assert!(job.attempts.is_empty());
    // The scheduler's queue index covers the upgraded jobs, oldest first.
    let queued: Vec<JobId> = store.queued_jobs().map(|r| r.unwrap().0).collect();
    assert_eq!(queued, ids);
}

#[test]
fn a_version_2_store_with_jobs_gains_owners_and_an_acl_tree() {
    let dir = tempfile::tempdir().unwrap();
    let codec = bincode::config::standard();
    let id = JobId::from_parts(7, 7);
    {
        // A store at schema 2 holding one finished job, as version 2 wrote it.
        let store =
            Store::open_with_migrations(dir.path(), CLUSTER, 1, &migrations::MIGRATIONS[..2])
                .unwrap();
        assert_eq!(store.schema_version(), 2);
        drop(store);
        let db = sled::open(dir.path().join("db")).unwrap();
        let row = drover::jobs::legacy::JobV2 {
            id,
            spec: drover::jobs::legacy::SpecV5::from_spec(drover::jobs::JobSpec::shell("echo old"))
                .expect("no user"),
            state: drover::jobs::JobState::Succeeded,
            submitted_at_ms: 1000,
            index: 3,
            attempts: vec![],
            not_before_ms: 0,
            finished_at_ms: Some(2000),
        };
        db.open_tree("jobs")
            .unwrap()
            .insert(
                id.to_bytes(),
                bincode::serde::encode_to_vec(&row, codec).unwrap(),
            )
            .unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.schema_version(), migrations::SCHEMA_VERSION);
    let job = store.get_job(&id).unwrap().unwrap();
    assert_eq!(job.spec.command.as_deref(), Some("echo old"));
    assert_eq!(job.state, drover::jobs::JobState::Succeeded);
    assert_eq!(job.finished_at_ms, Some(2000));
    assert_eq!(job.owner, None, "jobs from before ACLs have no owner");
    assert!(store.tokens().unwrap().is_empty());
    assert!(!store.acl_bootstrapped().unwrap());
}

#[test]
fn a_snapshot_ahead_of_the_applied_state_is_reinstalled_on_open() {
    // Crash model: the snapshot record is durable but the job table is not
    // (simulated by wiping the job table behind the store's back).
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        append(&store, submits(1, 6, 1), Some(hs(1, 1, 6)));
        store.apply(&submits(1, 6, 1)).unwrap();
        store.create_snapshot().unwrap();
    }
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        db.open_tree("jobs").unwrap().clear().unwrap();
        db.open_tree("sm_meta").unwrap().clear().unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.applied_index(), 6);
    assert_eq!(store.job_count(), 6);
    assert!(store.get_job(&job_id(6)).unwrap().is_some());
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let err = Store::open(dir.path(), CLUSTER, 1).unwrap_err();
    assert!(matches!(err, StoreError::Sled { .. }), "{err}");
    assert!(err.to_string().contains("another process"), "{err}");
}

/// Records a membership without bootstrap entries, so a test can write its
/// own log from index 1.
fn seed_membership(store: &Store, ids: &[u64]) {
    let rd = Ready {
        membership: Some(membership(ids)),
        ..Ready::default()
    };
    store.persist(&rd).unwrap();
}

#[test]
fn a_ready_that_only_moves_the_commit_index_needs_no_fsync() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        append(&store, submits(1, 3, 1), Some(hs(1, 1, 0)));
        let fsyncs = store.fsync_count();
        let commit_only = Ready {
            hard_state: Some(hs(1, 1, 3)),
            ..Ready::default()
        };
        store.persist(&commit_only).unwrap();
        assert_eq!(store.fsync_count(), fsyncs, "commit is a hint: no fsync");
        // A vote is never a hint.
        let vote = Ready {
            hard_state: Some(hs(2, 2, 3)),
            ..Ready::default()
        };
        store.persist(&vote).unwrap();
        assert_eq!(store.fsync_count(), fsyncs + 1);
    }
    let r = open(dir.path()).restored().unwrap();
    assert_eq!(
        r.hard_state,
        hs(2, 2, 3),
        "the next fsync carried the commit index"
    );
}

/// Founds a cluster as the node does: the genesis snapshot (index 1, empty
/// data) with the founding membership, so the log starts at index 2.
fn found_cluster(store: &Store, ids: &[u64]) {
    let meta = SnapshotMeta {
        index: 1,
        term: 1,
        membership: membership(ids),
    };
    let rd = Ready {
        snapshot: Some((meta, Arc::new(Vec::new()))),
        hard_state: Some(hs(1, 0, 1)),
        membership: Some(membership(ids)),
        ..Ready::default()
    };
    store.persist(&rd).unwrap();
}

#[test]
fn a_founded_cluster_starts_from_the_genesis_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        found_cluster(&store, &[1, 2, 3]);
        assert_eq!(store.applied_index(), 1);
        assert_eq!(store.applied_membership().unwrap(), membership(&[1, 2, 3]));
    }
    let store = open(dir.path());
    let r = store.restored().unwrap();
    assert_eq!(
        r.snapshot.as_ref().map(|(m, d)| (m.index, d.len())),
        Some((1, 0))
    );
    assert_eq!(r.membership, membership(&[1, 2, 3]));
    // Empty data is the genesis only: anywhere else it is refused.
    let bogus = SnapshotMeta {
        index: 9,
        term: 2,
        membership: membership(&[1]),
    };
    let err = store
        .persist(&Ready {
            snapshot: Some((bogus, Arc::new(Vec::new()))),
            ..Ready::default()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::BadSnapshot(_)), "{err}");
}

fn command_entry(index: u64, command: Command) -> Entry {
    Entry {
        term: 1,
        index,
        payload: Payload::Command(command.encode().unwrap()),
    }
}

/// The job lifecycle through the store: indexes and counters move with the
/// rows, and a NodeDown in the same batch as the assignment it must undo
/// sees that assignment (it needs an index scan, which a sled transaction
/// cannot do, so the batch is split before it).
#[test]
fn node_down_in_the_same_batch_as_an_assignment_loses_that_attempt() {
    use drover::jobs::{Assignment, Capacity};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut entries = submits(1, 3, 1);
    entries.push(command_entry(
        4,
        Command::NodeUp {
            node: 7,
            labels: BTreeMap::new(),
            capacity: Capacity {
                cpu_millis: 1000,
                memory_mib: 1024,
            },
            at_ms: 10,
        },
    ));
    entries.push(command_entry(
        5,
        Command::Assign {
            at_ms: 11,
            assignments: (1..=3)
                .map(|n| Assignment {
                    job: job_id(n),
                    attempt: 1,
                    node: 7,
                })
                .collect(),
        },
    ));
    entries.push(command_entry(
        6,
        Command::Started {
            job: job_id(1),
            attempt: 1,
            node: 7,
            at_ms: 12,
        },
    ));
    entries.push(command_entry(7, Command::NodeDown { node: 7, at_ms: 13 }));
    // A late report from the lost attempt is fenced off.
    entries.push(command_entry(
        8,
        Command::Finished {
            job: job_id(1),
            attempt: 1,
            node: 7,
            at_ms: 14,
            exit_code: Some(0),
            reason: drover::jobs::EndReason::Exited { code: 0 },
            message: String::new(),
            output_tail: Vec::new(),
        },
    ));
    append(&store, entries.clone(), Some(hs(1, 1, 8)));
    let results = store.apply(&entries).unwrap();
    assert!(
        matches!(
            &results[4],
            Applied::Assigned {
                placed: 3,
                refused: 0,
                jobs,
            } if jobs.len() == 3
        ),
        "{:?}",
        results[4]
    );
    assert!(
        matches!(&results[6], Applied::NodeLost { attempts: 3, jobs, .. } if jobs.len() == 3),
        "{:?}",
        results[6]
    );
    assert!(
        matches!(&results[7], Applied::Refused { .. }),
        "{:?}",
        results[7]
    );
    for n in 1..=3 {
        let job = store.get_job(&job_id(n)).unwrap().unwrap();
        // One attempt each, no retries configured: LOST for good.
        assert_eq!(job.state, JobState::Lost, "{job:?}");
        assert_eq!(
            job.attempts[0].reason,
            Some(drover::jobs::EndReason::NodeLost)
        );
    }
    assert!(store.active_on_node(7).unwrap().is_empty());
    assert_eq!(store.queued_count(), 0);
    assert_eq!(store.finished_count(), 3);
    assert_eq!(store.oldest_finished(10).unwrap().len(), 3);
    assert_eq!(
        store.node(7).unwrap().map(|n| n.status),
        Some(drover::jobs::NodeStatus::Down)
    );
    // The same state after a snapshot install on another replica.
    let (meta, data) = store.create_snapshot().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path());
    other
        .persist(&Ready {
            snapshot: Some((meta, data)),
            hard_state: Some(hs(1, 1, 8)),
            ..Ready::default()
        })
        .unwrap();
    assert_eq!(other.finished_count(), 3);
    assert_eq!(other.nodes().unwrap(), store.nodes().unwrap());
    assert_eq!(
        other.list_jobs(&JobScan::default(), None, 10).unwrap(),
        store.list_jobs(&JobScan::default(), None, 10).unwrap()
    );
    assert_eq!(
        other.oldest_finished(10).unwrap(),
        store.oldest_finished(10).unwrap()
    );
}

#[test]
fn tokens_apply_deterministically_and_travel_in_snapshots() {
    use drover::acl::{hash_secret, Role, Token};
    let token = |accessor: &str, role: Role| Token {
        accessor: accessor.into(),
        name: accessor.to_lowercase(),
        role,
        secret_hash: hash_secret(accessor),
        created_at_ms: 1,
    };
    let at = |index: u64, command: Command| Entry {
        term: 1,
        index,
        payload: Payload::Command(command.encode().unwrap()),
    };
    let entries = vec![
        at(
            1,
            Command::AclBootstrap {
                token: token("A", Role::Admin),
            },
        ),
        at(
            2,
            Command::AclBootstrap {
                token: token("B", Role::Admin),
            },
        ),
        at(
            3,
            Command::AclCreateToken {
                token: token("C", Role::Submitter),
            },
        ),
        at(
            4,
            Command::AclCreateToken {
                token: token("D", Role::Viewer),
            },
        ),
        at(
            5,
            Command::AclRevokeToken {
                accessor: "D".into(),
            },
        ),
        at(
            6,
            Command::AclRevokeToken {
                accessor: "D".into(),
            },
        ),
        at(
            7,
            Command::SubmitAs {
                id: job_id(1),
                spec: drover::jobs::JobSpec::shell("true"),
                owner: "C".into(),
                submitted_at_ms: 5,
            },
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, entries.clone(), Some(hs(1, 1, 7)));
    let results = store.apply(&entries).unwrap();
    assert!(matches!(&results[0], Applied::Token(t) if t.accessor == "A"));
    assert!(
        matches!(&results[1], Applied::Refused { reason } if reason.contains("already bootstrapped")),
        "a second bootstrap is refused: {:?}",
        results[1]
    );
    assert!(matches!(&results[4], Applied::Revoked(t) if t.accessor == "D"));
    assert!(matches!(&results[5], Applied::Refused { .. }));
    let check = |s: &Store| {
        let accessors: Vec<String> = s
            .tokens()
            .unwrap()
            .into_iter()
            .map(|t| t.accessor)
            .collect();
        assert_eq!(accessors, ["A", "C"]);
        assert!(s.acl_bootstrapped().unwrap());
        assert_eq!(
            s.token_by_hash(&hash_secret("C")).unwrap().map(|t| t.role),
            Some(Role::Submitter)
        );
        assert!(
            s.token_by_hash(&hash_secret("D")).unwrap().is_none(),
            "revoked"
        );
        assert!(
            s.token_by_hash(&hash_secret("B")).unwrap().is_none(),
            "refused"
        );
        assert_eq!(
            s.get_job(&job_id(1)).unwrap().unwrap().owner.as_deref(),
            Some("C")
        );
    };
    check(&store);
    // The same tokens, bootstrap flag and owners after a snapshot install.
    let (meta, data) = store.create_snapshot().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path());
    other
        .persist(&Ready {
            snapshot: Some((meta, data)),
            hard_state: Some(hs(1, 1, 7)),
            ..Ready::default()
        })
        .unwrap();
    check(&other);
}

/// Entries staging and finishing a restore of `body` in chunks of `chunk`.
fn restore_entries(first: u64, id: &str, body: &[u8], chunk: usize, at_ms: i64) -> Vec<Entry> {
    use drover::store::backup;
    let chunks: Vec<&[u8]> = body.chunks(chunk).collect();
    let mut commands = vec![Command::RestoreBegin {
        id: id.into(),
        chunks: chunks.len() as u32,
        sha256: backup::sha256(body),
    }];
    for (seq, data) in chunks.iter().enumerate() {
        commands.push(Command::RestoreChunk {
            id: id.into(),
            seq: seq as u32,
            data: data.to_vec(),
        });
    }
    commands.push(Command::RestoreFinish {
        id: id.into(),
        at_ms,
    });
    commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| Entry {
            term: 1,
            index: first + i as u64,
            payload: Payload::Command(c.encode().unwrap()),
        })
        .collect()
}

/// Applies `entries` to `store` and returns the body of a backup of it.
fn backup_body_of(store: &Store, entries: &[Entry]) -> Vec<u8> {
    use drover::store::backup;
    let last = entries.last().map_or(0, |e| e.index);
    append(store, entries.to_vec(), Some(hs(1, 1, last)));
    store.apply(entries).unwrap();
    let (meta, state) = store.export_state().unwrap();
    let file = backup::write(CLUSTER, meta.index, meta.term, 5, &state).unwrap();
    backup::read(&file).unwrap().body
}

/// An `AclBootstrap` of the admin token `ADMIN` at `index`.
fn bootstrap_entry(index: u64) -> Entry {
    Entry {
        term: 1,
        index,
        payload: Payload::Command(
            Command::AclBootstrap {
                token: drover::acl::Token {
                    accessor: "ADMIN".into(),
                    name: "bootstrap".into(),
                    role: drover::acl::Role::Admin,
                    secret_hash: drover::acl::hash_secret("s"),
                    created_at_ms: 1,
                },
            }
            .encode()
            .unwrap(),
        ),
    }
}

#[test]
fn a_restore_replaces_jobs_and_tokens_atomically_and_survives_a_snapshot_mid_staging() {
    use drover::store::backup;
    // The source: 40 jobs, one of them running on node 7, and a token.
    let src_dir = tempfile::tempdir().unwrap();
    let src = open(src_dir.path());
    let mut entries = submits(1, 40, 1);
    entries.push(bootstrap_entry(41));
    let body = backup_body_of(&src, &entries);

    // The target: 5 other jobs. A staging with a damaged body is refused
    // and changes nothing.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut own = Vec::new();
    for n in 1..=5 {
        own.push(submit(n, 1, 100 + n));
    }
    append(&store, own.clone(), Some(hs(1, 1, 5)));
    store.apply(&own).unwrap();
    let mut damaged = body.clone();
    damaged[10] ^= 1;
    let mut bad = restore_entries(6, "r1", &body, 256, 9);
    if let Payload::Command(_) = &bad[0].payload {
        bad[0] = Entry {
            term: 1,
            index: 6,
            payload: Payload::Command(
                Command::RestoreBegin {
                    id: "r1".into(),
                    chunks: body.chunks(256).count() as u32,
                    sha256: backup::sha256(&damaged),
                }
                .encode()
                .unwrap(),
            ),
        };
    }
    append(
        &store,
        bad.clone(),
        Some(hs(1, 1, bad.last().unwrap().index)),
    );
    let results = store.apply(&bad).unwrap();
    assert!(
        matches!(results.last(), Some(Applied::Refused { reason }) if reason.contains("checksum")),
        "{:?}",
        results.last()
    );
    assert_eq!(store.job_count(), 5);

    // A good one, with a snapshot taken mid-staging and installed on a
    // third replica, which then applies the rest: all end alike.
    let first = bad.last().unwrap().index + 1;
    let good = restore_entries(first, "r2", &body, 256, 9);
    let split = good.len() / 2;
    append(
        &store,
        good.clone(),
        Some(hs(1, 1, good.last().unwrap().index)),
    );
    store.apply(&good[..split]).unwrap();
    let (mid_meta, mid_data) = store.create_snapshot().unwrap();
    let results = store.apply(&good[split..]).unwrap();
    assert!(
        matches!(
            results.last(),
            Some(Applied::Restored {
                jobs: 40,
                tokens: 1
            })
        ),
        "{:?}",
        results.last()
    );
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path());
    other
        .persist(&Ready {
            snapshot: Some((mid_meta, mid_data)),
            hard_state: Some(hs(1, 1, good.last().unwrap().index)),
            ..Ready::default()
        })
        .unwrap();
    append(&other, good[split..].to_vec(), None);
    other.apply(&good[split..]).unwrap();
    for s in [&store, &other] {
        assert_eq!(s.job_count(), 40);
        assert_eq!(
            s.list_jobs(&JobScan::default(), None, 100).unwrap(),
            src.list_jobs(&JobScan::default(), None, 100).unwrap()
        );
        assert!(
            s.get_job(&job_id(101)).unwrap().is_none(),
            "old jobs are gone"
        );
        assert!(s.acl_bootstrapped().unwrap());
        assert_eq!(s.tokens().unwrap().len(), 1);
        assert_eq!(s.queued_count(), 40);
    }
}

#[test]
fn a_restore_of_a_backup_taken_before_bootstrap_does_not_reopen_bootstrap() {
    // The backup: 3 jobs, never bootstrapped.
    let src_dir = tempfile::tempdir().unwrap();
    let src = open(src_dir.path());
    let body = backup_body_of(&src, &submits(1, 3, 1));

    // The target was bootstrapped (and its token since revoked or not: the
    // mark is what closes bootstrap).
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let boot = vec![bootstrap_entry(1)];
    append(&store, boot.clone(), Some(hs(1, 1, 1)));
    store.apply(&boot).unwrap();
    let restore = restore_entries(2, "r", &body, 256, 9);
    append(
        &store,
        restore.clone(),
        Some(hs(1, 1, restore.last().unwrap().index)),
    );
    let results = store.apply(&restore).unwrap();
    assert!(
        matches!(results.last(), Some(Applied::Restored { jobs: 3, .. })),
        "{:?}",
        results.last()
    );
    assert!(store.acl_bootstrapped().unwrap(), "bootstrap stays closed");
    // And a second bootstrap is refused by the state machine itself.
    let again = vec![Entry {
        term: 1,
        index: restore.last().unwrap().index + 1,
        payload: boot[0].payload.clone(),
    }];
    append(&store, again.clone(), Some(hs(1, 1, again[0].index)));
    let results = store.apply(&again).unwrap();
    assert!(
        matches!(&results[0], Applied::Refused { reason } if reason.contains("already bootstrapped")),
        "{:?}",
        results[0]
    );
}

/// A data directory written by the schema-2 release (before access
/// control): see tests/fixtures/make-schema2-store.sh for how it was made.
const SCHEMA2_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/schema2-store.tar.gz"
);

#[test]
fn a_data_dir_written_by_the_schema_2_release_upgrades_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("tar")
        .args(["-xzf", SCHEMA2_FIXTURE, "-C"])
        .arg(dir.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "extract the fixture");
    let data = dir.path().join("data");
    let open_dev = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Store::open(&data, "drover-dev", 1) {
                Ok(store) => return store,
                Err(StoreError::Sled { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("open the fixture: {e}"),
            }
        }
    };
    let store = open_dev();
    assert_eq!(store.schema_version(), migrations::SCHEMA_VERSION);
    let jobs = store.list_jobs(&JobScan::default(), None, 100).unwrap();
    let by_command = |text: &str| {
        jobs.iter()
            .find(|j| j.spec.command.as_deref().is_some_and(|c| c.contains(text)))
            .unwrap_or_else(|| panic!("no job running {text:?} in {jobs:?}"))
    };
    let hello = by_command("hello from schema 2");
    assert_eq!(hello.state, JobState::Succeeded);
    assert_eq!(hello.attempts.len(), 1);
    assert_eq!(hello.attempts[0].output_tail, b"hello from schema 2\n");
    let failing = by_command("exit 3");
    assert_eq!(failing.state, JobState::Failed);
    assert_eq!(failing.attempts[0].exit_code, Some(3));
    let keyed = by_command("keyed");
    assert_eq!(keyed.spec.labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(
        store
            .job_by_idempotency_key(None, "fixture-key")
            .unwrap()
            .map(|j| j.id),
        Some(keyed.id)
    );
    let queued = by_command("never placed");
    assert_eq!(queued.state, JobState::Queued);
    assert_eq!(store.queued_count(), 1);
    assert!(
        jobs.iter().all(|j| j.owner.is_none()),
        "no owners before ACLs"
    );
    assert!(store.tokens().unwrap().is_empty());
    assert_eq!(store.nodes().unwrap().len(), 1, "the node table came along");
    // The Raft state reads back, and the state exports (as a snapshot would).
    let restored = store.restored().unwrap();
    assert!(restored.hard_state.term >= 1);
    store.export_state().unwrap();
    drop(store);
    // Upgraded for good: a second open finds schema 3 and the same jobs.
    let again = open_dev();
    assert_eq!(again.schema_version(), migrations::SCHEMA_VERSION);
    assert_eq!(
        again.list_jobs(&JobScan::default(), None, 100).unwrap(),
        jobs
    );
}

/// Jobs by state move with every apply, and are counted again from the
/// table when the store reopens.
#[test]
fn jobs_by_state_follow_applies_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let queued = |store: &Store| {
        store
            .jobs_by_state()
            .into_iter()
            .find(|(s, _)| *s == JobState::Queued)
            .map(|(_, n)| n)
    };
    {
        let store = open(dir.path());
        assert_eq!(store.jobs_by_state().len(), JobState::ALL.len());
        assert_eq!(queued(&store), Some(0));
        append(&store, submits(1, 5, 1), Some(hs(1, 1, 5)));
        store.apply(&submits(1, 5, 1)).unwrap();
        assert_eq!(queued(&store), Some(5));
        let total: u64 = store.jobs_by_state().iter().map(|(_, n)| n).sum();
        assert_eq!(total, store.job_count());
    }
    let store = open(dir.path());
    assert_eq!(queued(&store), Some(5), "counted again at open");
}
