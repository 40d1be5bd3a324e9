//! The leader's admission of new jobs: the queue's bound, the submitting
//! owner's quotas and the cap on the whole replicated state
//! (`scheduler.queue_capacity`, `[quotas]`). Checked before a submit is
//! proposed, against the table as of the latest apply, so a refusal costs
//! no log entry. Submits in flight at the same moment may each pass: a
//! quota can be overshot by at most the proposals in flight, never by an
//! owner's steady stream.
//!
//! The per-owner quotas bind the tenants: jobs of `submitter` tokens.
//! `admin` and `operator` tokens run the cluster and its bulk work (a
//! backfill, a restore), and with ACLs off every caller is `admin`; the
//! queue bound and the state cap bind everyone.

use super::Node;
use crate::acl::Role;
use crate::jobs::{Job, JobSpec};

/// Whether a token of `role` is bound by the per-owner quotas.
pub fn quotas_bind(role: Role) -> bool {
    role == Role::Submitter
}

impl Node {
    /// Why one more job like `spec` from `owner`, a token of `role`, cannot
    /// be taken now, as the submitting user should read it (naming the key
    /// and what to do); `None` when it can.
    pub fn quota_refusal(&self, owner: Option<&str>, role: Role, spec: &JobSpec) -> Option<String> {
        let capacity = self.config.scheduler.queue_capacity;
        if self.store.queued_count() >= capacity {
            return Some(format!(
                "the queue is full ({capacity} jobs waiting, scheduler.queue_capacity); retry later"
            ));
        }
        let quotas = &self.config.quotas;
        let state = self.store.state_bytes();
        if state.saturating_add(Job::footprint_of(spec, owner)) > quotas.max_state_bytes {
            return Some(format!(
                "the cluster's job table is full: it holds {state} bytes of jobs, specs and \
                 output tails, and quotas.max_state_bytes is {}; finished jobs free room as \
                 they are collected (scheduler.retention, scheduler.retain_max): retry later",
                quotas.max_state_bytes
            ));
        }
        let owner = owner.filter(|_| quotas_bind(role))?;
        let usage = self.store.owner_usage(owner);
        if usage.queued >= quotas.max_queued_per_owner {
            return Some(format!(
                "this token has {} jobs waiting, its quota (quotas.max_queued_per_owner); \
                 retry once some have started, or stop some",
                usage.queued
            ));
        }
        if usage.output_bytes >= quotas.max_output_bytes_per_owner {
            return Some(format!(
                "this token's jobs hold {} bytes of output tails in the job table, its quota \
                 (quotas.max_output_bytes_per_owner is {}); finished jobs free it as they are \
                 collected (scheduler.retention, scheduler.retain_max)",
                usage.output_bytes, quotas.max_output_bytes_per_owner
            ));
        }
        None
    }

    /// Whether the jobs of `owner` (a token's accessor) are bound by the
    /// per-owner quotas: its token is a submitter's, or is gone (revoked:
    /// nobody vouches for it any more).
    pub fn owner_is_bound(&self, owner: &str) -> bool {
        match self.token(owner) {
            Ok(Some(token)) => quotas_bind(token.role),
            Ok(None) | Err(_) => true,
        }
    }
}
