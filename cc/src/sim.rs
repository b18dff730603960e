//! A sans-IO link simulator for scenario tests (the `test-support` feature): a sender paced at
//! min(estimate, application rate) plus the probes the estimator asks for, one bottleneck
//! (capacity changeable over time, a drop-tail FIFO with a byte limit, random loss from a
//! seeded xorshift, propagation delay; optionally a token bucket, as `tc tbf` and traffic
//! policers shape, that lets a burst through at once), a receiver whose [`ArrivalRecorder`] sends feedback at
//! a fixed interval back over the same delay, and the [`Estimator`] under test.
//!
//! Time is a fake clock stepped by 1 ms; link departures are exact within a step.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::delay::{BandwidthUsage, RateControlState};
use crate::probe::ProbeCluster;
use crate::twcc::{ArrivalRecorder, Feedback};
use crate::{Config, Estimator};

const STEP: Duration = Duration::from_millis(1);
const PACKET: u32 = 1200;
const FEEDBACK_MTU: usize = 1200;

/// The link and the traffic.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    pub capacity_bps: u64,
    pub queue_bytes: u64,
    /// A token bucket of this many bytes (refilled at `capacity_bps`) instead of a link that
    /// serialises every packet at its capacity: a full bucket lets that much through at once.
    /// 0 for none.
    pub burst_bytes: u64,
    /// One way, each direction.
    pub delay: Duration,
    /// Probability that a packet leaving the bottleneck is lost.
    pub loss: f64,
    pub seed: u64,
    /// What the application would send with no limit.
    pub app_bps: u64,
    /// Where the application sends layers (as simulcast does) rather than any rate: the
    /// highest of these within the estimate (the lowest if none is), each capped by
    /// `app_bps`. Empty: it sends at the estimate.
    pub layers_bps: &'static [u64],
    pub feedback_interval: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            capacity_bps: 3_000_000,
            queue_bytes: 60_000,
            burst_bytes: 0,
            delay: Duration::from_millis(25),
            loss: 0.0,
            seed: 0x9e37_79b9_7f4a_7c15,
            app_bps: 4_000_000,
            layers_bps: &[],
            feedback_interval: Duration::from_millis(75),
        }
    }
}

/// One sample of the run, every 100 ms.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Duration,
    pub target: u64,
    pub delay_based: u64,
    pub loss_bound: Option<u64>,
    pub acked: Option<u64>,
    pub capacity: u64,
    pub queue_delay: Duration,
    pub usage: BandwidthUsage,
    pub state: RateControlState,
}

#[derive(Debug)]
struct Queued {
    seq: u16,
    size: u32,
    remaining_bits: f64,
}

#[derive(Debug)]
struct Probing {
    cluster: ProbeCluster,
    packets: u32,
    bytes: u64,
    budget_bits: f64,
}

/// The simulation.
#[derive(Debug)]
pub struct Sim {
    cfg: LinkConfig,
    start: Instant,
    now: Instant,
    estimator: Estimator,
    recorder: ArrivalRecorder,
    queue: VecDeque<Queued>,
    queued_bytes: u64,
    propagating: VecDeque<(Instant, u16)>,
    feedback: VecDeque<(Instant, Vec<u8>)>,
    rng: u64,
    seq: u16,
    budget_bits: f64,
    probing: Option<Probing>,
    /// The token bucket's fill, bits.
    tokens: f64,
    /// Scratch: what left the bottleneck this step (seconds into it, seq, size).
    departed: Vec<(f64, u16, u32)>,
    next_feedback: Instant,
    next_sample: Instant,
    trace: Vec<Sample>,
    pub sent: u64,
    pub dropped: u64,
    pub lost: u64,
    pub probes: u64,
}

impl Sim {
    pub fn new(cfg: LinkConfig, config: Config) -> Self {
        let start = Instant::now();
        let mut estimator = Estimator::new(config);
        estimator.set_desired_bitrate(cfg.app_bps);
        Self {
            cfg,
            start,
            now: start,
            estimator,
            recorder: ArrivalRecorder::new(1, 2, 8192),
            queue: VecDeque::new(),
            queued_bytes: 0,
            propagating: VecDeque::new(),
            feedback: VecDeque::new(),
            rng: cfg.seed | 1,
            seq: 0,
            budget_bits: 0.0,
            probing: None,
            tokens: cfg.burst_bytes as f64 * 8.0,
            departed: Vec::new(),
            next_feedback: start + cfg.feedback_interval,
            next_sample: start,
            trace: Vec::new(),
            sent: 0,
            dropped: 0,
            lost: 0,
            probes: 0,
        }
    }

