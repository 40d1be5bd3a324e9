//! The commands of the replicated state machine: what a `Payload::Command`
//! entry carries.

use serde::{Deserialize, Serialize};

use super::legacy::{CommandV1, SpecV5};
use super::{Capacity, Drain, EndReason, JobId, JobSpec};
use crate::acl::Token;
use crate::raft::NodeId;

/// Format tag written before every encoded command, so a later release can
/// change the encoding and still read entries already in the log. Version 1
/// (schema 1) had only `Submit` with a bare spec; see [`super::legacy`].
const COMMAND_FORMAT_V1: u8 = 1;
/// Schemas 2 to 5: today's commands, but the spec of `Submit` and
/// `SubmitAs` is a `legacy::SpecV5` (no `user`). Still written for every
/// command that needs nothing more, so that during a rolling upgrade the
/// nodes of the previous release apply what a new leader proposes.
const COMMAND_FORMAT_V2: u8 = 2;
/// Today's format, written only for a submit whose spec sets `user`.
const COMMAND_FORMAT_V3: u8 = 3;

/// The bincode variant indexes of `Submit` and `SubmitAs` (declaration
/// order; one varint byte each), the only variants whose encoding differs
/// between formats 2 and 3.
const VARIANT_SUBMIT: u8 = 0;
const VARIANT_SUBMIT_AS: u8 = 10;

/// Format 2's `Submit` body (after its variant index).
#[derive(Serialize, Deserialize)]
struct SubmitV2 {
    id: JobId,
    spec: SpecV5,
    submitted_at_ms: i64,
}

/// Format 2's `SubmitAs` body (after its variant index).
#[derive(Serialize, Deserialize)]
struct SubmitAsV2 {
    id: JobId,
    spec: SpecV5,
    owner: String,
    submitted_at_ms: i64,
}

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

    /// The bytes to propose: a format byte, then the command in bincode
    /// (format 2 unless the command needs format 3, see there).
    pub fn encode(&self) -> Result<Vec<u8>, CommandError> {
        let v2_spec = |spec: &JobSpec| SpecV5::from_spec(spec.clone());
        let (format, variant, body) = match self {
            Command::Submit {
                id,
                spec,
                submitted_at_ms,
            } => match v2_spec(spec) {
                Some(spec) => (
                    COMMAND_FORMAT_V2,
                    Some(VARIANT_SUBMIT),
                    encode_body(&SubmitV2 {
                        id: *id,
                        spec,
                        submitted_at_ms: *submitted_at_ms,
                    })?,
                ),
                None => (COMMAND_FORMAT_V3, None, encode_body(self)?),
            },
            Command::SubmitAs {
                id,
                spec,
                owner,
                submitted_at_ms,
            } => match v2_spec(spec) {
                Some(spec) => (
                    COMMAND_FORMAT_V2,
                    Some(VARIANT_SUBMIT_AS),
                    encode_body(&SubmitAsV2 {
                        id: *id,
                        spec,
                        owner: owner.clone(),
                        submitted_at_ms: *submitted_at_ms,
                    })?,
                ),
                None => (COMMAND_FORMAT_V3, None, encode_body(self)?),
            },
            // Encoded the same in formats 2 and 3.
            other => (COMMAND_FORMAT_V2, None, encode_body(other)?),
        };
        let mut out = Vec::with_capacity(2 + body.len());
        out.push(format);
        out.extend(variant);
        out.extend(body);
        Ok(out)
    }

    /// Inverse of [`Command::encode`]. Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
        let (&format, body) = bytes.split_first().ok_or(CommandError::Empty)?;
        match format {
            COMMAND_FORMAT_V3 => decode_whole(body),
            COMMAND_FORMAT_V2 => match body.split_first() {
                Some((&VARIANT_SUBMIT, rest)) => {
                    let v2: SubmitV2 = decode_whole(rest)?;
                    Ok(Command::Submit {
                        id: v2.id,
                        spec: v2.spec.upgrade(),
                        submitted_at_ms: v2.submitted_at_ms,
                    })
                }
                Some((&VARIANT_SUBMIT_AS, rest)) => {
                    let v2: SubmitAsV2 = decode_whole(rest)?;
                    Ok(Command::SubmitAs {
                        id: v2.id,
                        spec: v2.spec.upgrade(),
                        owner: v2.owner,
                        submitted_at_ms: v2.submitted_at_ms,
                    })
                }
                _ => decode_whole(body),
            },
            COMMAND_FORMAT_V1 => match decode_whole::<CommandV1>(body)? {
                CommandV1::Submit {
                    id,
                    spec,
                    submitted_at_ms,
                } => Ok(Command::Submit {
                    id,
                    spec: spec.upgrade().upgrade(),
                    submitted_at_ms,
                }),
            },
            other => Err(CommandError::UnknownFormat(other)),
        }
    }
}

fn encode_body<T: Serialize>(value: &T) -> Result<Vec<u8>, CommandError> {
    Ok(bincode::serde::encode_to_vec(value, codec())?)
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
            Command::SubmitAs {
                id: job,
                spec: JobSpec::shell("y"),
                owner: "acc".into(),
                submitted_at_ms: 2,
            },
            Command::SubmitAs {
                id: job,
                spec: JobSpec {
                    user: Some("1000:1000".into()),
                    ..JobSpec::shell("y")
                },
                owner: "acc".into(),
                submitted_at_ms: 2,
            },
            Command::Submit {
                id: job,
                spec: JobSpec {
                    user: Some("7".into()),
                    ..JobSpec::shell("y")
                },
                submitted_at_ms: 3,
            },
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
    fn only_a_submit_with_a_user_needs_format_3() {
        // Formats 2 and 3 differ only in the spec of these two variants,
        // found by their index: the declaration order must not move.
        let submit_as = Command::SubmitAs {
            id: JobId::from_parts(1, 1),
            spec: JobSpec::shell("x"),
            owner: "o".into(),
            submitted_at_ms: 0,
        };
        assert_eq!(encode_body(&submit()).unwrap()[0], VARIANT_SUBMIT);
        assert_eq!(encode_body(&submit_as).unwrap()[0], VARIANT_SUBMIT_AS);
        // What the previous release reads: format 2 unless a user is set.
        assert_eq!(submit().encode().unwrap()[0], COMMAND_FORMAT_V2);
        assert_eq!(submit_as.encode().unwrap()[0], COMMAND_FORMAT_V2);
        let cancel = Command::Cancel {
            job: JobId::from_parts(1, 1),
            at_ms: 0,
        };
        assert_eq!(cancel.encode().unwrap()[0], COMMAND_FORMAT_V2);
        let Command::Submit {
            id,
            spec,
            submitted_at_ms,
        } = submit()
        else {
            unreachable!()
        };
        let with_user = Command::Submit {
            id,
            spec: JobSpec {
                user: Some("1000".into()),
                ..spec
            },
            submitted_at_ms,
        };
        assert_eq!(with_user.encode().unwrap()[0], COMMAND_FORMAT_V3);
        // A format-3 entry of a spec without a user reads the same as its
        // format-2 twin.
        let mut v3 = vec![COMMAND_FORMAT_V3];
        v3.extend(encode_body(&submit()).unwrap());
        assert_eq!(Command::decode(&v3).unwrap(), submit());
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
