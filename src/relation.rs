//! Checking and naming the relations that SQL functions read: required columns with
//! acceptable types, and a quoted, schema-qualified name to put in a query.

use pgrx::prelude::*;
use pgrx::PgRelation;

use crate::error::{raise, sqlstate};

/// A `regclass` argument, opened by [`Relation::open`]. pgrx's `PgRelation` argument opens
/// the relation while converting the datum, before the function runs, so an OID that names
/// no relation (`12345::regclass`) would be an internal error there.
pub struct Relation(pg_sys::Oid);

impl FromDatum for Relation {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        // SAFETY: a regclass datum is an Oid.
        (!is_null).then(|| Relation(unsafe { pg_sys::Oid::from_datum(datum, false) }.unwrap()))
    }
}

crate::datum::arg_from_datum!(Relation);
pgrx::pgrx_sql_entity_graph::impl_sql_translatable!(Relation, arg_only = "regclass");

impl Relation {
    /// The relation, locked in `AccessShareLock` until the end of the transaction; an OID
    /// that names none is `undefined_table` (42P01), as Postgres reports a missing relation.
    pub fn open(&self) -> PgRelation {
        // SAFETY: try_relation_open returns NULL, not an error, for a missing relation.
        let found = unsafe {
            pg_sys::try_relation_open(self.0, pg_sys::AccessShareLock as pg_sys::LOCKMODE)
        };
        if found.is_null() {
            raise(
                sqlstate::UNDEFINED_TABLE,
                &format!("relation with OID {} does not exist", self.0.to_u32()),
            );
        }
        // SAFETY: an open relation, closed keeping its lock: the PgRelation opens it again.
        unsafe {
            pg_sys::relation_close(found, pg_sys::NoLock as pg_sys::LOCKMODE);
            PgRelation::with_lock(self.0, pg_sys::AccessShareLock as pg_sys::LOCKMODE)
        }
    }
}

/// The column types each role accepts (read through casts to bigint, text and float8).
#[derive(Clone, Copy)]
pub enum Kind {
    Id,
    Text,
    Loss,
    /// `airrep_vector` (any dimension)
    Vector,
    /// A cost to budget: any numeric type
    Cost,
}

impl Kind {
    fn accepts(self, oid: pg_sys::Oid) -> bool {
        let allowed: &[pg_sys::Oid] = match self {
            Kind::Id => &[pg_sys::INT2OID, pg_sys::INT4OID, pg_sys::INT8OID],
            Kind::Text => &[pg_sys::TEXTOID, pg_sys::VARCHAROID, pg_sys::BPCHAROID],
            Kind::Loss => &[pg_sys::FLOAT4OID, pg_sys::FLOAT8OID, pg_sys::NUMERICOID],
            Kind::Cost => &[
                pg_sys::INT2OID,
                pg_sys::INT4OID,
                pg_sys::INT8OID,
                pg_sys::FLOAT4OID,
                pg_sys::FLOAT8OID,
                pg_sys::NUMERICOID,
            ],
            // A domain over airrep_vector (at any depth) holds its bytes, as embed allows.
            // SAFETY: a syscache lookup on the backend's thread.
            Kind::Vector => {
                return unsafe { pg_sys::getBaseType(oid) } == crate::vector_type::type_oid()
            }
        };
        allowed.contains(&oid)
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Id => "an integer type",
            Kind::Text => "text",
            Kind::Loss => "double precision, real or numeric",
            Kind::Cost => "a numeric type",
            Kind::Vector => "airrep_vector",
        }
    }
}

/// Fail unless `relation` has each column with an acceptable type.
pub fn require_columns(relation: &PgRelation, role: &str, columns: &[(&str, Kind)]) {
    let name = relation.name();
    let expected: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
    let tuple_desc = relation.tuple_desc();
    for &(column, kind) in columns {
        let attribute = tuple_desc
            .iter()
            .find(|a| !a.is_dropped() && a.name() == column);
        match attribute {
            None => raise(
                sqlstate::UNDEFINED_COLUMN,
                &format!(
                    "{role} relation \"{name}\" has no column \"{column}\" (expected columns: {})",
                    expected.join(", ")
                ),
            ),
            Some(a) if !kind.accepts(a.type_oid().value()) => raise(
                sqlstate::DATATYPE_MISMATCH,
                &format!(
                    "column \"{column}\" of {role} relation \"{name}\" must be {}",
                    kind.describe()
                ),
            ),
            Some(_) => {}
        }
    }
}

pub fn qualified(relation: &PgRelation) -> String {
    format!(
        "{}.{}",
        quote_ident(relation.namespace()),
        quote_ident(relation.name())
    )
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
