//! A fake Kubernetes API server for the tests: the list and watch protocol of the real one
//! (resourceVersion, `allowWatchBookmarks`, a 410 Gone for a version it no longer has, 403 for
//! a forbidden resource, bearer-token auth), serving real-shaped JSON for Pods, Services,
//! EndpointSlices, Nodes and Namespaces, so that the real kube-rs client in `remora` is what
//! is tested. No cluster can run on the test machines; this is the stand-in.
//!
//! It runs on threads of the test process; [`FakeKube::start_in`] binds it inside a network
//! namespace so that a `remora` started there reaches it on 127.0.0.1.

use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpListener, TcpStream},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::netns::NetNs;

/// The bearer token the fake server accepts.
pub const TOKEN: &str = "fake-kube-token";
/// How long the fake server keeps a watch open before ending it (the client then watches
/// again from the last version it saw: a bookmark's when nothing changed).
const WATCH_FOR: Duration = Duration::from_secs(3);

/// The resources served: (resource, path, kind, apiVersion).
const RESOURCES: [(&str, &str, &str, &str); 5] = [
    ("pods", "/api/v1/pods", "Pod", "v1"),
    ("services", "/api/v1/services", "Service", "v1"),
    (
        "endpointslices",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "EndpointSlice",
        "discovery.k8s.io/v1",
    ),
    ("nodes", "/api/v1/nodes", "Node", "v1"),
    ("namespaces", "/api/v1/namespaces", "Namespace", "v1"),
];

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<(String, String), Value>,
    events: Vec<(u64, String, &'static str, Value)>,
    /// Watches asking for a version below this get 410 Gone.
    expired_below: u64,
    /// Bumped to end every open watch.
    epoch: u64,
    forbidden: HashSet<String>,
    /// Every request: "GET /api/v1/pods?watch=1&resourceVersion=7".
    requests: Vec<String>,
    /// Versions sent in bookmarks.
    bookmarks: Vec<u64>,
}

/// The fake API server; stops accepting when dropped.
pub struct FakeKube {
    state: Arc<(Mutex<State>, Condvar)>,
    /// Its port on 127.0.0.1 (in the namespace it was started in).
    pub port: u16,
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeKube {
    /// Starts the server on 127.0.0.1 inside `ns`.
    pub fn start_in(ns: &NetNs) -> Self {
        let path = format!("/var/run/netns/{}", ns.name);
        let (tx, rx) = std::sync::mpsc::channel();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let shared = state.clone();
        std::thread::spawn(move || {
            // This thread (and the threads it starts) live in the namespace.
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns with a namespace file we opened; it changes this thread only.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {path}");
            let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake API server");
            let _ = tx.send(listener.local_addr().map(|a| a.port()).unwrap_or(0));
            for conn in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve(conn, &state));
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("fake API server started");
        Self { state, port }
    }

    /// A kubeconfig for this server, with [`TOKEN`].
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\ncurrent-context: fake\nusers:\n- name: tester\n  user:\n    token: {TOKEN}\n",
            self.port
        )
    }

    /// Creates or replaces an object of `resource` (`pods`, ...): ADDED or MODIFIED.
    pub fn apply(&self, resource: &str, mut object: Value) {
        let (m, cv) = &*self.state;
        let mut s = lock(m);
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = (resource.to_owned(), key_of(&object));
        let kind = if s.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.objects.insert(key, object.clone());
        s.events.push((rv, resource.to_owned(), kind, object));
        cv.notify_all();
    }

