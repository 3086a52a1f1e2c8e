-- airrep.top_k and airrep.select_data against brute-force references written in SQL and
-- PL/pgSQL. Vectors hold small integers, so every influence is exact and ties are common.
SELECT setseed(0.42);
CREATE TABLE sel_pool (id bigint, embedding airrep_vector(4), tokens int, lang text);
INSERT INTO sel_pool
SELECT i, CASE WHEN i % 11 = 0 THEN NULL
               ELSE ('[' || array_to_string(ARRAY(SELECT floor(random() * 5 - 2)::int + 0 * i FROM generate_series(1, 4)), ',') || ']')::airrep_vector END,
       1 + (i * 7) % 5, CASE WHEN i % 3 = 0 THEN 'fr' ELSE 'en' END
FROM generate_series(1, 60) i;
CREATE TABLE sel_targets (id int, embedding airrep_vector);
INSERT INTO sel_targets
SELECT 100 - i, ('[' || array_to_string(ARRAY(SELECT floor(random() * 5 - 2)::int + 0 * i FROM generate_series(1, 4)), ',') || ']')::airrep_vector
FROM generate_series(1, 6) i;
INSERT INTO sel_targets VALUES (50, NULL);  -- a NULL target is skipped

-- top_k equals ORDER BY influence DESC, id LIMIT k, for k below, at and above the pool size
CREATE FUNCTION brute_top_k(k int) RETURNS TABLE(target_id bigint, example_id bigint, rank int, influence float8)
LANGUAGE sql AS $$
    SELECT t.id, p.id, p.rank::int, p.influence
    FROM sel_targets t, LATERAL (
        SELECT p.id, influence(t.embedding, p.embedding) AS influence,
               row_number() OVER (ORDER BY influence(t.embedding, p.embedding) DESC, p.id) AS rank
        FROM sel_pool p WHERE p.embedding IS NOT NULL
        ORDER BY 3 LIMIT k) p
    WHERE t.embedding IS NOT NULL $$;
SELECT k, (SELECT count(*) FROM (SELECT * FROM airrep.top_k('sel_targets', 'sel_pool', k)
                                 EXCEPT ALL SELECT * FROM brute_top_k(k)) d) AS extra,
          (SELECT count(*) FROM (SELECT * FROM brute_top_k(k)
                                 EXCEPT ALL SELECT * FROM airrep.top_k('sel_targets', 'sel_pool', k)) d) AS missing,
          (SELECT count(*) FROM airrep.top_k('sel_targets', 'sel_pool', k)) AS rows
FROM (VALUES (1), (5), (54), (80)) v(k);
-- a view filters the pool; the vector column can be named
CREATE VIEW sel_english AS SELECT id, embedding AS vec, tokens FROM sel_pool WHERE lang = 'en';
CREATE VIEW sel_targets_vec AS SELECT id, embedding AS vec FROM sel_targets;
SELECT count(*) AS rows, bool_and(p.lang = 'en') AS all_english
FROM airrep.top_k('sel_targets_vec', 'sel_english', 3, 'vec') k JOIN sel_pool p ON p.id = k.example_id;

-- Reference selections, one pick at a time, as the issue states the rules.
CREATE FUNCTION reference_select(strategy text, budget float8, costed bool)
RETURNS TABLE(example_id bigint, pick_order int, target_id bigint, influence float8, cumulative_cost float8)
LANGUAGE plpgsql AS $$
DECLARE
    total float8 := 0; n int := 0; t record; best record; progressed bool; done bool := false;
