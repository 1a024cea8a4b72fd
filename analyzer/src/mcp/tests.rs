//! Every tool's result stays within its byte budget on a db of large calls, and a page cut to
//! fit still lets a client visit every call through `next_cursor`.

use std::{collections::HashSet, sync::Arc};

use remora_dissect::{Call, Endpoint};
use remora_tables::{Table, TableWriter, conns};
use serde_json::{Value, json};

use super::{RemoraMcp, bound, tools};
use crate::{
    api,
    services::{jobs::write_completed_status, workloads::NoWorkloads},
};

const CALLS: usize = 1_500;

/// `<data>/dissections/snap/big`: calls with a 2 KiB cookie, 16 KiB bodies and a path each.
fn big_db(data: &std::path::Path) {
    let dir = data.join("dissections/snap/big");
    std::fs::create_dir_all(&dir).unwrap();
    let ep = |last: u8, port| Endpoint {
        ip: std::net::IpAddr::from([198, 18, 0, last]),
        port,
    };
    let calls: Vec<Call> = (0..CALLS)
        .map(|i| {
            let mut c = Call::new("HTTP", ep(1, 40_000 + (i % 1000) as u16), ep(2, 80));
            c.timestamp_ns = 1_795_514_400_000_000_000 + i as i64 * 1_000_000;
            c.elapsed_us = Some(1000 + i as i64);
            c.conn_id = i as u64;
            c.index = 1;
            c.method = "POST".into();
            c.path = format!("/api/v1/items/{i}");
            c.url = format!("/api/v1/items/{i}?q={}", "a".repeat(200));
            c.status_code = if i % 10 == 0 { 503 } else { 200 };
            c.request_headers = [("cookie", "c".repeat(2048))].into_iter().collect();
            c.response_headers = [("x-trace", "t".repeat(512))].into_iter().collect();
            c.request_body = vec![b'x'; 16 * 1024];
            c.response_body = vec![b'y'; 16 * 1024];
            c.has_request = true;
            c.has_response = true;
            c
        })
        .collect();
    let mut w = TableWriter::new(Table::Calls, &dir.join("calls.parquet"));
    w.write(&crate::pipeline::calls_batch("node-1", "ebpf", &calls, &NoWorkloads).unwrap())
        .unwrap();
    w.finish().unwrap();
    let mut w = TableWriter::new(Table::Conns, &dir.join("conns.parquet"));
    w.write(&conns::batch("node-1", &[]).unwrap()).unwrap();
    w.finish().unwrap();
    write_completed_status(&dir, "snap", "big").unwrap();
}

