//! The `airrep_vector` type: a varlena laid out like pgvector's `vector`
//! (int32 varlena header, int16 dim, int16 unused, float4[dim]) so its binary wire format
//! and on-disk size match what pgvector users know.

use std::ffi::{CStr, CString};

use airrep_core::vector::{self, VectorError};
use airrep_core::wire;
use pgrx::datum::Internal;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum};

use crate::datum::{arg_from_datum, detoasted, return_into_datum};
use crate::error::{raise, sqlstate, OrRaise};

const HEADER_BYTES: usize = 8;

/// A detoasted `airrep_vector` argument, borrowed for the duration of the call.
pub struct VectorRef<'a>(&'a [f32]);

impl<'a> VectorRef<'a> {
    pub fn as_slice(&self) -> &'a [f32] {
        self.0
    }

    /// # Safety
    /// `datum` must be a non-null `airrep_vector` datum.
    pub(crate) unsafe fn from_raw(datum: pg_sys::Datum) -> Self {
        let varlena = detoasted(datum);
        let base = varlena as *const u8;
        let dim = (base.add(4) as *const i16).read() as usize;
        debug_assert_eq!(pgrx::varsize_any(varlena), HEADER_BYTES + 4 * dim);
        VectorRef(std::slice::from_raw_parts(
            base.add(HEADER_BYTES) as *const f32,
            dim,
        ))
    }
}

impl FromDatum for VectorRef<'_> {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then(|| Self::from_raw(datum))
    }
}

arg_from_datum!(VectorRef<'fcx>);

/// An `airrep_vector` result, built in Rust and copied into a palloc'd varlena on return.
pub struct Vector(pub Vec<f32>);

impl IntoDatum for Vector {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let size = HEADER_BYTES + 4 * self.0.len();
        // SAFETY: palloc never returns null (it raises on OOM); we write exactly `size` bytes.
        unsafe {
            let base = pg_sys::palloc0(size) as *mut u8;
            pgrx::set_varsize_4b(base as *mut pg_sys::varlena, size as i32);
            (base.add(4) as *mut i16).write(self.0.len() as i16);
            std::ptr::copy_nonoverlapping(
                self.0.as_ptr(),
                base.add(HEADER_BYTES) as *mut f32,
                self.0.len(),
            );
            Some(pg_sys::Datum::from(base))
        }
    }

    fn type_oid() -> pg_sys::Oid {
        type_oid()
    }
}

return_into_datum!(Vector);

/// The oid of `airrep_vector` in this database: the type of that name in the extension's
/// own schema, never one the search_path finds first (a user's `airrep_vector` domain must
/// not pass for it, and the schema need not be on the path). Cached per backend for the
/// extension's oid, which a DROP and CREATE EXTENSION changes.
pub fn type_oid() -> pg_sys::Oid {
    thread_local! {
        static CACHED: std::cell::Cell<Option<(pg_sys::Oid, pg_sys::Oid)>> = const { std::cell::Cell::new(None) };
    }
    // SAFETY: a catalog lookup on the backend's thread; errors if the extension is missing.
    let extension = unsafe { pg_sys::get_extension_oid(c"airrep".as_ptr(), false) };
    if let Some((ext, oid)) = CACHED.get() {
        if ext == extension {
            return oid;
        }
    }
    let oid = Spi::connect(|client| {
        client
            .select(
                "SELECT t.oid FROM pg_catalog.pg_type t JOIN pg_catalog.pg_extension e
                     ON e.extnamespace OPERATOR(pg_catalog.=) t.typnamespace
                 WHERE e.oid OPERATOR(pg_catalog.=) $1
                   AND t.typname OPERATOR(pg_catalog.=) 'airrep_vector'::pg_catalog.name",
                Some(1),
                &[extension.into()],
            )?
            .first()
            .get_one::<pg_sys::Oid>()
    })
    .ok()
    .flatten()
    .unwrap_or_else(|| {
        raise(
            sqlstate::INTERNAL_ERROR,
            "type airrep_vector is missing from the extension's schema",
        )
    });
    CACHED.set(Some((extension, oid)));
    oid
}

