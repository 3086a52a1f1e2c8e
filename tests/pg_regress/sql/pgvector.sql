-- Interop with pgvector (run only where pgvector is installed; scripts/regress.sh says when
-- it skips this file, and runs it last: it drops and recreates airrep). The casts are binary-compatible both ways, so pgvector's HNSW index
-- on an expression serves ORDER BY ... LIMIT, and the values survive the round trip.
SELECT airrep.create_pgvector_casts();
CREATE EXTENSION vector;
SELECT airrep.create_pgvector_casts();
SELECT '[1,-2.5,3e-7]'::airrep_vector::vector AS to_vector,
       '[1,-2.5,3e-7]'::vector::airrep_vector AS back,
       '[1,2,3]'::airrep_vector::vector(3) <#> '[1,1,1]' AS pgvector_negative_ip;
SELECT '[1,2]'::airrep_vector::vector(3);
CREATE TABLE pv_pool (id bigint, embedding airrep_vector(3));
INSERT INTO pv_pool SELECT i, ARRAY[i % 7, (i * 3) % 5, i % 2 - 1]::real[] FROM generate_series(1, 40) i;
CREATE INDEX ON pv_pool USING hnsw ((embedding::vector(3)) vector_ip_ops);
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM pv_pool ORDER BY embedding::vector(3) <#> '[1,2,0]' LIMIT 5;
-- on this small table the index finds the exact top scores (which of several tied rows
-- it returns is its own affair): compare with airrep.top_k
CREATE TABLE pv_target (id int, embedding airrep_vector);
INSERT INTO pv_target VALUES (1, '[1,2,0]');
SELECT (SELECT array_agg(-d ORDER BY d) FROM (SELECT embedding::vector(3) <#> '[1,2,0]' AS d FROM pv_pool ORDER BY 1 LIMIT 5) s)
       = (SELECT array_agg(influence ORDER BY rank) FROM airrep.top_k('pv_target', 'pv_pool', 5)) AS index_matches_exact;
RESET enable_seqscan;
-- the casts stand alone: dropping pgvector with CASCADE removes them and nothing of airrep
DROP TABLE pv_pool, pv_target;
SELECT airrep.create_pgvector_casts() AS again_is_harmless;
DROP EXTENSION vector CASCADE;
SELECT extname FROM pg_extension WHERE extname = 'airrep';
SELECT airrep.create_pgvector_casts();
SELECT airrep.drop_pgvector_casts();
-- and airrep can be dropped once they are gone
CREATE EXTENSION vector;
SELECT airrep.create_pgvector_casts();
DROP EXTENSION airrep;
SELECT airrep.drop_pgvector_casts();
DROP EXTENSION airrep;
DROP EXTENSION vector;
CREATE EXTENSION airrep;
