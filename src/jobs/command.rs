//! The commands of the replicated state machine: what a `Payload::Command`
//! entry carries.

use serde::{Deserialize, Serialize};

use super::legacy::CommandV1;
use super::{Capacity, Drain, EndReason, JobId, JobSpec};
use crate::acl::Token;
use crate::raft::NodeId;

/// Format tag written before every encoded command, so a later release can
/// change the encoding and still read entries already in the log. Version 1
/// (schema 1) had only `Submit` with a bare spec; see [`super::legacy`].
const COMMAND_FORMAT_V1: u8 = 1;
/// Today's format.
const COMMAND_FORMAT_V2: u8 = 2;

/// Upper bound on an encoded command. Far above what a valid spec needs; it
/// stops a corrupt length prefix from making the decoder allocate gigabytes.
pub const MAX_COMMAND_ENCODED_BYTES: usize = 1 << 20;

type Codec = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_COMMAND_ENCODED_BYTES>,
>;

fn codec() -> Codec {
    bincode::config::standard().with_limit::<MAX_COMMAND_ENCODED_BYTES>()
}

/// A change to the job table, proposed by the leader's API or scheduler, or
/// by a node reporting on its work, and applied by every replica in log
/// order. Applying a command must be deterministic: everything it needs
/// (ids, timestamps) is in the command. Append new variants at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create a job in `Queued`. A second Submit with the same id, or with
    /// the idempotency key of an existing job, is a no-op that returns the
    /// existing job, which makes client retries safe.
    Submit {
        /// Minted by the API, so a client retry carries the same id.
        id: JobId,
        /// Validated by the API before proposing.
        spec: JobSpec,
        /// The leader's wall clock at acceptance (Unix ms).
        submitted_at_ms: i64,
    },
    /// The scheduler's placements of one pass. Each is checked on its own
    /// (the job must still be queued at that attempt number).
    Assign {
        /// Leader's clock.
        at_ms: i64,
        /// Job, attempt, node.
        assignments: Vec<Assignment>,
    },
    /// A node started an attempt's container.
    Started {
        /// The job.
        job: JobId,
        /// Fencing token.
        attempt: u32,
        /// The reporting node.
        node: NodeId,
        /// Node's clock.
        at_ms: i64,
    },
    /// An attempt ended on its node.
    Finished {
        /// The job.
        job: JobId,
        /// Fencing token.
        attempt: u32,
        /// The reporting node.
        node: NodeId,
        /// Node's clock.
        at_ms: i64,
        /// Exit code if it exited.
        exit_code: Option<i64>,
        /// Why it ended.
        reason: EndReason,
        /// Human explanation for platform failures.
        message: String,
        /// The last bytes of output.
        output_tail: Vec<u8>,
    },
    /// Stop a job, in whatever state (idempotent).
    Cancel {
        /// The job.
        job: JobId,
        /// Leader's clock.
        at_ms: i64,
    },
    /// A node announced itself (first heartbeat, changed labels or
    /// capacity, or back after being declared down).
    NodeUp {
        /// The node.
        node: NodeId,
        /// Its labels.
        labels: std::collections::BTreeMap<String, String>,
        /// What it offers.
        capacity: Capacity,
        /// Leader's clock.
        at_ms: i64,
    },
    /// The leader stopped hearing from a node: its active attempts end
    /// NODE_LOST (and are re-queued if attempts remain).
    NodeDown {
        /// The node.
        node: NodeId,
        /// Leader's clock.
        at_ms: i64,
    },
    /// Start (`Some`) or end (`None`) draining a node.
    SetDrain {
        /// The node.
        node: NodeId,
        /// The drain.
        drain: Option<Drain>,
        /// Leader's clock.
        at_ms: i64,
    },
    /// A drain deadline passed: the node's active attempts end NODE_DRAINED
    /// and are re-queued.
    Evict {
        /// The node.
        node: NodeId,
        /// Leader's clock.
        at_ms: i64,
    },
    /// Remove finished jobs past their retention.
    Gc {
        /// Jobs to delete (ignored unless terminal).
        jobs: Vec<JobId>,
    },
    /// `Submit` by a caller with a token: the job records its owner.
    SubmitAs {
        /// Minted by the API.
        id: JobId,
        /// Validated by the API before proposing.
        spec: JobSpec,
        /// Accessor id of the caller's token.
        owner: String,
        /// Leader's clock at acceptance (Unix ms).
        submitted_at_ms: i64,
    },
    /// Create the first admin token; refused once the cluster has been
    /// bootstrapped (even if that token was revoked since).
    AclBootstrap {
        /// The token (hash only; the secret went to the caller).
        token: Token,
    },
    /// Create a token.
    AclCreateToken {
        /// The token (hash only).
        token: Token,
    },
    /// Revoke a token.
    AclRevokeToken {
        /// Its accessor id.
        accessor: String,
    },
    /// Start staging a backup to restore (`drover operator snapshot
    /// restore`): its body arrives in chunks, each its own entry (a log
    /// entry is bounded), and replaces the state only at `RestoreFinish`,
    /// all at once. A new Begin discards any earlier staging.
    RestoreBegin {
        /// Names this restore; chunks and finish of another are refused.
        id: String,
        /// How many chunks follow.
        chunks: u32,
        /// SHA-256 of the whole body (the backup's compressed body).
        sha256: [u8; 32],
    },
    /// One chunk of a staged restore's body.
    RestoreChunk {
        /// The restore.
        id: String,
        /// 0-based position.
        seq: u32,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Replace the job table and the tokens with the staged backup's (the
    /// membership and the node table stay the live cluster's). Refused,
    /// changing nothing, if the staging is incomplete or does not verify.
    RestoreFinish {
        /// The restore.
        id: String,
        /// Leader's clock: jobs active in the backup end NODE_LOST at it.
        at_ms: i64,
    },
}

