//! The background embedding worker, with `shared_preload_libraries = 'airrep'`.
//!
//! A launcher (one static background worker, connected to no database) starts one worker per
//! database: for every connectable database when it starts (a worker that finds no jobs
//! exits at once), and whenever a backend asks for one. Each database worker runs one batch
//! per job in turn (`airrep.embed_job_batch`, each batch its own transaction, as the job's
//! owner) until nothing is pending, then sleeps on its latch until a commit that left work
//! wakes it (the trigger and `keep_embedded` ask for that, [`wake_at_commit`]) or
//! `airrep.worker_naptime` passes. SIGTERM ends it between batches; a batch cut short by a
//! crash rolls back and its rows stay NULL, so nothing is lost or embedded twice.
//!
//! Shared memory holds the launcher's pid and a slot per database: its worker's pid (0: asked
//! for, -1: starting) and a count of wake-ups, so a worker that found no jobs exits only if
//! no wake-up came meanwhile. A worker that ends for any other reason (SIGTERM, an error)
//! hands its slot back as asked for, and the launcher starts another (at most one start per
//! database per [`RESTART`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::lwlock::PgLwLock;
use pgrx::pg_shmem_init;
use pgrx::prelude::*;

use crate::gucs;

/// Databases served at once; beyond them, jobs wait for `CALL airrep.embed_pending()`.
const DATABASES: usize = 64;
/// The least time between two starts of one database's worker.
const RESTART: Duration = Duration::from_secs(5);

/// (database oid, worker pid: > 0 running, 0 asked for, -1 starting; wake-ups)
type Slot = (u32, i32, u32);
const FREE: Slot = (0, 0, 0);
const ASKED: i32 = 0;
const STARTING: i32 = -1;

/// The launcher's pid and the database slots.
static WORKERS: PgLwLock<(i32, [Slot; DATABASES])> =
    unsafe { PgLwLock::new(c"airrep_embedding_workers") };
/// Set in the postmaster while it preloads the library; forked backends inherit it.
static PRELOADED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static WAKE_AT_COMMIT: Cell<bool> = const { Cell::new(false) };
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// From `_PG_init` while the postmaster preloads the library: the shared slots and the
/// launcher.
pub fn register() {
    pg_shmem_init!(WORKERS = (0, [FREE; DATABASES]));
    PRELOADED.store(true, Ordering::Relaxed);
    BackgroundWorkerBuilder::new("airrep embedding launcher")
        .set_type("airrep embedding launcher")
        .set_library("airrep")
        .set_function("airrep_embedding_launcher_main")
        .enable_spi_access()
        .set_restart_time(Some(RESTART))
        .load();
}

fn my_database() -> u32 {
    // SAFETY: a plain read of the backend's global.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

fn my_pid() -> i32 {
    // SAFETY: as above.
    unsafe { pg_sys::MyProcPid }
}

/// Set the latch of the backend with this pid, if it still runs.
fn set_latch(pid: i32) {
    if pid <= 0 {
        return;
    }
    // SAFETY: BackendPidGetProc takes ProcArrayLock itself; a latch in PGPROC may be set by
    // any process.
    unsafe {
        let process = pg_sys::BackendPidGetProc(pid);
        if !process.is_null() {
            pg_sys::SetLatch(&raw mut (*process).procLatch);
        }
    }
}

/// Wake this database's worker, or ask the launcher to start one.
fn wake(database: u32) {
    let to_signal = {
        let mut shared = WORKERS.exclusive();
        let launcher = shared.0;
        let slots = &mut shared.1;
        if let Some(slot) = slots.iter_mut().find(|s| s.0 == database) {
            slot.2 = slot.2.wrapping_add(1);
            slot.1
        } else if let Some(free) = slots.iter_mut().find(|s| s.0 == 0) {
            *free = (database, ASKED, 1);
            launcher
        } else {
            0
        }
    };
    set_latch(to_signal);
}

/// Wake this database's worker when the current transaction commits (its rows are visible
/// then); nothing without the preloaded library or on abort.
pub fn wake_at_commit() {
    if !PRELOADED.load(Ordering::Relaxed) {
        return;
    }
    if !CALLBACK_REGISTERED.replace(true) {
        // SAFETY: registered once per backend, for its lifetime.
        unsafe { pg_sys::RegisterXactCallback(Some(at_transaction_end), std::ptr::null_mut()) };
    }
    WAKE_AT_COMMIT.set(true);
}

#[pg_guard]
unsafe extern "C-unwind" fn at_transaction_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT if WAKE_AT_COMMIT.replace(false) => {
            wake(my_database())
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT => WAKE_AT_COMMIT.set(false),
        _ => {}
    }
}

/// The pid of this database's worker, if one runs.
pub fn worker_pid() -> Option<i32> {
    if !PRELOADED.load(Ordering::Relaxed) {
        return None;
    }
    let database = my_database();
    let shared = WORKERS.share();
    shared
        .1
        .iter()
        .find(|s| s.0 == database && s.1 > 0)
        .map(|s| s.1)
}

