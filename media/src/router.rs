//! The media router of one shard (the datapath's `Router`): published tracks, their
//! subscriptions, and what each packet becomes for each subscriber.
//!
//! Per packet: find the track and layer (by SSRC, else learned from the MID/RID header
//! extensions), keep it in the layer's history, and give each subscription that should have
//! it a rewritten copy (SSRC, payload type, continuous sequence and timestamp, extension ids)
//! in a send slot. RTCP answers and repairs go the other way. No IO, no clock, no allocation
//! or lock per packet: the caller passes `now`, packets leave through `Egress`, which the
//! shard's `RouteIo` implements.
//!
//! This root holds the tables (tracks by slot, SSRC maps), the public API and the `Router`
//! implementation, and hands each part to the module that owns it:
//! - `track`: a track and its simulcast layers — history, receive statistics, upstream loss,
//!   whether each layer flows; starting newcomers from a recent keyframe; throttled PLIs.
//! - `subscription`: one subscriber's copy — keyframe gate, sequence/timestamp rewrite,
//!   extension ids, what was sent, RTT and loss.
//! - `forward`: the pure decisions, table-tested — which packet goes to which subscription,
//!   and which simulcast layer a subscription aims at (under a highest allowed layer).
//! - `feedback`: RTCP — NACK to retransmission (RTX), PLI/FIR, sender and receiver reports,
//!   REMB, NACKs for upstream loss, unwrapping publishers' RTX repairs.
//! - `twcc`: transport-wide feedback to publishers, from the arrival of each packet.
//! - `downstream`: each subscriber transport's transport-wide sequence numbers, bandwidth
//!   estimate and probes, and the estimate shared among its subscriptions (`allocate`: the
//!   pure, table-tested share-out that caps each subscription's layer).
//! - `stats`: the counters and their publication as metrics.

use std::time::{Duration, Instant};

pub use ringcast_types::route::Egress;
use ringcast_types::route::{Departure, Router};
use ringcast_types::{IdMap, SubscriptionSettings, TransportId};

use super::rtp::RtpPacket;
use super::speakers::SPEAKER_INTERVAL;
use super::table::{Slot, Table};
use forward::Incoming;
use stats::Metrics;
use track::{Arrival, Track};

pub use super::table::TrackId;
pub use allocate::{PUBLISHER_LOWER_AFTER, PUBLISHER_MAX_BITRATE, PUBLISHER_MIN_BITRATE};
pub use feedback::{REPORT_INTERVAL, ROUTER_SSRC};
pub use stats::RouterStats;
pub use subscription::{DEFAULT_RTT, ForwardedExt, MAX_RTT, RtxConfig, SubscriptionConfig};
pub use track::{
    EncodingConfig, KEYFRAME_REPLAY_AGE, LAYER_STABLE, LAYER_TIMEOUT, PLI_INTERVAL,
    REPLAY_MAX_PACKETS, TrackConfig,
};

mod allocate;
mod downstream;
mod dynacast;
mod feedback;
mod forward;
mod quality;
mod stats;
mod subscription;
mod track;
mod twcc;

