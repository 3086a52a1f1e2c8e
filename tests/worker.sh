#!/usr/bin/env bash
# The background embedding worker end to end, in a cluster that preloads airrep: rows
# inserted or changed after airrep.keep_embedded are embedded with no call, each vector the
# model's embedding of its text (airrep.encode, the reference), each row embedded once even
# when the worker is terminated or killed mid-batch; row-level security applies to a plain
# role's job; a model switch leaves no old-model vector once it commits; concurrent writers
# lose no update; dump/restore keeps the jobs; DROP TABLE ends a job; a database without jobs
# keeps no worker. Waits poll with a deadline (a failure, not a timing threshold). Needs
# scripts/test.sh's fixtures and an installed build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster.sh
ROWS=${AIRREP_WORKER_ROWS:-10000}
CLUSTER_OPTIONS="-c shared_preload_libraries=airrep -c airrep.worker_naptime=2 -c max_worker_processes=16" \
    start_cluster /tmp/airrep-worker 28824
work=/tmp/airrep-worker/files
rm -rf "$work" && mkdir -p "$work" && chown postgres "$work"
run_psql -q -c "CREATE DATABASE worker" -c "CREATE DATABASE restored" -c "CREATE ROLE analyst LOGIN"
q() { as_postgres psql -h /tmp -p "$CLUSTER_PORT" -U "${AS_ROLE:-postgres}" -d "${DB:-worker}" -X -v ON_ERROR_STOP=1 -qAt "$@"; }
fail() { echo "FAIL: $*" >&2; tail -20 /tmp/airrep-worker/postgres.log >&2; exit 1; }
# wait_for WHAT QUERY: until QUERY returns t (a failure after 300 s, never a timing assertion)
wait_for() {
    local deadline=$((SECONDS + 300))
    until [ "$(q -c "$2" 2>/dev/null)" = t ]; do
        [ $SECONDS -lt $deadline ] || fail "gave up waiting for $1"
        sleep 0.2
    done
}
worker_pid() { q -c "SELECT airrep.embedding_worker_pid()"; }

q <<'SQL' >/dev/null
CREATE EXTENSION airrep;
SELECT airrep.load_model('tiny', '/tmp/airrep-fixtures/tiny-airrep');
SELECT airrep.load_model('minilm', '/tmp/airrep-fixtures/minilm');
-- every embedding write, to count how often each row was embedded
CREATE TABLE embedded_log (relation text, id int);
CREATE FUNCTION log_embedding() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- qualified: a batch runs with search_path pg_catalog, pg_temp, as airrep.embed does
    IF NEW.embedding IS NOT NULL THEN INSERT INTO public.embedded_log VALUES (TG_TABLE_NAME, NEW.id); END IF;
    RETURN NULL;
END $$;
-- makes a batch take a while, so a terminate or a kill lands in the middle of one
CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.005); RETURN NEW; END $$;
CREATE TABLE docs (id int PRIMARY KEY, body text, topic text, embedding airrep_vector(32));
CREATE TRIGGER log AFTER UPDATE OF embedding ON docs FOR EACH ROW EXECUTE FUNCTION log_embedding();
SQL
[ -z "$(worker_pid)" ] || fail "a worker runs in a database without jobs"
q -c "SELECT airrep.keep_embedded('docs', 'body', 'embedding', 'tiny')" >/dev/null
wait_for "the worker to start" "SELECT airrep.embedding_worker_pid() IS NOT NULL"

echo "== $ROWS rows inserted after keep_embedded are embedded with no call"
for start in $(seq 1 1000 "$ROWS"); do
    q -c "INSERT INTO docs SELECT i, 'document ' || i || ' about ' || (ARRAY['cats','dogs','tea','rust'])[1 + i % 4], 'misc'
          FROM generate_series($start, least($start + 999, $ROWS)) i"
done
wait_for "all rows embedded" "SELECT count(*) = 0 FROM docs WHERE embedding IS NULL"
[ "$(q -c "SELECT count(*) FROM docs WHERE embedding <-> airrep.encode('tiny', body) < 1e-5")" = "$ROWS" ] ||
    fail "a vector differs from airrep.encode of its text"
[ "$(q -c "SELECT count(*) = count(DISTINCT id) AND count(*) = $ROWS FROM embedded_log WHERE relation = 'docs'")" = t ] ||
    fail "a row was embedded more than once, or not at all"
