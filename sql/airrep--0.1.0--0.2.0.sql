-- airrep 0.1.0 -> 0.2.0: selection, cleaning and pgvector interop functions; model
-- ownership with row-level security; weights no longer readable by PUBLIC; the registry
-- dumped by pg_dump; backend settings shown by airrep.settings(). Models, training logs
-- and airrep_vector columns are kept as they are.
\echo Use "ALTER EXTENSION airrep UPDATE TO '0.2.0'" to load this file. \quit

-- Ownership: models that exist already belong to the role that runs the upgrade.
ALTER TABLE airrep.models ADD COLUMN owner regrole NOT NULL DEFAULT current_user::regrole;
ALTER TABLE airrep.models ENABLE ROW LEVEL SECURITY;
CREATE POLICY models_visible ON airrep.models FOR SELECT USING (true);
CREATE POLICY models_added_as_self ON airrep.models FOR INSERT WITH CHECK (owner = current_user::regrole);
CREATE POLICY models_changed_by_owner ON airrep.models FOR UPDATE
    USING (pg_has_role(current_user, owner::oid, 'MEMBER')) WITH CHECK (pg_has_role(current_user, owner::oid, 'MEMBER'));
CREATE POLICY models_dropped_by_owner ON airrep.models FOR DELETE USING (pg_has_role(current_user, owner::oid, 'MEMBER'));
ALTER TABLE airrep.model_files ENABLE ROW LEVEL SECURITY;
CREATE POLICY files_visible ON airrep.model_files FOR SELECT USING (true);
CREATE POLICY files_written_by_owner ON airrep.model_files FOR ALL
    USING (EXISTS (SELECT 1 FROM airrep.models m WHERE m.id = model_id AND pg_has_role(current_user, m.owner::oid, 'MEMBER')))
    WITH CHECK (EXISTS (SELECT 1 FROM airrep.models m WHERE m.id = model_id AND pg_has_role(current_user, m.owner::oid, 'MEMBER')));
-- Like a model's files, its training log is written only by the model's owner.
ALTER TABLE airrep.training_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY log_visible ON airrep.training_log FOR SELECT USING (true);
CREATE POLICY log_written_by_owner ON airrep.training_log FOR ALL
    USING (EXISTS (SELECT 1 FROM airrep.models m WHERE m.id = model_id AND pg_has_role(current_user, m.owner::oid, 'MEMBER')))
    WITH CHECK (EXISTS (SELECT 1 FROM airrep.models m WHERE m.id = model_id AND pg_has_role(current_user, m.owner::oid, 'MEMBER')));
REVOKE SELECT ON airrep.model_files FROM PUBLIC;

-- model_list gains the owner (a new middle column: the view is made again).
DROP VIEW airrep.model_list;
CREATE VIEW airrep.model_list AS
SELECT m.id, m.name, m.owner, p.name AS parent, m.created_at, m.description,
       (m.config ->> 'num_hidden_layers')::int AS layers,
       (m.config ->> 'hidden_size')::int AS hidden_size,
       coalesce(sum(octet_length(f.data)) FILTER (WHERE f.file = 'model.safetensors'), 0) AS weights_bytes,
       coalesce(sum(octet_length(f.data)) FILTER (WHERE f.file = 'tokenizer.json'), 0) AS tokenizer_bytes,
       pg_size_pretty(coalesce(sum(octet_length(f.data)), 0)) AS total_size
FROM airrep.models m
LEFT JOIN airrep.models p ON p.id = m.parent_id
LEFT JOIN airrep.model_files f ON f.model_id = m.id
GROUP BY m.id, p.name;
GRANT SELECT ON airrep.model_list TO PUBLIC;

-- Models are data: pg_dump carries the registry's rows and the id sequence's position.
SELECT pg_catalog.pg_extension_config_dump('airrep.models', '');
SELECT pg_catalog.pg_extension_config_dump('airrep.model_files', '');
SELECT pg_catalog.pg_extension_config_dump('airrep.training_log', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('airrep.models', 'id')::regclass, '');

