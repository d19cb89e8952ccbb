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

    proptest! {
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
