#!/usr/bin/env bash
# Packs everything the GPU verification *through the extension* needs into gpu-sql/
# (gitignored via .git/info/exclude), for a machine that has the NVIDIA driver and PyTorch
# but no Rust, no Postgres and no network (docs/gpu.md, "Through the extension").
#
#   scripts/gpu-verify.sh            # build the cuda extension, then pack
#   scripts/gpu-verify.sh --no-build # pack what target-cuda/ holds
#   AIRREP_SO=/path/airrep.so scripts/gpu-verify.sh --no-build   # pack another build
#   (likewise AIRREP_MODEL_TESTS=/path/airrep_model-<hash>)
#
# Then, on the GPU machine, from the repository root (the `run` tool: carry ["gpu-sql"]):
#
#   bash gpu-sql/run-sql.sh          # parity and throughput through SQL, next to PyTorch
#
# gpu-sql/ holds: airrep_model_tests.xz (the cuda build of airrep-model's unit tests, for
# the Rust-level checks run first: golden parity and training steps on the GPU), airrep.so.xz (the
# cuda build, stripped), airrep.control and the
# extension's SQL, pg15.tar.xz (Debian's PostgreSQL 15 server, initdb, pg_ctl, psql, its
# share/ and the shared libraries they load, minus glibc's), run-sql.sh, sql_bench.py and
# torch_bench.py (from tools/gpu/). MINILM=DIR adds a pruned
# MiniLM (the 999 word-embedding rows the golden texts use; about 42 MB gzipped: with it
# the carry is near the tool's 64 MiB limit).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$REPO/gpu-sql"
PG=/usr/lib/postgresql/15
PGSHARE=/usr/share/postgresql/15
EXAMPLES="$REPO/tools/gpu"

TESTS=""
if [[ "${1:-}" != "--no-build" ]]; then
  "$REPO/scripts/build-cuda.sh" build --release --features cuda -p airrep --lib
  # The airrep-model unit tests with cuda: the golden tests run their bodies on the GPU too
  # (testing::devices), and bert::mixed's GPU test runs there.
  TESTS=$("$REPO/scripts/build-cuda.sh" test --release --features cuda -p airrep-model --lib --no-run \
    --message-format=json 2>/dev/null | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "airrep_model":
        print(m["executable"])')
fi
TESTS="${AIRREP_MODEL_TESTS:-$TESTS}"
SO="${AIRREP_SO:-$REPO/target-cuda/release/libairrep.so}"
[[ -f "$SO" ]] || { echo "gpu-verify: no $SO (build it first)" >&2; exit 1; }
# The extension's SQL does not depend on the cuda feature: take the one pgrx generates for
# the CPU build (cargo pgrx install / scripts/test.sh put it here), unless given.
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -1)
SQL="${AIRREP_SQL:-$PGSHARE/extension/airrep--$VERSION.sql}"
[[ -f "$SQL" ]] || { echo "gpu-verify: no $SQL (run cargo pgrx install once, or set AIRREP_SQL)" >&2; exit 1; }

grep -qx '/gpu-sql/' "$REPO/.git/info/exclude" 2>/dev/null || echo '/gpu-sql/' >> "$REPO/.git/info/exclude"
rm -rf "$OUT"
mkdir -p "$OUT"

strip -o "$OUT/airrep.so" "$SO"
xz -T2 -6 -f "$OUT/airrep.so"
cp "$SQL" "$OUT/airrep--$VERSION.sql"
sed "s/@CARGO_VERSION@/$VERSION/" "$REPO/airrep.control" > "$OUT/airrep.control"

# PostgreSQL 15: the four programs the run needs, the server's modules (no LLVM JIT), share/,
# and every shared library they load except glibc's and the C++ runtime (run-sql.sh uses a
# carried library only where the machine has none of that soname).
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/pg/bin" "$STAGE/pg/lib" "$STAGE/pg/share" "$STAGE/pg/syslibs"
cp "$PG"/bin/{postgres,initdb,pg_ctl,psql} "$STAGE/pg/bin/"
find "$PG/lib" -maxdepth 1 -name '*.so' ! -name 'llvmjit*' -exec cp {} "$STAGE/pg/lib/" \;
cp -r "$PGSHARE"/. "$STAGE/pg/share/"
rm -f "$STAGE"/pg/share/extension/airrep*
{ ldd "$STAGE"/pg/bin/* "$STAGE"/pg/lib/*.so 2>/dev/null || true; } | awk '/=> \//{print $3}' | sort -u |
  grep -vE '/(libc|libm|libdl|libpthread|librt|libresolv|ld-linux-x86-64|libstdc\+\+|libgcc_s)\.so' |
  while read -r lib; do cp -L "$lib" "$STAGE/pg/syslibs/"; done
tar -C "$STAGE" -cf - pg | xz -T2 -6 > "$OUT/pg15.tar.xz"

# Rust-level checks run first on the device, where present.
for bin in "$TESTS:airrep_model_tests"; do
  src="${bin%%:*}"; name="${bin##*:}"
  if [[ -n "$src" && -f "$src" ]]; then strip -o "$OUT/$name" "$src" && xz -T2 -6 -f "$OUT/$name"
  else echo "gpu-verify: no $name binary (${src:-not built}): skipped"; fi
done

cp "$EXAMPLES/run-sql-on-device.sh" "$OUT/run-sql.sh"
cp "$EXAMPLES/sql_bench.py" "$EXAMPLES/torch_bench.py" "$OUT/"
if [[ -n "${MINILM:-}" ]]; then
  mkdir -p "$OUT/minilm"
  cp "$MINILM/config.json" "$MINILM/tokenizer.json" "$OUT/minilm/"
  if [[ -f "$MINILM/model.safetensors.gz" ]]; then cp "$MINILM/model.safetensors.gz" "$OUT/minilm/"
  else gzip -c "$MINILM/model.safetensors" > "$OUT/minilm/model.safetensors.gz"; fi
fi
du -sh "$OUT"/* | sed 's/^/  /'
echo "total $(du -sm "$OUT" | cut -f1) MiB in gpu-sql/; the working tree travels too (64 MiB in all)"
echo "run tool: command 'bash gpu-sql/run-sql.sh', carry [\"gpu-sql\"], timeout_s 600"