-- New functions.
CREATE  FUNCTION airrep."top_k_by_column"(
	"targets" regclass, /* PgRelation */
	"pool" regclass, /* PgRelation */
	"k" INT, /* i32 */
	"vector_column" TEXT /* & str */
) RETURNS TABLE (
	"target_id" bigint,  /* i64 */
	"example_id" bigint,  /* i64 */
	"rank" INT,  /* i32 */
	"influence" double precision  /* f64 */
)
STRICT STABLE PARALLEL RESTRICTED  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'top_k_wrapper';

CREATE  FUNCTION airrep."select_data_by_column"(
	"targets" regclass, /* Option < PgRelation > */
	"pool" regclass, /* Option < PgRelation > */
	"budget" double precision, /* Option < f64 > */
	"strategy_name" TEXT, /* Option < & str > */
	"cost_column" TEXT, /* Option < & str > */
	"vector_column" TEXT /* Option < & str > */
) RETURNS TABLE (
	"example_id" bigint,  /* i64 */
	"pick_order" INT,  /* i32 */
	"target_id" bigint,  /* Option < i64 > */
	"influence" double precision,  /* f64 */
	"cumulative_cost" double precision  /* f64 */
)
STABLE PARALLEL RESTRICTED  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'select_data_wrapper';

CREATE  FUNCTION airrep."near_duplicates_by_column"(
	"relation" regclass, /* PgRelation */
	"threshold" double precision, /* f64 */
	"keep" TEXT, /* & str */
	"vector_column" TEXT /* & str */
) RETURNS TABLE (
	"id" bigint,  /* i64 */
	"cluster_id" bigint,  /* i64 */
	"keep" bool,  /* bool */
	"nearest_id" bigint,  /* i64 */
	"similarity" double precision  /* f64 */
)
STRICT STABLE PARALLEL RESTRICTED  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'near_duplicates_wrapper';

CREATE  FUNCTION airrep."contamination_by_column"(
	"train" regclass, /* PgRelation */
	"benchmark" regclass, /* PgRelation */
	"methods" TEXT[], /* Vec < Option < String > > */
	"ngram" INT, /* i32 */
	"threshold" double precision, /* f64 */
	"text_column" TEXT, /* & str */
	"vector_column" TEXT /* & str */
) RETURNS TABLE (
	"train_id" bigint,  /* i64 */
	"benchmark_id" bigint,  /* i64 */
	"method" TEXT,  /* String */
	"score" double precision  /* f64 */
)
STRICT STABLE PARALLEL RESTRICTED  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'contamination_wrapper';

CREATE  FUNCTION airrep."settings"() RETURNS TABLE (
	"name" TEXT,  /* String */
	"requested" TEXT,  /* String */
	"effective" TEXT  /* String */
)
STRICT STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'settings_wrapper';

CREATE FUNCTION airrep.top_k(targets regclass, pool regclass, k integer, vector_column name DEFAULT 'embedding')
RETURNS TABLE(target_id bigint, example_id bigint, rank integer, influence double precision)
LANGUAGE sql STABLE STRICT PARALLEL RESTRICTED
AS $$ SELECT * FROM airrep.top_k_by_column(targets, pool, k, vector_column::text) $$;
COMMENT ON FUNCTION airrep.top_k(regclass, regclass, integer, name) IS
    'for every target row, the k pool rows of largest influence (exact; ties to the smaller id)';

CREATE FUNCTION airrep.select_data(
    targets regclass, pool regclass, budget double precision, strategy text DEFAULT 'round_robin',
    cost_column name DEFAULT NULL, vector_column name DEFAULT 'embedding')
RETURNS TABLE(example_id bigint, pick_order integer, target_id bigint, influence double precision,
              cumulative_cost double precision)
