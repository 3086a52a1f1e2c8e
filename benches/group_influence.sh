#!/usr/bin/env bash
# Throughput of group_influence over 1M 384-dim rows, next to sum(influence(...)),
# count(*) and, where pgvector is built (scripts/vendor.sh), pgvector's sum(v <#> q) over
# the same rows in the same cluster, as rows/s and ratios.
# Usage: benches/group_influence.sh [rows]   (release build, throwaway cluster)
# Env: AIRREP_SIMD = auto | avx512 | avx2 | portable (benches/simd.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
source benches/simd.sh
ROWS=${1:-1000000}
scripts/vendor.sh pgvector
cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
source scripts/cluster.sh
CLUSTER_OPTIONS="-c shared_buffers=2GB -c max_parallel_workers_per_gather=0 -c jit=off" \
    start_cluster /tmp/airrep-bench 28816

echo "==> building a table of $ROWS random 384-dim rows"
run_psql -q <<SQL
CREATE EXTENSION airrep;
ALTER DATABASE postgres SET airrep.simd = $SIMD_TIER;
SELECT setseed(0.1);
CREATE TABLE base AS
SELECT b AS id, (SELECT array_agg(random() * 2 - 1 + d * 0 + b * 0) FROM generate_series(1, 384) AS d)::airrep_vector AS v
FROM generate_series(0, 999) b;
CREATE TABLE pool AS SELECT i AS id, base.v FROM generate_series(1, $ROWS) i JOIN base ON base.id = i % 1000;
CREATE TABLE target AS SELECT v FROM base WHERE id = 7;
VACUUM ANALYZE pool;
SELECT count(*) FROM pool;  -- warm the cache
SQL

# best of three runs of each query, in milliseconds
best_ms() {
    local best=""
    for _ in 1 2 3; do
        local ms
        ms=$(run_psql -qAt -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
        if [ -z "$best" ] || awk "BEGIN{exit !($ms < $best)}"; then best=$ms; fi
    done
    echo "$best"
}

count_ms=$(best_ms "SELECT count(*) FROM pool")
sum_ms=$(best_ms "SELECT sum(influence(t.v, p.v)) FROM pool p, target t")
group_ms=$(best_ms "SELECT group_influence(t.v, p.v) FROM pool p, target t")
group_sum_ms=$(best_ms "SELECT group_influence(t.v, p.v, 'sum') FROM pool p, target t")
# pgvector's own column type and operator, the peer a pgvector user would run.
PGVECTOR=$([ -f "$($PG_CONFIG --sharedir)/extension/vector.control" ] && echo yes || echo no)
if [ "$PGVECTOR" = yes ]; then
    run_psql -q -c "CREATE EXTENSION vector" -c "SELECT airrep.create_pgvector_casts()" \
        -c "CREATE TABLE pgv_pool AS SELECT id, v::vector(384) AS v FROM pool" \
        -c "CREATE TABLE pgv_target AS SELECT v::vector(384) AS v FROM target" \
        -c "VACUUM ANALYZE pgv_pool" -c "SELECT count(*) FROM pgv_pool"
    pgvector_ms=$(best_ms "SELECT sum(p.v <#> t.v) FROM pgv_pool p, pgv_target t")
fi

report() { awk -v rows="$ROWS" -v ms="$2" -v base="$sum_ms" -v name="$1" \
    'BEGIN { printf "%-44s %9.1f ms %12.0f rows/s %7.2fx\n", name, ms, rows / (ms / 1000), ms / base }'; }
echo
echo "serial scan of $ROWS rows (best of 3); ratio = time / sum(influence) time"
run_psql -qAt -c "SELECT 'airrep.simd in use: ' || effective FROM airrep.settings() WHERE name = 'airrep.simd'"
report "count(*)" "$count_ms"
report "sum(influence(t, m))" "$sum_ms"
report "group_influence(t, m)  [attention]" "$group_ms"
report "group_influence(t, m, 'sum')" "$group_sum_ms"
if [ "$PGVECTOR" = yes ]; then
    report "pgvector sum(m <#> t) on vector(384)" "$pgvector_ms"
    awk -v g="$group_ms" -v s="$sum_ms" -v p="$pgvector_ms" 'BEGIN {
        printf "rows/s against pgvector: group_influence %.2fx, sum(influence) %.2fx\n", p / g, p / s }'
else
    echo "pgvector row skipped: pgvector is not built (no ../shared/vendor source)"
fi
