//! Merge-pyramid math: levels (a branch merges after the branches it
//! depends on) and batches (inside a level, groups of branches no two of
//! which conflict). Pure functions over indices; git lives elsewhere.

use std::collections::BTreeSet;

/// A cycle among branches' dependencies, by index, first repeated last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelCycle(pub Vec<usize>);

/// Levels of `deps` (for branch `i`, the branches it must follow): level 0
/// has no dependency among these branches; a branch's level is one more
/// than its highest dependency's. Kahn's algorithm: no recursion.
pub fn levels(deps: &[Vec<usize>]) -> Result<Vec<Vec<usize>>, LevelCycle> {
    let n = deps.len();
    let mut indegree = vec![0usize; n];
    let mut dependents = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        let unique: BTreeSet<usize> = ds.iter().copied().filter(|&d| d < n && d != i).collect();
        indegree[i] = unique.len();
        for d in unique {
            dependents[d].push(i);
        }
        if ds.contains(&i) {
            return Err(LevelCycle(vec![i, i]));
        }
    }
    let mut level = vec![0usize; n];
    let mut queue: std::collections::VecDeque<usize> =
        (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut seen = 0;
    while let Some(i) = queue.pop_front() {
        seen += 1;
        for &j in &dependents[i] {
            level[j] = level[j].max(level[i] + 1);
            indegree[j] -= 1;
            if indegree[j] == 0 {
                queue.push_back(j);
            }
        }
    }
    if seen < n {
        // Walk from a branch left over along unfinished dependencies until
        // one repeats: that loop is a cycle.
        let start = (0..n).find(|&i| indegree[i] > 0).expect("a branch is left");
        let mut path = vec![start];
        let mut at = start;
        loop {
            let next = deps[at]
                .iter()
                .copied()
                .find(|&d| d < n && indegree[d] > 0)
                .expect("a left-over branch waits on another");
            if let Some(pos) = path.iter().position(|&p| p == next) {
                let mut cycle = path[pos..].to_vec();
                cycle.push(next);
                return Err(LevelCycle(cycle));
            }
            path.push(next);
            at = next;
        }
    }
    let top = level.iter().copied().max().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); top];
    for (i, l) in level.into_iter().enumerate() {
        out[l].push(i);
    }
    Ok(out)
}

/// Splits one level into batches of mutually conflict-free branches, in
/// order: each branch joins the first batch holding nothing it conflicts
/// with (`conflicts(a, b)` is symmetric).
pub fn batches(level: &[usize], conflicts: impl Fn(usize, usize) -> bool) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for &b in level {
        match out
            .iter_mut()
            .find(|batch| batch.iter().all(|&x| !conflicts(x, b)))
        {
            Some(batch) => batch.push(b),
            None => out.push(vec![b]),
        }
    }
    out
}

/// Pairs `(a, b)`, `a < b`, whose changed-file sets share a file: the only
/// pairs that can conflict, so the only ones worth an exact check. Files
/// are indexed once; cost is the sum over files of (branches touching it)².
pub fn overlapping_pairs(files: &[Vec<String>]) -> Vec<(usize, usize, Vec<String>)> {
    let mut by_file: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, fs) in files.iter().enumerate() {
        for f in fs {
            by_file.entry(f.as_str()).or_default().push(i);
        }
    }
    let mut pairs: std::collections::BTreeMap<(usize, usize), Vec<String>> = Default::default();
    for (f, touching) in by_file {
        for (x, &a) in touching.iter().enumerate() {
            for &b in &touching[x + 1..] {
                let key = if a < b { (a, b) } else { (b, a) };
                pairs.entry(key).or_default().push(f.to_owned());
            }
        }
    }
    pairs.into_iter().map(|((a, b), f)| (a, b, f)).collect()
}

/// Finding the branches that break a batch. Each candidate is the target
/// plus a list of the batch's branches merged in order; a branch is bad
/// when it fails on top of the good ones before it (so a branch that only
/// fails together with an earlier one is the one blamed, and the earlier
/// one lands). A round tests up to `slots` candidates at once: prefixes of
/// the branches in question cut evenly (a (slots+1)-ary search, where
/// halving is binary), and, once the window is small, the outcome of each
/// possible culprit ("everything but this one") so the rest can land in the
/// same round. Results are keyed by the candidate's list, so a result is
/// never asked for twice and old results keep answering as the state moves.
#[derive(Clone, Debug, Default)]
pub struct Bisect {
    /// Known good, in order (the target plus these passed).
    accepted: Vec<usize>,
    /// Still in question, in order.
    rest: Vec<usize>,
    bad: Vec<usize>,
    results: std::collections::HashMap<Vec<usize>, bool>,
    rounds: usize,
}

impl Bisect {
    pub fn new(batch: Vec<usize>) -> Bisect {
        Bisect {
            rest: batch,
            ..Bisect::default()
        }
    }

