#!/usr/bin/env bash
# MiniLM-L6 encoding throughput on ~113-token texts, 2 threads, batch 1/32/128, all in one run
# on the same texts: PyTorch f32 and bf16 (when installed), the pure-Rust encoder with f32 FMA
# and with AMX split products (crates/airrep-model/benches/encode.rs), and airrep.encode
# through SQL with airrep.amx on and off. Prints a table with ratios to PyTorch f32.
#
# PyTorch: $AIRREP_TORCH_PYTHON (default ~/.cache/airrep/torch-venv/bin/python, else python3)
# with torch and transformers, e.g.
#   python3 -m venv ~/.cache/airrep/torch-venv && ~/.cache/airrep/torch-venv/bin/pip install torch transformers
# Without it the PyTorch columns show DESIGN 4's figures for this machine (94 / 330 texts/s).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
minilm=$(scripts/fetch-minilm.sh)
source scripts/cluster.sh
work=/tmp/airrep-encode-bench
start_cluster "$work" 28819
mkdir -p "$work/minilm" && cp -r "$minilm/." "$work/minilm/"
BATCHES=(1 32 128)

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
SELECT airrep.load_model('minilm', '$work/minilm');
\set texts \`cat $work/texts.json\`
CREATE TABLE texts AS
SELECT ord - 1 AS i, body FROM json_array_elements_text(:'texts'::json) WITH ORDINALITY AS t(body, ord);
SQL

sql_rate() { # batch amx
    local n=256
    [ "$1" = 1 ] && n=64
    run_psql -qAt <<SQL
SET airrep.threads = 2;
SET airrep.batch_size = $1;
SET airrep.amx = $2;
SELECT count(*) FROM unnest(airrep.encode('minilm', (SELECT array_agg(body) FROM texts WHERE i < 8))) \g /dev/null
CREATE TEMP TABLE t0 AS SELECT clock_timestamp() AS t;
SELECT count(*) FROM unnest(airrep.encode('minilm', (SELECT array_agg(body ORDER BY i) FROM texts WHERE i < $n))) \g /dev/null
SELECT round($n / extract(epoch FROM clock_timestamp() - t)::numeric, 1) FROM t0;
SQL
}
: > "$work/sql.txt"
for b in "${BATCHES[@]}"; do
    for amx in off on; do
        best=0
        for _ in 1 2 3; do
            r=$(sql_rate "$b" "$amx" | tail -n 1)
            best=$(awk -v a="$best" -v b="$r" 'BEGIN { print (b > a) ? b : a }')
        done
        echo "sql $amx $b $best" | tee -a "$work/sql.txt"
    done
done

echo
echo "texts/s, wall clock, best of 3 (ratio to PyTorch f32 in the same run)"
printf "%-6s %10s %10s %18s %18s %18s %18s\n" batch "torch f32" "torch bf16" \
    "rust f32 FMA" "rust AMX split" "SQL amx=off" "SQL amx=on"
for b in "${BATCHES[@]}"; do
    awk -v b="$b" '
        FILENAME ~ /torch/ && $3 == b { torch[$2] = $4 }
        FILENAME ~ /rust/ && $1 == b { fma = $2; amx = $4 }
        FILENAME ~ /sql/ && $3 == b { sql[$2] = $4 }
        END {
            t = torch["f32"]
            printf "%-6s %10.1f %10.1f %10.1f (%4.2fx) %10.1f (%4.2fx) %10.1f (%4.2fx) %10.1f (%4.2fx)\n",
                b, t, torch["bf16"], fma, fma / t, amx, amx / t, sql["off"], sql["off"] / t, sql["on"], sql["on"] / t
        }' "$work/torch.txt" "$work/rust.txt" "$work/sql.txt"
done