LANGUAGE sql STABLE PARALLEL RESTRICTED
AS $$ SELECT * FROM airrep.select_data_by_column(targets, pool, budget, strategy, cost_column::text, vector_column::text) $$;
COMMENT ON FUNCTION airrep.select_data(regclass, regclass, double precision, text, name, name) IS
    'budgeted selection of pool rows for the targets: round_robin, max, mean or group (greedy attention-pooled gain)';

CREATE FUNCTION airrep.near_duplicates(relation regclass, threshold double precision DEFAULT 0.9,
                                       keep text DEFAULT 'lowest_id', vector_column name DEFAULT 'embedding')
RETURNS TABLE(id bigint, cluster_id bigint, keep boolean, nearest_id bigint, similarity double precision)
LANGUAGE sql STABLE STRICT PARALLEL RESTRICTED
AS $$ SELECT * FROM airrep.near_duplicates_by_column(relation, threshold, keep, vector_column::text) $$;
COMMENT ON FUNCTION airrep.near_duplicates(regclass, double precision, text, name) IS
    'clusters of rows with cosine similarity >= threshold (connected components), one row per member, one kept per cluster';

CREATE FUNCTION airrep.contamination(
    train regclass, benchmark regclass, methods text[] DEFAULT '{exact,ngram,embedding}',
    ngram integer DEFAULT 13, threshold double precision DEFAULT 0.9,
    text_column name DEFAULT 'text', vector_column name DEFAULT 'embedding')
RETURNS TABLE(train_id bigint, benchmark_id bigint, method text, score double precision)
LANGUAGE sql STABLE STRICT PARALLEL RESTRICTED
AS $$ SELECT * FROM airrep.contamination_by_column(train, benchmark, methods, ngram, threshold,
                                                    text_column::text, vector_column::text) $$;
COMMENT ON FUNCTION airrep.contamination(regclass, regclass, text[], integer, double precision, name, name) IS
    'training rows that leak benchmark items: exact (normalised text), ngram (shared word n-gram), embedding (cosine >= threshold)';

CREATE FUNCTION airrep.create_pgvector_casts() RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Both types by their extensions' schemas, not by a search_path a caller could shadow.
    ours regtype := (SELECT prorettype FROM pg_proc WHERE oid = 'airrep.encode(text, text)'::regprocedure);
    theirs regtype := (SELECT t.oid FROM pg_type t JOIN pg_extension e ON e.extnamespace = t.typnamespace
                       WHERE e.extname = 'vector' AND t.typname = 'vector');
BEGIN
    IF theirs IS NULL THEN
        RAISE EXCEPTION 'pgvector is not installed in this database'
            USING ERRCODE = 'undefined_object', HINT = 'CREATE EXTENSION vector; first';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_cast WHERE castsource = ours AND casttarget = theirs) THEN
        EXECUTE format('CREATE CAST (%s AS %s) WITHOUT FUNCTION', ours, theirs);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_cast WHERE castsource = theirs AND casttarget = ours) THEN
        EXECUTE format('CREATE CAST (%s AS %s) WITHOUT FUNCTION', theirs, ours);
    END IF;
    RETURN true;
END $$;
COMMENT ON FUNCTION airrep.create_pgvector_casts() IS
    'binary-compatible casts both ways between airrep_vector and pgvector''s vector';

CREATE FUNCTION airrep.drop_pgvector_casts() RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Both types by their extensions' schemas, not by a search_path a caller could shadow.
    ours regtype := (SELECT prorettype FROM pg_proc WHERE oid = 'airrep.encode(text, text)'::regprocedure);
    theirs regtype := (SELECT t.oid FROM pg_type t JOIN pg_extension e ON e.extnamespace = t.typnamespace
                       WHERE e.extname = 'vector' AND t.typname = 'vector');
    found boolean := false;
