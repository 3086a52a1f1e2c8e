//! Reading a relation's rows in blocks for the search and cleaning functions
//! (`airrep.top_k`, `airrep.select_data`, `airrep.near_duplicates`,
//! `airrep.contamination`): an integer `id` and any of a vector, a text and a cost column.
//!
//! Rows come through an SPI cursor, so a table or a view works and the caller's privileges
//! apply. Rows whose vector or text is NULL are skipped, a NULL id is an error, and every
//! vector must have the dimension the first one (or the caller) fixed. Texts are read
//! NFKC-normalised (`normalize(text, NFKC)`) and case-folded with Unicode's full folding. Before
//! each block the scan checks for cancellation and, on long runs, reports progress with an
//! ETA. Each block's tuples and detoasted values are freed before the next, so memory is
//! one block, whose vectors are at most `airrep.max_block_mb`.
//!
//! A scan either runs to the end in one call ([`Source::scan`], a callback per block) or is
//! read a block at a time ([`Blocks`]), for a set-returning function that hands Postgres
//! its rows as it goes: there the cursor stays open between calls (a portal lives until
//! the end of the transaction) and each block is fetched in an SPI session of its own.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use pgrx::prelude::*;
use pgrx::spi::SpiCursor;
use pgrx::{PgMemoryContexts, PgRelation};

use crate::error::{raise, sqlstate};
use crate::gucs;
use crate::relation::{qualified, quote_ident, require_columns, Kind};
use crate::vector_type::VectorRef;

/// Rows of one block: ids and, for the columns read, vectors (row-major, `dim` wide),
/// texts and costs.
#[derive(Default)]
pub struct Block {
    pub ids: Vec<i64>,
    pub rows: Vec<f32>,
    pub texts: Vec<String>,
    pub costs: Vec<f64>,
}

impl Block {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn clear(&mut self) {
        self.ids.clear();
        self.rows.clear();
        self.texts.clear();
        self.costs.clear();
    }

    /// The vectors scaled to unit length (`dim` wide), for cosine similarity.
    pub fn unit_rows(&self, dim: usize) -> Vec<f32> {
        let mut rows = self.rows.clone();
        airrep_model::unit_rows(&mut rows, dim);
        rows
    }

    pub fn extend(&mut self, other: &Block) {
        self.ids.extend_from_slice(&other.ids);
        self.rows.extend_from_slice(&other.rows);
        self.texts.extend_from_slice(&other.texts);
        self.costs.extend_from_slice(&other.costs);
    }
}

/// The columns to read besides `id`, by name.
#[derive(Default, Clone, Copy)]
pub struct Columns<'a> {
    pub vector: Option<&'a str>,
    pub text: Option<&'a str>,
    pub cost: Option<&'a str>,
}

/// A relation checked for an integer `id` column and the requested columns.
pub struct Source {
    /// "targets", "pool", ...: how messages name the relation's role.
    role: &'static str,
    name: String,
    from: String,
    /// quoted column names
    vector: Option<String>,
    text: Option<String>,
    cost: Option<String>,
    /// pg_class.reltuples for a table, for progress; None for a view or an unanalysed table.
    estimated_rows: Option<f64>,
}

impl Source {
    /// `id` and an `airrep_vector` column.
    pub fn vectors(relation: &PgRelation, role: &'static str, vector_column: &str) -> Self {
        Self::new(
            relation,
            role,
            Columns {
                vector: Some(vector_column),
                ..Columns::default()
            },
        )
    }

    pub fn new(relation: &PgRelation, role: &'static str, columns: Columns) -> Self {
        let mut required = vec![("id", Kind::Id)];
        required.extend(columns.vector.map(|c| (c, Kind::Vector)));
        required.extend(columns.text.map(|c| (c, Kind::Text)));
        required.extend(columns.cost.map(|c| (c, Kind::Cost)));
        require_columns(relation, role, &required);
        // SAFETY: an open relation's rd_rel is valid.
        let reltuples = unsafe { (*relation.rd_rel).reltuples } as f64;
        Source {
            role,
            name: relation.name().to_string(),
            from: qualified(relation),
            vector: columns.vector.map(quote_ident),
            text: columns.text.map(quote_ident),
            cost: columns.cost.map(quote_ident),
            estimated_rows: (reltuples > 0.0).then_some(reltuples),
        }
    }

