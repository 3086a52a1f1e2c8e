//! `group_influence(target, member [, pooling])`: the attention-pooled influence of a group of
//! training examples on a target (DESIGN section 1), as a streaming, combinable aggregate.

use airrep_core::group::{GroupState, Pooling};
use airrep_core::vector;
use pgrx::datum::Internal;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::aggstate::{self, PartialState};
use crate::error::{raise, OrRaise};
use crate::vector_type::VectorRef;

/// One group's running state: the target it is scored against, so that a target changing
/// within a group is caught rather than silently mixed, and the streaming scores.
#[derive(Clone)]
struct GroupAgg {
    target: Vec<f32>,
    pooling: Pooling,
    scores: GroupState,
}

fn target_changed() -> ! {
    raise(
        "22023",
        "group_influence target changed within a group: use one target per group (GROUP BY the target)",
    )
}

impl GroupAgg {
    fn add(&mut self, target: &[f32], member: &[f32]) {
        if target != self.target.as_slice() {
            target_changed();
        }
        vector::check_same_dims(target.len(), member.len()).or_raise();
        self.scores.push(vector::dot(target, member));
    }
}

impl PartialState for GroupAgg {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 4 * self.target.len());
        out.push(self.pooling as u8);
        out.extend_from_slice(&(self.target.len() as u32).to_le_bytes());
        for x in &self.target {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(&self.scores.to_bytes());
        out
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let (&pooling, rest) = bytes.split_first().ok_or("empty state")?;
        let pooling = Pooling::from_code(pooling).ok_or("unknown pooling code")?;
        let (dims, rest) = rest.split_at_checked(4).ok_or("truncated state")?;
        let dims = u32::from_le_bytes(dims.try_into().unwrap()) as usize;
        let (target, scores) = rest.split_at_checked(4 * dims).ok_or("truncated state")?;
        let target = target
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let scores = GroupState::from_bytes(scores).map_err(|e| e.to_string())?;
        Ok(GroupAgg {
            target,
            pooling,
            scores,
        })
    }

    fn merge(&mut self, other: &Self) {
        if self.target != other.target || self.pooling != other.pooling {
            target_changed();
        }
        self.scores.merge(&other.scores);
    }
}

fn step(
    fcinfo: pg_sys::FunctionCallInfo,
    mut internal: Internal,
    target: Option<VectorRef<'_>>,
    member: Option<VectorRef<'_>>,
    pooling: Pooling,
) -> Internal {
    if let (Some(target), Some(member)) = (target, member) {
        let target = target.as_slice();
        let state = aggstate::state_mut(fcinfo, &mut internal, || GroupAgg {
            target: target.to_vec(),
            pooling,
            scores: GroupState::default(),
        });
        if state.pooling != pooling {
            raise("22023", "group_influence pooling changed within a group");
        }
        state.add(target, member.as_slice());
    }
    internal
}

#[pg_extern(parallel_safe, requires = ["airrep_vector_type"])]
fn group_influence_step(
    internal: Internal,
    target: Option<VectorRef<'_>>,
    member: Option<VectorRef<'_>>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    step(fcinfo, internal, target, member, Pooling::Attention)
}

#[pg_extern(parallel_safe, requires = ["airrep_vector_type"])]
fn group_influence_pooled_step(
    internal: Internal,
    target: Option<VectorRef<'_>>,
    member: Option<VectorRef<'_>>,
    pooling: Option<&str>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let pooling = pooling
        .unwrap_or("attention")
        .parse::<Pooling>()
        .unwrap_or_else(|e| raise("22023", &e.to_string()));
    step(fcinfo, internal, target, member, pooling)
}

#[pg_extern(parallel_safe)]
fn group_influence_final(internal: Internal) -> Option<f64> {
    aggstate::state_ref::<GroupAgg>(&internal).and_then(|s| s.scores.result(s.pooling))
}

#[pg_extern(strict, parallel_safe)]
fn group_influence_serialize(internal: Internal) -> Vec<u8> {
    aggstate::serialize::<GroupAgg>(internal)
}

#[pg_extern(strict, parallel_safe)]
fn group_influence_deserialize(bytes: &[u8], _unused: Internal) -> Internal {
    aggstate::deserialize::<GroupAgg>(bytes)
}

#[pg_extern(parallel_safe)]
fn group_influence_combine(
    left: Internal,
    right: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    aggstate::combine::<GroupAgg>(fcinfo, left, right)
}

extension_sql!(
    r#"
CREATE AGGREGATE group_influence(target airrep_vector, member airrep_vector) (
    SFUNC = group_influence_step,
    STYPE = internal,
    FINALFUNC = group_influence_final,
    COMBINEFUNC = group_influence_combine,
    SERIALFUNC = group_influence_serialize,
    DESERIALFUNC = group_influence_deserialize,
    PARALLEL = SAFE
);
CREATE AGGREGATE group_influence(target airrep_vector, member airrep_vector, pooling text) (
    SFUNC = group_influence_pooled_step,
    STYPE = internal,
    FINALFUNC = group_influence_final,
    COMBINEFUNC = group_influence_combine,
    SERIALFUNC = group_influence_serialize,
    DESERIALFUNC = group_influence_deserialize,
    PARALLEL = SAFE
);
"#,
    name = "group_influence_aggregate",
    requires = [
        group_influence_step,
        group_influence_pooled_step,
        group_influence_final,
        group_influence_combine,
        group_influence_serialize,
        group_influence_deserialize
    ]
);
