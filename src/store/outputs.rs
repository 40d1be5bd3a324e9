//! The node-local job output store: the stdout/stderr chunks of the
//! attempts this node ran, in the `outputs` tree. Never in the Raft log:
//! output is large, node-local and best effort.
//!
//! # Layout
//! Key: job id (16 bytes) ++ attempt (u32 BE) ++ seq (u64 BE), so an
//! attempt's chunks are one contiguous range in seq order and a job's
//! attempts one prefix. Value: one stream tag byte (1 stdout, 2 stderr,
//! 3 notice) followed by the raw bytes. Seq [`META_SEQ`] (`u64::MAX`) of
//! each attempt holds its [`AttemptMeta`] (stored bytes, next seq,
//! truncated flag), written in the same atomic batch as the chunks it counts.
//!
//! # Durability
//! Appends are never flushed: a crash may lose the latest chunks (always
//! whole batches, so the metadata matches the chunks that survived). The
//! next flush of the store (any Raft persist) makes them durable in passing.

use super::{lock, Store, StoreError};
use crate::jobs::JobId;
use crate::jobs::{OutputChunk, OutputStream};

/// The seq reserved for an attempt's metadata; no chunk has it.
const META_SEQ: u64 = u64::MAX;
/// Job id ++ attempt.
const PREFIX_LEN: usize = 16 + 4;
const KEY_LEN: usize = PREFIX_LEN + 8;
const META_LEN: usize = 8 + 8 + 1;

const TAG_STDOUT: u8 = 1;
const TAG_STDERR: u8 = 2;
const TAG_NOTICE: u8 = 3;

/// What [`Store::append_output`] did with a chunk, so the caller can tell
/// followers which seqs are new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The whole chunk was stored under `seq`.
    Stored { seq: u64 },
    /// This chunk reached the cap: its first `kept_bytes` bytes were stored
    /// (under `kept_seq`, if any), then the truncation notice under
    /// `notice_seq`. Later appends to the attempt are dropped.
    Truncated {
        kept_seq: Option<u64>,
        kept_bytes: usize,
        notice_seq: u64,
    },
    /// Nothing was stored: the attempt's output was already truncated, or
    /// the chunk was empty.
    Dropped,
}

impl AppendOutcome {
    /// The highest seq this append wrote, if it wrote anything.
    pub fn last_seq(&self) -> Option<u64> {
        match *self {
            AppendOutcome::Stored { seq } => Some(seq),
            AppendOutcome::Truncated { notice_seq, .. } => Some(notice_seq),
            AppendOutcome::Dropped => None,
        }
    }
}

/// Per-attempt bookkeeping, stored under [`META_SEQ`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct AttemptMeta {
    /// Bytes of appended chunks kept (the truncation notice not included).
    stored_bytes: u64,
    next_seq: u64,
    truncated: bool,
}

impl AttemptMeta {
    fn encode(&self) -> [u8; META_LEN] {
        let mut out = [0u8; META_LEN];
        out[..8].copy_from_slice(&self.stored_bytes.to_be_bytes());
        out[8..16].copy_from_slice(&self.next_seq.to_be_bytes());
        out[16] = u8::from(self.truncated);
        out
    }

    fn decode(bytes: &[u8]) -> Option<AttemptMeta> {
        let bytes: &[u8; META_LEN] = bytes.try_into().ok()?;
        let (stored, rest) = bytes.split_at(8);
        let (next, flag) = rest.split_at(8);
        Some(AttemptMeta {
            stored_bytes: u64::from_be_bytes(stored.try_into().ok()?),
            next_seq: u64::from_be_bytes(next.try_into().ok()?),
            truncated: match flag[0] {
                0 => false,
                1 => true,
                _ => return None,
            },
        })
    }
}

fn attempt_prefix(job: &JobId, attempt: u32) -> [u8; PREFIX_LEN] {
    let mut out = [0u8; PREFIX_LEN];
    out[..16].copy_from_slice(&job.to_bytes());
    out[16..].copy_from_slice(&attempt.to_be_bytes());
    out
}

