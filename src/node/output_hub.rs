//! Live fan-out of job output: the executor writes each chunk once, into
//! the node-local output store; followers (`drover job logs -f`, SSE, gRPC
//! streams) read it back from the store and are woken when more arrives.
//!
//! # Never blocking the job
//! A writer stores the chunk, then bumps a `tokio::sync::watch` value (the
//! attempt's latest seq). That never waits for anyone: a watch keeps one
//! value, not a queue, so there is nothing to fill up. A follower that was
//! not polled for a while just finds the value changed and re-reads the
//! store from its last seq: it loses nothing that was stored (the output
//! cap is what bounds the store), and holds at most one read batch
//! ([`READ_BATCH_BYTES`], or one bigger chunk) in memory.
//!
//! With nobody following, a write costs the store append plus one
//! uncontended watch update.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::Stream;
use tokio::sync::watch;

use crate::jobs::JobId;
use crate::jobs::OutputChunk;
use crate::jobs::OutputStream;
use crate::store::{AppendOutcome, SpaceGuard, Store, StoreError};

/// Bound on the data a follower reads from the store at a time, and so on
/// what it buffers (one chunk bigger than this is still read whole).
pub const READ_BATCH_BYTES: usize = 64 << 10;

type AttemptKey = (JobId, u32);

/// What a writer publishes to its followers.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    /// Highest seq stored by this writer (followers re-read the store; this
    /// only tells them there is something new).
    last_seq: Option<u64>,
    /// The writer is done: nothing more will be appended.
    closed: bool,
}

/// The node's output hub: one per node, shared by the executor (writers)
/// and the API (subscribers). Cheap to clone.
#[derive(Clone)]
pub struct OutputHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    store: Arc<Store>,
    cap_bytes: u64,
    /// Output is new data: dropped while the disk is below its reserve.
    space: Arc<SpaceGuard>,
    /// Attempts with an open writer. Held only for map operations, never
    /// across an await or a store call.
    live: Mutex<HashMap<AttemptKey, Arc<watch::Sender<Progress>>>>,
}

impl HubInner {
    fn live(&self) -> MutexGuard<'_, HashMap<AttemptKey, Arc<watch::Sender<Progress>>>> {
        // The map is consistent after every statement: ignore poisoning.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for OutputHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputHub")
            .field("cap_bytes", &self.inner.cap_bytes)
            .field("live", &self.inner.live().len())
            .finish_non_exhaustive()
    }
}