pub use downstream::RATE_INTERVAL;
pub use dynacast::{LayersSink, PAUSE_AFTER};
pub use quality::{QUALITY_INTERVAL, QUALITY_MIN_GAP, QualitySink, SubscriptionQuality};
pub use twcc::TWCC_INTERVAL;

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
    /// New settings for a subscription (layer, rendered size, priority).
    Configure {
        track: TrackId,
        subscriber: TransportId,
        settings: SubscriptionSettings,
    },
    Unsubscribe {
        track: TrackId,
        subscriber: TransportId,
    },
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
    quality_sink: Option<QualitySink>,
    layers_sink: Option<LayersSink>,
    next_quality: Option<Instant>,
    quality_scratch: Vec<SubscriptionQuality>,
    last_speakers: Vec<TrackId>,
    /// Reused by every level sample.
    speakers_scratch: Vec<(TrackId, f32)>,
    /// What was published, and receiver-report samples for the next publication.
    metrics: Metrics,
    tracks: Table<Track>,
    /// (publisher transport, SSRC) → (track, layer).
    by_ssrc: IdMap<(TransportId, u32), (Slot, usize)>,
    /// (publisher transport, RTX SSRC) → (track, layer).
    by_rtx: IdMap<(TransportId, u32), (Slot, usize)>,
    /// (subscriber transport, the SSRC Ringcast sends it) → track.
    by_sub_ssrc: IdMap<(TransportId, u32), Slot>,
    /// Publisher transports that negotiated transport-wide sequence numbers.
    upstream_cc: IdMap<TransportId, twcc::Upstream>,
    /// Subscriber transports: their sequence numbers and bandwidth estimates.
    downstream: IdMap<TransportId, downstream::Downstream>,
    /// When layer rates were last measured and estimates shared out, and whether an estimate
    /// fell since so far that the share-out is due now.
    layer_rates_at: Option<Instant>,
    reallocate: bool,
    /// The REMB each publisher transport is sent, from what its subscribers take.
    publisher_limits: IdMap<TransportId, allocate::PublisherLimit>,
    /// Reused by every share-out and probe round.
    alloc_scratch: Vec<(TransportId, allocate::OrderKey, Slot, usize, allocate::Want)>,
    caps_scratch: Vec<usize>,
    temporal_scratch: Vec<usize>,
    want_scratch: Vec<allocate::Want>,
    probe_scratch: Vec<TransportId>,
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
                if let Some(ext) = c.transport_cc_ext {
                    self.expect_transport_cc(c.publisher, ext);
                }
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
                if self.tracks.at_mut(slot).is_some_and(|t| t.set_muted(muted)) {
                    self.request_keyframe(slot, out, now);
                }
            }
            MediaCommand::Subscribe(c) => {
                let Some(slot) = self.tracks.slot(c.track) else {
                    return;
                };
                self.expect_downstream(c.subscriber, c.transport_cc_ext);
                let Some(t) = self.tracks.at_mut(slot) else {
                    return;
                };
                self.by_sub_ssrc.insert((c.subscriber, c.ssrc), slot);
                let d = self.downstream.get_mut(&c.subscriber);
                if t.subscribe(c, &mut self.stats, d, out, now) {
                    self.request_keyframe(slot, out, now);
                }
                // A paused layer it needs resumes at once (its share-out waits for the next
                // round, with rates measured).
                self.follow_wanted_layers(now);
            }
            MediaCommand::Configure {
                track,
                subscriber,
                settings,
            } => {
                let sub = self.tracks.slot(track).and_then(|slot| {
                    self.tracks
                        .at_mut(slot)?
                        .subs
                        .iter_mut()
                        .find(|s| s.config.subscriber == subscriber)
                });
                if let Some(s) = sub {
                    s.config.settings = settings;
                    // Shared out again at once: a smaller tile or a lower cap takes effect now.
                    self.reallocate = true;
                    self.wake = Some(self.wake.map_or(now, |w| w.min(now)));
                    self.follow_wanted_layers(now);
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
            let d = self.downstream.get_mut(&id);
            if !t.start_from_history(i, &mut self.stats, d, out, now) {
                waiting.push(slot);
            }
        }
        for t in waiting {
            self.request_keyframe(t, out, now);
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

    /// Points every subscription of a simulcast track at the best layer flowing now.
    fn select_layers(&mut self, out: &mut dyn Egress, now: Instant) {
        for t in self.tracks.values_mut() {
            t.select_layers(&mut self.stats, out, now);
        }
    }

    /// When `timeout` next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = [
            self.next_report,
            self.next_levels,
            self.next_quality.filter(|_| self.quality_sink.is_some()),
            self.next_transport_feedback(),
            self.layer_rates_at.map(|t| t + RATE_INTERVAL),
            self.next_downstream_timer(),
        ]
        .into_iter()
        .flatten()
        .min();
        for due in self.tracks.values().filter_map(Track::poll_timeout) {
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        next
    }

    /// Keyframe requests that were held back by the throttle; NACKs for upstream loss;
    /// periodic reports; audio levels.
    pub fn timeout(&mut self, out: &mut dyn Egress, now: Instant) {
        self.wake = None;
        if self.next_report.is_none_or(|t| now >= t) {
            self.report(out, now);
            for bps in self.downstream.values().filter_map(|d| d.estimate()) {
                self.metrics.sample_estimate(bps);
            }
            self.follow_send_rates(now);
            self.next_report = Some(now + REPORT_INTERVAL);
        }
        if self.next_levels.is_none_or(|t| now >= t) {
            self.sample_levels();
            self.next_levels = Some(now + SPEAKER_INTERVAL);
        }
        self.request_missing(out, now);
        self.send_transport_feedback(out, now);
        // Rates are measured over whole intervals only (a share-out between two, for a fallen
        // estimate or a new subscription, uses the last measurement: a few milliseconds that
        // hold a keyframe would measure a layer at many times its rate).
        match self.layer_rates_at {
            None => self.layer_rates_at = Some(now),
            Some(at) if now >= at + RATE_INTERVAL => {
                self.allocate_layers(Some(now - at), out, now);
                self.layer_rates_at = Some(now);
                self.reallocate = false;
            }
            Some(_) if self.reallocate => {
                self.allocate_layers(None, out, now);
                self.reallocate = false;
            }
            Some(_) => {}
        }
        self.send_probes(out, now);
        self.select_layers(out, now);
        if self.next_quality.is_none_or(|t| now >= t) {
            self.report_quality(now);
            self.next_quality = Some(now + QUALITY_INTERVAL);
        }
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
        self.upstream_cc.remove(&id);
        self.downstream.remove(&id);
    }

    pub fn rtp(&mut self, from: TransportId, packet: &[u8], out: &mut dyn Egress, now: Instant) {
        let Ok(p) = RtpPacket::parse(packet) else {
            self.stats.unknown_stream += 1;
            return;
        };
        self.record_arrival(from, &p, now);
        if let Some((id, layer)) = self.classify(from, &p) {
            self.media(id, layer, &p, packet, false, out, now);
        } else if let Some((id, layer)) = self.classify_rtx(from, &p) {
            self.repair(id, layer, &p, out, now);
        } else {
            self.stats.unknown_stream += 1;
        }
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
            &mut self.downstream,
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
    /// RTCP from a transport (see `feedback`).
    pub fn rtcp(&mut self, from: TransportId, packet: &[u8], out: &mut dyn Egress, now: Instant) {
        self.receive_rtcp(from, packet, out, now);
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

    fn on_departures(&mut self, departed: &[Departure]) {
        self.departures(departed);
    }

    fn publish_metrics(&mut self, shard: u16) {
        self.metrics.publish(&self.stats, shard);
        self.metrics.publish_layers(self.layer_counts(), shard);
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
