//! The linear layer of [`super::Kernels::Portable`]: `x·Wᵀ + b` with the bias folded into
//! the product and an **f32 output**, for a bf16 weight (mixed precision: bf16 operands,
//! f32 accumulation) or an f32 one.
//!
//! Why an f32 output in bf16: rounding each product to bf16 before it is widened (what
//! candle's bf16 matmul returns) was the largest activation rounding of the mixed-precision
//! forward. On `tests/golden` (CPU, `bf16_layers_stay_close_to_golden`) it took tiny-airrep
//! from 7.96e-3 to 9.9e-3 relative error, while rounding the linear weights alone costs
//! 7.84e-3 (an f64 emulation of every rounding, see docs/gpu.md). Why the fold: candle's
//! strided broadcast add of the bias was most of a `Linear`'s time on the GPU (docs/gpu.md,
//! op profile).
//!
//! * CUDA: one `cublasGemmEx` (`CUDA_R_16BF` or `CUDA_R_32F` operands -> `CUDA_R_32F`,
//!   `CUBLAS_COMPUTE_32F`) with `beta = 1` over an output that a k = 1 f32 GEMM
//!   (`ones[m] ⊗ bias[n]`) first filled with the bias rows. No cast kernel, no broadcast
//!   add.
//! * CPU: the same numbers from candle ops: the operands are rounded to the weight's dtype
//!   and widened again, then multiplied in f32. A product of two bf16 values is exact in
//!   f32, so in bf16 this is a bf16 x bf16 -> f32 product with f32 accumulation, as on the
//!   GPU (up to the order of the sums).

use candle_core::{DType, Tensor};

/// `x [.., k]` (any float dtype; rounded to the weight's dtype) times `weightᵀ`
/// (`weight [n, k]`, bf16 or f32) plus `bias [n]` (f32): `[.., n]` in f32.
pub(super) fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    let (n, k) = weight.dims2()?;
    let dtype = weight.dtype();
    if !matches!(dtype, DType::BF16 | DType::F32) {
        candle_core::bail!("linear-f32: weight dtype {dtype:?}, expected bf16 or f32");
    }
    let mut out_dims = x.dims().to_vec();
    let rows = x.elem_count() / k;
    let x = x.to_dtype(dtype)?.reshape((rows, k))?;
    let bias = bias.to_dtype(DType::F32)?;
    let out = if x.device().is_cuda() {
        x.contiguous()?
            .apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &LinearF32)?
    } else {
        x.to_dtype(DType::F32)?
            .matmul(&weight.to_dtype(DType::F32)?.t()?)?
            .broadcast_add(&bias)?
    };
    *out_dims.last_mut().expect("x has a last dimension") = n;
    out.reshape(out_dims)
}

/// The CUDA kernel of [`linear`] on 2-d contiguous operands `x [m, k]`, `weight [n, k]`
/// (both bf16 or both f32) and `bias [n]` (f32).
struct LinearF32;

impl candle_core::CustomOp3 for LinearF32 {
    fn name(&self) -> &'static str {
        "linear-f32"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        candle_core::bail!("linear-f32: the CPU path is composed from candle ops")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_layout: &candle_core::Layout,
        weight: &candle_core::CudaStorage,
        weight_layout: &candle_core::Layout,
        bias: &candle_core::CudaStorage,
        bias_layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::cublas::sys::cudaDataType_t;
        use half::bf16;

        let (m, k) = x_layout.shape().dims2()?;
        let (n, k_weight) = weight_layout.shape().dims2()?;
        let bias_len = bias_layout.shape().dims1()?;
        if k != k_weight || bias_len != n {
            candle_core::bail!(
                "linear-f32: x [{m}, {k}], weight [{n}, {k_weight}], bias [{bias_len}]"
            );
        }
        if !(x_layout.is_contiguous()
            && weight_layout.is_contiguous()
            && bias_layout.is_contiguous())
        {
            candle_core::bail!("linear-f32: operands must be contiguous");
        }
        let dev = x.device.clone();
        let bias = bias
            .as_cuda_slice::<f32>()?
            .slice(bias_layout.start_offset()..);
        let out = match (x.dtype(), weight.dtype()) {
            (DType::BF16, DType::BF16) => gemm_with_bias(
                &dev,
                &x.as_cuda_slice::<bf16>()?.slice(x_layout.start_offset()..),
                &weight
                    .as_cuda_slice::<bf16>()?
                    .slice(weight_layout.start_offset()..),
                cudaDataType_t::CUDA_R_16BF,
                &bias,
                (m, n, k),
            )?,
            (DType::F32, DType::F32) => gemm_with_bias(
                &dev,
                &x.as_cuda_slice::<f32>()?.slice(x_layout.start_offset()..),
                &weight
                    .as_cuda_slice::<f32>()?
                    .slice(weight_layout.start_offset()..),
                cudaDataType_t::CUDA_R_32F,
                &bias,
                (m, n, k),
            )?,
            (a, b) => candle_core::bail!("linear-f32: x {a:?} and weight {b:?}"),
        };
        Ok((
            candle_core::CudaStorage::wrap_cuda_slice(out, dev),
            candle_core::Shape::from((m, n)),
        ))
    }
}

