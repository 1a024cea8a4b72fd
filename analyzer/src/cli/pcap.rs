//! `remora pcap`: a snapshot's packets as a pcapng file, from a running analyzer.

use std::path::PathBuf;

use anyhow::Context as _;

use super::client::{Connection, encode};

/// `remora pcap`.
#[derive(clap::Args, Debug)]
pub struct PcapArgs {
    /// Snapshot.
    snapshot: String,
    /// The file to write (pcapng); written beside it and renamed when complete.
    #[arg(long)]
    out: PathBuf,
    /// Only these nodes, comma-separated.
    #[arg(long)]
    nodes: Option<String>,
    /// From this time, unix ms.
    #[arg(long)]
    start: Option<i64>,
    /// Until this time, unix ms (inclusive).
    #[arg(long)]
    end: Option<i64>,
    /// Only packets this capture filter keeps (libpcap syntax, as tcpdump: `tcp port 443`).
    #[arg(long)]
    bpf_filter: Option<String>,
    /// Only the packets of the calls this KFL filter matches: their TCP connections and their
    /// UDP exchanges.
    #[arg(long)]
    kfl: Option<String>,
    /// The dissection `--kfl` runs over (default: the snapshot's only completed one).
    #[arg(long)]
    dissection: Option<String>,
    /// The analyzer.
    #[command(flatten)]
    conn: Connection,
}

/// Downloads the export into `--out`.
pub fn run(args: &PcapArgs) -> anyhow::Result<()> {
    let mut path = format!("/mcp/snapshots/{}/pcap?", encode(&args.snapshot));
    if let Some(n) = &args.nodes {
        path.push_str(&format!("nodes={}&", encode(n)));
    }
    if let Some(s) = args.start {
        path.push_str(&format!("start={s}&"));
    }
    if let Some(e) = args.end {
        path.push_str(&format!("end={e}&"));
    }
    for (key, value) in [
        ("bpf_filter", &args.bpf_filter),
        ("kfl", &args.kfl),
        ("dissection", &args.dissection),
    ] {
        if let Some(v) = value {
            path.push_str(&format!("{key}={}&", encode(v)));
        }
    }
    let tmp = args.out.with_extension("pcapng.tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = args.conn.client()?.download(&path, &mut file);
    let bytes = match result.and_then(|b| Ok(file.sync_all().map(|()| b)?)) {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {} ({bytes} bytes)", args.out.display());
    Ok(())
}
