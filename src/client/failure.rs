//! How a CLI command fails: one line saying what failed, where and what to
//! do, and an exit code that means the same cause in every command.

/// Metadata key marking a status the CLI made itself because no node could
/// be reached (exit code 3, not 1).
pub const UNREACHABLE: &str = "x-drover-cli-unreachable";

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
        if let Some(why) = cut.then(hint_for_cut_connection).flatten() {
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

/// Set when this CLI run speaks TLS without a client certificate: a
/// connection the node then cuts (TLS 1.3 servers check the client
/// certificate after the handshake) is explained by it.
static WITHOUT_CLIENT_CERT: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Records whether this run speaks TLS without a client certificate.
pub fn without_client_cert(yes: bool) {
    WITHOUT_CLIENT_CERT.store(yes, std::sync::atomic::Ordering::Relaxed);
}

/// Why a call failed as a cut connection, if this run's TLS explains it.
fn hint_for_cut_connection() -> Option<String> {
    WITHOUT_CLIENT_CERT
        .load(std::sync::atomic::Ordering::Relaxed)
        .then(|| {
            "the node closed the connection: it requires a client certificate signed by its CA \
             (tls.verify_client): pass --client-cert and --client-key (DROVER_CLIENT_CERT, \
             DROVER_CLIENT_KEY)"
                .to_string()
        })
}

/// An error and its causes, in one line.
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        // Causes often repeat their wrapper's text ("tcp connect error:
        // tcp connect error: …"): say each once.
        if !text.ends_with(&next) {
            text = format!("{text}: {next}");
        }
        source = s.source();
    }
    text
}
