//! Schema version 5: idempotency keys per owner.
//!
//! `job_idempotency` was `key -> job id`, one key space for every token, so
//! a submitter could claim (or probe for) another owner's keys. It becomes
//! `owner ++ 0x00 ++ key -> job id`, the owner being the job's `owner`
//! (empty for a job submitted without a token). The rewrite reads every
//! entry and its job before the transaction (nobody else has the store open
//! yet), then swaps the keys and bumps the version in ONE transaction.
//!
//! Frozen format: jobs are read as `jobs::legacy::JobV5`, the row format
//! of versions 3 to 5; the key layout written here is spelled out below,
//! not borrowed.

use sled::Transactional;

use super::{read_schema_version_tx, write_schema_version_tx, Migration};
use crate::jobs::legacy::JobV5;
use crate::store::codec;

pub(super) const MIGRATION: Migration = Migration {
    version: 5,
    name: "idempotency per owner",
    up,
};

/// The version-5 key (owner ++ 0x00 ++ key).
fn scoped(owner: Option<&str>, key: &[u8]) -> Vec<u8> {
    let owner = owner.unwrap_or_default().as_bytes();
    let mut out = Vec::with_capacity(owner.len() + 1 + key.len());
    out.extend_from_slice(owner);
    out.push(0);
    out.extend_from_slice(key);
    out
}

fn up(db: &sled::Db) -> Result<(), String> {
    let open = |name: &str| {
        db.open_tree(name)
            .map_err(|e| format!("open tree {name}: {e}"))
    };
    let (jobs, keys, meta) = (open("jobs")?, open("job_idempotency")?, open("meta")?);
    let mut moves = Vec::new();
    for kv in keys.iter() {
        let (key, id) = kv.map_err(|e| e.to_string())?;
        let Some(row) = jobs.get(&id).map_err(|e| e.to_string())? else {
            // A key whose job is gone claims nothing: dropped.
            moves.push((key, None));
            continue;
        };
        let job = codec::decode::<JobV5>("version-4 job", &row)?;
        let (_, _, owner) = job.key_fields();
        moves.push((key.clone(), Some((scoped(owner, &key), id))));
    }
    let result = (&keys, &meta).transaction(|(keys, meta)| {
        match read_schema_version_tx(meta)? {
            Ok(4) => {}
            Ok(v) => return sled::transaction::abort(format!("expected version 4, found {v}")),
            Err(e) => return sled::transaction::abort(e),
        }
        for (old, new) in &moves {
            keys.remove(old)?;
            if let Some((key, id)) = new {
                keys.insert(&key[..], id.clone())?;
            }
        }
        write_schema_version_tx(meta, 5)?;
        Ok(())
    });
    result.map_err(|e| match e {
        sled::transaction::TransactionError::Abort(reason) => reason,
        sled::transaction::TransactionError::Storage(e) => e.to_string(),
    })
}
