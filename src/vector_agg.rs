//! `sum(airrep_vector)` and `avg(airrep_vector)`, accumulated in f64 and combinable in parallel.

use airrep_core::vector::VectorSum;
use pgrx::datum::Internal;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::aggstate::{self, PartialState};
use crate::error::OrRaise;
use crate::vector_type::{Vector, VectorRef};

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
fn airrep_vector_accum(
    mut internal: Internal,
    value: Option<VectorRef<'_>>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    if let Some(value) = value {
        let value = value.as_slice();
        let state = aggstate::state_mut(fcinfo, &mut internal, || VectorSum::new(value.len()));
        state.push(value).or_raise();
    }
    internal
}

#[pg_extern(parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_vector_sum_final(internal: Internal) -> Option<Vector> {
    aggstate::state_ref::<VectorSum>(&internal).map(|s| Vector(s.sum().or_raise()))
}

#[pg_extern(parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_vector_avg_final(internal: Internal) -> Option<Vector> {
    aggstate::state_ref::<VectorSum>(&internal).map(|s| Vector(s.avg()))
}

#[pg_extern(strict, parallel_safe)]
fn airrep_vector_sum_serialize(internal: Internal) -> Vec<u8> {
    aggstate::serialize::<VectorSum>(internal)
}

#[pg_extern(strict, parallel_safe)]
fn airrep_vector_sum_deserialize(bytes: &[u8], _unused: Internal) -> Internal {
    aggstate::deserialize::<VectorSum>(bytes)
}

#[pg_extern(parallel_safe)]
fn airrep_vector_sum_combine(
    left: Internal,
    right: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    aggstate::combine::<VectorSum>(fcinfo, left, right)
}

extension_sql!(
    r#"
CREATE AGGREGATE sum(airrep_vector) (
    SFUNC = airrep_vector_accum, STYPE = internal, FINALFUNC = airrep_vector_sum_final,
    COMBINEFUNC = airrep_vector_sum_combine, SERIALFUNC = airrep_vector_sum_serialize,
    DESERIALFUNC = airrep_vector_sum_deserialize, PARALLEL = SAFE
);
CREATE AGGREGATE avg(airrep_vector) (
    SFUNC = airrep_vector_accum, STYPE = internal, FINALFUNC = airrep_vector_avg_final,
    COMBINEFUNC = airrep_vector_sum_combine, SERIALFUNC = airrep_vector_sum_serialize,
    DESERIALFUNC = airrep_vector_sum_deserialize, PARALLEL = SAFE
);
"#,
    name = "vector_aggregates",
    requires = [
        airrep_vector_accum,
        airrep_vector_sum_final,
        airrep_vector_avg_final,
        airrep_vector_sum_combine,
        airrep_vector_sum_serialize,
        airrep_vector_sum_deserialize
    ]
);
