//! The free-space reserve of the data directory's filesystem.
//!
//! sled must never see ENOSPC: a write it cannot finish stops the node, and
//! an operator would rather have a node that refuses new work with a clear
//! message than one that has to be restarted. So the node keeps a reserve
//! (`storage.min_free_bytes`, or `storage.min_free_percent` of the
//! filesystem if that is larger) and asks this guard before it writes:
//!
//! - [`SpaceLevel::Ok`]: above the reserve, everything goes.
//! - [`SpaceLevel::Low`]: below the reserve. New work is refused (client
//!   writes that grow the table, placements, snapshots, job output), what is
//!   already running may still finish and report, and the node keeps
//!   replicating: the other half of the reserve is there for that.
//! - [`SpaceLevel::Exhausted`]: below half the reserve. Every proposal and
//!   every incoming append or snapshot is refused; the node still votes and
//!   serves reads.
//!
//! The level clears by itself once space returns (with a small hysteresis,
//! so a disk hovering at the line does not flap). The filesystem is
//! measured at most every [`MEASURE_EVERY`]; in between, each admitted write
//! is debited from the last measurement, so a burst cannot run past the
//! reserve between two measurements.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How stale a measurement may be before the next check measures again.
pub const MEASURE_EVERY: Duration = Duration::from_millis(100);

/// Bytes a write is assumed to take on disk per byte of payload: the log
/// entry, the applied row, the apply journal and sled's own overhead.
const WRITE_AMPLIFICATION: u64 = 4;

/// How far above the reserve free space must climb before Low clears, as a
/// fraction of the reserve (1/16).
const HYSTERESIS_DIVISOR: u64 = 16;

/// How full the data directory's filesystem is, relative to the reserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpaceLevel {
    /// Above the reserve.
    Ok,
    /// Below the reserve: no new work.
    Low,
    /// Below half the reserve: no writes but votes.
    Exhausted,
}

impl SpaceLevel {
    /// 0, 1, 2: what `drover_storage_low` reports and the lock-free copy
    /// of the level holds.
    pub fn code(self) -> u8 {
        match self {
            SpaceLevel::Ok => 0,
            SpaceLevel::Low => 1,
            SpaceLevel::Exhausted => 2,
        }
    }

    fn from_code(code: u8) -> SpaceLevel {
        match code {
            0 => SpaceLevel::Ok,
            1 => SpaceLevel::Low,
            _ => SpaceLevel::Exhausted,
        }
    }

    /// The name `/v1/cluster` and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            SpaceLevel::Ok => "ok",
            SpaceLevel::Low => "low",
            SpaceLevel::Exhausted => "exhausted",
        }
    }
}

/// One reading of the guard, for status pages, metrics and messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaceReport {
    /// The level, as of this reading.
    pub level: SpaceLevel,
    /// Bytes free for the node (statvfs `f_bavail`), less what was written
    /// since the measurement.
    pub free_bytes: u64,
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// The reserve: the larger of `min_free_bytes` and `min_free_percent`.
    pub reserve_bytes: u64,
    /// The data directory.
    pub path: PathBuf,
}

