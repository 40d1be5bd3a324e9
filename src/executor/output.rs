//! Output forwarding that never blocks the job.
//!
//! Policy (drop with a visible marker): chunks go into a bounded tokio mpsc
//! channel with `try_send`. When the channel is full the chunk is dropped and
//! its bytes are counted. Before the next chunk that fits, the sink sends one
//! [`OutputStream::Notice`] chunk `[drover: N bytes of output dropped: reader
//! too slow]`, so the reader sees exactly where the gap is. When the
//! attempt ends, a pending marker is sent with a short bounded wait (the job
//! is over, so nothing is blocked). Dropping rather than coalescing keeps memory
//! bounded by the channel capacity; the full output is the engine's log
//! file, and the node-local output store (later) reads from the same stream.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

pub use crate::jobs::OutputStream;

/// A piece of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    /// Where it came from.
    pub stream: OutputStream,
    /// The bytes, as the job wrote them (not split on lines).
    pub data: Bytes,
}

/// The caller's end for output: a bounded channel sender plus drop accounting.
#[derive(Debug)]
pub struct OutputSink {
    tx: mpsc::Sender<OutputChunk>,
    dropped_bytes: u64,
    /// Wait for room instead of dropping: for readers that must get every
    /// byte (the node's output store), where the source can wait without
    /// slowing the job (the engine buffers the log on disk).
    lossless: bool,
}

impl OutputSink {
    /// Wraps the sending half of a bounded channel.
    pub fn new(tx: mpsc::Sender<OutputChunk>) -> Self {
        OutputSink {
            tx,
            dropped_bytes: 0,
            lossless: false,
        }
    }

    /// A bounded channel and a sink that waits for room (see `lossless`).
    pub fn lossless_channel(capacity: usize) -> (Self, mpsc::Receiver<OutputChunk>) {
        let (mut sink, rx) = OutputSink::channel(capacity);
        sink.lossless = true;
        (sink, rx)
    }

    /// Delivers a chunk: waits for room if lossless, else [`OutputSink::offer`].
    /// Returns false once the receiver is gone.
    pub async fn send(&mut self, chunk: OutputChunk) -> bool {
        if self.lossless {
            self.tx.send(chunk).await.is_ok()
        } else {
            self.offer(chunk)
        }
    }

    /// A bounded channel and the sink feeding it.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<OutputChunk>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (OutputSink::new(tx), rx)
    }

    /// Bytes dropped so far and not yet reported by a marker.
    pub fn pending_dropped(&self) -> u64 {
        self.dropped_bytes
    }

    fn marker(&self) -> OutputChunk {
        OutputChunk {
            stream: OutputStream::Notice,
            data: Bytes::from(format!(
                "\n[drover: {} bytes of output dropped: reader too slow]\n",
                self.dropped_bytes
            )),
        }
    }

    /// Offers a chunk without waiting. Returns false once the receiver is gone.
    pub fn offer(&mut self, chunk: OutputChunk) -> bool {
        if self.dropped_bytes > 0 {
            match self.tx.try_send(self.marker()) {
                Ok(()) => self.dropped_bytes = 0,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped_bytes += chunk.data.len() as u64;
                    return true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        match self.tx.try_send(chunk) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(chunk)) => {
                self.dropped_bytes += chunk.data.len() as u64;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Sends a pending marker, waiting at most `patience` for room.
    pub async fn finish(mut self, patience: Duration) {
        if self.dropped_bytes > 0 {
            let marker = self.marker();
            if let Ok(Ok(())) = tokio::time::timeout(patience, self.tx.send(marker)).await {
                self.dropped_bytes = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(s: &'static str) -> OutputChunk {
        OutputChunk {
            stream: OutputStream::Stdout,
            data: Bytes::from_static(s.as_bytes()),
        }
    }

    #[tokio::test]
    async fn full_channel_drops_and_marks_the_gap() {
        let (mut sink, mut rx) = OutputSink::channel(2);
        assert!(sink.offer(chunk("a")));
        assert!(sink.offer(chunk("b")));
        assert!(sink.offer(chunk("ccc"))); // dropped, never blocks
        assert!(sink.offer(chunk("dd"))); // dropped
        assert_eq!(sink.pending_dropped(), 5);
        assert_eq!(rx.recv().await.map(|c| c.data), Some(Bytes::from("a")));
        assert!(sink.offer(chunk("e"))); // marker fits, "e" does not
        assert_eq!(rx.recv().await.map(|c| c.data), Some(Bytes::from("b")));
        let marker = rx.recv().await;
        assert_eq!(
            marker.as_ref().map(|c| c.stream),
            Some(OutputStream::Notice)
        );
        assert!(marker
            .map(|c| String::from_utf8_lossy(&c.data).contains("5 bytes of output dropped"))
            .unwrap_or(false));
        assert_eq!(sink.pending_dropped(), 1);
        sink.finish(Duration::from_secs(1)).await;
        let last = rx.recv().await;
        assert!(last
            .map(|c| String::from_utf8_lossy(&c.data).contains("1 bytes of output dropped"))
            .unwrap_or(false));
        assert!(rx.recv().await.is_none());
    }
}
