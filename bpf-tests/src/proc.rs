//! Processes the tests run inside namespaces (the agent, tcpdump, nginx), each owned by a guard
//! that stops it on drop.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{netns::NetNs, sibling_binary};

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill with a pid we own; a stale pid at worst fails with ESRCH.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time of a process that has exited, from `wait4`'s rusage. (Not its peak RSS:
/// `ru_maxrss` also counts the parent's memory at the fork, so read `VmHWM` while it runs.)
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// User + system CPU seconds over the whole life of the process.
    pub cpu_s: f64,
}

/// Like [`wait_exit`], but reaps the child with `wait4` to learn its CPU time,
/// including what it spent flushing on its way out (which /proc can no longer show).
fn wait_exit_usage(child: &mut Child, timeout: Duration) -> Option<(bool, Usage)> {
    let deadline = Instant::now() + timeout;
    let pid = child.id() as libc::pid_t;
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data the kernel fills; WNOHANG never blocks; the pid is our child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            let usage = Usage {
                cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
            };
            let success = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            return Some((success, usage));
        }
        if reaped < 0 || Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

thread_local! {
    /// A command the next agent is started under (`start_agent_wrapped`).
    static WRAPPER: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A running `remora-agent` inside a namespace.
pub struct AgentProc {
    child: Option<Child>,
    /// Its stderr, captured to a file.
    pub log: PathBuf,
    /// The namespace it runs in.
    pub ns: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The node API port (in the namespace).
    pub port: u16,
    /// The node API address (127.0.0.1 unless started with another).
    pub host: String,
}

impl AgentProc {
    /// Starts the agent (node `test`) and waits until it says it is recording.
    pub fn start(ns: &NetNs, data_dir: &Path, port: u16, extra: &[&str]) -> Self {
        Self::spawn(
            "remora-agent",
            &[],
            "remora-agent: recording",
            ns,
            data_dir,
            port,
            extra,
        )
    }

    /// Starts `remora up` (recorder and analyzer in one process, node `test`) the same way.
    pub fn start_up(ns: &NetNs, data_dir: &Path, port: u16, extra: &[&str]) -> Self {
        Self::start_up_on(ns, data_dir, "127.0.0.1", port, extra)
    }

    /// Starts `remora serve` (the analyzer alone) with its API on `host:port`.
    pub fn start_serve_on(
        ns: &NetNs,
        data_dir: &Path,
        host: &str,
        port: u16,
        extra: &[&str],
    ) -> Self {
        let mut analyzer = Self::spawn_on(
            "remora",
            &["serve"],
            "remora serve: API on",
            ns,
            data_dir,
            (host, port),
            extra,
        );
        analyzer.host = host.to_owned();
        analyzer
    }

    /// Starts `remora-agent` under `wrapper` (e.g. `setpriv --bounding-set ...`), inside the
    /// namespace, with its node API on 127.0.0.1:`port`.
    pub fn start_agent_wrapped(
        ns: &NetNs,
        data_dir: &Path,
        port: u16,
        wrapper: &[&str],
        extra: &[&str],
    ) -> Self {
        WRAPPER.with(|w| *w.borrow_mut() = wrapper.iter().map(|s| s.to_string()).collect());
        let agent = Self::start(ns, data_dir, port, extra);
        WRAPPER.with(|w| w.borrow_mut().clear());
        agent
    }

    /// Starts `remora-agent` with its node API on `host:port`.
    pub fn start_agent_on(
        ns: &NetNs,
        data_dir: &Path,
        host: &str,
        port: u16,
        extra: &[&str],
    ) -> Self {
        Self::spawn_on(
            "remora-agent",
            &[],
            "remora-agent: recording",
            ns,
            data_dir,
            (host, port),
            extra,
        )
    }

    /// Starts `remora up` with its API on `host:port`.
    pub fn start_up_on(ns: &NetNs, data_dir: &Path, host: &str, port: u16, extra: &[&str]) -> Self {
        let mut agent = Self::spawn_on(
            "remora",
            &["up"],
            "remora up: recording",
            ns,
            data_dir,
            (host, port),
            extra,
        );
        agent.host = host.to_owned();
        agent
    }

    fn spawn(
        program: &str,
        first: &[&str],
        ready: &str,
        ns: &NetNs,
        data_dir: &Path,
        port: u16,
        extra: &[&str],
    ) -> Self {
        Self::spawn_on(
            program,
            first,
            ready,
            ns,
            data_dir,
            ("127.0.0.1", port),
            extra,
        )
    }

    fn spawn_on(
        program: &str,
        first: &[&str],
        ready: &str,
        ns: &NetNs,
        data_dir: &Path,
        (host, port): (&str, u16),
        extra: &[&str],
    ) -> Self {
        let bin = sibling_binary(program);
        assert!(
            bin.is_file(),
            "{} is missing: build it first with `cargo build -p remora-agent -p remora-analyzer` (cargo xtask test does)",
            bin.display()
        );
        let log = data_dir.with_extension("agent.log");
        let listen = format!("{host}:{port}");
        let wrapper = WRAPPER.with(|w| w.borrow().clone());
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = ns.command(program);
                c.args(args).arg(&bin);
                c
            }
            None => ns.command(bin.to_str().unwrap_or_default()),
        };
        cmd.args(first);
        if !extra.contains(&"--node") && first != ["serve"] {
            cmd.args(["--node", "test"]);
        }
        cmd.args(["--listen", &listen, "--log", "info"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("agent log file"));
        let child = cmd.spawn().expect("spawning the recorder");
        let mut agent = Self {
            child: Some(child),
            log,
            ns: ns.name.clone(),
            data_dir: data_dir.to_owned(),
            port,
            host: host.to_owned(),
        };
        let started = wait_until(Duration::from_secs(30), || {
            agent.log_text().contains(ready) || agent.exited()
        });
        if !started || agent.exited() {
            let log = agent.log_text();
            // Who holds the port, when that is why it stopped.
            let holders = if log.contains("in use") {
                ns.command("ss")
                    .args(["-tanp"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            panic!("{program} did not start:\n{log}{holders}");
        }
        agent
    }

    /// Starts the agent expecting it to fail; returns its exit code and stderr.
    pub fn run_to_failure(ns: &NetNs, args: &[&str]) -> (i32, String) {
        let bin = sibling_binary("remora-agent");
        let out = ns
            .command(bin.to_str().unwrap_or_default())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running remora-agent");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Process id (for CPU and memory figures from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the agent logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        !self.exited()
    }

    /// Stops the agent with SIGINT (it flushes its open slice) and returns its log.
    pub fn stop(mut self) -> String {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGINT);
            let status = wait_exit(&mut child, Duration::from_secs(30));
            assert!(
                status.is_some_and(|s| s.success()),
                "remora-agent did not stop cleanly ({status:?}):\n{}",
                self.log_text()
            );
        }
        self.log_text()
    }

    /// Stops the agent like [`stop`](Self::stop) and also returns its CPU time over its whole
    /// life, the final flush included.
    pub fn stop_measured(mut self) -> (String, Usage) {
        let mut usage = Usage::default();
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGINT);
            let exit = wait_exit_usage(&mut child, Duration::from_secs(30));
            assert!(
                exit.is_some_and(|(ok, _)| ok),
                "remora-agent did not stop cleanly:\n{}",
                self.log_text()
            );
            usage = exit.map(|(_, u)| u).unwrap_or_default();
        }
        (self.log_text(), usage)
    }

    /// Kills the agent with SIGKILL, as an OOM killer or a node failure would.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGKILL);
            let status = wait_exit(&mut child, Duration::from_secs(10));
            assert!(
                status.is_some(),
                "the process was still there 10 s after kill -9:\n{}",
                self.log_text()
            );
        }
    }

    /// GET on the node API with the agent's token; returns (HTTP status, body).
    pub fn api(&self, path: &str) -> (u16, Vec<u8>) {
        let token = fs::read_to_string(self.data_dir.join("token")).unwrap_or_default();
        self.api_with_token(path, Some(token.trim()))
    }

    /// GET on the node API with an explicit token (or none).
    pub fn api_with_token(&self, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
        self.request("GET", path, None, token)
    }

    /// POST of a JSON body with the agent's token; returns (HTTP status, parsed JSON body).
    pub fn api_post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let token = fs::read_to_string(self.data_dir.join("token")).unwrap_or_default();
        let (status, out) = self.request("POST", path, Some(&body.to_string()), Some(token.trim()));
        (
            status,
            serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Any request on the API; `path` may carry a query string (already encoded).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, Vec<u8>) {
        let url = format!("http://{}:{}{path}", self.host, self.port);
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.ns,
            "curl",
            "-sS",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        cmd.args(["-X", method]);
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let out = cmd.arg(&url).output().expect("running curl");
        let mut body = out.stdout;
        let split = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
        let status = String::from_utf8_lossy(&body[split..])
            .trim()
            .parse()
            .unwrap_or(0);
        body.truncate(split);
        (status, body)
    }

    /// Polls GET `path` (every 200 ms, up to 60 s) until `done` accepts its JSON; returns it.
    pub fn wait_for(
        &self,
        path: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.api_json(path);
            if done(&v) {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path} never finished: {v}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Makes snapshot `name` of `[start_ms, end_ms]`, waits until it is made, and returns its
    /// manifest (whatever its status).
    pub fn snapshot(&self, name: &str, start_ms: i64, end_ms: i64) -> serde_json::Value {
        let (status, v) = self.api_post(
            "/mcp/snapshots",
            &serde_json::json!({"name": name, "start": start_ms, "end": end_ms}),
        );
        assert!(status < 300, "snapshot {name} refused: {v}");
        self.wait_for(&format!("/mcp/snapshots/{name}"), |v| {
            v["status"] != "in_progress"
        })
    }

    /// Dissects `snapshot` as `d`, waits for it to complete, and returns its HTTP calls in the
    /// `full` format.
    pub fn dissected_http_calls(&self, snapshot: &str) -> Vec<serde_json::Value> {
        self.api_post(
            "/mcp/dissections",
            &serde_json::json!({"snapshot": snapshot, "name": "d"}),
        );
        let done = self.wait_for(&format!("/mcp/dissections/{snapshot}/d"), |v| {
            !matches!(v["status"].as_str(), Some("pending" | "running"))
        });
        assert_eq!(done["status"], "completed", "{done}");
        let calls = self.api_json(&format!(
            "/mcp/calls?db={snapshot}/d&format=full&limit=1000&kfl=http"
        ));
        calls["calls"].as_array().cloned().unwrap_or_default()
    }

    /// GET on the node API, parsed as JSON; panics unless the status is 200.
    pub fn api_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.api(path);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("API answered JSON")
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// A running tcpdump writing a pcap file.
pub struct Tcpdump {
    child: Option<Child>,
    log: PathBuf,
    /// The pcap it writes.
    pub pcap: PathBuf,
}

/// What tcpdump said about its capture when it stopped.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpdumpStats {
    /// "packets captured".
    pub captured: u64,
    /// "packets dropped by kernel".
    pub dropped: u64,
}

