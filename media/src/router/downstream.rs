//! A subscriber transport's downlink: the transport-wide sequence numbers Ringcast stamps on
//! everything it sends there (one sequence across all of the transport's streams, RTX
//! included), the bandwidth estimate (`ringcast_cc::Estimator`) that the subscriber's
//! transport-cc feedback, or its REMB where that is all it negotiated, drives; how that
//! estimate is shared among the subscriber's video subscriptions (`allocate`), and the probes
//! (RTX copies of what it was just sent) that find out whether it could take more.

use std::time::{Duration, Instant};

use ringcast_cc::twcc::Feedback;
use ringcast_cc::{ClusterId, Config, Estimator, ProbeCluster};
use ringcast_types::route::{Departure, Egress};
use ringcast_types::{IdMap, SubscriptionSettings, TrackSource, TransportId};

use super::MediaRouter;
use super::allocate::{self, Want};
use super::subscription::ANY_TEMPORAL;
use crate::table::Slot;

/// A subscription's temporal aim as allocation takes it (`usize::MAX`: all).
fn temporal_cap(target: u8) -> usize {
    if target == ANY_TEMPORAL {
        usize::MAX
    } else {
        usize::from(target)
    }
}

/// How often layer rates are measured and estimates shared out.
pub const RATE_INTERVAL: Duration = Duration::from_millis(500);

/// After its cap came down, a subscription's stays down this long: an estimate that dipped on
/// the way down recovers before the next move up, and the layers do not flap.
pub const SETTLE_AFTER_DOWN: Duration = Duration::from_secs(3);

/// What an audio subscription is assumed to cost when its rate is not measured yet (Opus at
/// its usual WebRTC rate plus headers).
const AUDIO_RATE: u64 = 50_000;

/// The highest layer a subscription's settings allow of `t`: its layer cap, and the
/// smallest layer that covers its rendered size.
pub(super) fn max_layer(t: &super::track::Track, settings: &SubscriptionSettings) -> usize {
    let by_size = t
        .layer_for_size(settings.width, settings.height)
        .unwrap_or(usize::MAX);
    let by_cap = settings.max_layer.map_or(usize::MAX, usize::from);
    by_size.min(by_cap)
}

/// Packets one probe cluster may take from the history at most, and per timer step.
const MAX_PROBE_PACKETS: u16 = 64;
const MAX_COPIES_PER_STEP: usize = 8;

/// Packets a subscriber transport's send history remembers where it negotiated transport-cc
/// (16 bytes each): a second of 1,000 packets/s, for feedback that comes every 100 ms. One
/// without keeps the least the estimator takes (it only follows REMB).
const SEND_HISTORY: usize = 1024;
const NO_HISTORY: usize = 64;

fn estimator(history: usize) -> Box<Estimator> {
    Box::new(Estimator::new(Config {
        history,
        ..Config::default()
    }))
}

/// One subscriber transport's congestion control state.
pub(super) struct Downstream {
    /// The subscriber's extension id for transport-wide sequence numbers, where it
    /// negotiated transport-cc.
    ext: Option<u8>,
    /// The sequence number the next packet carries.
    next_seq: u16,
    /// Made where something measures the downlink: transport-cc, or a first REMB (a
    /// subscriber with neither costs no estimator).
    estimator: Option<Box<Estimator>>,
    /// The probe cluster being sent.
    probing: Option<Probing>,
    /// The estimate the last share-out used.
    shared: Option<u64>,
    /// The pacing rate the shard was last told.
    paced: Option<u64>,
}

/// Whether the pacing rate the shard was told, `told`, is stale for `estimate`.
fn pacing_moved(told: Option<u64>, estimate: Option<u64>) -> bool {
    match (told, estimate) {
        (Some(a), Some(b)) => a.abs_diff(b) > a / 20,
        (None, None) => false,
        _ => true,
    }
}

/// A probe cluster under way.
#[derive(Debug, Clone, Copy)]
struct Probing {
    cluster: ProbeCluster,
    /// The subscription copied from, and its newest sequence number when the cluster began.
    from: Option<(Slot, u16)>,
    /// How far back the next copy is.
    back: u16,
    /// What the cluster carried so far, media and copies.
    packets: u32,
    bytes: u32,
    started: Instant,
    next_at: Instant,
}

