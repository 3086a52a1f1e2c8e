//! `group_influence(target, member [, pooling])`: the attention-pooled influence of a group of
//! training examples on a target (DESIGN section 1), as a streaming, combinable aggregate.

use airrep_core::group::{Pooling, TargetGroup};
use airrep_core::vector;
use pgrx::datum::Internal;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::aggstate::{self, PartialState};
use crate::error::{raise, OrRaise};
use crate::vector_type::VectorRef;

fn target_changed() -> ! {
    raise(
        "22023",
        "group_influence target changed within a group: use one target per group (GROUP BY the target)",
    )
}

/// Add one member's score to a group, checking that the target is the group's.
fn add(group: &mut TargetGroup, target: &[f32], member: &[f32]) {
    if target != group.target.as_slice() {
        target_changed();
    }
    vector::check_same_dims(target.len(), member.len()).or_raise();
    group.scores.push(vector::dot(target, member));
}

impl PartialState for TargetGroup {
    fn to_bytes(&self) -> Vec<u8> {
        TargetGroup::to_bytes(self)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        TargetGroup::from_bytes(bytes).map_err(|e| e.to_string())
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
        let state =
            aggstate::state_mut(fcinfo, &mut internal, || TargetGroup::new(target, pooling));
        if state.pooling != pooling {
            raise("22023", "group_influence pooling changed within a group");
        }
        add(state, target, member.as_slice());
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
    aggstate::state_ref::<TargetGroup>(&internal).and_then(|s| s.scores.result(s.pooling))
}

#[pg_extern(strict, parallel_safe)]
fn group_influence_serialize(internal: Internal) -> Vec<u8> {
    aggstate::serialize::<TargetGroup>(internal)
}

#[pg_extern(strict, parallel_safe)]
fn group_influence_deserialize(bytes: &[u8], _unused: Internal) -> Internal {
    aggstate::deserialize::<TargetGroup>(bytes)
}

#[pg_extern(parallel_safe)]
fn group_influence_combine(
    left: Internal,
    right: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    aggstate::combine::<TargetGroup>(fcinfo, left, right)
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
