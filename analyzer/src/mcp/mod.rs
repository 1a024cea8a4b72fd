//! Remora's MCP server (rmcp): the seed's flow as tools for an AI assistant, over Streamable
//! HTTP at `/mcp` (same token as the API).
//!
//! Each tool is one request to the analyzer's own HTTP routes, made in-process (no socket), so
//! a tool and its endpoint can never disagree: same validation, same errors, same JSON. Errors
//! come back as `isError` results whose text says what to do next. Everything leaving through
//! MCP is redacted first ([`redact`]).

mod bound;
mod redact;
mod tools;

use std::sync::Arc;

use axum::Router;
use rmcp::{
    ErrorData as McpError,
    handler::server::ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
        GetPromptRequestParams, GetPromptResponse, GetPromptResult, InitializeResult,
        ListPromptsResult, ListToolsResult, PaginatedRequestParams, Prompt, PromptArgument,
        PromptMessage, Role, ServerCapabilities, ServerConfig,
    },
    service::{RequestContext, RoleServer},
};
use serde_json::{Map, Value, json};

pub use redact::{REDACTED_HEADERS, Redactor, redact};

use crate::cli::client::{Client, ClientError};

/// How the model should work, sent at initialization.
const INSTRUCTIONS: &str = "Remora records all network traffic of the cluster continuously. To answer \
questions about services, follow this order: 1) get_data_boundaries to see the recorded window; \
2) create_snapshot (name + duration such as \"15m\") and poll get_snapshot until status is \
completed; 3) start_snapshot_dissection and poll get_snapshot_dissection_status until completed; \
4) query the result db \"<snapshot>/<dissection>\" with analyze_calls (one call: error rate, \
latency percentiles, slowest calls, timeline), get_api_stats and list_api_calls, filtering with \
KFL (describe_fields lists every field; e.g. src.pod contains \"frontend\", \
response.status==503, http && elapsed_time > 1000000). Fetch single calls with get_api_call. \
Results are compact JSON; page long lists with cursor. Secrets in headers are redacted.";

/// Where tool requests go.
#[derive(Clone)]
enum Backend {
    /// The analyzer's router in this process, with the token it checks.
    Local { api: Router, token: String },
    /// A running analyzer over HTTP (`remora mcp --url`).
    Remote(Client),
}

/// The MCP service: tools over the analyzer's routes.
#[derive(Clone)]
pub struct RemoraMcp {
    backend: Backend,
    redact: Option<Arc<Redactor>>,
}

impl RemoraMcp {
    /// A server answering through `api` (the analyzer's router, which checks `token`);
    /// `redact` masks secrets in every result (`None`: nothing is masked).
    pub fn new(api: Router, token: String, redact: Option<Redactor>) -> Self {
        let redact = redact.map(Arc::new);
        Self {
            backend: Backend::Local { api, token },
            redact,
        }
    }

    /// A server whose tools call the analyzer `client` reaches (stdio for a remote analyzer).
    pub fn remote(client: Client, redact: Option<Redactor>) -> Self {
        let redact = redact.map(Arc::new);
        Self {
            backend: Backend::Remote(client),
            redact,
        }
    }

    /// Sends one request to the analyzer routes; returns (status, JSON body).
    pub async fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (api, token) = match &self.backend {
            Backend::Local { api, token } => (api, token),
            Backend::Remote(client) => {
                let (client, path) = (client.clone(), path.to_owned());
                let (method, body) = (method.to_owned(), body.cloned());
                let sent =
                    tokio::task::spawn_blocking(move || client.send(&method, &path, body.as_ref()))
                        .await;
                return match sent {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(ClientError::NotJson { status, .. })) => (status, Value::Null),
                    Ok(Err(e)) => (
                        502,
                        json!({"error": {"kind": "unreachable", "message": e.to_string()}}),
                    ),
                    Err(e) => (
                        500,
                        json!({"error": {"kind": "internal", "message": e.to_string()}}),
                    ),
                };
            }
        };
        crate::api::call_in_process(api, token, method, path, body).await
    }

    fn finish(&self, mut value: Value, is_error: bool) -> CallToolResult {
        if let Some(r) = &self.redact {
            r.apply(&mut value);
        }
        let text = serde_json::to_string(&value).unwrap_or_default();
        let mut result = if is_error {
            CallToolResult::error(vec![ContentBlock::text(text)])
        } else {
            CallToolResult::success(vec![ContentBlock::text(text)])
        };
        if !is_error && value.is_object() {
            result.structured_content = Some(value);
        }
        result
    }
}

