//! The media router's per-packet paths allocate nothing: forwarding to several subscribers,
//! answering NACKs (plain and RTX), unwrapping a publisher's RTX, recording transport-wide
//! arrivals and stamping transport-wide sequence numbers, and rewriting sender and consuming
//! receiver reports. Measured with a counting global allocator on this thread.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::{Duration, Instant};

use ringcast_datapath::alloc_count::{Counting, count};
use ringcast_media::fixtures;
use ringcast_media::router::{Egress, MediaCommand, MediaRouter, TrackId};
use ringcast_media::rtcp;
use ringcast_types::TransportId;

#[global_allocator]
static ALLOC: Counting = Counting;

/// Writes into one reused buffer, as the shard's slots do.
struct Sink {
    buf: Box<[u8; 2048]>,
    packets: usize,
}

impl Egress for Sink {
    fn send_rtp(&mut self, _to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        self.packets += 1;
        write(&mut self.buf[..]) > 0
    }

    fn send_rtcp(&mut self, _to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        write(&mut self.buf[..]) > 0
    }
}

/// Extensions: abs-send-time (id 2) and a transport-wide sequence number (id 3), `twcc`.
fn packet(pt: u8, ssrc: u32, seq: u16, ts: u32, twcc: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0x90, pt];
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&ssrc.to_be_bytes());
    b.extend_from_slice(&[0xBE, 0xDE, 0, 2, 0x22, 1, 2, 3]);
    b.push((fixtures::TRANSPORT_CC_EXT << 4) | 1);
    b.extend_from_slice(&twcc.to_be_bytes());
    b.push(0);
    b.extend_from_slice(payload);
    b
}

#[test]
fn per_packet_paths_do_not_allocate() {
    let mut r = MediaRouter::default();
    let mut out = Sink {
        buf: Box::new([0; 2048]),
        packets: 0,
    };
    let t0 = Instant::now();
    r.command(
        MediaCommand::AddTrack(fixtures::vp8_track(
            TrackId(1),
            TransportId(1),
            fixtures::single(0x10, Some(0x11)),
        )),
        &mut out,
        t0,
    );
    for sub in 2..5u64 {
        let mut config = fixtures::subscription(
            TrackId(1),
            TransportId(sub),
            0x100 * sub as u32,
            sub % 2 == 0,
        );
        // Transport-wide sequence numbers on all but one: stamping and the send history too.
        config.transport_cc_ext = (sub != 4).then_some(3);
        r.command(MediaCommand::Subscribe(config), &mut out, t0);
    }
    let mut key = vec![0x10, 0x00, 0x9D, 0x01, 0x2A];
    key.resize(1100, 0x5A);
    let mut delta = key.clone();
    delta[1] = 0x01;
    // Every fifth packet is lost upstream and comes back as RTX.
    let media: Vec<Vec<u8>> = (0..2000u16)
        .map(|i| {
            packet(
                96,
                0x10,
                i,
                u32::from(i / 3) * 3000,
                i,
                if i == 0 { &key } else { &delta },
            )
        })
        .collect();
    let repairs: Vec<Vec<u8>> = (0..2000u16)
        .filter(|i| i % 5 == 4)
        .map(|i| {
            let mut p = i.to_be_bytes().to_vec();
            p.extend_from_slice(&delta);
            packet(97, 0x11, i, u32::from(i / 3) * 3000, 2000 + i, &p)
        })
        .collect();
    let mut nack = vec![0u8; 64];
    let mut w = rtcp::Writer::new(&mut nack);
    w.nack(9, 0x200, &[10, 11, 12]).unwrap();
    let n = w.len();
    nack.truncate(n);
    let mut plain_nack = nack.clone();
    plain_nack[11] = 0x00;
    plain_nack[10] = 0x03; // media SSRC 0x300: the subscriber without RTX
    let mut sr = vec![0u8; 64];
    let mut w = rtcp::Writer::new(&mut sr);
    w.sender_report(0x10, 1 << 40, 3000, 10, 1000).unwrap();
    let n = w.len();
    sr.truncate(n);
    let mut rr = vec![0u8; 64];
    let block = rtcp::ReportBlock {
        ssrc: 0x200,
        fraction_lost: 0,
        cumulative_lost: 0,
        highest_seq: 0,
        jitter: 0,
        last_sr: 1 << 24,
        delay_since_last_sr: 0,
    };
    let mut w = rtcp::Writer::new(&mut rr);
    w.receiver_report(9, &[block]).unwrap();
    let n = w.len();
    rr.truncate(n);

    // Warm up: the first packets learn and open the keyframe gate.
    for p in &media[..10] {
        r.rtp(TransportId(1), p, &mut out, t0);
    }
    let mut repair = repairs.iter().skip(2);
    let allocations = count(|| {
        for (i, p) in media.iter().enumerate().skip(10) {
            let now = t0 + Duration::from_millis(i as u64);
            if i % 5 != 4 {
                r.rtp(TransportId(1), p, &mut out, now);
            } else if let Some(x) = repair.next() {
                r.rtp(TransportId(1), x, &mut out, now);
            }
            if i % 50 == 0 {
                r.rtcp(TransportId(2), &nack, &mut out, now);
                r.rtcp(TransportId(3), &plain_nack, &mut out, now);
                r.rtcp(TransportId(1), &sr, &mut out, now);
                r.rtcp(TransportId(2), &rr, &mut out, now);
            }
        }
    });
    assert_eq!(allocations, 0);
    assert!(r.stats.forwarded > 5000, "{:?}", r.stats);
    assert!(r.stats.rtx_in > 350, "{:?}", r.stats);
    assert!(r.stats.retransmitted > 0 && r.stats.sender_reports > 0);
}
