//! `remora-agent`: records this node's traffic into Parquet time slices and serves the node API.

use anyhow::Context as _;
use clap::Parser;
use remora_agent::flags::RecordArgs;

/// Remora's node agent.
#[derive(Parser, Debug)]
#[command(
    name = "remora-agent",
    version,
    about = "Record every packet of this node into Parquet time slices (eBPF TC hooks)"
)]
struct Cli {
    #[command(flatten)]
    record: RecordArgs,
    /// Log filter, e.g. info or remora_agent=debug
    #[arg(long, default_value = "info", env = "REMORA_LOG")]
    log: String,
}

/// This binary's allocator is glibc's (`remora up` uses mimalloc, where this would do nothing).
/// The collector thread and the writer thread pass MiB-sized row groups between them; with
/// glibc's default of one heap arena per thread, each arena keeps its own free pieces. Two
/// arenas: peak RSS at full payload 45–46 MiB against 48–52 MiB with the default, at the same
/// CPU (with the earlier, allocation-heavy pipeline the difference was 138 against 111 MiB).
fn limit_malloc_arenas() {
    // SAFETY: mallopt only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    limit_malloc_arenas();
    remora_agent::store::private_umask();
    let cli = Cli::parse();
    remora_agent::flags::init_logging(&cli.log);
    let config = cli
        .record
        .to_config()
        .map_err(anyhow::Error::msg)
        .context("invalid flags")?;
    let summary = remora_agent::run(config, remora_agent::shutdown_signal(), |started| {
        eprintln!(
            "remora-agent: recording {} into {}",
            started.interfaces.join(", "),
            started.packets_dir.display()
        );
        if let Some(api) = started.api {
            eprintln!(
                "remora-agent: node API on http://{api} (token in {})",
                started.token_file.display()
            );
        }
    })
    .await
    .context("remora-agent failed")?;
    eprintln!(
        "remora-agent: stopped; {} rows in {} slices, {} packets dropped",
        summary.rows_written, summary.slices_written, summary.dropped_packets
    );
    Ok(())
}
