//! What a catalog entry is: a field's name, type, source and docs, and aliases.

use remora_tables::{ColumnInfo, Kind};
use serde::Serialize;

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
    /// How KFL sees a stored column's type.
    pub fn of(kind: Kind) -> Self {
        match kind {
            Kind::Bool => Self::Bool,
            Kind::UInt16 | Kind::UInt32 | Kind::UInt64 | Kind::Int64 => Self::Int,
            Kind::Utf8 => Self::String,
            Kind::Binary => Self::Bytes,
            Kind::Timestamp => Self::Timestamp,
            Kind::Utf8List => Self::StringList,
            Kind::Utf8Map => Self::StringMap,
        }
    }

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
    /// The field of a stored column.
    pub fn stored(column: &ColumnInfo) -> Self {
        Self {
            name: column.kfl,
            ty: FieldType::of(column.kind),
            source: Source::Column(column.name),
            protocols: column.doc.protocols,
            description: column.doc.description,
            example: column.doc.example,
        }
    }

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
