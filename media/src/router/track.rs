//! A published track as the router keeps it: its simulcast layers (SSRCs, the history of what
//! arrived, receive statistics, upstream loss, how each layer flows), the subscriptions to it,
//! each packet's copies as the forwarding decision says (`fan_out`), the layer each
//! subscription aims at, starting a newcomer from a recent keyframe in the history, and
//! keyframe requests to the publisher (throttled). No IO, no clock: the caller passes `now`,
//! sends go through `Egress`.

use std::time::{Duration, Instant};

use ringcast_types::route::Egress;
use ringcast_types::{CodecName, IdMap, TrackSource, TransportId};

use super::allocate::{MAX_LAYERS, MAX_TEMPORAL, TemporalWant};
use super::downstream::Downstream;
use super::forward::{self, ANY_LAYER, Decision, Flow, Incoming};
use super::subscription::{ForwardedExt, Frame, Outcome, Subscription, SubscriptionConfig};
use super::{ROUTER_SSRC, RouterStats, TrackId};
use crate::keyframe::{frame_size, starts_keyframe};
use crate::retransmit::History;
use crate::rtcp;
use crate::rtp::RtpPacket;
use crate::sequence::extend;
use crate::speakers::LevelMeter;
use crate::upstream::{MIN_RETRY, Missing};
use crate::{dd, vp8};

/// Keyframe requests to one publisher's track: at most one per this period.
pub const PLI_INTERVAL: Duration = Duration::from_millis(500);
/// A new subscriber starts from the layer's latest keyframe in the history when it began at
/// most this long ago (and at most `REPLAY_MAX_PACKETS` back), instead of asking for a new one:
/// a join storm costs the publisher no keyframes, and the newcomer starts at once.
pub const KEYFRAME_REPLAY_AGE: Duration = Duration::from_millis(500);
pub const REPLAY_MAX_PACKETS: u64 = 256;
/// A simulcast layer without packets for this long is paused: subscribers move down.
pub const LAYER_TIMEOUT: Duration = Duration::from_millis(500);
/// A layer must flow this long before subscribers move up to it (no flapping).
pub const LAYER_STABLE: Duration = Duration::from_secs(1);

/// One simulcast layer (or the only encoding) of a track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodingConfig {
    pub rid: Option<String>,
    /// Signalled SSRC, if any (Chromium's simulcast signals none: learned from RTP).
    pub ssrc: Option<u32>,
    /// Signalled RTX SSRC (FID group), if any; else learned from MID and repaired-RID.
    pub rtx_ssrc: Option<u32>,
}

/// What the shard needs to know about a published track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackConfig {
    pub id: TrackId,
    pub publisher: TransportId,
    pub codec: CodecName,
    pub clock_rate: u32,
    pub payload_type: u8,
    pub rtx_payload_type: Option<u8>,
    pub mid: String,
    /// The publisher's extension ids for MID and RID, to learn unsignalled SSRCs.
    pub mid_ext: Option<u8>,
    pub rid_ext: Option<u8>,
    /// The publisher's id for repaired-RID, to learn unsignalled RTX SSRCs.
    pub rrid_ext: Option<u8>,
    /// The publisher's id for transport-wide sequence numbers, where it negotiated
    /// transport-cc: Ringcast answers them with transport-wide feedback.
    pub transport_cc_ext: Option<u8>,
    /// The publisher's ids of extensions that are forwarded.
    pub forwarded_exts: Vec<(u8, ForwardedExt)>,
    /// Lowest quality first.
    pub encodings: Vec<EncodingConfig>,
    /// What it carries, as the publisher said (screen shares are shared bandwidth first).
    pub source: TrackSource,
}

