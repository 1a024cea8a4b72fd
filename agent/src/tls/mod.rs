//! TLS plaintext: uprobes on the TLS libraries the node's processes map
//! (`agent-ebpf/src/tls.rs`), attached once per distinct file and again as new files appear,
//! and the thread that drains their ring into `tls` slices.
//!
//! Supported: OpenSSL's libssl (1.1 and 3.x export the four calls; 1.0 lacks the `_ex`
//! variants, which are then skipped). What is not hooked is said per library and process
//! (`Probes::status`), so an empty result is never mistaken for "no traffic".

pub mod discover;
pub mod go;
pub mod slices;
pub mod status;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, atomic::AtomicBool},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{UProbe, uprobe::UProbeScope},
};
use remora_agent_common::{TLS_CHUNK_HEADER_BYTES, TlsChunkHeader, TlsCounters};

use crate::{
    clock::TaiToUtc,
    error::{AgentError, Result},
    sockets::record::SocketIds,
};
use discover::{FileId, Library};
use slices::TlsRow;

/// Go's probes (`agent-ebpf/src/gotls.rs`): entries, and the program put on every `RET`.
const GO_WRITE_PROGRAM: &str = "remora_go_write";
const GO_READ_PROGRAM: &str = "remora_go_read";
const GO_RETURN_PROGRAM: &str = "remora_go_ret";

/// Entry probes: (program, symbol).
const ENTRIES: [(&str, &str); 5] = [
    ("remora_ssl_write", "SSL_write"),
    ("remora_ssl_write_ex", "SSL_write_ex"),
    ("remora_ssl_read", "SSL_read"),
    ("remora_ssl_read_ex", "SSL_read_ex"),
    ("remora_ssl_set_fd", "SSL_set_fd"),
];
/// The return probe, on each of these.
const RETURN_PROGRAM: &str = "remora_ssl_ret";
const RETURNS: [&str; 4] = ["SSL_write", "SSL_write_ex", "SSL_read", "SSL_read_ex"];
/// Without these two there is no plaintext to read.
const REQUIRED: [&str; 2] = ["SSL_write", "SSL_read"];

/// How one library file is hooked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LibraryStatus {
    /// The path as its processes see it.
    pub path: String,
    /// `openssl`.
    pub kind: &'static str,
    /// Processes that mapped it when last scanned.
    pub pids: Vec<u32>,
    /// Plaintext is read from it.
    pub hooked: bool,
    /// Symbols that could not be hooked, and why (an optional symbol missing is not fatal).
    pub missing: Vec<String>,
    /// Why it is not hooked.
    pub error: Option<String>,
    /// What was hooked (Go: the version and the RETs probed).
    pub detail: Option<String>,
}

/// The TLS probes: what is attached, and to what.
pub struct Probes {
    libraries: BTreeMap<FileId, LibraryStatus>,
    /// pid → library path, for the rows' `lib`.
    libs_by_pid: Arc<Mutex<HashMap<u32, String>>>,
    proc: PathBuf,
    /// Processes whose maps were read; only new ones are read, but all again now and then
    /// (a library loaded later with dlopen).
    scanned: std::collections::HashSet<u32>,
    full_scan_at: Instant,
    /// Executables read already that are not Go (not read again).
    not_go: std::collections::HashSet<FileId>,
}

/// How often every process's maps are read again.
const FULL_SCAN_EVERY: Duration = Duration::from_secs(30);

/// The ring the probes write to, for [`run_writer`].
pub struct Ring {
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, TlsCounters>,
    libs_by_pid: Arc<Mutex<HashMap<u32, String>>>,
}

impl Probes {
    /// Loads the TLS programs of `ebpf` (nothing attached yet); returns the probes and their
    /// ring.
    pub fn load(ebpf: &mut Ebpf) -> Result<(Self, Ring)> {
        for name in ENTRIES.iter().map(|(p, _)| *p).chain([
            RETURN_PROGRAM,
            GO_WRITE_PROGRAM,
            GO_READ_PROGRAM,
            GO_RETURN_PROGRAM,
        ]) {
            let program: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or_else(|| AgentError::Load(format!("program {name} missing from object")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| AgentError::Load(e.to_string()))?;
            program
                .load()
                .map_err(|e| crate::ebpf::program_error(name, e))?;
        }
        let ring = RingBuf::try_from(
            ebpf.take_map("TLS_EVENTS")
                .ok_or_else(|| AgentError::Load("map TLS_EVENTS missing".into()))?,
        )
        .map_err(|e| AgentError::Load(e.to_string()))?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map("TLS_COUNTERS")
                .ok_or_else(|| AgentError::Load("map TLS_COUNTERS missing".into()))?,
        )
        .map_err(|e| AgentError::Load(e.to_string()))?;
        let libs_by_pid = Arc::new(Mutex::new(HashMap::new()));
        Ok((
            Self {
                libraries: BTreeMap::new(),
                libs_by_pid: libs_by_pid.clone(),
                proc: PathBuf::from("/proc"),
                scanned: Default::default(),
                full_scan_at: Instant::now(),
                not_go: Default::default(),
            },
            Ring {
                ring,
                counters,
                libs_by_pid,
            },
        ))
    }

