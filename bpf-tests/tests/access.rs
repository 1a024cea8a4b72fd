//! Access: `remora up` serves the node API, the analyzer's routes and `/mcp` from one router
//! under one authentication layer. Every route in the route tables (both prefixes), `/mcp`,
//! `/metrics`, `/openapi.json` and an unknown path answer 401 without the token and with a
//! wrong one; with the token, the same server answers.

use remora_bpf_tests::{
    netns::{IF_A, VethPair},
    proc::AgentProc,
    require_root, require_tool,
};

#[test]
fn every_route_refuses_a_missing_or_wrong_token() {
    require_root();
    require_tool("curl");
    let pair = VethPair::new("acc");
    let tmp = tempfile::tempdir().expect("tempdir");
    let agent = AgentProc::start_up(
        &pair.a,
        &tmp.path().join("data"),
        18851,
        &["--interfaces", IF_A],
    );

    // The analyzer's route table, as its OpenAPI document gives it (read with the token),
    // under both prefixes; then the node API's routes (`agent/src/node_api.rs`).
    let token = std::fs::read_to_string(tmp.path().join("data/token")).expect("token file");
    let (status, doc) = agent.request("GET", "/openapi.json", None, Some(token.trim()));
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&doc).expect("openapi json");
    let mut routes: Vec<(String, String)> = Vec::new();
    for (path, methods) in doc["paths"].as_object().expect("paths") {
        for method in methods.as_object().expect("methods").keys() {
            let method = method.to_uppercase();
            routes.push((method.clone(), path.clone()));
            routes.push((method, format!("/api{path}")));
        }
    }
    for (method, path) in [
        ("GET", "/v1/health"),
        ("GET", "/v1/boundaries"),
        ("GET", "/v1/slices"),
        ("GET", "/v1/slices/{kind}/{file}"),
    ] {
        routes.push((method.to_owned(), path.to_owned()));
    }
    for extra in [
        ("POST", "/mcp"),
        ("GET", "/mcp"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/no/such/route"),
        ("DELETE", "/v1/health"),
    ] {
        routes.push((extra.0.to_owned(), extra.1.to_owned()));
    }
    assert!(routes.len() > 40, "{} routes", routes.len());
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
    for (method, path) in &routes {
        // Path parameters get plausible values; `{*id}` takes any rest.
        let concrete = path
            .replace("{kind}", "packets")
            .replace("{file}", "x.parquet")
            .replace("{name}", "s")
            .replace("{snapshot}", "s")
            .replace("{*id}", "test/1/0")
            .replace("{id}", "test/1/0");
        let with_body = (method == "POST").then_some(body);
        for token in [None, Some("wrong-token")] {
            let (status, answer) = agent.request(method, &concrete, with_body, token);
            assert_eq!(
                status,
                401,
                "{method} {concrete} with token {token:?} answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
    }
    // The same server answers with the token: the 401s are about the token.
    let (status, _) = agent.api("/v1/health");
    assert_eq!(status, 200);
    let (status, _) = agent.request("GET", "/mcp/snapshots", None, Some(token.trim()));
    assert_eq!(status, 200);
    agent.stop();
}
