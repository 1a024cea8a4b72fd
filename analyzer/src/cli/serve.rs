//! `remora serve`: the analyzer alone (no recorder), for a cluster: its snapshots pull every
//! node's slices from the agents' node APIs (`--agents`, or the DaemonSet's pods found with
//! `--agent-selector`), it watches Kubernetes for workload names, and serves the HTTP API and
//! MCP (options shared with `remora up`: `cli::analyzer`).

use std::path::PathBuf;

use anyhow::Context as _;

use crate::api;

/// `remora serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Data directory: snapshots, dissections, the workload history.
    #[arg(long, default_value = "./remora-data", env = "REMORA_DATA_DIR")]
    data_dir: PathBuf,
    /// API and MCP address.
    #[arg(long, default_value = "127.0.0.1:8898", env = "REMORA_LISTEN")]
    listen: std::net::SocketAddr,
    /// Bearer token file, shared with the agents [default: <data-dir>/token, made on first
    /// start].
    #[arg(long, env = "REMORA_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The analyzer's options.
    #[command(flatten)]
    analyzer: super::analyzer::AnalyzerArgs,
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    remora_agent::store::prepare_dir(&args.data_dir)
        .with_context(|| format!("preparing {}", args.data_dir.display()))?;
    let token_file = args
        .token_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("token"));
    let token = remora_agent::auth::load_or_create_token(&token_file)
        .with_context(|| format!("reading {}", token_file.display()))?;
    let (analyzer, routes) = args.analyzer.open(&args.data_dir, token).await?;
    // Here the API itself is behind the token too (`remora up` puts the node API's auth layer
    // over everything).
    let routes = api::with_auth(routes, analyzer);
    let listener = remora_agent::listen::bind(args.listen, remora_agent::listen::BIND_RETRY)
        .await
        .with_context(|| {
            format!(
                "listening on {} (is another analyzer running?)",
                args.listen
            )
        })?;
    eprintln!(
        "remora serve: API on http://{} (bearer token in {}); MCP at /mcp",
        args.listen,
        token_file.display()
    );
    axum::serve(listener, routes)
        .with_graceful_shutdown(remora_agent::shutdown_signal())
        .await
        .context("remora serve failed")?;
    eprintln!("remora serve: stopped");
    Ok(())
}
