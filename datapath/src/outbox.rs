//! Send buffers of one shard: a pool of packet-sized slots, mapped once. The protocol core
//! writes (and encrypts) each outgoing datagram straight into a slot; the IO loop sends from
//! the slot and releases it when the kernel is done with it. No allocation per packet.
//!
//! The pool is reserved at its maximum size but costs memory only as it is used: it is an
//! anonymous mapping (pages the kernel maps on first touch), the lowest free slot is always
//! taken first, so the slots in use stay packed at the start, and `trim` gives back the pages
//! above what the last interval needed (a join storm's replays touch many slots once; the
//! memory does not stay with the shard).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringcast_types::TransportId;

/// Bytes per slot: any datagram a shard sends fits.
pub const SLOT_SIZE: usize = 2048;

/// How often the pages above the interval's peak are given back.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(5);

const PAGE: usize = 4096;

/// One datagram waiting to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    pub slot: u32,
    pub to: SocketAddr,
    pub len: u32,
    /// The transport whose media this is, for the pacer; `None`: sent unpaced (STUN, DTLS).
    pub flow: Option<TransportId>,
    /// Its transport-wide sequence number, where the router tagged it: a held one's
    /// departure is reported back.
    pub seq: Option<u16>,
}

/// The pool and the queue of datagrams to send this sweep.
pub struct Outbox {
    base: *mut u8,
    bytes: usize,
    slots: usize,
    /// One bit per slot, set while it is free.
    free: Box<[u64]>,
    free_count: usize,
    /// No word before this one has a free bit.
    hint: usize,
    /// Slots below this may have resident pages (touched since the last trim).
    touched: usize,
    /// The highest slot in use during this trim interval, plus one.
    peak: usize,
    next_trim: Option<Instant>,
    trimmed_bytes: u64,
    queue: Vec<Queued>,
}

// SAFETY: the mapping is owned by the Outbox alone and only touched through `&mut self`.
unsafe impl Send for Outbox {}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("slots", &self.slots)
            .field("free", &self.free_count)
            .field("queued", &self.queue.len())
            .field("touched", &self.touched)
            .finish()
    }
}

