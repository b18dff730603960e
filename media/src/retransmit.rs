//! What answers NACKs: a per-track history of forwarded packets sized in time (about a second
//! of video), per-subscription resend suppression within an RTT, and a per-subscriber
//! retransmission budget that scales with what the subscriber receives, so no peer can force a
//! retransmission storm. Preallocated; no allocation per packet.

use std::time::{Duration, Instant};

/// Largest packet the history keeps.
pub const MAX_PACKET: usize = 1500;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    ext_seq: u64,
    len: u16,
    stored: Option<Instant>,
}

/// Recently forwarded packets of one track, by extended sequence number. Shared by every
/// subscriber of the track: what one subscriber was resent says nothing about another.
pub struct History {
    slots: Box<[Slot]>,
    data: Box<[u8]>,
    max_age: Duration,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("capacity", &self.slots.len())
            .field("max_age", &self.max_age)
            .finish()
    }
}

/// Why a NACKed packet is not resent; each is a label of `ringcast_retransmits_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The NACKed number is not one this subscriber was sent from the current source (before
    /// a layer switch or resubscription, or never sent).
    UnknownSequence,
    /// Never stored, overwritten, or older than the history's age.
    NotInHistory,
    /// Already resent to this subscriber less than one RTT ago: that copy may still be in flight.
    ResentWithinRtt,
    /// The subscriber's retransmission budget is spent.
    Budget,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::UnknownSequence,
        Refusal::NotInHistory,
        Refusal::ResentWithinRtt,
        Refusal::Budget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownSequence => "unknown_sequence",
            Refusal::NotInHistory => "not_in_history",
            Refusal::ResentWithinRtt => "resent_within_rtt",
            Refusal::Budget => "budget",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl History {
    /// `capacity` slots (rounded up to a power of two) for packets up to `max_age` old. A second
    /// of 2 Mb/s video is ~200 packets; 1 s at 1.5 k packets/s needs 2048.
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        let cap = capacity.max(16).next_power_of_two();
        History {
            slots: vec![Slot::default(); cap].into_boxed_slice(),
            data: vec![0u8; cap * MAX_PACKET].into_boxed_slice(),
            max_age,
        }
    }

    fn index(&self, ext_seq: u64) -> usize {
        (ext_seq as usize) & (self.slots.len() - 1)
    }

    /// Stores a packet (plaintext RTP). Oversize packets are not stored.
    pub fn insert(&mut self, ext_seq: u64, pkt: &[u8], now: Instant) {
        if pkt.len() > MAX_PACKET {
            return;
        }
        let i = self.index(ext_seq);
        self.slots[i] = Slot {
            ext_seq,
            len: pkt.len() as u16,
            stored: Some(now),
        };
        self.data[i * MAX_PACKET..i * MAX_PACKET + pkt.len()].copy_from_slice(pkt);
    }

    /// The packet is stored (a second copy of it is a duplicate).
    pub fn contains(&self, ext_seq: u64) -> bool {
        let s = &self.slots[self.index(ext_seq)];
        s.ext_seq == ext_seq && s.stored.is_some()
    }

    /// The stored packet `ext_seq`, if it is still there and younger than the history's age.
    pub fn get(&self, ext_seq: u64, now: Instant) -> Result<&[u8], Refusal> {
        let i = self.index(ext_seq);
        let s = &self.slots[i];
        let fresh = s
            .stored
            .is_some_and(|t| now.saturating_duration_since(t) <= self.max_age);
        if s.ext_seq != ext_seq || !fresh {
            return Err(Refusal::NotInHistory);
        }
        Ok(&self.data[i * MAX_PACKET..i * MAX_PACKET + usize::from(s.len)])
    }
}

/// Resends remembered per subscription: a NACK repeated within an RTT finds its packet here.
/// Direct-mapped by sequence number; a collision only forgets an older resend (at worst one
/// extra copy), it never refuses a packet that was not resent.
const RESEND_MEMORY: usize = 32;

/// What one subscription was resent recently.
#[derive(Debug, Clone)]
pub struct Resent {
    entries: [(u64, Option<Instant>); RESEND_MEMORY],
}

impl Default for Resent {
    fn default() -> Self {
        Resent {
            entries: [(0, None); RESEND_MEMORY],
        }
    }
}

impl Resent {
    /// True if `ext_seq` was resent less than `rtt` before `now`.
    pub fn within_rtt(&self, ext_seq: u64, now: Instant, rtt: Duration) -> bool {
        let (seq, at) = self.entries[ext_seq as usize % RESEND_MEMORY];
        seq == ext_seq && at.is_some_and(|t| now.saturating_duration_since(t) < rtt)
    }

