//! `remora calls` and `remora stats`: a dissection's calls, filtered with KFL, as a table or as
//! numbers.

use serde_json::json;

use super::{
    client::{Connection, encode, list, print, table},
    offline::Target,
};

/// `remora calls`.
#[derive(clap::Args, Debug)]
pub struct CallsArgs {
    /// `<snapshot>/<dissection>` on the analyzer, or a directory `remora dissect --out` wrote
    /// (queried here, no server needed).
    #[arg(long)]
    db: String,
    /// KFL filter (empty: every call).
    #[arg(long, default_value = "")]
    kfl: String,
    /// Rows to show (at most 1000).
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Show the SQL the filter became.
    #[arg(long)]
    explain: bool,
    /// The analyzer.
    #[command(flatten)]
    conn: Connection,
}

/// `remora stats`.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// `<snapshot>/<dissection>` on the analyzer, or a directory `remora dissect --out` wrote.
    #[arg(long)]
    db: String,
    /// KFL filter.
    #[arg(long, default_value = "")]
    kfl: String,
    /// path, dst.service.name, src.pod.name, status_code, minute, ...
    #[arg(long)]
    group_by: Option<String>,
    /// The analyzer.
    #[command(flatten)]
    conn: Connection,
}

/// The columns `remora calls` shows.
const CALL_COLUMNS: [&str; 11] = [
    "timestamp",
    "protocol",
    "src.name",
    "src.ip",
    "dst.name",
    "dst.ip",
    "method",
    "path",
    "status_code",
    "elapsed_time",
    "error_type",
];

/// Prints one page of calls.
pub fn calls(args: &CallsArgs) -> anyhow::Result<()> {
    let (target, db) = Target::for_db(&args.conn, &args.db)?;
    let path = format!(
        "/mcp/calls?db={}&kfl={}&limit={}&explain={}",
        encode(&db),
        encode(&args.kfl),
        args.limit,
        args.explain
    );
    let v = target.call("GET", &path, None)?;
    print(&args.conn, &v, |v| {
        let calls = list(v, "calls");
        let mut out = table(&calls, &CALL_COLUMNS);
        out.push_str(&format!("\n{} of {} calls", calls.len(), v["total"]));
        if let Some(sql) = v["explain"].as_str() {
            out.push_str(&format!("\nSQL: {sql}"));
        }
        out
    });
    Ok(())
}

/// Prints the statistics of the matching calls, overall and per group.
pub fn stats(args: &StatsArgs) -> anyhow::Result<()> {
    let (target, db) = Target::for_db(&args.conn, &args.db)?;
    let mut path = format!("/mcp/stats?db={}&kfl={}", encode(&db), encode(&args.kfl));
    if let Some(g) = &args.group_by {
        path.push_str(&format!("&group_by={}", encode(g)));
    }
    let v = target.call("GET", &path, None)?;
    print(&args.conn, &v, |v| {
        let mut out = format!(
            "{} calls, {} errors ({:.2} %), latency µs p50 {} p90 {} p99 {}, status {}",
            v["count"],
            v["errors"],
            v["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
            v["latency_us"]["p50"],
            v["latency_us"]["p90"],
            v["latency_us"]["p99"],
            v["status"]
        );
        if v["groups"].is_array() {
            let rows: Vec<serde_json::Value> = list(v, "groups")
                .into_iter()
                .map(|g| {
                    json!({"key": g["key"], "count": g["count"], "errors": g["errors"],
                    "error_rate": g["error_rate"], "p50_us": g["latency_us"]["p50"],
                    "p90_us": g["latency_us"]["p90"], "p99_us": g["latency_us"]["p99"]})
                })
                .collect();
            out.push('\n');
            out.push_str(&table(
                &rows,
                &[
                    "key",
                    "count",
                    "errors",
                    "error_rate",
                    "p50_us",
                    "p90_us",
                    "p99_us",
                ],
            ));
        }
        out
    });
    Ok(())
}
