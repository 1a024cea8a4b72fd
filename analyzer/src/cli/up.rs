//! `remora up`: everything on one machine: the recorder of every interface and the analyzer
//! (snapshots, dissections, KFL queries, MCP), both served on the embedded default address.

use std::net::SocketAddr;

use anyhow::Context as _;
use remora_agent::{AgentConfig, Started, flags::RecordArgs};

/// `remora up`.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// The recorder's flags.
    #[command(flatten)]
    record: RecordArgs,
    /// The analyzer's.
    #[command(flatten)]
    analyzer: super::analyzer::AnalyzerArgs,
}

/// Records and serves until Ctrl-C.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let listen_given = std::env::args().any(|a| a == "--listen" || a.starts_with("--listen="));
    let config = args
        .record
        .to_config()
        .map_err(anyhow::Error::msg)
        .context("invalid flags")?;
    let config = embedded(config, listen_given);
    remora_agent::store::prepare_dir(&config.data_dir)
        .with_context(|| format!("preparing {}", config.data_dir.display()))?;
    let token = remora_agent::auth::load_or_create_token(&config.token_file)
        .with_context(|| format!("reading {}", config.token_file.display()))?;
    let (analyzer, routes) = args.analyzer.open(&config.data_dir, token).await?;
    analyzer.store.set_min_free(config.min_free_bytes);
    let _ = analyzer.local_node.set(config.node.clone());
    analyzer.store.set_local_node(&config.node);
    let summary =
        remora_agent::run_with_routes(config, routes, remora_agent::shutdown_signal(), |started| {
            eprintln!("{}", banner(started))
        })
        .await
        .context("remora up failed")?;
    eprintln!(
        "remora up: stopped; {} rows in {} slices, {} packets dropped",
        summary.rows_written, summary.slices_written, summary.dropped_packets
    );
    Ok(())
}

/// The embedded default API address.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8898);

/// Applies the embedded defaults to a recorder configuration: API on [`DEFAULT_ADDR`] unless the
/// caller chose another address.
pub fn embedded(mut config: AgentConfig, listen_given: bool) -> AgentConfig {
    if !listen_given {
        config.listen = Some(DEFAULT_ADDR);
    }
    config
}

/// What `remora up` prints once it records: where the data goes and a first request to try.
pub fn banner(started: &Started) -> String {
    let mut text = format!(
        "remora up: recording {} into {}\n",
        started.interfaces.join(", "),
        started.packets_dir.display()
    );
    if let Some(api) = started.api {
        let token = started.token_file.display();
        text.push_str(&format!(
            "remora up: API on http://{api} (bearer token in {token})\n\
             try:  curl -s -H \"Authorization: Bearer $(cat {token})\" http://{api}/mcp/data-boundaries\n\
             remora up: MCP for AI assistants at http://{api}/mcp (same token); for stdio clients \
             run `remora mcp --print-config`\n"
        ));
    }
    text.push_str("remora up: stop with Ctrl-C (the open slice is published first)");
    text
}
