//! Whether a submitted job's sandbox asks (an image, a user, a network)
//! can be met in this cluster, checked at submit so a job that no node
//! would run is refused with the key to change instead of waiting forever.
//!
//! The image is checked against this node's `executor.policy` (images are
//! a cluster-wide choice). A user and a network are offered per node (each
//! node's heartbeat labels carry what its policy allows, see
//! `SandboxPolicy::offers`), so those are met when this node's policy or
//! any node in the replicated node table offers them; the leader then
//! places the job only on such a node. Which roles may ask for a network is
//! this node's `network_roles`.

use super::Node;
use crate::acl::Role;
use crate::jobs::policy::node_offers;
use crate::jobs::JobSpec;

/// Why a job cannot be taken: the message names the key; `by_role` says
/// the caller's role is the reason (PERMISSION_DENIED), not the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRefusal {
    /// For the submitting user.
    pub message: String,
    /// Whether another role could have it.
    pub by_role: bool,
}

impl Node {
    /// Checks `spec` for a caller of `role` and records its user as it
    /// will run (`UID:GID`). Err: why no node would run it.
    pub fn admit_sandbox(&self, role: Role, spec: &mut JobSpec) -> Result<(), SandboxRefusal> {
        let policy = &self.config.executor.policy;
        let refusal = |message: String| SandboxRefusal {
            message,
            by_role: false,
        };
        if let Some(why) = policy.image_refusal(&spec.image) {
            return Err(refusal(why));
        }
        let offered = |network: bool, user: Option<&str>| {
            self.node_records()
                .map(|nodes| nodes.iter().any(|n| node_offers(&n.labels, network, user)))
                .unwrap_or(false)
        };
        if let Some(asked) = spec.user.clone() {
            let user = match policy.run_as(Some(&asked)) {
                Ok(user) => user,
                Err(why) => {
                    // Refused here; another node may offer it (once the
                    // syntax is right: a name is never a user).
                    let (uid, gid) = crate::jobs::user_ids(&asked).map_err(refusal)?;
                    let user = format!("{uid}:{gid}");
                    if !offered(false, Some(&user)) {
                        return Err(refusal(format!(
                            "{why}; no other node's executor.policy.allowed_users lists {user} either"
                        )));
                    }
                    user
                }
            };
            spec.user = Some(user);
        }
        if spec.network {
            match policy.network_refusal(role) {
                Some((why, true)) => {
                    return Err(SandboxRefusal {
                        message: why,
                        by_role: true,
                    })
                }
                Some((why, false)) if !offered(true, None) => {
                    return Err(refusal(format!("{why}, nor on any other node")))
                }
                _ => {}
            }
        }
        Ok(())
    }
}
