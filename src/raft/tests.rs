//! Scenario tests of the core: small clusters of [`RawNode`]s wired through
//! the in-memory network of `test_net`, which delivers, blocks or drops
//! messages on command. Persistence is instant (each Ready is "persisted"
//! and advanced at once), so these tests exercise the protocol rules;
//! tests/sim.rs covers crashes. The same scenarios, and more, are also
//! written as scripts in `testdata/` (see `scenarios`).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::test_net::*;
use super::*;

#[test]
fn single_voter_elects_itself_and_commits_alone() {
    let mut net = Net::new(&[1]);
    net.elect(1);
    let (index, term) = net.propose(1, "x");
    assert_eq!(net.commit(1), index);
    let applied = &net.applied[&1];
    assert!(applied.iter().any(|e| e.index == index && e.term == term));
}

#[test]
fn a_new_cluster_starts_from_the_genesis_snapshot_and_joiners_get_one() {
    let mut net = Net::new(&[1, 2, 3]);
    // Node 4 joins later: empty log, empty membership.
    let r = restored(&Membership::default(), 0, vec![]);
    net.nodes
        .insert(4, RawNode::new(cfg(4), r).expect("joiner"));
    net.stabilize();
    for id in 1..=3 {
        let (meta, data) = &net.snapshots[&id][0];
        assert_eq!((meta.index, meta.term), (1, 1));
        assert!(data.is_empty());
        assert!(meta.membership.is_voter(1));
    }
    assert!(!net.snapshots.contains_key(&4));
    net.tick(4, 100);
    assert_eq!(net.node(4).term(), 0, "a joiner never campaigns");
    net.elect(1);
    net.node_mut(1)
        .propose_conf_change(ConfChange::AddLearner {
            id: 4,
            info: PeerInfo::default(),
        })
        .expect("accepted");
    net.stabilize();
    let (meta, _) = &net.snapshots[&4][0];
    assert_eq!(meta.index, 1, "the joiner got the genesis snapshot");
    let m4 = net.node(4).membership().clone();
    assert_eq!(&m4, net.node(1).membership());
    assert!(m4.is_voter(1) && m4.is_voter(2) && m4.is_voter(3));
    assert!(m4.learners.contains_key(&4));
}

#[test]
fn pre_vote_keeps_a_partitioned_node_from_inflating_its_term() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let term = net.node(1).term();
    net.isolate(3);
    net.tick(3, 200); // twenty election timeouts alone
    assert_eq!(net.node(3).term(), term, "pre-vote never succeeded");
    assert_eq!(net.node(3).role(), Role::PreCandidate);
    net.heal();
    net.tick_all(30);
    assert_eq!(
        net.node(1).role(),
        Role::Leader,
        "the healthy leader survived"
    );
    assert_eq!(net.node(1).term(), term);
    assert_eq!(net.node(3).leader(), Some(1));
}

#[test]
fn without_pre_vote_the_term_inflates() {
    // The contrast to the test above: why pre-vote exists.
    let mut net = Net::with_config(&[1, 2, 3], &[], |id| Config {
        pre_vote: false,
        ..cfg(id)
    });
    net.elect(1);
    let term = net.node(1).term();
    net.isolate(3);
    net.tick(3, 200);
    assert!(net.node(3).term() > term + 5);
}

#[test]
fn check_quorum_makes_an_isolated_leader_step_down() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(1);
    net.tick(1, 9);
    assert_eq!(net.node(1).role(), Role::Leader, "within one timeout");
    net.tick(1, 12);
    assert_eq!(net.node(1).role(), Role::Follower);
    assert_eq!(net.node(1).leader(), None);
}

