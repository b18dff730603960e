//! The send side's packet history (draft-holmer-rmcat-transport-wide-cc-extensions-01 §2):
//! what was sent under each transport-wide sequence number, when, how large, and in which probe
//! cluster, so that a feedback message can be turned into per-packet results.
//!
//! A fixed ring allocated once: [`SendHistory::on_sent`] never allocates. Feedback about
//! sequence numbers the ring no longer (or never) held is counted and skipped.

use crate::twcc::{self, Feedback, REFERENCE_UNIT_US, REFERENCE_WRAP};

/// A probe cluster, numbered from 1 by the estimator that asked for it.
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

/// One sent packet, in 16 bytes: a subscriber's history is written once per packet sent to
/// it, and with hundreds of subscribers these rings outgrow the cache, so a slot half the
/// size is half the misses (and 16 KiB for a 1024-packet window).
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// The low 32 bits of the extended sequence number (which slot it is says the rest).
    seq: u32,
    /// µs on the caller's clock, wrapped to 32 bits (71 minutes), read back against the
    /// newest send (`SendHistory::unwrap_us`).
    sent_us: u32,
    /// The probe cluster's id, 0 for none (ids start at 1).
    cluster: u32,
    size: u16,
    fate: Fate,
}

const _: () = assert!(std::mem::size_of::<Sent>() == 16);

impl Sent {
    fn cluster(&self) -> Option<ClusterId> {
        (self.cluster != 0).then_some(ClusterId(self.cluster))
    }
}

/// A send time as a slot keeps it.
fn wrap_us(us: i64) -> u32 {
    us as u32
}

/// A slot's send time in full: the one nearest `newest_us`, the newest send (within ±35
/// minutes).
fn unwrap_us(newest_us: i64, wrapped: u32) -> i64 {
    let behind = (newest_us as u32).wrapping_sub(wrapped) as i32;
    newest_us - i64::from(behind)
}

/// The send history of one transport.
#[derive(Debug)]
pub struct SendHistory {
    slots: Vec<Sent>,
    /// `slots.len() - 1` (a power of two).
    mask: u64,
    highest: Option<u64>,
    /// The newest send time recorded, µs: what wrapped send times are read against.
    newest_us: i64,
    /// The last feedback's reference time, unwrapped, in 64 ms units.
    reference: Option<i64>,
    unknown: u64,
}

impl SendHistory {
    /// Remembers the last `window` packets (at least 64, rounded up to a power of two):
    /// enough for the packets in flight plus a feedback interval.
    pub fn new(window: usize) -> Self {
        let empty = Sent {
            seq: u32::MAX,
            sent_us: 0,
            cluster: 0,
            size: 0,
            fate: Fate::Unreported,
        };
        let window = window.max(64).next_power_of_two();
        Self {
            slots: vec![empty; window],
            mask: window as u64 - 1,
            highest: None,
            newest_us: 0,
            reference: None,
            unknown: 0,
        }
    }

    fn slot(&mut self, ext: u64) -> &mut Sent {
        &mut self.slots[(ext & self.mask) as usize]
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
        self.newest_us = self.newest_us.max(sent_us);
        *self.slot(ext) = Sent {
            seq: ext as u32,
            sent_us: wrap_us(sent_us),
            cluster: cluster.map_or(0, |c| c.0),
            size: u16::try_from(size).unwrap_or(u16::MAX),
            fate: Fate::Unreported,
        };
        ext
    }

    /// The packet sent under `seq` left later than recorded, at `at_us` (a pacer held it):
    /// its send time moves there, unless feedback already told its fate. Returns its probe
    /// cluster, if it was in one and moved.
    pub fn on_departed(&mut self, seq: u16, at_us: i64) -> Option<Option<ClusterId>> {
        let ext = twcc::unwrap_seq(self.highest?, seq);
        let newest_us = self.newest_us;
        let s = self.slot(ext);
        let unreported = s.seq == ext as u32 && s.fate == Fate::Unreported;
        if !unreported || at_us <= unwrap_us(newest_us, s.sent_us) {
            return None;
        }
        s.sent_us = wrap_us(at_us);
        let cluster = s.cluster();
        self.newest_us = newest_us.max(at_us);
        Some(cluster)
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
        let newest_us = self.newest_us;
        for status in fb.packets() {
            let ext = twcc::unwrap_seq(highest, status.seq);
            let slot = self.slot(ext);
            if slot.seq != ext as u32 {
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
                sent_us: unwrap_us(newest_us, slot.sent_us),
                size: u32::from(slot.size),
                cluster: slot.cluster(),
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
    fn send_times_past_32_bits_and_departures_read_back_whole() {
        let mut h = SendHistory::new(64);
        let mut rec = ArrivalRecorder::new(1, 2, 64);
        let t0 = Instant::now();
        // 71.6 minutes in, either side of where the slots' 32-bit µs wrap.
        let before = i64::from(u32::MAX) - 500;
        for (i, at) in [before, before + 1000, before + 2000]
            .into_iter()
            .enumerate()
        {
            h.on_sent(i as u16, 1200, at, None);
            rec.on_packet(i as u16, t0 + Duration::from_millis(i as u64));
        }
        // The last one was held by a pacer and left 3 ms later; a second report changes
        // nothing once its fate is known.
        assert_eq!(h.on_departed(2, before + 5000), Some(None));
        let mut buf = [0u8; 200];
        let n = rec.poll_feedback(&mut buf).unwrap().unwrap();
        let fb = Feedback::parse(&buf[..n]).unwrap();
        let mut out = Vec::new();
        h.on_feedback(&fb, &mut out);
        let sent: Vec<i64> = out.iter().map(|r| r.sent_us).collect();
        assert_eq!(sent, [before, before + 1000, before + 5000]);
        assert_eq!(h.on_departed(2, before + 9000), None);
        assert_eq!(h.on_departed(40_000, before + 9000), None, "never sent");
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
