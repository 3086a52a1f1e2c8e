//! Interop with pgvector: `airrep_vector` has pgvector's `vector` layout (varlena header,
//! int16 dim, int16 unused, float4[dim]), so where the `vector` extension is installed,
//! binary-compatible casts both ways let a user build pgvector's HNSW or IVFFlat index on
//! an expression, `((embedding::vector(384)) vector_ip_ops)`, for interactive approximate
//! search, while airrep's own functions stay exact. airrep writes no index of its own.
//!
//! `airrep.create_pgvector_casts()` makes the casts (a superuser's right, as for any
//! binary-compatible cast). They are deliberately not members of either extension: a
//! member of airrep would make `DROP EXTENSION vector CASCADE` drop airrep and every
//! model with it, whereas a free-standing cast is all that such a cascade removes.
//! `airrep.drop_pgvector_casts()` removes them before `DROP EXTENSION airrep`.

use pgrx::prelude::*;

extension_sql!(
    r#"
CREATE FUNCTION airrep.create_pgvector_casts() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    ours regtype := 'airrep_vector'::regtype;
    theirs regtype := to_regtype('vector');
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
LANGUAGE plpgsql AS $$
DECLARE
    ours regtype := 'airrep_vector'::regtype;
    theirs regtype := to_regtype('vector');
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
"#,
    name = "pgvector_casts",
    requires = ["airrep_vector_type"]
);
