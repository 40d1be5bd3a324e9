//! The leader's scheduling task: woken by applies (and by the liveness,
//! backoff, drain and GC deadlines it computes), it reads the committed
//! tables, asks `scheduler` for decisions and proposes them. A new leader
//! rebuilds everything it needs from the committed table; the only soft
//! state is liveness, which starts with a full grace period.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{now_ms, Node};
use crate::jobs::{Assignment, Command, NodeStatus};
use crate::scheduler::{self, NodeLoad};

/// Placements proposed in one entry at most.
const MAX_ASSIGN_BATCH: usize = 512;
/// Queue entries one pass reads, at most (a queue of jobs no node can take
/// must not make every pass read all of it). The jobs of owners already at
/// their active quota are passed over without being read, and do not count:
/// however many such an owner queues, the jobs behind theirs are reached.
const MAX_QUEUE_SCAN: usize = 20_000;
/// Finished jobs deleted per GC entry, at most.
const MAX_GC_BATCH: usize = 1_000;
/// How often GC looks at the finished index when under the count bound.
const GC_INTERVAL: Duration = Duration::from_secs(10);

/// Runs until the node's applied watch closes (shutdown).
pub async fn run(node: Arc<Node>) {
    let mut applied = node.applied_watch();
    let mut leading_since: Option<u64> = None;
    let mut last_gc = Instant::now();
    loop {
        let term = node.term();
        let mut next_wake = Instant::now() + node.config.scheduler.heartbeat_interval;
        if node.is_leader() {
            if leading_since != Some(term) {
                node.liveness.start_grace(Instant::now());
                leading_since = Some(term);
                tracing::info!(term, "scheduler active: this node leads");
            }
            match pass(&node, &mut last_gc).await {
                Ok(Some(wake)) => next_wake = next_wake.min(wake),
                Ok(None) => {}
                Err(e) => tracing::warn!("scheduling pass failed: {e}"),
            }
        } else {
            leading_since = None;
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(next_wake.into()) => {}
        }
    }
}

