//! Job identifiers: ULIDs, so ids sort by submission time and can be minted
//! by any leader without coordination.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// A job's identity: a ULID (48-bit millisecond timestamp + 80 random bits).
///
/// Why a ULID: ids minted by successive leaders sort by time, so the job
/// table keyed by id is in submission order and cursor pagination is a
/// range scan. The 16 big-endian bytes ([`JobId::to_bytes`]) sort the same
/// way as the 26-character text form.
///
/// Serialized as text in human-readable formats (JSON) and as 16 raw bytes
/// in binary ones (bincode), so the on-disk form is compact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(Ulid);

impl JobId {
    /// Mints a new id from the wall clock and the thread-local RNG. Ids
    /// minted in the same millisecond are not ordered among themselves; use
    /// a [`JobIdGenerator`] where strict order matters.
    pub fn generate() -> JobId {
        JobId(Ulid::new())
    }

    /// Builds an id from its parts (deterministic; for tests and tools).
    pub fn from_parts(timestamp_ms: u64, random: u128) -> JobId {
        JobId(Ulid::from_parts(timestamp_ms, random))
    }

    /// The 16-byte big-endian form: the key of the job table.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    /// Inverse of [`JobId::to_bytes`].
    pub fn from_bytes(bytes: [u8; 16]) -> JobId {
        JobId(Ulid::from_bytes(bytes))
    }

    /// The ids whose text starts with `prefix` (case-insensitive), as the
    /// inclusive range `(first, last)`: ids sort as their text does, so a
    /// prefix is one range of the job table. `None` when `prefix` is not
    /// the start of any id (a character outside the ULID alphabet, too long,
    /// or a first character above 7).
    pub fn prefix_range(prefix: &str) -> Option<(JobId, JobId)> {
        const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let prefix = prefix.to_ascii_uppercase();
        if prefix.is_empty() || prefix.len() > 26 || !prefix.chars().all(|c| ALPHABET.contains(c)) {
            return None;
        }
        // 26 characters carry 130 bits: a ULID's first is at most 7.
        if prefix.as_bytes()[0] > b'7' {
            return None;
        }
        let pad = |fill: char| {
            let text: String = prefix
                .chars()
                .chain(std::iter::repeat(fill))
                .take(26)
                .collect();
            text.parse::<JobId>().ok()
        };
        Some((pad('0')?, pad('Z')?))
    }

    /// The millisecond timestamp embedded in the id.
    pub fn timestamp_ms(self) -> u64 {
        self.0.timestamp_ms()
    }
}

/// Which part of the job table a listing walks, and which way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobScan {
    /// Newest first (ids descending) instead of oldest first.
    pub newest_first: bool,
    /// The lowest id included (an id prefix's range), if any.
    pub first: Option<JobId>,
    /// The highest id included, if any.
    pub last: Option<JobId>,
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a string is not a job id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid job id {input:?}: expected a 26-character ULID such as 01ARZ3NDEKTSV4RRFFQ69G5FAV ({reason})")]
pub struct ParseJobIdError {
    input: String,
    reason: String,
}

impl FromStr for JobId {
    type Err = ParseJobIdError;

    fn from_str(s: &str) -> Result<JobId, ParseJobIdError> {
        Ulid::from_string(s)
            .map(JobId)
            .map_err(|e| ParseJobIdError {
                // Bound what we echo back: the input may be anything a client sent.
                input: s.chars().take(64).collect(),
                reason: e.to_string(),
            })
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(&self.0)
        } else {
            self.0.to_bytes().serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JobId, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 16]>::deserialize(d).map(JobId::from_bytes)
        }
    }
}

/// Mints strictly increasing ids within one process (ULID monotonic mode),
/// so jobs submitted through one leader list in submission order even within
/// one millisecond.
#[derive(Default)]
pub struct JobIdGenerator(ulid::Generator);

impl fmt::Debug for JobIdGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobIdGenerator").finish_non_exhaustive()
    }
}

impl JobIdGenerator {
    /// A generator with no history.
    pub fn new() -> JobIdGenerator {
        JobIdGenerator(ulid::Generator::new())
    }

    /// The next id: greater than every id this generator returned before.
    /// If the 80 random bits would overflow within one millisecond (2^80 ids),
    /// falls back to a fresh, unordered id rather than failing.
    pub fn next_id(&mut self) -> JobId {
        match self.0.generate() {
            Ok(u) => JobId(u),
            Err(_) => JobId::generate(),
        }
    }
}
