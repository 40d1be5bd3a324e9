//! The commands of the scenario scripts, run on the shared test network.
//! Each command returns the lines it prints; a script mistake (unknown
//! command or argument, no cluster yet) is an `Err` that stops the script.
//! Protocol outcomes (a refused proposal, a failed election) are printed,
//! never errors, so a script can assert them. See `scenarios.rs` for the
//! command list.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::super::test_net::{cfg, log_of, members, restored, Net};
use super::super::{ConfChange, Config, Message, MessageBody, NodeId, PeerInfo, Restored, Role};
use super::args::{terms, Args, ScriptResult};
use super::format;

/// Which messages a command is about: `from=`, `to=`, `type=` (variant
/// names, comma separated) and `with=` (a substring of the printed body).
#[derive(Clone, Debug, Default)]
struct Selector {
    from: Option<Vec<NodeId>>,
    to: Option<Vec<NodeId>>,
    kinds: Option<Vec<String>>,
    with: Option<String>,
}

impl Selector {
    fn parse(a: &Args) -> ScriptResult<Selector> {
        Ok(Selector {
            from: a.opt_ids("from")?,
            to: a.opt_ids("to")?,
            kinds: a
                .str("type")
                .map(|t| t.split(',').map(str::to_string).collect()),
            with: a.str("with"),
        })
    }

    fn matches(&self, m: &Message) -> bool {
        self.from.as_ref().is_none_or(|f| f.contains(&m.from))
            && self.to.as_ref().is_none_or(|t| t.contains(&m.to))
            && self
                .kinds
                .as_ref()
                .is_none_or(|k| k.iter().any(|k| k == format::kind(&m.body)))
            && self
                .with
                .as_ref()
                .is_none_or(|w| format::body(&m.body).contains(w.as_str()))
    }
}

/// A standing drop rule installed by `filter`: lets the first `after`
/// matching messages through, then drops the next `remaining` (forever if
/// `None`).
#[derive(Debug)]
struct DropRule {
    selector: Selector,
    after: u64,
    remaining: Option<u64>,
}

impl DropRule {
    fn drops(&mut self, m: &Message) -> bool {
        if !self.selector.matches(m) {
            return false;
        }
        if self.after > 0 {
            self.after -= 1;
            return false;
        }
        match &mut self.remaining {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}

/// The state of one running script: the cluster and the cursors of the
/// commands that print "what happened since last time".
#[derive(Default)]
pub(super) struct Env {
    net: Option<Net>,
    /// Configuration template of the cluster (for `add-node`).
    template: Option<Config>,
    /// Position in `Net::sent` up to which `msgs` has printed.
    sent_cursor: usize,
    /// Per node, how many read states `reads` has printed.
    read_cursor: std::collections::BTreeMap<NodeId, usize>,
    rules: Rc<RefCell<Vec<DropRule>>>,
}

/// Output lines of one command.
type Out = ScriptResult<Vec<String>>;

impl Env {
    /// Runs one command line (already stripped of comments).
    pub(super) fn run(&mut self, line: &str) -> Out {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&cmd, rest)) = words.split_first() else {
            return Ok(vec![]);
        };
        let a = Args::parse(rest)?;
        let out = self.dispatch(cmd, &a)?;
        a.check_all_used()?;
        Ok(out)
    }

    fn dispatch(&mut self, cmd: &str, a: &Args) -> Out {
        match cmd {
            "create" => self.create(a),
            "add-node" => self.add_node(a),
            "restart" => self.restart(a),
            "tick" => self.tick(a),
            "campaign" => self.campaign(a),
            "elect" => self.elect(a),
            "propose" => self.propose(a),
            "stabilize" => {
                self.net()?.stabilize();
                Ok(vec![])
            }
            "deliver" => self.deliver(a, true),
            "drop" => self.deliver(a, false),
            "pending" => self.pending(a),
            "msgs" => self.msgs(a),
            "isolate" => {
                for id in a.nodes() {
                    self.net()?.isolate(id);
                }
                Ok(vec![])
            }
            "partition" => self.partition(a),
            "block" => self.block(a),
            "filter" => self.filter(a),
            "heal" => {
                self.net()?.heal();
                self.rules.borrow_mut().clear();
                Ok(vec![])
            }
            "transfer-leader" => self.transfer(a),
            "read-index" => self.read_index(a),
            "reads" => self.reads(a),
            "add-learner" | "promote" | "remove" => self.conf_change(cmd, a),
            "compact" => self.compact(a),
            "status" => self.per_node(a, |n| vec![format::status(n)]),
            "members" => self.per_node(a, |n| {
                vec![format!("{}: {}", n.id, format::membership(n.membership()))]
            }),
            "progress" => {
                let id = a.node()?;
                Ok(format::progress(self.net()?.node(id)))
            }
            "log" => self.log(a),
            "applied" => self.applied(a),
            "snapshots" => self.snapshots(a),
            "inject" => self.inject(a),
            _ => Err(format!("unknown command {cmd}")),
        }
    }

