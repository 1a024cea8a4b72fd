//! `remora insights`: one of the seed's analyses of a dissection (retry storms, churn, resets,
//! correlation ids, call nesting, 503 causes, dependencies, journeys, timeline, compare).

use serde_json::Value;

use super::{
    client::{Connection, encode, print, table},
    offline::Target,
};

/// `remora insights`.
#[derive(clap::Args, Debug)]
pub struct InsightsArgs {
    /// retries, churn, resets, correlation, nesting, errors_503, dependencies, journey,
    /// timeline or compare.
    analysis: String,
    /// `<snapshot>/<dissection>` on the analyzer, or a directory `remora dissect --out` wrote.
    #[arg(long)]
    db: String,
    /// KFL filter (over connections for churn and resets, over calls otherwise).
    #[arg(long, default_value = "")]
    kfl: String,
    /// Rows per part.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Further parameters as `key=value` (window_ms, by, resolution, a_start, a_end, b_start,
    /// b_end).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Also print the SQL each part ran.
    #[arg(long)]
    sql: bool,
    /// The analyzer.
    #[command(flatten)]
    conn: Connection,
}

/// Prints the analysis, one table per part.
pub fn run(args: &InsightsArgs) -> anyhow::Result<()> {
    let (target, db) = Target::for_db(&args.conn, &args.db)?;
    let mut path = format!(
        "/mcp/insights?db={}&analysis={}&kfl={}&limit={}&sql={}",
        encode(&db),
        encode(&args.analysis),
        encode(&args.kfl),
        args.limit,
        args.sql
    );
    for p in &args.params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--param takes KEY=VALUE, got `{p}`"))?;
        path.push_str(&format!("&{}={}", encode(k), encode(v)));
    }
    let v = target.call("GET", &path, None)?;
    print(&args.conn, &v, render);
    Ok(())
}

fn render(v: &Value) -> String {
    let mut out = Vec::new();
    let Some(parts) = v.as_object() else {
        return v.to_string();
    };
    for (name, part) in parts {
        match part {
            Value::Array(rows) if rows.first().is_some_and(Value::is_object) => {
                let columns: Vec<&str> = rows[0]
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                out.push(format!("{name}:\n{}", table(rows, &columns)));
            }
            Value::Array(rows) if rows.is_empty() => out.push(format!("{name}: none")),
            other => out.push(format!(
                "{name}: {}",
                other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_owned)
            )),
        }
    }
    out.join("\n")
}
