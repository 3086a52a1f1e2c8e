//! `group_influence(target, member [, pooling])`: the attention-pooled influence of a group of
//! training examples on a target (DESIGN section 1), as a streaming, combinable aggregate.

use airrep_core::group::{EncodedGroup, Pooling, TargetGroup};
use airrep_core::vector;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::aggstate::{self, PartialState, StateBytes};
use crate::error::{raise, sqlstate, OrRaise};
use crate::vector_type::VectorRef;

fn target_changed() -> ! {
    raise(
        sqlstate::INVALID_PARAMETER_VALUE,
        "group_influence target changed within a group: use one target per group (GROUP BY the target)",
    )
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

/// Adds one member's score to its group's state, in place, checking that the target and
/// the pooling are the group's.
fn step(
    fcinfo: pg_sys::FunctionCallInfo,
    state: Option<StateBytes>,
    target: Option<VectorRef<'_>>,
    member: Option<VectorRef<'_>>,
    pooling: Pooling,
) -> Option<StateBytes> {
    let (Some(target), Some(member)) = (target, member) else {
        return state;
    };
    let (target, member) = (target.as_slice(), member.as_slice());
    vector::check_same_dims(target.len(), member.len()).or_raise();
    Some(aggstate::step_state(
        fcinfo,
        state,
        || TargetGroup::new(target, pooling).to_bytes(),
        |bytes| {
            let mut group = EncodedGroup::new(bytes)?;
            if group.pooling() != pooling {
                raise(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    "group_influence pooling changed within a group",
                );
            }
            if !group.has_target(target) {
                target_changed();
            }
            group.push(vector::dot_f32(target, member));
            Ok(())
        },
    ))
}

/// `group_influence(target, member)`'s transition function, a plain V1 C function rather
/// than a `#[pg_extern]`: it runs once per row, and pgrx's per-call plumbing (argument
/// unboxing, memory-context switch, result boxing) cost as much as the state update.
///
/// # Safety
/// Called by Postgres with three arguments: `bytea`, `airrep_vector`, `airrep_vector`.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn airrep_group_influence_step(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let args = (*fcinfo).args.as_slice(3);
    let arg = |i: usize| (!args[i].isnull).then_some(args[i].value);
    let state = arg(0).map(|datum| StateBytes::from_raw(datum));
    let target = arg(1).map(|datum| VectorRef::from_raw(datum));
    let member = arg(2).map(|datum| VectorRef::from_raw(datum));
    match step(fcinfo, state, target, member, Pooling::Attention) {
        Some(state) => state.into_raw(),
        None => {
            (*fcinfo).isnull = true;
            pg_sys::Datum::from(0)
        }
    }
}

#[no_mangle]
#[doc(hidden)]
pub extern "C" fn pg_finfo_airrep_group_influence_step() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

#[pg_extern(parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_group_influence_pooled_step(
    state: Option<StateBytes>,
    target: Option<VectorRef<'_>>,
    member: Option<VectorRef<'_>>,
    pooling: Option<&str>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<StateBytes> {
    let pooling = pooling
        .unwrap_or_else(|| {
            raise(
                sqlstate::NULL_VALUE_NOT_ALLOWED,
                "group_influence pooling must not be NULL: use 'attention' or 'sum'",
            )
        })
        .parse::<Pooling>()
        .unwrap_or_else(|e| raise(sqlstate::INVALID_PARAMETER_VALUE, &e.to_string()));
    step(fcinfo, state, target, member, pooling)
}

#[pg_extern(strict, parallel_safe)]
fn airrep_group_influence_final(state: StateBytes) -> Option<f64> {
    let group = state.decode::<TargetGroup>();
    group.scores.result(group.pooling)
}

#[pg_extern(parallel_safe)]
fn airrep_group_influence_combine(
    left: Option<StateBytes>,
    right: Option<StateBytes>,
) -> Option<Vec<u8>> {
    aggstate::combine_bytes::<TargetGroup>(left, right)
}

extension_sql!(
    r#"
CREATE FUNCTION airrep_group_influence_step(state bytea, target airrep_vector, member airrep_vector)
RETURNS bytea PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'airrep_group_influence_step';
CREATE AGGREGATE group_influence(target airrep_vector, member airrep_vector) (
    SFUNC = airrep_group_influence_step,
    STYPE = bytea,
    FINALFUNC = airrep_group_influence_final,
    COMBINEFUNC = airrep_group_influence_combine,
    PARALLEL = SAFE
);
CREATE AGGREGATE group_influence(target airrep_vector, member airrep_vector, pooling text) (
    SFUNC = airrep_group_influence_pooled_step,
    STYPE = bytea,
    FINALFUNC = airrep_group_influence_final,
    COMBINEFUNC = airrep_group_influence_combine,
    PARALLEL = SAFE
);
"#,
    name = "group_influence_aggregate",
    requires = [
        "airrep_vector_type",
        airrep_group_influence_pooled_step,
        airrep_group_influence_final,
        airrep_group_influence_combine
    ]
);
