//! Read-only SQL over a snapshot and its dissection: `calls`, `conns`, `workloads` and the
//! recorded `packets`, with KFL available inside SQL as the table function `kfl(...)`.
//!
//! A statement is planned first and its logical plan checked against an allow-list of query
//! nodes (projections, filters, joins, aggregates, scans of the registered tables, `EXPLAIN`,
//! `DESCRIBE`), so DDL, DML, `COPY`, `SET` and anything new DataFusion may add later are
//! refused before anything runs. The session reads nothing but the registered tables: URL
//! tables are off and no file-reading function is registered. Each query runs under a memory
//! pool (no spilling to disk) and a time limit, and stops reading once it has `max_rows` rows.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use datafusion::{
    arrow::{array::RecordBatch, datatypes::SchemaRef},
    catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider, view::ViewTable},
    common::tree_node::TreeNodeRecursion,
    datasource::provider_as_source,
    error::DataFusionError,
    execution::{
        context::SessionContext,
        disk_manager::{DiskManagerBuilder, DiskManagerMode},
        runtime_env::RuntimeEnvBuilder,
    },
    logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder},
    prelude::ParquetReadOptions,
};
use futures_util::StreamExt as _;
use remora_kfl::{CompileOptions, Table};

/// Where a query's tables come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// A completed dissection directory (`calls.parquet`, `conns.parquet`).
    pub dissection: Option<PathBuf>,
    /// The nodes' packet directories of the snapshot (`packets`).
    pub packet_dirs: Vec<PathBuf>,
    /// The snapshot's `workloads.parquet`.
    pub workloads: Option<PathBuf>,
}

/// What one query may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall time, planning included.
    pub timeout: Duration,
    /// Memory of sorts, joins and aggregates.
    pub memory_bytes: usize,
    /// Rows returned; the query stops reading after these.
    pub max_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            memory_bytes: 256 << 20,
            max_rows: 10_000,
        }
    }
}

/// Why a query was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The statement would change something or read outside the tables (HTTP 400).
    #[error(
        "only SELECT, WITH, EXPLAIN and DESCRIBE are allowed: this statement is {0}; \
         Remora's SQL reads the snapshot's tables and changes nothing"
    )]
    NotReadOnly(String),
    /// The statement does not parse or plan, or its KFL is wrong (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The query ran out of time (HTTP 408).
    #[error(
        "the query ran longer than {} s; add a WHERE on timestamp or a LIMIT, or raise timeout_ms",
        .0.as_secs_f64()
    )]
    Timeout(Duration),
    /// The query needed more memory than allowed (HTTP 413).
    #[error(
        "the query needs more than {mib} MiB (its memory limit): aggregate or filter before \
         sorting or joining, or raise memory_mb ({detail})"
    )]
    Memory {
        /// The limit.
        mib: usize,
        /// DataFusion's account of the allocation.
        detail: String,
    },
    /// Reading the tables failed (HTTP 500).
    #[error("query failed: {0}")]
    Execution(DataFusionError),
}

/// A query's answer.
#[derive(Debug)]
pub struct Answer {
    /// Column names and types.
    pub schema: SchemaRef,
    /// The rows, at most `max_rows`.
    pub batches: Vec<RecordBatch>,
    /// Rows in `batches`.
    pub rows: usize,
    /// More rows existed than `max_rows`.
    pub truncated: bool,
    /// Planning and execution time.
    pub elapsed: Duration,
}

