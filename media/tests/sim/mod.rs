//! The media router in a simulated network, shared by the scenario tests (`media_sim`,
//! `congestion_sim`): a fake clock, and links with seeded loss, latency and jitter (so
//! reordering), or a bottleneck (a capacity that changes on schedule, a drop-tail queue),
//! between the router and model endpoints. A publisher (`publisher`) sends VP8 at 30
//! frames/s, one encoding or simulcast layers, answers NACKs with RTX and PLIs with a keyframe;
//! subscribers (`subscriber`) NACK their gaps, keep what arrived and may send transport-wide
//! feedback. Every run of a scenario is the same run: no sockets, no real time.

// Each test target uses part of the model.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use ringcast_media::fixtures;
use ringcast_media::router::{Egress, MediaCommand, MediaRouter, TrackId};
use ringcast_types::TransportId;

pub mod publisher;
pub mod subscriber;

pub use publisher::Publisher;
pub use subscriber::Subscriber;

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

/// Bytes a datagram takes on a bottleneck besides its RTP or RTCP: IPv4 and UDP headers.
pub const OVERHEAD: usize = 28;

/// A bottleneck: one queue served at a capacity that changes at given times (drop-tail: a
/// datagram that would take the queue past `queue_bytes`, or wait longer than `max_delay`,
/// is dropped, as a tc tbf qdisc's `limit` and `latency` do). The schedule is known
/// ahead, so each datagram's departure is exact when it is queued.
#[derive(Debug, Clone)]
pub struct Bottleneck {
    /// (from when, bits/s), in time order, the first from zero.
    capacity: Vec<(Duration, u64)>,
    pub queue_bytes: u64,
    pub max_delay_allowed: Option<Duration>,
    /// When the last bit queued leaves.
    busy_until: Duration,
    /// Datagrams the full queue dropped.
    pub dropped: u64,
    /// The longest queueing delay seen.
    pub max_delay: Duration,
}

impl Bottleneck {
    pub fn new(bps: u64, queue_bytes: u64) -> Bottleneck {
        Bottleneck {
            capacity: vec![(Duration::ZERO, bps)],
            queue_bytes,
            max_delay_allowed: None,
            busy_until: Duration::ZERO,
            dropped: 0,
            max_delay: Duration::ZERO,
        }
    }

    /// Datagrams that would wait longer than `d` are dropped.
    pub fn max_delay(mut self, d: Duration) -> Bottleneck {
        self.max_delay_allowed = Some(d);
        self
    }

    /// The capacity becomes `bps` at `at` (after the changes already given).
    pub fn then(mut self, at: Duration, bps: u64) -> Bottleneck {
        self.capacity.push((at, bps));
        self
    }

    /// The capacity at `t`, and when it next changes.
    fn rate_at(&self, t: Duration) -> (f64, Option<Duration>) {
        let i = self.capacity.partition_point(|&(from, _)| from <= t).max(1) - 1;
        let rate = self.capacity[i].1.max(1) as f64;
        (rate, self.capacity.get(i + 1).map(|&(at, _)| at))
    }

    /// Bits served over [from, to).
    fn served(&self, mut from: Duration, to: Duration) -> f64 {
        let mut bits = 0.0;
        while from < to {
            let (rate, next) = self.rate_at(from);
            let until = next.map_or(to, |n| n.min(to));
            bits += (until - from).as_secs_f64() * rate;
            from = until;
        }
        bits
    }

    /// When `bits` more are served, starting at `from`.
    fn finish(&self, mut from: Duration, mut bits: f64) -> Duration {
        loop {
            let (rate, next) = self.rate_at(from);
            let need = Duration::from_secs_f64(bits / rate);
            match next {
                Some(n) if from + need > n => {
                    bits -= (n - from).as_secs_f64() * rate;
                    from = n;
                }
                _ => return from + need,
            }
        }
    }

    /// A datagram of `bytes` reaches the queue at `now`: when it leaves, or `None` if the
    /// queue is full.
    pub fn enqueue(&mut self, now: Duration, bytes: usize) -> Option<Duration> {
        let start = self.busy_until.max(now);
        let queued = self.served(now, start) / 8.0;
        let too_late = self.max_delay_allowed.is_some_and(|d| start - now > d);
        if too_late || queued + bytes as f64 > self.queue_bytes as f64 {
            self.dropped += 1;
            return None;
        }
        self.max_delay = self.max_delay.max(start - now);
        self.busy_until = self.finish(start, bytes as f64 * 8.0);
        Some(self.busy_until)
    }

    /// How long a datagram queued at `now` waits before it starts to leave.
    pub fn delay_at(&self, now: Duration) -> Duration {
        self.busy_until.saturating_sub(now)
    }
}

/// One direction of a link.
#[derive(Debug, Clone)]
pub struct Link {
    pub loss: f64,
    pub latency: Duration,
    /// Uniform extra delay in [0, jitter): packets overtake each other.
    pub jitter: Duration,
    /// A queue ahead of the latency, if the link is narrow.
    pub bottleneck: Option<Bottleneck>,
}

impl Link {
    pub fn clean() -> Link {
        Link {
            loss: 0.0,
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            bottleneck: None,
        }
    }

    pub fn lossy(loss: f64) -> Link {
        Link {
            loss,
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(15),
            bottleneck: None,
        }
    }

    /// A narrow link: `bottleneck`, then 25 ms of propagation, random loss (after the queue).
    pub fn narrow(bottleneck: Bottleneck, loss: f64) -> Link {
        Link {
            loss,
            latency: Duration::from_millis(25),
            jitter: Duration::ZERO,
            bottleneck: Some(bottleneck),
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
    /// A publisher of one encoding (`Publisher::new`).
    pub fn new(seed: u64) -> Sim {
        Sim::with_publisher(seed, Publisher::new())
    }

    pub fn with_publisher(seed: u64, publisher: Publisher) -> Sim {
        let t0 = Instant::now();
        let mut router = MediaRouter::default();
        router.command(
            MediaCommand::AddTrack(fixtures::vp8_track(TRACK, PUB, publisher.encodings())),
            &mut Outbox::default(),
            t0,
        );
        Sim {
            t0,
            now: Duration::ZERO,
            rng: Rng(seed | 1),
            router,
            publisher,
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
        let link = self.links.entry((from, to)).or_insert_with(Link::clean);
        self.sent += 1;
        let leaves = match &mut link.bottleneck {
            Some(b) => match b.enqueue(self.now, bytes.len() + OVERHEAD) {
                Some(t) => t,
                None => return,
            },
            None => self.now,
        };
        if self.rng.unit() < link.loss {
            self.dropped += 1;
            return;
        }
        let jitter = link.jitter.mul_f64(self.rng.unit());
        let at = leaves + link.latency + jitter;
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
                    s.rtp(&d.bytes, self.now, self.t0 + self.now);
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
                    for p in self.publisher.frame(self.now) {
                        self.send(Node::Peer(PUB), Node::Router, false, p);
                    }
                }
            }
            let mut out = Outbox::default();
            self.router.timeout(&mut out, self.at());
            self.route(out);
            let ids: Vec<TransportId> = self.subscribers.keys().copied().collect();
            for id in ids {
                let rtcp = self
                    .subscribers
                    .get_mut(&id)
                    .map_or_else(Vec::new, |s| s.rtcp(self.now));
                for b in rtcp {
                    self.send(Node::Peer(id), Node::Router, true, b);
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
