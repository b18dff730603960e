//! The media router of one shard: published tracks, their subscriptions, and what each packet
//! becomes for each subscriber (issue 5, first increment).
//!
//! Per packet: find the track and layer (by SSRC, else learned from the MID/RID header
//! extensions), keep it in the track's history, and for each subscription on that layer write
//! a rewritten copy (SSRC, payload type, continuous sequence and timestamp, extension ids) into
//! a send slot. New video subscriptions wait for a keyframe and ask the publisher for one (PLI,
//! throttled). Subscribers' NACKs are answered from the history within a budget; their PLI/FIR
//! are relayed. No IO: packets leave through `Egress`, which the shard's `RouteIo` implements.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ringcast_control::codec::CodecName;
use ringcast_datapath::{RouteIo, Router, TransportId};

use super::keyframe::starts_keyframe;
use super::retransmit::{Budget, History};
use super::rtcp::{self, Rtcp};
use super::rtp::{Rewrite, RtpPacket, write_rewritten};
use super::sequence::{SequenceRewriter, extend};

/// A published track on this shard (the control plane's numbering).
pub type TrackId = u64;

/// SSRC Ringcast signs its own RTCP with.
pub const ROUTER_SSRC: u32 = 1;
/// Keyframe requests to one publisher's track: at most one per this period.
pub const PLI_INTERVAL: Duration = Duration::from_millis(500);
/// Retransmissions one subscriber may ask for: per second, and in a burst.
pub const NACK_BUDGET: (f64, f64) = (200.0, 100.0);
/// Until RTCP tells us better.
pub const DEFAULT_RTT: Duration = Duration::from_millis(100);
/// How often publishers get receiver reports and REMB.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// The bitrate REMB allows each publisher until bandwidth estimation lands: room for three
/// simulcast layers of 720p plus audio.
pub const PUBLISHER_MAX_BITRATE: u64 = 3_000_000;

/// Header extensions Ringcast forwards (others are dropped from subscribers' copies: MID/RID
/// name the publisher's m-line and layer, transport-wide sequence numbers are per transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardedExt {
    AudioLevel,
    AbsSendTime,
    DependencyDescriptor,
}

/// One simulcast layer (or the only encoding) of a track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodingConfig {
    pub rid: Option<String>,
    /// Signalled SSRC, if any (Chromium's simulcast signals none: learned from RTP).
    pub ssrc: Option<u32>,
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
    /// The publisher's ids of extensions that are forwarded.
    pub forwarded_exts: Vec<(u8, ForwardedExt)>,
    /// Lowest quality first.
    pub encodings: Vec<EncodingConfig>,
}

/// One subscriber's copy of a track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionConfig {
    pub track: TrackId,
    pub subscriber: TransportId,
    pub ssrc: u32,
    pub payload_type: u8,
    /// The subscriber's ids for the forwarded extensions it accepted.
    pub exts: Vec<(ForwardedExt, u8)>,
}

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

/// Where packets go; the shard's `RouteIo` in production, a recorder in tests.
pub trait Egress {
    fn send_rtp(&mut self, to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool;
    fn send_rtcp(&mut self, to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool;
}

impl Egress for RouteIo<'_> {
    fn send_rtp(&mut self, to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        RouteIo::send_rtp(self, to, write)
    }

    fn send_rtcp(&mut self, to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        RouteIo::send_rtcp(self, to, write)
    }
}

/// Counters the router keeps (read by tests; published with the shard's later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub unknown_stream: u64,
    pub rtx_in: u64,
    pub forwarded: u64,
    pub gated: u64,
    pub plis_sent: u64,
    pub nacks_in: u64,
    pub retransmitted: u64,
    pub retransmits_refused: u64,
    pub malformed_rtcp: u64,
}

