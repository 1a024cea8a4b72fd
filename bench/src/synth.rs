//! Synthetic calls for tests and benchmarks: a small shop (frontend, checkout, cart, payments,
//! a DNS server, external hosts) talking HTTP/1, HTTP/2, gRPC, DNS and TLS, with errors, slow
//! calls and unpaired halves, generated deterministically from a seed. Written through the same
//! table writer as real dissections (`remora_analyzer::pipeline::calls_batch`), so the Parquet
//! schema is the real one.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
};

use remora_dissect::{Call, Endpoint};

use remora_analyzer::services::workloads::{Peer, Resolve};

/// A deterministic pseudo-random source (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The shop's workloads: pod, service, namespace per address.
#[derive(Debug, Clone)]
pub struct Shop {
    peers: HashMap<IpAddr, Peer>,
}

/// Address (198.18.1.x), pod, namespace, service, process, pid.
const PODS: [(u8, &str, &str, &str, &str, u32); 6] = [
    (10, "frontend-7d9f8", "shop", "frontend", "node", 4242),
    (11, "frontend-5c2aa", "shop", "frontend", "", 0),
    (20, "checkout-0", "shop", "checkout", "checkout", 77),
    (21, "cart-6b1c9", "shop", "cart", "", 0),
    (22, "payments-1", "payments", "payments", "", 0),
    (53, "coredns-abcde", "kube-system", "kube-dns", "coredns", 1),
];

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 1, last))
}

impl Default for Shop {
    fn default() -> Self {
        let peers = PODS
            .iter()
            .map(|(last, pod, ns, svc, process, pid)| {
                (
                    ip(*last),
                    Peer {
                        pod_name: (*pod).to_owned(),
                        pod_namespace: (*ns).to_owned(),
                        service_name: (*svc).to_owned(),
                        service_namespace: (*ns).to_owned(),
                        node: format!("node-{}", last % 3),
                        process: (*process).to_owned(),
                        pid: *pid,
                    },
                )
            })
            .collect();
        Self { peers }
    }
}

impl Resolve for Shop {
    fn resolve(&self, endpoint: &Endpoint, _ts_ns: i64) -> Option<&Peer> {
        self.peers.get(&endpoint.ip)
    }
}

const HTTP_PATHS: [&str; 8] = [
    "/api/v1/checkout",
    "/api/v1/cart",
    "/api/v1/cart/items",
    "/health",
    "/static/app.js",
    "/api/v2/orders/123",
    "/login",
    "/api/v1/search",
];
const QUERIES: [&str; 6] = [
    "",
    "",
    "?page=2&sort=asc",
    "?q=red%20shoes",
    "?page=10",
    "?sort_by=name",
];
const STATUSES: [u16; 12] = [200, 200, 200, 200, 201, 204, 301, 400, 404, 500, 502, 503];
const DNS_NAMES: [&str; 5] = [
    "google.com",
    "checkout.shop.svc.cluster.local",
    "minexmr.com",
    "api.example.com",
    "db.internal",
];
const GRPC_METHODS: [&str; 3] = [
    "/shop.Checkout/Charge",
    "/shop.Cart/GetCart",
    "/grpc.health.v1.Health/Check",
];

fn headers(pairs: &[(&str, &str)]) -> remora_dissect::Headers {
    pairs.iter().copied().collect()
}

/// `n` calls starting at `start_ns`, about 1 ms apart, connection ids from `first_conn`.
pub fn calls(rng: &mut Rng, n: usize, start_ns: i64, first_conn: u64) -> Vec<Call> {
    let mut out = Vec::with_capacity(n);
    let clients = [10u8, 11, 20, 21, 99];
    for i in 0..n {
        let ts = start_ns + i as i64 * 1_000_000 + rng.below(1_000_000) as i64;
        let client = ip(*rng.pick(&clients));
        let src = Endpoint {
            ip: client,
            port: 32768 + rng.below(20000) as u16,
        };
        let kind = rng.below(100);
        let mut call = if kind < 60 {
            http1(rng, src)
        } else if kind < 70 {
            http2(rng, src, false)
        } else if kind < 80 {
            http2(rng, src, true)
        } else if kind < 92 {
            dns(rng, src)
        } else {
            tls(rng, src)
        };
        call.timestamp_ns = ts;
        call.conn_id = first_conn + i as u64 / 3;
        call.index = (i % 3) as u32;
        call.has_request = true;
        call.has_response = true;
        if call.protocol != "DNS" && rng.chance(70) {
            call.tcp_handshake_us = Some(50 + rng.below(5000) as i64);
        }
        if rng.chance(5) {
            call.error_type = Some(*rng.pick(&["pair_not_found", "tcp_reset", "parse_error"]));
            call.has_response = false;
            call.status_code = 0;
            call.elapsed_us = None;
        } else if call.protocol != "TLS" {
            let slow = rng.chance(3);
            call.elapsed_us = Some(if slow {
                1_000_000 + rng.below(9_000_000) as i64
            } else {
                100 + rng.below(200_000) as i64
            });
        }
        remora_dissect::call::correlate(&mut call);
        out.push(call);
    }
    out
}

