-- Part of the install script: included by extension_sql_file! in src/encode.rs (name = "embed_procedure").
CREATE PROCEDURE airrep.embed(
    relation regclass, text_column name, vector_column name, model text, batch_size int DEFAULT 64)
LANGUAGE plpgsql AS $$
DECLARE
    total   bigint;
    done    bigint := 0;
    batch   bigint;
    started timestamptz := clock_timestamp();
    elapsed double precision;
    rate    double precision;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be a positive integer, not %', batch_size;
    END IF;
    PERFORM airrep.encode(model, ARRAY[]::text[]);  -- fails early on an unknown model
    EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NULL AND %I IS NOT NULL',
                   relation, vector_column, text_column) INTO total;
    LOOP
        EXECUTE format(
            'WITH todo AS (
                 SELECT ctid AS row_id, %2$I AS body FROM %1$s
                 WHERE %3$I IS NULL AND %2$I IS NOT NULL LIMIT %4$s FOR UPDATE SKIP LOCKED),
             batch AS (SELECT array_agg(row_id) AS ids, array_agg(body) AS bodies FROM todo),
             embedded AS (
                 SELECT e.row_id, e.embedding
                 FROM batch, unnest(batch.ids, airrep.encode(%5$L, batch.bodies)) AS e(row_id, embedding))
             UPDATE %1$s AS t SET %3$I = embedded.embedding FROM embedded WHERE t.ctid = embedded.row_id',
            relation, text_column, vector_column, batch_size, model);
        GET DIAGNOSTICS batch = ROW_COUNT;
        EXIT WHEN batch = 0;
        COMMIT;
        done := done + batch;
        elapsed := extract(epoch FROM clock_timestamp() - started);
        rate := done / greatest(elapsed, 1e-6);
        RAISE NOTICE 'airrep.embed: % of % rows, % rows/s, ETA % s',
            done, total, round(rate::numeric, 1), round((greatest(total - done, 0) / rate)::numeric, 1);
    END LOOP;
END $$;
