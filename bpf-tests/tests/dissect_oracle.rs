//! The dissection oracle on live traffic: real clients and servers in network namespaces
//! (curl → nginx over HTTP/1.1 and cleartext HTTP/2, dig → dnsmasq over UDP and TCP,
//! openssl s_client → s_server), captured by tcpdump, read by tshark (through the shared
//! `tshark_oracle.py`) and by Remora. Every transaction must agree; a difference fails with
//! both readings printed.

#[path = "../../dissect/tests/oracle/mod.rs"]
mod oracle;

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use remora_bpf_tests::{
    netns::{ADDR_B, IF_A, NetNs, VethPair, run},
    proc::{Nginx, Tcpdump, wait_until},
    require_root, require_tool, workspace_root,
};

/// A background server in a namespace, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(ns: &NetNs, cmd: &str, args: &[&str]) -> Server {
    Server(
        ns.command(cmd)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd}: {e}")),
    )
}

fn listening(ns: &NetNs, udp: bool, port: u16) -> bool {
    let mut args = vec!["-z", "-w", "1"];
    if udp {
        args.push("-u");
    }
    let port = port.to_string();
    args.extend([ADDR_B, port.as_str()]);
    ns.command("nc")
        .args(&args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// tshark's reading of `pcap` in the oracle's TSV format, with decode-as for the test's ports.
fn tshark_reading(pcap: &Path) -> String {
    let script_dir = workspace_root().join("../shared/fixtures");
    assert!(
        script_dir.join("tshark_oracle.py").is_file(),
        "{} missing: the shared fixtures must sit beside the repository",
        script_dir.display()
    );
    let program = format!(
        "import sys; sys.path.insert(0, {dir:?}); import tshark_oracle as t; \
         t.PER_FILE[{name:?}] = ['-d', 'tcp.port==8081,http2', '-d', 'tcp.port==8082,http', \
         '-d', 'tcp.port==8443,tls']; \
         sys.argv = ['tshark_oracle', {path:?}]; t.main()",
        dir = script_dir.display().to_string(),
        name = pcap.file_name().unwrap().to_string_lossy(),
        path = pcap.display().to_string(),
    );
    let out = Command::new("python3")
        .args(["-c", &program])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "tshark oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 TSV")
}

#[test]
fn live_http1_http2_dns_tls_agree_with_tshark() {
    require_root();
    for tool in [
        "curl", "nginx", "tcpdump", "tshark", "dig", "dnsmasq", "openssl", "nc", "nghttp",
    ] {
        require_tool(tool);
    }
    let pair = VethPair::new("orc");
    let tmp = tempfile::tempdir().unwrap();
    let _nginx = Nginx::start(&pair.b, ADDR_B, 8080);
    let _dns = spawn(
        &pair.b,
        "dnsmasq",
        &[
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
            "--listen-address=198.18.0.2",
            "--local=/test/",
            "--address=/app.test/198.18.0.50",
            "--host-record=v6.test,198.18.0.51,2001:db8::51",
            "--cname=alias.test,app.test",
            "--mx-host=app.test,mail.app.test,10",
            "--pid-file=",
            "--user=root",
        ],
    );
    let (key, cert) = (tmp.path().join("key.pem"), tmp.path().join("cert.pem"));
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
            "-days",
            "1",
            "-subj",
            "/CN=tls.test",
        ],
    );
    let _tls = spawn(
        &pair.b,
        "openssl",
        &[
            "s_server",
            "-accept",
            "198.18.0.2:8443",
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
            "-www",
            "-alpn",
            "h2,http/1.1",
            "-quiet",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), || listening(&pair.b, false, 8443)
            && listening(&pair.b, false, 8081)),
        "servers did not start"
    );
    std::thread::sleep(Duration::from_millis(300)); // dnsmasq binds after fork-free start

    // hypercorn accepts `Upgrade: h2c` (nginx and nghttpd do not).
    let hypercorn = workspace_root().join(".venv/bin/hypercorn");
    assert!(
        hypercorn.is_file(),
        "{} missing: run `cargo xtask setup` (it installs the Python test tools)",
        hypercorn.display()
    );
    let _h2c = Server(
        pair.b
            .command(hypercorn.to_str().unwrap())
            .args(["--bind", "198.18.0.2:8082", "h2c_app:app"])
            .current_dir(workspace_root().join("bpf-tests/tests"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning hypercorn"),
    );
    assert!(
        wait_until(Duration::from_secs(20), || listening(&pair.b, false, 8082)),
        "hypercorn did not start on 198.18.0.2:8082"
    );

    let pcap = tmp.path().join("live.pcap");
    let dump = Tcpdump::start(&pair.a, IF_A, 65535, &pcap, true, &[]);
    let h1 = format!("http://{ADDR_B}:8080");
    let h2 = format!("http://{ADDR_B}:8081");
    let a = &pair.a;
    a.exec_ok(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            &format!("{h1}/"),
            &format!("{h1}/big.bin"),
            &format!("{h1}/missing"),
        ],
    );
    a.exec_ok(
        "curl",
        &["-sS", "-o", "/dev/null", "-I", &format!("{h1}/index.html")],
    );
    a.exec_ok(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            "-d",
            "a=1",
            &format!("{h1}/index.html?x=1"),
        ],
    );
    // One connection per HTTP/2 request: curl 7.88 fails to reuse a prior-knowledge h2c
    // connection ("Error in the HTTP2 framing layer"). No POST with a body: nginx answers a
    // static file's POST with 405 and resets the stream while curl may still be sending, which
    // makes curl fail at random; HEAD covers END_STREAM on HEADERS instead.
    for (path, extra) in [
        ("/", &[][..]),
        ("/big.bin", &[]),
        ("/missing", &[]),
        ("/index.html", &["-I"]),
    ] {
        let mut args = vec!["-sS", "--http2-prior-knowledge", "-o", "/dev/null"];
        args.extend_from_slice(extra);
        let url = format!("{h2}{path}");
        args.push(&url);
        a.exec_ok("curl", &args);
    }
    // h2c upgrades: curl offers `Upgrade: h2c` on a GET (accepted: the answer comes as
    // HTTP/2 stream 1) and on a POST with a body (the server answers in HTTP/1.1); nghttp -u
    // upgrades too and then sends a second request on stream 3 (its -a fetches nothing here).
    let up = format!("http://{ADDR_B}:8082");
    for (path, extra) in [
        ("/up", &[][..]),
        ("/missing", &[]),
        ("/form", &["-d", "k=v"]),
    ] {
        let url = format!("{up}{path}");
        let mut args = vec!["-sS", "--http2", "-o", "/dev/null"];
        args.extend_from_slice(extra);
        args.push(&url);
        a.exec_ok("curl", &args);
    }
    a.exec_ok(
        "nghttp",
        &["-u", &format!("{up}/nghttp"), &format!("{up}/nghttp2")],
    );
    for q in [
        &["app.test", "A"][..],
        &["v6.test", "AAAA"],
        &["alias.test", "A"],
        &["app.test", "MX"],
        &["nope.test", "A"],
        &["+tcp", "app.test", "A"],
    ] {
        let mut args = vec!["@198.18.0.2", "+tries=1", "+time=2"];
        args.extend_from_slice(q);
        a.exec_ok("dig", &args);
    }
    for extra in [
        &["-servername", "tls.test", "-alpn", "h2,http/1.1"][..],
        &["-servername", "other.test", "-tls1_2"],
    ] {
        let mut c = a
            .command("openssl")
            .args(["s_client", "-connect", "198.18.0.2:8443"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s_client");
        let _ = c.wait();
    }
    std::thread::sleep(Duration::from_millis(300));
    let stats = dump.stop();
    assert_eq!(stats.dropped, 0);

    let tsv = tshark_reading(&pcap);
    let out = remora_dissect::dissect_capture(&std::fs::read(&pcap).unwrap()).unwrap();
    let mut compared: BTreeMap<&'static str, usize> = BTreeMap::new();
    let diff = oracle::differences("live", &tsv, &out.calls, &mut compared);
    eprintln!("live traffic, rows compared with tshark: {compared:?}");
    assert!(
        diff.is_empty(),
        "Remora and tshark read the live capture differently:\n{}",
        diff.join("\n")
    );
    for (kind, at_least) in [
        ("http.request", 5),
        ("http.pair", 5),
        ("http2.request", 8),
        ("http2.response", 8),
        ("dns.query", 6),
        ("dns.response", 6),
        ("tls.client_hello", 2),
        ("tls.server_hello", 2),
    ] {
        let n = compared.get(kind).copied().unwrap_or(0);
        assert!(
            n >= at_least,
            "only {n} {kind} rows in the live capture (expected ≥ {at_least})"
        );
    }
}
