-- airrep.train from SQL: a cancelled run leaves nothing behind, a short run is logged, and
-- airrep.sample_subsets plans deterministic retraining subsets.
\set VERBOSITY terse
SET client_min_messages = warning;  -- per-step NOTICEs carry timings
SELECT airrep.load_model('tiny', '/tmp/airrep-fixtures/tiny-airrep') > 0 AS loaded;
CREATE TABLE examples (id bigint, text text);
INSERT INTO examples
SELECT i, format('note %s on %s', i, (ARRAY['cats', 'rivers', 'violins', 'bread'])[1 + i % 4])
FROM generate_series(1, 24) i;
CREATE TABLE targets (id bigint, text text);
INSERT INTO targets VALUES (0, 'tell me about cats'), (1, 'tell me about rivers'),
                           (2, 'tell me about violins'), (3, 'tell me about bread');
CREATE TABLE subsets AS SELECT * FROM airrep.sample_subsets('examples', 12, 6, 7);
CREATE TABLE losses AS
SELECT s.subset_id, t.id AS target_id, 2.0 - 0.3 * count(*) FILTER (WHERE e.id % 4 = t.id) + 0.01 * s.subset_id AS loss
FROM subsets s JOIN examples e ON e.id = s.example_id CROSS JOIN targets t
GROUP BY s.subset_id, t.id;

-- the plan: 12 subsets of 6 distinct examples, the same for the same seed
SELECT count(*) AS members, count(DISTINCT subset_id) AS subsets,
       count(DISTINCT (subset_id, example_id)) = count(*) AS no_repeats
FROM subsets;
SELECT (SELECT array_agg(example_id ORDER BY subset_id, example_id) FROM airrep.sample_subsets('examples', 12, 6, 7))
     = (SELECT array_agg(example_id ORDER BY subset_id, example_id) FROM subsets) AS same_plan_for_same_seed;
-- consecutive seeds give unrelated plans (each subset seeded by seed + subset number made
-- seed 8's subsets 1-11 seed 7's subsets 2-12)
WITH plans AS (
    SELECT seed, subset_id, array_agg(example_id ORDER BY example_id) AS members
    FROM generate_series(7, 8) AS seed, airrep.sample_subsets('examples', 12, 6, seed)
    GROUP BY seed, subset_id)
SELECT count(*) AS subsets_shared_by_seeds_7_and_8
FROM plans a JOIN plans b ON a.members = b.members AND a.seed = 7 AND b.seed = 8;
SELECT airrep.sample_subsets('examples', 2, 25);
-- a plan too large to want streams, so a timeout stops it
SET statement_timeout = '500ms';
SELECT count(*) FROM airrep.sample_subsets('examples', 2000000000, 24);
RESET statement_timeout;
-- ids must be distinct and not NULL, or a subset would not hold `size` distinct examples
CREATE TABLE examples_repeated AS SELECT id % 5 AS id FROM examples;
SELECT airrep.sample_subsets('examples_repeated', 2, 3);
INSERT INTO examples_repeated VALUES (NULL);
SELECT airrep.sample_subsets('examples_repeated', 2, 3);
DROP TABLE examples_repeated;

-- a run cancelled by statement_timeout leaves the registry and the log as they were
SET statement_timeout = '1500ms';
SELECT airrep.train('cancelled', 'tiny', 'examples', 'targets', 'subsets', 'losses', '{"steps": 1000000, "patience": 0}');
RESET statement_timeout;
SELECT count(*) AS models FROM airrep.models;
SELECT count(*) AS log_rows FROM airrep.training_log;

-- a short run: a new model whose parent is the base, one log row per step
SELECT airrep.train('short', 'tiny', 'examples', 'targets', 'subsets', 'losses',
                    '{"steps": 3, "warmup_steps": 2, "lr": 0.001, "holdout_fraction": 0.25, "subsets_per_step": 6}') > 0 AS trained;
SELECT step, loss > 0 AS positive_loss, grad_norm > 0 AS has_gradient, lr,
       validation_lds IS NOT NULL AS validated FROM airrep.training_log ORDER BY step;
