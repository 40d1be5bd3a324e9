//! Calls per second per client (`limits.rate`, `limits.burst`), for the
//! clients that share a cluster as tenants: `submitter` and `viewer`
//! tokens, one bucket each, and calls that fail their access check (no
//! token, a guessed one), one bucket per client address. A flood from one
//! client is answered RESOURCE_EXHAUSTED (HTTP 429) with a retry hint at
//! the cost of a hash lookup, before it reaches the log, so other clients'
//! calls are still served. `admin` and `operator` tokens, and everyone
//! with ACLs off (all callers are `admin` then), run the cluster and its
//! bulk work and are not limited. The buckets are `governor`'s (GCRA); this
//! module only picks the key and says when to come back.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tonic::Status;

use crate::acl::Role;

/// Metadata key (and, over REST, the `Retry-After` header) of a refusal
/// that says when to try again, in whole seconds.
pub const RETRY_AFTER: &str = "retry-after";

/// Whose share a call takes: its token, or for a call without one, the
/// address it came from. Calls over the local socket and calls a member
/// node forwards (already counted where they arrived) have none.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// A token, by accessor.
    Token(String),
    /// A client address, for calls without a token.
    Address(IpAddr),
}

impl ClientKey {
    /// The key of a client address: IPv4-mapped IPv6 as IPv4, and an IPv6
    /// address by its /64, the block one host is given (so one host cannot
    /// rotate through its addresses to get fresh buckets).
    pub fn address(ip: IpAddr) -> ClientKey {
        ClientKey::Address(client_block(ip))
    }
}

/// The address a per-address bound counts: see [`ClientKey::address`].
pub fn client_block(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Whether calls of a token with `role` are rate limited (see the module
/// docs).
pub fn limits_role(role: Role) -> bool {
    matches!(role, Role::Submitter | Role::Viewer)
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Token(_) => f.write_str("this token"),
            ClientKey::Address(ip) => write!(f, "calls without a token from {ip}"),
        }
    }
}

/// How often (in checks) buckets of clients gone quiet are dropped, so
/// the table holds only recent clients.
const SWEEP_EVERY: u64 = 4096;

/// The per-client buckets of one node; `None` inside when `limits.rate` is 0.
#[derive(Debug)]
pub struct RateLimits {
    limiter: Option<DefaultKeyedRateLimiter<ClientKey>>,
    checks: AtomicU64,
}

impl RateLimits {
    /// `rate` calls per second per client with bursts of `burst`; 0 = off.
    pub fn new(rate: u32, burst: u32) -> RateLimits {
        let limiter = NonZeroU32::new(rate).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        RateLimits {
            limiter,
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one call from `client`'s share, or refuses it with
    /// RESOURCE_EXHAUSTED saying when its share has room again (also as
    /// [`RETRY_AFTER`] metadata). Calls without a key are not limited.
    pub fn check(&self, client: Option<&ClientKey>) -> Result<(), Status> {
        let (Some(limiter), Some(client)) = (&self.limiter, client) else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let Err(not_until) = limiter.check_key(client) else {
            return Ok(());
        };
        let wait = not_until.wait_time_from(limiter.clock().now());
        Err(refusal(client, wait))
    }
}

/// RESOURCE_EXHAUSTED for a client over its rate, with the wait.
fn refusal(client: &ClientKey, wait: Duration) -> Status {
    let millis = wait.as_millis().max(1);
    let mut status = Status::resource_exhausted(format!(
        "{client} made more calls than this node allows (limits.rate, limits.burst); \
         retry in {millis} ms"
    ));
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(value) = seconds.max(1).to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER, value);
    }
    status
}

/// The `retry-after` seconds a refusal carries, if any.
pub fn retry_after(status: &Status) -> Option<u64> {
    status
        .metadata()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_over_its_rate_is_refused_with_a_hint_and_others_are_not() {
        let limits = RateLimits::new(1, 3);
        let alice = ClientKey::Token("alice".into());
        for _ in 0..3 {
            limits.check(Some(&alice)).expect("within the burst");
        }
        let refused = limits.check(Some(&alice)).expect_err("over the burst");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("retry in"), "{refused:?}");
        assert_eq!(retry_after(&refused), Some(1));
        let address = ClientKey::address("127.0.0.2".parse().expect("ip"));
        limits.check(Some(&address)).expect("another client");
        assert!(limits_role(Role::Submitter) && limits_role(Role::Viewer));
        assert!(!limits_role(Role::Admin) && !limits_role(Role::Operator));
        limits
            .check(None)
            .expect("calls without a key are not limited");
        RateLimits::new(0, 0)
            .check(Some(&alice))
            .expect("rate 0 turns the limit off");
    }

    #[test]
    fn one_host_is_one_address_whatever_form_it_uses() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(client_block(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(
            client_block(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            client_block(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            client_block(ip("2001:db8:1:2::1")),
            client_block(ip("2001:db8:1:3::1"))
        );
    }
}