q -c "SELECT relation, model, state, rows, pending_rows, rows_per_second > 0, last_error IS NULL FROM airrep.embedding_status"

echo "== an UPDATE of the text leaves NULL at once and the new vector later; other updates keep it"
[ "$(q -c "UPDATE docs SET body = 'document 7 now about compilers' WHERE id = 7 RETURNING embedding IS NULL")" = t ] ||
    fail "a changed text kept its old vector"
wait_for "the new text's vector" "SELECT embedding <-> airrep.encode('tiny', body) < 1e-5 FROM docs WHERE id = 7"
before=$(q -c "SELECT count(*) FROM embedded_log")
q -c "UPDATE docs SET topic = 'changed' WHERE id BETWEEN 1 AND 100"
q -c "INSERT INTO docs VALUES (0, 'a marker row', 'misc')"  # the worker has run once the marker is done
wait_for "the marker row" "SELECT embedding IS NOT NULL FROM docs WHERE id = 0"
[ "$(q -c "SELECT count(*) FROM embedded_log")" = $((before + 1)) ] || fail "an update of another column re-embedded rows"

echo "== terminated mid-batch (pg_terminate_backend), the worker resumes: every row embedded once"
q <<'SQL'
CREATE TABLE slow (id int PRIMARY KEY, body text, embedding airrep_vector(32));
CREATE TRIGGER slow BEFORE UPDATE OF embedding ON slow FOR EACH ROW EXECUTE FUNCTION slow_down();
CREATE TRIGGER log AFTER UPDATE OF embedding ON slow FOR EACH ROW EXECUTE FUNCTION log_embedding();
SELECT airrep.keep_embedded('slow', 'body', 'embedding', 'tiny') > 0;
INSERT INTO slow SELECT i, 'slow row ' || i FROM generate_series(1, 3000) i;
SQL
wait_for "some slow rows embedded" "SELECT count(*) > 100 FROM slow WHERE embedding IS NOT NULL"
first=$(worker_pid)
q -c "SELECT pg_terminate_backend($first)" >/dev/null
wait_for "a new worker" "SELECT coalesce(airrep.embedding_worker_pid() <> $first, false)"
echo "== killed mid-batch (SIGKILL: the server restarts), the worker resumes"
wait_for "more slow rows embedded" "SELECT count(*) > 1000 FROM slow WHERE embedding IS NOT NULL"
kill -9 "$(worker_pid)"
sleep 1
wait_for "the server back with a worker" "SELECT airrep.embedding_worker_pid() IS NOT NULL"
wait_for "all slow rows embedded" "SELECT count(*) = 0 FROM slow WHERE embedding IS NULL"
[ "$(q -c "SELECT count(*) FROM slow WHERE embedding <-> airrep.encode('tiny', body) < 1e-5")" = 3000 ] ||
    fail "a slow row's vector differs from airrep.encode of its text"
[ "$(q -c "SELECT count(*) = 3000 AND count(DISTINCT id) = 3000 FROM embedded_log WHERE relation = 'slow'")" = t ] ||
    fail "after the terminate and the kill, a row was embedded twice or not at all"
grep -q "terminated by signal 9" /tmp/airrep-worker/postgres.log || fail "the kill did not happen"

echo "== a model switch leaves no old-model vector once keep_embedded commits"
# minilm makes 384 dimensions, tiny 32: a vector's model shows in its length.
q <<'SQL' >/dev/null
CREATE TABLE switch (id int PRIMARY KEY, body text, embedding airrep_vector);
CREATE TRIGGER slow BEFORE UPDATE OF embedding ON switch FOR EACH ROW EXECUTE FUNCTION slow_down();
SELECT airrep.keep_embedded('switch', 'body', 'embedding', 'tiny');
INSERT INTO switch SELECT i, 'switch row ' || i FROM generate_series(1, 400) i;
SQL
wait_for "some switch rows embedded by tiny" "SELECT count(*) > 50 FROM switch WHERE embedding IS NOT NULL"
q -c "SELECT airrep.keep_embedded('switch', 'body', 'embedding', 'minilm')" >/dev/null
[ "$(q -c "SELECT count(*) FROM switch WHERE airrep_dims(embedding) = 32")" = 0 ] ||
    fail "an old-model vector remained after the switch committed"
