//! WatchJobs: a node's job event log ([`crate::node::events`]) as a stream
//! of `drover.v1.JobEvent` messages. The REST API's `/v1/events` serves the
//! same stream as Server-Sent Events.

use std::collections::VecDeque;

use tonic::Status;

use crate::jobs::JobId;
use crate::node::events::{JobEvent, Subscription, WatchError};
use crate::proto::v1 as pb;

/// The gRPC status of a watch that cannot start or go on. A compacted
/// position is OUT_OF_RANGE (HTTP 410): the client must list again.
pub fn watch_status(error: WatchError) -> Status {
    match error {
        WatchError::Compacted { .. } => Status::out_of_range(error.to_string()),
        WatchError::TooManyWatchers => Status::resource_exhausted(error.to_string()),
        WatchError::Closed => Status::unavailable(error.to_string()),
    }
}

/// The events of `subscription` (only those of `job`, if given) as
/// messages, until it fails; the failure is the stream's last item. No task
/// runs behind it: a client that goes away drops the subscription, and a
/// slow one is read no faster than it consumes (falling behind the ring
/// ends its stream with OUT_OF_RANGE, never with skipped events).
pub fn event_stream(
    subscription: Subscription,
    job: Option<JobId>,
    owner: Option<String>,
) -> impl futures::Stream<Item = Result<pb::JobEvent, Status>> + Send + 'static {
    struct State {
        subscription: Subscription,
        pending: VecDeque<pb::JobEvent>,
        failed: bool,
        owner: Option<String>,
    }
    let state = State {
        subscription,
        pending: VecDeque::new(),
        failed: false,
        owner,
    };
    futures::stream::unfold(state, move |mut state| async move {
        if state.failed {
            return None;
        }
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((Ok(event), state));
            }
            match state.subscription.next().await {
                Ok(batch) => state
                    .pending
                    .extend(select(&batch, job, state.owner.as_deref())),
                Err(error) => {
                    state.failed = true;
                    return Some((Err(watch_status(error)), state));
                }
            }
        }
    })
}

/// The events of a batch (whole entries, in order) that concern `job` (and
/// jobs of `owner`, for a caller limited to its own), as messages, each
/// marked when it is the last of its entry among them.
fn select(batch: &[JobEvent], job: Option<JobId>, owner: Option<&str>) -> Vec<pb::JobEvent> {
    let kept: Vec<&JobEvent> = batch
        .iter()
        .filter(|e| job.is_none_or(|id| e.job == id))
        .filter(|e| owner.is_none_or(|o| e.owner.as_deref() == Some(o)))
        .collect();
    kept.iter()
        .enumerate()
        .map(|(i, e)| {
            let last_in_entry = kept.get(i + 1).is_none_or(|next| next.index != e.index);
            event_to_proto(e, last_in_entry)
        })
        .collect()
}

/// One event as its message.
pub fn event_to_proto(event: &JobEvent, last_in_entry: bool) -> pb::JobEvent {
    pb::JobEvent {
        index: event.index,
        kind: event.kind.as_str().to_string(),
        job_id: event.job.to_string(),
        state: event
            .state
            .map(|s| s.as_str())
            .unwrap_or_default()
            .to_string(),
        attempt: event.attempt,
        node: event.node,
        reason: event.reason.unwrap_or_default().to_string(),
        at_ms: event.at_ms,
        last_in_entry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobState;
    use crate::node::events::EventKind;

    fn ev(index: u64, job: u8) -> JobEvent {
        JobEvent {
            index,
            kind: EventKind::Created,
            job: JobId::from_bytes([job; 16]),
            state: Some(JobState::Queued),
            attempt: 0,
            node: 0,
            reason: None,
            at_ms: 7,
            owner: (job == 2).then(|| "B".to_string()),
        }
    }

    #[test]
    fn the_last_event_of_each_entry_is_marked_after_filtering() {
        let batch = [ev(5, 1), ev(5, 2), ev(5, 1), ev(6, 2), ev(7, 1)];
        let marks = |job| -> Vec<(u64, bool)> {
            select(&batch, job, None)
                .iter()
                .map(|e| (e.index, e.last_in_entry))
                .collect()
        };
        assert_eq!(
            marks(None),
            vec![(5, false), (5, false), (5, true), (6, true), (7, true)]
        );
        let one = Some(JobId::from_bytes([1; 16]));
        assert_eq!(marks(one), vec![(5, false), (5, true), (7, true)]);
        let event = &select(&batch, one, None)[0];
        // A submitter sees its own jobs' events only.
        let own: Vec<(u64, bool)> = select(&batch, None, Some("B"))
            .iter()
            .map(|e| (e.index, e.last_in_entry))
            .collect();
        assert_eq!(own, vec![(5, true), (6, true)]);
        assert_eq!(event.kind, "CREATED");
        assert_eq!(event.state, "QUEUED");
        assert_eq!(event.reason, "");
    }
}
