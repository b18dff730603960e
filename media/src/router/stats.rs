//! The router's counters, and their publication as metrics (through the `metrics` facade:
//! the shard's counters as deltas since the last publication, and histograms of what
//! subscribers' receiver reports said).

use std::time::Duration;

use crate::retransmit::Refusal;

/// Receiver-report samples kept between two metrics publications.
const MAX_REPORT_SAMPLES: usize = 4096;

/// Counters the router keeps (read by tests; published by `Router::publish_metrics`).
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
    /// VP8 packets of temporal layers above the one a subscription gets, not sent to it.
    pub temporal_skipped: u64,
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
    /// Transport-wide feedback messages sent to publishers, and received from subscribers.
    pub twcc_feedback_sent: u64,
    pub twcc_feedback_received: u64,
    /// RTX copies sent to subscribers as bandwidth probes.
    pub probe_packets: u64,
}

/// What the router last published, and the samples awaiting the next publication.
pub(super) struct Metrics {
    /// `RouterStats` as last published.
    published: RouterStats,
    /// (RTT, loss fraction) from subscribers' receiver reports, preallocated so reports
    /// never allocate.
    samples: Vec<(Option<Duration>, f64)>,
    /// Each subscriber transport's bandwidth estimate (bits/s) at the last report interval.
    estimates: Vec<u64>,
    /// The REMB each publisher was sent at the last report interval (bits/s).
    publisher_limits: Vec<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            published: RouterStats::default(),
            samples: Vec::with_capacity(MAX_REPORT_SAMPLES),
            estimates: Vec::with_capacity(MAX_REPORT_SAMPLES),
            publisher_limits: Vec::new(),
        }
    }
}

impl Metrics {
    /// A subscriber's report: its RTT sample (if it named a sender report of ours) and loss
    /// fraction, kept for the next publication (bounded: a flood of reports only loses samples).
    pub(super) fn sample(&mut self, rtt: Option<Duration>, loss: f64) {
        if self.samples.len() < MAX_REPORT_SAMPLES {
            self.samples.push((rtt, loss));
        }
    }

    /// A subscriber transport's bandwidth estimate, kept for the next publication (bounded).
    pub(super) fn sample_estimate(&mut self, bps: u64) {
        if self.estimates.len() < MAX_REPORT_SAMPLES {
            self.estimates.push(bps);
        }
    }

    /// Video subscriptions by the layer they are sent now and the one they aim at (see
    /// `MediaRouter::layer_counts`).
    pub(super) fn publish_layers(&mut self, counts: [[u64; 4]; 2], shard: u16) {
        const LAYER: [&str; 4] = ["0", "1", "2", "none"];
        for (of, counts) in ["current", "target"].into_iter().zip(counts) {
            for (layer, n) in LAYER.into_iter().zip(counts) {
                if of == "target" && layer == "none" {
                    continue;
                }
                metrics::gauge!("ringcast_video_subscriptions", "shard" => shard.to_string(), "layer" => layer, "of" => of)
                    .set(n as f64);
            }
        }
    }

    /// The REMB a publisher was sent, kept for the next publication (bounded).
    pub(super) fn sample_publisher_limit(&mut self, bps: u64) {
        if self.publisher_limits.len() < MAX_REPORT_SAMPLES {
            self.publisher_limits.push(bps);
        }
    }

    /// Publishes, for `shard`, what `stats` counted since the last publication and the samples
    /// kept since.
    pub(super) fn publish(&mut self, stats: &RouterStats, shard: u16) {
        let (s, p) = (*stats, self.published);
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
                "ringcast_twcc_feedback_sent_total",
                s.twcc_feedback_sent - p.twcc_feedback_sent,
            ),
            (
                "ringcast_twcc_feedback_received_total",
                s.twcc_feedback_received - p.twcc_feedback_received,
            ),
            (
                "ringcast_probe_packets_total",
                s.probe_packets - p.probe_packets,
            ),
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
            (
                "ringcast_temporal_skipped_total",
                s.temporal_skipped - p.temporal_skipped,
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
        if !self.estimates.is_empty() {
            let h =
                metrics::histogram!("ringcast_subscriber_estimate_bps", "shard" => shard.clone());
            for bps in self.estimates.drain(..) {
                h.record(bps as f64);
            }
        }
        if !self.publisher_limits.is_empty() {
            let h = metrics::histogram!("ringcast_publisher_remb_bps", "shard" => shard.clone());
            for bps in self.publisher_limits.drain(..) {
                h.record(bps as f64);
            }
        }
        if !self.samples.is_empty() {
            let rtt =
                metrics::histogram!("ringcast_subscriber_rtt_seconds", "shard" => shard.clone());
            let loss = metrics::histogram!("ringcast_subscriber_loss_ratio", "shard" => shard);
            for (r, l) in self.samples.drain(..) {
                if let Some(r) = r {
                    rtt.record(r.as_secs_f64());
                }
                loss.record(l);
            }
        }
        self.published = s;
    }
}
