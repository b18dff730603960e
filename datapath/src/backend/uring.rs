//! The io_uring shard loop: multishot RECVMSG into a provided buffer ring keeps receives
//! outstanding, one completion sweep handles every ready datagram, and all sends a sweep
//! produces go out with the next single `io_uring_enter`.
//!
//! This is the only module with raw-pointer IO. Every buffer the kernel touches (the buffer
//! ring, receive buffers, send slots and their msghdrs) is allocated once at start-up, never
//! moves, and outlives the ring.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Instant;

use io_uring::{IoUring, cqueue, opcode, types};

use super::sockaddr::{sockaddr_from, sockaddr_to};
use crate::bufring::BufRing;
use crate::shard::driver::ShardLoop;
use ringcast_types::route::Router;

/// Receive buffers in the provided ring (a power of two).
const RECV_BUFS: u16 = 1024;
const RECV_BUF_SIZE: usize = 2048;
const BGID: u16 = 0;
const RECV_TAG: u64 = u64::MAX;
/// The read of the shard's command eventfd (sends use their slot index).
const WAKE_TAG: u64 = u64::MAX - 1;
/// Submission entries: sends beyond this in one sweep go in several submits.
const SQ_ENTRIES: u32 = 2048;
/// Completion entries at most (the kernel's limit).
const MAX_CQ_ENTRIES: usize = 65536;

/// The kernel-facing parts of one send, per outbox slot: iovec, destination and msghdr,
/// pinned in a boxed slice. The bytes stay in the outbox slot.
struct SendSlot {
    iov: libc::iovec,
    addr: libc::sockaddr_in6,
    msg: libc::msghdr,
}

/// Runs the shard until it is told to stop. Returns an error only if io_uring can't be set up,
/// so the caller can fall back to the other backend before any packet was handled.
pub fn run<R: Router>(socket: UdpSocket, shard: &mut ShardLoop<R>) -> io::Result<()> {
    // Declared before the ring, so it outlives the read armed on it.
    let mut wake_buf = Box::new(0u64);
    // Room for every send slot in flight plus the receive buffers, so the kernel never has to
    // hold completions back.
    let cq_entries = (shard.core.outbox.slots() + 2 * usize::from(RECV_BUFS))
        .next_power_of_two()
        .min(MAX_CQ_ENTRIES) as u32;
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_cqsize(cq_entries)
        .build(SQ_ENTRIES)
        .or_else(|_| {
            IoUring::builder()
                .setup_cqsize(cq_entries)
                .build(SQ_ENTRIES)
        })?;
    let mut bufs = BufRing::new(RECV_BUFS, RECV_BUF_SIZE)?;
    // SAFETY: `bufs` outlives the registration (unregistered below before it drops).
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.ring_addr(), RECV_BUFS, BGID, 0)?;
    }
    // SAFETY: a zeroed msghdr is valid; only the name and control lengths are read.
    let mut tmpl: libc::msghdr = unsafe { std::mem::zeroed() };
    tmpl.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
    let fd = types::Fd(socket.as_raw_fd());
    let recv = opcode::RecvMsgMulti::new(fd, &tmpl, BGID)
        .flags(libc::MSG_TRUNC as u32)
        .build()
        .user_data(RECV_TAG);
    // SAFETY: `tmpl` lives as long as this function, i.e. as long as the receive is armed.
    unsafe { ring.submission().push(&recv) }
        .map_err(|_| io::Error::other("submission queue full"))?;
    // A queued command writes the eventfd: this read completes and the loop wakes.
    let wake = opcode::Read::new(
        types::Fd(shard.waker.fd()),
        (&mut *wake_buf as *mut u64).cast(),
        8,
    )
    .build()
    .user_data(WAKE_TAG);
    // SAFETY: `wake_buf` outlives the ring (declared before it).
    unsafe { ring.submission().push(&wake) }
        .map_err(|_| io::Error::other("submission queue full"))?;
    ring.submit()?;

    // SAFETY: zeroed plain C structs; pointers are set per send below.
    let mut slots: Box<[SendSlot]> = (0..shard.core.outbox.slots())
        .map(|_| unsafe { std::mem::zeroed::<SendSlot>() })
        .collect();
    let armed = Armed {
        recv: &recv,
        wake: &wake,
    };
    let result = sweep_loop(&mut ring, &mut bufs, armed, &mut slots, fd, shard);
    let _ = ring.submitter().unregister_buf_ring(BGID);
    result
}

