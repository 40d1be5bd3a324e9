//! Backup files: what `drover operator snapshot save` writes and `restore`
//! reads. A backup is the state machine at one log index (jobs, tokens),
//! with a header an operator can read and a checksum that is verified
//! before anything is restored.
//!
//! # Format (version 1)
//! ```text
//! magic    8 bytes  "DROVBKUP"
//! version  1 byte   1
//! header   u32 BE length, then JSON BackupHeader {format, cluster_id, index,
//!          term, created_at_ms, compression, body_bytes, body_sha256}
//! body     body_bytes of gzip: the state-machine snapshot (store::snapshot
//!          format, with its own CRC) at `index`
//! trailer  32 bytes: SHA-256 of every preceding byte
//! ```
//! The header is JSON so `head -c 600 backup.snap` tells what a file is
//! without Drover. `body_sha256` names the body's content; the trailer
//! covers the header too, so a byte flipped anywhere is refused before
//! anything is decompressed or changed.

use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::snapshot;
use crate::acl::{hex, Token};
use crate::jobs::{Job, JobState};
use crate::raft::{Index, Membership, Term};

const MAGIC: &[u8; 8] = b"DROVBKUP";
/// Today's backup format.
pub const FORMAT: u8 = 1;
/// Upper bound on a decompressed body: a corrupt or hostile file cannot
/// make a node allocate without bound.
pub const MAX_STATE_BYTES: u64 = 4 << 30;
/// Upper bound on a header.
const MAX_HEADER_BYTES: usize = 64 << 10;

/// What a backup says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The backup format version (also in the byte after the magic).
    pub format: u8,
    /// The cluster it was taken from.
    pub cluster_id: String,
    /// Log index the state is at: every entry up to it is in, none after.
    pub index: Index,
    /// Term of that entry.
    pub term: Term,
    /// When it was taken (the leader's clock, Unix ms).
    pub created_at_ms: i64,
    /// Always "gzip" in format 1.
    pub compression: String,
    /// Length of the body as stored.
    pub body_bytes: u64,
    /// SHA-256 of the body as stored, lowercase hex.
    pub body_sha256: String,
}

/// Why a backup file is refused. Every variant is found before anything
/// is changed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Not a Drover backup at all.
    #[error("not a Drover backup (bad magic)")]
    NotABackup,
    /// Written by a newer Drover.
    #[error("backup format {0} is not supported by this Drover (it reads format {FORMAT})")]
    UnsupportedFormat(u8),
    /// Cut short (an interrupted download or copy).
    #[error("the backup is truncated: {0}")]
    Truncated(String),
    /// A checksum does not match: the file was damaged.
    #[error("the backup is corrupt (checksum mismatch: computed SHA-256 {actual}, recorded {expected}); nothing was restored")]
    Checksum {
        /// From the header.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// Anything else malformed.
    #[error("the backup is malformed: {0}")]
    Malformed(String),
}

/// A backup read and verified (header, checksum), body still compressed.
pub struct Backup {
    /// The header.
    pub header: BackupHeader,
    /// The compressed body.
    pub body: Vec<u8>,
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Builds a backup file from state-machine snapshot bytes.
pub fn write(
    cluster_id: &str,
    index: Index,
    term: Term,
    created_at_ms: i64,
    state: &[u8],
) -> Result<Vec<u8>, BackupError> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, state)
        .map_err(|e| BackupError::Malformed(format!("compress: {e}")))?;
    let body = gz
        .finish()
        .map_err(|e| BackupError::Malformed(format!("compress: {e}")))?;
    let header = BackupHeader {
        format: FORMAT,
        cluster_id: cluster_id.to_string(),
        index,
        term,
        created_at_ms,
        compression: "gzip".into(),
        body_bytes: body.len() as u64,
        body_sha256: hex(&sha256(&body)),
    };
    let header =
        serde_json::to_vec(&header).map_err(|e| BackupError::Malformed(format!("header: {e}")))?;
    let header_len = u32::try_from(header.len())
        .map_err(|_| BackupError::Malformed("header too large".into()))?;
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + 4 + header.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&header_len.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&body);
    let trailer = sha256(&out);
    out.extend_from_slice(&trailer);
    Ok(out)
}

