//! Per-CPU perf rings opened with a byte watermark, and reading their records in place.
//!
//! aya 0.14 opens perf rings with `wakeup_events = 1`: the kernel then raises a wakeup (an
//! irq_work, a self-IPI, expensive under virtualisation) on the sending CPU for every sample,
//! which halved the packet rate a sender could reach while recording. These rings use
//! `watermark = 1` with `wakeup_watermark` at a quarter of the ring, so the kernel signals once
//! per quarter ring: a busy ring wakes the collector long before it fills, a quiet one not at
//! all (the collector then wakes on a timeout).
//!
//! Records are read where the kernel wrote them ([`Ring`], [`record_at`]): the collector
//! merges the rings by timestamp and copies each packet once, into the page it belongs to.
//!
//! Layouts follow `include/uapi/linux/perf_event.h`: `perf_event_attr` (the 64-byte
//! `PERF_ATTR_SIZE_VER0` prefix is all that is needed), `perf_event_mmap_page` (`data_head` at
//! byte 1024, `data_tail` at 1032) and the `PERF_RECORD_SAMPLE` / `PERF_RECORD_LOST` records.

use std::{
    io,
    os::fd::{AsFd, AsRawFd as _, FromRawFd as _, OwnedFd},
    ptr::{self, NonNull},
    sync::atomic::{Ordering, fence},
};

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
const ATTR_FLAG_WATERMARK: u64 = 1 << 14;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SAMPLE: u32 = 9;
const DATA_HEAD_OFFSET: usize = 1024;
const DATA_TAIL_OFFSET: usize = 1032;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

/// `perf_event_attr`, first version (64 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_watermark: u32,
    bp_type: u32,
    config1: u64,
}

/// `bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
struct MapUpdateAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The data area of a perf ring and its two positions: the kernel writes records at `head`,
/// the reader gives space back by moving `tail`. Positions grow forever; a record at position
/// `p` starts at byte `p % size` of the data area.
///
/// The record layout defaults to the perf ABI's; the BPF ring buffer
/// ([`crate::ring_buffer::BpfRing`]) overrides the record methods.
pub trait Ring: Sized {
    /// Size of the data area in bytes (a power of two).
    fn size(&self) -> usize;
    /// Where position `pos` falls in the data area.
    #[inline]
    fn offset(&self, pos: u64) -> usize {
        // The size is a power of two: a mask, not a division, on the per-record path.
        (pos as usize) & (self.size() - 1)
    }
    /// Where the kernel has written up to (read with acquire ordering: the records before it
    /// are complete).
    fn head(&self) -> u64;
    /// Where the reader has given space back up to.
    fn tail(&self) -> u64;
    /// Gives the space before `tail` back to the kernel.
    fn set_tail(&mut self, tail: u64);
    /// `len` bytes at `at` in the data area (`at + len <= size`), which must lie between tail
    /// and head.
    fn bytes(&self, at: usize, len: usize) -> &[u8];
    /// A descriptor that becomes readable when the ring fills past its wakeup watermark, if
    /// the ring has one.
    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// Whether the record at `pos` (before head) may be read: a BPF ring buffer's reserved
    /// records sit before its head until they are committed.
    #[inline]
    fn committed(&self, _pos: u64) -> bool {
        true
    }
    /// The size in ring bytes of the record at `pos` ([`record_size`]).
    #[inline]
    fn record_size(&self, pos: u64) -> Option<u64> {
        record_size(self, pos)
    }
    /// The event timestamp of the record at `pos` ([`record_ts`]).
    #[inline]
    fn record_ts(&self, pos: u64) -> Option<u64> {
        record_ts(self, pos)
    }
    /// The record at `pos` ([`record_at`]).
    #[inline]
    fn record_at<'a>(&'a self, pos: u64, scratch: &'a mut Vec<u8>) -> Record<'a> {
        record_at(self, pos, scratch)
    }
    /// Waits until one of `rings` has a batch to read, or `timeout`.
    fn wait(rings: &[Self], timeout: std::time::Duration) {
        let mut fds: Vec<libc::pollfd> = rings
            .iter()
            .filter_map(Ring::wait_fd)
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if fds.is_empty() {
            std::thread::sleep(timeout);
            return;
        }
        // SAFETY: `fds` is a valid, writable array of pollfd of the length passed; the
        // descriptors belong to the rings, which outlive this call.
        unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                timeout.as_millis() as i32,
            )
        };
    }
}

