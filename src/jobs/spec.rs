//! What a client asks to run, and the validation every front end shares.

use serde::{Deserialize, Serialize};

/// Upper bound on `command`, in bytes. Bounded so that one entry stays far
/// below the Raft message size limit and a client cannot bloat the log.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// Upper bound on `args`, counted as the sum of each argument's length plus
/// one (its NUL terminator in `execve`). Counting the terminator also bounds
/// the number of arguments, even empty ones.
pub const MAX_ARGS_BYTES: usize = 16 * 1024;

/// Bounds that keep one job's record small (it is replicated and kept in
/// every node's table) and its numbers in ranges Docker accepts.
pub mod limits {
    /// Most environment variables per job.
    pub const MAX_ENV_VARS: usize = 128;
    /// Most bytes over all environment names and values.
    pub const MAX_ENV_BYTES: usize = 32 * 1024;
    /// Longest image reference.
    pub const MAX_IMAGE_BYTES: usize = 255;
    /// CPU in millicores: 1 to 1,024 cores.
    pub const CPU_MILLIS: std::ops::RangeInclusive<u32> = 1..=1_024_000;
    /// Memory in MiB: Docker's minimum (6 MiB) to 1 TiB.
    pub const MEMORY_MIB: std::ops::RangeInclusive<u32> = 6..=1_048_576;
    /// Process count limit.
    pub const PIDS: std::ops::RangeInclusive<u32> = 1..=1_000_000;
    /// Longest timeout: 30 days.
    pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3600 * 1000;
    /// Attempts, the first one included.
    pub const ATTEMPTS: std::ops::RangeInclusive<u32> = 1..=100;
    /// Longest retry backoff: 1 day.
    pub const MAX_BACKOFF_MS: u64 = 24 * 3600 * 1000;
    /// Priority range; higher runs first.
    pub const PRIORITY: std::ops::RangeInclusive<i32> = -1000..=1000;
    /// Most constraints or labels, each.
    pub const MAX_LABELS: usize = 32;
    /// Longest label / constraint key or value, and idempotency key.
    pub const MAX_KEY_BYTES: usize = 256;
}

/// Resources reserved for the job on its node and enforced as container
/// limits, so that placement and isolation use the same numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in millicores (1000 = one core).
    pub cpu_millis: u32,
    /// Memory limit in MiB (no swap on top).
    pub memory_mib: u32,
    /// Maximum number of processes.
    pub pids: u32,
}

impl Default for Resources {
    /// Small enough that a 2-core node runs 20 of them at once.
    fn default() -> Self {
        Resources {
            cpu_millis: 100,
            memory_mib: 128,
            pids: 256,
        }
    }
}

/// How often, and how patiently, a failed attempt is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; 1 means no retry.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub initial_backoff_ms: u64,
    /// Cap on the doubling.
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `next` (2, 3, ...): initial * 2^(next-2),
    /// capped. Pure, so every replica computes the same not-before time.
    pub fn backoff_before(&self, next: u32) -> u64 {
        let doublings = next.saturating_sub(2).min(40);
        self.initial_backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_backoff_ms)
    }
}

/// What to run and how. Exactly one of `command` (a shell string run as
/// `/bin/sh -c`) or `args` (an argv, run without a shell) is set.
///
/// The API fills defaults (image from the node's config, resources) before
/// proposing, so the record in the table says exactly what ran.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// A shell command line.
    pub command: Option<String>,
    /// An argv; `args[0]` is the program.
    pub args: Vec<String>,
    /// The container image; empty means the executing node's default.
    pub image: String,
    /// Extra environment, in order. `DROVER_JOB_ID` and `DROVER_ATTEMPT`
    /// are always set by the executor and cannot be overridden.
    pub env: Vec<(String, String)>,
    /// Reserved on the node and enforced on the container.
    pub resources: Resources,
    /// Wall-clock limit of one attempt, from its start (ms); 0 = none.
    pub timeout_ms: u64,
    /// Retries of failed, timed-out and lost attempts.
    pub retry: RetryPolicy,
    /// Higher is placed first; ties go to the older job.
    pub priority: i32,
    /// Node labels the job needs (each key must have exactly this value).
    pub constraints: std::collections::BTreeMap<String, String>,
    /// A resubmission with the same key returns the first job.
    pub idempotency_key: Option<String>,
    /// Whether the container gets a network (none by default).
    pub network: bool,
    /// The user's own labels, for filtering.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Who the container runs as, `UID` or `UID:GID` (numbers; a bare UID
    /// runs with the GID of the same number). None: the node's
    /// `executor.policy.user`. Only what `executor.policy.allowed_users`
    /// lists is accepted, so a tenant cannot choose root.
    pub user: Option<String>,
}