SELECT name, parent, layers, hidden_size FROM airrep.model_list ORDER BY id;
SELECT config -> 'airrep_training' -> 'subsets_held_out' AS held_out,
       (config -> 'airrep_training' ->> 'validation_lds_after') IS NOT NULL AS has_validation_lds,
       (config -> 'airrep_training' ->> 'kept_step')::int IN (0, 3) AS kept_a_validated_step,
       config -> 'airrep_training' -> 'effective_options' ->> 'train_layers' AS train_layers
FROM airrep.models WHERE name = 'short';
-- depth 'auto' scored both truncations of the 2-layer model (it has its own projector, so
-- nothing is centred), each as it is and at every unit length, and kept one; targets are
-- held out too
SELECT config -> 'airrep_training' -> 'layers_kept' AS layers_kept,
       config -> 'airrep_training' -> 'layers_of_base' AS layers_of_base,
       config -> 'airrep_training' -> 'centered' AS centered,
       config -> 'airrep_training' -> 'unit_scale_start' AS unit_scale_start,
       (SELECT string_agg(format('%s%s%s', s ->> 'layers', CASE WHEN (s ->> 'centered')::bool THEN 'c' END,
                                 ' x' || (s ->> 'unit_scale')), ', ')
        FROM jsonb_array_elements(config -> 'airrep_training' -> 'start_scores') s) AS starts_scored,
       config -> 'airrep_training' -> 'targets_held_out' AS targets_held_out,
       config -> 'airrep_training' ->> 'selection' LIKE 'kept _ of 2 layers%by LDS at step 0 over every label%' AS reason_says_so
FROM airrep.models WHERE name = 'short';
-- options are checked before any work
SELECT airrep.train('bad', 'tiny', 'examples', 'targets', 'subsets', 'losses', '{"train_layers": "top"}');
SELECT airrep.train('bad', 'tiny', 'examples', 'targets', 'subsets', 'losses', '{"train_layers": 3}');
SELECT airrep.train('bad', 'tiny', 'examples', 'targets', 'subsets', 'losses', '{"max_members_per_subset": 0}');
SELECT airrep.train('bad', 'tiny', 'examples', 'targets', 'subsets', 'losses', '{"unit_scale": -1}');
SELECT airrep.train('', 'tiny', 'examples', 'targets', 'subsets', 'losses');
-- options that name layers are checked against the model before any work (issue 27: depth
-- 100 over a base without a projector was an index-out-of-bounds panic, XX000)
SELECT airrep.load_model('minilm', '/tmp/airrep-fixtures/minilm') > 0 AS loaded;
\set VERBOSITY default
SELECT airrep.train('bad', 'minilm', 'examples', 'targets', 'subsets', 'losses', '{"depth": 100}');
SELECT airrep.train('bad', 'minilm', 'examples', 'targets', 'subsets', 'losses', '{"depth": 2, "train_layers": 3}');
SELECT airrep.drop_model('minilm');
-- a subset that lists an example twice is an error naming the subset (23505), as a
-- repeated loss row is, for training and for lds alike, not a silent deduplication
CREATE TABLE subsets_repeated AS SELECT * FROM subsets UNION ALL SELECT * FROM subsets WHERE subset_id = 3 LIMIT 1000;
\set VERBOSITY sqlstate
SELECT airrep.train('bad', 'tiny', 'examples', 'targets', 'subsets_repeated', 'losses');
\set VERBOSITY default
SELECT airrep.lds('tiny', 'examples', 'targets', 'subsets_repeated', 'losses');
DROP TABLE subsets_repeated;
-- a regclass OID that names no relation is undefined_table, not an internal error
SELECT airrep.lds('tiny', 'examples', 4000000000::oid::regclass, 'subsets', 'losses');
SELECT airrep.sample_subsets(4000000000::oid::regclass, 1, 1);
\set VERBOSITY terse
-- a learning rate that sends the weights to infinity stops the run, and saves nothing
SELECT airrep.train('diverged', 'tiny', 'examples', 'targets', 'subsets', 'losses',
    '{"lr": 1e300, "head_lr": 1e300, "steps": 1, "holdout_fraction": 0, "train_layers": "all", "depth": "all"}');
SELECT count(*) AS saved FROM airrep.models WHERE name = 'diverged';
-- the trained model encodes like any other
SELECT airrep_dims(airrep.encode('short', 'tell me about cats'));
