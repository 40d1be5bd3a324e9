//! Snapshots between nodes: the leader streams one in chunks to a peer
//! too far behind its log, the follower assembles and installs it.

use std::sync::Arc;

use super::progress::ProgressState;
use super::raw_node::IncomingSnapshot;
use super::RawNode;
use super::{Index, MessageBody, NodeId, Role, SnapshotMeta};

/// Bound on a snapshot assembled in memory from InstallSnapshot chunks.
/// Chunks beyond it are refused (the transfer restarts and fails again, so
/// the state machine must stay well below it).
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

impl RawNode {
    pub(super) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) {
        let snapshot_index = meta.index;
        if meta.index <= self.log.committed {
            // We already have everything it holds (maybe an earlier copy).
            self.incoming = None;
            self.send_snapshot_response(from, snapshot_index, 0, true, false);
            return;
        }
        let same = self
            .incoming
            .as_ref()
            .is_some_and(|i| i.from == from && i.term == self.term && i.meta == meta);
        if !same {
            if offset != 0 {
                self.incoming = None;
                self.send_snapshot_response(from, snapshot_index, 0, false, true);
                return;
            }
            self.incoming = Some(IncomingSnapshot {
                from,
                term: self.term,
                meta,
                data: Vec::new(),
            });
        }
        let Some(inc) = self.incoming.as_mut() else {
            return;
        };
        let have = inc.data.len() as u64;
        if offset > have {
            // A gap: a chunk was lost and a later one overtook it.
            self.incoming = None;
            self.send_snapshot_response(from, snapshot_index, 0, false, true);
            return;
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > MAX_SNAPSHOT_BYTES {
            // Bigger than we are willing to hold in memory: refuse it.
            self.incoming = None;
            self.send_snapshot_response(from, snapshot_index, 0, false, true);
            return;
        }
        if end > have {
            let skip = (have - offset) as usize;
            inc.data.extend_from_slice(&data[skip..]);
        }
        let have = inc.data.len() as u64;
        if !(done && end == have) {
            self.send_snapshot_response(from, snapshot_index, have, false, false);
            return;
        }
        let Some(inc) = self.incoming.take() else {
            return;
        };
        if let Some(check) = self.cfg.snapshot_check {
            if check(&inc.meta, &inc.data).is_err() {
                self.send_snapshot_response(from, snapshot_index, 0, false, true);
                return;
            }
        }
        self.install_snapshot(inc.meta, Arc::new(inc.data));
        self.send_snapshot_response(from, snapshot_index, have, true, false);
    }

    pub(super) fn send_snapshot_response(
        &mut self,
        to: NodeId,
        snapshot_index: Index,
        next_offset: u64,
        done: bool,
        reject: bool,
    ) {
        self.send(
            to,
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                next_offset,
                done,
                reject,
            },
        );
    }

    /// A complete snapshot from the leader: either our log already has its
    /// last entry (then just commit up to it) or it replaces the log.
    pub(super) fn install_snapshot(&mut self, meta: SnapshotMeta, data: Arc<Vec<u8>>) {
        debug_assert!(meta.index > self.log.committed);
        if self.log.matches(meta.index, meta.term) {
            self.commit_to(meta.index);
            return;
        }
        self.log.restore(&meta, data.clone());
        self.retract_acks_above(meta.index);
        self.membership = meta.membership.clone();
        self.membership_log = vec![(meta.index, meta.membership.clone())];
        self.membership_changed = true;
        // The state machine jumps to the snapshot; entries at or below it
        // are never handed out for applying.
        self.applied_handed = self.applied_handed.max(meta.index);
        self.pending_snapshot = Some((meta, data));
    }

    pub(super) fn send_snapshot_chunk(&mut self, to: NodeId) {
        let chunk = self.cfg.snapshot_chunk_bytes as u64;
        let Some(t) = self.prs.get(&to).and_then(|p| p.snapshot.as_ref()) else {
            return;
        };
        let len = t.data.len() as u64;
        let start = t.offset.min(len);
        let end = start.saturating_add(chunk).min(len);
        let body = MessageBody::InstallSnapshot {
            meta: t.meta.clone(),
            offset: start,
            data: t.data[start as usize..end as usize].to_vec(),
            done: end == len,
        };
        self.send(to, body);
    }

    /// Heartbeat tick: resend the outstanding chunk of every snapshot
    /// transfer that made no progress since the last one (lost chunk or
    /// lost answer).
    pub(super) fn retry_snapshot_chunks(&mut self) {
        let mut stalled = Vec::new();
        for (&id, pr) in self.prs.iter_mut() {
            if let Some(t) = pr.snapshot.as_mut() {
                if !t.progressed {
                    stalled.push(id);
                }
                t.progressed = false;
            }
        }
        for id in stalled {
            self.send_snapshot_chunk(id);
        }
    }

    pub(super) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: Index,
        next_offset: u64,
        done: bool,
        reject: bool,
    ) {
        if self.role != Role::Leader || snapshot_index > self.log.last_index() {
            return;
        }
        let Some(pr) = self.prs.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if done {
            pr.maybe_update(snapshot_index);
            if pr.state == ProgressState::Snapshot {
                pr.become_probe();
            }
            self.maybe_send_append(from, true);
            return;
        }
        let Some(t) = pr.snapshot.as_mut() else {
            return;
        };
        if t.meta.index != snapshot_index {
            return;
        }
        let len = t.data.len() as u64;
        if reject {
            t.offset = 0;
        } else if next_offset > t.offset && next_offset <= len {
            t.offset = next_offset;
        } else {
            return; // duplicate or stale answer
        }
        t.progressed = true;
        self.send_snapshot_chunk(from);
    }
}
