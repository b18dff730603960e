//! The media router's own cost per packet, without crypto or IO: what routing adds to the
//! shard's SRTP work (compare `protocol`'s srtp_1200B numbers).
//!
//!   cargo bench -p ringcast-benches --bench media

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast_datapath::TransportId;
use ringcast_media::fixtures;
use ringcast_media::router::{Egress, MediaCommand, MediaRouter, TrackId};
use ringcast_media::rtcp;

/// Writes every packet into one buffer, as the shard writes into a send slot.
struct Sink(Box<[u8; 2048]>);

impl Egress for Sink {
    fn send_rtp(&mut self, _to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        black_box(write(&mut self.0[..])) > 0
    }

    fn send_rtcp(&mut self, _to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        black_box(write(&mut self.0[..])) > 0
    }
}

const SUBSCRIBERS: u64 = 10;
const PUBLISHER: TransportId = TransportId(1);
/// NACKs per fresh router in the retransmission bench.
const ROUND: u16 = 150;

fn packet(seq: u16) -> Vec<u8> {
    let mut b = vec![0x90, 96];
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    b.extend_from_slice(&0x10u32.to_be_bytes());
    b.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x22, 1, 2, 3]);
    b.extend_from_slice(&[0x10, if seq == 0 { 0x00 } else { 0x01 }, 0x9D, 0x01, 0x2A]);
    b.resize(1200, 0x5A);
    b
}

fn router(out: &mut Sink, t0: Instant) -> MediaRouter {
    let mut r = MediaRouter::default();
    r.command(
        MediaCommand::AddTrack(fixtures::vp8_track(
            TrackId(1),
            PUBLISHER,
            fixtures::single(0x10, Some(0x11)),
        )),
        out,
        t0,
    );
    for sub in 2..2 + SUBSCRIBERS {
        r.command(
            MediaCommand::Subscribe(fixtures::subscription(
                TrackId(1),
                TransportId(sub),
                0x100 * sub as u32,
                true,
            )),
            out,
            t0,
        );
    }
    // The keyframe opens every subscriber's gate.
    r.rtp(PUBLISHER, &packet(0), out, t0);
    r
}

fn route(c: &mut Criterion) {
    let mut out = Sink(Box::new([0; 2048]));
    let t0 = Instant::now();
    let mut g = c.benchmark_group("router_1200B");

    let mut r = router(&mut out, t0);
    let mut p = packet(1);
    let mut seq = 1u16;
    let mut n = 0u64;
    g.throughput(Throughput::Elements(SUBSCRIBERS));
    g.bench_function(format!("forward_to_{SUBSCRIBERS}"), |b| {
        b.iter(|| {
            // The next packet of the stream, as on a wire: rising sequence and timestamp.
            seq = seq.wrapping_add(1);
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            p[4..8].copy_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
            n += 1;
            let now = t0 + Duration::from_micros(n * 100);
            r.rtp(PUBLISHER, black_box(&p), &mut out, now);
        })
    });

    // A NACK for one packet from one subscriber, answered with RTX from the history. Each
    // answer must be granted (fresh in the history, not resent within an RTT, within the
    // budget), so each round gets a fresh router and NACKs distinct packets 5 ms apart: the
    // budget's refill rate, and well inside the history's second.
    let nacks: Vec<Vec<u8>> = (1..=ROUND)
        .map(|seq| {
            let mut b = vec![0u8; 64];
            let mut w = rtcp::Writer::new(&mut b);
            w.nack(9, 0x200, &[seq]).unwrap_or(());
            let n = w.len();
            b.truncate(n);
            b
        })
        .collect();
    g.throughput(Throughput::Elements(1));
    g.bench_function("nack_answered_with_rtx", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let mut r = router(&mut out, t0);
                for seq in 1..=ROUND {
                    r.rtp(PUBLISHER, &packet(seq), &mut out, t0);
                }
                let before = r.stats.retransmitted;
                let n = (iters - done).min(u64::from(ROUND));
                let start = Instant::now();
                for (k, nack) in nacks.iter().take(n as usize).enumerate() {
                    let at = t0 + Duration::from_millis(5 * k as u64);
                    r.rtcp(TransportId(2), black_box(nack), &mut out, at);
                }
                spent += start.elapsed();
                assert_eq!(r.stats.retransmitted - before, n, "every NACK answered");
                done += n;
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
