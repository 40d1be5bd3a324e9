//! The job event log: every change the state machine makes to the job
//! table, as events in log order, held in memory so clients can watch jobs
//! change instead of polling.
//!
//! The Raft loop records the events of each applied batch right after
//! [`Store::apply`](crate::store::Store::apply) ([`EventLog::record`]). A
//! watcher subscribes from a log index ([`EventLog::subscribe`]) and reads
//! every event of the entries after it, first from the ring, then as they
//! are recorded: one cursor over one ring, so there is no hand-over between
//! a replay and a live feed where an event could be lost or repeated.
//!
//! Contract:
//! - Events of one entry share its log index and are recorded (and handed
//!   to watchers) together, in the order the entry produced them. Indexes
//!   never go down.
//! - The ring holds at most [`EVENT_LOG_CAPACITY`] events. It knows every
//!   event of the entries after its *floor*: the applied index when the node
//!   started, raised by a snapshot install ([`EventLog::reset`]: the entries
//!   the snapshot covers were never applied here one by one) and by eviction
//!   of the oldest events. A subscription from below the floor, or one that
//!   falls so far behind that its position is evicted, fails with
//!   [`WatchError::Compacted`]: events are never skipped silently.
//! - Every replica derives the same events from the same entries (the
//!   times come from the commands), so a watch may move between nodes and
//!   resume from the last index it completed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::jobs::Applied;
use crate::jobs::{Job, JobId, JobState};
use crate::raft::{Index, NodeId};

/// Events the ring holds: at about 80 bytes each, 5 MiB per node; enough
/// for a watcher to reconnect after minutes of a busy cluster.
pub const EVENT_LOG_CAPACITY: usize = 65_536;
/// Subscriptions open at once on one node; more are refused (each costs a
/// wake-up and a read of the ring on every apply).
pub const MAX_WATCHERS: usize = 1024;
/// Events a subscription takes per read of the ring (plus the rest of the
/// last entry's events), so a watcher far behind holds the lock briefly.
const READ_BATCH: usize = 256;

/// What happened to the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A submission created it (state QUEUED).
    Created,
    /// Its state or attempt changed: placed, started, ended, retried,
    /// cancelled, lost.
    Updated,
    /// Garbage collection removed it (it had finished).
    Deleted,
}

impl EventKind {
    /// The name used in the API and CLI (`CREATED`, `UPDATED`, `DELETED`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "CREATED",
            EventKind::Updated => "UPDATED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One change to one job, as a watcher sees it: the job's state after the
/// entry at `index` was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobEvent {
    /// Log index of the entry that made the change.
    pub index: Index,
    /// Created, updated or deleted.
    pub kind: EventKind,
    /// The job.
    pub job: JobId,
    /// The job's state after the change; `None` for a deleted job.
    pub state: Option<JobState>,
    /// The current attempt's number, 0 if none (or deleted).
    pub attempt: u32,
    /// The node of the current attempt, 0 if none (or deleted).
    pub node: NodeId,
    /// Why the current attempt ended (`EXIT_CODE`, `NODE_LOST`, …), if it
    /// did: tells a retry (QUEUED again) from a first placement.
    pub reason: Option<&'static str>,
    /// When the change happened (Unix ms), from the command, so every
    /// replica agrees; 0 for a deletion (collection carries no time).
    pub at_ms: i64,
    /// The job's owner (accessor id), so a submitter's watch shows only its
    /// own jobs; `None` without one, and for a deletion.
    pub owner: Option<String>,
}

impl JobEvent {
    /// The event of `job` as it is after the entry at `index`.
    fn of_job(index: Index, kind: EventKind, job: &Job) -> JobEvent {
        let attempt = job.current_attempt();
        JobEvent {
            index,
            kind,
            job: job.id,
            state: Some(job.state),
            attempt: attempt.map_or(0, |a| a.number),
            node: attempt.map_or(0, |a| a.node),
            reason: attempt.and_then(|a| a.reason.as_ref()).map(|r| r.as_str()),
            at_ms: changed_at(job),
            owner: job.owner.clone(),
        }
    }

