//! Overload of the analyzer inside `remora up`: 64 queries at once (KFL and SQL) and 24
//! dissection starts, with the query memory set to 128 MiB. Every answer is a result or a 429
//! with `Retry-After` (never a 5xx of ours, never a hang); the recorder's peak RSS stays within
//! its baseline plus the configured query memory; capture keeps writing; the dissection
//! workers (separate processes) stay under `--job-memory-mb`.

use std::{
    sync::{Arc, Barrier, Mutex},
    time::Duration,
};

use remora_bpf_tests::{
    WebScene,
    netns::IF_A,
    pcap::PcapWriter,
    proc::{AgentProc, status_bytes},
};
use serde_json::json;

const PORT: u16 = 18865;
const QUERY_MB: u64 = 128;
const JOB_MB: u64 = 256;
/// What a dissection worker may allocate between two of the watchdog's 50 ms readings.
const WATCHDOG_SLACK_MB: u64 = 32;

/// `conns` keep-alive connections of `calls` HTTP/1.1 request/response pairs each.
fn capture(conns: u32, calls: u32) -> Vec<u8> {
    let mut pcap = PcapWriter::default();
    let (client, server) = ([198, 18, 7, 1], [198, 18, 7, 2]);
    let mut ts = 1_700_000_000_000_000u64;
    for c in 0..conns {
        let cl = ((client, 2000 + (c % 60_000) as u16), (server, 8080));
        let (cli, srv) = cl;
        let (mut cseq, mut sseq) = (1000u32, 9000u32);
        pcap.tcp(ts, cli, srv, cseq - 1, 0, 0x02, &[]);
        pcap.tcp(ts + 1, srv, cli, sseq - 1, cseq, 0x12, &[]);
        pcap.tcp(ts + 2, cli, srv, cseq, sseq, 0x10, &[]);
        ts += 3;
        for k in 0..calls {
            let req = format!(
                "GET /api/v{}/items/{}?page={k} HTTP/1.1\r\nHost: shop\r\nUser-Agent: load\r\n\r\n",
                c % 7,
                c % 500
            );
            let body = format!("{{\"item\": {c}, \"page\": {k}}}");
            let status = if (c + k) % 13 == 0 {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            pcap.tcp(ts, cli, srv, cseq, sseq, 0x18, req.as_bytes());
            cseq += req.len() as u32;
            pcap.tcp(ts + 500, srv, cli, sseq, cseq, 0x18, resp.as_bytes());
            sseq += resp.len() as u32;
            ts += 1000;
        }
    }
    pcap.bytes
}

/// What one request got: its path, status, Retry-After and body.
type Answer = (String, u16, Option<String>, String);

/// One raw request through curl in the namespace: status, Retry-After, body.
fn request(
    agent: &AgentProc,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Option<String>, String) {
    let token = std::fs::read_to_string(agent.data_dir.join("token")).unwrap_or_default();
    let mut cmd = std::process::Command::new("ip");
    cmd.args([
        "netns", "exec", &agent.ns, "curl", "-sS", "-m", "120", "-D", "-", "-X", method,
    ])
    .args(["-H", &format!("Authorization: Bearer {}", token.trim())]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{PORT}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let retry = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("retry-after:"))
        .map(|l| l[12..].trim().to_owned());
    (status, retry, rest.to_owned())
}

#[test]
fn overload_gets_429_and_memory_stays_within_the_limits() {
    let scene = WebScene::new("ovld");
    let (pair, tmp, data) = (&scene.pair, &scene.tmp, scene.data.clone());
    let (query_mb, job_mb) = (QUERY_MB.to_string(), JOB_MB.to_string());
    let agent = AgentProc::start_up(
        &pair.a,
        &data,
        PORT,
        &[
            "--interfaces",
            IF_A,
            "--slice-duration",
            "1s",
            "--query-memory-mb",
            &query_mb,
            "--job-memory-mb",
            &job_mb,
        ],
    );
    let pid = agent.pid().expect("pid");

    // 60,000 calls to query.
    let file = tmp.path().join("load.pcap");
    std::fs::write(&file, capture(3_000, 20)).expect("capture");
    remora_bpf_tests::import_capture(&data, &file, "load");
    agent.api_post(
        "/mcp/dissections",
        &json!({"snapshot": "load", "name": "d"}),
    );
    let job = agent.wait_for("/mcp/dissections/load/d", |v| {
        !matches!(v["status"].as_str(), Some("pending" | "running"))
    });
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["calls_found"], 60_000, "{job}");
    // Warm: the first queries build the pool and read the footers.
    let (code, _, body) = request(
        &agent,
        "GET",
        "/mcp/stats?db=load/d&kfl=http&group_by=path&limit=5",
        None,
    );
    assert_eq!(code, 200, "{body}");
    let baseline = status_bytes(pid, "VmRSS").unwrap_or(0);

    // 64 queries at once: KFL stats and pages, insights, and SQL that sorts and joins.
    let kfl: String = "http and response.status == 503"
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let paths: Vec<(&str, String, Option<String>)> = (0..64)
        .map(|i| match i % 4 {
            0 => ("GET", "/mcp/stats?db=load/d&kfl=http&group_by=path&limit=500".to_owned(), None),
            1 => ("GET", format!("/mcp/calls?db=load/d&kfl={kfl}&limit=500&format=full"), None),
            2 => ("GET", "/mcp/insights?db=load/d&analysis=errors_503".to_owned(), None),
            _ => (
                "POST",
                "/sql".to_owned(),
                Some(
                    json!({"db": "load/d", "query": "SELECT a.path, count(*) AS n FROM calls a JOIN calls b ON a.path = b.path GROUP BY a.path ORDER BY n DESC", "max_rows": 100, "memory_mb": 64})
                        .to_string(),
                ),
            ),
        })
        .collect();
    let barrier = Arc::new(Barrier::new(paths.len() + 24));
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let agent = Arc::new(agent);
    let mut threads = Vec::new();
    for (method, path, body) in paths {
        let (barrier, answers, agent) = (barrier.clone(), answers.clone(), agent.clone());
        threads.push(std::thread::spawn(move || {
            barrier.wait();
            let (code, retry, text) = request(&agent, method, &path, body.as_deref());
            answers.lock().unwrap().push((path, code, retry, text));
        }));
    }
    // 24 dissection starts at the same moment: at most 16 may be queued or running.
    let last_start_answer_ms = Arc::new(std::sync::atomic::AtomicI64::new(0));
    for i in 0..24 {
        let (barrier, answers, agent) = (barrier.clone(), answers.clone(), agent.clone());
        let last = last_start_answer_ms.clone();
        threads.push(std::thread::spawn(move || {
            let body = json!({"snapshot": "load", "name": format!("j{i}")}).to_string();
            barrier.wait();
            let (code, retry, text) = request(&agent, "POST", "/mcp/dissections", Some(&body));
            last.fetch_max(unix_ms(), std::sync::atomic::Ordering::SeqCst);
            answers
                .lock()
                .unwrap()
                .push(("dissection".into(), code, retry, text));
        }));
    }
    // Peak memory of the recorder and of any dissection worker while it all runs.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let worker_peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (sampling, worker_peak) = (sampling.clone(), worker_peak.clone());
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                        continue;
                    };
                    let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                    if String::from_utf8_lossy(&cmdline).contains("dissect-job") {
                        worker_peak.fetch_max(
                            status_bytes(p, "VmRSS").unwrap_or(0),
                            std::sync::atomic::Ordering::SeqCst,
                        );
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    for t in threads {
        t.join().expect("request thread");
    }
    let peak = status_bytes(pid, "VmHWM").unwrap_or(0);
    // A few of the queued dissections run meanwhile, their workers sampled; the rest end
    // with the recorder (their workers die with it).
    std::thread::sleep(Duration::from_secs(8));
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    sampler.join().expect("sampler");

    let answers = answers.lock().unwrap().clone();
    let mut counts = std::collections::BTreeMap::<(bool, u16), usize>::new();
    for (path, code, retry, text) in &answers {
        *counts.entry((path == "dissection", *code)).or_default() += 1;
        match code {
            200 | 202 => {}
            429 | 503 => assert!(
                retry.is_some(),
                "{path}: {code} without Retry-After: {text}"
            ),
            _ => panic!("{path}: {code}: {text}"),
        }
    }
    println!("answers (dissection?, status) → count: {counts:?}");
    println!(
        "remora up RSS: {} MiB before, peak {} MiB; dissection workers peak {} MiB",
        baseline >> 20,
        peak >> 20,
        worker_peak.load(std::sync::atomic::Ordering::SeqCst) >> 20
    );
    let refused = |dissection: bool| {
        counts
            .iter()
            .filter(|((d, c), _)| *d == dissection && *c == 429)
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    // A job that ended while the starts were still being answered made room for one more
    // (the dissection of this snapshot takes a fraction of a second).
    let last_start = last_start_answer_ms.load(std::sync::atomic::Ordering::SeqCst);
    let ended_meanwhile = (0..24)
        .filter(|i| {
            let (code, _, text) =
                request(&agent, "GET", &format!("/mcp/dissections/load/j{i}"), None);
            let finished_at = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["finished_at"].as_i64())
                .unwrap_or(0);
            code == 200 && finished_at > 0 && finished_at <= last_start
        })
        .count();
    assert!(
        refused(true) + ended_meanwhile >= 8,
        "24 starts, at most 16 queued ({ended_meanwhile} ended while they were answered): {counts:?}"
    );
    assert!(
        refused(false) > 0,
        "64 queries, 8 running and 32 waiting at most: {counts:?}"
    );
    // KFL queries share a pool of QUERY_MB, SQL reserves from a budget of QUERY_MB: together
    // at most twice that over the baseline (plus what the HTTP layer holds).
    let bound = baseline + ((2 * QUERY_MB) << 20) + (64 << 20);
    assert!(
        peak <= bound,
        "peak RSS {} MiB over the bound {} MiB",
        peak >> 20,
        bound >> 20
    );
    // The watchdog reads a worker's RSS every 50 ms and this sampler every 20 ms, so it can
    // see what a worker on every core allocates between two of the watchdog's readings (4 MiB
    // over the limit was seen): one period's growth is allowed, a worker left running above
    // the limit is not.
    assert!(
        worker_peak.load(std::sync::atomic::Ordering::SeqCst) <= (JOB_MB + WATCHDOG_SLACK_MB) << 20,
        "a worker above --job-memory-mb was not stopped"
    );
    let agent = Arc::try_unwrap(agent).ok().expect("one owner");
    agent.stop();
}

/// Now, unix ms (the clock of the jobs' `finished_at`).
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
