//! Durable storage: the only module that touches sled.
//!
//! One sled database per node under `data_dir/db` (its trees are laid out
//! by `migrations/m0001_initial.rs` and the migrations after it), plus
//! snapshot files under `data_dir/snapshots/`. [`Store`] is the Raft log and hard state
//! (`persist`, `restored`, `compact_log`), the job table (`apply`, reads) and
//! its snapshots (`create_snapshot`, install through `persist`).
//!
//! # Crash safety
//! sled guarantees that a `flush()` makes every earlier write durable (we
//! follow each flush with an fdatasync of sled's log file, because sled
//! 0.34 on Linux only calls sync_file_range), and that a transaction (even
//! across trees) is recovered all or nothing. We also rely on sled being
//! log-structured: its recovery keeps the writes up to the last contiguous
//! message of its log (`check_contiguity_in_unstable_tail`), so what
//! survives a crash is a prefix of the writes in the order they were made
//! (with each transaction whole). Writes not covered by a flush may be lost,
//! but only as a suffix. `tests/store_crash.rs` kills a writer with SIGKILL
//! at random moments and checks the recovered log. Case by case:
//!
//! - `persist` (no snapshot): an append that keeps term and vote, nearly
//!   every Ready, is written as plain inserts (entries in index order, then
//!   the hard state), then ONE flush. A crash before the flush leaves a
//!   prefix: the old hard state with some of the new entries, which extend
//!   the log contiguously (the commit index, written last, never points
//!   past it). Anything else (a truncation, a new term or vote, a membership
//!   change) is ONE transaction, then ONE flush: a crash keeps all of it or
//!   none (no entries of a new term under an old hard state, no hole from a
//!   truncation without its replacement). Why not always a transaction:
//!   each sled transaction writes two extra I/O buffers (a `pwrite` and a
//!   waited `sync_file_range` each), the largest per-write cost this store
//!   had. Nothing was acknowledged yet in any case: the caller sends
//!   messages only after `persist` returns.
//! - `persist` with a snapshot: the file is made durable first (temp file,
//!   fsync, rename, dir fsync). Then one transaction replaces the log, the
//!   hard state, the snapshot record, the job table and `sm_meta`, then one
//!   flush. A crash before that transaction is durable leaves the old state
//!   plus an unreferenced file (deleted on open); after it, the new state.
//!   The previous snapshot file is deleted only after the flush.
//! - `apply`: job-table changes and the applied index commit together, all
//!   or nothing, without a flush (see `staged`): the run's writes are staged
//!   in memory, then written as one journal record followed by plain
//!   inserts with the applied index last; open replays a journal whose
//!   applied index the table has not reached. A write set over 64 KiB (a
//!   restore, a report carrying a large output tail) is one transaction
//!   instead. A crash may lose the
//!   latest applies, but always whole ones with their applied index; the
//!   entries are durable in the log and are re-applied after restart
//!   (applying is idempotent by index, so a duplicate apply is skipped).
//! - `create_snapshot`: file durable first, then the record, then a flush.
//!   The flush also makes every earlier apply durable, so a durable snapshot
//!   never claims an index above the durable applied index (open checks
//!   this anyway and restores the job table from the snapshot if not).
//! - `compact_log`: deletes only entries at or below the durable snapshot's
//!   index (refused otherwise), lowest first, in chunks, without a flush:
//!   what a crash leaves is a contiguous log, and extra entries below the
//!   snapshot are harmless.
//! - output appends (`outputs.rs`): chunks and their attempt's metadata in
//!   one batch, never flushed. Output is best effort: a crash may lose the
//!   latest chunks (whole batches), and the next flush makes them durable.
//! - `open`: identity (cluster id, node id) is written and flushed before
//!   any migration; each migration moves the version atomically and is
//!   flushed. A crash at any point resumes at the right step.
//!
//! # Concurrency
//! Methods take `&self`; `Store` is `Send + Sync`. Writers are serialized by
//! internal locks, always taken in the order log -> state machine ->
//! snapshot. The output lock is never held with another. Readers
//! (`get_job`, `list_jobs`, `read_output`, `output_tail`) take no lock, and
//! each read is of one key or one iterator step: a reader running during an
//! apply may see some of its rows written and others not yet (a new job
//! before its queue entry is written, say). Nothing decides on such a read
//! alone: the scheduler's placements and a node's reports go through the log
//! and are checked again when applied. What must be consistent (a snapshot,
//! a backup) is read without the lock too, but every change committed
//! meanwhile is captured and laid over what was read, which gives the table
//! at exactly one applied index (`Store::export_state`).