#[test]
fn followers_in_lease_ignore_a_disruptive_candidate() {
    // Without pre-vote, node 3 reaches a higher term alone. When it asks
    // for votes, a follower that hears its leader ignores it (and keeps its
    // term); a transfer-forced request is honoured.
    let mut net = Net::with_config(&[1, 2, 3], &[], |id| Config {
        pre_vote: false,
        ..cfg(id)
    });
    net.elect(1);
    let term = net.node(1).term();
    net.isolate(3);
    net.tick(3, 30);
    let t3 = net.node(3).term();
    assert!(t3 > term);
    let last = net.node(3).status().last_index;
    let vote = |transfer| Message {
        from: 3,
        to: 2,
        term: t3,
        body: MessageBody::Vote {
            last_index: last,
            last_term: net.node(3).term_at(last).unwrap_or(0),
            transfer,
        },
    };
    let (plain, forced) = (vote(false), vote(true));
    net.node_mut(2).step(plain);
    assert_eq!(net.node(2).term(), term);
    assert_eq!(net.node(2).leader(), Some(1));
    // A forced vote the leader did not announce is a peer's claim: refused.
    net.node_mut(2).step(forced.clone());
    assert_eq!(net.node(2).term(), term, "unannounced forced vote refused");
    assert_eq!(net.node(2).leader(), Some(1));
    // Nor does anyone but the leader announce a transfer.
    let pending = |from, to| Message {
        from,
        to: 2,
        term,
        body: MessageBody::TransferPending { to },
    };
    net.node_mut(2).step(pending(3, 3));
    net.node_mut(2).step(forced.clone());
    assert_eq!(
        net.node(2).term(),
        term,
        "announced by a non-leader: refused"
    );
    // An announcement of another candidate does not help node 3 either.
    net.node_mut(2).step(pending(1, 9));
    net.node_mut(2).step(forced.clone());
    assert_eq!(
        net.node(2).term(),
        term,
        "announced for another node: refused"
    );
    // The leader's announcement for node 3 makes the forced vote count.
    net.node_mut(2).step(pending(1, 3));
    net.node_mut(2).step(forced);
    assert_eq!(net.node(2).term(), t3);
}

#[test]
fn conflicting_uncommitted_entries_are_truncated() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.propose(1, "a");
    // 1 is cut off and appends entries nobody else sees.
    net.isolate(1);
    for d in ["lost1", "lost2", "lost3"] {
        net.propose(1, d);
    }
    let lost_from = net.commit(1) + 1;
    let old_term = net.node(1).term();
    // 2 or 3 becomes leader and commits other entries at those indexes.
    net.tick_all(40);
    let l = (2..=3)
        .find(|&id| net.node(id).role() == Role::Leader)
        .expect("a new leader");
    net.propose(l, "b");
    net.propose(l, "c");
    net.heal();
    net.tick_all(25);
    let leader = net.node(l).status();
    assert_eq!(leader.role, Role::Leader);
    for i in lost_from..=leader.last_index {
        assert_eq!(net.node(1).term_at(i), net.node(l).term_at(i), "index {i}");
        assert_ne!(net.node(1).term_at(i), Some(old_term), "index {i} kept");
    }
    assert_eq!(net.commit(1), leader.commit);
}

/// Raft paper, Figure 8: an entry from an older term that is stored on a
/// majority is still NOT committed by counting, because a node with a log
/// from a newer term could still be elected and overwrite it.
#[test]
fn figure_8_entries_of_older_terms_are_not_committed_by_counting() {
    let m = members(&[1, 2, 3, 4, 5], &[]);
    let tiny = |id| Config {
        max_append_bytes: 1, // one entry per Append
        check_quorum: false, // no leases: S5 may campaign right away
        ..cfg(id)
    };
    // (b) S1 led term 2 and stored index 2 on itself; S5 led term 3 and
    // stored its own index 2 on itself only.
    let mut net = Net::from_nodes(vec![
        (tiny(1), restored(&m, 3, log_of(&[1, 2]))),
        (tiny(2), restored(&m, 3, log_of(&[1]))),
        (tiny(3), restored(&m, 3, log_of(&[1]))),
        (tiny(4), restored(&m, 3, log_of(&[1]))),
        (tiny(5), restored(&m, 3, log_of(&[1, 3]))),
    ]);
    // (c) S1 is elected in term 4 (S5 is down) and copies index 2 to S2
    // and S3, but its term-4 entry (the Noop at index 3) reaches nobody:
    // each follower sees only S1's first probe (which it rejects).
    net.isolate(5);
    net.blocked.insert((1, 4));
    let seen = std::rc::Rc::new(std::cell::RefCell::new(BTreeSet::new()));
    net.drop_if = Some(Box::new(move |m: &Message| {
        let carries_3 = matches!(&m.body, MessageBody::Append { entries, .. }
            if entries.iter().any(|e| e.index >= 3));
        m.from == 1 && carries_3 && !seen.borrow_mut().insert(m.to)
    }));
    net.elect(1);
    assert_eq!(net.node(1).term(), 4);
    for id in [1, 2, 3] {
        assert_eq!(net.node(id).term_at(2), Some(2), "index 2 is on node {id}");
    }
    assert_eq!(
        net.commit(1),
        0,
        "a majority holds index 2, yet it is not committed"
    );

    // (d) S1 crashes; S5 wins with S2, S3 and S4 and overwrites index 2.
    net.heal();
    net.isolate(1);
    net.elect(5);
    net.propose(5, "from S5");
    for id in [2, 3, 4, 5] {
        assert_eq!(net.node(id).term_at(2), Some(3), "node {id}");
    }
    // Nobody ever applied the term-2 entry at index 2.
    for (id, applied) in &net.applied {
        assert!(
            !applied.iter().any(|e| e.index == 2 && e.term == 2),
            "node {id} applied the overwritten entry"
        );
    }

    // (e) The other outcome: had S1 replicated an entry of its own term to
    // a majority, index 2 would be committed with it.
    let mut net = Net::from_nodes(vec![
        (cfg(1), restored(&m, 3, log_of(&[1, 2]))),
        (cfg(2), restored(&m, 3, log_of(&[1, 2]))),
        (cfg(3), restored(&m, 3, log_of(&[1]))),
        (cfg(4), restored(&m, 3, log_of(&[1]))),
        (cfg(5), restored(&m, 3, log_of(&[1, 3]))),
    ]);
    net.isolate(5);
    net.elect(1);
    assert!(
        net.commit(1) >= 3,
        "the Noop of term 4 commits index 2 with it"
    );
}

