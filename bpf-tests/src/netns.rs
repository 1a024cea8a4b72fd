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
