//! What a column is: its names, how its value is read from a row, how it is stored, its docs.

use std::{net::IpAddr, sync::Arc};

use arrow::{
    array::{MapBuilder, StringBuilder},
    datatypes::{DataType, Field, FieldRef, Fields, TimeUnit},
};

/// How a column's value is read from a row of type `R`. The variant is the column's type: a
/// getter of the wrong type for its column cannot be written.
pub enum Get<R> {
    /// A flag (Arrow `Boolean`).
    Bool(fn(&R) -> bool),
    /// `UInt16`.
    UInt16(fn(&R) -> u16),
    /// `UInt32`.
    UInt32(fn(&R) -> u32),
    /// `UInt64`.
    UInt64(fn(&R) -> u64),
    /// `Int64`, null when `None`.
    Int64(fn(&R) -> Option<i64>),
    /// Nanoseconds since the epoch, `Timestamp(ns, UTC)`.
    Timestamp(fn(&R) -> i64),
    /// Nanoseconds since the epoch or null, `Timestamp(ns, UTC)`.
    OptTimestamp(fn(&R) -> Option<i64>),
    /// Text borrowed from the row.
    Str(fn(&R) -> &str),
    /// Text borrowed from the row, null when `None`.
    OptStr(fn(&R) -> Option<&str>),
    /// Text formatted into a buffer (cleared before each row).
    Text(fn(&R, &mut String)),
    /// An address, stored as text; formatted once for a run of rows with the same address.
    Ip(fn(&R) -> IpAddr),
    /// Bytes.
    Binary(fn(&R) -> &[u8]),
    /// A list of strings.
    List(fn(&R) -> &[String]),
    /// A map from string to string, filled entry by entry.
    Map(fn(&R, &mut MapEntries<'_>)),
    /// Header fields as a map from name, in lower case, to value: copied in bulk from the
    /// [`remora_dissect::Headers`] buffer (the header maps are the largest columns of `calls`
    /// to build; entry by entry they cost about twice as much).
    Headers(fn(&R) -> &remora_dissect::Headers),
}

impl<R> Get<R> {
    /// The value kind this getter produces.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Bool(_) => Kind::Bool,
            Self::UInt16(_) => Kind::UInt16,
            Self::UInt32(_) => Kind::UInt32,
            Self::UInt64(_) => Kind::UInt64,
            Self::Int64(_) => Kind::Int64,
            Self::Timestamp(_) | Self::OptTimestamp(_) => Kind::Timestamp,
            Self::Str(_) | Self::OptStr(_) | Self::Text(_) | Self::Ip(_) => Kind::Utf8,
            Self::Binary(_) => Kind::Binary,
            Self::List(_) => Kind::Utf8List,
            Self::Map(_) | Self::Headers(_) => Kind::Utf8Map,
        }
    }

    /// Whether rows can hold a null here.
    pub fn nullable(&self) -> bool {
        matches!(
            self,
            Self::Int64(_) | Self::OptStr(_) | Self::OptTimestamp(_)
        )
    }
}

/// The entries of one map cell, as a [`Get::Map`] getter adds them.
pub struct MapEntries<'b> {
    pub(crate) builder: &'b mut MapBuilder<StringBuilder, StringBuilder>,
}

impl MapEntries<'_> {
    /// Adds `key` → `value`.
    pub fn insert(&mut self, key: &str, value: &str) {
        self.builder.keys().append_value(key);
        self.builder.values().append_value(value);
    }
}

/// A column's value type, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Boolean.
    Bool,
    /// UInt16.
    UInt16,
    /// UInt32.
    UInt32,
    /// UInt64.
    UInt64,
    /// Int64.
    Int64,
    /// Timestamp(ns, UTC).
    Timestamp,
    /// Utf8, or Dictionary(Int32, Utf8) with [`Encoding::Dictionary`].
    Utf8,
    /// Binary.
    Binary,
    /// List(Utf8).
    Utf8List,
    /// Map(Utf8, Utf8).
    Utf8Map,
}

impl Kind {
    /// Whether this is a number, a time or a flag: the columns with min/max statistics.
    pub fn is_primitive(self) -> bool {
        matches!(
            self,
            Self::Bool | Self::UInt16 | Self::UInt32 | Self::UInt64 | Self::Int64 | Self::Timestamp
        )
    }
}

