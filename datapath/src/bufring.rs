//! A provided-buffer ring for io_uring (`IORING_REGISTER_PBUF_RING`): a page-aligned ring of
//! `io_uring_buf` entries shared with the kernel, and the buffers it points at, allocated once.
//! The shard loop and the loadtest's client engine both receive into one; nothing here submits.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types;

/// The ring and its buffers. The caller registers `ring_addr()` with the ring it uses and
/// unregisters it before this drops.
pub struct BufRing {
    ring: *mut types::BufRingEntry,
    ring_bytes: usize,
    count: u16,
    size: usize,
    tail: u16,
    bufs: Box<[u8]>,
}

impl BufRing {
    /// `count` buffers (a power of two) of `size` bytes each, all handed to the kernel.
    pub fn new(count: u16, size: usize) -> io::Result<Self> {
        if !count.is_power_of_two() {
            return Err(io::Error::other("buffer ring size must be a power of two"));
        }
        let ring_bytes = usize::from(count) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: anonymous private mapping; checked for failure below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut r = BufRing {
            ring: p.cast(),
            ring_bytes,
            count,
            size,
            tail: 0,
            bufs: vec![0u8; usize::from(count) * size].into_boxed_slice(),
        };
        for bid in 0..count {
            r.push(bid);
        }
        r.publish();
        Ok(r)
    }

    /// The address to register (`register_buf_ring_with_flags`).
    pub fn ring_addr(&self) -> u64 {
        self.ring as u64
    }

    /// Queues buffer `bid` for the kernel again (visible after `publish`).
    pub fn push(&mut self, bid: u16) {
        // SAFETY: index masked into the ring; the entry memory is ours and mapped.
        let e = unsafe { &mut *self.ring.add(usize::from(self.tail & (self.count - 1))) };
        e.set_addr(self.bufs.as_ptr() as u64 + u64::from(bid) * self.size as u64);
        e.set_len(self.size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed buffer visible to the kernel.
    pub fn publish(&self) {
        // SAFETY: the tail overlays entry 0's reserved field, which the kernel reads atomically.
        let tail = unsafe { &*(types::BufRingEntry::tail(self.ring) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Buffer `bid` (what a completion with that buffer id filled).
    pub fn buf_mut(&mut self, bid: u16) -> &mut [u8] {
        let at = usize::from(bid % self.count) * self.size;
        &mut self.bufs[at..at + self.size]
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; the ring was unregistered (or the ring dropped) first.
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_bytes);
        }
    }
}

// SAFETY: the ring memory is owned by this value alone; moving it to another thread moves the
// only handle (the kernel side is tied to the io_uring instance, which moves with it).
unsafe impl Send for BufRing {}
