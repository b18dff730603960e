//! Pacing of bursts per subscriber transport, sans-IO: what a sweep queues for one transport
//! leaves at once up to a burst allowance, and the rest at `PACING_FACTOR` times the rate that
//! transport has been offered lately (at least `MIN_RATE_BPS`). A keyframe fanned out to N
//! subscribers by a publisher that sends it as one burst (aiortc, GStreamer) then leaves as N
//! short bursts spread over tens of milliseconds, not one N×25-packet wall; a publisher that
//! paces (browsers) is passed through untouched. Held datagrams keep their encrypted send
//! slots. Only media to connected transports is paced, so the state is bounded by transports.
//!
//! Where the media router has a bandwidth estimate for a transport (`set_target`), the rate is
//! `PACING_FACTOR` times that estimate instead, with a burst allowance of 20 ms at that rate
//! (at least `TARGET_BURST_BYTES`): a keyframe burst to a weak link leaves at what the link
//! plausibly carries, not as one 64 KiB wall that overruns its queue.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::IdMap;
use crate::outbox::Queued;
use ringcast_types::TransportId;
use ringcast_types::route::Departure;

/// Held datagrams leave at this multiple of the transport's recent rate (libwebrtc's pacer
/// uses the same factor for the sender's own bursts).
pub const PACING_FACTOR: f64 = 2.5;
/// The pacing rate never goes below this (a new or quiet transport).
pub const MIN_RATE_BPS: f64 = 2_000_000.0;
/// Bytes that leave at once: at least this, or 20 ms at the pacing rate if that is more. A 1 Mb/s
/// stream's keyframe (~25 KB) passes untouched; what is spread is a burst beyond what a
/// subscriber's link plausibly absorbs (a join's keyframe replay, several keyframes at once, a
/// high-bitrate keyframe). With 16 KiB the 1 Mb/s keyframes were spread too, and the p99 of
/// 500 subscribers went from 7 to 16 ms on loopback for no gain there.
pub const BURST_BYTES: f64 = 64.0 * 1024.0;
const BURST_TIME: f64 = 0.020;
/// Where a bandwidth estimate drives the rate: the least burst that leaves at once (a few
/// packets, so an estimate far too low still lets a frame's first packets out together), and
/// the least pacing rate.
pub const TARGET_BURST_BYTES: f64 = 8.0 * 1024.0;
pub const MIN_TARGET_PACE_BPS: f64 = 250_000.0;
/// A transport with this many datagrams waiting sends the next ones unpaced: pacing never
/// drops and never holds more than this.
pub const MAX_HELD: usize = 512;
/// The recent rate is re-measured this often (an average of the last two periods).
const RATE_PERIOD: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Flow {
    /// Smoothed bits per second sent.
    rate_bps: f64,
    period_bytes: u64,
    period_start: Instant,
    tokens: f64,
    last: Instant,
    held: VecDeque<Queued>,
    /// The bandwidth estimate the router set (bits/s).
    target_bps: Option<f64>,
}

impl Flow {
    fn new(now: Instant) -> Self {
        Flow {
            rate_bps: 0.0,
            period_bytes: 0,
            period_start: now,
            tokens: BURST_BYTES,
            last: now,
            held: VecDeque::new(),
            target_bps: None,
        }
    }

    fn pace_bps(&self) -> f64 {
        match self.target_bps {
            Some(t) => (t * PACING_FACTOR).max(MIN_TARGET_PACE_BPS),
            None => (self.rate_bps * PACING_FACTOR).max(MIN_RATE_BPS),
        }
    }