wait_for "the switch rows embedded by minilm" "SELECT count(*) = 0 FROM switch WHERE embedding IS NULL"
[ "$(q -c "SELECT count(*) FROM switch WHERE embedding <-> airrep.encode('minilm', body) < 1e-4")" = 400 ] ||
    fail "after the switch a vector differs from the new model's encoding"
[ "$(q -c "SELECT model FROM airrep.embedding_status WHERE relation = 'switch'::regclass")" = minilm ] ||
    fail "the job does not record the new model"

echo "== a plain role's job reads only the rows the role may read (row-level security)"
q <<'SQL'
CREATE TABLE secret (id int PRIMARY KEY, body text, reader name, embedding airrep_vector(32));
ALTER TABLE secret ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON secret USING (reader = current_user);
GRANT SELECT, UPDATE, TRIGGER ON secret TO analyst;
SQL
AS_ROLE=analyst q -c "SELECT airrep.keep_embedded('secret', 'body', 'embedding', 'tiny') > 0" >/dev/null
q -c "INSERT INTO secret SELECT i, 'secret row ' || i, CASE WHEN i % 2 = 0 THEN 'analyst' ELSE 'someone_else' END FROM generate_series(1, 200) i"
wait_for "the analyst's rows embedded" "SELECT count(*) = 0 FROM secret WHERE reader = 'analyst' AND embedding IS NULL"
q -c "INSERT INTO secret VALUES (0, 'marker', 'analyst')"
wait_for "the marker row" "SELECT embedding IS NOT NULL FROM secret WHERE id = 0"
[ "$(q -c "SELECT count(*) FROM secret WHERE reader <> 'analyst' AND embedding IS NOT NULL")" = 0 ] ||
    fail "the analyst's job embedded rows the analyst cannot read"
[ "$(AS_ROLE=analyst q -c "SELECT pending_rows FROM airrep.embedding_status WHERE relation = 'secret'::regclass")" = 0 ] ||
    fail "the analyst's status counts rows it cannot read"

echo "== concurrent writers lose no update"
for writer in 1 2 3 4; do
    q -c "DO \$\$ BEGIN FOR i IN 1..150 LOOP
              UPDATE docs SET body = 'writer $writer pass ' || i || ' on row ' || id WHERE id = 1 + (i * 37 + $writer * 11) % $ROWS;
              INSERT INTO docs VALUES ($ROWS + $writer * 1000 + i, 'inserted by writer $writer, ' || i, 'new');
              COMMIT;
          END LOOP; END \$\$" &
done
wait
wait_for "the writers' rows embedded" "SELECT count(*) = 0 FROM docs WHERE embedding IS NULL"
[ "$(q -c "SELECT count(*) FILTER (WHERE NOT embedding <-> airrep.encode('tiny', body) < 1e-5) FROM docs")" = 0 ] ||
    fail "a row's vector is not its final text's"

echo "== pg_dump and restore keep the jobs"
as_postgres pg_dump -h /tmp -p "$CLUSTER_PORT" -U postgres -Fc -f "$work/worker.dump" worker
as_postgres pg_restore -h /tmp -p "$CLUSTER_PORT" -U postgres -d restored "$work/worker.dump"
jobs="SELECT relation, text_column, vector_column, model, owner FROM airrep.embedding_status ORDER BY job_id"
diff <(q -c "$jobs") <(DB=restored q -c "$jobs") >&2 || fail "the restored jobs differ"
DB=restored q -c "INSERT INTO docs VALUES (-1, 'a row inserted after the restore', 'new')"
DB=restored wait_for "the restored database's worker" \
    "SELECT embedding <-> airrep.encode('tiny', body) < 1e-5 FROM docs WHERE id = -1"

echo "== DROP TABLE ends its job; a database without jobs keeps no worker"
q -c "DROP TABLE docs"
[ "$(q -c "SELECT count(*) FROM airrep.embedding_jobs WHERE relation::oid NOT IN (SELECT oid FROM pg_class)")" = 0 ] ||
    fail "a dropped table's job remains"
q -c "SELECT airrep.stop_embedding(relation, vector_column) FROM airrep.embedding_jobs" >/dev/null
wait_for "the idle worker to leave" "SELECT airrep.embedding_worker_pid() IS NULL"
run_psql -q -c "DROP DATABASE worker"  # no worker holds it
echo "worker: $ROWS rows embedded with no call, each once through a terminate and a kill; RLS, model switch, writers, dump/restore, DROP TABLE"
