-- airrep 0.1.0 -> 0.2.0: selection, cleaning and pgvector interop functions; model
-- ownership with row-level security; weights no longer readable by PUBLIC; the registry
-- dumped by pg_dump; backend settings shown by airrep.settings(); columns kept embedded
-- by a background worker (embedding jobs). Models, training logs and airrep_vector
-- columns are kept as they are.
\echo Use "ALTER EXTENSION airrep UPDATE TO '0.2.0'" to load this file. \quit

-- 0.2.0 reads texts as UTF-8 only (CREATE EXTENSION refuses other encodings the same way).
DO $$
BEGIN
    IF pg_catalog.getdatabaseencoding() <> 'UTF8' THEN
        RAISE EXCEPTION 'airrep needs a UTF8 database: database "%" has encoding %',
                        pg_catalog.current_database(), pg_catalog.getdatabaseencoding()
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create the database WITH ENCODING ''UTF8'' (TEMPLATE template0) and install airrep there.';
    END IF;
END
$$;

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

-- Keeping columns embedded: embedding jobs, their trigger, the batches the background worker
-- and airrep.embed_pending run, the status view and the errors table. The same text as
-- sql/embedding_jobs.sql (tests/upgrade.sh compares every definition with a fresh install).
CREATE  FUNCTION airrep."embedding_worker_pid"() RETURNS INT /* core::option::Option<i32> */
STRICT VOLATILE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'embedding_worker_pid_wrapper';

CREATE  FUNCTION airrep."wake_embedding_worker"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wake_embedding_worker_wrapper';

-- Keeping a column embedded (README "Keeping vectors embedded"): a job per (relation, vector
-- column), a trigger on the table that makes a changed text's vector NULL in the same
-- statement, and batches that fill NULL vectors with the job's model, run by the background
-- worker (src/worker.rs) or by CALL airrep.embed_pending(). The tables, the trigger function
-- and every function here run with a fixed search_path, as airrep.embed's do.
CREATE TABLE airrep.embedding_jobs (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relation          regclass NOT NULL,
    text_column       name NOT NULL,
    vector_column     name NOT NULL,
    -- the model that made the column's vectors; a model in use cannot be dropped
    model_id          bigint NOT NULL REFERENCES airrep.models (id),
    -- batches run with this role's privileges; only it (or its members) may change the job
    owner             regrole NOT NULL DEFAULT current_user::regrole,
    created_at        timestamptz NOT NULL DEFAULT now(),
    model_since       timestamptz NOT NULL DEFAULT now(),
    embedded_rows     bigint NOT NULL DEFAULT 0,
    embedding_seconds double precision NOT NULL DEFAULT 0,
    last_run          timestamptz,
    last_embedded_at  timestamptz,
    last_error        text,
    last_error_at     timestamptz,
    UNIQUE (relation, vector_column)
);
COMMENT ON TABLE airrep.embedding_jobs IS
    'columns kept embedded (airrep.keep_embedded): the model that made each column''s vectors, the owner whose privileges the batches use, and their progress';

