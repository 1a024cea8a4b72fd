//! Running KFL over the Parquet tables of a dissection with DataFusion: the filter is compiled
//! against the file's own schema (columns a file lacks read as zero values) and handed to the
//! scan as a logical expression, where DataFusion prunes row groups and pages with it.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
    time::SystemTime,
};

use datafusion::{
    dataframe::DataFrame,
    error::DataFusionError,
    execution::{
        context::SessionContext,
        runtime_env::{RuntimeEnv, RuntimeEnvBuilder},
    },
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
    SessionContext::new_with_config_rt(session_config(), runtime())
}

/// The runtime every query session shares, so that Parquet footers and page indexes, once
/// read, stay in its metadata cache (256 MiB) across requests. Its memory pool is shared by
/// every query at once and bounded by [`memory_limit`]: queries run in the recorder's process
/// (`remora up`), and a burst of them must not take it down. Sorts that outgrow the pool spill
/// to the temp directory (private files: the process umask is 077); what cannot spill fails
/// with `ResourcesExhausted`, which the API answers 503 with `Retry-After`.
pub fn runtime() -> Arc<RuntimeEnv> {
    static RUNTIME: OnceLock<Arc<RuntimeEnv>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let limit = *POOL_LIMIT.get_or_init(memory_limit);
            RuntimeEnvBuilder::new()
                .with_metadata_cache_limit(256 << 20)
                .with_memory_limit(limit, 1.0)
                .build_arc()
                .unwrap_or_else(|_| Arc::new(RuntimeEnv::default()))
        })
        .clone()
}

static MEMORY_LIMIT_MB: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// The limit the pool was built with, once it was.
static POOL_LIMIT: OnceLock<usize> = OnceLock::new();

/// Sets the MiB all KFL queries may hold at once (`remora up --query-memory-mb`). It counts
/// only before the first query, which builds the pool; returns false when it came too late.
pub fn set_memory_limit_mb(mb: usize) -> bool {
    MEMORY_LIMIT_MB.store(mb.max(16), std::sync::atomic::Ordering::SeqCst);
    POOL_LIMIT.get().is_none()
}

/// Bytes all KFL queries may hold at once: the pool's, once built; before, what
/// [`set_memory_limit_mb`] set, else `REMORA_QUERY_MEMORY_MB`, default 2048.
pub fn memory_limit() -> usize {
    if let Some(&built) = POOL_LIMIT.get() {
        return built;
    }
    let set = MEMORY_LIMIT_MB.load(std::sync::atomic::Ordering::SeqCst);
    let mb = if set > 0 {
        set
    } else {
        std::env::var("REMORA_QUERY_MEMORY_MB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|mb| *mb > 0)
            .unwrap_or(2048)
    };
    mb << 20
}

/// What identifies one version of a file: a dissection rewritten under the same name is
/// another file.
type Stamp = (u64, Option<SystemTime>, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok(), m.ino()))
}

/// Sessions with a dissection's tables registered, kept per directory while its files are
/// unchanged, so that a request does not pay for listing, footers and schema again. Bounded:
/// the least recently used session goes first.
#[derive(Default)]
pub struct TableCache {
    entries: Mutex<HashMap<PathBuf, CachedTables>>,
}

struct CachedTables {
    stamps: Vec<Option<Stamp>>,
    ctx: SessionContext,
    calls_spans: Arc<Vec<TimeSpan>>,
    used: u64,
}

/// A row group of `calls`: its time range and rows, from the file's footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSpan {
    /// Earliest `timestamp`, ns.
    pub min: i64,
    /// Latest `timestamp`, ns.
    pub max: i64,
    /// Rows.
    pub rows: u64,
}

