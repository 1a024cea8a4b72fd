//! The BPF ring buffer (`BPF_MAP_TYPE_RINGBUF`) as a [`Ring`] for the collector, the other
//! packet transport (`--packet-ring ringbuf`).
//!
//! One ring serves every CPU: the programs reserve a record, fill it and commit it, so records
//! appear in reservation order and a reserved record blocks the reader until it is committed
//! ([`Ring::committed`]). The layout follows `kernel/bpf/ringbuf.c`: a consumer page the reader
//! writes (`consumer_pos`), then a producer page (`producer_pos`) and the data pages, which the
//! kernel maps twice in a row so that no record wraps. Each record starts with an 8-byte header:
//! the length with a busy bit and a discard bit, then a page offset the reader ignores.
//!
//! Wakeups: the programs ask for one only when a quarter of the ring is waiting
//! (`PACKET_RING_WAKE`), and the reader waits on an edge-triggered epoll so that it sleeps until
//! such a wakeup (or its timeout) rather than whenever any byte is waiting, as the perf rings'
//! watermark does.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    ptr::{self, NonNull},
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

use aya::maps::MapData;

use crate::perf_ring::{Record, Ring};

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_BYTES: u64 = 8;

/// A mapped BPF ring buffer.
pub struct BpfRing {
    /// Keeps the map alive while it is mapped.
    map: MapData,
    consumer: NonNull<u8>,
    /// The producer page followed by the data area, mapped twice.
    producer: NonNull<u8>,
    page: usize,
    size: usize,
    epoll: OwnedFd,
}

// SAFETY: the mappings are owned by this value alone; the kernel is the only other party, and
// the position protocol below is the synchronisation the ring buffer ABI defines.
unsafe impl Send for BpfRing {}

impl BpfRing {
    /// Maps the ring buffer `map` (whose size is `max_entries` bytes, a power-of-two number of
    /// pages).
    pub fn open(map: MapData) -> io::Result<Self> {
        let page = crate::config::page_size();
        let info = map.info().map_err(io::Error::other)?;
        let size = info.max_entries() as usize;
        if !size.is_power_of_two() || size < page {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ring buffer of {size} bytes is not a power-of-two number of pages"),
            ));
        }
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: mapping the consumer page read-write and the producer page plus twice the
        // data area read-only, as the ring buffer ABI prescribes; the results are checked.
        let (consumer, producer) = unsafe {
            let consumer = libc::mmap(
                ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if consumer == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let producer = libc::mmap(
                ptr::null_mut(),
                page + 2 * size,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                page as libc::off_t,
            );
            if producer == libc::MAP_FAILED {
                let e = io::Error::last_os_error();
                libc::munmap(consumer, page);
                return Err(e);
            }
            (consumer, producer)
        };
        let unmap = || {
            // SAFETY: the two mappings made above.
            unsafe {
                libc::munmap(consumer, page);
                libc::munmap(producer, page + 2 * size);
            }
        };
        // SAFETY: epoll_create1 has no pointer arguments.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            let e = io::Error::last_os_error();
            unmap();
            return Err(e);
        }
        // SAFETY: a new descriptor nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0,
        };
        // SAFETY: both descriptors are open; `event` is a valid epoll_event.
        if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
            let e = io::Error::last_os_error();
            unmap();
            return Err(e);
        }
        Ok(Self {
            map,
            consumer: NonNull::new(consumer.cast()).ok_or_else(io::Error::last_os_error)?,
            producer: NonNull::new(producer.cast()).ok_or_else(io::Error::last_os_error)?,
            page,
            size,
            epoll,
        })
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: consumer_pos is the first u64 of the consumer page, 8-byte aligned, and lives
        // as long as the mapping.
        unsafe { &*self.consumer.as_ptr().cast::<AtomicU64>() }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: as above, for the producer page.
        unsafe { &*self.producer.as_ptr().cast::<AtomicU64>() }
    }

    /// The header's length word of the record at `pos` (read with acquire ordering: the record's
    /// bytes are complete once the busy bit is clear).
    fn length_word(&self, pos: u64) -> u32 {
        let at = self.offset(pos);
        // SAFETY: records are 8-byte aligned inside the data area, so the header lies in it.
        let word = unsafe { &*self.data().add(at).cast::<AtomicU32>() };
        word.load(Ordering::Acquire)
    }

    fn data(&self) -> *const u8 {
        // SAFETY: the data area starts one page into the producer mapping.
        unsafe { self.producer.as_ptr().add(self.page) }
    }

    /// The length of the record at `pos` without its header, when it fits in the ring.
    fn payload_len(&self, pos: u64) -> Option<usize> {
        let len = (self.length_word(pos) & !(BUSY_BIT | DISCARD_BIT)) as usize;
        (len as u64 + HEADER_BYTES <= self.size as u64).then_some(len)
    }
}

impl Ring for BpfRing {
    #[inline]
    fn size(&self) -> usize {
        self.size
    }

    fn head(&self) -> u64 {
        self.producer_pos().load(Ordering::Acquire)
    }

    fn tail(&self) -> u64 {
        self.consumer_pos().load(Ordering::Relaxed)
    }

    fn set_tail(&mut self, tail: u64) {
        // The reads of the records before `tail` must be done before the kernel may reuse them.
        self.consumer_pos().store(tail, Ordering::Release);
    }

    #[inline]
    fn bytes(&self, at: usize, len: usize) -> &[u8] {
        // The data area is mapped twice in a row: a record that wraps reads on into the copy.
        assert!(at + len <= 2 * self.size, "ring read out of bounds");
        // SAFETY: the range lies inside the double mapping and, as the trait requires, between
        // the consumer and producer positions, which the kernel does not reuse until the
        // consumer position moves past it.
        unsafe { std::slice::from_raw_parts(self.data().add(at), len) }
    }

    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.map.fd().as_fd().as_raw_fd())
    }

    #[inline]
    fn committed(&self, pos: u64) -> bool {
        self.length_word(pos) & BUSY_BIT == 0
    }

    #[inline]
    fn record_size(&self, pos: u64) -> Option<u64> {
        let len = self.payload_len(pos)? as u64;
        Some((len + HEADER_BYTES).next_multiple_of(8))
    }

    #[inline]
    fn record_ts(&self, pos: u64) -> Option<u64> {
        let word = self.length_word(pos);
        if word & DISCARD_BIT != 0 || self.payload_len(pos)? < 8 {
            return None;
        }
        let b = self.bytes(self.offset(pos + HEADER_BYTES), 8);
        Some(u64::from_ne_bytes(b.try_into().ok()?))
    }

    #[inline]
    fn record_at<'a>(&'a self, pos: u64, _scratch: &'a mut Vec<u8>) -> Record<'a> {
        if self.length_word(pos) & DISCARD_BIT != 0 {
            return Record::Other;
        }
        match self.payload_len(pos) {
            Some(len) => Record::Sample(self.bytes(self.offset(pos + HEADER_BYTES), len)),
            None => Record::Corrupt,
        }
    }

    fn wait(rings: &[Self], timeout: Duration) {
        let Some(ring) = rings.first() else {
            std::thread::sleep(timeout);
            return;
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 1];
        // SAFETY: a valid epoll descriptor and a writable array of the length passed.
        unsafe {
            libc::epoll_wait(
                ring.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout.as_millis() as i32,
            )
        };
    }
}

impl Drop for BpfRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mappings made in open(); the map closes after.
        unsafe {
            libc::munmap(self.consumer.as_ptr().cast(), self.page);
            libc::munmap(self.producer.as_ptr().cast(), self.page + 2 * self.size);
        }
    }
}