    /// Deletes an object: DELETED.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) {
        let (m, cv) = &*self.state;
        let mut s = lock(m);
        let key = (resource.to_owned(), format!("{namespace}/{name}"));
        if let Some(mut object) = s.objects.remove(&key) {
            s.rv += 1;
            let rv = s.rv;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            s.events.push((rv, resource.to_owned(), "DELETED", object));
            cv.notify_all();
        }
    }

    /// Forgets every version up to now, as etcd compaction does, and ends open watches: a
    /// client resuming from an older version gets 410 Gone and must list again.
    pub fn expire(&self) {
        let (m, cv) = &*self.state;
        let mut s = lock(m);
        s.expired_below = s.rv + 1;
        s.epoch += 1;
        cv.notify_all();
    }

    /// Answers 403 Forbidden for `resource`, as RBAC without list/watch would.
    pub fn forbid(&self, resource: &str) {
        lock(&self.state.0).forbidden.insert(resource.to_owned());
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state.0).requests.clone()
    }

    /// Versions sent as bookmarks.
    pub fn bookmarks(&self) -> Vec<u64> {
        lock(&self.state.0).bookmarks.clone()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        // End open watches; the listener thread stays blocked in accept until the test exits
        // (its namespace is deleted with the test's guard).
        self.expire();
    }
}

fn key_of(object: &Value) -> String {
    format!(
        "{}/{}",
        object["metadata"]["namespace"].as_str().unwrap_or(""),
        object["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn respond(conn: &mut TcpStream, code: u16, body: &Value) {
    let text = body.to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn chunk(conn: &mut TcpStream, line: &Value) -> bool {
    let text = format!("{line}\n");
    write!(conn, "{:x}\r\n{text}\r\n", text.len()).is_ok() && conn.flush().is_ok()
}

fn serve(mut conn: TcpStream, state: &(Mutex<State>, Condvar)) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if line.to_ascii_lowercase().starts_with("authorization:") && line.contains(TOKEN) {
            authorized = true;
        }
    }
    let target = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
    lock(&state.0).requests.push(format!("GET {target}"));
    if !authorized {
        return respond(&mut conn, 401, &status(401, "Unauthorized", "Unauthorized"));
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let params: BTreeMap<&str, &str> = query.split('&').filter_map(|p| p.split_once('=')).collect();
    // A namespaced list (`/api/v1/namespaces/<ns>/pods`) is the cluster-wide one, filtered.
    let (path, only_namespace) = match path
        .strip_prefix("/api/v1/namespaces/")
        .and_then(|rest| rest.split_once('/'))
    {
        Some((ns, kind)) => (format!("/api/v1/{kind}"), Some(ns.to_owned())),
        None => (path.to_owned(), None),
    };
    let selector: Vec<(String, String)> = params
        .get("labelSelector")
        .map(|s| percent_decode(s))
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    let selected = |o: &Value| {
        only_namespace
            .as_deref()
            .is_none_or(|ns| o["metadata"]["namespace"] == ns)
            && selector
                .iter()
                .all(|(k, v)| o["metadata"]["labels"][k.as_str()] == v.as_str())
    };
    let Some(&(resource, _, kind, api_version)) = RESOURCES.iter().find(|r| r.1 == path) else {
        return respond(
            &mut conn,
            404,
            &status(404, "NotFound", &format!("{path} not found")),
        );
    };
    if lock(&state.0).forbidden.contains(resource) {
        let message = format!(
            "{resource} is forbidden: User \"system:serviceaccount:remora:remora-analyzer\" cannot list resource \"{resource}\" at the cluster scope"
        );
        return respond(&mut conn, 403, &status(403, "Forbidden", &message));
    }
    let watching = matches!(params.get("watch"), Some(&"true" | &"1"));
    if !watching {
        let s = lock(&state.0);
        let items: Vec<Value> = s
            .objects
            .iter()
            .filter(|((r, _), o)| r == resource && selected(o))
            .map(|(_, o)| o.clone())
            .collect();
        let body = json!({"kind": format!("{kind}List"), "apiVersion": api_version,
                          "metadata": {"resourceVersion": s.rv.to_string()}, "items": items});
        drop(s);
        return respond(&mut conn, 200, &body);
    }
    let from: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = params.get("allowWatchBookmarks") == Some(&"true");
    if conn
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return;
    }
    let (m, cv) = state;
    let mut s = lock(m);
    if from < s.expired_below {
        drop(s);
        let gone = status(410, "Expired", &format!("too old resource version: {from}"));
        chunk(&mut conn, &json!({"type": "ERROR", "object": gone}));
        let _ = conn.write_all(b"0\r\n\r\n");
        return;
    }
    let epoch = s.epoch;
    let mut sent = from;
    let until = Instant::now() + WATCH_FOR;
    loop {
        let new: Vec<(u64, &'static str, Value)> = s
            .events
            .iter()
            .filter(|(rv, r, _, _)| *rv > sent && r == resource)
            .map(|(rv, _, t, o)| (*rv, *t, o.clone()))
            .collect();
        let now_rv = s.rv;
        drop(s);
        for (rv, kind, object) in new {
            if !chunk(&mut conn, &json!({"type": kind, "object": object})) {
                return;
            }
            sent = rv;
        }
        if bookmarks && now_rv > sent {
            let mark = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                              "metadata": {"resourceVersion": now_rv.to_string()}}});
            if !chunk(&mut conn, &mark) {
                return;
            }
            sent = now_rv;
            lock(m).bookmarks.push(now_rv);
        }
        s = lock(m);
        if s.epoch != epoch || Instant::now() >= until {
            break;
        }
        s = cv
            .wait_timeout(s, Duration::from_millis(200))
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
        if s.epoch != epoch {
            break;
        }
    }
    drop(s);
    let _ = conn.write_all(b"0\r\n\r\n");
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3339 for unix seconds (what `metadata.creationTimestamp` holds).
pub fn rfc3339(unix_s: i64) -> String {
    let days = unix_s.div_euclid(86_400);
    let secs = unix_s.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn meta(name: &str, namespace: Option<&str>, labels: &[(&str, &str)]) -> Value {
    let mut m = json!({
        "name": name,
        "uid": format!("{:08x}-0000-4000-8000-{:012x}", name.len(), now_s()),
        "creationTimestamp": rfc3339(now_s()),
        "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

/// A running pod on `node` with `ip`.
pub fn pod(name: &str, namespace: &str, ip: &str, node: &str, labels: &[(&str, &str)]) -> Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": meta(name, Some(namespace), labels),
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.example/app:1"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "198.18.9.1",
                   "startTime": rfc3339(now_s())},
    })
}