    /// The deletion of job `id` by the entry at `index`.
    fn deleted(index: Index, id: JobId) -> JobEvent {
        JobEvent {
            index,
            kind: EventKind::Deleted,
            job: id,
            state: None,
            attempt: 0,
            node: 0,
            reason: None,
            at_ms: 0,
            owner: None,
        }
    }
}

/// When the job reached its current state, from the times the commands
/// recorded in it.
fn changed_at(job: &Job) -> i64 {
    let attempt = job.current_attempt();
    let time = match job.state {
        // A retry is queued when its previous attempt ended.
        JobState::Queued => attempt.and_then(|a| a.finished_at_ms),
        JobState::Assigned => attempt.map(|a| a.assigned_at_ms),
        JobState::Running => attempt.and_then(|a| a.started_at_ms),
        JobState::Succeeded
        | JobState::Failed
        | JobState::TimedOut
        | JobState::Cancelled
        | JobState::Lost => job.finished_at_ms,
    };
    time.unwrap_or(job.submitted_at_ms)
}

/// Appends the events of the entry at `index` (applied as `applied`) to
/// `out`. Only real changes make events: a duplicate submission, a no-op
/// lifecycle event or a refused one make none.
pub fn events_of(index: Index, applied: &Applied, out: &mut Vec<JobEvent>) {
    match applied {
        Applied::Job(job) => out.push(JobEvent::of_job(index, EventKind::Created, job)),
        Applied::Updated(job) => out.push(JobEvent::of_job(index, EventKind::Updated, job)),
        Applied::Assigned { jobs, .. } | Applied::NodeLost { jobs, .. } => out.extend(
            jobs.iter()
                .map(|job| JobEvent::of_job(index, EventKind::Updated, job)),
        ),
        Applied::Collected(ids) => out.extend(ids.iter().map(|id| JobEvent::deleted(index, *id))),
        Applied::DuplicateJob(_)
        | Applied::Unchanged(_)
        | Applied::Refused { .. }
        | Applied::Node(_)
        | Applied::Noop
        | Applied::ConfChange(_)
        | Applied::Rejected { .. }
        | Applied::Token(_)
        | Applied::Revoked(_)
        // A restore replaces everything: the raft loop resets the log.
        | Applied::Restored { .. }
        | Applied::AlreadyApplied => {}
    }
}

/// Why a watch cannot go on (or start).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The events after `from` are no longer all known here.
    #[error("this node no longer holds the job events after index {from} (it holds those after index {floor}: it restarted, installed a snapshot, or the watch fell too far behind); list the jobs again and watch from the list's index")]
    Compacted {
        /// Where the watch wanted to read from.
        from: Index,
        /// The events after this index are known.
        floor: Index,
    },
    /// [`MAX_WATCHERS`] subscriptions are open.
    #[error("this node serves {MAX_WATCHERS} watches already; retry later or watch through another node")]
    TooManyWatchers,
    /// The Raft loop stopped: no more events will come from this node.
    #[error(
        "this node stopped applying the log (shutting down or failed); watch through another node"
    )]
    Closed,
}

/// The ring and its bounds, under one lock.
struct Ring {
    events: VecDeque<JobEvent>,
    /// Every event of an entry above this index is in `events`.
    floor: Index,
    /// Highest index recorded (with or without events): "now".
    head: Index,
    /// Set when the Raft loop stops.
    closed: bool,
}

/// The node's job event log. Shared by the Raft loop (the only writer) and
/// the API (subscriptions).
pub struct EventLog {
    ring: Mutex<Ring>,
    /// Bumped on every change of the ring: what wakes subscriptions.
    wake: watch::Sender<u64>,
    watchers: AtomicUsize,
    capacity: usize,
}

