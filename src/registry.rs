//! The model registry: models live in tables (config as jsonb, files as chunked bytea) so that
//! pg_dump, replication and backups carry them. A server directory is only an import source.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum};

use crate::error::{raise, raise_model, sqlstate};

/// Files are split so no single bytea value nears the 1 GB limit and rows stay TOAST-friendly.
const CHUNK_BYTES: usize = 4 << 20;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

extension_sql_file!("../sql/registry.sql", name = "registry_tables");

/// What names one content of a model for a cache: its id and version, and the
/// transaction that last wrote its row (`xmin`). Ids restart after DROP/CREATE EXTENSION
/// and a rolled-back file change leaves the version where it was, but no two contents share
/// a writing transaction (until xid wraparound, which a backend's cache never lives to see).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ModelIdentity {
    pub id: i64,
    pub version: i64,
    pub written_by: i64,
}

/// The first column of the first row of a read-only `query`, through a read-only SPI
/// connection. (pgrx's `Spi::get_one*` run as updates, which assign a transaction id: an
/// error in a parallel worker, so `encode` failed in parallel plans, and a wasted xid
/// anywhere else.)
fn read_one<T: FromDatum + IntoDatum>(query: &str, args: &[DatumWithOid]) -> Option<T> {
    Spi::connect(|client| client.select(query, Some(1), args)?.first().get_one())
        .unwrap_or_else(|e: pgrx::spi::SpiError| raise(sqlstate::INTERNAL_ERROR, &e.to_string()))
}

pub fn model_identity(name: &str) -> ModelIdentity {
    Spi::connect(|client| {
        let rows = client
            .select(
                "SELECT id, version, xmin::text::bigint FROM airrep.models WHERE name = $1",
                Some(1),
                &[name.into()],
            )
            .unwrap_or_else(|e| raise(sqlstate::INTERNAL_ERROR, &e.to_string()));
        let row = rows.first();
        match (row.get::<i64>(1), row.get::<i64>(2), row.get::<i64>(3)) {
            (Ok(Some(id)), Ok(Some(version)), Ok(Some(written_by))) => ModelIdentity {
                id,
                version,
                written_by,
            },
            _ => raise(
                sqlstate::UNDEFINED_OBJECT,
                &format!("model \"{name}\" does not exist"),
            ),
        }
    })
}

/// Run `read` with the extension owner's privileges (as a SECURITY DEFINER function would):
/// encoding reads weights that the caller may use but not SELECT. An error inside restores
/// the caller's identity with the (sub)transaction's abort.
fn as_extension_owner<T>(read: impl FnOnce() -> T) -> T {
    let owner = read_one::<pg_sys::Oid>(
        // Qualified: a caller's temporary table named pg_extension is searched first.
        "SELECT extowner FROM pg_catalog.pg_extension
         WHERE extname OPERATOR(pg_catalog.=) 'airrep'::pg_catalog.name",
        &[],
    )
    .unwrap_or_else(|| {
        raise(
            sqlstate::INTERNAL_ERROR,
            "extension airrep is not installed",
        )
    });
    let (mut user, mut context) = (pg_sys::Oid::INVALID, 0);
    // SAFETY: plain calls into the backend on its own thread. As for a SECURITY DEFINER
    // function, the search_path is pinned too: the queries below are parsed with it, and a
    // function or operator of the caller's found first would run with the owner's rights.
    // An error unwinds both at (sub)transaction abort.
    let nest_level = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
        let nest_level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        nest_level
    };
    let result = read();
    // SAFETY: as above; restores what was saved.
    unsafe {
        pg_sys::AtEOXact_GUC(true, nest_level);
        pg_sys::SetUserIdAndSecContext(user, context);
    }
    result
}

/// The bytes of every stored file of a model: (config.json, weights, tokenizer.json).
pub fn model_files(id: i64) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    as_extension_owner(|| stored_files(id))
}

fn stored_files(id: i64) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let file = |name: &str| -> Vec<u8> {
        read_one::<Vec<u8>>(
            "SELECT string_agg(data, ''::bytea ORDER BY chunk) FROM airrep.model_files
             WHERE model_id = $1 AND file = $2",
            &[id.into(), name.into()],
        )
        .unwrap_or_else(|| {
            raise(
                sqlstate::UNDEFINED_FILE,
                &format!("model {id} has no {name} in airrep.model_files"),
            )
        })
    };
    let config = read_one::<pgrx::JsonB>(
        "SELECT config FROM airrep.models WHERE id = $1",
        &[id.into()],
    )
    .unwrap_or_else(|| {
        raise(
            sqlstate::UNDEFINED_OBJECT,
            &format!("model {id} does not exist"),
        )
    });
    (
        serde_json::to_vec(&config.0).expect("jsonb serialises"),
        file(WEIGHTS_FILE),
        file(TOKENIZER_FILE),
    )
}

