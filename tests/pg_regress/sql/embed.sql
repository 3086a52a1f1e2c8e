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
