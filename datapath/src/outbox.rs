//! Send buffers of one shard: a pool of packet-sized slots, allocated once. The protocol core
//! writes (and encrypts) each outgoing datagram straight into a slot; the IO loop sends from
//! the slot and releases it when the kernel is done with it. No allocation per packet.
//!
//! The pool is reserved at its maximum size but costs memory only as it is used: it comes
//! zeroed from the allocator (fresh pages the kernel maps on first touch), and the most recently
//! freed slots are reused first, so a shard whose sweeps need 2,000 slots touches about 2,000 slots' worth
//! of pages however large the maximum is.

use std::net::SocketAddr;

use crate::shard::TransportId;

/// Bytes per slot: any datagram a shard sends fits.
pub const SLOT_SIZE: usize = 2048;

/// One datagram waiting to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    pub slot: u32,
    pub to: SocketAddr,
    pub len: u32,
    /// The transport whose media this is, for the pacer; `None`: sent unpaced (STUN, DTLS).
    pub flow: Option<TransportId>,
}

/// The pool and the queue of datagrams to send this sweep.
pub struct Outbox {
    bufs: Box<[u8]>,
    free: Vec<u32>,
    queue: Vec<Queued>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("slots", &(self.bufs.len() / SLOT_SIZE))
            .field("free", &self.free.len())
            .field("queued", &self.queue.len())
            .finish()
    }
}

impl Outbox {
    pub fn new(slots: usize) -> Self {
        Outbox {
            bufs: vec![0u8; slots * SLOT_SIZE].into_boxed_slice(),
            free: (0..slots as u32).rev().collect(),
            queue: Vec::with_capacity(slots),
        }
    }

    pub fn slots(&self) -> usize {
        self.bufs.len() / SLOT_SIZE
    }

    /// Slots neither queued nor in flight.
    pub fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// A free slot to write a datagram into, or `None` when every slot is in flight.
    pub fn alloc(&mut self) -> Option<(u32, &mut [u8])> {
        let slot = self.free.pop()?;
        let at = slot as usize * SLOT_SIZE;
        Some((slot, &mut self.bufs[at..at + SLOT_SIZE]))
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
        });
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
        debug_assert!(!self.free.contains(&slot));
        self.free.push(slot);
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
        &self.bufs[at..at + q.len as usize]
    }

    /// Start of slot `slot`, for an IO layer that hands the memory to the kernel. The pool
    /// never moves or shrinks, so the pointer stays valid while the `Outbox` lives.
    pub fn slot_ptr(&mut self, slot: u32) -> *mut u8 {
        let at = slot as usize * SLOT_SIZE;
        self.bufs[at..].as_mut_ptr()
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
}
