//! Upstream loss: which of a publisher's packets never arrived, and when to NACK them again.
//! Sans-IO: the router feeds it every extended sequence number it receives and asks, on its
//! timer, which numbers are due for a (re)request. Bounded and preallocated.

use std::time::{Duration, Instant};

/// Packets tracked as missing at most; a longer gap is a jump (publisher restart), not loss.
pub const MAX_MISSING: usize = 256;
/// A packet is asked for at most this many times.
pub const MAX_TRIES: u8 = 6;
/// After this long a missing packet is useless to a real-time decoder: give up.
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// Shortest time between two requests for one packet (the publisher's RTT is unknown to us;
/// this bounds the NACK rate on links whose RTT is shorter).
pub const MIN_RETRY: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy)]
struct Entry {
    ext: u64,
    first: Instant,
    last_nack: Option<Instant>,
    tries: u8,
}

/// The missing packets of one stream.
#[derive(Debug)]
pub struct Missing {
    entries: Vec<Entry>,
    pub given_up: u64,
}

impl Default for Missing {
    fn default() -> Self {
        Missing {
            entries: Vec::with_capacity(MAX_MISSING),
            given_up: 0,
        }
    }
}

impl Missing {
    /// A packet arrived with extended number `ext`; `highest` is the highest seen before it.
    pub fn on_packet(&mut self, ext: u64, highest: Option<u64>, now: Instant) {
        let Some(h) = highest else { return };
        if ext <= h {
            // Late or repaired: no longer missing.
            if let Some(i) = self.entries.iter().position(|e| e.ext == ext) {
                self.entries.swap_remove(i);
            }
            return;
        }
        let gap = ext - h - 1;
        if gap as usize > MAX_MISSING {
            self.entries.clear();
            return;
        }
        for missing in h + 1..ext {
            if self.entries.len() == MAX_MISSING {
                // Oldest first out.
                if let Some((i, _)) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.ext) {
                    self.entries.swap_remove(i);
                    self.given_up += 1;
                }
            }
            self.entries.push(Entry {
                ext: missing,
                first: now,
                last_nack: None,
                tries: 0,
            });
        }
    }

    /// Fills `out` with the (16-bit) numbers to request now, ascending, marking them requested;
    /// forgets packets asked for too often or too long ago. Returns how many were written.
    pub fn due(&mut self, now: Instant, rtt: Duration, out: &mut [u16]) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|e| e.tries < MAX_TRIES && now.saturating_duration_since(e.first) < MAX_AGE);
        self.given_up += (before - self.entries.len()) as u64;
        let retry = rtt.max(MIN_RETRY);
        self.entries.sort_unstable_by_key(|e| e.ext);
        let mut n = 0;
        for e in &mut self.entries {
            if n == out.len() {
                break;
            }
            if e.last_nack
                .is_none_or(|t| now.saturating_duration_since(t) >= retry)
            {
                e.last_nack = Some(now);
                e.tries += 1;
                out[n] = e.ext as u16;
                n += 1;
            }
        }
        n
    }

    /// When `due` next has something to do.
    pub fn next_due(&self, rtt: Duration) -> Option<Instant> {
        let retry = rtt.max(MIN_RETRY);
        self.entries
            .iter()
            .map(|e| match e.last_nack {
                None => e.first,
                Some(t) => t + retry,
            })
            .min()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(50);

    #[test]
    fn gaps_are_requested_then_retried_after_an_rtt_until_repaired() {
        let t0 = Instant::now();
        let mut m = Missing::default();
        m.on_packet(10, None, t0);
        m.on_packet(11, Some(10), t0);
        m.on_packet(14, Some(11), t0); // 12, 13 missing
        let mut out = [0u16; 8];
        assert_eq!(m.due(t0, RTT, &mut out), 2);
        assert_eq!(&out[..2], &[12, 13]);
        assert_eq!(m.due(t0 + Duration::from_millis(10), RTT, &mut out), 0);
        assert_eq!(m.next_due(RTT), Some(t0 + RTT));
        m.on_packet(12, Some(14), t0 + Duration::from_millis(20)); // repaired
        assert_eq!(m.due(t0 + RTT, RTT, &mut out), 1);
        assert_eq!(out[0], 13);
    }

    #[test]
    fn gives_up_after_max_tries_or_age() {
        let t0 = Instant::now();
        let mut m = Missing::default();
        m.on_packet(1, None, t0);
        m.on_packet(3, Some(1), t0);
        let mut out = [0u16; 8];
        let mut asked = 0;
        for i in 0..20 {
            asked += m.due(t0 + RTT * i, RTT, &mut out);
        }
        assert_eq!(asked, usize::from(MAX_TRIES));
        assert!(m.is_empty());
        assert_eq!(m.given_up, 1);
        m.on_packet(5, Some(3), t0);
        assert_eq!(m.due(t0 + MAX_AGE, RTT, &mut out), 0, "too old");
    }

    #[test]
    fn a_jump_is_not_loss_and_wraps_use_the_low_bits() {
        let t0 = Instant::now();
        let mut m = Missing::default();
        m.on_packet(100_000, Some(10), t0);
        assert!(m.is_empty());
        m.on_packet(0x1_0001, Some(0xFFFF), t0);
        let mut out = [0u16; 8];
        assert_eq!(m.due(t0, RTT, &mut out), 1);
        assert_eq!(out[0], 0, "extended 0x1_0000 is sequence 0");
    }

    #[test]
    fn bounded() {
        let t0 = Instant::now();
        let mut m = Missing::default();
        let mut h = 0;
        for i in 0..100u64 {
            let next = h + 200;
            m.on_packet(next, Some(h), t0 + Duration::from_millis(i));
            h = next;
        }
        assert_eq!(m.len(), MAX_MISSING);
        assert!(m.given_up > 0);
    }
}
