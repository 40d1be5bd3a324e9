//! How a CLI command fails: one line saying what failed, where and what to
//! do, and an exit code that means the same cause in every command.

use super::failover::UNREACHABLE;

/// 0: success.
/// 1: the cluster refused or failed the request (no such job, permission
/// denied, a conflict, a job that failed for `job run`'s own codes see
/// [`super::exit_code_of`]).
pub const EXIT_FAILED: u8 = 1;
/// 2: bad usage: an unknown flag or command, a malformed value (a job id,
/// a duration), a request the cluster found invalid. Fix the command.
pub const EXIT_USAGE: u8 = 2;
/// 3: no node could serve the call (none reachable, no answer in time, no
/// leader for the whole wait). Nothing was changed: safe to run again.
pub const EXIT_UNREACHABLE: u8 = 3;

/// A failed command: the line to print and the exit code.
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    /// A node answered without the record the call returns: a bug on its
    /// side, not the user's.
    pub fn empty_response() -> Failure {
        Failure {
            message: "the node's answer was empty (a bug: please report it)".into(),
            code: EXIT_FAILED,
        }
    }

    /// A malformed value on the command line (exit 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: EXIT_USAGE,
        }
    }
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        if status.metadata().contains_key(UNREACHABLE) {
            return Failure {
                message: status.message().to_string(),
                code: EXIT_UNREACHABLE,
            };
        }
        // A TLS refusal that comes after the handshake (TLS 1.3 servers
        // check the client certificate then) reaches the call as a cut
        // connection.
        let cut = matches!(status.code(), Code::Cancelled | Code::Unknown)
            && (status.message().contains("canceled") || status.message().contains("transport"));
        if let Some(why) = cut.then(super::tls::hint_for_cut_connection).flatten() {
            return Failure {
                message: why,
                code: EXIT_UNREACHABLE,
            };
        }
        let message = status.message().trim().to_string();
        let (code, message) = match status.code() {
            Code::InvalidArgument => (EXIT_USAGE, message),
            Code::Unavailable => (EXIT_UNREACHABLE, message),
            Code::Unauthenticated => (
                EXIT_FAILED,
                format!("{message} (pass a token with --token or DROVER_TOKEN)"),
            ),
            Code::PermissionDenied => (EXIT_FAILED, format!("permission denied: {message}")),
            Code::Cancelled if message.contains("Timeout expired") => (
                EXIT_UNREACHABLE,
                "no answer in time; check the node with `drover operator raft list-peers`"
                    .to_string(),
            ),
            Code::Internal | Code::Unknown | Code::DataLoss => (
                EXIT_FAILED,
                format!("the node failed the request: {message}"),
            ),
            _ => (EXIT_FAILED, message),
        };
        Failure { message, code }
    }
}
