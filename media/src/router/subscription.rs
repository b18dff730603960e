//! One subscriber's copy of a track: the keyframe gate (a new, resumed or switching
//! subscription starts on a keyframe), the VP8 temporal layers it is sent, the sequence and
//! timestamp rewrite that keeps its stream continuous across pauses, layer switches and the
//! pictures of temporal layers it is not sent, the header-extension ids it negotiated, what it
//! was sent (for sender reports and its retransmission budget), and the RTT and loss its
//! receiver reports give. No IO: its copies are written into `Egress` send slots.

use std::time::{Duration, Instant};

use ringcast_cc::ClusterId;
use ringcast_types::route::Egress;
use ringcast_types::{SubscriptionSettings, TransportId, ext};

use super::TrackId;
use super::downstream::Downstream;
use super::forward::{ANY_LAYER, Forwarding};
use crate::retransmit::{Budget, Resent};
use crate::rtcp;
use crate::rtp::{Rewrite, RtpPacket, write_rewritten_head};
use crate::sequence::SequenceRewriter;
use crate::vp8::{self, PictureRewriter};

/// Until RTCP tells us better.
pub const DEFAULT_RTT: Duration = Duration::from_millis(100);
/// RTT samples above this are taken as this (a stalled peer, a stale report).
pub const MAX_RTT: Duration = Duration::from_secs(1);
/// Sender reports remembered per subscription, to match the LSR of its receiver reports.
const SR_MEMORY: usize = 4;
/// Header extensions Ringcast forwards (others are dropped from subscribers' copies: MID/RID
/// name the publisher's m-line and layer, transport-wide sequence numbers are per transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardedExt {
    AudioLevel,
    AbsSendTime,
    DependencyDescriptor,
}

impl ForwardedExt {
    /// The forwarded extension a negotiated URI names, if it is one.
    pub fn from_uri(uri: &str) -> Option<Self> {
        match uri {
            ext::AUDIO_LEVEL => Some(ForwardedExt::AudioLevel),
            ext::ABS_SEND_TIME => Some(ForwardedExt::AbsSendTime),
            ext::DEPENDENCY_DESCRIPTOR => Some(ForwardedExt::DependencyDescriptor),
            _ => None,
        }
    }
}

/// RTX (RFC 4588) as a subscriber negotiated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtxConfig {
    pub ssrc: u32,
    pub payload_type: u8,
}

/// One subscriber's copy of a track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionConfig {
    pub track: TrackId,
    pub subscriber: TransportId,
    pub ssrc: u32,
    pub payload_type: u8,
    /// Retransmissions go here when set, else they repeat the original packet.
    pub rtx: Option<RtxConfig>,
    /// The subscriber's ids for the forwarded extensions it accepted.
    pub exts: Vec<(ForwardedExt, u8)>,
    /// The subscriber's id for transport-wide sequence numbers, where it negotiated
    /// transport-cc (one per transport: every subscription of it carries the same).
    pub transport_cc_ext: Option<u8>,
    /// What the subscriber asked of it: layer, rendered size, priority.
    pub settings: SubscriptionSettings,
}

/// Every temporal layer.
pub const ANY_TEMPORAL: u8 = u8::MAX;

/// The frame a packet belongs to, as its dependency descriptor or VP8 payload descriptor
/// tells: its temporal layer, and its number (frame number or picture id, `mask` wide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame {
    pub(super) tid: u8,
    pub(super) id: u16,
    pub(super) mask: u16,
}

impl Frame {
    /// Whether it is a newer frame than the one numbered `newest`.
    pub(super) fn is_after(&self, newest: u16) -> bool {
        self.id != newest && (self.id.wrapping_sub(newest) & self.mask) <= self.mask / 2
    }
}

/// What became of one packet for one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Sent,
    /// Its copy could not be sent (no send slot, or the transport is not ready).
    NotSent,
    /// Older than its stream's current segment, or than what it remembers: no place left.
    Dropped,
    /// Of a temporal layer above the one it is sent.
    Thinned,
}

pub(super) struct Subscription {
    pub(super) config: SubscriptionConfig,
    pub(super) rewriter: SequenceRewriter,
    /// VP8's picture ids and TL0PICIDX, continuous across switches as the sequence is.
    pub(super) pictures: Option<PictureRewriter>,
    /// The simulcast layer forwarded now, the one wanted, the keyframe gate.
    pub(super) forwarding: Forwarding,
    /// The highest layer its subscriber's bandwidth estimate allows (see `allocate`), and
    /// when it last came down.
    pub(super) cap: usize,
    /// VP8 temporal layers: the highest sent now and the one aimed at (`ANY_TEMPORAL`: all),
    /// and the newest picture seen (where a picture starts, the aim is taken: down at once,
    /// up at a base-layer picture, which depends on no picture of a higher layer).
    pub(super) temporal: u8,
    pub(super) temporal_target: u8,
    newest_picture: Option<u16>,
    pub(super) capped_down_at: Option<Instant>,
    /// What its subscriber was last told of it.
    pub(super) reported: Option<super::quality::Reported>,
    last_out: Option<Instant>,
    pub(super) budget: Budget,
    /// `packets` when the budget last followed the send rate.
    pub(super) packets_at_rate: u32,
    pub(super) resent: Resent,
    /// Next RTX sequence number.
    pub(super) rtx_seq: u16,
    /// Packets and payload octets sent, for sender reports.
    pub(super) packets: u32,
    pub(super) octets: u32,
    /// (middle 32 bits of the NTP time, when sent) of the latest sender reports.
    pub(super) sent_reports: [Option<(u32, Instant)>; SR_MEMORY],
    /// Smoothed RTT from receiver reports; `None` until one matched a sender report.
    pub(super) rtt: Option<Duration>,
    /// Loss the subscriber reported last (RFC 3550 fraction, /256).
    fraction_lost: u8,
}