/// A received datagram whose handling waits for send slots: its buffer stays out of the ring.
#[derive(Clone, Copy)]
struct Deferred {
    bid: u16,
    len: u32,
}

/// The entries re-armed when their operation ends: the multishot receive, the wake-up read.
#[derive(Clone, Copy)]
struct Armed<'a> {
    recv: &'a io_uring::squeue::Entry,
    wake: &'a io_uring::squeue::Entry,
}

fn sweep_loop<R: Router>(
    ring: &mut IoUring,
    bufs: &mut BufRing,
    armed: Armed<'_>,
    slots: &mut [SendSlot],
    fd: types::Fd,
    shard: &mut ShardLoop<R>,
) -> io::Result<()> {
    let mut stopping = false;
    // Receives not yet handled for lack of send slots, oldest first; at most every buffer.
    let mut deferred: Vec<Deferred> = Vec::with_capacity(usize::from(RECV_BUFS));
    loop {
        if stopping {
            // The last sweep's sends (close_notify to every peer) are queued: hand them to the
            // kernel and give them a moment to complete before the ring goes away.
            let ts = types::Timespec::from(std::time::Duration::from_millis(100));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = ring.submitter().submit_with_args(1, &args);
            return Ok(());
        }
        stopping = shard.should_stop();
        let wait = shard.next_wait(Instant::now());
        let ts = types::Timespec::from(wait);
        let args = types::SubmitArgs::new().timespec(&ts);
        match ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e)
                if e.raw_os_error() == Some(libc::ETIME)
                    || e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        let mut received = 0usize;
        let mut rearm = false;
        let mut rearm_wake = false;
        {
            let mut cq = ring.completion();
            cq.sync();
            for cqe in &mut cq {
                let (res, flags, ud) = (cqe.result(), cqe.flags(), cqe.user_data());
                if ud == WAKE_TAG {
                    // A command was queued; `after_sweep` below drains the queue.
                    rearm_wake = true;
                    continue;
                }
                if ud != RECV_TAG {
                    // A send finished: its outbox slot is free again.
                    if (ud as usize) < slots.len() {
                        shard.core.outbox.release(ud as u32);
                    }
                    // Counted when the kernel took the datagram, not when it was queued.
                    if res < 0 {
                        shard.core.stats.drop(crate::stats::DropReason::SendFailed);
                    } else {
                        shard.core.stats.packets_out += 1;
                        shard.core.stats.bytes_out += res as u64;
                    }
                    continue;
                }
                if !cqueue::more(flags) {
                    rearm = true;
                }
                if res < 0 {
                    // ENOBUFS: every buffer was in use; the receive is re-armed below.
                    continue;
                }
                let Some(bid) = cqueue::buffer_select(flags) else {
                    continue;
                };
                let d = Deferred {
                    bid,
                    len: res as u32,
                };
                if deferred.is_empty() && shard.core.has_room() {
                    handle_received(bufs, d, shard, now);
                    received += 1;
                } else {
                    // Out of send slots: handled once this sweep's sends have completed.
                    deferred.push(d);
                }
            }
        }
        // Sends that completed above may have made room for receives held back earlier.
        let mut handled = 0;
        while handled < deferred.len() && shard.core.has_room() {
            handle_received(bufs, deferred[handled], shard, now);
            handled += 1;
        }
        deferred.drain(..handled);
        received += handled;
        if !deferred.is_empty() {
            shard.core.stats.sweeps_yielded += 1;
        }
        bufs.publish();
        if received > 0 {
            shard.metrics.record_batch(received);
        }
        shard.after_sweep(now);
        // Queue every send this sweep produced; they go out with the next submit.
        let mut sq = ring.submission();
        for (again, entry) in [(rearm, armed.recv), (rearm_wake, armed.wake)] {
            if !again {
                continue;
            }
            // SAFETY: what the entries point to (the receive template, the wake-up buffer)
            // lives for the whole loop (see `run`).
            if unsafe { sq.push(entry) }.is_err() {
                drop(sq);
                ring.submit()?;
                sq = ring.submission();
                // SAFETY: as above.
                let _ = unsafe { sq.push(entry) };
            }
        }
        let mut queued = std::mem::take(&mut shard.queued);
        shard.core.outbox.take_queue(&mut queued);
        shard.core.pace(&mut queued, Instant::now());
        for q in queued.drain(..) {
            let i = q.slot as usize;
            let s = &mut slots[i];
            s.iov = libc::iovec {
                iov_base: shard.core.outbox.slot_ptr(q.slot).cast(),
                iov_len: q.len as usize,
            };
            s.addr = sockaddr_to(q.to);
            s.msg.msg_name = (&mut s.addr as *mut libc::sockaddr_in6).cast();
            s.msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
            s.msg.msg_iov = &mut s.iov;
            s.msg.msg_iovlen = 1;
            let e = opcode::SendMsg::new(fd, &s.msg).build().user_data(i as u64);
            // SAFETY: the outbox slot and this SendSlot are not reused until the send's CQE
            // releases the slot.
            if unsafe { sq.push(&e) }.is_err() {
                // Submission queue full: hand the kernel what is there and go on.
                drop(sq);
                ring.submit()?;
                sq = ring.submission();
                // SAFETY: as above.
                if unsafe { sq.push(&e) }.is_err() {
                    shard.core.outbox.release(q.slot);
                    shard
                        .core
                        .stats
                        .drop(crate::stats::DropReason::SendQueueFull);
                }
            }
        }
        shard.queued = queued;
        if received > 0 {
            shard.metrics.record_forwarding(now.elapsed());
        }
    }
}

