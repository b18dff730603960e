//! The delay-based half of the estimate, after Google Congestion Control
//! (draft-ietf-rmcat-gcc-02 §5, and WebRTC's goog_cc): packets are grouped into 5 ms send
//! bursts, the growth of one-way delay between groups is fitted by a trendline, an overuse
//! detector with an adaptive threshold turns its slope into a [`BandwidthUsage`], and an AIMD
//! controller moves the rate: multiplicative increase far from the link's known capacity,
//! additive near it, and down to 0.85 × the acknowledged rate on overuse.
//!
//! Plain arithmetic on µs timestamps and fixed arrays: nothing here allocates.

/// Packets sent within this of a group's first belong to it (a pacer burst).
const BURST_US: i64 = 5_000;
/// A group whose arrival jumps this far is a new path or a stall: start over.
const ARRIVAL_RESET_US: i64 = 3_000_000;

const WINDOW: usize = 20;
const SMOOTHING: f64 = 0.9;
const THRESHOLD_GAIN: f64 = 4.0;
const MAX_DELTAS: f64 = 60.0;
const OVERUSE_TIME_MS: f64 = 10.0;
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
const MAX_ADAPT_OFFSET_MS: f64 = 15.0;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const INITIAL_THRESHOLD: f64 = 12.5;

const BETA: f64 = 0.85;

/// What the delay trend says about the bottleneck queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BandwidthUsage {
    /// Delay is flat: the queue is stable.
    Normal,
    /// Delay is falling: a queue is draining.
    Underusing,
    /// Delay is growing: we send faster than the link.
    Overusing,
}

/// The AIMD controller's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateControlState {
    Hold,
    Increase,
    Decrease,
}

/// The change between two consecutive send groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupDelta {
    pub send_delta_ms: f64,
    pub arrival_delta_ms: f64,
    /// The newer group's last arrival, µs on the receiver's clock.
    pub arrival_us: i64,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_send_us: i64,
    last_send_us: i64,
    first_arrival_us: i64,
    last_arrival_us: i64,
}

/// Groups received packets by send time (in send order) and yields inter-group deltas.
#[derive(Debug, Default)]
pub struct InterArrival {
    current: Option<Group>,
    prev: Option<Group>,
}

impl InterArrival {
    /// Feeds one received packet; returns the delta when it completes a group.
    pub fn on_packet(&mut self, send_us: i64, arrival_us: i64) -> Option<GroupDelta> {
        let Some(cur) = self.current.as_mut() else {
            self.current = Some(Group {
                first_send_us: send_us,
                last_send_us: send_us,
                first_arrival_us: arrival_us,
                last_arrival_us: arrival_us,
            });
            return None;
        };
        // Reordered in send time: it tells nothing about a group.
        if send_us < cur.first_send_us {
            return None;
        }
        if send_us - cur.first_send_us <= BURST_US || Self::in_burst(cur, send_us, arrival_us) {
            cur.last_send_us = cur.last_send_us.max(send_us);
            cur.last_arrival_us = cur.last_arrival_us.max(arrival_us);
            return None;
        }
        let done = *cur;
        let delta = self.prev.and_then(|prev| {
            let arrival = done.last_arrival_us - prev.last_arrival_us;
            (0..ARRIVAL_RESET_US)
                .contains(&arrival)
                .then(|| GroupDelta {
                    send_delta_ms: (done.last_send_us - prev.last_send_us) as f64 / 1000.0,
                    arrival_delta_ms: arrival as f64 / 1000.0,
                    arrival_us: done.last_arrival_us,
                })
        });
        self.prev = Some(done);
        self.current = Some(Group {
            first_send_us: send_us,
            last_send_us: send_us,
            first_arrival_us: arrival_us,
            last_arrival_us: arrival_us,
        });
        delta
    }

