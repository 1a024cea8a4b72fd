//! `remora`: Remora's command line. `remora up` runs the embedded default on this machine.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use remora_agent::cli::RecordArgs;
use remora_analyzer::client::Connection;

mod allocator;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Remora: an eBPF network recorder an AI assistant can question.
#[derive(Parser, Debug)]
#[command(name = "remora", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter, e.g. info or remora_agent=debug
    #[arg(long, global = true, default_value = "info", env = "REMORA_LOG")]
    log: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Snapshots on a running analyzer: create, list, get, delete.
    Snapshot {
        #[command(subcommand)]
        action: SnapshotCmd,
        #[command(flatten)]
        conn: Connection,
    },
    /// Delayed dissections of snapshots: start, status, stop.
    Dissection {
        #[command(subcommand)]
        action: DissectionCmd,
        #[command(flatten)]
        conn: Connection,
    },
    /// API calls of a dissection, filtered with KFL (table output).
    Calls {
        /// `<snapshot>/<dissection>`.
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
        #[command(flatten)]
        conn: Connection,
    },
    /// MCP over stdio for AI assistants: tools calling a running analyzer (`--url`), or a
    /// data directory opened here (`--data-dir`).
    Mcp {
        /// A running analyzer (default when --data-dir is not given).
        #[arg(long, default_value = "http://127.0.0.1:8898")]
        url: String,
        /// File with the analyzer's bearer token.
        #[arg(long, default_value = "./remora-data/token")]
        token_file: std::path::PathBuf,
        /// Open this data directory instead of calling a running analyzer.
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Print the JSON snippet MCP clients (Claude Desktop/Code, Cursor) expect, and exit.
        #[arg(long)]
        print_config: bool,
        #[command(flatten)]
        redaction: Redaction,
    },
    /// Count, error rate and latency percentiles of a dissection's calls, optionally per group.
    Stats {
        /// `<snapshot>/<dissection>`.
        #[arg(long)]
        db: String,
        /// KFL filter.
        #[arg(long, default_value = "")]
        kfl: String,
        /// path, dst.service.name, src.pod.name, status_code, minute, ...
        #[arg(long)]
        group_by: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Dissect a pcap or pcapng file into calls.parquet and conns.parquet.
    Dissect {
        /// The capture file.
        capture: std::path::PathBuf,
        /// Output directory.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Node name written into the rows.
        #[arg(long, default_value = "pcap")]
        node: String,
    },
    /// Record this machine and serve the API on 127.0.0.1:8898 (data in ./remora-data).
    Up {
        #[command(flatten)]
        record: RecordArgs,
        /// Which pod/service/namespace each address is (JSON array of {ip, pod, namespace,
        /// service}); without Kubernetes this is how `src.pod`/`dst.svc` filters get names.
        #[arg(long)]
        workloads: Option<std::path::PathBuf>,
        #[command(flatten)]
        redaction: Redaction,
    },
}

/// What MCP results mask.
#[derive(clap::Args, Debug, Clone)]
struct Redaction {
    /// Let secrets (authorization, cookie, set-cookie, x-api-key, proxy-authorization header
    /// values and --redact-pattern matches) reach MCP clients unmasked.
    #[arg(long)]
    no_redact: bool,
    /// Another header whose value MCP results mask (repeatable).
    #[arg(long = "redact-header")]
    headers: Vec<String>,
    /// A regex (RE2 syntax) whose matches are masked in every text MCP returns (repeatable).
    #[arg(long = "redact-pattern")]
    patterns: Vec<String>,
}

impl Redaction {
    fn redactor(&self) -> anyhow::Result<Option<remora_analyzer::mcp::Redactor>> {
        if self.no_redact {
            return Ok(None);
        }
        remora_analyzer::mcp::Redactor::new(&self.headers, &self.patterns)
            .map(Some)
            .map_err(anyhow::Error::msg)
    }
}

#[derive(Subcommand, Debug)]
enum SnapshotCmd {
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
}

#[derive(Subcommand, Debug)]
enum DissectionCmd {
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

fn print(
    conn: &Connection,
    v: &serde_json::Value,
    text: impl FnOnce(&serde_json::Value) -> String,
) {
    if conn.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{}", text(v));
    }
}

