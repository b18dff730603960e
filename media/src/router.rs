//! The media router of one shard: published tracks, their subscriptions, and what each packet
//! becomes for each subscriber (issue 5, first increment).
//!
//! Per packet: find the track and layer (by SSRC, else learned from the MID/RID header
//! extensions), keep it in the track's history, and for each subscription on that layer write
//! a rewritten copy (SSRC, payload type, continuous sequence and timestamp, extension ids) into
//! a send slot. New video subscriptions wait for a keyframe and ask the publisher for one (PLI,
//! throttled). Subscribers' NACKs are answered from the history within a budget (as RTX where
//! the subscriber negotiated it); their PLI/FIR are relayed, their receiver reports give each
//! subscriber's RTT. Publishers get receiver reports, REMB and NACKs for what they lost; their
//! RTX repairs are unwrapped into the original stream; their sender reports are rewritten for
//! every subscriber (lip sync). Audio levels give active speakers. No IO: packets leave
//! through `Egress`, which the shard's `RouteIo` implements.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ringcast_types::CodecName;
pub use ringcast_types::route::Egress;
use ringcast_types::route::Router;
use ringcast_types::{IdMap, TransportId};

use super::retransmit::{MAX_PACKET, Refusal};
use super::rtcp::{self, Rtcp};
use super::rtp::{Rewrite, RtpPacket, write_rewritten};
use super::speakers::SPEAKER_INTERVAL;
use super::table::{Slot, Table};
use super::upstream::MIN_RETRY;
use forward::Incoming;
use subscription::{Subscription, ext_map};
use track::{Arrival, Track};

pub use super::table::TrackId;
pub use subscription::{DEFAULT_RTT, ForwardedExt, MAX_RTT, RtxConfig, SubscriptionConfig};
pub use track::{
    EncodingConfig, KEYFRAME_REPLAY_AGE, LAYER_STABLE, LAYER_TIMEOUT, PLI_INTERVAL,
    REPLAY_MAX_PACKETS, TrackConfig,
};

mod forward;
mod subscription;
mod track;

/// SSRC Ringcast signs its own RTCP with.
pub const ROUTER_SSRC: u32 = 1;
/// Receiver-report samples kept between two metrics publications.
const MAX_REPORT_SAMPLES: usize = 4096;
/// How often publishers get receiver reports and REMB.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// The bitrate REMB allows each publisher until bandwidth estimation lands: room for three
/// simulcast layers of 720p plus audio.
pub const PUBLISHER_MAX_BITRATE: u64 = 3_000_000;

/// Commands from the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCommand {
    AddTrack(TrackConfig),
    RemoveTrack(TrackId),
    SetMuted {
        track: TrackId,
        muted: bool,
    },
    Subscribe(SubscriptionConfig),
    Unsubscribe {
        track: TrackId,
        subscriber: TransportId,
    },
}

/// Counters the router keeps (read by tests; published with the shard's later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub unknown_stream: u64,
    /// RTX packets unwrapped into their stream.
    pub rtx_in: u64,
    /// RTX packets without media (bandwidth probes) or for a stream not seen yet.
    pub rtx_padding: u64,
    /// Packets already received (repairs of what was not lost, network duplicates).
    pub duplicates: u64,
    /// NACKs sent to publishers, and packets they asked for.
    pub nacks_sent: u64,
    pub nacked_upstream: u64,
    /// Sender reports rewritten for subscribers.
    pub sender_reports: u64,
    /// Subscriptions moved to another simulcast layer.
    pub layer_switches: u64,
    pub forwarded: u64,
    pub gated: u64,
    pub plis_sent: u64,
    /// Keyframe requests absorbed by the per-track throttle (answered by one PLI).
    pub plis_coalesced: u64,
    /// New subscriptions started from a keyframe in the history (no PLI).
    pub keyframe_replays: u64,
    pub nacks_in: u64,
    pub retransmitted: u64,
    /// NACKed packets not resent, by [`Refusal::index`].
    pub retransmits_refused: [u64; Refusal::ALL.len()],
    pub malformed_rtcp: u64,
}

