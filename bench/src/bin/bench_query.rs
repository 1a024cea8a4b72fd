//! `bench-query` (run by `cargo xtask bench query`): KFL queries through Remora (compiled to
//! DataFusion expressions over Parquet) against the same questions in SQL through DuckDB, on
//! the same file of synthetic calls, in the same run. Both engines must also agree on the
//! answers. Also measures how long compiling a filter takes.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use datafusion::{
    arrow::{
        array::AsArray,
        compute::cast,
        datatypes::{DataType, Float64Type, Int64Type},
    },
    functions_aggregate::expr_fn::{count, percentile_cont},
    logical_expr::{col, lit},
};
use remora_analyzer::{pipeline::calls_batch, services::query};
use remora_bench::synth::{Rng, Shop, calls};
use remora_kfl::{CompileOptions, Table};
use remora_tables::TableWriter;

// The allocator of the `remora` binary that serves these queries.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Query benchmark.
#[derive(Parser, Debug)]
#[command(name = "bench-query")]
struct Args {
    /// Synthetic calls in the table.
    #[arg(long, default_value_t = 10_000_000)]
    calls: usize,
    /// Where the Parquet file is made (and reused while it has the right size).
    #[arg(long, default_value = "bench-out/query")]
    dir: PathBuf,
    /// Runs of each query; the best is reported (after one warm-up).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent HTTP clients for the /mcp/calls latency test (a single client runs first).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Requests per client.
    #[arg(long, default_value_t = 10)]
    requests: usize,
    /// GiB of slices for the snapshot timing.
    #[arg(long, default_value_t = 1)]
    snapshot_gib: u64,
    /// Only the query comparison and compile times (no HTTP latency, no snapshot timing).
    #[arg(long)]
    queries_only: bool,
    /// Only the /mcp/calls latency (no engine comparison, no snapshot timing).
    #[arg(long)]
    latency_only: bool,
}

