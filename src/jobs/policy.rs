//! The sandbox policy of `[executor.policy]`: who a job's container runs
//! as, which images it may use and how they are fetched, its ulimits. The
//! API checks a job against it at submit (a clear refusal naming the key);
//! the executor applies it again when it creates the container, so a node
//! with a stricter policy never runs what another node let in.

use serde::{Deserialize, Serialize};

/// When the executor fetches an image from its registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Only images already on the node run (air-gapped nodes, images built
    /// locally): a missing one fails the attempt with IMAGE_UNAVAILABLE.
    Never,
    /// Pull an image the node does not have (Docker's own default).
    #[default]
    Missing,
    /// Pull before every attempt, so a moving tag runs its newest image.
    Always,
}

/// `[executor.policy]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxPolicy {
    /// `UID:GID` every container runs as: not root, so a process that got
    /// out of its namespaces is nobody on the host (65534 = `nobody`).
    pub user: String,
    /// Wildcard patterns (`*` for any run of characters) an image must
    /// match, e.g. `drover-job:*` or `registry.internal/*`; empty = any.
    pub allowed_images: Vec<String>,
    /// When images are pulled.
    pub pull: PullPolicy,
    /// Open files per process (`RLIMIT_NOFILE`, soft and hard).
    pub ulimit_nofile: u64,
    /// Processes of the container's user (`RLIMIT_NPROC`); 0 = not set. The
    /// kernel counts this per user ID across the machine, so it bounds every
    /// container running as `user` together; a job's own `resources.pids`
    /// (the cgroup's limit) bounds one container.
    pub ulimit_nproc: u64,
    /// Whether a job may ask for a network (`network: true`) at all. Off:
    /// every job runs with no network interface but loopback. On: such jobs
    /// join the node's own job network, which cannot reach the host (see
    /// `executor::network`).
    pub allow_network: bool,
    /// The token roles that may ask for a network when it is allowed (with
    /// ACLs off every caller is `admin`).
    pub network_roles: Vec<String>,
}

impl Default for SandboxPolicy {
    fn default() -> Self {
        SandboxPolicy {
            user: "65534:65534".into(),
            allowed_images: Vec::new(),
            pull: PullPolicy::Missing,
            ulimit_nofile: 1024,
            ulimit_nproc: 0,
            allow_network: false,
            network_roles: vec!["admin".into(), "operator".into()],
        }
    }
}

impl SandboxPolicy {
    /// Why the policy itself is unusable (a config error), naming the key.
    pub fn problem(&self, default_image: &str) -> Option<(&'static str, String)> {
        let numeric = |part: &str| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit());
        let user_ok = match self.user.split_once(':') {
            Some((uid, gid)) => numeric(uid) && numeric(gid),
            None => numeric(&self.user),
        };
        if !user_ok {
            return Some((
                "executor.policy.user",
                format!("`{}` is not UID or UID:GID (numbers)", self.user),
            ));
        }
        for pattern in &self.allowed_images {
            if pattern.trim().is_empty() {
                return Some(("executor.policy.allowed_images", "an empty pattern".into()));
            }
            if let Err(e) = glob::Pattern::new(pattern.trim()) {
                return Some((
                    "executor.policy.allowed_images",
                    format!("pattern {pattern:?}: {e}"),
                ));
            }
        }
        if let Some(role) = self
            .network_roles
            .iter()
            .find(|r| r.parse::<crate::acl::Role>().is_err())
        {
            return Some((
                "executor.policy.network_roles",
                format!("`{role}` is not a role (admin, operator, submitter, viewer)"),
            ));
        }
        if self.ulimit_nofile == 0 {
            return Some(("executor.policy.ulimit_nofile", "must be positive".into()));
        }
        if !default_image.is_empty() && !self.allows_image(default_image) {
            return Some((
                "executor.policy.allowed_images",
                format!("does not allow executor.default_image `{default_image}`"),
            ));
        }
        None
    }

    /// Whether `image` matches one of `allowed_images` (or the list is empty).
    pub fn allows_image(&self, image: &str) -> bool {
        self.allowed_images.is_empty()
            || self
                .allowed_images
                .iter()
                .any(|pattern| wildcard_match(pattern.trim(), image))
    }

    /// The refusal of an image the policy does not allow, for the submitter.
    pub fn image_refusal(&self, image: &str) -> Option<String> {
        (!self.allows_image(image)).then(|| {
            format!(
                "`image` {image:?} is not allowed here: executor.policy.allowed_images is [{}]",
                self.allowed_images.join(", ")
            )
        })
    }
}

