//! Settings a DBA tunes per backend (`SET airrep.threads = 4`) or per cluster.
//!
//! The settings that cost the server (threads, batch size, cached models) are capped by
//! ceilings only a superuser sets (`airrep.max_*`, in postgresql.conf or ALTER SYSTEM):
//! any role may lower its own, none may take more than the ceiling. Read them through
//! [`threads`], [`batch_size`], [`model_cache_size`] and [`model_cache_bytes`], never raw.

use std::ffi::CString;

use airrep_core::simd::{self, Tier};
use pgrx::{pg_sys, GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};

/// CPU threads one backend may use for encoding and training.
pub static THREADS: GucSetting<i32> = GucSetting::<i32>::new(2);
/// Longest token sequence fed to the encoder; longer texts are truncated on the right.
pub static MAX_LENGTH: GucSetting<i32> = GucSetting::<i32>::new(512);
/// How many models a backend keeps loaded.
pub static MODEL_CACHE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(2);
/// Texts per forward pass when encoding arrays.
pub static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(32);
/// Ceilings (superuser only). `airrep.max_threads` 0 means the number of CPUs.
pub static MAX_THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static MAX_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(256);
pub static MAX_MODEL_CACHE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(4);
/// Total weights a backend keeps cached, in MB.
pub static MODEL_CACHE_MB: GucSetting<i32> = GucSetting::<i32>::new(2048);
/// Vector bytes, in MB, of one block that the search and cleaning functions read at a time
/// (superuser only): their memory is a few copies of a block, whatever the row count.
pub static MAX_BLOCK_MB: GucSetting<i32> = GucSetting::<i32>::new(64);
/// `cpu`, or `cuda` / `cuda:N` in a build with the `cuda` feature.
pub static DEVICE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"cpu"));
/// Whether CPU encoding may use AMX tile units: f32 from split bf16 products (~1e-5
/// relative), and bf16 (`airrep.precision = bf16`) on the tiles instead of candle's ops.
pub static AMX: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `auto` (bf16 mixed precision on a GPU, f32 on the CPU), `f32` or `bf16`, for encoding.
pub static PRECISION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"auto"));
/// The SIMD tier of the CPU kernels (`airrep_core::simd`): `auto` is the best the CPU has.
pub static SIMD: GucSetting<SimdSetting> = GucSetting::<SimdSetting>::new(SimdSetting::Auto);

/// The values of `airrep.simd`.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum SimdSetting {
    #[name = c"auto"]
    Auto,
    #[name = c"avx512"]
    Avx512,
    #[name = c"avx2"]
    Avx2,
    #[name = c"portable"]
    Portable,
}

impl SimdSetting {
    /// The tier asked for; None for `auto`.
    fn tier(self) -> Option<Tier> {
        match self {
            SimdSetting::Auto => None,
            SimdSetting::Avx512 => Some(Tier::Avx512),
            SimdSetting::Avx2 => Some(Tier::Avx2),
            SimdSetting::Portable => Some(Tier::Portable),
        }
    }

    fn from_ordinal(ordinal: i32) -> Self {
        [
            SimdSetting::Auto,
            SimdSetting::Avx512,
            SimdSetting::Avx2,
            SimdSetting::Portable,
        ]
        .into_iter()
        .find(|s| *s as i32 == ordinal)
        .unwrap_or(SimdSetting::Auto)
    }
}

/// `airrep.simd`'s check hook: a tier the CPU lacks is refused (SET fails with
/// feature_not_supported and a detail naming the tiers the CPU has), so no kernel ever
/// runs an instruction the CPU does not have.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_simd(
    newval: *mut i32,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    match simd::check(SimdSetting::from_ordinal(*newval).tier()) {
        Ok(()) => true,
        Err(unsupported) => {
            pg_sys::GUC_check_errcode(
                pg_sys::errcodes::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED as i32,
            );
            let detail = CString::new(unsupported.to_string()).expect("no NUL in the message");
            pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
            false
        }
    }
}

/// `airrep.simd`'s assign hook: every kernel of this process runs at the tier from now on.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn assign_simd(newval: i32, _extra: *mut std::ffi::c_void) {
    // The check hook accepted the value, so the CPU has the tier.
    let _ = simd::select(SimdSetting::from_ordinal(newval).tier());
}

/// Seconds the embedding worker sleeps when idle before it looks for pending rows unasked
/// (a commit that leaves pending rows wakes it at once).
pub static WORKER_NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(30);
/// Rows per batch (one transaction) of the embedding worker.
pub static WORKER_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(64);