#[test]
fn fast_back_off_skips_a_whole_divergent_term_at_once() {
    let m = members(&[1, 2, 3], &[]);
    let mut leader_log = vec![1];
    leader_log.extend([3; 50]);
    let mut follower_log = vec![1];
    follower_log.extend([2; 80]);
    let mut net = Net::from_nodes(vec![
        (cfg(1), restored(&m, 3, log_of(&leader_log))),
        (cfg(2), restored(&m, 3, log_of(&follower_log))),
        (cfg(3), restored(&m, 3, log_of(&leader_log))),
    ]);
    net.elect(1);
    let rejections = net.count_sent(|m| {
        m.from == 2 && matches!(m.body, MessageBody::AppendResponse { success: false, .. })
    });
    assert!(
        rejections <= 2,
        "{rejections} round trips to find the match point"
    );
    assert_eq!(net.node(2).term_at(51), Some(3));
    assert_eq!(net.node(2).status().last_index, 52);
    assert_eq!(net.commit(2), 52);
}

#[test]
fn a_transfer_in_a_five_node_cluster_needs_the_announcement_and_gets_it() {
    // Node 2 needs two votes besides its own and the leader's: voters in
    // lease grant them only because the leader announced the transfer.
    let mut net = Net::new(&[1, 2, 3, 4, 5]);
    net.elect(1);
    net.propose(1, "a");
    let term = net.node(1).term();
    net.node_mut(1).transfer_leader(2).expect("2 is a voter");
    net.stabilize();
    let announced =
        net.count_sent(|m| m.from == 1 && matches!(m.body, MessageBody::TransferPending { to: 2 }));
    assert_eq!(announced, 3, "announced to 3, 4 and 5");
    assert_eq!(net.node(2).role(), Role::Leader);
    assert_eq!(net.node(2).term(), term + 1);
}

#[test]
fn leadership_transfer_hands_over_and_blocks_proposals_meanwhile() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.propose(1, "a");
    let term = net.node(1).term();
    net.node_mut(1).transfer_leader(2).expect("2 is a voter");
    net.stabilize();
    assert_eq!(net.node(2).role(), Role::Leader);
    assert_eq!(net.node(2).term(), term + 1);
    assert_eq!(net.node(1).leader(), Some(2));

    // A transfer to a node that cannot catch up is abandoned after an
    // election timeout; proposals are refused until then.
    net.isolate(3);
    net.propose(2, "b");
    net.node_mut(2).transfer_leader(3).expect("3 is a voter");
    assert_eq!(
        net.node_mut(2).propose(b"c".to_vec()),
        Err(ProposeError::TransferInProgress)
    );
    assert_eq!(net.node(2).status().transferring_to, Some(3));
    net.tick(2, 10);
    assert_eq!(net.node(2).status().transferring_to, None);
    assert!(net.node_mut(2).propose(b"c".to_vec()).is_ok());
    assert!(matches!(
        net.node_mut(2).transfer_leader(9),
        Err(ProposeError::InvalidConfChange(_))
    ));
}