/// Parses one received datagram out of its ring buffer, hands it to the core, and gives the
/// buffer back to the ring.
fn handle_received<R: Router>(
    bufs: &mut BufRing,
    d: Deferred,
    shard: &mut ShardLoop<R>,
    now: Instant,
) {
    let buf = bufs.buf_mut(d.bid);
    let (src, at, len, truncated) =
        match types::RecvMsgOut::parse(&buf[..d.len as usize], &tmpl_for_parse()) {
            Ok(m) => {
                let payload = m.payload_data();
                let at = payload.as_ptr() as usize - buf.as_ptr() as usize;
                (
                    sockaddr_from(m.name_data()),
                    at,
                    payload.len(),
                    m.is_payload_truncated(),
                )
            }
            Err(()) => (None, 0, 0, true),
        };
    match src {
        Some(src) if !truncated => {
            shard.core.handle_datagram(src, &mut buf[at..at + len], now);
        }
        _ => {
            shard.core.stats.packets_in += 1;
            shard.core.stats.drop(crate::stats::DropReason::Oversize);
        }
    }
    bufs.push(d.bid);
}

/// The msghdr template `RecvMsgOut::parse` needs: the same lengths the receive was armed with.
fn tmpl_for_parse() -> libc::msghdr {
    // SAFETY: a zeroed msghdr is valid.
    let mut t: libc::msghdr = unsafe { std::mem::zeroed() };
    t.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
    t
}

/// True if this kernel lets us set up a ring (probe before choosing the backend).
pub fn available() -> bool {
    IoUring::new(8).is_ok()
}
