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

/// A DataFusion session for our tables.
///
/// Filters are evaluated after decoding (a `FilterExec`), not inside the Parquet decoder: on the
/// 10M-call benchmark late materialisation made every count and aggregate slower (string
/// filters by 1.5–3.5x), because the filter kernels then run row by row on decoded values
/// instead of on whole dictionary-typed batches. Row groups and pages are still pruned by
/// statistics either way. `REMORA_PARQUET_PUSHDOWN=1` turns late materialisation on (for
/// benchmarking).
pub fn session() -> SessionContext {
    SessionContext::new_with_config(session_config())
}

/// The configuration of [`session`]: Parquet read options, no information schema.
pub fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new().with_information_schema(false);
    let options = config.options_mut();
    let pushdown = std::env::var("REMORA_PARQUET_PUSHDOWN").is_ok_and(|v| v == "1");
    options.execution.parquet.pushdown_filters = pushdown;
    options.execution.parquet.reorder_filters = pushdown;
    config
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