fn client(command: Command) -> anyhow::Result<()> {
    use remora_analyzer::client::{encode, table};
    use serde_json::json;
    let list = |v: &serde_json::Value, key: &str| v[key].as_array().cloned().unwrap_or_default();
    match command {
        Command::Snapshot { action, conn } => match action {
            SnapshotCmd::Create {
                name,
                duration,
                start,
                end,
            } => {
                let body = json!({"name": name, "duration": duration, "start": start, "end": end});
                conn.call("POST", "/mcp/snapshots", Some(&body))?;
                let path = format!("/mcp/snapshots/{}", encode(&name));
                let v = loop {
                    let v = conn.call("GET", &path, None)?;
                    if v["status"] != "in_progress" {
                        break v;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                };
                print(&conn, &v, |v| {
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
                let v = conn.call("GET", "/mcp/snapshots", None)?;
                print(&conn, &v, |v| {
                    table(
                        &list(v, "snapshots"),
                        &["name", "status", "packets", "bytes", "start", "end"],
                    )
                });
            }
            SnapshotCmd::Get { name } => {
                let v = conn.call("GET", &format!("/mcp/snapshots/{}", encode(&name)), None)?;
                print(&conn, &v, |v| {
                    serde_json::to_string_pretty(v).unwrap_or_default()
                });
            }
            SnapshotCmd::Delete { name } => {
                let v = conn.call("DELETE", &format!("/mcp/snapshots/{}", encode(&name)), None)?;
                print(&conn, &v, |_| format!("deleted {name}"));
            }
        },
        Command::Dissection { action, conn } => match action {
            DissectionCmd::Start {
                snapshot,
                name,
                no_wait,
            } => {
                let v = conn.call(
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
                        let v = conn.call("GET", &path, None)?;
                        bar.set_position(v["progress"].as_f64().unwrap_or(0.0) as u64);
                        bar.set_message(format!("{} calls", v["calls_found"]));
                        if v["status"] != "pending" && v["status"] != "running" {
                            bar.finish_and_clear();
                            break v;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(250));
                    }
                };
                print(&conn, &v, |v| {
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
                let v = conn.call("GET", &path, None)?;
                let rows = if v["dissections"].is_array() {
                    list(&v, "dissections")
                } else {
                    vec![v.clone()]
                };
                print(&conn, &v, |_| {
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
                let v = conn.call(
                    "POST",
                    &format!(
                        "/mcp/dissections/{}/{}/stop",
                        encode(&snapshot),
                        encode(&name)
                    ),
                    None,
                )?;
                print(&conn, &v, |v| {
                    format!(
                        "{} is {}",
                        v["db"].as_str().unwrap_or(""),
                        v["status"].as_str().unwrap_or("")
                    )
                });
            }
        },
        Command::Calls {
            db,
            kfl,
            limit,
            explain,
            conn,
        } => {
            let v = conn.call(
                "GET",
                &format!(
                    "/mcp/calls?db={}&kfl={}&limit={limit}&explain={explain}",
                    encode(&db),
                    encode(&kfl)
                ),
                None,
            )?;
            print(&conn, &v, |v| {
                let mut out = table(
                    &list(v, "calls"),
                    &[
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
                    ],
                );
                out.push_str(&format!(
                    "\n{} of {} calls",
                    list(v, "calls").len(),
                    v["total"]
                ));
                if let Some(sql) = v["explain"].as_str() {
                    out.push_str(&format!("\nSQL: {sql}"));
                }
                out
            });
        }
        Command::Stats {
            db,
            kfl,
            group_by,
            conn,
        } => {
            let mut path = format!("/mcp/stats?db={}&kfl={}", encode(&db), encode(&kfl));
            if let Some(g) = &group_by {
                path.push_str(&format!("&group_by={}", encode(g)));
            }
            let v = conn.call("GET", &path, None)?;
            print(&conn, &v, |v| {
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
        }
        _ => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    remora_agent::cli::init_logging(&cli.log);
    match cli.command {
        c @ (Command::Snapshot { .. }
        | Command::Dissection { .. }
        | Command::Calls { .. }
        | Command::Stats { .. }) => {
            // Blocking HTTP client: off the async runtime's workers.
            tokio::task::spawn_blocking(move || client(c)).await??;
        }
        Command::Mcp {
            url,
            token_file,
            data_dir,
            print_config,
            redaction,
        } => {
            let redactor = redaction.redactor()?;
            let token_path = std::path::absolute(&token_file).unwrap_or(token_file.clone());
            if print_config {
                let exe = std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "remora".into());
                let config = remora_analyzer::mcp::client_config(
                    &exe,
                    &url,
                    &token_path.display().to_string(),
                );
                println!("{}", serde_json::to_string_pretty(&config)?);
                return Ok(());
            }
            let server = match data_dir {
                Some(dir) => {
                    let token = remora_agent::auth::load_or_create_token(&dir.join("token"))
                        .with_context(|| format!("reading {}", dir.join("token").display()))?;
                    let state = remora_analyzer::api::AnalyzerState::open(
                        &dir,
                        token.clone(),
                        std::sync::Arc::new(remora_analyzer::rows::NoWorkloads),
                        1,
                    )?;
                    remora_analyzer::mcp::RemoraMcp::new(
                        remora_analyzer::api::router(state),
                        token,
                        redactor.clone(),
                    )
                }
                None => {
                    let token = std::fs::read_to_string(&token_path).with_context(|| {
                        format!(
                            "reading the token from {} (pass --token-file)",
                            token_path.display()
                        )
                    })?;
                    remora_analyzer::mcp::RemoraMcp::remote(
                        url,
                        token.trim().to_owned(),
                        redactor.clone(),
                    )
                }
            };
            remora_analyzer::mcp::serve_stdio(server).await?;
        }
        Command::Dissect { capture, out, node } => {
            allocator::keep_freed_memory();
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let summary =
                remora_analyzer::dissect_cmd::dissect_file(&capture, &out, &node, progress)
                    .with_context(|| format!("dissecting {}", capture.display()))?;
            println!("{summary}");
            println!(
                "wrote {} and {}",
                out.join("calls.parquet").display(),
                out.join("conns.parquet").display()
            );
        }
        Command::Up {
            record,
            workloads,
            redaction,
        } => {
            let redactor = redaction.redactor()?;
            let listen_given =
                std::env::args().any(|a| a == "--listen" || a.starts_with("--listen="));
            let config = record
                .to_config()
                .map_err(anyhow::Error::msg)
                .context("invalid flags")?;
            let config = remora_analyzer::up::embedded(config, listen_given);
            remora_agent::store::prepare_dir(&config.data_dir)
                .with_context(|| format!("preparing {}", config.data_dir.display()))?;
            let token = remora_agent::auth::load_or_create_token(&config.token_file)
                .with_context(|| format!("reading {}", config.token_file.display()))?;
            let workloads: std::sync::Arc<dyn remora_analyzer::rows::Resolve + Send + Sync> =
                match &workloads {
                    Some(path) => std::sync::Arc::new(
                        remora_analyzer::workloads::StaticWorkloads::load(path)?,
                    ),
                    None => std::sync::Arc::new(remora_analyzer::rows::NoWorkloads),
                };
            let analyzer =
                remora_analyzer::api::AnalyzerState::open(&config.data_dir, token, workloads, 1)
                    .context("opening the analyzer's store")?;
            let api = remora_analyzer::api::router(analyzer.clone());
            let mcp = remora_analyzer::mcp::service(
                api.clone(),
                analyzer.token.clone(),
                redactor.clone(),
            );
            let routes = api.merge(remora_analyzer::api::with_auth(mcp, analyzer));
            let summary = remora_agent::run_with_routes(
                config,
                routes,
                remora_agent::shutdown_signal(),
                |started| eprintln!("{}", remora_analyzer::up::banner(started)),
            )
            .await
            .context("remora up failed")?;
            eprintln!(
                "remora up: stopped; {} rows in {} slices, {} packets dropped",
                summary.rows_written, summary.slices_written, summary.dropped_packets
            );
        }
    }
    Ok(())
}
