//! The job lifecycle: every state transition in one function with an
//! exhaustive match, so the rules (and their fencing) live in one place.
//!
//! ```text
//! QUEUED -> ASSIGNED -> RUNNING -> SUCCEEDED | FAILED | TIMED_OUT | CANCELLED | LOST
//!   ^          |           |
//!   +----------+-----------+  an attempt that ended FAILED, TIMED_OUT or LOST
//!                             with attempts left (after its backoff)
//! ```
//! Pure and deterministic: the state machine calls it while applying, with
//! times taken from the command, so every replica reaches the same row.

use super::{Attempt, EndReason, Job, JobState};
use crate::raft::NodeId;

/// Most attempts one job records, drained re-runs included: bounds a row.
pub const MAX_RECORDED_ATTEMPTS: usize = 120;

/// Something that happened to a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The leader placed attempt `attempt` on `node`.
    Assign {
        /// Must be the next attempt number.
        attempt: u32,
        /// Where it runs.
        node: NodeId,
        /// Leader's clock.
        at_ms: i64,
    },
    /// The node started the attempt's container.
    Start {
        /// The attempt the node runs (fencing token).
        attempt: u32,
        /// The reporting node.
        node: NodeId,
        /// Reporter's clock.
        at_ms: i64,
    },
    /// The attempt ended.
    Finish {
        /// The attempt that ended (fencing token).
        attempt: u32,
        /// The reporting node (or the leader, for NODE_LOST).
        node: NodeId,
        /// When it ended.
        at_ms: i64,
        /// The container's exit code, if it exited.
        exit_code: Option<i64>,
        /// Why it ended.
        reason: EndReason,
        /// Human explanation for platform failures.
        message: String,
        /// The last bytes of output.
        output_tail: Vec<u8>,
    },
    /// A client asked to stop the job.
    Cancel {
        /// Leader's clock.
        at_ms: i64,
    },
}

/// Why an event was not applied. Not an error of the cluster: a stale
/// report from a node that was cut off is expected and simply refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The report is for an attempt (or node) that is no longer current.
    #[error("stale report: attempt {attempt} from node {node}, but the job is {state} at attempt {current}")]
    Stale {
        /// The attempt reported.
        attempt: u32,
        /// The reporting node.
        node: NodeId,
        /// The job's state.
        state: JobState,
        /// The job's current attempt number (0 = none).
        current: u32,
    },
    /// The event does not apply in this state (e.g. assigning a running job).
    #[error("cannot {event} a job in state {state}")]
    WrongState {
        /// What was attempted.
        event: &'static str,
        /// The job's state.
        state: JobState,
    },
}

/// What a successful [`apply`] changed, for the caller's indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    /// The row changed.
    Yes,
    /// Nothing to do (e.g. cancelling a finished job): idempotent.
    No,
}

/// Applies `event` to `job`. On `Err` the job is untouched.
pub fn apply(job: &mut Job, event: Event) -> Result<Changed, Refused> {
    let current = job.current_attempt().map_or(0, |a| a.number);
    let before = job.state;
    let result = match event {
        Event::Assign {
            attempt,
            node,
            at_ms,
        } => {
            if job.state != JobState::Queued {
                return Err(Refused::WrongState {
                    event: "assign",
                    state: job.state,
                });
            }
            if attempt != current + 1 || job.attempts.len() >= MAX_RECORDED_ATTEMPTS {
                return Err(stale(job, attempt, node));
            }
            job.attempts.push(Attempt {
                number: attempt,
                node,
                assigned_at_ms: at_ms,
                started_at_ms: None,
                finished_at_ms: None,
                exit_code: None,
                reason: None,
                message: String::new(),
                output_tail: Vec::new(),
            });
            job.state = JobState::Assigned;
            Changed::Yes
        }
        Event::Start {
            attempt,
            node,
            at_ms,
        } => {
            check_current(job, attempt, node)?;
            match job.state {
                JobState::Assigned => {
                    if let Some(a) = job.attempts.last_mut() {
                        a.started_at_ms = Some(at_ms);
                    }
                    job.state = JobState::Running;
                    Changed::Yes
                }
                JobState::Running => Changed::No,
                _ => return Err(stale(job, attempt, node)),
            }
        }
        Event::Finish {
            attempt,
            node,
            at_ms,
            exit_code,
            reason,
            message,
            output_tail,
        } => {
            check_current(job, attempt, node)?;
            if !matches!(job.state, JobState::Assigned | JobState::Running) {
                return Err(stale(job, attempt, node));
            }
            end_attempt(job, at_ms, exit_code, reason, message, output_tail);
            Changed::Yes
        }
        Event::Cancel { at_ms } => match job.state {
            JobState::Queued => {
                job.state = JobState::Cancelled;
                job.finished_at_ms = Some(at_ms);
                Changed::Yes
            }
            JobState::Assigned | JobState::Running => {
                end_attempt(
                    job,
                    at_ms,
                    None,
                    EndReason::Cancelled,
                    "stopped on request".into(),
                    Vec::new(),
                );
                Changed::Yes
            }
            JobState::Succeeded
            | JobState::Failed
            | JobState::TimedOut
            | JobState::Cancelled
            | JobState::Lost => Changed::No,
        },
    };
    // Postconditions every transition keeps.
    debug_assert!(job.state.is_terminal() == job.finished_at_ms.is_some());
    debug_assert!(
        !matches!(job.state, JobState::Assigned | JobState::Running)
            || job.current_attempt().is_some_and(Attempt::is_active)
    );
    debug_assert!(result == Changed::Yes || job.state == before);
    Ok(result)
}

