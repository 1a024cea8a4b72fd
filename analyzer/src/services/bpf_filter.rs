//! Capture filters in libpcap's syntax (`tcp port 443 and host 10.0.0.7`), compiled and run by
//! libpcap itself, so an export filtered here keeps exactly what tcpdump and Wireshark would.
//!
//! libpcap is loaded when a filter is first asked for (`libpcap.so.0.8`, which tcpdump and
//! Wireshark install), not linked: Remora builds and runs without it, and only `bpf_filter`
//! needs it.

use std::{
    ffi::{CStr, CString, c_char, c_int, c_uint, c_void},
    sync::OnceLock,
};

/// DLT_RAW: packets start at the IP header, as the recorder keeps them.
const DLT_RAW: c_int = 12;
/// PCAP_NETMASK_UNKNOWN: broadcast tests are not needed.
const NETMASK_UNKNOWN: c_uint = 0xffff_ffff;

/// Why a filter cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// libpcap is not installed.
    #[error(
        "bpf_filter needs libpcap (libpcap.so.0.8): install it (`apt install libpcap0.8`) or \
         export without bpf_filter"
    )]
    NoLibpcap,
    /// The expression does not compile.
    #[error("bpf_filter `{expression}`: {message}")]
    Syntax {
        /// The expression.
        expression: String,
        /// libpcap's message.
        message: String,
    },
}

#[repr(C)]
struct BpfProgram {
    len: c_uint,
    insns: *mut c_void,
}

#[repr(C)]
struct PktHdr {
    tv_sec: libc::time_t,
    tv_usec: libc::suseconds_t,
    caplen: u32,
    len: u32,
}

type OpenDead = unsafe extern "C" fn(c_int, c_int) -> *mut c_void;
type Compile =
    unsafe extern "C" fn(*mut c_void, *mut BpfProgram, *const c_char, c_int, c_uint) -> c_int;
type OfflineFilter = unsafe extern "C" fn(*const BpfProgram, *const PktHdr, *const u8) -> c_int;
type FreeCode = unsafe extern "C" fn(*mut BpfProgram);
type Close = unsafe extern "C" fn(*mut c_void);
type GetErr = unsafe extern "C" fn(*mut c_void) -> *const c_char;

struct Libpcap {
    open_dead: OpenDead,
    compile: Compile,
    offline_filter: OfflineFilter,
    free_code: FreeCode,
    close: Close,
    get_err: GetErr,
}

fn libpcap() -> Option<&'static Libpcap> {
    static LIB: OnceLock<Option<Libpcap>> = OnceLock::new();
    LIB.get_or_init(|| {
        for name in [c"libpcap.so.0.8", c"libpcap.so.1", c"libpcap.so"] {
            // SAFETY: dlopen with a valid C string; the handle is kept for the process's life.
            let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            if handle.is_null() {
                continue;
            }
            let symbol = |s: &CStr| {
                // SAFETY: dlsym on a live handle with a valid C string.
                let p = unsafe { libc::dlsym(handle, s.as_ptr()) };
                (!p.is_null()).then_some(p)
            };
            let (Some(a), Some(b), Some(c), Some(d), Some(e), Some(f)) = (
                symbol(c"pcap_open_dead"),
                symbol(c"pcap_compile"),
                symbol(c"pcap_offline_filter"),
                symbol(c"pcap_freecode"),
                symbol(c"pcap_close"),
                symbol(c"pcap_geterr"),
            ) else {
                continue;
            };
            // SAFETY: these are libpcap's documented signatures for these symbols.
            return Some(unsafe {
                Libpcap {
                    open_dead: std::mem::transmute::<*mut c_void, OpenDead>(a),
                    compile: std::mem::transmute::<*mut c_void, Compile>(b),
                    offline_filter: std::mem::transmute::<*mut c_void, OfflineFilter>(c),
                    free_code: std::mem::transmute::<*mut c_void, FreeCode>(d),
                    close: std::mem::transmute::<*mut c_void, Close>(e),
                    get_err: std::mem::transmute::<*mut c_void, GetErr>(f),
                }
            });
        }
        None
    })
    .as_ref()
}

/// A compiled filter.
pub struct BpfFilter {
    lib: &'static Libpcap,
    program: BpfProgram,
}

// SAFETY: the program is plain memory owned by this value; pcap_offline_filter only reads it
// and keeps no state between calls.
unsafe impl Send for BpfFilter {}
// SAFETY: as above: matching only reads the program.
unsafe impl Sync for BpfFilter {}

impl std::fmt::Debug for BpfFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpfFilter")
            .field("instructions", &self.program.len)
            .finish()
    }
}

impl BpfFilter {
    /// Compiles `expression` for packets that start at the IP header.
    pub fn compile(expression: &str) -> Result<Self, FilterError> {
        let lib = libpcap().ok_or(FilterError::NoLibpcap)?;
        let syntax = |message: String| FilterError::Syntax {
            expression: expression.to_owned(),
            message,
        };
        let text = CString::new(expression).map_err(|_| syntax("contains a NUL byte".into()))?;
        // SAFETY: pcap_open_dead allocates a handle that is closed below.
        let handle = unsafe { (lib.open_dead)(DLT_RAW, 65535) };
        if handle.is_null() {
            return Err(syntax("libpcap could not open a handle".into()));
        }
        let mut program = BpfProgram {
            len: 0,
            insns: std::ptr::null_mut(),
        };
        // SAFETY: a live handle, a valid C string, and a program for libpcap to fill.
        let rc = unsafe { (lib.compile)(handle, &mut program, text.as_ptr(), 1, NETMASK_UNKNOWN) };
        let result = if rc == 0 {
            Ok(Self { lib, program })
        } else {
            // SAFETY: pcap_geterr returns a C string owned by the live handle.
            let message = unsafe { CStr::from_ptr((lib.get_err)(handle)) }
                .to_string_lossy()
                .into_owned();
            Err(syntax(message))
        };
        // SAFETY: the handle is not used after this; the program does not refer to it.
        unsafe { (lib.close)(handle) };
        result
    }

    /// Whether the filter keeps `packet` (captured bytes from the IP header on) whose length on
    /// the wire is `wire_len`.
    pub fn matches(&self, packet: &[u8], wire_len: u32) -> bool {
        let header = PktHdr {
            tv_sec: 0,
            tv_usec: 0,
            caplen: packet.len() as u32,
            len: wire_len.max(packet.len() as u32),
        };
        // SAFETY: the program is compiled; header and packet describe `packet.len()` bytes.
        unsafe { (self.lib.offline_filter)(&self.program, &header, packet.as_ptr()) != 0 }
    }
}

impl Drop for BpfFilter {
    fn drop(&mut self) {
        // SAFETY: the program was filled by pcap_compile and is freed once.
        unsafe { (self.lib.free_code)(&mut self.program) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4/TCP packet from 10.0.0.1:40000 to 10.0.0.2:`port`.
    fn tcp(port: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&port.to_be_bytes());
        p[32] = 0x50;
        p
    }

    #[test]
    fn libpcap_compiles_and_matches() {
        let f = BpfFilter::compile("tcp dst port 443 and src host 10.0.0.1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(f.matches(&tcp(443), 40));
        assert!(!f.matches(&tcp(80), 40));
        let e = BpfFilter::compile("tcp port nope")
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("tcp port nope")));
    }
}
