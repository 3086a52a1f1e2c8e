//! Internal-state plumbing shared by the aggregates: state lives in the aggregate's memory
//! context (dropped with it), and serialises to bytea so parallel workers (or a distributed
//! Postgres) can ship partial states to be combined.

use pgrx::datum::Internal;
use pgrx::pg_sys;
use pgrx::PgMemoryContexts;

use crate::error::raise;

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
        raise(
            "0A000",
            "aggregate function called in non-aggregate context",
        );
    }
    context
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
            "08P01",
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
