//! Any datagram: the transport-cc feedback parser never panics, iterating whatever parses
//! reports at most its status count, and an estimator fed it (after some sends) never panics.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ringcast_cc::twcc::Feedback;
use ringcast_cc::{Config, Estimator};

fuzz_target!(|data: &[u8]| {
    let Ok(fb) = Feedback::parse(data) else { return };
    assert!(fb.packets().count() <= usize::from(fb.status_count()));
    let t0 = Instant::now();
    let mut est = Estimator::new(Config::default());
    // Sends around the feedback's base sequence, so its statuses meet known packets.
    for i in 0..64u16 {
        let seq = fb.base_seq().wrapping_add(i);
        est.on_packet_sent(seq, 1200, t0 + Duration::from_millis(u64::from(i)), None);
    }
    est.on_feedback(&fb, t0 + Duration::from_millis(100));
    est.on_feedback(&fb, t0 + Duration::from_millis(200));
    let _ = est.target_bitrate();
    while est.poll_probe().is_some() {}
});
