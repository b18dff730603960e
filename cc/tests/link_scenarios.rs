//! The estimator on a simulated bottleneck: the behaviour the media crate's layer switching
//! relies on. Each test prints its timings (`cargo test -p ringcast-cc --test link_scenarios --
//! --nocapture`).

use std::time::Duration;

use ringcast_cc::Config;
use ringcast_cc::sim::{LinkConfig, Sample, Sim};

const S: Duration = Duration::from_secs(1);

fn print(trace: &[Sample], from: Duration, to: Duration) {
    for s in trace.iter().filter(|s| s.at >= from && s.at <= to) {
        println!(
            "{:6.1}s target {:>8} delay {:>8} loss {:>8?} acked {:>8?} link {:>8} queue {:>5}ms {:?}/{:?}",
            s.at.as_secs_f64(),
            s.target,
            s.delay_based,
            s.loss_bound,
            s.acked,
            s.capacity,
            s.queue_delay.as_millis(),
            s.usage,
            s.state
        );
    }
}

#[test]
fn a_drop_from_3_mbit_to_300_kbit_is_followed_down_and_back_up() {
    let mut sim = Sim::new(LinkConfig::default(), Config::default());
    sim.run_for(15 * S);
    let before = sim.estimator().target_bitrate();
    assert!(before >= 2_500_000, "converged at {before}");

    let drop_at = sim.elapsed();
    sim.set_capacity(300_000);
    sim.run_until(drop_at + 5 * S, |e| e.target_bitrate() < 300_000);
    let down = sim.elapsed() - drop_at;
    println!(
        "below 300 kbit/s {:.2} s after the drop",
        down.as_secs_f64()
    );
    assert!(down <= Duration::from_millis(1500), "took {down:?}");

    sim.run_until(drop_at + 10 * S, |_| false);
    // Settled under the link: not above it for long.
    let low: Vec<_> = sim
        .trace()
        .iter()
        .filter(|s| s.at >= drop_at + 3 * S)
        .map(|s| s.target)
        .collect();
    let over = low.iter().filter(|&&t| t > 360_000).count();
    assert!(
        over * 10 <= low.len(),
        "{over} of {} samples above 1.2 × the link",
        low.len()
    );

    let up_at = sim.elapsed();
    sim.set_capacity(3_000_000);
    sim.run_until(up_at + 10 * S, |e| e.target_bitrate() >= 2_500_000);
    let up = sim.elapsed() - up_at;
    println!("at 2.5 Mbit/s {:.2} s after the recovery", up.as_secs_f64());
    print(sim.trace(), drop_at - S, sim.elapsed());
    assert!(up <= 8 * S, "took {up:?}");
    println!("probes {} queue drops {}", sim.probes, sim.dropped);
}

#[test]
fn five_percent_random_loss_on_a_wide_link_does_not_move_it_down() {
    let link = LinkConfig {
        loss: 0.05,
        ..LinkConfig::default()
    };
    let mut sim = Sim::new(link, Config::default());
    sim.run_for(30 * S);
    let settled: Vec<_> = sim.trace().iter().filter(|s| s.at >= 5 * S).collect();
    let min = settled.iter().map(|s| s.target).min().unwrap_or(0);
    let mean = settled.iter().map(|s| s.target).sum::<u64>() / settled.len() as u64;
    let under = settled.iter().filter(|s| s.target < 2_500_000).count();
    println!(
        "5 % loss on 3 Mbit/s: from 5 s on, target min {min} mean {mean}, {under} of {} samples \
         under 2.5 Mbit/s; last loss fraction {:.3}",
        settled.len(),
        sim.estimator().loss_fraction()
    );
    assert!(sim.lost > 0);
    // Loss alone never set a ceiling...
    assert!(sim.trace().iter().all(|s| s.loss_bound.is_none()));
    // ...and the delay-based decreases (to 0.85 × what was acknowledged, loss counted back)
    // dip only briefly below 2.5 Mbit/s.
    assert!(min >= 2_300_000, "fell to {min}");
    assert!(
        under * 10 <= settled.len(),
        "{under} samples under 2.5 Mbit/s"
    );
    assert!(mean >= 2_600_000, "mean {mean}");
}