    /// Finds the TLS libraries mapped now and attaches to the new ones; returns how many were
    /// newly hooked.
    pub fn scan(&mut self, ebpf: &mut Ebpf) -> usize {
        if self.full_scan_at.elapsed() >= FULL_SCAN_EVERY {
            // Everything again, so that exited processes are forgotten and dlopen-ed
            // libraries found.
            self.scanned.clear();
            self.full_scan_at = Instant::now();
            self.libs_by_pid
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            for lib in self.libraries.values_mut() {
                lib.pids.clear();
            }
        }
        let scanned = &mut self.scanned;
        let found = discover::scan(&self.proc, &mut |pid| scanned.insert(pid));
        hooked_go(self, ebpf, found.executables);
        {
            let mut by_pid = self.libs_by_pid.lock().unwrap_or_else(|p| p.into_inner());
            for lib in found.libraries.values() {
                for pid in &lib.pids {
                    by_pid.insert(*pid, lib.path.clone());
                }
            }
        }
        let mut hooked = 0;
        for (id, lib) in found.libraries {
            if let Some(known) = self.libraries.get_mut(&id) {
                for pid in lib.pids {
                    if !known.pids.contains(&pid) {
                        known.pids.push(pid);
                    }
                }
                continue;
            }
            let status = attach(ebpf, &lib);
            match &status.error {
                None => {
                    hooked += 1;
                    tracing::info!(library = %lib.path, kind = lib.kind, pids = ?lib.pids, missing = ?status.missing, "reading TLS plaintext");
                }
                Some(e) => {
                    tracing::warn!(library = %lib.path, error = %e, "TLS library not hooked")
                }
            }
            self.libraries.insert(id, status);
        }
        status::publish(self.status());
        hooked
    }

    /// Every library found so far and how it is hooked.
    pub fn status(&self) -> Vec<LibraryStatus> {
        self.libraries.values().cloned().collect()
    }
}

/// Hooks the Go executables among `executables` (of newly scanned processes) not seen before.
fn hooked_go(probes: &mut Probes, ebpf: &mut Ebpf, executables: Vec<(u32, FileId, Library)>) {
    for (pid, id, exe) in executables {
        if probes.not_go.contains(&id) {
            continue;
        }
        if let Some(known) = probes.libraries.get_mut(&id) {
            if !known.pids.contains(&pid) {
                known.pids.push(pid);
            }
            continue;
        }
        let status = match go::targets(&exe.open_path) {
            Err(go::GoError::NotGo | go::GoError::Unreadable(_)) => {
                probes.not_go.insert(id);
                continue;
            }
            Err(e) => LibraryStatus {
                path: exe.path.clone(),
                kind: "go",
                pids: vec![pid],
                hooked: false,
                missing: Vec::new(),
                error: Some(e.to_string()),
                detail: None,
            },
            Ok(targets) => attach_go(ebpf, &exe, pid, &targets),
        };
        match &status.error {
            None => tracing::info!(binary = %exe.path, pid, "reading Go TLS plaintext"),
            Some(e) => tracing::warn!(binary = %exe.path, error = %e, "Go binary not hooked"),
        }
        probes.libraries.insert(id, status);
    }
}

/// Attaches Go's probes to one executable: both entries, and every `RET` of both functions.
fn attach_go(ebpf: &mut Ebpf, exe: &Library, pid: u32, targets: &go::GoTargets) -> LibraryStatus {
    use aya::programs::uprobe::UProbeAttachLocation;
    let mut status = LibraryStatus {
        path: exe.path.clone(),
        kind: "go",
        pids: vec![pid],
        hooked: false,
        missing: Vec::new(),
        error: None,
        detail: None,
    };
    let mut points: Vec<(&str, UProbeAttachLocation<'_>)> = vec![
        (GO_WRITE_PROGRAM, UProbeAttachLocation::Symbol(go::WRITE)),
        (GO_READ_PROGRAM, UProbeAttachLocation::Symbol(go::READ)),
    ];
    for off in &targets.write_returns {
        points.push((
            GO_RETURN_PROGRAM,
            UProbeAttachLocation::SymbolOffset(go::WRITE, *off),
        ));
    }
    for off in &targets.read_returns {
        points.push((
            GO_RETURN_PROGRAM,
            UProbeAttachLocation::SymbolOffset(go::READ, *off),
        ));
    }
    for (program, location) in points {
        let result = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("program {program} missing"))
            .and_then(|p| {
                let probe: &mut UProbe = p
                    .try_into()
                    .map_err(|e: aya::programs::ProgramError| e.to_string())?;
                probe
                    .attach(location, &exe.open_path, UProbeScope::AllProcesses)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            status.error = Some(format!("{} ({}): {e}", program, targets.version));
            return status;
        }
    }
    status.hooked = true;
    status.detail = Some(format!(
        "{}: entries and {} RETs probed",
        targets.version,
        targets.write_returns.len() + targets.read_returns.len()
    ));
    status
}