BEGIN
    IF theirs IS NOT NULL AND EXISTS (SELECT 1 FROM pg_cast WHERE castsource = ours AND casttarget = theirs) THEN
        EXECUTE format('DROP CAST (%s AS %s)', ours, theirs);
        found := true;
    END IF;
    IF theirs IS NOT NULL AND EXISTS (SELECT 1 FROM pg_cast WHERE castsource = theirs AND casttarget = ours) THEN
        EXECUTE format('DROP CAST (%s AS %s)', theirs, ours);
        found := true;
    END IF;
    RETURN found;
END $$;
COMMENT ON FUNCTION airrep.drop_pgvector_casts() IS
    'drop the casts airrep.create_pgvector_casts() made (true if there were any)';

-- The combinable aggregates keep their state in bytea instead of internal, so Citus can push
-- them down to its workers; their support functions gain the airrep_ prefix. (A view that
-- uses one of them must be dropped before the upgrade and made again after it.)
DROP AGGREGATE group_influence(airrep_vector, airrep_vector);
DROP AGGREGATE group_influence(airrep_vector, airrep_vector, text);
DROP AGGREGATE sum(airrep_vector);
DROP AGGREGATE avg(airrep_vector);
DROP FUNCTION group_influence_step(internal, airrep_vector, airrep_vector);
DROP FUNCTION group_influence_pooled_step(internal, airrep_vector, airrep_vector, text);
DROP FUNCTION group_influence_final(internal);
DROP FUNCTION group_influence_combine(internal, internal);
DROP FUNCTION group_influence_serialize(internal);
DROP FUNCTION group_influence_deserialize(bytea, internal);
DROP FUNCTION airrep_vector_accum(internal, airrep_vector);
DROP FUNCTION airrep_vector_sum_final(internal);
DROP FUNCTION airrep_vector_avg_final(internal);
DROP FUNCTION airrep_vector_sum_combine(internal, internal);
DROP FUNCTION airrep_vector_sum_serialize(internal);
DROP FUNCTION airrep_vector_sum_deserialize(bytea, internal);

CREATE FUNCTION airrep_group_influence_step(state bytea, target airrep_vector, member airrep_vector)
RETURNS bytea PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'airrep_group_influence_step';

CREATE  FUNCTION "airrep_group_influence_pooled_step"(
	"state" bytea, /* Option < StateBytes > */
	"target" airrep_vector, /* Option < VectorRef < '_ > > */
	"member" airrep_vector, /* Option < VectorRef < '_ > > */
	"pooling" TEXT /* Option < & str > */
) RETURNS bytea /* Option < StateBytes > */
PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'airrep_group_influence_pooled_step_wrapper';

CREATE  FUNCTION "airrep_group_influence_final"(
	"state" bytea /* StateBytes */
) RETURNS double precision /* Option < f64 > */
STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'airrep_group_influence_final_wrapper';

CREATE  FUNCTION "airrep_group_influence_combine"(
	"left" bytea, /* Option < StateBytes > */
	"right" bytea /* Option < StateBytes > */
) RETURNS bytea /* :: std :: option :: Option < Vec < u8 > > */
PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'airrep_group_influence_combine_wrapper';

CREATE  FUNCTION "airrep_vector_sum_accum"(
	"state" bytea, /* Option < StateBytes > */
	"value" airrep_vector /* Option < VectorRef < '_ > > */
) RETURNS bytea /* Option < StateBytes > */
PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'airrep_vector_sum_accum_wrapper';

CREATE  FUNCTION "airrep_vector_sum_result"(
	"state" bytea /* StateBytes */
) RETURNS airrep_vector /* Option < Vector > */
STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'airrep_vector_sum_result_wrapper';

CREATE  FUNCTION "airrep_vector_avg_result"(
	"state" bytea /* StateBytes */
) RETURNS airrep_vector /* Option < Vector > */
STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'airrep_vector_avg_result_wrapper';