fn prompt(name: &str, description: &str, args: &[(&str, &str, bool)]) -> Prompt {
    let arguments = args
        .iter()
        .map(|(n, d, r)| {
            let mut a = PromptArgument::new(*n);
            a.description = Some((*d).to_owned());
            a.required = Some(*r);
            a
        })
        .collect();
    Prompt::new(name, Some(description), Some(arguments))
}

impl ServerHandler for RemoraMcp {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .build(),
        )
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools::definitions()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = request.arguments.unwrap_or_default();
        let (value, is_error) = tools::call(self, &request.name, &args).await?;
        Ok(self.finish(value, is_error).into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(vec![
            prompt(
                "investigate_errors",
                "Find failing calls of a service and explain them",
                &[
                    ("service", "service or pod name, e.g. frontend", true),
                    ("duration", "how far back, e.g. 15m", false),
                ],
            ),
            prompt(
                "latency_analysis",
                "Latency percentiles of a service per path and peer, and what is slow",
                &[
                    ("service", "service or pod name", true),
                    ("duration", "how far back, e.g. 15m", false),
                ],
            ),
            prompt(
                "trace_request",
                "Follow one request across services by its correlation id",
                &[
                    ("correlation_id", "x-request-id / traceparent value", true),
                    ("duration", "how far back", false),
                ],
            ),
        ]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let args: Map<String, Value> = request.arguments.unwrap_or_default();
        let arg = |k: &str, d: &str| args.get(k).and_then(Value::as_str).unwrap_or(d).to_owned();
        let duration = arg("duration", "15m");
        let steps = format!(
            "1. get_data_boundaries. 2. create_snapshot with a new name and duration \"{duration}\"; poll get_snapshot until completed. \
             3. start_snapshot_dissection; poll get_snapshot_dissection_status until completed. 4. "
        );
        let text = match request.name.as_ref() {
            "investigate_errors" => {
                let s = arg("service", "");
                format!(
                    "{steps}analyze_calls with kfl `src.name contains \"{s}\" or dst.name contains \"{s}\" or dst.svc == \"{s}\"`. \
                     Then list_api_calls with `... and (response.status >= 500 or error_type != \"\")` to read failing calls, \
                     get_api_call on one of them, and explain the cause: which path, which peer, since when (timeline)."
                )
            }
            "latency_analysis" => {
                let s = arg("service", "");
                format!(
                    "{steps}get_api_stats with kfl `dst.svc == \"{s}\" or dst.name contains \"{s}\"` and group_by path, then group_by \
                     src.name, then group_by minute; compare P50/P90/P99; list the slowest calls with analyze_calls and say which \
                     path or peer makes the service slow."
                )
            }
            "trace_request" => {
                let c = arg("correlation_id", "");
                format!(
                    "{steps}list_api_calls with kfl `correlation_id == \"{c}\"` (or request.headers[\"x-request-id\"] == \"{c}\") and \
                     format full; order the calls by timestamp and describe the path of the request from service to service with \
                     each hop's latency and status."
                )
            }
            other => {
                return Err(McpError::invalid_params(
                    format!(
                        "unknown prompt `{other}`; prompts/list shows investigate_errors, latency_analysis, trace_request"
                    ),
                    None,
                ));
            }
        };
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)]).into())
    }
}

/// Serves `server` on stdin/stdout until the client closes them (`remora mcp`).
pub async fn serve_stdio(server: RemoraMcp) -> anyhow::Result<()> {
    use rmcp::ServiceExt as _;
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("MCP over stdio: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| anyhow::anyhow!("MCP over stdio: {e}"))?;
    Ok(())
}

/// The JSON MCP clients (Claude Desktop/Code, Cursor) take to start `remora mcp`.
pub fn client_config(exe: &str, url: &str, token_file: &str) -> Value {
    json!({"mcpServers": {"remora": {
        "command": exe,
        "args": ["mcp", "--url", url, "--token-file", token_file]
    }}})
}

/// The `/mcp` route: Streamable HTTP over `api` (which holds the analyzer state).
pub fn service(api: Router, token: String, redact: Option<Redactor>) -> Router {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    };
    let server = RemoraMcp::new(api, token, redact);
    let mcp = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    Router::new()
        .route_service("/mcp", mcp.clone())
        .route_service("/api/mcp", mcp)
}

#[cfg(test)]
mod tests;