impl EventLog {
    /// An empty log that knows every event after `applied` (the node's
    /// applied index at start: earlier ones were applied by a previous
    /// process), holding at most `capacity` events.
    pub fn new(applied: Index, capacity: usize) -> EventLog {
        EventLog {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                floor: applied,
                head: applied,
                closed: false,
            }),
            wake: watch::channel(0).0,
            watchers: AtomicUsize::new(0),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // Every update leaves the ring consistent: a poisoned lock (a panic
        // elsewhere while holding it) leaves nothing half done.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.wake.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Records the events of entries applied up to `applied`, in log order.
    /// Called by the Raft loop after every apply, with the events of every
    /// entry of the batch (possibly none: `applied` moves "now").
    pub fn record(&self, applied: Index, events: Vec<JobEvent>) {
        {
            let mut ring = self.lock();
            let mut last = ring.head;
            for event in events {
                if event.index <= ring.head || event.index < last || event.index > applied {
                    // A contract violation: recording it would break the
                    // order watchers rely on.
                    debug_assert!(false, "event {event:?} out of order (head {})", ring.head);
                    tracing::error!(
                        index = event.index,
                        head = ring.head,
                        "job event out of order; dropped"
                    );
                    continue;
                }
                last = event.index;
                ring.events.push_back(event);
            }
            while ring.events.len() > self.capacity {
                if let Some(oldest) = ring.events.pop_front() {
                    ring.floor = ring.floor.max(oldest.index);
                }
            }
            ring.head = ring.head.max(applied);
        }
        self.notify();
    }

    /// Forgets every event: the node installed a snapshot at `index`, so
    /// the changes of the entries it covers are unknown here. Watches from
    /// below `index` then fail with [`WatchError::Compacted`].
    pub fn reset(&self, index: Index) {
        {
            let mut ring = self.lock();
            ring.events.clear();
            ring.floor = ring.floor.max(index);
            ring.head = ring.head.max(index);
        }
        self.notify();
    }

    /// Ends every subscription with [`WatchError::Closed`] once it has read
    /// what is recorded: the Raft loop stopped.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify();
    }

    /// (floor, head): events of entries after `floor` are known, and
    /// `head` is the last index recorded.
    pub fn bounds(&self) -> (Index, Index) {
        let ring = self.lock();
        (ring.floor, ring.head)
    }

    /// A subscription to the events of every entry after `from` (`None`:
    /// after the last index recorded, i.e. from now). Fails if those events
    /// are not all known here, or too many watches are open.
    pub fn subscribe(self: &Arc<Self>, from: Option<Index>) -> Result<Subscription, WatchError> {
        if self.watchers.fetch_add(1, Ordering::AcqRel) >= MAX_WATCHERS {
            self.watchers.fetch_sub(1, Ordering::AcqRel);
            return Err(WatchError::TooManyWatchers);
        }
        // From here on, Drop gives the slot back.
        let mut sub = Subscription {
            log: self.clone(),
            wake: self.wake.subscribe(),
            cursor: 0,
        };
        let ring = self.lock();
        sub.cursor = match from {
            Some(from) if from < ring.floor => {
                return Err(WatchError::Compacted {
                    from,
                    floor: ring.floor,
                })
            }
            Some(from) => from,
            None => ring.head,
        };
        drop(ring);
        Ok(sub)
    }
}

/// One watcher's position in the [`EventLog`]. Dropping it ends the watch.
pub struct Subscription {
    log: Arc<EventLog>,
    wake: watch::Receiver<u64>,
    /// Every event of the entries up to here was handed out.
    cursor: Index,
}

impl Subscription {
    /// The index up to which every event was handed out.
    pub fn cursor(&self) -> Index {
        self.cursor
    }

    /// The next events after the cursor, waiting for them if there are none
    /// yet: at least one, all of the events of each entry included, in log
    /// order. Fails if they were evicted meanwhile or the log closed.
    pub async fn next(&mut self) -> Result<Vec<JobEvent>, WatchError> {
        loop {
            // Mark the current version seen before reading: a record after
            // this point wakes the wait below.
            self.wake.borrow_and_update();
            if let Some(batch) = self.try_next()? {
                return Ok(batch);
            }
            if self.wake.changed().await.is_err() {
                return Err(WatchError::Closed);
            }
        }
    }