    /// The candidates to test next (none when done). Each is a full list.
    pub fn round(&self, slots: usize) -> Vec<Vec<usize>> {
        let slots = slots.max(1);
        let len = self.rest.len();
        if len == 0 {
            return Vec::new();
        }
        let mut out: Vec<Vec<usize>> = Vec::new();
        let push = |c: Vec<usize>, out: &mut Vec<Vec<usize>>| {
            if out.len() < slots && !self.results.contains_key(&c) && !out.contains(&c) {
                out.push(c);
            }
        };
        let (lo, hi) = match self.window() {
            Some(w) => w,
            None => {
                // The whole is unknown: test it, and cut ahead with the
                // spare slots in case it fails.
                push(self.prefix(len), &mut out);
                (0, len)
            }
        };
        let inner = hi - lo - 1;
        let cuts = inner.min(slots - out.len());
        for j in 1..=cuts {
            let c = lo + ((hi - lo) * j).div_ceil(cuts + 1);
            if c > lo && c < hi {
                push(self.prefix(c), &mut out);
            }
        }
        if hi - lo <= slots {
            // Each possible culprit: everything but it, on top of the ones
            // before it.
            for i in lo..hi {
                let mut c = self.prefix(i);
                c.extend_from_slice(&self.rest[i + 1..]);
                if c.len() > self.accepted.len() {
                    push(c, &mut out);
                }
            }
        }
        out
    }

    /// Records the results of a round.
    pub fn record(&mut self, results: impl IntoIterator<Item = (Vec<usize>, bool)>) {
        self.results.extend(results);
        self.rounds += 1;
        self.settle();
    }

    /// True when every branch is accepted or bad.
    pub fn done(&self) -> bool {
        self.rest.is_empty()
    }

    /// The branches that passed, in order: the candidate to land (it was
    /// tested as a whole).
    pub fn accepted(&self) -> &[usize] {
        &self.accepted
    }

    /// The branches that failed on top of the good ones before them.
    pub fn bad(&self) -> &[usize] {
        &self.bad
    }

    /// Rounds recorded so far.
    pub fn rounds(&self) -> usize {
        self.rounds
    }

    /// True once the branch is known good or bad.
    pub fn settled(&self, b: usize) -> bool {
        !self.rest.contains(&b)
    }

    fn prefix(&self, c: usize) -> Vec<usize> {
        let mut v = self.accepted.clone();
        v.extend_from_slice(&self.rest[..c]);
        v
    }

    /// (longest passing prefix, shortest failing prefix) of `rest`, once
    /// some prefix is known to fail.
    fn window(&self) -> Option<(usize, usize)> {
        let hi =
            (1..=self.rest.len()).find(|&c| self.results.get(&self.prefix(c)) == Some(&false))?;
        let lo = (1..hi)
            .rev()
            .find(|&c| self.results.get(&self.prefix(c)) == Some(&true))
            .unwrap_or(0);
        Some((lo, hi))
    }