impl Outbox {
    /// A pool of `slots` slots. Panics if the address space cannot be reserved (start-up only).
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        let bytes = (slots * SLOT_SIZE).next_multiple_of(PAGE);
        // SAFETY: a fresh private anonymous mapping; unmapped in Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert!(
            base != libc::MAP_FAILED,
            "cannot map {bytes} bytes of send slots: {}",
            std::io::Error::last_os_error()
        );
        let free = (0..slots.div_ceil(64))
            .map(|w| slot_bits(slots, w))
            .collect();
        Outbox {
            base: base.cast(),
            bytes,
            slots,
            free,
            free_count: slots,
            hint: 0,
            touched: 0,
            peak: 0,
            next_trim: None,
            trimmed_bytes: 0,
            queue: Vec::with_capacity(slots),
        }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Slots neither queued nor in flight.
    pub fn free_slots(&self) -> usize {
        self.free_count
    }

    /// Slots whose pages may be resident: what the pool costs in memory now.
    pub fn touched_slots(&self) -> usize {
        self.touched
    }

    /// Bytes given back to the kernel by `trim` so far.
    pub fn trimmed_bytes(&self) -> u64 {
        self.trimmed_bytes
    }

    fn slot_mut(&mut self, slot: u32) -> &mut [u8] {
        let at = slot as usize * SLOT_SIZE;
        assert!(at + SLOT_SIZE <= self.bytes);
        // SAFETY: in bounds of the mapping (checked), which lives as long as `self`; the
        // borrow of `self` keeps it unique.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(at), SLOT_SIZE) }
    }

    /// The lowest free slot to write a datagram into, or `None` when every slot is in flight.
    pub fn alloc(&mut self) -> Option<(u32, &mut [u8])> {
        if self.free_count == 0 {
            return None;
        }
        let w = (self.hint..self.free.len()).find(|&w| self.free[w] != 0)?;
        self.hint = w;
        let bit = self.free[w].trailing_zeros() as usize;
        self.free[w] &= !(1u64 << bit);
        self.free_count -= 1;
        let slot = w * 64 + bit;
        self.peak = self.peak.max(slot + 1);
        self.touched = self.touched.max(slot + 1);
        Some((slot as u32, self.slot_mut(slot as u32)))
    }

    /// Queues `len` bytes of `slot` for `to`.
    pub fn push(&mut self, slot: u32, to: SocketAddr, len: usize) {
        self.push_flow(slot, to, len, None);
    }

    /// Queues `len` bytes of `slot` for `to`, media of transport `flow` (paced).
    pub fn push_flow(&mut self, slot: u32, to: SocketAddr, len: usize, flow: Option<TransportId>) {
        self.queue.push(Queued {
            slot,
            to,
            len: len.min(SLOT_SIZE) as u32,
            flow,
            seq: None,
        });
    }

    /// Tags the datagram queued last, if it is media of `flow`, with its transport-wide
    /// sequence number.
    pub fn tag_last(&mut self, flow: TransportId, seq: u16) {
        if let Some(q) = self.queue.last_mut().filter(|q| q.flow == Some(flow)) {
            q.seq = Some(seq);
        }
    }

    /// Copies `data` into a slot and queues it. False if no slot was free (the caller counts).
    pub fn push_copy(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        let Some((slot, buf)) = self.alloc() else {
            return false;
        };
        let n = data.len().min(SLOT_SIZE);
        buf[..n].copy_from_slice(&data[..n]);
        self.push(slot, to, n);
        true
    }

    /// Returns a slot to the pool (after its send completed).
    pub fn release(&mut self, slot: u32) {
        let (w, b) = (slot as usize / 64, slot % 64);
        debug_assert!(
            self.free[w] & (1u64 << b) == 0,
            "slot {slot} released twice"
        );
        if self.free[w] & (1u64 << b) == 0 {
            self.free[w] |= 1u64 << b;
            self.free_count += 1;
            self.hint = self.hint.min(w);
        }
    }

    /// Every `TRIM_INTERVAL`: gives back the pages of the slots above both the interval's peak
    /// and the highest slot in use now (free slots, so their content does not matter), and
    /// starts a new interval. One madvise call at most; none per packet.
    pub fn trim(&mut self, now: Instant) {
        let Some(due) = self.next_trim else {
            self.next_trim = Some(now + TRIM_INTERVAL);
            return;
        };
        if now < due {
            return;
        }
        self.next_trim = Some(now + TRIM_INTERVAL);
        let in_use = self.highest_in_use();
        let keep = self.peak.max(in_use);
        self.peak = in_use;
        let from = (keep * SLOT_SIZE).next_multiple_of(PAGE);
        let to = (self.touched * SLOT_SIZE).min(self.bytes) / PAGE * PAGE;
        if to > from {
            // SAFETY: a page-aligned range inside our own mapping, holding only free slots.
            let r = unsafe {
                libc::madvise(self.base.add(from).cast(), to - from, libc::MADV_DONTNEED)
            };
            if r == 0 {
                self.trimmed_bytes += (to - from) as u64;
                self.touched = from / SLOT_SIZE;
            }
        }
    }

    /// The highest slot in use, plus one (0 when all are free).
    fn highest_in_use(&self) -> usize {
        for (w, &bits) in self.free.iter().enumerate().rev() {
            let used = !bits & slot_bits(self.slots, w);
            if used != 0 {
                return w * 64 + 64 - used.leading_zeros() as usize;
            }
        }
        0
    }

    /// The queued datagrams, moved into `out` (which must be empty; capacity is kept).
    pub fn take_queue(&mut self, out: &mut Vec<Queued>) {
        debug_assert!(out.is_empty());
        std::mem::swap(&mut self.queue, out);
    }

    pub fn queued(&self) -> &[Queued] {
        &self.queue
    }

    /// The bytes of a queued datagram.
    pub fn data(&self, q: &Queued) -> &[u8] {
        let at = q.slot as usize * SLOT_SIZE;
        assert!(at + SLOT_SIZE <= self.bytes);
        // SAFETY: in bounds of the mapping (checked), which lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.base.add(at), q.len as usize) }
    }

    /// Start of slot `slot`, for an IO layer that hands the memory to the kernel. The pool
    /// never moves or shrinks (a trim only drops the content of free slots), so the pointer
    /// stays valid while the `Outbox` lives.
    pub fn slot_ptr(&mut self, slot: u32) -> *mut u8 {
        self.slot_mut(slot).as_mut_ptr()
    }
}