/// How a column is stored, beyond its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Parquet's defaults: dictionary pages while they pay.
    Default,
    /// Few distinct values: Arrow type `Dictionary(Int32, Utf8)` in the file, so readers get a
    /// dictionary and DataFusion evaluates `==`, `contains`, `startsWith` and regexes once per
    /// distinct value instead of once per row (on the 10M-call benchmark `src.pod contains
    /// "frontend"` went from 0.063 s to 0.011 s). Text columns only.
    Dictionary,
    /// Values that rarely repeat (ids, times, bodies, URLs; query parameters): no Parquet
    /// dictionary, since interning them costs more than it saves after zstd.
    Unique,
}

/// A column's documentation, shown in docs/kfl.md and `GET /mcp/fields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doc {
    /// Protocols that fill it (`all` for every row).
    pub protocols: &'static str,
    /// What it means.
    pub description: &'static str,
    /// A KFL filter using it.
    pub example: &'static str,
}

/// One column of a table whose rows are `R`.
pub struct Column<R> {
    /// The KFL field name (`src.pod.name`).
    pub kfl: &'static str,
    /// The Parquet column name (`src_pod_name`).
    pub name: &'static str,
    /// How the value is read from a row; its variant is the column's type.
    pub get: Get<R>,
    /// How it is stored.
    pub encoding: Encoding,
    /// Its documentation.
    pub doc: Doc,
}

impl<R> Column<R> {
    /// A column; one line per column keeps a table definition readable as a table.
    pub const fn new(
        kfl: &'static str,
        name: &'static str,
        get: Get<R>,
        encoding: Encoding,
        protocols: &'static str,
        description: &'static str,
        example: &'static str,
    ) -> Self {
        Self {
            kfl,
            name,
            get,
            encoding,
            doc: Doc {
                protocols,
                description,
                example,
            },
        }
    }

    /// The column without its getter.
    pub fn info(&self) -> ColumnInfo {
        ColumnInfo {
            kfl: self.kfl,
            name: self.name,
            kind: self.get.kind(),
            nullable: self.get.nullable(),
            encoding: self.encoding,
            doc: self.doc,
        }
    }
}

/// A column without its getter: what readers of the definition (the KFL catalog, docs, the
/// schema) need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnInfo {
    /// The KFL field name.
    pub kfl: &'static str,
    /// The Parquet column name.
    pub name: &'static str,
    /// The value type.
    pub kind: Kind,
    /// Whether rows can hold a null here.
    pub nullable: bool,
    /// How it is stored.
    pub encoding: Encoding,
    /// Its documentation.
    pub doc: Doc,
}

impl ColumnInfo {
    /// The Arrow type of the column in the files.
    pub fn data_type(&self) -> DataType {
        match (self.kind, self.encoding) {
            (Kind::Bool, _) => DataType::Boolean,
            (Kind::UInt16, _) => DataType::UInt16,
            (Kind::UInt32, _) => DataType::UInt32,
            (Kind::UInt64, _) => DataType::UInt64,
            (Kind::Int64, _) => DataType::Int64,
            (Kind::Timestamp, _) => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            (Kind::Utf8, Encoding::Dictionary) => {
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
            }
            (Kind::Utf8, _) => DataType::Utf8,
            (Kind::Binary, _) => DataType::Binary,
            (Kind::Utf8List, _) => {
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
            }
            (Kind::Utf8Map, _) => utf8_map_type(),
        }
    }

    /// The Arrow type of the column in the record batches written into the files: as
    /// [`ColumnInfo::data_type`], but plain `Utf8` for dictionary text (see
    /// [`crate::Table::write_schema`]).
    pub fn batch_data_type(&self) -> DataType {
        match self.kind {
            Kind::Utf8 => DataType::Utf8,
            _ => self.data_type(),
        }
    }
}

/// `Map(Utf8, Utf8)` as every map column stores it (keys not sorted).
pub(crate) fn utf8_map_type() -> DataType {
    DataType::Map(utf8_map_entries(), false)
}

/// The entries field of [`utf8_map_type`]: a struct of [`utf8_map_entry_fields`].
pub(crate) fn utf8_map_entries() -> FieldRef {
    Arc::new(Field::new(
        "entries",
        DataType::Struct(utf8_map_entry_fields()),
        false,
    ))
}

/// A map entry's fields: `keys` (never null) and `values`.
pub(crate) fn utf8_map_entry_fields() -> Fields {
    Fields::from(vec![
        Field::new("keys", DataType::Utf8, false),
        Field::new("values", DataType::Utf8, true),
    ])
}
