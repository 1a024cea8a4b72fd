//! The field catalog: every name KFL knows, for the `calls` and `conns` tables, with its type,
//! where its value comes from (a Parquet column or a rule over columns), the protocols that fill
//! it, a description and an example. docs/kfl.md and `GET /mcp/fields` are generated from it.

use serde::Serialize;

pub use crate::fields::{ALIASES, CALL_FIELDS, CONN_FIELDS};

/// The tables KFL filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// One row per API call (request/response pair or unpaired half).
    Calls,
    /// One row per TCP connection.
    Conns,
}

impl Table {
    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Calls => "calls",
            Self::Conns => "conns",
        }
    }

    /// The table's fields (aliases not included).
    pub fn fields(self) -> &'static [Field] {
        match self {
            Self::Calls => CALL_FIELDS,
            Self::Conns => CONN_FIELDS,
        }
    }
}

/// A field's type as KFL sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// `true` / `false`; zero value `false`.
    Bool,
    /// A 64-bit integer; zero value `0`.
    Int,
    /// Text; zero value `""`.
    String,
    /// Raw bytes (body previews); zero value empty.
    Bytes,
    /// A point in time, UTC, nanosecond precision; zero value the epoch.
    Timestamp,
    /// A list of strings; zero value `[]`.
    StringList,
    /// A map from string to string; zero value `{}`.
    StringMap,
}

impl FieldType {
    /// The type as written in docs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::Int => "int",
            Self::String => "string",
            Self::Bytes => "bytes",
            Self::Timestamp => "timestamp",
            Self::StringList => "list<string>",
            Self::StringMap => "map<string, string>",
        }
    }
}

/// Where a field's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A Parquet column of that name.
    Column(&'static str),
    /// True when the row's protocol (calls) or detected L7 protocol (conns) is one of these.
    Protocols(&'static [&'static str]),
    /// The same value on every row of the table.
    Const(bool),
    /// True when the string column equals the value.
    Equals(&'static str, &'static str),
    /// True when the string column is not empty.
    NotEmpty(&'static str),
    /// True when the row is a DNS call and the boolean column is true.
    DnsAnd(&'static str),
    /// The integer column (µs) divided by 1000 (legacy millisecond fields).
    Millis(&'static str),
}

/// One field of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The KFL name (`src.pod.name`).
    pub name: &'static str,
    /// Its type.
    pub ty: FieldType,
    /// Where its value comes from.
    pub source: Source,
    /// Protocols that fill it (`all` for every row).
    pub protocols: &'static str,
    /// What it means.
    pub description: &'static str,
    /// A filter using it.
    pub example: &'static str,
}

impl Field {
    /// The Parquet column behind the field, when it is a plain column.
    pub fn column(&self) -> Option<&'static str> {
        match self.source {
            Source::Column(c) => Some(c),
            _ => None,
        }
    }

    /// Whether this is a protocol flag or other boolean rule rather than a stored column.
    pub fn is_flag(&self) -> bool {
        matches!(
            self.source,
            Source::Protocols(_)
                | Source::Const(_)
                | Source::Equals(..)
                | Source::NotEmpty(_)
                | Source::DnsAnd(_)
        )
    }
}

/// A second name for a field, kept for the legacy syntax and Kubeshark's MCP examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alias {
    /// The alias (`response.status`).
    pub name: &'static str,
    /// The field it stands for (`status_code`).
    pub target: &'static str,
}

/// Looks a name up in `table`, following aliases; `None` when unknown.
pub fn lookup(table: Table, name: &str) -> Option<&'static Field> {
    let name = ALIASES
        .iter()
        .find(|a| a.name == name)
        .map_or(name, |a| a.target);
    table.fields().iter().find(|f| f.name == name)
}

/// Every name valid in `table`: fields, then aliases whose target exists there.
pub fn names(table: Table) -> impl Iterator<Item = &'static str> {
    table.fields().iter().map(|f| f.name).chain(
        ALIASES
            .iter()
            .filter(move |a| table.fields().iter().any(|f| f.name == a.target))
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

/// A schema with one column per stored field of `table`, in KFL's own types (strings, Int64,
/// nullable where the analyzer writes nulls). For tools and tests that need a table without
/// the analyzer; the analyzer's files may use narrower integer types.
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
    let nullable = [
        "elapsed_time",
        "grpc_status",
        "error_type",
        "tcp_handshake_us",
        "handshake_us",
        "rst_by",
    ];
    let mut seen = std::collections::HashSet::new();
    let fields: Vec<ArrowField> = table
        .fields()
        .iter()
        .filter_map(|f| {
            let c = f.column()?;
            if !seen.insert(c) {
                return None;
            }
            let dt = match f.ty {
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
            Some(ArrowField::new(c, dt, nullable.contains(&c)))
        })
        .collect();
    Schema::new(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_aliases_resolve() {
        for table in [Table::Calls, Table::Conns] {
            let mut seen = std::collections::HashSet::new();
            for f in table.fields() {
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
