//! What each subscriber is told of its video subscriptions: the layer it is sent now, the
//! layer it is moving to, how many the track has, the temporal layers it is sent of it, and
//! its downlink estimate. Reported to a
//! sink (the control plane, which turns it into `Events` for that subscriber) when a layer
//! changes, or when the estimate moved by a tenth, at most once a `QUALITY_MIN_GAP` for the
//! estimate alone; and counted per layer in metrics.

use std::time::{Duration, Instant};

use ringcast_types::TransportId;

use super::{MediaRouter, TrackId};

/// How often subscriptions are looked at for something to report.
pub const QUALITY_INTERVAL: Duration = Duration::from_millis(250);

/// A change of the estimate alone is reported at most this often per subscription.
pub const QUALITY_MIN_GAP: Duration = Duration::from_secs(2);

/// One video subscription as its subscriber is told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionQuality {
    pub subscriber: TransportId,
    pub track: TrackId,
    /// The layer sent now (0 the lowest); `None` while nothing is sent (waiting for a
    /// keyframe, or muted).
    pub current: Option<u8>,
    /// The layer it is moving to, or stays on.
    pub target: u8,
    /// The track's simulcast layers (1 without simulcast).
    pub layers: u8,
    /// The subscriber's downlink estimate, bits/s, where something measures it.
    pub estimate_bps: Option<u64>,
    /// The highest temporal layer sent now, where fewer than all of them are.
    pub temporal: Option<u8>,
    /// The temporal layers of the layer it is sent (1: none, or not known).
    pub temporal_layers: u8,
}

/// Where subscription quality reports go, a batch per look.
pub type QualitySink = Box<dyn FnMut(&[SubscriptionQuality]) + Send>;

/// What a subscription was last reported as, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reported {
    quality: SubscriptionQuality,
    at: Instant,
}

/// Whether `now_q` is worth reporting, given what was reported last: the first, any change
/// of layers, or (after `QUALITY_MIN_GAP`) an estimate that moved by a tenth or more.
pub(super) fn due(last: Option<&Reported>, q: &SubscriptionQuality, now: Instant) -> bool {
    let Some(last) = last else { return true };
    let l = &last.quality;
    if (l.current, l.target, l.layers, l.temporal, l.temporal_layers)
        != (q.current, q.target, q.layers, q.temporal, q.temporal_layers)
    {
        return true;
    }
    let moved = match (l.estimate_bps, q.estimate_bps) {
        (Some(a), Some(b)) => a.abs_diff(b) >= a / 10,
        (None, None) => false,
        _ => true,
    };
    moved && now.saturating_duration_since(last.at) >= QUALITY_MIN_GAP
}

impl MediaRouter {
    /// A router that reports subscription quality to `sink` too.
    pub fn with_quality_sink(mut self, sink: QualitySink) -> Self {
        self.quality_sink = Some(sink);
        self
    }

    /// Reports what changed since the last look (see `due`).
    pub(super) fn report_quality(&mut self, now: Instant) {
        if self.quality_sink.is_none() {
            return;
        }
        let mut batch = std::mem::take(&mut self.quality_scratch);
        batch.clear();
        for t in self.tracks.values_mut() {
            if !t.is_video() {
                continue;
            }
            let layers = t.layers.len().clamp(1, usize::from(u8::MAX)) as u8;
            let muted = t.muted;
            let track = t.config.id;
            for s in &mut t.subs {
                let f = &s.forwarding;
                let temporal_layers = t.layers.get(f.layer).map_or(1, |l| {
                    l.temporal_layers.clamp(1, usize::from(u8::MAX)) as u8
                });
                let temporal =
                    (temporal_layers > 1 && s.temporal < temporal_layers - 1).then_some(s.temporal);
                let q = SubscriptionQuality {
                    subscriber: s.config.subscriber,
                    track,
                    current: (!muted && !f.waiting_keyframe).then_some(f.layer.min(255) as u8),
                    target: f.target.min(255) as u8,
                    layers,
                    estimate_bps: self
                        .downstream
                        .get(&s.config.subscriber)
                        .and_then(|d| d.estimate()),
                    temporal,
                    temporal_layers,
                };
                if due(s.reported.as_ref(), &q, now) {
                    s.reported = Some(Reported {
                        quality: q,
                        at: now,
                    });
                    batch.push(q);
                }
            }
        }
        if !batch.is_empty()
            && let Some(sink) = &mut self.quality_sink
        {
            sink(&batch);
        }
        self.quality_scratch = batch;
    }

    /// Video subscriptions by the layer they are sent now and the one they aim at, for
    /// metrics: `[current, target]` counts per layer (index 3: none sent now).
    pub(super) fn layer_counts(&self) -> [[u64; 4]; 2] {
        let mut counts = [[0; 4]; 2];
        for t in self.tracks.values().filter(|t| t.is_video()) {
            for s in &t.subs {
                let f = &s.forwarding;
                let current = if t.muted || f.waiting_keyframe {
                    3
                } else {
                    f.layer.min(2)
                };
                counts[0][current] += 1;
                counts[1][f.target.min(2)] += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(current: Option<u8>, target: u8, estimate: Option<u64>) -> SubscriptionQuality {
        SubscriptionQuality {
            subscriber: TransportId(2),
            track: TrackId(1),
            current,
            target,
            layers: 3,
            temporal: None,
            temporal_layers: 3,
            estimate_bps: estimate,
        }
    }

    #[test]
    fn what_is_worth_reporting() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let last = Reported {
            quality: q(Some(2), 2, Some(1_000_000)),
            at: t0,
        };
        let thinned = SubscriptionQuality {
            temporal: Some(1),
            ..q(Some(2), 2, Some(1_000_000))
        };
        #[rustfmt::skip]
        let cases: [(&str, Option<&Reported>, SubscriptionQuality, Instant, bool); 10] = [
            ("the first", None, q(None, 0, None), at(0), true),
            ("nothing changed", Some(&last), q(Some(2), 2, Some(1_000_000)), at(5000), false),
            ("the target moved", Some(&last), q(Some(2), 1, Some(1_000_000)), at(1), true),
            ("the current moved", Some(&last), q(Some(1), 2, Some(1_000_000)), at(1), true),
            ("nothing sent now", Some(&last), q(None, 2, Some(1_000_000)), at(1), true),
            ("the estimate moved, too soon", Some(&last), q(Some(2), 2, Some(500_000)), at(1000), false),
            ("the estimate moved", Some(&last), q(Some(2), 2, Some(500_000)), at(2000), true),
            ("the estimate moved a little", Some(&last), q(Some(2), 2, Some(950_000)), at(5000), false),
            ("no estimate any more", Some(&last), q(Some(2), 2, None), at(2000), true),
            ("frame rate layers thinned", Some(&last), thinned, at(1), true),
        ];
        for (what, last, now_q, now, expect) in cases {
            assert_eq!(due(last, &now_q, now), expect, "{what}");
        }
    }
}
