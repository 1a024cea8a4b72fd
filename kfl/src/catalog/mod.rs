//! The field catalog: every name KFL knows, for each table, with its type, where its value comes
//! from (a Parquet column or a rule over columns), the protocols that fill it, a description and
//! an example. docs/kfl.md and `GET /mcp/fields` are generated from it.
//!
//! The stored columns come from the tables' one definition (`remora-tables`): a new column there
//! is a new field here. `extras` adds what only KFL has: flags, legacy names, aliases.

use std::sync::LazyLock;

mod extras;
mod field;

pub use extras::{ALIASES, CALL_EXTRAS, CONN_EXTRAS};
pub use field::{Alias, Field, FieldType, Source};
pub use remora_tables::Table;

/// The fields of `table`: its stored columns in file order, then KFL's own fields (aliases not
/// included).
pub fn fields(table: Table) -> &'static [Field] {
    static CALLS: LazyLock<Vec<Field>> = LazyLock::new(|| catalog(Table::Calls, CALL_EXTRAS));
    static CONNS: LazyLock<Vec<Field>> = LazyLock::new(|| catalog(Table::Conns, CONN_EXTRAS));
    static WORKLOADS: LazyLock<Vec<Field>> = LazyLock::new(|| catalog(Table::Workloads, &[]));
    match table {
        Table::Calls => &CALLS,
        Table::Conns => &CONNS,
        Table::Workloads => &WORKLOADS,
    }
}

fn catalog(table: Table, extras: &[Field]) -> Vec<Field> {
    table
        .columns()
        .iter()
        .map(Field::stored)
        .chain(extras.iter().copied())
        .collect()
}

/// The column `Source::Protocols` flags test: the call's protocol, or a connection's detected
/// application protocol.
pub(crate) fn protocol_column(table: Table) -> &'static str {
    match table {
        Table::Calls => "protocol",
        Table::Conns | Table::Workloads => "l7",
    }
}

/// Looks a name up in `table`, following aliases; `None` when unknown.
pub fn lookup(table: Table, name: &str) -> Option<&'static Field> {
    let name = ALIASES
        .iter()
        .find(|a| a.name == name)
        .map_or(name, |a| a.target);
    fields(table).iter().find(|f| f.name == name)
}

/// Every name valid in `table`: fields, then aliases whose target exists there.
pub fn names(table: Table) -> impl Iterator<Item = &'static str> {
    fields(table).iter().map(|f| f.name).chain(
        ALIASES
            .iter()
            .filter(move |a| fields(table).iter().any(|f| f.name == a.target))
            .map(|a| a.name),
    )
}