pgrx::pgrx_sql_entity_graph::impl_sql_translatable!(VectorRef<'_>, "airrep_vector");
pgrx::pgrx_sql_entity_graph::impl_sql_translatable!(Vector, "airrep_vector");

/// Check a value against a column's declared `airrep_vector(n)`; -1 means no typmod.
pub fn enforce_typmod(v: &[f32], typmod: i32) {
    if typmod >= 0 {
        vector::check_typmod(typmod as usize, v.len()).or_raise();
    }
}

/// Check every element and the dimension count of a vector built from outside input.
pub fn validated(v: Vec<f32>, typmod: i32) -> Vector {
    vector::check_dims(v.len()).or_raise();
    for &x in &v {
        vector::check_element(x).or_raise();
    }
    enforce_typmod(&v, typmod);
    Vector(v)
}

#[pg_extern(immutable, strict, parallel_safe)]
fn airrep_vector_in(input: &CStr, _typoid: pg_sys::Oid, typmod: i32) -> Vector {
    let text = input.to_str().unwrap_or_else(|_| {
        raise(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            &VectorError::InvalidSyntax(input.to_string_lossy().into_owned()).to_string(),
        )
    });
    let v = vector::parse(text).or_raise();
    enforce_typmod(&v, typmod);
    Vector(v)
}

#[pg_extern(immutable, strict, parallel_safe)]
fn airrep_vector_out(v: VectorRef<'_>) -> CString {
    CString::new(vector::format(v.as_slice())).expect("formatted numbers contain no NUL")
}

#[pg_extern(immutable, strict, parallel_safe)]
fn airrep_vector_typmod_in(modifiers: Array<&CStr>) -> i32 {
    if modifiers.len() != 1 {
        raise(sqlstate::INVALID_PARAMETER_VALUE, "invalid type modifier");
    }
    let text = modifiers
        .get(0)
        .flatten()
        .map(|m| m.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dims: i64 = text.trim().parse().unwrap_or_else(|_| {
        raise(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            "invalid type modifier",
        )
    });
    if dims < 1 {
        raise(
            sqlstate::INVALID_PARAMETER_VALUE,
            &VectorError::TypmodTooSmall.to_string(),
        );
    }
    if dims > vector::MAX_DIM as i64 {
        raise(
            sqlstate::INVALID_PARAMETER_VALUE,
            &VectorError::TypmodTooLarge.to_string(),
        );
    }
    dims as i32
}

#[pg_extern(immutable, strict, parallel_safe)]
fn airrep_vector_typmod_out(typmod: i32) -> CString {
    let text = if typmod < 0 {
        String::new()
    } else {
        format!("({typmod})")
    };
    CString::new(text).expect("digits contain no NUL")
}

/// Binary input in pgvector's wire format (`airrep_core::wire`).
#[pg_extern(immutable, strict, parallel_safe)]
fn airrep_vector_recv(buffer: Internal, _typoid: pg_sys::Oid, typmod: i32) -> Vector {
    // SAFETY: Postgres passes a StringInfo as the first argument of a receive function.
    let buf = unsafe {
        &mut *buffer
            .unwrap()
            .expect("recv buffer")
            .cast_mut_ptr::<pg_sys::StringInfoData>()
    };
    let bytes = unsafe { std::slice::from_raw_parts(buf.data as *const u8, buf.len as usize) };
    let (values, used) = wire::from_wire(&bytes[buf.cursor as usize..])
        .unwrap_or_else(|e| raise(e.sqlstate(), &e.to_string()));
    buf.cursor += used as i32;
    enforce_typmod(&values, typmod);
    Vector(values)
}

#[pg_extern(immutable, strict, parallel_safe)]
fn airrep_vector_send(v: VectorRef<'_>) -> Vec<u8> {
    wire::to_wire(v.as_slice())
}

/// The length-coercion cast Postgres applies when a value is stored into `airrep_vector(n)`.
#[pg_extern(immutable, strict, parallel_safe, name = "airrep_vector")]
fn airrep_vector_typmod_cast(v: VectorRef<'_>, typmod: i32, _explicit: bool) -> Vector {
    enforce_typmod(v.as_slice(), typmod);
    Vector(v.as_slice().to_vec())
}

extension_sql!(
    r#"
CREATE TYPE airrep_vector (
    INPUT     = airrep_vector_in,
    OUTPUT    = airrep_vector_out,
    TYPMOD_IN = airrep_vector_typmod_in,
    TYPMOD_OUT = airrep_vector_typmod_out,
    RECEIVE   = airrep_vector_recv,
    SEND      = airrep_vector_send,
    STORAGE   = external
);
CREATE CAST (airrep_vector AS airrep_vector)
    WITH FUNCTION airrep_vector(airrep_vector, integer, boolean) AS IMPLICIT;
"#,
    name = "airrep_vector_type",
    requires = [
        airrep_vector_in,
        airrep_vector_out,
        airrep_vector_typmod_in,
        airrep_vector_typmod_out,
        airrep_vector_recv,
        airrep_vector_send,
        airrep_vector_typmod_cast
    ]
);
