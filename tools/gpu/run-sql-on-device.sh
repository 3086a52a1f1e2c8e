#!/usr/bin/env bash
# GPU verification through the extension, on a machine with the NVIDIA driver and PyTorch
# but no Postgres, no Rust and no network (docs/gpu.md, "Through the extension").
# scripts/gpu-verify.sh packs gpu-sql/ (this script is copied there as run-sql.sh); run from
# the repository root:  bash gpu-sql/run-sql.sh   (the run tool: carry ["gpu-sql"]).
#
# Unpacks PostgreSQL 15 and the cuda build of airrep under /tmp, starts a throwaway cluster
# as an unprivileged user (Postgres refuses root), then runs sql_bench.py: parity through
# SQL in f32 and bf16, throughput through SQL next to PyTorch, bad-device recovery.
# Environment: DEVICE=cpu tries it all on the CPU (no GPU, no PyTorch needed); N_TEXTS,
# BATCH, THREADS, SKIP_TORCH (see sql_bench.py); MINILM_DIR overrides gpu-sql/minilm.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
ROOT=/tmp/airrep-sql
PORT="${PGPORT_GPU:-54329}"
RUNAS=airrep_gpu
rm -rf "$ROOT"; mkdir -p "$ROOT"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader || true

# PostgreSQL: relocatable (it finds share/ and lib/ relative to bin/).
python3 -c "import lzma,tarfile,sys; tarfile.open(fileobj=lzma.open(sys.argv[1])).extractall(sys.argv[2])" \
  "$HERE/pg15.tar.xz" "$ROOT"
