//! `sum(airrep_vector)` and `avg(airrep_vector)`, accumulated in f64 and combinable in parallel.

use airrep_core::vector::{EncodedVectorSum, VectorSum};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::aggstate::{self, PartialState, StateBytes};
use crate::error::OrRaise;
use crate::vector_type::{validated, Vector, VectorRef};

impl PartialState for VectorSum {
    fn to_bytes(&self) -> Vec<u8> {
        VectorSum::to_bytes(self)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        VectorSum::from_bytes(bytes).map_err(|e| e.to_string())
    }

    fn merge(&mut self, other: &Self) {
        VectorSum::merge(self, other).or_raise()
    }
}

#[pg_extern(parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_vector_sum_accum(
    state: Option<StateBytes>,
    value: Option<VectorRef<'_>>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<StateBytes> {
    let Some(value) = value else {
        return state;
    };
    let value = value.as_slice();
    Some(aggstate::step_state(
        fcinfo,
        state,
        || VectorSum::new(value.len()).to_bytes(),
        |bytes| {
            EncodedVectorSum::new(bytes)?.push(value).or_raise();
            Ok(())
        },
    ))
}

#[pg_extern(strict, parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_vector_sum_result(state: StateBytes) -> Option<Vector> {
    let sum = state.decode::<VectorSum>();
    // Checked like any vector from outside: the state may be any bytea a caller made.
    (sum.count() > 0).then(|| validated(sum.sum().or_raise(), -1))
}

#[pg_extern(strict, parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_vector_avg_result(state: StateBytes) -> Option<Vector> {
    let sum = state.decode::<VectorSum>();
    (sum.count() > 0).then(|| validated(sum.avg(), -1))
}

#[pg_extern(parallel_safe)]
fn airrep_vector_sum_merge(left: Option<StateBytes>, right: Option<StateBytes>) -> Option<Vec<u8>> {
    aggstate::combine_bytes::<VectorSum>(left, right)
}

extension_sql!(
    r#"
CREATE AGGREGATE sum(airrep_vector) (
    SFUNC = airrep_vector_sum_accum, STYPE = bytea, FINALFUNC = airrep_vector_sum_result,
    COMBINEFUNC = airrep_vector_sum_merge, PARALLEL = SAFE
);
CREATE AGGREGATE avg(airrep_vector) (
    SFUNC = airrep_vector_sum_accum, STYPE = bytea, FINALFUNC = airrep_vector_avg_result,
    COMBINEFUNC = airrep_vector_sum_merge, PARALLEL = SAFE
);
"#,
    name = "vector_aggregates",
    requires = [
        airrep_vector_sum_accum,
        airrep_vector_sum_result,
        airrep_vector_avg_result,
        airrep_vector_sum_merge
    ]
);
