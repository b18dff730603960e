//! The fallback shard loop for kernels or sandboxes without io_uring: batched recvmmsg with GRO
//! and sendmsg with GSO through quinn-udp. Same `ShardCore`, same batching per sweep.

use std::io::{self, IoSliceMut};
use std::net::UdpSocket;
use std::time::Instant;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};

use crate::io::Shard;
use crate::stats::DropReason;

/// Datagrams (or GRO batches) received per call.
const BATCH: usize = 32;
/// Each buffer holds one GRO batch.
const BUF_SIZE: usize = 64 * 1024;

pub fn run(socket: UdpSocket, shard: &mut Shard) -> io::Result<()> {
    let state = UdpSocketState::new((&socket).into())?;
    let mut storage = vec![0u8; BATCH * BUF_SIZE];
    let mut meta = [RecvMeta::default(); BATCH];
    loop {
        if shard.should_stop() {
            return Ok(());
        }
        let now = Instant::now();
        socket.set_read_timeout(Some(
            shard
                .next_wait(now)
                .max(std::time::Duration::from_millis(1)),
        ))?;
        let n = {
            let mut slices: Vec<IoSliceMut<'_>> =
                storage.chunks_mut(BUF_SIZE).map(IoSliceMut::new).collect();
            match state.recv((&socket).into(), &mut slices, &mut meta) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    0
                }
                Err(e) => return Err(e),
            }
        };
        let now = Instant::now();
        let mut received = 0;
        for (m, buf) in meta.iter().take(n).zip(storage.chunks_mut(BUF_SIZE)) {
            let src = match m.addr {
                std::net::SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                    Some(v4) => std::net::SocketAddr::from((v4, a.port())),
                    None => m.addr,
                },
                a => a,
            };
            // A GRO batch holds datagrams of `stride` bytes, the last possibly shorter.
            for seg in buf[..m.len].chunks_mut(m.stride.max(1)) {
                shard.core.handle_datagram(src, seg, now);
                received += 1;
            }
        }
        if received > 0 {
            shard.metrics.record_batch(received);
        }
        shard.after_sweep(now);
        let mut queued = std::mem::take(&mut shard.queued);
        shard.core.outbox.take_queue(&mut queued);
        for q in queued.drain(..) {
            let tr = Transmit {
                destination: q.to,
                ecn: None,
                contents: shard.core.outbox.data(&q),
                segment_size: None,
                src_ip: None,
            };
            match state.try_send((&socket).into(), &tr) {
                Ok(()) => {
                    shard.core.stats.packets_out += 1;
                    shard.core.stats.bytes_out += u64::from(q.len);
                }
                Err(_) => shard.core.stats.drop(DropReason::SendFailed),
            }
            shard.core.outbox.release(q.slot);
        }
        shard.queued = queued;
    }
}
