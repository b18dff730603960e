//! The loss-based bound, after the classic send-side rule of Google Congestion Control
//! (draft-ietf-rmcat-gcc-02 §6): over an interval of reports, under 2 % loss the bound may
//! rise, over 10 % it falls by (1 − 0.5 · loss), in between it holds.
//!
//! Unlike the draft's rate it is a ceiling that exists only once heavy loss has set it: random
//! loss on a wide link (5 %, say) neither lowers the estimate nor stops the delay-based
//! controller from raising it. The bound lifts again at 8 %/s under 2 % loss and is dropped once
//! above the delay-based estimate; a delivered probe raises it at once.

/// An interval is judged once it holds this many reports, so that random loss of a few
/// per cent rarely looks like 10 % by chance (at 5 %, 200 reports put 10 % three standard
/// deviations away)...
const FULL_INTERVAL_PACKETS: u32 = 200;
/// ...or after this long (sender's clock), with at least `MIN_PACKETS`: a slow link is judged too.
const MAX_INTERVAL_US: i64 = 1_000_000;
const MIN_PACKETS: u32 = 20;
const LOW_LOSS: f64 = 0.02;
/// Over this, loss is taken for congestion.
pub const HIGH_LOSS: f64 = 0.10;
/// Between decreases, plus a round trip: wait to see the last one's effect.
const DECREASE_INTERVAL_US: i64 = 300_000;

/// The loss-based bound of one transport.
#[derive(Debug, Default)]
pub struct LossBound {
    min: f64,
    bound: Option<f64>,
    lost: u32,
    total: u32,
    interval_start_us: Option<i64>,
    last_decrease_us: Option<i64>,
    last_increase_us: Option<i64>,
    last_fraction: f64,
}

impl LossBound {
    /// A bound that never goes below `min` bits/s.
    pub fn new(min: f64) -> Self {
        Self {
            min,
            ..Self::default()
        }
    }

    /// The ceiling, if heavy loss has set one.
    pub fn bound(&self) -> Option<f64> {
        self.bound
    }

    /// The loss fraction of the last judged interval.
    pub fn fraction(&self) -> f64 {
        self.last_fraction
    }

    /// Feeds one feedback's counts. `current` is the estimate in force (the starting point of
    /// a first decrease), `delay_based` the delay-based estimate.
    pub fn on_reports(
        &mut self,
        lost: u32,
        received: u32,
        now_us: i64,
        rtt_us: i64,
        current: f64,
        delay_based: f64,
    ) {
        self.lost += lost;
        self.total += lost + received;
        let start = *self.interval_start_us.get_or_insert(now_us);
        let full = self.total >= FULL_INTERVAL_PACKETS;
        let long = self.total >= MIN_PACKETS && now_us - start >= MAX_INTERVAL_US;
        if !full && !long {
            return;
        }
        let fraction = f64::from(self.lost) / f64::from(self.total);
        self.last_fraction = fraction;
        self.lost = 0;
        self.total = 0;
        self.interval_start_us = Some(now_us);
        if fraction > HIGH_LOSS {
            let due = self
                .last_decrease_us
                .is_none_or(|t| now_us - t >= DECREASE_INTERVAL_US + rtt_us);
            if due {
                let base = self.bound.unwrap_or(current).min(current);
                self.bound = Some((base * (1.0 - 0.5 * fraction)).max(self.min));
                self.last_decrease_us = Some(now_us);
            }
        } else if fraction < LOW_LOSS
            && let Some(b) = self.bound
        {
            let last = self.last_increase_us.unwrap_or(now_us);
            let dt_s = ((now_us - last) as f64 / 1e6).clamp(0.0, 1.0);
            let raised = b * 1.08f64.powf(dt_s) + 1000.0;
            self.bound = (raised < delay_based).then_some(raised);
        }
        self.last_increase_us = Some(now_us);
    }

    /// A probe delivered `bps`: the link carries at least that.
    pub fn on_probe(&mut self, bps: f64) {
        if let Some(b) = self.bound.as_mut() {
            *b = b.max(bps);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One full interval of 200 reports with `percent` lost.
    fn judge(loss: &mut LossBound, percent: u32, at_us: i64) -> Option<f64> {
        loss.on_reports(2 * percent, 200 - 2 * percent, at_us, 50_000, 1e6, 1e6);
        loss.bound()
    }

    #[test]
    fn the_three_regions() {
        let mut l = LossBound::new(30_000.0);
        judge(&mut l, 0, 0);
        // Too few reports to judge, however bad.
        l.on_reports(10, 9, 100_000, 50_000, 1e6, 1e6);
        assert_eq!(l.bound(), None);
        // 5 %: held, and there is no bound to hold.
        assert_eq!(judge(&mut l, 5, 300_000), None);
        // 20 %: down by 10 %.
        assert_eq!(judge(&mut l, 20, 600_000), Some(900_000.0));
        // Again too soon after the last decrease (300 ms + rtt): held.
        assert_eq!(judge(&mut l, 20, 800_000), Some(900_000.0));
        assert_eq!(judge(&mut l, 5, 1_200_000), Some(900_000.0));
        // Low loss: rises, and is dropped once above the delay-based estimate.
        let b = judge(&mut l, 0, 2_200_000).unwrap();
        assert!(b > 900_000.0 * 1.07 && b < 1e6, "{b}");
        assert_eq!(judge(&mut l, 0, 3_200_000), None);
    }
}
