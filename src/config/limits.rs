//! `[quotas]` and `[limits]`: what one owner may hold in the replicated
//! job table and what the table may hold in all, and what one client may
//! take of a node's listeners. Defaults are set so that a careless or
//! hostile token cannot crowd the others out, nor grow the state past what
//! a snapshot install carries, while an honest workload never meets them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[quotas]`: checked by the leader (its own values: set them alike on
/// every node) at every submit, and by its scheduler at every placement.
/// The per-owner ones bind the tenants, jobs of `submitter` tokens (see
/// `node::quotas`); `max_state_bytes` binds every job.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Jobs one owner may have waiting in QUEUED; a submit beyond it gets
    /// RESOURCE_EXHAUSTED while other owners still submit.
    pub max_queued_per_owner: u64,
    /// Jobs of one owner ASSIGNED or RUNNING at once; the rest wait in
    /// the queue (placed as the owner's running jobs end).
    pub max_active_per_owner: u64,
    /// Output tail bytes one owner's jobs may hold in the table (every
    /// attempt keeps its last `executor.output_tail_bytes`, replicated to
    /// every node); at it, the owner's submits are refused until finished
    /// jobs are collected (`scheduler.retention`, `scheduler.retain_max`).
    pub max_output_bytes_per_owner: u64,
    /// The job table's footprint (specs, attempts, tails) in all; at it,
    /// every submit gets RESOURCE_EXHAUSTED. At most half of the 1 GiB a
    /// snapshot install carries, so a node that lost its data can always
    /// catch up, with room for the tails running jobs still report.
    pub max_state_bytes: u64,
}

/// The most `quotas.max_state_bytes` may be: half the snapshot install cap.
pub const MAX_STATE_BYTES_CEILING: u64 = crate::raft::MAX_SNAPSHOT_BYTES / 2;

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            max_queued_per_owner: 10_000,
            max_active_per_owner: 1_000,
            max_output_bytes_per_owner: 64 << 20,
            max_state_bytes: 256 << 20,
        }
    }
}

impl QuotaConfig {
    /// Why the quotas are unusable (a config error), naming the key.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        let positive = [
            ("quotas.max_queued_per_owner", self.max_queued_per_owner),
            ("quotas.max_active_per_owner", self.max_active_per_owner),
            (
                "quotas.max_output_bytes_per_owner",
                self.max_output_bytes_per_owner,
            ),
            ("quotas.max_state_bytes", self.max_state_bytes),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Some((key, "must be positive".into()));
        }
        if self.max_state_bytes > MAX_STATE_BYTES_CEILING {
            return Some((
                "quotas.max_state_bytes",
                format!(
                    "{} is above {MAX_STATE_BYTES_CEILING} (half of what a snapshot install \
                     carries): a node that lost its data could not catch up",
                    self.max_state_bytes
                ),
            ));
        }
        None
    }
}

/// `[limits]`: bounds on what clients take of this node's listeners (the
/// client gRPC API, REST; connections also on the peer port).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open connections per listener; one more is closed at once.
    pub max_connections: usize,
    /// Open connections per listener from one client address (Nomad's
    /// `http_max_conns_per_client` is 100).
    pub max_connections_per_address: usize,
    /// Concurrent HTTP/2 streams (calls) per connection. Nodes share one
    /// connection per peer for forwarded calls and followed output, so this
    /// is well above what one client holds (64 watches, 64 followed outputs).
    pub max_streams_per_connection: u32,
    /// How long a new connection (any listener) may stay silent before its
    /// first bytes; how long a REST client may take to send a request's
    /// headers (over HTTP/1.1), and at most between two pieces of its body.
    /// A gRPC connection that spoke once may then idle (a client's channel):
    /// the connection caps bound those.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Calls per second one `submitter` or `viewer` token may make to this
    /// node, and one client address whose calls fail the access check;
    /// beyond it, RESOURCE_EXHAUSTED / 429 with a retry hint (see
    /// `api::rate`). 0 = no rate limit.
    pub rate: u32,
    /// Calls a token may make at once above `rate` after a quiet spell.
    pub burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 4096,
            max_connections_per_address: 256,
            max_streams_per_connection: 1024,
            read_timeout: Duration::from_secs(10),
            rate: 500,
            burst: 1000,
        }
    }
}

impl LimitsConfig {
    /// Why the limits are unusable (a config error), naming the key.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.max_connections == 0 {
            return Some(("limits.max_connections", "must be positive".into()));
        }
        if self.max_connections_per_address == 0
            || self.max_connections_per_address > self.max_connections
        {
            return Some((
                "limits.max_connections_per_address",
                format!(
                    "must be 1 to limits.max_connections ({})",
                    self.max_connections
                ),
            ));
        }
        if self.max_streams_per_connection == 0 {
            return Some((
                "limits.max_streams_per_connection",
                "must be positive".into(),
            ));
        }
        if self.read_timeout < Duration::from_millis(100) {
            return Some(("limits.read_timeout", "must be at least 100ms".into()));
        }
        if self.rate > 0 && self.burst == 0 {
            return Some((
                "limits.burst",
                "must be positive when limits.rate is set".into(),
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_usable_and_bad_values_name_their_key() {
        assert_eq!(QuotaConfig::default().problem(), None);
        assert_eq!(LimitsConfig::default().problem(), None);
        let too_big = QuotaConfig {
            max_state_bytes: 1 << 30,
            ..Default::default()
        };
        assert_eq!(
            too_big.problem().map(|p| p.0),
            Some("quotas.max_state_bytes")
        );
        let per_address = LimitsConfig {
            max_connections: 10,
            max_connections_per_address: 11,
            ..Default::default()
        };
        assert_eq!(
            per_address.problem().map(|p| p.0),
            Some("limits.max_connections_per_address")
        );
    }
}
