//! Functions, operators and casts over `airrep_vector`.

use airrep_core::vector::{self, VectorError};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::AnyNumeric;

use crate::error::{raise_vector, OrRaise};
use crate::vector_type::{validated, Vector, VectorRef};

/// Both operands' slices, after checking that their dimensions agree.
fn same_dims<'a>(a: &VectorRef<'a>, b: &VectorRef<'a>) -> (&'a [f32], &'a [f32]) {
    vector::check_same_dims(a.as_slice().len(), b.as_slice().len()).or_raise();
    (a.as_slice(), b.as_slice())
}

/// Single-example influence of z on x (DESIGN section 1): the raw dot product `<e(x), e(z)>`,
/// accumulated in f32 lanes at pgvector's speed (`vector::dot_f32`: within
/// `(n/16 + 8) · 2⁻²⁴ · Σ|x_i·z_i|` on every SIMD tier).
#[pg_extern(immutable, strict, parallel_safe, requires = ["airrep_vector_type"])]
fn influence(target: VectorRef<'_>, member: VectorRef<'_>) -> f64 {
    let (a, b) = same_dims(&target, &member);
    vector::dot_f32(a, b)
}

#[pg_extern(immutable, strict, parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_negative_inner_product(a: VectorRef<'_>, b: VectorRef<'_>) -> f64 {
    let (a, b) = same_dims(&a, &b);
    -vector::dot(a, b)
}

#[pg_extern(immutable, strict, parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_cosine_distance(a: VectorRef<'_>, b: VectorRef<'_>) -> f64 {
    let (a, b) = same_dims(&a, &b);
    vector::cosine_distance(a, b)
}

#[pg_extern(immutable, strict, parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_l2_distance(a: VectorRef<'_>, b: VectorRef<'_>) -> f64 {
    let (a, b) = same_dims(&a, &b);
    vector::l2_distance(a, b)
}

#[pg_extern(immutable, strict, parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_vector_add(a: VectorRef<'_>, b: VectorRef<'_>) -> Vector {
    let (a, b) = same_dims(&a, &b);
    Vector(vector::add(a, b).or_raise())
}

#[pg_extern(immutable, strict, parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_vector_sub(a: VectorRef<'_>, b: VectorRef<'_>) -> Vector {
    let (a, b) = same_dims(&a, &b);
    Vector(vector::sub(a, b).or_raise())
}

#[pg_extern(immutable, strict, parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_dims(v: VectorRef<'_>) -> i32 {
    v.as_slice().len() as i32
}

#[pg_extern(immutable, strict, parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_norm(v: VectorRef<'_>) -> f64 {
    vector::norm(v.as_slice())
}

#[pg_extern(immutable, strict, parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_vector_to_real_array(v: VectorRef<'_>) -> Vec<f32> {
    v.as_slice().to_vec()
}

/// Dimensions of the array passed as the first argument. `Array` flattens, so this reads
/// the array header itself.
fn first_arg_ndim(fcinfo: pg_sys::FunctionCallInfo) -> i32 {
    // SAFETY: called from a strict cast function whose first argument is a non-null array.
    unsafe {
        let datum = (*fcinfo).args.as_slice(1)[0].value;
        let array = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *const pg_sys::ArrayType;
        (*array).ndim
    }
}

/// Build a vector from array elements the way pgvector does: 1-D only, no NULLs, and a finite
/// value too large for float4 is out of range rather than infinite.
fn array_to_vector(
    fcinfo: pg_sys::FunctionCallInfo,
    elements: impl Iterator<Item = Option<f64>>,
    typmod: i32,
) -> Vector {
    if first_arg_ndim(fcinfo) > 1 {
        raise_vector(VectorError::ArrayNotOneDimensional);
    }
    let floats = elements
        .map(|x| {
            let x = x.unwrap_or_else(|| raise_vector(VectorError::ArrayHasNulls));
            let f = x as f32;
            if x.is_finite() && f.is_infinite() {
                raise_vector(VectorError::OutOfRange(format!("{x:e}")));
            }
            f
        })
        .collect();
    validated(floats, typmod)
}

#[pg_extern(immutable, strict, parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_vector_from_real_array(
    a: Array<'_, f32>,
    typmod: i32,
    _explicit: bool,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Vector {
    array_to_vector(fcinfo, a.iter().map(|x| x.map(f64::from)), typmod)
}

#[pg_extern(immutable, strict, parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_vector_from_double_array(
    a: Array<'_, f64>,
    typmod: i32,
    _explicit: bool,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Vector {
    array_to_vector(fcinfo, a.iter(), typmod)
}

#[pg_extern(immutable, strict, parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_vector_from_int_array(
    a: Array<'_, i32>,
    typmod: i32,
    _explicit: bool,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Vector {
    array_to_vector(fcinfo, a.iter().map(|x| x.map(f64::from)), typmod)
}

#[pg_extern(immutable, strict, parallel_safe, requires = ["airrep_vector_type"])]
fn airrep_vector_from_numeric_array(
    a: Array<'_, AnyNumeric>,
    typmod: i32,
    _explicit: bool,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Vector {
    // A numeric beyond float8's range cannot be a float4 either.
    let to_f64 =
        |n: AnyNumeric| f64::try_from(n).unwrap_or_else(|_| raise_vector(VectorError::Overflow));
    array_to_vector(fcinfo, a.iter().map(|x| x.map(to_f64)), typmod)
}

extension_sql!(
    r#"
CREATE OPERATOR <#> (LEFTARG = airrep_vector, RIGHTARG = airrep_vector,
    FUNCTION = airrep_negative_inner_product, COMMUTATOR = '<#>');
CREATE OPERATOR <=> (LEFTARG = airrep_vector, RIGHTARG = airrep_vector,
    FUNCTION = airrep_cosine_distance, COMMUTATOR = '<=>');
CREATE OPERATOR <-> (LEFTARG = airrep_vector, RIGHTARG = airrep_vector,
    FUNCTION = airrep_l2_distance, COMMUTATOR = '<->');
CREATE OPERATOR + (LEFTARG = airrep_vector, RIGHTARG = airrep_vector,
    FUNCTION = airrep_vector_add, COMMUTATOR = +);
CREATE OPERATOR - (LEFTARG = airrep_vector, RIGHTARG = airrep_vector,
    FUNCTION = airrep_vector_sub);

CREATE CAST (real[] AS airrep_vector)
    WITH FUNCTION airrep_vector_from_real_array(real[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (double precision[] AS airrep_vector)
    WITH FUNCTION airrep_vector_from_double_array(double precision[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (integer[] AS airrep_vector)
    WITH FUNCTION airrep_vector_from_int_array(integer[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (numeric[] AS airrep_vector)
    WITH FUNCTION airrep_vector_from_numeric_array(numeric[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (airrep_vector AS real[])
    WITH FUNCTION airrep_vector_to_real_array(airrep_vector) AS IMPLICIT;
"#,
    name = "airrep_vector_operators",
    requires = [
        influence,
        airrep_negative_inner_product,
        airrep_cosine_distance,
        airrep_l2_distance,
        airrep_vector_add,
        airrep_vector_sub,
        airrep_vector_to_real_array,
        airrep_vector_from_real_array,
        airrep_vector_from_double_array,
        airrep_vector_from_int_array,
        airrep_vector_from_numeric_array
    ]
);
