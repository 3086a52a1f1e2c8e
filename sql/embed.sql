-- Part of the install script: included by extension_sql_file! in src/encode.rs (name = "embed_procedure").
-- Rows are matched by (tableoid, ctid): a ctid alone repeats across a partitioned table's
-- partitions and an inheritance parent's children.
--
-- The checks and each batch are functions with a fixed search_path: their catalog lookups
-- and dynamic SQL must not resolve to a caller's function or operator (a procedure that
-- commits cannot carry a SET clause). The procedure only loops, commits and reports.
CREATE FUNCTION airrep.embed_rows_to_fill(
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

CREATE FUNCTION airrep.embed_batch(
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

CREATE PROCEDURE airrep.embed(
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
