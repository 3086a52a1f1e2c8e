-- What must hold under misuse (issue 12): costly settings stay within superuser ceilings,
-- a backend never serves a stale model from its cache, and the server never restarts
-- (the crash canary of setup.sql is checked by canary.sql, last in the suite).

-- costly settings: any role may ask, none gets more than the ceiling
CREATE ROLE airrep_plain LOGIN;
SET ROLE airrep_plain;
SET airrep.threads = 1000;
SET airrep.batch_size = 4096;
SET airrep.model_cache_size = 64;
SELECT name, requested, effective::int < requested::int AS capped FROM airrep.settings() WHERE name NOT IN ('airrep.model_cache_mb', 'airrep.max_block_mb', 'airrep.simd') ORDER BY 1;
SET airrep.max_threads = 1000;
SET airrep.max_batch_size = 4096;
SET airrep.model_cache_mb = 100000;
SET airrep.max_block_mb = 100000;
RESET ROLE;
RESET airrep.threads; RESET airrep.batch_size; RESET airrep.model_cache_size;
-- a superuser may raise them
SET airrep.max_batch_size = 512;
SET airrep.batch_size = 400;
SELECT requested, effective FROM airrep.settings() WHERE name = 'airrep.batch_size';
RESET airrep.max_batch_size; RESET airrep.batch_size;

-- the SIMD tier (issue 26): auto resolves to a tier; any role may pick one; a tier the CPU
-- lacks is a clean feature_not_supported error whose detail names the tiers it has, never
-- an illegal instruction. Which tiers a CPU has varies, so the DO block checks either
-- outcome for each tier and prints the same lines on every machine; on each tier accepted,
-- the kernels run at it and give the exact scores of small integers.
SET ROLE airrep_plain;
SELECT requested, effective IN ('avx512', 'avx2', 'portable') AS resolved FROM airrep.settings() WHERE name = 'airrep.simd';
SET airrep.simd = portable;
SELECT requested, effective FROM airrep.settings() WHERE name = 'airrep.simd';
SELECT influence('[1,2,3]'::airrep_vector, '[4,5,6]');
SET airrep.simd = sse;
DO $$
DECLARE
    tier text;
    msg text;
    detail text;
    score float8;
BEGIN
    FOREACH tier IN ARRAY ARRAY['avx512', 'avx2', 'portable'] LOOP
        BEGIN
            EXECUTE format('SET airrep.simd = %L', tier);
            IF (SELECT effective FROM airrep.settings() WHERE name = 'airrep.simd') <> tier THEN
                RAISE EXCEPTION 'airrep.simd = % accepted but not in use', tier;
            END IF;
            SELECT group_influence('[1,2,3]'::airrep_vector, m, 'sum') INTO score
            FROM (VALUES ('[4,5,6]'::airrep_vector), ('[-4,-5,-6]'), ('[1,0,-1]')) AS v(m);
            IF score <> -2 THEN
                RAISE EXCEPTION 'group_influence at % is %, not -2', tier, score;
            END IF;
        EXCEPTION WHEN feature_not_supported THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
            IF msg <> format('invalid value for parameter "airrep.simd": "%s"', tier)
                OR detail NOT LIKE format('this CPU does not support SIMD tier %s: it supports %%portable', tier) THEN
                RAISE EXCEPTION 'unexpected error for %: % (%)', tier, msg, detail;
            END IF;
        END;
    END LOOP;
    RAISE NOTICE 'each SIMD tier is in use or refused naming the tiers this CPU has';
END $$;
RESET airrep.simd;
RESET ROLE;
DROP ROLE airrep_plain;

-- the model cache: after DROP/CREATE EXTENSION ids and versions start over, and the same
-- (id, version) names other weights; this backend must load them, not reuse its cache
DROP EXTENSION airrep CASCADE;
CREATE EXTENSION airrep;
SELECT airrep.load_model('probe', '/tmp/airrep-fixtures/tiny-airrep') AS probe_id \gset
SELECT airrep.encode('probe', 'cache probe')::text AS first \gset
DROP EXTENSION airrep CASCADE;
CREATE EXTENSION airrep;
SELECT airrep.load_model('probe', '/tmp/airrep-fixtures/tiny-airrep-bf16') = :probe_id AS same_id;
SELECT airrep.encode('probe', 'cache probe')::text <> :'first' AS reloaded;
-- a rolled-back change of the files leaves the version where it was; the next real change
-- has that version again, and must not be served the rolled-back weights. Three weights
-- of one shape: tiny (f32), tiny-bf16 (probe), and one training step from probe.
SELECT airrep.load_model('other', '/tmp/airrep-fixtures/tiny-airrep') IS NOT NULL AS loaded;
CREATE TABLE cp_examples AS SELECT i AS id, 'example ' || i AS text FROM generate_series(1, 8) i;
CREATE TABLE cp_targets AS SELECT i AS id, 'target ' || i AS text FROM generate_series(1, 2) i;
CREATE TABLE cp_subsets AS SELECT * FROM airrep.sample_subsets('cp_examples', 4, 3, 1);
CREATE TABLE cp_losses AS SELECT s.subset_id, t.id AS target_id, ((s.subset_id * 5 + t.id) % 3)::float8 AS loss
FROM (SELECT DISTINCT subset_id FROM cp_subsets) s, cp_targets t;
SET client_min_messages = warning;
SELECT airrep.train('third', 'probe', 'cp_examples', 'cp_targets', 'cp_subsets', 'cp_losses',
                    '{"steps": 1, "holdout_fraction": 0, "train_layers": "all", "lr": 0.01}') IS NOT NULL AS trained;