pub(super) struct Layer {
    pub(super) rid: Option<String>,
    pub(super) ssrc: Option<u32>,
    pub(super) rtx_ssrc: Option<u32>,
    pub(super) highest: Option<u64>,
    pub(super) history: History,
    /// Packets the publisher sent that did not arrive: NACKed.
    pub(super) missing: Missing,
    /// Receive statistics for receiver reports (RFC 3550 A.3).
    pub(super) base: Option<u64>,
    pub(super) received: u64,
    pub(super) interval: rtcp::ReportInterval,
    /// Middle 32 bits of the last SR's NTP time, and when it arrived.
    pub(super) last_sr: Option<(u32, Instant)>,
    /// The last packet, and since when packets have come without a pause: a simulcast layer
    /// the publisher stopped (bandwidth, CPU) is not waited on.
    last_packet: Option<Instant>,
    active_since: Option<Instant>,
    /// The latest keyframe's first packet (extended sequence) and when it arrived.
    last_keyframe: Option<(u64, Instant)>,
    /// Bytes received since the rate was last measured, and the rate (bits/s, smoothed).
    bytes: u64,
    pub(super) bitrate: u64,
    /// The rate when the layer last flowed: what it costs to have it back once the publisher
    /// paused it (bandwidth, or nobody wanted it).
    known: u64,
    /// Its picture size, from its latest keyframe (where the codec says it there).
    size: Option<(u16, u16)>,
    /// The template structure of its dependency descriptors (from its latest keyframe).
    dd: Option<dd::Structure>,
    /// Temporal layers: bytes and pictures of each TID since the last measurement, the
    /// newest picture seen, and as measured (cumulative up to each TID: bits/s, and
    /// pictures/s ×100), with how many TIDs the last interval had.
    temporal_bytes: [u64; MAX_TEMPORAL],
    temporal_pictures: [u32; MAX_TEMPORAL],
    newest_picture: Option<u16>,
    pub(super) temporal_rates: [u64; MAX_TEMPORAL],
    pub(super) temporal_fps: [u32; MAX_TEMPORAL],
    pub(super) temporal_layers: usize,
}

impl Layer {
    fn new(encoding: &EncodingConfig, codec: CodecName) -> Self {
        Layer {
            rid: encoding.rid.clone(),
            ssrc: encoding.ssrc,
            rtx_ssrc: encoding.rtx_ssrc,
            highest: None,
            history: history_for(codec),
            missing: Missing::default(),
            last_packet: None,
            active_since: None,
            last_keyframe: None,
            base: None,
            received: 0,
            interval: rtcp::ReportInterval::default(),
            last_sr: None,
            bytes: 0,
            bitrate: 0,
            known: 0,
            size: None,
            dd: None,
            temporal_bytes: [0; MAX_TEMPORAL],
            temporal_pictures: [0; MAX_TEMPORAL],
            newest_picture: None,
            temporal_rates: [0; MAX_TEMPORAL],
            temporal_fps: [0; MAX_TEMPORAL],
            temporal_layers: 1,
        }
    }

    /// Counts a packet of frame `f`, `len` bytes, into its temporal layer.
    fn count_temporal(&mut self, f: &Frame, len: usize) {
        let t = usize::from(f.tid).min(MAX_TEMPORAL - 1);
        self.temporal_bytes[t] += len as u64;
        if self.newest_picture.is_none_or(|n| f.is_after(n)) {
            self.newest_picture = Some(f.id);
            self.temporal_pictures[t] += 1;
        }
    }

    /// The rate since the last measurement, `elapsed` ago, folded into the smoothed one
    /// (weight 1/4: a keyframe moves it, one alone does not make it).
    fn measure(&mut self, elapsed: Duration) {
        let us = elapsed.as_micros().max(1) as u64;
        let rate = self.bytes.saturating_mul(8_000_000) / us;
        self.bitrate = if self.bitrate == 0 {
            rate
        } else {
            (3 * self.bitrate + rate) / 4
        };
        if rate > 0 {
            self.known = self.bitrate;
        }
        self.bytes = 0;
        let top = self.temporal_pictures.iter().rposition(|&n| n > 0);
        self.temporal_layers = top.map_or(1, |t| t + 1);
        let (mut bytes, mut pictures) = (0u64, 0u64);
        for t in 0..MAX_TEMPORAL {
            bytes += self.temporal_bytes[t];
            pictures += u64::from(self.temporal_pictures[t]);
            let rate = bytes.saturating_mul(8_000_000) / us;
            let fps = (pictures.saturating_mul(100_000_000) / us) as u32;
            let (r, f) = (&mut self.temporal_rates[t], &mut self.temporal_fps[t]);
            *r = if *r == 0 { rate } else { (3 * *r + rate) / 4 };
            *f = if *f == 0 { fps } else { (3 * *f + fps) / 4 };
        }
        self.temporal_bytes = [0; MAX_TEMPORAL];
        self.temporal_pictures = [0; MAX_TEMPORAL];
    }