    fn net(&mut self) -> ScriptResult<&mut Net> {
        self.net
            .as_mut()
            .ok_or_else(|| "no cluster yet: start the script with create".to_string())
    }

    /// The nodes named positionally, or every node.
    fn targets(&mut self, a: &Args) -> ScriptResult<Vec<NodeId>> {
        let ids = a.nodes();
        if ids.is_empty() {
            Ok(self.net()?.nodes.keys().copied().collect())
        } else {
            Ok(ids)
        }
    }

    /// `create voters=1,2,3 [learners=4] [options] [term=T log.N=TERMS]`:
    /// a new cluster (replacing any). Options: pre_vote, check_quorum
    /// (default true), election_ticks, heartbeat_ticks, max_inflight,
    /// max_append_bytes, max_uncommitted, snapshot_chunk_bytes,
    /// trailing_entries. With `term` or `log.N`, nodes restart from logs
    /// with one entry per listed term (`1,3x50`) instead of bootstrapping.
    fn create(&mut self, a: &Args) -> Out {
        let voters = a.opt_ids("voters")?.ok_or("missing voters=")?;
        let learners = a.opt_ids("learners")?.unwrap_or_default();
        let base = cfg(1);
        let template = Config {
            pre_vote: a.bool_or("pre_vote", base.pre_vote)?,
            check_quorum: a.bool_or("check_quorum", base.check_quorum)?,
            election_ticks: a.u64_or("election_ticks", base.election_ticks.into())? as u32,
            heartbeat_ticks: a.u64_or("heartbeat_ticks", base.heartbeat_ticks.into())? as u32,
            max_inflight: a.u64_or("max_inflight", base.max_inflight as u64)? as usize,
            max_append_bytes: a.u64_or("max_append_bytes", base.max_append_bytes as u64)? as usize,
            max_uncommitted_entries: a
                .u64_or("max_uncommitted", base.max_uncommitted_entries as u64)?
                as usize,
            snapshot_chunk_bytes: a
                .u64_or("snapshot_chunk_bytes", base.snapshot_chunk_bytes as u64)?
                as usize,
            trailing_entries: a.u64_or("trailing_entries", base.trailing_entries)?,
            ..base
        };
        let term = a.u64_or("term", 0)?;
        let logs = a.with_prefix("log.");
        let m = members(&voters, &learners);
        let mut nodes = Vec::new();
        for &id in voters.iter().chain(&learners) {
            let mut r = restored(&m, term, vec![]);
            if let Some((_, t)) = logs.iter().find(|(k, _)| *k == id.to_string()) {
                r.entries = log_of(&terms(t)?);
            }
            nodes.push((config_for(&template, id), r));
        }
        for (k, _) in &logs {
            if !nodes.iter().any(|(c, _)| c.id.to_string() == *k) {
                return Err(format!("log.{k}: not a member"));
            }
        }
        for (c, r) in &nodes {
            super::super::RawNode::new(c.clone(), r.clone())
                .map_err(|e| format!("node {}: {e}", c.id))?;
        }
        self.net = Some(Net::from_nodes(nodes));
        self.template = Some(template);
        self.sent_cursor = 0;
        self.read_cursor.clear();
        self.rules = Rc::new(RefCell::new(Vec::new()));
        Ok(vec![])
    }

    /// `add-node N`: a node joining an existing cluster (empty storage,
    /// empty membership); it waits until a leader adds it.
    fn add_node(&mut self, a: &Args) -> Out {
        let id = a.node()?;
        let template = self.template.clone().ok_or("no cluster yet")?;
        let node = super::super::RawNode::new(config_for(&template, id), Restored::default())?;
        let net = self.net()?;
        net.nodes.insert(id, node);
        net.disks.insert(id, Restored::default());
        Ok(vec![])
    }

    /// `restart N`: crash N and start it again from its disk.
    fn restart(&mut self, a: &Args) -> Out {
        let id = a.node()?;
        Ok(match self.net()?.restart(id) {
            Ok(()) => vec![],
            Err(e) => vec![format!("error: {e}")],
        })
    }