    /// `SELECT id, [vector,] [text,] [cost] FROM ... WHERE id > $1` (NULL vectors and texts
    /// skipped; `$1` NULL for all rows).
    fn select_list(&self) -> String {
        let mut list = String::from("SELECT id::bigint");
        let mut filter = String::from("($1::bigint IS NULL OR id::bigint > $1)");
        if let Some(v) = &self.vector {
            list += &format!(", {v}");
            filter += &format!(" AND {v} IS NOT NULL");
        }
        if let Some(t) = &self.text {
            list += &format!(", normalize({t}::text, NFKC)");
            filter += &format!(" AND {t} IS NOT NULL");
        }
        if let Some(c) = &self.cost {
            list += &format!(", {c}::float8");
        }
        format!("{list} FROM {} WHERE {filter}", self.from)
    }

    /// Every row in blocks of `block_rows`, in id order when `ordered`. `dim` is the
    /// dimension every vector must have; None takes it from the first row (and sets it).
    /// `progress` names the work in NOTICEs.
    pub fn scan(
        &self,
        dim: &mut Option<usize>,
        block_rows: usize,
        ordered: bool,
        progress: &str,
        each: impl FnMut(&Block),
    ) {
        self.scan_after(None, dim, block_rows, ordered, progress, each)
    }

    /// As [`Source::scan`], only the rows whose id is greater than `after` (if given).
    pub fn scan_after(
        &self,
        after: Option<i64>,
        dim: &mut Option<usize>,
        block_rows: usize,
        ordered: bool,
        progress: &str,
        mut each: impl FnMut(&Block),
    ) {
        let order = if ordered { " ORDER BY 1" } else { "" };
        let query = format!("{}{order}", self.select_list());
        self.read(
            &query,
            &[after.into()],
            dim,
            block_rows,
            progress,
            &mut each,
        );
    }

    /// Every row, in id order, as one block: for the small side of a search (targets,
    /// a benchmark) that is held in memory. `dim` as for [`Source::scan`].
    pub fn read_all(&self, dim: &mut Option<usize>) -> Block {
        let query = format!("{} ORDER BY 1", self.select_list());
        self.collect(&query, &[Option::<i64>::None.into()], dim, 16_384)
    }

    /// The first `limit` rows in id order whose id is greater than `after` (if given).
    pub fn next_rows(&self, after: Option<i64>, limit: usize, dim: &mut Option<usize>) -> Block {
        let query = format!("{} ORDER BY 1 LIMIT {limit}", self.select_list());
        self.collect(&query, &[after.into()], dim, limit)
    }

    /// The rows whose ids are in `ids` (one block, in id order). The ids come from an
    /// earlier read of the same relation, so each must still be there: a row that changed in
    /// between (a volatile view, a concurrent commit) is an error, never a silent gap.
    pub fn lookup(&self, ids: &[i64], dim: &mut Option<usize>) -> Block {
        let query = format!("{} AND id::bigint = ANY($2) ORDER BY 1", self.select_list());
        let args = [Option::<i64>::None.into(), ids.to_vec().into()];
        let found = self.collect(&query, &args, dim, usize::MAX);
        let present: HashSet<i64> = found.ids.iter().copied().collect();
        if let Some(id) = ids.iter().find(|id| !present.contains(id)) {
            raise(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                &format!(
                    "{} relation \"{}\" changed during the query: the row with id {id} is gone or now NULL",
                    self.role, self.name
                ),
            );
        }
        found
    }

    /// All rows of `query`, fetched `block_rows` at a time, as one block.
    fn collect(
        &self,
        query: &str,
        args: &[pgrx::datum::DatumWithOid],
        dim: &mut Option<usize>,
        block_rows: usize,
    ) -> Block {
        let mut found = Block::default();
        self.read(query, args, dim, block_rows, "", &mut |block: &Block| {
            found.extend(block)
        });
        found
    }

    fn read(
        &self,
        query: &str,
        args: &[pgrx::datum::DatumWithOid],
        dim: &mut Option<usize>,
        block_rows: usize,
        progress: &str,
        each: &mut dyn FnMut(&Block),
    ) {
        let mut progress = Progress::new(progress, self.role, self.estimated_rows);
        let mut block = Block::default();
        let mut scratch = PgMemoryContexts::new("airrep scan block");
        Spi::connect(|client| {
            let mut cursor = client.open_cursor(query, args);
            while self.fetch(&mut cursor, block_rows, &mut scratch, &mut block, dim) {
                each(&block);
                progress.advance(block.len());
            }
        });
    }