struct Layer {
    rid: Option<String>,
    ssrc: Option<u32>,
    highest: Option<u64>,
    history: History,
    /// Receive statistics for receiver reports (RFC 3550 A.3).
    base: Option<u64>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Middle 32 bits of the last SR's NTP time, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

struct Subscription {
    config: SubscriptionConfig,
    rewriter: SequenceRewriter,
    layer: usize,
    waiting_keyframe: bool,
    last_out: Option<Instant>,
    budget: Budget,
}

impl Subscription {
    /// The header of this subscriber's copy of a packet.
    fn rewrite(&self, sequence: u16, timestamp: u32, marker: bool) -> Rewrite {
        Rewrite {
            ssrc: self.config.ssrc,
            payload_type: self.config.payload_type,
            sequence,
            timestamp,
            marker,
        }
    }
}

/// Publisher extension id → subscriber extension id, for the extensions that are forwarded.
fn ext_map<'a>(
    forwarded: &'a [(u8, ForwardedExt)],
    subscriber: &'a [(ForwardedExt, u8)],
) -> impl Fn(u8) -> Option<u8> + 'a {
    move |id| {
        let kind = forwarded.iter().find(|(x, _)| *x == id)?.1;
        subscriber.iter().find(|(k, _)| *k == kind).map(|(_, x)| *x)
    }
}

struct Track {
    config: TrackConfig,
    layers: Vec<Layer>,
    subs: Vec<Subscription>,
    muted: bool,
    last_pli: Option<Instant>,
    /// A keyframe was asked for before the layer's SSRC was known.
    pli_pending: bool,
}

impl Track {
    fn is_video(&self) -> bool {
        self.config.codec != CodecName::Opus
    }
}

/// The router of one shard.
#[derive(Default)]
pub struct MediaRouter {
    next_report: Option<Instant>,
    /// `stats` as last published.
    published: RouterStats,
    tracks: HashMap<TrackId, Track>,
    /// (publisher transport, SSRC) → (track, layer).
    by_ssrc: HashMap<(TransportId, u32), (TrackId, usize)>,
    /// (subscriber transport, the SSRC Ringcast sends it) → track.
    by_sub_ssrc: HashMap<(TransportId, u32), TrackId>,
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

/// History slots per layer: about a second of video, a few seconds of audio.
fn history_for(codec: CodecName) -> History {
    match codec {
        CodecName::Opus => History::new(256, Duration::from_secs(2)),
        _ => History::new(1024, Duration::from_secs(1)),
    }
}

impl MediaRouter {
    pub fn command(&mut self, cmd: MediaCommand, out: &mut dyn Egress, now: Instant) {
        match cmd {
            MediaCommand::AddTrack(c) => {
                let layers = c
                    .encodings
                    .iter()
                    .map(|e| Layer {
                        rid: e.rid.clone(),
                        ssrc: e.ssrc,
                        highest: None,
                        history: history_for(c.codec),
                        base: None,
                        received: 0,
                        expected_prior: 0,
                        received_prior: 0,
                        last_sr: None,
                    })
                    .collect::<Vec<_>>();
                for (i, l) in layers.iter().enumerate() {
                    if let Some(s) = l.ssrc {
                        self.by_ssrc.insert((c.publisher, s), (c.id, i));
                    }
                }
                self.remove_track(c.id);
                self.tracks.insert(
                    c.id,
                    Track {
                        config: c,
                        layers,
                        subs: Vec::new(),
                        muted: false,
                        last_pli: None,
                        pli_pending: false,
                    },
                );
            }
            MediaCommand::RemoveTrack(id) => self.remove_track(id),
            MediaCommand::SetMuted { track, muted } => {
                if let Some(t) = self.tracks.get_mut(&track) {
                    if t.muted && !muted {
                        // Resume contiguously, from a keyframe.
                        for s in &mut t.subs {
                            s.rewriter.rebase();
                            s.waiting_keyframe = t.config.codec != CodecName::Opus;
                        }
                        let video = t.is_video();
                        t.muted = false;
                        if video {
                            self.request_keyframe(track, out, now);
                        }
                    } else {
                        t.muted = muted;
                    }
                }
            }
            MediaCommand::Subscribe(c) => {
                let Some(t) = self.tracks.get_mut(&c.track) else {
                    return;
                };
                t.subs.retain(|s| s.config.subscriber != c.subscriber);
                self.by_sub_ssrc.insert((c.subscriber, c.ssrc), c.track);
                let video = t.is_video();
                t.subs.push(Subscription {
                    layer: t.layers.len().saturating_sub(1),
                    config: c.clone(),
                    rewriter: SequenceRewriter::default(),
                    waiting_keyframe: video,
                    last_out: None,
                    budget: Budget::new(NACK_BUDGET.0, NACK_BUDGET.1),
                });
                if video {
                    self.request_keyframe(c.track, out, now);
                }
            }
            MediaCommand::Unsubscribe { track, subscriber } => {
                if let Some(t) = self.tracks.get_mut(&track) {
                    t.subs.retain(|s| s.config.subscriber != subscriber);
                }
                self.by_sub_ssrc
                    .retain(|(sub, _), tr| !(*sub == subscriber && *tr == track));
            }
        }
    }