/// Edit distance between two names (insertions, deletions, substitutions).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The known names closest to `unknown`, best first (at most three).
pub fn suggest(table: Table, unknown: &str) -> Vec<String> {
    // Legacy abbreviations inside longer names (`dst.svc.name`) count as the long words.
    let lower = unknown
        .to_ascii_lowercase()
        .split('.')
        .map(|seg| match seg {
            "svc" => "service",
            "ns" => "namespace",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(".");
    let last = lower.rsplit('.').next().unwrap_or(&lower).to_owned();
    let mut scored: Vec<(usize, &str)> = names(table)
        .filter_map(|n| {
            let ln = n.to_ascii_lowercase();
            let mut d = distance(&lower, &ln);
            // `service.name` → `dst.service.name`, `pod_name` → `src.pod.name`, ...
            if ln.ends_with(&lower) || ln.replace('.', "_").ends_with(&lower.replace('.', "_")) {
                d = d.min(1);
            } else if (!last.is_empty() && ln.rsplit('.').next() == Some(last.as_str()))
                || (ln.starts_with(&lower) && lower.len() >= 3)
            {
                d = d.min(2);
            }
            let limit = (unknown.chars().count() / 3).max(2);
            (d <= limit).then_some((d, n))
        })
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(3)
        .map(|(_, n)| n.to_owned())
        .collect()
}

/// A schema with one column per stored column of `table`, in KFL's own types (strings, Int64,
/// nullable where rows hold nulls). For tools and tests that need a table without the files;
/// the files themselves use [`Table::schema`]'s narrower types.
pub fn schema(table: Table) -> datafusion::arrow::datatypes::Schema {
    use datafusion::arrow::datatypes::{DataType, Field as ArrowField, Schema, TimeUnit};
    use std::sync::Arc;
    let entries = ArrowField::new(
        "entries",
        DataType::Struct(
            vec![
                ArrowField::new("keys", DataType::Utf8, false),
                ArrowField::new("values", DataType::Utf8, true),
            ]
            .into(),
        ),
        false,
    );
    let fields: Vec<ArrowField> = table
        .columns()
        .iter()
        .map(|c| {
            let dt = match FieldType::of(c.kind) {
                FieldType::Bool => DataType::Boolean,
                FieldType::Int => DataType::Int64,
                FieldType::String => DataType::Utf8,
                FieldType::Bytes => DataType::Binary,
                FieldType::Timestamp => {
                    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
                }
                FieldType::StringList => {
                    DataType::List(Arc::new(ArrowField::new("item", DataType::Utf8, true)))
                }
                FieldType::StringMap => DataType::Map(Arc::new(entries.clone()), false),
            };
            ArrowField::new(c.name, dt, c.nullable)
        })
        .collect();
    Schema::new(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_aliases_resolve() {
        for table in Table::ALL {
            let mut seen = std::collections::HashSet::new();
            for f in fields(table) {
                assert!(seen.insert(f.name), "duplicate field {}", f.name);
            }
        }
        for a in ALIASES {
            assert!(
                lookup(Table::Calls, a.name).is_some(),
                "alias {} dangles",
                a.name
            );
            assert!(lookup(Table::Calls, a.target).is_some());
        }
        assert_eq!(
            lookup(Table::Calls, "response.status").map(|f| f.name),
            Some("status_code")
        );
        assert_eq!(
            lookup(Table::Conns, "timestamp").and_then(Field::column),
            Some("first_ts")
        );
    }

    fn fits(ty: FieldType, dt: &datafusion::arrow::datatypes::DataType) -> bool {
        use datafusion::arrow::datatypes::DataType;
        match ty {
            FieldType::Bool => dt == &DataType::Boolean,
            FieldType::Int => dt.is_integer(),
            FieldType::String => {
                dt == &DataType::Utf8
                    || matches!(dt, DataType::Dictionary(k, v)
                        if **k == DataType::Int32 && **v == DataType::Utf8)
            }
            FieldType::Bytes => dt == &DataType::Binary,
            FieldType::Timestamp => {
                matches!(dt, DataType::Timestamp(_, Some(tz)) if tz.as_ref() == "UTC")
            }
            FieldType::StringList => {
                matches!(dt, DataType::List(f) if f.data_type() == &DataType::Utf8)
            }
            FieldType::StringMap => matches!(dt, DataType::Map(..)),
        }
    }

    /// Every field backed by a column finds it in the files, with a type KFL can compare.
    #[test]
    fn every_stored_field_fits_its_column() {
        for table in Table::ALL {
            let schema = table.schema();
            for f in fields(table) {
                let Some(column) = f.column() else { continue };
                let field = schema.field_with_name(column).unwrap_or_else(|_| {
                    panic!("{} has no column {column} for {}", table.name(), f.name)
                });
                assert!(
                    fits(f.ty, field.data_type()),
                    "{}.{column} is {}, the catalog says {}",
                    table.name(),
                    field.data_type(),
                    f.ty.name()
                );
            }
        }
    }

    #[test]
    fn suggestions_find_the_intended_field() {
        assert_eq!(
            suggest(Table::Calls, "dst.servce.name")
                .first()
                .map(String::as_str),
            Some("dst.service.name")
        );
        assert_eq!(
            suggest(Table::Calls, "statuscode")
                .first()
                .map(String::as_str),
            Some("status_code")
        );
        assert!(suggest(Table::Calls, "service.name").contains(&"dst.service.name".to_owned()));
        assert!(suggest(Table::Calls, "zzzzzzzzzz").is_empty());
        assert_eq!(
            suggest(Table::Calls, "dst.svc.nam")
                .first()
                .map(String::as_str),
            Some("dst.service.name")
        );
    }
}