BEGIN
    CREATE TEMP TABLE picked (id bigint, ord int, target bigint, score float8, cum float8);
    WHILE NOT done LOOP
        progressed := false;
        -- round robin: each target in id order; the others: one pick over all targets
        FOR t IN (SELECT * FROM sel_targets WHERE embedding IS NOT NULL AND strategy = 'round_robin' ORDER BY id)
                 UNION ALL SELECT NULL::int, NULL::airrep_vector WHERE strategy <> 'round_robin' LOOP
            SELECT q.* INTO best FROM (SELECT p.id, CASE strategy
                    WHEN 'round_robin' THEN influence(t.embedding, p.embedding)
                    WHEN 'max' THEN (SELECT max(influence(u.embedding, p.embedding)) FROM sel_targets u WHERE u.embedding IS NOT NULL)
                    WHEN 'mean' THEN (SELECT avg(influence(u.embedding, p.embedding)) FROM sel_targets u WHERE u.embedding IS NOT NULL)
                    ELSE (SELECT sum(g) FROM (  -- group: gain in the summed attention-pooled score
                            SELECT group_influence(u.embedding, m.embedding) AS g FROM sel_targets u,
                                   (SELECT embedding FROM sel_pool WHERE id IN (SELECT id FROM picked) OR id = p.id) m
                            WHERE u.embedding IS NOT NULL GROUP BY u.id) gs)
                         - coalesce((SELECT sum(g) FROM (
                            SELECT group_influence(u.embedding, m.embedding) AS g FROM sel_targets u,
                                   (SELECT embedding FROM sel_pool WHERE id IN (SELECT id FROM picked)) m
                            WHERE u.embedding IS NOT NULL GROUP BY u.id) gs), 0)
                    END AS s,
                   CASE WHEN costed THEN p.tokens ELSE 1 END AS c
            FROM sel_pool p WHERE p.embedding IS NOT NULL AND p.id NOT IN (SELECT id FROM picked)) q
            ORDER BY round(q.s::numeric, 9) DESC, q.id LIMIT 1;  -- gains equal but for rounding tie
            CONTINUE WHEN best.id IS NULL;
            IF total + best.c > budget THEN done := true; EXIT; END IF;
            total := total + best.c; n := n + 1; progressed := true;
            INSERT INTO picked VALUES (best.id, n, t.id, best.s, total);
        END LOOP;
        done := done OR NOT progressed;
    END LOOP;
    RETURN QUERY SELECT id, ord, target, score, cum FROM picked ORDER BY ord;
    DROP TABLE picked;
END $$;
CREATE FUNCTION rounded(strategy text, budget float8, costed bool, from_airrep bool)
RETURNS TABLE(example_id bigint, pick_order int, target_id bigint, influence numeric, cumulative_cost numeric)
LANGUAGE sql AS $$
    SELECT example_id, pick_order, target_id, round(influence::numeric, 9), round(cumulative_cost::numeric, 9)
    FROM airrep.select_data('sel_targets', 'sel_pool', budget, strategy, CASE WHEN costed THEN 'tokens' END)
    WHERE from_airrep
    UNION ALL
    SELECT example_id, pick_order, target_id, round(influence::numeric, 9), round(cumulative_cost::numeric, 9)
    FROM reference_select(strategy, budget, costed) WHERE NOT from_airrep $$;
-- every strategy, with row and token budgets, equals the reference pick for pick
SELECT strategy, budget, costed,
       (SELECT count(*) FROM rounded(strategy, budget, costed, true)) AS picks,
       (SELECT count(*) FROM (SELECT * FROM rounded(strategy, budget, costed, true)
                              EXCEPT ALL SELECT * FROM rounded(strategy, budget, costed, false)) d) AS differ,
       (SELECT max(cumulative_cost) <= budget FROM rounded(strategy, budget, costed, true)) AS within_budget
FROM (VALUES ('round_robin'), ('max'), ('mean'), ('group')) s(strategy),
     (VALUES (7.0, false), (25.0, true), (0.5, false), (52.0, false), (1000.0, false)) b(budget, costed)
WHERE strategy <> 'group' OR budget < 50  -- the PL/pgSQL reference of group is cubic in the picks
ORDER BY 1, 2, 3;
-- the README's pattern: picks joined to metadata, excluding rows through a view
CREATE VIEW sel_clean AS SELECT * FROM sel_pool WHERE id NOT IN (SELECT example_id FROM airrep.top_k('sel_targets', 'sel_pool', 1));
SELECT count(*) AS picks, count(*) FILTER (WHERE s.example_id IN (SELECT example_id FROM airrep.top_k('sel_targets', 'sel_pool', 1))) AS excluded_picked
FROM airrep.select_data('sel_targets', 'sel_clean', 10) s;

