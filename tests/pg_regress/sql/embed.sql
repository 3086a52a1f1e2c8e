-- airrep.embed fills a table in committed batches; a failure half-way keeps the finished
-- batches, and a second call resumes where it stopped. scripts/test.sh stages the model
-- where the server's OS user can read it.
\set VERBOSITY terse
SELECT airrep.load_model('tiny', '/tmp/airrep-fixtures/tiny-airrep') > 0 AS loaded;
SELECT name, layers, hidden_size, weights_bytes, tokenizer_bytes FROM airrep.model_list;
CREATE TABLE docs (id int PRIMARY KEY, body text, embedding airrep_vector(32));
INSERT INTO docs
SELECT i, 'document ' || i || ' is about ' || (ARRAY['cats', 'dogs', 'databases', 'compilers'])[1 + i % 4]
FROM generate_series(1, 1000) AS i;
INSERT INTO docs VALUES (1001, NULL, NULL);  -- no text: left alone

-- a crash half-way, simulated by a trigger that rejects row 500
CREATE FUNCTION fail_at_500() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id = 500 AND NEW.embedding IS NOT NULL THEN
        RAISE EXCEPTION 'simulated failure at row 500';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fail BEFORE UPDATE ON docs FOR EACH ROW EXECUTE FUNCTION fail_at_500();
SET client_min_messages = warning;  -- the progress NOTICEs carry timings
CALL airrep.embed('docs', 'body', 'embedding', 'tiny', 100);
SELECT count(*) FILTER (WHERE embedding IS NOT NULL) AS embedded,
       count(*) FILTER (WHERE embedding IS NULL) AS remaining
FROM docs;

-- resume
DROP TRIGGER fail ON docs;
CALL airrep.embed('docs', 'body', 'embedding', 'tiny', 100);
SELECT count(*) FILTER (WHERE embedding IS NOT NULL) AS embedded,
       count(*) FILTER (WHERE embedding IS NULL) AS remaining
FROM docs;
-- every stored vector is the model's embedding of its text (batching and padding change nothing)
SELECT max(embedding <-> airrep.encode('tiny', body)) < 1e-5 AS all_correct FROM docs WHERE body IS NOT NULL;
-- a second call has nothing left to do
CALL airrep.embed('docs', 'body', 'embedding', 'tiny', 100);

-- bad arguments
CALL airrep.embed('docs', 'body', 'embedding', 'tiny', 0);
CALL airrep.embed('docs', 'body', 'embedding', 'no_such_model');
CALL airrep.embed('docs', 'no_such_column', 'embedding', 'tiny');
CALL airrep.embed('docs', 'body', 'embedding', NULL);  -- an error, not a loop over NULL updates
CALL airrep.embed('docs', 'id', 'embedding', 'tiny');
CALL airrep.embed('docs', 'body', 'body', 'tiny');
CREATE VIEW docs_view AS SELECT * FROM docs;
CALL airrep.embed('docs_view', 'body', 'embedding', 'tiny');
DROP VIEW docs_view;
-- it commits per batch, so a transaction block is refused before any encoding
BEGIN;
CALL airrep.embed('docs', 'body', 'embedding', 'tiny');
ROLLBACK;

-- a trigger that keeps the vector NULL stops the call with an error, not an endless loop
CREATE TABLE stubborn (id int, body text, embedding airrep_vector);
INSERT INTO stubborn VALUES (1, 'a'), (2, 'b');
CREATE FUNCTION keep_null() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.embedding := NULL; RETURN NEW; END $$;
CREATE TRIGGER keep_null BEFORE UPDATE ON stubborn FOR EACH ROW EXECUTE FUNCTION keep_null();
CALL airrep.embed('stubborn', 'body', 'embedding', 'tiny', 1);
-- a trigger that skips the update (returns NULL) is an error too, not a silent early end
CREATE OR REPLACE FUNCTION keep_null() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RETURN NULL; END $$;
CALL airrep.embed('stubborn', 'body', 'embedding', 'tiny', 1);
DROP TABLE stubborn; DROP FUNCTION keep_null();

-- partitions and inheritance children repeat ctids: each row still gets its own text's vector
CREATE TABLE parts (id int, body varchar, embedding airrep_vector) PARTITION BY RANGE (id);
CREATE TABLE parts_low PARTITION OF parts FOR VALUES FROM (0) TO (10);
CREATE TABLE parts_high PARTITION OF parts FOR VALUES FROM (10) TO (20);
INSERT INTO parts SELECT i, 'text ' || i || CASE WHEN i >= 10 THEN ' cats' ELSE ' databases' END
FROM generate_series(1, 18) AS i;
CREATE TABLE parent (id int, body text, embedding airrep_vector);
CREATE TABLE child () INHERITS (parent);
INSERT INTO parent SELECT i, 'parent row ' || i FROM generate_series(1, 5) AS i;
INSERT INTO child SELECT i, 'child row about compilers ' || i FROM generate_series(6, 10) AS i;
CALL airrep.embed('parts', 'body', 'embedding', 'tiny', 3);
CALL airrep.embed('parent', 'body', 'embedding', 'tiny', 3);
SELECT 'parts' AS relation, count(*) AS rows,
       count(*) FILTER (WHERE embedding <-> airrep.encode('tiny', body::text) < 1e-5) AS correct FROM parts
UNION ALL
SELECT 'parent', count(*), count(*) FILTER (WHERE embedding <-> airrep.encode('tiny', body) < 1e-5) FROM parent;
DROP TABLE parts, parent, child;

-- encoding responds to statement_timeout between batches
SET statement_timeout = '200ms';
SELECT count(*) FROM unnest(airrep.encode('tiny', array(SELECT 'text number ' || i FROM generate_series(1, 200000) AS i)));
RESET statement_timeout;
SELECT airrep_dims(airrep.encode('tiny', 'still usable after a cancel'));

-- encoding runs in parallel workers, and reading a model assigns no transaction id (an xid
-- is an error in a parallel worker, and a waste anywhere)
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
EXPLAIN (COSTS OFF) SELECT count(airrep.encode('tiny', body)) FROM docs;
SELECT count(airrep.encode('tiny', body)) AS encoded_in_parallel FROM docs;
RESET parallel_setup_cost; RESET parallel_tuple_cost; RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
BEGIN;
SET LOCAL airrep.max_length = 64;  -- another cache key: the model is read from the registry again
SELECT airrep_dims(airrep.encode('tiny', 'a read-only call')) AS dims;
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_xid_assigned;
COMMIT;
-- leave the database as we found it
DROP TABLE docs;
DROP FUNCTION fail_at_500();
SELECT airrep.drop_model('tiny');
SELECT count(*) AS models_left FROM airrep.models;