    fn burst(&self) -> f64 {
        let least = if self.target_bps.is_some() {
            TARGET_BURST_BYTES
        } else {
            BURST_BYTES
        };
        (self.pace_bps() / 8.0 * BURST_TIME).max(least)
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.pace_bps() / 8.0).min(self.burst());
        let period = now.saturating_duration_since(self.period_start);
        if period >= RATE_PERIOD {
            let measured = self.period_bytes as f64 * 8.0 / period.as_secs_f64();
            self.rate_bps = (self.rate_bps + measured) / 2.0;
            self.period_bytes = 0;
            self.period_start = now;
        }
    }

    fn take(&mut self, len: u32) -> bool {
        if self.tokens >= f64::from(len) {
            self.tokens -= f64::from(len);
            true
        } else {
            false
        }
    }

    /// When the first held datagram may leave.
    fn next_release(&self) -> Option<Instant> {
        let q = self.held.front()?;
        let missing = (f64::from(q.len) - self.tokens).max(0.0);
        Some(self.last + Duration::from_secs_f64(missing * 8.0 / self.pace_bps()))
    }
}

/// The shard's pacer.
#[derive(Debug, Default)]
pub struct Pacer {
    flows: IdMap<TransportId, Flow>,
    /// Transports with held datagrams.
    waiting: Vec<TransportId>,
    /// Datagrams that waited, since the last `take_paced`.
    paced: u64,
    /// Held datagrams with a transport-wide sequence number that left, since the last
    /// `departed` call: the router's estimators take their send times from here.
    departed: Vec<Departure>,
}

impl Pacer {
    /// Splits a sweep's queue in place: datagrams that may leave now stay, in order; the rest
    /// are held. Then appends the held datagrams whose time has come.
    pub fn admit(&mut self, queue: &mut Vec<Queued>, now: Instant) {
        let mut kept = 0;
        for i in 0..queue.len() {
            let q = queue[i];
            let Some(id) = q.flow else {
                queue[kept] = q;
                kept += 1;
                continue;
            };
            let f = self.flows.entry(id).or_insert_with(|| Flow::new(now));
            f.refill(now);
            // The rate is what the transport is offered, so the held backlog drains at
            // 2.5 times what arrives and never grows in steady state.
            f.period_bytes += u64::from(q.len);
            let pass = if f.held.is_empty() {
                f.take(q.len)
            } else {
                f.held.len() >= MAX_HELD
            };
            if pass {
                queue[kept] = q;
                kept += 1;
            } else {
                if f.held.is_empty() {
                    self.waiting.push(id);
                }
                f.held.push_back(q);
                self.paced += 1;
            }
        }
        queue.truncate(kept);
        self.release(queue, now);
    }

    /// Appends to `queue` the held datagrams whose time has come.
    pub fn release(&mut self, queue: &mut Vec<Queued>, now: Instant) {
        let flows = &mut self.flows;
        let departed = &mut self.departed;
        self.waiting.retain(|id| {
            let Some(f) = flows.get_mut(id) else {
                return false;
            };
            f.refill(now);
            while let Some(&q) = f.held.front() {
                if !f.take(q.len) {
                    break;
                }
                queue.push(q);
                f.held.pop_front();
                if let Some(seq) = q.seq {
                    departed.push(Departure {
                        to: *id,
                        seq,
                        at: now,
                    });
                }
            }
            !f.held.is_empty()
        });
    }

    /// The held datagrams that left since the last call, with their times; the caller clears
    /// it (its capacity is kept).
    pub fn departed(&mut self) -> &mut Vec<Departure> {
        &mut self.departed
    }

    /// When `release` next has something to let out.
    pub fn next_release(&self) -> Option<Instant> {
        self.waiting
            .iter()
            .filter_map(|id| self.flows.get(id)?.next_release())
            .min()
    }

    /// The router's bandwidth estimate for transport `id` (`None`: nothing measures it, and the
    /// recent rate drives the pace again).
    pub fn set_target(&mut self, id: TransportId, bps: Option<u64>, now: Instant) {
        let f = self.flows.entry(id).or_insert_with(|| Flow::new(now));
        f.refill(now);
        f.target_bps = bps.map(|b| b as f64);
        f.tokens = f.tokens.min(f.burst());
    }

    /// A transport is gone: its held datagrams, whose slots the caller releases.
    pub fn remove(&mut self, id: TransportId) -> Option<VecDeque<Queued>> {
        self.waiting.retain(|w| *w != id);
        self.flows.remove(&id).map(|f| f.held)
    }

