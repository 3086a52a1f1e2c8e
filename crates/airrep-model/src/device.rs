//! Where the encoder runs and in which precision: `cpu`, `cuda` or `cuda:N`, and
//! `f32` or `bf16`.
//!
//! Parsing is pure; nothing touches a GPU until [`DeviceSpec::create`], which the
//! encoder calls when it is built. A Postgres backend therefore creates its CUDA context
//! lazily, on the first encoder built for a cuda device, never at library load (DESIGN 5).

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// A device by name; [`DeviceSpec::create`] turns it into a candle [`Device`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl DeviceSpec {
    pub fn is_cuda(self) -> bool {
        matches!(self, DeviceSpec::Cuda(_))
    }

    /// Whether this build of airrep can run on CUDA devices at all.
    pub const fn cuda_compiled() -> bool {
        cfg!(feature = "cuda")
    }

    /// An error when this build cannot run on the device at all (CUDA without the `cuda`
    /// feature): free to check, so callers check it before reading any weights.
    pub fn check_built(self) -> Result<()> {
        if self.is_cuda() && !Self::cuda_compiled() {
            return Err(Error::Device(
                "airrep was built without CUDA support; rebuild with --features cuda".into(),
            ));
        }
        Ok(())
    }

    /// Opens the device. For CUDA this creates the context (and loads the driver's
    /// state) on first use; errors, never panics, when the build lacks CUDA or the
    /// machine has no usable GPU.
    pub fn create(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(ordinal) => {
                self.check_built()?;
                // cudarc reports a missing driver or device as an error, but guard against
                // a panic in a third-party layer anyway: it must not abort a backend.
                match std::panic::catch_unwind(|| Device::new_cuda(ordinal)) {
                    Ok(Ok(device)) => Ok(device),
                    Ok(Err(err)) => Err(Error::Device(format!(
                        "cannot open CUDA device {ordinal} (is an NVIDIA GPU with a working \
                         driver present, and is the ordinal in range?): {err}"
                    ))),
                    Err(_) => Err(Error::Device(format!(
                        "cannot open CUDA device {ordinal}: the CUDA runtime panicked"
                    ))),
                }
            }
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = Error;

    /// `cpu`, `cuda` (= `cuda:0`) or `cuda:N`; case and surrounding blanks ignored.
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let bad = || {
            Error::Device(format!(
                "unknown device {s:?}: expected \"cpu\", \"cuda\" or \"cuda:N\""
            ))
        };
        match lower.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => {
                let ordinal = lower.strip_prefix("cuda:").ok_or_else(bad)?;
                if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                ordinal.parse().map(DeviceSpec::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The precision of the encoder layers. Mean pooling and the projector always run in
/// f32 (bf16 hidden states are widened before pooling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    Bf16,
}

impl Precision {
    /// The precision used when none is asked for: bf16 on a GPU (as the paper runs the
    /// encoder), f32 on the CPU (where our fused kernels are f32).
    pub fn default_for(device: DeviceSpec) -> Self {
        if device.is_cuda() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(Error::Device(format!(
                "unknown dtype {s:?}: expected \"f32\" or \"bf16\""
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!(" CUDA ".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        for bad in [
            "", "gpu:1", "cuda:", "cuda:-1", "cuda:x", "cuda:+1", "tpu", "cuda:1:2",
        ] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains("unknown device"), "{bad}: {err}");
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
        assert_eq!(DeviceSpec::default(), DeviceSpec::Cpu);
    }

    #[test]
    fn parses_precisions() {
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("F32".parse::<Precision>().unwrap(), Precision::F32);
        assert!("f16".parse::<Precision>().is_err());
        assert_eq!(Precision::default_for(DeviceSpec::Cpu), Precision::F32);
        assert_eq!(Precision::default_for(DeviceSpec::Cuda(0)), Precision::Bf16);
    }

    #[test]
    fn cpu_always_opens() {
        assert!(DeviceSpec::Cpu.create().unwrap().is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let err = DeviceSpec::Cuda(0).create().unwrap_err().to_string();
        assert!(
            err.contains("built without CUDA support; rebuild with --features cuda"),
            "{err}"
        );
    }
}