fn args(v: Value) -> rmcp::model::JsonObject {
    v.as_object().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_stays_under_its_budget_and_pages_reach_every_call() {
    let tmp = tempfile::tempdir().unwrap();
    big_db(tmp.path());
    // Three thousand pods, each with a long label: the resolve tools must stay bounded too.
    let pods: Vec<Value> = (0..3000u32)
        .map(|i| {
            json!({"ip": format!("198.18.{}.{}", i / 250, i % 250 + 1), "pod": format!("pod-{i}"),
                         "namespace": "shop", "node": "node-a", "labels": {"app": "x".repeat(200)}})
        })
        .collect();
    let history =
        crate::services::workloads::StaticWorkloads::parse(&Value::Array(pods).to_string())
            .unwrap();
    let source = crate::services::workloads::FixedWorkloads {
        history,
        origin: "test".into(),
    };
    let state = api::AnalyzerState::open(tmp.path(), "t".into(), Arc::new(source), 1).unwrap();
    let mcp = RemoraMcp::new(api::router(state), "t".into(), None);
    let db = json!("snap/big");

    // The seed's request: a thousand full rows. Bounded, with a cursor, never an error.
    let (first, err) = tools::call(
        &mcp,
        "list_api_calls",
        &args(json!({"db": db, "limit": 5000, "format": "full"})),
    )
    .await
    .unwrap();
    assert!(!err, "{first}");
    assert!(
        bound::size(&first) <= bound::DEFAULT_BUDGET,
        "{}",
        bound::size(&first)
    );
    assert_eq!(first["total"], json!(CALLS));
    assert!(first["result_cut"].is_string());
    let id = first["calls"][0]["id"].clone();

    // Following next_cursor visits every call once (compact rows: fewer, larger pages).
    let (mut page, _) = tools::call(
        &mcp,
        "list_api_calls",
        &args(json!({"db": db, "limit": 1000})),
    )
    .await
    .unwrap();
    assert!(
        page["result_cut"].is_string(),
        "1000 compact rows do not fit 20 KB"
    );
    let mut seen = HashSet::new();
    loop {
        assert!(bound::size(&page) <= bound::DEFAULT_BUDGET);
        for c in page["calls"].as_array().unwrap() {
            assert!(
                seen.insert(c["id"].as_str().unwrap().to_owned()),
                "{} twice",
                c["id"]
            );
        }
        let Some(cursor) = page["next_cursor"].as_str().map(str::to_owned) else {
            break;
        };
        let (next, err) = tools::call(
            &mcp,
            "list_api_calls",
            &args(json!({"db": db, "limit": 1000, "cursor": cursor})),
        )
        .await
        .unwrap();
        assert!(!err, "{next}");
        page = next;
    }
    assert_eq!(seen.len(), CALLS);

    let calls = [
        ("get_data_boundaries", json!({})),
        ("list_snapshots", json!({})),
        ("list_snapshot_dissections", json!({})),
        (
            "list_api_calls",
            json!({"db": db, "limit": 1000, "format": "raw"}),
        ),
        ("list_api_calls", json!({"db": db, "limit": 1000})),
        ("get_api_call", json!({"db": db, "id": id})),
        (
            "get_api_call",
            json!({"db": db, "id": id, "max_payload_size": 65536}),
        ),
        ("get_api_stats", json!({"db": db, "group_by": "path"})),
        ("get_api_stats", json!({"db": db, "group_by": "url"})),
        ("analyze_calls", json!({"db": db})),
        (
            "analyze_calls",
            json!({"db": db, "analysis": "journey", "by": "client", "limit": 1000}),
        ),
        (
            "analyze_calls",
            json!({"db": db, "analysis": "dependencies", "limit": 1000}),
        ),
        (
            "analyze_calls",
            json!({"db": db, "analysis": "timeline", "resolution": "second", "limit": 1000}),
        ),
        ("describe_fields", json!({})),
        (
            "list_workloads",
            json!({"limit": 1000, "namespaces": ["shop"], "labels": {"app": "x".repeat(200)}}),
        ),
        ("list_ips", json!({"limit": 1000, "name_regex": "^pod-"})),
        ("get_coverage", json!({})),
        ("get_tls_status", json!({})),
        ("list_l4_flows", json!({"db": db, "limit": 1000})),
        (
            "get_l4_flow_summary",
            json!({"db": db, "group_by": "edge,minute"}),
        ),
        (
            "run_sql",
            json!({"db": db, "query": "SELECT * FROM calls", "max_rows": 100000}),
        ),
    ];
    for (tool, a) in calls.iter().cloned() {
        let (v, err) = tools::call(&mcp, tool, &args(a.clone())).await.unwrap();
        assert!(!err, "{tool} {a}: {v}");
        let n = bound::size(&v);
        assert!(n <= bound::DEFAULT_BUDGET, "{tool} {a}: {n} bytes");
    }
    // Every tool the server lists was exercised.
    for def in tools::definitions() {
        assert!(
            calls.iter().any(|(t, _)| *t == def.name)
                || [
                    "create_snapshot",
                    "get_snapshot",
                    "start_snapshot_dissection",
                    "get_snapshot_dissection_status",
                    "export_snapshot_pcap"
                ]
                .contains(&def.name.as_ref()),
            "{} not covered",
            def.name
        );
    }

    // A caller may ask for more.
    let (v, _) = tools::call(
        &mcp,
        "get_api_call",
        &args(json!({"db": db, "id": id, "max_payload_size": 65536, "max_result_bytes": 200000})),
    )
    .await
    .unwrap();
    assert!(bound::size(&v) > bound::DEFAULT_BUDGET && bound::size(&v) <= 200_000);
}
