#!/usr/bin/env bash
# Builds airrep with `--features cuda` on a machine WITHOUT a GPU or a CUDA toolkit.
#
# The CUDA 13.0 toolchain comes from pinned PyPI wheels, unpacked into a cache outside the
# repository ($AIRREP_CUDA_CACHE, default ~/.cache/airrep-cuda). The driver library
# (libcuda.so) is not redistributed in any wheel: we link against a generated stub that
# exports the driver symbols cudarc declares; the real driver is loaded at run time.
# CUDA builds use their own target dir (default <repo>/target-cuda) so they never
# invalidate the CPU build in target/.
#
# Usage:
#   scripts/build-cuda.sh                      # cargo build --release --features cuda -p airrep-model
#   scripts/build-cuda.sh <cargo args...>      # e.g. build --release --features cuda -p airrep-model --example gpu_check
#   scripts/build-cuda.sh --env                # print the environment to `eval` instead of building
#
# Environment: AIRREP_CUDA_CACHE, CARGO_TARGET_DIR, CUDA_COMPUTE_CAP (default 90 = H100/H200).
# See docs/gpu.md for what is pinned and why.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${AIRREP_CUDA_CACHE:-$HOME/.cache/airrep-cuda}"

# Pinned wheels (CUDA 13.0, matching driver 580 / nvcc 13.0 on the GPU machine).
WHEELS=(
  "nvidia-cuda-nvcc==13.0.88"     # nvcc, ptxas, fatbinary
  "nvidia-nvvm==13.0.88"          # cicc, libdevice (nvcc dependency)
  "nvidia-cuda-crt==13.0.88"      # crt/ host headers (nvcc dependency)
  "nvidia-cuda-cccl==13.0.85"     # include/cccl (nvcc's system include dir)
  "nvidia-cuda-runtime==13.0.96"  # cuda_runtime.h, cuda_bf16.h, libcudart.so.13
  "nvidia-cuda-nvrtc==13.0.88"    # libnvrtc.so.13
  "nvidia-cublas==13.10.0.20"     # libcublas.so.13, libcublasLt.so.13 (link only; run time uses the host's)
  "nvidia-curand==10.4.5.25"      # libcurand.so.10
)

SITE="$CACHE/site"
CUDA="$SITE/nvidia/cu13"
STUBS="$CACHE/stubs"

setup() {
  if [[ ! -x "$CUDA/bin/nvcc" || ! -f "$CACHE/.pins" || "$(cat "$CACHE/.pins")" != "${WHEELS[*]}" ]]; then
    mkdir -p "$CACHE/wheels"
    rm -rf "$SITE"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux_2_12_x86_64 \
      --platform manylinux_2_5_x86_64 --python-version 3.11 \
      -d "$CACHE/wheels" "${WHEELS[@]}"
    mkdir -p "$SITE"
    for spec in "${WHEELS[@]}"; do
      name="${spec%%==*}"; version="${spec##*==}"
      whl=$(ls "$CACHE/wheels/${name//-/_}-${version}-"*.whl | head -n1)
      python3 -m zipfile -e "$whl" "$SITE/"
    done
    # zipfile does not keep the executable bit.
    chmod +x "$CUDA"/bin/* "$CUDA"/nvvm/bin/* 2>/dev/null || true
    # The linker wants unversioned names; the wheels ship only the sonames.
    for lib in cudart nvrtc cublas cublasLt; do ln -sf "lib$lib.so.13" "$CUDA/lib/lib$lib.so"; done
    ln -sf libcurand.so.10 "$CUDA/lib/libcurand.so"
    echo "${WHEELS[*]}" > "$CACHE/.pins"
    rm -rf "$STUBS"
  fi
  if [[ ! -f "$STUBS/libcuda.so" ]]; then
    # A link-time stub of the driver: one empty function per driver symbol cudarc
    # declares (every CUDA version it supports). soname libcuda.so.1, as the real one.
    local cudarc
    cudarc=$(cd "$REPO" && cargo metadata --format-version 1 --features cuda 2>/dev/null \
      | python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="cudarc"))')
    mkdir -p "$STUBS"
    grep -oE '^\s+(pub )?fn cu[A-Za-z0-9_]+\(' "$(dirname "$cudarc")/src/driver/sys/mod.rs" \
      | sed -E 's/.*fn (cu[A-Za-z0-9_]+)\(/\1/' | sort -u \
      | awk '{print "void " $1 "(void) {}"}' > "$STUBS/libcuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$STUBS/libcuda.so" "$STUBS/libcuda_stub.c"
  fi
}

setup

export CUDA_ROOT="$CUDA" CUDA_HOME="$CUDA" CUDA_PATH="$CUDA"
export PATH="$CUDA/bin:$CUDA/nvvm/bin:$PATH"
export LIBRARY_PATH="$STUBS:$CUDA/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target-cuda}"
# Search paths for rustc's linker (build scripts only add CUDA_ROOT/lib*).
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$STUBS -L native=$CUDA/lib"

if [[ "${1:-}" == "--env" ]]; then
  for v in CUDA_ROOT CUDA_HOME CUDA_PATH PATH LIBRARY_PATH CUDARC_CUDA_VERSION CUDA_COMPUTE_CAP CARGO_TARGET_DIR RUSTFLAGS; do
    printf 'export %s=%q\n' "$v" "${!v}"
  done
  exit 0
fi

cd "$REPO"
if [[ $# -eq 0 ]]; then
  set -- build --release --features cuda -p airrep-model
fi
exec cargo "$@"
