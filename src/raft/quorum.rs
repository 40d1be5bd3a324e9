//! Majority counting: the only place that knows what "a quorum" is. With
//! one-at-a-time membership changes a single majority of the current voters
//! is enough (any two successive configurations share a voter in every pair
//! of majorities).

use std::collections::BTreeMap;

use super::types::{Index, NodeId};

/// Outcome of an election round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority refused (or too few voters are left to reach a majority).
    Lost,
    /// Still waiting for answers.
    Pending,
}

/// The highest index that a majority of `voters` has matched, where
/// `matched(id)` gives each voter's match (unknown = 0). Returns 0 for an
/// empty voter set, so an empty configuration never commits anything.
pub(crate) fn committed_index(
    voters: impl Iterator<Item = NodeId>,
    matched: impl Fn(NodeId) -> Index,
) -> Index {
    let mut m: Vec<Index> = voters.map(matched).collect();
    if m.is_empty() {
        return 0;
    }
    m.sort_unstable_by(|a, b| b.cmp(a));
    // With n voters, the (n/2 + 1)-th highest match is held by a majority.
    m[m.len() / 2]
}

/// Tallies `votes` (voter -> granted) over `voters`; answers from non-voters
/// are not counted.
pub(crate) fn vote_result(
    voters: impl Iterator<Item = NodeId> + Clone,
    votes: &BTreeMap<NodeId, bool>,
) -> VoteResult {
    let n = voters.clone().count();
    if n == 0 {
        return VoteResult::Lost;
    }
    let (mut yes, mut no) = (0, 0);
    for id in voters {
        match votes.get(&id) {
            Some(true) => yes += 1,
            Some(false) => no += 1,
            None => {}
        }
    }
    let q = n / 2 + 1;
    if yes >= q {
        VoteResult::Won
    } else if n - no < q {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

/// True if the ids in `acks` include a majority of `voters`.
pub(crate) fn has_quorum(
    voters: impl Iterator<Item = NodeId> + Clone,
    acks: impl Fn(NodeId) -> bool,
) -> bool {
    let n = voters.clone().count();
    n > 0 && voters.filter(|&id| acks(id)).count() > n / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_index_is_the_majority_match() {
        let m = [(1, 5), (2, 3), (3, 9)];
        let f = |id| m.iter().find(|(i, _)| *i == id).map_or(0, |(_, x)| *x);
        assert_eq!(committed_index([1, 2, 3].into_iter(), f), 5);
        assert_eq!(committed_index([1].into_iter(), f), 5);
        assert_eq!(committed_index([1, 2, 3, 4].into_iter(), f), 3);
        assert_eq!(committed_index([].into_iter(), f), 0);
    }

    #[test]
    fn vote_tally() {
        let mut v = BTreeMap::new();
        v.insert(1, true);
        assert_eq!(vote_result([1, 2, 3].into_iter(), &v), VoteResult::Pending);
        v.insert(2, false);
        v.insert(9, true); // not a voter: ignored
        assert_eq!(vote_result([1, 2, 3].into_iter(), &v), VoteResult::Pending);
        v.insert(3, false);
        assert_eq!(vote_result([1, 2, 3].into_iter(), &v), VoteResult::Lost);
        v.insert(3, true);
        assert_eq!(vote_result([1, 2, 3].into_iter(), &v), VoteResult::Won);
        assert_eq!(vote_result([1].into_iter(), &v), VoteResult::Won);
    }
}
