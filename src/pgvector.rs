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

extension_sql_file!(
    "../sql/pgvector_casts.sql",
    name = "pgvector_casts",
    requires = ["airrep_vector_type"]
);
