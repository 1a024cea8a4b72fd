//! `remora flows`: a dissection's TCP connections (any protocol) with what TCP went through on
//! them, as a table, or summed per edge, pod, service, node or minute (`--group-by`).

use serde_json::{Value, json};

use super::{
    client::{Connection, encode, list, print, table},
    offline::Target,
};

/// `remora flows`.
#[derive(clap::Args, Debug)]
pub struct FlowsArgs {
    /// `<snapshot>/<dissection>` on the analyzer, or a directory `remora dissect --out` wrote.
    #[arg(long)]
    db: String,
    /// KFL filter over the connections, e.g. `retransmissions_s2c > 0`, `close == "rst"`.
    #[arg(long, default_value = "")]
    kfl: String,
    /// Sum per group instead of listing: edge, dst, src, pod, namespace, service, node,
    /// minute, or a field (comma-separated for several).
    #[arg(long)]
    group_by: Option<String>,
    /// time, retransmissions, rtt, handshake, bytes or duration (listing only).
    #[arg(long, default_value = "time")]
    order: String,
    /// Rows to show.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// The analyzer.
    #[command(flatten)]
    conn: Connection,
}

const FLOW_COLUMNS: [&str; 12] = [
    "first_ts",
    "src.ip",
    "src.port",
    "dst.name",
    "dst.ip",
    "dst.port",
    "l7",
    "handshake_us",
    "data_rtt_us",
    "retransmissions_s2c",
    "retransmissions_c2s",
    "close",
];

const GROUP_COLUMNS: [&str; 10] = [
    "key",
    "connections",
    "retransmissions",
    "retransmission_rate",
    "out_of_order",
    "lost_segments",
    "zero_windows",
    "dup_acks",
    "resets",
    "rtt_p99_us",
];

/// Prints the flows, or their summary per group.
pub fn run(args: &FlowsArgs) -> anyhow::Result<()> {
    let (target, db) = Target::for_db(&args.conn, &args.db)?;
    if let Some(group) = &args.group_by {
        let path = format!(
            "/mcp/flows/summary?db={}&kfl={}&group_by={}&limit={}",
            encode(&db),
            encode(&args.kfl),
            encode(group),
            args.limit
        );
        let v = target.call("GET", &path, None)?;
        print(&args.conn, &v, |v| {
            let rows: Vec<Value> = list(v, "groups")
                .into_iter()
                .map(|g| {
                    let key = g["key"]
                        .as_object()
                        .map(|k| {
                            k.values()
                                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                                .collect::<Vec<_>>()
                                .join(" | ")
                        })
                        .unwrap_or_default();
                    json!({"key": key, "connections": g["connections"],
                        "retransmissions": g["retransmissions"],
                        "retransmission_rate": g["retransmission_rate"],
                        "out_of_order": g["out_of_order"], "lost_segments": g["lost_segments"],
                        "zero_windows": g["zero_windows"], "dup_acks": g["dup_acks"],
                        "resets": g["resets"]["connections"], "rtt_p99_us": g["data_rtt_us"]["p99"]})
                })
                .collect();
            format!(
                "{} connections, {} retransmissions, closes {}\n{}",
                v["connections"],
                v["retransmissions"],
                v["close"],
                table(&rows, &GROUP_COLUMNS)
            )
        });
    } else {
        let path = format!(
            "/mcp/flows?db={}&kfl={}&order={}&limit={}",
            encode(&db),
            encode(&args.kfl),
            encode(&args.order),
            args.limit
        );
        let v = target.call("GET", &path, None)?;
        print(&args.conn, &v, |v| {
            let flows = list(v, "flows");
            format!(
                "{}\n{} of {} connections",
                table(&flows, &FLOW_COLUMNS),
                flows.len(),
                v["total"]
            )
        });
    }
    Ok(())
}