mod apply;
pub mod backup;
mod capture;
mod codec;
mod error;
mod export;
mod indexes;
mod journal;
mod layout;
pub mod migrations;
mod outputs;
mod queries;
mod raft_storage;
mod restore;
mod snapshot;
pub mod space;
mod staged;
mod usage;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use sled::Transactional;

use self::layout::{
    SmMeta, SnapshotRecord, TREE_JOBS, TREE_OUTPUTS, TREE_RAFT_LOG, TREE_RAFT_STATE, TREE_SM_META,
    TREE_SNAPSHOTS,
};
use self::migrations::Migration;
use crate::jobs::Job;
use crate::raft::NodeId;

pub use self::error::StoreError;

/// How long an open waits for a lock this process's last store of the same
/// directory may still hold, and how often it looks.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(20);
pub use self::outputs::AppendOutcome;

/// A snapshot's metadata and its bytes (the format of `store::snapshot`),
/// shared rather than copied because it may be large and is sent to peers.
pub type Snapshot = (crate::raft::SnapshotMeta, std::sync::Arc<Vec<u8>>);
pub use self::queries::MAX_LIST_LIMIT;
pub use self::restore::{seed_data_dir, Seeded};
pub use self::snapshot::check_received as check_received_snapshot;
/// Writes a file so a crash never leaves half of it under its name (temp
/// file, fsync, rename, directory fsync): snapshot files and backups.
pub(crate) use self::snapshot::write_file as write_file_durably;
pub use self::space::{SpaceGuard, SpaceLevel, SpaceReport};
pub use self::usage::OwnerUsage;

/// Directory names inside `data_dir`.
const DB_DIR: &str = "db";
const SNAPSHOT_DIR: &str = "snapshots";
/// The file sled 0.34 keeps its log in, inside its directory.
const SLED_LOG_FILE: &str = "db";
/// Bound on sled's page cache (its default is 1 GiB).
const SLED_CACHE_BYTES: u64 = 256 << 20;

/// A node's durable state. See the module docs for the crash-safety
/// argument of each operation.
pub struct Store {
    data_dir: PathBuf,
    snapshot_dir: PathBuf,
    cluster_id: String,
    node_id: NodeId,
    incarnation: u64,
    schema_version: u32,
    db: sled::Db,
    /// sled's log file, for the fdatasync that completes each flush.
    db_file: fs::File,
    raft_log: sled::Tree,
    raft_state: sled::Tree,
    snapshots: sled::Tree,
    /// The state machine: job table, its indexes, node table, `sm_meta`.
    sm: SmTrees,
    /// Node-local job output (not replicated, not in snapshots).
    outputs: sled::Tree,
    /// Serializes writers of the log and raft state.
    log_lock: Mutex<()>,
    /// Serializes writers of the job table and `sm_meta`.
    sm_lock: Mutex<()>,
    /// Serializes writers of snapshot files and the snapshot record.
    snap_lock: Mutex<()>,
    /// Serializes writers of `outputs` (each append reads and rewrites its
    /// attempt's metadata).
    output_lock: Mutex<()>,
    /// Serializes exports of the table (snapshots, backups): one capture.
    export_lock: Mutex<()>,
    /// While an export reads the table without `sm_lock`, every change
    /// committed meanwhile (see `capture::Capture`).
    capture: Mutex<Option<capture::Capture>>,
    /// Applied index, published after the apply transaction commits, so a
    /// reader that sees index `i` applied also sees its effects.
    applied: AtomicU64,
    counts: Counts,
    /// Per owner and in all (`usage`), in memory.
    usage: usage::Usage,
    fsyncs: AtomicU64,
    last_fsync_nanos: AtomicU64,
    max_fsync_nanos: AtomicU64,
    /// Told the duration of every barrier (the node's fsync histogram).
    fsync_observer: OnceLock<FsyncObserver>,
}

