//! Caps per client on what a client holds open (job watches, followed
//! output), so one token (or one address, for calls without a token)
//! cannot take every slot a node has and shut every other client out. The
//! node-wide bound stays in `node::events`; this one is per client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::Status;

use super::rate::ClientKey;

/// Watches one client (a token, or an address without one) may hold open
/// on one node.
pub const WATCHES_PER_TOKEN: usize = 64;
/// Live output streams (followed logs) one client may hold open on one node.
pub const OUTPUT_STREAMS_PER_TOKEN: usize = 64;

/// Open slots by client.
#[derive(Debug)]
pub struct PerCaller {
    what: &'static str,
    limit: usize,
    open: Mutex<HashMap<ClientKey, usize>>,
}

/// One slot; dropping it gives it back.
#[derive(Debug)]
pub struct Slot {
    caps: Arc<PerCaller>,
    caller: ClientKey,
}

impl PerCaller {
    /// At most `limit` open `what`s per caller.
    pub fn new(what: &'static str, limit: usize) -> Arc<PerCaller> {
        Arc::new(PerCaller {
            what,
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `caller` (None: the local socket or a member node,
    /// capped only node-wide), or RESOURCE_EXHAUSTED once it holds `limit`.
    pub fn take(self: &Arc<Self>, caller: Option<&ClientKey>) -> Result<Option<Slot>, Status> {
        let Some(caller) = caller else {
            return Ok(None);
        };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let held = open.entry(caller.clone()).or_insert(0);
        if *held >= self.limit {
            return Err(Status::resource_exhausted(format!(
                "{caller}: {} {} are open on this node already, the most one client may \
                 hold; close one (or use another node) and retry",
                self.limit, self.what
            )));
        }
        *held += 1;
        Ok(Some(Slot {
            caps: self.clone(),
            caller: caller.clone(),
        }))
    }

    /// Slots `caller` holds now.
    #[cfg(test)]
    fn held(&self, caller: &ClientKey) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(caller).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = open.get_mut(&self.caller) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_caller_cannot_take_every_slot_and_slots_come_back() {
        let caps = PerCaller::new("watches", 2);
        let alice = ClientKey::Token("alice".into());
        let a1 = caps.take(Some(&alice)).expect("first");
        let _a2 = caps.take(Some(&alice)).expect("second");
        let refused = caps.take(Some(&alice)).expect_err("third");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("2 watches"), "{refused:?}");
        // Another token is not affected, nor an address without a token.
        let _b = caps
            .take(Some(&ClientKey::Token("bob".into())))
            .expect("bob");
        let address = ClientKey::Address("127.0.0.1".parse().expect("ip"));
        let _c = caps.take(Some(&address)).expect("an address");
        drop(a1);
        assert_eq!(caps.held(&alice), 1);
        caps.take(Some(&alice)).expect("a slot came back");
        assert!(caps.take(None).expect("local").is_none());
    }
}