/// The row groups' time ranges of a `calls` file; empty when a row group has no statistics
/// (then nothing is assumed about the order of the file).
pub fn time_spans(path: &Path) -> Vec<TimeSpan> {
    use parquet::file::{
        reader::{FileReader as _, SerializedFileReader},
        statistics::Statistics,
    };
    let Some(reader) = std::fs::File::open(path)
        .ok()
        .and_then(|f| SerializedFileReader::new(f).ok())
    else {
        return Vec::new();
    };
    let mut spans = Vec::new();
    for group in reader.metadata().row_groups() {
        let stats = group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == "timestamp")
            .and_then(|c| c.statistics());
        match stats {
            Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                (Some(&min), Some(&max)) => spans.push(TimeSpan {
                    min,
                    max,
                    rows: group.num_rows().max(0) as u64,
                }),
                _ => return Vec::new(),
            },
            _ => return Vec::new(),
        }
    }
    spans
}

impl std::fmt::Debug for TableCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableCache")
            .field("dbs", &self.lock().len())
            .finish()
    }
}

/// Sessions kept at most.
const CACHED_DBS: usize = 16;
/// The tables a cached session has, with their files.
const TABLE_FILES: [(Table, &str); 2] = [
    (Table::Calls, "calls.parquet"),
    (Table::Conns, "conns.parquet"),
];

impl TableCache {
    /// The row groups' time ranges of the `calls` file of `dir`, as read when its session was
    /// opened (empty when it is not cached, or has no statistics).
    pub fn calls_spans(&self, dir: &Path) -> Arc<Vec<TimeSpan>> {
        self.lock()
            .get(dir)
            .map(|e| e.calls_spans.clone())
            .unwrap_or_default()
    }

    /// Drops the sessions of every db under `dir` (a deleted dissection or snapshot), so that
    /// deleted data holds no memory until the cache would have evicted it.
    pub fn forget(&self, dir: &Path) {
        self.lock().retain(|cached, _| !cached.starts_with(dir));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, CachedTables>> {
        // A panic while the lock was held leaves whole entries, never a half-written one.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A session over the tables of the dissection in `dir` (those it has), from the cache when
    /// its files have not changed since.
    pub async fn session(&self, dir: &Path) -> Result<SessionContext, QueryError> {
        let stamps: Vec<Option<Stamp>> = TABLE_FILES
            .iter()
            .map(|(_, file)| stamp(&dir.join(file)))
            .collect();
        {
            let mut entries = self.lock();
            let tick = entries.values().map(|e| e.used).max().unwrap_or(0) + 1;
            if let Some(hit) = entries.get_mut(dir)
                && hit.stamps == stamps
            {
                hit.used = tick;
                return Ok(hit.ctx.clone());
            }
        }
        let ctx = session();
        for ((table, file), stamp) in TABLE_FILES.iter().zip(&stamps) {
            if stamp.is_some() {
                register(&ctx, *table, &dir.join(file)).await?;
            }
        }
        let calls = dir.join("calls.parquet");
        // A footer read: small, and once per db while it is cached.
        let calls_spans = Arc::new(time_spans(&calls));
        let mut entries = self.lock();
        let tick = entries.values().map(|e| e.used).max().unwrap_or(0) + 1;
        if entries.len() >= CACHED_DBS
            && !entries.contains_key(dir)
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
        entries.insert(
            dir.to_owned(),
            CachedTables {
                stamps,
                ctx: ctx.clone(),
                calls_spans,
                used: tick,
            },
        );
        Ok(ctx)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deleted_dbs_leave_the_cache() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/pcap/http-simple-get.pcap");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dissections/s/d");
        crate::pipeline::dissect_file(&fixture, &dir, "test", false, 2).unwrap();
        let cache = TableCache::default();
        cache.session(&dir).await.unwrap();
        assert!(!cache.calls_spans(&dir).is_empty(), "cached with its spans");
        cache.forget(&tmp.path().join("dissections/s2"));
        assert!(
            !cache.calls_spans(&dir).is_empty(),
            "another snapshot's name"
        );
        cache.forget(&tmp.path().join("dissections/s"));
        assert!(
            cache.calls_spans(&dir).is_empty(),
            "forgotten with its snapshot"
        );
    }
}