/// A callback told the duration of each fsync (see [`Store::observe_fsyncs`]).
type FsyncObserver = Box<dyn Fn(Duration) + Send + Sync>;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.data_dir)
            .field("cluster_id", &self.cluster_id)
            .field("node_id", &self.node_id)
            .field("applied", &self.applied_index())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The mutexes guard no data, or (the export capture) data no code
    // panics while changing: a poisoned lock leaves nothing inconsistent in
    // memory, so ignore poisoning.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Opens (creating on first use) the store in `data_dir` for node
    /// `node_id` of cluster `cluster_id`, running pending migrations.
    ///
    /// Refuses, never reinitialises, a directory of another cluster or node,
    /// of a newer schema, or with corrupt contents.
    pub fn open(data_dir: &Path, cluster_id: &str, node_id: NodeId) -> Result<Store, StoreError> {
        Store::open_with_migrations(data_dir, cluster_id, node_id, migrations::MIGRATIONS)
    }

    /// [`Store::open`] with an explicit migration list: what this binary's
    /// schema is. For tests of the migration machinery and for tools.
    pub fn open_with_migrations(
        data_dir: &Path,
        cluster_id: &str,
        node_id: NodeId,
        migrations: &[Migration],
    ) -> Result<Store, StoreError> {
        if node_id == 0 {
            return Err(StoreError::InvalidArgument("node id 0 is reserved".into()));
        }
        if cluster_id.is_empty() {
            return Err(StoreError::InvalidArgument(
                "the cluster id is empty".into(),
            ));
        }
        let supported = migrations.last().map_or(0, |m| m.version);
        let data_dir = data_dir.to_path_buf();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let snapshot_dir = data_dir.join(SNAPSHOT_DIR);
        fs::create_dir_all(&snapshot_dir).map_err(io(&snapshot_dir))?;
        snapshot::sync_dir(&data_dir).map_err(io(&data_dir))?;

        let db_path = data_dir.join(DB_DIR);
        let sled_err = |source: sled::Error| match source {
            sled::Error::Corruption { .. } => StoreError::Corrupt {
                path: db_path.clone(),
                detail: source.to_string(),
            },
            source => StoreError::Sled {
                path: db_path.clone(),
                source,
            },
        };
        let config = sled::Config::new()
            .path(&db_path)
            .cache_capacity(SLED_CACHE_BYTES)
            // No background flusher: every fsync is ours (counted, and
            // never competing with the persist path). Unflushed applies are
            // made durable by the next persist's flush, or re-applied.
            .flush_every_ms(None);
        // A store of this process dropped a moment ago may still hold the
        // file lock until sled's I/O threads let go of it: wait a little
        // for it. Another process holding the directory is reported after.
        let mut waited = std::time::Duration::ZERO;
        let db = loop {
            match config.open() {
                Err(e) if error::is_locked(&e) && waited < LOCK_WAIT => {
                    std::thread::sleep(LOCK_POLL);
                    waited += LOCK_POLL;
                }
                other => break other.map_err(sled_err)?,
            }
        };
        // sled's flush() ends in sync_file_range(2) on Linux, which neither
        // flushes the device's write cache nor persists file metadata (the
        // log file grows). We fdatasync sled's log file after each flush to
        // make it a real durability barrier; and fsync the directory once
        // so that the files sled just created survive a power loss.
        let db_file_path = db_path.join(SLED_LOG_FILE);
        let db_file = fs::File::open(&db_file_path).map_err(io(&db_file_path))?;
        snapshot::sync_dir(&db_path).map_err(io(&db_path))?;
        let corrupt = |detail: String| StoreError::Corrupt {
            path: data_dir.clone(),
            detail,
        };

        // Identity and version, before anything else is read or written.
        let meta = db.open_tree(layout::META_TREE).map_err(sled_err)?;
        let version = migrations::read_schema_version(&meta).map_err(corrupt)?;
        if version > supported {
            return Err(StoreError::NewerSchema {
                path: data_dir,
                found: version,
                supported,
            });
        }
        let stored_cluster = meta.get(layout::KEY_CLUSTER_ID).map_err(sled_err)?;
        let stored_node = meta.get(layout::KEY_NODE_ID).map_err(sled_err)?;
        match (stored_cluster, stored_node) {
            (None, None) => {
                if version != 0 {
                    return Err(corrupt(format!(
                        "schema version {version} is recorded but the cluster and node ids are missing"
                    )));
                }
                // First open: the directory must hold nothing else, or we
                // would adopt state of unknown origin.
                for name in db.tree_names() {
                    if name.as_ref() == layout::META_TREE.as_bytes()
                        || name.as_ref() == b"__sled__default"
                    {
                        continue;
                    }
                    let tree = db.open_tree(&name).map_err(sled_err)?;
                    if !tree.is_empty() {
                        return Err(corrupt(format!(
                            "tree {:?} has data but the store's identity (meta) is missing",
                            String::from_utf8_lossy(&name)
                        )));
                    }
                }
                meta.insert(layout::KEY_CLUSTER_ID, cluster_id.as_bytes())
                    .map_err(sled_err)?;
                meta.insert(layout::KEY_NODE_ID, &node_id.to_be_bytes()[..])
                    .map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
                tracing::info!(path = %data_dir.display(), cluster_id, node_id, "created a new store");
            }
            (Some(found_cluster), Some(found_node)) => {
                let found_cluster = String::from_utf8(found_cluster.to_vec())
                    .map_err(|_| corrupt("cluster_id is not UTF-8".into()))?;
                let found_node = <[u8; 8]>::try_from(found_node.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| corrupt("node_id is not 8 bytes".into()))?;
                if found_cluster != cluster_id {
                    return Err(StoreError::WrongCluster {
                        path: data_dir,
                        found: found_cluster,
                        expected: cluster_id.to_string(),
                    });
                }
                if found_node != node_id {
                    return Err(StoreError::WrongNode {
                        path: data_dir,
                        found: found_node,
                        expected: node_id,
                    });
                }
            }
            _ => {
                return Err(corrupt(
                    "only one of cluster_id and node_id is recorded".into(),
                ))
            }
        }

        // Stores made before incarnations existed get one now (the flush
        // at the end of open makes it durable).
        let incarnation = match meta.get(layout::KEY_INCARNATION).map_err(sled_err)? {
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| corrupt("incarnation is not 8 bytes".into()))?,
            None => {
                let fresh = rand::random::<u64>().max(1);
                meta.insert(layout::KEY_INCARNATION, &fresh.to_be_bytes()[..])
                    .map_err(sled_err)?;
                fresh
            }
        };

        let schema_version = migrations::run(&db, migrations).map_err(|(m, reason)| match m {
            Some(m) => StoreError::Migration {
                path: data_dir.clone(),
                version: m.version,
                name: m.name,
                reason,
            },
            None => corrupt(reason),
        })?;

        let store = Store {
            raft_log: db.open_tree(TREE_RAFT_LOG).map_err(sled_err)?,
            raft_state: db.open_tree(TREE_RAFT_STATE).map_err(sled_err)?,
            snapshots: db.open_tree(TREE_SNAPSHOTS).map_err(sled_err)?,
            outputs: db.open_tree(TREE_OUTPUTS).map_err(sled_err)?,
            sm: SmTrees {
                jobs: db.open_tree(TREE_JOBS).map_err(sled_err)?,
                sm_meta: db.open_tree(TREE_SM_META).map_err(sled_err)?,
                queue: db.open_tree(layout::TREE_QUEUE).map_err(sled_err)?,
                active: db.open_tree(layout::TREE_ACTIVE).map_err(sled_err)?,
                finished: db.open_tree(layout::TREE_FINISHED).map_err(sled_err)?,
                idempotency: db.open_tree(layout::TREE_IDEMPOTENCY).map_err(sled_err)?,
                nodes: db.open_tree(layout::TREE_NODES).map_err(sled_err)?,
                acl: db.open_tree(layout::TREE_ACL).map_err(sled_err)?,
                restore: db.open_tree(layout::TREE_RESTORE).map_err(sled_err)?,
            },
            db,
            db_file,
            data_dir,
            snapshot_dir,
            cluster_id: cluster_id.to_string(),
            node_id,
            incarnation,
            schema_version,
            log_lock: Mutex::new(()),
            sm_lock: Mutex::new(()),
            snap_lock: Mutex::new(()),
            output_lock: Mutex::new(()),
            export_lock: Mutex::new(()),
            capture: Mutex::new(None),
            applied: AtomicU64::new(0),
            counts: Counts::default(),
            usage: usage::Usage::default(),
            fsyncs: AtomicU64::new(0),
            last_fsync_nanos: AtomicU64::new(0),
            max_fsync_nanos: AtomicU64::new(0),
            fsync_observer: OnceLock::new(),
        };
        store.check_and_recover()?;
        // One barrier for whatever open wrote (identity, migrations).
        store.flush()?;
        Ok(store)
    }

    /// Validates every record open depends on, verifies the snapshot file,
    /// removes stale snapshot files, and repairs the one state a crash can
    /// legitimately leave behind (see module docs).
    fn check_and_recover(&self) -> Result<(), StoreError> {
        self.hard_state()?;
        self.membership()?;
        let record = self.snapshot_record()?;
        if self.replay_apply_journal(self.sm_meta()?.applied_index)? {
            self.flush()?;
        }
        let mut sm = self.sm_meta()?;
        if let Some(record) = &record {
            let data =
                snapshot::read_file(&self.snapshot_dir, record).map_err(|d| self.corrupt(d))?;
            if record.meta.index > sm.applied_index {
                tracing::warn!(
                    snapshot = record.meta.index,
                    applied = sm.applied_index,
                    "state machine is behind the durable snapshot; restoring it from the snapshot"
                );
                let decoded =
                    snapshot::decode_for(&record.meta, &data).map_err(|d| self.corrupt(d))?;
                sm = self.install_state_machine(&decoded)?;
                self.flush()?;
            }
        }
        snapshot::remove_stale_files(&self.snapshot_dir, record.as_ref().map(|r| r.file.as_str()));
        self.recount_usage()?;
        self.publish_counts(&sm);
        Ok(())
    }

    /// True if no raft state was ever written: the node has never
    /// persisted a genesis snapshot, voted, appended or installed a snapshot.
    /// The node layer founds a cluster (or waits to be added to one) only then.
    pub fn is_fresh(&self) -> bool {
        self.raft_state.is_empty() && self.raft_log.is_empty() && self.snapshots.is_empty()
    }

    /// This data directory's incarnation: random, made on first use, never
    /// changed. A node id seen with another incarnation is a node that lost
    /// its data (see `node::peer_service::PeerIncarnations`).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The data directory this store lives in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The cluster this store belongs to.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The node this store belongs to.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The schema version of the data on disk (after migrations).
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// Number of durability barriers (sled flush + fdatasync of its log)
    /// since open. Snapshot file fsyncs are not counted. Divided by entries persisted, it is the
    /// fsyncs-per-entry figure of the benchmark.
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Duration of the most recent flush.
    pub fn last_fsync_duration(&self) -> Duration {
        Duration::from_nanos(self.last_fsync_nanos.load(Ordering::Relaxed))
    }

    /// Longest flush since open.
    pub fn max_fsync_duration(&self) -> Duration {
        Duration::from_nanos(self.max_fsync_nanos.load(Ordering::Relaxed))
    }

    /// Calls `observe` with the duration of every later durability barrier,
    /// so the node can keep a latency histogram without the store knowing
    /// about metrics. One observer per store: a second call is ignored and
    /// returns false. `observe` runs on the flushing thread (the Raft loop's
    /// included), so it must be quick and must not block.
    pub fn observe_fsyncs(&self, observe: impl Fn(Duration) + Send + Sync + 'static) -> bool {
        self.fsync_observer.set(Box::new(observe)).is_ok()
    }

    /// Makes every earlier write durable (one counted fsync), e.g. the
    /// latest applies before a graceful shutdown, so they need not be
    /// re-applied after restart. Never needed for correctness.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.flush()
    }

    /// The one way this module makes sled durable: sled's flush, then an
    /// fdatasync of its log file (see `open`). Counted as one fsync, timed.
    fn flush(&self) -> Result<(), StoreError> {
        let start = Instant::now();
        self.db.flush().map_err(|e| self.sled_err(e))?;
        self.db_file.sync_data().map_err(|source| StoreError::Io {
            path: self.data_dir.join(DB_DIR).join(SLED_LOG_FILE),
            source,
        })?;
        let elapsed = start.elapsed();
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        if let Some(observe) = self.fsync_observer.get() {
            observe(elapsed);
        }
        self.last_fsync_nanos.store(nanos, Ordering::Relaxed);
        self.max_fsync_nanos.fetch_max(nanos, Ordering::Relaxed);
        Ok(())
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.data_dir.clone(),
            detail,
        }
    }

    fn sled_err(&self, source: sled::Error) -> StoreError {
        match source {
            sled::Error::Corruption { .. } => self.corrupt(source.to_string()),
            source => StoreError::Sled {
                path: self.data_dir.join(DB_DIR),
                source,
            },
        }
    }

    fn tx_err(&self, e: sled::transaction::TransactionError<StoreError>) -> StoreError {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => self.sled_err(e),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        codec::decode(what, bytes).map_err(|d| self.corrupt(d))
    }

    fn sm_meta(&self) -> Result<SmMeta, StoreError> {
        match self
            .sm
            .sm_meta
            .get(layout::KEY_SM_META)
            .map_err(|e| self.sled_err(e))?
        {
            Some(bytes) => self.decode("sm_meta", &bytes),
            None => Ok(SmMeta::default()),
        }
    }

    fn snapshot_record(&self) -> Result<Option<SnapshotRecord>, StoreError> {
        match self
            .snapshots
            .get(layout::KEY_LATEST_SNAPSHOT)
            .map_err(|e| self.sled_err(e))?
        {
            Some(bytes) => self.decode("snapshot record", &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Replaces the state machine with a snapshot's, in one transaction
    /// (no flush). Caller holds `sm_lock`.
    fn install_state_machine(
        &self,
        snap: &snapshot::DecodedSnapshot,
    ) -> Result<SmMeta, StoreError> {
        let install = self.prepare_install(snap)?;
        let writes = install.writes(self)?;
        self.sm.transaction(&writes).map_err(|e| self.tx_err(e))?;
        self.capture_replaced();
        Ok(install.sm)
    }

    /// What installing `snap` writes, computed before the transaction.
    fn prepare_install(
        &self,
        snap: &snapshot::DecodedSnapshot,
    ) -> Result<PreparedInstall, StoreError> {
        let old_keys = self.keys_of(&self.sm.table())?;
        let mut sm = SmMeta {
            applied_index: snap.meta.index,
            applied_term: snap.meta.term,
            membership: snap.meta.membership.clone(),
            ..SmMeta::default()
        };
        sm.count(layout::counts_of(&snap.jobs));
        let sm_encoded = codec::encode("sm_meta", &sm)?;
        Ok(PreparedInstall {
            old_keys,
            jobs: snap.jobs.clone(),
            nodes: snap.nodes.clone(),
            tokens: snap.tokens.clone(),
            bootstrap: snap.bootstrap.clone(),
            staged: snap.staged.clone(),
            sm,
            sm_encoded,
        })
    }

    /// Every key of each tree (for a wholesale replacement, whose
    /// transaction cannot scan). Caller holds `sm_lock`.
    fn keys_of(&self, trees: &[&sled::Tree]) -> Result<Vec<Vec<sled::IVec>>, StoreError> {
        trees
            .iter()
            .map(|tree| {
                tree.iter()
                    .keys()
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| self.sled_err(e))
            })
            .collect()
    }

    fn decode_job(&self, key: &[u8], value: &[u8]) -> Result<Job, StoreError> {
        let job: Job = self.decode("job", value)?;
        if job.id.to_bytes().as_slice() != key {
            return Err(self.corrupt(format!("job {} is stored under another key", job.id)));
        }
        Ok(job)
    }
}

/// The trees the state machine owns, written together by `apply` and
/// replaced together by a snapshot install.
struct SmTrees {
    jobs: sled::Tree,
    sm_meta: sled::Tree,
    queue: sled::Tree,
    active: sled::Tree,
    finished: sled::Tree,
    idempotency: sled::Tree,
    nodes: sled::Tree,
    acl: sled::Tree,
    restore: sled::Tree,
}

impl SmTrees {
    /// Commits a staged change as one sled transaction over every
    /// state-machine tree (see `staged` for when).
    fn transaction(
        &self,
        set: &staged::WriteSet,
    ) -> sled::transaction::TransactionResult<(), StoreError> {
        self.all()[..].transaction(|trees| set.write_in(trees))
    }

    /// Every state-machine tree, in [`layout::SmTree::ALL`] order.
    fn all(&self) -> [&sled::Tree; 9] {
        layout::SmTree::ALL.map(|id| self.tree(id))
    }

    fn tree(&self, id: layout::SmTree) -> &sled::Tree {
        use layout::{sm_tree_of, SmTree};
        sm_tree_of!(self, id)
    }

    /// The trees of [`layout::SmTree::RESTORED`] (what a backup restore
    /// lists and removes: both must use the same list).
    fn restored(&self) -> [&sled::Tree; 7] {
        layout::SmTree::RESTORED.map(|id| self.tree(id))
    }

    /// The trees of [`layout::SmTree::TABLE`] (what a snapshot replaces).
    fn table(&self) -> [&sled::Tree; 8] {
        layout::SmTree::TABLE.map(|id| self.tree(id))
    }
}

/// Counters published after each committed apply (see `applied`).
#[derive(Default)]
struct Counts {
    jobs: AtomicU64,
    queued: AtomicU64,
    finished: AtomicU64,
}

/// The writes that replace the state machine with a snapshot's.
struct PreparedInstall {
    /// Keys currently in the jobs, queue, active, finished, idempotency,
    /// nodes, acl and restore_staging trees (in that order), all deleted.
    old_keys: Vec<Vec<sled::IVec>>,
    jobs: Vec<Job>,
    nodes: Vec<crate::jobs::NodeRecord>,
    tokens: Vec<crate::acl::Token>,
    bootstrap: Option<String>,
    staged: Option<snapshot::StagedRestore>,
    sm: SmMeta,
    sm_encoded: Vec<u8>,
}

impl PreparedInstall {
    /// The install's writes, staged (nothing is written yet): the caller
    /// commits them in its own transaction.
    fn writes(&self, store: &Store) -> Result<staged::WriteSet, StoreError> {
        let tx = store.stage();
        self.stage(&tx).map_err(|e| store.staged_err(e))?;
        Ok(tx.into_writes())
    }

    fn stage(&self, tx: &indexes::SmTx<'_>) -> indexes::Tx<()> {
        indexes::remove_keys(&tx.table(), &self.old_keys);
        for job in &self.jobs {
            tx.put_job(None, job)?;
        }
        for node in &self.nodes {
            tx.put_node(node)?;
        }
        tx.put_acl_state(&self.tokens, self.bootstrap.as_deref())?;
        if let Some(staged) = &self.staged {
            tx.restore.insert(&b"meta"[..], &staged.meta[..]);
            for (seq, data) in &staged.chunks {
                tx.restore.insert(restore::chunk_key(*seq), &data[..]);
            }
        }
        tx.sm_meta.insert(layout::KEY_SM_META, &self.sm_encoded[..]);
        Ok(())
    }
}