fn server(rng: &mut Rng, port: u16) -> Endpoint {
    Endpoint {
        ip: ip(*rng.pick(&[20u8, 21, 22, 10, 77])),
        port,
    }
}

fn http1(rng: &mut Rng, src: Endpoint) -> Call {
    let port = *rng.pick(&[80u16, 8080, 8080]);
    let dst = server(rng, port);
    let mut c = Call::new("HTTP", src, dst);
    c.method = (*rng.pick(&["GET", "GET", "GET", "POST", "PUT", "DELETE"])).to_owned();
    c.path = (*rng.pick(&HTTP_PATHS)).to_owned();
    c.url = format!("{}{}", c.path, rng.pick(&QUERIES));
    c.host = (*rng.pick(&["shop.example", "checkout", "cart:8080"])).to_owned();
    c.http_version = *rng.pick(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]);
    c.status_code = *rng.pick(&STATUSES);
    let owned_host = c.host.clone();
    let mut req = vec![
        ("Host", owned_host.as_str()),
        (
            "User-Agent",
            *rng.pick(&["curl/8.5.0", "Go-http-client/1.1", "python-requests/2.31"]),
        ),
    ];
    if c.method != "GET" {
        req.push((
            "Content-Type",
            *rng.pick(&["application/json", "text/plain"]),
        ));
    }
    if rng.chance(40) {
        req.push(("X-Request-Id", *rng.pick(&["req-1", "req-2", "abc-123"])));
    }
    if rng.chance(20) {
        req.push(("Authorization", "Bearer secret-token"));
    }
    if rng.chance(10) {
        req.push((
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
    }
    c.request_headers = headers(&req);
    let mut resp = vec![(
        "Content-Type",
        *rng.pick(&["application/json", "text/html", "application/javascript"]),
    )];
    if rng.chance(15) {
        resp.push(("Set-Cookie", "session=abc; HttpOnly"));
    }
    c.response_headers = headers(&resp);
    c.request_body = if c.method == "GET" {
        Vec::new()
    } else {
        b"{\"item\":42}".to_vec()
    };
    c.response_body = if c.status_code >= 500 {
        b"upstream unavailable".to_vec()
    } else {
        b"{\"ok\":true}".to_vec()
    };
    c.request_body_size = c.request_body.len() as u64;
    c.response_body_size = rng.below(3_000_000);
    c.request_headers_size = 40 + rng.below(400);
    c.response_headers_size = 40 + rng.below(400);
    c
}

fn http2(rng: &mut Rng, src: Endpoint, grpc: bool) -> Call {
    let dst = server(rng, if grpc { 50051 } else { 8443 });
    let mut c = Call::new(if grpc { "gRPC" } else { "HTTP/2" }, src, dst);
    c.http_version = "HTTP/2";
    if grpc {
        c.method = "POST".into();
        c.grpc_method = (*rng.pick(&GRPC_METHODS)).to_owned();
        c.path = c.grpc_method.clone();
        c.url = c.path.clone();
        c.status_code = 200;
        c.grpc_status = *rng.pick(&[Some(0), Some(0), Some(0), Some(2), Some(14), None]);
        c.request_headers = headers(&[("content-type", "application/grpc"), ("te", "trailers")]);
        c.response_headers = match c.grpc_status {
            Some(s) => headers(&[("grpc-status", &s.to_string())]),
            None => remora_dissect::Headers::new(),
        };
    } else {
        c.method = (*rng.pick(&["GET", "POST"])).to_owned();
        c.path = (*rng.pick(&HTTP_PATHS)).to_owned();
        c.url = format!("{}{}", c.path, rng.pick(&QUERIES));
        c.status_code = *rng.pick(&STATUSES);
        c.request_headers = headers(&[(":authority", "shop.example"), ("accept", "*/*")]);
        c.response_headers = headers(&[("content-type", "application/json")]);
    }
    c.host = "shop.example".into();
    c.response_body_size = rng.below(100_000);
    c.request_headers_size = 20 + rng.below(100);
    c.response_headers_size = 10 + rng.below(100);
    c
}

fn dns(rng: &mut Rng, src: Endpoint) -> Call {
    let dst = Endpoint {
        ip: ip(53),
        port: 53,
    };
    let mut c = Call::new("DNS", src, dst);
    c.transport = if rng.chance(90) { "udp" } else { "tcp" };
    c.method = "QUERY".into();
    let mut names = vec![(*rng.pick(&DNS_NAMES)).to_owned()];
    if rng.chance(10) {
        names.push((*rng.pick(&DNS_NAMES)).to_owned());
    }
    c.dns_question_types = names
        .iter()
        .map(|_| (*rng.pick(&["A", "A", "AAAA", "CNAME"])).to_owned())
        .collect();
    c.path = names[0].clone();
    c.url = c.path.clone();
    c.dns_questions = names;
    c.status_code = *rng.pick(&[0u16, 0, 0, 0, 3, 2]);
    if c.status_code == 0 {
        let answers = 1 + rng.below(3);
        c.dns_answers = (0..answers)
            .map(|k| format!("198.18.9.{}", 1 + k + rng.below(3)))
            .collect();
        if c.dns_question_types.first().is_some_and(|t| t == "CNAME") {
            c.dns_answers.insert(0, "edge.example.net".into());
        }
    }
    c
}

fn tls(rng: &mut Rng, src: Endpoint) -> Call {
    let dst = server(rng, 443);
    let mut c = Call::new("TLS", src, dst);
    let sni = (*rng.pick(&["api.example.com", "google.com", "", "payments.shop.svc"])).to_owned();
    let v13 = rng.chance(60);
    c.tls = Some(Box::new(remora_dissect::tls::TlsInfo {
        client_version: 0x0303,
        supported_versions: if v13 {
            vec![0x0304, 0x0303]
        } else {
            Vec::new()
        },
        sni: sni.clone(),
        alpn: if rng.chance(70) {
            vec!["h2".into(), "http/1.1".into()]
        } else {
            vec!["http/1.1".into()]
        },
        server_version: Some(0x0303),
        server_supported_version: v13.then_some(0x0304),
        server_alpn: None,
        cipher: Some(0x1301),
    }));
    c.path = sni;
    c
}

const L7S: [&str; 5] = ["HTTP", "HTTP/2", "TLS", "DNS", ""];
/// How synthetic connections end (`rst` only with a reset, `fin` most often).
const CLOSES: [&str; 6] = ["rst", "fin", "fin", "half_closed", "open", "timeout"];

/// `n` TCP connections from `start_ns`: handshakes, byte counts, retransmissions, resets.
pub fn conns(rng: &mut Rng, n: usize, start_ns: i64) -> Vec<remora_dissect::Conn> {
    (0..n)
        .map(|i| {
            let first = start_ns + i as i64 * 1_000_000;
            let src = Endpoint {
                ip: ip(*rng.pick(&[10u8, 11, 20, 99])),
                port: 32768 + rng.below(20000) as u16,
            };
            let port = *rng.pick(&[80u16, 443, 8080, 50051]);
            let dst = server(rng, port);
            let resets = u32::from(rng.chance(10));
            remora_dissect::Conn {
                conn_id: 1 + i as u64,
                src,
                dst,
                first_ns: first,
                last_ns: first + rng.below(60_000_000_000) as i64,
                handshake_us: rng.chance(80).then(|| 20 + rng.below(200_000) as i64),
                packets: [1 + rng.below(500), rng.below(800)],
                bytes: [rng.below(2_000_000), rng.below(20_000_000)],
                retransmissions: [rng.below(3), rng.below(5)],
                out_of_order: [rng.below(2), rng.below(2)],
                lost_segments: [rng.below(2), rng.below(2)],
                zero_windows: [0, rng.below(2)],
                dup_acks: [rng.below(4), rng.below(4)],
                data_rtt_us: rng.chance(70).then(|| 20 + rng.below(100_000) as i64),
                fins: *rng.pick(&[0u32, 1, 2, 2]),
                resets,
                rst_by: (resets > 0).then(|| *rng.pick(&["client", "server"])),
                rst_ns: (resets > 0).then_some(first + 1_000_000),
                close: CLOSES[if resets > 0 {
                    0
                } else {
                    1 + rng.below(CLOSES.len() as u64 - 1) as usize
                }],
                l7: L7S[rng.below(L7S.len() as u64) as usize],
                nat: None,
            }
        })
        .collect()
}