-- errors
SELECT * FROM airrep.top_k('sel_targets', 'sel_pool', 0);
SELECT * FROM airrep.top_k('sel_targets', 'sel_pool', 3, 'nope');
SELECT * FROM airrep.top_k('sel_targets', 'sel_english', 3);
CREATE TABLE sel_wide (id int, embedding airrep_vector);
INSERT INTO sel_wide VALUES (1, '[1,2,3]');
SELECT * FROM airrep.top_k('sel_targets', 'sel_wide', 3);
CREATE TABLE sel_text_ids (id text, embedding airrep_vector);
SELECT * FROM airrep.top_k('sel_targets', 'sel_text_ids', 3);
SELECT * FROM airrep.select_data('sel_targets', 'sel_pool', 10, 'best');
SELECT * FROM airrep.select_data('sel_targets', 'sel_pool', -1);
SELECT * FROM airrep.select_data('sel_targets', 'sel_pool', 'NaN');
SELECT * FROM airrep.select_data('sel_targets', 'sel_pool', 10, 'max', 'lang');
-- a pool that changes between the scan and the lookup of the picks' costs is an error, not
-- a silent gap (here a view whose rows run out after 60 reads)
CREATE SEQUENCE sel_reads;
CREATE VIEW sel_vanishing AS SELECT * FROM sel_pool WHERE nextval('sel_reads') <= 60;
SELECT count(*) FROM airrep.select_data('sel_targets', 'sel_vanishing', 10, 'round_robin', 'tokens');
SELECT setval('sel_reads', 1, false) IS NOT NULL AS refilled;
SELECT count(*) FROM airrep.select_data('sel_targets', 'sel_vanishing', 10, 'group');
UPDATE sel_pool SET tokens = NULL WHERE id = 7;
SELECT * FROM airrep.select_data('sel_targets', 'sel_pool', 10, 'max', 'tokens');
-- finite vectors whose dot products leave float4's range are an error naming the row, not
-- a ranking of Infinity and NaN
CREATE TABLE sel_huge (id int, embedding airrep_vector);
INSERT INTO sel_huge VALUES (1, '[3e38,3e38]'), (2, '[1,1]'), (3, '[-3e38,3e38]');
SELECT * FROM airrep.top_k('sel_huge', 'sel_huge', 3);
SELECT * FROM airrep.select_data('sel_huge', 'sel_huge', 2, 'max');
SELECT * FROM airrep.select_data('sel_huge', 'sel_huge', 2, 'group');
-- a domain over airrep_vector is read as the type
CREATE DOMAIN sel_unit AS airrep_vector CHECK (airrep_norm(VALUE) > 0);
CREATE TABLE sel_domain (id int, embedding sel_unit);
INSERT INTO sel_domain VALUES (1, '[1,0]'), (2, '[0,1]'), (3, '[1,1]');
SELECT target_id, example_id, rank FROM airrep.top_k('sel_domain', 'sel_domain', 1) ORDER BY 1;
DROP TABLE sel_domain; DROP DOMAIN sel_unit;
-- a repeated id would make results ambiguous: an error for targets and for pool rows
CREATE TABLE sel_twice (id int, embedding airrep_vector);
INSERT INTO sel_twice VALUES (1, '[1,0]'), (1, '[1,0]'), (2, '[1,0.001]'), (2, '[0,1]'), (3, '[0,1]');
CREATE TABLE sel_one (id int, embedding airrep_vector);
INSERT INTO sel_one VALUES (1, '[1,0]');
SELECT * FROM airrep.top_k('sel_one', 'sel_twice', 5);
SELECT * FROM airrep.select_data('sel_one', 'sel_twice', 5, 'max');
SELECT * FROM airrep.select_data('sel_one', 'sel_twice', 5, 'group');
SELECT * FROM airrep.top_k('sel_twice', 'sel_one', 1);
SELECT * FROM airrep.select_data('sel_twice', 'sel_one', 1);
-- a regclass OID that names no relation is undefined_table (42P01), not an internal error
\set VERBOSITY sqlstate
SELECT * FROM airrep.top_k(4000000000::oid::regclass, 'sel_one', 1);
SELECT * FROM airrep.select_data('sel_one', 4000000000::oid::regclass, 1);
\set VERBOSITY default
SELECT * FROM airrep.top_k('sel_one', 4000000000::oid::regclass, 1);
-- blocks are sized by bytes under airrep.max_block_mb (superuser only): the smallest block
-- gives the same top k and selection as the default
SET airrep.max_block_mb = 1;
CREATE TABLE sel_wide_pool AS
SELECT i AS id, array_fill((i % 7)::real, ARRAY[16000])::airrep_vector AS embedding FROM generate_series(1, 40) i;
SELECT count(*) AS hits, min(influence), max(influence)
FROM airrep.top_k('sel_wide_pool', 'sel_wide_pool', 3);
SELECT array_agg(example_id ORDER BY pick_order) AS picks
FROM airrep.select_data('sel_wide_pool', 'sel_wide_pool', 4, 'group');
RESET airrep.max_block_mb;
SELECT array_agg(example_id ORDER BY pick_order) AS picks
FROM airrep.select_data('sel_wide_pool', 'sel_wide_pool', 4, 'group');
DROP TABLE sel_wide_pool;
DROP VIEW sel_clean, sel_english, sel_targets_vec, sel_vanishing;
DROP SEQUENCE sel_reads;
DROP TABLE sel_pool, sel_targets, sel_wide, sel_text_ids, sel_huge, sel_twice, sel_one;
DROP FUNCTION brute_top_k, reference_select, rounded;
