//! Per-CPU perf rings opened with a byte watermark.
//!
//! aya 0.14 opens perf rings with `wakeup_events = 1`: the kernel then raises a wakeup (an
//! irq_work, a self-IPI, expensive under virtualisation) on the sending CPU for every sample,
//! which halved the packet rate a sender could reach while recording. These rings use
//! `watermark = 1` with `wakeup_watermark` at half the ring, so the kernel signals once per half
//! ring; the readers drain on a timer and never wait on the fds.
//!
//! Layouts follow `include/uapi/linux/perf_event.h`: `perf_event_attr` (the 64-byte
//! `PERF_ATTR_SIZE_VER0` prefix is all that is needed), `perf_event_mmap_page` (`data_head` at
//! byte 1024, `data_tail` at 1032) and the `PERF_RECORD_SAMPLE` / `PERF_RECORD_LOST` records.

use std::{
    io,
    ops::ControlFlow,
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

/// One item drained from a ring.
pub enum Record<'a> {
    /// A sample's raw bytes, in up to two pieces when it wraps around the end of the ring.
    Sample(&'a [u8], &'a [u8]),
    /// The kernel could not write this many samples.
    Lost(u64),
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
            wakeup_watermark: (size / 2) as u32,
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

    fn read_u32(&self, at: usize) -> u32 {
        // SAFETY: perf records are 8-byte aligned and their fixed fields never straddle the
        // end of the ring; `at` is reduced modulo the ring size by the caller.
        unsafe { ptr::read_unaligned(self.data().add(at).cast::<u32>()) }
    }

    /// Hands every available record to `f` in order, until `f` breaks; the space of the
    /// records handed over is then returned to the kernel.
    pub fn drain(&mut self, mut f: impl FnMut(Record<'_>) -> ControlFlow<()>) -> ControlFlow<()> {
        // SAFETY: data_head is written by the kernel; read it once, then fence so that the
        // record bytes below are read after it.
        let head = unsafe { ptr::read_volatile(self.meta_u64(DATA_HEAD_OFFSET)) };
        fence(Ordering::Acquire);
        // SAFETY: only this process writes data_tail.
        let mut tail = unsafe { ptr::read_volatile(self.meta_u64(DATA_TAIL_OFFSET)) };
        let mut flow = ControlFlow::Continue(());
        while tail < head {
            let at = (tail % self.size as u64) as usize;
            let kind = self.read_u32(at);
            let rec_size = (self.read_u32(at + 4) >> 16) as u64;
            if rec_size == 0 {
                break; // never written by a sane kernel; stop rather than spin
            }
            let record = match kind {
                PERF_RECORD_SAMPLE => {
                    let len = self.read_u32((at + 8) % self.size) as usize;
                    let start = (at + 12) % self.size;
                    let first = len.min(self.size - start);
                    // SAFETY: both ranges lie inside the data area, and the kernel does not
                    // overwrite them until data_tail moves past them.
                    let (a, b) = unsafe {
                        (
                            std::slice::from_raw_parts(self.data().add(start), first),
                            std::slice::from_raw_parts(self.data(), len - first),
                        )
                    };
                    Some(Record::Sample(a, b))
                }
                PERF_RECORD_LOST => {
                    let at = (at + 16) % self.size;
                    // SAFETY: as in read_u32, for the 8-byte lost count.
                    let lost = unsafe { ptr::read_unaligned(self.data().add(at).cast::<u64>()) };
                    Some(Record::Lost(lost))
                }
                _ => None,
            };
            tail += rec_size;
            if let Some(record) = record {
                flow = f(record);
                if flow.is_break() {
                    break;
                }
            }
        }
        fence(Ordering::SeqCst);
        // SAFETY: publishing the consumer position, as the perf ABI defines.
        unsafe { ptr::write_volatile(self.meta_u64(DATA_TAIL_OFFSET), tail) };
        flow
    }
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in open(); the fd closes after.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mmap_len) };
    }
}