    fn remove_track(&mut self, id: TrackId) {
        if self.tracks.remove(&id).is_some() {
            self.by_ssrc.retain(|_, (t, _)| *t != id);
            self.by_sub_ssrc.retain(|_, t| *t != id);
        }
    }

    /// A subscriber transport finished DTLS: subscriptions waiting for a keyframe ask for one now
    /// (the one asked for at subscribe time may have arrived before the keys).
    pub fn transport_connected(&mut self, id: TransportId, out: &mut dyn Egress, now: Instant) {
        let waiting: Vec<TrackId> = self
            .tracks
            .values()
            .filter(|t| {
                t.subs
                    .iter()
                    .any(|s| s.config.subscriber == id && s.waiting_keyframe)
            })
            .map(|t| t.config.id)
            .collect();
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
                let expected_interval = expected - l.expected_prior;
                let received_interval = l.received - l.received_prior;
                l.expected_prior = expected;
                l.received_prior = l.received;
                let lost_interval = expected_interval.saturating_sub(received_interval);
                let fraction = (lost_interval << 8)
                    .checked_div(expected_interval)
                    .map_or(0, |f| f.min(255) as u8);
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

    /// Keyframe requests that were held back by the throttle; periodic reports.
    pub fn timeout(&mut self, out: &mut dyn Egress, now: Instant) {
        if self.next_report.is_none_or(|t| now >= t) {
            self.report(out, now);
            self.next_report = Some(now + REPORT_INTERVAL);
        }
        let due: Vec<TrackId> = self
            .tracks
            .values()
            .filter(|t| {
                t.pli_pending
                    && t.last_pli
                        .is_none_or(|l| now.saturating_duration_since(l) >= PLI_INTERVAL)
            })
            .map(|t| t.config.id)
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
    fn classify(&mut self, from: TransportId, p: &RtpPacket<'_>) -> Option<(TrackId, usize)> {
        if let Some(&hit) = self.by_ssrc.get(&(from, p.ssrc)) {
            return Some(hit);
        }
        let (id, layer) = self.tracks.values().find_map(|t| {
            if t.config.publisher != from || p.payload_type != t.config.payload_type {
                return None;
            }
            let mid = t.config.mid_ext.and_then(|x| p.extension(x))?;
            if mid != t.config.mid.as_bytes() {
                return None;
            }
            let layer = match t.config.rid_ext.and_then(|x| p.extension(x)) {
                Some(rid) => t
                    .layers
                    .iter()
                    .position(|l| l.rid.as_deref().map(str::as_bytes) == Some(rid))?,
                None if t.layers.len() == 1 => 0,
                None => return None,
            };
            Some((t.config.id, layer))
        })?;
        self.by_ssrc.insert((from, p.ssrc), (id, layer));
        if let Some(t) = self.tracks.get_mut(&id) {
            t.layers[layer].ssrc = Some(p.ssrc);
        }
        Some((id, layer))
    }

    pub fn rtp(&mut self, from: TransportId, packet: &[u8], out: &mut dyn Egress, now: Instant) {
        let Ok(p) = RtpPacket::parse(packet) else {
            self.stats.unknown_stream += 1;
            return;
        };
        let Some((id, layer)) = self.classify(from, &p) else {
            // RTX of a known track (or an unknown stream): repairs are not forwarded yet.
            let is_rtx = self.tracks.values().any(|t| {
                t.config.publisher == from && Some(p.payload_type) == t.config.rtx_payload_type
            });
            if is_rtx {
                self.stats.rtx_in += 1;
            } else {
                self.stats.unknown_stream += 1;
            }
            return;
        };
        let mut pli_now = false;
        {
            let Some(t) = self.tracks.get_mut(&id) else {
                return;
            };
            if p.payload_type != t.config.payload_type {
                self.stats.rtx_in += u64::from(Some(p.payload_type) == t.config.rtx_payload_type);
                return;
            }
            let l = &mut t.layers[layer];
            let ext = match l.highest {
                Some(h) => extend(h, p.sequence),
                None => u64::from(p.sequence) | (1 << 32),
            };
            l.highest = Some(l.highest.map_or(ext, |h| h.max(ext)));
            l.base = Some(l.base.map_or(ext, |b| b.min(ext)));
            l.received += 1;
            l.history.insert(ext, packet, now);
            if t.pli_pending
                && t.last_pli
                    .is_none_or(|l| now.saturating_duration_since(l) >= PLI_INTERVAL)
            {
                pli_now = true;
            }
            if !t.muted {
                let video = t.is_video();
                let keyframe = video && starts_keyframe(t.config.codec, p.payload);
                let clock = u64::from(t.config.clock_rate);
                let forwarded_exts = &t.config.forwarded_exts;
                let mut lost_keyframe = false;
                for s in t.subs.iter_mut().filter(|s| s.layer == layer) {
                    let opening = s.waiting_keyframe;
                    if opening {
                        if !keyframe {
                            self.stats.gated += 1;
                            continue;
                        }
                        s.waiting_keyframe = false;
                        s.rewriter.rebase();
                    }
                    let elapsed = s.last_out.map_or(0, |t| {
                        (now.saturating_duration_since(t).as_micros() as u64 * clock / 1_000_000)
                            as u32
                    });
                    let Some((seq, ts)) =
                        s.rewriter.rewrite(p.ssrc, p.sequence, p.timestamp, elapsed)
                    else {
                        continue;
                    };
                    let rw = s.rewrite(seq, ts, p.marker);
                    let map = ext_map(forwarded_exts, &s.config.exts);
                    let sent = out.send_rtp(s.config.subscriber, &mut |buf| {
                        write_rewritten(&p, &rw, &map, buf).unwrap_or(0)
                    });
                    if sent {
                        s.last_out = Some(now);
                        self.stats.forwarded += 1;
                    } else if opening {
                        // The keyframe didn't go out (the subscriber's DTLS isn't done): the gate
                        // stays shut and another keyframe is needed.
                        s.waiting_keyframe = true;
                        s.rewriter.rebase();
                        lost_keyframe = true;
                    }
                }
                if lost_keyframe {
                    t.pli_pending = true;
                }
            }
        }
        if pli_now {
            self.request_keyframe(id, out, now);
        }
    }

    /// Asks the publisher for a keyframe on every layer someone waits on (throttled).
    fn request_keyframe(&mut self, id: TrackId, out: &mut dyn Egress, now: Instant) {
        let Some(t) = self.tracks.get_mut(&id) else {
            return;
        };
        if t.last_pli
            .is_some_and(|l| now.saturating_duration_since(l) < PLI_INTERVAL)
        {
            // Asked too recently: ask again when the interval is over (timeout or next packet).
            t.pli_pending = true;
            return;
        }
        let mut waiting: Vec<usize> = t
            .subs
            .iter()
            .filter(|s| s.waiting_keyframe)
            .map(|s| s.layer)
            .collect();
        if waiting.is_empty() {
            // An explicit request (a subscriber's PLI): every layer that is sent to someone.
            waiting = t.subs.iter().map(|s| s.layer).collect();
        }
        waiting.sort_unstable();
        waiting.dedup();
        let mut sent_any = false;
        let mut unknown = false;
        for layer in waiting {
            let Some(media) = t.layers.get(layer).and_then(|l| l.ssrc) else {
                unknown = true;
                continue;
            };
            if out.send_rtcp(t.config.publisher, &mut |buf| {
                let mut w = rtcp::Writer::new(buf);
                w.pli(ROUTER_SSRC, media).map_or(0, |()| w.len())
            }) {
                sent_any = true;
                self.stats.plis_sent += 1;
            }
        }
        t.pli_pending = unknown;
        if sent_any {
            t.last_pli = Some(now);
        }
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
                Rtcp::SenderReport { ssrc, ntp, .. } => {
                    // From a publisher: remember it for the LSR/DLSR of our receiver reports.
                    if let Some(&(track, layer)) = self.by_ssrc.get(&(from, ssrc))
                        && let Some(l) = self
                            .tracks
                            .get_mut(&track)
                            .and_then(|t| t.layers.get_mut(layer))
                    {
                        l.last_sr = Some(((ntp >> 16) as u32, now));
                    }
                }
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

    /// Resends one NACKed packet to a subscriber, rewritten as it was first sent.
    fn retransmit(
        &mut self,
        track: TrackId,
        subscriber: TransportId,
        out_seq: u16,
        out: &mut dyn Egress,
        now: Instant,
    ) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        let Some(s) = t
            .subs
            .iter_mut()
            .find(|s| s.config.subscriber == subscriber)
        else {
            return;
        };
        let Some((ssrc, in_ext)) = s.rewriter.source_of(out_seq) else {
            self.stats.retransmits_refused += 1;
            return;
        };
        let Some(layer) = t.layers.iter_mut().find(|l| l.ssrc == Some(ssrc)) else {
            return;
        };
        if !s.budget.take(now) {
            self.stats.retransmits_refused += 1;
            return;
        }
        let Ok(stored) = layer.history.resend(in_ext, now, DEFAULT_RTT) else {
            self.stats.retransmits_refused += 1;
            return;
        };
        let Ok(p) = RtpPacket::parse(stored) else {
            return;
        };
        let Some(ts) = s.rewriter.timestamp_of(p.timestamp) else {
            return;
        };
        let rw = s.rewrite(out_seq, ts, p.marker);
        let map = ext_map(&t.config.forwarded_exts, &s.config.exts);
        if out.send_rtp(subscriber, &mut |buf| {
            write_rewritten(&p, &rw, &map, buf).unwrap_or(0)
        }) {
            self.stats.retransmitted += 1;
        }
    }
}

impl Router for MediaRouter {
    type Command = MediaCommand;

    fn handle_command(&mut self, cmd: MediaCommand, io: &mut RouteIo<'_>, now: Instant) {
        self.command(cmd, io, now);
    }

    fn handle_rtp(&mut self, from: TransportId, packet: &[u8], io: &mut RouteIo<'_>, now: Instant) {
        self.rtp(from, packet, io, now);
    }

    fn handle_rtcp(
        &mut self,
        from: TransportId,
        packet: &[u8],
        io: &mut RouteIo<'_>,
        now: Instant,
    ) {
        self.rtcp(from, packet, io, now);
    }

    fn transport_removed(&mut self, id: TransportId) {
        MediaRouter::transport_removed(self, id);
    }

    fn transport_connected(&mut self, id: TransportId, io: &mut RouteIo<'_>, now: Instant) {
        MediaRouter::transport_connected(self, id, io, now);
    }

    fn publish_metrics(&mut self, shard: u16) {
        let (s, p) = (self.stats, self.published);
        let shard = shard.to_string();
        let counters = [
            ("ringcast_rtp_gated_total", s.gated - p.gated),
            ("ringcast_plis_sent_total", s.plis_sent - p.plis_sent),
            ("ringcast_nacks_received_total", s.nacks_in - p.nacks_in),
            (
                "ringcast_retransmits_total",
                s.retransmitted - p.retransmitted,
            ),
            (
                "ringcast_retransmits_refused_total",
                s.retransmits_refused - p.retransmits_refused,
            ),
            (
                "ringcast_rtp_unknown_stream_total",
                s.unknown_stream - p.unknown_stream,
            ),
            (
                "ringcast_rtcp_malformed_total",
                s.malformed_rtcp - p.malformed_rtcp,
            ),
        ];
        for (name, delta) in counters {
            metrics::counter!(name, "shard" => shard.clone()).increment(delta);
        }
        self.published = s;
    }

    fn handle_timeout(&mut self, io: &mut RouteIo<'_>, now: Instant) {
        self.timeout(io, now);
    }
}

#[cfg(test)]
mod tests;