    /// How the layer flows now, for the layer selector: stopped without packets for
    /// [`LAYER_TIMEOUT`] (or before its SSRC is known), steady after [`LAYER_STABLE`] of them.
    fn flow(&self, now: Instant) -> Flow {
        let active = self.ssrc.is_some()
            && self
                .last_packet
                .is_some_and(|t| now.saturating_duration_since(t) < LAYER_TIMEOUT);
        if !active {
            Flow::Stopped
        } else if self
            .active_since
            .is_some_and(|t| now.saturating_duration_since(t) >= LAYER_STABLE)
        {
            Flow::Steady
        } else {
            Flow::Started
        }
    }
}

/// The frame packet `p` of layer `l` belongs to, with its temporal layer: from its
/// dependency descriptor (extension id `dd_ext`) where one was negotiated and the layer's
/// structure is known, else from a VP8 payload descriptor with a TID. `None`: nothing says
/// (it is sent).
fn frame_of(dd_ext: Option<u8>, codec: CodecName, l: &Layer, p: &RtpPacket<'_>) -> Option<Frame> {
    if let Some(ext) = dd_ext.and_then(|x| p.extension(x)) {
        let (m, _) = dd::parse(ext)?;
        let (_, tid) = l.dd?.layer_of(m.template_id)?;
        return Some(Frame {
            tid,
            id: m.frame_number,
            mask: 0xFFFF,
        });
    }
    if codec != CodecName::Vp8 {
        return None;
    }
    let d = vp8::Descriptor::parse(p.payload)?;
    let (tid, _) = d.tid?;
    let (pid, long) = d.picture_id?;
    Some(Frame {
        tid,
        id: pid,
        mask: if long { 0x7FFF } else { 0x7F },
    })
}

/// History slots per layer: about a second of video, a few seconds of audio.
fn history_for(codec: CodecName) -> History {
    match codec {
        CodecName::Opus => History::new(256, Duration::from_secs(2)),
        _ => History::new(1024, Duration::from_secs(1)),
    }
}

/// What became of a packet of a known stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arrival {
    /// Not the track's payload type.
    Foreign,
    /// Already in the history (a repair of what was not lost, a network duplicate).
    Duplicate,
    /// Kept in the history. `new_gap`: it revealed packets lost upstream, to NACK soon.
    Kept { keyframe: bool, new_gap: bool },
}

pub(super) struct Track {
    pub(super) config: TrackConfig,
    pub(super) layers: Vec<Layer>,
    pub(super) subs: Vec<Subscription>,
    pub(super) muted: bool,
    /// Which of its layers the publisher was told to send.
    pub(super) dynacast: super::dynacast::Dynacast,
    /// The publisher's id of the audio-level extension (audio tracks that have it).
    pub(super) audio_level_ext: Option<u8>,
    /// The publisher's id of the dependency descriptor extension (video that negotiated it).
    dd_ext: Option<u8>,
    pub(super) meter: LevelMeter,
    pub(super) last_pli: Option<Instant>,
    /// A keyframe was asked for before the layer's SSRC was known.
    pub(super) pli_pending: bool,
}

impl Track {
    pub(super) fn new(config: TrackConfig) -> Self {
        let layers = config
            .encodings
            .iter()
            .map(|e| Layer::new(e, config.codec))
            .collect();
        let audio_level_ext = (config.codec == CodecName::Opus)
            .then(|| {
                config
                    .forwarded_exts
                    .iter()
                    .find(|(_, k)| *k == ForwardedExt::AudioLevel)
                    .map(|(id, _)| *id)
            })
            .flatten();
        let dd_ext = config
            .forwarded_exts
            .iter()
            .find(|(_, k)| *k == ForwardedExt::DependencyDescriptor)
            .map(|(id, _)| *id);
        Track {
            dd_ext,
            config,
            layers,
            subs: Vec::new(),
            muted: false,
            dynacast: Default::default(),
            audio_level_ext,
            meter: LevelMeter::default(),
            last_pli: None,
            pli_pending: false,
        }
    }