    /// The events after the cursor that are recorded now, if any.
    fn try_next(&mut self) -> Result<Option<Vec<JobEvent>>, WatchError> {
        let ring = self.log.lock();
        if self.cursor < ring.floor {
            return Err(WatchError::Compacted {
                from: self.cursor,
                floor: ring.floor,
            });
        }
        let start = ring.events.partition_point(|e| e.index <= self.cursor);
        let Some(first) = ring.events.get(start) else {
            return match ring.closed {
                true => Err(WatchError::Closed),
                false => Ok(None),
            };
        };
        let mut batch = Vec::with_capacity(READ_BATCH.min(ring.events.len() - start));
        let mut last = first.index;
        for event in ring.events.range(start..) {
            if batch.len() >= READ_BATCH && event.index != last {
                break;
            }
            last = event.index;
            batch.push(event.clone());
        }
        self.cursor = last;
        Ok(Some(batch))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.log.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> JobId {
        JobId::from_bytes([n; 16])
    }

    fn ev(index: Index, job: u8) -> JobEvent {
        JobEvent {
            index,
            kind: EventKind::Updated,
            job: id(job),
            state: Some(JobState::Queued),
            attempt: 0,
            node: 0,
            reason: None,
            at_ms: 0,
            owner: None,
        }
    }

    fn now<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
        use std::task::{Context, Poll, Waker};
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[test]
    fn only_real_changes_make_events() {
        use crate::jobs::{lifecycle, EndReason, JobSpec};
        let mut job = Job::new(id(1), JobSpec::default(), 100, 5);
        let mut out = Vec::new();
        events_of(5, &Applied::Job(job.clone()), &mut out);
        events_of(6, &Applied::DuplicateJob(job.clone()), &mut out);
        let assign = lifecycle::Event::Assign {
            attempt: 1,
            node: 3,
            at_ms: 200,
        };
        assert_eq!(
            lifecycle::apply(&mut job, assign),
            Ok(lifecycle::Changed::Yes)
        );
        let assigned = Applied::Assigned {
            placed: 1,
            refused: 0,
            jobs: vec![job.clone()],
        };
        events_of(7, &assigned, &mut out);
        let cancel = lifecycle::Event::Cancel { at_ms: 300 };
        assert_eq!(
            lifecycle::apply(&mut job, cancel),
            Ok(lifecycle::Changed::Yes)
        );
        events_of(8, &Applied::Updated(job.clone()), &mut out);
        events_of(9, &Applied::Unchanged(job.clone()), &mut out);
        events_of(10, &Applied::Collected(vec![id(1)]), &mut out);
        events_of(11, &Applied::Noop, &mut out);
        let brief: Vec<_> = out
            .iter()
            .map(|e| {
                (
                    e.index, e.kind, e.state, e.attempt, e.node, e.reason, e.at_ms,
                )
            })
            .collect();
        let cancelled = Some(EndReason::Cancelled.as_str());
        assert_eq!(
            brief,
            vec![
                (
                    5,
                    EventKind::Created,
                    Some(JobState::Queued),
                    0,
                    0,
                    None,
                    100
                ),
                (
                    7,
                    EventKind::Updated,
                    Some(JobState::Assigned),
                    1,
                    3,
                    None,
                    200
                ),
                (
                    8,
                    EventKind::Updated,
                    Some(JobState::Cancelled),
                    1,
                    3,
                    cancelled,
                    300
                ),
                (10, EventKind::Deleted, None, 0, 0, None, 0),
            ]
        );
    }

    #[test]
    fn replays_then_follows_without_gap_or_repeat() {
        let log = Arc::new(EventLog::new(10, 100));
        log.record(12, vec![ev(11, 1), ev(12, 2), ev(12, 3)]);
        let mut sub = log.subscribe(Some(11)).expect("subscribe");
        let batch = now(sub.next()).expect("ready").expect("events");
        assert_eq!(batch, vec![ev(12, 2), ev(12, 3)]);
        assert!(now(sub.next()).is_none(), "nothing new yet");
        log.record(14, vec![ev(14, 1)]);
        assert_eq!(now(sub.next()).unwrap().unwrap(), vec![ev(14, 1)]);
        assert_eq!(sub.cursor(), 14);
        // From now: only what comes later.
        let mut live = log.subscribe(None).expect("subscribe");
        log.record(15, vec![ev(15, 4)]);
        assert_eq!(now(live.next()).unwrap().unwrap(), vec![ev(15, 4)]);
    }

    #[test]
    fn below_the_floor_is_compacted() {
        let log = Arc::new(EventLog::new(10, 100));
        assert!(matches!(
            log.subscribe(Some(9)),
            Err(WatchError::Compacted { from: 9, floor: 10 })
        ));
        assert!(log.subscribe(Some(10)).is_ok());
        // A future index is fine: its events come when applied.
        assert!(log.subscribe(Some(50)).is_ok());
    }

    #[test]
    fn eviction_and_reset_fail_watchers_left_behind() {
        let log = Arc::new(EventLog::new(0, 2));
        let mut slow = log.subscribe(Some(0)).expect("subscribe");
        log.record(3, vec![ev(1, 1), ev(2, 1), ev(3, 1)]);
        let mut keeps_up = log.subscribe(Some(3)).expect("subscribe");
        // Only the second event of index 4 and index 5's are held after
        // this: the floor is 4.
        log.record(5, vec![ev(4, 1), ev(4, 2), ev(5, 1)]);
        assert_eq!(log.bounds(), (4, 5));
        assert!(matches!(
            now(slow.next()).unwrap(),
            Err(WatchError::Compacted { from: 0, floor: 4 })
        ));
        assert!(matches!(
            now(keeps_up.next()).unwrap(),
            Err(WatchError::Compacted { from: 3, floor: 4 })
        ));
        let mut at_4 = log.subscribe(Some(4)).expect("subscribe");
        assert_eq!(now(at_4.next()).unwrap().unwrap(), vec![ev(5, 1)]);
        log.reset(9);
        assert!(matches!(
            now(at_4.next()).unwrap(),
            Err(WatchError::Compacted { from: 5, floor: 9 })
        ));
        assert_eq!(log.bounds(), (9, 9));
    }

    #[test]
    fn batches_never_split_an_entry() {
        let log = Arc::new(EventLog::new(0, 10_000));
        let mut events: Vec<JobEvent> = (1..=READ_BATCH as u64 - 1).map(|i| ev(i, 1)).collect();
        events.extend((0..10).map(|j| ev(READ_BATCH as u64, j)));
        events.push(ev(READ_BATCH as u64 + 1, 1));
        log.record(READ_BATCH as u64 + 1, events);
        let mut sub = log.subscribe(Some(0)).expect("subscribe");
        let first = now(sub.next()).unwrap().unwrap();
        assert_eq!(first.len(), READ_BATCH - 1 + 10);
        assert_eq!(sub.cursor(), READ_BATCH as u64);
        let second = now(sub.next()).unwrap().unwrap();
        assert_eq!(second, vec![ev(READ_BATCH as u64 + 1, 1)]);
    }

    #[test]
    fn watchers_are_bounded_and_closing_ends_them() {
        let log = Arc::new(EventLog::new(0, 10));
        let subs: Vec<_> = (0..MAX_WATCHERS)
            .map(|_| log.subscribe(None).expect("subscribe"))
            .collect();
        assert!(matches!(
            log.subscribe(None),
            Err(WatchError::TooManyWatchers)
        ));
        drop(subs);
        let mut sub = log.subscribe(None).expect("a slot is free again");
        log.record(1, vec![ev(1, 1)]);
        log.close();
        assert_eq!(now(sub.next()).unwrap().unwrap(), vec![ev(1, 1)]);
        assert_eq!(now(sub.next()).unwrap(), Err(WatchError::Closed));
    }
}
