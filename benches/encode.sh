#!/usr/bin/env bash
# MiniLM-L6 encoding throughput on ~113-token texts, 2 threads, batch 1/32/128, all in one run
# on the same texts: PyTorch f32 and bf16 (when installed), the pure-Rust encoder with f32 FMA,
# f32 from AMX split products and bf16 on AMX (crates/airrep-model/benches/encode.rs), and
# airrep.encode through SQL with airrep.amx off and on and with airrep.precision = bf16.
# Prints two tables: f32 with ratios to PyTorch f32, bf16 with ratios to PyTorch bf16.
#
# PyTorch: $AIRREP_TORCH_PYTHON (default ~/.cache/airrep/torch-venv/bin/python, else python3)
# with torch and transformers, e.g.
#   python3 -m venv ~/.cache/airrep/torch-venv && ~/.cache/airrep/torch-venv/bin/pip install torch transformers
# Without it the PyTorch columns show DESIGN 4's figures for this machine (94 / 330 texts/s).
# Env: BATCHES ("1 32 128"); AIRREP_SIMD = auto | avx512 | avx2 | portable (benches/simd.sh:
# the Rust bench and SQL run at that tier, PyTorch is held to it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
source benches/simd.sh
cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
minilm=$(scripts/fetch-minilm.sh)
source scripts/cluster.sh
work=/tmp/airrep-encode-bench
start_cluster "$work" 28819
mkdir -p "$work/minilm" && cp -r "$minilm/." "$work/minilm/"
read -ra BATCHES <<<"${BATCHES:-1 32 128}"

echo "==> pure Rust (2-thread pool; the bench also writes the texts for the other runners)"
AIRREP_BENCH_TEXTS="$work/texts.json" cargo bench -q -p airrep-model --bench encode -- "${BATCHES[@]}" \
    2>/dev/null | tee "$work/rust.txt"
chmod -R a+rX "$work"

echo "==> PyTorch"
torch_python=${AIRREP_TORCH_PYTHON:-$HOME/.cache/airrep/torch-venv/bin/python}
[ -x "$torch_python" ] || torch_python=python3
if "$torch_python" -c "import torch, transformers" 2>/dev/null; then
    "$torch_python" benches/torch_encode.py "$work/texts.json" "$minilm" 2 "${BATCHES[@]}" | tee "$work/torch.txt"
else
    echo "not installed ($torch_python); using DESIGN 4's figures"
    for b in "${BATCHES[@]}"; do printf 'torch f32 %s 94\ntorch bf16 %s 330\n' "$b" "$b"; done > "$work/torch.txt"
fi

echo "==> through SQL: SELECT airrep.encode('minilm', <256 texts>), airrep.threads = 2"
run_psql -q <<SQL
CREATE EXTENSION airrep;
ALTER DATABASE postgres SET airrep.simd = $SIMD_TIER;
SELECT airrep.load_model('minilm', '$work/minilm');
\set texts \`cat $work/texts.json\`
CREATE TABLE texts AS
SELECT ord - 1 AS i, body FROM json_array_elements_text(:'texts'::json) WITH ORDINALITY AS t(body, ord);
SQL

sql_rate() { # batch amx precision
    local n=256
    [ "$1" = 1 ] && n=64
    run_psql -qAt <<SQL
SET airrep.threads = 2;
SET airrep.batch_size = $1;
SET airrep.amx = $2;
SET airrep.precision = $3;
SELECT count(*) FROM unnest(airrep.encode('minilm', (SELECT array_agg(body) FROM texts WHERE i < 8))) \g /dev/null
CREATE TEMP TABLE t0 AS SELECT clock_timestamp() AS t;
SELECT count(*) FROM unnest(airrep.encode('minilm', (SELECT array_agg(body ORDER BY i) FROM texts WHERE i < $n))) \g /dev/null
SELECT round($n / extract(epoch FROM clock_timestamp() - t)::numeric, 1) FROM t0;
SQL
}
: > "$work/sql.txt"
for b in "${BATCHES[@]}"; do
    for variant in "off f32" "on f32" "on bf16"; do
        set -- $variant
        best=0
        for _ in 1 2 3; do
            r=$(sql_rate "$b" "$1" "$2" | tail -n 1)
            best=$(awk -v a="$best" -v b="$r" 'BEGIN { print (b > a) ? b : a }')
        done
        echo "sql $2-amx-$1 $b $best" | tee -a "$work/sql.txt"
    done
done

python3 - "$work" "${BATCHES[@]}" <<'PY'
import os
import sys
work, batches = sys.argv[1], sys.argv[2:]
rate = {}  # (runner, variant, batch) -> texts/s
for line in open(f"{work}/torch.txt"):
    _, precision, batch, r = line.split()
    rate["torch", precision, batch] = float(r)
for line in open(f"{work}/sql.txt"):
    _, variant, batch, r = line.split()
    rate["sql", variant, batch] = float(r)
for line in open(f"{work}/rust.txt"):  # batch, then wall (per-CPU) for FMA, AMX split, bf16 AMX
    f = line.split()
    if f and f[0] in batches:
        for variant, column in (("f32-fma", 1), ("f32-amx", 3), ("bf16-amx", 5)):  # bf16: AMX, else f32 products
            if column < len(f) - 1:
                rate["rust", variant, f[0]] = float(f[column])
print(f"\ntexts/s, wall clock, best of 3 (ratio to PyTorch of the same precision, same run); SIMD tier {os.environ['AIRREP_SIMD']}")
for title, base, columns in (
    ("f32 (AMX: split bf16 products, f32 to ~1e-5)", "f32",
     [("rust f32 FMA", "rust", "f32-fma"), ("rust f32 AMX", "rust", "f32-amx"),
      ("SQL amx=off", "sql", "f32-amx-off"), ("SQL amx=on", "sql", "f32-amx-on")]),
    ("bf16 (mixed precision: bf16 products, f32 accumulation)", "bf16",
     [("rust bf16", "rust", "bf16-amx"), ("SQL bf16", "sql", "bf16-amx-on")]),
):
    print(f"\n{title}\n{'batch':<6} {'torch ' + base:>11}" + "".join(f" {c[0]:>18}" for c in columns))
    for b in batches:
        t = rate.get(("torch", base, b), float("nan"))
        cells = "".join(
            f" {r:>10.1f} ({r / t:4.2f}x)" if (r := rate.get((runner, variant, b))) else f" {'-':>18}"
            for _, runner, variant in columns
        )
        print(f"{b:<6} {t:>11.1f}{cells}")
PY