    /// Mutes or unmutes the track. True if video resumed: its subscriptions continue their
    /// timelines from a keyframe, to be asked for.
    pub(super) fn set_muted(&mut self, muted: bool) -> bool {
        if !self.muted || muted {
            self.muted = muted;
            return false;
        }
        // Resume contiguously, from a keyframe.
        let video = self.is_video();
        for s in &mut self.subs {
            s.rebase();
            s.forwarding.waiting_keyframe = video;
        }
        self.muted = false;
        video
    }

    /// Adds (or replaces) a subscriber's subscription. A recent keyframe in the history starts
    /// the newcomer now, or once its transport connects; true if there is none and the
    /// publisher must be asked for one.
    pub(super) fn subscribe(
        &mut self,
        config: SubscriptionConfig,
        stats: &mut RouterStats,
        downstream: Option<&mut Downstream>,
        out: &mut dyn Egress,
        now: Instant,
    ) -> bool {
        self.subs
            .retain(|s| s.config.subscriber != config.subscriber);
        let video = self.is_video();
        let layer = self.initial_layer(now);
        let vp8 = self.config.codec == CodecName::Vp8;
        self.subs.push(Subscription::new(config, layer, video, vp8));
        let i = self.subs.len() - 1;
        video
            && !self.start_from_history(i, stats, downstream, out, now)
            && self.replayable(layer, now).is_none()
    }

    pub(super) fn is_video(&self) -> bool {
        self.config.codec != CodecName::Opus
    }

    /// The layer a new subscription starts on (see [`forward::initial_layer`]).
    pub(super) fn initial_layer(&self, now: Instant) -> usize {
        forward::initial_layer(self.flows(now), ANY_LAYER)
    }

    /// The layer a subscription aiming at `current` should aim at now (see
    /// [`forward::next_layer`]).
    pub(super) fn choose_layer(&self, current: usize, cap: usize, now: Instant) -> usize {
        forward::next_layer(self.flows(now), current, cap)
    }

    /// Every layer's rate since the last call, `elapsed` ago.
    pub(super) fn measure_rates(&mut self, elapsed: Duration) {
        for l in &mut self.layers {
            l.measure(elapsed);
        }
    }

    /// The layers' rates as allocation sees them (lowest first; a stopped layer costs
    /// nothing, and is not sent).
    pub(super) fn rates(&self, now: Instant) -> ([u64; MAX_LAYERS], usize) {
        let mut rates = [0; MAX_LAYERS];
        for (r, l) in rates.iter_mut().zip(&self.layers) {
            *r = if l.flow(now) == Flow::Stopped {
                0
            } else {
                l.bitrate
            };
        }
        (rates, self.layers.len().min(MAX_LAYERS))
    }

    /// The lowest layer whose known picture covers `width` × `height` (the top if none
    /// does); `None` where no size was asked or no layer's size is known.
    pub(super) fn layer_for_size(&self, width: u32, height: u32) -> Option<usize> {
        if width == 0 && height == 0 || self.layers.iter().all(|l| l.size.is_none()) {
            return None;
        }
        let covers = |l: &Layer| {
            l.size
                .is_some_and(|(w, h)| u32::from(w) >= width && u32::from(h) >= height)
        };
        Some(
            self.layers
                .iter()
                .position(covers)
                .unwrap_or(self.layers.len().saturating_sub(1)),
        )
    }

    /// The frame packet `p` of `layer` belongs to (see [`frame_of`]).
    pub(super) fn frame_of(&self, layer: usize, p: &RtpPacket<'_>) -> Option<Frame> {
        frame_of(self.dd_ext, self.config.codec, self.layers.get(layer)?, p)
    }

    /// The lowest layer's temporal layers as allocation sees them, given the highest its
    /// subscription may be sent now.
    pub(super) fn temporal_want(&self, cap: usize) -> TemporalWant {
        match self.layers.first() {
            Some(l) if l.temporal_layers > 1 => TemporalWant {
                rates: l.temporal_rates,
                layers: l.temporal_layers,
                cap,
            },
            _ => TemporalWant::NONE,
        }
    }