/// One record of a ring.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A sample's raw bytes (an event header and packet bytes).
    Sample(&'a [u8]),
    /// The kernel could not write this many samples.
    Lost(u64),
    /// A sample whose length does not fit its record; skipped and counted.
    Corrupt,
    /// Something else (not produced by this recorder's programs); skipped.
    Other,
}

/// Offset of the raw bytes in a sample record: the 8-byte `perf_event_header`, then a u32 size.
const SAMPLE_DATA: usize = 12;

#[inline]
fn read_u32(ring: &impl Ring, at: usize) -> u32 {
    let b = ring.bytes(at, 4);
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads `len` bytes at ring offset `at`, wrapping around the end into `scratch` when needed.
#[inline]
fn wrapped<'a>(ring: &'a impl Ring, at: usize, len: usize, scratch: &'a mut Vec<u8>) -> &'a [u8] {
    let size = ring.size();
    if at + len <= size {
        return ring.bytes(at, len);
    }
    let first = size - at;
    scratch.clear();
    scratch.extend_from_slice(ring.bytes(at, first));
    scratch.extend_from_slice(ring.bytes(0, len - first));
    scratch
}

/// The size (in ring bytes) of the record at position `pos`, or `None` for a zero size, which a
/// sane kernel never writes (the reader then stops rather than spin).
#[inline]
pub fn record_size(ring: &impl Ring, pos: u64) -> Option<u64> {
    // Records are 8-byte aligned and the ring's size is a multiple of 8, so a header never
    // straddles the end of the ring.
    let at = ring.offset(pos);
    let size = u64::from(read_u32(ring, at + 4) >> 16);
    (size > 0).then_some(size)
}

/// The first 8 bytes of the sample at `pos` (the event's timestamp), `Some(0)` for a lost
/// record (it is taken at once), `None` for records that carry none.
#[inline]
pub fn record_ts(ring: &impl Ring, pos: u64) -> Option<u64> {
    let size = ring.size();
    let at = ring.offset(pos);
    match read_u32(ring, at) {
        PERF_RECORD_SAMPLE if sample_len(ring, pos).is_some_and(|len| len >= 8) => {
            let start = ring.offset(pos + SAMPLE_DATA as u64);
            let mut ts = [0u8; 8];
            if start + 8 <= size {
                ts.copy_from_slice(ring.bytes(start, 8));
            } else {
                let first = size - start;
                ts[..first].copy_from_slice(ring.bytes(start, first));
                ts[first..].copy_from_slice(ring.bytes(0, 8 - first));
            }
            Some(u64::from_ne_bytes(ts))
        }
        PERF_RECORD_LOST => Some(0),
        _ => None,
    }
}

/// The length of the raw bytes of the sample at `pos`, when it fits in its record (a length
/// that does not is corrupt, and the sample is skipped rather than read past its end).
#[inline]
fn sample_len(ring: &impl Ring, pos: u64) -> Option<usize> {
    let record = record_size(ring, pos)? as usize;
    let len = read_u32(ring, ring.offset(pos + 8)) as usize;
    (SAMPLE_DATA + len <= record && record <= ring.size()).then_some(len)
}

/// The record at position `pos` (which must be before head).
#[inline]
pub fn record_at<'a>(ring: &'a impl Ring, pos: u64, scratch: &'a mut Vec<u8>) -> Record<'a> {
    match read_u32(ring, ring.offset(pos)) {
        PERF_RECORD_SAMPLE => {
            let Some(len) = sample_len(ring, pos) else {
                return Record::Corrupt;
            };
            let start = ring.offset(pos + SAMPLE_DATA as u64);
            Record::Sample(wrapped(ring, start, len, scratch))
        }
        PERF_RECORD_LOST if record_size(ring, pos).is_some_and(|r| r >= 24) => {
            let b = wrapped(ring, ring.offset(pos + 16), 8, scratch);
            Record::Lost(u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
        }
        _ => Record::Other,
    }
}

/// One CPU's perf ring, mapped into this process.
pub struct PerfRing {
    fd: OwnedFd,
    base: NonNull<u8>,
    mmap_len: usize,
    page: usize,
    size: usize,
}

// SAFETY: the mapping is owned by this value alone; the kernel is the only other party, and the
// head/tail protocol below is the synchronisation the perf ABI defines.
unsafe impl Send for PerfRing {}

impl PerfRing {
    /// Opens a BPF-output perf event on `cpu` with `pages` data pages (a power of two).
    pub fn open(cpu: u32, pages: usize) -> io::Result<Self> {
        let page = crate::config::page_size();
        if !pages.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "perf ring pages must be a power of two",
            ));
        }
        let size = pages * page;
        let attr = PerfEventAttr {
            type_: PERF_TYPE_SOFTWARE,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_BPF_OUTPUT,
            sample_period: 1,
            sample_type: PERF_SAMPLE_RAW,
            flags: ATTR_FLAG_WATERMARK,
            wakeup_watermark: (size / 4) as u32,
            ..PerfEventAttr::default()
        };
        // SAFETY: perf_event_open with a valid, fully initialised attr; pid -1 with a cpu means
        // every process on that CPU.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                ptr::addr_of!(attr),
                -1,
                cpu as libc::c_int,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mmap_len = size + page;
        // SAFETY: mapping the event's ring as the perf ABI prescribes (one metadata page, then
        // the data pages), shared and writable so that data_tail can be published.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                mmap_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self {
            fd,
            base,
            mmap_len,
            page,
            size,
        })
    }

    /// Puts this ring in slot `index` of a `BPF_MAP_TYPE_PERF_EVENT_ARRAY`.
    pub fn install(&self, map: impl AsFd, index: u32) -> io::Result<()> {
        let value = self.fd.as_raw_fd() as u32;
        let attr = MapUpdateAttr {
            map_fd: map.as_fd().as_raw_fd() as u32,
            pad: 0,
            key: ptr::addr_of!(index) as u64,
            value: ptr::addr_of!(value) as u64,
            flags: 0,
        };
        // SAFETY: bpf(BPF_MAP_UPDATE_ELEM) with an attr whose key and value point at live u32s.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_ELEM,
                ptr::addr_of!(attr),
                std::mem::size_of::<MapUpdateAttr>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn meta_u64(&self, offset: usize) -> *mut u64 {
        // SAFETY: both offsets lie inside the metadata page, 8-byte aligned.
        unsafe { self.base.as_ptr().add(offset).cast::<u64>() }
    }

    fn data(&self) -> *const u8 {
        // SAFETY: the data area starts one page into the mapping.
        unsafe { self.base.as_ptr().add(self.page) }
    }
}