    pub fn record(&mut self, ext_seq: u64, now: Instant) {
        self.entries[ext_seq as usize % RESEND_MEMORY] = (ext_seq, Some(now));
    }
}

/// A subscriber's budget: this share of the packets it is sent, per second...
pub const BUDGET_SHARE: f64 = 0.5;
/// ...but never less than this many per second (a new or quiet subscription)...
pub const BUDGET_FLOOR: f64 = 20.0;
/// ...with a burst of at least this many (one lost keyframe at a high bitrate).
pub const BUDGET_MIN_BURST: f64 = 64.0;

/// A token bucket limiting one subscriber's retransmissions.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    tokens: f64,
    per_second: f64,
    burst: f64,
    last: Option<Instant>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::for_rate(0.0)
    }
}

impl Budget {
    pub fn new(per_second: f64, burst: f64) -> Self {
        Budget {
            tokens: burst,
            per_second,
            burst,
            last: None,
        }
    }

    /// The budget of a subscription sent `packets_per_second`.
    pub fn for_rate(packets_per_second: f64) -> Self {
        let (rate, burst) = Self::limits(packets_per_second);
        Budget::new(rate, burst)
    }

    fn limits(packets_per_second: f64) -> (f64, f64) {
        let rate = (packets_per_second * BUDGET_SHARE).max(BUDGET_FLOOR);
        (rate, rate.max(BUDGET_MIN_BURST))
    }

    /// Follows the subscription's measured send rate (tokens already earned are kept, up to
    /// the new burst).
    pub fn set_rate(&mut self, packets_per_second: f64) {
        let (rate, burst) = Self::limits(packets_per_second);
        self.per_second = rate;
        self.burst = burst;
        self.tokens = self.tokens.min(burst);
    }

    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.per_second).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_serves_packets_within_its_age() {
        let t0 = Instant::now();
        let mut h = History::new(100, Duration::from_secs(1));
        for s in 0..300u64 {
            h.insert(s, &[s as u8; 50], t0 + Duration::from_millis(s));
        }
        let now = t0 + Duration::from_millis(300);
        assert_eq!(h.get(299, now).unwrap(), &[299u16 as u8; 50][..]);
        assert_eq!(h.get(299, now), h.get(299, now), "reading takes nothing");
        assert_eq!(
            h.get(10, now),
            Err(Refusal::NotInHistory),
            "overwritten (128 slots)"
        );
        assert_eq!(h.get(5000, now), Err(Refusal::NotInHistory), "never stored");
        assert_eq!(
            h.get(290, t0 + Duration::from_secs(5)),
            Err(Refusal::NotInHistory),
            "older than a second"
        );
    }

    #[test]
    fn resends_are_remembered_per_subscription_for_an_rtt() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(50);
        let (mut a, b) = (Resent::default(), Resent::default());
        a.record(299, t0);
        assert!(a.within_rtt(299, t0 + Duration::from_millis(10), rtt));
        assert!(
            !b.within_rtt(299, t0 + Duration::from_millis(10), rtt),
            "another subscriber's resend does not count"
        );
        assert!(
            !a.within_rtt(299, t0 + Duration::from_millis(60), rtt),
            "after an RTT, again"
        );
        assert!(
            !a.within_rtt(299 + RESEND_MEMORY as u64, t0, rtt),
            "a colliding number was never resent"
        );
    }

    #[test]
    fn budget_limits_a_storm() {
        let t0 = Instant::now();
        let mut b = Budget::new(100.0, 20.0);
        let granted = (0..1000).filter(|_| b.take(t0)).count();
        assert_eq!(granted, 20, "burst only, at one instant");
        let later = t0 + Duration::from_millis(500);
        let granted = (0..1000).filter(|_| b.take(later)).count();
        assert_eq!(granted, 20, "refilled at 100/s, capped at the burst");
    }

    #[test]
    fn budget_scales_with_the_send_rate() {
        let cases = [
            (0.0, BUDGET_FLOOR, BUDGET_MIN_BURST),
            (100.0, 50.0, BUDGET_MIN_BURST),
            (1000.0, 500.0, 500.0),
        ];
        for (rate, per_second, burst) in cases {
            let mut b = Budget::for_rate(rate);
            assert_eq!(b.per_second(), per_second, "rate {rate}");
            let t0 = Instant::now();
            let granted = (0..10_000).filter(|_| b.take(t0)).count();
            assert_eq!(granted, burst as usize, "rate {rate}: burst");
        }
        let mut b = Budget::for_rate(1000.0);
        b.set_rate(0.0);
        let t0 = Instant::now();
        let granted = (0..10_000).filter(|_| b.take(t0)).count();
        assert_eq!(
            granted, BUDGET_MIN_BURST as usize,
            "earned tokens shrink to the new burst"
        );
    }
}
