//! What a client asks to run, and the validation every front end shares.

use serde::{Deserialize, Serialize};

/// Upper bound on `command`, in bytes. Bounded so that one entry stays far
/// below the Raft message size limit and a client cannot bloat the log.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// Upper bound on `args`, counted as the sum of each argument's length plus
/// one (its NUL terminator in `execve`). Counting the terminator also bounds
/// the number of arguments, even empty ones.
pub const MAX_ARGS_BYTES: usize = 16 * 1024;

/// What to run. Exactly one of `command` (a shell string run as
/// `/bin/sh -c`) or `args` (an argv, run without a shell) is set.
///
/// More fields (image, env, resources, timeout, retry, ...) come later;
/// adding them changes the encoding and needs a schema migration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// A shell command line.
    pub command: Option<String>,
    /// An argv; `args[0]` is the program.
    pub args: Vec<String>,
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
}

impl JobSpec {
    /// A spec that runs `command` through `/bin/sh -c`.
    pub fn shell(command: impl Into<String>) -> JobSpec {
        JobSpec {
            command: Some(command.into()),
            args: Vec::new(),
        }
    }

    /// A spec that runs an argv directly.
    pub fn argv<I, S>(args: I) -> JobSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        JobSpec {
            command: None,
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// Checks the spec before it is proposed. Called by the API layer only:
    /// the state machine applies whatever was committed, so that changing
    /// these rules in a new release can never make replicas diverge.
    pub fn validate(&self) -> Result<(), SpecError> {
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
