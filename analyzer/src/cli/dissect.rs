//! `remora dissect`: a capture file or a directory of packet slices into `calls.parquet` and
//! `conns.parquet`, offline, with a progress bar and a summary.

use std::path::PathBuf;

use anyhow::Context as _;

/// `remora dissect`.
#[derive(clap::Args, Debug)]
pub struct DissectArgs {
    /// The capture file (pcap or pcapng), or a directory of packet slices.
    capture: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Node name written into the rows.
    #[arg(long, default_value = "pcap")]
    node: String,
    /// Threads to dissect with (the rows are the same for any number) [default: every core]
    #[arg(long)]
    threads: Option<usize>,
}

/// Dissects and prints the summary.
pub fn run(args: &DissectArgs) -> anyhow::Result<()> {
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let threads = args
        .threads
        .unwrap_or_else(crate::pipeline::default_threads)
        .max(1);
    super::allocator::for_dissection(threads);
    let summary =
        crate::pipeline::dissect_file(&args.capture, &args.out, &args.node, progress, threads)
            .with_context(|| format!("dissecting {}", args.capture.display()))?;
    println!("{summary}");
    println!(
        "wrote {} and {}",
        args.out.join("calls.parquet").display(),
        args.out.join("conns.parquet").display()
    );
    super::allocator::exit_now()
}
