-- The airrep side of benches/quality.sh: load the label tables, time encoding, train the
-- AirRep encoders on the training subsets/targets and score every encoder on the held-out
-- ones. Variables: data (CSV dir), minilm (model dir), train_options (jsonb, no pooling).
-- Ends by printing one row per method (method, lds, encode_ms, bytes, train_s), then
-- per-target Spearman rows ('per_target', method, target_id, spearman), the selection
-- experiment's picks ('selected', method, strategy, example_id, in pick order) and each
-- trained model's selection note ('selection', name, note).
\set QUIET on
CREATE EXTENSION airrep;
-- Load the library into this backend at once: others reinstall airrep.so in the same
-- Postgres, and a backend keeps the build it loaded first.
SELECT '[1]'::airrep_vector(1) \gset
CREATE TABLE all_examples (id int PRIMARY KEY, task text, text text);
CREATE TABLE all_targets (id int PRIMARY KEY, split text, task text, text text);
CREATE TABLE all_subsets (subset_id int, example_id int);
CREATE TABLE subset_split (subset_id int PRIMARY KEY, split text);
CREATE TABLE all_losses (subset_id int, target_id int, loss float8);
\set f :data '/examples.csv'
COPY all_examples FROM :'f' (FORMAT csv, HEADER);
\set f :data '/targets.csv'
COPY all_targets FROM :'f' (FORMAT csv, HEADER);
\set f :data '/subsets.csv'
COPY all_subsets FROM :'f' (FORMAT csv, HEADER);
\set f :data '/subset_split.csv'
COPY subset_split FROM :'f' (FORMAT csv, HEADER);
\set f :data '/losses.csv'
COPY all_losses FROM :'f' (FORMAT csv, HEADER);

-- Training and evaluation never share a subset or a target.
CREATE TABLE examples AS SELECT id, text FROM all_examples;
CREATE TABLE train_targets AS SELECT id, text FROM all_targets WHERE split = 'train';
CREATE TABLE eval_targets AS SELECT id, text FROM all_targets WHERE split = 'eval';
CREATE TABLE train_subsets AS SELECT s.* FROM all_subsets s JOIN subset_split USING (subset_id) WHERE split = 'train';
CREATE TABLE eval_subsets AS SELECT s.* FROM all_subsets s JOIN subset_split USING (subset_id) WHERE split = 'eval';
CREATE TABLE train_losses AS SELECT l.* FROM all_losses l
    WHERE subset_id IN (SELECT subset_id FROM train_subsets) AND target_id IN (SELECT id FROM train_targets);
CREATE TABLE eval_losses AS SELECT l.* FROM all_losses l
    WHERE subset_id IN (SELECT subset_id FROM eval_subsets) AND target_id IN (SELECT id FROM eval_targets);

SELECT airrep.load_model('minilm', :'minilm') \gset

