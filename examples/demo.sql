-- The airrep demo: embed a small training pool and ask which rows and subsets help a target.
\pset footer off
\timing off
CREATE EXTENSION airrep;
SET client_min_messages = warning;

\echo '-- load MiniLM-L6 into the registry (stored as chunked bytea)'
SELECT airrep.load_model('minilm', :'model_dir') AS model_id;
SELECT name, layers, hidden_size, total_size FROM airrep.model_list;

CREATE TABLE examples (
    id bigint PRIMARY KEY, prompt text, response text,
    body text GENERATED ALWAYS AS (airrep.format(prompt, response)) STORED,
    embedding airrep_vector(384));
INSERT INTO examples (id, prompt, response) VALUES
 (1, 'What is the capital of France?', 'Paris is the capital of France.'),
 (2, 'Name the largest city in Japan.', 'Tokyo is the largest city in Japan.'),
 (3, 'Which river flows through Cairo?', 'The Nile flows through Cairo.'),
 (4, 'What is the capital of Italy?', 'Rome is the capital of Italy.'),
 (5, 'What is 7 times 8?', '7 times 8 is 56.'),
 (6, 'Add 125 and 375.', '125 plus 375 equals 500.'),
 (7, 'What is the square root of 81?', 'The square root of 81 is 9.'),
 (8, 'Divide 144 by 12.', '144 divided by 12 is 12.'),
 (9, 'How do I boil an egg?', 'Place the egg in boiling water for about nine minutes, then cool it in cold water.'),
 (10, 'How long should pasta cook?', 'Most dried pasta cooks in eight to twelve minutes in salted boiling water.'),
 (11, 'How do I make a simple vinaigrette?', 'Whisk three parts oil with one part vinegar, then season with salt and pepper.'),
 (12, 'What temperature bakes bread?', 'Most breads bake at around 220 degrees Celsius.'),
 (13, 'How do I reverse a list in Python?', 'Call my_list.reverse() or use slicing: my_list[::-1].'),
 (14, 'What does SQL SELECT do?', 'SELECT reads rows from one or more tables.'),
 (15, 'How do I print text in Rust?', 'Use the println! macro, for example println!("hello").'),
 (16, 'What is a primary key?', 'A primary key uniquely identifies each row of a table.'),
 (17, 'Who wrote Hamlet?', 'William Shakespeare wrote Hamlet.'),
 (18, 'Who painted the Mona Lisa?', 'Leonardo da Vinci painted the Mona Lisa.'),
 (19, 'Who composed the Ninth Symphony?', 'Ludwig van Beethoven composed the Ninth Symphony.'),
 (20, 'Who wrote Pride and Prejudice?', 'Jane Austen wrote Pride and Prejudice.');

\echo '-- embed the pool: commits per batch, resumable, progress as NOTICEs'
SET client_min_messages = notice;
CALL airrep.embed('examples', 'body', 'embedding', 'minilm', 8);
SET client_min_messages = warning;

CREATE TABLE targets AS
SELECT id, body, airrep.encode('minilm', body) AS embedding
FROM (VALUES (1, airrep.format('What is the capital of Spain?', 'Madrid is the capital of Spain.')),
             (2, airrep.format('What is 9 times 6?', '9 times 6 is 54.')),
             (3, airrep.format('Who wrote Macbeth?', 'William Shakespeare wrote Macbeth.'))) t(id, body);

\echo '-- top training rows for each target by influence (exact, all targets in one pass)'
SELECT k.target_id AS target, k.rank, e.prompt AS example, round(k.influence::numeric, 3) AS influence
FROM airrep.top_k('targets', 'examples', 3) k JOIN examples e ON e.id = k.example_id
ORDER BY target, rank;

\echo '-- a training subset for the targets within a budget of 6 rows (targets take turns)'
SELECT s.pick_order, s.target_id AS for_target, e.prompt AS example
FROM airrep.select_data('targets', 'examples', 6) s JOIN examples e ON e.id = s.example_id
ORDER BY s.pick_order;

\echo '-- cleaning: a planted copy of a target (case and punctuation changed) is found by exact'
\echo '-- text, by its n-grams and by embedding'
\set QUIET on
INSERT INTO examples (id, prompt, response)
VALUES (21, 'who wrote MACBETH??', 'William Shakespeare wrote Macbeth.');
CALL airrep.embed('examples', 'body', 'embedding', 'minilm', 8);
ALTER TABLE targets RENAME COLUMN body TO text;
CREATE VIEW example_texts AS SELECT id, body AS text, embedding FROM examples;
SELECT c.method, c.train_id, e.prompt AS example, c.benchmark_id AS target, round(c.score::numeric, 3) AS score
FROM airrep.contamination('example_texts', 'targets') c JOIN examples e ON e.id = c.train_id
ORDER BY c.method, c.train_id;
DROP VIEW example_texts;
ALTER TABLE targets RENAME COLUMN text TO body;
DELETE FROM examples WHERE id = 21;
\set QUIET off

\echo '-- keep the pool embedded: the background worker embeds rows inserted from now on,'
\echo '-- with no call (a trigger leaves a changed text''s vector NULL until then)'
SELECT airrep.keep_embedded('examples', 'body', 'embedding', 'minilm') AS job;
INSERT INTO examples (id, prompt, response)
VALUES (22, 'Who wrote Romeo and Juliet?', 'William Shakespeare wrote Romeo and Juliet.');
\set QUIET on
DO $$ BEGIN  -- only waits: the worker embeds the row a moment after the INSERT commits
    FOR i IN 1..600 LOOP
        EXIT WHEN (SELECT embedding IS NOT NULL FROM examples WHERE id = 22);
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
\set QUIET off
SELECT k.rank, k.example_id, e.prompt, round(k.influence::numeric, 3) AS influence
FROM airrep.top_k('targets', 'examples', 3) k JOIN examples e ON e.id = k.example_id
WHERE k.target_id = 3 ORDER BY k.rank;
SELECT relation, model, state, rows, pending_rows, worker_pid IS NOT NULL AS worker_running
FROM airrep.embedding_status;
\set QUIET on
DO $$ BEGIN PERFORM airrep.stop_embedding('examples', 'embedding'); END $$;
DELETE FROM examples WHERE id = 22;
\set QUIET off