/// The databases a worker may connect to, read from the shared catalog (the launcher has no
/// database, so no SPI).
fn connectable_databases() -> Vec<u32> {
    BackgroundWorker::transaction(|| {
        let mut found = Vec::new();
        // SAFETY: a catalog heap scan inside a transaction, as autovacuum's launcher does.
        unsafe {
            let relation = pg_sys::table_open(
                pg_sys::DatabaseRelationId,
                pg_sys::AccessShareLock as pg_sys::LOCKMODE,
            );
            let scan = pg_sys::table_beginscan_catalog(relation, 0, std::ptr::null_mut());
            loop {
                let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
                if tuple.is_null() {
                    break;
                }
                let database = &*(pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_database);
                if database.datallowconn && !database.datistemplate {
                    found.push(database.oid.to_u32());
                }
            }
            pg_sys::table_endscan(scan);
            pg_sys::table_close(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        }
        found
    })
}

/// The launcher: starts the asked-for database workers, then sleeps until asked again.
///
/// # Safety
/// Called by the postmaster as a background worker's entry point.
#[no_mangle]
#[pg_guard]
pub extern "C-unwind" fn airrep_embedding_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    let databases = connectable_databases();
    {
        let mut shared = WORKERS.exclusive();
        shared.0 = my_pid();
        // Resume every database's jobs after a (re)start.
        for database in databases {
            if shared.1.iter().any(|s| s.0 == database) {
                continue;
            }
            if let Some(free) = shared.1.iter_mut().find(|s| s.0 == 0) {
                *free = (database, ASKED, 0);
            }
        }
    }
    let mut started: HashMap<u32, Instant> = HashMap::new();
    loop {
        let next_try = start_asked_workers(&mut started);
        if !BackgroundWorker::wait_latch(next_try) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: the standard reload on the worker's own thread.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
    }
    WORKERS.exclusive().0 = 0;
    // Exit code 1: the postmaster starts the launcher again after RESTART (unless it is
    // shutting down); 0 would unregister it until the server restarts.
    // SAFETY: ends this process, as returning would.
    unsafe { pg_sys::proc_exit(1) };
}

/// Start a worker for each asked-for database not started within [`RESTART`]; how long
/// until one that had to wait may start.
fn start_asked_workers(started: &mut HashMap<u32, Instant>) -> Option<Duration> {
    let mut wait = None::<Duration>;
    let due: Vec<u32> = {
        let mut shared = WORKERS.exclusive();
        shared
            .1
            .iter_mut()
            .filter(|s| s.0 != 0 && s.1 == ASKED)
            .filter_map(|slot| {
                let since = started.get(&slot.0).map(Instant::elapsed);
                match since {
                    Some(since) if since < RESTART => {
                        let left = RESTART - since;
                        wait = Some(wait.map_or(left, |w| w.min(left)));
                        None
                    }
                    _ => {
                        slot.1 = STARTING;
                        Some(slot.0)
                    }
                }
            })
            .collect()
    };
    for database in due {
        started.insert(database, Instant::now());
        let loaded = BackgroundWorkerBuilder::new(&format!(
            "airrep embedding worker for database {database}"
        ))
        .set_type("airrep embedding worker")
        .set_library("airrep")
        .set_function("airrep_embedding_worker_main")
        .enable_spi_access()
        .set_argument(Some(pg_sys::Datum::from(database)))
        .load_dynamic();
        if loaded.is_err() {
            log!("airrep: could not start an embedding worker for database {database} (max_worker_processes?); its jobs wait for CALL airrep.embed_pending()");
            release(database, STARTING);
        }
    }
    wait
}

/// Free the database's slot if its worker is `pid`.
fn release(database: u32, pid: i32) {
    let mut shared = WORKERS.exclusive();
    if let Some(slot) = shared.1.iter_mut().find(|s| s.0 == database && s.1 == pid) {
        *slot = FREE;
    }
}

/// Take the database's slot for this process; false if another worker serves it.
fn claim(database: u32) -> bool {
    let mut shared = WORKERS.exclusive();
    let slots = &mut shared.1;
    match slots.iter_mut().find(|s| s.0 == database) {
        Some(slot) if slot.1 > 0 => false,
        Some(slot) => {
            slot.1 = my_pid();
            true
        }
        None => match slots.iter_mut().find(|s| s.0 == 0) {
            Some(free) => {
                *free = (database, my_pid(), 0);
                true
            }
            None => false,
        },
    }
}

/// At exit other than "no jobs": hand the slot back as asked for, so the launcher starts
/// another worker.
#[pg_guard]
unsafe extern "C-unwind" fn ask_for_successor(_code: i32, arg: pg_sys::Datum) {
    let database = arg.value() as u32;
    let launcher = {
        let mut shared = WORKERS.exclusive();
        let me = my_pid();
        match shared.1.iter_mut().find(|s| s.0 == database && s.1 == me) {
            Some(slot) => {
                slot.1 = ASKED;
                shared.0
            }
            None => 0,
        }
    };
    set_latch(launcher);
}