impl Downstream {
    fn new(ext: Option<u8>) -> Self {
        Downstream {
            ext,
            next_seq: 0,
            estimator: ext.map(|_| estimator(SEND_HISTORY)),
            probing: None,
            shared: None,
            paced: None,
        }
    }

    /// The estimate, where something measures this downlink: transport-wide feedback, or
    /// REMB. A subscriber with neither gets every layer, as before congestion control.
    pub(super) fn estimate(&self) -> Option<u64> {
        self.estimator.as_ref().map(|e| e.target_bitrate())
    }

    /// The extension element the next packet to this subscriber carries: its id and the
    /// sequence number. Only a packet that is sent takes the number (see `sent`), so the
    /// subscriber sees no gap that is not loss.
    pub(super) fn next_element(&self) -> Option<(u8, [u8; 2])> {
        self.ext.map(|id| (id, self.next_seq.to_be_bytes()))
    }

    /// The packet that carried `next_element` (`len` bytes of RTP) was sent, as part of probe
    /// cluster `probe` if it is one.
    ///
    /// While a probe cluster is under way every packet is part of it, media included (as
    /// libwebrtc's pacer does): the cluster is measured by all it carried, and the copies only
    /// top the media up to the cluster's rate.
    pub(super) fn sent(&mut self, len: usize, now: Instant, probe: Option<ClusterId>) {
        let (Some(_), Some(e)) = (self.ext, self.estimator.as_mut()) else {
            return;
        };
        let probe = probe.or(self.probing.map(|p| p.cluster.id));
        if let Some(p) = self.probing.as_mut() {
            p.packets += 1;
            p.bytes = p.bytes.saturating_add(len as u32);
        }
        e.on_packet_sent(self.next_seq, len, now, probe);
        self.next_seq = self.next_seq.wrapping_add(1);
    }
}

impl MediaRouter {
    /// A subscription on `subscriber`, which negotiated transport-wide sequence numbers under
    /// `ext` (or not): its transport's downlink state, made at the first.
    pub(super) fn expect_downstream(&mut self, subscriber: TransportId, ext: Option<u8>) {
        let d = self
            .downstream
            .entry(subscriber)
            .or_insert_with(|| Downstream::new(ext));
        // One id per URI on a BUNDLEd transport; a renegotiation may still move it.
        if ext.is_some() {
            if d.ext.is_none() {
                d.estimator = Some(estimator(SEND_HISTORY));
            }
            d.ext = ext;
        }
    }

    /// Packets the shard's pacer held: their send times, for each subscriber's estimator.
    pub(super) fn departures(&mut self, departed: &[Departure]) {
        for d in departed {
            if let Some(e) = self
                .downstream
                .get_mut(&d.to)
                .and_then(|x| x.estimator.as_mut())
            {
                e.on_packet_departed(d.seq, d.at);
            }
        }
    }

    /// Transport-wide feedback from a subscriber.
    pub(super) fn subscriber_feedback(
        &mut self,
        from: TransportId,
        sender_ssrc: u32,
        media_ssrc: u32,
        fci: &[u8],
        now: Instant,
    ) {
        let Some(d) = self.downstream.get_mut(&from) else {
            return;
        };
        // Only from a transport that negotiated it (nothing was stamped otherwise).
        let (Some(_), Some(e)) = (d.ext, d.estimator.as_mut()) else {
            return;
        };
        match Feedback::parse_fci(sender_ssrc, media_ssrc, fci) {
            Ok(fb) => {
                e.on_feedback(&fb, now);
                self.stats.twcc_feedback_received += 1;
                // A fall well below what was shared out is not left for the next round.
                let est = e.target_bitrate();
                if d.shared.is_some_and(|b| est < b - b / 5) {
                    self.reallocate = true;
                    self.wake = Some(self.wake.map_or(now, |w| w.min(now)));
                }
            }
            Err(_) => self.stats.malformed_rtcp += 1,
        }
    }

    /// A subscriber's REMB: its estimate where it has no transport-wide feedback.
    pub(super) fn subscriber_remb(&mut self, from: TransportId, bitrate: u64, now: Instant) {
        if let Some(d) = self.downstream.get_mut(&from) {
            d.estimator
                .get_or_insert_with(|| estimator(NO_HISTORY))
                .on_remb(bitrate, now);
        }
    }