/// Opens every online CPU's ring with `pages` data pages and installs it in the
/// `BPF_MAP_TYPE_PERF_EVENT_ARRAY` `map`, in CPU order.
pub fn open_per_cpu(map: impl AsFd + Copy, pages: usize) -> crate::error::Result<Vec<PerfRing>> {
    use crate::error::AgentError;
    let cpus = aya::util::online_cpus()
        .map_err(|(what, e)| AgentError::io(format!("reading {what}"), e))?;
    cpus.into_iter()
        .map(|cpu| {
            PerfRing::open(cpu, pages)
                .and_then(|ring| ring.install(map, cpu).map(|()| ring))
                .map_err(|e| {
                    AgentError::Load(format!(
                        "opening the perf ring of CPU {cpu} ({pages} pages): {e}; the rings' \
                         locked pages need CAP_IPC_LOCK, or CAP_SYS_RESOURCE (the agent then lifts \
                         RLIMIT_MEMLOCK), or a higher `ulimit -l`; without them lower --ring-bytes \
                         (all rings must fit in kernel.perf_event_mlock_kb per CPU)"
                    ))
                })
        })
        .collect()
}

impl Ring for PerfRing {
    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.fd.as_raw_fd())
    }

    #[inline]
    fn size(&self) -> usize {
        self.size
    }

    fn head(&self) -> u64 {
        // SAFETY: data_head is written by the kernel; read it once, then fence so that the
        // record bytes read afterwards are read after it.
        let head = unsafe { ptr::read_volatile(self.meta_u64(DATA_HEAD_OFFSET)) };
        fence(Ordering::Acquire);
        head
    }

    fn tail(&self) -> u64 {
        // SAFETY: only this process writes data_tail.
        unsafe { ptr::read_volatile(self.meta_u64(DATA_TAIL_OFFSET)) }
    }

    fn set_tail(&mut self, tail: u64) {
        // The reads of the records before `tail` must be done before the kernel may reuse them.
        fence(Ordering::SeqCst);
        // SAFETY: publishing the consumer position, as the perf ABI defines.
        unsafe { ptr::write_volatile(self.meta_u64(DATA_TAIL_OFFSET), tail) };
    }

    #[inline]
    fn bytes(&self, at: usize, len: usize) -> &[u8] {
        assert!(at + len <= self.size, "ring read out of bounds");
        // SAFETY: the range lies inside the data area, and (as the trait requires) between
        // tail and head, which the kernel does not write until data_tail moves past it.
        unsafe { std::slice::from_raw_parts(self.data().add(at), len) }
    }
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in open(); the fd closes after.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mmap_len) };
    }
}
