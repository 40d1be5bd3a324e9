//! Figures counted from the job table and kept in memory only: jobs by
//! state (status pages), what each owner holds (queued and active jobs,
//! output tail bytes, which of the queued jobs are whose) and the table's
//! footprint (the replicated state), which the leader's quota checks read
//! on every submit and the scheduler on every pass. Counted from the table when the store opens and after an
//! install or a restore, moved by every committed apply (each staged job
//! row adds to a [`UsageDelta`]); the table is the truth, and counting it
//! again at open means no stored counter can drift from it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{Store, StoreError};
use crate::jobs::{Job, JobId, JobState};

/// One owner's share of the job table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnerUsage {
    /// Jobs in the table, in any state.
    pub jobs: u64,
    /// Jobs waiting in QUEUED.
    pub queued: u64,
    /// Jobs ASSIGNED or RUNNING.
    pub active: u64,
    /// Output tail bytes its jobs' attempts hold (replicated to every node).
    pub output_bytes: u64,
}

/// A staged change's effect on the figures, published once it committed.
#[derive(Debug, Default)]
pub(crate) struct UsageDelta {
    /// Jobs by state, in [`JobState::ALL`] order.
    by_state: [i64; JobState::ALL.len()],
    /// Per owner: jobs, queued, active, output bytes.
    owners: HashMap<String, [i64; 4]>,
    /// The table's footprint ([`Job::footprint`]).
    state_bytes: i64,
    /// Queued jobs with an owner, added (`Some(owner)`) or gone (`None`),
    /// in the order the change staged them.
    queued: Vec<(JobId, Option<String>)>,
}

impl UsageDelta {
    /// Counts adding (`sign` 1) or removing (-1) `job`.
    pub(crate) fn job(&mut self, job: &Job, sign: i64) {
        self.by_state[job.state.index()] += sign;
        self.state_bytes += sign * job.footprint() as i64;
        let Some(owner) = &job.owner else {
            return;
        };
        if job.state == JobState::Queued {
            self.queued
                .push((job.id, (sign > 0).then(|| owner.clone())));
        }
        let queued = i64::from(job.state == JobState::Queued);
        let active = i64::from(job.active_on().is_some());
        let row = self.owners.entry(owner.clone()).or_default();
        for (sum, d) in row
            .iter_mut()
            .zip([1, queued, active, job.output_bytes() as i64])
        {
            *sum += sign * d;
        }
    }
}

/// The live figures, as of the latest committed apply.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    by_state: [AtomicU64; JobState::ALL.len()],
    owners: Mutex<HashMap<String, OwnerUsage>>,
    state_bytes: AtomicU64,
    /// The owner of each queued job that has one, so a placement pass can
    /// pass over the jobs of owners at their active quota without reading
    /// them (`queued_of`).
    queued_owner: Mutex<HashMap<JobId, String>>,
}

/// `n` moved by `d`, never below zero.
fn add(n: &AtomicU64, d: i64) {
    let _ = n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        Some(n.saturating_add_signed(d))
    });
}

impl Usage {
    /// Jobs in each state.
    pub(crate) fn by_state(&self) -> Vec<(JobState, u64)> {
        JobState::ALL
            .iter()
            .zip(&self.by_state)
            .map(|(state, n)| (*state, n.load(Ordering::Acquire)))
            .collect()
    }

    /// One owner's usage (zero for an owner with no job).
    pub(crate) fn owner(&self, owner: &str) -> OwnerUsage {
        let owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        owners.get(owner).copied().unwrap_or_default()
    }

    /// Every owner's active job count (for a scheduling pass).
    pub(crate) fn active_by_owner(&self) -> HashMap<String, u64> {
        let owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        owners
            .iter()
            .filter(|(_, u)| u.active > 0)
            .map(|(o, u)| (o.clone(), u.active))
            .collect()
    }

    /// The queued jobs of `owners`.
    pub(crate) fn queued_of(&self, owners: &HashSet<String>) -> HashSet<JobId> {
        if owners.is_empty() {
            return HashSet::new();
        }
        let queued = self.queued_owner.lock().unwrap_or_else(|e| e.into_inner());
        queued
            .iter()
            .filter(|(_, owner)| owners.contains(*owner))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The table's footprint in bytes.
    pub(crate) fn state_bytes(&self) -> u64 {
        self.state_bytes.load(Ordering::Acquire)
    }

    /// Moves the figures by a committed change.
    pub(crate) fn publish(&self, delta: UsageDelta) {
        for (counter, d) in self.by_state.iter().zip(delta.by_state) {
            add(counter, d);
        }
        add(&self.state_bytes, delta.state_bytes);
        {
            let mut queued = self.queued_owner.lock().unwrap_or_else(|e| e.into_inner());
            for (id, owner) in delta.queued {
                match owner {
                    Some(owner) => queued.insert(id, owner),
                    None => queued.remove(&id),
                };
            }
        }
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        for (owner, [jobs, queued, active, output]) in delta.owners {
            let usage = owners.entry(owner.clone()).or_default();
            usage.jobs = usage.jobs.saturating_add_signed(jobs);
            usage.queued = usage.queued.saturating_add_signed(queued);
            usage.active = usage.active.saturating_add_signed(active);
            usage.output_bytes = usage.output_bytes.saturating_add_signed(output);
            if usage.jobs == 0 {
                owners.remove(&owner);
            }
        }
    }

    /// Replaces the figures with those of a whole table (a recount).
    pub(crate) fn replace(&self, delta: UsageDelta) {
        self.owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.queued_owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for counter in self.by_state.iter().chain([&self.state_bytes]) {
            counter.store(0, Ordering::Release);
        }
        self.publish(delta);
    }
}

impl Store {
    /// Jobs in each state, as of the latest apply. O(1).
    pub fn jobs_by_state(&self) -> Vec<(JobState, u64)> {
        self.usage.by_state()
    }

