//! The router's forwarding decisions, as pure functions of plain values (no IO, no clock, no
//! state of their own), table-tested: which packet of a track goes to which subscription
//! ([`decide`]), and which simulcast layer a subscription aims at ([`initial_layer`],
//! [`next_layer`]) given how each layer flows and the highest layer it may be sent. The caller
//! carries out what they return (`Track::fan_out`, `MediaRouter::select_layers`).

/// Where a subscription stands in its track: the layer it is sent, the one it aims at, and
/// whether its keyframe gate is shut. `layer` and `target` differ while a switch waits for a
/// keyframe of `target`; `layer` keeps flowing meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding {
    pub layer: usize,
    pub target: usize,
    /// Nothing is sent until a keyframe of `target`: the subscription is new, resumes after a
    /// mute, or the keyframe that opened it could not be sent.
    pub waiting_keyframe: bool,
}

/// A packet of a track, as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    pub layer: usize,
    /// It starts a keyframe.
    pub keyframe: bool,
    /// An upstream repair (unwrapped from RTX): late, behind packets already forwarded.
    pub repair: bool,
}

/// What one subscription does with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not for it: the track is muted, or the packet is of a layer it is neither sent nor
    /// opening.
    Skip,
    /// Its gate is shut and this is not the keyframe that opens it (counted).
    Gate,
    /// It is switching to the packet's layer, and this is not the keyframe to switch on: the
    /// layer it is sent flows meanwhile.
    AwaitSwitch,
    /// The next packet of its stream.
    Forward,
    /// This keyframe starts its stream on `layer`: its gate opens (`switch` false), or it moves
    /// there from the layer it was sent (`switch` true). Its timeline rebases first.
    Open { layer: usize, switch: bool },
}

/// What subscription `s` of a track (`muted` or not) does with packet `p`.
///
/// Opening — the first packet after subscribing or unmuting, or the switch to another layer —
/// needs a keyframe of the wanted layer, and not a late repair of one: the stream would start
/// behind packets already dropped.
pub fn decide(muted: bool, s: Forwarding, p: Incoming) -> Decision {
    if muted || (s.layer != p.layer && s.target != p.layer) {
        return Decision::Skip;
    }
    let opening = s.target == p.layer && (s.waiting_keyframe || s.layer != s.target);
    if opening {
        return match (p.keyframe && !p.repair, s.waiting_keyframe) {
            (false, true) => Decision::Gate,
            (false, false) => Decision::AwaitSwitch,
            // Opening without waiting: `layer` differs from the target, so this is a switch.
            (true, waiting) => Decision::Open {
                layer: p.layer,
                switch: !waiting,
            },
        };
    }
    if s.layer != p.layer || s.waiting_keyframe {
        return Decision::Skip;
    }
    Decision::Forward
}

/// How a simulcast layer flows now, as the layer selector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// No packets lately (the publisher paused it), or none yet.
    Stopped,
    /// Packets, but not for long enough to move up to.
    Started,
    /// Packets without a pause for long enough to move up to (no flapping).
    Steady,
}

/// The highest layer when nothing limits a subscription: any layer the publisher sends.
pub const ANY_LAYER: usize = usize::MAX;

/// The layer a new subscription starts on, among the layers up to `max_layer` (`flows`, lowest
/// quality first): the best one flowing steadily, else the best one flowing at all, else the
/// highest (nothing known yet).
pub fn initial_layer<I>(flows: I, max_layer: usize) -> usize
where
    I: IntoIterator<Item = Flow>,
    I::IntoIter: DoubleEndedIterator + ExactSizeIterator + Clone,
{
    let allowed = flows.into_iter().take(max_layer.saturating_add(1));
    let top = allowed.len().saturating_sub(1);
    let steady = allowed.clone().rposition(|f| f == Flow::Steady);
    let flowing = allowed.clone().rposition(|f| f != Flow::Stopped);
    steady.or(flowing).unwrap_or(top)
}

/// The layer a subscription aiming at `current` should aim at now, among the layers up to
/// `max_layer` (`flows`, lowest quality first): up only to a better layer that flows steadily;
/// away only when `current` stopped or is above `max_layer`, then to the best one flowing
/// (steadily if one does). Where nothing flows, it stays (or comes down to `max_layer`).
pub fn next_layer<I>(flows: I, current: usize, max_layer: usize) -> usize
where
    I: IntoIterator<Item = Flow>,
    I::IntoIter: DoubleEndedIterator + ExactSizeIterator + Clone,
{
    let allowed = flows.into_iter().take(max_layer.saturating_add(1));
    let steady = allowed.clone().rposition(|f| f == Flow::Steady);
    if allowed
        .clone()
        .nth(current)
        .is_some_and(|f| f != Flow::Stopped)
    {
        return steady.filter(|&s| s > current).unwrap_or(current);
    }
    steady
        .or_else(|| allowed.clone().rposition(|f| f != Flow::Stopped))
        .unwrap_or(current.min(max_layer))
}

#[cfg(test)]
mod tests {
    use super::Decision::{AwaitSwitch, Forward, Gate, Open, Skip};
    use super::Flow::{Started, Steady, Stopped};
    use super::*;

    fn on(layer: usize, target: usize, waiting_keyframe: bool) -> Forwarding {
        Forwarding {
            layer,
            target,
            waiting_keyframe,
        }
    }

    const DELTA: bool = false;
    const KEY: bool = true;
    const LIVE: bool = false;
    const REPAIR: bool = true;

    fn packet(layer: usize, keyframe: bool, repair: bool) -> Incoming {
        Incoming {
            layer,
            keyframe,
            repair,
        }
    }

