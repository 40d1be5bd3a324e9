//! Snapshot data: the byte format shipped between nodes, and the files that
//! hold it under `data_dir/snapshots/`.
//!
//! # Format (version 4)
//! ```text
//! magic    8 bytes  "DROVSNAP"
//! version  1 byte   4
//! header   u32 BE length, then bincode SnapshotHeader {index, term, membership,
//!          job_count, node_count, token_count, acl_bootstrap}
//! jobs     job_count times: u32 BE length, then bincode Job, in ascending id order
//! nodes    node_count times: u32 BE length, then bincode NodeRecord
//! tokens   token_count times: u32 BE length, then bincode acl::Token
//! staged   if the header's staged_meta is set: staged_chunk_count times
//!          u32 BE length, then bincode (seq u32, bytes): a restore being
//!          staged (see store::restore)
//! crc      u32 BE   CRC-32 of every preceding byte
//! ```
//! Version 3 (schemas 3 to 5) is the same with jobs as
//! `jobs::legacy::JobV5` (no `user`). Version 2 (schema 2) had no tokens and its jobs were
//! `jobs::legacy::JobV2` (no owner); version 1 (schema 1) had no nodes
//! either, and its jobs were `jobs::legacy::JobV1`. All are still read, so
//! a snapshot file written before an upgrade can be restored and sent.
//! The same bytes are the file on disk and the payload of InstallSnapshot,
//! so a follower verifies exactly what the leader wrote. Jobs are framed one
//! by one so a later version can stream them instead of holding the table in
//! one buffer.
//!
//! # Files
//! A snapshot file is written to `<name>.tmp`, fsynced, renamed to `<name>`,
//! and the directory fsynced, before any sled record points at it. So a
//! record never names a file that a crash can take away; a crash before the
//! record is durable leaves an unreferenced file, removed on the next open.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::codec;
use super::layout::SnapshotRecord;
use crate::acl::Token;
use crate::jobs::legacy::{JobV1, JobV2, JobV5};
use crate::jobs::{Job, NodeRecord};
use crate::raft::{Index, Membership, SnapshotMeta, Term};

const MAGIC: &[u8; 8] = b"DROVSNAP";
const FORMAT_V1: u8 = 1;
const FORMAT_V2: u8 = 2;
const FORMAT_V3: u8 = 3;
const FORMAT_V4: u8 = 4;
const FILE_PREFIX: &str = "snap-";
const FILE_SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".tmp";

#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    index: Index,
    term: Term,
    membership: Membership,
    job_count: u64,
    node_count: u64,
    token_count: u64,
    /// Accessor of the bootstrap token, once the ACL system is bootstrapped.
    acl_bootstrap: Option<String>,
    /// A restore being staged: its bincode `StagedMeta`.
    staged_meta: Option<Vec<u8>>,
    staged_chunk_count: u64,
}

/// A restore being staged, as a snapshot carries it (opaque here: the
/// records of the `restore_staging` tree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StagedRestore {
    /// The bincode `StagedMeta` record.
    pub meta: Vec<u8>,
    /// Chunks present, by seq.
    pub chunks: Vec<(u32, Vec<u8>)>,
}

/// Version 2's header (frozen).
#[derive(Deserialize)]
struct SnapshotHeaderV2 {
    index: Index,
    term: Term,
    membership: Membership,
    job_count: u64,
    node_count: u64,
}

/// Version 1's header (frozen).
#[derive(Deserialize)]
struct SnapshotHeaderV1 {
    index: Index,
    term: Term,
    membership: Membership,
    job_count: u64,
}

/// Builds snapshot bytes from already-encoded job records (in id order).
pub(crate) struct SnapshotBuilder {
    body: Vec<u8>,
    nodes: Vec<u8>,
    tokens: Vec<u8>,
    job_count: u64,
    node_count: u64,
    token_count: u64,
    acl_bootstrap: Option<String>,
    staged: Option<StagedRestore>,
}