CREATE  FUNCTION "airrep_vector_sum_merge"(
	"left" bytea, /* Option < StateBytes > */
	"right" bytea /* Option < StateBytes > */
) RETURNS bytea /* :: std :: option :: Option < Vec < u8 > > */
PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'airrep_vector_sum_merge_wrapper';

CREATE AGGREGATE sum(airrep_vector) (
    SFUNC = airrep_vector_sum_accum, STYPE = bytea, FINALFUNC = airrep_vector_sum_result,
    COMBINEFUNC = airrep_vector_sum_merge, PARALLEL = SAFE
);
CREATE AGGREGATE avg(airrep_vector) (
    SFUNC = airrep_vector_sum_accum, STYPE = bytea, FINALFUNC = airrep_vector_avg_result,
    COMBINEFUNC = airrep_vector_sum_merge, PARALLEL = SAFE
);
CREATE AGGREGATE group_influence(target airrep_vector, member airrep_vector) (
    SFUNC = airrep_group_influence_step,
    STYPE = bytea,
    FINALFUNC = airrep_group_influence_final,
    COMBINEFUNC = airrep_group_influence_combine,
    PARALLEL = SAFE
);
CREATE AGGREGATE group_influence(target airrep_vector, member airrep_vector, pooling text) (
    SFUNC = airrep_group_influence_pooled_step,
    STYPE = bytea,
    FINALFUNC = airrep_group_influence_final,
    COMBINEFUNC = airrep_group_influence_combine,
    PARALLEL = SAFE
);

-- airrep.embed: rows matched by (tableoid, ctid), arguments and column types checked, a row
-- a trigger keeps NULL an error instead of an endless loop, and the checks and batches in
-- functions with a fixed search_path. The same text as sql/embed.sql (tests/upgrade.sh
-- compares every definition with a fresh install).
CREATE OR REPLACE FUNCTION airrep.embed_rows_to_fill(
    relation regclass, text_column name, vector_column name, model text, batch_size int)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kind        "char";
    text_category "char";
    vector_type oid;
    total       bigint;
BEGIN
    IF relation IS NULL OR text_column IS NULL OR vector_column IS NULL OR model IS NULL THEN
        RAISE EXCEPTION 'airrep.embed: relation, text_column, vector_column and model must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be a positive integer, not %', batch_size;
    END IF;
    SELECT relkind INTO kind FROM pg_class WHERE oid = relation;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'airrep.embed: "%" is not a table', relation
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'embed into the table the view or foreign table reads, or into a table of its rows';
    END IF;
    -- Any string type is read as text (text, varchar, char, name, citext: category 'S',
    -- which a domain shares with its base); a domain over airrep_vector counts as it.
    SELECT t.typcategory INTO text_category
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = relation AND a.attname = text_column AND NOT a.attisdropped AND a.attnum > 0;
    SELECT coalesce(nullif(t.typbasetype, 0), t.oid) INTO vector_type
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = relation AND a.attname = vector_column AND NOT a.attisdropped AND a.attnum > 0;
    IF text_category IS DISTINCT FROM 'S' THEN
        RAISE EXCEPTION 'airrep.embed: "%" has no text column "%"', relation, text_column
            USING ERRCODE = 'undefined_column';
    END IF;
    -- airrep_vector is named through encode's result type: it lives in the extension's schema,
    -- which is not on this search_path.
    IF vector_type IS DISTINCT FROM
           (SELECT prorettype FROM pg_proc WHERE oid = 'airrep.encode(text, text)'::regprocedure) THEN
        RAISE EXCEPTION 'airrep.embed: "%" has no airrep_vector column "%"', relation, vector_column
            USING ERRCODE = 'undefined_column';
    END IF;
    PERFORM airrep.encode(model, ARRAY[]::text[]);  -- fails early on an unknown model
    EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NULL AND %I IS NOT NULL',
                   relation, vector_column, text_column) INTO total;
    RETURN total;