PGB="$ROOT/pg"
# A carried library only where the machine has none of that soname.
mkdir -p "$ROOT/fallback"
ldconfig -p > "$ROOT/ldconfig.txt"  # (grep -q on a pipe would SIGPIPE ldconfig under pipefail)
for lib in "$PGB"/syslibs/*; do
  name=$(basename "$lib")
  grep -q "^[[:space:]]*$name " "$ROOT/ldconfig.txt" || ln -s "$lib" "$ROOT/fallback/$name"
done
echo "carried libraries used: $(ls "$ROOT/fallback" | tr '\n' ' ')"
# The extension.
if [[ -f "$HERE/airrep.so.xz" ]]; then
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" \
    "$HERE/airrep.so.xz" "$PGB/lib/airrep.so"
else
  cp "$HERE/airrep.so" "$PGB/lib/airrep.so"
fi
cp "$HERE/airrep.control" "$HERE"/airrep--*.sql "$PGB/share/extension/"
# CUDA user-space libraries: PyTorch's (cuBLAS 13, cuRAND, cudart, NVRTC); the driver's
# libcuda.so.1 comes from the system.
CUDALIBS=""
if python3 -c "import torch" 2>/dev/null; then
  SP=$(python3 -c "import torch,os; print(os.path.dirname(os.path.dirname(torch.__file__)))")
  CUDALIBS=$(find "$SP/nvidia" "$SP/torch/lib" \( -name 'libcublas.so*' -o -name 'libcublasLt.so*' -o \
    -name 'libcurand.so*' -o -name 'libnvrtc.so*' -o -name 'libcudart.so*' \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
fi
export LD_LIBRARY_PATH="$ROOT/fallback${CUDALIBS:+:$CUDALIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ldd "$PGB/lib/airrep.so" | grep -E "not found|libcuda|cublas|curand|cudart" || true
ldd "$PGB/bin/postgres" | grep "not found" && { echo "postgres: missing libraries"; exit 1; }
"$PGB/bin/postgres" --version

# Rust-level checks first (as root, straight on the crate): the mixed-precision linear
# kernel against its f64 reference, then the golden tests (their bodies run on the CPU and
# the GPU: golden parity through airrep_model::Encoder, and the golden training steps).
for name in airrep_model_tests; do
  [[ -f "$HERE/$name.xz" ]] && python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" \
    "$HERE/$name.xz" "$ROOT/$name" && chmod +x "$ROOT/$name"
done
if [[ -x "$ROOT/airrep_model_tests" ]]; then
  echo "== airrep-model unit tests on the GPU: bert::mixed, then the golden tests"
  "$ROOT/airrep_model_tests" bert::mixed --nocapture --test-threads 1 2>&1 | grep -vE "^\s*$" || echo "unit tests FAILED"
  if [[ -n "${MINILM_DIR:-}" ]]; then minilm=(AIRREP_MINILM_DIR="$MINILM_DIR"); else minilm=(AIRREP_SKIP_MINILM=1); fi
  env AIRREP_GOLDEN_DIR="$REPO/tests/golden" "${minilm[@]}" "$ROOT/airrep_model_tests" golden --nocapture --test-threads 1 \
    || echo "golden tests: a bound missed (rc $?)"
fi

# A throwaway cluster as an unprivileged user.
if [[ $(id -u) -eq 0 ]]; then
  id "$RUNAS" >/dev/null 2>&1 || useradd -M -d "$ROOT" -s /bin/bash "$RUNAS" || RUNAS=nobody
  AS=(setpriv --reuid="$RUNAS" --regid="$(id -g "$RUNAS")" --init-groups)
  command -v setpriv >/dev/null || AS=(runuser -u "$RUNAS" --)
else
  AS=()
fi
chmod 755 "$ROOT" "$PGB"
mkdir -p "$ROOT/data" "$ROOT/work" "$ROOT/sock" "$ROOT/log"
[[ $(id -u) -eq 0 ]] && chown -R "$RUNAS" "$ROOT/data" "$ROOT/work" "$ROOT/sock" "$ROOT/log"
chmod 777 "$ROOT/work"
# The server user must be able to load the extension's libraries (CUDA's included): where
# it cannot read PyTorch's, copy them somewhere it can.
if "${AS[@]}" ldd "$PGB/lib/airrep.so" | grep -q "not found" && [[ -n "$CUDALIBS" ]]; then
  mkdir -p "$ROOT/cudalibs"
  for d in ${CUDALIBS//:/ }; do cp -L "$d"/lib{cublas,cublasLt,curand,cudart,nvrtc}.so* "$ROOT/cudalibs/" 2>/dev/null || true; done
  chmod -R a+rX "$ROOT/cudalibs"
  export LD_LIBRARY_PATH="$ROOT/cudalibs:$LD_LIBRARY_PATH"
  echo "copied the CUDA libraries to $ROOT/cudalibs for $RUNAS"
fi
if "${AS[@]}" ldd "$PGB/lib/airrep.so" | grep "not found"; then
  echo "airrep.so: libraries the server user $RUNAS cannot load (above)"; exit 1
fi
"${AS[@]}" "$PGB/bin/initdb" -D "$ROOT/data" -U postgres --auth=trust -E UTF8 --locale=C >"$ROOT/initdb.log" 2>&1 \
  || { cat "$ROOT/initdb.log"; exit 1; }
"${AS[@]}" "$PGB/bin/pg_ctl" -D "$ROOT/data" -l "$ROOT/log/server.log" -w \
  -o "-p $PORT -k $ROOT/sock -c listen_addresses='' -c max_parallel_workers_per_gather=0 -c work_mem=256MB" start \
  || { cat "$ROOT/log/server.log"; exit 1; }
trap '"${AS[@]}" "$PGB/bin/pg_ctl" -D "$ROOT/data" -m fast stop >/dev/null 2>&1 || true; mkdir -p "${OUT:-/tmp}"; cp "$ROOT/log/server.log" "${OUT:-/tmp}/server.log" 2>/dev/null || true' EXIT
export PATH="$PGB/bin:$PATH" PGHOST="$ROOT/sock" PGPORT="$PORT" PGUSER=postgres PGDATABASE=postgres

MINILM="${MINILM_DIR:-}"
if [[ -z "$MINILM" && -f "$HERE/minilm/model.safetensors.gz" ]]; then
  MINILM="$ROOT/work/minilm-src"; mkdir -p "$MINILM"
  cp "$HERE/minilm/config.json" "$HERE/minilm/tokenizer.json" "$MINILM/"
  gunzip -c "$HERE/minilm/model.safetensors.gz" > "$MINILM/model.safetensors"
fi
cd "$HERE"
set +e
PYTHONUNBUFFERED=1 python3 sql_bench.py "$REPO/tests/golden" "$ROOT/work" "$MINILM"
rc=$?
echo "sql_bench rc=$rc"
grep -E "ERROR|FATAL|PANIC|terminated by signal" "$ROOT/log/server.log" | tail -20
exit $rc