impl SpaceReport {
    /// Why a write was refused, naming the filesystem, the numbers and the
    /// way out. What clients see (RESOURCE_EXHAUSTED / 507) and the log.
    pub fn refusal(&self) -> String {
        format!(
            "the disk holding {} is full: {} free, below the reserve of {} \
             (storage.min_free_bytes / storage.min_free_percent); this node refuses new writes \
             until space is freed on that filesystem, and accepts them again by itself once it is",
            self.path.display(),
            mib(self.free_bytes),
            mib(self.reserve_bytes),
        )
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// What one statvfs told, plus the writes debited since.
struct Reading {
    at: Option<Instant>,
    free: u64,
    total: u64,
    debited: u64,
    level: SpaceLevel,
}

/// The guard of one data directory (see the module docs). Shared by the
/// API, the Raft loop, the peer service and the output store.
pub struct SpaceGuard {
    path: PathBuf,
    min_free_bytes: u64,
    min_free_percent: u8,
    reading: Mutex<Reading>,
    refused: AtomicU64,
    /// The level of the latest reading, readable without the lock.
    last_level: AtomicU8,
}

impl std::fmt::Debug for SpaceGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpaceGuard")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SpaceGuard {
    /// A guard for `path` (the data directory, which must exist); measured
    /// at once, so the first status is real.
    pub fn new(path: &Path, min_free_bytes: u64, min_free_percent: u8) -> SpaceGuard {
        let guard = SpaceGuard {
            path: path.to_path_buf(),
            min_free_bytes,
            min_free_percent,
            reading: Mutex::new(Reading {
                at: None,
                free: u64::MAX,
                total: 0,
                debited: 0,
                level: SpaceLevel::Ok,
            }),
            refused: AtomicU64::new(0),
            last_level: AtomicU8::new(0),
        };
        guard.report();
        guard
    }

    /// The current reading, measuring again if the last is stale.
    pub fn report(&self) -> SpaceReport {
        let mut reading = self.lock();
        if reading.at.is_none_or(|at| at.elapsed() >= MEASURE_EVERY) {
            self.measure(&mut reading);
        }
        self.report_of(&reading)
    }

    /// The current level (see [`SpaceGuard::report`]).
    pub fn level(&self) -> SpaceLevel {
        self.report().level
    }

    /// The level of the latest reading, without measuring: for hot paths
    /// (every outgoing batch says it). The Raft loop measures every tick.
    pub fn last_level(&self) -> SpaceLevel {
        SpaceLevel::from_code(self.last_level.load(Ordering::Relaxed))
    }

    /// Admits a write of about `bytes` of payload, debiting it, or says why
    /// not. `grows`: whether it is new work (refused from Low on) rather
    /// than the end of work already admitted (refused only when Exhausted).
    pub fn admit(&self, grows: bool, bytes: u64) -> Result<(), SpaceReport> {
        let mut reading = self.lock();
        if reading.at.is_none_or(|at| at.elapsed() >= MEASURE_EVERY) {
            self.measure(&mut reading);
        }
        let cost = bytes.saturating_mul(WRITE_AMPLIFICATION);
        let free_after = self.free_of(&reading).saturating_sub(cost);
        let reserve = self.reserve_of(reading.total);
        let floor = if grows { reserve } else { reserve / 2 };
        let refused = match reading.level {
            SpaceLevel::Exhausted => true,
            SpaceLevel::Low => grows || free_after < floor,
            SpaceLevel::Ok => free_after < floor,
        };
        if refused {
            self.refused.fetch_add(1, Ordering::Relaxed);
            // A write refused at the line is the disk reaching its reserve:
            // say so everywhere (status, readiness, metrics) until a
            // measurement shows room again, past the hysteresis.
            if reading.level == SpaceLevel::Ok {
                self.set_level(&mut reading, SpaceLevel::Low);
            }
            return Err(self.report_of(&reading));
        }
        reading.debited = reading.debited.saturating_add(cost);
        Ok(())
    }

    /// Admits a file of `bytes` (a snapshot) only if it leaves the reserve
    /// free, debiting it. Unlike [`SpaceGuard::admit`] a refusal does not
    /// mark the disk low: the snapshot waits, new work goes on until the
    /// disk really reaches its reserve.
    pub fn admit_file(&self, bytes: u64) -> Result<(), SpaceReport> {
        let mut reading = self.lock();
        if reading.at.is_none_or(|at| at.elapsed() >= MEASURE_EVERY) {
            self.measure(&mut reading);
        }
        let reserve = self.reserve_of(reading.total);
        if reading.level != SpaceLevel::Ok || self.free_of(&reading).saturating_sub(bytes) < reserve
        {
            return Err(self.report_of(&reading));
        }
        reading.debited = reading.debited.saturating_add(bytes);
        Ok(())
    }

    /// Writes refused since the node started (a counter for the metrics).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reading> {
        // A panic under the lock leaves at worst a stale reading.
        self.reading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn measure(&self, reading: &mut Reading) {
        match rustix::fs::statvfs(&self.path) {
            Ok(stat) => {
                reading.free = stat.f_bavail.saturating_mul(stat.f_frsize);
                reading.total = stat.f_blocks.saturating_mul(stat.f_frsize);
                reading.debited = 0;
            }
            Err(e) => {
                // Keep the last reading (and its debits): an unreadable
                // filesystem is reported by the writes that fail on it.
                if reading.at.is_none() {
                    tracing::warn!(path = %self.path.display(), "cannot measure free disk space: {e}");
                }
            }
        }
        reading.at = Some(Instant::now());
        let level = self.level_of(reading);
        self.set_level(reading, level);
    }

    /// Moves to `level`, logging the change (the operator's signal).
    fn set_level(&self, reading: &mut Reading, level: SpaceLevel) {
        if level == reading.level {
            return;
        }
        let free = self.free_of(reading);
        let reserve = self.reserve_of(reading.total);
        let path = self.path.display();
        let (free_mib, reserve_mib) = (mib(free), mib(reserve));
        match level {
            SpaceLevel::Ok => tracing::info!(
                %path, free = %free_mib, reserve = %reserve_mib,
                "disk space is back above the reserve: accepting writes again"
            ),
            SpaceLevel::Low => tracing::warn!(
                %path, free = %free_mib, reserve = %reserve_mib,
                "disk space below the reserve: refusing new jobs, placements, snapshots and \
                 job output until space is freed (storage.min_free_bytes)"
            ),
            SpaceLevel::Exhausted => tracing::error!(
                %path, free = %free_mib, reserve = %reserve_mib,
                "disk space below half the reserve: refusing every write and all replication \
                 (still voting and serving reads) until space is freed"
            ),
        }
        reading.level = level;
        self.last_level.store(level.code(), Ordering::Relaxed);
    }

    fn level_of(&self, reading: &Reading) -> SpaceLevel {
        let free = self.free_of(reading);
        let reserve = self.reserve_of(reading.total);
        // Once low, the line to clear is a little higher (hysteresis).
        let line = match reading.level {
            SpaceLevel::Ok => reserve,
            _ => reserve.saturating_add(reserve / HYSTERESIS_DIVISOR),
        };
        if free < reserve / 2 {
            SpaceLevel::Exhausted
        } else if free < line {
            SpaceLevel::Low
        } else {
            SpaceLevel::Ok
        }
    }

    fn free_of(&self, reading: &Reading) -> u64 {
        reading.free.saturating_sub(reading.debited)
    }

    fn reserve_of(&self, total: u64) -> u64 {
        let share = total / 100 * u64::from(self.min_free_percent);
        self.min_free_bytes.max(share)
    }

    fn report_of(&self, reading: &Reading) -> SpaceReport {
        SpaceReport {
            level: reading.level,
            free_bytes: self.free_of(reading),
            total_bytes: reading.total,
            reserve_bytes: self.reserve_of(reading.total),
            path: self.path.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real filesystem of a temp dir, with a reserve set just around
    /// what it has free, so the levels can be crossed without filling it.
    fn guard_with_reserve_near_free(offset: i64) -> SpaceGuard {
        let dir = std::env::temp_dir();
        let free = rustix::fs::statvfs(&dir)
            .map(|s| s.f_bavail * s.f_frsize)
            .unwrap_or(0);
        let reserve = free.saturating_add_signed(offset);
        SpaceGuard::new(&dir, reserve, 0)
    }

    #[test]
    fn far_above_the_reserve_everything_is_admitted() {
        let guard = SpaceGuard::new(&std::env::temp_dir(), 0, 0);
        assert_eq!(guard.level(), SpaceLevel::Ok);
        assert!(guard.admit(true, 1 << 20).is_ok());
        assert_eq!(guard.refused(), 0);
    }

    #[test]
    fn below_the_reserve_new_work_is_refused_but_its_end_is_admitted() {
        // Reserve above free: Low (free is well above half of it).
        let guard = guard_with_reserve_near_free(256 << 20);
        assert_eq!(guard.level(), SpaceLevel::Low);
        let refusal = guard
            .admit(true, 10)
            .expect_err("new work refused when low");
        assert!(
            refusal.refusal().contains("is full"),
            "{}",
            refusal.refusal()
        );
        assert!(
            guard.admit(false, 10).is_ok(),
            "a report still goes through"
        );
        assert_eq!(guard.refused(), 1);
    }

    #[test]
    fn a_write_that_would_cross_the_reserve_is_refused_before_it_is_made() {
        // Reserve 1 GiB under free: admitted until the debits reach it.
        let guard = guard_with_reserve_near_free(-(1 << 30));
        assert_eq!(guard.level(), SpaceLevel::Ok);
        assert!(guard.admit(true, 1 << 20).is_ok());
        assert!(
            guard.admit(true, 1 << 30).is_err(),
            "a write that would take free space below the reserve is refused"
        );
    }

    #[test]
    fn a_reserve_twice_the_free_space_is_exhausted() {
        let free = rustix::fs::statvfs(std::env::temp_dir())
            .map(|s| s.f_bavail * s.f_frsize)
            .unwrap_or(0);
        let guard = SpaceGuard::new(&std::env::temp_dir(), free.saturating_mul(2) + (8 << 20), 0);
        assert_eq!(guard.level(), SpaceLevel::Exhausted);
        assert!(guard.admit(false, 1).is_err(), "nothing is admitted");
    }
}