impl SandboxPolicy {
    /// Why a job of a caller with `role` may not have the network it asks
    /// for, naming the key: the refusal and whether it is the caller's role
    /// (PERMISSION_DENIED) rather than the job (INVALID_ARGUMENT).
    pub fn network_refusal(&self, role: crate::acl::Role) -> Option<(String, bool)> {
        if !self.allow_network {
            return Some((
                "`network`: jobs get no network here (executor.policy.allow_network is false)"
                    .into(),
                false,
            ));
        }
        if !self
            .network_roles
            .iter()
            .any(|r| r.parse::<crate::acl::Role>() == Ok(role))
        {
            return Some((
                format!(
                    "`network`: a {role} token may not ask for a network \
                     (executor.policy.network_roles is [{}])",
                    self.network_roles.join(", ")
                ),
                true,
            ));
        }
        None
    }
}

/// Shell-style wildcards (the `glob` crate): `*` matches any run of
/// characters, `/` included; an invalid pattern matches nothing (and is a
/// config error, see [`SandboxPolicy::problem`]).
fn wildcard_match(pattern: &str, text: &str) -> bool {
    glob::Pattern::new(pattern).is_ok_and(|p| p.matches(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_patterns_match_as_operators_expect() {
        let policy = SandboxPolicy {
            allowed_images: vec!["drover-job:*".into(), "registry.internal/*".into()],
            ..SandboxPolicy::default()
        };
        for ok in [
            "drover-job:latest",
            "drover-job:",
            "registry.internal/team/app:1",
        ] {
            assert!(policy.allows_image(ok), "{ok}");
        }
        for refused in [
            "busybox",
            "drover-job",
            "evil/drover-job:latest",
            "registry.internal",
        ] {
            assert!(!policy.allows_image(refused), "{refused}");
        }
        assert!(SandboxPolicy::default().allows_image("anything:at-all"));
        assert!(wildcard_match("a*b*c", "a-x-b-y-c"));
        assert!(!wildcard_match("a*b*c", "a-x-c-y-b"));
        assert!(wildcard_match("exact", "exact"));
        assert!(
            !wildcard_match("ab*ba", "aba"),
            "prefix and suffix may not overlap"
        );
        let broken = SandboxPolicy {
            allowed_images: vec!["drover-job:[".into()],
            ..SandboxPolicy::default()
        };
        assert_eq!(
            broken.problem("").map(|p| p.0),
            Some("executor.policy.allowed_images")
        );
    }

    #[test]
    fn a_network_needs_the_policy_and_a_role_it_names() {
        use crate::acl::Role;
        let closed = SandboxPolicy::default();
        let (why, by_role) = closed.network_refusal(Role::Admin).expect("off by default");
        assert!(why.contains("executor.policy.allow_network"), "{why}");
        assert!(!by_role);
        let open = SandboxPolicy {
            allow_network: true,
            ..SandboxPolicy::default()
        };
        assert_eq!(open.network_refusal(Role::Operator), None);
        let (why, by_role) = open.network_refusal(Role::Submitter).expect("not its role");
        assert!(why.contains("executor.policy.network_roles"), "{why}");
        assert!(by_role);
        let typo = SandboxPolicy {
            network_roles: vec!["admins".into()],
            ..SandboxPolicy::default()
        };
        assert_eq!(
            typo.problem("").map(|p| p.0),
            Some("executor.policy.network_roles")
        );
    }

    #[test]
    fn a_bad_policy_names_its_key() {
        let bad_user = SandboxPolicy {
            user: "nobody".into(),
            ..SandboxPolicy::default()
        };
        assert_eq!(
            bad_user.problem("x").map(|p| p.0),
            Some("executor.policy.user")
        );
        let locked_out = SandboxPolicy {
            allowed_images: vec!["registry.internal/*".into()],
            ..SandboxPolicy::default()
        };
        assert_eq!(
            locked_out.problem("drover-job:latest").map(|p| p.0),
            Some("executor.policy.allowed_images")
        );
        assert_eq!(SandboxPolicy::default().problem("drover-job:latest"), None);
    }
}