impl OutputHub {
    /// A hub storing output in `store`, keeping at most `cap_bytes` bytes
    /// per attempt (see [`Store::append_output`]), and nothing while
    /// `space` says the disk is below its reserve.
    pub fn new(store: Arc<Store>, cap_bytes: u64, space: Arc<SpaceGuard>) -> OutputHub {
        OutputHub {
            inner: Arc::new(HubInner {
                store,
                cap_bytes,
                space,
                live: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The writer for an attempt's output, marking the attempt live until
    /// it is closed or dropped. There is one writer per attempt: a new one
    /// supersedes (and closes, for followers) any previous one.
    pub fn writer(&self, job: JobId, attempt: u32) -> AttemptWriter {
        let (progress, _) = watch::channel(Progress::default());
        let progress = Arc::new(progress);
        let old = self
            .inner
            .live()
            .insert((job, attempt), Arc::clone(&progress));
        if let Some(old) = old {
            tracing::warn!(%job, attempt, "a second output writer supersedes the first");
            old.send_modify(|p| p.closed = true);
        }
        AttemptWriter {
            hub: Arc::clone(&self.inner),
            job,
            attempt,
            progress,
            dropping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// True while a writer is open for the attempt (the job is running
    /// here), i.e. while following it can yield more than what is stored.
    pub fn is_live(&self, job: JobId, attempt: u32) -> bool {
        self.inner.live().contains_key(&(job, attempt))
    }

    /// Reads an attempt's output: the stored chunks after `after_seq` (all
    /// if `None`; pass the last seq seen to resume), then, with `follow`
    /// and while a writer is open, new chunks as they are stored, ending
    /// when the writer closes. Without `follow`, or with no writer (the
    /// attempt finished, or ran before a restart), it ends once it has read
    /// what is stored, like `cat` of a file.
    pub fn subscribe(
        &self,
        job: JobId,
        attempt: u32,
        after_seq: Option<u64>,
        follow: bool,
    ) -> Subscription {
        let live = if follow {
            self.inner
                .live()
                .get(&(job, attempt))
                .map(|progress| progress.subscribe())
        } else {
            None
        };
        Subscription {
            store: Arc::clone(&self.inner.store),
            job,
            attempt,
            cursor: after_seq,
            buffer: VecDeque::new(),
            live,
            done: false,
        }
    }
}

/// Appends one attempt's output and wakes its followers. Closing or
/// dropping it ends the followers (once they have read everything).
pub struct AttemptWriter {
    hub: Arc<HubInner>,
    job: JobId,
    attempt: u32,
    progress: Arc<watch::Sender<Progress>>,
    /// Set while chunks are dropped for want of disk space (logged once
    /// per stretch).
    dropping: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for AttemptWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptWriter")
            .field("job", &self.job)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl AttemptWriter {
    /// Stores a chunk (subject to the hub's cap) and wakes followers,
    /// without ever waiting for them. Synchronous and fast: a store append
    /// without a flush.
    pub fn write(&self, stream: OutputStream, data: &[u8]) -> Result<AppendOutcome, StoreError> {
        use std::sync::atomic::Ordering;
        if let Err(report) = self.hub.space.admit(true, data.len() as u64) {
            if !self.dropping.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    job = %self.job,
                    attempt = self.attempt,
                    "job output is dropped until disk space returns: {}",
                    report.refusal()
                );
            }
            return Ok(AppendOutcome::Dropped);
        }
        self.dropping.store(false, Ordering::Relaxed);
        let outcome = self.hub.store.append_output(
            &self.job,
            self.attempt,
            stream,
            data,
            self.hub.cap_bytes,
        )?;
        if let Some(seq) = outcome.last_seq() {
            self.progress
                .send_modify(|p| p.last_seq = p.last_seq.max(Some(seq)));
        }
        Ok(outcome)
    }

    /// Marks the attempt's output finished: followers end after reading
    /// what is stored. Same as dropping the writer, but explicit.
    pub fn close(self) {}
}

impl Drop for AttemptWriter {
    fn drop(&mut self) {
        self.progress.send_modify(|p| p.closed = true);
        let mut live = self.hub.live();
        let key = (self.job, self.attempt);
        // Only our own entry: a superseding writer owns the key now.
        if live
            .get(&key)
            .is_some_and(|p| Arc::ptr_eq(p, &self.progress))
        {
            live.remove(&key);
        }
    }
}

/// A reader of one attempt's output (see [`OutputHub::subscribe`]). Holds
/// at most one read batch in memory.
pub struct Subscription {
    store: Arc<Store>,
    job: JobId,
    attempt: u32,
    /// Seq of the last chunk read from the store (and so of the last in
    /// `buffer`, or the last yielded if it is empty).
    cursor: Option<u64>,
    buffer: VecDeque<OutputChunk>,
    /// The writer's progress, while following a live attempt.
    live: Option<watch::Receiver<Progress>>,
    done: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("job", &self.job)
            .field("attempt", &self.attempt)
            .field("cursor", &self.cursor)
            .field("following", &self.live.is_some())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next chunk in seq order; `None` at the end. A store error is
    /// yielded once and ends the subscription.
    pub async fn next(&mut self) -> Option<Result<OutputChunk, StoreError>> {
        loop {
            if let Some(chunk) = self.buffer.pop_front() {
                return Some(Ok(chunk));
            }
            if self.done {
                return None;
            }
            // Look at the writer's state BEFORE reading the store: if it was
            // closed then, everything it wrote is in the store; if not, any
            // later write marks the value changed and wakes us below.
            let closed = match &mut self.live {
                Some(rx) => rx.borrow_and_update().closed,
                None => true,
            };
            let batch =
                match self
                    .store
                    .read_output(&self.job, self.attempt, self.cursor, READ_BATCH_BYTES)
                {
                    Ok(batch) => batch,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                };
            if let Some(last) = batch.last() {
                self.cursor = Some(last.seq);
                self.buffer.extend(batch);
                continue;
            }
            if closed {
                self.done = true;
                continue;
            }
            if let Some(rx) = &mut self.live {
                if rx.changed().await.is_err() {
                    // The writer is gone: one last read, then the end.
                    self.live = None;
                }
            }
        }
    }

    /// The subscription as a `Stream`, for gRPC and SSE responses.
    pub fn into_stream(self) -> impl Stream<Item = Result<OutputChunk, StoreError>> + Send {
        futures::stream::unfold(self, |mut sub| async move {
            let item = sub.next().await?;
            Some((item, sub))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(30);

    fn hub(cap_bytes: u64) -> (tempfile::TempDir, OutputHub) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test-cluster", 1).unwrap();
        let space = Arc::new(SpaceGuard::new(dir.path(), 1 << 20, 0));
        (dir, OutputHub::new(Arc::new(store), cap_bytes, space))
    }

    fn job() -> JobId {
        JobId::from_parts(1_700_000_000_000, 42)
    }

    /// The next item, failing the test if it takes longer than the deadline.
    async fn next(sub: &mut Subscription) -> Option<OutputChunk> {
        tokio::time::timeout(DEADLINE, sub.next())
            .await
            .expect("the subscription did not answer in time")
            .map(|r| r.unwrap())
    }

    #[tokio::test]
    async fn late_follower_sees_stored_then_live_then_ends_on_close() {
        let (_dir, hub) = hub(1 << 20);
        let writer = hub.writer(job(), 1);
        assert!(hub.is_live(job(), 1));
        writer.write(OutputStream::Stdout, b"one").unwrap();
        writer.write(OutputStream::Stderr, b"two").unwrap();

        let mut sub = hub.subscribe(job(), 1, None, true);
        let first = next(&mut sub).await.unwrap();
        assert_eq!((first.seq, first.data.as_slice()), (0, &b"one"[..]));
        let second = next(&mut sub).await.unwrap();
        assert_eq!(
            (second.seq, second.stream, second.data.as_slice()),
            (1, OutputStream::Stderr, &b"two"[..])
        );

        // Nothing more yet: the follower parks until the writer writes.
        {
            let waiting = next(&mut sub);
            tokio::pin!(waiting);
            assert!(futures::poll!(&mut waiting).is_pending());
            writer.write(OutputStream::Stdout, b"three").unwrap();
            assert_eq!(waiting.await.unwrap().data, b"three");
        }

        writer.write(OutputStream::Stdout, b"four").unwrap();
        assert_eq!(next(&mut sub).await.unwrap().data, b"four");
        // Closing wakes a parked follower, which then ends.
        {
            let waiting = next(&mut sub);
            tokio::pin!(waiting);
            assert!(futures::poll!(&mut waiting).is_pending());
            writer.close();
            assert!(!hub.is_live(job(), 1));
            assert!(waiting.await.is_none());
        }
        assert!(next(&mut sub).await.is_none());

        // Resuming after a seq, as a reconnecting client does.
        let mut resumed = hub.subscribe(job(), 1, Some(2), true);
        assert_eq!(next(&mut resumed).await.unwrap().seq, 3);
        assert!(next(&mut resumed).await.is_none());
    }

    #[tokio::test]
    async fn follow_without_a_writer_ends_after_the_stored_chunks() {
        let (_dir, hub) = hub(1 << 20);
        // Stored by a previous run of the node: no writer now.
        hub.inner
            .store
            .append_output(&job(), 1, OutputStream::Stdout, b"old", 1 << 20)
            .unwrap();
        assert!(!hub.is_live(job(), 1));
        let mut sub = hub.subscribe(job(), 1, None, true);
        assert_eq!(next(&mut sub).await.unwrap().data, b"old");
        assert!(next(&mut sub).await.is_none());

        // Without follow, a live attempt reads what is stored and ends.
        let writer = hub.writer(job(), 2);
        writer.write(OutputStream::Stdout, b"now").unwrap();
        let mut sub = hub.subscribe(job(), 2, None, false);
        assert_eq!(next(&mut sub).await.unwrap().data, b"now");
        assert!(next(&mut sub).await.is_none());
    }

    #[tokio::test]
    async fn slow_follower_gets_every_byte_and_never_blocks_the_writer() {
        const TOTAL: usize = 10 << 20;
        let (_dir, hub) = hub(16 << 20);
        let writer = hub.writer(job(), 1);
        let mut sub = hub.subscribe(job(), 1, None, true);

        // Chunks of varying sizes with position-dependent bytes, so loss,
        // duplication or reordering would show.
        let expected: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
        let source = expected.clone();
        // The follower is not polled while this runs: if a write waited for
        // it, the task would never finish.
        let writing = tokio::spawn(async move {
            let mut at = 0;
            let mut n = 0;
            while at < source.len() {
                let end = (at + 512 + n % 1024).min(source.len());
                let stream = if n % 3 == 0 {
                    OutputStream::Stderr
                } else {
                    OutputStream::Stdout
                };
                let outcome = writer.write(stream, &source[at..end]).unwrap();
                assert!(matches!(outcome, AppendOutcome::Stored { .. }));
                at = end;
                n += 1;
            }
            writer.close();
        });
        tokio::time::timeout(DEADLINE, writing)
            .await
            .expect("the writer blocked on a follower that does not poll")
            .unwrap();

        let mut received = Vec::with_capacity(TOTAL);
        let mut last_seq = None;
        while let Some(chunk) = next(&mut sub).await {
            assert!(chunk.data.len() <= READ_BATCH_BYTES);
            assert!(last_seq < Some(chunk.seq));
            last_seq = Some(chunk.seq);
            received.extend_from_slice(&chunk.data);
        }
        assert_eq!(received.len(), expected.len());
        assert!(received == expected, "the follower's bytes differ");
    }
}
