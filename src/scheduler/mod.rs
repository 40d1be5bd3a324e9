//! Leader-only scheduling policy: where a queued job goes, which nodes are
//! alive, which finished jobs to collect. Pure functions and soft state, no
//! I/O: `node::scheduler_loop` reads the committed tables, asks these, and
//! proposes the resulting commands.

mod liveness;

use std::collections::BTreeMap;

pub use self::liveness::{Liveness, Sighting};
use crate::jobs::{Capacity, JobId, NodeRecord, NodeStatus, Reserved, Resources};
use crate::raft::NodeId;

/// A node as the placement sees it during one pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLoad {
    /// The node.
    pub id: NodeId,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// What it offers.
    pub capacity: Capacity,
    /// CPU reserved by its assigned and running jobs.
    pub used_cpu_millis: u64,
    /// Memory reserved by them.
    pub used_memory_mib: u64,
    /// How many there are.
    pub active: u32,
    /// Ready, heartbeating, not draining.
    pub eligible: bool,
}

impl NodeLoad {
    /// A node with what its jobs already reserve; `alive` is the leader's
    /// liveness verdict.
    pub fn new(record: &NodeRecord, reserved: Reserved, alive: bool) -> NodeLoad {
        NodeLoad {
            id: record.id,
            labels: record.labels.clone(),
            capacity: record.capacity,
            used_cpu_millis: reserved.cpu_millis,
            used_memory_mib: reserved.memory_mib,
            active: reserved.jobs,
            eligible: alive && record.status == NodeStatus::Ready && record.drain.is_none(),
        }
    }

    /// Counts a job's reservation against the node.
    fn reserve(&mut self, r: &Resources) {
        self.used_cpu_millis += u64::from(r.cpu_millis);
        self.used_memory_mib += u64::from(r.memory_mib);
        self.active += 1;
    }

    fn fits(&self, r: &Resources) -> bool {
        self.used_cpu_millis + u64::from(r.cpu_millis) <= self.capacity.cpu_millis
            && self.used_memory_mib + u64::from(r.memory_mib) <= self.capacity.memory_mib
    }

    fn satisfies(&self, constraints: &BTreeMap<String, String>) -> bool {
        constraints
            .iter()
            .all(|(k, v)| self.labels.get(k).is_some_and(|have| have == v))
    }

    /// Whether the node's policy (as its labels say) lets the job run.
    fn offers(&self, needs: &SandboxNeeds<'_>) -> bool {
        crate::jobs::policy::node_offers(&self.labels, needs.network, needs.user)
    }

    /// Load after adding `r`, in parts per million of the scarcer resource.
    fn load_with(&self, r: &Resources) -> u64 {
        let frac = |used: u64, add: u64, cap: u64| (used + add) * 1_000_000 / cap.max(1);
        frac(
            self.used_cpu_millis,
            u64::from(r.cpu_millis),
            self.capacity.cpu_millis,
        )
        .max(frac(
            self.used_memory_mib,
            u64::from(r.memory_mib),
            self.capacity.memory_mib,
        ))
    }
}

/// What a job asks of a node's sandbox policy, beyond labels and room.
#[derive(Clone, Copy, Debug, Default)]
pub struct SandboxNeeds<'a> {
    /// It asks for a network.
    pub network: bool,
    /// It runs as this `UID:GID`.
    pub user: Option<&'a str>,
}

/// Picks the node for a job and reserves its resources there: among the
/// eligible nodes whose labels satisfy the constraints, whose policy lets
/// it have what it `needs`, and that have room, the least loaded after
/// placement (then fewest jobs, then lowest id), so work spreads over the
/// cluster. `None`: no node can take it now.
pub fn place(
    nodes: &mut [NodeLoad],
    resources: &Resources,
    constraints: &BTreeMap<String, String>,
    needs: SandboxNeeds<'_>,
) -> Option<NodeId> {
    let best = nodes
        .iter_mut()
        .filter(|n| n.eligible && n.satisfies(constraints) && n.offers(&needs) && n.fits(resources))
        .min_by_key(|n| (n.load_with(resources), n.active, n.id))?;
    best.reserve(resources);
    Some(best.id)
}

/// `quotas.max_active_per_owner` during one placement pass: each owner's
/// active jobs, counted up as the pass places more. The caller passes the
/// owners the quota binds (submitter tokens) and `None` for the rest.
#[derive(Clone, Debug)]
pub struct ActiveQuota {
    max: u64,
    active: std::collections::HashMap<String, u64>,
}

impl ActiveQuota {
    /// At most `max` active jobs per owner; `active` is what each holds now.
    pub fn new(max: u64, active: std::collections::HashMap<String, u64>) -> ActiveQuota {
        ActiveQuota { max, active }
    }

    /// Whether a job of `owner` may be placed now.
    pub fn allows(&self, owner: Option<&str>) -> bool {
        owner.is_none_or(|o| self.active.get(o).copied().unwrap_or(0) < self.max)
    }

    /// The owners at their quota now (before the pass places anything).
    pub fn held(&self) -> impl Iterator<Item = &str> {
        self.active
            .iter()
            .filter(|(_, n)| **n >= self.max)
            .map(|(o, _)| o.as_str())
    }

    /// Counts a job of `owner` placed in this pass.
    pub fn placed(&mut self, owner: Option<&str>) {
        if let Some(owner) = owner {
            *self.active.entry(owner.to_string()).or_default() += 1;
        }
    }
}

