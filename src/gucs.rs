//! Settings a DBA tunes per backend (`SET airrep.threads = 4`) or per cluster.

use std::ffi::CString;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// CPU threads one backend may use for encoding and training.
pub static THREADS: GucSetting<i32> = GucSetting::<i32>::new(2);
/// Longest token sequence fed to the encoder; longer texts are truncated on the right.
pub static MAX_LENGTH: GucSetting<i32> = GucSetting::<i32>::new(512);
/// How many models a backend keeps loaded.
pub static MODEL_CACHE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(2);
/// Texts per forward pass when encoding arrays.
pub static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(32);
/// `cpu`, or `cuda` / `cuda:N` in a build with the `cuda` feature.
pub static DEVICE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"cpu"));
/// Whether CPU encoding may use AMX tile units: f32 from split bf16 products (~1e-5
/// relative), and bf16 (`airrep.precision = bf16`) on the tiles instead of candle's ops.
pub static AMX: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `auto` (bf16 mixed precision on a GPU, f32 on the CPU), `f32` or `bf16`, for encoding.
pub static PRECISION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"auto"));

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
        c"f32: products run on bf16 tiles over operands split into two bf16 parts each, f32 results to about 1e-5 relative, 1.6-1.8x faster than f32 FMA; bf16 (airrep.precision): products on the tiles. off: f32 FMA, and candle's kernels for bf16, as on CPUs without AMX. No effect on GPUs or training.",
        &AMX,
        GucContext::Userset,
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
}

pub fn device() -> String {
    DEVICE.get().map(|d| d.to_string_lossy().into_owned()).unwrap_or_else(|| "cpu".into())
}

pub fn precision() -> String {
    PRECISION.get().map(|d| d.to_string_lossy().into_owned()).unwrap_or_else(|| "auto".into())
}
