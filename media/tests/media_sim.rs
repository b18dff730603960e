//! The media router in a simulated network: a fake clock, and links with seeded loss, latency
//! and jitter (so reordering) between the router and model endpoints. A publisher sends VP8 at
//! 30 frames/s, answers NACKs with RTX and PLIs with a keyframe; subscribers NACK their gaps
//! and keep what arrived. Every run of a scenario is the same run: no sockets, no real time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use ringcast_media::fixtures;
use ringcast_media::router::{
    Egress, MediaCommand, MediaRouter, RtxConfig, SubscriptionConfig, TrackId,
};
use ringcast_media::rtcp::{self, Rtcp};
use ringcast_media::rtp::RtpPacket;
use ringcast_media::sequence::extend;
use ringcast_types::TransportId;

const TICK: Duration = Duration::from_millis(5);
const FRAME: Duration = Duration::from_micros(33_333);
const PUB: TransportId = TransportId(1);
const TRACK: TrackId = TrackId(7);
const MEDIA_SSRC: u32 = 0x1000;
const RTX_SSRC: u32 = 0x1001;

/// xorshift64*: a seeded, dependency-free PRNG; enough for loss and jitter.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One direction of a link.
#[derive(Debug, Clone, Copy)]
struct Link {
    loss: f64,
    latency: Duration,
    /// Uniform extra delay in [0, jitter): packets overtake each other.
    jitter: Duration,
}

impl Link {
    fn clean() -> Link {
        Link {
            loss: 0.0,
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
        }
    }