/// `out [m, n] = x [m, k] · weight [n, k]ᵀ + bias [n]` in f32, all row-major and
/// contiguous, `x` and `weight` of cuBLAS type `operand_type` (bf16 or f32).
#[cfg(feature = "cuda")]
fn gemm_with_bias<T: candle_core::cuda_backend::cudarc::driver::DeviceRepr>(
    dev: &candle_core::cuda_backend::CudaDevice,
    x: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>,
    weight: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>,
    operand_type: candle_core::cuda_backend::cudarc::cublas::sys::cudaDataType_t,
    bias: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, f32>,
    (m, n, k): (usize, usize, usize),
) -> candle_core::Result<candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>> {
    use candle_core::cuda_backend::cudarc::cublas::{result::gemm_ex, sys as blas};
    use candle_core::cuda_backend::cudarc::driver::{sys as driver, DevicePtr, DevicePtrMut};
    use candle_core::cuda_backend::WrapErr;

    // SAFETY: both are written in full below before anything reads them.
    let mut ones = unsafe { dev.alloc::<f32>(m)? };
    let mut out = unsafe { dev.alloc::<f32>(m * n)? };
    let stream = dev.cuda_stream();
    let cublas = dev.cublas_handle();
    let (one, zero) = (1f32, 0f32);
    let algo = if operand_type == blas::cudaDataType_t::CUDA_R_16BF {
        blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP
    } else {
        blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT
    };
    {
        let (ones_ptr, _ones_guard) = ones.device_ptr_mut(&stream);
        let (x_ptr, _x_guard) = x.device_ptr(&stream);
        let (weight_ptr, _weight_guard) = weight.device_ptr(&stream);
        let (bias_ptr, _bias_guard) = bias.device_ptr(&stream);
        let (out_ptr, _out_guard) = out.device_ptr_mut(&stream);
        // cuBLAS is column-major: the row-major out [m, n] is the column-major
        // outᵀ [n, m] = W·xᵀ, where the row-major weight [n, k] is read as the
        // column-major [k, n] and transposed, and the row-major x [m, k] is the
        // column-major xᵀ [k, m].
        // SAFETY: the pointers are live device allocations of the sizes the GEMMs
        // read and write (m, m·n, k·m, n·k, n), on the stream cuBLAS is bound to.
        unsafe {
            driver::cuMemsetD32Async(ones_ptr, one.to_bits(), m, stream.cu_stream())
                .result()
                .w()?;
            // outᵀ [n, m] = bias [n, 1] · ones [1, m]
            gemm_ex(
                *cublas.handle(),
                blas::cublasOperation_t::CUBLAS_OP_N,
                blas::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                1,
                (&one) as *const f32 as *const _,
                bias_ptr as *const _,
                blas::cudaDataType_t::CUDA_R_32F,
                n as i32,
                ones_ptr as *const _,
                blas::cudaDataType_t::CUDA_R_32F,
                1,
                (&zero) as *const f32 as *const _,
                out_ptr as *mut _,
                blas::cudaDataType_t::CUDA_R_32F,
                n as i32,
                blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
            .w()?;
            // outᵀ += W · xᵀ, f32 accumulation and output.
            gemm_ex(
                *cublas.handle(),
                blas::cublasOperation_t::CUBLAS_OP_T,
                blas::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                (&one) as *const f32 as *const _,
                weight_ptr as *const _,
                operand_type,
                k as i32,
                x_ptr as *const _,
                operand_type,
                k as i32,
                (&one) as *const f32 as *const _,
                out_ptr as *mut _,
                blas::cudaDataType_t::CUDA_R_32F,
                n as i32,
                blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                algo,
            )
            .w()?;
        }
    }
    drop(ones);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64(seed);
        (0..n).map(|_| rng.next_unit() * 2.0 - 1.0).collect()
    }

    /// x `[2, 75, 384]` f32, weight `[1536, 384]` in `dtype`, bias `[1536]` f32, on the CPU.
    fn inputs(dtype: DType) -> (Tensor, Tensor, Tensor) {
        let (k, n) = (384, 1536);
        let x = Tensor::from_vec(values(2 * 75 * k, 1), (2, 75, k), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(values(n * k, 2), (n, k), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let b = Tensor::from_vec(values(n, 3), n, &Device::Cpu).unwrap();
        (x, w, b)
    }

    /// Rows of `x·Wᵀ + b` in f64, `x` rounded to the weight's dtype.
    fn reference(x: &Tensor, w: &Tensor, b: &Tensor) -> Vec<Vec<f64>> {
        let k = w.dim(1).unwrap();
        let rows = x.elem_count() / k;
        let x = x.to_dtype(w.dtype()).unwrap().to_dtype(DType::F64).unwrap();
        let x = x.reshape((rows, k)).unwrap().to_vec2::<f64>().unwrap();
        let w = w.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
        let b = b.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
        x.iter()
            .map(|xr| {
                w.iter()
                    .zip(&b)
                    .map(|(wr, bias)| xr.iter().zip(wr).map(|(a, c)| a * c).sum::<f64>() + bias)
                    .collect()
            })
            .collect()
    }

    fn worst_difference(got: &Tensor, want: &[Vec<f64>]) -> f64 {
        let n = got.dim(candle_core::D::Minus1).unwrap();
        let got = got
            .to_device(&Device::Cpu)
            .unwrap()
            .reshape((want.len(), n))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        got.iter()
            .flatten()
            .zip(want.iter().flatten())
            .map(|(g, w)| (*g as f64 - w).abs())
            .fold(0.0, f64::max)
    }

    /// The CPU path: in bf16 a bf16 x bf16 product with f32 accumulation and output, in
    /// f32 an f32 product; both within f32 summation error of the exact product of the
    /// (rounded) operands (entries are ~10, so 1e-4 is ~1e-5 relative; a bf16 product
    /// from an unrounded input is off by ~1e-2).
    #[test]
    fn cpu_is_the_exact_product_of_the_rounded_operands() {
        for dtype in [DType::BF16, DType::F32] {
            let (x, w, b) = inputs(dtype);
            let got = super::linear(&x, &w, &b).unwrap();
            assert_eq!(got.dims(), &[2, 75, 1536]);
            assert_eq!(got.dtype(), DType::F32);
            let err = worst_difference(&got, &reference(&x, &w, &b));
            eprintln!("cpu {dtype:?}: worst absolute difference {err:e}");
            assert!(err < 1e-4, "{dtype:?}: {err:e}");
        }
        // In bf16 the f32 input is rounded: an unrounded product differs by far more.
        let (x, w, b) = inputs(DType::BF16);
        let w32 = w.to_dtype(DType::F32).unwrap();
        let unrounded = x
            .broadcast_matmul(&w32.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        let unrounded_err = worst_difference(&unrounded, &reference(&x, &w, &b));
        eprintln!("cpu bf16, unrounded input: {unrounded_err:e}");
        assert!(unrounded_err > 1e-3, "{unrounded_err:e}");
    }

    /// The cuBLAS kernel agrees with the reference in bf16 and f32: contiguous 3-d input,
    /// a narrowed (offset, non-contiguous) input, and a single row. Skips without a GPU.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_matches_the_reference() {
        let Ok(gpu) = Device::new_cuda(0) else {
            eprintln!("no CUDA device: skipped");
            return;
        };
        for dtype in [DType::BF16, DType::F32] {
            let (x, w, b) = inputs(dtype);
            let (wg, bg) = (w.to_device(&gpu).unwrap(), b.to_device(&gpu).unwrap());
            for x in [
                x.clone(),
                x.narrow(1, 7, 60).unwrap(),
                x.narrow(1, 0, 1).unwrap().narrow(0, 1, 1).unwrap(),
            ] {
                let got = super::linear(&x.to_device(&gpu).unwrap(), &wg, &bg).unwrap();
                assert_eq!(got.dims()[..got.rank() - 1], x.dims()[..x.rank() - 1]);
                assert_eq!(got.dtype(), DType::F32);
                let err = worst_difference(&got, &reference(&x, &w, &b));
                eprintln!(
                    "cuda linear-f32 {dtype:?} {:?}: worst absolute difference {err:e}",
                    x.dims()
                );
                assert!(err < 1e-4, "{dtype:?} {:?}: {err:e}", x.dims());
            }
        }
    }
}