    /// Raises a unique violation on the first id of `ids` seen twice: results name rows by
    /// id, so two rows with one id would make them ambiguous.
    pub fn require_unique_ids<'a>(&self, ids: impl IntoIterator<Item = &'a i64>) {
        let mut seen = HashSet::new();
        if let Some(id) = ids.into_iter().find(|&&id| !seen.insert(id)) {
            raise(
                sqlstate::UNIQUE_VIOLATION,
                &format!(
                    "{} relation \"{}\" has id {id} more than once",
                    self.role, self.name
                ),
            );
        }
    }

    /// Raises a unique violation on an id that two of the rows this source reads share,
    /// found by a query of its own (`GROUP BY id`, whose memory Postgres bounds): for the
    /// functions that stream a relation rather than hold what they report.
    pub fn require_unique_relation_ids(&self) {
        let query = format!(
            "SELECT (SELECT id FROM ({}) r GROUP BY id HAVING count(*) > 1 LIMIT 1)",
            self.select_list()
        );
        let repeated = Spi::get_one_with_args::<i64>(&query, &[Option::<i64>::None.into()])
            .unwrap_or_else(|e| raise(sqlstate::INTERNAL_ERROR, &e.to_string()));
        if let Some(id) = repeated {
            self.require_unique_ids(&[id, id]);
        }
    }

    /// Every row, as [`Source::scan`] in scan order, one block per [`Blocks::next`].
    pub fn blocks(self, dim: Option<usize>, block_rows: usize, progress: &'static str) -> Blocks {
        let query = self.select_list();
        let progress = Progress::new(progress, self.role, self.estimated_rows);
        Blocks {
            source: self,
            query,
            cursor: Cursor::Unopened,
            dim,
            block_rows,
            progress,
        }
    }

    /// At most `block_rows`, and no more vectors than `airrep.max_block_mb` holds: the
    /// detoasted values and the block are alive together, then the block and the caller's
    /// packed copy, so a block is sized by bytes, not rows. Until the first row fixes the
    /// dimension, the widest vector is assumed.
    fn rows_per_fetch(&self, block_rows: usize, dim: Option<usize>) -> usize {
        let mut rows = block_rows.clamp(1, 1 << 20);
        if self.vector.is_some() {
            let row_bytes = 4 * dim.unwrap_or(airrep_core::vector::MAX_DIM);
            rows = rows.min(gucs::block_bytes() / row_bytes);
        }
        rows.max(1)
    }

    /// The vector rows of one block under `airrep.max_block_mb`, for the callers that read
    /// by lists of ids ([`Source::lookup`]) a block at a time.
    pub fn rows_per_block(dim: usize) -> usize {
        (gucs::block_bytes() / (4 * dim.max(1))).max(1)
    }

    /// The next rows of `cursor`, at most `block_rows`, into `block` (cleared first); false
    /// when none are left.
    fn fetch(
        &self,
        cursor: &mut SpiCursor,
        block_rows: usize,
        scratch: &mut PgMemoryContexts,
        block: &mut Block,
        dim: &mut Option<usize>,
    ) -> bool {
        pgrx::check_for_interrupts!();
        block.clear();
        let table = cursor
            .fetch(self.rows_per_fetch(block_rows, *dim) as i64)
            .unwrap_or_else(|e| raise(sqlstate::INTERNAL_ERROR, &e.to_string()));
        // SAFETY: the fetch just set it; it stays valid until freed below.
        let tuples = unsafe { pg_sys::SPI_tuptable };
        // Detoasted copies go to a context reset per block.
        unsafe {
            scratch.switch_to(|_| self.fill(table, block, dim));
            scratch.reset();
            pg_sys::SPI_freetuptable(tuples);
        }
        !block.is_empty()
    }

    fn fill(
        &self,
        mut table: pgrx::spi::SpiTupleTable<'_>,
        block: &mut Block,
        dim: &mut Option<usize>,
    ) {
        while table.next().is_some() {
            let id = match table.get::<i64>(1) {
                Ok(Some(id)) => id,
                Ok(None) => raise(
                    sqlstate::NULL_VALUE_NOT_ALLOWED,
                    &format!(
                        "{} relation \"{}\" has a row whose id is NULL",
                        self.role, self.name
                    ),
                ),
                Err(e) => raise(sqlstate::INTERNAL_ERROR, &e.to_string()),
            };
            let mut column = 2;
            if self.vector.is_some() {
                let datum = table
                    .get_datum_by_ordinal(column)
                    .ok()
                    .flatten()
                    .expect("the query skips NULL vectors");
                column += 1;
                // SAFETY: a non-null airrep_vector (checked by require_columns).
                let vector = unsafe { VectorRef::from_raw(datum) };
                let v = vector.as_slice();
                match *dim {
                    None => *dim = Some(v.len()),
                    Some(d) if d != v.len() => raise(
                        sqlstate::DATA_EXCEPTION,
                        &format!(
                            "different vector dimensions {d} and {}: row {id} of {} relation \"{}\" (column {})",
                            v.len(),
                            self.role,
                            self.name,
                            self.vector.as_deref().unwrap_or_default()
                        ),
                    ),
                    Some(_) => {}
                }
                block.rows.extend_from_slice(v);
            }
            if self.text.is_some() {
                match table.get::<String>(column) {
                    // Full Unicode case folding (Python's str.casefold: 'Straße' and
                    // 'STRASSE' fold alike), not SQL's lower(), which under the C collation
                    // folds ASCII letters only.
                    Ok(Some(text)) => block.texts.push(caseless::default_case_fold_str(&text)),
                    Ok(None) => unreachable!("the query skips NULL texts"),
                    Err(e) => raise(sqlstate::INTERNAL_ERROR, &e.to_string()),
                }
                column += 1;
            }
            if self.cost.is_some() {
                let cost = match table.get::<f64>(column) {
                    Ok(c) => c,
                    Err(e) => raise(sqlstate::INTERNAL_ERROR, &e.to_string()),
                };
                match cost {
                    Some(c) if c.is_finite() && c >= 0.0 => block.costs.push(c),
                    other => raise(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        &format!(
                            "cost column {} of row {id} of {} relation \"{}\" is {}; costs must be finite and 0 or more",
                            self.cost.as_deref().unwrap_or_default(),
                            self.role,
                            self.name,
                            other.map_or("NULL".to_string(), |c| c.to_string())
                        ),
                    ),
                }
            }
            block.ids.push(id);
        }
    }
}

