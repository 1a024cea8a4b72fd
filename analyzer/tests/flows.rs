//! `/mcp/flows` and `/mcp/flows/summary`: the connections and their sums equal DuckDB's reading
//! of the same `conns.parquet`, per edge and per minute, and pages visit every connection.

mod common;

use std::collections::BTreeSet;

use common::{duckdb, fixture, get, imported};
use remora_analyzer::cli::client::encode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_and_their_sums_agree_with_duckdb() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Retransmitted, lost, half-closed and reused connections, and plenty of HTTP.
    let routes = imported(&data, &fixture("tcp-reassembly-synthetic.pcap"), "tcp").await;
    let conns = data.join("dissections/tcp/d/conns.parquet");
    let conns = conns.display();

    let summary = get(&routes, "/mcp/flows/summary?db=tcp/d&group_by=edge").await;
    let want = duckdb(&format!(
        "SELECT count(*), sum(packets_c2s + packets_s2c), sum(retransmissions_c2s + retransmissions_s2c),
                sum(out_of_order_c2s + out_of_order_s2c), sum(lost_segments_c2s + lost_segments_s2c),
                sum(dup_acks_c2s + dup_acks_s2c), count(*) FILTER (WHERE resets > 0),
                count(*) FILTER (WHERE rst_by = 'server')
         FROM '{conns}'"
    ));
    let got = [
        &summary["connections"],
        &summary["packets"],
        &summary["retransmissions"],
        &summary["out_of_order"],
        &summary["lost_segments"],
        &summary["dup_acks"],
        &summary["resets"]["connections"],
        &summary["resets"]["by_server"],
    ];
    assert_eq!(
        got.iter().map(|v| (*v).clone()).collect::<Vec<_>>(),
        want[0],
        "{summary}"
    );
    assert!(
        summary["retransmissions"].as_u64() > Some(0)
            && summary["lost_segments"].as_u64() > Some(0),
        "the fixture has retransmissions and lost segments: {summary}"
    );
    // How connections ended, counted the same way.
    let closes = duckdb(&format!(
        "SELECT close, count(*) FROM '{conns}' GROUP BY close ORDER BY close"
    ));
    for row in &closes {
        let name = row[0].as_str().unwrap();
        assert_eq!(summary["close"][name], row[1], "close {name}: {summary}");
    }

    // Per edge: client → server:port, each with its own sums.
    let edges = duckdb(&format!(
        "SELECT src_ip || ' → ' || dst_ip || ':' || dst_port AS k, count(*),
                sum(retransmissions_c2s + retransmissions_s2c)
         FROM '{conns}' GROUP BY k ORDER BY 2 DESC, 1 LIMIT 100"
    ));
    let groups = summary["groups"].as_array().unwrap();
    assert_eq!(groups.len(), edges.len());
    for (g, e) in groups.iter().zip(&edges) {
        assert_eq!(
            (&g["key"]["edge"], &g["connections"], &g["retransmissions"]),
            (&e[0], &e[1], &e[2])
        );
    }

    // Churn: new connections per destination and minute.
    let churn = get(
        &routes,
        "/mcp/flows/summary?db=tcp/d&group_by=dst,minute&limit=1000",
    )
    .await;
    let want = duckdb(&format!(
        "SELECT count(*) FROM (SELECT DISTINCT dst_ip, dst_port, epoch_ns(first_ts) // 60000000000 FROM '{conns}')"
    ));
    assert_eq!(json!(churn["groups"].as_array().unwrap().len()), want[0][0]);
    let total: u64 = churn["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(json!(total), summary["connections"]);

    // Pages of two visit every connection once; a KFL filter selects what SQL selects.
    let mut seen = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let page = get(&routes, &format!("/mcp/flows?db=tcp/d&limit=2{cursor}")).await;
        for f in page["flows"].as_array().unwrap() {
            assert!(seen.insert(f["conn_id"].as_u64().unwrap()), "{f} twice");
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(json!(seen.len()), summary["connections"]);
    let kfl = "retransmissions_s2c > 0 or close == \"rst\"";
    let page = get(
        &routes,
        &format!("/mcp/flows?db=tcp/d&limit=1000&kfl={}", encode(kfl)),
    )
    .await;
    let want = duckdb(&format!(
        "SELECT count(*) FROM '{conns}' WHERE retransmissions_s2c > 0 OR close = 'rst'"
    ));
    assert_eq!(page["total"], want[0][0]);
    assert!(page["total"].as_u64() > Some(0));
    let worst = get(&routes, "/mcp/flows?db=tcp/d&limit=1&order=retransmissions").await;
    let max = duckdb(&format!(
        "SELECT max(retransmissions_c2s + retransmissions_s2c) FROM '{conns}'"
    ));
    let f: &Value = &worst["flows"][0];
    let n = f["retransmissions_c2s"].as_u64().unwrap_or(0)
        + f["retransmissions_s2c"].as_u64().unwrap_or(0);
    assert_eq!(json!(n), max[0][0]);

    // Mistakes are clear.
    let (status, v) = remora_analyzer::api::call_in_process(
        &routes,
        "t",
        "GET",
        "/mcp/flows/summary?db=tcp/d&group_by=colour",
        None,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("edge"),
        "{v}"
    );
}
