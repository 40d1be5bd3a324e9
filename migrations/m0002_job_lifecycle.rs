//! Schema version 2: jobs that run.
//!
//! Jobs gain their full spec (image, env, resources, timeout, retry,
//! priority, constraints, idempotency key), their attempts and their
//! lifecycle times; `sm_meta` gains queued and finished counts; new trees
//! hold the indexes the scheduler and the executors read, and the node table:
//! - `job_queue`:       (inverted priority u32 BE) ++ job id -> not_before_ms i64 BE
//! - `job_active`:      node u64 BE ++ job id -> attempt u32 BE
//! - `job_finished`:    finished_at_ms u64 BE ++ job id -> ()
//! - `job_idempotency`: key -> job id
//! - `nodes`:           node u64 BE -> bincode `NodeRecord`
//! - `outputs`:         node-local job output (not part of the replicated state)
//!
//! Every version-1 job was QUEUED with no attempts (version 1 ran nothing),
//! so the rewrite is: decode as `JobV1`, upgrade, re-encode, and index it in
//! `job_queue`. The rows are read before the transaction (the store is not
//! open to anyone else yet) and rewritten, with `sm_meta` and the version
//! bump, in ONE transaction.
//!
//! Frozen-format note: the rows are written as `jobs::legacy::JobV2`, the
//! version-2 format (m0003 upgrades them to today's `Job`).

use sled::Transactional;

use super::{read_schema_version_tx, write_schema_version_tx, Migration};
use crate::jobs::legacy::{JobV1, JobV2};
use crate::jobs::JobState;
use crate::store::codec;
use crate::store::layout;

pub(super) const MIGRATION: Migration = Migration {
    version: 2,
    name: "job_lifecycle",
    up,
};

/// Version 1's `sm_meta` record (frozen).
#[derive(serde::Deserialize)]
struct SmMetaV1 {
    applied_index: u64,
    applied_term: u64,
    membership: crate::raft::Membership,
    job_count: u64,
}

fn up(db: &sled::Db) -> Result<(), String> {
    let open = |name: &str| {
        db.open_tree(name)
            .map_err(|e| format!("create tree {name}: {e}"))
    };
    for name in [
        layout::TREE_ACTIVE,
        layout::TREE_FINISHED,
        layout::TREE_IDEMPOTENCY,
        layout::TREE_NODES,
        "outputs",
    ] {
        open(name)?;
    }
    let (jobs, sm_meta, queue, meta) = (
        open("jobs")?,
        open("sm_meta")?,
        open(layout::TREE_QUEUE)?,
        open("meta")?,
    );

    let mut rows = Vec::new();
    for kv in jobs.iter() {
        let (key, value) = kv.map_err(|e| e.to_string())?;
        let job: JobV2 = codec::decode::<JobV1>("version-1 job", &value)?.upgrade();
        if job.id.to_bytes().as_slice() != key.as_ref() {
            return Err(format!("job {} is stored under another key", job.id));
        }
        let queued = job.state == JobState::Queued;
        let encoded = codec::encode("job", &job).map_err(|e| e.to_string())?;
        // Version-1 jobs all had priority 0 (the field did not exist).
        let queue_key = layout::queue_key(0, &job.id);
        rows.push((key, encoded, queued.then_some(queue_key)));
    }
    let sm = match sm_meta
        .get(layout::KEY_SM_META)
        .map_err(|e| e.to_string())?
    {
        Some(bytes) => {
            let v1: SmMetaV1 = codec::decode("version-1 sm_meta", &bytes)?;
            let sm = layout::SmMeta {
                applied_index: v1.applied_index,
                applied_term: v1.applied_term,
                membership: v1.membership,
                job_count: v1.job_count,
                queued_count: rows.iter().filter(|r| r.2.is_some()).count() as u64,
                finished_count: 0,
            };
            Some(codec::encode("sm_meta", &sm).map_err(|e| e.to_string())?)
        }
        None => None,
    };

    let result = (&jobs, &sm_meta, &queue, &meta).transaction(|(jobs, sm_tree, queue, meta)| {
        match read_schema_version_tx(meta)? {
            Ok(1) => {}
            Ok(v) => return sled::transaction::abort(format!("expected version 1, found {v}")),
            Err(e) => return sled::transaction::abort(e),
        }
        for (key, value, queue_key) in &rows {
            jobs.insert(key, &value[..])?;
            if let Some(queue_key) = queue_key {
                queue.insert(&queue_key[..], &0i64.to_be_bytes()[..])?;
            }
        }
        if let Some(sm) = &sm {
            sm_tree.insert(layout::KEY_SM_META, &sm[..])?;
        }
        write_schema_version_tx(meta, 2)?;
        Ok(())
    });
    result.map_err(|e| match e {
        sled::transaction::TransactionError::Abort(reason) => reason,
        sled::transaction::TransactionError::Storage(e) => e.to_string(),
    })
}
