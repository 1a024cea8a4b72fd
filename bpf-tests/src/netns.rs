//! Network namespaces and veth pairs with guards that delete them.

use std::process::Command;

/// Runs a command and panics with its output when it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "`{cmd} {}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop (with everything in it).
pub struct NetNs {
    /// Its name (for `ip netns exec`).
    pub name: String,
}

impl NetNs {
    /// Creates `rmr-<tag>-<pid>`, brings `lo` up and turns IPv6 off so that no background
    /// router/neighbour chatter appears in captures.
    pub fn new(tag: &str) -> Self {
        let name = format!("rmr-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.exec_ok("ip", &["link", "set", "lo", "up"]);
        ns.exec_ok("sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec_ok("sysctl", &["-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns
    }

    /// `ip netns exec <ns> cmd args...` as a Command, for spawning.
    pub fn command(&self, cmd: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, cmd]);
        c
    }

    /// Runs a command inside the namespace and returns its stdout; panics when it fails.
    pub fn exec_ok(&self, cmd: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", self.name.as_str(), cmd];
        full.extend_from_slice(args);
        run("ip", &full)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two namespaces joined by a veth pair: `a` (198.18.0.1/24 on `veth-a`) and `b`
/// (198.18.0.2/24 on `veth-b`).
pub struct VethPair {
    /// Side A (usually where the recorder runs).
    pub a: NetNs,
    /// Side B (usually the server).
    pub b: NetNs,
}

/// Address of side A.
pub const ADDR_A: &str = "198.18.0.1";
/// Address of side B.
pub const ADDR_B: &str = "198.18.0.2";
/// Interface name on side A.
pub const IF_A: &str = "veth-a";
/// Interface name on side B.
pub const IF_B: &str = "veth-b";

impl VethPair {
    /// Creates both namespaces and the link between them.
    pub fn new(tag: &str) -> Self {
        let a = NetNs::new(&format!("{tag}a"));
        let b = NetNs::new(&format!("{tag}b"));
        a.exec_ok(
            "ip",
            &[
                "link", "add", IF_A, "type", "veth", "peer", "name", IF_B, "netns", &b.name,
            ],
        );
        a.exec_ok("ip", &["addr", "add", &format!("{ADDR_A}/24"), "dev", IF_A]);
        b.exec_ok("ip", &["addr", "add", &format!("{ADDR_B}/24"), "dev", IF_B]);
        a.exec_ok("ip", &["link", "set", IF_A, "up"]);
        b.exec_ok("ip", &["link", "set", IF_B, "up"]);
        Self { a, b }
    }
}

/// Nodes on one network: a fabric namespace with a bridge (and the hub's address on it) and
/// one namespace per node, each joined to the bridge by a veth (`eth0`, 198.18.50.<i+1>/24),
/// forwarding on. Pods are namespaces behind a node ([`Fabric::pod`]).
pub struct Fabric {
    /// The bridge's namespace, where the analyzer runs ([`HUB_ADDR`]).
    pub hub: NetNs,
    /// The nodes, in order.
    pub nodes: Vec<NetNs>,
}

/// The hub's address on the fabric.
pub const HUB_ADDR: &str = "198.18.50.254";

/// The address of node `i` on the fabric.
pub fn node_ip(i: usize) -> String {
    format!("198.18.50.{}", i + 1)
}

impl Fabric {
    /// A fabric with `count` nodes (namespaces `rmr-<tag><i>-<pid>`).
    pub fn new(tag: &str, count: usize) -> Self {
        let hub = NetNs::new(&format!("{tag}h"));
        hub.exec_ok("ip", &["link", "add", "br0", "type", "bridge"]);
        hub.exec_ok(
            "ip",
            &["addr", "add", &format!("{HUB_ADDR}/24"), "dev", "br0"],
        );
        hub.exec_ok("ip", &["link", "set", "br0", "up"]);
        let nodes: Vec<NetNs> = (0..count)
            .map(|i| NetNs::new(&format!("{tag}{i}")))
            .collect();
        for (i, node) in nodes.iter().enumerate() {
            let port = format!("up{i}");
            node.exec_ok(
                "ip",
                &[
                    "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                    &hub.name,
                ],
            );
            node.exec_ok(
                "ip",
                &["addr", "add", &format!("{}/24", node_ip(i)), "dev", "eth0"],
            );
            node.exec_ok("ip", &["link", "set", "eth0", "up"]);
            node.exec_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
            hub.exec_ok("ip", &["link", "set", &port, "master", "br0", "up"]);
        }
        Self { hub, nodes }
    }

    /// A pod namespace behind node `node`: `eth0` at `<subnet>.2/24`, the node's side at
    /// `<subnet>.1`, default route through the node. Other nodes reach it with
    /// [`route`](Self::route).
    pub fn pod(&self, tag: &str, node: usize, subnet: &str) -> NetNs {
        let ns = NetNs::new(tag);
        let host_side = format!("v{tag}");
        let n = &self.nodes[node];
        n.exec_ok(
            "ip",
            &[
                "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns",
                &ns.name,
            ],
        );
        n.exec_ok(
            "ip",
            &["addr", "add", &format!("{subnet}.1/24"), "dev", &host_side],
        );
        n.exec_ok("ip", &["link", "set", &host_side, "up"]);
        ns.exec_ok(
            "ip",
            &["addr", "add", &format!("{subnet}.2/24"), "dev", "eth0"],
        );
        ns.exec_ok("ip", &["link", "set", "eth0", "up"]);
        ns.exec_ok(
            "ip",
            &["route", "add", "default", "via", &format!("{subnet}.1")],
        );
        ns
    }

    /// Node `from` reaches `<subnet>.0/24` through node `via`.
    pub fn route(&self, from: usize, subnet: &str, via: usize) {
        self.nodes[from].exec_ok(
            "ip",
            &[
                "route",
                "add",
                &format!("{subnet}.0/24"),
                "via",
                &node_ip(via),
            ],
        );
    }
}