    /// Packets that arrive bunched up, sooner than they were sent apart, were queued together
    /// behind something else (a cross-traffic burst): they belong to the same group.
    fn in_burst(cur: &Group, send_us: i64, arrival_us: i64) -> bool {
        let arrival_delta = arrival_us - cur.last_arrival_us;
        let send_delta = send_us - cur.last_send_us;
        send_delta == 0
            || (arrival_delta - send_delta < 0
                && arrival_delta <= BURST_US
                && arrival_us - cur.first_arrival_us < 100_000)
    }
}

/// The trendline filter and overuse detector: least-squares slope of the smoothed accumulated
/// delay over the last 20 groups, compared with a threshold that adapts to the noise.
#[derive(Debug)]
pub struct Trendline {
    points: [(f64, f64); WINDOW],
    len: usize,
    next: usize,
    first_arrival_us: Option<i64>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    num_deltas: f64,
    trend: f64,
    prev_trend: f64,
    threshold: f64,
    last_threshold_update_ms: Option<f64>,
    /// -1: not over the threshold.
    time_over_using_ms: f64,
    overuse_count: u32,
    usage: BandwidthUsage,
}

impl Default for Trendline {
    fn default() -> Self {
        Self {
            points: [(0.0, 0.0); WINDOW],
            len: 0,
            next: 0,
            first_arrival_us: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            num_deltas: 0.0,
            trend: 0.0,
            prev_trend: 0.0,
            threshold: INITIAL_THRESHOLD,
            last_threshold_update_ms: None,
            time_over_using_ms: -1.0,
            overuse_count: 0,
            usage: BandwidthUsage::Normal,
        }
    }
}

impl Trendline {
    pub fn usage(&self) -> BandwidthUsage {
        self.usage
    }