/// A scan read a block per call ([`Source::blocks`]), resumable across calls of a
/// set-returning function.
pub struct Blocks {
    source: Source,
    query: String,
    cursor: Cursor,
    dim: Option<usize>,
    block_rows: usize,
    progress: Progress<'static>,
}

enum Cursor {
    Unopened,
    /// The portal's name: it outlives the SPI session that fetched the last block.
    Open(String),
    Done,
}

impl Blocks {
    /// The next block into `block` (cleared first); false once the rows are exhausted (the
    /// cursor is then closed).
    pub fn next(&mut self, block: &mut Block) -> bool {
        block.clear();
        if matches!(self.cursor, Cursor::Done) {
            return false;
        }
        let mut scratch = PgMemoryContexts::new("airrep scan block");
        let (source, dim, block_rows) = (&self.source, &mut self.dim, self.block_rows);
        self.cursor = Spi::connect(|client| {
            let mut cursor = match &self.cursor {
                Cursor::Open(name) => client
                    .find_cursor(name)
                    .unwrap_or_else(|e| raise(sqlstate::INTERNAL_ERROR, &e.to_string())),
                _ => client.open_cursor(self.query.as_str(), &[Option::<i64>::None.into()]),
            };
            if source.fetch(&mut cursor, block_rows, &mut scratch, block, dim) {
                Cursor::Open(cursor.detach_into_name())
            } else {
                Cursor::Done // dropping the cursor closes it
            }
        });
        self.progress.advance(block.len());
        !block.is_empty()
    }
}

/// NOTICEs about a long scan: rows done and, when the size is known, percent and ETA.
struct Progress<'a> {
    what: &'a str,
    role: &'static str,
    estimated_rows: Option<f64>,
    started: Instant,
    last: Instant,
    rows: usize,
}

/// A scan quieter than this reports nothing.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

impl<'a> Progress<'a> {
    fn new(what: &'a str, role: &'static str, estimated_rows: Option<f64>) -> Self {
        let now = Instant::now();
        Progress {
            what,
            role,
            estimated_rows,
            started: now,
            last: now,
            rows: 0,
        }
    }

    fn advance(&mut self, rows: usize) {
        self.rows += rows;
        if self.what.is_empty() || self.last.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64();
        match self.estimated_rows.filter(|&n| n >= self.rows as f64) {
            Some(total) => notice!(
                "{}: {} of about {total:.0} {} rows, {:.0}%, ETA {:.0} s",
                self.what,
                self.rows,
                self.role,
                100.0 * self.rows as f64 / total,
                elapsed * (total / self.rows as f64 - 1.0)
            ),
            None => notice!(
                "{}: {} {} rows in {elapsed:.0} s",
                self.what,
                self.rows,
                self.role
            ),
        }
    }
}
