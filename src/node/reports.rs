//! A node's messages to the leader about itself: heartbeats (liveness,
//! labels, capacity) and reports on its own attempts (Started / Finished),
//! which the leader proposes on its behalf. Both ride the peer service.

use std::sync::Arc;
use std::time::Duration;

use super::{Node, RaftError};
use crate::jobs::Applied;
use crate::jobs::{Capacity, Command};
use crate::proto::raft::raft_peer_client::RaftPeerClient;
use crate::proto::raft::{NodeHeartbeat, ReportRequest};
use crate::raft::{Index, NodeId};

/// Deadline of one report or heartbeat RPC.
const RPC_TIMEOUT: Duration = Duration::from_secs(15);

/// What the state machine made of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Applied.
    Accepted,
    /// Refused (e.g. a stale attempt): final, do not retry.
    Refused(String),
}

/// Why a report did not reach a verdict; the caller retries.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No leader known, or it could not be reached.
    #[error("leader unreachable: {0}")]
    Unreachable(String),
    /// The command cannot be sent at all.
    #[error("{0}")]
    Invalid(String),
}

impl Node {
    /// Sends this node's report on its own work to the leader (or proposes
    /// it, if this node leads) and returns the state machine's verdict.
    pub async fn report(&self, command: &Command) -> Result<ReportOutcome, ReportError> {
        if self.is_leader() {
            return self.propose_report(command).await;
        }
        let (leader, _) = self
            .wait_for_leader(Duration::from_secs(5))
            .await
            .ok_or_else(|| ReportError::Unreachable("no leader".into()))?;
        let addr = self
            .status()
            .membership
            .peer(leader)
            .map(|p| p.raft_addr.clone())
            .ok_or_else(|| ReportError::Unreachable(format!("no address for leader {leader}")))?;
        let mut client = self
            .channels
            .get(leader, &addr, RPC_TIMEOUT)
            .map(RaftPeerClient::new)
            .map_err(ReportError::Unreachable)?;
        let bytes = command
            .encode()
            .map_err(|e| ReportError::Invalid(e.to_string()))?;
        let reply = client
            .report(ReportRequest {
                cluster_id: self.config.cluster_id.clone(),
                from: self.config.node_id,
                command: bytes,
            })
            .await
            .map_err(|s| ReportError::Unreachable(s.message().to_string()))?
            .into_inner();
        Ok(match reply.accepted {
            true => ReportOutcome::Accepted,
            false => ReportOutcome::Refused(reply.reason),
        })
    }

    /// Waits until every other member has applied `index`, each for at most
    /// `timeout`, in parallel; returns the members that did not confirm
    /// (down, cut off, or slower than the timeout). A token change waits on
    /// this so a revoked token stops working on every reachable node before
    /// the revocation is acknowledged.
    pub async fn wait_cluster_applied(&self, index: Index, timeout: Duration) -> Vec<NodeId> {
        let membership = self.status().membership;
        let me = self.config.node_id;
        let waits = membership.ids().filter(|&id| id != me).map(|id| {
            let addr = membership.peer(id).map(|p| p.raft_addr.clone());
            async move {
                let Some(addr) = addr else { return Some(id) };
                let Ok(mut client) = self
                    .channels
                    .get(id, &addr, RPC_TIMEOUT)
                    .map(RaftPeerClient::new)
                else {
                    return Some(id);
                };
                let request = crate::proto::raft::WaitAppliedRequest {
                    cluster_id: self.config.cluster_id.clone(),
                    index,
                    timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
                };
                let call = tokio::time::timeout(
                    timeout + Duration::from_millis(500),
                    client.wait_applied(request),
                );
                match call.await {
                    Ok(Ok(reply)) if reply.get_ref().applied >= index => None,
                    _ => Some(id),
                }
            }
        });
        futures::future::join_all(waits)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Proposes a node's report here (this node leads).
    pub async fn propose_report(&self, command: &Command) -> Result<ReportOutcome, ReportError> {
        match self.propose_command(command).await {
            Ok(Applied::Updated(_) | Applied::Unchanged(_)) => Ok(ReportOutcome::Accepted),
            Ok(Applied::Refused { reason }) => Ok(ReportOutcome::Refused(reason)),
            Ok(other) => Ok(ReportOutcome::Refused(format!(
                "unexpected result {other:?}"
            ))),
            Err(e @ (RaftError::Rejected(_) | RaftError::Storage(_))) => {
                Err(ReportError::Invalid(e.to_string()))
            }
            Err(e) => Err(ReportError::Unreachable(e.to_string())),
        }
    }

    /// What this node offers to jobs: the configured amounts, or the
    /// machine's cores and memory.
    pub fn capacity(&self) -> Capacity {
        let ex = &self.config.executor;
        let cpu_millis = match ex.cpu_millis {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1000,
            n => n,
        };
        let memory_mib = match ex.memory_mib {
            0 => machine_memory_mib().unwrap_or(1024),
            n => n,
        };
        Capacity {
            cpu_millis,
            memory_mib,
        }
    }

    /// Sends heartbeats to the leader until the node shuts down. Started
    /// only once this node's executor is ready, so no work is placed on a
    /// node that cannot run it.
    pub async fn heartbeat_loop(self: Arc<Self>) {
        let interval = self.config.scheduler.heartbeat_interval;
        let capacity = self.capacity();
        // The operator's labels, and what this node's sandbox policy lets
        // a job have (so network and user jobs are placed where they run).
        let mut labels = self.config.executor.labels.clone();
        labels.extend(self.config.executor.policy.offers());
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // Always recorded here too: a node that becomes leader already
            // knows itself alive.
            self.liveness
                .heartbeat(self.config.node_id, labels.clone(), capacity);
            let Some((leader, _)) = self.leader() else {
                continue;
            };
            if leader == self.config.node_id {
                continue;
            }
            let Some(addr) = self
                .status()
                .membership
                .peer(leader)
                .map(|p| p.raft_addr.clone())
            else {
                continue;
            };
            let Ok(mut client) = self
                .channels
                .get(leader, &addr, RPC_TIMEOUT)
                .map(RaftPeerClient::new)
            else {
                continue;
            };
            let beat = NodeHeartbeat {
                cluster_id: self.config.cluster_id.clone(),
                node_id: self.config.node_id,
                labels: labels.clone().into_iter().collect(),
                cpu_millis: capacity.cpu_millis,
                memory_mib: capacity.memory_mib,
            };
            let timeout = interval.max(Duration::from_secs(1));
            match tokio::time::timeout(timeout, client.heartbeat(beat)).await {
                Ok(Ok(_)) => {}
                Ok(Err(status)) => {
                    tracing::debug!(leader, "heartbeat refused: {}", status.message())
                }
                Err(_) => tracing::debug!(leader, "heartbeat timed out"),
            }
        }
    }
}

/// Total memory from /proc/meminfo, in MiB.
fn machine_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
