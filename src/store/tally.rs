//! Jobs by state, for status pages: counted once when the store opens (a
//! scan of the table), after a snapshot install or a restore, and moved by
//! every committed apply. Kept in memory only: the table is the truth, and
//! recounting it at open means no stored counter can drift from it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::layout::CountDelta;
use super::usage::UsageDelta;
use super::{Store, StoreError};
use crate::jobs::JobState;

/// One counter per [`JobState::ALL`] entry.
#[derive(Default)]
pub(super) struct StateCounts([AtomicU64; JobState::ALL.len()]);

/// What an apply run did to the counts.
pub(super) enum Tally {
    /// Moved them by this much (per [`JobState::ALL`] entry).
    By([i64; JobState::ALL.len()]),
    /// Replaced the table (a restore): count again.
    Recount,
}

impl Tally {
    pub(super) fn add(&mut self, delta: &CountDelta) {
        if let Tally::By(by) = self {
            for (sum, d) in by.iter_mut().zip(delta.by_state) {
                *sum += d;
            }
        }
    }
}

impl Store {
    /// Jobs in each state, as of the latest apply. O(1).
    pub fn jobs_by_state(&self) -> Vec<(JobState, u64)> {
        JobState::ALL
            .iter()
            .zip(&self.counts.by_state.0)
            .map(|(state, n)| (*state, n.load(Ordering::Acquire)))
            .collect()
    }

    /// Applies a committed run's [`Tally`] and its usage change.
    pub(super) fn publish_tally(&self, tally: Tally, usage: UsageDelta) -> Result<(), StoreError> {
        match tally {
            Tally::By(by) => {
                self.usage.publish(usage);
                for (counter, d) in self.counts.by_state.0.iter().zip(by) {
                    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        Some(n.saturating_add_signed(d))
                    });
                }
                Ok(())
            }
            Tally::Recount => self.recount_states(),
        }
    }

    /// Counts the table's jobs by state, and its usage (O(n): at open,
    /// after an install).
    pub(super) fn recount_states(&self) -> Result<(), StoreError> {
        let mut counts = [0u64; JobState::ALL.len()];
        let mut usage = UsageDelta::default();
        for row in self.sm.jobs.iter() {
            let (key, value) = row.map_err(|e| self.sled_err(e))?;
            let job = self.decode_job(&key, &value)?;
            counts[job.state.index()] += 1;
            usage.job(&job, 1);
        }
        self.usage.replace(usage);
        for (counter, n) in self.counts.by_state.0.iter().zip(counts) {
            counter.store(n, Ordering::Release);
        }
        Ok(())
    }
}
