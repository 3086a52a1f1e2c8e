//! Keeping a column embedded: the jobs, their trigger and the model check of the search
//! functions. The jobs' tables, `airrep.keep_embedded`, `airrep.stop_embedding`, the batch
//! and `airrep.embed_pending` are SQL (`sql/embedding_jobs.sql`); the worker that runs the
//! batches is `worker.rs`.
//!
//! The trigger (`BEFORE INSERT OR UPDATE OF text, vector ... FOR EACH ROW`, arguments: the
//! text and the vector column) makes staleness impossible: an UPDATE that changes the text
//! sets the vector NULL in the same statement, unless it also sets the vector. A row left
//! with a text and no vector asks for the worker at commit. A generated text column works
//! too: its trigger fires when a column it is computed from is set.

use pgrx::prelude::*;
use pgrx::PgRelation;

use crate::error::{raise, sqlstate};
use crate::worker;

extension_sql_file!(
    "../sql/embedding_jobs.sql",
    name = "embedding_jobs",
    requires = [
        "embed_procedure",
        "registry_tables",
        embedding_worker_pid,
        wake_embedding_worker
    ]
);

/// A column's value in a row, as its datum and whether it is NULL.
unsafe fn column(
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
    attnum: i32,
) -> (pg_sys::Datum, bool) {
    let mut is_null = false;
    // SAFETY: the caller passes a tuple of this descriptor and a valid attribute number.
    let value = unsafe { pg_sys::SPI_getbinval(tuple, desc, attnum, &mut is_null) };
    (value, is_null)
}

/// Whether two non-NULL values of an attribute hold the same bytes (varlenas detoasted, so
/// a value and its compressed or out-of-line copy are the same).
unsafe fn same_value(
    a: pg_sys::Datum,
    b: pg_sys::Datum,
    attribute: &pg_sys::FormData_pg_attribute,
) -> bool {
    // SAFETY: the datums are values of this attribute's type.
    unsafe {
        if attribute.attbyval {
            return a.value() == b.value();
        }
        let bytes = |value: pg_sys::Datum| -> &[u8] {
            match attribute.attlen {
                -1 => {
                    let value = pg_sys::pg_detoast_datum_packed(value.cast_mut_ptr());
                    std::slice::from_raw_parts(
                        pgrx::varlena::vardata_any(value).cast::<u8>(),
                        pgrx::varlena::varsize_any_exhdr(value),
                    )
                }
                -2 => std::ffi::CStr::from_ptr(value.cast_mut_ptr()).to_bytes(),
                fixed => std::slice::from_raw_parts(value.cast_mut_ptr::<u8>(), fixed as usize),
            }
        };
        bytes(a) == bytes(b)
    }
}

/// Whether a column's value differs between two rows.
unsafe fn changed(
    old: pg_sys::HeapTuple,
    new: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
    attnum: i32,
) -> bool {
    // SAFETY: as for `column`; the attribute is in the descriptor.
    unsafe {
        let (before, before_null) = column(old, desc, attnum);
        let (after, after_null) = column(new, desc, attnum);
        let attribute = &*(*desc).attrs.as_ptr().add(attnum as usize - 1);
        match (before_null, after_null) {
            (true, true) => false,
            (false, false) => !same_value(before, after, attribute),
            _ => true,
        }
    }
}

fn trigger_misuse(message: &str) -> ! {
    raise(sqlstate::TRIGGER_PROTOCOL_VIOLATED, message)
}

