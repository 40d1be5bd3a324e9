//! Which stream a piece of a job's output came from: shared by the executor
//! that captures it, the store that keeps it and the API that serves it.

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
