//! A subscriber transport's downlink: the transport-wide sequence numbers Ringcast stamps on
//! everything it sends there (one sequence across all of the transport's streams, RTX
//! included), the bandwidth estimate (`ringcast_cc::Estimator`) that the subscriber's
//! transport-cc feedback, or its REMB where that is all it negotiated, drives; how that
//! estimate is shared among the subscriber's video subscriptions (`allocate`), and the probes
//! (RTX copies of what it was just sent) that find out whether it could take more.

use std::time::{Duration, Instant};

use ringcast_cc::twcc::Feedback;
use ringcast_cc::{ClusterId, Config, Estimator, ProbeCluster};
use ringcast_types::TransportId;
use ringcast_types::route::Egress;

use super::MediaRouter;
use super::allocate::{self, Want};
use crate::table::Slot;

/// How often layer rates are measured and estimates shared out.
pub const RATE_INTERVAL: Duration = Duration::from_millis(500);

/// What an audio subscription is assumed to cost when its rate is not measured yet (Opus at
/// its usual WebRTC rate plus headers).
const AUDIO_RATE: u64 = 50_000;

/// Packets one probe cluster may take from the history at most.
const MAX_PROBE_PACKETS: u16 = 64;

/// One subscriber transport's congestion control state.
pub(super) struct Downstream {
    /// The subscriber's extension id for transport-wide sequence numbers, where it
    /// negotiated transport-cc.
    ext: Option<u8>,
    /// The sequence number the next packet carries.
    next_seq: u16,
    pub(super) estimator: Estimator,
    /// It sent REMB.
    remb: bool,
}

impl Downstream {
    fn new(ext: Option<u8>) -> Self {
        Downstream {
            ext,
            next_seq: 0,
            estimator: Estimator::new(Config::default()),
            remb: false,
        }
    }

    /// The estimate, where something measures this downlink: transport-wide feedback, or
    /// REMB. A subscriber with neither gets every layer, as before congestion control.
    pub(super) fn estimate(&self) -> Option<u64> {
        (self.ext.is_some() || self.remb).then(|| self.estimator.target_bitrate())
    }

    /// The extension element the next packet to this subscriber carries: its id and the
    /// sequence number. Only a packet that is sent takes the number (see `sent`), so the
    /// subscriber sees no gap that is not loss.
    pub(super) fn next_element(&self) -> Option<(u8, [u8; 2])> {
        self.ext.map(|id| (id, self.next_seq.to_be_bytes()))
    }

    /// The packet that carried `next_element` (`len` bytes of RTP) was sent, as part of probe
    /// cluster `probe` if it is one.
    pub(super) fn sent(&mut self, len: usize, now: Instant, probe: Option<ClusterId>) {
        if self.ext.is_some() {
            self.estimator
                .on_packet_sent(self.next_seq, len, now, probe);
            self.next_seq = self.next_seq.wrapping_add(1);
        }
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
            d.ext = ext;
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
        match Feedback::parse_fci(sender_ssrc, media_ssrc, fci) {
            Ok(fb) => {
                d.estimator.on_feedback(&fb, now);
                self.stats.twcc_feedback_received += 1;
            }
            Err(_) => self.stats.malformed_rtcp += 1,
        }
    }

    /// A subscriber's REMB: its estimate where it has no transport-wide feedback.
    pub(super) fn subscriber_remb(&mut self, from: TransportId, bitrate: u64, now: Instant) {
        if let Some(d) = self.downstream.get_mut(&from) {
            d.estimator.on_remb(bitrate, now);
            d.remb = true;
        }
    }

    /// The bandwidth estimate for a subscriber transport, bits/s.
    pub fn subscriber_estimate(&self, subscriber: TransportId) -> Option<u64> {
        Some(self.downstream.get(&subscriber)?.estimator.target_bitrate())
    }