/// The bits of bitmap word `w` that stand for one of `slots` slots (all but in the last word).
fn slot_bits(slots: usize, w: usize) -> u64 {
    match slots - w * 64 {
        n if n >= 64 => u64::MAX,
        n => (1u64 << n) - 1,
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; the IO loop that sent from it has finished.
        unsafe {
            libc::munmap(self.base.cast(), self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cycle_without_growth() {
        let mut o = Outbox::new(2);
        let to: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(o.push_copy(to, b"one"));
        assert!(o.push_copy(to, b"two"));
        assert!(!o.push_copy(to, b"three"), "pool exhausted");
        let mut q = Vec::new();
        o.take_queue(&mut q);
        assert_eq!(o.data(&q[0]), b"one");
        assert_eq!(o.data(&q[1]), b"two");
        for x in q.drain(..) {
            o.release(x.slot);
        }
        assert!(o.push_copy(to, b"three"));
        assert_eq!(o.slots(), 2);
    }

    #[test]
    fn the_lowest_free_slot_is_taken_first() {
        let mut o = Outbox::new(200);
        let got: Vec<u32> = (0..130).map(|_| o.alloc().unwrap().0).collect();
        assert_eq!(got, (0..130).collect::<Vec<_>>());
        for s in [3, 64, 129, 70] {
            o.release(s);
        }
        let again: Vec<u32> = (0..4).map(|_| o.alloc().unwrap().0).collect();
        assert_eq!(again, [3, 64, 70, 129]);
        assert_eq!(o.alloc().unwrap().0, 130);
        assert_eq!(o.free_slots(), 200 - 131);
        // A pool whose size is not a multiple of 64 hands out exactly its slots.
        let mut p = Outbox::new(65);
        assert_eq!((0..66).filter(|_| p.alloc().is_some()).count(), 65);
    }

    #[test]
    fn trim_gives_back_what_a_burst_touched_and_keeps_what_is_in_use() {
        let to: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut o = Outbox::new(4096);
        let t0 = Instant::now();
        o.trim(t0);
        // A burst of 3,000 slots, written, then all but 10 sent.
        for _ in 0..3000 {
            assert!(o.push_copy(to, &[0xAB; 1200]));
        }
        let mut q = Vec::new();
        o.take_queue(&mut q);
        for x in q.drain(10..) {
            o.release(x.slot);
        }
        assert_eq!(o.touched_slots(), 3000);
        // The interval that saw the burst keeps its pages...
        o.trim(t0 + TRIM_INTERVAL);
        assert_eq!(o.touched_slots(), 3000);
        assert_eq!(o.trimmed_bytes(), 0);
        // ...the next one, which needed only 10, gives the rest back.
        o.trim(t0 + 2 * TRIM_INTERVAL);
        assert_eq!(o.touched_slots(), 10);
        assert_eq!(o.trimmed_bytes(), ((3000 - 10) * SLOT_SIZE) as u64);
        // What is in flight is untouched, and trimmed slots work again (zeroed pages).
        assert_eq!(o.data(&q[9]), &[0xAB; 1200][..]);
        let (slot, buf) = o.alloc().unwrap();
        assert_eq!(slot, 10);
        assert!(buf.iter().all(|&b| b == 0));
        buf[0] = 1;
        for x in q.drain(..) {
            o.release(x.slot);
        }
        o.release(slot);
        o.trim(t0 + 3 * TRIM_INTERVAL);
        o.trim(t0 + 4 * TRIM_INTERVAL);
        assert_eq!(o.touched_slots(), 0);
    }
}