    /// `tick [N,..] [n=1] [stabilize=true]`: ticks the nodes (default all)
    /// `n` times, delivering everything after each round unless told not to.
    fn tick(&mut self, a: &Args) -> Out {
        let ids = self.targets(a)?;
        let times = a.u64_or("n", 1)?;
        let settle = a.bool_or("stabilize", true)?;
        let net = self.net()?;
        for _ in 0..times {
            for &id in &ids {
                net.node_mut(id).tick();
            }
            if settle {
                net.stabilize();
            } else {
                net.flush_all();
            }
        }
        Ok(vec![])
    }

    /// `campaign N [transfer]`: N starts an election at once (a pre-vote
    /// round first if configured, unless `transfer`, which asks for forced
    /// votes as after TimeoutNow). Nothing is delivered.
    fn campaign(&mut self, a: &Args) -> Out {
        let id = a.node()?;
        let transfer = a.bool_or("transfer", false)?;
        let net = self.net()?;
        net.node_mut(id).hup(transfer);
        net.flush_all();
        Ok(vec![])
    }

    /// `elect N`: ticks only N (delivering everything) until it leads.
    fn elect(&mut self, a: &Args) -> Out {
        let id = a.node()?;
        let net = self.net()?;
        for _ in 0..100 {
            if net.node(id).role() == Role::Leader {
                return Ok(vec![]);
            }
            net.tick(id, 1);
        }
        Ok(vec![format!("error: node {id} did not become leader")])
    }

    /// `propose N [data=x] [n=1]`: proposes on N; prints the index and term
    /// each proposal got (`index=3..5 term=2` for several) or the refusal.
    /// Nothing is delivered.
    fn propose(&mut self, a: &Args) -> Out {
        let id = a.node()?;
        let data = a.str("data").unwrap_or_else(|| "x".into());
        let times = a.u64_or("n", 1)?;
        let net = self.net()?;
        let mut out = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..times {
            match net.node_mut(id).propose(data.clone().into_bytes()) {
                Ok(at) => accepted.push(at),
                Err(e) => out.push(format!("error: {e}")),
            }
        }
        net.flush_all();
        let same_term = accepted.windows(2).all(|w| w[0].1 == w[1].1);
        match (accepted.first(), accepted.last()) {
            (Some(f), Some(l)) if accepted.len() > 1 && same_term => {
                out.insert(0, format!("index={}..{} term={}", f.0, l.0, f.1))
            }
            _ => {
                let lines = accepted.iter().map(|(i, t)| format!("index={i} term={t}"));
                out.splice(0..0, lines);
            }
        }
        Ok(out)
    }

    /// `deliver [selector] [n=all]` / `drop [selector] [n=all]`: delivers
    /// (or loses) the queued messages that match, in order, and prints
    /// each; a delivered message the network lost (blocked link, filter) is
    /// marked `(lost)`. The messages they cause are queued, not delivered.
    fn deliver(&mut self, a: &Args, deliver: bool) -> Out {
        let sel = Selector::parse(a)?;
        let mut budget = a.opt_u64("n")?.unwrap_or(u64::MAX);
        let net = self.net()?;
        net.flush_all();
        let queued = std::mem::take(&mut net.queue);
        let mut out = Vec::new();
        for m in queued {
            if budget == 0 || !sel.matches(&m) {
                net.queue.push_back(m);
                continue;
            }
            budget -= 1;
            let line = format::message(&m);
            if !deliver {
                out.push(format!("dropped {line}"));
            } else if net.deliver(m) {
                out.push(line);
            } else {
                out.push(format!("{line} (lost)"));
            }
        }
        net.flush_all();
        Ok(out)
    }

    /// `pending [selector]`: the queued (not yet delivered) messages.
    fn pending(&mut self, a: &Args) -> Out {
        let sel = Selector::parse(a)?;
        let net = self.net()?;
        net.flush_all();
        Ok(net
            .queue
            .iter()
            .filter(|m| sel.matches(m))
            .map(format::message)
            .collect())
    }

    /// `msgs [selector] [count]`: the messages sent since the last `msgs`
    /// (delivered or not) that match, or with `count` only how many.
    fn msgs(&mut self, a: &Args) -> Out {
        let sel = Selector::parse(a)?;
        let count = a.bool_or("count", false)?;
        let from = self.sent_cursor;
        let net = self.net()?;
        net.flush_all();
        let end = net.sent.len();
        let lines: Vec<String> = net.sent[from..]
            .iter()
            .filter(|m| sel.matches(m))
            .map(format::message)
            .collect();
        self.sent_cursor = end;
        Ok(if count {
            vec![format!("count={}", lines.len())]
        } else {
            lines
        })
    }

