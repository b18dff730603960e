//! Sharing a subscriber's bandwidth estimate among its video subscriptions: a pure function of
//! the estimate, each subscription's layer bitrates and the layer it may be sent now,
//! table-tested. The router measures the rates, runs it for every subscriber each
//! `RATE_INTERVAL`, and the layer selector then never aims above the cap it returns.

use std::cmp::Reverse;

/// Simulcast layers a subscription's rates are given for, at most.
pub const MAX_LAYERS: usize = 4;

/// A layer above the current cap must fit with this share to spare (percent), and the layer
/// at the cap stays while the budget carries this share of it (percent): between the two an
/// estimate that hovers at a layer's bitrate, or dips on a delay-based decrease (to 85 % of
/// what was acknowledged), does not move the subscription up and down.
pub const UP_HEADROOM_PERCENT: u64 = 15;
pub const STAY_PERCENT: u64 = 85;

/// One video subscription as allocation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// Each layer's measured bitrate, bits/s, lowest quality first (0: unmeasured or not
    /// flowing, which costs nothing).
    pub rates: [u64; MAX_LAYERS],
    pub layers: usize,
    /// The highest layer it may be sent now.
    pub cap: usize,
    /// Whether it may move above `cap` now (not while it settles after moving down).
    pub may_rise: bool,
    /// The best layer's rate when it last flowed: a layer the publisher paused is still
    /// worth probing for.
    pub best_known: u64,
    /// The lowest layer's temporal layers, for a budget that cannot carry it whole.
    pub temporal: TemporalWant,
}

/// VP8 temporal layers (at most this many: the descriptor's TID has two bits).
pub const MAX_TEMPORAL: usize = 4;

/// The lowest layer's temporal layers as allocation sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemporalWant {
    /// What the layer costs up to each temporal layer, bits/s (cumulative, lowest first; 0:
    /// not measured).
    pub rates: [u64; MAX_TEMPORAL],
    /// Temporal layers it has (1: none to drop).
    pub layers: usize,
    /// The highest it may be sent now (`MAX_TEMPORAL` or above: all).
    pub cap: usize,
}

impl TemporalWant {
    /// A layer without temporal layers.
    pub const NONE: TemporalWant = TemporalWant {
        rates: [0; MAX_TEMPORAL],
        layers: 1,
        cap: usize::MAX,
    };

    fn top(&self) -> usize {
        self.layers.clamp(1, MAX_TEMPORAL) - 1
    }

    /// The least it can be sent at: its base temporal layer where that is measured.
    fn least(&self, whole: u64) -> u64 {
        match self.rates[0] {
            0 => whole,
            r if self.top() > 0 => r.min(whole),
            _ => whole,
        }
    }

    /// As `Want::need`, for temporal layer `t` (the whole layer above the top).
    fn need(&self, t: usize, whole: u64) -> u64 {
        let r = if t >= self.top() {
            whole
        } else {
            self.rates[t]
        };
        let cap = self.cap.min(self.top());
        match t.cmp(&cap) {
            std::cmp::Ordering::Greater => r + r * UP_HEADROOM_PERCENT / 100,
            std::cmp::Ordering::Equal => r * STAY_PERCENT / 100,
            std::cmp::Ordering::Less => r,
        }
    }
}

impl Want {
    fn rate(&self, layer: usize) -> u64 {
        self.rates.get(layer).copied().unwrap_or(0)
    }

    /// What moving to (or staying on) `layer` needs from the budget: headroom included above
    /// the current cap, the stay share at it.
    fn need(&self, layer: usize) -> u64 {
        let r = self.rate(layer);
        match layer.cmp(&self.cap) {
            std::cmp::Ordering::Greater => r + r * UP_HEADROOM_PERCENT / 100,
            std::cmp::Ordering::Equal => r * STAY_PERCENT / 100,
            std::cmp::Ordering::Less => r,
        }
    }
}