/// Whether a model with this id exists now (and is visible to the current role). Run as an
/// update, so under READ COMMITTED it takes a fresh snapshot and sees a drop that committed
/// since the statement began (a read-only query would not, and the foreign key check
/// would). Under REPEATABLE READ the snapshot is the transaction's, and the foreign key
/// check then fails with a serialization error, as any write would.
pub fn model_id_exists_now(id: i64) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM airrep.models WHERE id = $1)",
        &[id.into()],
    )
    .unwrap_or_else(|e| raise(sqlstate::INTERNAL_ERROR, &e.to_string()))
    .unwrap_or(false)
}

/// Fail unless `name` is a valid name that is free; callers check before any expensive
/// work (the CHECK and UNIQUE constraints stay the backstop).
pub fn require_unused_name(name: &str) {
    if name.is_empty() {
        raise(
            sqlstate::INVALID_PARAMETER_VALUE,
            "a model name must not be empty",
        );
    }
    let exists = read_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM airrep.models WHERE name = $1)",
        &[name.into()],
    )
    .unwrap_or(false);
    if exists {
        raise(
            sqlstate::DUPLICATE_OBJECT,
            &format!("model \"{name}\" already exists"),
        );
    }
}

/// Fail with 42501 unless the current role may add a model: INSERT on the registry tables
/// (and, when training, the log), and UPDATE on `airrep.models`, which the trigger that
/// bumps a model's version on each write of its files needs. Checked before expensive work
/// (training, validation), so a role without grants learns it at once.
pub fn require_write_privileges(action: &str, with_log: bool) {
    let mut inserts = vec!["airrep.models", "airrep.model_files"];
    if with_log {
        inserts.push("airrep.training_log");
    }
    let missing = |privilege: &str, tables: &[&str]| -> Option<String> {
        let lacking: Vec<&str> = tables
            .iter()
            .copied()
            .filter(|table| {
                !read_one::<bool>(
                    "SELECT has_table_privilege($1, $2)",
                    &[(*table).into(), privilege.into()],
                )
                .unwrap_or(false)
            })
            .collect();
        (!lacking.is_empty()).then(|| format!("{privilege} on {}", lacking.join(", ")))
    };
    let needs: Vec<String> = [
        missing("INSERT", &inserts),
        missing("UPDATE", &["airrep.models"]),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !needs.is_empty() {
        raise(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            &format!("permission denied: {action} needs {}", needs.join(" and ")),
        );
    }
}

/// A new registry row and its files, inside the caller's transaction: an error anywhere
/// later rolls all of it back, so the registry never holds half a model.
pub fn insert_model(
    name: &str,
    config: &serde_json::Value,
    weights: &[u8],
    tokenizer: &[u8],
    parent: Option<i64>,
    description: Option<&str>,
) -> i64 {
    let id = Spi::get_one_with_args::<i64>(
        "INSERT INTO airrep.models (name, config, parent_id, description) VALUES ($1, $2, $3, $4) RETURNING id",
        &[
            name.into(),
            pgrx::JsonB(config.clone()).into(),
            parent.into(),
            description.into(),
        ],
    )
    .unwrap_or_else(|e| raise(sqlstate::INTERNAL_ERROR, &e.to_string()))
    .expect("INSERT ... RETURNING gives a row");
    for (file, bytes) in [(WEIGHTS_FILE, weights), (TOKENIZER_FILE, tokenizer)] {
        for (chunk, data) in bytes.chunks(CHUNK_BYTES).enumerate() {
            Spi::run_with_args(
                "INSERT INTO airrep.model_files (model_id, file, chunk, data) VALUES ($1, $2, $3, $4)",
                &[id.into(), file.into(), (chunk as i32).into(), data.into()],
            )
            .unwrap_or_else(|e| raise(sqlstate::INTERNAL_ERROR, &e.to_string()));
        }
    }
    id
}

/// Check the three files make a usable encoder before anything is written.
fn validate(name: &str, config: &[u8], weights: &[u8], tokenizer: &[u8]) -> serde_json::Value {
    let config_json: serde_json::Value = serde_json::from_slice(config).unwrap_or_else(|e| {
        raise(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            &format!("model \"{name}\": config.json is not valid JSON: {e}"),
        )
    });
    let options = airrep_model::EncoderOptions::default();
    crate::runtime::thread_pool()
        .install(|| {
            airrep_model::Encoder::from_bytes(config, weights, tokenizer, options).map(|_| ())
        })
        .unwrap_or_else(|e| raise_model(e, |e| format!("model \"{name}\" cannot be loaded: {e}")));
    config_json
}

/// Superuser or the privileges of pg_read_server_files, as COPY FROM a file asks: checked
/// in the backend, not by a query a caller's temporary `pg_roles` could answer.
fn may_read_server_files() -> bool {
    // SAFETY: plain catalog checks on the backend's thread.
    unsafe {
        pg_sys::superuser()
            || pg_sys::has_privs_of_role(
                pg_sys::GetUserId(),
                pg_sys::Oid::from(pg_sys::ROLE_PG_READ_SERVER_FILES),
            )
    }
}

fn read_server_file(dir: &std::path::Path, file: &str) -> Vec<u8> {
    let path = dir.join(file);
    std::fs::read(&path).unwrap_or_else(|e| {
        raise(
            sqlstate::UNDEFINED_FILE,
            &format!("could not read file \"{}\": {e}", path.display()),
        )
    })
}

/// Import a model directory (config.json, model.safetensors, tokenizer.json) from the
/// server's file system. Reads files as the server's OS user, hence the privilege check.
#[pg_extern(schema = "airrep", volatile, strict)]
fn load_model(name: &str, dir: &str) -> i64 {
    if !may_read_server_files() {
        raise(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "permission denied to load a model from the server's file system\n\
             only superusers and members of pg_read_server_files may; others can use airrep.import_model",
        );
    }
    require_write_privileges("airrep.load_model", false);
    let dir = std::path::Path::new(dir);
    if !dir.is_absolute() {
        raise(
            sqlstate::INVALID_PARAMETER_VALUE,
            &format!(
                "model directory must be an absolute path, not \"{}\"",
                dir.display()
            ),
        );
    }
    require_unused_name(name);
    let config = read_server_file(dir, "config.json");
    let weights = read_server_file(dir, WEIGHTS_FILE);
    let tokenizer = read_server_file(dir, TOKENIZER_FILE);
    let config_json = validate(name, &config, &weights, &tokenizer);
    insert_model(
        name,
        &config_json,
        &weights,
        &tokenizer,
        None,
        Some(&format!("loaded from {}", dir.display())),
    )
}

/// Import a model from bytes sent by the client (no server file access needed).
#[pg_extern(schema = "airrep", volatile, strict)]
fn import_model(name: &str, config: pgrx::JsonB, weights: &[u8], tokenizer: &[u8]) -> i64 {
    require_write_privileges("airrep.import_model", false);
    require_unused_name(name);
    let config_bytes = serde_json::to_vec(&config.0).expect("jsonb serialises");
    let config_json = validate(name, &config_bytes, weights, tokenizer);
    insert_model(
        name,
        &config_json,
        weights,
        tokenizer,
        None,
        Some("imported"),
    )
}

#[pg_extern(schema = "airrep", volatile, strict)]
fn drop_model(name: &str) {
    let id = model_identity(name).id;
    let owns = read_one::<bool>(
        "SELECT pg_has_role(current_user, owner::oid, 'MEMBER') FROM airrep.models WHERE id = $1",
        &[id.into()],
    )
    .unwrap_or(false);
    if !owns {
        raise(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            &format!("must be owner of model \"{name}\""),
        );
    }
    Spi::run_with_args("DELETE FROM airrep.models WHERE id = $1", &[id.into()])
        .unwrap_or_else(|e| raise(sqlstate::INTERNAL_ERROR, &e.to_string()));
}

extension_sql!(
    r#"
REVOKE ALL ON FUNCTION airrep.load_model(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION airrep.load_model(text, text) TO pg_read_server_files;
-- Everyone may encode with registered models; changing the registry takes explicit grants.
GRANT USAGE ON SCHEMA airrep TO PUBLIC;
GRANT SELECT ON airrep.models, airrep.model_list TO PUBLIC;
"#,
    name = "load_model_privileges",
    requires = [load_model]
);
