-- Part of the install script: included by extension_sql_file! in src/pgvector.rs (name = "pgvector_casts").
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