    /// The current slope (ms of delay growth per ms).
    pub fn trend(&self) -> f64 {
        self.trend
    }

    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Feeds one group delta; returns the detector's verdict.
    pub fn update(&mut self, d: GroupDelta) -> BandwidthUsage {
        self.num_deltas = (self.num_deltas + 1.0).min(1000.0);
        self.accumulated_ms += d.arrival_delta_ms - d.send_delta_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        let first = *self.first_arrival_us.get_or_insert(d.arrival_us);
        let x = (d.arrival_us - first) as f64 / 1000.0;
        self.points[self.next] = (x, self.smoothed_ms);
        self.next = (self.next + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
        if self.len == WINDOW
            && let Some(slope) = self.slope()
        {
            self.trend = slope;
        }
        self.detect(d.send_delta_ms, x);
        self.usage
    }

    fn slope(&self) -> Option<f64> {
        let n = self.len as f64;
        let pts = &self.points[..self.len];
        let mean_x = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_y = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let (mut num, mut den) = (0.0, 0.0);
        for &(x, y) in pts {
            num += (x - mean_x) * (y - mean_y);
            den += (x - mean_x) * (x - mean_x);
        }
        (den != 0.0).then(|| num / den)
    }

    fn detect(&mut self, send_delta_ms: f64, now_ms: f64) {
        if self.num_deltas < 2.0 {
            self.usage = BandwidthUsage::Normal;
            return;
        }
        let modified = self.num_deltas.min(MAX_DELTAS) * self.trend * THRESHOLD_GAIN;
        if modified > self.threshold {
            if self.time_over_using_ms < 0.0 {
                // Assume we have been over for half the interval.
                self.time_over_using_ms = send_delta_ms / 2.0;
            } else {
                self.time_over_using_ms += send_delta_ms;
            }
            self.overuse_count += 1;
            // Sustained and still rising: a queue is building, not noise.
            if self.time_over_using_ms > OVERUSE_TIME_MS
                && self.overuse_count > 1
                && self.trend >= self.prev_trend
            {
                self.time_over_using_ms = 0.0;
                self.overuse_count = 0;
                self.usage = BandwidthUsage::Overusing;
            }
        } else if modified < -self.threshold {
            self.time_over_using_ms = -1.0;
            self.overuse_count = 0;
            self.usage = BandwidthUsage::Underusing;
        } else {
            self.time_over_using_ms = -1.0;
            self.overuse_count = 0;
            self.usage = BandwidthUsage::Normal;
        }
        self.prev_trend = self.trend;
        self.adapt_threshold(modified, now_ms);
    }

    /// The threshold follows |modified trend| slowly upward and faster downward, so that
    /// steady noise stops triggering and a competing TCP flow cannot starve us (GCC §5.4).
    fn adapt_threshold(&mut self, modified: f64, now_ms: f64) {
        let last = *self.last_threshold_update_ms.get_or_insert(now_ms);
        let m = modified.abs();
        if m > self.threshold + MAX_ADAPT_OFFSET_MS {
            // A spike (a route change): do not let it drag the threshold up.
            self.last_threshold_update_ms = Some(now_ms);
            return;
        }
        let k = if m < self.threshold { K_DOWN } else { K_UP };
        let dt = (now_ms - last).clamp(0.0, 100.0);
        self.threshold =
            (self.threshold + k * (m - self.threshold) * dt).clamp(THRESHOLD_MIN, THRESHOLD_MAX);
        self.last_threshold_update_ms = Some(now_ms);
    }
}

/// The acknowledged bitrate: bytes the receiver got over the last window of its clock, in
/// 10 ms buckets of a fixed array.
#[derive(Debug)]
pub struct AckedBitrate {
    bytes: [u64; BUCKETS],
    ids: [i64; BUCKETS],
    latest_us: Option<i64>,
    first_us: Option<i64>,
}

const BUCKET_US: i64 = 10_000;
const BUCKETS: usize = 50;
/// The window over which the rate is measured.
pub const ACKED_WINDOW_US: i64 = BUCKET_US * BUCKETS as i64;

impl Default for AckedBitrate {
    fn default() -> Self {
        Self {
            bytes: [0; BUCKETS],
            ids: [i64::MIN; BUCKETS],
            latest_us: None,
            first_us: None,
        }
    }
}

impl AckedBitrate {
    pub fn on_received(&mut self, arrival_us: i64, size: u32) {
        let id = arrival_us.div_euclid(BUCKET_US);
        let latest = self.latest_us.map_or(arrival_us, |l| l.max(arrival_us));
        if id <= latest.div_euclid(BUCKET_US) - BUCKETS as i64 {
            return;
        }
        self.latest_us = Some(latest);
        self.first_us.get_or_insert(arrival_us);
        let slot = id.rem_euclid(BUCKETS as i64) as usize;
        if self.ids[slot] != id {
            self.ids[slot] = id;
            self.bytes[slot] = 0;
        }
        self.bytes[slot] += u64::from(size);
    }

    /// Bits/s over the window ending at the latest arrival; `None` until 150 ms have arrived.
    pub fn bitrate(&self) -> Option<f64> {
        let latest = self.latest_us?;
        let first = self.first_us?;
        let newest = latest.div_euclid(BUCKET_US);
        let oldest = newest - BUCKETS as i64 + 1;
        let start_us = (oldest * BUCKET_US).max(first);
        let span_us = latest - start_us + BUCKET_US / 2;
        if latest - first < 150_000 {
            return None;
        }
        let bytes: u64 = (0..BUCKETS)
            .filter(|&i| self.ids[i] >= oldest && self.ids[i] <= newest)
            .map(|i| self.bytes[i])
            .sum();
        Some(bytes as f64 * 8.0 * 1e6 / span_us as f64)
    }
}

/// What the link is known to carry: the acknowledged rate at past decreases, averaged, with
/// its spread (goog_cc's link capacity estimator). Known capacity means additive increase.
#[derive(Debug, Default, Clone, Copy)]
struct LinkCapacity {
    estimate: Option<f64>,
    /// Variance normalised by the estimate.
    deviation: f64,
}

impl LinkCapacity {
    fn bounds(&self) -> Option<(f64, f64)> {
        self.estimate.map(|e| {
            let spread = 3.0 * (self.deviation * e).sqrt();
            (e - spread, e + spread)
        })
    }

