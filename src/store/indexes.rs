//! Writing the job table's rows together with the secondary indexes kept
//! beside them, in the same staged change.
//!
//! The key layout of each index is `layout`'s.

use super::codec;
use super::layout::{
    acl_hash_key, acl_token_key, active_key, finished_key, idempotency_key, queue_key, CountDelta,
    ACL_BOOTSTRAP_KEY,
};
pub(crate) use super::staged::{SmTx, StagedTree, Tx};
use crate::acl::Token;
use crate::jobs::{Job, JobState, NodeRecord};

/// Deletes `keys[i]` from `trees[i]`: what replacing a table wholesale
/// removes (the keys are listed before the transaction, which cannot scan).
pub(crate) fn remove_keys(trees: &[&StagedTree<'_>], keys: &[Vec<sled::IVec>]) {
    for (tree, keys) in trees.iter().zip(keys) {
        for key in keys {
            tree.remove(key);
        }
    }
}

impl SmTx<'_> {
    /// Writes `new` (replacing `old`, if any) and moves its index entries.
    pub(crate) fn put_job(&self, old: Option<&Job>, new: &Job) -> Tx<CountDelta> {
        let mut delta = CountDelta::default();
        if let Some(old) = old {
            self.remove_index_entries(old);
            delta.add(CountDelta::of(old, -1));
            self.usage.borrow_mut().job(old, -1);
        }
        self.jobs
            .insert(new.id.to_bytes(), codec::encode("job", new)?);
        self.insert_index_entries(new);
        delta.add(CountDelta::of(new, 1));
        self.usage.borrow_mut().job(new, 1);
        Ok(delta)
    }

    /// Deletes a job row, its index entries and its idempotency key.
    pub(crate) fn delete_job(&self, job: &Job) -> CountDelta {
        self.jobs.remove(job.id.to_bytes());
        self.remove_index_entries(job);
        if let Some(key) = &job.spec.idempotency_key {
            self.idempotency
                .remove(idempotency_key(job.owner.as_deref(), key));
        }
        self.usage.borrow_mut().job(job, -1);
        CountDelta::of(job, -1)
    }

    fn insert_index_entries(&self, job: &Job) {
        if job.state == JobState::Queued {
            self.queue.insert(
                queue_key(job.spec.priority, &job.id),
                &job.not_before_ms.to_be_bytes()[..],
            );
        }
        if let Some((node, attempt)) = job.active_on() {
            self.active
                .insert(active_key(node, &job.id), &attempt.to_be_bytes()[..]);
        }
        if let Some(at) = job.finished_at_ms {
            self.finished.insert(finished_key(at, &job.id), &[][..]);
        }
        if let Some(key) = &job.spec.idempotency_key {
            self.idempotency.insert(
                idempotency_key(job.owner.as_deref(), key),
                &job.id.to_bytes()[..],
            );
        }
    }

    fn remove_index_entries(&self, job: &Job) {
        if job.state == JobState::Queued {
            self.queue.remove(queue_key(job.spec.priority, &job.id));
        }
        if let Some((node, _)) = job.active_on() {
            self.active.remove(active_key(node, &job.id));
        }
        if let Some(at) = job.finished_at_ms {
            self.finished.remove(finished_key(at, &job.id));
        }
    }

    /// Writes a node record.
    pub(crate) fn put_node(&self, node: &NodeRecord) -> Tx<()> {
        self.nodes
            .insert(node.id.to_be_bytes(), codec::encode("node", node)?);
        Ok(())
    }

    /// Writes a token and its hash entry.
    pub(crate) fn put_token(&self, token: &Token) -> Tx<()> {
        self.acl.insert(
            acl_token_key(&token.accessor),
            codec::encode("token", token)?,
        );
        self.acl
            .insert(acl_hash_key(&token.secret_hash), token.accessor.as_bytes());
        Ok(())
    }

    /// Writes a whole token table: the tokens and the bootstrap mark.
    pub(crate) fn put_acl_state(&self, tokens: &[Token], bootstrap: Option<&str>) -> Tx<()> {
        for token in tokens {
            self.put_token(token)?;
        }
        if let Some(accessor) = bootstrap {
            self.acl.insert(ACL_BOOTSTRAP_KEY, accessor.as_bytes());
        }
        Ok(())
    }

    /// Deletes a token and its hash entry.
    pub(crate) fn delete_token(&self, token: &Token) {
        self.acl.remove(acl_token_key(&token.accessor));
        self.acl.remove(acl_hash_key(&token.secret_hash));
    }
}