impl SnapshotBuilder {
    pub(crate) fn new() -> SnapshotBuilder {
        SnapshotBuilder {
            body: Vec::new(),
            nodes: Vec::new(),
            tokens: Vec::new(),
            job_count: 0,
            node_count: 0,
            token_count: 0,
            acl_bootstrap: None,
            staged: None,
        }
    }

    /// Carries a restore being staged.
    pub(crate) fn set_staged(&mut self, staged: StagedRestore) {
        self.staged = Some(staged);
    }

    /// Appends one job, given as its bincode record (as stored in `jobs`).
    pub(crate) fn push_encoded_job(&mut self, record: &[u8]) -> Result<(), String> {
        push_frame(&mut self.body, record)?;
        self.job_count += 1;
        Ok(())
    }

    /// Appends one node, given as its bincode record (as stored in `nodes`).
    pub(crate) fn push_encoded_node(&mut self, record: &[u8]) -> Result<(), String> {
        push_frame(&mut self.nodes, record)?;
        self.node_count += 1;
        Ok(())
    }

    /// Appends one token, given as its bincode record (as stored in `acl`).
    pub(crate) fn push_encoded_token(&mut self, record: &[u8]) -> Result<(), String> {
        push_frame(&mut self.tokens, record)?;
        self.token_count += 1;
        Ok(())
    }

    /// Records that the ACL system was bootstrapped (by this accessor).
    pub(crate) fn set_bootstrap(&mut self, accessor: String) {
        self.acl_bootstrap = Some(accessor);
    }

    /// Finishes the bytes: magic, version, header, jobs, nodes, tokens,
    /// checksum.
    pub(crate) fn finish(self, meta: &SnapshotMeta) -> Result<Vec<u8>, super::StoreError> {
        let header = codec::encode(
            "snapshot header",
            &SnapshotHeader {
                index: meta.index,
                term: meta.term,
                membership: meta.membership.clone(),
                job_count: self.job_count,
                node_count: self.node_count,
                token_count: self.token_count,
                acl_bootstrap: self.acl_bootstrap,
                staged_meta: self.staged.as_ref().map(|s| s.meta.clone()),
                staged_chunk_count: self.staged.as_ref().map_or(0, |s| s.chunks.len() as u64),
            },
        )?;
        let mut staged = Vec::new();
        if let Some(s) = &self.staged {
            for chunk in &s.chunks {
                let record = codec::encode("staged chunk", chunk)?;
                push_frame(&mut staged, &record).map_err(super::StoreError::InvalidArgument)?;
            }
        }
        let header_len = u32::try_from(header.len())
            .map_err(|_| super::StoreError::InvalidArgument("snapshot header too large".into()))?;
        let mut out = Vec::with_capacity(8 + 1 + 4 + header.len() + self.body.len() + 4);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_V4);
        out.extend_from_slice(&header_len.to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&self.nodes);
        out.extend_from_slice(&self.tokens);
        out.extend_from_slice(&staged);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        Ok(out)
    }
}