END $$;
COMMENT ON FUNCTION airrep.embed_rows_to_fill(regclass, name, name, text, int) IS
    'part of airrep.embed: checks its arguments and counts the rows it will fill';

CREATE OR REPLACE FUNCTION airrep.embed_batch(
    relation regclass, text_column name, vector_column name, model text, batch_size int,
    OUT selected bigint, OUT updated bigint, OUT still_null bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format(
        'WITH todo AS (
             SELECT tableoid AS part, ctid AS row_id, %2$I::text AS body FROM %1$s
             WHERE %3$I IS NULL AND %2$I IS NOT NULL LIMIT %4$s FOR UPDATE SKIP LOCKED),
         batch AS (SELECT array_agg(part) AS parts, array_agg(row_id) AS ids,
                          array_agg(body) AS bodies FROM todo),
         embedded AS (
             SELECT e.part, e.row_id, e.embedding
             FROM batch, unnest(batch.parts, batch.ids, airrep.encode(%5$L, batch.bodies))
                  AS e(part, row_id, embedding)),
         updated AS (
             UPDATE %1$s AS t SET %3$I = embedded.embedding FROM embedded
             WHERE t.tableoid = embedded.part AND t.ctid = embedded.row_id
             RETURNING t.%3$I IS NULL AS still_null)
         SELECT (SELECT count(*) FROM todo), count(*), count(*) FILTER (WHERE still_null) FROM updated',
        relation, text_column, vector_column, batch_size, model) INTO selected, updated, still_null;
END $$;
COMMENT ON FUNCTION airrep.embed_batch(regclass, name, name, text, int) IS
    'part of airrep.embed: fills up to batch_size NULL vectors; the rows selected, updated, and still NULL after the update';

CREATE OR REPLACE PROCEDURE airrep.embed(
    relation regclass, text_column name, vector_column name, model text, batch_size int DEFAULT 64)
LANGUAGE plpgsql AS $$
DECLARE
    total   bigint;
    done    bigint := 0;
    batch   record;
    started timestamptz := pg_catalog.clock_timestamp();
    elapsed double precision;
    rate    double precision;
BEGIN
    total := airrep.embed_rows_to_fill(relation, text_column, vector_column, model, batch_size);
    -- Batches commit, which a transaction block forbids: fail here, before any encoding.
    COMMIT;
    LOOP
        batch := airrep.embed_batch(relation, text_column, vector_column, model, batch_size);
        EXIT WHEN batch.selected = 0;
        -- A row left NULL, or not updated at all, would be picked again on every pass (and
        -- a batch of them would end the call as if done): stop with an error instead.
        IF batch.updated < batch.selected THEN
            RAISE EXCEPTION 'airrep.embed: % of % rows of "%" were not updated',
                batch.selected - batch.updated, batch.selected, relation
                USING ERRCODE = 'triggered_action_exception',
                      HINT = 'a trigger that returns NULL or a row-level security policy skips them; the batches committed before stay';
        END IF;
        IF batch.still_null > 0 THEN
            RAISE EXCEPTION 'airrep.embed: % of % rows of "%" still have a NULL % after the update',
                batch.still_null, batch.updated, relation, pg_catalog.quote_ident(vector_column)
                USING ERRCODE = 'triggered_action_exception',
                      HINT = 'a trigger or rule on the table resets the column; the batches committed before stay';
        END IF;
        COMMIT;
        done := done + batch.updated;
        elapsed := pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - started);
        -- float8 operands: pg_catalog has no exact bigint / float8 operator, so a caller's
        -- one earlier on the path would be chosen.
        rate := done::float8 / greatest(elapsed, 1e-6);
        RAISE NOTICE 'airrep.embed: % of % rows, % rows/s, ETA % s',
            done, total, pg_catalog.round(rate::numeric, 1),
            pg_catalog.round((greatest(total - done, 0)::float8 / rate)::numeric, 1);
    END LOOP;
END $$;