/// Where a subscription comes in its subscriber's share-out: audio first, then the
/// subscriber's own priority, screen shares, the active speakers (loudest first), the larger
/// rendered size; what is still equal keeps track order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Order {
    pub audio: bool,
    pub priority: u8,
    pub screen_share: bool,
    /// Where its publisher is among the active speakers (0: the loudest).
    pub speaker_rank: Option<u8>,
    /// The rendered area asked for, pixels (0: not said).
    pub area: u64,
}

/// An `Order` as a key that sorts first what is shared out first.
pub type OrderKey = (bool, Reverse<u8>, bool, u16, Reverse<u64>);

impl Order {
    pub fn key(&self) -> OrderKey {
        (
            !self.audio,
            Reverse(self.priority),
            !self.screen_share,
            self.speaker_rank.map_or(u16::MAX, u16::from),
            Reverse(self.area),
        )
    }

    pub fn is_audio(key: OrderKey) -> bool {
        !key.0
    }
}

/// Shares `budget` (bits/s) among a subscriber's video subscriptions, given in priority
/// order, and writes each one's new cap into `caps`. Every subscription first gets its lowest
/// layer (sent even when the budget can't carry it: there is nothing lower but a frozen
/// picture); then, in order, each moves to the highest layer whose cost beyond its lowest fits
/// what remains (and a subscription that may not rise stays at most at its cap).
pub fn allocate(budget: u64, wants: &[Want], caps: &mut [usize]) {
    let base: u64 = wants.iter().map(|w| w.rate(0)).sum();
    let mut left = budget.saturating_sub(base);
    for (w, cap) in wants.iter().zip(caps.iter_mut()) {
        let mut top = w.layers.clamp(1, MAX_LAYERS) - 1;
        if !w.may_rise {
            top = top.min(w.cap);
        }
        let chosen = (1..=top)
            .rev()
            .find(|&l| w.need(l).saturating_sub(w.rate(0)) <= left)
            .unwrap_or(0);
        left -= w.rate(chosen).saturating_sub(w.rate(0)).min(left);
        *cap = chosen;
    }
}

/// Where `budget` cannot carry every subscription's lowest layer whole (`allocate` sends them
/// all anyway), the temporal layers of it each is sent, into `caps` (`usize::MAX`: all):
/// every one first gets its base temporal layer, then, in priority order, each the highest
/// that fits what remains, with the same headroom up and stay share as layers. A lower frame
/// rate rather than a link overrun and a frozen picture. Budgets that carry the lowest layers
/// leave every temporal layer.
pub fn thin(budget: u64, wants: &[Want], caps: &mut [usize]) {
    let whole: u64 = wants.iter().map(|w| w.rate(0)).sum();
    if budget >= whole {
        caps.fill(usize::MAX);
        return;
    }
    let least: u64 = wants.iter().map(|w| w.temporal.least(w.rate(0))).sum();
    let mut left = budget.saturating_sub(least);
    for (w, cap) in wants.iter().zip(caps.iter_mut()) {
        let t = &w.temporal;
        let (base, top) = (t.least(w.rate(0)), t.top());
        if top == 0 || t.rates[0] == 0 {
            *cap = usize::MAX;
            continue;
        }
        let chosen = (1..=top)
            .rev()
            .find(|&l| t.need(l, w.rate(0)).saturating_sub(base) <= left)
            .unwrap_or(0);
        let cost = if chosen >= top {
            w.rate(0)
        } else {
            t.rates[chosen]
        };
        left -= cost.saturating_sub(base).min(left);
        *cap = if chosen >= top { usize::MAX } else { chosen };
    }
}

/// Probes aim this far (percent) past what moving up needs: a probe is measured a little
/// under its rate, and must still clear the headroom.
pub const PROBE_MARGIN_PERCENT: u64 = 10;

