//! The subscriber model: what arrived (by extended sequence number), NACKs for the gaps, and,
//! as options, a PLI when a gap is given up on and transport-wide feedback (the arrival time
//! of every packet's transport-wide sequence number, sent every 100 ms). The frames it could
//! decode, and when, follow from what arrived: which layer it was shown, and how long it froze.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringcast_cc::twcc::ArrivalRecorder;
use ringcast_media::fixtures::{self, SUB_PT, SUB_RTX_PT};
use ringcast_media::keyframe::starts_keyframe;
use ringcast_media::router::{RtxConfig, SubscriptionConfig};
use ringcast_media::rtcp;
use ringcast_media::rtp::RtpPacket;
use ringcast_media::sequence::extend;
use ringcast_types::{CodecName, TransportId};

use super::TRACK;
use super::publisher::LAYER_BYTE;

/// How often a subscriber sends transport-wide feedback (as libwebrtc's receivers do).
pub const FEEDBACK_INTERVAL: Duration = Duration::from_millis(100);
/// The least time between two of a subscriber's PLIs.
const PLI_INTERVAL: Duration = Duration::from_millis(300);
const SENDER_SSRC: u32 = 0xCAFE;

/// A packet of the subscriber's stream, as it first arrived.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    pub at: Duration,
    pub ts: u32,
    pub marker: bool,
    /// It starts a frame (VP8 S bit), and that frame is a keyframe.
    pub start: bool,
    pub key: bool,
    /// The publisher's layer, from the payload.
    pub layer: u8,
}

/// A frame the subscriber could decode: when (all its packets, and those of the frames it
/// depends on, had arrived), and of which layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    pub at: Duration,
    pub layer: u8,
}

struct TransportCc {
    ext: u8,
    recorder: ArrivalRecorder,
    next_feedback: Duration,
}

/// One subscription's receiver (its transport's, for transport-wide feedback).
pub struct Subscriber {
    pub ssrc: u32,
    pub rtx: Option<RtxConfig>,
    pub highest: Option<u64>,
    /// What arrived, by extended sequence number.
    pub packets: BTreeMap<u64, Packet>,
    /// ext → (when found missing, last NACK, NACKs sent).
    pub missing: BTreeMap<u64, (Duration, Option<Duration>, u32)>,
    /// Arrival time and payload of the first packet, to check it opens a keyframe.
    pub first: Option<(Duration, Vec<u8>)>,
    pub other_ssrcs: u32,
    pub nacks_sent: u32,
    /// Sends a PLI when it gives up on a gap.
    pub pli_on_loss: bool,
    pli_wanted: bool,
    last_pli: Option<Duration>,
    pub plis_sent: u32,
    transport_cc: Option<TransportCc>,
    pub feedback_sent: u32,
}

impl Subscriber {
    pub fn new(ssrc: u32, rtx: bool) -> Subscriber {
        Subscriber {
            ssrc,
            rtx: rtx.then_some(RtxConfig {
                ssrc: ssrc + 1,
                payload_type: SUB_RTX_PT,
            }),
            highest: None,
            packets: BTreeMap::new(),
            missing: BTreeMap::new(),
            first: None,
            other_ssrcs: 0,
            nacks_sent: 0,
            pli_on_loss: false,
            pli_wanted: false,
            last_pli: None,
            plis_sent: 0,
            transport_cc: None,
            feedback_sent: 0,
        }
    }

    /// A browser-like subscriber: RTX, transport-wide feedback under extension `ext`, and a
    /// PLI for a gap it gives up on.
    pub fn congestion_controlled(ssrc: u32, ext: u8) -> Subscriber {
        let mut s = Subscriber::new(ssrc, true);
        s.pli_on_loss = true;
        s.transport_cc = Some(TransportCc {
            ext,
            recorder: ArrivalRecorder::new(SENDER_SSRC, ssrc, 8192),
            next_feedback: FEEDBACK_INTERVAL,
        });
        s
    }

    pub fn config(&self, subscriber: TransportId) -> SubscriptionConfig {
        let mut c = fixtures::subscription(TRACK, subscriber, self.ssrc, self.rtx.is_some());
        c.transport_cc_ext = self.transport_cc.as_ref().map(|t| t.ext);
        c
    }

    /// An RTP packet arrives at `now` (`at` on the clock the feedback is stamped with).
    pub fn rtp(&mut self, b: &[u8], now: Duration, at: Instant) {
        let p = RtpPacket::parse(b).unwrap();
        if let Some(t) = &mut self.transport_cc
            && let Some(&[hi, lo]) = p.extension(t.ext)
        {
            t.recorder.on_packet(u16::from_be_bytes([hi, lo]), at);
        }
        let (seq, payload) = if Some(p.ssrc) == self.rtx.map(|r| r.ssrc) {
            assert_eq!(p.payload_type, SUB_RTX_PT);
            (
                u16::from_be_bytes([p.payload[0], p.payload[1]]),
                &p.payload[2..],
            )
        } else if p.ssrc == self.ssrc {
            assert_eq!(p.payload_type, SUB_PT);
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
        self.packets.entry(ext).or_insert(Packet {
            at: now,
            ts: p.timestamp,
            marker: p.marker,
            start: payload.first().is_some_and(|d| d & 0x10 != 0),
            key: starts_keyframe(CodecName::Vp8, payload),
            layer: payload.get(LAYER_BYTE).copied().unwrap_or(u8::MAX),
        });
    }

    /// The RTCP due at `now`: a NACK for the gaps due, a PLI if
    /// one was given up on, transport-wide feedback every `FEEDBACK_INTERVAL`. One datagram
    /// each.
    pub fn rtcp(&mut self, now: Duration) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = self.nack(now).into_iter().collect();
        if self.pli_wanted && self.last_pli.is_none_or(|l| now >= l + PLI_INTERVAL) {
            self.pli_wanted = false;
            self.last_pli = Some(now);
            self.plis_sent += 1;
            out.push(write(|w| w.pli(SENDER_SSRC, self.ssrc)));
        }
        if let Some(t) = &mut self.transport_cc
            && now >= t.next_feedback
        {
            t.next_feedback += FEEDBACK_INTERVAL;
            let mut buf = [0u8; 1200];
            while let Ok(Some(n)) = t.recorder.poll_feedback(&mut buf) {
                self.feedback_sent += 1;
                out.push(buf[..n].to_vec());
            }
        }
        out
    }

