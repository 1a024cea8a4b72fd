//! `remora dissection start|status|stop`.

use serde_json::json;

use super::client::{Connection, encode, list, print, table};

/// What to do with dissections.
#[derive(clap::Subcommand, Debug)]
pub enum DissectionCmd {
    /// Start dissecting a snapshot and wait for the result (Ctrl-C leaves it running).
    Start {
        /// Snapshot.
        snapshot: String,
        /// Dissection name.
        name: String,
        /// Return at once instead of waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Status of one dissection, or of all.
    Status {
        /// Snapshot.
        snapshot: Option<String>,
        /// Dissection.
        name: Option<String>,
    },
    /// Stop a running dissection.
    Stop {
        /// Snapshot.
        snapshot: String,
        /// Dissection.
        name: String,
    },
}

/// Runs a dissection subcommand against the analyzer at `conn`.
pub fn run(action: DissectionCmd, conn: &Connection) -> anyhow::Result<()> {
    let client = conn.client()?;
    match action {
        DissectionCmd::Start {
            snapshot,
            name,
            no_wait,
        } => {
            let v = client.call(
                "POST",
                "/mcp/dissections",
                Some(&json!({"snapshot": snapshot, "name": name})),
            )?;
            let path = format!("/mcp/dissections/{}/{}", encode(&snapshot), encode(&name));
            let bar = indicatif::ProgressBar::new(100);
            let v = if no_wait {
                v
            } else {
                loop {
                    let v = client.call("GET", &path, None)?;
                    bar.set_position(v["progress"].as_f64().unwrap_or(0.0) as u64);
                    bar.set_message(format!("{} calls", v["calls_found"]));
                    if v["status"] != "pending" && v["status"] != "running" {
                        bar.finish_and_clear();
                        break v;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
            };
            print(conn, &v, |v| {
                format!(
                    "dissection {} {}: {} packets, {} calls {}{}",
                    v["db"].as_str().unwrap_or(""),
                    v["status"].as_str().unwrap_or(""),
                    v["packets_processed"],
                    v["calls_found"],
                    v["calls_by_protocol"],
                    v["error"]
                        .as_str()
                        .map(|e| format!("\nerror: {e}"))
                        .unwrap_or_default()
                )
            });
        }
        DissectionCmd::Status { snapshot, name } => {
            let path = match (&snapshot, &name) {
                (Some(s), Some(n)) => format!("/mcp/dissections/{}/{}", encode(s), encode(n)),
                (Some(s), None) => format!("/mcp/dissections?snapshot={}", encode(s)),
                _ => "/mcp/dissections".to_owned(),
            };
            let v = client.call("GET", &path, None)?;
            let rows = if v["dissections"].is_array() {
                list(&v, "dissections")
            } else {
                vec![v.clone()]
            };
            print(conn, &v, |_| {
                table(
                    &rows,
                    &[
                        "db",
                        "status",
                        "progress",
                        "packets_processed",
                        "calls_found",
                        "error",
                    ],
                )
            });
        }
        DissectionCmd::Stop { snapshot, name } => {
            let path = format!(
                "/mcp/dissections/{}/{}/stop",
                encode(&snapshot),
                encode(&name)
            );
            let v = client.call("POST", &path, None)?;
            print(conn, &v, |v| {
                format!(
                    "{} is {}",
                    v["db"].as_str().unwrap_or(""),
                    v["status"].as_str().unwrap_or("")
                )
            });
        }
    }
    Ok(())
}
