#!/usr/bin/env bash
# Exact top-k speed: airrep.top_k against what a user would do instead, on the same random
# data in one run, as times and ratios.
#   * numpy: T @ P.T per block of the pool + argpartition, with the same thread count;
#   * the per-target ORDER BY influence(...) DESC LIMIT k scan through SQL (timed on a
#     sample of targets, scaled to all);
#   * where pgvector is built (scripts/vendor.sh): its exact scan through the casts, and
#     HNSW (build time, query time, recall@k) on the first HNSW_ROWS pool rows.
# Usage: benches/top_k.sh [targets pool dim k]   (default 1000 1000000 384 100)
# Env: THREADS (2), SQL_SAMPLE targets for the per-target scans (5), HNSW_ROWS (100000),
# AIRREP_SIMD = auto | avx512 | avx2 | portable (benches/simd.sh: numpy held to the same
# tier), PYTHON (python3) with numpy.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
source benches/simd.sh
PYTHON=${PYTHON:-python3}
TARGETS=${1:-1000} POOL=${2:-1000000} DIM=${3:-384} K=${4:-100}
THREADS=${THREADS:-2} SQL_SAMPLE=${SQL_SAMPLE:-5} HNSW_ROWS=${HNSW_ROWS:-100000}
WORK=${AIRREP_BENCH_DIR:-/tmp/airrep-top-k}
rm -rf "$WORK" && mkdir -p "$WORK" && chmod 777 "$WORK"

scripts/vendor.sh pgvector
cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
source scripts/cluster.sh
CLUSTER_OPTIONS="-c shared_buffers=4GB -c max_parallel_workers_per_gather=0 -c jit=off -c maintenance_work_mem=2GB" \
    start_cluster /tmp/airrep-bench 28816

echo "==> $TARGETS targets x $POOL pool rows of $DIM dims, k = $K, $THREADS threads"
"$PYTHON" benches/top_k.py generate "$WORK" "$TARGETS" "$POOL" "$DIM" 7
chmod a+r "$WORK"/*
PGVECTOR=$([ -f "$($PG_CONFIG --sharedir)/extension/vector.control" ] && echo yes || echo no)
run_psql -q <<SQL
CREATE EXTENSION airrep;
ALTER DATABASE postgres SET airrep.simd = $SIMD_TIER;
CREATE TABLE targets (id bigint, embedding airrep_vector($DIM));
CREATE TABLE pool (id bigint, embedding airrep_vector($DIM));
COPY targets FROM '$WORK/targets.copy' (FORMAT binary);
COPY pool FROM '$WORK/pool.copy' (FORMAT binary);
VACUUM ANALYZE targets; VACUUM ANALYZE pool;
SELECT count(*) FROM pool;  -- warm the cache
SQL

seconds() {  # the time of one statement, in seconds
    run_psql -qAt -c "SET airrep.threads = $THREADS" -c '\timing on' -c "$1" |
        sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1 | awk '{ printf "%.3f", $1 / 1000 }'
}

airrep_s=$(seconds "CREATE TABLE result AS SELECT * FROM airrep.top_k('targets', 'pool', $K)")
run_psql -qAt -c "COPY (SELECT target_id, example_id FROM result) TO '$WORK/airrep.csv' (FORMAT csv)"
numpy_s=$(OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS "$PYTHON" benches/top_k.py numpy "$WORK" "$K")
airrep_recall=$("$PYTHON" benches/top_k.py compare "$WORK" "$WORK/airrep.csv" "$K")

run_psql -q -c "CREATE TABLE sample AS SELECT * FROM targets ORDER BY id LIMIT $SQL_SAMPLE"
scan_query="SELECT t.id, p.id FROM sample t, LATERAL (SELECT id FROM pool ORDER BY influence(t.embedding, embedding) DESC, id LIMIT $K) p"
scan_s=$(seconds "$scan_query")

rows=()
report() { rows+=("$(awk -v n="$1" -v s="$2" -v base="$airrep_s" -v r="$3" \
    'BEGIN { printf "%-58s %10.2f s %9.2fx  %s", n, s, s / base, r }')"); }
report "airrep.top_k (all targets)" "$airrep_s" "recall@$K vs numpy $airrep_recall"
report "numpy T @ P.T + argpartition" "$numpy_s" ""
report "SQL ORDER BY influence LIMIT k, per target (scaled)" \
    "$(awk -v s="$scan_s" -v n="$SQL_SAMPLE" -v t="$TARGETS" 'BEGIN { print s / n * t }')" "$SQL_SAMPLE targets timed"

if [ "$PGVECTOR" = yes ]; then
    run_psql -q -c "CREATE EXTENSION vector" -c "SELECT airrep.create_pgvector_casts()"
    exact_query="SELECT t.id, p.id FROM sample t, LATERAL (SELECT id FROM pool ORDER BY embedding::vector($DIM) <#> t.embedding::vector($DIM) LIMIT $K) p"
    report "pgvector exact scan, per target (scaled)" \
        "$(awk -v s="$(seconds "$exact_query")" -v n="$SQL_SAMPLE" -v t="$TARGETS" 'BEGIN { print s / n * t }')" "$SQL_SAMPLE targets timed"
    run_psql -q -c "CREATE TABLE small AS SELECT * FROM pool WHERE id <= $HNSW_ROWS"
    build_s=$(seconds "CREATE INDEX ON small USING hnsw ((embedding::vector($DIM)) vector_ip_ops)")
    run_psql -q -c "CREATE TABLE small_exact AS SELECT * FROM airrep.top_k('sample', 'small', $K)"
    hnsw_query="SELECT t.id AS target_id, p.id AS example_id FROM sample t, LATERAL (SELECT id FROM small ORDER BY embedding::vector($DIM) <#> t.embedding::vector($DIM) LIMIT $K) p"
    hnsw_s=$(seconds "SET hnsw.ef_search = $((K > 40 ? K : 40)); CREATE TABLE small_hnsw AS $hnsw_query")
    recall=$(run_psql -qAt -c "SELECT round(avg(hits::numeric / $K), 4) FROM (SELECT e.target_id, count(h.example_id) AS hits FROM small_exact e LEFT JOIN small_hnsw h USING (target_id, example_id) GROUP BY 1) r")
    airrep_small_s=$(seconds "SELECT count(*) FROM airrep.top_k('targets', 'small', $K)")
    report "pgvector HNSW build on $HNSW_ROWS rows" "$build_s" ""
    report "pgvector HNSW, $HNSW_ROWS rows, per target (scaled)" \
        "$(awk -v s="$hnsw_s" -v n="$SQL_SAMPLE" -v t="$TARGETS" 'BEGIN { print s / n * t }')" "recall@$K $recall (ef_search $((K > 40 ? K : 40)))"
    report "airrep.top_k, $HNSW_ROWS rows (all targets)" "$airrep_small_s" "exact"
else
    rows+=("pgvector rows skipped: pgvector is not built (no ../shared/vendor source)")
fi

echo
echo "$TARGETS targets x $POOL rows x $DIM dims, k = $K, $THREADS threads; ratio = time / airrep.top_k time"
echo "SIMD tier $SIMD_TIER (best here $SIMD_BEST); $SIMD_PEERS"
printf '%s\n' "${rows[@]}"
