//! What the extension's pass-by-reference values (`airrep_vector`, the aggregates' `bytea`
//! states) share at the C boundary: a varlena read where it lies when it is plain, and
//! pgrx's argument and return ABI for a type that already converts from and into a datum.

use pgrx::pg_sys;

/// `datum`'s varlena, detoasted only when it must be: a plain value with a 4-byte header (how
/// a heap tuple holds an uncompressed vector) is read where it lies, without a call into
/// the backend, which pgrx guards with a `sigsetjmp`. Hot paths run this once per row.
///
/// # Safety
/// `datum` must be a non-null varlena datum.
pub(crate) unsafe fn detoasted(datum: pg_sys::Datum) -> *mut pg_sys::varlena {
    let varlena = datum.cast_mut_ptr::<pg_sys::varlena>();
    if pgrx::varatt_is_4b_u(varlena) {
        varlena
    } else {
        pg_sys::pg_detoast_datum(varlena)
    }
}

/// pgrx's argument ABI for a `FromDatum` type (SQL NULL only through `Option`).
macro_rules! arg_from_datum {
    ($t:ty) => {
        unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for $t {
            unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
                let index = arg.index();
                arg.unbox_arg_using_from_datum()
                    .unwrap_or_else(|| panic!("argument {index} must not be null"))
            }

            unsafe fn unbox_nullable_arg(
                arg: pgrx::callconv::Arg<'_, 'fcx>,
            ) -> pgrx::nullable::Nullable<Self> {
                arg.unbox_arg_using_from_datum().into()
            }
        }
    };
}

/// pgrx's return ABI for an `IntoDatum` type.
macro_rules! return_into_datum {
    ($t:ty) => {
        unsafe impl pgrx::callconv::BoxRet for $t {
            unsafe fn box_into<'fcx>(
                self,
                fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
            ) -> pgrx::datum::Datum<'fcx> {
                match pgrx::IntoDatum::into_datum(self) {
                    Some(datum) => fcinfo.return_raw_datum(datum),
                    None => fcinfo.return_null(),
                }
            }
        }
    };
}

pub(crate) use {arg_from_datum, return_into_datum};