    fn update(&mut self, sample: f64) {
        const ALPHA: f64 = 0.05;
        let e = match self.estimate {
            None => sample,
            Some(e) => (1.0 - ALPHA) * e + ALPHA * sample,
        };
        let norm = e.max(1.0);
        self.deviation =
            ((1.0 - ALPHA) * self.deviation + ALPHA * (e - sample).powi(2) / norm).clamp(0.4, 2.5);
        self.estimate = Some(e);
    }
}

/// The AIMD rate controller.
#[derive(Debug)]
pub struct RateControl {
    estimate: f64,
    state: RateControlState,
    last_change_us: Option<i64>,
    capacity: LinkCapacity,
    min: f64,
    max: f64,
}

impl RateControl {
    pub fn new(start: u64, min: u64, max: u64) -> Self {
        Self {
            estimate: start as f64,
            state: RateControlState::Hold,
            last_change_us: None,
            capacity: LinkCapacity::default(),
            min: min as f64,
            max: max as f64,
        }
    }

    pub fn estimate(&self) -> f64 {
        self.estimate
    }

    pub fn state(&self) -> RateControlState {
        self.state
    }

    /// Sets the estimate from outside (a probe's result).
    pub fn set_estimate(&mut self, bps: f64, now_us: i64) {
        self.estimate = bps.clamp(self.min, self.max);
        self.last_change_us = Some(now_us);
    }

    /// Moves the estimate by the detector's verdict, given the acknowledged rate and the round
    /// trip (which sets how fast additive increase may go).
    pub fn update(
        &mut self,
        usage: BandwidthUsage,
        acked: Option<f64>,
        rtt_ms: f64,
        now_us: i64,
    ) -> f64 {
        self.state = match (usage, self.state) {
            (BandwidthUsage::Overusing, _) => RateControlState::Decrease,
            (BandwidthUsage::Normal, RateControlState::Hold) => RateControlState::Increase,
            (BandwidthUsage::Normal, s) => s,
            (BandwidthUsage::Underusing, _) => RateControlState::Hold,
        };
        let last = *self.last_change_us.get_or_insert(now_us);
        let dt_s = ((now_us - last) as f64 / 1e6).clamp(0.0, 1.0);
        match self.state {
            RateControlState::Hold => self.last_change_us = Some(now_us),
            RateControlState::Increase => {
                if let (Some(a), Some((_, upper))) = (acked, self.capacity.bounds())
                    && a > upper
                {
                    // Faster than the link was known to be: it changed, search again.
                    self.capacity = LinkCapacity::default();
                }
                let increase = if self.capacity.estimate.is_some() {
                    self.additive_rate(rtt_ms) * dt_s
                } else {
                    (self.estimate * (1.08f64.powf(dt_s) - 1.0)).max(1000.0 * dt_s)
                };
                let mut next = self.estimate + increase;
                // Sending less than the estimate says nothing about more: stay near what
                // is acknowledged (probes find headroom instead).
                if let Some(a) = acked {
                    next = next.min((1.5 * a + 10_000.0).max(self.estimate));
                }
                self.estimate = next;
                self.last_change_us = Some(now_us);
            }
            RateControlState::Decrease => {
                let base = acked.unwrap_or(self.estimate);
                let mut next = BETA * base;
                if next > self.estimate
                    && let Some(c) = self.capacity.estimate
                {
                    next = BETA * c;
                }
                if next < self.estimate {
                    self.estimate = next;
                }
                if let Some(a) = acked {
                    if let Some((lower, _)) = self.capacity.bounds()
                        && a < lower
                    {
                        self.capacity = LinkCapacity::default();
                    }
                    self.capacity.update(a);
                }
                self.state = RateControlState::Hold;
                self.last_change_us = Some(now_us);
            }
        }
        self.estimate = self.estimate.clamp(self.min, self.max);
        self.estimate
    }