impl Tcpdump {
    /// Starts `tcpdump -i iface -s snaplen -w pcap` (nanosecond timestamps) and waits until it
    /// listens. `extra` adds flags or a filter. With `immediate`, every packet is handed over at
    /// once (otherwise packets in a not yet full kernel block are lost when tcpdump stops, which
    /// is tcpdump's normal, efficient mode and the one benchmarks use).
    pub fn start(
        ns: &NetNs,
        iface: &str,
        snaplen: u32,
        pcap: &Path,
        immediate: bool,
        extra: &[&str],
    ) -> Self {
        let log = pcap.with_extension("tcpdump.log");
        let child = ns
            .command("tcpdump")
            .args(["-n", "-i", iface, "-s", &snaplen.to_string()])
            .args(["--time-stamp-precision", "nano", "-w"])
            .arg(pcap)
            .args(if immediate {
                &["--immediate-mode", "-U"][..]
            } else {
                &[]
            })
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("tcpdump log"))
            .spawn()
            .expect("spawning tcpdump");
        let t = Self {
            child: Some(child),
            log,
            pcap: pcap.to_owned(),
        };
        assert!(
            wait_until(Duration::from_secs(10), || t
                .log_text()
                .contains("listening on")),
            "tcpdump did not start: {}",
            t.log_text()
        );
        t
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Process id (for CPU and memory figures from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops tcpdump and returns its own counts.
    pub fn stop(self) -> TcpdumpStats {
        self.stop_measured().0
    }

    /// Stops tcpdump and returns its own counts and its CPU time.
    pub fn stop_measured(mut self) -> (TcpdumpStats, Usage) {
        let mut usage = Usage::default();
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGINT);
            if let Some((_, u)) = wait_exit_usage(&mut child, Duration::from_secs(10)) {
                usage = u;
            }
        }
        let log = self.log_text();
        let number_before = |needle: &str| {
            log.lines()
                .find(|l| l.contains(needle))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (
            TcpdumpStats {
                captured: number_before("packets captured"),
                dropped: number_before("packets dropped by kernel"),
            },
            usage,
        )
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// nginx serving `/` (a short text), `/big.bin` (200 KB), `/api/v1/cart` (200),
/// `/ack/<anything>` (200, for counting requests) and `/api/v1/checkout` (always 503) on `addr:port` (HTTP/1.1), the
/// same over cleartext HTTP/2 with prior knowledge on `addr:port+1`, and with
/// [`Nginx::start_with_tls`] over TLS on `addr:port+2` (HTTP/1.1, or HTTP/2 by ALPN; a
/// self-signed certificate for `remora.test`).
pub struct Nginx {
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx in `ns` and waits until it accepts connections.
    pub fn start(ns: &NetNs, addr: &str, port: u16) -> Self {
        Self::start_inner(ns, addr, port, false)
    }

    /// [`Nginx::start`], with the TLS server on `addr:port+2` too.
    pub fn start_with_tls(ns: &NetNs, addr: &str, port: u16) -> Self {
        Self::start_inner(ns, addr, port, true)
    }

    fn start_inner(ns: &NetNs, addr: &str, port: u16, tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("nginx dir");
        let root = dir.path().join("www");
        fs::create_dir_all(&root).expect("www");
        fs::create_dir_all(dir.path().join("logs")).expect("logs");
        fs::write(root.join("index.html"), "hello from remora tests\n").expect("index");
        fs::create_dir_all(root.join("api/v1")).expect("api dir");
        fs::write(root.join("api/v1/cart"), "{\"items\": 2}\n").expect("cart");
        let big: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        fs::write(root.join("big.bin"), big).expect("big");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let tls_server = if tls {
            self_signed(&cert, &key, "remora.test");
            format!(
                "server {{ listen {addr}:{tls_port} ssl http2; root {r};\n\
                   ssl_certificate {cert}; ssl_certificate_key {key};\n\
                   location /ack/ {{ return 200 \"ack\\n\"; }} }}\n",
                tls_port = port + 2,
                r = root.display(),
                cert = cert.display(),
                key = key.display(),
            )
        } else {
            String::new()
        };
        let conf = dir.path().join("nginx.conf");
        fs::write(
            &conf,
            format!(
                "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/logs/error.log;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
                   fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
                   server {{ listen {addr}:{port}; root {r};\n\
                     location = /api/v1/checkout {{ return 503 \"payment timeout\\n\"; }}\n\
                     location /ack/ {{ return 200 \"ack\\n\"; }} }}\n\
                   server {{ listen {addr}:{h2} http2; root {r};\n\
                     location = /api/v1/checkout {{ return 503 \"payment timeout\\n\"; }}\n\
                     location /ack/ {{ return 200 \"ack\\n\"; }} }}\n\
                   {tls_server} }}\n",
                h2 = port + 1,
                d = dir.path().display(),
                r = root.display(),
            ),
        )
        .expect("nginx.conf");
        let child = ns
            .command("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning nginx");
        let up = wait_until(Duration::from_secs(10), || {
            ns.command("nc")
                .args(["-z", addr, &port.to_string()])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        assert!(up, "nginx did not start on {addr}:{port}");
        Self {
            child: Some(child),
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGTERM);
            if wait_exit(&mut child, Duration::from_secs(5)).is_none() {
                signal(&child, libc::SIGKILL);
                let _ = child.wait();
            }
        }
    }
}

/// Writes a self-signed certificate for `name` (and its key) with openssl, for test servers.
pub fn self_signed(cert: &Path, key: &Path, name: &str) {
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs (Debian package openssl)");
    assert!(made.success(), "openssl could not make a test certificate");
}

/// A memory field of `/proc/<pid>/status` (`"VmRSS"`, `"VmHWM"`, ...) in bytes; `pid` may be
/// `self`. `None` when the process or the field is gone.
pub fn status_bytes(pid: impl std::fmt::Display, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib << 10)
}

/// CPU seconds (user + system) and peak RSS in bytes of a live process, from /proc.
pub fn cpu_and_peak_rss(pid: u32) -> (f64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    let cpu = (field(11) + field(12)) / ticks;
    (cpu, status_bytes(pid, "VmHWM").unwrap_or(0))
}

/// Wall seconds, CPU seconds (user + system) and peak RSS (bytes) of a command run to its end.
///
/// The peak is the child's own high-water mark (`VmHWM`), read as it exits: the child runs
/// traced, and stops there for it. `wait4`'s `ru_maxrss` would not do: Linux records the peak
/// of the memory a process leaves at `exec` as its own, and a child leaves a copy of the
/// spawning process's, so a bench that held 226 MB made every child it measured at least
/// that large (docs/dissection.md). When the exit stop is missed (the child killed by
/// SIGKILL), the peak falls back to `ru_maxrss`.
pub fn run_measured(
    cmd: &mut Command,
) -> std::io::Result<(f64, f64, u64, std::process::ExitStatus)> {
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
    // SAFETY: only async-signal-safe work between fork and exec: one ptrace call.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: rusage is plain data filled by the kernel; wait4 reaps the child we spawned.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut peak = None;
    let mut execed = false;
    loop {
        // SAFETY: as above.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if !libc::WIFSTOPPED(status) {
            break;
        }
        let signal = libc::WSTOPSIG(status);
        let event = status >> 16;
        let mut deliver = 0;
        if signal == libc::SIGTRAP && event == libc::PTRACE_EVENT_EXIT {
            peak = status_bytes(pid as u32, "VmHWM");
        } else if signal == libc::SIGTRAP && event != 0 {
            // A later exec (a command that execs another): nothing to do.
        } else if signal == libc::SIGTRAP && !execed {
            // The stop after exec: from here on, stop at the exit too, and at a later exec
            // rather than get a SIGTRAP for it; and if this process dies first, the child
            // with it.
            execed = true;
            let options =
                libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_TRACEEXEC | libc::PTRACE_O_EXITKILL;
            // SAFETY: ptrace on our stopped tracee.
            if unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, options) } < 0 {
                let e = std::io::Error::last_os_error();
                // SAFETY: as above; the child must not stay stopped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return Err(e);
            }
        } else {
            // A signal for the child: passed on as if it were not traced.
            deliver = signal;
        }
        // SAFETY: ptrace on our stopped tracee; the last argument is the signal to deliver.
        if unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, deliver) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = secs(usage.ru_utime) + secs(usage.ru_stime);
    Ok((
        wall,
        cpu,
        peak.unwrap_or(usage.ru_maxrss as u64 * 1024),
        std::process::ExitStatus::from_raw(status),
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    /// A small child is measured small even when the process measuring it is large (what
    /// `ru_maxrss` gets wrong), and a large one large.
    #[test]
    fn run_measured_gives_the_childs_own_peak() {
        let mut ballast = vec![1u8; 256 << 20];
        // Touch every page, so that it is resident.
        for page in ballast.chunks_mut(4096) {
            page[0] = 2;
        }
        let own = status_bytes(std::process::id(), "VmHWM").expect("own VmHWM");
        assert!(own > 256 << 20, "own peak {own}");
        let (_, _, small, status) = run_measured(&mut Command::new("true")).expect("running true");
        assert!(status.success());
        assert!(small < 64 << 20, "`true` measured at {small} bytes");
        let (_, _, large, status) = run_measured(Command::new("python3").args([
            "-c",
            "b = bytearray(160 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1",
        ]))
        .expect("running python3");
        assert!(status.success(), "{status:?}");
        assert!(
            (160 << 20..256 << 20).contains(&large),
            "python3 holding 160 MiB measured at {large} bytes"
        );
        // A signal the child gets still reaches it: killed by SIGTERM, it says so.
        let (_, _, _, status) =
            run_measured(Command::new("sh").args(["-c", "kill -TERM $$"])).expect("running sh");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        std::hint::black_box(&ballast);
    }
}
