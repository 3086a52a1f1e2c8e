#!/usr/bin/env bash
# Peak memory of one backend running each search and cleaning function on wide rows and
# on many targets, next to the README's bound ("Memory" under "Selecting training data"):
#   held + 5 x block + 32 MB over the backend's own peak before the call,
# where block = airrep.max_block_mb (64 MB by default) of vectors. Each case runs in a
# fresh backend, which then reads its own peak (VmHWM in /proc/self/status).
# Usage: benches/memory.sh [rows dim]   (default 5000 16000; the issue's report used 20000)
# Env: TARGETS_2D (1000000), the 2-dim targets of the many-targets case;
#      AIRREP_INSTALLED=1 uses the airrep already installed (e.g. by scripts/regress.sh)
#      instead of a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-5000} DIM=${2:-16000} TARGETS_2D=${TARGETS_2D:-1000000}
source scripts/setup.sh
if [ "${AIRREP_INSTALLED:-}" != 1 ]; then
    cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
fi
source scripts/cluster.sh
CLUSTER_OPTIONS="-c max_parallel_workers_per_gather=0 -c jit=off" start_cluster /tmp/airrep-memory 28821

echo "==> $ROWS rows of $DIM dims; $TARGETS_2D targets of 2 dims"
run_psql -q <<SQL
CREATE EXTENSION airrep;
CREATE TABLE wide (id bigint, text text, embedding airrep_vector($DIM));
INSERT INTO wide
SELECT i, 'row ' || i, (SELECT array_agg(sin(i * 7.1 + j)::real) FROM generate_series(1, $DIM) j)::airrep_vector
FROM generate_series(1, $ROWS) i;
CREATE TABLE one AS SELECT * FROM wide WHERE id = 1;
CREATE TABLE targets_2d AS
SELECT i::bigint AS id, ARRAY[sin(i), cos(i)]::real[]::airrep_vector AS embedding FROM generate_series(1, $TARGETS_2D) i;
CREATE TABLE pool_2d AS
SELECT i::bigint AS id, ARRAY[sin(i * 3), cos(i * 5)]::real[]::airrep_vector AS embedding FROM generate_series(1, 1000) i;
VACUUM ANALYZE;
SQL

block_mb=$(run_psql -Atc "SELECT effective FROM airrep.settings() WHERE name = 'airrep.max_block_mb'")
wide_mb=$(( ROWS * DIM * 4 / 1048576 ))
one_mb=$(( DIM * 4 / 1048576 ))
# case NAME HELD_MB SQL: the peak of a fresh backend running SQL, over its peak just before
case_peak() {
    local name=$1 held=$2 sql=$3
    local out
    out=$(run_psql -At <<SQL
SELECT influence('[1]', '[1]');  -- loads the library: the peak before the call
SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+)'))[1]::bigint / 1024;
$sql;
SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+)'))[1]::bigint / 1024;
SQL
)
    local before after
    before=$(sed -n 2p <<<"$out")
    after=$(tail -n 1 <<<"$out")
    local bound=$(( held + 5 * block_mb + 32 ))
    printf '%-58s %6d MB over %4d MB before; bound %6d MB (held %d + 5 x %d + 32)  %s\n' \
        "$name" $((after - before)) "$before" "$bound" "$held" "$block_mb" \
        "$([ $((after - before)) -le "$bound" ] && echo ok || echo OVER)"
}
case_peak "top_k: 1 target x $ROWS rows" "$one_mb" \
    "SELECT count(*) FROM airrep.top_k('one', 'wide', 10)"
case_peak "select_data 'group': 1 target x $ROWS rows" "$one_mb" \
    "SELECT count(*) FROM airrep.select_data('one', 'wide', 10, 'group')"
case_peak "contamination 'embedding': 1 item x $ROWS rows" "$((2 * one_mb))" \
    "SELECT count(*) FROM airrep.contamination('wide', 'one', '{embedding}')"
case_peak "near_duplicates: $ROWS rows" "$((2 * block_mb))" \
    "SELECT count(*) FROM airrep.near_duplicates('wide', 0.99)"
# held: about 200 bytes per target (its id and vector, its heap, its hits and result row)
held_2d=$(( TARGETS_2D * 200 / 1048576 ))
case_peak "top_k: $TARGETS_2D targets of 2 dims x 1000 rows" "$held_2d" \
    "SELECT count(*) FROM airrep.top_k('targets_2d', 'pool_2d', 1)"
