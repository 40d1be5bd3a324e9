//! The in-memory test network shared by the Rust scenario tests (`tests`)
//! and the data-driven scripts (`scenarios`): a small cluster of
//! [`RawNode`]s whose messages go through one queue that delivers, blocks
//! or drops them on command.
//!
//! Persistence is instant: each Ready is "persisted" and advanced at once,
//! and what it persisted is mirrored into a per-node [`Disk`] so a node can
//! be restarted from exactly what the driving contract says is durable.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::*;

/// Decides whether the network loses a message (true = dropped).
pub(super) type Filter = Box<dyn Fn(&Message) -> bool>;
/// A snapshot as a Ready hands it out.
pub(super) type Snapshot = (SnapshotMeta, Arc<Vec<u8>>);

/// A little cluster. Messages go through `queue`; `blocked` holds directed
/// links that lose everything, `drop_if` drops chosen messages.
pub(super) struct Net {
    pub(super) nodes: BTreeMap<NodeId, RawNode>,
    pub(super) queue: VecDeque<Message>,
    pub(super) blocked: BTreeSet<(NodeId, NodeId)>,
    pub(super) drop_if: Option<Filter>,
    /// Every message ever handed out, in order (for counting).
    pub(super) sent: Vec<Message>,
    pub(super) applied: BTreeMap<NodeId, Vec<Entry>>,
    pub(super) snapshots: BTreeMap<NodeId, Vec<Snapshot>>,
    pub(super) reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// What each node has on stable storage (see [`Net::restart`]).
    pub(super) disks: BTreeMap<NodeId, Restored>,
}

/// The configuration every test node starts from: etcd's defaults with a
/// seed that differs per node, so election timeouts differ too.
pub(super) fn cfg(id: NodeId) -> Config {
    Config {
        election_ticks: 10,
        heartbeat_ticks: 1,
        ..Config::new(id, 1000 + id)
    }
}

/// A membership with default (empty) addresses.
pub(super) fn members(voters: &[NodeId], learners: &[NodeId]) -> Membership {
    let mut m = Membership::default();
    for &v in voters {
        m.voters.insert(v, PeerInfo::default());
    }
    for &l in learners {
        m.learners.insert(l, PeerInfo::default());
    }
    m
}

/// A command entry whose payload names its position ("index@term").
pub(super) fn ent(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: Payload::Command(format!("{index}@{term}").into_bytes()),
    }
}

/// A log with one entry per term in `terms` (index = position + 1).
pub(super) fn log_of(terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &t)| ent(i as u64 + 1, t))
        .collect()
}

/// Stable storage holding `entries` at `term`, nothing committed.
pub(super) fn restored(m: &Membership, term: Term, entries: Vec<Entry>) -> Restored {
    Restored {
        hard_state: HardState {
            term,
            vote: 0,
            commit: 0,
        },
        membership: m.clone(),
        snapshot: None,
        entries,
        applied: 0,
    }
}

impl Net {
    /// A new cluster of `voters` with the default test configuration.
    pub(super) fn new(voters: &[NodeId]) -> Net {
        Net::with_config(voters, &[], cfg)
    }

    /// A new (bootstrapping) cluster with a configuration per node.
    pub(super) fn with_config(
        voters: &[NodeId],
        learners: &[NodeId],
        c: impl Fn(NodeId) -> Config,
    ) -> Net {
        let m = members(voters, learners);
        Net::from_nodes(
            voters
                .iter()
                .chain(learners)
                .map(|&id| (c(id), restored(&m, 0, vec![])))
                .collect(),
        )
    }

    /// A cluster of nodes restored from the given storage.
    pub(super) fn from_nodes(nodes: Vec<(Config, Restored)>) -> Net {
        let disks = nodes.iter().map(|(c, r)| (c.id, r.clone())).collect();
        Net {
            nodes: nodes
                .into_iter()
                .map(|(c, r)| (c.id, RawNode::new(c, r).expect("valid node")))
                .collect(),
            queue: VecDeque::new(),
            blocked: BTreeSet::new(),
            drop_if: None,
            sent: Vec::new(),
            applied: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            reads: BTreeMap::new(),
            disks,
        }
    }

