//! KFL, the Kubeshark Filter Language as Remora reads it: one parser for KFL2 (a CEL subset)
//! and the legacy/seed syntax, type checked against a field catalog and compiled into a
//! DataFusion logical [`Expr`](datafusion::logical_expr::Expr) that filters the Parquet scan of
//! `calls` or `conns` — never into SQL text.
//!
//! ```
//! use datafusion::arrow::datatypes::{DataType, Field, Schema};
//! use remora_kfl::{CompileOptions, Table, compile, explain};
//!
//! let schema = Schema::new(vec![
//!     Field::new("path", DataType::Utf8, false),
//!     Field::new("status_code", DataType::UInt16, false),
//! ]);
//! let expr = compile(
//!     r#"request.path == "/api/v1/checkout" and response.status == 503"#,
//!     Table::Calls,
//!     &schema,
//!     &CompileOptions::default(),
//! )
//! .expect("valid filter");
//! // Cheap conditions run first (the integer test before the string one).
//! assert_eq!(
//!     explain(Table::Calls, expr.as_ref()).expect("unparses"),
//!     r#"SELECT * FROM calls WHERE ((status_code = 503) AND ("path" = '/api/v1/checkout'))"#
//! );
//! ```

pub mod ast;
pub mod catalog;
mod compile;
pub mod docs;
pub mod error;
pub mod lexer;
mod order;
pub mod parser;
pub mod time;
mod udf;

pub use catalog::{ALIASES, Field, FieldType, Table};
pub use compile::CompileOptions;
pub use error::{Detail, ErrorBody, KflError, Position, Result, Span};
pub use parser::parse;
pub use udf::{ByteLength, CountMatches};

use datafusion::{arrow::datatypes::Schema, logical_expr::Expr as DfExpr};

/// Parses, checks and compiles `kfl` for `table` stored with `schema`. `Ok(None)` for an empty
/// filter (every row).
pub fn compile(
    kfl: &str,
    table: Table,
    schema: &Schema,
    options: &CompileOptions,
) -> Result<Option<DfExpr>> {
    match parser::parse(kfl)? {
        None => Ok(None),
        Some(ast) => compile::compile(kfl, &ast, table, schema, options)
            .map(order::cheap_first)
            .map(Some),
    }
}

/// The SQL DataFusion's unparser makes of a compiled filter: what the filter means, for people.
pub fn to_sql(expr: &DfExpr) -> Result<String> {
    datafusion::sql::unparser::expr_to_sql(expr)
        .map(|sql| sql.to_string())
        .map_err(|e| KflError::Internal(format!("unparsing the compiled filter: {e}")))
}

/// `SELECT * FROM <table> [WHERE <filter>]`, the query a filter stands for.
pub fn explain(table: Table, expr: Option<&DfExpr>) -> Result<String> {
    Ok(match expr {
        None => format!("SELECT * FROM {}", table.name()),
        Some(e) => format!("SELECT * FROM {} WHERE {}", table.name(), to_sql(e)?),
    })
}

#[cfg(test)]
mod tests;
