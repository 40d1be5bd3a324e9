//! How the scenario scripts print the core's state: one short, stable line
//! per message, entry or node, so expected output can be read (and
//! reviewed) by a person. Nothing here depends on addresses or timing.

use super::super::progress::ProgressState;
use super::super::types::Payload;
use super::super::{ConfChange, Entry, Membership, Message, MessageBody, NodeId, RawNode, Role};

/// `from->to term=T Body ...`, e.g. `1->2 term=2 Append prev=1/1 entries=[2/2] commit=1`.
pub(super) fn message(m: &Message) -> String {
    format!("{}->{} term={} {}", m.from, m.to, m.term, body(&m.body))
}

/// The variant name of a message body (what `type=` selects).
pub(super) fn kind(b: &MessageBody) -> &'static str {
    use MessageBody::*;
    match b {
        PreVote { .. } => "PreVote",
        PreVoteResponse { .. } => "PreVoteResponse",
        Vote { .. } => "Vote",
        VoteResponse { .. } => "VoteResponse",
        Append { .. } => "Append",
        AppendResponse { .. } => "AppendResponse",
        Heartbeat { .. } => "Heartbeat",
        HeartbeatResponse { .. } => "HeartbeatResponse",
        InstallSnapshot { .. } => "InstallSnapshot",
        InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
        TimeoutNow => "TimeoutNow",
        ReadIndex { .. } => "ReadIndex",
        ReadIndexResponse { .. } => "ReadIndexResponse",
        TransferPending { .. } => "TransferPending",
    }
}

/// The body: its kind, then its fields as `key=value` (indexes as
/// `index/term`), flags as bare words.
pub(super) fn body(b: &MessageBody) -> String {
    use MessageBody::*;
    let k = kind(b);
    let granted = |g: &bool| if *g { "granted" } else { "rejected" };
    match b {
        PreVote {
            last_index,
            last_term,
        } => format!("{k} last={last_index}/{last_term}"),
        Vote {
            last_index,
            last_term,
            transfer,
        } => {
            let t = if *transfer { " transfer" } else { "" };
            format!("{k} last={last_index}/{last_term}{t}")
        }
        PreVoteResponse { granted: g } | VoteResponse { granted: g } => {
            format!("{k} {}", granted(g))
        }
        Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            let ids: Vec<String> = entries
                .iter()
                .map(|e| format!("{}/{}", e.index, e.term))
                .collect();
            format!(
                "{k} prev={prev_index}/{prev_term} entries=[{}] commit={commit}",
                ids.join(" ")
            )
        }
        AppendResponse {
            success: true,
            index,
            ..
        } => format!("{k} ok index={index}"),
        AppendResponse {
            success: false,
            index,
            hint_index,
            hint_term,
        } => format!("{k} reject index={index} hint={hint_index}/{hint_term}"),
        Heartbeat { commit, read_ctx } => format!("{k} commit={commit}{}", read(*read_ctx)),
        HeartbeatResponse { read_ctx } => format!("{k}{}", read(*read_ctx)),
        InstallSnapshot {
            meta,
            offset,
            data,
            done,
        } => {
            let d = if *done { " done" } else { "" };
            format!(
                "{k} snap={}/{} offset={offset} len={}{d}",
                meta.index,
                meta.term,
                data.len()
            )
        }
        InstallSnapshotResponse {
            snapshot_index,
            next_offset,
            done,
            reject,
        } => {
            let d = if *done { " done" } else { "" };
            let r = if *reject { " reject" } else { "" };
            format!("{k} snap={snapshot_index} next={next_offset}{d}{r}")
        }
        TimeoutNow => k.to_string(),
        ReadIndex { ctx } => format!("{k} ctx={ctx}"),
        ReadIndexResponse { ctx, index } => format!("{k} ctx={ctx} index={index}"),
        TransferPending { to } => format!("{k} to={to}"),
    }
}

fn read(ctx: u64) -> String {
    if ctx == 0 {
        String::new()
    } else {
        format!(" read={ctx}")
    }
}

/// `index/term payload`, e.g. `3/2 "x"`, `2/2 noop`, `4/2 add-learner 4`.
pub(super) fn entry(e: &Entry) -> String {
    let payload = match &e.payload {
        Payload::Noop => "noop".to_string(),
        Payload::Command(data) => format!("{:?}", String::from_utf8_lossy(data)),
        Payload::ConfChange(ConfChange::AddLearner { id, .. }) => format!("add-learner {id}"),
        Payload::ConfChange(ConfChange::Promote { id }) => format!("promote {id}"),
        Payload::ConfChange(ConfChange::Remove { id }) => format!("remove {id}"),
    };
    format!("{}/{} {payload}", e.index, e.term)
}

/// `1: Leader term=2 lead=1 commit=3 applied=3 last=3` (`lead=0`: none
/// known), plus `transfer=N` while a leadership transfer is in progress.
pub(super) fn status(n: &RawNode) -> String {
    let s = n.status();
    let role = match s.role {
        Role::Follower => "Follower",
        Role::PreCandidate => "PreCandidate",
        Role::Candidate => "Candidate",
        Role::Leader => "Leader",
    };
    let mut line = format!(
        "{}: {role} term={} lead={} commit={} applied={} last={}",
        s.id,
        s.term,
        s.leader.unwrap_or(0),
        s.commit,
        s.applied,
        s.last_index
    );
    if let Some(t) = s.transferring_to {
        line.push_str(&format!(" transfer={t}"));
    }
    line
}

/// `voters=1,2,3 learners=4` (`learners=` omitted when there are none).
pub(super) fn membership(m: &Membership) -> String {
    let join = |ids: Vec<NodeId>| {
        ids.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut s = format!("voters={}", join(m.voters.keys().copied().collect()));
    if !m.learners.is_empty() {
        s.push_str(&format!(
            " learners={}",
            join(m.learners.keys().copied().collect())
        ));
    }
    s
}

/// The leader's view of each peer: `2: match=3 next=4 Replicate`.
pub(super) fn progress(n: &RawNode) -> Vec<String> {
    n.prs
        .iter()
        .map(|(id, pr)| {
            let state = match pr.state {
                ProgressState::Probe => "Probe",
                ProgressState::Replicate => "Replicate",
                ProgressState::Snapshot => "Snapshot",
            };
            format!("{id}: match={} next={} {state}", pr.matched, pr.next)
        })
        .collect()
}