/// The rate a subscriber's subscriptions would take at their best layers, with the headroom
/// a move up needs and the probe margin: the estimator probes up to this, and no further.
pub fn wanted(wants: &[Want]) -> u64 {
    let need: u64 = wants
        .iter()
        .map(|w| {
            let best = w.rates[..w.layers.min(MAX_LAYERS)]
                .iter()
                .copied()
                .max()
                .unwrap_or(0)
                .max(w.best_known);
            best + best * UP_HEADROOM_PERCENT / 100
        })
        .sum();
    need + need * PROBE_MARGIN_PERCENT / 100
}

/// What a publisher must send of one video track so that each of its subscribers can have
/// the best layer its estimate carries, and the layer above it (kept encoding, so that a
/// subscriber whose link recovers moves up at once rather than after the publisher's encoder
/// ramps back up): the known rates (`known`, lowest first, 0 for a layer never seen flowing)
/// of every layer up to there, with headroom. Each subscriber is given as its estimate and
/// the highest layer its settings allow. `None` is no bound: a subscriber takes the top layer
/// (bounding that at the rate it was last seen at would hold an encoder that is still ramping
/// up there), no subscriber, one that nothing measures and whose settings allow the top, or a
/// layer never seen (it must flow to be known).
pub fn publisher_need(
    known: &[u64; MAX_LAYERS],
    layers: usize,
    subscribers: impl IntoIterator<Item = (Option<u64>, usize)>,
) -> Option<u64> {
    let known = &known[..layers.clamp(1, MAX_LAYERS)];
    if known.contains(&0) {
        return None;
    }
    let highest = known.len() - 1;
    let mut top: Option<usize> = None;
    for (e, max) in subscribers {
        let max = max.min(highest);
        let fits = match e {
            Some(e) => (1..=max)
                .rev()
                .find(|&l| known[l] + known[l] * UP_HEADROOM_PERCENT / 100 <= e)
                .unwrap_or(0),
            None if max == highest => return None,
            None => max,
        };
        top = top.max(Some(fits));
    }
    let top = top?;
    if top == highest {
        return None;
    }
    let upto = top + 1;
    let sum: u64 = known[..=upto].iter().sum();
    Some(sum + sum * UP_HEADROOM_PERCENT / 100)
}

/// The least and the most REMB allows a publisher: its low layer and audio always, and room
/// for three simulcast layers of 720p plus audio.
pub const PUBLISHER_MIN_BITRATE: u64 = 200_000;
pub const PUBLISHER_MAX_BITRATE: u64 = 3_000_000;

/// A lower REMB is sent only once the need stayed lower this long: a publisher's encoder
/// takes seconds to ramp back up, so a dip in a subscriber's estimate is not passed on.
pub const PUBLISHER_LOWER_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// The REMB one publisher is sent, and since when its need has been below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublisherLimit {
    pub bitrate: u64,
    pub below_since: Option<std::time::Instant>,
}

impl Default for PublisherLimit {
    fn default() -> Self {
        PublisherLimit {
            bitrate: PUBLISHER_MAX_BITRATE,
            below_since: None,
        }
    }
}

