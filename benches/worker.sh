#!/usr/bin/env bash
# The background embedding worker against CALL airrep.embed, in one run on the same rows:
#   1. throughput: N rows embedded by CALL airrep.embed (one table) and by the worker after
#      airrep.keep_embedded (a copy of it), wall clock from the call to the last vector, as
#      rows/s and their ratio (the goal: the worker at 0.9x or more);
#   2. INSERT to searchable: single-row INSERTs committed at a steady rate while the worker
#      runs; the delay from each row's commit to its vector's write (a trigger's clock), as
#      median, 95th percentile and max.
# Usage: benches/worker.sh [rows (2000)] [model: minilm | tiny (minilm)] [inserts/s (20)] [seconds (20)]
# Both sides encode with airrep.threads = 2 and 64-row batches.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-2000} MODEL=${2:-minilm} RATE=${3:-20} SECONDS_STEADY=${4:-20}
source scripts/setup.sh
cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
minilm=$(scripts/fetch-minilm.sh)
source scripts/cluster.sh
work=/tmp/airrep-worker-bench
CLUSTER_OPTIONS="-c shared_preload_libraries=airrep -c airrep.worker_batch_size=64" start_cluster "$work" 28825
mkdir -p "$work/models/minilm" && cp -r "$minilm/." "$work/models/minilm/"
cp -r tests/golden/tiny-airrep "$work/models/tiny"
chmod -R a+rX "$work/models"
q() { run_psql -qAt "$@"; }

q <<SQL >/dev/null
CREATE EXTENSION airrep;
SELECT airrep.load_model('$MODEL', '$work/models/$MODEL');
-- texts of varied length, ~20-60 words
CREATE TABLE by_call (id int PRIMARY KEY, body text, embedding airrep_vector);
INSERT INTO by_call
SELECT i, string_agg((ARRAY['training','data','attribution','ranks','examples','by','influence',
                            'on','a','target','with','attention','pooling','over','subsets'])[1 + (i * 7 + w * 13) % 15], ' ')
FROM generate_series(1, $ROWS) i, generate_series(1, 20 + i % 40) w GROUP BY i;
CREATE TABLE by_worker AS SELECT * FROM by_call;
ALTER TABLE by_worker ADD PRIMARY KEY (id);
SQL

echo "==> $ROWS rows, model $MODEL: CALL airrep.embed"
call_s=$(q <<SQL | tail -1
SET client_min_messages = warning;
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
CALL airrep.embed('by_call', 'body', 'embedding', '$MODEL', 64);
SELECT extract(epoch FROM clock_timestamp()) - :t0;
SQL
)
echo "==> the same rows by the worker (airrep.keep_embedded, then wait for the last vector)"
worker_s=$(q <<SQL | tail -1
SET client_min_messages = warning;
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT airrep.keep_embedded('by_worker', 'body', 'embedding', '$MODEL') > 0;
DO \$\$ BEGIN
    WHILE EXISTS (SELECT 1 FROM by_worker WHERE embedding IS NULL) LOOP PERFORM pg_sleep(0.02); END LOOP;
END \$\$;
SELECT extract(epoch FROM clock_timestamp()) - :t0;
SQL
)
[ "$(q -c "SELECT count(*) FROM by_worker w JOIN by_call c USING (id) WHERE w.embedding <-> c.embedding < 1e-4")" = "$ROWS" ] ||
    { echo "FAIL: the worker's vectors differ from CALL airrep.embed's" >&2; exit 1; }

echo "==> steady inserts: $RATE rows/s for $SECONDS_STEADY s while the worker runs"
q <<SQL >/dev/null
CREATE TABLE arrivals (id int PRIMARY KEY, body text, inserted_at timestamptz, embedded_at timestamptz,
                       embedding airrep_vector);
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN NEW.embedded_at := clock_timestamp(); RETURN NEW; END \$\$;
-- after airrep's trigger (alphabetical order): stamps the worker's write of the vector
CREATE TRIGGER z_stamp BEFORE UPDATE OF embedding ON arrivals FOR EACH ROW
    WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION stamp();
SELECT airrep.keep_embedded('arrivals', 'body', 'embedding', '$MODEL') > 0;
SQL
n=$((RATE * SECONDS_STEADY))
q -c "DO \$\$ BEGIN FOR i IN 1..$n LOOP
          INSERT INTO arrivals (id, body, inserted_at)
          SELECT i, body, clock_timestamp() FROM by_call WHERE id = 1 + i % $ROWS;
          COMMIT;
          PERFORM pg_sleep(1.0 / $RATE);
      END LOOP; END \$\$"
q -c "DO \$\$ BEGIN WHILE EXISTS (SELECT 1 FROM arrivals WHERE embedding IS NULL) LOOP PERFORM pg_sleep(0.05); END LOOP; END \$\$"

q <<SQL
SELECT format('throughput, %s rows of %s:', $ROWS, '$MODEL');
SELECT format('  CALL airrep.embed   %8s rows/s  (%s s)', round($ROWS / $call_s, 1), round($call_s::numeric, 2));
SELECT format('  background worker   %8s rows/s  (%s s)', round($ROWS / $worker_s, 1), round($worker_s::numeric, 2));
SELECT format('  worker / embed      %8s x', round(($call_s / $worker_s)::numeric, 3));
SELECT format('INSERT to searchable at %s rows/s (%s rows): median %s ms, p95 %s ms, max %s ms', $RATE, count(*),
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY d)::numeric, 1),
              round(percentile_cont(0.95) WITHIN GROUP (ORDER BY d)::numeric, 1), round(max(d)::numeric, 1))
FROM (SELECT extract(epoch FROM embedded_at - inserted_at) * 1000 AS d FROM arrivals) delays;
SQL