fn stale(job: &Job, attempt: u32, node: NodeId) -> Refused {
    Refused::Stale {
        attempt,
        node,
        state: job.state,
        current: job.current_attempt().map_or(0, |a| a.number),
    }
}

fn check_current(job: &Job, attempt: u32, node: NodeId) -> Result<(), Refused> {
    match job.current_attempt() {
        Some(a) if a.number == attempt && a.node == node => Ok(()),
        _ => Err(stale(job, attempt, node)),
    }
}

/// Records the end of the current attempt and decides the job's next state:
/// a retry (QUEUED after the backoff) or the terminal state of the reason.
fn end_attempt(
    job: &mut Job,
    at_ms: i64,
    exit_code: Option<i64>,
    reason: EndReason,
    message: String,
    output_tail: Vec<u8>,
) {
    let final_state = reason.final_state();
    let retriable = matches!(
        final_state,
        JobState::Failed | JobState::TimedOut | JobState::Lost
    );
    let drained = reason == EndReason::Drained;
    if let Some(a) = job.attempts.last_mut() {
        a.finished_at_ms = Some(at_ms);
        a.exit_code = exit_code;
        a.reason = Some(reason);
        a.message = message;
        a.output_tail = output_tail;
    }
    let used = job.attempts.len();
    // A drain is the operator's doing, not the job's: a drained attempt does
    // not count against the job's attempts, and the job is re-run even when
    // its retries are used up (within the bound on recorded attempts).
    let counted = job
        .attempts
        .iter()
        .filter(|a| a.reason != Some(EndReason::Drained))
        .count();
    let attempts_left = counted < job.spec.retry.max_attempts as usize;
    if retriable && (attempts_left || drained) && used < MAX_RECORDED_ATTEMPTS {
        let next = u32::try_from(used + 1).unwrap_or(u32::MAX);
        let wait = if drained {
            0
        } else {
            job.spec.retry.backoff_before(next)
        };
        job.state = JobState::Queued;
        job.not_before_ms = at_ms.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX));
    } else {
        job.state = final_state;
        job.finished_at_ms = Some(at_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{JobId, JobSpec, RetryPolicy};

    fn job(max_attempts: u32) -> Job {
        let spec = JobSpec {
            retry: RetryPolicy {
                max_attempts,
                initial_backoff_ms: 1000,
                max_backoff_ms: 1500,
            },
            ..JobSpec::shell("true")
        };
        Job::new(JobId::from_parts(1, 1), spec, 0, 1)
    }

    fn finish(attempt: u32, node: NodeId, at_ms: i64, code: i64) -> Event {
        Event::Finish {
            attempt,
            node,
            at_ms,
            exit_code: Some(code),
            reason: EndReason::Exited { code },
            message: String::new(),
            output_tail: b"out".to_vec(),
        }
    }

    #[test]
    fn runs_to_success() {
        let mut j = job(1);
        apply(
            &mut j,
            Event::Assign {
                attempt: 1,
                node: 2,
                at_ms: 10,
            },
        )
        .unwrap();
        assert_eq!(j.state, JobState::Assigned);
        apply(
            &mut j,
            Event::Start {
                attempt: 1,
                node: 2,
                at_ms: 11,
            },
        )
        .unwrap();
        assert_eq!(j.state, JobState::Running);
        apply(&mut j, finish(1, 2, 12, 0)).unwrap();
        assert_eq!(j.state, JobState::Succeeded);
        assert_eq!(j.finished_at_ms, Some(12));
        assert_eq!(j.attempts[0].output_tail, b"out");
    }

    #[test]
    fn retries_with_backoff_then_fails_for_good() {
        let mut j = job(3);
        for n in 1..=3u32 {
            let at = i64::from(n) * 10_000;
            assert_eq!(j.state, JobState::Queued);
            apply(
                &mut j,
                Event::Assign {
                    attempt: n,
                    node: 1,
                    at_ms: at,
                },
            )
            .unwrap();
            apply(&mut j, finish(n, 1, at + 5, 7)).unwrap();
            if n < 3 {
                assert_eq!(j.state, JobState::Queued);
                let wait = if n == 1 { 1000 } else { 1500 };
                assert_eq!(j.not_before_ms, at + 5 + wait);
            }
        }
        assert_eq!(j.state, JobState::Failed);
        assert_eq!(j.attempts.len(), 3);
    }

    #[test]
    fn stale_reports_are_fenced() {
        let mut j = job(2);
        apply(
            &mut j,
            Event::Assign {
                attempt: 1,
                node: 1,
                at_ms: 0,
            },
        )
        .unwrap();
        // Wrong node, wrong attempt, skipped attempt number.
        assert!(matches!(
            apply(&mut j, finish(1, 2, 1, 0)),
            Err(Refused::Stale { .. })
        ));
        assert!(matches!(
            apply(&mut j, finish(2, 1, 1, 0)),
            Err(Refused::Stale { .. })
        ));
        // Attempt 1 lost, attempt 2 placed elsewhere: attempt 1's late
        // success must not overwrite it.
        let lost = Event::Finish {
            attempt: 1,
            node: 1,
            at_ms: 2,
            exit_code: None,
            reason: EndReason::NodeLost,
            message: String::new(),
            output_tail: Vec::new(),
        };
        apply(&mut j, lost).unwrap();
        assert_eq!(j.state, JobState::Queued);
        apply(
            &mut j,
            Event::Assign {
                attempt: 2,
                node: 3,
                at_ms: 3,
            },
        )
        .unwrap();
        let before = j.clone();
        assert!(apply(&mut j, finish(1, 1, 4, 0)).is_err());
        assert_eq!(j, before);
        assert!(matches!(
            apply(
                &mut j,
                Event::Assign {
                    attempt: 2,
                    node: 3,
                    at_ms: 3
                }
            ),
            Err(Refused::WrongState { .. })
        ));
    }

    #[test]
    fn cancel_is_idempotent_in_every_state() {
        let mut queued = job(1);
        assert_eq!(
            apply(&mut queued, Event::Cancel { at_ms: 1 }),
            Ok(Changed::Yes)
        );
        assert_eq!(queued.state, JobState::Cancelled);
        assert_eq!(
            apply(&mut queued, Event::Cancel { at_ms: 2 }),
            Ok(Changed::No)
        );

        let mut running = job(3);
        apply(
            &mut running,
            Event::Assign {
                attempt: 1,
                node: 1,
                at_ms: 0,
            },
        )
        .unwrap();
        apply(
            &mut running,
            Event::Start {
                attempt: 1,
                node: 1,
                at_ms: 0,
            },
        )
        .unwrap();
        apply(&mut running, Event::Cancel { at_ms: 5 }).unwrap();
        // Cancelled is final even with attempts left.
        assert_eq!(running.state, JobState::Cancelled);
        assert_eq!(running.attempts[0].reason, Some(EndReason::Cancelled));
        // The node's late report of the killed container is refused.
        assert!(apply(&mut running, finish(1, 1, 6, 137)).is_err());

        let mut done = job(1);
        apply(
            &mut done,
            Event::Assign {
                attempt: 1,
                node: 1,
                at_ms: 0,
            },
        )
        .unwrap();
        apply(&mut done, finish(1, 1, 1, 0)).unwrap();
        assert_eq!(
            apply(&mut done, Event::Cancel { at_ms: 2 }),
            Ok(Changed::No)
        );
        assert_eq!(done.state, JobState::Succeeded);
    }

    #[test]
    fn drained_attempts_rerun_even_without_retries_left() {
        let mut j = job(1);
        apply(
            &mut j,
            Event::Assign {
                attempt: 1,
                node: 1,
                at_ms: 0,
            },
        )
        .unwrap();
        let drained = Event::Finish {
            attempt: 1,
            node: 1,
            at_ms: 9,
            exit_code: None,
            reason: EndReason::Drained,
            message: String::new(),
            output_tail: Vec::new(),
        };
        apply(&mut j, drained).unwrap();
        assert_eq!(j.state, JobState::Queued);
        assert_eq!(j.not_before_ms, 9);
        // The drained run did not use up the job's one attempt: a failure of
        // attempt 2 is final (no retry), but it ran.
        apply(
            &mut j,
            Event::Assign {
                attempt: 2,
                node: 2,
                at_ms: 10,
            },
        )
        .unwrap();
        apply(&mut j, finish(2, 2, 11, 1)).unwrap();
        assert_eq!(j.state, JobState::Failed);

        // With two attempts, a drain then a failure still leaves one retry.
        let mut k = job(2);
        apply(
            &mut k,
            Event::Assign {
                attempt: 1,
                node: 1,
                at_ms: 0,
            },
        )
        .unwrap();
        let drained = Event::Finish {
            attempt: 1,
            node: 1,
            at_ms: 1,
            exit_code: None,
            reason: EndReason::Drained,
            message: String::new(),
            output_tail: Vec::new(),
        };
        apply(&mut k, drained).unwrap();
        apply(
            &mut k,
            Event::Assign {
                attempt: 2,
                node: 2,
                at_ms: 2,
            },
        )
        .unwrap();
        apply(&mut k, finish(2, 2, 3, 1)).unwrap();
        assert_eq!(k.state, JobState::Queued, "one retry left after the drain");
    }
}
