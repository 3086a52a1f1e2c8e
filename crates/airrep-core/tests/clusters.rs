//! Near-duplicate clusters against a brute-force reference: components by repeated
//! flooding over the whole similarity matrix.

use airrep_core::clusters::{Clusters, Keep};
use proptest::prelude::*;

/// A symmetric similarity matrix from small integers, so ties are common.
fn similarities() -> impl Strategy<Value = (Vec<i64>, Vec<Vec<i32>>)> {
    (2usize..12).prop_flat_map(|n| {
        (
            Just((0..n as i64).map(|i| 50 - i * 3).collect::<Vec<_>>()),
            prop::collection::vec(prop::collection::vec(0i32..10, n), n),
        )
    })
}

proptest! {
    #[test]
    fn components_and_nearest_match_brute_force((ids, raw) in similarities(), threshold in 5i32..10, order_seed in 0u64..1000) {
        let n = ids.len();
        let sim = |i: usize, j: usize| raw[i.min(j)][i.max(j)];
        // Edges in a scrambled order.
        let mut edges: Vec<(usize, usize)> = (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j))).filter(|&(i, j)| sim(i, j) >= threshold).collect();
        edges.sort_by_key(|&(i, j)| (i as u64 * 31 + j as u64 * 17 + order_seed) % 97);
        let mut clusters = Clusters::new();
        for &(i, j) in &edges {
            if order_seed % 2 == 0 { clusters.add_edge(ids[i], ids[j], sim(i, j) as f64) } else { clusters.add_edge(ids[j], ids[i], sim(i, j) as f64) }
        }
        let got = clusters.finish();

        // Reference: flood fill from every unvisited row.
        let mut component = vec![usize::MAX; n];
        for start in 0..n {
            if component[start] != usize::MAX { continue; }
            component[start] = start;
            let mut stack = vec![start];
            while let Some(i) = stack.pop() {
                for (j, c) in component.iter_mut().enumerate() {
                    if j != i && *c == usize::MAX && sim(i, j) >= threshold {
                        *c = start;
                        stack.push(j);
                    }
                }
            }
        }
        let mut want: Vec<Vec<i64>> = (0..n)
            .map(|c| { let mut m: Vec<i64> = (0..n).filter(|&i| component[i] == c).map(|i| ids[i]).collect(); m.sort(); m })
            .filter(|m| m.len() >= 2)
            .collect();
        want.sort();
        let got_ids: Vec<Vec<i64>> = got.iter().map(|c| c.members.iter().map(|m| m.id).collect()).collect();
        prop_assert_eq!(&got_ids, &want);
        for c in &got {
            prop_assert_eq!(c.id(), c.members[0].id);
            for m in &c.members {
                let i = ids.iter().position(|&x| x == m.id).unwrap();
                // nearest: the most similar other row, ties to the smaller id
                let best = (0..n).filter(|&j| j != i).max_by(|&a, &b| sim(i, a).cmp(&sim(i, b)).then(ids[b].cmp(&ids[a]))).unwrap();
                prop_assert_eq!(m.nearest_id, ids[best]);
                prop_assert_eq!(m.similarity, sim(i, best) as f64);
            }
            // central: highest mean similarity to the other members, ties to the smaller id
            let mean = |id: i64| {
                let i = ids.iter().position(|&x| x == id).unwrap();
                c.members.iter().filter(|m| m.id != id).map(|m| sim(i, ids.iter().position(|&x| x == m.id).unwrap()) as f64).sum::<f64>() / (c.members.len() - 1) as f64
            };
            let central = c.members.iter().map(|m| m.id).max_by(|&a, &b| mean(a).partial_cmp(&mean(b)).unwrap().then(b.cmp(&a))).unwrap();
            prop_assert_eq!(c.keeper(Keep::Central, mean), central);
            prop_assert_eq!(c.keeper(Keep::LowestId, mean), c.id());
        }
    }
}

#[test]
fn keep_policies_parse() {
    assert_eq!("central".parse::<Keep>(), Ok(Keep::Central));
    assert_eq!("lowest_id".parse::<Keep>(), Ok(Keep::LowestId));
    assert_eq!(
        "newest".parse::<Keep>().unwrap_err().to_string(),
        "unknown keep policy \"newest\": expected 'lowest_id' or 'central'"
    );
}
