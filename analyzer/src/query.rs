//! Running KFL over the Parquet tables of a dissection with DataFusion: the filter is compiled
//! against the file's own schema (columns a file lacks read as zero values) and handed to the
//! scan as a logical expression, where DataFusion prunes row groups and pages with it.

use std::path::Path;

use datafusion::{
    dataframe::DataFrame,
    error::DataFusionError,
    execution::context::SessionContext,
    logical_expr::Expr,
    prelude::{ParquetReadOptions, SessionConfig},
};
use remora_kfl::{CompileOptions, KflError, Table};

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The filter is wrong (HTTP 400).
    #[error(transparent)]
    Kfl(#[from] KflError),
    /// Reading or executing failed.
    #[error("query failed: {0}")]
    DataFusion(#[from] DataFusionError),
}

/// A DataFusion session tuned for our tables: filters evaluated inside the Parquet decoder
/// (late materialisation), so rows a filter drops are never decoded in full.
pub fn session() -> SessionContext {
    let mut config = SessionConfig::new().with_information_schema(false);
    let options = config.options_mut();
    // Late materialisation; REMORA_PARQUET_PUSHDOWN=0 turns it off (for benchmarking).
    let pushdown = std::env::var("REMORA_PARQUET_PUSHDOWN").map_or(true, |v| v != "0");
    options.execution.parquet.pushdown_filters = pushdown;
    options.execution.parquet.reorder_filters = pushdown;
    SessionContext::new_with_config(config)
}

/// Registers `path` (a Parquet file or a directory of them) as `table` in `ctx`.
pub async fn register(ctx: &SessionContext, table: Table, path: &Path) -> Result<(), QueryError> {
    let path = path.to_string_lossy();
    ctx.register_parquet(table.name(), path.as_ref(), ParquetReadOptions::default())
        .await?;
    Ok(())
}

/// The rows of `table` that `kfl` selects, and the compiled filter (for `explain`).
pub async fn filtered(
    ctx: &SessionContext,
    table: Table,
    kfl: &str,
    options: &CompileOptions,
) -> Result<(DataFrame, Option<Expr>), QueryError> {
    let df = ctx.table(table.name()).await?;
    let schema = df.schema().as_arrow().clone();
    let expr = remora_kfl::compile(kfl, table, &schema, options)?;
    let df = match &expr {
        Some(e) => df.filter(e.clone())?,
        None => df,
    };
    Ok((df, expr))
}