    /// Datagrams held, now.
    pub fn held(&self) -> usize {
        self.waiting
            .iter()
            .filter_map(|id| self.flows.get(id))
            .map(|f| f.held.len())
            .sum()
    }

    /// Datagrams that waited since the last call (for metrics).
    pub fn take_paced(&mut self) -> u64 {
        std::mem::take(&mut self.paced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn q(slot: u32, flow: u64, len: u32) -> Queued {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        Queued {
            slot,
            to,
            len,
            flow: Some(TransportId(flow)),
            seq: None,
        }
    }

    #[test]
    fn a_held_datagram_tells_when_it_left() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        // A 400 kbit/s downlink (1 Mbit/s pacing, an 8 KiB allowance): of 12 tagged packets,
        // 6 leave at once, untold; the rest every 9.6 ms, each told with its time.
        p.set_target(TransportId(1), Some(400_000), t0);
        let mut queue: Vec<Queued> = (0..12)
            .map(|i| Queued {
                seq: Some(100 + i as u16),
                ..q(i, 1, 1200)
            })
            .collect();
        p.admit(&mut queue, t0);
        assert_eq!(queue.len(), 6);
        assert!(p.departed().is_empty(), "what left at once is not told");
        let mut t = t0;
        let mut told = Vec::new();
        while p.held() > 0 {
            t = p.next_release().unwrap();
            p.release(&mut queue, t);
            told.extend(p.departed().drain(..).map(|d| (d.to, d.seq, d.at)));
        }
        assert_eq!(told.len(), 6);
        for (k, &(to, seq, at)) in told.iter().enumerate() {
            assert_eq!((to, seq), (TransportId(1), 106 + k as u16));
            let due = queue.iter().position(|x| x.slot == 6 + k as u32).unwrap();
            assert!(due >= 6, "released after the allowance");
            assert!(at > t0 && at <= t, "{k}: {at:?}");
        }
        assert!(
            told.windows(2).all(|w| w[1].2 >= w[0].2),
            "in the order they left"
        );
        assert!(
            told[5].2.duration_since(told[0].2) >= Duration::from_millis(40),
            "spread at the pacing rate"
        );
    }

    #[test]
    fn a_burst_leaves_as_its_allowance_then_at_the_pacing_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        let n = (BURST_BYTES / 1200.0) as u32 + 25;
        let mut queue: Vec<Queued> = (0..n).map(|i| q(i, 1, 1200)).collect();
        p.admit(&mut queue, t0);
        let first = queue.len();
        assert_eq!(
            first,
            (BURST_BYTES / 1200.0) as usize,
            "the allowance leaves at once"
        );
        assert_eq!(p.held(), n as usize - first);
        assert!(
            queue.iter().enumerate().all(|(i, x)| x.slot == i as u32),
            "in order"
        );
        // The rest at 2 Mb/s (the floor): 1200 B every 4.8 ms.
        let mut out = Vec::new();
        let mut t = t0;
        while p.held() > 0 {
            let next = p.next_release().unwrap();
            assert!(next > t, "a release time ahead");
            t = next;
            p.release(&mut out, t);
        }
        let spread = t.duration_since(t0);
        // What the allowance left over counts towards the first held packet.
        let left = BURST_BYTES - first as f64 * 1200.0;
        let want = Duration::from_secs_f64(
            ((n as usize - first) as f64 * 1200.0 - left) * 8.0 / MIN_RATE_BPS,
        );
        assert!(
            spread.abs_diff(want) < Duration::from_millis(2),
            "{spread:?} vs {want:?}"
        );
        let slots: Vec<u32> = out.iter().map(|x| x.slot).collect();
        assert_eq!(slots, (first as u32..n).collect::<Vec<_>>(), "in order");
    }

    /// Drains `p`, returning when the last held datagram left.
    fn drain(p: &mut Pacer, mut t: Instant) -> Instant {
        let mut out = Vec::new();
        while p.held() > 0 {
            t = p.next_release().unwrap();
            p.release(&mut out, t);
        }
        t
    }