    /// `partition 1,2 3,4,5`: blocks every link between different groups.
    fn partition(&mut self, a: &Args) -> Out {
        let groups = a.groups().to_vec();
        let net = self.net()?;
        for (i, g) in groups.iter().enumerate() {
            for (j, h) in groups.iter().enumerate() {
                if i != j {
                    for &x in g {
                        for &y in h {
                            net.blocked.insert((x, y));
                        }
                    }
                }
            }
        }
        Ok(vec![])
    }

    /// `block from=1 to=2,3`: loses everything on the directed links.
    fn block(&mut self, a: &Args) -> Out {
        let from = a.opt_ids("from")?.ok_or("missing from=")?;
        let to = a.opt_ids("to")?.ok_or("missing to=")?;
        let net = self.net()?;
        for &f in &from {
            for &t in &to {
                net.blocked.insert((f, t));
            }
        }
        Ok(vec![])
    }

    /// `filter [selector] [after=0] [n=all]`: from now on the network lets
    /// the first `after` matching messages through, then loses the next
    /// `n` (all, if not given). `heal` removes every filter.
    fn filter(&mut self, a: &Args) -> Out {
        let rule = DropRule {
            selector: Selector::parse(a)?,
            after: a.u64_or("after", 0)?,
            remaining: a.opt_u64("n")?,
        };
        self.rules.borrow_mut().push(rule);
        let rules = self.rules.clone();
        self.net()?.drop_if = Some(Box::new(move |m: &Message| {
            rules.borrow_mut().iter_mut().any(|r| r.drops(m))
        }));
        Ok(vec![])
    }

    /// `transfer-leader N to=T`: N starts handing leadership to T.
    fn transfer(&mut self, a: &Args) -> Out {
        let id = a.node()?;
        let to = a.req_u64("to")?;
        let net = self.net()?;
        let r = net.node_mut(id).transfer_leader(to);
        net.flush_all();
        Ok(r.err().map(|e| format!("error: {e}")).into_iter().collect())
    }

    /// `read-index N ctx=C`: asks N for a read point (see `reads`).
    fn read_index(&mut self, a: &Args) -> Out {
        let id = a.node()?;
        let ctx = a.req_u64("ctx")?;
        let net = self.net()?;
        net.node_mut(id).read_index(ctx);
        net.flush_all();
        Ok(vec![])
    }

    /// `reads [N,..]`: read states handed out since the last `reads`:
    /// `1: ctx=1 index=3` (`index=0`: the read failed).
    fn reads(&mut self, a: &Args) -> Out {
        let ids = self.targets(a)?;
        self.net()?.flush_all();
        let mut out = Vec::new();
        for id in ids {
            let all = self
                .net
                .as_ref()
                .and_then(|n| n.reads.get(&id).cloned())
                .unwrap_or_default();
            let seen = self.read_cursor.entry(id).or_default();
            for r in &all[*seen..] {
                out.push(format!("{id}: ctx={} index={}", r.ctx, r.index));
            }
            *seen = all.len();
        }
        Ok(out)
    }

    /// `add-learner N id=M` / `promote N id=M` / `remove N id=M`: N
    /// proposes the membership change; prints its index or the refusal.
    fn conf_change(&mut self, cmd: &str, a: &Args) -> Out {
        let id = a.node()?;
        let target = a.req_u64("id")?;
        let change = match cmd {
            "add-learner" => ConfChange::AddLearner {
                id: target,
                info: PeerInfo::default(),
            },
            "promote" => ConfChange::Promote { id: target },
            _ => ConfChange::Remove { id: target },
        };
        let net = self.net()?;
        let r = net.node_mut(id).propose_conf_change(change);
        net.flush_all();
        Ok(vec![match r {
            Ok((i, t)) => format!("index={i} term={t}"),
            Err(e) => format!("error: {e}"),
        }])
    }

    /// `compact N [index=applied] [bytes=0]`: N snapshots its state machine
    /// (`bytes` bytes of data) at `index` and compacts its log; prints the
    /// snapshot and the index up to which the stable log may be deleted.
    fn compact(&mut self, a: &Args) -> Out {
        let id = a.node()?;
        let bytes = a.u64_or("bytes", 0)?;
        let index = a.opt_u64("index")?;
        let net = self.net()?;
        let index = index.unwrap_or(net.node(id).status().applied);
        let Some(meta) = net.node(id).snapshot_meta(index) else {
            return Ok(vec![format!(
                "error: no snapshot possible at index {index}"
            )]);
        };
        let data = Arc::new((0..bytes).map(|b| b as u8).collect::<Vec<u8>>());
        let (i, t) = (meta.index, meta.term);
        let deletable = net.compact(id, meta, data);
        let snap = net.node(id).status().snapshot_index;
        Ok(vec![if snap == i {
            format!("snapshot={i}/{t} deletable={deletable}")
        } else {
            format!("refused (snapshot stays at {snap})")
        }])
    }

