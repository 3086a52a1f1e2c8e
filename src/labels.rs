//! Reading the label tables that training and evaluation take (documented in the README):
//! `examples(id, text)`, `targets(id, text)`, `subsets(subset_id, example_id)` and
//! `losses(subset_id, target_id, loss)`. Everything is checked before any work starts.

use std::collections::HashMap;

use pgrx::prelude::*;
use pgrx::PgRelation;

use crate::error::{raise, sqlstate};
use crate::relation::{qualified, require_columns, Kind};

/// The label tables, loaded and cross-checked. Subsets and targets are in id order.
pub struct LabelSet {
    pub example_texts: Vec<String>,
    pub target_ids: Vec<i64>,
    pub target_texts: Vec<String>,
    /// members of each subset, as indices into `example_texts`
    pub subsets: Vec<Vec<usize>>,
    /// measured losses `[subset][target]`
    pub losses: Vec<Vec<f64>>,
}

fn select<T>(query: &str, mut row: impl FnMut(&pgrx::spi::SpiHeapTupleData) -> T) -> Vec<T> {
    Spi::connect(|client| {
        client
            .select(query, None, &[])
            .unwrap_or_else(|e| raise(sqlstate::INVALID_PARAMETER_VALUE, &e.to_string()))
            .map(|r| row(&r))
            .collect()
    })
}

fn non_null<T>(value: Result<Option<T>, pgrx::spi::SpiError>, what: &str) -> T {
    match value {
        Ok(Some(v)) => v,
        Ok(None) => raise(
            sqlstate::NULL_VALUE_NOT_ALLOWED,
            &format!("{what} must not be NULL"),
        ),
        Err(e) => raise(sqlstate::DATATYPE_MISMATCH, &format!("{what}: {e}")),
    }
}

/// (id, text) rows of an examples or targets relation, ordered by id, ids unique.
fn texts(relation: &PgRelation, role: &str) -> Vec<(i64, String)> {
    require_columns(relation, role, &[("id", Kind::Id), ("text", Kind::Text)]);
    let name = relation.name();
    let rows = select(
        &format!(
            "SELECT id::bigint, text::text FROM {} ORDER BY 1",
            qualified(relation)
        ),
        |r| {
            (
                non_null(r.get::<i64>(1), &format!("{name}.id")),
                non_null(r.get::<String>(2), &format!("{name}.text")),
            )
        },
    );
    if let Some(pair) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
        raise(
            sqlstate::UNIQUE_VIOLATION,
            &format!(
                "{role} relation \"{name}\" has id {} more than once",
                pair[0].0
            ),
        );
    }
    if rows.is_empty() {
        raise(
            sqlstate::INVALID_PARAMETER_VALUE,
            &format!("{role} relation \"{name}\" is empty"),
        );
    }
    rows
}

impl LabelSet {
    pub fn load(
        examples: &PgRelation,
        targets: &PgRelation,
        subsets: &PgRelation,
        losses: &PgRelation,
    ) -> LabelSet {
        let examples = texts(examples, "examples");
        let targets = texts(targets, "targets");
        let example_index: HashMap<i64, usize> = examples
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i))
            .collect();
        let target_index: HashMap<i64, usize> = targets
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i))
            .collect();

        require_columns(
            subsets,
            "subsets",
            &[("subset_id", Kind::Id), ("example_id", Kind::Id)],
        );
        let subsets_name = subsets.name().to_string();
        let memberships = select(
            &format!(
                "SELECT subset_id::bigint, example_id::bigint FROM {} ORDER BY 1, 2",
                qualified(subsets)
            ),
            |r| {
                (
                    non_null(r.get::<i64>(1), &format!("{subsets_name}.subset_id")),
                    non_null(r.get::<i64>(2), &format!("{subsets_name}.example_id")),
                )
            },
        );
        let mut subset_ids: Vec<i64> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        for (subset, example) in memberships {
            let index = *example_index.get(&example).unwrap_or_else(|| {
                raise(sqlstate::FOREIGN_KEY_VIOLATION, &format!("subset {subset} lists example {example}, which is not in the examples relation"))
            });
            if subset_ids.last() != Some(&subset) {
                subset_ids.push(subset);
                members.push(Vec::new());
            }
            let subset_members = members.last_mut().expect("pushed above");
            // Rows come in (subset, example) order, so a repeat is the previous row. A
            // member counted once for a subset that lists it twice is a silent guess.
            if subset_members.last() == Some(&index) {
                raise(
                    sqlstate::UNIQUE_VIOLATION,
                    &format!("subsets relation \"{subsets_name}\" lists example {example} twice in subset {subset}"),
                );
            }
            subset_members.push(index);
        }
        if subset_ids.is_empty() {
            raise(
                sqlstate::INVALID_PARAMETER_VALUE,
                &format!("subsets relation \"{subsets_name}\" is empty"),
            );
        }
        let subset_index: HashMap<i64, usize> = subset_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i))
            .collect();

        require_columns(
            losses,
            "losses",
            &[
                ("subset_id", Kind::Id),
                ("target_id", Kind::Id),
                ("loss", Kind::Loss),
            ],
        );
        let losses_name = losses.name().to_string();
        let mut matrix = vec![vec![f64::NAN; targets.len()]; subset_ids.len()];
        let rows = select(
            &format!(
                "SELECT subset_id::bigint, target_id::bigint, loss::float8 FROM {}",
                qualified(losses)
            ),
            |r| {
                (
                    non_null(r.get::<i64>(1), &format!("{losses_name}.subset_id")),
                    non_null(r.get::<i64>(2), &format!("{losses_name}.target_id")),
                    non_null(r.get::<f64>(3), &format!("{losses_name}.loss")),
                )
            },
        );
        for (subset, target, loss) in rows {
            let s = *subset_index.get(&subset).unwrap_or_else(|| {
                raise(
                    sqlstate::FOREIGN_KEY_VIOLATION,
                    &format!(
                        "losses name subset {subset}, which has no members in the subsets relation"
                    ),
                )
            });
            let t = *target_index.get(&target).unwrap_or_else(|| {
                raise(
                    sqlstate::FOREIGN_KEY_VIOLATION,
                    &format!("losses name target {target}, which is not in the targets relation"),
                )
            });
            if !loss.is_finite() {
                raise(sqlstate::INVALID_PARAMETER_VALUE, &format!("loss of subset {subset} on target {target} is {loss}; losses must be finite"));
            }
            if !matrix[s][t].is_nan() {
                raise(
                    sqlstate::UNIQUE_VIOLATION,
                    &format!("loss of subset {subset} on target {target} is given more than once"),
                );
            }
            matrix[s][t] = loss;
        }
        for (s, row) in matrix.iter().enumerate() {
            if let Some(t) = row.iter().position(|l| l.is_nan()) {
                raise(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    &format!("no loss for subset {} on target {}: every subset needs a loss on every target", subset_ids[s], targets[t].0),
                );
            }
        }
        LabelSet {
            example_texts: examples.into_iter().map(|(_, text)| text).collect(),
            target_ids: targets.iter().map(|(id, _)| *id).collect(),
            target_texts: targets.into_iter().map(|(_, text)| text).collect(),
            subsets: members,
            losses: matrix,
        }
    }
}
