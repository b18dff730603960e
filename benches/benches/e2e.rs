//! The end-to-end benchmark: `ringcast` with one shard pinned to core 0, the `loadtest` on core 1,
//! swept over the number of subscribers in three scenarios shaped like LiveKit's published
//! benchmark (livestream: 1 video publisher; audio room: 10 audio publishers; meeting: N×N
//! video), on both IO backends. For each it finds the most egress packets/s one shard core
//! sustains with loss < 0.5 % and p99 one-way latency < 50 ms, measures the reference
//! forwarder in the same run, and writes `benches/RESULTS.md` and `benches/e2e.png`.
//!
//! A fourth scenario, simulcast (1 publisher of three VP8 layers, N subscribers), runs each N
//! twice, side by side: without and with congestion control (`--transport-cc`), and compares
//! the server's CPU per subscriber, the estimates the server reached and the layer received.
//!
//! Run it with `./scripts/bench-e2e.sh` (builds the release binaries first). Environment:
//! E2E_BACKENDS (`io-uring,recvmmsg`), E2E_SCENARIOS (`livestream,audio,meeting,simulcast`),
//! E2E_SECS (10, per point), E2E_MAX (largest subscriber count tried, 4000), RINGCAST_BIN,
//! LOADTEST_BIN. A run of some scenarios or backends replaces their sections of RESULTS.md and
//! keeps the others.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup: a panic is a failure report

use std::fmt::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const MAX_LOSS_PCT: f64 = 0.5;
const MAX_P99_MS: f64 = 50.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Livestream,
    Audio,
    Meeting,
    Simulcast,
}

/// The simulcast publisher's top layer (kbit/s); the loadtest sends a quarter and a sixteenth
/// of it on the lower two. Above the estimator's 1 Mbit/s start, so that reaching it takes
/// probes: the layer a subscriber receives says whether its estimate ramped up.
const SIMULCAST_KBPS: u32 = 2500;

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Livestream => "livestream",
            Scenario::Audio => "audio",
            Scenario::Meeting => "meeting",
            Scenario::Simulcast => "simulcast",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            Scenario::Livestream,
            Scenario::Audio,
            Scenario::Meeting,
            Scenario::Simulcast,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    fn describe(self) -> &'static str {
        match self {
            Scenario::Livestream => {
                "1 publisher (1 Mbit/s VP8, 30 fps, paced as a browser), N subscribers"
            }
            Scenario::Audio => "10 publishers (Opus-sized audio, 50 packets/s), N subscribers",
            Scenario::Meeting => {
                "N participants each publishing 500 kbit/s VP8 and subscribing to all others"
            }
            Scenario::Simulcast => {
                "1 publisher (VP8 simulcast: 156, 625 and 2500 kbit/s, 30 fps, paced), N subscribers, without and with congestion control"
            }
        }
    }

    /// The points of the sweep (stopped at the first that fails).
    fn points(self, max: u32) -> Vec<u32> {
        let v: Vec<u32> = match self {
            Scenario::Livestream => {
                vec![100, 250, 500, 750, 1000, 1250, 1500, 2000, 2500, 3000, 4000]
            }
            Scenario::Audio => vec![50, 100, 200, 400, 600, 800, 1000, 1500, 2000, 3000, 4000],
            Scenario::Meeting => vec![4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96],
            Scenario::Simulcast => vec![50, 100, 200, 400, 600, 800, 1000],
        };
        v.into_iter().filter(|n| *n <= max).collect()
    }

    fn loadtest_args(self, n: u32) -> Vec<String> {
        let s = |v: &str| v.to_owned();
        match self {
            Scenario::Livestream => vec![
                s("--publishers"),
                s("1"),
                s("--subscribers"),
                n.to_string(),
                s("--video-only"),
            ],
            Scenario::Audio => vec![
                s("--publishers"),
                s("10"),
                s("--subscribers"),
                n.to_string(),
                s("--audio-only"),
            ],
            Scenario::Meeting => vec![
                s("--publishers"),
                n.to_string(),
                s("--subscribers"),
                s("0"),
                s("--publishers-subscribe"),
                s("--video-only"),
                s("--video-kbps"),
                s("500"),
            ],
            Scenario::Simulcast => vec![
                s("--publishers"),
                s("1"),
                s("--subscribers"),
                n.to_string(),
                s("--video-only"),
                s("--simulcast"),
                s("--video-kbps"),
                SIMULCAST_KBPS.to_string(),
            ],
        }
    }
}