    /// Prints `f(node)` for each target node.
    fn per_node(&mut self, a: &Args, f: impl Fn(&super::super::RawNode) -> Vec<String>) -> Out {
        let ids = self.targets(a)?;
        let net = self.net()?;
        net.flush_all();
        Ok(ids.iter().flat_map(|&id| f(net.node(id))).collect())
    }

    /// `log [N,..] [from=] [to=]`: each node's log: a header with its
    /// bounds and snapshot, then one line per entry (`3/2 "x"`).
    fn log(&mut self, a: &Args) -> Out {
        let lo = a.u64_or("from", 0)?;
        let hi = a.u64_or("to", u64::MAX)?;
        self.per_node(a, |n| {
            let s = n.status();
            let snap = n.log.snapshot.as_ref().map(|(m, _)| (m.index, m.term));
            let (si, st) = snap.unwrap_or((0, 0));
            let mut out = vec![format!(
                "{}: first={} last={} commit={} snapshot={si}/{st}",
                s.id, s.first_index, s.last_index, s.commit
            )];
            for i in lo.max(s.first_index)..=hi.min(s.last_index) {
                if let Some(e) = n.log.entry(i) {
                    out.push(format!("  {}", format::entry(e)));
                }
            }
            out
        })
    }

    /// `applied [N,..]`: every entry each node applied, in order.
    fn applied(&mut self, a: &Args) -> Out {
        let ids = self.targets(a)?;
        let net = self.net()?;
        net.flush_all();
        let mut out = Vec::new();
        for id in ids {
            let list = net.applied.get(&id).cloned().unwrap_or_default();
            let entries: Vec<String> = list.iter().map(format::entry).collect();
            let entries = if entries.is_empty() {
                "(nothing)".to_string()
            } else {
                entries.join(", ")
            };
            out.push(format!("{id}: {entries}"));
        }
        Ok(out)
    }

    /// `snapshots [N,..]`: every snapshot each node was handed to install.
    fn snapshots(&mut self, a: &Args) -> Out {
        let ids = self.targets(a)?;
        let net = self.net()?;
        net.flush_all();
        let mut out = Vec::new();
        for id in ids {
            for (meta, data) in net.snapshots.get(&id).into_iter().flatten() {
                out.push(format!(
                    "{id}: {}/{} len={} {}",
                    meta.index,
                    meta.term,
                    data.len(),
                    format::membership(&meta.membership)
                ));
            }
        }
        Ok(out)
    }

    /// `inject from=F to=T type=K [term=] [fields]`: queues a hand-made
    /// message (as a confused or lying peer would send it). Kinds: Vote,
    /// PreVote (`last_index`, `last_term`, `transfer`), TransferPending
    /// (`target`), TimeoutNow, Heartbeat (`commit`). `term` defaults to
    /// the sender's current term.
    fn inject(&mut self, a: &Args) -> Out {
        let from = a.req_u64("from")?;
        let to = a.req_u64("to")?;
        let kind = a.str("type").ok_or("missing type=")?;
        let term = a.opt_u64("term")?;
        let last_index = a.u64_or("last_index", 0)?;
        let last_term = a.u64_or("last_term", 0)?;
        let body = match kind.as_str() {
            "Vote" => MessageBody::Vote {
                last_index,
                last_term,
                transfer: a.bool_or("transfer", false)?,
            },
            "PreVote" => MessageBody::PreVote {
                last_index,
                last_term,
            },
            "TransferPending" => MessageBody::TransferPending {
                to: a.req_u64("target")?,
            },
            "TimeoutNow" => MessageBody::TimeoutNow,
            "Heartbeat" => MessageBody::Heartbeat {
                commit: a.u64_or("commit", 0)?,
                read_ctx: 0,
            },
            k => return Err(format!("inject: unsupported type {k}")),
        };
        let net = self.net()?;
        let term = match term {
            Some(t) => t,
            None => net.node(from).term(),
        };
        net.queue.push_back(Message {
            from,
            to,
            term,
            body,
        });
        Ok(vec![])
    }
}

/// The template's configuration for node `id` (its own id and seed).
fn config_for(template: &Config, id: NodeId) -> Config {
    Config {
        id,
        seed: cfg(id).seed,
        ..template.clone()
    }
}
