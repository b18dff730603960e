//! Feedback: RTCP in and out, and repairs. Subscribers' NACKs are answered from the track's
//! history within each subscription's budget (as RTX where it negotiated it); their PLI/FIR
//! become throttled keyframe requests; their receiver reports give RTT and loss. Publishers'
//! sender reports are remembered and rewritten for every subscriber (lip sync); publishers get
//! receiver reports, REMB and NACKs for what they lost, and their RTX repairs are unwrapped into
//! the stream they repair. No IO: RTCP and repairs go out through `Egress`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ringcast_cc::ClusterId;
use ringcast_types::TransportId;
use ringcast_types::route::Egress;

use super::subscription::{DEFAULT_RTT, ext_map, send_rewritten};
use super::{MediaRouter, RouterStats};
use crate::retransmit::{MAX_PACKET, Refusal};
use crate::rtcp::{self, Rtcp};
use crate::rtp::{Rewrite, RtpPacket, write_rewritten};
use crate::table::Slot;
use crate::upstream::MIN_RETRY;

/// SSRC Ringcast signs its own RTCP with.
pub const ROUTER_SSRC: u32 = 1;
/// How often publishers get receiver reports and REMB.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

impl MediaRouter {
    /// RTCP from a transport: a publisher's sender reports, a subscriber's receiver reports,
    /// keyframe requests and NACKs.
    pub(super) fn receive_rtcp(
        &mut self,
        from: TransportId,
        packet: &[u8],
        out: &mut dyn Egress,
        now: Instant,
    ) {
        for p in rtcp::read(packet) {
            let p = match p {
                Ok(p) => p,
                Err(_) => {
                    self.stats.malformed_rtcp += 1;
                    return;
                }
            };
            match p {
                Rtcp::SenderReport {
                    ssrc,
                    ntp,
                    rtp_ts,
                    reports,
                    ..
                } => {
                    if let Some(&(track, layer)) = self.by_ssrc.get(&(from, ssrc)) {
                        self.forward_sender_report(track, layer, ntp, rtp_ts, out, now);
                    }
                    self.receiver_reports(from, reports, now);
                }
                Rtcp::ReceiverReport { reports, .. } => self.receiver_reports(from, reports, now),
                Rtcp::Pli { media_ssrc, .. } => {
                    if let Some(&track) = self.by_sub_ssrc.get(&(from, media_ssrc)) {
                        self.request_keyframe(track, out, now);
                    }
                }
                Rtcp::Fir { entries, .. } => {
                    // FCI entries: SSRC, seq number, reserved.
                    for e in entries.chunks_exact(8) {
                        let ssrc = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
                        if let Some(&track) = self.by_sub_ssrc.get(&(from, ssrc)) {
                            self.request_keyframe(track, out, now);
                        }
                    }
                }
                Rtcp::TransportCc {
                    sender_ssrc,
                    media_ssrc,
                    body,
                } => self.subscriber_feedback(from, sender_ssrc, media_ssrc, body, now),
                Rtcp::Remb { bitrate_bps, .. } => self.subscriber_remb(from, bitrate_bps, now),
                Rtcp::Nack {
                    media_ssrc, items, ..
                } => {
                    self.stats.nacks_in += 1;
                    if let Some(&track) = self.by_sub_ssrc.get(&(from, media_ssrc)) {
                        for seq in items.lost() {
                            self.retransmit(track, from, seq, out, now);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// A publisher's sender report: remembered for the LSR/DLSR of our receiver reports, and
    /// rewritten for each subscriber of the layer — same NTP time, the subscriber's timestamp
    /// and counts — so its receiver can line audio up with video (RFC 3550 §6.4.1).
    fn forward_sender_report(
        &mut self,
        track: Slot,
        layer: usize,
        ntp: u64,
        rtp_ts: u32,
        out: &mut dyn Egress,
        now: Instant,
    ) {
        let Some(t) = self.tracks.at_mut(track) else {
            return;
        };
        let Some(l) = t.layers.get_mut(layer) else {
            return;
        };
        let mid = (ntp >> 16) as u32;
        l.last_sr = Some((mid, now));
        for s in t.subs.iter_mut().filter(|s| {
            s.forwarding.layer == layer && s.packets > 0 && !s.forwarding.waiting_keyframe
        }) {
            let Some(ts) = s.rewriter.timestamp_of(rtp_ts) else {
                continue;
            };
            let (ssrc, packets, octets) = (s.config.ssrc, s.packets, s.octets);
            if out.send_rtcp(s.config.subscriber, &mut |buf| {
                let mut w = rtcp::Writer::new(buf);
                w.sender_report(ssrc, ntp, ts, packets, octets)
                    .map_or(0, |()| w.len())
            }) {
                s.sent_reports.rotate_right(1);
                s.sent_reports[0] = Some((mid, now));
                self.stats.sender_reports += 1;
            }
        }
    }

    /// A subscriber's report blocks about the streams Ringcast sends it: RTT and loss.
    fn receiver_reports(&mut self, from: TransportId, reports: rtcp::Reports<'_>, now: Instant) {
        for b in reports {
            let Some(&track) = self.by_sub_ssrc.get(&(from, b.ssrc)) else {
                continue;
            };
            if let Some(s) = self.tracks.at_mut(track).and_then(|t| {
                t.subs
                    .iter_mut()
                    .find(|s| s.config.subscriber == from && s.config.ssrc == b.ssrc)
            }) {
                let rtt = s.on_report(&b, now);
                self.metrics.sample(rtt, f64::from(b.fraction_lost) / 256.0);
            }
        }
    }

    /// Resends one NACKed packet to a subscriber, rewritten as it was first sent, within the
    /// subscription's budget and at most once per RTT.
    fn retransmit(
        &mut self,
        track: Slot,
        subscriber: TransportId,
        out_seq: u16,
        out: &mut dyn Egress,
        now: Instant,
    ) {
        let Some(t) = self.tracks.at_mut(track) else {
            return;
        };
        let Some(s) = t
            .subs
            .iter_mut()
            .find(|s| s.config.subscriber == subscriber)
        else {
            return;
        };
        let refuse = |stats: &mut RouterStats, why: Refusal| {
            stats.retransmits_refused[why.index()] += 1;
        };
        let Some((ssrc, in_ext)) = s.rewriter.source_of(out_seq) else {
            return refuse(&mut self.stats, Refusal::UnknownSequence);
        };
        let Some(layer) = t.layers.iter().find(|l| l.ssrc == Some(ssrc)) else {
            return refuse(&mut self.stats, Refusal::UnknownSequence);
        };
        // Checked before the budget: a NACK that can't be answered costs the subscriber nothing.
        if let Err(why) = layer.history.get(in_ext, now) {
            return refuse(&mut self.stats, why);
        }
        let rtt = s.rtt.unwrap_or(DEFAULT_RTT);
        if s.resent.within_rtt(in_ext, now, rtt) {
            return refuse(&mut self.stats, Refusal::ResentWithinRtt);
        }
        if !s.budget.take(now) {
            return refuse(&mut self.stats, Refusal::Budget);
        }
        s.resent.record(in_ext, now);
        if self
            .resend(track, subscriber, out_seq, None, out, now)
            .is_some()
        {
            self.stats.retransmitted += 1;
        }
    }

    /// Sends a subscriber again the packet it was sent as `out_seq`, from the track's history:
    /// as RTX where it negotiated it (its own sequence space for repairs, the original number
    /// first in the payload), else the original packet again; stamped with the transport's
    /// next transport-wide sequence number, as part of probe cluster `probe` if it is one.
    /// The bytes sent, if it was. No budget: the caller decides.
    pub(super) fn resend(
        &mut self,
        track: Slot,
        subscriber: TransportId,
        out_seq: u16,
        probe: Option<ClusterId>,
        out: &mut dyn Egress,
        now: Instant,
    ) -> Option<usize> {
        let t = self.tracks.at_mut(track)?;
        let s = t
            .subs
            .iter_mut()
            .find(|s| s.config.subscriber == subscriber)?;
        let (ssrc, in_ext) = s.rewriter.source_of(out_seq)?;
        let layer = t.layers.iter().find(|l| l.ssrc == Some(ssrc))?;
        let p = RtpPacket::parse(layer.history.get(in_ext, now).ok()?).ok()?;
        let ts = s.rewriter.timestamp_of(p.timestamp)?;
        let (rw, osn) = match s.config.rtx {
            Some(rtx) => (
                Rewrite {
                    ssrc: rtx.ssrc,
                    payload_type: rtx.payload_type,
                    sequence: s.rtx_seq,
                    timestamp: ts,
                    marker: p.marker,
                },
                Some(out_seq),
            ),
            None => (s.rewrite(out_seq, ts, p.marker), None),
        };
        let mut desc = [0u8; crate::vp8::MAX_LEN];
        let d = s.parse_descriptor(&p);
        let n = s.descriptor(&p, d.as_ref(), &mut desc)?;
        let map = ext_map(&t.config.forwarded_exts, &s.config.exts);
        let d = self.downstream.get_mut(&subscriber);
        let len = send_rewritten(
            out,
            subscriber,
            &p,
            &rw,
            &map,
            osn,
            &desc[..n],
            d,
            probe,
            now,
        )?;
        if osn.is_some() {
            s.rtx_seq = s.rtx_seq.wrapping_add(1);
        }
        Some(len)
    }

    /// Receiver reports and REMB to every publisher: loss statistics, RTT (via LSR/DLSR) and
    /// the bitrate it may use.
    pub(super) fn report(&mut self, out: &mut dyn Egress, now: Instant) {
        let mut by_publisher: HashMap<TransportId, Vec<(u32, rtcp::ReportBlock)>> = HashMap::new();
        for t in self.tracks.values_mut() {
            for l in &mut t.layers {
                let (Some(ssrc), Some(high), Some(base)) = (l.ssrc, l.highest, l.base) else {
                    continue;
                };
                let expected = high - base + 1;
                let lost = expected.saturating_sub(l.received);
                let fraction = l.interval.fraction_lost(expected, l.received);
                let (lsr, dlsr) = match l.last_sr {
                    Some((mid, at)) => (
                        mid,
                        (now.saturating_duration_since(at).as_secs_f64() * 65536.0) as u32,
                    ),
                    None => (0, 0),
                };
                by_publisher.entry(t.config.publisher).or_default().push((
                    ssrc,
                    rtcp::ReportBlock {
                        ssrc,
                        fraction_lost: fraction,
                        cumulative_lost: lost.min(0x7F_FFFF) as i32,
                        highest_seq: (high & 0xFFFF_FFFF) as u32,
                        jitter: 0,
                        last_sr: lsr,
                        delay_since_last_sr: dlsr,
                    },
                ));
            }
        }
        for (publisher, blocks) in by_publisher {
            let reports: Vec<rtcp::ReportBlock> = blocks.iter().map(|(_, b)| *b).collect();
            let ssrcs: Vec<u32> = blocks.iter().map(|(s, _)| *s).collect();
            let limit = self.publisher_limit(publisher);
            self.metrics.sample_publisher_limit(limit);
            out.send_rtcp(publisher, &mut |buf| {
                let mut w = rtcp::Writer::new(buf);
                let ok = w.receiver_report(ROUTER_SSRC, &reports).is_ok()
                    && w.remb(ROUTER_SSRC, limit, &ssrcs).is_ok();
                if ok { w.len() } else { 0 }
            });
        }
    }

    /// Each subscription's retransmission budget follows the rate it is sent packets at.
    pub(super) fn follow_send_rates(&mut self, now: Instant) {
        let since = self.rates_at.replace(now);
        let Some(dt) = since
            .map(|t| now.saturating_duration_since(t).as_secs_f64())
            .filter(|dt| *dt > 0.0)
        else {
            return;
        };
        for t in self.tracks.values_mut() {
            for s in &mut t.subs {
                let sent = s.packets.wrapping_sub(s.packets_at_rate);
                s.packets_at_rate = s.packets;
                s.budget.set_rate(f64::from(sent) / dt);
            }
        }
    }

    /// NACKs to publishers for the packets they lost that are due for a (re)request.
    pub(super) fn request_missing(&mut self, out: &mut dyn Egress, now: Instant) {
        let mut lost = [0u16; 64];
        for t in self.tracks.values_mut() {
            for l in &mut t.layers {
                let Some(ssrc) = l.ssrc else { continue };
                if l.missing.is_empty() {
                    continue;
                }
                let n = l.missing.due(now, MIN_RETRY, &mut lost);
                if n == 0 {
                    continue;
                }
                if out.send_rtcp(t.config.publisher, &mut |buf| {
                    let mut w = rtcp::Writer::new(buf);
                    w.nack(ROUTER_SSRC, ssrc, &lost[..n])
                        .map_or(0, |()| w.len())
                }) {
                    self.stats.nacks_sent += 1;
                    self.stats.nacked_upstream += n as u64;
                }
            }
        }
    }

    /// Unwraps an RTX packet (RFC 4588 §4: the original sequence number leads the payload)
    /// into the packet it repairs, and handles that like any other of its stream.
    pub(super) fn repair(
        &mut self,
        id: Slot,
        layer: usize,
        p: &RtpPacket<'_>,
        out: &mut dyn Egress,
        now: Instant,
    ) {
        let Some(t) = self.tracks.at(id) else {
            return;
        };
        let media_ssrc = t.layers[layer].ssrc;
        let (Some(ssrc), [a, b, payload @ ..]) = (media_ssrc, p.payload) else {
            self.stats.rtx_padding += 1;
            return;
        };
        if payload.is_empty() {
            self.stats.rtx_padding += 1;
            return;
        }
        let mut original = *p;
        original.payload = payload;
        let rw = Rewrite {
            ssrc,
            payload_type: t.config.payload_type,
            sequence: u16::from_be_bytes([*a, *b]),
            timestamp: p.timestamp,
            marker: p.marker,
        };
        // On the stack: repairs are rare, and the history copies what it keeps.
        let mut buf = [0u8; MAX_PACKET];
        let Ok(n) = write_rewritten(&original, &rw, Some, None, &mut buf) else {
            return;
        };
        let Ok(restored) = RtpPacket::parse(&buf[..n]) else {
            return;
        };
        self.stats.rtx_in += 1;
        self.media(id, layer, &restored, &buf[..n], true, out, now);
    }
}
