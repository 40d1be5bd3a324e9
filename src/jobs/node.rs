//! The node table: what the leader's scheduler knows durably about each
//! node. Liveness itself is leader soft state (heartbeats); only its verdict
//! (`NodeDown`) and operator decisions (drain) go through the log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::raft::NodeId;

/// Whether the scheduler may count on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeStatus {
    /// Heartbeating; eligible for work unless draining.
    Ready,
    /// Declared down by a leader; its jobs were marked LOST.
    Down,
}

impl NodeStatus {
    /// The name used by the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "READY",
            NodeStatus::Down => "DOWN",
        }
    }
}

/// What a node offers to jobs, from its config, announced in heartbeats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
}

/// What the assigned and running jobs on a node have reserved: what
/// placement subtracts from its capacity and `node status` shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// How many jobs.
    pub jobs: u32,
}

impl Reserved {
    /// Adds one job's resources.
    pub fn add(&mut self, r: &super::Resources) {
        self.cpu_millis += u64::from(r.cpu_millis);
        self.memory_mib += u64::from(r.memory_mib);
        self.jobs += 1;
    }
}

/// An operator's request that a node take no new work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// When the drain was requested (Unix ms).
    pub since_ms: i64,
    /// When jobs still running there are stopped and re-queued; `None`
    /// waits for them to finish.
    pub deadline_ms: Option<i64>,
}

/// One row of the node table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The Raft node id.
    pub id: NodeId,
    /// Ready or down.
    pub status: NodeStatus,
    /// Labels that job constraints match against.
    pub labels: BTreeMap<String, String>,
    /// What it offers.
    pub capacity: Capacity,
    /// Set while draining.
    pub drain: Option<Drain>,
    /// Last change of this record (Unix ms, the leader's clock).
    pub updated_at_ms: i64,
}
