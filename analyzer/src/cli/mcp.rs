//! `remora mcp`: MCP over stdio, answering from a running analyzer (`--url`) or from a data
//! directory opened in this process (`--data-dir`).

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;

use super::{Redaction, client};
use crate::{api, mcp, services::workloads::NoWorkloads};

/// `remora mcp`.
#[derive(clap::Args, Debug)]
pub struct McpArgs {
    /// A running analyzer (default when --data-dir is not given).
    #[arg(long, default_value = "http://127.0.0.1:8898")]
    url: String,
    /// File with the analyzer's bearer token.
    #[arg(long, default_value = "./remora-data/token")]
    token_file: PathBuf,
    /// Open this data directory instead of calling a running analyzer.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print the JSON snippet MCP clients (Claude Desktop/Code, Cursor) expect, and exit.
    #[arg(long)]
    print_config: bool,
    /// What results mask.
    #[command(flatten)]
    redaction: Redaction,
}

/// Serves MCP on stdin/stdout until the client closes it.
pub async fn run(args: McpArgs) -> anyhow::Result<()> {
    let redactor = args.redaction.redactor()?;
    let token_path = std::path::absolute(&args.token_file).unwrap_or(args.token_file.clone());
    if args.print_config {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "remora".into());
        let config = mcp::client_config(&exe, &args.url, &token_path.display().to_string());
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    let server = match args.data_dir {
        Some(dir) => {
            let token_file = dir.join("token");
            let token = remora_agent::auth::load_or_create_token(&token_file)
                .with_context(|| format!("reading {}", token_file.display()))?;
            let state = api::AnalyzerState::open(&dir, token.clone(), Arc::new(NoWorkloads), 1)?;
            state.jobs.run_in_processes(super::job_worker::this_worker(
                crate::services::job_process::memory_limit(),
                crate::services::job_process::threads(),
            )?);
            mcp::RemoraMcp::new(api::router(state), token, redactor)
        }
        None => {
            let token = client::read_token(&token_path)?;
            mcp::RemoraMcp::remote(client::Client::new(&args.url, &token), redactor)
        }
    };
    mcp::serve_stdio(server).await
}
