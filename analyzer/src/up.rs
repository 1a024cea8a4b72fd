//! `remora up`: everything on one machine: the recorder of every interface and the analyzer
//! (snapshots, dissections, KFL queries), both served on the embedded default address.

use std::net::SocketAddr;

use remora_agent::{AgentConfig, Started};

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