-- Rows whose text the model rejected: skipped until the row changes. A row version is named
-- by (tableoid, ctid, xmin), so a later UPDATE of the row (a new version) is tried again.
CREATE TABLE airrep.embedding_errors (
    job_id    bigint NOT NULL REFERENCES airrep.embedding_jobs (id) ON DELETE CASCADE,
    part      oid NOT NULL,
    row_id    tid NOT NULL,
    row_xmin  bigint NOT NULL,
    sqlstate  text NOT NULL,
    error     text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX embedding_errors_row ON airrep.embedding_errors (job_id, part, row_id);
COMMENT ON TABLE airrep.embedding_errors IS
    'rows of an embedding job whose text could not be encoded; skipped, never retried until the row changes';

-- Anyone may see the jobs; a job is added as oneself and changed or ended by its owner.
ALTER TABLE airrep.embedding_jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY jobs_visible ON airrep.embedding_jobs FOR SELECT USING (true);
CREATE POLICY jobs_added_as_self ON airrep.embedding_jobs FOR INSERT WITH CHECK (owner = current_user::regrole);
CREATE POLICY jobs_changed_by_owner ON airrep.embedding_jobs FOR UPDATE
    USING (pg_has_role(current_user, owner::oid, 'MEMBER')) WITH CHECK (pg_has_role(current_user, owner::oid, 'MEMBER'));
CREATE POLICY jobs_ended_by_owner ON airrep.embedding_jobs FOR DELETE USING (pg_has_role(current_user, owner::oid, 'MEMBER'));
ALTER TABLE airrep.embedding_errors ENABLE ROW LEVEL SECURITY;
CREATE POLICY errors_visible ON airrep.embedding_errors FOR SELECT USING (true);
CREATE POLICY errors_written_by_owner ON airrep.embedding_errors FOR ALL
    USING (EXISTS (SELECT 1 FROM airrep.embedding_jobs j WHERE j.id = job_id AND pg_has_role(current_user, j.owner::oid, 'MEMBER')))
    WITH CHECK (EXISTS (SELECT 1 FROM airrep.embedding_jobs j WHERE j.id = job_id AND pg_has_role(current_user, j.owner::oid, 'MEMBER')));
GRANT SELECT, INSERT, UPDATE, DELETE ON airrep.embedding_jobs TO PUBLIC;
GRANT SELECT, INSERT, DELETE ON airrep.embedding_errors TO PUBLIC;

-- Jobs are data: pg_dump carries them (and the id sequence's position) with the models. The
-- errors name row versions, which a restore does not keep: they are not dumped.
SELECT pg_catalog.pg_extension_config_dump('airrep.embedding_jobs', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('airrep.embedding_jobs', 'id')::regclass, '');

CREATE FUNCTION airrep.keep_embedded_trigger() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'airrep_keep_embedded_trigger';
COMMENT ON FUNCTION airrep.keep_embedded_trigger() IS
    'airrep.keep_embedded''s row trigger (text column, vector column): a changed text makes the vector NULL unless the row supplies one';

-- The job's trigger on its table, found by function and vector column (its name may be
-- anything after a rename or a restore).
CREATE FUNCTION airrep.embedding_job_trigger(relation regclass, vector_column name)
RETURNS name LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.tgname FROM pg_trigger t
    WHERE t.tgrelid = relation AND NOT t.tgisinternal
      AND t.tgfoid = 'airrep.keep_embedded_trigger()'::regprocedure
      AND split_part(encode(t.tgargs, 'escape'), '\000', 2) = vector_column
$$;

CREATE FUNCTION airrep.keep_embedded(relation regclass, text_column name, vector_column name, model text)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    model_ref bigint;
    job       airrep.embedding_jobs;
    pending   bigint;
    dims      int;
BEGIN
    -- the same argument, type and model checks as airrep.embed; the count is the pending rows
    pending := airrep.embed_rows_to_fill(relation, text_column, vector_column, model, 1);
    -- The worker is another session: it cannot read this one's temporary tables, and the
    -- job would outlive the table (dropped at session end without a DROP to end it).
    IF (SELECT c.relpersistence FROM pg_class c WHERE c.oid = relation) = 't' THEN
        RAISE EXCEPTION 'airrep.keep_embedded: % is a temporary table, which the background worker cannot read', relation
            USING ERRCODE = 'feature_not_supported', HINT = 'Fill it in this session with CALL airrep.embed.';
    END IF;
    -- A column of fixed dimension must fit the model's vectors (else every row would fail).
    SELECT a.atttypmod INTO dims FROM pg_attribute a
    WHERE a.attrelid = relation AND a.attname = vector_column AND NOT a.attisdropped;
    IF dims > 0 AND dims <> array_length(airrep.encode(model, 'x')::real[], 1) THEN
        RAISE EXCEPTION 'airrep.keep_embedded: %.% holds vectors of % dimensions, model "%" makes %',
            relation, quote_ident(vector_column), dims, model, array_length(airrep.encode(model, 'x')::real[], 1)
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF NOT has_column_privilege(relation, text_column, 'SELECT')
       OR NOT has_column_privilege(relation, vector_column, 'SELECT')
       OR NOT has_column_privilege(relation, vector_column, 'UPDATE') THEN
        RAISE EXCEPTION 'permission denied: airrep.keep_embedded needs SELECT on %.% and SELECT and UPDATE on %.%',
            relation, quote_ident(text_column), relation, quote_ident(vector_column)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT id INTO model_ref FROM airrep.models WHERE name = model;
    SELECT * INTO job FROM airrep.embedding_jobs j
    WHERE j.relation = keep_embedded.relation AND j.vector_column = keep_embedded.vector_column;
    IF FOUND AND NOT pg_has_role(current_user, job.owner::oid, 'MEMBER') THEN
        RAISE EXCEPTION 'must be owner of the embedding job of %.%', relation, quote_ident(vector_column)
            USING ERRCODE = 'insufficient_privilege', DETAIL = format('The job belongs to %s.', job.owner);
    END IF;
    IF NOT FOUND THEN
        -- Vectors already in the column are kept: they are taken to be this model's
        -- (from CALL airrep.embed); NULL the column first to have them made again.
        INSERT INTO airrep.embedding_jobs (relation, text_column, vector_column, model_id)
        VALUES (relation, text_column, vector_column, model_ref) RETURNING * INTO job;
    ELSIF job.model_id <> model_ref OR job.text_column <> keep_embedded.text_column THEN
        -- Another model or text: every vector goes, in this transaction. Taking the job's row
        -- first waits for a batch in flight (batches lock it before their rows), so the
        -- UPDATE below, with a newer snapshot, also clears what that batch wrote; batches
        -- after it read the new model.
        UPDATE airrep.embedding_jobs j
        SET model_id = model_ref, text_column = keep_embedded.text_column, model_since = now(),
            embedded_rows = 0, embedding_seconds = 0, last_embedded_at = NULL, last_error = NULL, last_error_at = NULL
        WHERE j.id = job.id;
        DELETE FROM airrep.embedding_errors WHERE job_id = job.id;
        EXECUTE format('UPDATE %s SET %I = NULL WHERE %I IS NOT NULL', relation, vector_column, vector_column);
        EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NOT NULL', relation, text_column) INTO pending;
        IF airrep.embedding_job_trigger(relation, vector_column) IS NOT NULL THEN
            EXECUTE format('DROP TRIGGER %I ON %s', airrep.embedding_job_trigger(relation, vector_column), relation);
        END IF;
    END IF;
    IF airrep.embedding_job_trigger(relation, vector_column) IS NULL THEN
        EXECUTE format(
            'CREATE TRIGGER %I BEFORE INSERT OR UPDATE OF %I, %I ON %s FOR EACH ROW EXECUTE FUNCTION airrep.keep_embedded_trigger(%L, %L)',
            left('airrep_keep_embedded_' || vector_column, 63), text_column, vector_column, relation,
            text_column, vector_column);
    END IF;
    RAISE NOTICE 'airrep.keep_embedded: job % keeps %.% embedded with model "%"; % rows to embed',
        job.id, relation, quote_ident(vector_column), model, pending;
    PERFORM airrep.wake_embedding_worker();
    RETURN job.id;
END $$;
COMMENT ON FUNCTION airrep.keep_embedded(regclass, name, name, text) IS
    'keep vector_column the model''s embedding of text_column: a trigger NULLs stale vectors, the background worker (or CALL airrep.embed_pending()) fills them';

CREATE FUNCTION airrep.stop_embedding(relation regclass, vector_column name)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    job airrep.embedding_jobs;
BEGIN
    SELECT * INTO job FROM airrep.embedding_jobs j
    WHERE j.relation = stop_embedding.relation AND j.vector_column = stop_embedding.vector_column;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no embedding job keeps %.% embedded', relation, quote_ident(vector_column)
            USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT pg_has_role(current_user, job.owner::oid, 'MEMBER') THEN
        RAISE EXCEPTION 'must be owner of the embedding job of %.%', relation, quote_ident(vector_column)
            USING ERRCODE = 'insufficient_privilege', DETAIL = format('The job belongs to %s.', job.owner);
    END IF;
    IF airrep.embedding_job_trigger(relation, vector_column) IS NOT NULL THEN
        EXECUTE format('DROP TRIGGER %I ON %s', airrep.embedding_job_trigger(relation, vector_column), relation);
    END IF;
    DELETE FROM airrep.embedding_jobs WHERE id = job.id;
END $$;
COMMENT ON FUNCTION airrep.stop_embedding(regclass, name) IS
    'end the embedding job of relation.vector_column: its trigger and its row go, the vectors stay';

-- One batch of a job, run as the job's owner (the worker sets that identity; embed_pending
-- runs as its caller, who owns the job): up to batch_size rows with a NULL vector and a text
-- get the job's model's embedding, in the caller's transaction. A text the model rejects
-- (a data exception) is recorded in airrep.embedding_errors and skipped; any other error is
-- the job's (a privilege, a policy, a trigger): it is returned and kept as last_error, and
-- the batch's work is undone.
CREATE FUNCTION airrep.embed_job_batch(job bigint, batch_size int,
    OUT embedded bigint, OUT failed bigint, OUT error text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j        record;
    started  timestamptz := clock_timestamp();
    todo     text;
    counts   record;
    one      record;
    isolated boolean := false;
BEGIN
    embedded := 0;
    failed := 0;
    -- The job's row first: keep_embedded changes the model under the same lock.
    SELECT jb.relation, jb.text_column, jb.vector_column, m.name AS model INTO j
    FROM airrep.embedding_jobs jb JOIN airrep.models m ON m.id = jb.model_id
    WHERE jb.id = job FOR NO KEY UPDATE OF jb;
    IF NOT FOUND THEN
        RETURN;  -- ended since it was listed
    END IF;
    todo := format(
        'SELECT t.tableoid AS part, t.ctid AS row_id, t.xmin::text::bigint AS row_xmin, t.%2$I::text AS body
         FROM %1$s t
         WHERE t.%3$I IS NULL AND t.%2$I IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM airrep.embedding_errors e
                           WHERE e.job_id = %4$s AND e.part = t.tableoid AND e.row_id = t.ctid
                             AND e.row_xmin = t.xmin::text::bigint)
         LIMIT %5$s FOR UPDATE OF t SKIP LOCKED',
        j.relation, j.text_column, j.vector_column, job, batch_size);
    BEGIN
        BEGIN
            EXECUTE format(
                'WITH todo AS (%1$s),
                 batch AS (SELECT array_agg(part) AS parts, array_agg(row_id) AS ids,
                                  array_agg(body) AS bodies FROM todo),
                 vectors AS (
                     SELECT e.part, e.row_id, e.embedding
                     FROM batch, unnest(batch.parts, batch.ids, airrep.encode(%3$L, batch.bodies))
                          AS e(part, row_id, embedding)),
                 updated AS (
                     UPDATE %2$s AS t SET %4$I = vectors.embedding FROM vectors
                     WHERE t.tableoid = vectors.part AND t.ctid = vectors.row_id
                     RETURNING t.%4$I IS NULL AS still_null)
                 SELECT (SELECT count(*) FROM todo) AS selected, count(*) AS updated,
                        count(*) FILTER (WHERE still_null) AS still_null FROM updated',
                todo, j.relation, j.model, j.vector_column) INTO counts;
            embedded := counts.updated;
        EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
            -- A text the model rejects: find it one row at a time, record it, keep the rest.
            FOR one IN EXECUTE todo LOOP
                BEGIN
                    EXECUTE format('UPDATE %s SET %I = airrep.encode($1, $2) WHERE tableoid = $3 AND ctid = $4',
                                   j.relation, j.vector_column)
                        USING j.model, one.body, one.part, one.row_id;
                    embedded := embedded + 1;
                EXCEPTION WHEN data_exception OR program_limit_exceeded THEN
                    INSERT INTO airrep.embedding_errors (job_id, part, row_id, row_xmin, sqlstate, error)
                    VALUES (job, one.part, one.row_id, one.row_xmin, SQLSTATE, SQLERRM);
                    failed := failed + 1;
                    error := SQLERRM;
                END;
            END LOOP;
            isolated := true;
        END;
        -- A row a policy or trigger keeps NULL would be picked again on every pass.
        IF NOT isolated AND (counts.updated < counts.selected OR counts.still_null > 0) THEN
            RAISE EXCEPTION '% of % rows of % were not filled: a row-level security policy or a trigger skips them or keeps them NULL',
                counts.selected - counts.updated + counts.still_null, counts.selected, j.relation
                USING ERRCODE = 'triggered_action_exception';
        END IF;
    EXCEPTION WHEN OTHERS THEN
        embedded := 0;
        failed := 0;
        error := SQLERRM;
        UPDATE airrep.embedding_jobs SET last_run = now(), last_error = error, last_error_at = now()
        WHERE id = job;
        RETURN;
    END;
    IF embedded + failed > 0 THEN
        UPDATE airrep.embedding_jobs
        SET embedded_rows = embedded_rows + embed_job_batch.embedded,
            embedding_seconds = embedding_seconds + extract(epoch FROM clock_timestamp() - started)::float8,
            last_run = now(),
            last_embedded_at = CASE WHEN embed_job_batch.embedded > 0 THEN now() ELSE last_embedded_at END,
            last_error = coalesce(error, last_error),
            last_error_at = CASE WHEN error IS NULL THEN last_error_at ELSE now() END
        WHERE id = job;
    END IF;