fn push_frame(out: &mut Vec<u8>, record: &[u8]) -> Result<(), String> {
    let len = u32::try_from(record.len())
        .map_err(|_| format!("record of {} bytes is too large", record.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(record);
    Ok(())
}

/// Snapshot bytes, decoded and verified.
pub(crate) struct DecodedSnapshot {
    pub meta: SnapshotMeta,
    /// In strictly ascending id order.
    pub jobs: Vec<Job>,
    /// The node table.
    pub nodes: Vec<NodeRecord>,
    /// The token table.
    pub tokens: Vec<Token>,
    /// Accessor of the bootstrap token, if bootstrapped.
    pub bootstrap: Option<String>,
    /// A restore being staged.
    pub staged: Option<StagedRestore>,
}

/// Checks the trailing CRC-32 (and the minimum length). Cheap compared to a
/// full decode; what open and restore do for the file on disk.
pub(crate) fn verify_checksum(data: &[u8]) -> Result<(), String> {
    if data.len() < MAGIC.len() + 1 + 4 + 4 {
        return Err(format!("snapshot of {} bytes is truncated", data.len()));
    }
    let (body, crc) = data.split_at(data.len() - 4);
    let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let actual = crc32fast::hash(body);
    if stored != actual {
        return Err(format!(
            "snapshot checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        ));
    }
    Ok(())
}

/// Fully decodes and verifies snapshot bytes. Never panics on any input.
/// Decodes a snapshot described by `meta`. Empty data at index 1 is the
/// genesis snapshot a new cluster starts from (see `raft::core`): the empty
/// state with the founding membership. Empty data anywhere else is refused.
pub(crate) fn decode_for(meta: &SnapshotMeta, data: &[u8]) -> Result<DecodedSnapshot, String> {
    if data.is_empty() && meta.index == GENESIS_INDEX {
        return Ok(DecodedSnapshot {
            meta: meta.clone(),
            jobs: Vec::new(),
            nodes: Vec::new(),
            tokens: Vec::new(),
            bootstrap: None,
            staged: None,
        });
    }
    decode(data)
}

/// Whether a snapshot received from the leader decodes and is the one its
/// metadata names: the Raft core's [`crate::raft::Config::snapshot_check`],
/// run before the snapshot replaces anything (the same checks `persist`
/// makes, which would otherwise stop the node). Logs why it refuses one.
pub fn check_received(meta: &SnapshotMeta, data: &[u8]) -> Result<(), String> {
    let outcome = decode_for(meta, data).and_then(|decoded| {
        (decoded.meta == *meta).then_some(()).ok_or_else(|| {
            format!(
                "data is of index {} term {}, meta says index {} term {} (or memberships differ)",
                decoded.meta.index, decoded.meta.term, meta.index, meta.term
            )
        })
    });
    if let Err(why) = &outcome {
        tracing::warn!(
            index = meta.index,
            term = meta.term,
            "snapshot from the leader refused (nothing changed; the leader starts over): {why}"
        );
    }
    outcome
}

/// Index of the genesis snapshot.
const GENESIS_INDEX: u64 = 1;

pub(crate) fn decode(data: &[u8]) -> Result<DecodedSnapshot, String> {
    verify_checksum(data)?;
    let body = &data[..data.len() - 4];
    let mut r = Reader { rest: body };
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not a Drover snapshot (bad magic)".into());
    }
    let version = r.take(1)?[0];
    let header: SnapshotHeader = match version {
        FORMAT_V3 | FORMAT_V4 => codec::decode("snapshot header", r.frame()?)?,
        FORMAT_V2 => {
            let v2: SnapshotHeaderV2 = codec::decode("snapshot header", r.frame()?)?;
            SnapshotHeader {
                index: v2.index,
                term: v2.term,
                membership: v2.membership,
                job_count: v2.job_count,
                node_count: v2.node_count,
                token_count: 0,
                acl_bootstrap: None,
                staged_meta: None,
                staged_chunk_count: 0,
            }
        }
        FORMAT_V1 => {
            let v1: SnapshotHeaderV1 = codec::decode("snapshot header", r.frame()?)?;
            SnapshotHeader {
                index: v1.index,
                term: v1.term,
                membership: v1.membership,
                job_count: v1.job_count,
                node_count: 0,
                token_count: 0,
                acl_bootstrap: None,
                staged_meta: None,
                staged_chunk_count: 0,
            }
        }
        _ => {
            return Err(format!(
                "unknown snapshot format version {version} (written by a newer Drover?)"
            ))
        }
    };
    let mut jobs = Vec::new();
    for n in 0..header.job_count {
        let frame = r.frame()?;
        let job: Job = match version {
            FORMAT_V1 => codec::decode::<JobV1>("snapshot job", frame)?
                .upgrade()
                .upgrade()
                .upgrade(),
            FORMAT_V2 => codec::decode::<JobV2>("snapshot job", frame)?
                .upgrade()
                .upgrade(),
            FORMAT_V3 => codec::decode::<JobV5>("snapshot job", frame)?.upgrade(),
            _ => codec::decode("snapshot job", frame)?,
        };
        if jobs.last().is_some_and(|prev: &Job| prev.id >= job.id) {
            return Err(format!("snapshot job {n} ({}) is out of order", job.id));
        }
        jobs.push(job);
    }
    let mut nodes = Vec::new();
    for _ in 0..header.node_count {
        let node: NodeRecord = codec::decode("snapshot node", r.frame()?)?;
        nodes.push(node);
    }
    let mut tokens = Vec::new();
    for _ in 0..header.token_count {
        let token: Token = codec::decode("snapshot token", r.frame()?)?;
        tokens.push(token);
    }
    let staged = match header.staged_meta {
        Some(meta) => {
            let mut chunks = Vec::new();
            for _ in 0..header.staged_chunk_count {
                let chunk: (u32, Vec<u8>) = codec::decode("snapshot staged chunk", r.frame()?)?;
                chunks.push(chunk);
            }
            Some(StagedRestore { meta, chunks })
        }
        None => None,
    };
    if !r.rest.is_empty() {
        return Err(format!(
            "{} unexpected bytes after the last job",
            r.rest.len()
        ));
    }
    Ok(DecodedSnapshot {
        meta: SnapshotMeta {
            index: header.index,
            term: header.term,
            membership: header.membership,
        },
        jobs,
        nodes,
        tokens,
        bootstrap: header.acl_bootstrap,
        staged,
    })
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err(format!(
                "snapshot truncated: needed {n} bytes, {} left",
                self.rest.len()
            ));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn frame(&mut self) -> Result<&'a [u8], String> {
        let len = self.take(4)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        self.take(len)
    }
}

/// The file name of the snapshot described by `meta`.
pub(crate) fn file_name(meta: &SnapshotMeta) -> String {
    format!(
        "{FILE_PREFIX}{:020}-{:020}{FILE_SUFFIX}",
        meta.index, meta.term
    )
}

/// Writes `data` to `dir/name` durably: temp file, fsync, rename, fsync of
/// the directory. After this returns, the file survives a crash.
pub(crate) fn write_file(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Fsyncs a directory so that entries created or renamed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads the file a record points at and checks length and checksums.
/// `Err` is a description for [`super::StoreError::Corrupt`].
pub(crate) fn read_file(dir: &Path, record: &SnapshotRecord) -> Result<Vec<u8>, String> {
    let path = dir.join(&record.file);
    let data = fs::read(&path)
        .map_err(|e| format!("cannot read snapshot file {}: {e}", path.display()))?;
    if data.len() as u64 != record.len {
        return Err(format!(
            "snapshot file {} has {} bytes, expected {}",
            path.display(),
            data.len(),
            record.len
        ));
    }
    let crc = crc32fast::hash(&data);
    if crc != record.crc32 {
        return Err(format!(
            "snapshot file {} checksum mismatch (recorded {:08x}, computed {crc:08x})",
            path.display(),
            record.crc32
        ));
    }
    if data.is_empty() && record.meta.index == GENESIS_INDEX {
        return Ok(data); // the genesis snapshot (see `decode_for`)
    }
    verify_checksum(&data).map_err(|e| format!("snapshot file {}: {e}", path.display()))?;
    Ok(data)
}

/// Deletes snapshot files and leftover temp files other than `keep`. Only
/// names this module creates are touched. Failures are logged, not returned:
/// a stale file wastes space but is never read.
pub(crate) fn remove_stale_files(dir: &Path, keep: Option<&str>) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list snapshot directory");
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.starts_with(FILE_PREFIX)
            && (name.ends_with(FILE_SUFFIX) || name.ends_with(TMP_SUFFIX));
        if !ours || Some(name) == keep {
            continue;
        }
        if let Err(e) = fs::remove_file(entry.path()) {
            tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove stale snapshot file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{JobId, JobSpec};
    use crate::raft::PeerInfo;

    /// Five jobs, the last one running as a chosen user.
    fn sample_jobs() -> Vec<Job> {
        (1..=5u64)
            .map(|n| {
                let mut spec = JobSpec::shell(format!("echo {n}"));
                spec.user = (n == 5).then(|| "1000:1000".into());
                Job::new(JobId::from_parts(n, u128::from(n)), spec, n as i64, n)
            })
            .collect()
    }

    fn sample() -> (SnapshotMeta, Vec<u8>) {
        let mut meta = SnapshotMeta {
            index: 42,
            term: 3,
            membership: Membership::default(),
        };
        meta.membership.voters.insert(1, PeerInfo::default());
        let mut b = SnapshotBuilder::new();
        for job in sample_jobs() {
            b.push_encoded_job(&codec::encode("job", &job).unwrap())
                .unwrap();
        }
        let node = NodeRecord {
            id: 2,
            status: crate::jobs::NodeStatus::Ready,
            labels: Default::default(),
            capacity: Default::default(),
            drain: None,
            updated_at_ms: 9,
        };
        b.push_encoded_node(&codec::encode("node", &node).unwrap())
            .unwrap();
        let token = Token {
            accessor: "01TOKEN".into(),
            name: "ci".into(),
            role: crate::acl::Role::Submitter,
            secret_hash: [7; 32],
            created_at_ms: 5,
        };
        b.push_encoded_token(&codec::encode("token", &token).unwrap())
            .unwrap();
        b.set_bootstrap("01TOKEN".into());
        let data = b.finish(&meta).unwrap();
        (meta, data)
    }

    #[test]
    fn round_trips() {
        let (meta, data) = sample();
        let decoded = decode(&data).unwrap();
        assert_eq!(decoded.meta, meta);
        assert_eq!(decoded.jobs, sample_jobs());
        assert_eq!(decoded.nodes.len(), 1);
        assert_eq!(decoded.tokens.len(), 1);
        assert_eq!(decoded.tokens[0].role, crate::acl::Role::Submitter);
        assert_eq!(decoded.bootstrap.as_deref(), Some("01TOKEN"));
    }

    #[test]
    fn a_format_3_snapshot_of_the_previous_release_still_reads() {
        // Jobs as schemas 3 to 5 wrote them (no `user`), version byte 3.
        let jobs: Vec<Job> = sample_jobs()
            .into_iter()
            .filter(|j| j.spec.user.is_none())
            .collect();
        let mut b = SnapshotBuilder::new();
        for job in &jobs {
            let old = crate::jobs::legacy::JobV5::from_job(job.clone()).unwrap();
            b.push_encoded_job(&codec::encode("job", &old).unwrap())
                .unwrap();
        }
        let (meta, _) = sample();
        let mut data = b.finish(&meta).unwrap();
        assert_eq!(data[MAGIC.len()], FORMAT_V4);
        data[MAGIC.len()] = FORMAT_V3;
        let body = data.len() - 4;
        let crc = crc32fast::hash(&data[..body]);
        data[body..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(decode(&data).unwrap().jobs, jobs);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_refused() {
        let (_, data) = sample();
        for n in 0..data.len() {
            assert!(decode(&data[..n]).is_err(), "prefix {n}");
        }
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn garbage_with_a_valid_checksum_never_panics() {
        // Corrupt the body but fix up the CRC, so the structural decoder
        // itself meets the garbage.
        let (_, data) = sample();
        let body_len = data.len() - 4;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut bad = data[..body_len].to_vec();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state as usize) % body_len;
                bad[at] = (state >> 32) as u8;
            }
            let crc = crc32fast::hash(&bad);
            bad.extend_from_slice(&crc.to_be_bytes());
            let _ = decode(&bad);
        }
    }
}
