//! Aggregate-state plumbing shared by the aggregates.
//!
//! The combinable aggregates (`group_influence`, `sum` and `avg` of vectors) keep their
//! state in a `bytea`, the byte form of a core state (`airrep_core::state`). A real type,
//! not `internal`, is what lets Citus push them down to its workers (it ships the partial
//! states between nodes through the type's text form, which for `bytea` round-trips
//! exactly), and parallel workers hand them over as they are. The transition function
//! updates the bytes in place, as Postgres allows in aggregate context, so a row costs no
//! allocation and no copy of the state.
//!
//! `airrep.spearman` keeps an `internal` state: it must hold every pair to rank them, so a
//! pushed-down partial state would carry the rows anyway.

use airrep_core::state::StateError;
use pgrx::datum::Internal;
use pgrx::pg_sys;
use pgrx::{FromDatum, IntoDatum, PgMemoryContexts};

use crate::datum::{arg_from_datum, detoasted, return_into_datum};
use crate::error::{raise, sqlstate};

/// A partial aggregate that can be shipped between processes and merged.
pub trait PartialState: Sized + Clone {
    fn to_bytes(&self) -> Vec<u8>;
    fn from_bytes(bytes: &[u8]) -> Result<Self, String>;
    fn merge(&mut self, other: &Self);
}

fn aggregate_context(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::MemoryContext {
    let mut context = std::ptr::null_mut();
    // SAFETY: fcinfo is the live call's FunctionCallInfo; Postgres only reads it.
    if unsafe { pg_sys::AggCheckCallContext(fcinfo, &mut context) } == 0 {
        not_an_aggregate();
    }
    context
}

fn not_an_aggregate() -> ! {
    raise(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "aggregate function called in non-aggregate context",
    )
}

/// A detoasted `bytea` transition value.
pub struct StateBytes(*mut pg_sys::varlena);

impl StateBytes {
    /// # Safety
    /// `datum` must be a non-null `bytea` datum.
    pub unsafe fn from_raw(datum: pg_sys::Datum) -> Self {
        StateBytes(detoasted(datum))
    }

    pub fn into_raw(self) -> pg_sys::Datum {
        pg_sys::Datum::from(self.0)
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: a detoasted varlena with a 4-byte header (see `from_raw`).
        unsafe {
            std::slice::from_raw_parts(
                pgrx::vardata_any(self.0) as *const u8,
                pgrx::varsize_any_exhdr(self.0),
            )
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; only `step_state` hands this out, in aggregate context,
        // where the value is the aggregate's own.
        unsafe {
            std::slice::from_raw_parts_mut(
                pgrx::vardata_any(self.0) as *mut u8,
                pgrx::varsize_any_exhdr(self.0),
            )
        }
    }

    /// The state decoded, or a clear error for bytes that are no such state (the support
    /// functions can be called with any `bytea`).
    pub fn decode<T: PartialState>(&self) -> T {
        T::from_bytes(self.bytes()).unwrap_or_else(|message| invalid_state(&message))
    }
}

fn invalid_state(message: &str) -> ! {
    raise(
        sqlstate::INVALID_BINARY_REPRESENTATION,
        &format!("invalid partial aggregate state: {message}"),
    )
}

impl FromDatum for StateBytes {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        // Detoasting returns the value itself when it is plain, else a fresh copy: either
        // may be updated in place and returned.
        (!is_null).then(|| Self::from_raw(datum))
    }
}

arg_from_datum!(StateBytes);

impl IntoDatum for StateBytes {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.into_raw())
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::BYTEAOID
    }
}

return_into_datum!(StateBytes);

pgrx::pgrx_sql_entity_graph::impl_sql_translatable!(StateBytes, "bytea");

/// A transition function's state for this row, to update in place with `update`: `state`
/// as it came or, on a group's first row, `init()`'s bytes in the aggregate's context.
/// Bytes of another layout fail `update` with a clear error (`update` checks them, in time
/// that does not grow with the state, before it writes).
pub fn step_state(
    fcinfo: pg_sys::FunctionCallInfo,
    state: Option<StateBytes>,
    init: impl FnOnce() -> Vec<u8>,
    update: impl FnOnce(&mut [u8]) -> Result<(), StateError>,
) -> StateBytes {
    // SAFETY: fcinfo is the live call's.
    if !unsafe { called_as_aggregate(fcinfo) } {
        not_an_aggregate();
    }
    // A group's first state is made in the current (per-row) context: Postgres copies a
    // new transition value into the aggregate's context itself, so allocating it there
    // too would leave one orphan copy per group (a hash aggregate keeps those until the
    // end of the query).
    let mut state = state.unwrap_or_else(|| allocate(&init()));
    if let Err(e) = update(state.bytes_mut()) {
        invalid_state(&e.to_string());
    }
    state
}

