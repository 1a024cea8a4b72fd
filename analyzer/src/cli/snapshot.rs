//! `remora snapshot create|list|get|delete|import`.

use serde_json::json;

use super::client::{Connection, encode, list, print, table};

/// What to do with snapshots.
#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Snapshot the last `--duration` (or `--start`..`--end`, unix ms).
    Create {
        /// Name: letters, digits, `.`, `_`, `-`.
        name: String,
        /// How far back from now, e.g. 5m, 1h.
        #[arg(long)]
        duration: Option<String>,
        /// Start, unix ms.
        #[arg(long)]
        start: Option<i64>,
        /// End, unix ms.
        #[arg(long)]
        end: Option<i64>,
    },
    /// Every snapshot.
    List,
    /// One snapshot's status and contents.
    Get {
        /// Name.
        name: String,
    },
    /// Delete a snapshot and its dissections.
    Delete {
        /// Name.
        name: String,
    },
    /// Make a snapshot from a pcap or pcapng file, written straight into the data directory
    /// (a running analyzer on it sees the snapshot at once); then dissect it like any other.
    Import {
        /// The capture file.
        file: std::path::PathBuf,
        /// Snapshot name: letters, digits, `.`, `_`, `-`.
        name: String,
        /// Node name the packets are recorded under.
        #[arg(long, default_value = "pcap")]
        node: String,
        /// The analyzer's data directory.
        #[arg(long, default_value = "./remora-data")]
        data_dir: std::path::PathBuf,
    },
}

/// Runs a snapshot subcommand against the analyzer at `conn`.
pub fn run(action: SnapshotCmd, conn: &Connection) -> anyhow::Result<()> {
    if let SnapshotCmd::Import {
        file,
        name,
        node,
        data_dir,
    } = &action
    {
        return import(conn, file, name, node, data_dir);
    }
    let client = conn.client()?;
    match action {
        SnapshotCmd::Create {
            name,
            duration,
            start,
            end,
        } => {
            let body = json!({"name": name, "duration": duration, "start": start, "end": end});
            client.call("POST", "/mcp/snapshots", Some(&body))?;
            let path = format!("/mcp/snapshots/{}", encode(&name));
            let v = loop {
                let v = client.call("GET", &path, None)?;
                if v["status"] != "in_progress" {
                    break v;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            };
            print(conn, &v, |v| {
                format!(
                    "snapshot {} {}: {} packets, {} bytes, {} slice files",
                    v["name"].as_str().unwrap_or(""),
                    v["status"].as_str().unwrap_or(""),
                    v["packets"],
                    v["bytes"],
                    v["files"]
                )
            });
        }
        SnapshotCmd::List => {
            let v = client.call("GET", "/mcp/snapshots", None)?;
            print(conn, &v, |v| {
                table(
                    &list(v, "snapshots"),
                    &["name", "status", "packets", "bytes", "start", "end"],
                )
            });
        }
        SnapshotCmd::Get { name } => {
            let v = client.call("GET", &format!("/mcp/snapshots/{}", encode(&name)), None)?;
            print(conn, &v, |v| {
                serde_json::to_string_pretty(v).unwrap_or_default()
            });
        }
        SnapshotCmd::Import { .. } => {}
        SnapshotCmd::Delete { name } => {
            let v = client.call("DELETE", &format!("/mcp/snapshots/{}", encode(&name)), None)?;
            print(conn, &v, |_| format!("deleted {name}"));
        }
    }
    Ok(())
}

/// `remora snapshot import`: the capture becomes a completed snapshot in the data directory.
fn import(
    conn: &Connection,
    file: &std::path::Path,
    name: &str,
    node: &str,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let store = crate::services::snapshots::SnapshotStore::open(data_dir)
        .with_context(|| format!("opening the snapshots of {}", data_dir.display()))?;
    let manifest = store
        .import(name, file, node)
        .with_context(|| format!("importing {}", file.display()))?;
    let v = serde_json::to_value(&manifest)?;
    print(conn, &v, |v| {
        format!(
            "snapshot {name} completed: {} packets, {} bytes, {} slice files; next: remora dissection start {name} <name>",
            v["packets"],
            v["bytes"],
            v["files"].as_array().map_or(0, Vec::len)
        )
    });
    Ok(())
}