    /// Publishes a committed run's figures: its delta, or a count of the
    /// whole table when the run replaced it (a restore).
    pub(super) fn publish_usage(&self, delta: UsageDelta, recount: bool) -> Result<(), StoreError> {
        if recount {
            return self.recount_usage();
        }
        self.usage.publish(delta);
        Ok(())
    }

    /// Counts every figure from the table (O(n): at open, after an
    /// install or a restore).
    pub(super) fn recount_usage(&self) -> Result<(), StoreError> {
        let mut usage = UsageDelta::default();
        for row in self.sm.jobs.iter() {
            let (key, value) = row.map_err(|e| self.sled_err(e))?;
            usage.job(&self.decode_job(&key, &value)?, 1);
        }
        self.usage.replace(usage);
        Ok(())
    }

    /// What `owner`'s jobs hold in the table, as of the latest apply. O(1).
    pub fn owner_usage(&self, owner: &str) -> OwnerUsage {
        self.usage.owner(owner)
    }

    /// The queued jobs of `owners`, as of the latest apply: what a
    /// placement pass skips when those owners are at their active quota.
    pub fn queued_of(&self, owners: &HashSet<String>) -> HashSet<JobId> {
        self.usage.queued_of(owners)
    }

    /// Active (ASSIGNED or RUNNING) jobs per owner that has any.
    pub fn active_by_owner(&self) -> HashMap<String, u64> {
        self.usage.active_by_owner()
    }

    /// The job table's footprint ([`Job::footprint`] summed), what
    /// `quotas.max_state_bytes` bounds. O(1).
    pub fn state_bytes(&self) -> u64 {
        self.usage.state_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{JobId, JobSpec};

    fn job(owner: Option<&str>, n: u128) -> Job {
        let mut job = Job::new(JobId::from_parts(1, n), JobSpec::default(), 0, 1);
        job.owner = owner.map(str::to_string);
        job
    }

    #[test]
    fn follows_each_owner_and_the_whole_table() {
        let usage = Usage::default();
        let mut delta = UsageDelta::default();
        delta.job(&job(Some("alice"), 1), 1);
        delta.job(&job(Some("alice"), 2), 1);
        delta.job(&job(None, 3), 1);
        usage.publish(delta);
        assert_eq!(usage.owner("alice").queued, 2);
        assert_eq!(usage.by_state()[JobState::Queued.index()].1, 3);
        assert_eq!(usage.owner("bob"), OwnerUsage::default());
        let three = usage.state_bytes();
        assert_eq!(
            three,
            3 * job(None, 3).footprint() + 2 * "alice".len() as u64
        );

        // One of alice's jobs is removed: her row shrinks, then goes.
        let mut delta = UsageDelta::default();
        delta.job(&job(Some("alice"), 1), -1);
        usage.publish(delta);
        assert_eq!(usage.owner("alice").jobs, 1);
        let mut delta = UsageDelta::default();
        delta.job(&job(Some("alice"), 2), -1);
        usage.publish(delta);
        assert!(usage.owners.lock().unwrap().is_empty());
        assert_eq!(usage.state_bytes(), job(None, 3).footprint());
    }

    #[test]
    fn knows_whose_queued_jobs_are_whose() {
        let usage = Usage::default();
        let alice: HashSet<String> = ["alice".to_string()].into();
        let mut delta = UsageDelta::default();
        for n in 1..=3 {
            delta.job(&job(Some("alice"), n), 1);
        }
        delta.job(&job(Some("bob"), 4), 1);
        delta.job(&job(None, 5), 1);
        usage.publish(delta);
        let ids = |ns: &[u128]| -> HashSet<JobId> {
            ns.iter().map(|n| JobId::from_parts(1, *n)).collect()
        };
        assert_eq!(usage.queued_of(&alice), ids(&[1, 2, 3]));
        // Job 1 is placed (a put: the old row out, the new one in), job 2
        // deleted: neither is queued any more.
        let mut delta = UsageDelta::default();
        delta.job(&job(Some("alice"), 1), -1);
        let mut placed = job(Some("alice"), 1);
        placed.state = JobState::Assigned;
        delta.job(&placed, 1);
        delta.job(&job(Some("alice"), 2), -1);
        usage.publish(delta);
        assert_eq!(usage.queued_of(&alice), ids(&[3]));
        let both: HashSet<String> = ["alice".to_string(), "bob".to_string()].into();
        assert_eq!(usage.queued_of(&both), ids(&[3, 4]));
        assert!(usage.queued_of(&HashSet::new()).is_empty());
    }
}