async fn propose(node: &Node, command: Command) -> Result<(), String> {
    node.propose_command(&command)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// One scheduling pass. Returns the earliest time something becomes due
/// (a retry's backoff, a drain deadline) if it is sooner than the next
/// liveness check.
async fn pass(node: &Node, last_gc: &mut Instant) -> Result<Option<Instant>, String> {
    let cfg = &node.config.scheduler;
    let store = &node.store;
    let now = Instant::now();
    let now_ms = now_ms();
    let mut wake: Option<Instant> = None;
    let mut wake_at_ms = |at_ms: i64| {
        let at = now + Duration::from_millis(at_ms.saturating_sub(now_ms).max(1) as u64);
        wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
    };
    let records = store.nodes().map_err(|e| e.to_string())?;
    let by_id: BTreeMap<_, _> = records.iter().map(|r| (r.id, r)).collect();

    // 1. Nodes heard from whose record is missing, down or out of date.
    for (id, seen) in node.liveness.sightings() {
        if now.saturating_duration_since(seen.at) >= cfg.node_down_after {
            continue; // an old sighting: step 2 judges this node
        }
        let current = by_id.get(&id);
        let up_to_date = current.is_some_and(|r| {
            r.status == NodeStatus::Ready && r.labels == seen.labels && r.capacity == seen.capacity
        });
        if !up_to_date {
            tracing::info!(node = id, "node ready");
            propose(
                node,
                Command::NodeUp {
                    node: id,
                    labels: seen.labels,
                    capacity: seen.capacity,
                    at_ms: now_ms,
                },
            )
            .await?;
        }
    }

    // 2. Silent nodes: declare them down (their jobs end LOST).
    for record in &records {
        if record.status == NodeStatus::Ready
            && !node.liveness.is_alive(record.id, now, cfg.node_down_after)
        {
            tracing::warn!(node = record.id, after = ?cfg.node_down_after, "no heartbeat: declaring the node down");
            propose(
                node,
                Command::NodeDown {
                    node: record.id,
                    at_ms: now_ms,
                },
            )
            .await?;
        }
    }

    // 3. Drains past their deadline: stop and re-queue what still runs.
    for record in &records {
        let Some(deadline) = record.drain.and_then(|d| d.deadline_ms) else {
            continue;
        };
        if deadline > now_ms {
            wake_at_ms(deadline);
            continue;
        }
        if !store
            .active_on_node(record.id)
            .map_err(|e| e.to_string())?
            .is_empty()
        {
            tracing::info!(
                node = record.id,
                "drain deadline passed: re-queueing its jobs"
            );
            propose(
                node,
                Command::Evict {
                    node: record.id,
                    at_ms: now_ms,
                },
            )
            .await?;
        }
    }

    // 4. Placement. Re-read the node table: steps 1-3 may have changed it.
    let records = store.nodes().map_err(|e| e.to_string())?;
    let reserved = store.reserved_by_node().map_err(|e| e.to_string())?;
    let mut loads: Vec<NodeLoad> = records
        .iter()
        .map(|r| {
            // A node whose disk is below its reserve takes no new jobs
            // (it could not store their output).
            let alive =
                node.liveness.is_alive(r.id, now, cfg.node_down_after) && !node.disk_low(r.id);
            NodeLoad::new(r, reserved.get(&r.id).copied().unwrap_or_default(), alive)
        })
        .collect();
    let mut quota = scheduler::ActiveQuota::new(
        node.config.quotas.max_active_per_owner,
        store.active_by_owner(),
    );
    let mut bound: std::collections::HashMap<String, bool> = Default::default();
    let held: std::collections::HashSet<String> = quota
        .held()
        .filter(|o| node.owner_is_bound(o))
        .map(str::to_string)
        .collect();
    let passed_over = store.queued_of(&held);
    let mut read = 0;
    let mut assignments = Vec::new();
    for entry in store.queued_jobs() {
        if read >= MAX_QUEUE_SCAN
            || assignments.len() >= MAX_ASSIGN_BATCH
            || scheduler::cluster_full(&loads)
        {
            break;
        }
        let (id, not_before) = entry.map_err(|e| e.to_string())?;
        if passed_over.contains(&id) {
            continue;
        }
        read += 1;
        if not_before > now_ms {
            wake_at_ms(not_before);
            continue;
        }
        let Some(job) = store.get_job(&id).map_err(|e| e.to_string())? else {
            continue;
        };
        // Only a tenant's jobs (a submitter token's) count against its
        // active quota; whose token is whose is looked up once per pass.
        let owner = job.owner.as_deref().filter(|o| {
            *bound
                .entry(o.to_string())
                .or_insert_with(|| node.owner_is_bound(o))
        });
        if !quota.allows(owner) {
            continue;
        }
        let needs = scheduler::SandboxNeeds {
            network: job.spec.network,
            user: job.spec.user.as_deref(),
        };
        let spec = &job.spec;
        if let Some(on) = scheduler::place(&mut loads, &spec.resources, &spec.constraints, needs) {
            quota.placed(owner);
            let attempt = u32::try_from(job.attempts.len() + 1).unwrap_or(u32::MAX);
            assignments.push(Assignment {
                job: id,
                attempt,
                node: on,
            });
        }
    }
    // With this node's own disk below its reserve placements are refused
    // (new work): skip them, and go on to GC, which frees room.
    if !assignments.is_empty() && !node.disk_low(node.config.node_id) {
        tracing::debug!(count = assignments.len(), "placing jobs");
        propose(
            node,
            Command::Assign {
                at_ms: now_ms,
                assignments,
            },
        )
        .await?;
    }

    // 5. Garbage collection of finished jobs.
    if last_gc.elapsed() >= GC_INTERVAL || store.finished_count() > cfg.retain_max {
        *last_gc = Instant::now();
        let oldest = store
            .oldest_finished(MAX_GC_BATCH)
            .map_err(|e| e.to_string())?;
        let retention_ms = i64::try_from(cfg.retention.as_millis()).unwrap_or(i64::MAX);
        let jobs = scheduler::gc_candidates(
            &oldest,
            store.finished_count(),
            now_ms,
            retention_ms,
            cfg.retain_max,
        );
        if !jobs.is_empty() {
            tracing::info!(count = jobs.len(), "collecting finished jobs");
            propose(node, Command::Gc { jobs }).await?;
        }
    }
    Ok(wake)
}