impl PublisherLimit {
    /// Follows `need` (`None`: unbounded): up at once, down once it stayed down
    /// `PUBLISHER_LOWER_AFTER`, always within the least and the most.
    pub fn follow(&mut self, need: Option<u64>, now: std::time::Instant) {
        let target = need
            .unwrap_or(PUBLISHER_MAX_BITRATE)
            .clamp(PUBLISHER_MIN_BITRATE, PUBLISHER_MAX_BITRATE);
        if target >= self.bitrate {
            *self = PublisherLimit {
                bitrate: target,
                below_since: None,
            };
            return;
        }
        let since = *self.below_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= PUBLISHER_LOWER_AFTER {
            // Lower still follows at once while it stays below.
            self.bitrate = target;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1000;

    fn want(rates: &[u64], cap: usize) -> Want {
        let mut r = [0; MAX_LAYERS];
        r[..rates.len()].copy_from_slice(rates);
        Want {
            rates: r,
            layers: rates.len(),
            cap,
            may_rise: true,
            best_known: 0,
            temporal: TemporalWant::NONE,
        }
    }

    const SIMULCAST: [u64; 3] = [150 * K, 500 * K, 1500 * K];

    /// The lowest layer in L1T3, as libvpx shares it: 40 %, 60 %, 100 % up to TID 0, 1, 2.
    fn l1t3(cap: usize) -> Want {
        Want {
            temporal: TemporalWant {
                rates: [60 * K, 90 * K, 150 * K, 0],
                layers: 3,
                cap,
            },
            ..want(&SIMULCAST, 0)
        }
    }

    #[test]
    fn a_budget_under_the_lowest_layer_drops_temporal_layers() {
        const ALL: usize = usize::MAX;
        #[rustfmt::skip]
        let cases: [(&str, u64, usize, usize); 8] = [
            // (what, budget, current temporal cap, new one)
            ("the lowest layer fits whole", 200 * K, 0, ALL),
            ("all of it stays while the budget carries 85 %", 140 * K, ALL, ALL),
            ("under that: down to TID 1", 120 * K, ALL, 1),
            ("TID 1 stays", 100 * K, 1, 1),
            ("TID 1 needs its headroom to come back", 100 * K, 0, 0),
            ("and comes back with it", 110 * K, 0, 1),
            ("all of it needs its headroom too", 145 * K, 1, 1),
            ("nothing fits: the base layer all the same", 30 * K, ALL, 0),
        ];
        for (what, budget, cap, want) in cases {
            let mut caps = [7];
            thin(budget, &[l1t3(cap)], &mut caps);
            assert_eq!(caps, [want], "{what}");
        }
        // Shared in order: the first keeps its frame rate, the second gets the base layer.
        let mut caps = [7, 7];
        thin(200 * K, &[l1t3(ALL), l1t3(ALL)], &mut caps);
        assert_eq!(caps, [ALL, 0]);
        // Nothing to thin (no temporal layers, or none measured): all of it.
        let unmeasured = Want {
            temporal: TemporalWant {
                rates: [0; MAX_TEMPORAL],
                ..l1t3(ALL).temporal
            },
            ..want(&SIMULCAST, 0)
        };
        thin(50 * K, &[want(&SIMULCAST, 0), unmeasured], &mut caps);
        assert_eq!(caps, [ALL, ALL]);
    }

    #[test]
    fn one_subscription_gets_the_best_layer_that_fits() {
        #[rustfmt::skip]
        let cases: [(&str, u64, usize, usize); 12] = [
            // (what, budget, current cap, new cap)
            ("plenty: the top", 5000 * K, 2, 2),
            ("plenty, from below: up with headroom", 5000 * K, 0, 2),
            ("just the top, already there: stays", 1500 * K, 2, 2),
            ("just the top, from below: not without headroom", 1500 * K, 1, 1),
            ("the top with headroom: up", 1725 * K, 1, 2),
            ("a dip within the stay share: stays", 1300 * K, 2, 2),
            ("below the stay share: down", 1200 * K, 2, 1),
            ("between: the middle", 1000 * K, 2, 1),
            ("the middle exactly, from below: not without headroom", 500 * K, 0, 0),
            ("the middle exactly, already there: stays", 500 * K, 1, 1),
            ("below the lowest: the lowest anyway", 100 * K, 2, 0),
            ("nothing: the lowest anyway", 0, 1, 0),
        ];
        for (what, budget, cap, expect) in cases {
            let mut caps = [9];
            allocate(budget, &[want(&SIMULCAST, cap)], &mut caps);
            assert_eq!(caps[0], expect, "{what}");
        }
    }

    #[test]
    fn several_share_in_priority_order() {
        #[rustfmt::skip]
        let cases: [(&str, u64, [usize; 3]); 5] = [
            // (what, budget, caps of three subscriptions at the top)
            ("plenty: all at the top", 5000 * K, [2, 2, 2]),
            ("the first gets the top, the rest their lowest", 1800 * K, [2, 0, 0]),
            ("what the first leaves, the second takes", 2200 * K, [2, 1, 0]),
            ("all at the middle", 1500 * K, [1, 1, 1]),
            ("too little for all lowest: all lowest", 300 * K, [0, 0, 0]),
        ];
        for (what, budget, expect) in cases {
            let wants = [want(&SIMULCAST, 2); 3];
            let mut caps = [9; 3];
            allocate(budget, &wants, &mut caps);
            assert_eq!(caps, expect, "{what}");
        }
    }

    #[test]
    fn settling_after_a_move_down_holds_the_cap() {
        let mut caps = [9];
        let w = Want {
            may_rise: false,
            ..want(&SIMULCAST, 0)
        };
        allocate(5000 * K, &[w], &mut caps);
        assert_eq!(caps, [0], "plenty, but not yet");
        let w = Want {
            may_rise: false,
            ..want(&SIMULCAST, 2)
        };
        allocate(1000 * K, &[w], &mut caps);
        assert_eq!(caps, [1], "down is never held");
    }

    /// What a subscriber would take, headroom and probe margin included: what probing aims
    /// at. An estimate there moves every subscription to its best layer.
    #[test]
    fn the_rate_wanted_clears_the_headroom_to_move_up() {
        let ws = [want(&SIMULCAST, 0), want(&[], 0), want(&SIMULCAST, 1)];
        let need = 2 * 1500 * K * (100 + UP_HEADROOM_PERCENT) / 100;
        assert_eq!(wanted(&ws), need + need * PROBE_MARGIN_PERCENT / 100);
        let mut caps = [9; 3];
        allocate(wanted(&ws), &ws, &mut caps);
        assert_eq!(caps, [2, 0, 2]);
    }

    #[test]
    fn the_order_subscriptions_are_shared_out_in() {
        let camera = Order::default();
        #[rustfmt::skip]
        let orders = [
            ("small tile", Order { area: 320 * 180, ..camera }),
            ("nothing said", camera),
            ("second speaker", Order { speaker_rank: Some(1), ..camera }),
            ("large tile", Order { area: 1280 * 720, ..camera }),
            ("screen share", Order { screen_share: true, ..camera }),
            ("loudest speaker", Order { speaker_rank: Some(0), area: 10, ..camera }),
            ("audio", Order { audio: true, ..camera }),
            ("priority 1, small", Order { priority: 1, area: 10, ..camera }),
            ("priority 1, screen", Order { priority: 1, screen_share: true, ..camera }),
        ];
        let mut sorted = orders;
        sorted.sort_by_key(|(_, o)| o.key());
        let names: Vec<&str> = sorted.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "audio",
                "priority 1, screen",
                "priority 1, small",
                "screen share",
                "loudest speaker",
                "second speaker",
                "large tile",
                "small tile",
                "nothing said",
            ]
        );
        assert!(Order::is_audio(orders[6].1.key()));
        assert!(!Order::is_audio(orders[4].1.key()));
    }

