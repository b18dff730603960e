//! One run: set up the rooms and participants at the ramp rate, wait for every transport to
//! connect, measure for the scenario's duration, drain, and build the report.

use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use ringcast_datapath::dtls;

use crate::engine::{Command, Engine, EngineReport, Live};
use crate::report::{self, Report, RunFacts, Server};
use crate::scenario::Scenario;
use crate::signal::{self, Api, MediaPlan, Participant, Shared};

/// How the run is watched, beside the scenario.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub api_key: String,
    pub api_secret: String,
    pub quiet: bool,
    pub pin_core: Option<usize>,
    pub server_pid: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Signal(#[from] signal::SignalError),
    #[error("client certificate: {0}")]
    Dtls(#[from] dtls::DtlsError),
    #[error("the media engine could not start (io_uring is required): {0}")]
    Engine(std::io::Error),
    #[error("the media engine failed: {0}")]
    EngineFailed(String),
}

/// Transports the scenario sets up: a subscriber transport only exists once there is
/// something to receive.
fn expected_transports(s: &Scenario) -> usize {
    let pubs_sub = if s.publishers_subscribe && s.publishers > 1 {
        s.publishers
    } else {
        0
    };
    (s.rooms * (s.publishers + pubs_sub + s.subscribers)) as usize
}

/// Streams every subscriber transport should receive: each other publisher's audio and video.
fn expected_streams(s: &Scenario) -> usize {
    let k = s.streams_per_publisher();
    let subs = s.subscribers * s.publishers * k;
    let pubs = if s.publishers_subscribe {
        s.publishers * s.publishers.saturating_sub(1) * k
    } else {
        0
    };
    (s.rooms * (subs + pubs)) as usize
}

/// How long the run waits at most for the server to settle after the ramp.
const SETTLE_MAX: Duration = Duration::from_secs(15);

fn room_name(s: &Scenario, r: u32) -> String {
    format!("{}-{}", s.room_prefix, r + 1)
}

/// CPU seconds this process has used.
fn own_cpu() -> f64 {
    // SAFETY: getrusage fills the zeroed struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// CPU seconds and RSS (bytes) of another process, from /proc.
fn proc_cpu(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let rss: f64 = f.get(21)?.parse().ok()?;
    Some(((utime + stime) / hz, rss * page))
}

fn pin(core: usize) {
    // SAFETY: affinity of the calling thread; a zeroed cpu_set_t is empty.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Runs the scenario against the server; `Err` only for a run that could not start.
pub async fn run(s: &Scenario, o: &Options) -> Result<Report, RunError> {
    if let Some(core) = o.pin_core {
        pin(core);
    }
    let api = Api::connect(&s.grpc_addr, &o.api_key, &o.api_secret).await?;
    let per_room = s.publishers + s.subscribers;
    for r in 0..s.rooms {
        api.create_room(&room_name(s, r), per_room + 1).await?;
    }
    let (cert, key) = dtls::self_signed()?;
    let ssl = dtls::context(&cert, &key, &[s.srtp_profile])?;
    let fingerprint = dtls::fingerprint_sha256(&cert)?;
    let epoch = Instant::now();
    let live = Arc::new(Mutex::new(Live::default()));
    let (tx, rx) = sync_channel::<Command>(65536);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let engine = {
        let (live, pin_core, decrypt_every) = (live.clone(), o.pin_core, s.decrypt_every);
        std::thread::Builder::new()
            .name("loadtest-engine".into())
            .spawn(move || -> std::io::Result<EngineReport> {
                if let Some(core) = pin_core {
                    pin(core);
                }
                // The ring is set up on the thread that submits to it (SINGLE_ISSUER).
                let engine = match Engine::new(epoch, decrypt_every, live) {
                    Ok(e) => {
                        let _ = ready_tx.send(Ok(()));
                        e
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(std::io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                };
                engine.run(rx)
            })
            .map_err(RunError::Engine)?
    };
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(RunError::Engine(e)),
        Err(_) => return Err(RunError::EngineFailed("the engine thread ended".into())),
    }
    let shared = Arc::new(Shared::new(
        api.clone(),
        ssl,
        fingerprint,
        tx.clone(),
        epoch,
        s.seed,
        s.transport_cc,
    ));
    let plan = MediaPlan {
        audio: s.audio,
        video: s.video,
        video_kbps: s.video_kbps,
        fps: s.fps,
        keyframe_interval: s.keyframe_interval,
        simulcast: s.simulcast,
        unpaced: s.unpaced,
    };
    // Publishers first in every room, so subscribers find tracks in their first offer.
    let mut people = Vec::new();
    for r in 0..s.rooms {
        for i in 0..s.publishers {
            people.push(Participant {
                index: people.len(),
                room: room_name(s, r),
                identity: format!("pub-{}-{i}", r + 1),
                publish: Some(plan),
                subscribe: s.publishers_subscribe,
            });
        }
    }
    for r in 0..s.rooms {
        for i in 0..s.subscribers {
            people.push(Participant {
                index: people.len(),
                room: room_name(s, r),
                identity: format!("sub-{}-{i}", r + 1),
                publish: None,
                subscribe: true,
            });
        }
    }
    let expected = expected_transports(s);
    let bar = if o.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(expected as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} connecting [{bar:40}] {pos}/{len} transports {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let gap = Duration::from_secs_f64(1.0 / f64::from(s.ramp_rate));
    let mut tasks = tokio::task::JoinSet::new();
    let ramp_start = tokio::time::Instant::now();
    for (n, p) in people.into_iter().enumerate() {
        tokio::time::sleep_until(ramp_start + gap * n as u32).await;
        tasks.spawn(signal::run(shared.clone(), p));
        if let Ok(l) = live.lock() {
            bar.set_position(l.connected as u64);
        }
    }
    let mut signal_errors = Vec::new();
    while let Some(res) = tasks.join_next().await {
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => signal_errors.push(e.to_string()),
            Err(e) => signal_errors.push(format!("participant task: {e}")),
        }
        if let Ok(l) = live.lock() {
            bar.set_position(l.connected as u64);
        }
    }
    // Wait for the transports to connect (the engine's live count, refreshed each second).
    let deadline = Instant::now() + s.connect_timeout;
    loop {
        let l = live.lock().map(|l| *l).unwrap_or_default();
        bar.set_position(l.connected as u64);
        bar.set_message(format!("({} failed)", l.failed + signal_errors.len()));
        // Done when every transport that could be set up is connected or failed (a
        // participant whose signaling failed sets up none).
        let settled = l.connected + l.failed >= l.transports;
        if (settled && l.transports + signal_errors.len() >= expected) || Instant::now() >= deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then for every stream to flow (a meeting renegotiates as its last members join), and a
    // moment for the newcomers' keyframe replays to drain.
    let streams = expected_streams(s);
    while Instant::now() < deadline {
        let l = live.lock().map(|l| *l).unwrap_or_default();
        bar.set_message(format!("{}/{streams} streams flowing", l.streams_flowing));
        if l.streams_flowing >= streams || !signal_errors.is_empty() || l.failed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then for the server to catch up with the ramp (handshakes, replays, renegotiations): two
    // seconds in a row whose p99 is under the threshold (50 ms if none was given), at most
    // SETTLE_MAX. A server that never settles is measured as it is.
    let settle_ms = s.max_p99_ms.unwrap_or(50.0);
    let settle_until = Instant::now() + SETTLE_MAX;
    let mut calm = 0;
    let mut seen = live.lock().map(|l| l.seq).unwrap_or_default();
    while Instant::now() < settle_until && calm < 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let l = live.lock().map(|l| *l).unwrap_or_default();
        if l.seq != seen {
            seen = l.seq;
            calm = if (l.p99_us as f64) < settle_ms * 1000.0 {
                calm + 1
            } else {
                0
            };
            bar.set_message(format!(
                "settling: last second's p99 {:.1} ms",
                l.p99_us as f64 / 1000.0
            ));
        }
    }
    bar.finish_and_clear();
    // The measured window.
    let _ = tx.send(Command::Measure);
    let cpu0 = own_cpu();
    let server0 = o.server_pid.and_then(proc_cpu);
    let t0 = Instant::now();
    let mut last = live.lock().map(|l| *l).unwrap_or_default();
    while t0.elapsed() < s.duration {
        tokio::time::sleep(Duration::from_secs(1).min(s.duration.saturating_sub(t0.elapsed())))
            .await;
        let l = live.lock().map(|l| *l).unwrap_or_default();
        if !o.quiet && t0.elapsed() < s.duration + Duration::from_millis(500) {
            eprintln!(
                "t={:>4.0}s  connected {}/{}  rx {:>8} pkt/s {:>7.1} Mbit/s  lost {}  nacks {}  p99 {:.1} ms",
                t0.elapsed().as_secs_f64(),
                l.connected,
                expected,
                l.packets_in.saturating_sub(last.packets_in),
                (l.bytes_in.saturating_sub(last.bytes_in)) as f64 * 8.0 / 1e6,
                l.lost,
                l.nacks,
                l.p99_us as f64 / 1000.0
            );
        }
        last = l;
    }
    let window = t0.elapsed();
    let cpu = (own_cpu() - cpu0) / window.as_secs_f64() * 100.0;
    let server = match (o.server_pid, server0, o.server_pid.and_then(proc_cpu)) {
        (Some(pid), Some((c0, _)), Some((c1, rss))) => Some(Server {
            pid,
            cpu_pct: (c1 - c0) / window.as_secs_f64() * 100.0,
            rss_mib: rss / (1 << 20) as f64,
        }),
        _ => None,
    };
    // Drain: publishers stop, repairs in flight still count.
    let _ = tx.send(Command::StopMedia);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = tx.send(Command::Finish);
    let report = engine
        .join()
        .map_err(|_| RunError::EngineFailed("the engine thread panicked".into()))?
        .map_err(|e| RunError::EngineFailed(e.to_string()))?;
    for r in 0..s.rooms {
        let _ = api.delete_room(&room_name(s, r)).await;
    }
    Ok(report::build(
        s,
        &report,
        RunFacts {
            transports_expected: expected,
            signal_errors,
            events_read: shared
                .events_read
                .load(std::sync::atomic::Ordering::Relaxed),
            generator_cpu_pct: cpu,
            server,
        },
    ))
}
