//! The fallback shard loop for kernels or sandboxes without io_uring: batched recvmmsg with GRO
//! through quinn-udp, and sendmmsg of every datagram a sweep produced. Same `ShardCore`, same
//! batching per sweep.

use std::io::{self, IoSliceMut};
use std::net::UdpSocket;
use std::time::Instant;

use std::os::fd::AsRawFd;

use quinn_udp::{RecvMeta, UdpSocketState};

use crate::shard::driver::ShardLoop;
use crate::stats::DropReason;
use ringcast_types::route::Router;

/// Datagrams (or GRO batches) received per call.
const BATCH: usize = 32;
/// Each buffer holds one GRO batch.
const BUF_SIZE: usize = 64 * 1024;

pub fn run<R: Router>(socket: UdpSocket, shard: &mut ShardLoop<R>) -> io::Result<()> {
    // quinn-udp makes the socket non-blocking: the loop waits in poll(2), and only when a
    // receive found nothing (a busy shard never polls).
    let state = UdpSocketState::new((&socket).into())?;
    let mut storage = vec![0u8; BATCH * BUF_SIZE];
    let mut slices: Vec<IoSliceMut<'_>> =
        storage.chunks_mut(BUF_SIZE).map(IoSliceMut::new).collect();
    let mut meta = [RecvMeta::default(); BATCH];
    let mut batch = SendBatch::new();
    let mut stopping = false;
    loop {
        // One more sweep after the stop flag: commands still queued (transport removals) are
        // applied and their close_notify datagrams sent.
        if stopping {
            return Ok(());
        }
        stopping = shard.should_stop();
        let n = match state.recv((&socket).into(), &mut slices, &mut meta) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if wait_readable(&socket, shard.waker.fd(), shard.next_wait(Instant::now())) {
                    shard.waker.drain();
                }
                0
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        let mut received = 0;
        for (m, buf) in meta.iter().take(n).zip(slices.iter_mut()) {
            let src = match m.addr {
                std::net::SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                    Some(v4) => std::net::SocketAddr::from((v4, a.port())),
                    None => m.addr,
                },
                a => a,
            };
            // A GRO batch holds datagrams of `stride` bytes, the last possibly shorter.
            for seg in buf[..m.len].chunks_mut(m.stride.max(1)) {
                if !shard.core.has_room() {
                    // Out of send slots: send what is queued, then go on with the batch.
                    shard.core.stats.sweeps_yielded += 1;
                    flush(&socket, shard, &mut batch);
                    // Datagrams the pacer holds keep their slots: wait for its releases (it
                    // drains every flow at 2 Mbit/s or more), as the io_uring loop holds its
                    // receives back.
                    while !shard.core.has_room() {
                        let Some(at) = shard.core.next_release() else {
                            break;
                        };
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                        flush(&socket, shard, &mut batch);
                    }
                }
                shard.core.handle_datagram(src, seg, now);
                received += 1;
            }
        }
        if received > 0 {
            shard.metrics.record_batch(received);
        }
        shard.after_sweep(now);
        flush(&socket, shard, &mut batch);
        if received > 0 {
            shard.metrics.record_forwarding(now.elapsed());
        }
    }
}

/// Blocks until the socket is readable, a command was queued (`wake`: returns true) or
/// `timeout` passed (at least 1 ms, so a due timer never makes the loop spin).
fn wait_readable(
    socket: &UdpSocket,
    wake: std::os::fd::RawFd,
    timeout: std::time::Duration,
) -> bool {
    let mut fds = [
        libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = timeout.as_millis().clamp(1, 1000) as libc::c_int;
    // SAFETY: two valid pollfds for the duration of the call.
    unsafe {
        libc::poll(fds.as_mut_ptr(), 2, ms);
    }
    fds[1].revents & libc::POLLIN != 0
}

/// Sends every queued datagram and releases their slots.
fn flush<R: Router>(socket: &UdpSocket, shard: &mut ShardLoop<R>, batch: &mut SendBatch) {
    let mut queued = std::mem::take(&mut shard.queued);
    shard.core.outbox.take_queue(&mut queued);
    shard.core.pace(&mut queued, Instant::now());
    send_batch(socket, shard, &queued, batch);
    for q in queued.drain(..) {
        shard.core.outbox.release(q.slot);
    }
    shard.queued = queued;
}

/// Datagrams handed to the kernel per sendmmsg call.
const SEND_BATCH: usize = 64;

/// Headers for one sendmmsg call, allocated once. quinn-udp sends one destination per call
/// (with GSO); a fan-out goes to many, so this is plain sendmmsg.
struct SendBatch {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in6>,
}

impl SendBatch {
    fn new() -> Self {
        // SAFETY: zeroed C structs are valid; pointers are set before each call.
        unsafe {
            SendBatch {
                msgs: (0..SEND_BATCH).map(|_| std::mem::zeroed()).collect(),
                iovs: (0..SEND_BATCH).map(|_| std::mem::zeroed()).collect(),
                addrs: (0..SEND_BATCH).map(|_| std::mem::zeroed()).collect(),
            }
        }
    }
}

fn send_batch<R: Router>(
    socket: &UdpSocket,
    shard: &mut ShardLoop<R>,
    queued: &[crate::outbox::Queued],
    b: &mut SendBatch,
) {
    for chunk in queued.chunks(SEND_BATCH) {
        for (i, q) in chunk.iter().enumerate() {
            b.iovs[i] = libc::iovec {
                iov_base: shard.core.outbox.slot_ptr(q.slot).cast(),
                iov_len: q.len as usize,
            };
            b.addrs[i] = super::sockaddr::sockaddr_to(q.to);
            let h = &mut b.msgs[i].msg_hdr;
            h.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_in6).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
        }
        let mut off = 0;
        let mut stalls = 0;
        while off < chunk.len() {
            // SAFETY: headers, iovecs, addresses and the outbox slots outlive the call.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    b.msgs[off..].as_mut_ptr(),
                    (chunk.len() - off) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                for q in &chunk[off..off + n as usize] {
                    shard.core.stats.packets_out += 1;
                    shard.core.stats.bytes_out += u64::from(q.len);
                }
                off += n as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            if matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOBUFS)) {
                // The socket's send buffer is full: wait for the kernel to drain it rather
                // than drop. Only a buffer that stays full is overload.
                if stalls < MAX_SEND_STALLS && wait_writable(socket) {
                    stalls += 1;
                    continue;
                }
                for _ in off..chunk.len() {
                    shard.core.stats.drop(DropReason::SendQueueFull);
                }
                break;
            }
            // This datagram failed (e.g. ICMP unreachable reported back): count and skip it.
            shard.core.stats.drop(DropReason::SendFailed);
            off += 1;
        }
    }
}

/// Waits for a full send buffer to drain this many times per batch at most...
const MAX_SEND_STALLS: u32 = 16;
/// ...for this long each.
const SEND_STALL_MS: libc::c_int = 5;

fn wait_writable(socket: &UdpSocket) -> bool {
    let mut fds = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut fds, 1, SEND_STALL_MS) > 0 }
}