/// Attaches every probe to one library file.
fn attach(ebpf: &mut Ebpf, lib: &Library) -> LibraryStatus {
    let mut status = LibraryStatus {
        path: lib.path.clone(),
        kind: lib.kind,
        pids: lib.pids.clone(),
        hooked: false,
        missing: Vec::new(),
        error: None,
        detail: None,
    };
    let mut attach_one = |program: &str, symbol: &str| -> std::result::Result<(), String> {
        let probe: &mut UProbe = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("program {program} missing"))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        probe
            .attach(symbol, &lib.open_path, UProbeScope::AllProcesses)
            .map(|_| ())
            .map_err(|e| format!("{symbol}: {e}"))
    };
    for (program, symbol) in ENTRIES {
        if let Err(e) = attach_one(program, symbol) {
            status.missing.push(e);
        }
    }
    for symbol in RETURNS {
        if let Err(e) = attach_one(RETURN_PROGRAM, symbol) {
            status.missing.push(format!("return of {e}"));
        }
    }
    let lacks = |symbol: &str| {
        status
            .missing
            .iter()
            .any(|m| m.contains(&format!("{symbol}:")))
    };
    if REQUIRED.iter().any(|s| lacks(s)) {
        status.error = Some(format!(
            "{} (a library without SSL_read/SSL_write symbols: stripped, or not OpenSSL)",
            status.missing.join("; ")
        ));
    } else {
        status.hooked = true;
    }
    status
}

/// Drains the TLS ring into `tls` slices under `dir` until `stop`, a slice every `period`.
pub fn run_writer(
    ring: Ring,
    dir: PathBuf,
    node: String,
    period: Duration,
    ids: SocketIds,
    stop: Arc<AtomicBool>,
) {
    let Ring {
        ring: mut events,
        counters,
        libs_by_pid,
    } = ring;
    let mut rows = Rows {
        counters,
        libs_by_pid,
        dir,
        node,
        ids,
        rows: Vec::new(),
        bytes: 0,
        warned: TlsCounters::default(),
    };
    crate::event_ring::drain(&mut events, period, &stop, &mut rows);
}

/// TLS chunks on their way to a slice.
struct Rows {
    counters: PerCpuArray<MapData, TlsCounters>,
    libs_by_pid: Arc<Mutex<HashMap<u32, String>>>,
    dir: PathBuf,
    node: String,
    ids: SocketIds,
    rows: Vec<TlsRow>,
    bytes: usize,
    warned: TlsCounters,
}

impl crate::event_ring::EventRows for Rows {
    fn take(&mut self, record: &[u8], clock: &TaiToUtc) {
        let Some(header) = crate::event_ring::record_head::<TlsChunkHeader>(record) else {
            return;
        };
        let end = (TLS_CHUNK_HEADER_BYTES + header.len as usize).min(record.len());
        let data = &record[TLS_CHUNK_HEADER_BYTES..end];
        let mut libs = self.libs_by_pid.lock().unwrap_or_else(|p| p.into_inner());
        // A process started since the last scan: its maps name the file.
        let lib = libs
            .entry(header.pid)
            .or_insert_with(|| library_of(header.pid).unwrap_or_else(|| "libssl".into()));
        self.bytes += data.len();
        self.rows
            .push(slices::row(&header, data, clock, &self.ids, lib));
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn is_full(&self) -> bool {
        self.bytes >= 32 << 20
    }

    fn seal(&mut self) {
        self.rows.sort_by_key(|r| r.ts_ns);
        if let Err(e) = slices::write_slice(&self.dir, &self.node, &self.rows) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "writing a tls slice failed; its plaintext is lost (free space on the data disk)");
        }
        self.rows.clear();
        self.bytes = 0;
        let now = counters(&self.counters);
        if now.dropped > self.warned.dropped || now.unreadable > self.warned.unreadable {
            tracing::warn!(
                lost = now.dropped - self.warned.dropped,
                unreadable = now.unreadable - self.warned.unreadable,
                "TLS chunks lost to a full ring, or whose plaintext could not be read"
            );
            self.warned = now;
        }
    }
}

/// The TLS library process `pid` maps, from its maps.
fn library_of(pid: u32) -> Option<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines()
        .filter_map(discover::parse_maps_line)
        .find(|(_, _, path)| discover::library_kind(path).is_some())
        .map(|(_, _, path)| path)
}

fn counters(map: &PerCpuArray<MapData, TlsCounters>) -> TlsCounters {
    let mut total = TlsCounters::default();
    if let Ok(values) = map.get(&0, 0) {
        for v in values.iter() {
            total.chunks += v.chunks;
            total.dropped += v.dropped;
            total.unreadable += v.unreadable;
        }
    }
    total
}

/// `proc` for tests that scan a fake tree.
impl Probes {
    /// Scans `proc` instead of `/proc`.
    pub fn with_proc(mut self, proc: &Path) -> Self {
        self.proc = proc.to_owned();
        self
    }
}
