//! `remora`: Remora's command line. `remora up` runs the embedded default on this machine; the
//! subcommands live in [`remora_analyzer::cli`].

use anyhow::Context as _;
use clap::Parser as _;
use remora_analyzer::cli::Cli;

// mimalloc, or jemalloc for the dissection commands (`remora_analyzer::allocator` says why);
// the `system-allocator` feature leaves the C library's, for heap profilers that hook `malloc`
// (heaptrack, valgrind).
#[cfg(not(feature = "system-allocator"))]
remora_analyzer::global_allocator!();

fn main() -> anyhow::Result<()> {
    // What Remora writes (slices, tables, snapshots, exports) holds captured payload.
    remora_agent::store::private_umask();
    let cli = Cli::parse();
    remora_agent::flags::init_logging(&cli.log);
    // `remora dissect` is a batch command on threads of its own: without a runtime, no idle
    // runtime threads beside its workers.
    if let remora_analyzer::cli::Command::Dissect(args) = &cli.command {
        return remora_analyzer::cli::dissect::run(args);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(remora_analyzer::cli::run(cli.command))
}
