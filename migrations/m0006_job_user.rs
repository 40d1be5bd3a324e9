//! Schema version 6: a job may choose who it runs as.
//!
//! `JobSpec` gains `user` (`UID[:GID]`, or none: the node's
//! `executor.policy.user`). Every job row is rewritten: decode as
//! `jobs::legacy::JobV5`, upgrade (user: none), re-encode. Rows are read
//! before the transaction (nobody else has the store open yet) and
//! rewritten, with the version bump, in ONE transaction. Indexes are keyed
//! by id, priority, owner and idempotency key, none of which change.
//!
//! Frozen-format note: rows are written with today's `Job`, which IS the
//! version-6 format. The next change to `Job` must first copy that struct
//! into `jobs::legacy` as `JobV6` and make this migration write it.

use sled::Transactional;

use super::{read_schema_version_tx, write_schema_version_tx, Migration};
use crate::jobs::legacy::JobV5;
use crate::store::codec;

pub(super) const MIGRATION: Migration = Migration {
    version: 6,
    name: "job user",
    up,
};

fn up(db: &sled::Db) -> Result<(), String> {
    let open = |name: &str| {
        db.open_tree(name)
            .map_err(|e| format!("open tree {name}: {e}"))
    };
    let (jobs, meta) = (open("jobs")?, open("meta")?);
    let mut rows = Vec::new();
    for kv in jobs.iter() {
        let (key, value) = kv.map_err(|e| e.to_string())?;
        let job = codec::decode::<JobV5>("version-5 job", &value)?.upgrade();
        if job.id.to_bytes().as_slice() != key.as_ref() {
            return Err(format!("job {} is stored under another key", job.id));
        }
        rows.push((key, codec::encode("job", &job).map_err(|e| e.to_string())?));
    }
    let result = (&jobs, &meta).transaction(|(jobs, meta)| {
        match read_schema_version_tx(meta)? {
            Ok(5) => {}
            Ok(v) => return sled::transaction::abort(format!("expected version 5, found {v}")),
            Err(e) => return sled::transaction::abort(e),
        }
        for (key, row) in &rows {
            jobs.insert(key, &row[..])?;
        }
        write_schema_version_tx(meta, 6)?;
        Ok(())
    });
    result.map_err(|e| match e {
        sled::transaction::TransactionError::Abort(reason) => reason,
        sled::transaction::TransactionError::Storage(e) => e.to_string(),
    })
}
