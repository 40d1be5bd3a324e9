//! Schema version 3: access control.
//!
//! - A new `acl` tree holds the tokens (see `store::indexes`): `t/` ++
//!   accessor -> bincode `acl::Token`, `h/` ++ sha256(secret) -> accessor,
//!   `bootstrap` -> accessor of the bootstrap token.
//! - Jobs gain `owner` (the accessor of the token that submitted them).
//!   Every version-2 job was submitted without a token, so the rewrite is:
//!   decode as `JobV2`, upgrade (owner: none), re-encode. Rows are read
//!   before the transaction (nobody else has the store open yet) and
//!   rewritten, with the version bump, in ONE transaction.
//!
//! Frozen-format note: rows are written as `jobs::legacy::JobV5`, the row
//! format of versions 3 to 5 (m0006 upgrades them to today's `Job`).

use sled::Transactional;

use super::{read_schema_version_tx, write_schema_version_tx, Migration};
use crate::jobs::legacy::JobV2;
use crate::store::codec;
use crate::store::layout;

pub(super) const MIGRATION: Migration = Migration {
    version: 3,
    name: "acl",
    up,
};

fn up(db: &sled::Db) -> Result<(), String> {
    let open = |name: &str| {
        db.open_tree(name)
            .map_err(|e| format!("create tree {name}: {e}"))
    };
    open(layout::TREE_ACL)?;
    let (jobs, meta) = (open("jobs")?, open("meta")?);

    let mut rows = Vec::new();
    for kv in jobs.iter() {
        let (key, value) = kv.map_err(|e| e.to_string())?;
        let job = codec::decode::<JobV2>("version-2 job", &value)?.upgrade();
        let (id, _, _) = job.key_fields();
        if id.to_bytes().as_slice() != key.as_ref() {
            return Err(format!("job {id} is stored under another key"));
        }
        rows.push((key, codec::encode("job", &job).map_err(|e| e.to_string())?));
    }

    let result = (&jobs, &meta).transaction(|(jobs, meta)| {
        match read_schema_version_tx(meta)? {
            Ok(2) => {}
            Ok(v) => return sled::transaction::abort(format!("expected version 2, found {v}")),
            Err(e) => return sled::transaction::abort(e),
        }
        for (key, value) in &rows {
            jobs.insert(key, &value[..])?;
        }
        write_schema_version_tx(meta, 3)?;
        Ok(())
    });
    result.map_err(|e| match e {
        sled::transaction::TransactionError::Abort(reason) => reason,
        sled::transaction::TransactionError::Storage(e) => e.to_string(),
    })
}
