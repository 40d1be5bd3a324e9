//! Schema version 4: the apply journal.
//!
//! From this version on, an apply may leave the key `apply_journal` in the
//! `sm_meta` tree: the write set of the last apply, which open replays if a
//! crash cut that apply short (see `store::staged`). No data changes; the
//! bump exists so that an older binary, which would not replay the journal
//! and could read a half-applied table, refuses the store instead.

use super::{read_schema_version_tx, write_schema_version_tx, Migration};

pub(super) const MIGRATION: Migration = Migration {
    version: 4,
    name: "apply journal",
    up,
};

fn up(db: &sled::Db) -> Result<(), String> {
    let meta = db
        .open_tree("meta")
        .map_err(|e| format!("open tree meta: {e}"))?;
    let result = meta.transaction(|meta| {
        match read_schema_version_tx(meta)? {
            Ok(3) => {}
            Ok(v) => return sled::transaction::abort(format!("expected version 3, found {v}")),
            Err(e) => return sled::transaction::abort(e),
        }
        write_schema_version_tx(meta, 4)?;
        Ok(())
    });
    result.map_err(|e| match e {
        sled::transaction::TransactionError::Abort(reason) => reason,
        sled::transaction::TransactionError::Storage(e) => e.to_string(),
    })
}