impl Subscription {
    pub(super) fn new(config: SubscriptionConfig, layer: usize, video: bool, vp8: bool) -> Self {
        Subscription {
            pictures: vp8.then(PictureRewriter::default),
            forwarding: Forwarding {
                layer,
                target: layer,
                waiting_keyframe: video,
            },
            // Any start is valid (RFC 4588); the SSRC's low bits keep it deterministic.
            rtx_seq: config.rtx.map_or(0, |r| r.ssrc as u16),
            config,
            cap: ANY_LAYER,
            temporal: ANY_TEMPORAL,
            temporal_target: ANY_TEMPORAL,
            newest_picture: None,
            capped_down_at: None,
            reported: None,
            rewriter: SequenceRewriter::default(),
            last_out: None,
            budget: Budget::default(),
            packets_at_rate: 0,
            resent: Resent::default(),
            packets: 0,
            octets: 0,
            sent_reports: [None; SR_MEMORY],
            rtt: None,
            fraction_lost: 0,
        }
    }

    /// A keyframe of `layer` starts the stream there (the gate opens, or the switch is made):
    /// its timeline continues from what was sent before.
    pub(super) fn open(&mut self, layer: usize) {
        self.forwarding.layer = layer;
        self.forwarding.waiting_keyframe = false;
        self.restart_temporal();
        self.rebase();
    }

    /// The stream restarts on a keyframe, which depends on nothing: the temporal aim is taken
    /// at once.
    pub(super) fn restart_temporal(&mut self) {
        self.temporal = self.temporal_target;
        self.newest_picture = None;
    }

    /// Whether a packet of frame `f` is of a temporal layer it is sent; where a new frame
    /// starts, the temporal aim is taken first.
    fn keeps(&mut self, f: &Frame) -> bool {
        if self.newest_picture.is_none_or(|n| f.is_after(n)) {
            self.newest_picture = Some(f.id);
            if self.temporal_target < self.temporal || f.tid == 0 {
                self.temporal = self.temporal_target;
            }
        }
        f.tid <= self.temporal
    }

    /// The keyframe that opened the stream was not sent: the gate shuts again.
    pub(super) fn shut_gate(&mut self) {
        self.forwarding.waiting_keyframe = true;
        self.rebase();
    }

    /// The next packet continues the output after a gap (a switch, a mute, a replay).
    pub(super) fn rebase(&mut self) {
        self.rewriter.rebase();
        if let Some(p) = self.pictures.as_mut() {
            p.rebase();
        }
    }

    /// The rewritten VP8 payload descriptor of `p` for this subscriber (`d`, as parsed),
    /// written into `buf`: its length (0: nothing to rewrite, the payload goes as it is), or
    /// `None` where its picture has no place in the output.
    pub(super) fn descriptor(
        &mut self,
        p: &RtpPacket<'_>,
        d: Option<&vp8::Descriptor>,
        buf: &mut [u8; vp8::MAX_LEN],
    ) -> Option<usize> {
        let (Some(r), Some(d)) = (self.pictures.as_mut(), d) else {
            return Some(0);
        };
        if d.picture_id.is_none() && d.tl0_pic_idx.is_none() {
            return Some(0);
        }
        let (pid, tl0) = r.rewrite(d)?;
        Some(vp8::write_rewritten(p.payload, d, pid, tl0, buf))
    }

    /// The VP8 payload descriptor of `p`, where this subscription rewrites them.
    pub(super) fn parse_descriptor(&self, p: &RtpPacket<'_>) -> Option<vp8::Descriptor> {
        self.pictures.as_ref()?;
        vp8::Descriptor::parse(p.payload)
    }

    /// A receiver report block about this subscription: RTT (RFC 3550 §6.4.1) from the
    /// sender report it names, smoothed as TCP does (RFC 6298, alpha 1/8).
    /// Returns the RTT sample, if the block named a sender report of ours.
    pub(super) fn on_report(
        &mut self,
        block: &rtcp::ReportBlock,
        now: Instant,
    ) -> Option<Duration> {
        self.fraction_lost = block.fraction_lost;
        if block.last_sr == 0 {
            return None;
        }
        let (_, sent) = self
            .sent_reports
            .iter()
            .flatten()
            .find(|(mid, _)| *mid == block.last_sr)?;
        let held = Duration::from_secs_f64(f64::from(block.delay_since_last_sr) / 65536.0);
        let sample = now
            .saturating_duration_since(*sent)
            .saturating_sub(held)
            .min(MAX_RTT);
        self.rtt = Some(match self.rtt {
            None => sample,
            Some(r) => (r * 7 + sample) / 8,
        });
        Some(sample)
    }

