//! kill -9 crash cycles: `remora up` killed at random moments of snapshots, dissections and
//! queries, restarted on the same data, and what each kill left checked.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use remora_bpf_tests::netns::{ADDR_B, VethPair};
use serde_json::{Value, json};

use crate::api::{Api, start_up};

/// Every visible slice of `data` opens as Parquet (a footer that parses).
fn unreadable_slices(data: &Path) -> Vec<String> {
    remora_bpf_tests::unreadable_parquet(&data.join("capture"))
}

/// What the crash cycles found.
pub struct CrashOutcome {
    /// One line for the report.
    pub summary: String,
    /// What went wrong, if anything.
    pub failures: Vec<String>,
}

/// kill -9 of `remora up` at random moments of random operations, `cycles` times.
pub fn crash_cycles(pair: &VethPair, data: &Path, cycles: u32) -> anyhow::Result<CrashOutcome> {
    let mut rng = remora_bench::synth::Rng::new(0x5eed);
    let mut failures = Vec::new();
    let (mut completed, mut failed, mut snapshots) = (0u32, 0u32, 0u32);
    let began = Instant::now();
    if cycles > 0 {
        println!("crash cycles: {cycles}");
    }
    for c in 0..cycles {
        let agent = start_up(pair, data);
        let api = Api {
            ns: pair.a.name.clone(),
            token: std::fs::read_to_string(data.join("token"))?
                .trim()
                .to_owned(),
        };
        // After the restart: nothing unreadable, nothing half done.
        let bad = unreadable_slices(data);
        if !bad.is_empty() {
            failures.push(format!("cycle {c}: unreadable slices {bad:?}"));
        }
        let jobs = api
            .ok("GET", "/mcp/dissections", None)
            .unwrap_or(Value::Null);
        for job in jobs["dissections"].as_array().into_iter().flatten() {
            let db = job["db"].as_str().unwrap_or_default().to_owned();
            match job["status"].as_str() {
                Some("completed") => {
                    let v = api.ok("GET", &format!("/mcp/dissections/{db}?verify=true"), None)?;
                    if v["verified"] != true {
                        failures.push(format!("cycle {c}: {db} does not verify: {v}"));
                    }
                    completed += 1;
                }
                Some("failed" | "cancelled") => failed += 1,
                other => failures.push(format!("cycle {c}: {db} is {other:?} after a restart")),
            }
            let _ = api.call("DELETE", &format!("/mcp/dissections/{db}"), None);
        }
        let list = api.ok("GET", "/mcp/snapshots", None)?;
        for snap in list["snapshots"].as_array().into_iter().flatten() {
            let name = snap["name"].as_str().unwrap_or_default().to_owned();
            match snap["status"].as_str() {
                Some("completed") => {
                    let v = api.ok("GET", &format!("/mcp/snapshots/{name}?verify=true"), None)?;
                    if v["verified"] != true {
                        failures.push(format!("cycle {c}: snapshot {name} does not verify: {v}"));
                    }
                    snapshots += 1;
                }
                Some("failed") => {}
                other => failures.push(format!("cycle {c}: snapshot {name} is {other:?}")),
            }
            let _ = api.call("DELETE", &format!("/mcp/snapshots/{name}"), None);
        }
        // Traffic, then an operation, then the kill at a random moment of it.
        for i in 0..3 {
            let _ = pair
                .a
                .command("curl")
                .args([
                    "-sS",
                    "-o",
                    "/dev/null",
                    &format!("http://{ADDR_B}:8080/ack/c{c}-{i}"),
                ])
                .output();
        }
        std::thread::sleep(Duration::from_millis(1_000 + rng.below(2_000)));
        let name = format!("crash{c}");
        let _ = api.call(
            "POST",
            "/mcp/snapshots",
            Some(&json!({"name": name, "duration": "1m"})),
        );
        let dissect = || {
            let _ = api.wait(&format!("/mcp/snapshots/{name}"), |v| {
                v["status"] != "in_progress"
            });
            let _ = api.call(
                "POST",
                "/mcp/dissections",
                Some(&json!({"snapshot": name, "name": "d"})),
            );
        };
        match c % 3 {
            0 => {} // mid-snapshot
            1 => dissect(),
            _ => {
                // mid-query, with a dissection behind it
                dissect();
                let _ = api.wait(&format!("/mcp/dissections/{name}/d"), |v| {
                    !matches!(v["status"].as_str(), Some("pending" | "running"))
                });
                let ns = pair.a.name.clone();
                let token = api.token.clone();
                std::thread::spawn(move || {
                    let api = Api { ns, token };
                    let _ = api.call(
                        "POST",
                        "/sql",
                        Some(&json!({"db": format!("crash{c}/d"), "query": "SELECT count(*) FROM calls, conns"})),
                    );
                });
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(150)));
        agent.kill9();
    }
    // One last start: what the last kill left must also be whole.
    if cycles > 0 {
        let agent = start_up(pair, data);
        let bad = unreadable_slices(data);
        if !bad.is_empty() {
            failures.push(format!("final restart: unreadable slices {bad:?}"));
        }
        agent.stop();
    }
    let summary = format!(
        "crash cycles: {cycles} kill -9 of remora up (mid-snapshot, mid-dissection, mid-query) in {:.0} s; after the restarts {completed} dissections completed and verified, {failed} failed with a reason, {snapshots} snapshots completed and verified; {} problems\n",
        began.elapsed().as_secs_f64(),
        failures.len()
    );
    for f in failures.iter().take(20) {
        println!("crash: {f}");
    }
    Ok(CrashOutcome { summary, failures })
}
