//! `remora`: Remora's command line. `remora up` runs the embedded default on this machine.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use remora_agent::cli::RecordArgs;

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
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    remora_agent::cli::init_logging(&cli.log);
    match cli.command {
        Command::Dissect { capture, out, node } => {
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
        Command::Up { record, workloads } => {
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
            let routes = remora_analyzer::api::router(analyzer);
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