    /// Measures every layer's rate, then shares each measured subscriber's estimate among its
    /// video subscriptions (audio first, then in track order) and caps the layer each may be
    /// sent; tells each estimator what its subscriber would take, so probing stops there.
    pub(super) fn allocate_layers(&mut self, elapsed: Duration, now: Instant) {
        for t in self.tracks.values_mut() {
            t.measure_rates(elapsed);
        }
        // (subscriber, track, subscription index, what it wants), grouped by subscriber.
        let mut wants = std::mem::take(&mut self.alloc_scratch);
        wants.clear();
        for (slot, t) in self.tracks.iter() {
            let (rates, layers) = t.rates(now);
            let video = t.is_video();
            for (i, s) in t.subs.iter().enumerate() {
                let rates = if video {
                    rates
                } else {
                    // Audio: one layer, taken off the budget first (as rate 0 of layer 0).
                    [rates[0].max(AUDIO_RATE), 0, 0, 0]
                };
                let layers = if video { layers } else { 1 };
                let cap = s.cap.min(layers.saturating_sub(1));
                wants.push((
                    s.config.subscriber,
                    slot,
                    i,
                    video,
                    Want { rates, layers, cap },
                ));
            }
        }
        // Stable: within a subscriber, audio first, then video in track order.
        wants.sort_by_key(|w| (w.0, !w.3));
        let mut caps = std::mem::take(&mut self.caps_scratch);
        for group in wants.chunk_by(|a, b| a.0 == b.0) {
            let subscriber = group[0].0;
            let Some(d) = self.downstream.get_mut(&subscriber) else {
                continue;
            };
            let desired: u64 = group
                .iter()
                .map(|w| {
                    w.4.rates[..w.4.layers.max(1)]
                        .iter()
                        .copied()
                        .max()
                        .unwrap_or(0)
                })
                .sum();
            d.estimator.set_desired_bitrate(desired.max(AUDIO_RATE));
            let Some(budget) = d.estimate() else {
                // Nothing measures this downlink: no cap.
                for &(_, slot, i, _, _) in group {
                    self.set_cap(slot, i, super::forward::ANY_LAYER);
                }
                continue;
            };
            caps.clear();
            caps.resize(group.len(), 0);
            let ws: Vec<Want> = group.iter().map(|w| w.4).collect();
            allocate::allocate(budget, &ws, &mut caps);
            for (w, &cap) in group.iter().zip(caps.iter()) {
                self.set_cap(w.1, w.2, if w.3 { cap } else { super::forward::ANY_LAYER });
            }
        }
        self.caps_scratch = caps;
        self.alloc_scratch = wants;
    }

    fn set_cap(&mut self, slot: Slot, i: usize, cap: usize) {
        if let Some(s) = self.tracks.at_mut(slot).and_then(|t| t.subs.get_mut(i)) {
            s.cap = cap;
        }
    }

    /// Runs each estimator's timers and sends the probe clusters they ask for: RTX copies of
    /// the packets a subscriber was just sent on one of its video subscriptions, stamped as
    /// the cluster's, until the cluster's packets and bytes are sent (a subscriber without RTX
    /// gets none: a copy on its media SSRC would be taken for the packet itself).
    pub(super) fn send_probes(&mut self, out: &mut dyn Egress, now: Instant) {
        let mut due = std::mem::take(&mut self.probe_scratch);
        due.clear();
        for (&id, d) in self.downstream.iter_mut() {
            if d.ext.is_none() {
                continue;
            }
            if d.estimator.poll_timeout().is_some_and(|t| t <= now) {
                d.estimator.handle_timeout(now);
            }
            while let Some(c) = d.estimator.poll_probe() {
                due.push((id, c));
            }
        }
        for &(subscriber, cluster) in &due {
            self.probe(subscriber, cluster, out, now);
        }
        self.probe_scratch = due;
    }

    fn probe(
        &mut self,
        subscriber: TransportId,
        c: ProbeCluster,
        out: &mut dyn Egress,
        now: Instant,
    ) {
        // The subscriber's video subscription with RTX that has sent the most.
        let Some((slot, last)) = self
            .tracks
            .iter()
            .filter(|(_, t)| t.is_video())
            .filter_map(|(slot, t)| {
                let s = t.subs.iter().find(|s| s.config.subscriber == subscriber)?;
                s.config.rtx?;
                Some((slot, s.rewriter.last_out_seq()?, s.packets))
            })
            .max_by_key(|x| x.2)
            .map(|(slot, last, _)| (slot, last))
        else {
            return;
        };
        let (mut packets, mut bytes) = (0u32, 0u32);
        for back in 0..MAX_PROBE_PACKETS {
            if packets >= c.min_packets && bytes >= c.min_bytes {
                break;
            }
            if let Some(n) = self.resend(
                slot,
                subscriber,
                last.wrapping_sub(back),
                Some(c.id),
                out,
                now,
            ) {
                packets += 1;
                bytes = bytes.saturating_add(n as u32);
                self.stats.probe_packets += 1;
            }
        }
    }

    /// When an estimator next wants its timers run.
    pub(super) fn next_downstream_timer(&self) -> Option<Instant> {
        self.downstream
            .values()
            .filter(|d| d.ext.is_some())
            .filter_map(|d| d.estimator.poll_timeout())
            .min()
    }
}