    /// About one packet per response time (a round trip plus 100 ms), with packets sized
    /// from a 30 fps frame at the current rate.
    fn additive_rate(&self, rtt_ms: f64) -> f64 {
        let bits_per_frame = self.estimate / 30.0;
        let packets = (bits_per_frame / (1200.0 * 8.0)).ceil().max(1.0);
        let packet_bits = bits_per_frame / packets;
        let response_s = (100.0 + rtt_ms) / 1000.0;
        (packet_bits / response_s).max(4000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups every 10 ms whose arrival spacing grows by `extra_ms` each: the detector's
    /// verdict after `n` groups.
    fn run(trend: &mut Trendline, at_ms: &mut f64, n: usize, extra_ms: f64) -> BandwidthUsage {
        let mut u = BandwidthUsage::Normal;
        for _ in 0..n {
            *at_ms += 10.0 + extra_ms;
            u = trend.update(GroupDelta {
                send_delta_ms: 10.0,
                arrival_delta_ms: 10.0 + extra_ms,
                arrival_us: (*at_ms * 1000.0) as i64,
            });
        }
        u
    }

    #[test]
    fn trendline_verdicts() {
        let mut t = Trendline::default();
        let mut at = 0.0;
        assert_eq!(run(&mut t, &mut at, 40, 0.0), BandwidthUsage::Normal);
        // The smoothing lags: a 2 ms-per-group growth shows within 20 groups.
        assert_eq!(run(&mut t, &mut at, 20, 2.0), BandwidthUsage::Overusing);
        assert_eq!(run(&mut t, &mut at, 20, -2.0), BandwidthUsage::Underusing);
        assert_eq!(run(&mut t, &mut at, 40, 0.0), BandwidthUsage::Normal);
    }

    #[test]
    fn groups_are_5ms_bursts() {
        let mut g = InterArrival::default();
        // Packets every 2 ms: groups of 3 (0, 2, 4 ms), deltas of 6 ms.
        let mut deltas = Vec::new();
        for i in 0..12 {
            if let Some(d) = g.on_packet(i * 2000, i * 2000 + 50_000) {
                deltas.push(d);
            }
        }
        assert_eq!(deltas.len(), 2);
        assert_eq!(deltas[0].send_delta_ms, 6.0);
        assert_eq!(deltas[0].arrival_delta_ms, 6.0);
    }

    #[test]
    fn aimd_decreases_to_085_of_acked_and_increases_multiplicatively() {
        let mut rc = RateControl::new(1_000_000, 30_000, 10_000_000);
        let acked = Some(1_000_000.0);
        rc.update(BandwidthUsage::Normal, acked, 50.0, 0);
        let up = rc.update(BandwidthUsage::Normal, acked, 50.0, 1_000_000);
        assert!((up - 1_080_000.0).abs() < 1000.0, "{up}");
        let down = rc.update(BandwidthUsage::Overusing, Some(800_000.0), 50.0, 1_100_000);
        assert_eq!(down, 0.85 * 800_000.0);
        assert_eq!(rc.state(), RateControlState::Hold);
        // Near a known capacity: additive, a few kbit/s per second.
        rc.update(BandwidthUsage::Normal, Some(680_000.0), 50.0, 1_200_000);
        let add = rc.update(BandwidthUsage::Normal, Some(680_000.0), 50.0, 2_200_000);
        assert!(add > down && add < down + 60_000.0, "{add}");
    }

    #[test]
    fn acked_bitrate_over_the_window() {
        let mut a = AckedBitrate::default();
        assert_eq!(a.bitrate(), None);
        // 1250 bytes every 10 ms = 1 Mbit/s, for a second.
        for i in 0..100 {
            a.on_received(i * 10_000, 1250);
        }
        let r = a.bitrate().unwrap();
        assert!((r - 1_000_000.0).abs() < 30_000.0, "{r}");
    }
}