/// Why a [`JobSpec`] is refused. Messages are meant for the submitting user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Neither `command` nor `args` is set.
    #[error("a job needs something to run: set either `command` or `args`")]
    NothingToRun,
    /// Both are set: which one to run would be a guess.
    #[error("set either `command` or `args`, not both")]
    BothCommandAndArgs,
    /// `command` is the empty string.
    #[error("`command` is empty")]
    EmptyCommand,
    /// `args[0]`, the program, is empty.
    #[error("`args[0]` (the program to run) is empty")]
    EmptyProgram,
    /// `command` exceeds [`MAX_COMMAND_BYTES`].
    #[error("`command` is {len} bytes; the limit is {max} bytes")]
    CommandTooLong { len: usize, max: usize },
    /// `args` exceed [`MAX_ARGS_BYTES`].
    #[error("`args` take {len} bytes (each argument counts its length plus one); the limit is {max} bytes")]
    ArgsTooLong { len: usize, max: usize },
    /// A C string cannot carry a NUL; the process would see a truncated command.
    #[error("`command` contains a NUL byte, which no process can receive")]
    NulInCommand,
    /// As `NulInCommand`, for argument `index`.
    #[error("`args[{index}]` contains a NUL byte, which no process can receive")]
    NulInArg { index: usize },
    /// Any other field out of its bounds; the message names the field.
    #[error("{0}")]
    Invalid(String),
}

/// Bounds of a label or constraint map, wherever one comes from (a job, a
/// node's `executor.labels`, a peer's heartbeat): at most
/// `limits::MAX_LABELS` entries, keys of 1 to `limits::MAX_KEY_BYTES`
/// bytes, values at most that, no NUL byte. The error names `what`.
pub fn check_map(
    what: &str,
    map: &std::collections::BTreeMap<String, String>,
) -> Result<(), String> {
    use limits::{MAX_KEY_BYTES, MAX_LABELS};
    if map.len() > MAX_LABELS {
        return Err(format!(
            "`{what}` has {} entries; the limit is {MAX_LABELS}",
            map.len()
        ));
    }
    if let Some((k, _)) = map
        .iter()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Err(format!(
            "`{what}` key {k:?}: keys and values cannot hold a NUL byte"
        ));
    }
    if let Some((k, _)) = map
        .iter()
        .find(|(k, v)| k.is_empty() || k.len() > MAX_KEY_BYTES || v.len() > MAX_KEY_BYTES)
    {
        return Err(format!(
            "`{what}` key {k:?}: keys must be 1 to {MAX_KEY_BYTES} bytes, values at most {MAX_KEY_BYTES}"
        ));
    }
    Ok(())
}

/// Why `image` is not a reference Docker could pull or find, by the
/// distribution grammar (`name[:tag][@digest]`, lower-case name, a digest of
/// the right length); None when it is one, or empty (the node's default).
fn image_error(image: &str) -> Option<String> {
    use limits::MAX_IMAGE_BYTES;
    if image.is_empty() {
        return None;
    }
    if image.len() > MAX_IMAGE_BYTES {
        return Some(format!(
            "`image` is {} bytes; the limit is {MAX_IMAGE_BYTES}",
            image.len()
        ));
    }
    match oci_spec::distribution::Reference::try_from(image) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "`image` {image:?} is not a valid image reference: {e} \
             (NAME[:TAG][@DIGEST], e.g. drover-job:latest or registry.internal/team/app@sha256:<64 hex>)"
        )),
    }
}

/// The numeric `(uid, gid)` of a job's `user`, `UID` or `UID:GID`; a bare
/// UID gets the GID of the same number (the user's private group), never
/// Docker's fallback of group 0. Names are refused: they would resolve in
/// the image's `/etc/passwd`, so the same name could be root in one image.
pub fn user_ids(user: &str) -> Result<(u32, u32), String> {
    let number = |part: &str| {
        (!part.is_empty() && part.len() <= 10 && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse::<u32>().ok())
            .flatten()
    };
    let ids = match user.split_once(':') {
        Some((uid, gid)) => number(uid).zip(number(gid)),
        None => number(user).map(|uid| (uid, uid)),
    };
    ids.ok_or_else(|| {
        format!(
            "`user` {user:?} is not UID or UID:GID (numbers up to {}, e.g. 1000:1000)",
            u32::MAX
        )
    })
}