/// Reads and verifies a backup: magic, format, header, length, checksum.
/// Never panics, whatever the bytes.
pub fn read(bytes: &[u8]) -> Result<Backup, BackupError> {
    if !bytes.starts_with(MAGIC) {
        return Err(BackupError::NotABackup);
    }
    let Some(split) = bytes.len().checked_sub(32) else {
        return Err(BackupError::Truncated("no checksum trailer".into()));
    };
    let (covered, trailer) = bytes.split_at(split);
    let computed = sha256(covered);
    if computed[..] != trailer[..] {
        return Err(BackupError::Checksum {
            expected: hex(trailer),
            actual: hex(&computed),
        });
    }
    let rest = covered
        .strip_prefix(&MAGIC[..])
        .ok_or(BackupError::NotABackup)?;
    let (&format, rest) = rest
        .split_first()
        .ok_or_else(|| BackupError::Truncated("no format byte".into()))?;
    if format != FORMAT {
        return Err(BackupError::UnsupportedFormat(format));
    }
    if rest.len() < 4 {
        return Err(BackupError::Truncated("no header length".into()));
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_HEADER_BYTES {
        return Err(BackupError::Malformed(format!("a header of {len} bytes")));
    }
    if rest.len() < len {
        return Err(BackupError::Truncated(format!(
            "the header needs {len} bytes, {} remain",
            rest.len()
        )));
    }
    let (header, body) = rest.split_at(len);
    let header: BackupHeader = serde_json::from_slice(header)
        .map_err(|e| BackupError::Malformed(format!("header: {e}")))?;
    if header.format != FORMAT {
        return Err(BackupError::UnsupportedFormat(header.format));
    }
    if body.len() as u64 != header.body_bytes {
        return Err(BackupError::Truncated(format!(
            "the body has {} bytes, the header says {}",
            body.len(),
            header.body_bytes
        )));
    }
    let actual = hex(&sha256(body));
    if actual != header.body_sha256 {
        return Err(BackupError::Checksum {
            expected: header.body_sha256.clone(),
            actual,
        });
    }
    Ok(Backup {
        header,
        body: body.to_vec(),
    })
}

/// Decompresses a (verified) body into state-machine snapshot bytes,
/// bounded by [`MAX_STATE_BYTES`].
pub fn decompress(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot decompress the backup: {e}"))?;
    if out.len() as u64 > MAX_STATE_BYTES {
        return Err(format!(
            "the backup decompresses to more than {MAX_STATE_BYTES} bytes"
        ));
    }
    Ok(out)
}

/// The state a backup holds, decoded.
pub struct BackupState {
    /// Every job, in id order.
    pub jobs: Vec<Job>,
    /// Every token.
    pub tokens: Vec<Token>,
    /// Accessor of the bootstrap token, if the ACL system was bootstrapped.
    pub bootstrap: Option<String>,
    /// The membership at the backup's index (informational: a restore
    /// keeps the live cluster's, an offline restore makes a new one).
    pub membership: Membership,
    /// Node records at the backup's index (informational).
    pub node_count: usize,
}

/// Decodes a verified body.
pub fn decode_state(body: &[u8]) -> Result<BackupState, String> {
    let state = decompress(body)?;
    let decoded = snapshot::decode(&state)?;
    Ok(BackupState {
        jobs: decoded.jobs,
        tokens: decoded.tokens,
        bootstrap: decoded.bootstrap,
        membership: decoded.meta.membership,
        node_count: decoded.nodes.len(),
    })
}

/// What `snapshot inspect` prints besides the header.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    /// The header.
    pub header: BackupHeader,
    /// Jobs by state name (every state listed, zeros included).
    pub jobs_by_state: std::collections::BTreeMap<String, u64>,
    /// Jobs in all.
    pub jobs: u64,
    /// Tokens.
    pub tokens: u64,
    /// Whether the ACL system was bootstrapped.
    pub acl_bootstrapped: bool,
    /// Members at the backup's index.
    pub members: Vec<u64>,
}

/// Reads, verifies and summarizes a backup file's bytes.
pub fn summarize(bytes: &[u8]) -> Result<Summary, BackupError> {
    let backup = read(bytes)?;
    let state = decode_state(&backup.body).map_err(BackupError::Malformed)?;
    let mut by_state: std::collections::BTreeMap<String, u64> = JobState::ALL
        .into_iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    for job in &state.jobs {
        *by_state.entry(job.state.as_str().to_string()).or_insert(0) += 1;
    }
    Ok(Summary {
        header: backup.header,
        jobs_by_state: by_state,
        jobs: state.jobs.len() as u64,
        tokens: state.tokens.len() as u64,
        acl_bootstrapped: state.bootstrap.is_some(),
        members: state.membership.ids().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = snapshot::SnapshotBuilder::new();
        for n in 1..=3u64 {
            let job = Job::new(
                crate::jobs::JobId::from_parts(n, u128::from(n)),
                crate::jobs::JobSpec::shell("true"),
                1,
                n,
            );
            b.push_encoded_job(&super::super::codec::encode("job", &job).unwrap())
                .unwrap();
        }
        let meta = crate::raft::SnapshotMeta {
            index: 9,
            term: 2,
            membership: Membership::default(),
        };
        let state = b.finish(&meta).unwrap();
        write("c1", 9, 2, 1234, &state).unwrap()
    }

    #[test]
    fn round_trips_and_summarizes() {
        let file = sample();
        let summary = summarize(&file).unwrap();
        assert_eq!(summary.header.cluster_id, "c1");
        assert_eq!(summary.header.index, 9);
        assert_eq!(summary.jobs, 3);
        assert_eq!(summary.jobs_by_state["QUEUED"], 3);
        assert_eq!(summary.jobs_by_state["RUNNING"], 0);
    }

    #[test]
    fn every_flipped_byte_and_truncation_is_refused_without_panic() {
        let file = sample();
        for at in 0..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x01;
            assert!(summarize(&bad).is_err(), "flip at {at} accepted");
        }
        for len in 0..file.len() {
            assert!(read(&file[..len]).is_err(), "truncation to {len} accepted");
        }
        let mut bad = file.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(read(&bad), Err(BackupError::Checksum { .. })));
    }
}
