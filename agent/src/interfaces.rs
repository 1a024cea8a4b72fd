//! Which network interfaces exist, and which are up, read from `/sys/class/net`.
//!
//! sysfs shows the interfaces of the reader's network namespace, which is the namespace the TC
//! hooks attach in, so the two always agree.

use std::{fs, path::Path};

use crate::error::{AgentError, Result};

/// ARPHRD_ETHER: Ethernet-like devices (eth, veth, bridges).
const ARPHRD_ETHER: u16 = 1;
/// ARPHRD_LOOPBACK: `lo` (carries a zeroed Ethernet header).
const ARPHRD_LOOPBACK: u16 = 772;

/// One network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Kernel name, e.g. `eth0`.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// Link type (`ARPHRD_*`).
    pub link_type: u16,
    /// True when the interface is administratively and operationally able to carry traffic.
    pub up: bool,
}

impl Interface {
    /// Bytes of link-layer header in front of the network header on this interface.
    pub fn l2_header_len(&self) -> usize {
        match self.link_type {
            ARPHRD_ETHER | ARPHRD_LOOPBACK => 14,
            _ => 0,
        }
    }

    /// True for the loopback device, where one hook (egress) already sees every packet once.
    pub fn is_loopback(&self) -> bool {
        self.link_type == ARPHRD_LOOPBACK
    }
}

/// Lists the interfaces under `sys_class_net` (normally `/sys/class/net`), sorted by index.
pub fn list_in(sys_class_net: &Path) -> Result<Vec<Interface>> {
    let entries = fs::read_dir(sys_class_net)
        .map_err(|e| AgentError::io(format!("listing {}", sys_class_net.display()), e))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let read = |file: &str| fs::read_to_string(dir.join(file)).map(|s| s.trim().to_owned());
        // An interface can vanish between read_dir and these reads; skip it then.
        let (Ok(ifindex), Ok(link_type)) = (read("ifindex"), read("type")) else {
            continue;
        };
        let (Ok(ifindex), Ok(link_type)) = (ifindex.parse(), link_type.parse()) else {
            continue;
        };
        let flags = read("flags")
            .ok()
            .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);
        let operstate = read("operstate").unwrap_or_default();
        // IFF_UP set, and the carrier either up or not reported (lo says "unknown").
        let up = flags & 1 == 1 && (operstate == "up" || operstate == "unknown");
        out.push(Interface {
            name,
            ifindex,
            link_type,
            up,
        });
    }
    out.sort_by_key(|i| i.ifindex);
    Ok(out)
}

/// Lists this namespace's interfaces.
pub fn list() -> Result<Vec<Interface>> {
    list_in(Path::new("/sys/class/net"))
}

/// Resolves the interfaces to record: the named ones (all must exist), or every interface that
/// is up when `names` is empty.
pub fn select(all: &[Interface], names: &[String]) -> Result<Vec<Interface>> {
    if names.is_empty() {
        return Ok(all.iter().filter(|i| i.up).cloned().collect());
    }
    names
        .iter()
        .map(|name| {
            all.iter()
                .find(|i| &i.name == name)
                .cloned()
                .ok_or_else(|| AgentError::NoSuchInterface {
                    name: name.clone(),
                    available: all
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(dir: &Path, name: &str, ifindex: u32, link_type: u16, flags: &str, oper: &str) {
        let d = dir.join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("ifindex"), format!("{ifindex}\n")).unwrap();
        fs::write(d.join("type"), format!("{link_type}\n")).unwrap();
        fs::write(d.join("flags"), format!("{flags}\n")).unwrap();
        fs::write(d.join("operstate"), format!("{oper}\n")).unwrap();
    }

    #[test]
    fn lists_and_selects() {
        let tmp = tempfile::tempdir().unwrap();
        fake(tmp.path(), "lo", 1, 772, "0x9", "unknown");
        fake(tmp.path(), "eth0", 2, 1, "0x1003", "up");
        fake(tmp.path(), "veth9", 7, 1, "0x1002", "down");
        fake(tmp.path(), "wg0", 9, 65534, "0x91", "unknown");
        let all = list_in(tmp.path()).unwrap();
        assert_eq!(
            all.iter()
                .map(|i| (i.name.as_str(), i.up))
                .collect::<Vec<_>>(),
            [
                ("lo", true),
                ("eth0", true),
                ("veth9", false),
                ("wg0", true)
            ]
        );
        assert_eq!(all[0].l2_header_len(), 14);
        assert!(all[0].is_loopback());
        assert_eq!(all[3].l2_header_len(), 0);
        let up: Vec<_> = select(&all, &[])
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(up, ["lo", "eth0", "wg0"]);
        let err = select(&all, &["nope0".to_owned()]).unwrap_err().to_string();
        assert!(err.contains("`nope0` does not exist"), "{err}");
        assert!(err.contains("lo, eth0, veth9, wg0"), "{err}");
    }
}

/// Every IPv4 and IPv6 address of this network namespace's interfaces (getifaddrs), sorted.
/// Used to turn an API listening on every address into exact endpoints to leave out.
pub fn local_addresses() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs; each node's
    // ifa_addr is either null or points at a sockaddr of the family it names.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut node = head;
        while !node.is_null() {
            let addr = (*node).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(addr as *const libc::sockaddr_in);
                        out.push(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                            u32::from_be(v4.sin_addr.s_addr),
                        )));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(std::net::IpAddr::V6(std::net::Ipv6Addr::from(
                            v6.sin6_addr.s6_addr,
                        )));
                    }
                    _ => {}
                }
            }
            node = (*node).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod address_tests {
    #[test]
    fn loopback_is_among_the_local_addresses() {
        let all = super::local_addresses();
        assert!(
            all.contains(&std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            "{all:?}"
        );
    }
}