fn chunk_key(prefix: &[u8; PREFIX_LEN], seq: u64) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    out[..PREFIX_LEN].copy_from_slice(prefix);
    out[PREFIX_LEN..].copy_from_slice(&seq.to_be_bytes());
    out
}

fn encode_chunk(stream: OutputStream, data: &[u8]) -> Vec<u8> {
    let tag = match stream {
        OutputStream::Stdout => TAG_STDOUT,
        OutputStream::Stderr => TAG_STDERR,
        OutputStream::Notice => TAG_NOTICE,
    };
    let mut out = Vec::with_capacity(1 + data.len());
    out.push(tag);
    out.extend_from_slice(data);
    out
}

impl Store {
    /// Appends a chunk of an attempt's output under the attempt's next seq,
    /// keeping at most `cap_bytes` bytes of appended data per attempt so a
    /// chatty job cannot fill the node's disk.
    ///
    /// The chunk that crosses the cap is cut so that exactly `cap_bytes`
    /// are kept, followed by ONE notice chunk `[drover: output truncated at
    /// N bytes]` (not counted against the cap); every later append is
    /// dropped. Chunk, notice and metadata are written in one atomic batch,
    /// without a flush (see the module docs: a crash may lose the latest
    /// chunks). Appends are serialized per store, so concurrent writers
    /// (stdout and stderr tasks) get distinct, ordered seqs.
    pub fn append_output(
        &self,
        job: &JobId,
        attempt: u32,
        stream: OutputStream,
        data: &[u8],
        cap_bytes: u64,
    ) -> Result<AppendOutcome, StoreError> {
        let prefix = attempt_prefix(job, attempt);
        let _out = lock(&self.output_lock);
        let mut meta = self.attempt_meta(&prefix)?;
        if meta.truncated || data.is_empty() {
            return Ok(AppendOutcome::Dropped);
        }
        let room = cap_bytes.saturating_sub(meta.stored_bytes);
        let kept = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let mut batch = sled::Batch::default();
        let mut kept_seq = None;
        if kept > 0 {
            let seq = meta.next_seq;
            batch.insert(
                &chunk_key(&prefix, seq)[..],
                encode_chunk(stream, &data[..kept]),
            );
            kept_seq = Some(seq);
            meta.next_seq += 1;
            meta.stored_bytes += kept as u64;
        }
        let outcome = match kept_seq {
            Some(seq) if kept == data.len() => AppendOutcome::Stored { seq },
            _ => {
                let notice_seq = meta.next_seq;
                let notice = format!(
                    "\n[drover: output truncated at {} bytes]\n",
                    meta.stored_bytes
                );
                batch.insert(
                    &chunk_key(&prefix, notice_seq)[..],
                    encode_chunk(OutputStream::Notice, notice.as_bytes()),
                );
                meta.next_seq += 1;
                meta.truncated = true;
                AppendOutcome::Truncated {
                    kept_seq,
                    kept_bytes: kept,
                    notice_seq,
                }
            }
        };
        debug_assert!(kept == 0 || meta.stored_bytes <= cap_bytes);
        batch.insert(&chunk_key(&prefix, META_SEQ)[..], &meta.encode()[..]);
        self.outputs
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))?;
        Ok(outcome)
    }

    /// Reads an attempt's chunks in seq order, those after `after_seq` (all
    /// if `None`), at most `max_bytes` of data so a reader pages through
    /// a big output with bounded memory. Returns at least one chunk if any
    /// follows `after_seq`, even one bigger than `max_bytes`, so a reader
    /// always makes progress; an empty result means "nothing more yet".
    pub fn read_output(
        &self,
        job: &JobId,
        attempt: u32,
        after_seq: Option<u64>,
        max_bytes: usize,
    ) -> Result<Vec<OutputChunk>, StoreError> {
        let prefix = attempt_prefix(job, attempt);
        let start = match after_seq {
            None => 0,
            Some(seq) => match seq.checked_add(1) {
                Some(next) if next < META_SEQ => next,
                _ => return Ok(Vec::new()),
            },
        };
        let mut chunks = Vec::new();
        let mut bytes = 0usize;
        for item in self
            .outputs
            .range(chunk_key(&prefix, start)..chunk_key(&prefix, META_SEQ))
        {
            let (key, value) = item.map_err(|e| self.sled_err(e))?;
            let chunk = self.decode_chunk(&key, &value)?;
            if !chunks.is_empty() && bytes.saturating_add(chunk.data.len()) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(chunk.data.len());
            chunks.push(chunk);
        }
        Ok(chunks)
    }

    /// The last `max_bytes` bytes of an attempt's output (stdout, stderr
    /// and notices interleaved as stored), e.g. for a job's status page or
    /// a failure report. Reads chunks backwards and stops as soon as it has
    /// enough, so its cost depends on `max_bytes`, not on the output size.
    pub fn output_tail(
        &self,
        job: &JobId,
        attempt: u32,
        max_bytes: usize,
    ) -> Result<Vec<u8>, StoreError> {
        let prefix = attempt_prefix(job, attempt);
        let mut newest_first = Vec::new();
        let mut bytes = 0usize;
        let range = self
            .outputs
            .range(chunk_key(&prefix, 0)..chunk_key(&prefix, META_SEQ));
        for item in range.rev() {
            if bytes >= max_bytes {
                break;
            }
            let (key, value) = item.map_err(|e| self.sled_err(e))?;
            let chunk = self.decode_chunk(&key, &value)?;
            bytes += chunk.data.len();
            newest_first.push(chunk.data);
        }
        let mut skip = bytes.saturating_sub(max_bytes);
        let mut tail = Vec::with_capacity(bytes - skip);
        for data in newest_first.iter().rev() {
            let from = skip.min(data.len());
            skip -= from;
            tail.extend_from_slice(&data[from..]);
        }
        Ok(tail)
    }

    /// Removes an attempt's output and metadata, so it can be rewritten
    /// from scratch (a restarted node re-reads a container's whole log from
    /// the engine) with seqs from 0 and a fresh cap. Not flushed.
    pub fn clear_output(&self, job: &JobId, attempt: u32) -> Result<(), StoreError> {
        let _out = lock(&self.output_lock);
        self.remove_output_prefix(&attempt_prefix(job, attempt))
    }

    /// Removes the output of every attempt of a job (garbage collection of
    /// finished jobs). A writer still appending to the job would recreate
    /// its attempt: call this only for jobs that no longer run here.
    pub fn delete_job_output(&self, job: &JobId) -> Result<(), StoreError> {
        let _out = lock(&self.output_lock);
        self.remove_output_prefix(&job.to_bytes())
    }

    /// Deletes every key under `prefix` in one batch. Caller holds
    /// `output_lock`.
    fn remove_output_prefix(&self, prefix: &[u8]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self.outputs.scan_prefix(prefix).keys() {
            batch.remove(key.map_err(|e| self.sled_err(e))?);
        }
        self.outputs
            .apply_batch(batch)
            .map_err(|e| self.sled_err(e))
    }

    fn attempt_meta(&self, prefix: &[u8; PREFIX_LEN]) -> Result<AttemptMeta, StoreError> {
        match self
            .outputs
            .get(chunk_key(prefix, META_SEQ))
            .map_err(|e| self.sled_err(e))?
        {
            None => Ok(AttemptMeta::default()),
            Some(bytes) => AttemptMeta::decode(&bytes)
                .ok_or_else(|| self.corrupt("an output attempt's metadata is malformed".into())),
        }
    }

    fn decode_chunk(&self, key: &[u8], value: &[u8]) -> Result<OutputChunk, StoreError> {
        let seq = key
            .get(PREFIX_LEN..)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_be_bytes);
        let stream = match value.first() {
            Some(&TAG_STDOUT) => Some(OutputStream::Stdout),
            Some(&TAG_STDERR) => Some(OutputStream::Stderr),
            Some(&TAG_NOTICE) => Some(OutputStream::Notice),
            _ => None,
        };
        match (seq, stream) {
            (Some(seq), Some(stream)) => Ok(OutputChunk {
                seq,
                stream,
                data: value[1..].to_vec(),
            }),
            _ => Err(self.corrupt(format!(
                "output chunk {key:?} has a malformed key or stream tag"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test-cluster", 1).unwrap();
        (dir, store)
    }

    fn job(n: u128) -> JobId {
        JobId::from_parts(1_700_000_000_000, n)
    }

    fn all(store: &Store, job: &JobId, attempt: u32) -> Vec<OutputChunk> {
        store.read_output(job, attempt, None, usize::MAX).unwrap()
    }

    #[test]
    fn cap_keeps_exactly_cap_bytes_then_one_marker() {
        let (_dir, store) = store();
        let j = job(1);
        let out = OutputStream::Stdout;
        assert_eq!(
            store.append_output(&j, 1, out, b"hello ", 10).unwrap(),
            AppendOutcome::Stored { seq: 0 }
        );
        assert_eq!(
            store
                .append_output(&j, 1, OutputStream::Stderr, b"world!", 10)
                .unwrap(),
            AppendOutcome::Truncated {
                kept_seq: Some(1),
                kept_bytes: 4,
                notice_seq: 2
            }
        );
        assert_eq!(
            store.append_output(&j, 1, out, b"more", 10).unwrap(),
            AppendOutcome::Dropped
        );
        assert_eq!(
            store.append_output(&j, 1, out, b"", 10).unwrap(),
            AppendOutcome::Dropped
        );

        let chunks = all(&store, &j, 1);
        let data: Vec<u8> = chunks
            .iter()
            .filter(|c| c.stream != OutputStream::Notice)
            .flat_map(|c| c.data.clone())
            .collect();
        assert_eq!(data, b"hello worl");
        let notices: Vec<_> = chunks
            .iter()
            .filter(|c| c.stream == OutputStream::Notice)
            .collect();
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].seq, 2);
        assert!(String::from_utf8_lossy(&notices[0].data)
            .contains("[drover: output truncated at 10 bytes]"));
        assert_eq!(chunks[1].stream, OutputStream::Stderr);

        // A chunk that lands exactly on the cap is kept whole; the marker
        // comes with the first chunk that finds no room.
        let j2 = job(2);
        assert_eq!(
            store.append_output(&j2, 1, out, b"12345", 5).unwrap(),
            AppendOutcome::Stored { seq: 0 }
        );
        assert_eq!(
            store.append_output(&j2, 1, out, b"6", 5).unwrap(),
            AppendOutcome::Truncated {
                kept_seq: None,
                kept_bytes: 0,
                notice_seq: 1
            }
        );
        assert_eq!(all(&store, &j2, 1).len(), 2);
    }

    #[test]
    fn cap_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let j = job(1);
        {
            let store = Store::open(dir.path(), "test-cluster", 1).unwrap();
            store
                .append_output(&j, 1, OutputStream::Stdout, b"abc", 4)
                .unwrap();
            store.sync().unwrap();
        }
        let store = Store::open(dir.path(), "test-cluster", 1).unwrap();
        assert_eq!(
            store
                .append_output(&j, 1, OutputStream::Stdout, b"def", 4)
                .unwrap(),
            AppendOutcome::Truncated {
                kept_seq: Some(1),
                kept_bytes: 1,
                notice_seq: 2
            }
        );
    }

    #[test]
    fn read_after_seq_pages_in_order() {
        let (_dir, store) = store();
        let j = job(1);
        for i in 0..10u8 {
            store
                .append_output(&j, 3, OutputStream::Stdout, &[i; 4], 1 << 20)
                .unwrap();
        }
        // Another attempt and another job do not leak into the range.
        store
            .append_output(&j, 4, OutputStream::Stdout, b"other", 1 << 20)
            .unwrap();
        store
            .append_output(&job(2), 3, OutputStream::Stdout, b"other", 1 << 20)
            .unwrap();

        let page = store.read_output(&j, 3, None, 10).unwrap();
        assert_eq!(page.iter().map(|c| c.seq).collect::<Vec<_>>(), [0, 1]);
        let page = store.read_output(&j, 3, Some(1), 12).unwrap();
        assert_eq!(page.iter().map(|c| c.seq).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(page[0].data, [2u8; 4]);
        // At least one chunk, even over the budget.
        let page = store.read_output(&j, 3, Some(4), 1).unwrap();
        assert_eq!(page.iter().map(|c| c.seq).collect::<Vec<_>>(), [5]);
        assert!(store.read_output(&j, 3, Some(9), 100).unwrap().is_empty());
        assert!(store
            .read_output(&j, 3, Some(u64::MAX), 100)
            .unwrap()
            .is_empty());
        assert!(store.read_output(&j, 7, None, 100).unwrap().is_empty());
    }

    #[test]
    fn tail_spans_chunk_boundaries() {
        let (_dir, store) = store();
        let j = job(1);
        for part in [&b"abc"[..], b"defg", b"hi", b"jklmn"] {
            store
                .append_output(&j, 1, OutputStream::Stdout, part, 1 << 20)
                .unwrap();
        }
        assert_eq!(store.output_tail(&j, 1, 0).unwrap(), b"");
        assert_eq!(store.output_tail(&j, 1, 3).unwrap(), b"lmn");
        assert_eq!(store.output_tail(&j, 1, 5).unwrap(), b"jklmn");
        assert_eq!(store.output_tail(&j, 1, 8).unwrap(), b"ghijklmn");
        assert_eq!(store.output_tail(&j, 1, 100).unwrap(), b"abcdefghijklmn");
        assert_eq!(store.output_tail(&j, 2, 100).unwrap(), b"");

        // Notices are part of the tail.
        store
            .append_output(&j, 1, OutputStream::Stderr, b"!", 14)
            .unwrap();
        let tail = store.output_tail(&j, 1, 1000).unwrap();
        assert!(tail.starts_with(b"abcdefghijklmn\n[drover: output truncated at 14 bytes]"));
    }

    #[test]
    fn clear_and_delete() {
        let (_dir, store) = store();
        let (j, other) = (job(1), job(2));
        for attempt in [1, 2] {
            store
                .append_output(&j, attempt, OutputStream::Stdout, b"abcd", 4)
                .unwrap();
            store
                .append_output(&j, attempt, OutputStream::Stdout, b"x", 4)
                .unwrap();
        }
        store
            .append_output(&other, 1, OutputStream::Stdout, b"keep", 100)
            .unwrap();

        // Clearing resets the attempt: seqs from 0 and a fresh cap.
        store.clear_output(&j, 1).unwrap();
        assert!(all(&store, &j, 1).is_empty());
        assert_eq!(
            store
                .append_output(&j, 1, OutputStream::Stdout, b"abcd", 4)
                .unwrap(),
            AppendOutcome::Stored { seq: 0 }
        );
        assert_eq!(all(&store, &j, 2).len(), 2);

        store.delete_job_output(&j).unwrap();
        assert!(all(&store, &j, 1).is_empty());
        assert!(all(&store, &j, 2).is_empty());
        assert_eq!(
            store
                .append_output(&j, 2, OutputStream::Stdout, b"abcd", 4)
                .unwrap(),
            AppendOutcome::Stored { seq: 0 }
        );
        assert_eq!(all(&store, &other, 1)[0].data, b"keep");
    }
}
