//! gRPC through dissection, against a real gRPC peer: a Python grpcio server and client (generic
//! byte handlers, no code generation) talk over cleartext HTTP/2 in namespaces; tcpdump records;
//! Remora's gRPC calls must be exactly the calls the client made, with the status codes it saw
//! and the latency it waited for.

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    time::Duration,
};

use remora_bpf_tests::{
    netns::{ADDR_B, IF_A, VethPair},
    proc::Tcpdump,
    require_root, require_tool, workspace_root,
};

const SERVER: &str = r#"
import grpc, sys, time
from concurrent import futures
def do(req, ctx):
    if req == b"fail":
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if req == b"slow":
        time.sleep(0.05)
    return b"ok:" + req
def echo(req, ctx):
    return req
handler = grpc.method_handlers_generic_handler("remora.test.Svc", {
    "Do": grpc.unary_unary_rpc_method_handler(do),
    "Echo": grpc.unary_unary_rpc_method_handler(echo),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(sys.argv[1])
server.start()
print("ready", flush=True)
server.wait_for_termination()
"#;

const CLIENT: &str = r#"
import grpc, json, sys
channel = grpc.insecure_channel(sys.argv[1])
results = []
for method, arg in [("Do", b"a"), ("Do", b"b"), ("Do", b"fail"), ("Do", b"slow"), ("Echo", b"x")]:
    path = "/remora.test.Svc/" + method
    try:
        channel.unary_unary(path)(arg, timeout=5)
        results.append([path, 0])
    except grpc.RpcError as e:
        results.append([path, e.code().value[0]])
channel.close()
print(json.dumps(results))
"#;

#[test]
fn grpc_calls_match_what_a_real_client_saw() {
    require_root();
    require_tool("tcpdump");
    let python = workspace_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run `cargo xtask setup` (it installs grpcio)",
        python.display()
    );
    let pair = VethPair::new("grpc");
    let addr = format!("{ADDR_B}:50051");
    let mut server = pair
        .b
        .command(python.to_str().unwrap())
        .args(["-c", SERVER, &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("grpc server");
    let mut ready = String::new();
    let _ = BufReader::new(server.stdout.take().unwrap()).read_line(&mut ready);
    assert_eq!(ready.trim(), "ready", "the gRPC server did not start");
    let tmp = tempfile::tempdir().unwrap();
    let pcap = tmp.path().join("grpc.pcap");
    let dump = Tcpdump::start(&pair.a, IF_A, 65535, &pcap, true, &[]);
    let out = pair
        .a
        .exec_ok(python.to_str().unwrap(), &["-c", CLIENT, &addr]);
    std::thread::sleep(Duration::from_millis(300));
    dump.stop();
    let _ = server.kill();
    let _ = server.wait();

    let client_saw: Vec<(String, u32)> =
        serde_json::from_str::<Vec<(String, u32)>>(out.trim()).expect("client results");
    let mut expected = client_saw.clone();
    expected.sort();
    assert!(
        expected.iter().any(|(_, s)| *s == 5),
        "the NOT_FOUND call is part of the test"
    );

    let result = remora_dissect::dissect_capture(&std::fs::read(&pcap).unwrap()).unwrap();
    let grpc: Vec<_> = result
        .calls
        .iter()
        .filter(|c| c.protocol == "gRPC")
        .collect();
    let mut got: Vec<(String, u32)> = grpc
        .iter()
        .map(|c| (c.grpc_method.clone(), c.grpc_status.unwrap_or(u32::MAX)))
        .collect();
    got.sort();
    assert_eq!(got, expected, "gRPC calls differ from what the client saw");
    assert!(
        grpc.iter()
            .all(|c| c.status_code == 200 && c.error_type.is_none()),
        "{grpc:#?}"
    );
    let slow = grpc
        .iter()
        .filter(|c| c.grpc_method.ends_with("/Do"))
        .filter_map(|c| c.elapsed_us)
        .max()
        .unwrap_or(0);
    assert!(
        slow >= 50_000,
        "the slow call waited 50 ms; recorded {slow} µs"
    );
}
