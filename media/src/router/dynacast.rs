//! Pausing the layers nobody needs (dynacast): a published video track's simulcast layers
//! above the best any of its subscribers' settings allow (layer cap, rendered size), and all
//! of them while it has no subscriber, are reported to a sink (the control plane tells the
//! publisher over `Events`, and its client stops encoding them). A layer is resumed at once
//! when a subscriber needs it again, and paused only after nobody did for `PAUSE_AFTER`, so
//! a tile that shrinks and grows back does not make the publisher's encoder flap.
//!
//! Bandwidth does not pause layers: a subscriber whose link carries only the low layer still
//! wants what its settings allow, so its link recovering finds the layer flowing.

use std::time::{Duration, Instant};

use super::{MediaRouter, TrackId};

/// A layer nobody needs is paused after this long.
pub const PAUSE_AFTER: Duration = Duration::from_secs(3);

/// Where layer changes go: a track and, lowest first, whether each of its layers is wanted.
pub type LayersSink = Box<dyn FnMut(TrackId, &[bool]) + Send>;

/// A track's layers as its publisher was last told them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Dynacast {
    /// How many of the layers (lowest first) are active; `None` until first told: all are.
    active: Option<usize>,
    /// Since when fewer layers are wanted than are active.
    fewer_since: Option<Instant>,
}

impl Dynacast {
    /// Follows how many layers are `wanted` now (of `layers`): more at once, fewer once that
    /// held `PAUSE_AFTER`. Returns the new count when it changed.
    pub(super) fn follow(&mut self, wanted: usize, layers: usize, now: Instant) -> Option<usize> {
        let active = self.active.unwrap_or(layers);
        if wanted >= active {
            self.fewer_since = None;
            if wanted > active {
                self.active = Some(wanted);
                return Some(wanted);
            }
            return None;
        }
        let since = *self.fewer_since.get_or_insert(now);
        if now.saturating_duration_since(since) < PAUSE_AFTER {
            return None;
        }
        self.fewer_since = None;
        self.active = Some(wanted);
        Some(wanted)
    }
}

/// How many layers (lowest first) a track's subscribers need, given the highest each one's
/// settings allow: none without a subscriber.
pub(super) fn wanted(layers: usize, highest: impl IntoIterator<Item = usize>) -> usize {
    highest
        .into_iter()
        .map(|h| h.min(layers.saturating_sub(1)) + 1)
        .max()
        .unwrap_or(0)
}

impl MediaRouter {
    /// A router that reports the layers its publishers should send to `sink` too.
    pub fn with_layers_sink(mut self, sink: LayersSink) -> Self {
        self.layers_sink = Some(sink);
        self
    }

    /// Works out each video track's wanted layers and reports those that changed.
    pub(super) fn follow_wanted_layers(&mut self, now: Instant) {
        let Some(sink) = self.layers_sink.as_mut() else {
            return;
        };
        let mut flags = [false; super::allocate::MAX_LAYERS];
        for t in self.tracks.values_mut() {
            if !t.is_video() {
                continue;
            }
            let layers = t.layers.len().clamp(1, flags.len());
            let n = {
                let t = &*t;
                let highest = t
                    .subs
                    .iter()
                    .map(|s| super::downstream::max_layer(t, &s.config.settings));
                wanted(layers, highest)
            };
            if let Some(active) = t.dynacast.follow(n, layers, now) {
                for (i, f) in flags[..layers].iter_mut().enumerate() {
                    *f = i < active;
                }
                sink(t.config.id, &flags[..layers]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_wanted_by_the_subscribers_settings() {
        assert_eq!(wanted(3, []), 0, "no subscriber: none");
        assert_eq!(wanted(3, [0]), 1, "capped at q: q");
        assert_eq!(wanted(3, [0, 1]), 2);
        assert_eq!(wanted(3, [usize::MAX, 0]), 3, "one without a cap: all");
        assert_eq!(wanted(1, [0]), 1, "one layer");
    }

    #[test]
    fn more_at_once_fewer_after_a_while() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut d = Dynacast::default();
        assert_eq!(d.follow(3, 3, at(0)), None, "all, as the publisher starts");
        assert_eq!(d.follow(1, 3, at(0)), None, "fewer: not yet");
        assert_eq!(d.follow(1, 3, at(2000)), None);
        assert_eq!(d.follow(1, 3, at(3000)), Some(1), "fewer, after a while");
        assert_eq!(d.follow(1, 3, at(9000)), None, "told once");
        assert_eq!(d.follow(3, 3, at(9500)), Some(3), "more at once");
        assert_eq!(d.follow(2, 3, at(10000)), None);
        assert_eq!(
            d.follow(3, 3, at(12000)),
            None,
            "back before the pause: nothing told"
        );
        assert_eq!(d.follow(2, 3, at(12500)), None, "the wait starts again");
        assert_eq!(d.follow(2, 3, at(15000)), None);
        assert_eq!(
            d.follow(0, 3, at(15500)),
            Some(0),
            "none, 3 s after fewer began"
        );
    }
}