    #[test]
    fn which_packet_goes_to_which_subscription() {
        #[rustfmt::skip]
        let cases = [
            // (what, muted, subscription, packet, decision)
            ("running: the next packet", false, on(1, 1, false), packet(1, DELTA, LIVE), Forward),
            ("running: a keyframe is just the next packet", false, on(1, 1, false), packet(1, KEY, LIVE), Forward),
            ("running: a repair fills its hole", false, on(1, 1, false), packet(1, DELTA, REPAIR), Forward),
            ("running: another layer", false, on(1, 1, false), packet(0, KEY, LIVE), Skip),
            ("muted: nothing", true, on(1, 1, false), packet(1, DELTA, LIVE), Skip),
            ("muted: not even a keyframe opens", true, on(1, 1, true), packet(1, KEY, LIVE), Skip),
            ("new: a delta frame is gated", false, on(1, 1, true), packet(1, DELTA, LIVE), Gate),
            ("new: a keyframe opens", false, on(1, 1, true), packet(1, KEY, LIVE), Open { layer: 1, switch: false }),
            ("new: a late repair of a keyframe does not open", false, on(1, 1, true), packet(1, KEY, REPAIR), Gate),
            ("new: another layer's keyframe", false, on(1, 1, true), packet(0, KEY, LIVE), Skip),
            ("new, retargeted: the first layer is not sent", false, on(2, 1, true), packet(2, KEY, LIVE), Skip),
            ("new, retargeted: the target's keyframe opens, no switch", false, on(2, 1, true), packet(1, KEY, LIVE), Open { layer: 1, switch: false }),
            ("switching up: the current layer flows meanwhile", false, on(0, 2, false), packet(0, DELTA, LIVE), Forward),
            ("switching up: the target's delta frame waits", false, on(0, 2, false), packet(2, DELTA, LIVE), AwaitSwitch),
            ("switching up: the target's keyframe switches", false, on(0, 2, false), packet(2, KEY, LIVE), Open { layer: 2, switch: true }),
            ("switching up: not on a repaired keyframe", false, on(0, 2, false), packet(2, KEY, REPAIR), AwaitSwitch),
            ("switching up: a third layer", false, on(0, 2, false), packet(1, KEY, LIVE), Skip),
            ("switching down: on the lower layer's keyframe", false, on(2, 0, false), packet(0, KEY, LIVE), Open { layer: 0, switch: true }),
        ];
        for (what, muted, s, p, want) in cases {
            assert_eq!(decide(muted, s, p), want, "{what}");
        }
    }

    #[test]
    fn where_a_new_subscription_starts() {
        #[rustfmt::skip]
        let cases: [(&str, &[Flow], usize, usize); 8] = [
            // (what, flows, max layer, layer)
            ("no layers", &[], ANY_LAYER, 0),
            ("nothing known yet: the top", &[Stopped, Stopped, Stopped], ANY_LAYER, 2),
            ("the best steady one", &[Steady, Steady, Stopped], ANY_LAYER, 1),
            ("steady before merely started", &[Steady, Started, Stopped], ANY_LAYER, 0),
            ("nothing steady: the best flowing", &[Stopped, Started, Stopped], ANY_LAYER, 1),
            ("capped: the best steady below the cap", &[Steady, Steady, Steady], 1, 1),
            ("capped, nothing known: the cap", &[Stopped, Stopped, Stopped], 1, 1),
            ("capped: a steady layer above the cap is not taken", &[Started, Started, Steady], 1, 1),
        ];
        for (what, flows, max, want) in cases {
            assert_eq!(initial_layer(flows.iter().copied(), max), want, "{what}");
        }
    }

    #[test]
    fn which_layer_a_subscription_moves_to() {
        #[rustfmt::skip]
        let cases: [(&str, &[Flow], usize, usize, usize); 15] = [
            // (what, flows, current, max layer, layer)
            ("the top flows: stay", &[Steady, Steady, Steady], 2, ANY_LAYER, 2),
            ("a better layer is steady: up", &[Steady, Steady, Steady], 1, ANY_LAYER, 2),
            ("a better layer only started: stay", &[Steady, Steady, Started], 1, ANY_LAYER, 1),
            ("up to the best steady, past a started one", &[Steady, Started, Steady], 0, ANY_LAYER, 2),
            ("flowing, not yet steady: stay, not down", &[Steady, Started, Started], 2, ANY_LAYER, 2),
            ("stopped: down to the best steady", &[Steady, Steady, Stopped], 2, ANY_LAYER, 1),
            ("stopped, nothing steady: the best flowing", &[Started, Started, Stopped], 2, ANY_LAYER, 1),
            ("stopped: the best steady, even above", &[Steady, Stopped, Steady], 1, ANY_LAYER, 2),
            ("nothing flows: stay", &[Stopped, Stopped, Stopped], 2, ANY_LAYER, 2),
            ("one layer", &[Steady], 0, ANY_LAYER, 0),
            ("above the cap: down to it", &[Steady, Steady, Steady], 2, 1, 1),
            ("above the cap: the best steady below it", &[Steady, Started, Steady], 2, 1, 0),
            ("up, but not past the cap", &[Steady, Steady, Steady], 0, 1, 1),
            ("above the cap, nothing flows: the cap", &[Stopped, Stopped, Stopped], 2, 1, 1),
            ("capped to the lowest", &[Steady, Steady, Steady], 1, 0, 0),
        ];
        for (what, flows, current, max, want) in cases {
            assert_eq!(
                next_layer(flows.iter().copied(), current, max),
                want,
                "{what}"
            );
        }
    }
}
