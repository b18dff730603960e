//! Feedback traces with known shapes (a fixed-rate sender, a one-way delay that is flat,
//! growing or shrinking, and loss) played through the real wire format into the estimator;
//! the detector's verdict and the estimate's movement at the end of each phase are a table.

use std::time::{Duration, Instant};

use ringcast_cc::delay::BandwidthUsage::{self, Normal, Overusing, Underusing};
use ringcast_cc::delay::RateControlState::{self, Hold, Increase};
use ringcast_cc::twcc::{ArrivalRecorder, Feedback};
use ringcast_cc::{Config, Estimator};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    Up,
    Held,
    Down,
}
use Move::{Down, Held, Up};

struct Phase {
    name: &'static str,
    ms: u64,
    /// Growth of the one-way delay, in ms per ms of sending.
    slope: f64,
    /// Every `n`th packet lost (0: none).
    lose_every: u64,
    usage: BandwidthUsage,
    state: RateControlState,
    moved: Move,
}

#[rustfmt::skip]
const TABLE: &[Phase] = &[
    Phase { name: "flat delay", ms: 2000, slope: 0.0, lose_every: 0, usage: Normal, state: Increase, moved: Up },
    // Down to 0.85 × what arrives, which is 1/1.25 of what is sent.
    Phase { name: "queue builds", ms: 400, slope: 0.25, lose_every: 0, usage: Overusing, state: Hold, moved: Down },
    // The trendline lags the turn by a few groups, in which the controller still increases.
    Phase { name: "queue drains", ms: 400, slope: -0.25, lose_every: 0, usage: Underusing, state: Hold, moved: Up },
    Phase { name: "flat again", ms: 2000, slope: 0.0, lose_every: 0, usage: Normal, state: Increase, moved: Up },
    Phase { name: "5 % loss, flat", ms: 2000, slope: 0.0, lose_every: 20, usage: Normal, state: Increase, moved: Up },
    // The loss bound, not the delay-based controller, takes it down.
    Phase { name: "25 % loss, flat", ms: 2000, slope: 0.0, lose_every: 4, usage: Normal, state: Increase, moved: Down },
];

/// A packet of 1200 bytes every 10 ms (960 kbit/s, below the 1 Mbit/s start, so that an
/// overuse decrease to 0.85 × the acknowledged rate shows); feedback every 50 ms, 20 ms
/// after it was written.
#[test]
fn verdicts_and_moves_per_phase() {
    let t0 = Instant::now();
    let mut est = Estimator::new(Config::default());
    // No probing: the moves are the detector's and the loss bound's alone.
    est.set_desired_bitrate(0);
    let mut rec = ArrivalRecorder::new(1, 2, 4096);
    let mut buf = [0u8; 1200];
    let (mut at_ms, mut seq, mut queue_ms) = (0u64, 0u16, 0.0f64);
    let mut rows = Vec::new();
    for phase in TABLE {
        let before = est.target_bitrate();
        let end = at_ms + phase.ms;
        while at_ms < end {
            let now = t0 + Duration::from_millis(at_ms);
            for k in 0..(50 / 10) {
                let sent = now + Duration::from_millis(10 * k);
                est.on_packet_sent(seq, 1200, sent, None);
                queue_ms = (queue_ms + phase.slope * 10.0).max(0.0);
                let lost = phase.lose_every != 0 && u64::from(seq) % phase.lose_every == 0;
                if !lost {
                    let delay = Duration::from_secs_f64((20.0 + queue_ms) / 1000.0);
                    rec.on_packet(seq, sent + delay);
                }
                seq = seq.wrapping_add(1);
            }
            at_ms += 50;
            let feedback_at = t0 + Duration::from_millis(at_ms + 20);
            while let Some(n) = rec.poll_feedback(&mut buf).unwrap() {
                let fb = Feedback::parse(&buf[..n]).unwrap();
                est.on_feedback(&fb, feedback_at);
            }
        }
        let after = est.target_bitrate();
        let moved = match after.cmp(&before) {
            std::cmp::Ordering::Greater => Up,
            std::cmp::Ordering::Equal => Held,
            std::cmp::Ordering::Less => Down,
        };
        println!(
            "{:<16} {:?} {:?}: {before} → {after}, loss bound {:?}",
            phase.name,
            est.delay_usage(),
            moved,
            est.loss_bound()
        );
        rows.push((phase.name, est.delay_usage(), est.rate_state(), moved));
    }
    let want: Vec<_> = TABLE
        .iter()
        .map(|p| (p.name, p.usage, p.state, p.moved))
        .collect();
    assert_eq!(rows, want);
}
