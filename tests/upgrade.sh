#!/usr/bin/env bash
# ALTER EXTENSION airrep UPDATE keeps what users have: install 0.1.0 (the last released
# schema, frozen in tests/upgrade/), fill it with a model and a table of vectors, upgrade
# to the current version, and check that the models, the vectors and the encodings are
# unchanged, that the new functions work, and that the upgraded extension has exactly the
# objects of a fresh install. Needs scripts/test.sh's fixtures and an installed build.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
cp tests/upgrade/airrep--0.1.0.sql "$($PG_CONFIG --sharedir)/extension/"
source scripts/cluster.sh
start_cluster /tmp/airrep-upgrade 28822
run_psql -q -c "CREATE DATABASE upgraded" -c "CREATE DATABASE fresh"
psql_in() { local db=$1; shift; as_postgres psql -h /tmp -p "$CLUSTER_PORT" -U postgres -d "$db" -X -v ON_ERROR_STOP=1 -qAt "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

psql_in upgraded <<'SQL' >/dev/null
CREATE EXTENSION airrep VERSION '0.1.0';
SELECT airrep.load_model('tiny', '/tmp/airrep-fixtures/tiny-airrep');
CREATE TABLE docs (id int, text text, embedding airrep_vector(32));
INSERT INTO docs SELECT i, 'document ' || i, NULL FROM generate_series(1, 20) i;
UPDATE docs SET embedding = airrep.encode('tiny', text);
CREATE TABLE before AS SELECT id, embedding::text AS embedding FROM docs;
SQL
psql_in upgraded -c "ALTER EXTENSION airrep UPDATE TO '$VERSION'"
psql_in fresh -c "CREATE EXTENSION airrep"

[ "$(psql_in upgraded -c "SELECT extversion FROM pg_extension WHERE extname = 'airrep'")" = "$VERSION" ] ||
    fail "the extension is not at $VERSION"
[ "$(psql_in upgraded -c "SELECT count(*) FROM docs d JOIN before b USING (id) WHERE d.embedding::text = b.embedding")" = 20 ] ||
    fail "stored vectors changed"
[ "$(psql_in upgraded -c "SELECT count(*) FROM docs WHERE airrep.encode('tiny', text)::text = embedding::text")" = 20 ] ||
    fail "the model encodes differently after the upgrade"
[ "$(psql_in upgraded -c "SELECT owner::text FROM airrep.models WHERE name = 'tiny'")" = postgres ] ||
    fail "the existing model has no owner"
[ "$(psql_in upgraded -c "SELECT count(*) FROM airrep.top_k('docs', 'docs', 3)")" = 60 ] ||
    fail "a new function does not work on the upgraded database"
[ "$(psql_in upgraded -c "SELECT round(group_influence(t, embedding, 'sum')::numeric, 4) = round(sum(influence(t, embedding))::numeric, 4),
                  (SELECT sum(embedding) FROM docs WHERE id <= 2)::text
                      = (SELECT (a.embedding + b.embedding)::text FROM docs a, docs b WHERE a.id = 1 AND b.id = 2)
            FROM docs, (SELECT embedding AS t FROM docs WHERE id = 1) target")" = "t|t" ] ||
    fail "the aggregates do not work on the upgraded database"
# The same objects as a fresh install, no more and no fewer (the test build's own
# `tests` schema of #[pg_test] functions aside: it is not part of the product).
members='SELECT pg_describe_object(classid, objid, 0) FROM pg_depend
         WHERE refobjid = (SELECT oid FROM pg_extension WHERE extname = '"'airrep'"') AND deptype = '"'e'"' ORDER BY 1'
product() { psql_in "$1" -c "$members" | grep -v -e '^function tests\.' -e '^schema tests$'; }
diff <(product upgraded) <(product fresh) >&2 ||
    fail "the upgraded extension's objects differ from a fresh install's (< upgraded, > fresh)"
# ... and the same function definitions: C symbol, volatility, parallel safety, strictness,
# and for aggregates their support functions and state type.
definitions="SELECT p.oid::regprocedure::text || ' ' || p.prosrc || ' ' || p.provolatile::text || p.proparallel::text || p.proisstrict::text
                    || coalesce(' ' || a.aggtransfn::text || ' ' || a.aggtranstype::regtype::text || ' ' || a.aggfinalfn::text
                                || ' ' || a.aggcombinefn::text || ' ' || a.aggserialfn::text, '')
             FROM pg_proc p LEFT JOIN pg_aggregate a ON a.aggfnoid = p.oid
             JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
             WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'airrep')
               AND p.pronamespace <> coalesce(to_regnamespace('tests'), 0) ORDER BY 1"
upgraded_definitions=$(psql_in upgraded -c "$definitions")
fresh_definitions=$(psql_in fresh -c "$definitions")
diff <(echo "$upgraded_definitions") <(echo "$fresh_definitions") >&2 ||
    fail "the upgraded extension's function definitions differ from a fresh install's (< upgraded, > fresh)"
# ... and the same registry: columns, row-level security, policies, grants and dump marks.
shape="SELECT table_name || '.' || column_name || ' ' || data_type FROM information_schema.columns WHERE table_schema = 'airrep'
       UNION ALL SELECT tablename || ' policy ' || policyname || ' ' || cmd || ' ' || coalesce(qual, '') || ' ' || coalesce(with_check, '') FROM pg_policies WHERE schemaname = 'airrep'
       UNION ALL SELECT relname || ' rls ' || relrowsecurity || ' acl ' || coalesce(relacl, acldefault('r', relowner))::text FROM pg_class WHERE relnamespace = 'airrep'::regnamespace
       UNION ALL SELECT 'dumped ' || unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'airrep'
       ORDER BY 1"
diff <(psql_in upgraded -c "$shape") <(psql_in fresh -c "$shape") >&2 ||
    fail "the upgraded registry differs from a fresh install's (< upgraded, > fresh)"
echo "upgrade 0.1.0 -> $VERSION: models, vectors and encodings kept; objects equal a fresh install's"
