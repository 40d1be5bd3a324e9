//! Moves Raft messages between nodes over gRPC (proto/raft.proto).
//!
//! Outbound: one task per peer owns one reused tonic channel and a bounded
//! queue. It sends whatever is queued as one batch; when the queue is full,
//! new messages are dropped (Raft retransmits), so a slow or dead peer costs
//! nothing but its retries, which back off exponentially. The inbound side
//! is `peer_service`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::input::{Input, InputSender};
use super::peer_service::{PeerDisks, PeerIncarnations, LOST_DATA_MARKER};
use super::wire::{encode_message, MAX_RPC_BYTES, PROTOCOL_VERSION};
use crate::proto::raft::raft_peer_client::RaftPeerClient;
use crate::proto::raft::MessageBatch;
use crate::raft::{Message, NodeId};
use crate::store::{SpaceGuard, SpaceLevel};

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Messages in one Deliver call.
const MAX_BATCH_MESSAGES: usize = 512;
/// Batches are cut at this many message bytes, well under the RPC limit
/// (a single message up to the chunk/append bound always goes alone).
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Bounds of the reconnect backoff for an unreachable peer.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Deadline of one Deliver call.
const DELIVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Outbound side: the set of peer tasks, kept in step with the membership.
pub struct Outbound {
    cluster_id: String,
    from: NodeId,
    /// This node's data-directory incarnation, sent with every batch.
    incarnation: u64,
    /// Peers' incarnations, shared with the peer service that checks them.
    pub incarnations: Arc<PeerIncarnations>,
    from_addr: String,
    peers: BTreeMap<NodeId, PeerHandle>,
    inputs: InputSender,
    runtime: tokio::runtime::Handle,
    /// This node's disk reserve, whose state every batch carries.
    space: Arc<SpaceGuard>,
    /// Makes each peer task's channel (TLS or not).
    dialer: super::dial::Dialer,
    /// What peers' batches said of their disks, shared with the peer
    /// service that records it.
    pub peer_disks: Arc<PeerDisks>,
}

struct PeerHandle {
    addr: String,
    queue: mpsc::Sender<Message>,
}

impl Outbound {
    /// Creates an empty peer set; `inputs` receives unreachable reports.
    pub fn new(
        cluster_id: String,
        (from, incarnation): (NodeId, u64),
        from_addr: String,
        inputs: InputSender,
        runtime: tokio::runtime::Handle,
        space: Arc<SpaceGuard>,
        dialer: super::dial::Dialer,
    ) -> Self {
        Outbound {
            cluster_id,
            from,
            incarnation,
            incarnations: Arc::new(PeerIncarnations::default()),
            from_addr,
            peers: BTreeMap::new(),
            inputs,
            runtime,
            space,
            dialer,
            peer_disks: Arc::new(PeerDisks::default()),
        }
    }

    /// Makes the peer set match `peers` (id -> raft address): starts tasks for
    /// new or moved peers, stops tasks of removed ones (dropping the sender
    /// ends the task).
    pub fn set_peers(&mut self, peers: &BTreeMap<NodeId, String>) {
        self.peers
            .retain(|id, handle| peers.get(id) == Some(&handle.addr));
        for (&id, addr) in peers {
            if id == self.from || self.peers.contains_key(&id) {
                continue;
            }
            let (queue, rx) = mpsc::channel(PEER_QUEUE);
            let task = PeerTask {
                cluster_id: self.cluster_id.clone(),
                incarnation: self.incarnation,
                from: self.from,
                from_addr: self.from_addr.clone(),
                to: id,
                addr: addr.clone(),
                inputs: self.inputs.clone(),
                space: self.space.clone(),
                dialer: self.dialer.clone(),
            };
            self.runtime.spawn(task.run(rx));
            self.peers.insert(
                id,
                PeerHandle {
                    addr: addr.clone(),
                    queue,
                },
            );
        }
    }

    /// Changes the address this node advertises to peers; restarts the peer
    /// tasks so every later batch carries it.
    pub fn set_self_addr(&mut self, addr: &str) {
        if self.from_addr != addr {
            self.from_addr = addr.to_string();
            self.peers.clear();
        }
    }