    #[test]
    fn a_paused_layer_is_still_probed_for() {
        let w = Want {
            best_known: 1500 * K,
            ..want(&[150 * K, 500 * K, 0], 1)
        };
        let need = 1500 * K * (100 + UP_HEADROOM_PERCENT) / 100;
        assert_eq!(wanted(&[w]), need + need * PROBE_MARGIN_PERCENT / 100);
    }

    /// (what, subscribers' estimates, need)
    type Case = (&'static str, &'static [Option<u64>], Option<u64>);

    #[test]
    fn what_a_publisher_must_send_of_a_track() {
        let known = [150 * K, 500 * K, 1500 * K, 0];
        let with_headroom = |sum: u64| Some(sum + sum * UP_HEADROOM_PERCENT / 100);
        #[rustfmt::skip]
        let cases: [Case; 9] = [
            ("nobody subscribes: no bound", &[], None),
            ("a subscriber nothing measures: no bound", &[Some(300 * K), None], None),
            ("all weak: q, and h kept encoding", &[Some(300 * K), Some(200 * K)], with_headroom(650 * K)),
            ("one takes h: all three", &[Some(300 * K), Some(600 * K)], with_headroom(2150 * K)),
            ("one takes f: no bound", &[Some(300 * K), Some(5000 * K)], None),
            ("below q: still q and h", &[Some(10 * K)], with_headroom(650 * K)),
            ("h's rate without its headroom: not h", &[Some(500 * K)], with_headroom(650 * K)),
            ("h with headroom: h and f", &[Some(575 * K)], with_headroom(2150 * K)),
            ("f with headroom: no bound", &[Some(1725 * K)], None),
        ];
        let any = |e: &Option<u64>| (*e, usize::MAX);
        for (what, estimates, expect) in cases {
            assert_eq!(
                publisher_need(&known, 3, estimates.iter().map(any)),
                expect,
                "{what}"
            );
        }
        // Settings that cap the layer bound it too, measured or not.
        assert_eq!(
            publisher_need(&known, 3, [(Some(5000 * K), 0)]),
            with_headroom(650 * K),
            "asked for q at most"
        );
        assert_eq!(
            publisher_need(&known, 3, [(None, 0), (Some(100 * K), 2)]),
            with_headroom(650 * K),
            "nothing measures it, but q at most"
        );
        assert_eq!(publisher_need(&known, 3, [(None, 2)]), None);
        // A layer never seen flowing: it must be let come to be known.
        for unseen in [[150 * K, 0, 1500 * K, 0], [150 * K, 500 * K, 0, 0]] {
            assert_eq!(publisher_need(&unseen, 3, [(Some(100 * K), 2)]), None);
        }
        // One layer: it is the top, never bounded.
        assert_eq!(
            publisher_need(&[800 * K, 0, 0, 0], 1, [(Some(100 * K), 2)]),
            None
        );
    }