#[test]
fn read_index_on_leader_and_follower_and_failing_fast() {
    let mut net = Net::new(&[1, 2, 3]);
    // No leader known: fail at once.
    net.node_mut(2).read_index(7);
    net.stabilize();
    assert_eq!(net.reads[&2], vec![ReadState { ctx: 7, index: 0 }]);

    net.elect(1);
    let (index, _) = net.propose(1, "a");
    net.node_mut(1).read_index(1);
    net.stabilize();
    assert_eq!(net.reads[&1], vec![ReadState { ctx: 1, index }]);
    net.node_mut(3).read_index(2);
    net.stabilize();
    assert_eq!(net.reads[&3], vec![ReadState { ctx: 2, index }]);

    // A leader cut off from the quorum cannot confirm: the read fails
    // (index 0) within two election timeouts instead of hanging.
    net.isolate(1);
    net.node_mut(1).read_index(3);
    net.stabilize();
    assert_eq!(net.reads[&1].len(), 1, "not confirmed yet");
    net.tick(1, 20);
    assert_eq!(net.reads[&1][1], ReadState { ctx: 3, index: 0 });
}

#[test]
fn a_new_leader_refuses_reads_until_it_commits_in_its_term() {
    let mut net = Net::new(&[1, 2, 3]);
    // Its Noop is never acknowledged, so it cannot know the commit index.
    net.drop_if = Some(Box::new(|m: &Message| {
        matches!(m.body, MessageBody::AppendResponse { .. })
    }));
    net.elect(1);
    net.node_mut(1).read_index(5);
    net.stabilize();
    assert_eq!(net.reads[&1], vec![ReadState { ctx: 5, index: 0 }]);
}

#[test]
fn learners_receive_the_log_but_never_count_or_campaign() {
    let mut net = Net::with_config(&[1, 2, 3], &[4], cfg);
    net.elect(1);
    let (a, _) = net.propose(1, "a");
    assert_eq!(net.commit(4), a, "the learner gets the log");
    net.blocked.insert((1, 2));
    net.blocked.insert((1, 3));
    let (b, _) = net.propose(1, "b");
    assert_eq!(net.node(4).status().last_index, b, "learner has it");
    assert!(net.commit(1) < b, "leader + learner is not a majority");

    // A learner alone never starts an election.
    net.heal();
    net.isolate(4);
    let term = net.node(4).term();
    net.tick(4, 100);
    assert_eq!(net.node(4).role(), Role::Follower);
    assert_eq!(net.node(4).term(), term);
}

#[test]
fn membership_changes_one_at_a_time_and_take_effect_on_commit() {
    let mut net = Net::with_config(&[1, 2, 3], &[4], cfg);
    // Not ready before committing an entry of its term.
    net.drop_if = Some(Box::new(|m: &Message| {
        matches!(m.body, MessageBody::AppendResponse { .. })
    }));
    net.elect(1);
    assert_eq!(
        net.node_mut(1)
            .propose_conf_change(ConfChange::Promote { id: 4 }),
        Err(ProposeError::LeaderNotReady)
    );
    net.heal();
    net.tick(1, 1);
    let (idx, _) = net
        .node_mut(1)
        .propose_conf_change(ConfChange::Promote { id: 4 })
        .expect("ready now");
    assert!(!net.node(1).membership().is_voter(4), "not before commit");
    assert_eq!(
        net.node_mut(1)
            .propose_conf_change(ConfChange::Remove { id: 2 }),
        Err(ProposeError::ConfChangeInProgress)
    );
    net.stabilize();
    assert!(net.commit(1) >= idx);
    for id in 1..=4 {
        assert!(net.node(id).membership().is_voter(4), "node {id}");
    }
    // The leader removes itself: it steps down once that commits and hands
    // leadership to an up-to-date voter.
    net.node_mut(1)
        .propose_conf_change(ConfChange::Remove { id: 1 })
        .expect("one change at a time");
    net.stabilize();
    assert_ne!(net.node(1).role(), Role::Leader);
    net.tick_all(5);
    let leaders: Vec<NodeId> = (2..=4)
        .filter(|&id| net.node(id).role() == Role::Leader)
        .collect();
    assert_eq!(leaders.len(), 1);
    assert!(!net.node(leaders[0]).membership().contains(1));
}