    /// Moves what the results decide: a passing whole is accepted; a
    /// window of one names a bad branch, the ones before it are accepted.
    fn settle(&mut self) {
        while !self.rest.is_empty() {
            match self.window() {
                None => {
                    if self.results.get(&self.prefix(self.rest.len())) == Some(&true) {
                        self.accepted.append(&mut self.rest);
                    }
                    return;
                }
                Some((lo, hi)) if hi - lo == 1 => {
                    let rest = std::mem::take(&mut self.rest);
                    self.accepted.extend_from_slice(&rest[..lo]);
                    self.bad.push(rest[lo]);
                    self.rest = rest[hi..].to_vec();
                }
                Some(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn levels_follow_dependencies_and_cycles_are_named() {
        // 0 <- 1 <- 3, 0 <- 2, 4 alone
        let deps = vec![vec![], vec![0], vec![0], vec![1, 2], vec![]];
        assert_eq!(
            levels(&deps).unwrap(),
            vec![vec![0, 4], vec![1, 2], vec![3]]
        );
        let cyclic = vec![vec![2], vec![0], vec![1]];
        let LevelCycle(c) = levels(&cyclic).unwrap_err();
        assert_eq!(c.first(), c.last());
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn batches_keep_conflicting_branches_apart() {
        let conflicts = |a: usize, b: usize| (a, b) == (0, 1) || (a, b) == (1, 0);
        assert_eq!(batches(&[0, 1, 2], conflicts), vec![vec![0, 2], vec![1]]);
        let files = vec![
            vec!["a".to_string(), "b".to_string()],
            vec!["b".to_string()],
            vec!["c".to_string()],
            vec!["a".to_string(), "b".to_string()],
        ];
        assert_eq!(
            overlapping_pairs(&files),
            vec![
                (0, 1, vec!["b".to_string()]),
                (0, 3, vec!["a".to_string(), "b".to_string()]),
                (1, 3, vec!["b".to_string()]),
            ]
        );
    }

    #[test]
    fn a_deep_chain_has_a_level_per_branch() {
        let n = 100_000;
        let deps: Vec<Vec<usize>> = (0..n)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        let l = levels(&deps).unwrap();
        assert_eq!(l.len(), n);
        assert_eq!(l[n - 1], vec![n - 1]);
    }

    /// Runs a bisection against `fails` (does this list fail?) and returns
    /// (accepted, bad, rounds, candidates tested).
    fn bisect_with(
        n: usize,
        slots: usize,
        fails: impl Fn(&[usize]) -> bool,
    ) -> (Vec<usize>, Vec<usize>, usize, usize) {
        let mut b = Bisect::new((0..n).collect());
        let mut tested = std::collections::HashSet::new();
        while !b.done() {
            let round = b.round(slots);
            assert!(!round.is_empty() && round.len() <= slots, "{round:?}");
            for c in &round {
                assert!(tested.insert(c.clone()), "{c:?} tested twice");
            }
            b.record(round.into_iter().map(|c| {
                let f = fails(&c);
                (c, !f)
            }));
            assert!(b.rounds() <= 4 * n + 2, "no progress");
        }
        (
            b.accepted().to_vec(),
            b.bad().to_vec(),
            b.rounds(),
            tested.len(),
        )
    }

    #[test]
    fn one_bad_branch_in_eight_is_found_in_two_rounds_with_three_slots() {
        for bad in 0..8 {
            let mut b = Bisect::new((0..8).collect());
            let mut rounds_to_isolate = None;
            while !b.done() {
                let round = b.round(3);
                b.record(round.into_iter().map(|c| {
                    let pass = !c.contains(&bad);
                    (c, pass)
                }));
                if rounds_to_isolate.is_none() && b.bad() == [bad] {
                    rounds_to_isolate = Some(b.rounds());
                }
            }
            assert_eq!(b.bad(), [bad]);
            assert_eq!(b.accepted().len(), 7);
            assert!(
                rounds_to_isolate.unwrap() <= 2,
                "bad {bad}: {rounds_to_isolate:?}"
            );
            assert!(b.rounds() <= 3, "bad {bad}: {} rounds to land", b.rounds());
        }
    }

    #[test]
    fn a_passing_batch_takes_one_candidate() {
        let (acc, bad, rounds, tested) = bisect_with(8, 3, |_| false);
        assert_eq!((acc, bad, rounds), ((0..8).collect(), vec![], 1));
        assert!(tested <= 3);
        let (acc, _, _, tested) = bisect_with(8, 1, |_| false);
        assert_eq!((acc.len(), tested), (8, 1));
    }

    #[test]
    fn a_branch_that_fails_only_after_another_is_the_one_blamed() {
        // 5 fails when 2 is merged before it; each passes alone.
        let fails = |c: &[usize]| c.contains(&2) && c.contains(&5);
        let (acc, bad, _, _) = bisect_with(8, 3, fails);
        assert_eq!(bad, [5]);
        assert_eq!(acc, [0, 1, 2, 3, 4, 6, 7]);
    }

    proptest! {

        #[test]
        fn bisection_sets_aside_exactly_the_bad_branches(
            n in 1usize..14,
            slots in 1usize..5,
            bad in proptest::collection::btree_set(0usize..14, 0..4),
        ) {
            let (acc, found, _, _) = bisect_with(n, slots, |c| c.iter().any(|b| bad.contains(b)));
            let want: Vec<usize> = (0..n).filter(|b| bad.contains(b)).collect();
            let mut got = found.clone();
            got.sort_unstable();
            prop_assert_eq!(got, want);
            let good: Vec<usize> = (0..n).filter(|b| !bad.contains(b)).collect();
            prop_assert_eq!(acc, good);
        }
        #[test]
        fn levels_and_batches_hold_their_rules(
            edges in proptest::collection::vec((0usize..30, 0usize..30), 0..60),
            clashes in proptest::collection::vec((0usize..30, 0usize..30), 0..40),
        ) {
            let n = 30;
            // Only edges to lower indices: acyclic by construction.
            let mut deps = vec![Vec::new(); n];
            for (a, b) in edges {
                if a > b { deps[a].push(b); }
            }
            let lv = levels(&deps).unwrap();
            let mut level_of = vec![usize::MAX; n];
            for (l, bs) in lv.iter().enumerate() {
                for &b in bs { prop_assert_eq!(level_of[b], usize::MAX); level_of[b] = l; }
            }
            for (i, ds) in deps.iter().enumerate() {
                prop_assert!(level_of[i] != usize::MAX);
                for &d in ds { prop_assert!(level_of[d] < level_of[i]); }
                // Lowest possible: one above the highest dependency.
                let want = ds.iter().map(|&d| level_of[d] + 1).max().unwrap_or(0);
                prop_assert_eq!(level_of[i], want);
            }
            let clash = |a: usize, b: usize| clashes.iter().any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a));
            for bs in &lv {
                let out = batches(bs, clash);
                let mut all: Vec<usize> = out.iter().flatten().copied().collect();
                all.sort_unstable();
                let mut want = bs.clone();
                want.sort_unstable();
                prop_assert_eq!(all, want);
                for batch in &out {
                    for (x, &a) in batch.iter().enumerate() {
                        for &b in &batch[x + 1..] { prop_assert!(!clash(a, b)); }
                    }
                }
            }
        }
    }
}