/// A session with the tables of `sources` registered (those that exist), `kfl(...)`, and the
/// memory limit of `limits`.
pub async fn session(sources: &Sources, limits: &Limits) -> Result<SessionContext, SqlError> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(limits.memory_bytes, 1.0)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(SqlError::Execution)?;
    // `SHOW TABLES` and `information_schema.columns` let a model discover the tables.
    let config = super::query::session_config().with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let mut kfl_tables = Vec::new();
    if let Some(dir) = &sources.dissection {
        for table in [Table::Calls, Table::Conns] {
            let file = dir.join(format!("{}.parquet", table.name()));
            if file.is_file() {
                register(&ctx, table.name(), &file).await?;
                let provider = ctx
                    .table_provider(table.name())
                    .await
                    .map_err(SqlError::Execution)?;
                kfl_tables.push((table, provider));
            }
        }
    }
    if let Some(file) = sources.workloads.as_ref().filter(|f| f.is_file()) {
        register(&ctx, Table::Workloads.name(), file).await?;
    }
    let slices = packet_files(&sources.packet_dirs);
    if !slices.is_empty() {
        let packets = ctx
            .read_parquet(slices, ParquetReadOptions::default())
            .await
            .map_err(SqlError::Execution)?;
        ctx.register_table("packets", packets.into_view())
            .map_err(SqlError::Execution)?;
    }
    // The agent's socket events and TLS plaintext sit next to each node's packets.
    for (table, dir) in [
        ("sockets", crate::pipeline::processes::SOCKETS_DIR),
        ("tls", crate::pipeline::plaintext::TLS_DIR),
    ] {
        let dirs: Vec<PathBuf> = sources
            .packet_dirs
            .iter()
            .filter_map(|d| d.parent().map(|n| n.join(dir)))
            .collect();
        let slices = packet_files(&dirs);
        if !slices.is_empty() {
            let view = ctx
                .read_parquet(slices, ParquetReadOptions::default())
                .await
                .map_err(SqlError::Execution)?;
            ctx.register_table(table, view.into_view())
                .map_err(SqlError::Execution)?;
        }
    }
    ctx.register_udtf("kfl", Arc::new(KflTable { tables: kfl_tables }));
    Ok(ctx)
}

async fn register(ctx: &SessionContext, name: &str, file: &Path) -> Result<(), SqlError> {
    ctx.register_parquet(
        name,
        file.to_string_lossy().as_ref(),
        ParquetReadOptions::default(),
    )
    .await
    .map_err(SqlError::Execution)
}

/// The Parquet slices in `dirs`, in name (time) order, as the paths DataFusion takes.
fn packet_files(dirs: &[PathBuf]) -> Vec<String> {
    crate::pipeline::processes::parquet_files(dirs.iter().cloned())
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// Checks that `plan` only reads: every node, subqueries included, is a query node.
pub fn check_read_only(plan: &LogicalPlan) -> Result<(), SqlError> {
    let mut refused = None;
    let walk = plan.apply_with_subqueries(|node| {
        let allowed = matches!(
            node,
            LogicalPlan::Projection(_)
                | LogicalPlan::Filter(_)
                | LogicalPlan::Window(_)
                | LogicalPlan::Aggregate(_)
                | LogicalPlan::Sort(_)
                | LogicalPlan::Join(_)
                | LogicalPlan::Repartition(_)
                | LogicalPlan::Union(_)
                | LogicalPlan::TableScan(_)
                | LogicalPlan::EmptyRelation(_)
                | LogicalPlan::Subquery(_)
                | LogicalPlan::SubqueryAlias(_)
                | LogicalPlan::Limit(_)
                | LogicalPlan::Values(_)
                | LogicalPlan::Explain(_)
                | LogicalPlan::Analyze(_)
                | LogicalPlan::Distinct(_)
                | LogicalPlan::DescribeTable(_)
                | LogicalPlan::Unnest(_)
                | LogicalPlan::RecursiveQuery(_)
        );
        if allowed {
            Ok(TreeNodeRecursion::Continue)
        } else {
            refused = Some(describe(node));
            Ok(TreeNodeRecursion::Stop)
        }
    });
    walk.map_err(|e| SqlError::Invalid(e.to_string()))?;
    match refused {
        Some(what) => Err(SqlError::NotReadOnly(what)),
        None => Ok(()),
    }
}

fn describe(node: &LogicalPlan) -> String {
    match node {
        LogicalPlan::Ddl(ddl) => ddl.name().to_owned(),
        LogicalPlan::Dml(dml) => format!("{} (DML)", dml.op),
        LogicalPlan::Copy(_) => "COPY".into(),
        LogicalPlan::Statement(s) => s.name().to_owned(),
        LogicalPlan::Extension(_) => "an extension node".into(),
        other => format!("{other:?}").chars().take(40).collect(),
    }
}

/// Plans `sql`, checks that it only reads, and runs it within `limits`.
pub async fn run(ctx: &SessionContext, sql: &str, limits: &Limits) -> Result<Answer, SqlError> {
    let started = Instant::now();
    let query = async {
        let plan = ctx
            .state()
            .create_logical_plan(sql)
            .await
            .map_err(|e| classify(e, limits))?;
        check_read_only(&plan)?;
        let df = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| classify(e, limits))?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await.map_err(|e| classify(e, limits))?;
        let mut batches = Vec::new();
        let mut rows = 0usize;
        let mut truncated = false;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| classify(e, limits))?;
            let room = limits.max_rows - rows;
            if batch.num_rows() > room {
                truncated = true;
                if room > 0 {
                    batches.push(batch.slice(0, room));
                }
                rows += room;
                break;
            }
            rows += batch.num_rows();
            if batch.num_rows() > 0 {
                batches.push(batch);
            }
        }
        Ok::<_, SqlError>((schema, batches, rows, truncated))
    };
    let (schema, batches, rows, truncated) = tokio::time::timeout(limits.timeout, query)
        .await
        .map_err(|_| SqlError::Timeout(limits.timeout))??;
    Ok(Answer {
        schema,
        batches,
        rows,
        truncated,
        elapsed: started.elapsed(),
    })
}