-- Encode time and storage per example: every encoder here is MiniLM-shaped, so one
-- measurement (the base model's) stands for all of them.
ALTER TABLE examples ADD COLUMN embedding airrep_vector(384);
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SET client_min_messages = warning;
CALL airrep.embed('examples', 'text', 'embedding', 'minilm', 32);
RESET client_min_messages;
SELECT (extract(epoch FROM clock_timestamp()) - :t0) * 1000 / count(*) AS encode_ms,
       avg(pg_column_size(embedding)) AS bytes FROM examples \gset

CREATE TABLE encode_cost AS SELECT :encode_ms::float8 AS encode_ms, :bytes::float8 AS bytes;
CREATE TABLE results (method text, lds float8, encode_ms float8, bytes float8, train_s float8);
CREATE TABLE per_target (method text, target_id bigint, spearman float8);
CREATE FUNCTION score(method text, model text, pooling text, train_s float8) RETURNS void LANGUAGE sql AS $$
    INSERT INTO per_target SELECT method, target_id, spearman
        FROM airrep.lds_per_target(model, 'examples', 'eval_targets', 'eval_subsets', 'eval_losses', pooling);
    INSERT INTO results SELECT score.method, avg(spearman), c.encode_ms, c.bytes, score.train_s
        FROM per_target p, encode_cost c WHERE p.method = score.method GROUP BY c.encode_ms, c.bytes;
$$;
SELECT score('MiniLM-L6 base (' || p || ')', 'minilm', p, 0) FROM unnest(ARRAY['sum', 'attention']) p;

-- The controls: step 0 of training the whole base with a fresh random projector, and
-- step 0 of the default recipe (the depth, centring and unit length it chooses from the training labels,
-- before any step): what the steps add is the difference to the trained rows.
SELECT airrep.train('control', 'minilm', 'examples', 'train_targets', 'train_subsets', 'train_losses',
                    '{"steps": 0, "projector_init": "random", "depth": "all", "holdout_fraction": 0, "train_layers": "projector"}') \gset
SELECT score('Step 0: base + random projector (attention)', 'control', 'attention', 0);
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT airrep.train('start', 'minilm', 'examples', 'train_targets', 'train_subsets', 'train_losses',
                    :'train_options'::jsonb || '{"steps": 0, "pooling": "attention"}') \gset
SELECT score('Step 0 of the default recipe: depth, centring and unit length chosen (attention)', 'start', 'attention',
             extract(epoch FROM clock_timestamp()) - :t0);

SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT airrep.train('airrep-sum', 'minilm', 'examples', 'train_targets', 'train_subsets', 'train_losses',
                    :'train_options'::jsonb || '{"pooling": "sum"}') \gset
SELECT extract(epoch FROM clock_timestamp()) - :t0 AS train_sum_s \gset
SELECT airrep.train('airrep-attention', 'minilm', 'examples', 'train_targets', 'train_subsets', 'train_losses',
                    :'train_options'::jsonb || '{"pooling": "attention"}') \gset
SELECT extract(epoch FROM clock_timestamp()) - :t0 - :train_sum_s AS train_attention_s \gset
SELECT score('AirRep trained (sum)', 'airrep-sum', 'sum', :train_sum_s),
       score('AirRep trained (attention)', 'airrep-attention', 'attention', :train_attention_s);
-- What unit length adds: the default recipe with it off (the paper's raw dot product).
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT airrep.train('airrep-raw', 'minilm', 'examples', 'train_targets', 'train_subsets', 'train_losses',
                    :'train_options'::jsonb || '{"pooling": "attention", "unit_scale": "off"}') \gset
SELECT score('AirRep trained, unit length off (attention)', 'airrep-raw', 'attention',
             extract(epoch FROM clock_timestamp()) - :t0);

-- The selection experiment's AirRep side: each encoder picks 10% of the pool for the
-- held-out targets with every strategy of airrep.select_data (selection.rs fine-tunes on them).
CREATE TABLE selected (method text, strategy text, example_id bigint, pick_order int);
CREATE FUNCTION select_with(method text, model text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DROP TABLE IF EXISTS sel_pool, sel_targets;
    CREATE TABLE sel_pool AS SELECT id, airrep.encode(model, text) AS embedding FROM examples;
    CREATE TABLE sel_targets AS SELECT id, airrep.encode(model, text) AS embedding FROM eval_targets;
    INSERT INTO selected SELECT method, s, d.example_id, d.pick_order
        FROM unnest(ARRAY['round_robin', 'max', 'mean', 'group']) s,
             LATERAL airrep.select_data('sel_targets', 'sel_pool', (SELECT count(*) / 10 FROM examples), s) d;
END $$;
SET client_min_messages = warning;
SELECT select_with('MiniLM-L6 base', 'minilm'), select_with('AirRep trained (attention)', 'airrep-attention');
RESET client_min_messages;

\pset format unaligned
\pset fieldsep '\t'
\pset tuples_only on
SELECT * FROM results;
SELECT 'per_target', * FROM per_target ORDER BY 2, 3;
SELECT 'selected', method, strategy, example_id FROM selected ORDER BY method, strategy, pick_order;
SELECT 'selection', name, config -> 'airrep_training' ->> 'selection' FROM airrep.models WHERE parent_id IS NOT NULL ORDER BY name;