END $$;
COMMENT ON FUNCTION airrep.embed_job_batch(bigint, int) IS
    'part of the embedding worker and airrep.embed_pending: one batch of a job, as its owner';

-- The jobs this call embeds: the active ones the caller owns, each its pending rows (counted
-- at the start, so the call ends even while writers keep adding rows; the worker takes those).
CREATE FUNCTION airrep.embed_pending_jobs(OUT job bigint, OUT relation regclass, OUT vector_column name, OUT pending bigint)
RETURNS SETOF record LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j record;
BEGIN
    FOR j IN SELECT * FROM airrep.embedding_jobs jb
             WHERE pg_has_role(current_user, jb.owner::oid, 'MEMBER') ORDER BY jb.id LOOP
        job := j.id;
        relation := j.relation;
        vector_column := j.vector_column;
        EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NULL AND %I IS NOT NULL',
                       j.relation, j.vector_column, j.text_column) INTO pending;
        RETURN NEXT;
    END LOOP;
END $$;
COMMENT ON FUNCTION airrep.embed_pending_jobs() IS
    'part of airrep.embed_pending: the caller''s jobs and their pending rows';

CREATE PROCEDURE airrep.embed_pending(batch_size int DEFAULT 64)
LANGUAGE plpgsql AS $$
DECLARE
    j     record;
    batch record;
    done  bigint;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be a positive integer, not %', batch_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Batches commit, which a transaction block forbids: fail here, before any encoding.
    COMMIT;
    FOR j IN SELECT * FROM airrep.embed_pending_jobs() LOOP
        done := 0;
        -- Bounded by the rows pending at the start; each batch takes at least one or ends it.
        WHILE done < j.pending LOOP
            batch := airrep.embed_job_batch(j.job, LEAST(batch_size::bigint, j.pending - done)::int);
            COMMIT;
            IF batch.error IS NOT NULL AND batch.embedded + batch.failed = 0 THEN
                RAISE WARNING 'airrep.embed_pending: job % (%.%): %', j.job, j.relation,
                    pg_catalog.quote_ident(j.vector_column), batch.error;
            END IF;
            EXIT WHEN batch.embedded + batch.failed = 0;
            done := done + batch.embedded + batch.failed;
            RAISE NOTICE 'airrep.embed_pending: job % (%.%): % of % rows', j.job, j.relation,
                pg_catalog.quote_ident(j.vector_column), done, j.pending;
        END LOOP;
    END LOOP;