/// One placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The job.
    pub job: JobId,
    /// The attempt number it gets (the job's next).
    pub attempt: u32,
    /// Where it runs.
    pub node: NodeId,
}

/// Why a command could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The payload has no bytes at all.
    #[error("empty command payload")]
    Empty,
    /// The format byte is not one this binary reads.
    #[error("unknown command format {0} (written by a newer Drover?)")]
    UnknownFormat(u8),
    /// The bincode body is malformed.
    #[error("undecodable command: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// A valid command followed by junk: refused rather than half-read.
    #[error("command has {extra} trailing bytes after a valid command")]
    TrailingBytes {
        /// Bytes left over.
        extra: usize,
    },
    /// Serialization failed (not expected for these types).
    #[error("cannot encode command: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

impl Command {
    /// Whether this command is new work (a job, a placement, a token, a
    /// restore) rather than the end of work already admitted (a report, a
    /// stop, a drain, a clean-up). A node whose disk is below its reserve
    /// refuses the first kind and still admits the second, so running jobs
    /// can finish and the table can shrink.
    pub fn is_new_work(&self) -> bool {
        match self {
            Command::Submit { .. }
            | Command::SubmitAs { .. }
            | Command::Assign { .. }
            | Command::AclBootstrap { .. }
            | Command::AclCreateToken { .. }
            | Command::RestoreBegin { .. }
            | Command::RestoreChunk { .. }
            | Command::RestoreFinish { .. } => true,
            Command::Started { .. }
            | Command::Finished { .. }
            | Command::Cancel { .. }
            | Command::NodeUp { .. }
            | Command::NodeDown { .. }
            | Command::SetDrain { .. }
            | Command::Evict { .. }
            | Command::Gc { .. }
            | Command::AclRevokeToken { .. } => false,
        }
    }

    /// The bytes to propose: a format byte, then the command in bincode.
    pub fn encode(&self) -> Result<Vec<u8>, CommandError> {
        let mut out = vec![COMMAND_FORMAT_V2];
        out.extend(bincode::serde::encode_to_vec(self, codec())?);
        Ok(out)
    }

    /// Inverse of [`Command::encode`]. Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
        let (&format, body) = bytes.split_first().ok_or(CommandError::Empty)?;
        match format {
            COMMAND_FORMAT_V2 => decode_whole(body),
            COMMAND_FORMAT_V1 => match decode_whole::<CommandV1>(body)? {
                CommandV1::Submit {
                    id,
                    spec,
                    submitted_at_ms,
                } => Ok(Command::Submit {
                    id,
                    spec: spec.upgrade(),
                    submitted_at_ms,
                }),
            },
            other => Err(CommandError::UnknownFormat(other)),
        }
    }
}