#[derive(Debug, Clone)]
struct Point {
    n: u32,
    egress_pps: f64,
    mbit: f64,
    server_cpu: f64,
    server_rss_mib: f64,
    p50_ms: f64,
    p99_ms: f64,
    loss_pct: f64,
    failures: u64,
    generator_cpu: f64,
    generator_bound: bool,
    first_frame_p95_ms: f64,
    pass: bool,
    /// Video received per subscriber, kbit/s (the layer it was sent).
    kbps_per_subscriber: f64,
    /// The server's metrics when the run ended: its subscribers' estimates (the summary's
    /// median and minimum, bit/s) and the bandwidth probes it sent; the RTX the subscribers
    /// received.
    estimate_p50_bps: f64,
    estimate_min_bps: f64,
    probes: f64,
    layer_switches: f64,
    rtx_received: f64,
}

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn bin(var: &str, name: &str) -> PathBuf {
    std::env::var(var).map(PathBuf::from).unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/release")
            .join(name)
    })
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(backend: &str) -> (Server, u16, u16) {
    let (grpc, http) = (free_port(), free_port());
    let child = Command::new("taskset")
        .arg("-c")
        .arg("0")
        .arg(bin("RINGCAST_BIN", "ringcast"))
        .args([
            "--shards",
            "1",
            "--media-backend",
            backend,
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--http-addr",
            &format!("127.0.0.1:{http}"),
            "--udp-port-base",
            "0",
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ringcast (build it: cargo build --release --bin ringcast)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
        assert!(Instant::now() < deadline, "ringcast did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Server(child), grpc, http)
}

/// The server's Prometheus text from `/metrics` (empty if it does not answer).
fn scrape(http: u16) -> String {
    use std::io::{Read, Write as _};
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", http)) else {
        return String::new();
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut body = String::new();
    let _ = c.read_to_string(&mut body);
    body
}

/// The sum over shards of a metric's samples whose labels contain `labels` (`""`: any); the
/// benchmark runs one shard, so a summary's quantile is that shard's.
fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (n, rest) = key.split_once('{').unwrap_or((key, ""));
            (n == name && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
        })
        .fold(0.0, |a, b| a + b)
}

fn f(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(0.0)
}

/// One point: `extra` loadtest flags (`--transport-cc`) on top of the scenario's.
fn run_point(
    backend: &str,
    scenario: Scenario,
    n: u32,
    secs: u64,
    extra: &[&str],
) -> Option<Point> {
    let (server, grpc, http) = start_server(backend);
    let json = std::env::temp_dir().join(format!("ringcast-e2e-{}-{n}.json", std::process::id()));
    let _ = std::fs::remove_file(&json);
    let status = Command::new("taskset")
        .arg("-c")
        .arg("1")
        .arg(bin("LOADTEST_BIN", "loadtest"))
        .args(scenario.loadtest_args(n))
        .args(extra)
        .args([
            "--grpc-addr",
            &format!("http://127.0.0.1:{grpc}"),
            "--duration",
            &format!("{secs}s"),
            "--pin-core",
            "1",
            "--server-pid",
            &server.0.id().to_string(),
            "--decrypt-every",
            "8",
            "--ramp-rate",
            "300",
            "--connect-timeout",
            "60s",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .stdout(Stdio::null())
        .status()
        .expect("run loadtest (build it: cargo build --release --bin loadtest)");
    let metrics = scrape(http);
    drop(server);
    let text = std::fs::read_to_string(&json).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let loss = f(&v, &["receive", "loss_pct"]);
    let p99 = f(&v, &["latency_ms", "all", "p99"]);
    let failures = f(&v, &["connect", "failures"]) as u64;
    let pass = loss < MAX_LOSS_PCT
        && p99 < MAX_P99_MS
        && failures == 0
        && f(&v, &["receive", "missing_tracks"]) == 0.0;
    let _ = status;
    Some(Point {
        n,
        // What subscribers received is the server's egress less its (tiny) loss.
        egress_pps: f(&v, &["receive", "packets_per_s"]),
        mbit: f(&v, &["receive", "mbit_per_s"]),
        server_cpu: f(&v, &["server", "cpu_pct"]),
        server_rss_mib: f(&v, &["server", "rss_mib"]),
        p50_ms: f(&v, &["latency_ms", "all", "p50"]),
        p99_ms: p99,
        loss_pct: loss,
        failures,
        generator_cpu: f(&v, &["generator", "cpu_pct"]),
        generator_bound: v["generator"]["bottleneck"].as_bool().unwrap_or(false),
        first_frame_p95_ms: f(&v, &["first_frame_ms", "p95"]),
        pass,
        kbps_per_subscriber: f(&v, &["receive", "mbit_per_s"]) * 1000.0
            / f(&v, &["receive", "subscriber_transports"]).max(1.0),
        estimate_p50_bps: metric(
            &metrics,
            "ringcast_subscriber_estimate_bps",
            "quantile=\"0.5\"",
        ),
        estimate_min_bps: metric(
            &metrics,
            "ringcast_subscriber_estimate_bps",
            "quantile=\"0\"",
        ),
        probes: metric(&metrics, "ringcast_probe_packets_total", ""),
        layer_switches: metric(&metrics, "ringcast_layer_switches_total", ""),
        rtx_received: f(&v, &["receive", "rtx_received"]),
    })
}

struct Sweep {
    backend: String,
    scenario: Scenario,
    points: Vec<Point>,
    /// The same points with congestion control (`--transport-cc`), measured right after each
    /// (simulcast only).
    with_cc: Vec<Point>,
}

impl Sweep {
    fn best(&self) -> Option<&Point> {
        self.points
            .iter()
            .filter(|p| p.pass)
            .max_by(|a, b| a.egress_pps.total_cmp(&b.egress_pps))
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), Linux {}", kernel.trim())
}

fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Egress packets per second of the server's CPU time.
fn per_cpu_second(p: &Point) -> f64 {
    p.egress_pps / (p.server_cpu / 100.0).max(0.01)
}

/// How this run was started: the E2E_* variables set, then the script.
fn command(secs: u64) -> String {
    let mut c = String::new();
    for k in ["E2E_SCENARIOS", "E2E_BACKENDS", "E2E_MAX"] {
        if let Ok(v) = std::env::var(k) {
            let _ = write!(c, "{k}={v} ");
        }
    }
    format!("{c}E2E_SECS={secs} ./scripts/bench-e2e.sh")
}

/// The server's CPU per subscriber, in µs per second.
fn cpu_us_per_subscriber(p: &Point) -> f64 {
    p.server_cpu / 100.0 * 1e6 / f64::from(p.n.max(1))
}

/// The simulcast layer a subscriber received on average: one within 20 % of its rate, else
/// the two it was between (its subscription moved).
fn layer(kbps: f64) -> &'static str {
    let top = f64::from(SIMULCAST_KBPS);
    let layers = [("q", top / 16.0), ("h", top / 4.0), ("f", top)];
    if let Some((name, _)) = layers
        .iter()
        .find(|(_, rate)| (kbps / rate - 1.0).abs() <= 0.2)
    {
        return name;
    }
    match kbps {
        k if k < top / 16.0 => "below q",
        k if k < top / 4.0 => "q-h",
        k if k < top => "h-f",
        _ => "above f",
    }
}

fn result(p: &Point) -> String {
    if p.pass {
        "pass".to_owned()
    } else if p.failures > 0 {
        format!("fail ({} failed)", p.failures)
    } else {
        "fail".to_owned()
    }
}

/// The simulcast section's table: each N without and with congestion control.
fn simulcast_table(o: &mut String, s: &Sweep) {
    let _ = writeln!(
        o,
        "| N | egress pkt/s without / with | server CPU without | server CPU with | CPU per subscriber without, µs/s | CPU per subscriber with, µs/s | per subscriber with / without | per egress packet with / without | estimate with, p50 (min) Mbit/s | received per subscriber without / with, kbit/s (layer) | layer moves per subscriber without / with | probes sent / RTX received, with | p99 ms without / with | loss % without / with | result without / with |"
    );
    let _ = writeln!(
        o,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (a, b) in s.points.iter().zip(&s.with_cc) {
        let (ua, ub) = (cpu_us_per_subscriber(a), cpu_us_per_subscriber(b));
        let per_packet = |p: &Point| p.server_cpu / p.egress_pps.max(1.0);
        let _ = writeln!(
            o,
            "| {} | {:.0} / {:.0} | {:.0} % | {:.0} % | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} ({:.1}) | {:.0} ({}) / {:.0} ({}) | {:.1} / {:.1} | {:.0} / {:.0} | {:.1} / {:.1} | {:.3} / {:.3} | {} / {} |",
            a.n,
            a.egress_pps,
            b.egress_pps,
            a.server_cpu,
            b.server_cpu,
            ua,
            ub,
            ub / ua.max(0.001),
            per_packet(b) / per_packet(a).max(1e-9),
            b.estimate_p50_bps / 1e6,
            b.estimate_min_bps / 1e6,
            a.kbps_per_subscriber,
            layer(a.kbps_per_subscriber),
            b.kbps_per_subscriber,
            layer(b.kbps_per_subscriber),
            a.layer_switches / f64::from(a.n.max(1)),
            b.layer_switches / f64::from(b.n.max(1)),
            b.probes,
            b.rtx_received,
            a.p99_ms,
            b.p99_ms,
            a.loss_pct,
            b.loss_pct,
            result(a),
            result(b)
        );
    }
}

fn report(sweeps: &[Sweep], reference: f64, drained: f64, secs: u64) -> String {
    let mut o = String::new();
    let (commit, date, command) = (commit(), chrono_free_date(), command(secs));
    let _ = writeln!(o, "# End-to-end benchmark results\n");
    let _ = writeln!(o, "- machine: {}", machine());
    let _ = writeln!(o, "- commit: `{commit}`, {date}");
    let _ = writeln!(o, "- command: `{command}`");
    let _ = writeln!(
        o,
        "- one `ringcast` shard pinned to core 0, `loadtest` pinned to core 1; a point passes with loss < {MAX_LOSS_PCT} %, p99 one-way latency < {MAX_P99_MS} ms, every client connected and every track delivered"
    );
    let _ = writeln!(
        o,
        "- reference forwarder (recvmmsg, copy + AES-128-GCM per egress packet, sendmmsg, 1 -> 10, same run): **{reference:.0} egress packets/s** to sinks nobody reads; **{drained:.0}** to sinks read on core 1 as the loadtest reads (on loopback a waiting receiver costs the sender a wakeup per datagram)"
    );
    let _ = writeln!(
        o,
        "- egress per CPU-second: egress pkt/s divided by the server's share of its core (what the packets cost, apart from the latency target)\n"
    );
    let _ = writeln!(o, "## Highest passing point\n");
    let _ = writeln!(
        o,
        "| scenario | backend | subscribers | egress pkt/s | Mbit/s | server CPU | p99 ms | loss % | vs reference | vs read reference | egress per CPU-second | vs read reference |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in sweeps.iter().filter(|s| s.scenario != Scenario::Simulcast) {
        match s.best() {
            Some(p) => {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {:.0} | {:.0} | {:.0} % | {:.1} | {:.3} | {:.2} | {:.2} | {:.0} | {:.2} |",
                    s.scenario.name(),
                    s.backend,
                    p.n,
                    p.egress_pps,
                    p.mbit,
                    p.server_cpu,
                    p.p99_ms,
                    p.loss_pct,
                    p.egress_pps / reference,
                    p.egress_pps / drained,
                    per_cpu_second(p),
                    per_cpu_second(p) / drained
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "| {} | {} | none passed | | | | | | | | | |",
                    s.scenario.name(),
                    s.backend
                );
            }
        }
    }
    for s in sweeps {
        let _ = writeln!(
            o,
            "\n## {} on {}: {}\n",
            s.scenario.name(),
            s.backend,
            s.scenario.describe()
        );
        let _ = writeln!(
            o,
            "- measured: commit `{commit}`, {date}, `{command}`; reference forwarder in that run {reference:.0} / {drained:.0} (read) egress packets/s\n"
        );
        if s.scenario == Scenario::Simulcast {
            let _ = writeln!(
                o,
                "Each N runs twice, one after the other on fresh servers: without congestion control (subscribers decline transport-cc; the publisher's best layer is forwarded), then with it (`--transport-cc`: feedback every 100 ms, a bandwidth estimate per subscriber choosing its layer, probes as RTX). CPU per subscriber is the server's CPU over the window divided by N; \"per egress packet\" divides out the extra packets of a higher layer, leaving what congestion control itself costs. Estimates are the server's `ringcast_subscriber_estimate_bps` summary (one sample per subscriber per second, over the run) when the loadtest ended; the layer is the one within 20 % of what a subscriber received on average, else the two it moved between; layer moves are the server's `ringcast_layer_switches_total` over the run, per subscriber.\n"
            );
            simulcast_table(&mut o, s);
            continue;
        }
        let _ = writeln!(
            o,
            "| N | egress pkt/s | Mbit/s | server CPU | server RSS MiB | p50 ms | p99 ms | loss % | first frame p95 ms | generator CPU | result |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|");
        for p in &s.points {
            let _ = writeln!(
                o,
                "| {} | {:.0} | {:.0} | {:.0} % | {:.0} | {:.1} | {:.1} | {:.3} | {:.0} | {:.0} %{} | {} |",
                p.n,
                p.egress_pps,
                p.mbit,
                p.server_cpu,
                p.server_rss_mib,
                p.p50_ms,
                p.p99_ms,
                p.loss_pct,
                p.first_frame_p95_ms,
                p.generator_cpu,
                if p.generator_bound { " (bound)" } else { "" },
                result(p)
            );
        }
    }
    o
}

/// RESULTS.md in parts: the text before the first section, the highest-passing table's
/// lines (rows keyed by "scenario on backend", other lines by ""), and each sweep's section
/// keyed the same way.
struct Results {
    preamble: String,
    highest: Vec<(String, String)>,
    sections: Vec<(String, String)>,
}

const HIGHEST: &str = "## Highest passing point";

impl Results {
    fn parse(md: &str) -> Self {
        let mut r = Results {
            preamble: String::new(),
            highest: Vec::new(),
            sections: Vec::new(),
        };
        let mut in_highest = false;
        for line in md.lines() {
            if let Some(title) = line.strip_prefix("## ") {
                in_highest = line == HIGHEST;
                if !in_highest {
                    let key = title.split(':').next().unwrap_or(title).trim().to_owned();
                    r.sections.push((key, String::new()));
                }
            }
            let row_key = || {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                match cells.as_slice() {
                    ["", scenario, backend, ..] if Scenario::from_name(scenario).is_some() => {
                        format!("{scenario} on {backend}")
                    }
                    _ => String::new(),
                }
            };
            let text = if in_highest {
                r.highest.push((row_key(), String::new()));
                r.highest.last_mut().map(|h| &mut h.1)
            } else {
                match r.sections.last_mut() {
                    Some(s) => Some(&mut s.1),
                    None => Some(&mut r.preamble),
                }
            };
            if let Some(t) = text {
                t.push_str(line);
                t.push('\n');
            }
        }
        r
    }

    /// Where a key goes: scenarios in their order, then backends.
    fn order(key: &str) -> (usize, usize, String) {
        let (scenario, backend) = key.split_once(" on ").unwrap_or((key, ""));
        let s = ["livestream", "audio", "meeting", "simulcast"]
            .iter()
            .position(|n| *n == scenario)
            .unwrap_or(usize::MAX);
        let b = ["io-uring", "recvmmsg"]
            .iter()
            .position(|n| *n == backend)
            .unwrap_or(usize::MAX);
        (s, b, key.to_owned())
    }

    /// `fresh` (this run's report) laid over `self` (the file as it was): the sections and
    /// rows this run measured replace their old selves, the others stay as they were, and the
    /// old preamble stays unless this run measured every section the file had.
    fn merge(mut self, fresh: Results) -> String {
        let measured: Vec<&String> = fresh.sections.iter().map(|s| &s.0).collect();
        if self.sections.iter().all(|(k, _)| measured.contains(&k)) {
            self = Results {
                preamble: fresh.preamble,
                highest: fresh.highest,
                sections: Vec::new(),
            };
        } else {
            // The old table's frame (title, header, separator) with its rows not measured now,
            // then this run's rows, in order.
            let frame: Vec<String> = self
                .highest
                .iter()
                .filter(|(k, _)| k.is_empty())
                .map(|(_, l)| l.clone())
                .collect();
            let mut rows: Vec<(String, String)> = self
                .highest
                .into_iter()
                .filter(|(k, _)| !k.is_empty() && !measured.contains(&k))
                .chain(fresh.highest.into_iter().filter(|(k, _)| !k.is_empty()))
                .collect();
            rows.sort_by_key(|(k, _)| Self::order(k));
            // Rows go after the separator line; what follows it (the blank line) stays last.
            let split = frame
                .iter()
                .position(|l| l.starts_with("|---"))
                .map_or(frame.len(), |i| i + 1);
            self.highest = frame[..split]
                .iter()
                .map(|l| (String::new(), l.clone()))
                .chain(rows)
                .chain(frame[split..].iter().map(|l| (String::new(), l.clone())))
                .collect();
            self.sections.retain(|(k, _)| !measured.contains(&k));
        }
        self.sections.extend(fresh.sections);
        self.sections.sort_by_key(|(k, _)| Self::order(k));
        let mut o = self.preamble;
        for (_, l) in &self.highest {
            o.push_str(l);
        }
        for (_, text) in &self.sections {
            if !o.ends_with("\n\n") {
                o.push('\n');
            }
            o.push_str(text);
        }
        o
    }
}

/// Today's date from the system clock (days since the epoch to a civil date).
fn chrono_free_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// One panel of the plot: its title, y range and what it shows of a point.
type Panel = (&'static str, f64, fn(&Point) -> f64);

fn plot(sweeps: &[Sweep], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| "cannot load the font")?;
    let live: Vec<&Sweep> = sweeps
        .iter()
        .filter(|s| s.scenario == Scenario::Livestream)
        .collect();
    if live.is_empty() {
        return Ok(());
    }
    let max_n = live
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.n))
        .max()
        .unwrap_or(1) as f64;
    let max_pps = live
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.egress_pps))
        .fold(1.0, f64::max);
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((3, 1));
    let colors = [BLUE, RED];
    let charts: [Panel; 3] = [
        ("egress packets/s", max_pps * 1.1, |p| p.egress_pps),
        ("server CPU % of one core", 110.0, |p| p.server_cpu),
        ("p99 one-way latency, ms (capped at 200)", 200.0, |p| {
            p.p99_ms.min(200.0)
        }),
    ];
    for (area, (title, ymax, get)) in areas.iter().zip(charts) {
        let mut c = ChartBuilder::on(area)
            .caption(
                format!("livestream, 1 shard core: {title}"),
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..max_n * 1.05, 0.0..ymax)?;
        c.configure_mesh().x_desc("subscribers").draw()?;
        for (s, color) in live.iter().zip(colors) {
            let pts: Vec<(f64, f64)> = s.points.iter().map(|p| (f64::from(p.n), get(p))).collect();
            c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(s.backend.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            c.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
        }
        if title.starts_with("p99") {
            c.draw_series(LineSeries::new(
                vec![(0.0, MAX_P99_MS), (max_n * 1.05, MAX_P99_MS)],
                BLACK.mix(0.4),
            ))?;
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs = env("E2E_SECS", 10u64);
    let max = env("E2E_MAX", 4000u32);
    let backends: Vec<String> = env("E2E_BACKENDS", "io-uring,recvmmsg".to_owned())
        .split(',')
        .map(str::to_owned)
        .collect();
    let scenarios: Vec<Scenario> = env("E2E_SCENARIOS", "livestream,audio,meeting".to_owned())
        .split(',')
        .filter_map(Scenario::from_name)
        .collect();
    println!("reference forwarder, 3 s, sinks unread then read ...");
    let reference = ringcast_benches::reference::run(3, 10, 1200);
    let drained = ringcast_benches::reference::run_drained(3, 10, 1200);
    println!("  {reference:.0} egress packets/s unread, {drained:.0} read");
    let mut sweeps = Vec::new();
    for sc in &scenarios {
        for b in &backends {
            let mut sweep = Sweep {
                backend: b.clone(),
                scenario: *sc,
                points: Vec::new(),
                with_cc: Vec::new(),
            };
            // Simulcast runs each N without, then with, congestion control.
            let variants: &[&[&str]] = if *sc == Scenario::Simulcast {
                &[&[], &["--transport-cc"]]
            } else {
                &[&[]]
            };
            'sweep: for n in sc.points(max) {
                let mut pass = true;
                for extra in variants {
                    let Some(p) = run_point(b, *sc, n, secs, extra) else {
                        println!("{} {b} N={n} {extra:?}: no report", sc.name());
                        sweep.points.truncate(sweep.with_cc.len());
                        break 'sweep;
                    };
                    println!(
                        "{} {b} N={n}{}: {:.0} pkt/s, server {:.0} %, p99 {:.1} ms, loss {:.3} %, generator {:.0} %{}{} -> {}",
                        sc.name(),
                        if extra.is_empty() { "" } else { " with cc" },
                        p.egress_pps,
                        p.server_cpu,
                        p.p99_ms,
                        p.loss_pct,
                        p.generator_cpu,
                        if p.generator_bound { " (bound)" } else { "" },
                        if *sc == Scenario::Simulcast {
                            format!(
                                ", {:.0} kbit/s per subscriber, estimate p50 {:.2} Mbit/s, {:.0} probes",
                                p.kbps_per_subscriber,
                                p.estimate_p50_bps / 1e6,
                                p.probes
                            )
                        } else {
                            String::new()
                        },
                        if p.pass { "pass" } else { "fail" }
                    );
                    // With congestion control a point may fail on latency alone (layer moves):
                    // that is what the comparison is for, so only the point without it ends
                    // the sweep.
                    pass &= p.pass || !extra.is_empty();
                    if extra.is_empty() {
                        sweep.points.push(p);
                    } else {
                        sweep.with_cc.push(p);
                    }
                }
                if !pass {
                    break;
                }
            }
            sweeps.push(sweep);
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fresh = report(&sweeps, reference, drained, secs);
    // A run of some scenarios or backends keeps the other sections of the file.
    let old = std::fs::read_to_string(dir.join("RESULTS.md")).unwrap_or_default();
    let md = Results::parse(&old).merge(Results::parse(&fresh));
    std::fs::write(dir.join("RESULTS.md"), &md).unwrap();
    match plot(&sweeps, &dir.join("e2e.png")) {
        Ok(()) => println!("wrote benches/RESULTS.md and benches/e2e.png"),
        Err(e) => println!("wrote benches/RESULTS.md; no plot: {e}"),
    }
    print!("{md}");
}