END $$;
COMMENT ON PROCEDURE airrep.embed_pending(int) IS
    'embed the pending rows of the caller''s embedding jobs now, in committed batches (what the background worker does)';

-- Row counts of a job's table, with the caller's privileges (NULL without SELECT on them).
CREATE FUNCTION airrep.embedding_job_counts(job bigint, OUT total_rows bigint, OUT pending_rows bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j airrep.embedding_jobs;
BEGIN
    SELECT * INTO j FROM airrep.embedding_jobs WHERE id = job;
    IF NOT FOUND OR NOT has_column_privilege(j.relation, j.text_column, 'SELECT')
       OR NOT has_column_privilege(j.relation, j.vector_column, 'SELECT') THEN
        RETURN;
    END IF;
    EXECUTE format(
        'SELECT count(*), count(*) FILTER (
             WHERE t.%3$I IS NULL AND t.%2$I IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM airrep.embedding_errors e
                               WHERE e.job_id = %4$s AND e.part = t.tableoid AND e.row_id = t.ctid
                                 AND e.row_xmin = t.xmin::text::bigint))
         FROM %1$s t', j.relation, j.text_column, j.vector_column, job) INTO total_rows, pending_rows;
END $$;

CREATE VIEW airrep.embedding_status AS
SELECT j.id AS job_id, j.relation, j.text_column, j.vector_column, m.name AS model, j.owner,
       CASE WHEN j.last_error_at > coalesce(j.last_embedded_at, '-infinity') THEN 'failing'
            WHEN c.pending_rows > 0 THEN 'embedding'
            WHEN c.pending_rows = 0 THEN 'up to date' END AS state,
       c.total_rows AS rows, c.pending_rows,
       (SELECT count(*) FROM airrep.embedding_errors e WHERE e.job_id = j.id) AS failed_rows,
       round((j.embedded_rows / nullif(j.embedding_seconds, 0))::numeric, 1) AS rows_per_second,
       j.last_error, j.last_error_at, j.last_run, j.model_since,
       airrep.embedding_worker_pid() AS worker_pid