fn decode_whole<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, CommandError> {
    let (value, used) = bincode::serde::decode_from_slice(body, codec())?;
    if used != body.len() {
        return Err(CommandError::TrailingBytes {
            extra: body.len() - used,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit() -> Command {
        Command::Submit {
            id: JobId::from_parts(1_700_000_000_000, 42),
            spec: JobSpec::argv(["echo", "hello"]),
            submitted_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn round_trips() {
        let bytes = submit().encode().unwrap();
        assert_eq!(Command::decode(&bytes).unwrap(), submit());
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        assert!(matches!(Command::decode(&[]), Err(CommandError::Empty)));
        assert!(matches!(
            Command::decode(&[9, 0]),
            Err(CommandError::UnknownFormat(9))
        ));
        let mut bytes = submit().encode().unwrap();
        bytes.push(0);
        assert!(matches!(
            Command::decode(&bytes),
            Err(CommandError::TrailingBytes { extra: 1 })
        ));
        // A huge length prefix must fail, not allocate.
        let mut huge = vec![COMMAND_FORMAT_V2, 0];
        huge.extend([0u8; 16]);
        // Some(string of 2^60 bytes): varint tag 253 = u64 follows.
        huge.extend([1, 253, 0, 0, 0, 0, 0, 0, 0, 0x10]);
        assert!(Command::decode(&huge).is_err());
        // Every prefix of a valid command is refused.
        let bytes = submit().encode().unwrap();
        for n in 0..bytes.len() {
            assert!(Command::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn every_command_round_trips() {
        use crate::jobs::{Capacity, Drain, EndReason};
        let job = JobId::from_parts(7, 8);
        let mut spec = JobSpec::shell("x");
        spec.env.push(("A".into(), "b".into()));
        spec.constraints.insert("zone".into(), "a".into());
        spec.idempotency_key = Some("k".into());
        let reasons = [
            EndReason::Exited { code: 3 },
            EndReason::Signaled { signal: 9 },
            EndReason::OomKilled,
            EndReason::TimedOut,
            EndReason::ImageUnavailable,
            EndReason::NodeLost,
            EndReason::Cancelled,
            EndReason::StartFailed,
            EndReason::Drained,
        ];
        let mut commands = vec![
            Command::Submit {
                id: job,
                spec,
                submitted_at_ms: -1,
            },
            Command::Assign {
                at_ms: 5,
                assignments: vec![Assignment {
                    job,
                    attempt: 2,
                    node: 3,
                }],
            },
            Command::Started {
                job,
                attempt: 1,
                node: 2,
                at_ms: 3,
            },
            Command::Cancel { job, at_ms: 4 },
            Command::NodeUp {
                node: 2,
                labels: [("zone".to_string(), "a".to_string())].into(),
                capacity: Capacity {
                    cpu_millis: 2000,
                    memory_mib: 512,
                },
                at_ms: 1,
            },
            Command::NodeDown { node: 2, at_ms: 1 },
            Command::SetDrain {
                node: 2,
                drain: Some(Drain {
                    since_ms: 1,
                    deadline_ms: Some(2),
                }),
                at_ms: 1,
            },
            Command::Evict { node: 2, at_ms: 1 },
            Command::Gc { jobs: vec![job] },
        ];
        for reason in reasons {
            commands.push(Command::Finished {
                job,
                attempt: 1,
                node: 2,
                at_ms: 9,
                exit_code: Some(1),
                reason,
                message: "m".into(),
                output_tail: b"tail".to_vec(),
            });
        }
        for command in commands {
            let bytes = command.encode().unwrap();
            assert_eq!(Command::decode(&bytes).unwrap(), command);
        }
    }

    #[test]
    fn reads_version_1_submits_from_old_logs() {
        // Format 1, variant 0, 16-byte id, Some("echo hi"), no args, ms.
        let id = JobId::from_parts(5, 6);
        let mut bytes = vec![COMMAND_FORMAT_V1, 0];
        bytes.extend(id.to_bytes());
        bytes.extend([1, 7]);
        bytes.extend(b"echo hi");
        bytes.extend([0, 20]); // no args; 10 ms (zigzag varint)
        let Command::Submit {
            id: got,
            spec,
            submitted_at_ms,
        } = Command::decode(&bytes).unwrap()
        else {
            panic!("not a submit");
        };
        assert_eq!((got, submitted_at_ms), (id, 10));
        assert_eq!(spec, JobSpec::shell("echo hi"));
    }

    #[test]
    fn job_id_is_text_in_json_and_16_bytes_in_bincode() {
        let id = JobId::from_parts(1, 2);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        let bin = bincode::serde::encode_to_vec(id, codec()).unwrap();
        assert_eq!(bin.len(), 16);
        let back: JobId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
    }
}