/// The seed's filters, and the same questions for DuckDB.
const FILTERS: [(&str, &str); 4] = [
    (
        r#"src.pod contains "frontend""#,
        "contains(src_pod_name, 'frontend')",
    ),
    (r#"dst.svc=="frontend""#, "dst_service_name = 'frontend'"),
    ("response.status==503", "status_code = 503"),
    (
        r#"request.path=="/api/v1/checkout" and response.status==503"#,
        "path = '/api/v1/checkout' AND status_code = 503",
    ),
];
const PERCENTILE_KFL: &str = "http";
const PERCENTILE_SQL: &str = "SELECT path, count(*) AS n, quantile_cont(elapsed_time, 0.5) AS p50, \
     quantile_cont(elapsed_time, 0.9) AS p90, quantile_cont(elapsed_time, 0.99) AS p99 \
     FROM calls WHERE protocol IN ('HTTP','HTTP/2','gRPC') GROUP BY path ORDER BY path";

fn make_table(path: &Path, n: usize) -> anyhow::Result<()> {
    let marker = path.with_extension("rows");
    if path.is_file() && std::fs::read_to_string(&marker).ok().as_deref() == Some(&n.to_string()) {
        println!("reusing {} ({n} calls)", path.display());
        return Ok(());
    }
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let bar = indicatif::ProgressBar::new(n as u64).with_message("generating synthetic calls");
    let mut rng = Rng::new(42);
    let mut w = TableWriter::new(Table::Calls, path);
    let shop = Shop::default();
    let start = 1_795_514_400_000_000_000i64;
    let chunk = 100_000;
    let mut done = 0;
    while done < n {
        let k = chunk.min(n - done);
        let rows = calls(
            &mut rng,
            k,
            start + done as i64 * 1_000_000,
            1 + done as u64 / 3,
        );
        w.write(&calls_batch("node-1", "ebpf", &rows, &shop)?)?;
        done += k;
        bar.set_position(done as u64);
    }
    w.finish()?;
    bar.finish_and_clear();
    std::fs::write(&marker, n.to_string())?;
    Ok(())
}

/// Best wall time of `runs` runs (after one warm-up) and the last result.
async fn best<T, F, Fut>(runs: usize, mut f: F) -> anyhow::Result<(f64, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut last = f().await?;
    let mut best = f64::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        last = f().await?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok((best, last))
}

async fn remora_count(ctx: &datafusion::prelude::SessionContext, kfl: &str) -> anyhow::Result<u64> {
    let (df, _) = query::filtered(ctx, Table::Calls, kfl, &CompileOptions::default()).await?;
    Ok(df.count().await? as u64)
}

/// Per path: count, p50, p90, p99 (µs), sorted by path.
type Percentiles = Vec<(String, i64, f64, f64, f64)>;

async fn remora_percentiles(
    ctx: &datafusion::prelude::SessionContext,
) -> anyhow::Result<Percentiles> {
    let (df, _) = query::filtered(
        ctx,
        Table::Calls,
        PERCENTILE_KFL,
        &CompileOptions::default(),
    )
    .await?;
    let p = |q: f64| percentile_cont(col("elapsed_time").sort(true, false), lit(q));
    let batches = df
        .aggregate(
            vec![col("path")],
            vec![
                count(lit(1)).alias("n"),
                p(0.5).alias("p50"),
                p(0.9).alias("p90"),
                p(0.99).alias("p99"),
            ],
        )?
        .sort(vec![col("path").sort(true, false)])?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in batches {
        let paths = cast(b.column(0), &DataType::Utf8)?;
        let paths = paths.as_string::<i32>();
        let n = cast(b.column(1), &DataType::Int64)?;
        let n = n.as_primitive::<Int64Type>();
        let qs: Vec<_> = (2..5)
            .map(|i| cast(b.column(i), &DataType::Float64))
            .collect::<Result<_, _>>()?;
        for r in 0..b.num_rows() {
            let q = |i: usize| qs[i].as_primitive::<Float64Type>().value(r);
            out.push((paths.value(r).to_owned(), n.value(r), q(0), q(1), q(2)));
        }
    }
    Ok(out)
}

/// DuckDB's answers and best times, from one Python process.
fn duckdb(file: &Path, runs: usize) -> anyhow::Result<serde_json::Value> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if !python.is_file() {
        bail!("{} is missing: run `cargo xtask setup`", python.display());
    }
    let script = r#"
import duckdb, json, sys, time
req = json.load(sys.stdin)
con = duckdb.connect()
con.execute("SET threads = 2")
con.execute(f"CREATE VIEW calls AS SELECT * FROM read_parquet('{req['file']}')")
def best(sql):
    rows = con.execute(sql).fetchall()
    t = 1e9
    for _ in range(req["runs"]):
        s = time.perf_counter()
        rows = con.execute(sql).fetchall()
        t = min(t, time.perf_counter() - s)
    return t, rows
out = {"counts": [], "percentiles": None}
for where in req["filters"]:
    t, rows = best(f"SELECT count(*) FROM calls WHERE {where}")
    out["counts"].append([t, rows[0][0]])
t, rows = best(req["percentiles"])
out["percentiles"] = [t, [list(r) for r in rows]]
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting DuckDB")?;
    let req = serde_json::json!({
        "file": file.to_string_lossy(),
        "runs": runs,
        "filters": FILTERS.iter().map(|(_, sql)| *sql).collect::<Vec<_>>(),
        "percentiles": PERCENTILE_SQL,
    });
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(req.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("DuckDB failed");
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn compile_micros() -> anyhow::Result<Vec<(String, f64)>> {
    let schema = remora_kfl::catalog::schema(Table::Calls);
    let options = CompileOptions::default();
    let mut out = Vec::new();
    for kfl in FILTERS.iter().map(|(k, _)| *k).chain([
        PERCENTILE_KFL,
        r#"http && (status_code >= 500 || elapsed_time > 1000000) && request.headers["x-request-id"] != "" && timestamp > now() - duration("5m")"#,
    ]) {
        let n = 2000;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(remora_kfl::compile(kfl, Table::Calls, &schema, &options)?);
        }
        out.push((kfl.to_owned(), t.elapsed().as_secs_f64() * 1e6 / n as f64));
    }
    Ok(out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = args.dir.join("calls.parquet");
    make_table(&file, args.calls)?;
    let size = std::fs::metadata(&file)?.len();
    println!(
        "table: {} calls, {:.1} MiB of Parquet ({})",
        args.calls,
        size as f64 / 1048576.0,
        file.display()
    );

    if args.latency_only {
        api_latency(&file, 1, args.requests * 4).await?;
        return api_latency(&file, args.clients, args.requests).await;
    }
    let ctx = query::session();
    query::register(&ctx, Table::Calls, &file).await?;
    println!("running DuckDB ...");
    let duck = duckdb(&file, args.runs)?;
    println!("running Remora ...");
    let mut rows = Vec::new();
    let mut worst: f64 = 0.0;
    for (i, (kfl, _)) in FILTERS.iter().enumerate() {
        let (t, n) = best(args.runs, || remora_count(&ctx, kfl)).await?;
        let d = &duck["counts"][i];
        let (dt, dn) = (
            d[0].as_f64().unwrap_or(f64::NAN),
            d[1].as_u64().unwrap_or(u64::MAX),
        );
        if n != dn {
            bail!("`{kfl}`: Remora counts {n}, DuckDB {dn}");
        }
        worst = worst.max(t / dt);
        rows.push((kfl.to_string(), n, t, dt));
    }
    let (t, p) = best(args.runs, || remora_percentiles(&ctx)).await?;
    let d = &duck["percentiles"];
    let dt = d[0].as_f64().unwrap_or(f64::NAN);
    let drows = d[1].as_array().cloned().unwrap_or_default();
    if drows.len() != p.len() {
        bail!(
            "percentiles: Remora has {} paths, DuckDB {}",
            p.len(),
            drows.len()
        );
    }
    for (r, dr) in p.iter().zip(&drows) {
        let close = |a: f64, b: &serde_json::Value| {
            (a - b.as_f64().unwrap_or(f64::NAN)).abs() <= 1e-6 * a.abs().max(1.0)
        };
        if dr[0].as_str() != Some(r.0.as_str())
            || dr[1].as_i64() != Some(r.1)
            || !close(r.2, &dr[2])
            || !close(r.3, &dr[3])
            || !close(r.4, &dr[4])
        {
            bail!("percentiles differ for {}: Remora {r:?}, DuckDB {dr}", r.0);
        }
    }
    worst = worst.max(t / dt);
    rows.push((
        format!("P50/P90/P99 by path where `{PERCENTILE_KFL}`"),
        p.len() as u64,
        t,
        dt,
    ));

    println!("\n| query | rows | Remora s | DuckDB s | Remora/DuckDB |\n|---|---|---|---|---|");
    for (q, n, t, dt) in &rows {
        println!("| `{q}` | {n} | {t:.3} | {dt:.3} | {:.2}x |", t / dt);
    }
    println!("\nworst ratio {worst:.2}x (target: at most 1.5x); answers identical in both engines");
    println!("\n| filter | compile µs |\n|---|---|");
    let mut slowest: f64 = 0.0;
    for (kfl, us) in compile_micros()? {
        slowest = slowest.max(us);
        println!("| `{kfl}` | {us:.1} |");
    }
    println!("\nslowest compile {slowest:.1} µs (target: under 1000 µs)");
    if !args.queries_only {
        // One client (targets: p50 ≤ 150 ms, p99 ≤ 400 ms), then the concurrent clients
        // (target: p50 ≤ 400 ms).
        api_latency(&file, 1, args.requests * 4).await?;
        api_latency(&file, args.clients, args.requests).await?;
        snapshot_time(&file, args.snapshot_gib).await?;
    }
    Ok(())
}

/// A data directory whose only db, `bench/d1`, is the benchmark's calls table (hard link).
fn bench_data_dir(file: &Path) -> anyhow::Result<tempfile::TempDir> {
    let data = tempfile::tempdir_in(file.parent().unwrap_or(Path::new(".")))?;
    let db = data.path().join("dissections/bench/d1");
    std::fs::create_dir_all(&db)?;
    std::fs::hard_link(file, db.join("calls.parquet"))
        .or_else(|_| std::fs::copy(file, db.join("calls.parquet")).map(|_| ()))?;
    let status = serde_json::json!({
        "snapshot_name": "bench", "dissection_name": "d1", "db": "bench/d1", "status": "completed",
        "progress": 100.0, "packets_processed": 0, "packets_total": 0, "calls_found": 0,
        "started_at": 0, "finished_at": 0
    });
    std::fs::write(db.join("status.json"), status.to_string())?;
    Ok(data)
}

/// `/mcp/calls` latency over HTTP, `clients` at once, each sending `requests` seed queries.
async fn api_latency(file: &Path, clients: usize, requests: usize) -> anyhow::Result<()> {
    let data = bench_data_dir(file)?;
    let state = remora_analyzer::api::AnalyzerState::open(
        data.path(),
        "bench-token".into(),
        std::sync::Arc::new(remora_analyzer::services::workloads::NoWorkloads),
        1,
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server =
        tokio::spawn(
            async move { axum::serve(listener, remora_analyzer::api::router(state)).await },
        );
    let urls: Vec<String> = FILTERS
        .iter()
        .map(|(kfl, _)| {
            format!(
                "http://{addr}/mcp/calls?db=bench%2Fd1&limit=100&kfl={}",
                remora_analyzer::cli::client::encode(kfl)
            )
        })
        .collect();
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let urls = urls.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<f64>> {
                let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
                let mut times = Vec::new();
                for i in 0..requests {
                    let url = &urls[(c + i) % urls.len()];
                    let t = Instant::now();
                    let mut r = agent
                        .get(url)
                        .header("Authorization", "Bearer bench-token")
                        .call()?;
                    let body = r.body_mut().read_to_string()?;
                    anyhow::ensure!(body.contains("\"total\""), "bad answer: {body}");
                    times.push(t.elapsed().as_secs_f64());
                }
                Ok(times)
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await??);
    }
    let wall = started.elapsed().as_secs_f64();
    server.abort();
    all.sort_by(f64::total_cmp);
    let q = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "\n/mcp/calls over HTTP, {clients} clients x {requests} requests (seed filters, limit 100, with total): p50 {:.3} s, p90 {:.3} s, p99 {:.3} s, {:.1} requests/s",
        q(0.5),
        q(0.9),
        q(0.99),
        all.len() as f64 / wall
    );
    Ok(())
}

/// Time to snapshot `gib` GiB of slices (64 MiB slice files, hard-linked): O(files).
async fn snapshot_time(file: &Path, gib: u64) -> anyhow::Result<()> {
    let data = tempfile::tempdir_in(file.parent().unwrap_or(Path::new(".")))?;
    let dir = data.path().join("capture/node-1/packets");
    std::fs::create_dir_all(&dir)?;
    let slice_bytes = std::fs::metadata(file)?.len().max(1);
    let n = (gib * (1 << 30)).div_ceil(slice_bytes);
    let base = 1_795_514_400_000_000_000i64;
    for i in 0..n as i64 {
        let start = base + i * 10_000_000_000;
        std::fs::hard_link(
            file,
            dir.join(format!("{start}-{}.parquet", start + 9_999_999_999)),
        )?;
    }
    let store = remora_analyzer::services::snapshots::SnapshotStore::open(data.path())?;
    let req = remora_analyzer::services::snapshots::CreateRequest {
        name: "bench".into(),
        start: Some(base / 1_000_000),
        end: Some(base / 1_000_000 + n as i64 * 10_000),
        ..Default::default()
    };
    let t = Instant::now();
    store.reserve("bench")?;
    let m = store.build(
        &req,
        base / 1_000_000,
        base / 1_000_000 + n as i64 * 10_000,
        0,
    )?;
    println!(
        "snapshot of {:.2} GiB in {} slice files: {:.3} s",
        m.bytes as f64 / (1u64 << 30) as f64,
        m.files.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