/// Receiver-report samples awaiting publication, preallocated so reports never allocate.
struct ReportSamples(Vec<(Option<Duration>, f64)>);

impl Default for ReportSamples {
    fn default() -> Self {
        ReportSamples(Vec::with_capacity(MAX_REPORT_SAMPLES))
    }
}

/// Where active speakers go: the audible audio tracks of the shard, loudest first, each time
/// that list changes (at most every [`SPEAKER_INTERVAL`]).
pub type SpeakerSink = Box<dyn FnMut(&[(TrackId, f32)]) + Send>;

/// The router of one shard.
#[derive(Default)]
pub struct MediaRouter {
    next_report: Option<Instant>,
    /// When the budgets last followed the send rates.
    rates_at: Option<Instant>,
    next_levels: Option<Instant>,
    /// Set by packets and commands that make timer work due before the next full poll.
    wake: Option<Instant>,
    speaker_sink: Option<SpeakerSink>,
    last_speakers: Vec<TrackId>,
    /// Reused by every level sample.
    speakers_scratch: Vec<(TrackId, f32)>,
    /// (RTT, loss fraction) from subscribers' receiver reports since the last publication.
    report_samples: ReportSamples,
    /// `stats` as last published.
    published: RouterStats,
    tracks: Table<Track>,
    /// (publisher transport, SSRC) → (track, layer).
    by_ssrc: IdMap<(TransportId, u32), (Slot, usize)>,
    /// (publisher transport, RTX SSRC) → (track, layer).
    by_rtx: IdMap<(TransportId, u32), (Slot, usize)>,
    /// (subscriber transport, the SSRC Ringcast sends it) → track.
    by_sub_ssrc: IdMap<(TransportId, u32), Slot>,
    pub stats: RouterStats,
}