#[test]
fn snapshot_streams_in_chunks_and_survives_a_lost_chunk() {
    let small = |id| Config {
        snapshot_chunk_bytes: 10,
        trailing_entries: 0,
        ..cfg(id)
    };
    let mut net = Net::with_config(&[1, 2, 3], &[], small);
    net.elect(1);
    net.isolate(3);
    for i in 0..10 {
        net.propose(1, &format!("entry {i}"));
    }
    // Node 1 snapshots its state machine and compacts its log.
    let st = net.node(1).status();
    let data: Arc<Vec<u8>> = Arc::new((0..95u8).collect());
    let meta = SnapshotMeta {
        index: st.applied,
        term: net.node(1).term_at(st.applied).expect("in log"),
        membership: st.membership.clone(),
    };
    let deletable = net.node_mut(1).compact(meta.clone(), data.clone());
    assert_eq!(deletable, st.applied - 1);
    // Lose the third chunk once.
    let lost = std::rc::Rc::new(std::cell::Cell::new(false));
    let lost2 = lost.clone();
    net.heal();
    net.drop_if = Some(Box::new(move |m: &Message| {
        let hit = matches!(m.body, MessageBody::InstallSnapshot { offset: 20, .. }) && !lost2.get();
        if hit {
            lost2.set(true);
        }
        hit
    }));
    net.tick_all(5);
    assert!(lost.get(), "a chunk was dropped");
    let chunks = net.count_sent(|m| matches!(m.body, MessageBody::InstallSnapshot { .. }));
    assert!(
        chunks >= 10,
        "95 bytes in 10-byte chunks, plus a resend: {chunks}"
    );
    let got = &net.snapshots[&3];
    assert_eq!(got.len(), 2, "the genesis snapshot, then the streamed one");
    assert_eq!(got[1].0, meta);
    assert_eq!(got[1].1, data);
    // Node 3 then catches up from the log and commits with the others.
    net.propose(1, "after");
    assert_eq!(net.commit(3), net.commit(1));
    assert_eq!(net.node(3).status().first_index, meta.index + 1);
}

#[test]
fn restart_from_a_compacted_store_keeps_the_log_start() {
    // Entries kept as trailing entries precede the snapshot index; the
    // first of them becomes the compaction point.
    let m = members(&[1], &[]);
    let meta = SnapshotMeta {
        index: 5,
        term: 2,
        membership: m.clone(),
    };
    let r = Restored {
        hard_state: HardState {
            term: 2,
            vote: 1,
            commit: 7,
        },
        membership: m,
        snapshot: Some((meta, Arc::new(vec![1, 2, 3]))),
        entries: log_of(&[1, 1, 2, 2, 2, 2, 2]).split_off(2),
        applied: 5,
    };
    let mut n = RawNode::new(cfg(1), r).expect("consistent");
    assert_eq!(n.term_at(3), Some(2));
    assert_eq!(n.term_at(2), None);
    let rd = n.ready();
    let applied: Vec<Index> = rd.committed.iter().map(|e| e.index).collect();
    assert_eq!(applied, vec![6, 7]);
}

#[test]
fn inconsistent_restored_state_is_refused() {
    let m = members(&[1], &[]);
    let mut gap = log_of(&[1, 1, 1]);
    gap.remove(1);
    assert!(RawNode::new(cfg(1), restored(&m, 1, gap)).is_err());
    assert!(RawNode::new(cfg(1), restored(&m, 1, log_of(&[2]))).is_err());
    assert!(RawNode::new(Config::new(0, 1), restored(&m, 0, vec![])).is_err());
    let bad = Config {
        heartbeat_ticks: 10,
        ..cfg(1)
    };
    assert!(RawNode::new(bad, restored(&m, 0, vec![])).is_err());
}