    /// A NACK for the gaps due: 10 ms after they show (reordering), then every 40 ms, 8 times.
    fn nack(&mut self, now: Duration) -> Option<Vec<u8>> {
        let mut lost = Vec::new();
        let before = self.missing.len();
        self.missing.retain(|_, (_, _, tries)| *tries < 8);
        if self.pli_on_loss && self.missing.len() < before {
            self.pli_wanted = true;
        }
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
        Some(write(|w| {
            w.nack(SENDER_SSRC, self.ssrc, &lost[..lost.len().min(64)])
        }))
    }

    /// Received packets over the span from the first to the last one.
    pub fn completeness(&self) -> f64 {
        let (Some(lo), Some(hi)) = (self.packets.keys().next(), self.packets.keys().next_back())
        else {
            return 0.0;
        };
        self.packets.len() as f64 / (hi - lo + 1) as f64
    }

    pub fn is_contiguous(&self) -> bool {
        self.completeness() == 1.0
    }

    /// The frames it could decode, in order: complete (first to marker packet, nothing
    /// missing), and a keyframe or the next frame of the layer after one it decoded. A frame is
    /// decoded once it and the frames before it are.
    pub fn playback(&self) -> Playback {
        let mut shown = Vec::new();
        let mut last: Option<(u64, u8)> = None; // the last frame decoded: its end, its layer
        let mut at = Duration::ZERO;
        let mut it = self.packets.iter().peekable();
        while let Some((&first, p)) = it.next() {
            let (mut end, mut done, mut marker, mut count) = (first, p.at, p.marker, 1);
            while let Some(&(&e, q)) = it.peek()
                && q.ts == p.ts
            {
                (end, done, marker, count) = (e, done.max(q.at), q.marker, count + 1);
                it.next();
            }
            let complete = p.start && marker && count == end - first + 1;
            let follows = last.is_some_and(|(e, layer)| e + 1 == first && layer == p.layer);
            if complete && (p.key || follows) {
                at = at.max(done);
                shown.push(Shown { at, layer: p.layer });
                last = Some((end, p.layer));
            } else {
                last = None;
            }
        }
        Playback(shown)
    }
}

/// The frames a subscriber decoded, in order.
#[derive(Debug, Clone)]
pub struct Playback(pub Vec<Shown>);

impl Playback {
    /// The longest time in [from, to] without a frame decoded (counting from the last one
    /// before `from`).
    pub fn longest_freeze(&self, from: Duration, to: Duration) -> Duration {
        let mut prev = self
            .0
            .iter()
            .rev()
            .find(|s| s.at <= from)
            .map_or(from, |s| s.at);
        let mut longest = Duration::ZERO;
        for s in self.0.iter().filter(|s| s.at > from && s.at <= to) {
            longest = longest.max(s.at - prev);
            prev = s.at;
        }
        longest.max(to.saturating_sub(prev))
    }

    /// The layer shown at `t`: that of the last frame decoded by then.
    pub fn layer_at(&self, t: Duration) -> Option<u8> {
        let i = self.0.partition_point(|s| s.at <= t);
        i.checked_sub(1).map(|i| self.0[i].layer)
    }

    /// When a frame of `layer` was first shown at or after `after`.
    pub fn first_on(&self, layer: u8, after: Duration) -> Option<Duration> {
        self.0
            .iter()
            .find(|s| s.at >= after && s.layer == layer)
            .map(|s| s.at)
    }

    /// The share of [from, to), sampled every 100 ms, that `layer` was shown.
    pub fn share_on(&self, layer: u8, from: Duration, to: Duration) -> f64 {
        let step = Duration::from_millis(100);
        let (mut t, mut on, mut all) = (from, 0u32, 0u32);
        while t < to {
            all += 1;
            on += u32::from(self.layer_at(t) == Some(layer));
            t += step;
        }
        f64::from(on) / f64::from(all.max(1))
    }

    /// Changes of the layer shown after `after`.
    pub fn switches_after(&self, after: Duration) -> usize {
        self.0
            .windows(2)
            .filter(|w| w[1].at > after && w[0].layer != w[1].layer)
            .count()
    }
}

/// One RTCP packet, as `f` writes it.
fn write(f: impl FnOnce(&mut rtcp::Writer<'_>) -> Result<(), rtcp::RtcpError>) -> Vec<u8> {
    let mut b = vec![0u8; 1500];
    let mut w = rtcp::Writer::new(&mut b);
    f(&mut w).unwrap();
    let n = w.len();
    b.truncate(n);
    b
}
