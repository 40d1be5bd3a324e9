//! Access control: tokens, their roles, and what each role may do.
//!
//! A token is a random secret shown once to whoever creates it; the
//! replicated state keeps only its SHA-256 (so a stolen data directory or
//! snapshot yields no usable secret) and a public accessor id that names it
//! in listings, in job ownership and in revocation. Every node checks tokens
//! against its own replica, so a check costs one local lookup; writes to the
//! token table wait until every reachable node has applied them (see
//! `api::grpc`), so a revoked token is refused at once everywhere.
//!
//! This module is pure policy: the checks live in `api::grpc`, the storage
//! in `store`.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of every secret, so a leaked one is recognisable (secret scanners,
/// logs) and a value pasted into the wrong place is caught early.
pub const SECRET_PREFIX: &str = "drv_";

/// Longest token name accepted: names are for humans, not payloads.
pub const MAX_NAME_BYTES: usize = 128;

/// What a token may do. Roles are fixed (as in etcd's built-ins and Nomad's
/// management/client split) rather than user-defined policies: four roles
/// cover the operators we build for, and a fixed set is easy to audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Everything, including managing tokens.
    Admin,
    /// Cluster and node operations, every job; not tokens.
    Operator,
    /// Submit jobs; see and stop only its own.
    Submitter,
    /// Read everything, change nothing.
    Viewer,
}

impl Role {
    /// Every role, for listings and tests.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Submitter, Role::Viewer];

    /// The name used in the API, the CLI and the README.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Submitter => "submitter",
            Role::Viewer => "viewer",
        }
    }

    /// Whether the role may perform `action` at all. Ownership (a submitter
    /// sees only its own jobs) is checked on top of this, per job.
    pub fn allows(self, action: Action) -> bool {
        use Action::*;
        match self {
            Role::Admin => true,
            Role::Operator => !matches!(action, ManageTokens),
            Role::Submitter => matches!(action, SubmitJob | ReadJobs | StopJob | ReadCluster),
            Role::Viewer => matches!(action, ReadJobs | ReadCluster),
        }
    }

    /// Whether the role is limited to the jobs its token submitted.
    pub fn owns_only(self) -> bool {
        self == Role::Submitter
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown role `{s}`: expected admin, operator, submitter or viewer")
            })
    }
}

/// The kinds of calls the API checks. Each RPC maps to exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// SubmitJob.
    SubmitJob,
    /// GetJob, ListJobs, job output, the event watch.
    ReadJobs,
    /// StopJob.
    StopJob,
    /// Cluster status and the node table.
    ReadCluster,
    /// Drain a node.
    OperateNodes,
    /// Add or remove peers, transfer leadership.
    OperateRaft,
    /// Create, list and revoke tokens.
    ManageTokens,
}

impl Action {
    /// Every action, so a table of who may do what can be checked whole.
    pub const ALL: [Action; 7] = [
        Action::SubmitJob,
        Action::ReadJobs,
        Action::StopJob,
        Action::ReadCluster,
        Action::OperateNodes,
        Action::OperateRaft,
        Action::ManageTokens,
    ];
}

/// One token as the replicated state keeps it: never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Public id: safe to show, names the token in listings, job ownership
    /// and revocation.
    pub accessor: String,
    /// A human label ("ci", "alice").
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the secret.
    pub secret_hash: [u8; 32],
    /// Leader's clock when it was created (Unix ms).
    pub created_at_ms: i64,
}

/// Mints a new secret: 32 random bytes from the OS-seeded CSPRNG, hex, with
/// [`SECRET_PREFIX`].
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let mut out = String::with_capacity(SECRET_PREFIX.len() + 64);
    out.push_str(SECRET_PREFIX);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Mints an accessor id (a ULID: sortable by creation, unique without
/// coordination).
pub fn new_accessor() -> String {
    ulid::Ulid::new().to_string()
}

/// The hash under which a secret is stored and looked up. A plain SHA-256
/// is enough: secrets are 256 random bits, not passwords, so there is
/// nothing for a slow hash to protect against.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Lowercase hex of a digest: how hashes are shown in files, logs and
/// metadata.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A SHA-256 digest from its 64 hex digits (`None` for anything else).
pub fn unhex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Checks a token name from a request.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("a token needs a name".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "token name of {} bytes exceeds {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("a token name cannot contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_readme_says() {
        use Action::*;
        for action in Action::ALL {
            assert!(Role::Admin.allows(action));
            assert_eq!(Role::Operator.allows(action), action != ManageTokens);
            assert_eq!(
                Role::Viewer.allows(action),
                matches!(action, ReadJobs | ReadCluster)
            );
            assert_eq!(
                Role::Submitter.allows(action),
                matches!(action, SubmitJob | ReadJobs | StopJob | ReadCluster)
            );
        }
        assert!(Role::Submitter.owns_only());
        assert!(!Role::Viewer.owns_only());
    }

    #[test]
    fn secrets_are_unique_prefixed_and_hash_stably() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX));
        assert_eq!(a.len(), SECRET_PREFIX.len() + 64);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }

    #[test]
    fn roles_parse_case_insensitively_and_refuse_unknown() {
        assert_eq!("Operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root".parse::<Role>().is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("ci\n").is_err());
        assert!(validate_name(&"x".repeat(MAX_NAME_BYTES + 1)).is_err());
        assert!(validate_name("ci").is_ok());
    }
}