    pub(super) fn node(&self, id: NodeId) -> &RawNode {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("unknown node {id}"))
    }

    pub(super) fn node_mut(&mut self, id: NodeId) -> &mut RawNode {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("unknown node {id}"))
    }

    /// Handles every Ready of node `id` (instant persistence).
    pub(super) fn flush(&mut self, id: NodeId) {
        for _ in 0..1000 {
            let n = self.node_mut(id);
            if !n.has_ready() {
                return;
            }
            let mut rd = n.ready();
            persist(self.disks.entry(id).or_default(), &rd);
            if let Some(s) = &rd.snapshot {
                self.snapshots.entry(id).or_default().push(s.clone());
            }
            self.applied
                .entry(id)
                .or_default()
                .extend(rd.committed.iter().cloned());
            self.reads
                .entry(id)
                .or_default()
                .extend(rd.read_states.iter().copied());
            let msgs = std::mem::take(&mut rd.messages);
            self.sent.extend(msgs.iter().cloned());
            self.queue.extend(msgs);
            self.node_mut(id).advance(&rd);
        }
        panic!("node {id} never quiesced");
    }

    /// Handles the Ready of every node, in id order.
    pub(super) fn flush_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.flush(id);
        }
    }

    /// True if the network loses `m` (blocked link or drop filter).
    pub(super) fn is_dropped(&self, m: &Message) -> bool {
        self.blocked.contains(&(m.from, m.to)) || self.drop_if.as_ref().is_some_and(|f| f(m))
    }

    /// Hands `m` to its recipient unless the network loses it. Returns true
    /// if it was delivered.
    pub(super) fn deliver(&mut self, m: Message) -> bool {
        if self.is_dropped(&m) {
            return false;
        }
        match self.nodes.get_mut(&m.to) {
            Some(n) => {
                n.step(m);
                true
            }
            None => false,
        }
    }

    /// Delivers messages (and the messages they cause) until none is left.
    pub(super) fn stabilize(&mut self) {
        for _ in 0..100_000 {
            self.flush_all();
            let Some(m) = self.queue.pop_front() else {
                return;
            };
            self.deliver(m);
        }
        panic!("network never quiesced");
    }

    pub(super) fn tick(&mut self, id: NodeId, times: usize) {
        for _ in 0..times {
            self.node_mut(id).tick();
            self.stabilize();
        }
    }

    pub(super) fn tick_all(&mut self, times: usize) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for _ in 0..times {
            for &id in &ids {
                self.node_mut(id).tick();
            }
            self.stabilize();
        }
    }

    /// Ticks only `id` until it leads.
    pub(super) fn elect(&mut self, id: NodeId) {
        for _ in 0..100 {
            if self.node(id).role() == Role::Leader {
                return;
            }
            self.tick(id, 1);
        }
        panic!("node {id} did not become leader");
    }

    /// Blocks every link to and from `id`.
    pub(super) fn isolate(&mut self, id: NodeId) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for other in ids {
            if other != id {
                self.blocked.insert((id, other));
                self.blocked.insert((other, id));
            }
        }
    }

    /// Unblocks every link and removes the drop filter.
    pub(super) fn heal(&mut self) {
        self.blocked.clear();
        self.drop_if = None;
    }

    pub(super) fn propose(&mut self, id: NodeId, data: &str) -> (Index, Term) {
        let r = self
            .node_mut(id)
            .propose(data.as_bytes().to_vec())
            .expect("proposal accepted");
        self.stabilize();
        r
    }

    pub(super) fn commit(&self, id: NodeId) -> Index {
        self.node(id).status().commit
    }

    pub(super) fn count_sent(&self, f: impl Fn(&Message) -> bool) -> usize {
        self.sent.iter().filter(|m| f(m)).count()
    }

    /// Snapshots node `id`'s state machine at `index` (as the embedder
    /// would), compacts its log and deletes what the core allows from its
    /// disk. Returns the deletable index (0 if the core refused).
    pub(super) fn compact(&mut self, id: NodeId, meta: SnapshotMeta, data: Arc<Vec<u8>>) -> Index {
        let deletable = self.node_mut(id).compact(meta.clone(), data.clone());
        if deletable > 0 || self.node(id).status().snapshot_index == meta.index {
            let disk = self.disks.entry(id).or_default();
            disk.snapshot = Some((meta, data));
            disk.entries.retain(|e| e.index > deletable);
        }
        deletable
    }

    /// Crashes node `id` and starts a new core from its disk, with the same
    /// configuration. Its volatile state (role, leader, progress, pending
    /// reads) is lost; messages in flight stay in flight.
    pub(super) fn restart(&mut self, id: NodeId) -> Result<(), String> {
        let config = self.node(id).cfg.clone();
        let disk = self.disks.get(&id).cloned().unwrap_or_default();
        let node = RawNode::new(config, disk)?;
        self.nodes.insert(id, node);
        Ok(())
    }
}

/// Mirrors what a Ready asks to persist into `disk`, in the contract's
/// order: snapshot (replacing the whole log), entries (replacing any stable
/// suffix they overlap), hard state, membership; then the applied index.
fn persist(disk: &mut Restored, rd: &Ready) {
    if let Some((meta, data)) = &rd.snapshot {
        disk.snapshot = Some((meta.clone(), data.clone()));
        disk.entries.clear();
        disk.applied = disk.applied.max(meta.index);
    }
    if let Some(first) = rd.entries.first() {
        disk.entries.retain(|e| e.index < first.index);
        disk.entries.extend(rd.entries.iter().cloned());
    }
    if let Some(hs) = rd.hard_state {
        disk.hard_state = hs;
    }
    if let Some(m) = &rd.membership {
        disk.membership = m.clone();
    }
    if let Some(last) = rd.committed.last() {
        disk.applied = disk.applied.max(last.index);
    }
}
