//! A piece of a job's output and which stream it came from: shared by the
//! executor that captures it, the store that keeps it and the API that
//! serves it.

/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// The job's standard output.
    Stdout,
    /// The job's standard error.
    Stderr,
    /// A note from Drover itself, e.g. the truncation marker.
    Notice,
}

/// One piece of an attempt's output as stored and served: what a reader
/// pages through and a live follower receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    /// Position in the attempt's output; increasing, starting at 0. A
    /// reader resumes after the last seq it saw.
    pub seq: u64,
    /// Which stream it came from.
    pub stream: OutputStream,
    /// The bytes, as written.
    pub data: Vec<u8>,
}