/// `airrep.keep_embedded_trigger()`, a plain V1 C trigger function: it runs for every row
/// written, so it reads and changes the tuple directly.
///
/// # Safety
/// Called by Postgres' trigger manager.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn airrep_keep_embedded_trigger(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: Postgres passes a TriggerData as the context of a trigger call; every pointer
    // below comes from it and lives for the call.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_TriggerData {
            trigger_misuse("airrep.keep_embedded_trigger() must be called as a trigger");
        }
        let data = &*(context as *const pg_sys::TriggerData);
        let event = data.tg_event;
        let row_before = event & pg_sys::TRIGGER_EVENT_ROW != 0
            && event & pg_sys::TRIGGER_EVENT_TIMINGMASK == pg_sys::TRIGGER_EVENT_BEFORE;
        let operation = event & pg_sys::TRIGGER_EVENT_OPMASK;
        let insert = operation == pg_sys::TRIGGER_EVENT_INSERT;
        if !row_before || !(insert || operation == pg_sys::TRIGGER_EVENT_UPDATE) {
            trigger_misuse(
                "airrep.keep_embedded_trigger() must fire BEFORE INSERT OR UPDATE FOR EACH ROW",
            );
        }
        let trigger = &*data.tg_trigger;
        if trigger.tgnargs != 2 {
            trigger_misuse(
                "airrep.keep_embedded_trigger() takes the text and the vector column's names",
            );
        }
        let desc = (*data.tg_relation).rd_att;
        let attnum = |i: usize| {
            let name = *trigger.tgargs.add(i);
            let attnum = pg_sys::SPI_fnumber(desc, name);
            if attnum <= 0 {
                raise(
                    sqlstate::UNDEFINED_COLUMN,
                    &format!(
                        "airrep.keep_embedded_trigger(): the table has no column \"{}\" (renamed since airrep.keep_embedded? call it again, or airrep.stop_embedding)",
                        std::ffi::CStr::from_ptr(name).to_string_lossy()
                    ),
                );
            }
            attnum
        };
        let (text, vector) = (attnum(0), attnum(1));
        let mut row = if insert {
            data.tg_trigtuple
        } else {
            data.tg_newtuple
        };
        // A generated text is computed after BEFORE triggers: it changed if a column it
        // depends on is set (Postgres lists it among the updated columns then).
        let generated = (*(*desc).attrs.as_ptr().add(text as usize - 1)).attgenerated != 0;
        let text_changed = !insert
            && if generated {
                pg_sys::bms_is_member(
                    text - pg_sys::FirstLowInvalidHeapAttributeNumber,
                    data.tg_updatedcols,
                )
            } else {
                changed(data.tg_trigtuple, row, desc, text)
            };
        if text_changed
            && !changed(data.tg_trigtuple, row, desc, vector)
            && !column(row, desc, vector).1
        {
            let mut value = pg_sys::Datum::from(0);
            let mut is_null = true;
            let mut replaced = vector;
            row = pg_sys::heap_modify_tuple_by_cols(
                row,
                desc,
                1,
                &mut replaced,
                &mut value,
                &mut is_null,
            );
        }
        if column(row, desc, vector).1 && (generated || !column(row, desc, text).1) {
            worker::wake_at_commit();
        }
        pg_sys::Datum::from(row)
    }
}

#[no_mangle]
#[doc(hidden)]
pub extern "C" fn pg_finfo_airrep_keep_embedded_trigger() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// The pid of the background worker embedding this database's jobs; NULL when none runs.
#[pg_extern(schema = "airrep", volatile, parallel_safe)]
fn embedding_worker_pid() -> Option<i32> {
    worker::worker_pid()
}

/// Wake this database's worker (starting one if needed) when the transaction commits.
#[pg_extern(schema = "airrep", volatile, parallel_unsafe)]
fn wake_embedding_worker() {
    worker::wake_at_commit();
}

/// A NOTICE when two relations' vectors are kept by jobs of different models: their scores
/// against each other mean nothing. `what` names the function, the pairs each relation's role.
pub fn note_model_mismatch(
    what: &str,
    (first_role, first): (&str, &PgRelation),
    (second_role, second): (&str, &PgRelation),
    vector_column: &str,
) {
    let models = Spi::connect(|client| {
        let rows = client.select(
            "SELECT a.name, b.name
             FROM (SELECT m.name FROM airrep.embedding_jobs j JOIN airrep.models m ON m.id = j.model_id
                   WHERE j.relation = $1 AND j.vector_column = $3::name) a,
                  (SELECT m.name FROM airrep.embedding_jobs j JOIN airrep.models m ON m.id = j.model_id
                   WHERE j.relation = $2 AND j.vector_column = $3::name) b
             WHERE a.name <> b.name",
            Some(1),
            &[first.oid().into(), second.oid().into(), vector_column.into()],
        )?;
        if rows.is_empty() {
            return Ok(None);
        }
        let row = rows.first();
        Ok::<_, pgrx::spi::SpiError>(row.get::<String>(1)?.zip(row.get::<String>(2)?))
    })
    .unwrap_or_else(|e| raise(sqlstate::INTERNAL_ERROR, &e.to_string()));
    if let Some((a, b)) = models {
        notice!(
            "{what}: the {first_role} vectors (\"{}\".{vector_column}) are kept embedded by model \"{a}\", the {second_role} vectors (\"{}\".{vector_column}) by model \"{b}\": scores across two models mean nothing",
            first.name(),
            second.name()
        );
    }
}