    fn lossy(loss: f64) -> Link {
        Link {
            loss,
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(15),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Node {
    Router,
    Peer(TransportId),
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Datagram {
    from: Node,
    to: Node,
    rtcp: bool,
    bytes: Vec<u8>,
}

/// The publisher model: a VP8 track with RTX.
struct Publisher {
    seq: u16,
    rtx_seq: u16,
    ts: u32,
    sent: HashMap<u16, Vec<u8>>,
    keyframe_due: bool,
    muted: bool,
    plis: u32,
    nacked: u32,
}

/// The VP8 payload of packet `i` of a frame: the first one starts it (S=1, PID 0), and on a
/// keyframe carries P=0 in the payload header.
fn vp8_payload(first: bool, key: bool) -> Vec<u8> {
    let mut p = vec![if first { 0x10 } else { 0x00 }];
    p.push(if key { 0x00 } else { 0x01 });
    p.extend_from_slice(&[0x9D, 0x01, 0x2A]);
    p.resize(300, 0xAB);
    p
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0x80, (u8::from(marker) << 7) | pt];
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&ssrc.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

impl Publisher {
    fn new() -> Publisher {
        Publisher {
            seq: 1000,
            rtx_seq: 5000,
            ts: 90_000,
            sent: HashMap::new(),
            keyframe_due: true,
            muted: false,
            plis: 0,
            nacked: 0,
        }
    }

    /// One frame: 6 packets for a keyframe, 3 otherwise.
    fn frame(&mut self) -> Vec<Vec<u8>> {
        let key = std::mem::take(&mut self.keyframe_due);
        let n = if key { 6 } else { 3 };
        self.ts = self.ts.wrapping_add(3000);
        (0..n)
            .map(|i| {
                let p = rtp(
                    96,
                    self.seq,
                    self.ts,
                    MEDIA_SSRC,
                    i == n - 1,
                    &vp8_payload(i == 0, key),
                );
                self.sent.insert(self.seq, p.clone());
                self.seq = self.seq.wrapping_add(1);
                p
            })
            .collect()
    }

    /// RTCP from the router: NACKs answered with RTX, PLIs with the next frame a keyframe.
    fn rtcp(&mut self, datagram: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for p in rtcp::read(datagram).flatten() {
            match p {
                Rtcp::Pli { .. } => {
                    self.plis += 1;
                    self.keyframe_due = true;
                }
                Rtcp::Nack { items, .. } => {
                    for seq in items.lost() {
                        self.nacked += 1;
                        let Some(orig) = self.sent.get(&seq) else {
                            continue;
                        };
                        let o = RtpPacket::parse(orig).unwrap();
                        let mut payload = seq.to_be_bytes().to_vec();
                        payload.extend_from_slice(o.payload);
                        out.push(rtp(
                            97,
                            self.rtx_seq,
                            o.timestamp,
                            RTX_SSRC,
                            o.marker,
                            &payload,
                        ));
                        self.rtx_seq = self.rtx_seq.wrapping_add(1);
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// The subscriber model: what arrived (by extended sequence number), NACKs for the gaps.
struct Subscriber {
    ssrc: u32,
    rtx: Option<RtxConfig>,
    highest: Option<u64>,
    received: HashSet<u64>,
    /// ext → (when found missing, last NACK, NACKs sent).
    missing: BTreeMap<u64, (Duration, Option<Duration>, u32)>,
    /// Arrival time and payload of the first packet, to check it opens a keyframe.
    first: Option<(Duration, Vec<u8>)>,
    timestamps: BTreeMap<u64, u32>,
    other_ssrcs: u32,
    nacks_sent: u32,
}

impl Subscriber {
    fn new(ssrc: u32, rtx: bool) -> Subscriber {
        Subscriber {
            ssrc,
            rtx: rtx.then_some(RtxConfig {
                ssrc: ssrc + 1,
                payload_type: 101,
            }),
            highest: None,
            received: HashSet::new(),
            missing: BTreeMap::new(),
            first: None,
            timestamps: BTreeMap::new(),
            other_ssrcs: 0,
            nacks_sent: 0,
        }
    }

    fn config(&self, subscriber: TransportId) -> SubscriptionConfig {
        fixtures::subscription(TRACK, subscriber, self.ssrc, self.rtx.is_some())
    }

    fn rtp(&mut self, b: &[u8], now: Duration) {
        let p = RtpPacket::parse(b).unwrap();
        let (seq, payload) = if Some(p.ssrc) == self.rtx.map(|r| r.ssrc) {
            assert_eq!(p.payload_type, 101);
            (
                u16::from_be_bytes([p.payload[0], p.payload[1]]),
                &p.payload[2..],
            )
        } else if p.ssrc == self.ssrc {
            assert_eq!(p.payload_type, 100);
            (p.sequence, p.payload)
        } else {
            self.other_ssrcs += 1;
            return;
        };
        let ext = match self.highest {
            Some(h) => extend(h, seq),
            None => u64::from(seq) | (1 << 32),
        };
        if self.first.is_none() {
            self.first = Some((now, payload.to_vec()));
        }
        if let Some(h) = self.highest
            && ext > h + 1
        {
            for m in h + 1..ext {
                self.missing.insert(m, (now, None, 0));
            }
        }
        self.missing.remove(&ext);
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.received.insert(ext);
        self.timestamps.insert(ext, p.timestamp);
    }

    /// A NACK for the gaps due: 10 ms after they show (reordering), then every 40 ms, 8 times.
    fn nack(&mut self, now: Duration) -> Option<Vec<u8>> {
        let mut lost = Vec::new();
        self.missing.retain(|_, (_, _, tries)| *tries < 8);
        for (ext, (found, last, tries)) in &mut self.missing {
            let due = match last {
                None => now >= *found + Duration::from_millis(10),
                Some(l) => now >= *l + Duration::from_millis(40),
            };
            if due {
                *last = Some(now);
                *tries += 1;
                lost.push(*ext as u16);
            }
        }
        if lost.is_empty() {
            return None;
        }
        self.nacks_sent += 1;
        let mut b = vec![0u8; 1500];
        let mut w = rtcp::Writer::new(&mut b);
        w.nack(0xCAFE, self.ssrc, &lost[..lost.len().min(64)])
            .unwrap();
        let n = w.len();
        b.truncate(n);
        Some(b)
    }

    /// Received packets over the span from the first to the last one.
    fn completeness(&self) -> f64 {
        let (Some(lo), Some(hi)) = (self.received.iter().min(), self.received.iter().max()) else {
            return 0.0;
        };
        self.received.len() as f64 / (hi - lo + 1) as f64
    }

    fn is_contiguous(&self) -> bool {
        self.completeness() == 1.0
    }
}

/// What the router sends, collected for the network.
#[derive(Default)]
struct Outbox(Vec<(TransportId, bool, Vec<u8>)>);

impl Egress for Outbox {
    fn send_rtp(&mut self, to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let mut b = [0u8; 1500];
        let n = write(&mut b);
        self.0.push((to, false, b[..n].to_vec()));
        n > 0
    }

    fn send_rtcp(&mut self, to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let mut b = [0u8; 1500];
        let n = write(&mut b);
        self.0.push((to, true, b[..n].to_vec()));
        n > 0
    }
}

struct Sim {
    t0: Instant,
    now: Duration,
    rng: Rng,
    router: MediaRouter,
    publisher: Publisher,
    subscribers: BTreeMap<TransportId, Subscriber>,
    /// Links by (from, to); missing ones are clean.
    links: HashMap<(Node, Node), Link>,
    queue: BinaryHeap<Reverse<(Duration, u64, Datagram)>>,
    sent: u64,
    dropped: u64,
    next_frame: Duration,
    /// The publisher's transport is up (false after it leaves).
    publishing: bool,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let t0 = Instant::now();
        let mut router = MediaRouter::default();
        router.command(
            MediaCommand::AddTrack(fixtures::vp8_track(
                TRACK,
                PUB,
                fixtures::single(MEDIA_SSRC, Some(RTX_SSRC)),
            )),
            &mut Outbox::default(),
            t0,
        );
        Sim {
            t0,
            now: Duration::ZERO,
            rng: Rng(seed | 1),
            router,
            publisher: Publisher::new(),
            subscribers: BTreeMap::new(),
            links: HashMap::new(),
            queue: BinaryHeap::new(),
            sent: 0,
            dropped: 0,
            next_frame: Duration::ZERO,
            publishing: true,
        }
    }

    fn at(&self) -> Instant {
        self.t0 + self.now
    }

    fn subscribe(&mut self, id: TransportId, sub: Subscriber) {
        let mut out = Outbox::default();
        self.router
            .command(MediaCommand::Subscribe(sub.config(id)), &mut out, self.at());
        self.subscribers.insert(id, sub);
        self.route(out);
    }

    fn command(&mut self, cmd: MediaCommand) {
        let mut out = Outbox::default();
        self.router.command(cmd, &mut out, self.at());
        self.route(out);
    }

    fn send(&mut self, from: Node, to: Node, rtcp: bool, bytes: Vec<u8>) {
        let link = self
            .links
            .get(&(from, to))
            .copied()
            .unwrap_or(Link::clean());
        self.sent += 1;
        if self.rng.unit() < link.loss {
            self.dropped += 1;
            return;
        }
        let jitter = link.jitter.mul_f64(self.rng.unit());
        let at = self.now + link.latency + jitter;
        self.queue.push(Reverse((
            at,
            self.sent,
            Datagram {
                from,
                to,
                rtcp,
                bytes,
            },
        )));
    }

    fn route(&mut self, out: Outbox) {
        for (to, rtcp, bytes) in out.0 {
            self.send(Node::Router, Node::Peer(to), rtcp, bytes);
        }
    }

    fn deliver(&mut self, d: Datagram) {
        let at = self.at();
        match (d.to, d.from) {
            (Node::Router, Node::Peer(from)) => {
                let mut out = Outbox::default();
                if d.rtcp {
                    self.router.rtcp(from, &d.bytes, &mut out, at);
                } else {
                    self.router.rtp(from, &d.bytes, &mut out, at);
                }
                self.route(out);
            }
            (Node::Peer(PUB), _) => {
                if d.rtcp && self.publishing {
                    for p in self.publisher.rtcp(&d.bytes) {
                        self.send(Node::Peer(PUB), Node::Router, false, p);
                    }
                }
            }
            (Node::Peer(id), _) => {
                if let Some(s) = self.subscribers.get_mut(&id)
                    && !d.rtcp
                {
                    s.rtp(&d.bytes, self.now);
                }
            }
            (Node::Router, Node::Router) => {}
        }
    }

    /// Runs for `span` of simulated time.
    fn run(&mut self, span: Duration) {
        let end = self.now + span;
        while self.now < end {
            let next = self.now + TICK;
            while let Some(Reverse((at, _, _))) = self.queue.peek()
                && *at <= next
            {
                let Some(Reverse((at, _, d))) = self.queue.pop() else {
                    break;
                };
                self.now = self.now.max(at);
                self.deliver(d);
            }
            self.now = next;
            if self.publishing && self.now >= self.next_frame {
                self.next_frame += FRAME;
                if !self.publisher.muted {
                    for p in self.publisher.frame() {
                        self.send(Node::Peer(PUB), Node::Router, false, p);
                    }
                }
            }
            let mut out = Outbox::default();
            self.router.timeout(&mut out, self.at());
            self.route(out);
            let ids: Vec<TransportId> = self.subscribers.keys().copied().collect();
            for id in ids {
                if let Some(n) = self.subscribers.get_mut(&id).and_then(|s| s.nack(self.now)) {
                    self.send(Node::Peer(id), Node::Router, true, n);
                }
            }
        }
    }

    /// Lets everything in flight land (no new frames).
    fn settle(&mut self) {
        let publishing = std::mem::replace(&mut self.publishing, false);
        self.run(Duration::from_millis(600));
        self.publishing = publishing;
    }
}

#[test]
fn nack_recovers_a_lossy_subscriber_and_the_others_are_unaffected() {
    for (seed, rtx) in [(1, true), (2, false), (3, true)] {
        let mut sim = Sim::new(seed);
        sim.subscribe(TransportId(2), Subscriber::new(0xA0, rtx));
        sim.subscribe(TransportId(3), Subscriber::new(0xB0, rtx));
        sim.links.insert(
            (Node::Router, Node::Peer(TransportId(2))),
            Link::lossy(0.05),
        );
        sim.run(Duration::from_secs(10));
        sim.settle();
        let (a, b) = (
            &sim.subscribers[&TransportId(2)],
            &sim.subscribers[&TransportId(3)],
        );
        assert!(
            sim.dropped > 30,
            "seed {seed}: the link lost {}",
            sim.dropped
        );
        assert!(a.nacks_sent > 10);
        assert!(
            a.is_contiguous(),
            "seed {seed} rtx {rtx}: the lossy subscriber recovered every packet: {:.4}, {} still missing",
            a.completeness(),
            a.missing.len()
        );
        assert_eq!(a.received.len(), b.received.len(), "seed {seed}");
        assert_eq!(b.nacks_sent, 0, "the clean subscriber never lost anything");
        assert!(b.is_contiguous());
        assert!(sim.router.stats.retransmitted >= sim.dropped / 2);
        assert_eq!(
            sim.publisher.nacked, 0,
            "answered from the router's history"
        );
    }
}

#[test]
fn upstream_loss_is_repaired_by_the_publisher_for_every_subscriber() {
    for seed in [11, 12, 13] {
        let mut sim = Sim::new(seed);
        sim.subscribe(TransportId(2), Subscriber::new(0xA0, true));
        sim.subscribe(TransportId(3), Subscriber::new(0xB0, false));
        sim.links
            .insert((Node::Peer(PUB), Node::Router), Link::lossy(0.05));
        sim.run(Duration::from_secs(10));
        sim.settle();
        assert!(sim.dropped > 30);
        assert!(sim.publisher.nacked > 0, "the router asked the publisher");
        assert!(sim.router.stats.rtx_in > 0, "and unwrapped its RTX");
        for (id, s) in &sim.subscribers {
            assert!(
                s.completeness() > 0.995,
                "seed {seed}, subscriber {id}: {:.4}",
                s.completeness()
            );
        }
    }
}

#[test]
fn a_new_subscriber_starts_on_a_keyframe_asked_for_with_a_pli() {
    let mut sim = Sim::new(21);
    sim.subscribe(TransportId(2), Subscriber::new(0xA0, true));
    sim.run(Duration::from_secs(2));
    let plis_before = sim.publisher.plis;
    let joined = sim.now;
    sim.subscribe(TransportId(3), Subscriber::new(0xB0, true));
    sim.run(Duration::from_secs(1));
    assert_eq!(sim.publisher.plis, plis_before + 1, "one PLI for the join");
    let (arrived, payload) = sim.subscribers[&TransportId(3)].first.clone().unwrap();
    assert_eq!(
        &payload[..2],
        &[0x10, 0x00],
        "the first packet starts a keyframe"
    );
    // PLI 10 ms up, the next frame (≤ 33 ms), 10 ms down.
    assert!(
        arrived - joined <= Duration::from_millis(70),
        "first media {:?} after subscribing",
        arrived - joined
    );
    assert!(sim.subscribers[&TransportId(3)].is_contiguous());
}

#[test]
fn mute_and_unmute_keep_the_sequence_contiguous() {
    let mut sim = Sim::new(31);
    sim.subscribe(TransportId(2), Subscriber::new(0xA0, true));
    sim.run(Duration::from_secs(1));
    sim.command(MediaCommand::SetMuted {
        track: TRACK,
        muted: true,
    });
    let count = sim.subscribers[&TransportId(2)].received.len();
    // Publishing goes on while muted: the router drops it.
    sim.run(Duration::from_secs(2));
    // Packets in flight at the mute still land; then nothing.
    let muted_count = sim.subscribers[&TransportId(2)].received.len();
    assert!(muted_count - count <= 6);
    let (&last_ext, &last_ts) = sim.subscribers[&TransportId(2)]
        .timestamps
        .iter()
        .last()
        .unwrap();
    sim.command(MediaCommand::SetMuted {
        track: TRACK,
        muted: false,
    });
    sim.run(Duration::from_secs(1));
    sim.settle();
    let s = &sim.subscribers[&TransportId(2)];
    assert!(s.received.len() > muted_count + 60);
    assert!(s.is_contiguous(), "no hole where the mute was");
    assert_eq!(s.nacks_sent, 0, "so nothing to NACK");
    // The next packet's timestamp moved on by about the paused time (2 s at 90 kHz).
    let gap = s.timestamps[&(last_ext + 1)].wrapping_sub(last_ts);
    assert!((175_000..=200_000).contains(&gap), "timestamp gap {gap}");
}

#[test]
fn renegotiation_moves_a_subscription_to_a_new_ssrc_from_a_keyframe() {
    let mut sim = Sim::new(41);
    sim.subscribe(TransportId(2), Subscriber::new(0xA0, true));
    sim.run(Duration::from_secs(1));
    // The subscriber's m-line is recycled with new SSRCs (e.g. after an unsubscribe).
    sim.command(MediaCommand::Unsubscribe {
        track: TRACK,
        subscriber: TransportId(2),
    });
    sim.run(Duration::from_millis(300));
    let old = sim.subscribers.remove(&TransportId(2)).unwrap();
    let plis = sim.publisher.plis;
    sim.subscribe(TransportId(2), Subscriber::new(0xC0, true));
    sim.run(Duration::from_secs(1));
    sim.settle();
    let new = &sim.subscribers[&TransportId(2)];
    assert!(old.received.len() > 60);
    assert_eq!(sim.publisher.plis, plis + 1);
    assert_eq!(new.other_ssrcs, 0, "nothing more on the old SSRC");
    assert_eq!(&new.first.as_ref().unwrap().1[..2], &[0x10, 0x00]);
    assert!(new.received.len() > 25 && new.is_contiguous());
}

#[test]
fn when_the_publisher_leaves_its_track_stops_and_other_tracks_go_on() {
    let mut sim = Sim::new(51);
    sim.subscribe(TransportId(2), Subscriber::new(0xA0, false));
    sim.subscribe(TransportId(3), Subscriber::new(0xB0, false));
    sim.run(Duration::from_secs(1));
    // A subscriber leaves: the other one goes on.
    sim.router.transport_removed(TransportId(3));
    let b = sim.subscribers[&TransportId(3)].received.len();
    sim.run(Duration::from_millis(500));
    assert!(
        sim.subscribers[&TransportId(3)].received.len() <= b + 6,
        "in flight only"
    );
    let a = sim.subscribers[&TransportId(2)].received.len();
    assert!(a > 40);
    // The publisher leaves: its packets (still in flight, or from a stale sender) go nowhere.
    sim.router.transport_removed(PUB);
    sim.run(Duration::from_millis(500));
    let a2 = sim.subscribers[&TransportId(2)].received.len();
    assert!(a2 <= a + 20, "only what was in flight");
    sim.run(Duration::from_millis(500));
    assert_eq!(
        sim.subscribers[&TransportId(2)].received.len(),
        a2,
        "nothing more"
    );
    assert!(sim.router.stats.unknown_stream > 0, "dropped and counted");
    // NACKs for the gone track get nothing.
    let before = sim.router.stats.retransmitted;
    let mut out = Outbox::default();
    let mut b = vec![0u8; 64];
    let mut w = rtcp::Writer::new(&mut b);
    w.nack(1, 0xA0, &[1, 2, 3]).unwrap();
    let n = w.len();
    sim.router.rtcp(TransportId(2), &b[..n], &mut out, sim.at());
    assert_eq!(sim.router.stats.retransmitted, before);
    assert!(out.0.is_empty());
}