pub fn register() {
    GucRegistry::define_int_guc(
        c"airrep.threads",
        c"CPU threads per backend for encoding and training.",
        c"Bounds the thread pool each backend creates lazily on first use.",
        &THREADS,
        1,
        1024,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"airrep.max_length",
        c"Maximum tokens per text; longer texts are truncated (keeping [SEP]).",
        c"",
        &MAX_LENGTH,
        2,
        512,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"airrep.model_cache_size",
        c"Models kept loaded per backend.",
        c"Least recently used models are evicted beyond this count.",
        &MODEL_CACHE_SIZE,
        1,
        64,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"airrep.batch_size",
        c"Texts per forward pass when encoding arrays of texts.",
        c"",
        &BATCH_SIZE,
        1,
        4096,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"airrep.max_threads",
        c"Ceiling on airrep.threads (superuser only); 0 is the number of CPUs.",
        c"",
        &MAX_THREADS,
        0,
        1024,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"airrep.max_batch_size",
        c"Ceiling on airrep.batch_size (superuser only).",
        c"",
        &MAX_BATCH_SIZE,
        1,
        4096,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"airrep.max_model_cache_size",
        c"Ceiling on airrep.model_cache_size (superuser only).",
        c"",
        &MAX_MODEL_CACHE_SIZE,
        1,
        64,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"airrep.model_cache_mb",
        c"Most model weights, in MB, a backend keeps cached (superuser only).",
        c"Least recently used models are evicted beyond it; the model in use always stays.",
        &MODEL_CACHE_MB,
        1,
        1 << 20,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"airrep.max_block_mb",
        c"Vector data, in MB, of one block of rows that top_k, select_data, near_duplicates and contamination read at a time (superuser only).",
        c"Peak memory is at most about five blocks plus what the function holds (README, \"Memory\").",
        &MAX_BLOCK_MB,
        1,
        1 << 20,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"airrep.device",
        c"Device for encoding and training: cpu, cuda or cuda:N.",
        c"cuda needs a build with the cuda feature and a visible GPU.",
        &DEVICE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"airrep.amx",
        c"Use the CPU's AMX tile units for encoding where it has them.",
        c"f32: products run on bf16 tiles over operands split into two bf16 parts each, f32 results to about 1e-5 relative, 1.6-1.8x faster than f32 FMA; bf16 (airrep.precision): products on the tiles. off: f32 FMA (bf16 weights widened to f32), as on CPUs without AMX. Needs airrep.simd at avx512. No effect on GPUs or training.",
        &AMX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"airrep.worker_naptime",
        c"Seconds the embedding worker sleeps when idle before it looks for pending rows.",
        c"A commit that leaves rows to embed wakes it at once; this catches anything else.",
        &WORKER_NAPTIME,
        1,
        86400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"airrep.worker_batch_size",
        c"Rows the embedding worker embeds per transaction.",
        c"",
        &WORKER_BATCH_SIZE,
        1,
        4096,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"airrep.precision",
        c"Precision for encoding: auto, f32 or bf16.",
        c"auto is bf16 mixed precision (bf16 matrix products, f32 accumulation) on a GPU and f32 on the CPU. Training is always f32.",
        &PRECISION,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: both hooks are #[pg_guard]ed.
    unsafe {
        GucRegistry::define_enum_guc_with_hooks(
            c"airrep.simd",
            c"SIMD tier of the CPU kernels: auto, avx512, avx2 or portable.",
            c"auto is the best this CPU has (airrep.settings() shows which). A tier the CPU lacks is an error. AMX products need the avx512 tier. Any role may lower it, e.g. to compare tiers.",
            &SIMD,
            GucContext::Userset,
            GucFlags::default(),
            Some(check_simd),
            Some(assign_simd),
            None,
        );
    }
}

pub fn device() -> String {
    DEVICE
        .get()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cpu".into())
}

pub fn precision() -> String {
    PRECISION
        .get()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_else(|| "auto".into())
}

fn capped(setting: &GucSetting<i32>, ceiling: usize) -> usize {
    (setting.get().max(1) as usize).min(ceiling.max(1))
}

/// CPU threads a backend uses: `airrep.threads` within `airrep.max_threads`.
pub fn threads() -> usize {
    let ceiling = match MAX_THREADS.get() {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n as usize,
    };
    capped(&THREADS, ceiling)
}

/// Texts per forward pass: `airrep.batch_size` within `airrep.max_batch_size`.
pub fn batch_size() -> usize {
    capped(&BATCH_SIZE, MAX_BATCH_SIZE.get() as usize)
}

/// Models a backend keeps: `airrep.model_cache_size` within `airrep.max_model_cache_size`.
pub fn model_cache_size() -> usize {
    capped(&MODEL_CACHE_SIZE, MAX_MODEL_CACHE_SIZE.get() as usize)
}

/// Bytes of model weights a backend keeps cached.
pub fn model_cache_bytes() -> usize {
    MODEL_CACHE_MB.get().max(1) as usize * (1 << 20)
}

/// Bytes of vector data in one block of a search or cleaning scan.
pub fn block_bytes() -> usize {
    MAX_BLOCK_MB.get().max(1) as usize * (1 << 20)
}

/// The settings in force for this backend: each costly setting as asked for and as
/// applied within its ceiling, and the SIMD tier asked for and in use (`auto` resolved).
#[pgrx::pg_extern(schema = "airrep", stable, parallel_safe)]
fn settings() -> pgrx::iter::TableIterator<
    'static,
    (
        pgrx::name!(name, String),
        pgrx::name!(requested, String),
        pgrx::name!(effective, String),
    ),
> {
    let number = |name: &str, requested: i64, effective: usize| {
        (
            name.to_string(),
            requested.to_string(),
            effective.to_string(),
        )
    };
    let simd_requested = SIMD.get().tier().map_or("auto", Tier::name);
    let rows = vec![
        number("airrep.threads", THREADS.get().into(), threads()),
        number("airrep.batch_size", BATCH_SIZE.get().into(), batch_size()),
        number(
            "airrep.model_cache_size",
            MODEL_CACHE_SIZE.get().into(),
            model_cache_size(),
        ),
        number(
            "airrep.model_cache_mb",
            MODEL_CACHE_MB.get().into(),
            MODEL_CACHE_MB.get() as usize,
        ),
        number(
            "airrep.max_block_mb",
            MAX_BLOCK_MB.get().into(),
            MAX_BLOCK_MB.get() as usize,
        ),
        (
            "airrep.simd".to_string(),
            simd_requested.to_string(),
            simd::tier().name().to_string(),
        ),
    ];
    pgrx::iter::TableIterator::new(rows)
}
