//! The sandbox policy of `[executor.policy]`: who a job's container runs
//! as, which images it may use and how they are fetched, its ulimits and
//! block-I/O rates. The
//! API checks a job against it at submit (a clear refusal naming the key);
//! the executor applies it again when it creates the container, so a node
//! with a stricter policy never runs what another node let in.

use serde::{Deserialize, Serialize};

use super::spec::user_ids;

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
    /// Wildcard patterns of `UID:GID` a job may ask to run as (its `user`;
    /// a bare UID is matched as `UID:UID`), e.g. `1000:1000` or `20??:*`.
    /// Empty: a job may not choose, every job runs as `user`. Root is never
    /// implied: only a pattern that matches `0:...` lets a job be root.
    pub allowed_users: Vec<String>,
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
    /// Bytes per second one job may read from each block device under the
    /// node's Docker data root and `executor.scratch_dir`; 0 = no limit.
    /// Under cgroup v1 the kernel throttles direct and synchronous I/O
    /// only (cached reads and writeback are not charged to the job).
    pub io_read_bps: u64,
    /// As `io_read_bps`, for writes.
    pub io_write_bps: u64,
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
            allowed_users: Vec::new(),
            io_read_bps: 0,
            io_write_bps: 0,
        }
    }
}

impl SandboxPolicy {
    /// Why the policy itself is unusable (a config error), naming the key.
    pub fn problem(&self, default_image: &str) -> Option<(&'static str, String)> {
        if user_ids(&self.user).is_err() {
            return Some((
                "executor.policy.user",
                format!("`{}` is not UID or UID:GID (numbers)", self.user),
            ));
        }
        for (key, patterns) in [
            ("executor.policy.allowed_images", &self.allowed_images),
            ("executor.policy.allowed_users", &self.allowed_users),
        ] {
            if let Some(problem) = pattern_problem(patterns) {
                return Some((key, problem));
            }
        }
        if self.allowed_users.iter().any(|p| p.contains(',')) {
            return Some((
                "executor.policy.allowed_users",
                "a pattern cannot hold a comma".into(),
            ));
        }
        if let Err(why) = super::check_map("executor.policy.allowed_users", &self.offers()) {
            return Some(("executor.policy.allowed_users", why));
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
    /// The `UID:GID` a job's container runs as: the policy's `user`, or the
    /// job's own `user` when `allowed_users` lets it choose that one. Err
    /// is the refusal for the submitter, naming the key.
    pub fn run_as(&self, requested: Option<&str>) -> Result<String, String> {
        let Some(requested) = requested else {
            let (uid, gid) = user_ids(&self.user)?;
            return Ok(format!("{uid}:{gid}"));
        };
        let (uid, gid) = user_ids(requested)?;
        let ids = format!("{uid}:{gid}");
        if self.allowed_users.is_empty() {
            return Err(format!(
                "`user`: jobs may not choose who they run as here \
                 (executor.policy.allowed_users is empty; they run as {})",
                self.user
            ));
        }
        if !self
            .allowed_users
            .iter()
            .any(|pattern| wildcard_match(pattern.trim(), &ids))
        {
            return Err(format!(
                "`user` {ids} is not allowed here: executor.policy.allowed_users is [{}]",
                self.allowed_users.join(", ")
            ));
        }
        Ok(ids)
    }

    /// Why a job of a caller with `role` may not have the network it asks
    /// for, naming the key: the refusal and whether it is the caller's role
    /// (PERMISSION_DENIED) rather than the job (INVALID_ARGUMENT).
    pub fn network_refusal(&self, role: crate::acl::Role) -> Option<(String, bool)> {
        // The role first: a caller another node would give a network must
        // still be one this node's network_roles lists.
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
        if !self.allow_network {
            return Some((
                "`network`: jobs get no network here (executor.policy.allow_network is false)"
                    .into(),
                false,
            ));
        }
        None
    }
}

/// Prefix of the labels a node sets itself to tell the leader what its
/// policy lets a job have; `executor.labels` may not use it, so no
/// operator label can claim (or hide) what the policy says.
pub const RESERVED_LABEL_PREFIX: &str = "drover.";
/// Set to `allowed` on a node whose policy gives jobs a network.
const LABEL_NETWORK: &str = "drover.network";
/// The node's `allowed_users`, comma-separated.
const LABEL_USERS: &str = "drover.users";

impl SandboxPolicy {
    /// The labels this node adds to its heartbeat so the leader places a
    /// job that asks for a network or a user only where it may run.
    pub fn offers(&self) -> std::collections::BTreeMap<String, String> {
        let mut labels = std::collections::BTreeMap::new();
        if self.allow_network {
            labels.insert(LABEL_NETWORK.to_string(), "allowed".to_string());
        }
        if !self.allowed_users.is_empty() {
            labels.insert(LABEL_USERS.to_string(), self.allowed_users.join(","));
        }
        labels
    }
}

/// Whether a node with `labels` (its heartbeat's, with [`SandboxPolicy::offers`])
/// lets a job have the network and the user (`UID:GID`, as the API records
/// it) it asks for. The role check stays at submit, where the caller is known.
pub fn node_offers(
    labels: &std::collections::BTreeMap<String, String>,
    network: bool,
    user: Option<&str>,
) -> bool {
    let network_ok = !network || labels.get(LABEL_NETWORK).is_some_and(|v| v == "allowed");
    let user_ok = user.is_none_or(|user| {
        labels.get(LABEL_USERS).is_some_and(|patterns| {
            patterns
                .split(',')
                .any(|pattern| wildcard_match(pattern.trim(), user))
        })
    });
    network_ok && user_ok
}

/// Why a list of wildcard patterns is unusable (an empty or broken one).
fn pattern_problem(patterns: &[String]) -> Option<String> {
    patterns.iter().find_map(|pattern| {
        if pattern.trim().is_empty() {
            return Some("an empty pattern".into());
        }
        glob::Pattern::new(pattern.trim())
            .err()
            .map(|e| format!("pattern {pattern:?}: {e}"))
    })
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
        // The role is checked first, so a node that gives no network still
        // tells a submitter it may not ask (another node's network would
        // not make it allowed).
        let (_, by_role) = closed.network_refusal(Role::Submitter).expect("closed");
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
    fn a_job_runs_as_the_policy_user_unless_allowed_to_choose() {
        let closed = SandboxPolicy::default();
        assert_eq!(closed.run_as(None).as_deref(), Ok("65534:65534"));
        let why = closed.run_as(Some("1000")).expect_err("may not choose");
        assert!(why.contains("executor.policy.allowed_users"), "{why}");
        let bare_uid = SandboxPolicy {
            user: "4242".into(),
            ..SandboxPolicy::default()
        };
        assert_eq!(bare_uid.run_as(None).as_deref(), Ok("4242:4242"));
        let open = SandboxPolicy {
            allowed_users: vec!["1000:1000".into(), "20??:*".into()],
            ..SandboxPolicy::default()
        };
        assert_eq!(open.run_as(Some("1000")).as_deref(), Ok("1000:1000"));
        assert_eq!(open.run_as(Some("2001:7")).as_deref(), Ok("2001:7"));
        for refused in ["0", "0:0", "1000:0", "3000"] {
            let why = open.run_as(Some(refused)).expect_err(refused);
            assert!(why.contains("executor.policy.allowed_users"), "{why}");
        }
        let why = open.run_as(Some("root")).expect_err("a name");
        assert!(why.contains("UID:GID"), "{why}");
        let broken = SandboxPolicy {
            allowed_users: vec![" ".into()],
            ..SandboxPolicy::default()
        };
        assert_eq!(
            broken.problem("").map(|p| p.0),
            Some("executor.policy.allowed_users")
        );
    }

    #[test]
    fn a_node_offers_what_its_policy_allows_and_nothing_more() {
        let closed = SandboxPolicy::default().offers();
        assert!(closed.is_empty(), "{closed:?}");
        assert!(node_offers(&closed, false, None));
        assert!(!node_offers(&closed, true, None), "no network");
        assert!(!node_offers(&closed, false, Some("1000:1000")), "no user");
        let open = SandboxPolicy {
            allow_network: true,
            allowed_users: vec!["1000:1000".into(), "20??:*".into()],
            ..SandboxPolicy::default()
        }
        .offers();
        assert!(node_offers(&open, true, Some("1000:1000")));
        assert!(node_offers(&open, false, Some("2001:5")));
        assert!(!node_offers(&open, false, Some("0:0")));
        assert!(!node_offers(&open, true, Some("1000:1001")));
        let comma = SandboxPolicy {
            allowed_users: vec!["1000:1000,0:0".into()],
            ..SandboxPolicy::default()
        };
        assert_eq!(
            comma.problem("").map(|p| p.0),
            Some("executor.policy.allowed_users")
        );
        let long = SandboxPolicy {
            allowed_users: (0..100).map(|n| format!("{n}:{n}")).collect(),
            ..SandboxPolicy::default()
        };
        assert_eq!(
            long.problem("").map(|p| p.0),
            Some("executor.policy.allowed_users")
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
