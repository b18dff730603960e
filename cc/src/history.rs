//! The send side's packet history (draft-holmer-rmcat-transport-wide-cc-extensions-01 §2):
//! what was sent under each transport-wide sequence number, when, how large, and in which probe
//! cluster, so that a feedback message can be turned into per-packet results.
//!
//! A fixed ring allocated once: [`SendHistory::on_sent`] never allocates. Feedback about
//! sequence numbers the ring no longer (or never) held is counted and skipped.

use crate::twcc::{self, Feedback, REFERENCE_UNIT_US, REFERENCE_WRAP};

/// A probe cluster, numbered by the estimator that asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(pub u32);

/// What feedback says happened to one sent packet. Times are µs: `sent_us` on the caller's
/// clock (since the estimator's first call), `received_us` on the receiver's (unwrapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketResult {
    /// Extended (unwrapped) transport-wide sequence number.
    pub seq: u64,
    pub sent_us: i64,
    /// Bytes on the wire as the caller counted them.
    pub size: u32,
    pub cluster: Option<ClusterId>,
    /// `None`: reported lost.
    pub received_us: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Unreported,
    Lost,
    Received,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u64,
    sent_us: i64,
    size: u32,
    cluster: Option<ClusterId>,
    fate: Fate,
}

/// The send history of one transport.
#[derive(Debug)]
pub struct SendHistory {
    slots: Vec<Sent>,
    highest: Option<u64>,
    /// The last feedback's reference time, unwrapped, in 64 ms units.
    reference: Option<i64>,
    unknown: u64,
}

impl SendHistory {
    /// Remembers the last `window` packets (at least 64): enough for the packets in flight
    /// plus a feedback interval.
    pub fn new(window: usize) -> Self {
        let empty = Sent {
            seq: u64::MAX,
            sent_us: 0,
            size: 0,
            cluster: None,
            fate: Fate::Unreported,
        };
        Self {
            slots: vec![empty; window.max(64)],
            highest: None,
            reference: None,
            unknown: 0,
        }
    }

    /// Statuses in feedback for packets the history does not hold (too old or never sent).
    pub fn unknown(&self) -> u64 {
        self.unknown
    }

    /// Records a sent packet; returns its extended sequence number.
    pub fn on_sent(
        &mut self,
        seq: u16,
        size: u32,
        sent_us: i64,
        cluster: Option<ClusterId>,
    ) -> u64 {
        let ext = match self.highest {
            None => (1 << 32) + u64::from(seq),
            Some(h) => twcc::unwrap_seq(h, seq),
        };
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        let len = self.slots.len() as u64;
        self.slots[(ext % len) as usize] = Sent {
            seq: ext,
            sent_us,
            size,
            cluster,
            fate: Fate::Unreported,
        };
        ext
    }

    /// The packet sent under `seq` left later than recorded, at `at_us` (a pacer held it):
    /// its send time moves there, unless feedback already told its fate. Returns its probe
    /// cluster, if it was in one and moved.
    pub fn on_departed(&mut self, seq: u16, at_us: i64) -> Option<Option<ClusterId>> {
        let ext = twcc::unwrap_seq(self.highest?, seq);
        let len = self.slots.len() as u64;
        let s = &mut self.slots[(ext % len) as usize];
        if s.seq != ext || s.fate != Fate::Unreported || at_us <= s.sent_us {
            return None;
        }
        s.sent_us = at_us;
        Some(s.cluster)
    }

    /// Turns feedback into results in `out` (cleared first; keep one `Vec` so its capacity is
    /// reused): one per packet whose fate is news, in sequence order. A packet reported lost
    /// and later received is reported again as received; repeats are skipped.
    pub fn on_feedback(&mut self, fb: &Feedback<'_>, out: &mut Vec<PacketResult>) {
        out.clear();
        let Some(highest) = self.highest else {
            self.unknown += u64::from(fb.status_count());
            return;
        };
        let raw = i64::from(fb.reference_time());
        let wrap = i64::from(REFERENCE_WRAP);
        let reference = match self.reference {
            None => raw,
            Some(prev) => {
                // The nearest unwrapping of the 24-bit field.
                let diff = (raw - prev).rem_euclid(wrap);
                prev + if diff >= wrap / 2 { diff - wrap } else { diff }
            }
        };
        self.reference = Some(reference);
        let base_us = reference * REFERENCE_UNIT_US;
        let len = self.slots.len() as u64;
        for status in fb.packets() {
            let ext = twcc::unwrap_seq(highest, status.seq);
            let slot = &mut self.slots[(ext % len) as usize];
            if slot.seq != ext {
                self.unknown += 1;
                continue;
            }
            let received_us = status.received.map(|d| base_us + d);
            let fate = if received_us.is_some() {
                Fate::Received
            } else {
                Fate::Lost
            };
            if slot.fate == Fate::Received || slot.fate == fate {
                continue;
            }
            slot.fate = fate;
            out.push(PacketResult {
                seq: ext,
                sent_us: slot.sent_us,
                size: slot.size,
                cluster: slot.cluster,
                received_us,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twcc::ArrivalRecorder;
    use std::time::{Duration, Instant};

    #[test]
    fn feedback_becomes_results_across_the_wrap() {
        let mut h = SendHistory::new(128);
        let mut rec = ArrivalRecorder::new(1, 2, 128);
        let t0 = Instant::now();
        for i in 0..10u16 {
            let seq = 65530u16.wrapping_add(i);
            h.on_sent(
                seq,
                1000 + u32::from(i),
                i64::from(i) * 1000,
                (i == 3).then_some(ClusterId(7)),
            );
            if i != 4 {
                rec.on_packet(seq, t0 + Duration::from_millis(u64::from(i) * 2));
            }
        }
        let mut buf = [0u8; 1200];
        let n = rec.poll_feedback(&mut buf).unwrap().unwrap();
        let fb = Feedback::parse(&buf[..n]).unwrap();
        let mut out = Vec::new();
        h.on_feedback(&fb, &mut out);
        assert_eq!(out.len(), 10);
        assert_eq!(out[3].cluster, Some(ClusterId(7)));
        assert_eq!(out[3].size, 1003);
        assert_eq!(out[4].received_us, None);
        assert_eq!(out[6].seq, out[0].seq + 6);
        let arrival = |i: usize| out[i].received_us.unwrap();
        assert_eq!(arrival(9) - arrival(0), 18_000);
        // The same feedback again is no news.
        h.on_feedback(&fb, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn unknown_sequences_are_counted() {
        let mut h = SendHistory::new(64);
        let mut rec = ArrivalRecorder::new(1, 2, 64);
        let t0 = Instant::now();
        rec.on_packet(500, t0);
        let mut buf = [0u8; 100];
        let n = rec.poll_feedback(&mut buf).unwrap().unwrap();
        let fb = Feedback::parse(&buf[..n]).unwrap();
        let mut out = Vec::new();
        h.on_feedback(&fb, &mut out);
        assert_eq!(h.unknown(), 1);
        h.on_sent(1, 100, 0, None);
        h.on_feedback(&fb, &mut out);
        assert!(out.is_empty());
        assert_eq!(h.unknown(), 2);
    }
}