    /// The bandwidth estimate for a subscriber transport, bits/s.
    pub fn subscriber_estimate(&self, subscriber: TransportId) -> Option<u64> {
        self.downstream.get(&subscriber)?.estimate()
    }

    /// Measures every layer's rate (given the time since the last measurement), then shares each measured subscriber's estimate among its
    /// subscriptions in priority order (`order`) and caps the layer each may be sent, never
    /// above what its settings allow; tells each estimator what its subscriber would take, so
    /// probing stops there.
    pub(super) fn allocate_layers(
        &mut self,
        elapsed: Option<Duration>,
        out: &mut dyn Egress,
        now: Instant,
    ) {
        if let Some(elapsed) = elapsed {
            for t in self.tracks.values_mut() {
                t.measure_rates(elapsed);
            }
        }
        // (subscriber, order, track, subscription index, what it wants), grouped by
        // subscriber.
        let mut wants = std::mem::take(&mut self.alloc_scratch);
        wants.clear();
        for (slot, t) in self.tracks.iter() {
            let (rates, layers) = t.rates(now);
            let video = t.is_video();
            let speaking = self.speaker_rank(t.config.publisher);
            for (i, s) in t.subs.iter().enumerate() {
                let (rates, layers) = if video {
                    (
                        rates,
                        layers.min(max_layer(t, &s.config.settings).saturating_add(1)),
                    )
                } else {
                    // Audio: one layer, taken off the budget first (as rate 0 of layer 0).
                    ([rates[0].max(AUDIO_RATE), 0, 0, 0], 1)
                };
                let cap = s.cap.min(layers.saturating_sub(1));
                let may_rise = s
                    .capped_down_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= SETTLE_AFTER_DOWN);
                let best_known = if video {
                    t.known_rates()[layers.saturating_sub(1)]
                } else {
                    0
                };
                let temporal = if video {
                    t.temporal_want(temporal_cap(s.temporal_target))
                } else {
                    allocate::TemporalWant::NONE
                };
                let want = Want {
                    rates,
                    layers,
                    cap,
                    may_rise,
                    best_known,
                    temporal,
                };
                let order = allocate::Order {
                    audio: !video,
                    priority: s.config.settings.priority,
                    screen_share: t.config.source == TrackSource::ScreenShare,
                    speaker_rank: speaking,
                    area: u64::from(s.config.settings.width) * u64::from(s.config.settings.height),
                };
                wants.push((s.config.subscriber, order.key(), slot, i, want));
            }
        }
        // Stable: within a subscriber, in priority order, then in track order.
        wants.sort_by_key(|w| (w.0, w.1));
        let mut caps = std::mem::take(&mut self.caps_scratch);
        let mut temporal_caps = std::mem::take(&mut self.temporal_scratch);
        let mut want_scratch = std::mem::take(&mut self.want_scratch);
        for group in wants.chunk_by(|a, b| a.0 == b.0) {
            let subscriber = group[0].0;
            let Some(d) = self.downstream.get_mut(&subscriber) else {
                continue;
            };
            want_scratch.clear();
            want_scratch.extend(group.iter().map(|w| w.4));
            if let Some(e) = d.estimator.as_mut() {
                e.set_desired_bitrate(allocate::wanted(&want_scratch).max(AUDIO_RATE));
            }
            // What is sent there is paced to the estimate (told the shard when it moves by a
            // twentieth, or comes or goes).
            let estimate = d.estimate();
            if pacing_moved(d.paced, estimate) {
                d.paced = estimate;
                out.set_pacing_rate(subscriber, estimate);
            }
            let Some(budget) = d.estimate() else {
                // Nothing measures this downlink: capped by the settings alone.
                for &(_, key, slot, i, w) in group {
                    let cap = if allocate::Order::is_audio(key) {
                        super::forward::ANY_LAYER
                    } else {
                        w.layers.saturating_sub(1)
                    };
                    self.set_cap(slot, i, cap, now);
                    self.set_temporal(slot, i, usize::MAX);
                }
                continue;
            };
            caps.clear();
            caps.resize(group.len(), 0);
            temporal_caps.clear();
            temporal_caps.resize(group.len(), usize::MAX);
            d.shared = Some(budget);
            allocate::allocate(budget, &want_scratch, &mut caps);
            allocate::thin(budget, &want_scratch, &mut temporal_caps);
            for ((w, &cap), &temporal) in group.iter().zip(caps.iter()).zip(&temporal_caps) {
                let cap = if allocate::Order::is_audio(w.1) {
                    super::forward::ANY_LAYER
                } else {
                    cap
                };
                self.set_cap(w.2, w.3, cap, now);
                self.set_temporal(w.2, w.3, temporal);
            }
        }
        self.temporal_scratch = temporal_caps;
        self.caps_scratch = caps;
        self.want_scratch = want_scratch;
        self.alloc_scratch = wants;
        self.limit_publishers(now);
        self.follow_wanted_layers(now);
    }

    /// Where `publisher`'s audio is among the active speakers (0 the loudest), if it is.
    fn speaker_rank(&self, publisher: TransportId) -> Option<u8> {
        self.last_speakers
            .iter()
            .position(|&id| {
                self.tracks
                    .slot(id)
                    .and_then(|s| self.tracks.at(s))
                    .is_some_and(|t| t.config.publisher == publisher)
            })
            .map(|p| p.min(usize::from(u8::MAX)) as u8)
    }

    /// What each publisher transport may send (its REMB): for each of its video tracks, the
    /// layers its subscribers' estimates carry (`allocate::publisher_need`), plus its audio;
    /// unbounded where a track has no subscriber or one nothing measures.
    fn limit_publishers(&mut self, now: Instant) {
        let mut need: IdMap<TransportId, Option<u64>> = IdMap::default();
        for t in self.tracks.values() {
            let n = if t.is_video() {
                let (_, layers) = t.rates(now);
                let estimates = t.subs.iter().map(|s| {
                    let e = self
                        .downstream
                        .get(&s.config.subscriber)
                        .and_then(Downstream::estimate);
                    (e, max_layer(t, &s.config.settings))
                });
                allocate::publisher_need(&t.known_rates(), layers, estimates)
            } else {
                Some(t.known_rates()[0].max(AUDIO_RATE))
            };
            let sum = need.entry(t.config.publisher).or_insert(Some(0));
            *sum = sum.zip(n).map(|(a, b)| a + b);
        }
        self.publisher_limits.retain(|p, _| need.contains_key(p));
        for (p, n) in need {
            self.publisher_limits.entry(p).or_default().follow(n, now);
        }
    }

    /// The REMB a publisher transport is sent, bits/s.
    pub fn publisher_limit(&self, publisher: TransportId) -> u64 {
        self.publisher_limits
            .get(&publisher)
            .map_or(allocate::PUBLISHER_MAX_BITRATE, |l| l.bitrate)
    }

    /// Sets the highest temporal layer a subscription is sent (`usize::MAX`: all), as its
    /// budget allows (`temporal`) and its frame rate setting: taken where its next picture
    /// starts (`Subscription::keeps`).
    fn set_temporal(&mut self, slot: Slot, i: usize, temporal: usize) {
        let Some(t) = self.tracks.at_mut(slot) else {
            return;
        };
        let by_fps = match t.subs.get(i) {
            Some(s) => t.temporal_for_fps(s.forwarding.target, s.config.settings.max_fps),
            None => return,
        };
        if let Some(s) = t.subs.get_mut(i) {
            let tid = temporal.min(by_fps);
            s.temporal_target = u8::try_from(tid).unwrap_or(ANY_TEMPORAL);
        }
    }

    /// Sets a subscription's cap; a lower one starts its settling time (`SETTLE_AFTER_DOWN`).
    fn set_cap(&mut self, slot: Slot, i: usize, cap: usize, now: Instant) {
        if let Some(s) = self.tracks.at_mut(slot).and_then(|t| t.subs.get_mut(i)) {
            if cap < s.cap {
                s.capped_down_at = Some(now);
            }
            s.cap = cap;
        }
    }

    /// Runs each estimator's timers and sends the probe clusters they ask for: RTX copies of
    /// the packets a subscriber was just sent on one of its video subscriptions, stamped as
    /// the cluster's and paced at the cluster's rate (the estimator measures a cluster by the
    /// span of its sends and of its arrivals), until its packets and bytes are sent. A
    /// subscriber without RTX gets none: a copy on its media SSRC would be taken for the
    /// packet itself.
    pub(super) fn send_probes(&mut self, out: &mut dyn Egress, now: Instant) {
        let mut due = std::mem::take(&mut self.probe_scratch);
        due.clear();
        for (&id, d) in self.downstream.iter_mut() {
            let (Some(_), Some(e)) = (d.ext, d.estimator.as_mut()) else {
                continue;
            };
            if e.poll_timeout().is_some_and(|t| t <= now) {
                e.handle_timeout(now);
            }
            if d.probing.is_none()
                && let Some(c) = e.poll_probe()
            {
                d.probing = Some(Probing {
                    cluster: c,
                    from: None,
                    back: 0,
                    packets: 0,
                    bytes: 0,
                    started: now,
                    next_at: now,
                });
            }
            if d.probing.is_some_and(|p| p.next_at <= now) {
                due.push(id);
            }
        }
        for &subscriber in &due {
            self.probe_step(subscriber, out, now);
        }
        self.probe_scratch = due;
    }

    /// Tops a subscriber's probe cluster up to its rate with copies, as many as its rate asks
    /// for by now, and says when the next is due; ends the cluster once it carried its packets
    /// and bytes.
    fn probe_step(&mut self, subscriber: TransportId, out: &mut dyn Egress, now: Instant) {
        let Some(p) = self.downstream.get(&subscriber).and_then(|d| d.probing) else {
            return;
        };
        let from = p.from.or_else(|| self.probe_source(subscriber));
        let (mut back, cluster) = (p.back, p.cluster);
        // Bytes the cluster should have carried by now at its rate.
        let elapsed_us = now.saturating_duration_since(p.started).as_micros() as u64;
        let due = cluster.bitrate.saturating_mul(elapsed_us) / 8_000_000;
        let mut stalled = from.is_none();
        for _ in 0..MAX_COPIES_PER_STEP {
            let Some(d) = self.downstream.get(&subscriber).and_then(|d| d.probing) else {
                return;
            };
            let done = d.packets >= cluster.min_packets && d.bytes >= cluster.min_bytes;
            // One packet ahead of the rate: the cluster's send rate is measured without its
            // last packet, and timer steps are coarser than the packet spacing.
            let ahead = u64::from(d.bytes / d.packets.max(1)).max(1000);
            if done || u64::from(d.bytes) >= due + ahead {
                break;
            }
            let Some((slot, last)) = from else { break };
            let mut sent = None;
            while sent.is_none() && back < MAX_PROBE_PACKETS {
                let seq = last.wrapping_sub(back);
                back += 1;
                sent = self.resend(slot, subscriber, seq, Some(cluster.id), out, now);
            }
            if sent.is_none() {
                stalled = true;
                break;
            }
            self.stats.probe_packets += 1;
        }
        let Some(d) = self.downstream.get_mut(&subscriber) else {
            return;
        };
        let Some(p) = d.probing.as_mut() else {
            return;
        };
        p.from = from;
        p.back = back;
        if stalled || (p.packets >= cluster.min_packets && p.bytes >= cluster.min_bytes) {
            // Done, or nothing (more) to copy: the estimator measures what it carried, or
            // times it out.
            d.probing = None;
            return;
        }
        // The next copy when the rate has room for a typical packet.
        let gap_us =
            (u64::from(p.bytes) / u64::from(p.packets.max(1))) * 8_000_000 / cluster.bitrate.max(1);
        p.next_at = now + Duration::from_micros(gap_us.max(500));
        let at = p.next_at;
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    /// The subscriber's video subscription with RTX that has sent the most, and the newest
    /// sequence number it sent: where probe copies come from.
    fn probe_source(&self, subscriber: TransportId) -> Option<(Slot, u16)> {
        self.tracks
            .iter()
            .filter(|(_, t)| t.is_video())
            .filter_map(|(slot, t)| {
                let s = t.subs.iter().find(|s| s.config.subscriber == subscriber)?;
                s.config.rtx?;
                Some((slot, s.rewriter.last_out_seq()?, s.packets))
            })
            .max_by_key(|x| x.2)
            .map(|(slot, last, _)| (slot, last))
    }

    /// When an estimator next wants its timers run, or a probe its next packet.
    pub(super) fn next_downstream_timer(&self) -> Option<Instant> {
        self.downstream
            .values()
            .filter(|d| d.ext.is_some())
            .flat_map(|d| {
                let e = d.estimator.as_ref().and_then(|e| e.poll_timeout());
                [e, d.probing.map(|p| p.next_at)]
            })
            .flatten()
            .min()
    }
}