FROM airrep.embedding_jobs j
JOIN airrep.models m ON m.id = j.model_id
LEFT JOIN LATERAL airrep.embedding_job_counts(j.id) c ON true;
COMMENT ON VIEW airrep.embedding_status IS
    'per embedding job: model, rows, pending rows (NULL without SELECT on the table), rows/s, the last error and run; worker_pid NULL: no worker runs, CALL airrep.embed_pending()';
GRANT SELECT ON airrep.embedding_status TO PUBLIC;

-- DROP TABLE (or of a job's column) ends its jobs. As the extension's owner: the job may
-- belong to another role than the one dropping the table.
CREATE FUNCTION airrep.end_dropped_embedding_jobs() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM airrep.embedding_jobs j
    WHERE j.relation::oid IN (SELECT d.objid FROM pg_event_trigger_dropped_objects() d
                              WHERE d.classid = 'pg_class'::regclass)
      AND (NOT EXISTS (SELECT 1 FROM pg_attribute a
                       WHERE a.attrelid = j.relation AND a.attname = j.text_column AND NOT a.attisdropped)
           OR NOT EXISTS (SELECT 1 FROM pg_attribute a
                          WHERE a.attrelid = j.relation AND a.attname = j.vector_column AND NOT a.attisdropped));
END $$;
CREATE EVENT TRIGGER airrep_end_dropped_embedding_jobs ON sql_drop
    EXECUTE FUNCTION airrep.end_dropped_embedding_jobs();
