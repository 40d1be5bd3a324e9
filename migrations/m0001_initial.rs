//! Schema version 1: the initial layout.
//!
//! Creates the trees of DESIGN.md's Storage section. Every record starts
//! absent, and absent means empty: no raft state, no snapshot, an empty job
//! table with nothing applied. So this migration writes no records of its
//! own, only the version, and stays valid whatever later versions encode.
//!
//! Layout of version 1:
//! - `raft_log`:   u64 BE index -> bincode `Entry`
//! - `raft_state`: "hard_state" -> bincode `HardState`, "membership" -> bincode `Membership`
//! - `snapshots`:  "latest" -> bincode `{SnapshotMeta, file, len, crc32}`;
//!   the data is the file `data_dir/snapshots/<file>`
//! - `jobs`:       16-byte `JobId` -> bincode `Job`
//! - `sm_meta`:    "state" -> bincode `{applied_index, applied_term, membership, job_count}`
//! - `meta`:       "schema_version" u32 BE, "cluster_id" UTF-8, "node_id" u64 BE

use sled::Transactional;

use super::{read_schema_version_tx, write_schema_version_tx, Migration};

pub(super) const MIGRATION: Migration = Migration {
    version: 1,
    name: "initial",
    up,
};

fn up(db: &sled::Db) -> Result<(), String> {
    // Creating a tree is idempotent, so doing it outside the transaction is
    // safe to repeat after a crash.
    for name in ["raft_log", "raft_state", "snapshots", "jobs", "sm_meta"] {
        db.open_tree(name)
            .map_err(|e| format!("create tree {name}: {e}"))?;
    }
    let meta = db.open_tree("meta").map_err(|e| e.to_string())?;
    let result = (&meta,).transaction(|(meta,)| {
        match read_schema_version_tx(meta)? {
            Ok(0) => {}
            Ok(v) => return sled::transaction::abort(format!("expected version 0, found {v}")),
            Err(e) => return sled::transaction::abort(e),
        }
        write_schema_version_tx(meta, 1)?;
        Ok(())
    });
    result.map_err(|e| match e {
        sled::transaction::TransactionError::Abort(reason) => reason,
        sled::transaction::TransactionError::Storage(e) => e.to_string(),
    })
}
