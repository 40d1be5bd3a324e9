//! The commands of the replicated state machine: what a `Payload::Command`
//! entry carries.

use serde::{Deserialize, Serialize};

use super::{JobId, JobSpec};

/// Format tag written before every encoded command, so a later release can
/// change the encoding and still read entries already in the log.
const COMMAND_FORMAT_V1: u8 = 1;

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

/// A change to the job table, proposed by the leader's API or scheduler and
/// applied by every replica in log order. Applying a command must be
/// deterministic: everything it needs (ids, timestamps) is in the command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create a job in `Queued`. A second Submit with the same id is a no-op,
    /// which makes client retries of the same submission safe.
    Submit {
        /// Minted by the leader's API, so a client retry carries the same id.
        id: JobId,
        /// Validated by the API before proposing.
        spec: JobSpec,
        /// The leader's wall clock at acceptance (Unix ms).
        submitted_at_ms: i64,
    },
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
    /// The bytes to propose: a format byte, then the command in bincode.
    pub fn encode(&self) -> Result<Vec<u8>, CommandError> {
        let mut out = vec![COMMAND_FORMAT_V1];
        out.extend(bincode::serde::encode_to_vec(self, codec())?);
        Ok(out)
    }

    /// Inverse of [`Command::encode`]. Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
        let (&format, body) = bytes.split_first().ok_or(CommandError::Empty)?;
        if format != COMMAND_FORMAT_V1 {
            return Err(CommandError::UnknownFormat(format));
        }
        let (command, used) = bincode::serde::decode_from_slice(body, codec())?;
        if used != body.len() {
            return Err(CommandError::TrailingBytes {
                extra: body.len() - used,
            });
        }
        Ok(command)
    }
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
        let mut huge = vec![COMMAND_FORMAT_V1, 0];
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