#[test]
fn absurd_messages_are_ignored() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let before = net.node(2).status();
    let bodies = vec![
        MessageBody::Append {
            prev_index: u64::MAX,
            prev_term: 1,
            entries: vec![ent(5, 1)],
            commit: u64::MAX,
        },
        MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![ent(1, 99)],
            commit: 5,
        },
        MessageBody::Heartbeat {
            commit: u64::MAX,
            read_ctx: 1,
        },
        MessageBody::AppendResponse {
            success: true,
            index: u64::MAX,
            hint_index: u64::MAX,
            hint_term: u64::MAX,
        },
        MessageBody::InstallSnapshot {
            meta: SnapshotMeta::default(),
            offset: u64::MAX,
            data: vec![1],
            done: true,
        },
        MessageBody::InstallSnapshotResponse {
            snapshot_index: u64::MAX,
            next_offset: u64::MAX,
            done: true,
            reject: true,
        },
        MessageBody::ReadIndexResponse { ctx: 9, index: 9 },
        MessageBody::TimeoutNow,
    ];
    for from in [0, 1, 3, 42] {
        for body in &bodies {
            for term in [0, before.term, u64::MAX] {
                for to in [1, 2] {
                    let n = net.node_mut(to);
                    n.step(Message {
                        from,
                        to,
                        term,
                        body: body.clone(),
                    });
                    while n.has_ready() {
                        let rd = n.ready();
                        n.advance(&rd);
                    }
                }
            }
        }
    }
}

/// Random junk from random senders into a working cluster, interleaved with
/// normal traffic: nothing may panic (debug assertions included), and the
/// cluster must still work afterwards when the junk is only "plausible".
#[test]
fn fuzzed_messages_never_panic() {
    for seed in 0..40 {
        fuzz_one(seed);
    }
}

fn fuzz_one(seed: u64) {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut net = Net::with_config(&[1, 2, 3], &[4], |id| Config {
        snapshot_chunk_bytes: 7,
        trailing_entries: 1,
        max_inflight: 2,
        ..cfg(id)
    });
    net.elect(1);
    let pick = |rng: &mut SmallRng, small: u64| -> u64 {
        match rng.gen_range(0..4) {
            0 => 0,
            1 => rng.gen_range(0..small.clamp(1, 1 << 40)),
            2 => rng.gen_range(0..small.clamp(1, 1 << 40) * 4),
            _ => [u64::MAX, u64::MAX / 4, u64::MAX / 4 + 1, u64::MAX - 1][rng.gen_range(0..4)],
        }
    };
    // Mostly sane junk in early seeds (the cluster keeps working around
    // it), wilder later.
    let junk_every = if seed < 20 { 5 } else { 1 };
    for round in 0..2000u64 {
        let st = net.node(1).status();
        let small = st.last_index + 3;
        let t = st.term + 2;
        let n = |rng: &mut SmallRng| pick(rng, small);
        let tm = |rng: &mut SmallRng| pick(rng, t);
        let meta = SnapshotMeta {
            index: n(&mut rng),
            term: tm(&mut rng),
            membership: members(&[1, 2, 3], &[]),
        };
        let entries: Vec<Entry> = {
            let start = n(&mut rng);
            let term = tm(&mut rng);
            (0..rng.gen_range(0..4u64))
                .map(|k| ent(start.saturating_add(k), term))
                .collect()
        };
        let body = match rng.gen_range(0..14) {
            0 => MessageBody::PreVote {
                last_index: n(&mut rng),
                last_term: tm(&mut rng),
            },
            1 => MessageBody::PreVoteResponse { granted: rng.gen() },
            2 => MessageBody::Vote {
                last_index: n(&mut rng),
                last_term: tm(&mut rng),
                transfer: rng.gen(),
            },
            3 => MessageBody::VoteResponse { granted: rng.gen() },
            4 => MessageBody::Append {
                prev_index: n(&mut rng),
                prev_term: tm(&mut rng),
                entries,
                commit: n(&mut rng),
            },
            5 => MessageBody::AppendResponse {
                success: rng.gen(),
                index: n(&mut rng),
                hint_index: n(&mut rng),
                hint_term: tm(&mut rng),
            },
            6 => MessageBody::Heartbeat {
                commit: n(&mut rng),
                read_ctx: n(&mut rng),
            },
            7 => MessageBody::HeartbeatResponse {
                read_ctx: n(&mut rng),
            },
            8 => MessageBody::InstallSnapshot {
                meta,
                offset: pick(&mut rng, 30),
                data: vec![7; rng.gen_range(0..10)],
                done: rng.gen(),
            },
            9 => MessageBody::InstallSnapshotResponse {
                snapshot_index: n(&mut rng),
                next_offset: pick(&mut rng, 30),
                done: rng.gen(),
                reject: rng.gen(),
            },
            10 => MessageBody::TimeoutNow,
            11 => MessageBody::ReadIndex { ctx: n(&mut rng) },
            12 => MessageBody::TransferPending { to: n(&mut rng) },
            _ => MessageBody::ReadIndexResponse {
                ctx: n(&mut rng),
                index: n(&mut rng),
            },
        };
        let to = rng.gen_range(1..=4);
        let msg = Message {
            from: [1, 2, 3, 4, 9][rng.gen_range(0..5)],
            to,
            term: tm(&mut rng),
            body,
        };
        if round % junk_every == 0 {
            net.node_mut(to).step(msg);
        }
        // Normal life goes on around the junk.
        match round % 7 {
            0 => {
                if let Some(l) = (1..=3).find(|&id| net.node(id).role() == Role::Leader) {
                    let _ = net.node_mut(l).propose(vec![round as u8]);
                }
            }
            3 => net.tick_all(1),
            5 => {
                let id = rng.gen_range(1..=4);
                let st = net.node(id).status();
                if st.applied > st.snapshot_index + 3 {
                    let term = net.node(id).term_at(st.applied).unwrap_or(0);
                    let meta = SnapshotMeta {
                        index: st.applied,
                        term,
                        membership: st.membership.clone(),
                    };
                    net.node_mut(id).compact(meta, Arc::new(vec![1; 20]));
                }
            }
            _ => {}
        }
        net.stabilize();
    }
}