    pub fn estimator(&self) -> &Estimator {
        &self.estimator
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn trace(&self) -> &[Sample] {
        &self.trace
    }

    pub fn set_capacity(&mut self, bps: u64) {
        self.cfg.capacity_bps = bps;
    }

    pub fn set_loss(&mut self, loss: f64) {
        self.cfg.loss = loss;
    }

    /// Runs until `until` after the start, stopping early when `stop` holds for the estimator
    /// (checked every step); returns whether it stopped early.
    pub fn run_until(&mut self, until: Duration, mut stop: impl FnMut(&Estimator) -> bool) -> bool {
        while self.elapsed() < until {
            self.step();
            if stop(&self.estimator) {
                return true;
            }
        }
        false
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.elapsed() + d;
        self.run_until(until, |_| false);
    }

    fn random(&mut self) -> f64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn send(&mut self, size: u32, probe: Option<&ProbeCluster>) {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.sent += 1;
        self.estimator
            .on_packet_sent(seq, size as usize, self.now, probe.map(|p| p.id));
        if self.queued_bytes + u64::from(size) > self.cfg.queue_bytes {
            self.dropped += 1;
            return;
        }
        self.queued_bytes += u64::from(size);
        self.queue.push_back(Queued {
            seq,
            size,
            remaining_bits: f64::from(size) * 8.0,
        });
    }

    fn step(&mut self) {
        let now = self.now;
        let dt = STEP.as_secs_f64();
        // Sender: a probe cluster at its own rate, else media at min(estimate, app rate).
        if self.probing.is_none()
            && let Some(cluster) = self.estimator.poll_probe()
        {
            self.probes += 1;
            self.probing = Some(Probing {
                cluster,
                packets: 0,
                bytes: 0,
                budget_bits: 0.0,
            });
        }
        if let Some(mut p) = self.probing.take() {
            p.budget_bits += p.cluster.bitrate as f64 * dt;
            while p.budget_bits >= f64::from(PACKET) * 8.0 {
                p.budget_bits -= f64::from(PACKET) * 8.0;
                self.send(PACKET, Some(&p.cluster));
                p.packets += 1;
                p.bytes += u64::from(PACKET);
            }
            let done =
                p.packets >= p.cluster.min_packets && p.bytes >= u64::from(p.cluster.min_bytes);
            if !done {
                self.probing = Some(p);
            }
        } else {
            let target = self.estimator.target_bitrate();
            let layers = self.cfg.layers_bps;
            let rate = layers
                .iter()
                .copied()
                .filter(|&l| l <= target)
                .max()
                .or_else(|| layers.iter().copied().min())
                .unwrap_or(target)
                .min(self.cfg.app_bps) as f64;
            self.budget_bits = (self.budget_bits + rate * dt).min(4.0 * f64::from(PACKET) * 8.0);
            while self.budget_bits >= f64::from(PACKET) * 8.0 {
                self.budget_bits -= f64::from(PACKET) * 8.0;
                self.send(PACKET, None);
            }
        }
        // The bottleneck serves its capacity over [now, now + STEP).
        let cap = self.cfg.capacity_bps.max(1) as f64;
        let mut departed = std::mem::take(&mut self.departed);
        departed.clear();
        if self.cfg.burst_bytes == 0 {
            let mut budget = cap * dt;
            let mut at = 0.0;
            while let Some(head) = self.queue.front_mut() {
                if head.remaining_bits > budget {
                    head.remaining_bits -= budget;
                    break;
                }
                budget -= head.remaining_bits;
                at += head.remaining_bits / cap;
                departed.push((at, head.seq, head.size));
                self.queue.pop_front();
            }
        } else {
            // A packet leaves once the bucket holds its size; the bucket refills at capacity.
            let burst = self.cfg.burst_bytes as f64 * 8.0;
            let mut t = 0.0;
            loop {
                let Some(head) = self.queue.front() else {
                    self.tokens = (self.tokens + (dt - t) * cap).min(burst);
                    break;
                };
                let need = f64::from(head.size) * 8.0;
                if self.tokens < need {
                    let wait = (need - self.tokens) / cap;
                    if t + wait > dt {
                        self.tokens += (dt - t) * cap;
                        break;
                    }
                    t += wait;
                    self.tokens = need;
                }
                self.tokens -= need;
                departed.push((t, head.seq, head.size));
                self.queue.pop_front();
            }
        }
        for &(at, seq, size) in &departed {
            self.queued_bytes -= u64::from(size);
            if self.random() < self.cfg.loss {
                self.lost += 1;
                continue;
            }
            let left = now + Duration::from_secs_f64(at);
            self.propagating.push_back((left + self.cfg.delay, seq));
        }
        self.departed = departed;
        let end = now + STEP;
        while let Some(&(at, seq)) = self.propagating.front() {
            if at > end {
                break;
            }
            self.propagating.pop_front();
            self.recorder.on_packet(seq, at);
        }
        // Receiver: feedback every interval, back over the same delay.
        if now >= self.next_feedback {
            self.next_feedback += self.cfg.feedback_interval;
            let mut buf = [0u8; FEEDBACK_MTU];
            while let Ok(Some(n)) = self.recorder.poll_feedback(&mut buf) {
                self.feedback
                    .push_back((now + self.cfg.delay, buf[..n].to_vec()));
            }
        }
        while let Some((at, _)) = self.feedback.front() {
            if *at > end {
                break;
            }
            if let Some((at, bytes)) = self.feedback.pop_front()
                && let Ok(fb) = Feedback::parse(&bytes)
            {
                self.estimator.on_feedback(&fb, at);
            }
        }
        if self.estimator.poll_timeout().is_some_and(|t| t <= end) {
            self.estimator.handle_timeout(end);
        }
        if now >= self.next_sample {
            self.next_sample += Duration::from_millis(100);
            let e = &self.estimator;
            self.trace.push(Sample {
                at: self.elapsed(),
                target: e.target_bitrate(),
                delay_based: e.delay_based_bitrate(),
                loss_bound: e.loss_bound(),
                acked: e.acked_bitrate(),
                capacity: self.cfg.capacity_bps,
                queue_delay: Duration::from_secs_f64(self.queued_bytes as f64 * 8.0 / cap),
                usage: e.delay_usage(),
                state: e.rate_state(),
            });
        }
        self.now = end;
    }
}