    #[test]
    fn a_publishers_limit_goes_up_at_once_and_down_after_a_while() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        let mut l = PublisherLimit::default();
        assert_eq!(l.bitrate, PUBLISHER_MAX_BITRATE, "unbounded until measured");
        l.follow(Some(800 * K), at(0));
        assert_eq!(l.bitrate, PUBLISHER_MAX_BITRATE, "not lowered at once");
        l.follow(Some(900 * K), at(3));
        assert_eq!(l.bitrate, PUBLISHER_MAX_BITRATE);
        l.follow(Some(900 * K), at(5));
        assert_eq!(l.bitrate, 900 * K, "lowered after staying low");
        l.follow(Some(700 * K), at(6));
        assert_eq!(l.bitrate, 700 * K, "and follows down at once while low");
        l.follow(Some(1200 * K), at(7));
        assert_eq!(l.bitrate, 1200 * K, "up at once");
        l.follow(Some(10 * K), at(8));
        l.follow(Some(10 * K), at(13));
        assert_eq!(l.bitrate, PUBLISHER_MIN_BITRATE, "never below the least");
        l.follow(None, at(14));
        assert_eq!(l.bitrate, PUBLISHER_MAX_BITRATE, "unbounded again");
        l.follow(Some(9000 * K), at(15));
        assert_eq!(l.bitrate, PUBLISHER_MAX_BITRATE, "never above the most");
    }

    #[test]
    fn unmeasured_and_single_layers() {
        // A layer not flowing (rate 0) costs nothing; one layer is always its own cap.
        let mut caps = [9; 2];
        allocate(
            200 * K,
            &[want(&[150 * K, 0, 0], 2), want(&[800 * K], 0)],
            &mut caps,
        );
        assert_eq!(caps, [2, 0]);
        let mut caps = [9];
        allocate(0, &[want(&[], 0)], &mut caps);
        assert_eq!(caps, [0]);
    }
}
