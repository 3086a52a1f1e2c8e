#!/usr/bin/env bash
# Concurrent backends give the results of one backend alone: 8 sessions at once each run
# the same workload (encode texts with a cached model, a parallel group_influence, top_k, a
# model cache filled and evicted by two models) several times, and every output must equal
# a serial reference run. Nothing may crash: the postmaster's start time is unchanged at the
# end. Bounded: a fixed number of rounds. Needs scripts/test.sh's fixtures and an installed
# build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster.sh
start_cluster /tmp/airrep-concurrency 28823
work=/tmp/airrep-concurrency/out
rm -rf "$work" && mkdir -p "$work" && chown postgres "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
run_psql -q >/dev/null <<'SQL'
CREATE EXTENSION airrep;
SELECT airrep.load_model('tiny', '/tmp/airrep-fixtures/tiny-airrep');
SELECT airrep.load_model('tiny-again', '/tmp/airrep-fixtures/tiny-airrep');
CREATE TABLE docs AS SELECT i AS id, 'document number ' || i || repeat(' word', i % 7) AS text
FROM generate_series(1, 200) i;
ALTER TABLE docs ADD COLUMN embedding airrep_vector;
UPDATE docs SET embedding = airrep.encode('tiny', text);
SQL
started=$(run_psql -qAt -c "SELECT pg_postmaster_start_time()")
cat >"$work/workload.sql" <<'SQL'
\pset format unaligned
\pset tuples_only on
SET airrep.model_cache_size = 1;  -- two models in turn: the cache fills and evicts
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
SELECT id, airrep.encode('tiny', text)::text FROM docs WHERE id % 10 = 0 ORDER BY id;
SELECT id, airrep.encode('tiny-again', text)::text FROM docs WHERE id % 10 = 5 ORDER BY id;
SELECT id % 4, round(group_influence(t.embedding, d.embedding)::numeric, 9)
FROM docs d, (SELECT embedding FROM docs WHERE id = 1) t GROUP BY id % 4 ORDER BY 1;
SELECT target_id, example_id, rank FROM airrep.top_k('docs', 'docs', 3) WHERE target_id <= 20 ORDER BY 1, 3;
SQL
run_psql -q -f "$work/workload.sql" -o "$work/reference.out"
[ -s "$work/reference.out" ] || fail "the reference run wrote nothing"
sessions=()
for session in $(seq 1 8); do
    (
        for round in 1 2 3; do
            run_psql -q -f "$work/workload.sql" -o "$work/session$session.round$round.out"
        done
    ) &
    sessions+=($!)
done
for pid in "${sessions[@]}"; do
    wait "$pid" || fail "a session failed (its error is above)"
done
[ "$(ls "$work"/session*.out | wc -l)" = 24 ] || fail "not every round wrote its output"
for out in "$work"/session*.out; do
    cmp -s "$work/reference.out" "$out" || fail "$(basename "$out") differs from the serial run"
done
[ "$(run_psql -qAt -c "SELECT pg_postmaster_start_time()")" = "$started" ] ||
    fail "the postmaster restarted: a backend crashed"
echo "concurrency: 8 backends x 3 rounds equal the serial run; no crash"