    /// Writes this subscriber's copy of `p` into a send slot, unless it is of a temporal
    /// layer above the one it is sent (`frame` says; then its sequence number and VP8 picture
    /// id close up).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &mut self,
        p: &RtpPacket<'_>,
        frame: Option<Frame>,
        forwarded_exts: &[(u8, ForwardedExt)],
        clock: u64,
        downstream: Option<&mut Downstream>,
        out: &mut dyn Egress,
        now: Instant,
    ) -> Outcome {
        let d = self.parse_descriptor(p);
        if let Some(f) = &frame
            && !self.keeps(f)
        {
            self.rewriter.skip(p.ssrc, p.sequence);
            if let (Some(r), Some(d)) = (self.pictures.as_mut(), &d) {
                r.skip(d);
            }
            return Outcome::Thinned;
        }
        let mut desc = [0u8; vp8::MAX_LEN];
        let Some(n) = self.descriptor(p, d.as_ref(), &mut desc) else {
            return Outcome::Dropped;
        };
        let elapsed = self.last_out.map_or(0, |t| {
            (now.saturating_duration_since(t).as_micros() as u64 * clock / 1_000_000) as u32
        });
        let Some((seq, ts)) = self
            .rewriter
            .rewrite(p.ssrc, p.sequence, p.timestamp, elapsed)
        else {
            return Outcome::Dropped;
        };
        let rw = self.rewrite(seq, ts, p.marker);
        let map = ext_map(forwarded_exts, &self.config.exts);
        let sent = send_rewritten(
            out,
            self.config.subscriber,
            p,
            &rw,
            &map,
            None,
            &desc[..n],
            downstream,
            None,
            now,
        )
        .is_some();
        if !sent {
            return Outcome::NotSent;
        }
        self.last_out = Some(now);
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(p.payload.len() as u32);
        Outcome::Sent
    }

    /// The header of this subscriber's copy of a packet.
    pub(super) fn rewrite(&self, sequence: u16, timestamp: u32, marker: bool) -> Rewrite {
        Rewrite {
            ssrc: self.config.ssrc,
            payload_type: self.config.payload_type,
            sequence,
            timestamp,
            marker,
        }
    }
}

/// Sends subscriber `to` its copy of `p`: the head rewritten by `rw` (extensions by `map`, an
/// RTX packet's original sequence number `osn`, the transport's next transport-wide sequence
/// number where `downstream` stamps them, and `descriptor`, a rewritten payload descriptor
/// that replaces as many bytes at the start of the payload) is written into the send slot
/// and the rest of the payload sealed from where it lies; the packet is then recorded as
/// sent (in probe cluster `probe`). The packet's length, if it was sent.
#[allow(clippy::too_many_arguments)]
pub(super) fn send_rewritten(
    out: &mut dyn Egress,
    to: TransportId,
    p: &RtpPacket<'_>,
    rw: &Rewrite,
    map: impl Fn(u8) -> Option<u8>,
    osn: Option<u16>,
    descriptor: &[u8],
    downstream: Option<&mut Downstream>,
    probe: Option<ClusterId>,
    now: Instant,
) -> Option<usize> {
    let twcc = downstream.as_ref().and_then(|d| d.next_element());
    let added = twcc.as_ref().map(|(id, seq)| (*id, &seq[..]));
    let rest = p.payload.get(descriptor.len()..)?;
    let mut head = 0;
    let sent = out.send_rtp_payload(
        to,
        &mut |buf| {
            head = match write_rewritten_head(p, rw, &map, added, osn, buf) {
                Ok(n) if buf.len() >= n + descriptor.len() => {
                    buf[n..n + descriptor.len()].copy_from_slice(descriptor);
                    n + descriptor.len()
                }
                _ => 0,
            };
            head
        },
        rest,
    );
    if !sent {
        return None;
    }
    let len = head + rest.len();
    if let Some((_, seq)) = twcc {
        out.transport_seq(to, u16::from_be_bytes(seq));
    }
    if let Some(d) = downstream {
        d.sent(len, now, probe);
    }
    Some(len)
}

/// Publisher extension id → subscriber extension id, for the extensions that are forwarded.
pub(super) fn ext_map<'a>(
    forwarded: &'a [(u8, ForwardedExt)],
    subscriber: &'a [(ForwardedExt, u8)],
) -> impl Fn(u8) -> Option<u8> + 'a {
    move |id| {
        let kind = forwarded.iter().find(|(x, _)| *x == id)?.1;
        subscriber.iter().find(|(k, _)| *k == kind).map(|(_, x)| *x)
    }
}
