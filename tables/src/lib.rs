//! Remora's tables, each defined once.
//!
//! A table is a list of [`Column`]s. Each column names its Parquet column and its KFL field,
//! says how its value is read from a row ([`Get`]), how it is stored ([`Encoding`]), and
//! documents itself ([`Doc`]). Everything else is derived from that list:
//!
//! - the Arrow schema of the files ([`Table::schema`]) and of the batches written into them
//!   ([`Table::write_schema`]: dictionary text as plain text, for the Parquet writer to intern),
//! - the row writer, which turns rows into record batches ([`batch::record_batch`]),
//! - the Parquet layout: dictionaries and statistics per column ([`writer::properties`]),
//! - the KFL field catalog and the generated field docs (the `remora-kfl` crate reads
//!   [`Table::columns`]).
//!
//! A new column is therefore one line in [`calls`], [`conns`] or [`workloads`]. A column whose
//! getter and type disagree cannot compile (the getter's variant *is* the type).
//!
//! ```
//! use remora_tables::{Peer, Table, calls};
//! use remora_dissect::{Call, Endpoint};
//!
//! let call = Call::new(
//!     "HTTP",
//!     Endpoint { ip: "198.18.0.1".parse().unwrap(), port: 40000 },
//!     Endpoint { ip: "198.18.0.2".parse().unwrap(), port: 80 },
//! );
//! let mut rows = calls::Rows::new("node-1", "ebpf");
//! rows.push(&call, None, None);
//! let batch = rows.finish().unwrap();
//! assert_eq!(batch.num_rows(), 1);
//! assert_eq!(batch.schema(), Table::Calls.write_schema());
//! ```

pub mod batch;
mod byte_array;
pub mod calls;
mod column;
pub mod conns;
mod hybrid;
mod number;
mod page;
mod peer;
pub mod workloads;
pub mod writer;

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Schema, SchemaRef};

pub use column::{Column, ColumnInfo, Doc, Encoding, Get, Kind, MapEntries};
pub use peer::Peer;
pub use writer::{TableWriter, WriteError};

/// Remora's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// One row per API call (request/response pair or unpaired half).
    Calls,
    /// One row per TCP connection.
    Conns,
    /// One row per interval in which a workload held an address.
    Workloads,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 3] = [Table::Calls, Table::Conns, Table::Workloads];

    /// The table's name (and its file's stem: `calls.parquet`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Calls => "calls",
            Self::Conns => "conns",
            Self::Workloads => "workloads",
        }
    }

    /// The table's columns, without their getters, in file order.
    pub fn columns(self) -> &'static [ColumnInfo] {
        static CALLS: LazyLock<Vec<ColumnInfo>> =
            LazyLock::new(|| calls::columns().iter().map(Column::info).collect());
        static CONNS: LazyLock<Vec<ColumnInfo>> =
            LazyLock::new(|| conns::columns().iter().map(Column::info).collect());
        static WORKLOADS: LazyLock<Vec<ColumnInfo>> =
            LazyLock::new(|| workloads::columns().iter().map(Column::info).collect());
        match self {
            Self::Calls => &CALLS,
            Self::Conns => &CONNS,
            Self::Workloads => &WORKLOADS,
        }
    }

    /// The column stored under `name`.
    pub fn column(self, name: &str) -> Option<&'static ColumnInfo> {
        self.columns().iter().find(|c| c.name == name)
    }

    /// The Arrow schema of the table's files: what readers get.
    pub fn schema(self) -> SchemaRef {
        self.schemas().0.clone()
    }

    /// The Arrow schema of the record batches written into the table's files: [`Table::schema`]
    /// with plain `Utf8` for its dictionary columns. [`TableWriter`] builds each Parquet
    /// dictionary from the plain text (comparing a value with the previous row's first), so a
    /// dictionary built in Arrow first would be paid for twice; it stores [`Table::schema`] in
    /// the file, and readers get dictionary arrays from the dictionary pages.
    pub fn write_schema(self) -> SchemaRef {
        self.schemas().1.clone()
    }

    /// The table's file schema and write schema, derived once.
    fn schemas(self) -> &'static (SchemaRef, SchemaRef) {
        static SCHEMAS: LazyLock<[(SchemaRef, SchemaRef); 3]> = LazyLock::new(|| {
            Table::ALL.map(|t| {
                (
                    Arc::new(schema_of(t.columns(), ColumnInfo::data_type)),
                    Arc::new(schema_of(t.columns(), ColumnInfo::batch_data_type)),
                )
            })
        });
        let index = Table::ALL.iter().position(|t| *t == self).unwrap_or(0);
        &SCHEMAS[index]
    }
}

/// Every column as an Arrow field of the type `data_type` gives it, nullable exactly when its
/// getter can give no value (KFL reads a null as the field's zero value, and only has to for
/// these columns).
fn schema_of(columns: &[ColumnInfo], data_type: fn(&ColumnInfo) -> DataType) -> Schema {
    Schema::new(
        columns
            .iter()
            .map(|c| arrow::datatypes::Field::new(c.name, data_type(c), c.nullable))
            .collect::<Vec<_>>(),
    )
}

#[cfg(test)]
mod tests;