impl std::fmt::Debug for MediaRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaRouter")
            .field("tracks", &self.tracks.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl MediaRouter {
    /// A router that reports active speakers to `sink`.
    pub fn with_speaker_sink(sink: SpeakerSink) -> Self {
        MediaRouter {
            speaker_sink: Some(sink),
            ..MediaRouter::default()
        }
    }

    pub fn command(&mut self, cmd: MediaCommand, out: &mut dyn Egress, now: Instant) {
        match cmd {
            MediaCommand::AddTrack(c) => {
                self.remove_track(c.id);
                let track = Track::new(c);
                let publisher = track.config.publisher;
                let ssrcs: Vec<(Option<u32>, Option<u32>)> =
                    track.layers.iter().map(|l| (l.ssrc, l.rtx_ssrc)).collect();
                let slot = self.tracks.insert(track.config.id, track);
                for (i, (ssrc, rtx)) in ssrcs.into_iter().enumerate() {
                    if let Some(s) = ssrc {
                        self.by_ssrc.insert((publisher, s), (slot, i));
                    }
                    if let Some(s) = rtx {
                        self.by_rtx.insert((publisher, s), (slot, i));
                    }
                }
            }
            MediaCommand::RemoveTrack(id) => self.remove_track(id),
            MediaCommand::SetMuted { track, muted } => {
                let Some(slot) = self.tracks.slot(track) else {
                    return;
                };
                if let Some(t) = self.tracks.at_mut(slot) {
                    if t.muted && !muted {
                        // Resume contiguously, from a keyframe.
                        for s in &mut t.subs {
                            s.rewriter.rebase();
                            s.forwarding.waiting_keyframe = t.config.codec != CodecName::Opus;
                        }
                        let video = t.is_video();
                        t.muted = false;
                        if video {
                            self.request_keyframe(slot, out, now);
                        }
                    } else {
                        t.muted = muted;
                    }
                }
            }
            MediaCommand::Subscribe(c) => {
                let Some(slot) = self.tracks.slot(c.track) else {
                    return;
                };
                let Some(t) = self.tracks.at_mut(slot) else {
                    return;
                };
                t.subs.retain(|s| s.config.subscriber != c.subscriber);
                self.by_sub_ssrc.insert((c.subscriber, c.ssrc), slot);
                let video = t.is_video();
                let layer = t.initial_layer(now);
                t.subs.push(Subscription::new(c.clone(), layer, video));
                let i = t.subs.len() - 1;
                // A recent keyframe in the history starts the newcomer now, or once its
                // transport connects; only without one is the publisher asked for a keyframe.
                if video
                    && !t.start_from_history(i, &mut self.stats, out, now)
                    && t.replayable(layer, now).is_none()
                {
                    self.request_keyframe(slot, out, now);
                }
            }
            MediaCommand::Unsubscribe { track, subscriber } => {
                let Some(slot) = self.tracks.slot(track) else {
                    return;
                };
                if let Some(t) = self.tracks.at_mut(slot) {
                    t.subs.retain(|s| s.config.subscriber != subscriber);
                }
                self.by_sub_ssrc
                    .retain(|(sub, _), tr| !(*sub == subscriber && *tr == slot));
            }
        }
    }

    fn remove_track(&mut self, id: TrackId) {
        if let Some((slot, _)) = self.tracks.remove(id) {
            self.by_ssrc.retain(|_, (t, _)| *t != slot);
            self.by_rtx.retain(|_, (t, _)| *t != slot);
            self.by_sub_ssrc.retain(|_, t| *t != slot);
        }
    }

    /// A subscriber transport finished DTLS: subscriptions waiting for a keyframe start from a
    /// recent one in the history, or ask for one now (the one asked for at subscribe time may
    /// have arrived before the keys).
    pub fn transport_connected(&mut self, id: TransportId, out: &mut dyn Egress, now: Instant) {
        let mut waiting = Vec::new();
        for (slot, t) in self.tracks.iter_mut() {
            let Some(i) = t
                .subs
                .iter()
                .position(|s| s.config.subscriber == id && s.forwarding.waiting_keyframe)
            else {
                continue;
            };
            if !t.start_from_history(i, &mut self.stats, out, now) {
                waiting.push(slot);
            }
        }
        for t in waiting {
            self.request_keyframe(t, out, now);
        }
    }

    /// Receiver reports and REMB to every publisher: loss statistics, RTT (via LSR/DLSR) and
    /// the bitrate it may use.
    fn report(&mut self, out: &mut dyn Egress, now: Instant) {
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
            out.send_rtcp(publisher, &mut |buf| {
                let mut w = rtcp::Writer::new(buf);
                let ok = w.receiver_report(ROUTER_SSRC, &reports).is_ok()
                    && w.remb(ROUTER_SSRC, PUBLISHER_MAX_BITRATE, &ssrcs).is_ok();
                if ok { w.len() } else { 0 }
            });
        }
    }

    /// Each subscription's retransmission budget follows the rate it is sent packets at.
    fn follow_send_rates(&mut self, now: Instant) {
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
    fn request_missing(&mut self, out: &mut dyn Egress, now: Instant) {
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

    /// Samples every audio track's level; tells the speaker sink when who speaks changed.
    fn sample_levels(&mut self) {
        let mut active = std::mem::take(&mut self.speakers_scratch);
        active.clear();
        for t in self.tracks.values_mut() {
            if t.audio_level_ext.is_none() {
                continue;
            }
            let level = t.meter.sample();
            if !t.muted && t.meter.is_active() {
                active.push((t.config.id, level));
            }
        }
        active.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if active
            .iter()
            .map(|a| a.0)
            .ne(self.last_speakers.iter().copied())
        {
            self.last_speakers.clear();
            self.last_speakers.extend(active.iter().map(|a| a.0));
            if let Some(sink) = &mut self.speaker_sink {
                sink(&active);
            }
        }
        self.speakers_scratch = active;
    }

    /// Points every subscription of a simulcast track at the best layer flowing now: down at
    /// once when its layer pauses, up when a better one has flowed steadily; the switch itself
    /// happens on that layer's next keyframe, which is asked for.
    fn select_layers(&mut self, out: &mut dyn Egress, now: Instant) {
        for t in self.tracks.values_mut() {
            if t.layers.len() < 2 || t.muted {
                continue;
            }
            let mut changed = false;
            for i in 0..t.subs.len() {
                let best = t.choose_layer(t.subs[i].forwarding.target, now);
                let s = &mut t.subs[i];
                if s.forwarding.target != best {
                    s.forwarding.target = best;
                    changed = true;
                }
            }
            if changed {
                t.request_keyframe(&mut self.stats, out, now);
            }
        }
    }

    /// When `timeout` next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = [self.next_report, self.next_levels]
            .into_iter()
            .flatten()
            .min();
        for t in self.tracks.values() {
            if t.pli_pending {
                let at = t.last_pli.map(|l| l + PLI_INTERVAL);
                next = match (next, at) {
                    (Some(n), Some(a)) => Some(n.min(a)),
                    (n, a) => n.or(a),
                };
            }
            for l in &t.layers {
                if let Some(due) = l.missing.next_due(MIN_RETRY) {
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
            }
        }
        next
    }

    /// Keyframe requests that were held back by the throttle; NACKs for upstream loss;
    /// periodic reports; audio levels.
    pub fn timeout(&mut self, out: &mut dyn Egress, now: Instant) {
        self.wake = None;
        if self.next_report.is_none_or(|t| now >= t) {
            self.report(out, now);
            self.follow_send_rates(now);
            self.next_report = Some(now + REPORT_INTERVAL);
        }
        if self.next_levels.is_none_or(|t| now >= t) {
            self.sample_levels();
            self.next_levels = Some(now + SPEAKER_INTERVAL);
        }
        self.request_missing(out, now);
        self.select_layers(out, now);
        let due: Vec<Slot> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.pli_due(now))
            .map(|(slot, _)| slot)
            .collect();
        for t in due {
            self.request_keyframe(t, out, now);
        }
    }

    /// A transport went away: its tracks and its subscriptions.
    pub fn transport_removed(&mut self, id: TransportId) {
        let published: Vec<TrackId> = self
            .tracks
            .values()
            .filter(|t| t.config.publisher == id)
            .map(|t| t.config.id)
            .collect();
        for t in published {
            self.remove_track(t);
        }
        for t in self.tracks.values_mut() {
            t.subs.retain(|s| s.config.subscriber != id);
        }
        self.by_sub_ssrc.retain(|(sub, _), _| *sub != id);
    }

    /// The track and layer of a publisher's packet, learning unsignalled SSRCs from MID/RID.
    fn classify(&mut self, from: TransportId, p: &RtpPacket<'_>) -> Option<(Slot, usize)> {
        if let Some(&hit) = self.by_ssrc.get(&(from, p.ssrc)) {
            return Some(hit);
        }
        let (id, layer) = self.tracks.iter().find_map(|(slot, t)| {
            if t.config.publisher != from || p.payload_type != t.config.payload_type {
                return None;
            }
            Some((slot, t.layer_by_mid_rid(p, t.config.rid_ext)?))
        })?;
        self.by_ssrc.insert((from, p.ssrc), (id, layer));
        if let Some(t) = self.tracks.at_mut(id) {
            t.layers[layer].ssrc = Some(p.ssrc);
        }
        Some((id, layer))
    }

    /// The track and layer an RTX packet repairs: by its signalled SSRC, else learned from
    /// MID and repaired-RID (Chromium's simulcast signals no SSRCs).
    fn classify_rtx(&mut self, from: TransportId, p: &RtpPacket<'_>) -> Option<(Slot, usize)> {
        if let Some(&hit) = self.by_rtx.get(&(from, p.ssrc)) {
            return Some(hit);
        }
        let (id, layer) = self.tracks.iter().find_map(|(slot, t)| {
            if t.config.publisher != from || Some(p.payload_type) != t.config.rtx_payload_type {
                return None;
            }
            Some((slot, t.layer_by_mid_rid(p, t.config.rrid_ext)?))
        })?;
        self.by_rtx.insert((from, p.ssrc), (id, layer));
        if let Some(t) = self.tracks.at_mut(id) {
            t.layers[layer].rtx_ssrc = Some(p.ssrc);
        }
        Some((id, layer))
    }

    pub fn rtp(&mut self, from: TransportId, packet: &[u8], out: &mut dyn Egress, now: Instant) {
        let Ok(p) = RtpPacket::parse(packet) else {
            self.stats.unknown_stream += 1;
            return;
        };
        if let Some((id, layer)) = self.classify(from, &p) {
            self.media(id, layer, &p, packet, false, out, now);
        } else if let Some((id, layer)) = self.classify_rtx(from, &p) {
            self.repair(id, layer, &p, out, now);
        } else {
            self.stats.unknown_stream += 1;
        }
    }

    /// Unwraps an RTX packet (RFC 4588 §4: the original sequence number leads the payload)
    /// into the packet it repairs, and handles that like any other of its stream.
    fn repair(
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

    /// A packet of a known stream (`repair`: unwrapped from RTX): history, receive statistics,
    /// upstream loss, audio level, and a rewritten copy for each subscriber of its layer.
    #[allow(clippy::too_many_arguments)]
    fn media(
        &mut self,
        id: Slot,
        layer: usize,
        p: &RtpPacket<'_>,
        packet: &[u8],
        repair: bool,
        out: &mut dyn Egress,
        now: Instant,
    ) {
        let Some(t) = self.tracks.at_mut(id) else {
            return;
        };
        let keyframe = match t.receive(layer, p, packet, repair, now) {
            Arrival::Foreign => {
                self.stats.unknown_stream += 1;
                return;
            }
            Arrival::Duplicate => {
                self.stats.duplicates += 1;
                return;
            }
            Arrival::Kept { keyframe, new_gap } => {
                if new_gap {
                    // A new gap: NACK it as soon as this sweep is done, not at the next tick.
                    self.wake = Some(self.wake.map_or(now, |w| w.min(now)));
                }
                keyframe
            }
        };
        let pli_now = t.pli_due(now);
        t.fan_out(
            Incoming {
                layer,
                keyframe,
                repair,
            },
            p,
            &mut self.stats,
            out,
            now,
        );
        if pli_now {
            self.request_keyframe(id, out, now);
        }
    }

    /// Asks the publisher for a keyframe on every layer someone waits on (throttled).
    fn request_keyframe(&mut self, id: Slot, out: &mut dyn Egress, now: Instant) {
        if let Some(t) = self.tracks.at_mut(id) {
            t.request_keyframe(&mut self.stats, out, now);
            if t.pli_pending {
                let at = t.last_pli.map_or(now, |l| l + PLI_INTERVAL);
                self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
            }
        }
    }

    /// See [`Router::wake_at`].
    pub fn wake_at(&self) -> Option<Instant> {
        self.wake
    }
    pub fn rtcp(&mut self, from: TransportId, packet: &[u8], out: &mut dyn Egress, now: Instant) {
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
                // Kept for the next metrics publication (bounded: a flood of reports only
                // loses samples).
                let samples = &mut self.report_samples.0;
                if samples.len() < MAX_REPORT_SAMPLES {
                    samples.push((rtt, f64::from(b.fraction_lost) / 256.0));
                }
            }
        }
    }

    /// The RTT to a subscriber, as its reports measured it.
    pub fn subscriber_rtt(&self, track: TrackId, subscriber: TransportId) -> Option<Duration> {
        self.tracks
            .get(track)?
            .subs
            .iter()
            .find(|s| s.config.subscriber == subscriber)?
            .rtt
    }

    /// Resends one NACKed packet to a subscriber, rewritten as it was first sent.
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
        let stored = match layer.history.get(in_ext, now) {
            Ok(p) => p,
            Err(why) => return refuse(&mut self.stats, why),
        };
        let rtt = s.rtt.unwrap_or(DEFAULT_RTT);
        if s.resent.within_rtt(in_ext, now, rtt) {
            return refuse(&mut self.stats, Refusal::ResentWithinRtt);
        }
        if !s.budget.take(now) {
            return refuse(&mut self.stats, Refusal::Budget);
        }
        s.resent.record(in_ext, now);
        let Ok(p) = RtpPacket::parse(stored) else {
            return;
        };
        let Some(ts) = s.rewriter.timestamp_of(p.timestamp) else {
            return;
        };
        // RTX where negotiated: the subscriber's own sequence space for repairs, the original
        // number first in the payload. Else the original packet again.
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
        let map = ext_map(&t.config.forwarded_exts, &s.config.exts);
        if out.send_rtp(subscriber, &mut |buf| {
            write_rewritten(&p, &rw, &map, osn, buf).unwrap_or(0)
        }) {
            if osn.is_some() {
                s.rtx_seq = s.rtx_seq.wrapping_add(1);
            }
            self.stats.retransmitted += 1;
        }
    }
}