RESET client_min_messages;
CREATE FUNCTION copy_files(source text, target text) RETURNS void LANGUAGE sql AS $$
    DELETE FROM airrep.model_files WHERE model_id = (SELECT id FROM airrep.models WHERE name = target);
    INSERT INTO airrep.model_files SELECT (SELECT id FROM airrep.models WHERE name = target), file, chunk, data
    FROM airrep.model_files WHERE model_id = (SELECT id FROM airrep.models WHERE name = source) $$;
SELECT airrep.encode('probe', 'cache probe')::text AS bf16, airrep.encode('third', 'cache probe')::text AS third \gset
SELECT :'bf16' <> :'third' AND :'bf16' <> :'first' AND :'third' <> :'first' AS three_distinct;
BEGIN;
SELECT copy_files('other', 'probe');
SELECT airrep.encode('probe', 'cache probe')::text = :'first' AS sees_its_own_change;
ROLLBACK;
SELECT copy_files('third', 'probe');
SELECT airrep.encode('probe', 'cache probe')::text = :'third' AS fresh_after_rollback;
SELECT airrep.drop_model(name) FROM airrep.models WHERE name IN ('other', 'third') ORDER BY name;
DROP FUNCTION copy_files;
DROP TABLE cp_examples, cp_targets, cp_subsets, cp_losses;

-- long searches stop on cancel (here statement_timeout) between blocks, and the backend
-- stays usable; canary.sql checks that nothing crashed
CREATE TABLE big AS
SELECT i AS id, ARRAY(SELECT (random() - 0.5)::real FROM generate_series(1, 64) WHERE i > 0)::airrep_vector AS embedding
FROM generate_series(1, 60000) i;
SET statement_timeout = '300ms';
SELECT count(*) FROM airrep.top_k('big', 'big', 10);
SELECT count(*) FROM airrep.near_duplicates('big', 0.5);
SELECT count(*) FROM airrep.contamination('big', 'big', '{embedding}', threshold => 0.5);
SELECT count(*) FROM airrep.select_data('big', 'big', 30000, 'mean');
RESET statement_timeout;
CREATE TABLE one_target AS SELECT * FROM big WHERE id = 7;
SELECT count(*) AS still_here FROM airrep.top_k('one_target', 'big', 3);
DROP TABLE big, one_target;

-- Code that runs with the extension owner's rights (reading a model's weights) pins its
-- search_path, and airrep.embed's catalog lookups and dynamic SQL run in functions that
-- do: a role's own operator or function found first on the path is never called in their
-- place (each would raise 'hijacked' here, and with a superuser's rights could do worse).
SELECT airrep.load_model('hijack-target', '/tmp/airrep-fixtures/tiny-airrep') > 0 AS loaded;
CREATE TABLE hijack_docs (id int, body text, embedding airrep_vector);
INSERT INTO hijack_docs VALUES (1, 'a text'), (2, 'another text');
CREATE ROLE airrep_mallory LOGIN;
CREATE SCHEMA mallory AUTHORIZATION airrep_mallory;
SET ROLE airrep_mallory;
CREATE FUNCTION mallory.eq(a bigint, b bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'hijacked: ran as %', current_user; END $$;
CREATE OPERATOR mallory.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = mallory.eq);
CREATE FUNCTION mallory.format(f text, r regclass, a name, b name) RETURNS text LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'hijacked: ran as %', current_user; END $$;
CREATE DOMAIN mallory.airrep_vector AS bytea;
CREATE TABLE mallory.spoofed (id int, embedding mallory.airrep_vector);
INSERT INTO mallory.spoofed VALUES (1, '\x803e0000');
SET search_path = mallory, pg_catalog, public;
SELECT airrep_dims(airrep.encode('hijack-target', 'hello')) AS dims;
-- a domain named airrep_vector in another schema is not the type
SELECT * FROM airrep.top_k('mallory.spoofed', 'mallory.spoofed', 1);
RESET ROLE;
SET client_min_messages = warning;  -- embed's progress NOTICEs carry timings
CALL airrep.embed('hijack_docs', 'body', 'embedding', 'hijack-target', 1);
SELECT count(*) FILTER (WHERE embedding IS NOT NULL) AS embedded FROM hijack_docs;
RESET search_path;
DROP TABLE hijack_docs;
DROP SCHEMA mallory CASCADE;
DROP ROLE airrep_mallory;
SELECT airrep.drop_model('hijack-target');
RESET client_min_messages;

-- a database that is not UTF8 is refused at CREATE EXTENSION, naming its encoding (issue
-- 27: there encode and format failed with XX000 on non-ASCII text)
SELECT current_database() AS regress_db \gset
CREATE DATABASE airrep_latin1 WITH ENCODING 'LATIN1' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C';
CREATE DATABASE airrep_ascii WITH ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C';
\c airrep_latin1
CREATE EXTENSION airrep;
SELECT count(*) AS airrep_objects FROM pg_namespace WHERE nspname = 'airrep';
\c airrep_ascii
CREATE EXTENSION airrep;
\c :regress_db
DROP DATABASE airrep_latin1;
DROP DATABASE airrep_ascii;