/// Found by the simulator: the leader of {1, 2} removes itself and steps
/// down with a longer log than node 2, before node 2 learns that the
/// removal committed. Node 2 still counts node 1 as a voter; node 1 must
/// vote for it although its own log is longer, or nobody is ever elected.
#[test]
fn a_removed_leader_votes_for_the_sole_remaining_voter() {
    let one_per_msg = |id| Config {
        max_append_bytes: 1,
        ..cfg(id)
    };
    let mut net = Net::with_config(&[1, 2], &[], one_per_msg);
    net.elect(1);
    net.propose(1, "a");
    let (r, _) = net
        .node_mut(1)
        .propose_conf_change(ConfChange::Remove { id: 1 })
        .expect("accepted");
    net.node_mut(1).propose(b"x".to_vec()).expect("accepted");
    // Node 2 gets the removal entry but neither what follows nor the news
    // that it committed.
    net.drop_if = Some(Box::new(move |m: &Message| {
        m.from == 1
            && match &m.body {
                MessageBody::Append {
                    entries, commit, ..
                } => *commit >= r || entries.iter().any(|e| e.index > r),
                MessageBody::Heartbeat { commit, .. } => *commit >= r,
                MessageBody::TimeoutNow => true,
                _ => false,
            }
    }));
    net.stabilize();
    assert_ne!(
        net.node(1).role(),
        Role::Leader,
        "stepped down after its removal"
    );
    assert!(!net.node(1).membership().contains(1));
    assert!(
        net.node(2).membership().is_voter(1),
        "2 has not learned the commit"
    );
    assert!(net.node(1).status().last_index > net.node(2).status().last_index);
    net.heal();
    net.tick_all(50);
    assert_eq!(net.node(2).role(), Role::Leader);
    assert!(!net.node(2).membership().contains(1));
}

#[test]
fn snapshot_meta_gives_the_membership_at_the_applied_index() {
    let mut net = Net::new(&[1]);
    net.elect(1);
    let (before, _) = net.propose(1, "a");
    let n = net.node_mut(1);
    n.propose_conf_change(ConfChange::AddLearner {
        id: 2,
        info: PeerInfo::default(),
    })
    .expect("accepted");
    // Persist the entry; the next Ready commits it but is not applied yet.
    let rd = n.ready();
    n.advance(&rd);
    let rd = n.ready();
    assert!(!rd.committed.is_empty());
    assert!(
        n.membership().learners.contains_key(&2),
        "effective on commit"
    );
    let meta = n.snapshot_meta(before).expect("applied");
    assert!(!meta.membership.contains(2), "not at the applied index");
    assert_eq!(n.snapshot_meta(before + 1), None, "not applied yet");
    // A snapshot claiming the commit-time membership is refused.
    let wrong = SnapshotMeta {
        membership: n.membership().clone(),
        ..meta.clone()
    };
    assert_eq!(n.compact(wrong, Arc::new(vec![])), 0);
    assert_eq!(n.status().snapshot_index, 1, "still the genesis snapshot");
    n.advance(&rd);
    let after = n.status().applied;
    let meta2 = n.snapshot_meta(after).expect("applied");
    assert!(meta2.membership.learners.contains_key(&2));
    n.compact(meta, Arc::new(vec![]));
    assert_eq!(n.status().snapshot_index, before);
}