/// Bytes of name/value pairs, each counted with two separators (`=` and
/// the terminator of an environment entry).
fn pairs_bytes<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> usize {
    pairs.into_iter().map(|(k, v)| k.len() + v.len() + 2).sum()
}

impl JobSpec {
    /// A spec that runs `command` through `/bin/sh -c`.
    pub fn shell(command: impl Into<String>) -> JobSpec {
        JobSpec {
            command: Some(command.into()),
            ..JobSpec::default()
        }
    }

    /// A spec that runs an argv directly.
    pub fn argv<I, S>(args: I) -> JobSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        JobSpec {
            args: args.into_iter().map(Into::into).collect(),
            ..JobSpec::default()
        }
    }

    /// Bytes of the spec's strings and maps (each argument, name and value
    /// with one byte of separator): what it adds to every replica's table
    /// beyond its fixed-size fields (see `Job::footprint`).
    pub fn footprint(&self) -> u64 {
        let strings = self.command.as_ref().map_or(0, String::len)
            + self.args.iter().map(|a| a.len() + 1).sum::<usize>()
            + self.image.len()
            + pairs_bytes(self.env.iter().map(|(k, v)| (k, v)))
            + pairs_bytes(&self.constraints)
            + pairs_bytes(&self.labels)
            + self.idempotency_key.as_ref().map_or(0, String::len)
            + self.user.as_ref().map_or(0, String::len);
        strings as u64
    }

    /// Checks the spec before it is proposed. Called by the API layer only:
    /// the state machine applies whatever was committed, so that changing
    /// these rules in a new release can never make replicas diverge.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.validate_program()?;
        self.validate_settings().map_err(SpecError::Invalid)
    }

    fn validate_settings(&self) -> Result<(), String> {
        use limits::*;
        if let Some(reason) = image_error(&self.image) {
            return Err(reason);
        }
        if self.env.len() > MAX_ENV_VARS {
            return Err(format!(
                "`env` has {} variables; the limit is {MAX_ENV_VARS}",
                self.env.len()
            ));
        }
        let env_bytes = pairs_bytes(self.env.iter().map(|(k, v)| (k, v)));
        if env_bytes > MAX_ENV_BYTES {
            return Err(format!(
                "`env` takes {env_bytes} bytes; the limit is {MAX_ENV_BYTES}"
            ));
        }
        for (name, value) in &self.env {
            let valid_name = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(format!(
                    "`env` name {name:?} must be letters, digits and _, not starting with a digit"
                ));
            }
            if name.starts_with("DROVER_") {
                return Err(format!(
                    "`env` name {name:?}: DROVER_* is reserved for the executor"
                ));
            }
            if value.contains('\0') {
                return Err(format!("`env` value of {name} contains a NUL byte"));
            }
        }
        let r = &self.resources;
        if !CPU_MILLIS.contains(&r.cpu_millis) {
            return Err(format!(
                "`resources.cpu_millis` {} is outside {CPU_MILLIS:?}",
                r.cpu_millis
            ));
        }
        if !MEMORY_MIB.contains(&r.memory_mib) {
            return Err(format!(
                "`resources.memory_mib` {} is outside {MEMORY_MIB:?}",
                r.memory_mib
            ));
        }
        if !PIDS.contains(&r.pids) {
            return Err(format!("`resources.pids` {} is outside {PIDS:?}", r.pids));
        }
        if self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(format!(
                "`timeout` of {} ms exceeds the limit of 30 days",
                self.timeout_ms
            ));
        }
        let retry = &self.retry;
        if !ATTEMPTS.contains(&retry.max_attempts) {
            return Err(format!(
                "`retry.max_attempts` {} is outside {ATTEMPTS:?}",
                retry.max_attempts
            ));
        }
        if retry.initial_backoff_ms > MAX_BACKOFF_MS || retry.max_backoff_ms > MAX_BACKOFF_MS {
            return Err("`retry` backoff exceeds the limit of 1 day".into());
        }
        if !PRIORITY.contains(&self.priority) {
            return Err(format!(
                "`priority` {} is outside {PRIORITY:?}",
                self.priority
            ));
        }
        for (what, map) in [("constraints", &self.constraints), ("labels", &self.labels)] {
            check_map(what, map)?;
        }
        if let Some(key) = &self.idempotency_key {
            if key.contains('\0') {
                return Err("`idempotency_key` cannot hold a NUL byte".into());
            }
            if key.is_empty() || key.len() > MAX_KEY_BYTES {
                return Err(format!(
                    "`idempotency_key` must be 1 to {MAX_KEY_BYTES} bytes"
                ));
            }
        }
        if let Some(user) = &self.user {
            user_ids(user)?;
        }
        Ok(())
    }

    fn validate_program(&self) -> Result<(), SpecError> {
        match (&self.command, self.args.is_empty()) {
            (None, true) => Err(SpecError::NothingToRun),
            (Some(_), false) => Err(SpecError::BothCommandAndArgs),
            (Some(command), true) => {
                if command.is_empty() {
                    return Err(SpecError::EmptyCommand);
                }
                if command.len() > MAX_COMMAND_BYTES {
                    return Err(SpecError::CommandTooLong {
                        len: command.len(),
                        max: MAX_COMMAND_BYTES,
                    });
                }
                if command.contains('\0') {
                    return Err(SpecError::NulInCommand);
                }
                Ok(())
            }
            (None, false) => {
                if self.args[0].is_empty() {
                    return Err(SpecError::EmptyProgram);
                }
                let len: usize = self.args.iter().map(|a| a.len() + 1).sum();
                if len > MAX_ARGS_BYTES {
                    return Err(SpecError::ArgsTooLong {
                        len,
                        max: MAX_ARGS_BYTES,
                    });
                }
                if let Some(index) = self.args.iter().position(|a| a.contains('\0')) {
                    return Err(SpecError::NulInArg { index });
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_numbers_only() {
        assert_eq!(user_ids("1000"), Ok((1000, 1000)));
        assert_eq!(user_ids("0:5"), Ok((0, 5)));
        assert_eq!(user_ids("4294967295:1"), Ok((u32::MAX, 1)));
        for bad in [
            "",
            "root",
            "1000:",
            ":1000",
            "1:2:3",
            "-1",
            "+1",
            "4294967296",
            "1000\0",
            " 1",
            "1 ",
        ] {
            let why = user_ids(bad).expect_err(bad);
            assert!(why.contains("UID:GID"), "{bad:?}: {why}");
        }
        let named = JobSpec {
            user: Some("nobody".into()),
            ..JobSpec::shell("true")
        };
        assert!(named.validate().is_err());
    }

    #[test]
    fn accepts_a_command_or_an_argv() {
        assert_eq!(JobSpec::shell("echo hi").validate(), Ok(()));
        assert_eq!(JobSpec::argv(["echo", "", "hi"]).validate(), Ok(()));
    }

    #[test]
    fn refuses_neither_or_both() {
        assert_eq!(JobSpec::default().validate(), Err(SpecError::NothingToRun));
        let both = JobSpec {
            command: Some("x".into()),
            args: vec!["x".into()],
            ..JobSpec::default()
        };
        assert_eq!(both.validate(), Err(SpecError::BothCommandAndArgs));
    }

    #[test]
    fn refuses_empty() {
        assert_eq!(JobSpec::shell("").validate(), Err(SpecError::EmptyCommand));
        assert_eq!(
            JobSpec::argv(["", "x"]).validate(),
            Err(SpecError::EmptyProgram)
        );
    }

    #[test]
    fn bounds_sizes_at_exactly_the_limit() {
        assert_eq!(
            JobSpec::shell("x".repeat(MAX_COMMAND_BYTES)).validate(),
            Ok(())
        );
        assert_eq!(
            JobSpec::shell("x".repeat(MAX_COMMAND_BYTES + 1)).validate(),
            Err(SpecError::CommandTooLong {
                len: MAX_COMMAND_BYTES + 1,
                max: MAX_COMMAND_BYTES
            })
        );
        // One argument of n bytes counts n + 1.
        assert_eq!(
            JobSpec::argv(["x".repeat(MAX_ARGS_BYTES - 1)]).validate(),
            Ok(())
        );
        assert!(matches!(
            JobSpec::argv(["x".repeat(MAX_ARGS_BYTES)]).validate(),
            Err(SpecError::ArgsTooLong { .. })
        ));
        // Many empty arguments are bounded too.
        let mut many = vec!["prog".to_string()];
        many.extend(std::iter::repeat_n(String::new(), MAX_ARGS_BYTES));
        assert!(matches!(
            JobSpec::argv(many).validate(),
            Err(SpecError::ArgsTooLong { .. })
        ));
    }

    #[test]
    fn images_follow_the_reference_grammar() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for good in [
            "busybox".to_string(),
            "drover-job:latest".to_string(),
            "registry.internal:5000/team/app:v1.2".to_string(),
            format!("busybox@{digest}"),
            format!("localhost/app:1@{digest}"),
        ] {
            let spec = JobSpec {
                image: good.clone(),
                ..JobSpec::shell("true")
            };
            assert_eq!(spec.validate(), Ok(()), "{good}");
        }
        for bad in [
            "UPPER::bad@@",
            "busybox@sha256:zz",
            "Busybox",
            "app:",
            "app:tag with space",
            "-app",
            "app@md5:00",
            "a\0b",
        ] {
            let spec = JobSpec {
                image: bad.into(),
                ..JobSpec::shell("true")
            };
            let err = spec.validate().expect_err(bad).to_string();
            assert!(err.starts_with("`image`"), "{bad}: {err}");
        }
    }

    #[test]
    fn no_string_field_holds_a_nul_byte() {
        let ok = JobSpec::shell("true");
        let label = |k: &str, v: &str| [(k.to_string(), v.to_string())].into_iter().collect();
        let bad = [
            JobSpec::shell("a\0b"),
            JobSpec::argv(["prog", "a\0"]),
            JobSpec {
                env: vec![("A".into(), "x\0".into())],
                ..ok.clone()
            },
            JobSpec {
                labels: label("team\0", "a"),
                ..ok.clone()
            },
            JobSpec {
                labels: label("team", "a\0"),
                ..ok.clone()
            },
            JobSpec {
                constraints: label("zone\0", "a"),
                ..ok.clone()
            },
            JobSpec {
                idempotency_key: Some("k\0".into()),
                ..ok.clone()
            },
        ];
        for spec in bad {
            let err = spec
                .validate()
                .expect_err("a NUL byte is refused")
                .to_string();
            assert!(err.contains("NUL"), "{err}");
        }
    }

    #[test]
    fn bounds_every_setting() {
        let ok = JobSpec {
            image: "drover-job:latest".into(),
            ..JobSpec::shell("true")
        };
        assert_eq!(ok.validate(), Ok(()));
        let bad = [
            JobSpec {
                image: "bad image".into(),
                ..ok.clone()
            },
            JobSpec {
                env: vec![("1X".into(), "v".into())],
                ..ok.clone()
            },
            JobSpec {
                env: vec![("DROVER_JOB_ID".into(), "v".into())],
                ..ok.clone()
            },
            JobSpec {
                resources: Resources {
                    memory_mib: 1,
                    ..Resources::default()
                },
                ..ok.clone()
            },
            JobSpec {
                resources: Resources {
                    cpu_millis: 0,
                    ..Resources::default()
                },
                ..ok.clone()
            },
            JobSpec {
                timeout_ms: u64::MAX,
                ..ok.clone()
            },
            JobSpec {
                retry: RetryPolicy {
                    max_attempts: 0,
                    ..RetryPolicy::default()
                },
                ..ok.clone()
            },
            JobSpec {
                priority: 5000,
                ..ok.clone()
            },
            JobSpec {
                idempotency_key: Some(String::new()),
                ..ok.clone()
            },
        ];
        for spec in bad {
            assert!(
                matches!(spec.validate(), Err(SpecError::Invalid(_))),
                "{spec:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let retry = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 350,
        };
        let waits: Vec<u64> = (2..=5).map(|n| retry.backoff_before(n)).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
    }

    #[test]
    fn refuses_nul_bytes() {
        assert_eq!(
            JobSpec::shell("a\0b").validate(),
            Err(SpecError::NulInCommand)
        );
        assert_eq!(
            JobSpec::argv(["a", "b", "c\0"]).validate(),
            Err(SpecError::NulInArg { index: 2 })
        );
    }
}
