//! The C symbols of airrep 0.1.0's aggregate support functions, which 0.2.0 replaced (their
//! state was `internal`; it is `bytea` now, see `aggstate`). Until `ALTER EXTENSION airrep
//! UPDATE` runs, a database still at 0.1.0 calls these names with the new library: each
//! raises a clear error instead of misreading its arguments. They also let
//! `CREATE EXTENSION airrep VERSION '0.1.0'` find its functions (tests/upgrade.sh). No SQL
//! script declares them.

use pgrx::prelude::*;

use crate::error::{raise, sqlstate};

fn needs_update() -> ! {
    raise(
        sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
        "this aggregate belongs to airrep 0.1.0, whose library was replaced: run ALTER EXTENSION airrep UPDATE",
    )
}

macro_rules! retired {
    ($($name:ident),* $(,)?) => {$(
        #[pg_extern(sql = false)]
        fn $name() -> i32 {
            needs_update()
        }
    )*};
}

retired!(
    group_influence_step,
    group_influence_pooled_step,
    group_influence_final,
    group_influence_combine,
    group_influence_serialize,
    group_influence_deserialize,
    airrep_vector_accum,
    airrep_vector_sum_final,
    airrep_vector_avg_final,
    airrep_vector_sum_combine,
    airrep_vector_sum_serialize,
    airrep_vector_sum_deserialize,
);