#[test]
fn a_start_at_1_mbit_on_a_3_mbit_link_ramps_up() {
    let mut sim = Sim::new(LinkConfig::default(), Config::default());
    let reached = sim.run_until(10 * S, |e| e.target_bitrate() >= 2_500_000);
    println!(
        "from 1 to 2.5 Mbit/s in {:.2} s",
        sim.elapsed().as_secs_f64()
    );
    assert!(reached);
    assert!(sim.elapsed() <= 3 * S);
}

#[test]
fn a_1_mbit_link_is_not_estimated_far_above_for_long() {
    let link = LinkConfig {
        capacity_bps: 1_000_000,
        ..LinkConfig::default()
    };
    let config = Config {
        start_bitrate: 300_000,
        ..Config::default()
    };
    let mut sim = Sim::new(link, config);
    sim.run_for(60 * S);
    let settled: Vec<_> = sim.trace().iter().filter(|s| s.at >= 5 * S).collect();
    let above = settled.iter().filter(|s| s.target > 1_200_000).count();
    let max = settled.iter().map(|s| s.target).max().unwrap_or(0);
    let mean = settled.iter().map(|s| s.target).sum::<u64>() / settled.len() as u64;
    println!(
        "1 Mbit/s link: mean {mean}, max {max}, {above} of {} samples above 1.2 Mbit/s",
        settled.len()
    );
    assert!(
        above * 20 <= settled.len(),
        "{above} samples above 1.2 Mbit/s"
    );
    assert!(mean >= 800_000, "mean {mean}: the link is underused");
}

/// `tc tbf rate 300kbit burst 3000b`, as the browser test's limited subscriber sits behind: a
/// full bucket lets a short probe cluster through at once, and a probe measured over its whole
/// arrival span would read several times the link.
#[test]
fn a_token_bucket_link_is_not_estimated_above_its_rate_by_its_burst() {
    let link = LinkConfig {
        capacity_bps: 300_000,
        burst_bytes: 3000,
        app_bps: 1_200_000,
        layers_bps: &[150_000, 350_000, 1_200_000],
        ..LinkConfig::default()
    };
    let mut sim = Sim::new(link, Config::default());
    sim.run_for(40 * S);
    let settled: Vec<_> = sim.trace().iter().filter(|s| s.at >= 4 * S).collect();
    let above = settled.iter().filter(|s| s.target > 390_000).count();
    let max = settled.iter().map(|s| s.target).max().unwrap_or(0);
    let mean = settled.iter().map(|s| s.target).sum::<u64>() / settled.len() as u64;
    print(sim.trace(), Duration::ZERO, 40 * S);
    println!(
        "300 kbit/s token bucket, 3000 B burst: from 4 s on mean {mean}, max {max}, {above} of {} \
         samples above 1.3 × the rate; probes {}",
        settled.len(),
        sim.probes
    );
    assert!(max < 600_000, "reached {max}: twice the link");
    assert!(
        above * 20 <= settled.len(),
        "{above} samples above 1.3 × the link"
    );
    assert!(mean >= 200_000, "mean {mean}: the link is underused");

    // The limit lifted: back to the top layer.
    let lifted = sim.elapsed();
    sim.set_capacity(3_000_000);
    sim.run_until(lifted + 10 * S, |e| e.target_bitrate() >= 1_100_000);
    let up = sim.elapsed() - lifted;
    println!(
        "at 1.1 Mbit/s {:.2} s after the limit was lifted",
        up.as_secs_f64()
    );
    assert!(up < 10 * S, "still at {}", sim.estimator().target_bitrate());
}