fn wakes(database: u32) -> u32 {
    let shared = WORKERS.share();
    shared.1.iter().find(|s| s.0 == database).map_or(0, |s| s.2)
}

/// Leave if no wake-up came since `seen`: free the slot (the exit hook then finds none).
fn leave_unless_woken(database: u32, seen: u32) -> bool {
    let mut shared = WORKERS.exclusive();
    let me = my_pid();
    match shared.1.iter_mut().find(|s| s.0 == database && s.1 == me) {
        Some(slot) if slot.2 == seen => {
            *slot = FREE;
            true
        }
        Some(_) => false,
        None => true,
    }
}

fn shutdown_requested() -> bool {
    // SAFETY: a volatile read of the flag pgrx's SIGTERM handler sets.
    unsafe { std::ptr::read_volatile(&raw const pg_sys::ShutdownRequestPending) != 0 }
}

/// What one pass over a database's jobs found.
enum Round {
    /// No job table (airrep not installed, or older) or no jobs.
    NoJobs,
    Idle,
    Worked,
}

/// One database's worker.
///
/// # Safety
/// Called by the postmaster as a background worker's entry point.
#[no_mangle]
#[pg_guard]
pub extern "C-unwind" fn airrep_embedding_worker_main(arg: pg_sys::Datum) {
    let database = arg.value() as u32;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(database)), None);
    if !claim(database) {
        return;
    }
    // SAFETY: registers a callback that runs at this process's exit.
    unsafe { pg_sys::before_shmem_exit(Some(ask_for_successor), pg_sys::Datum::from(database)) };
    BackgroundWorker::transaction(|| {
        // Batches set their own search_path; this one is for the job listing.
        Spi::run("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)")
    })
    .unwrap_or_else(|e| error!("airrep embedding worker: {e}"));
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the standard reload on the worker's own thread.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let seen = wakes(database);
        match run_round() {
            Round::NoJobs if leave_unless_woken(database, seen) => return,
            Round::Worked if !shutdown_requested() => continue,
            _ => {}
        }
        let naptime = Duration::from_secs(gucs::WORKER_NAPTIME.get().max(1) as u64);
        if !BackgroundWorker::wait_latch(Some(naptime)) {
            return;
        }
    }
}

/// One batch of each job, each in its own transaction as the job's owner.
fn run_round() -> Round {
    let jobs: Option<Vec<(i64, pg_sys::Oid)>> = BackgroundWorker::transaction(|| {
        let installed =
            Spi::get_one::<bool>("SELECT to_regclass('airrep.embedding_jobs') IS NOT NULL")
                .ok()
                .flatten()
                .unwrap_or(false);
        installed.then(|| {
            Spi::connect(|client| {
                client
                    .select(
                        // A job whose owner was dropped has no one to run as: left alone.
                        "SELECT j.id, j.owner::oid FROM airrep.embedding_jobs j
                         WHERE EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = j.owner::oid)
                         ORDER BY j.id",
                        None,
                        &[],
                    )
                    .map(|rows| {
                        rows.filter_map(|row| {
                            Some((row.get::<i64>(1).ok()??, row.get::<pg_sys::Oid>(2).ok()??))
                        })
                        .collect()
                    })
            })
            .unwrap_or_else(|e| error!("airrep embedding worker: {e}"))
        })
    });
    let Some(jobs) = jobs.filter(|jobs| !jobs.is_empty()) else {
        return Round::NoJobs;
    };
    let batch_rows = gucs::WORKER_BATCH_SIZE.get();
    let mut worked = false;
    for (job, owner) in jobs {
        if shutdown_requested() {
            break;
        }
        let done = BackgroundWorker::transaction(move || {
            as_role(owner, || {
                Spi::connect_mut(|client| {
                    let rows = client.update(
                        "SELECT embedded + failed FROM airrep.embed_job_batch($1, $2)",
                        Some(1),
                        &[job.into(), batch_rows.into()],
                    )?;
                    rows.first().get_one::<i64>()
                })
            })
        })
        .unwrap_or_else(|e| error!("airrep embedding worker: {e}"));
        worked |= done.unwrap_or(0) > 0;
    }
    if worked {
        Round::Worked
    } else {
        Round::Idle
    }
}

/// Run `work` as `role`, as a SECURITY DEFINER function would: its privileges, grants and
/// row-level security apply. An error restores the identity with the transaction's abort.
fn as_role<T>(role: pg_sys::Oid, work: impl FnOnce() -> T) -> T {
    let (mut user, mut context) = (pg_sys::Oid::INVALID, 0);
    // SAFETY: plain calls into the backend on its own thread.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(role, context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
    }
    let result = work();
    // SAFETY: as above; restores what was saved.
    unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
    result
}