    /// Adds a peer that is not in the membership yet (a leader contacting
    /// this node before it has learned the membership). Replaced by the next
    /// `set_peers`.
    pub fn ensure_peer(&mut self, id: NodeId, addr: &str) {
        if self.peers.contains_key(&id) || addr.is_empty() || id == self.from {
            return;
        }
        let mut peers: BTreeMap<NodeId, String> = self
            .peers
            .iter()
            .map(|(id, p)| (*id, p.addr.clone()))
            .collect();
        peers.insert(id, addr.to_string());
        self.set_peers(&peers);
    }

    /// Queues a message; drops it if the peer is unknown or its queue is
    /// full (Raft retransmits what matters).
    pub fn send(&self, msg: Message) {
        match self.peers.get(&msg.to) {
            Some(peer) => {
                if peer.queue.try_send(msg).is_err() {
                    tracing::trace!("peer queue full; message dropped");
                }
            }
            None => tracing::trace!(to = msg.to, "message to unknown peer dropped"),
        }
    }
}

struct PeerTask {
    cluster_id: String,
    incarnation: u64,
    from: NodeId,
    from_addr: String,
    to: NodeId,
    addr: String,
    inputs: InputSender,
    space: Arc<SpaceGuard>,
    dialer: super::dial::Dialer,
}

impl PeerTask {
    async fn run(self, mut rx: mpsc::Receiver<Message>) {
        let endpoint = match self.dialer.endpoint(self.to, &self.addr) {
            Ok(e) => e
                .connect_timeout(Duration::from_secs(2))
                .timeout(DELIVER_TIMEOUT)
                .http2_keep_alive_interval(Duration::from_secs(10)),
            Err(e) => {
                tracing::error!(peer = self.to, addr = %self.addr, "{e}");
                return;
            }
        };
        let channel = endpoint.connect_lazy();
        let mut client = RaftPeerClient::new(channel)
            .max_decoding_message_size(MAX_RPC_BYTES)
            .max_encoding_message_size(MAX_RPC_BYTES);
        let mut backoff = BACKOFF_MIN;
        // A message taken from the queue that did not fit the last batch.
        let mut carried: Option<Vec<u8>> = None;
        loop {
            let first = match carried.take() {
                Some(bytes) => bytes,
                None => match rx.recv().await {
                    Some(msg) => match encode_message(&msg) {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            tracing::error!("cannot encode raft message: {e}");
                            continue;
                        }
                    },
                    None => return,
                },
            };
            // Batch by count and by bytes, so a window full of large appends
            // never exceeds the RPC size limit.
            let mut size = first.len();
            let mut encoded = vec![first];
            while encoded.len() < MAX_BATCH_MESSAGES {
                let Ok(msg) = rx.try_recv() else { break };
                match encode_message(&msg) {
                    Ok(bytes) if size + bytes.len() > MAX_BATCH_BYTES => {
                        carried = Some(bytes);
                        break;
                    }
                    Ok(bytes) => {
                        size += bytes.len();
                        encoded.push(bytes);
                    }
                    Err(e) => tracing::error!("cannot encode raft message: {e}"),
                }
            }
            let request = MessageBatch {
                cluster_id: self.cluster_id.clone(),
                protocol_version: PROTOCOL_VERSION,
                from: self.from,
                to: self.to,
                messages: encoded,
                from_raft_addr: self.from_addr.clone(),
                from_incarnation: self.incarnation,
                from_disk_low: self.space.last_level() != SpaceLevel::Ok,
            };
            match client.deliver(request).await {
                Ok(_) => backoff = BACKOFF_MIN,
                Err(status)
                    if status.code() == tonic::Code::FailedPrecondition
                        && status.message().contains(LOST_DATA_MARKER) =>
                {
                    // This node lost its data and must not take part.
                    let _ = self
                        .inputs
                        .try_send(Input::Fatal(status.message().to_string()));
                    return;
                }
                Err(status) => {
                    tracing::debug!(peer = self.to, addr = %self.addr, "deliver failed: {}", status.message());
                    let _ = self.inputs.try_send(Input::Unreachable(self.to));
                    // Everything queued meanwhile is stale; Raft resends.
                    tokio::time::sleep(backoff).await;
                    while rx.try_recv().is_ok() {}
                    carried = None;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}
