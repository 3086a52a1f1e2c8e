//! The backend's compute runtime: its rayon pool (bounded by `airrep.threads`), and the
//! device and precision that `airrep.device` and `airrep.precision` name. Everything that
//! computes (encoding, training, search) takes its threads and device from here; nothing
//! here reads the model registry.

use std::cell::RefCell;
use std::rc::Rc;

use airrep_model::{DeviceSpec, Precision};
use pgrx::pg_sys;

use crate::error::{raise, raise_model, sqlstate, OrRaise};
use crate::gucs;

thread_local! {
    static POOL: RefCell<Option<(usize, Rc<rayon::ThreadPool>)>> = const { RefCell::new(None) };
}

/// The backend's compute pool, created on first use and rebuilt if its size
/// ([`gucs::threads`]) changed.
pub fn thread_pool() -> Rc<rayon::ThreadPool> {
    let threads = gucs::threads();
    POOL.with_borrow_mut(|pool| match pool {
        Some((n, pool)) if *n == threads => pool.clone(),
        _ => {
            let built = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("airrep-{i}"))
                .build()
                .unwrap_or_else(|e| {
                    raise(
                        sqlstate::INSUFFICIENT_RESOURCES,
                        &format!("could not start {threads} threads: {e}"),
                    )
                });
            let built = Rc::new(built);
            *pool = Some((threads, built.clone()));
            built
        }
    })
}

/// The device named by `airrep.device`.
pub fn device() -> DeviceSpec {
    let spec = gucs::device().parse::<DeviceSpec>().or_raise();
    // A build without CUDA says so before a model's weights are read for it.
    spec.check_built().or_raise();
    spec
}

/// The precision named by `airrep.precision`; None for `auto`.
pub fn precision() -> Option<Precision> {
    match gucs::precision().trim() {
        p if p.eq_ignore_ascii_case("auto") => None,
        p => Some(p.parse().unwrap_or_else(|e: airrep_model::Error| {
            raise_model(e, |e| format!("airrep.precision: {e} (or auto)"))
        })),
    }
}

/// Whether a cancel (pg_cancel_backend, statement_timeout) or terminate is pending. Only these
/// flags: InterruptPending is also set by requests that do not end the query. Reading them is
/// safe from any thread; acting on them happens on the backend's own thread.
pub fn cancel_requested() -> bool {
    // SAFETY: volatile reads of two flags the signal handlers set.
    unsafe {
        std::ptr::read_volatile(&raw const pg_sys::QueryCancelPending) != 0
            || std::ptr::read_volatile(&raw const pg_sys::ProcDiePending) != 0
    }
}