\echo '-- which subset helps each target most? attention-pooled group_influence vs sum'
CREATE TABLE subsets (subset_id int, example_id bigint);
INSERT INTO subsets VALUES
 (1, 1), (1, 2), (1, 3), (1, 4), (1, 17),
 (2, 5), (2, 6), (2, 7), (2, 8), (2, 13),
 (3, 9), (3, 10), (3, 11), (3, 12), (3, 14),
 (4, 17), (4, 18), (4, 19), (4, 20), (4, 15);
SELECT t.id AS target, s.subset_id,
       round(group_influence(t.embedding, e.embedding)::numeric, 3) AS attention,
       round(group_influence(t.embedding, e.embedding, 'sum')::numeric, 3) AS sum
FROM targets t CROSS JOIN subsets s JOIN examples e ON e.id = s.example_id
GROUP BY t.id, s.subset_id ORDER BY t.id, attention DESC;

\echo '-- training: label tables from retraining runs. This demo has no GPU budget for real'
\echo '-- retraining, so it SIMULATES the measured losses: a subset lowers a target''s loss by'
\echo '-- 0.3 per member on the same topic (plus noise). Real use loads measured losses here.'
ALTER TABLE examples ADD COLUMN topic int;
UPDATE examples SET topic = (id - 1) / 4;
CREATE TABLE train_targets (id bigint, topic int, text text);
INSERT INTO train_targets VALUES
 (1, 0, airrep.format('What is the capital of Germany?', 'Berlin is the capital of Germany.')),
 (2, 0, airrep.format('Which river flows through Paris?', 'The Seine flows through Paris.')),
 (3, 1, airrep.format('What is 12 plus 30?', '12 plus 30 is 42.')),
 (4, 1, airrep.format('What is 9 squared?', '9 squared is 81.')),
 (5, 2, airrep.format('How do I poach an egg?', 'Slide the egg into simmering water for three minutes.')),
 (6, 2, airrep.format('How long does rice cook?', 'White rice simmers for about 18 minutes.')),
 (7, 3, airrep.format('How do I sort a list in Python?', 'Call sorted(my_list) or my_list.sort().')),
 (8, 3, airrep.format('What does SQL JOIN do?', 'JOIN combines rows of two tables on a condition.')),
 (9, 4, airrep.format('Who wrote Othello?', 'William Shakespeare wrote Othello.')),
 (10, 4, airrep.format('Who painted The Starry Night?', 'Vincent van Gogh painted The Starry Night.'));
CREATE VIEW train_examples AS SELECT id, body AS text FROM examples;
CREATE TABLE train_subsets AS SELECT * FROM airrep.sample_subsets('examples', 40, 5, 7);
SELECT setseed(0.5);
CREATE TABLE train_losses AS
SELECT s.subset_id, t.id AS target_id,
       2.0 - 0.3 * count(*) FILTER (WHERE e.topic = t.topic) + 0.05 * random() AS loss
FROM train_subsets s JOIN examples e ON e.id = s.example_id CROSS JOIN train_targets t
GROUP BY s.subset_id, t.id;

\echo '-- LDS of the base encoder (x100), attention and sum pooling'
SELECT round(100 * airrep.lds('minilm', 'train_examples', 'train_targets', 'train_subsets', 'train_losses')::numeric, 2) AS lds_attention,
       round(100 * airrep.lds('minilm', 'train_examples', 'train_targets', 'train_subsets', 'train_losses', 'sum')::numeric, 2) AS lds_sum;

\echo '-- ranking-loss training with the default recipe (NOTICEs show progress): the depth of'
\echo '-- MiniLM with the best step-0 LDS is kept with a centred projector, which then learns;'
\echo '-- 25% of subsets and of targets are held out to pick the best step'
SET client_min_messages = notice;
SELECT airrep.train('minilm-airrep', 'minilm', 'train_examples', 'train_targets', 'train_subsets', 'train_losses',
    '{"holdout_fraction": 0.25, "seed": 1}') AS trained_model_id;
SET client_min_messages = warning;
SELECT step, round(loss::numeric, 4) AS loss, round(grad_norm::numeric, 3) AS grad_norm,
       round(100 * validation_lds::numeric, 2) AS held_out_lds
FROM airrep.training_log WHERE validation_lds IS NOT NULL ORDER BY step;
SELECT name, parent, description FROM airrep.model_list ORDER BY id;

\echo '-- the start kept, and held-out LDS before and after training (x100);'
\echo '-- config -> ''airrep_training'' -> ''start_scores'' has every start scored'
SELECT t ->> 'layers_kept' || ' of ' || (t ->> 'layers_of_base') AS layers,
       t ->> 'centered' AS centred, t ->> 'unit_scale_start' AS unit_length,
       t ->> 'response_weight' AS response_weight, t ->> 'kept_step' AS kept_step,
       round(100 * (t ->> 'validation_lds_before')::numeric, 2) AS held_out_lds_before,
       round(100 * (t ->> 'validation_lds_after')::numeric, 2) AS held_out_lds_after
FROM airrep.models, LATERAL (SELECT config -> 'airrep_training') AS training(t)
WHERE name = 'minilm-airrep';