    #[test]
    fn an_estimate_paces_a_burst_to_what_the_link_carries() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        // A 400 kbit/s downlink: 1 Mbit/s pacing, an 8 KiB allowance (20 ms at 1 Mbit/s is
        // less). A 30 KB burst (several keyframes) leaves 6 packets at once.
        p.set_target(TransportId(1), Some(400_000), t0);
        let mut queue: Vec<Queued> = (0..25).map(|i| q(i, 1, 1200)).collect();
        p.admit(&mut queue, t0);
        assert_eq!(queue.len(), (TARGET_BURST_BYTES / 1200.0) as usize);
        let spread = drain(&mut p, t0).duration_since(t0);
        let left = TARGET_BURST_BYTES - queue.len() as f64 * 1200.0;
        let want = Duration::from_secs_f64(
            ((25 - queue.len()) as f64 * 1200.0 - left) * 8.0 / (400_000.0 * PACING_FACTOR),
        );
        assert!(
            spread.abs_diff(want) < Duration::from_millis(2),
            "{spread:?} vs {want:?}"
        );
        // An estimate far too low still lets the least pace through.
        p.set_target(TransportId(1), Some(1_000), t0);
        assert_eq!(p.flows[&TransportId(1)].pace_bps(), MIN_TARGET_PACE_BPS);
        // A wide one: 20 ms at its pace leave at once.
        p.set_target(TransportId(1), Some(20_000_000), t0);
        let f = &p.flows[&TransportId(1)];
        assert_eq!(f.burst(), 20_000_000.0 * PACING_FACTOR / 8.0 * BURST_TIME);
        // No estimate any more: the recent rate and the 64 KiB allowance again.
        p.set_target(TransportId(1), None, t0);
        assert_eq!(p.flows[&TransportId(1)].burst(), BURST_BYTES);
    }

    #[test]
    fn a_paced_stream_and_other_traffic_pass_untouched() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        // 1 Mb/s in 1200 B packets: one every 9.6 ms, for 3 s.
        let mut passed = 0;
        for i in 0..312u32 {
            let t = t0 + Duration::from_micros(9600 * u64::from(i));
            let mut queue = vec![q(i, 1, 1200)];
            p.admit(&mut queue, t);
            passed += queue.len();
        }
        assert_eq!(passed, 312);
        assert_eq!(p.take_paced(), 0);
        // Unpaced datagrams (STUN, DTLS) and other transports are independent.
        let n = (BURST_BYTES / 1200.0) as usize + 20;
        let mut queue: Vec<Queued> = (0..n as u32).map(|i| q(i, 2, 1200)).collect();
        queue.push(Queued {
            flow: None,
            ..q(999, 0, 100)
        });
        queue.push(q(1000, 3, 1200));
        p.admit(&mut queue, t0 + Duration::from_secs(3));
        assert!(queue.iter().any(|x| x.slot == 999));
        assert!(queue.iter().any(|x| x.slot == 1000));
        assert_eq!(p.held(), 20);
        let held = p.remove(TransportId(2)).unwrap();
        assert_eq!(held.len(), 20);
        assert_eq!(p.held(), 0);
        assert_eq!(p.next_release(), None);
    }

    #[test]
    fn the_rate_follows_what_the_transport_is_sent() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        // 40 Mb/s for 2 s: the pacing rate becomes ~90 Mb/s, so the allowance (20 ms of it)
        // grows past the minimum.
        for i in 0..8334u32 {
            let t = t0 + Duration::from_micros(240 * u64::from(i));
            let mut queue = vec![q(i, 1, 1200)];
            p.admit(&mut queue, t);
        }
        let f = &p.flows[&TransportId(1)];
        assert!(f.pace_bps() > 80e6, "{}", f.pace_bps());
        assert!(f.burst() > BURST_BYTES);
    }

    #[test]
    fn a_full_backlog_passes_rather_than_grows() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        let n = MAX_HELD as u32 + 100;
        let mut queue: Vec<Queued> = (0..n).map(|i| q(i, 1, 1200)).collect();
        p.admit(&mut queue, t0);
        assert_eq!(p.held(), MAX_HELD);
        assert_eq!(queue.len(), n as usize - MAX_HELD);
    }
}