    /// The highest temporal layer of `layer` whose frame rate is within `max_fps` (0: any):
    /// `usize::MAX` for all of them, the base layer where even it is above.
    pub(super) fn temporal_for_fps(&self, layer: usize, max_fps: u32) -> usize {
        let Some(l) = self.layers.get(layer).filter(|l| l.temporal_layers > 1) else {
            return usize::MAX;
        };
        if max_fps == 0 {
            return usize::MAX;
        }
        // A tenth over the cap still passes: frame rates are measured, not exact.
        let within = |t: usize| u64::from(l.temporal_fps[t]) <= u64::from(max_fps) * 110;
        let top = l.temporal_layers - 1;
        match (0..=top).rev().find(|&t| within(t)) {
            Some(t) if t == top => usize::MAX,
            Some(t) => t,
            None => 0,
        }
    }

    /// Each layer's rate when it last flowed (0: never seen), lowest first.
    pub(super) fn known_rates(&self) -> [u64; MAX_LAYERS] {
        let mut rates = [0; MAX_LAYERS];
        for (r, l) in rates.iter_mut().zip(&self.layers) {
            *r = l.known;
        }
        rates
    }

    /// How each layer flows now, lowest first.
    fn flows(
        &self,
        now: Instant,
    ) -> impl DoubleEndedIterator<Item = Flow> + ExactSizeIterator + Clone + '_ {
        self.layers.iter().map(move |l| l.flow(now))
    }

    /// The layer a packet belongs to by its MID and (repaired) RID extensions.
    pub(super) fn layer_by_mid_rid(&self, p: &RtpPacket<'_>, rid_ext: Option<u8>) -> Option<usize> {
        let mid = self.config.mid_ext.and_then(|x| p.extension(x))?;
        if mid != self.config.mid.as_bytes() {
            return None;
        }
        match rid_ext.and_then(|x| p.extension(x)) {
            Some(rid) => self
                .layers
                .iter()
                .position(|l| l.rid.as_deref().map(str::as_bytes) == Some(rid)),
            None if self.layers.len() == 1 => Some(0),
            None => None,
        }
    }

    /// A packet of `layer` (`repair`: unwrapped from RTX): history, receive statistics,
    /// upstream loss, whether the layer flows, audio level.
    pub(super) fn receive(
        &mut self,
        layer: usize,
        p: &RtpPacket<'_>,
        packet: &[u8],
        repair: bool,
        now: Instant,
    ) -> Arrival {
        if p.payload_type != self.config.payload_type {
            return Arrival::Foreign;
        }
        let keyframe = self.is_video() && starts_keyframe(self.config.codec, p.payload);
        if let Some(ext) = self.dd_ext.and_then(|x| p.extension(x))
            && let Some((_, Some(structure))) = dd::parse(ext)
        {
            self.layers[layer].dd = Some(structure);
        }
        let frame = self.frame_of(layer, p);
        let l = &mut self.layers[layer];
        let ext = match l.highest {
            Some(h) => extend(h, p.sequence),
            None => u64::from(p.sequence) | (1 << 32),
        };
        if l.history.contains(ext) {
            return Arrival::Duplicate;
        }
        let missing_before = l.missing.len();
        l.missing.on_packet(ext, l.highest, now);
        let new_gap = l.missing.len() > missing_before;
        l.highest = Some(l.highest.map_or(ext, |h| h.max(ext)));
        l.base = Some(l.base.map_or(ext, |b| b.min(ext)));
        l.received += 1;
        l.history.insert(ext, packet, now);
        if keyframe && l.last_keyframe.is_none_or(|(k, _)| ext > k) {
            l.last_keyframe = Some((ext, now));
            if let Some(size) = frame_size(self.config.codec, p.payload) {
                l.size = Some(size);
            }
        }
        if !repair {
            l.bytes += packet.len() as u64;
            if let Some(f) = frame {
                l.count_temporal(&f, packet.len());
            }
            if l.last_packet
                .is_none_or(|t| now.saturating_duration_since(t) >= LAYER_TIMEOUT)
            {
                l.active_since = Some(now);
            }
            l.last_packet = Some(now);
        }
        if let Some(level) = self.audio_level_ext.and_then(|x| p.extension(x))
            && let Some(&byte) = level.first()
        {
            self.meter.add(byte);
        }
        Arrival::Kept { keyframe, new_gap }
    }

    /// Each subscription's copy of packet `p` of this track, as [`forward::decide`] says.
    pub(super) fn fan_out(
        &mut self,
        packet: Incoming,
        p: &RtpPacket<'_>,
        stats: &mut RouterStats,
        downstream: &mut IdMap<TransportId, Downstream>,
        out: &mut dyn Egress,
        now: Instant,
    ) {
        let clock = u64::from(self.config.clock_rate);
        let mut lost_keyframe = false;
        let frame = self.frame_of(packet.layer, p);
        for s in &mut self.subs {
            let opening = match forward::decide(self.muted, s.forwarding, packet) {
                Decision::Skip | Decision::AwaitSwitch => continue,
                Decision::Gate => {
                    stats.gated += 1;
                    continue;
                }
                Decision::Forward => false,
                Decision::Open { layer, switch } => {
                    if switch {
                        stats.layer_switches += 1;
                    }
                    s.open(layer);
                    true
                }
            };
            let d = downstream.get_mut(&s.config.subscriber);
            match s.forward(p, frame, &self.config.forwarded_exts, clock, d, out, now) {
                Outcome::Sent => stats.forwarded += 1,
                Outcome::NotSent | Outcome::Dropped if opening => {
                    // The keyframe didn't go out (the subscriber's DTLS isn't done): the gate
                    // stays shut and another keyframe is needed.
                    s.shut_gate();
                    lost_keyframe = true;
                }
                Outcome::Thinned => stats.temporal_skipped += 1,
                // Not sent, or no place left for it (older than the current segment).
                Outcome::NotSent | Outcome::Dropped => {}
            }
        }
        if lost_keyframe {
            self.pli_pending = true;
        }
    }

    /// Points every subscription at the best layer flowing now (see [`forward::next_layer`]):
    /// down at once when its layer pauses, up when a better one has flowed steadily; the switch
    /// itself happens on that layer's next keyframe, which is asked for.
    pub(super) fn select_layers(
        &mut self,
        stats: &mut RouterStats,
        out: &mut dyn Egress,
        now: Instant,
    ) {
        if self.layers.len() < 2 || self.muted {
            return;
        }
        let mut changed = false;
        for i in 0..self.subs.len() {
            let best = self.choose_layer(self.subs[i].forwarding.target, self.subs[i].cap, now);
            let s = &mut self.subs[i].forwarding;
            if s.target != best {
                s.target = best;
                changed = true;
            }
        }
        if changed {
            self.request_keyframe(stats, out, now);
        }
    }

    /// When this track next has timer work: a keyframe request held back by the throttle, or
    /// a NACK for upstream loss.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let pli = self
            .pli_pending
            .then(|| self.last_pli.map(|l| l + PLI_INTERVAL))
            .flatten();
        self.layers
            .iter()
            .filter_map(|l| l.missing.next_due(MIN_RETRY))
            .chain(pli)
            .min()
    }

    /// A keyframe request held back by the throttle may go now.
    pub(super) fn pli_due(&self, now: Instant) -> bool {
        self.pli_pending
            && self
                .last_pli
                .is_none_or(|l| now.saturating_duration_since(l) >= PLI_INTERVAL)
    }

    /// The latest keyframe of `layer` is recent and near enough to start a subscriber from.
    pub(super) fn replayable(&self, layer: usize, now: Instant) -> Option<(u64, u64)> {
        let l = self.layers.get(layer)?;
        let (key, at) = l.last_keyframe?;
        let high = l.highest?;
        (now.saturating_duration_since(at) <= KEYFRAME_REPLAY_AGE
            && high.saturating_sub(key) < REPLAY_MAX_PACKETS
            && l.history.contains(key))
        .then_some((key, high))
    }

    /// Starts subscription `i`, new and waiting for a keyframe, from its layer's latest keyframe
    /// in the history: the keyframe and every packet since, at once. True if it started; if
    /// the keyframe could not be sent (no keys yet) nothing changed.
    pub(super) fn start_from_history(
        &mut self,
        i: usize,
        stats: &mut RouterStats,
        mut downstream: Option<&mut Downstream>,
        out: &mut dyn Egress,
        now: Instant,
    ) -> bool {
        if self.muted {
            return false;
        }
        let Some(s) = self.subs.get(i) else {
            return false;
        };
        // Only a subscription that has sent nothing: a resumed or switched one continues its
        // timeline and is better served by a fresh keyframe.
        if !s.forwarding.waiting_keyframe || s.packets > 0 {
            return false;
        }
        let target = s.forwarding.target;
        let Some((key, high)) = self.replayable(target, now) else {
            return false;
        };
        let Track {
            layers,
            subs,
            config,
            dd_ext,
            ..
        } = self;
        let (s, l) = (&mut subs[i], &layers[target]);
        let clock = u64::from(config.clock_rate);
        s.rebase();
        s.restart_temporal();
        for ext in key..=high {
            let Ok(stored) = l.history.get(ext, now) else {
                continue;
            };
            let Ok(p) = RtpPacket::parse(stored) else {
                continue;
            };
            let d = downstream.as_deref_mut();
            let frame = frame_of(*dd_ext, config.codec, l, &p);
            let outcome = s.forward(&p, frame, &config.forwarded_exts, clock, d, out, now);
            if ext == key && outcome != Outcome::Sent {
                s.rebase();
                return false;
            }
            match outcome {
                Outcome::Sent => stats.forwarded += 1,
                Outcome::Thinned => stats.temporal_skipped += 1,
                Outcome::NotSent | Outcome::Dropped => {}
            }
        }
        s.forwarding.layer = s.forwarding.target;
        s.forwarding.waiting_keyframe = false;
        stats.keyframe_replays += 1;
        true
    }

    /// Asks the publisher for a keyframe on every layer someone waits on (throttled).
    pub(super) fn request_keyframe(
        &mut self,
        stats: &mut RouterStats,
        out: &mut dyn Egress,
        now: Instant,
    ) {
        if self
            .last_pli
            .is_some_and(|l| now.saturating_duration_since(l) < PLI_INTERVAL)
        {
            // Asked too recently: ask again when the interval is over (timeout or next packet).
            self.pli_pending = true;
            stats.plis_coalesced += 1;
            return;
        }
        // Layers as a bit set (a track has at most a handful): no allocation. First the
        // layers someone waits to open or switch to.
        let bit = |l: usize| 1u64 << l.min(63);
        let mut waiting = self
            .subs
            .iter()
            .filter(|s| s.forwarding.waiting_keyframe || s.forwarding.layer != s.forwarding.target)
            .fold(0u64, |m, s| m | bit(s.forwarding.target));
        if waiting == 0 {
            // An explicit request (a subscriber's PLI): every layer that is sent to someone.
            waiting = self
                .subs
                .iter()
                .fold(0u64, |m, s| m | bit(s.forwarding.layer));
        }
        let mut sent_any = false;
        let mut unknown = false;
        for layer in (0..64).filter(|i| waiting & (1 << i) != 0) {
            let Some(media) = self.layers.get(layer).and_then(|l| l.ssrc) else {
                unknown = true;
                continue;
            };
            if out.send_rtcp(self.config.publisher, &mut |buf| {
                let mut w = rtcp::Writer::new(buf);
                w.pli(ROUTER_SSRC, media).map_or(0, |()| w.len())
            }) {
                sent_any = true;
                stats.plis_sent += 1;
            }
        }
        self.pli_pending = unknown;
        if sent_any {
            self.last_pli = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn how_a_layer_flows() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let sec = LAYER_STABLE;
        #[rustfmt::skip]
        let cases = [
            // (what, SSRC known, last packet, flowing since, now, flow)
            ("nothing yet", true, None, None, t0, Flow::Stopped),
            ("SSRC unknown", false, Some(t0), Some(t0), t0, Flow::Stopped),
            ("just started", true, Some(t0), Some(t0), t0, Flow::Started),
            ("steady after LAYER_STABLE", true, Some(t0 + sec), Some(t0), t0 + sec, Flow::Steady),
            ("not quite steady", true, Some(t0 + sec), Some(t0 + ms(1)), t0 + sec, Flow::Started),
            ("paused for LAYER_TIMEOUT", true, Some(t0 + sec), Some(t0), t0 + sec + LAYER_TIMEOUT, Flow::Stopped),
            ("not quite paused", true, Some(t0 + sec), Some(t0), t0 + sec + LAYER_TIMEOUT - ms(1), Flow::Steady),
        ];
        for (what, known, last, since, now, want) in cases {
            let mut l = Layer::new(
                &EncodingConfig {
                    rid: None,
                    ssrc: known.then_some(0x5000),
                    rtx_ssrc: None,
                },
                CodecName::Vp8,
            );
            l.last_packet = last;
            l.active_since = since;
            assert_eq!(l.flow(now), want, "{what}");
        }
    }
}
