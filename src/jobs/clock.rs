//! The wall clock as commands record it. Below every layer that stamps
//! time (the node's proposals, the store's offline restore, the CLI's
//! "5s ago"), so each reads it the same way.

/// Milliseconds since the Unix epoch of `t`: how every timestamp in a
/// command is written (0 for a clock before 1970).
pub fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// This machine's wall clock, as [`unix_ms`].
pub fn now_ms() -> i64 {
    unix_ms(std::time::SystemTime::now())
}
