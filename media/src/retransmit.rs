//! What answers NACKs: a per-track history of forwarded packets sized in time (about a second
//! of video), RTT-aware resend suppression, and a per-subscriber retransmission budget so no
//! peer can force a retransmission storm. Preallocated; no allocation per packet.

use std::time::{Duration, Instant};

/// Largest packet the history keeps.
pub const MAX_PACKET: usize = 1500;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    ext_seq: u64,
    len: u16,
    stored: Option<Instant>,
    last_resent: Option<Instant>,
}

/// Recently forwarded packets of one track, by extended sequence number.
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

/// Why a NACKed packet is not resent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Never stored, overwritten, or older than the history's age.
    NotInHistory,
    /// Already resent less than one RTT ago: that copy may still be in flight.
    ResentWithinRtt,
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
            last_resent: None,
        };
        self.data[i * MAX_PACKET..i * MAX_PACKET + pkt.len()].copy_from_slice(pkt);
    }

    /// The packet is stored (a second copy of it is a duplicate).
    pub fn contains(&self, ext_seq: u64) -> bool {
        let s = &self.slots[self.index(ext_seq)];
        s.ext_seq == ext_seq && s.stored.is_some()
    }

    /// The packet to resend for a NACK, marking it resent at `now`.
    pub fn resend(&mut self, ext_seq: u64, now: Instant, rtt: Duration) -> Result<&[u8], Refusal> {
        let i = self.index(ext_seq);
        let s = &mut self.slots[i];
        let fresh = s
            .stored
            .is_some_and(|t| now.saturating_duration_since(t) <= self.max_age);
        if s.ext_seq != ext_seq || !fresh {
            return Err(Refusal::NotInHistory);
        }
        if s.last_resent
            .is_some_and(|t| now.saturating_duration_since(t) < rtt)
        {
            return Err(Refusal::ResentWithinRtt);
        }
        s.last_resent = Some(now);
        Ok(&self.data[i * MAX_PACKET..i * MAX_PACKET + usize::from(s.len)])
    }
}

/// A token bucket limiting one subscriber's retransmissions.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    tokens: f64,
    per_second: f64,
    burst: f64,
    last: Option<Instant>,
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
    fn resends_within_age_once_per_rtt() {
        let t0 = Instant::now();
        let mut h = History::new(100, Duration::from_secs(1));
        for s in 0..300u64 {
            h.insert(s, &[s as u8; 50], t0 + Duration::from_millis(s));
        }
        let now = t0 + Duration::from_millis(300);
        let rtt = Duration::from_millis(50);
        assert_eq!(h.resend(299, now, rtt).unwrap(), &[299u16 as u8; 50][..]);
        assert_eq!(
            h.resend(299, now + Duration::from_millis(10), rtt),
            Err(Refusal::ResentWithinRtt)
        );
        assert!(
            h.resend(299, now + Duration::from_millis(60), rtt).is_ok(),
            "after an RTT, again"
        );
        assert_eq!(
            h.resend(10, now, rtt),
            Err(Refusal::NotInHistory),
            "overwritten (128 slots)"
        );
        assert_eq!(
            h.resend(5000, now, rtt),
            Err(Refusal::NotInHistory),
            "never stored"
        );
        assert_eq!(
            h.resend(290, t0 + Duration::from_secs(5), rtt),
            Err(Refusal::NotInHistory),
            "older than a second"
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
}
