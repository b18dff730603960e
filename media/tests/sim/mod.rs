//! The media router in a simulated network, shared by the scenario tests (`media_sim`,
//! `congestion_sim`): a fake clock, and links with seeded loss, latency and jitter (so
//! reordering) between the router and model endpoints. A publisher sends VP8 at 30 frames/s,
//! answers NACKs with RTX and PLIs with a keyframe; subscribers NACK their gaps and keep what
//! arrived. Every run of a scenario is the same run: no sockets, no real time.

// Each test target uses part of the model.
#![allow(dead_code)]

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

pub const TICK: Duration = Duration::from_millis(5);
pub const FRAME: Duration = Duration::from_micros(33_333);
pub const PUB: TransportId = TransportId(1);
pub const TRACK: TrackId = TrackId(7);
pub const MEDIA_SSRC: u32 = 0x1000;
pub const RTX_SSRC: u32 = 0x1001;

/// xorshift64*: a seeded, dependency-free PRNG; enough for loss and jitter.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One direction of a link.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub loss: f64,
    pub latency: Duration,
    /// Uniform extra delay in [0, jitter): packets overtake each other.
    pub jitter: Duration,
}

impl Link {
    pub fn clean() -> Link {
        Link {
            loss: 0.0,
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
        }
    }

    pub fn lossy(loss: f64) -> Link {
        Link {
            loss,
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(15),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    Router,
    Peer(TransportId),
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Datagram {
    pub from: Node,
    pub to: Node,
    pub rtcp: bool,
    pub bytes: Vec<u8>,
}

/// The publisher model: a VP8 track with RTX.
pub struct Publisher {
    pub seq: u16,
    pub rtx_seq: u16,
    pub ts: u32,
    pub sent: HashMap<u16, Vec<u8>>,
    pub keyframe_due: bool,
    pub muted: bool,
    pub plis: u32,
    pub nacked: u32,
}

/// The VP8 payload of packet `i` of a frame: the first one starts it (S=1, PID 0), and on a
/// keyframe carries P=0 in the payload header.
pub fn vp8_payload(first: bool, key: bool) -> Vec<u8> {
    let mut p = vec![if first { 0x10 } else { 0x00 }];
    p.push(if key { 0x00 } else { 0x01 });
    p.extend_from_slice(&[0x9D, 0x01, 0x2A]);
    p.resize(300, 0xAB);
    p
}

pub fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0x80, (u8::from(marker) << 7) | pt];
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&ssrc.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

impl Publisher {
    pub fn new() -> Publisher {
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
    pub fn frame(&mut self) -> Vec<Vec<u8>> {
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
    pub fn rtcp(&mut self, datagram: &[u8]) -> Vec<Vec<u8>> {
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
pub struct Subscriber {
    pub ssrc: u32,
    pub rtx: Option<RtxConfig>,
    pub highest: Option<u64>,
    pub received: HashSet<u64>,
    /// ext → (when found missing, last NACK, NACKs sent).
    pub missing: BTreeMap<u64, (Duration, Option<Duration>, u32)>,
    /// Arrival time and payload of the first packet, to check it opens a keyframe.
    pub first: Option<(Duration, Vec<u8>)>,
    pub timestamps: BTreeMap<u64, u32>,
    pub other_ssrcs: u32,
    pub nacks_sent: u32,
}

impl Subscriber {
    pub fn new(ssrc: u32, rtx: bool) -> Subscriber {
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

    pub fn config(&self, subscriber: TransportId) -> SubscriptionConfig {
        fixtures::subscription(TRACK, subscriber, self.ssrc, self.rtx.is_some())
    }

    pub fn rtp(&mut self, b: &[u8], now: Duration) {
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
    pub fn nack(&mut self, now: Duration) -> Option<Vec<u8>> {
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
    pub fn completeness(&self) -> f64 {
        let (Some(lo), Some(hi)) = (self.received.iter().min(), self.received.iter().max()) else {
            return 0.0;
        };
        self.received.len() as f64 / (hi - lo + 1) as f64
    }

    pub fn is_contiguous(&self) -> bool {
        self.completeness() == 1.0
    }
}

/// What the router sends, collected for the network.
#[derive(Default)]
pub struct Outbox(pub Vec<(TransportId, bool, Vec<u8>)>);

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

pub struct Sim {
    t0: Instant,
    pub now: Duration,
    pub rng: Rng,
    pub router: MediaRouter,
    pub publisher: Publisher,
    pub subscribers: BTreeMap<TransportId, Subscriber>,
    /// Links by (from, to); missing ones are clean.
    pub links: HashMap<(Node, Node), Link>,
    pub queue: BinaryHeap<Reverse<(Duration, u64, Datagram)>>,
    pub sent: u64,
    pub dropped: u64,
    pub next_frame: Duration,
    /// The publisher's transport is up (false after it leaves).
    pub publishing: bool,
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
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

    pub fn at(&self) -> Instant {
        self.t0 + self.now
    }

    pub fn subscribe(&mut self, id: TransportId, sub: Subscriber) {
        let mut out = Outbox::default();
        self.router
            .command(MediaCommand::Subscribe(sub.config(id)), &mut out, self.at());
        self.subscribers.insert(id, sub);
        self.route(out);
    }

    pub fn command(&mut self, cmd: MediaCommand) {
        let mut out = Outbox::default();
        self.router.command(cmd, &mut out, self.at());
        self.route(out);
    }

    pub fn send(&mut self, from: Node, to: Node, rtcp: bool, bytes: Vec<u8>) {
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

    pub fn route(&mut self, out: Outbox) {
        for (to, rtcp, bytes) in out.0 {
            self.send(Node::Router, Node::Peer(to), rtcp, bytes);
        }
    }

    pub fn deliver(&mut self, d: Datagram) {
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
    pub fn run(&mut self, span: Duration) {
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
    pub fn settle(&mut self) {
        let publishing = std::mem::replace(&mut self.publishing, false);
        self.run(Duration::from_millis(600));
        self.publishing = publishing;
    }
}
