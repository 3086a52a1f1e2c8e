#!/usr/bin/env bash
# Encoding throughput of MiniLM-L6 through SQL (airrep.encode over an array, airrep.threads = 2)
# at batch 1, 32 and 128, next to the pure-Rust encoder on the same texts in the same run
# (crates/airrep-model/benches/encode.rs) and PyTorch's f32 figure on this machine (94 texts/s).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
minilm=$(scripts/fetch-minilm.sh)
source scripts/cluster.sh
start_cluster /tmp/airrep-encode-bench 28819
mkdir -p /tmp/airrep-encode-bench/minilm && cp -r "$minilm/." /tmp/airrep-encode-bench/minilm/
chmod -R a+rX /tmp/airrep-encode-bench/minilm

# The same ~113-token instruction pairs as the Rust bench: 29 words, index (7i + 13j + j^2) mod 29.
run_psql -q <<'SQL'
CREATE EXTENSION airrep;
SELECT airrep.load_model('minilm', '/tmp/airrep-encode-bench/minilm');
CREATE TABLE texts AS
WITH words AS (SELECT ARRAY['the','model','learns','which','training','examples','help','a','target',
    'question','about','history','science','and','language','when','we','retrain','on','small',
    'subsets','of','data','then','measure','loss','for','each','one'] AS w)
SELECT i, airrep.format(
    (SELECT string_agg(w[1 + (i * 7 + j * 13 + j * j) % 29], ' ' ORDER BY j) FROM generate_series(0, 54) j),
    (SELECT string_agg(w[1 + (i * 7 + j * 13 + j * j) % 29], ' ' ORDER BY j) FROM generate_series(55, 99) j)) AS body
FROM generate_series(0, 255) i, words;
SQL

sql_rate() {
    run_psql -qAt <<SQL
SET airrep.threads = 2;
SET airrep.batch_size = $1;
SELECT count(*) FROM unnest(airrep.encode('minilm', (SELECT array_agg(body) FROM texts WHERE i < 8))); -- load, warm up
CREATE TEMP TABLE t0 AS SELECT clock_timestamp() AS t;
SELECT count(*) FROM unnest(airrep.encode('minilm', (SELECT array_agg(body ORDER BY i) FROM texts))) \g /dev/null
SELECT round(256 / extract(epoch FROM clock_timestamp() - t)::numeric, 1) FROM t0;
SQL
}

echo "==> pure Rust (same process layout as a backend: 2-thread pool)"
cargo bench -q -p airrep-model --bench encode 2>/dev/null | tee /tmp/airrep-encode-bench/rust.txt
echo
echo "==> through SQL: SELECT airrep.encode('minilm', <256 texts>), airrep.threads = 2"
printf "%-8s %12s %14s\n" batch "texts/s" "vs PyTorch 94"
for batch in 1 32 128; do
    rate=$(sql_rate "$batch" | tail -n 1)
    awk -v b="$batch" -v r="$rate" 'BEGIN { printf "%-8s %12.1f %13.2fx\n", b, r, r / 94 }'
done