/// True if no eligible node could take even the smallest possible job: the
/// pass can stop reading the queue.
pub fn cluster_full(nodes: &[NodeLoad]) -> bool {
    let smallest = Resources {
        cpu_millis: 1,
        memory_mib: 6,
        pids: 1,
    };
    !nodes.iter().any(|n| n.eligible && n.fits(&smallest))
}

/// Finished jobs to delete: those finished before `now - retention`, and the
/// oldest beyond `retain_max`. `oldest` is in finish order (from the index);
/// `finished_count` the total.
pub fn gc_candidates(
    oldest: &[(i64, JobId)],
    finished_count: u64,
    now_ms: i64,
    retention_ms: i64,
    retain_max: u64,
) -> Vec<JobId> {
    let excess = finished_count.saturating_sub(retain_max) as usize;
    let cutoff = now_ms.saturating_sub(retention_ms);
    oldest
        .iter()
        .enumerate()
        .take_while(|(i, (at, _))| *i < excess || *at < cutoff)
        .map(|(_, (_, id))| *id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId, cpu: u64, labels: &[(&str, &str)]) -> NodeLoad {
        NodeLoad {
            id,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            capacity: Capacity {
                cpu_millis: cpu,
                memory_mib: 4096,
            },
            used_cpu_millis: 0,
            used_memory_mib: 0,
            active: 0,
            eligible: true,
        }
    }

    fn job(cpu: u32) -> Resources {
        Resources {
            cpu_millis: cpu,
            memory_mib: 64,
            pids: 10,
        }
    }

    #[test]
    fn spreads_over_equal_nodes() {
        let mut nodes = vec![node(1, 2000, &[]), node(2, 2000, &[]), node(3, 2000, &[])];
        let none = BTreeMap::new();
        let placed: Vec<_> = (0..6)
            .filter_map(|_| place(&mut nodes, &job(100), &none, SandboxNeeds::default()))
            .collect();
        assert_eq!(placed, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn respects_capacity_constraints_and_eligibility() {
        let mut nodes = vec![
            node(1, 250, &[("zone", "a")]),
            node(2, 4000, &[("zone", "b")]),
        ];
        nodes[1].eligible = false;
        let zone_a = BTreeMap::from([("zone".to_string(), "a".to_string())]);
        assert_eq!(
            place(&mut nodes, &job(200), &zone_a, SandboxNeeds::default()),
            Some(1)
        );
        // Node 1 is full for another 200m; node 2 is not eligible.
        assert_eq!(
            place(
                &mut nodes,
                &job(200),
                &BTreeMap::new(),
                SandboxNeeds::default()
            ),
            None
        );
        let zone_c = BTreeMap::from([("zone".to_string(), "c".to_string())]);
        assert_eq!(
            place(&mut nodes, &job(10), &zone_c, SandboxNeeds::default()),
            None
        );
        assert!(!cluster_full(&nodes));
        place(
            &mut nodes,
            &job(50),
            &BTreeMap::new(),
            SandboxNeeds::default(),
        );
        assert!(cluster_full(&nodes));
    }

    #[test]
    fn a_network_or_user_job_goes_only_where_the_policy_lets_it_run() {
        let open = crate::jobs::policy::SandboxPolicy {
            allow_network: true,
            allowed_users: vec!["1000:*".into()],
            ..Default::default()
        };
        let mut nodes = vec![node(1, 4000, &[]), node(2, 4000, &[])];
        nodes[1].labels.extend(open.offers());
        let none = BTreeMap::new();
        let network = SandboxNeeds {
            network: true,
            user: None,
        };
        let user = SandboxNeeds {
            network: false,
            user: Some("1000:1000"),
        };
        for _ in 0..3 {
            assert_eq!(place(&mut nodes, &job(100), &none, network), Some(2));
            assert_eq!(place(&mut nodes, &job(100), &none, user), Some(2));
        }
        let root = SandboxNeeds {
            network: false,
            user: Some("0:0"),
        };
        assert_eq!(place(&mut nodes, &job(100), &none, root), None);
        // Plain jobs still spread: node 1 is the emptier one now.
        assert_eq!(
            place(&mut nodes, &job(100), &none, SandboxNeeds::default()),
            Some(1)
        );
    }

    #[test]
    fn an_owner_at_its_active_quota_waits_while_others_are_placed() {
        let mut quota = ActiveQuota::new(2, [("alice".to_string(), 1)].into());
        assert!(quota.allows(Some("alice")));
        quota.placed(Some("alice"));
        assert!(!quota.allows(Some("alice")));
        assert!(quota.allows(Some("bob")));
        quota.placed(None);
        assert!(quota.allows(None), "jobs without an owner are not bound");
        let held: Vec<&str> = quota.held().collect();
        assert_eq!(held, ["alice"]);
    }

    #[test]
    fn collects_by_age_and_by_count() {
        let ids: Vec<(i64, JobId)> = (0..5)
            .map(|i| (i * 1000, JobId::from_parts(1, i as u128)))
            .collect();
        // Retention: finished before 2500 go.
        assert_eq!(gc_candidates(&ids, 5, 3500, 1000, 100).len(), 3);
        // Count: keep at most 1.
        assert_eq!(gc_candidates(&ids, 5, 0, 1_000_000, 1).len(), 4);
        assert!(gc_candidates(&ids, 5, 0, 1_000_000, 100).is_empty());
    }
}
