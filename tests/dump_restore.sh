#!/usr/bin/env bash
# pg_dump carries the models: dump a database holding an imported and a trained model and
# a table of vectors kept embedded, restore it into a fresh database, and compare the
# registry, the training log, the encodings and the embedding job with its trigger. Needs scripts/test.sh's fixtures and an installed build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster.sh
start_cluster /tmp/airrep-dump 28821
work=/tmp/airrep-dump/files
rm -rf "$work" && mkdir -p "$work" && chown postgres "$work"
run_psql -q -c "CREATE DATABASE source" -c "CREATE DATABASE restored"
psql_in() { local db=$1; shift; as_postgres psql -h /tmp -p "$CLUSTER_PORT" -U postgres -d "$db" -X -v ON_ERROR_STOP=1 -qAt "$@"; }
psql_in source <<'SQL' >/dev/null
CREATE EXTENSION airrep;
SELECT airrep.load_model('tiny', '/tmp/airrep-fixtures/tiny-airrep');
CREATE TABLE examples (id int, text text);
INSERT INTO examples SELECT i, 'example number ' || i FROM generate_series(1, 12) i;
CREATE TABLE targets (id int, text text);
INSERT INTO targets SELECT i, 'target ' || i FROM generate_series(1, 3) i;
CREATE TABLE subsets AS SELECT * FROM airrep.sample_subsets('examples', 6, 4, 7);
CREATE TABLE losses AS
SELECT s.subset_id, t.id AS target_id, 1 + ((s.subset_id * 7 + t.id * 3) % 5) / 10.0 AS loss
FROM (SELECT DISTINCT subset_id FROM subsets) s, targets t;
SET client_min_messages = warning;
SELECT airrep.train('tiny-trained', 'tiny', 'examples', 'targets', 'subsets', 'losses',
                    '{"steps": 3, "holdout_fraction": 0, "train_layers": "all"}');
CREATE TABLE docs AS SELECT id, text, airrep.encode('tiny-trained', text) AS embedding FROM examples;
SELECT airrep.keep_embedded('docs', 'text', 'embedding', 'tiny-trained');
SQL
as_postgres pg_dump -h /tmp -p "$CLUSTER_PORT" -U postgres -Fc -f "$work/source.dump" source
as_postgres pg_restore -h /tmp -p "$CLUSTER_PORT" -U postgres -d restored "$work/source.dump"

snapshot() {  # everything that must survive, as text
    psql_in "$1" <<'SQL'
SELECT id, name, parent_id, owner, md5(config::text) FROM airrep.models ORDER BY id;  -- version: a cache counter that COPY into model_files bumps
SELECT model_id, file, chunk, md5(data) FROM airrep.model_files ORDER BY 1, 2, 3;
SELECT model_id, step, loss, grad_norm FROM airrep.training_log ORDER BY 1, 2;
SELECT id, embedding::text FROM docs ORDER BY id;
SELECT id, airrep.encode('tiny-trained', text)::text = embedding::text FROM docs ORDER BY id;
SELECT id, relation, text_column, vector_column, model_id, owner FROM airrep.embedding_jobs ORDER BY id;
SELECT tgname, tgfoid::regprocedure FROM pg_trigger WHERE tgrelid = 'docs'::regclass AND NOT tgisinternal;
SQL
}
snapshot source > "$work/source.txt"
snapshot restored > "$work/restored.txt"
if ! diff "$work/source.txt" "$work/restored.txt" >/dev/null; then
    diff "$work/source.txt" "$work/restored.txt" | head -20 >&2
    echo "FAIL: the restored database differs from the dumped one" >&2
    exit 1
fi
grep -q "tiny-trained" "$work/restored.txt" || { echo "FAIL: no trained model after restore" >&2; exit 1; }
grep -q "airrep_keep_embedded_embedding|airrep.keep_embedded_trigger()" "$work/restored.txt" ||
    { echo "FAIL: no embedding job trigger after restore" >&2; exit 1; }
grep -q "|f$" "$work/restored.txt" && { echo "FAIL: restored model encodes differently" >&2; exit 1; }
# The identity sequence came along: a new model gets a fresh id, not a used one.
psql_in restored -c "SELECT airrep.load_model('tiny-again', '/tmp/airrep-fixtures/tiny-airrep')" >/dev/null
echo "dump and restore: $(grep -c . "$work/restored.txt") rows identical, models, files, log, encodings and embedding jobs"