/// A running pod on the host network of `node` (address `host_ip`), with a given `uid`.
pub fn host_network_pod(
    name: &str,
    namespace: &str,
    uid: &str,
    host_ip: &str,
    node: &str,
) -> Value {
    let mut p = pod(name, namespace, host_ip, node, &[("app", name)]);
    p["metadata"]["uid"] = json!(uid);
    p["spec"]["hostNetwork"] = json!(true);
    p["status"]["hostIP"] = json!(host_ip);
    p
}

/// A ClusterIP service.
pub fn service(name: &str, namespace: &str, cluster_ip: &str, selector: &[(&str, &str)]) -> Value {
    json!({
        "kind": "Service", "apiVersion": "v1",
        "metadata": meta(name, Some(namespace), &[("app", name)]),
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                 "selector": selector.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}]},
        "status": {"loadBalancer": {}},
    })
}

/// The EndpointSlice of `service` with `addresses` (each `(ip, pod)`).
pub fn endpoint_slice(service: &str, namespace: &str, addresses: &[(&str, &str)]) -> Value {
    json!({
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": meta(&format!("{service}-x7k2p"), Some(namespace), &[("kubernetes.io/service-name", service)]),
        "addressType": "IPv4",
        "endpoints": addresses.iter().map(|(ip, pod)| json!({
            "addresses": [ip], "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod},
        })).collect::<Vec<_>>(),
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
    })
}

/// A node with an InternalIP.
pub fn node(name: &str, ip: &str) -> Value {
    json!({
        "kind": "Node", "apiVersion": "v1",
        "metadata": meta(name, None, &[("kubernetes.io/hostname", name)]),
        "spec": {},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]},
    })
}

/// A namespace.
pub fn namespace(name: &str) -> Value {
    json!({"kind": "Namespace", "apiVersion": "v1", "metadata": meta(name, None, &[]),
           "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1796255999), "2026-12-02T23:59:59Z");
    }
}