/// `bytes` as a new `bytea` in the current memory context.
fn allocate(bytes: &[u8]) -> StateBytes {
    let size = pg_sys::VARHDRSZ + bytes.len();
    // SAFETY: palloc raises rather than return null; we write `size` bytes.
    unsafe {
        let varlena = pg_sys::palloc(size) as *mut pg_sys::varlena;
        pgrx::set_varsize_4b(varlena, size as i32);
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            pgrx::vardata_4b(varlena) as *mut u8,
            bytes.len(),
        );
        StateBytes(varlena)
    }
}

/// Whether the call comes from an aggregate or a window aggregate, as AggCheckCallContext
/// decides, read from `fcinfo` without a (guarded) call into the backend: a transition
/// function asks once per row, before it updates its state in place.
///
/// # Safety
/// `fcinfo` must be the live call's.
unsafe fn called_as_aggregate(fcinfo: pg_sys::FunctionCallInfo) -> bool {
    let context = (*fcinfo).context;
    !context.is_null()
        && matches!(
            (*context).type_,
            pg_sys::NodeTag::T_AggState | pg_sys::NodeTag::T_WindowAggState
        )
}

/// Merge two `bytea` partial states; Postgres calls a combine function non-strict, so
/// either may be null.
pub fn combine_bytes<T: PartialState>(
    left: Option<StateBytes>,
    right: Option<StateBytes>,
) -> Option<Vec<u8>> {
    match (left, right) {
        (None, None) => None,
        (Some(one), None) | (None, Some(one)) => Some(one.decode::<T>().to_bytes()),
        (Some(left), Some(right)) => {
            let mut merged = left.decode::<T>();
            merged.merge(&right.decode::<T>());
            Some(merged.to_bytes())
        }
    }
}

/// The state behind `internal`, created by `init` in the aggregate's context on first use.
/// Later rows go straight to the state: this runs once per input row.
pub fn state_mut<T>(
    fcinfo: pg_sys::FunctionCallInfo,
    internal: &mut Internal,
    init: impl FnOnce() -> T,
) -> &mut T {
    if !internal.initialized() {
        let context = aggregate_context(fcinfo);
        // SAFETY: switching to a live context and back; the value is dropped with it.
        unsafe { PgMemoryContexts::For(context).switch_to(|_| internal.insert(init())) };
    }
    // SAFETY: every Internal handed to our aggregate functions holds a `T` made here.
    unsafe { internal.get_mut::<T>() }.expect("initialised above")
}

/// The state behind `internal`, if any row reached the aggregate.
pub fn state_ref<T>(internal: &Internal) -> Option<&T> {
    // SAFETY: as in `state_mut`.
    unsafe { internal.get::<T>() }
}

pub fn serialize<T: PartialState>(internal: Internal) -> Vec<u8> {
    state_ref::<T>(&internal)
        .expect("serialfunc is strict")
        .to_bytes()
}

pub fn deserialize<T: PartialState>(bytes: &[u8]) -> Internal {
    match T::from_bytes(bytes) {
        Ok(state) => Internal::new(state),
        Err(message) => raise(
            sqlstate::PROTOCOL_VIOLATION,
            &format!("invalid partial aggregate state: {message}"),
        ),
    }
}

/// Combine two partial states; Postgres calls this non-strict, so either may be empty.
pub fn combine<T: PartialState>(
    fcinfo: pg_sys::FunctionCallInfo,
    mut left: Internal,
    right: Internal,
) -> Internal {
    let Some(right) = state_ref::<T>(&right) else {
        return left;
    };
    // SAFETY: as in `state_mut`.
    match unsafe { left.get_mut::<T>() } {
        Some(left_state) => left_state.merge(right),
        None => {
            state_mut(fcinfo, &mut left, || right.clone());
        }
    }
    left
}