impl Router for MediaRouter {
    type Command = MediaCommand;

    fn handle_command(&mut self, cmd: MediaCommand, io: &mut dyn Egress, now: Instant) {
        self.command(cmd, io, now);
    }

    fn handle_rtp(&mut self, from: TransportId, packet: &[u8], io: &mut dyn Egress, now: Instant) {
        self.rtp(from, packet, io, now);
    }

    fn handle_rtcp(&mut self, from: TransportId, packet: &[u8], io: &mut dyn Egress, now: Instant) {
        self.rtcp(from, packet, io, now);
    }

    fn transport_removed(&mut self, id: TransportId) {
        MediaRouter::transport_removed(self, id);
    }

    fn transport_connected(&mut self, id: TransportId, io: &mut dyn Egress, now: Instant) {
        MediaRouter::transport_connected(self, id, io, now);
    }

    fn publish_metrics(&mut self, shard: u16) {
        let (s, p) = (self.stats, self.published);
        let shard = shard.to_string();
        let counters = [
            ("ringcast_rtp_gated_total", s.gated - p.gated),
            ("ringcast_plis_sent_total", s.plis_sent - p.plis_sent),
            (
                "ringcast_plis_coalesced_total",
                s.plis_coalesced - p.plis_coalesced,
            ),
            (
                "ringcast_keyframe_replays_total",
                s.keyframe_replays - p.keyframe_replays,
            ),
            ("ringcast_nacks_received_total", s.nacks_in - p.nacks_in),
            (
                "ringcast_retransmits_total",
                s.retransmitted - p.retransmitted,
            ),
            (
                "ringcast_rtp_unknown_stream_total",
                s.unknown_stream - p.unknown_stream,
            ),
            (
                "ringcast_rtcp_malformed_total",
                s.malformed_rtcp - p.malformed_rtcp,
            ),
            ("ringcast_rtx_unwrapped_total", s.rtx_in - p.rtx_in),
            ("ringcast_rtx_padding_total", s.rtx_padding - p.rtx_padding),
            ("ringcast_rtp_duplicates_total", s.duplicates - p.duplicates),
            ("ringcast_nacks_sent_total", s.nacks_sent - p.nacks_sent),
            (
                "ringcast_packets_nacked_upstream_total",
                s.nacked_upstream - p.nacked_upstream,
            ),
            (
                "ringcast_sender_reports_sent_total",
                s.sender_reports - p.sender_reports,
            ),
            (
                "ringcast_layer_switches_total",
                s.layer_switches - p.layer_switches,
            ),
        ];
        for (name, delta) in counters {
            metrics::counter!(name, "shard" => shard.clone()).increment(delta);
        }
        for why in Refusal::ALL {
            let i = why.index();
            metrics::counter!("ringcast_retransmits_refused_total", "shard" => shard.clone(), "reason" => why.as_str())
                .increment(s.retransmits_refused[i] - p.retransmits_refused[i]);
        }
        if !self.report_samples.0.is_empty() {
            let rtt =
                metrics::histogram!("ringcast_subscriber_rtt_seconds", "shard" => shard.clone());
            let loss = metrics::histogram!("ringcast_subscriber_loss_ratio", "shard" => shard);
            for (r, l) in self.report_samples.0.drain(..) {
                if let Some(r) = r {
                    rtt.record(r.as_secs_f64());
                }
                loss.record(l);
            }
        }
        self.published = s;
    }

    fn handle_timeout(&mut self, io: &mut dyn Egress, now: Instant) {
        self.timeout(io, now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        MediaRouter::poll_timeout(self)
    }

    fn wake_at(&self) -> Option<Instant> {
        MediaRouter::wake_at(self)
    }
}

#[cfg(test)]
mod tests;