/// Sorts DataFusion's errors into the user's (bad SQL, too much memory) and ours.
fn classify(e: DataFusionError, limits: &Limits) -> SqlError {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(detail) => SqlError::Memory {
            mib: limits.memory_bytes >> 20,
            detail: detail.chars().take(300).collect(),
        },
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Execution(_)
        | DataFusionError::ArrowError(..) => SqlError::Invalid(e.find_root().to_string()),
        _ => SqlError::Execution(e),
    }
}

/// `kfl(filter)` (over `calls`) and `kfl('conns', filter)`: the rows a KFL filter selects, as
/// a table SQL can join, group and sort.
#[derive(Debug)]
struct KflTable {
    tables: Vec<(Table, Arc<dyn TableProvider>)>,
}

fn string_arg(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(v, _) => v.try_as_str().flatten(),
        _ => None,
    }
}

impl TableFunctionImpl for KflTable {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let usage = "kfl('<filter>') selects calls; kfl('conns', '<filter>') selects conns; \
                     both arguments are string literals";
        let (name, filter) = match args.exprs() {
            [f] => ("calls", string_arg(f)),
            [t, f] => (string_arg(t).unwrap_or_default(), string_arg(f)),
            _ => return Err(DataFusionError::Plan(usage.into())),
        };
        let filter = filter.ok_or_else(|| DataFusionError::Plan(usage.into()))?;
        let Some((table, provider)) = self.tables.iter().find(|(t, _)| t.name() == name) else {
            return Err(DataFusionError::Plan(format!(
                "kfl(): no table `{name}` in this db; {usage}"
            )));
        };
        let expr = remora_kfl::compile(
            filter,
            *table,
            provider.schema().as_ref(),
            &CompileOptions::default(),
        )
        .map_err(|e| DataFusionError::Plan(format!("kfl(): {e}")))?;
        let mut plan =
            LogicalPlanBuilder::scan(table.name(), provider_as_source(provider.clone()), None)?;
        if let Some(expr) = expr {
            plan = plan.filter(expr)?;
        }
        Ok(Arc::new(ViewTable::new(plan.build()?, None)))
    }
}
