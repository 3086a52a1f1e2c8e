//! Borrowed views of candle CPU tensors and the output buffers that parallel kernel tasks
//! fill: what every kernel file needs to read inputs without copies and write outputs
//! without a zeroing pass.

use candle_core::{CpuStorage, Tensor};
use rayon::prelude::*;

/// The contiguous f32 data of a CPU tensor, borrowed for as long as the guard lives.
pub(super) struct F32View<'a> {
    storage: candle_core::StorageRef<'a>,
    start: usize,
    end: usize,
}

impl std::ops::Deref for F32View<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &*self.storage {
            candle_core::Storage::Cpu(CpuStorage::F32(data)) => &data[self.start..self.end],
            _ => unreachable!("checked in view()"),
        }
    }
}

pub(super) fn view<'a>(op: &str, t: &'a Tensor) -> candle_core::Result<F32View<'a>> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(CpuStorage::F32(_)) = &*storage else {
        candle_core::bail!("{op}: expects an f32 CPU tensor")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: expects a contiguous tensor")
    };
    Ok(F32View {
        storage,
        start,
        end,
    })
}

/// A vector of `len` floats whose every element `init` writes, in parallel chunks of
/// `chunk`; no zeroing pass first.
pub(super) fn filled(
    len: usize,
    chunk: usize,
    init: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| init(i, c));
    // SAFETY: `init` wrote every element (each caller writes whole chunks).
    unsafe { v.set_len(len) };
    v
}

/// A pointer shared by tasks that write disjoint parts of its buffer.
#[derive(Clone, Copy)]
pub(super) struct SharedMut(pub(super) *mut f32);

impl SharedMut {
    /// The pointer, through a method so that closures capture the whole (Sync) wrapper
    /// rather than its raw-pointer field.
    pub(super) fn ptr(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: each task writes elements no other task touches (see `attention`).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}
