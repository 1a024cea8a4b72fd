//! `remora sql`: read-only SQL over a dissection (on the analyzer, or a directory `remora
//! dissect` wrote) as a table, JSON, CSV or Arrow IPC.

use std::{io::Write as _, path::PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{
    client::{Connection, table},
    offline::Target,
};

/// Output formats of `remora sql`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// The API's JSON answer.
    Json,
    /// CSV with a header line.
    Csv,
    /// An Arrow IPC stream (write it with --out).
    Arrow,
}

/// `remora sql`.
#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    /// One SELECT, WITH, EXPLAIN or DESCRIBE. Tables: calls, conns, packets, sockets, tls, workloads;
    /// kfl('<filter>') and kfl('conns', '<filter>') are tables too.
    query: String,
    /// `<snapshot>/<dissection>` on the analyzer, or a directory `remora dissect --out` wrote
    /// (queried here, no server needed).
    #[arg(long, required_unless_present = "snapshot")]
    db: Option<String>,
    /// A snapshot on the analyzer without a dissection (tables packets, sockets, tls, workloads).
    #[arg(long, conflicts_with = "db")]
    snapshot: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write the answer to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rows to return at most.
    #[arg(long, default_value_t = 1000)]
    max_rows: usize,
    /// Time limit in milliseconds (default 30000).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Memory limit in MiB (default 1024).
    #[arg(long)]
    memory_mb: Option<usize>,
    /// The analyzer.
    #[command(flatten)]
    conn: Connection,
}

/// Runs the statement and prints or writes the answer.
pub fn run(args: &SqlArgs) -> anyhow::Result<()> {
    let (target, db) = match &args.db {
        Some(db) => {
            let (t, db) = Target::for_db(&args.conn, db)?;
            (t, Some(db))
        }
        None => (Target::Remote(args.conn.client()?), None),
    };
    let format = match (args.format, args.conn.json) {
        (Format::Table, true) => Format::Json,
        (f, _) => f,
    };
    if format == Format::Arrow && args.out.is_none() {
        anyhow::bail!("Arrow IPC is binary: give --out FILE (or use --format csv|json|table)");
    }
    let body = json!({
        "db": db,
        "snapshot": args.snapshot,
        "query": args.query,
        "format": match format { Format::Csv => "csv", Format::Arrow => "arrow", _ => "json" },
        "max_rows": args.max_rows,
        "timeout_ms": args.timeout_ms,
        "memory_mb": args.memory_mb,
    });
    let mut out: Box<dyn std::io::Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    match format {
        Format::Csv | Format::Arrow => {
            target.post_download("/sql", &body, &mut out)?;
        }
        Format::Json => {
            let v = target.call("POST", "/sql", Some(&body))?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        Format::Table => {
            let v = target.call("POST", "/sql", Some(&body))?;
            writeln!(out, "{}", render(&v))?;
        }
    }
    out.flush().context("writing the answer")?;
    Ok(())
}

/// The JSON answer as a text table with a summary line.
fn render(v: &Value) -> String {
    let columns: Vec<&str> = v["columns"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    // EXPLAIN: plans are multi-line texts, shown whole.
    if columns == ["plan_type", "plan"] {
        return rows
            .iter()
            .map(|r| {
                format!(
                    "{}:\n{}",
                    r["plan_type"].as_str().unwrap_or(""),
                    r["plan"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    let mut out = table(&rows, &columns);
    out.push_str(&format!(
        "\n{} rows{} in {} ms",
        v["row_count"],
        if v["truncated"] == true {
            " (more matched: raise --max-rows or aggregate)"
        } else {
            ""
        },
        v["elapsed_ms"]
    ));
    out
}
