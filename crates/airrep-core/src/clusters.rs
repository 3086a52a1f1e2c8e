//! Near-duplicate clusters (`airrep.near_duplicates`): the connected components of the
//! graph whose edges are pairs at or above a similarity threshold, each with the one
//! member to keep.
//!
//! Edges arrive in any order from a streamed search; a union-find with path halving and
//! union by size joins them in near-constant time per edge, holding only rows that have an
//! edge. A cluster's id is its smallest member id, so the result does not depend on the
//! order of the edges.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// Which member of a cluster is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The smallest id.
    LowestId,
    /// The highest mean similarity to the other members (ties to the smaller id).
    Central,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKeep(pub String);

impl fmt::Display for UnknownKeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown keep policy \"{}\": expected 'lowest_id' or 'central'",
            self.0
        )
    }
}

impl std::error::Error for UnknownKeep {}

impl FromStr for Keep {
    type Err = UnknownKeep;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lowest_id" => Ok(Keep::LowestId),
            "central" => Ok(Keep::Central),
            other => Err(UnknownKeep(other.to_string())),
        }
    }
}

/// One member of a cluster and its most similar other member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Member {
    pub id: i64,
    pub nearest_id: i64,
    pub similarity: f64,
}

/// A connected component of two or more rows, members in id order.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub members: Vec<Member>,
}

impl Cluster {
    /// The smallest member id.
    pub fn id(&self) -> i64 {
        self.members[0].id
    }

    /// The member to keep; `mean_similarity` gives a member's mean similarity to the
    /// others (only asked for [`Keep::Central`]).
    pub fn keeper(&self, keep: Keep, mean_similarity: impl Fn(i64) -> f64) -> i64 {
        match keep {
            Keep::LowestId => self.id(),
            Keep::Central => {
                let mut best = (self.members[0].id, mean_similarity(self.members[0].id));
                for m in &self.members[1..] {
                    let s = mean_similarity(m.id);
                    // members are in id order: only a strictly higher mean replaces
                    if s > best.1 {
                        best = (m.id, s);
                    }
                }
                best.0
            }
        }
    }
}

/// Components built from edges.
#[derive(Debug, Default)]
pub struct Clusters {
    index: HashMap<i64, usize>,
    ids: Vec<i64>,
    parent: Vec<usize>,
    size: Vec<usize>,
    /// (nearest id, similarity) per row
    nearest: Vec<(i64, f64)>,
}

impl Clusters {
    pub fn new() -> Self {
        Self::default()
    }

    fn node(&mut self, id: i64) -> usize {
        if let Some(&n) = self.index.get(&id) {
            return n;
        }
        let n = self.ids.len();
        self.index.insert(id, n);
        self.ids.push(id);
        self.parent.push(n);
        self.size.push(1);
        self.nearest.push((i64::MAX, f64::NEG_INFINITY));
        n
    }

    fn root(&mut self, mut n: usize) -> usize {
        while self.parent[n] != n {
            self.parent[n] = self.parent[self.parent[n]];
            n = self.parent[n];
        }
        n
    }

    fn closer(&mut self, n: usize, other: i64, similarity: f64) {
        let (id, s) = self.nearest[n];
        if similarity > s || (similarity == s && other < id) {
            self.nearest[n] = (other, similarity);
        }
    }

    /// Join `a` and `b` (distinct rows at or above the threshold).
    pub fn add_edge(&mut self, a: i64, b: i64, similarity: f64) {
        if a == b {
            return;
        }
        let (na, nb) = (self.node(a), self.node(b));
        self.closer(na, b, similarity);
        self.closer(nb, a, similarity);
        let (mut ra, mut rb) = (self.root(na), self.root(nb));
        if ra != rb {
            if self.size[ra] < self.size[rb] {
                std::mem::swap(&mut ra, &mut rb);
            }
            self.parent[rb] = ra;
            self.size[ra] += self.size[rb];
        }
    }

    /// Rows that have at least one edge.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The clusters, ordered by id, members in id order.
    pub fn finish(mut self) -> Vec<Cluster> {
        let mut by_root: HashMap<usize, Vec<Member>> = HashMap::new();
        for n in 0..self.ids.len() {
            let root = self.root(n);
            let (nearest_id, similarity) = self.nearest[n];
            by_root.entry(root).or_default().push(Member {
                id: self.ids[n],
                nearest_id,
                similarity,
            });
        }
        let mut clusters: Vec<Cluster> = by_root
            .into_values()
            .map(|mut members| {
                members.sort_by_key(|m| m.id);
                Cluster { members }
            })
            .collect();
        clusters.sort_by_key(Cluster::id);
        clusters
    }
}
