//! The run's results: one JSON document and a human table, and the thresholds that decide the
//! exit status.

use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::engine::EngineReport;
use crate::scenario::Scenario;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    /// Connection set-up, over the ramp.
    pub connect: Connect,
    /// Loss from each stream's first packet to the end; rates over the measured window.
    pub receive: Receive,
    /// One-way latency of the packets received in the measured window.
    pub latency_ms: Latency,
    pub first_frame_ms: Percentiles,
    /// Where the time to first frame goes, subscriber transports only.
    pub first_frame_parts_ms: FirstFrameParts,
    pub generator: Generator,
    pub server: Option<Server>,
    pub violations: Vec<String>,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Connect {
    pub transports_expected: usize,
    pub transports: usize,
    pub connected: usize,
    /// Participants whose signaling failed, and transports that never connected.
    pub failures: usize,
    /// The first few failure messages.
    pub errors: Vec<String>,
    /// `Events` messages the subscribers read (each learns of the others joining).
    pub events_read: u64,
    pub connect_ms: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Receive {
    pub subscriber_transports: usize,
    pub streams: usize,
    pub tracks_offered: usize,
    /// Offered tracks that delivered nothing.
    pub missing_tracks: usize,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub loss_pct: f64,
    pub duplicates: u64,
    pub recovered: u64,
    /// Packets sent before their stream started here (a newcomer's keyframe replay): not in
    /// the latency.
    pub replayed: u64,
    pub nacks_sent: u64,
    /// Transport-wide congestion control feedback messages sent (with `transport_cc`).
    pub transport_cc_feedback_sent: u64,
    /// RTX packets received (bandwidth probes and repairs): not in `received`, the loss or the
    /// latency, except that a repair of a missing packet counts as that packet, in `recovered`.
    pub rtx_received: u64,
    /// RTP packets of SSRCs no answered offer named, dropped.
    pub unknown_ssrc_dropped: u64,
    pub jitter_ms_p50: f64,
    pub jitter_ms_max: f64,
    pub window_s: f64,
    /// What subscribers received in the window: the server's egress, less loss.
    pub packets_per_s: f64,
    pub mbit_per_s: f64,
    /// The worst subscriber's loss.
    pub worst_loss_pct: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FirstFrameParts {
    /// `Join` until the transport started (Join, Events, Subscribe).
    pub signaling: Percentiles,
    /// Transport start until DTLS completed (ICE and DTLS).
    pub connect: Percentiles,
    /// DTLS completed until the first decodable frame (the keyframe wait).
    pub frame_wait: Percentiles,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub audio: Percentiles,
    pub video: Percentiles,
    pub all: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generator {
    /// Of one core, over the window (all the loadtest's threads).
    pub cpu_pct: f64,
    pub max_send_lateness_ms: f64,
    pub send_slots_exhausted: u64,
    pub packets_decrypted: u64,
    pub packets_header_only: u64,
    /// True when the generator, not the server, may have limited the run.
    pub bottleneck: bool,
    pub publisher_packets_sent: u64,
    pub nacks_at_publishers: u64,
    pub plis_at_publishers: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Server {
    pub pid: u32,
    pub cpu_pct: f64,
    pub rss_mib: f64,
}

fn pct_us(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let ms = |v: u64| v as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        p50: ms(h.value_at_quantile(0.50)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    }
}

/// Percentiles of plain samples, in milliseconds.
pub fn pct_of(samples: &mut [Duration]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    Percentiles {
        count: samples.len() as u64,
        p50: at(0.5),
        p95: at(0.95),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// What the run measured besides the engine.
pub struct RunFacts {
    pub transports_expected: usize,
    pub signal_errors: Vec<String>,
    pub events_read: u64,
    pub generator_cpu_pct: f64,
    pub server: Option<Server>,
}

/// A generator past this share of its core may be what limits the run.
const GENERATOR_BUSY_PCT: f64 = 90.0;
/// Frames sent this late mean the engine fell behind its own schedule.
const GENERATOR_LATE: Duration = Duration::from_millis(20);

pub fn build(s: &Scenario, e: &EngineReport, f: RunFacts) -> Report {
    let mut errors: Vec<String> = f.signal_errors.clone();
    let mut connect_times = Vec::new();
    let mut first_frames = Vec::new();
    let (mut sub_signaling, mut sub_connect, mut sub_wait) = (Vec::new(), Vec::new(), Vec::new());
    let mut r = Receive {
        subscriber_transports: 0,
        streams: 0,
        tracks_offered: 0,
        missing_tracks: 0,
        expected: 0,
        received: 0,
        lost: 0,
        loss_pct: 0.0,
        duplicates: 0,
        recovered: 0,
        replayed: e.packets_replayed,
        nacks_sent: 0,
        transport_cc_feedback_sent: 0,
        rtx_received: 0,
        unknown_ssrc_dropped: 0,
        jitter_ms_p50: 0.0,
        jitter_ms_max: 0.0,
        window_s: e.window.as_secs_f64(),
        packets_per_s: 0.0,
        mbit_per_s: 0.0,
        worst_loss_pct: 0.0,
    };
    let mut jitters = Vec::new();
    let (mut window_packets, mut window_bytes) = (0u64, 0u64);
    let (mut sent, mut nacks, mut plis) = (0, 0, 0);
    let mut connected = 0;
    let mut failed_transports = 0;
    for t in &e.transports {
        if t.connected {
            connected += 1;
        }
        if let Some(c) = t.connect_time {
            connect_times.push(c);
        }
        if let Some(why) = &t.failure {
            failed_transports += 1;
            errors.push(format!(
                "participant {} transport {}: {why}",
                t.participant, t.id
            ));
        }
        if t.publisher {
            sent += t.packets_sent;
            nacks += t.nacks_received;
            plis += t.plis_received;
            continue;
        }
        r.subscriber_transports += 1;
        r.tracks_offered += t.tracks_offered;
        r.missing_tracks += t.missing_tracks;
        r.transport_cc_feedback_sent += t.feedback_sent;
        r.unknown_ssrc_dropped += t.unknown_ssrc;
        if let Some(ff) = t.first_frame {
            first_frames.push(ff);
        }
        sub_signaling.push(t.signaling_time);
        sub_connect.extend(t.connect_time);
        sub_wait.extend(t.frame_wait);
        let (mut exp, mut lost) = (0, 0);
        for st in &t.streams {
            r.streams += 1;
            exp += st.expected;
            lost += st.lost;
            r.received += st.received;
            r.duplicates += st.duplicates;
            r.recovered += st.recovered;
            r.nacks_sent += st.nacked;
            r.rtx_received += st.rtx_received;
            jitters.push(st.jitter_ms);
            window_packets += st.window_packets;
            window_bytes += st.window_bytes;
        }
        r.expected += exp;
        r.lost += lost;
        if exp > 0 {
            r.worst_loss_pct = r.worst_loss_pct.max(lost as f64 * 100.0 / exp as f64);
        }
    }
    if r.expected > 0 {
        r.loss_pct = r.lost as f64 * 100.0 / r.expected as f64;
    }
    jitters.sort_by(f64::total_cmp);
    if let (Some(mid), Some(max)) = (jitters.get(jitters.len() / 2), jitters.last()) {
        r.jitter_ms_p50 = *mid;
        r.jitter_ms_max = *max;
    }
    if r.window_s > 0.0 {
        r.packets_per_s = window_packets as f64 / r.window_s;
        r.mbit_per_s = window_bytes as f64 * 8.0 / r.window_s / 1e6;
    }
    let mut all = e.latency_audio.clone();
    let _ = all.add(&e.latency_video);
    let latency = Latency {
        audio: pct_us(&e.latency_audio),
        video: pct_us(&e.latency_video),
        all: pct_us(&all),
    };
    let generator = Generator {
        cpu_pct: f.generator_cpu_pct,
        max_send_lateness_ms: e.max_send_lateness.as_secs_f64() * 1000.0,
        send_slots_exhausted: e.send_slots_exhausted,
        packets_decrypted: e.packets_decrypted,
        packets_header_only: e.packets_header_only,
        bottleneck: f.generator_cpu_pct > GENERATOR_BUSY_PCT
            || e.max_send_lateness > GENERATOR_LATE
            || e.send_slots_exhausted > 0,
        publisher_packets_sent: sent,
        nacks_at_publishers: nacks,
        plis_at_publishers: plis,
    };
    let failures = f.signal_errors.len() + failed_transports;
    let mut violations = Vec::new();
    if failures > 0 {
        violations.push(format!("{failures} client(s) failed to connect"));
    }
    if e.transports.len() < f.transports_expected && f.signal_errors.is_empty() {
        violations.push(format!(
            "{} of {} transports were set up",
            e.transports.len(),
            f.transports_expected
        ));
    }
    if r.missing_tracks > 0 {
        violations.push(format!(
            "{} offered track(s) never arrived",
            r.missing_tracks
        ));
    }
    if let Some(max) = s.max_loss
        && r.loss_pct > max
    {
        violations.push(format!("loss {:.3} % > {max} %", r.loss_pct));
    }
    if let Some(max) = s.max_p99_ms
        && latency.all.p99 > max
    {
        violations.push(format!("p99 latency {:.1} ms > {max} ms", latency.all.p99));
    }
    errors.truncate(10);
    Report {
        scenario: s.clone(),
        connect: Connect {
            transports_expected: f.transports_expected,
            transports: e.transports.len(),
            connected,
            failures,
            errors,
            events_read: f.events_read,
            connect_ms: pct_of(&mut connect_times),
        },
        receive: r,
        latency_ms: latency,
        first_frame_ms: pct_of(&mut first_frames),
        first_frame_parts_ms: FirstFrameParts {
            signaling: pct_of(&mut sub_signaling),
            connect: pct_of(&mut sub_connect),
            frame_wait: pct_of(&mut sub_wait),
        },
        generator,
        server: f.server,
        ok: violations.is_empty(),
        violations,
    }
}

impl Report {
    /// The human table.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let s = &self.scenario;
        let r = &self.receive;
        let l = &self.latency_ms;
        let _ = writeln!(
            o,
            "scenario      {} room(s) x ({} publisher(s) + {} subscriber(s)), {}{}{}, {} kb/s VP8 at {} fps, {}, {:.0} s",
            s.rooms,
            s.publishers,
            s.subscribers,
            if s.audio { "audio" } else { "" },
            if s.audio && s.video { "+" } else { "" },
            if s.video { "video" } else { "" },
            s.video_kbps,
            s.fps,
            s.srtp_profile.name(),
            s.duration.as_secs_f64()
        );
        let c = &self.connect;
        let _ = writeln!(
            o,
            "connected     {}/{} transports, {} failure(s); connect p50 {:.0} ms p95 {:.0} ms; {} events read",
            c.connected,
            c.transports_expected,
            c.failures,
            c.connect_ms.p50,
            c.connect_ms.p95,
            c.events_read
        );
        let _ = writeln!(
            o,
            "received      {:.0} packets/s, {:.1} Mbit/s over {:.1} s ({} streams on {} subscriber transports)",
            r.packets_per_s, r.mbit_per_s, r.window_s, r.streams, r.subscriber_transports
        );
        let _ = writeln!(
            o,
            "loss          {:.3} % ({} of {}; worst subscriber {:.3} %), {} duplicates, {} recovered, {} NACKs sent, {} replayed from history",
            r.loss_pct,
            r.lost,
            r.expected,
            r.worst_loss_pct,
            r.duplicates,
            r.recovered,
            r.nacks_sent,
            r.replayed
        );
        let _ = writeln!(
            o,
            "tracks        {} offered, {} never arrived; jitter p50 {:.2} ms, max {:.2} ms",
            r.tracks_offered, r.missing_tracks, r.jitter_ms_p50, r.jitter_ms_max
        );
        let _ = writeln!(
            o,
            "rtx           {} RTX packets received (probes and repairs), {} packets of unknown SSRCs dropped",
            r.rtx_received, r.unknown_ssrc_dropped
        );
        if s.transport_cc {
            let _ = writeln!(
                o,
                "transport-cc  {} feedback messages sent by {} subscriber transports",
                r.transport_cc_feedback_sent, r.subscriber_transports
            );
        }
        for (name, p) in [
            ("latency all", &l.all),
            ("latency audio", &l.audio),
            ("latency video", &l.video),
        ] {
            let _ = writeln!(
                o,
                "{name:<13} p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} packets)",
                p.p50, p.p95, p.p99, p.max, p.count
            );
        }
        let ff = &self.first_frame_ms;
        let _ = writeln!(
            o,
            "first frame   p50 {:.0} ms  p95 {:.0} ms  max {:.0} ms after Join ({} subscribers)",
            ff.p50, ff.p95, ff.max, ff.count
        );
        let fp = &self.first_frame_parts_ms;
        let _ = writeln!(
            o,
            "  of which    signaling p50 {:.0} p95 {:.0} ms, ICE+DTLS p50 {:.0} p95 {:.0} ms, keyframe wait p50 {:.0} p95 {:.0} ms",
            fp.signaling.p50,
            fp.signaling.p95,
            fp.connect.p50,
            fp.connect.p95,
            fp.frame_wait.p50,
            fp.frame_wait.p95
        );
        let g = &self.generator;
        let _ = writeln!(
            o,
            "generator     {:.0} % of a core, frames up to {:.1} ms late, {} packets sent by publishers, {} NACKs and {} PLIs at publishers{}",
            g.cpu_pct,
            g.max_send_lateness_ms,
            g.publisher_packets_sent,
            g.nacks_at_publishers,
            g.plis_at_publishers,
            if g.bottleneck {
                "  << THE GENERATOR MAY BE THE BOTTLENECK"
            } else {
                ""
            }
        );
        if let Some(sv) = &self.server {
            let _ = writeln!(
                o,
                "server        pid {}: {:.0} % of a core, RSS {:.0} MiB",
                sv.pid, sv.cpu_pct, sv.rss_mib
            );
        }
        for e in &self.connect.errors {
            let _ = writeln!(o, "error         {e}");
        }
        if self.ok {
            let _ = writeln!(o, "result        ok");
        } else {
            for v in &self.violations {
                let _ = writeln!(o, "FAILED        {v}");
            }
        }
        o
    }
}
