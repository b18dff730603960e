//! The end-to-end benchmark: `ringcast` with one shard pinned to core 0, the `loadtest` on core 1,
//! swept over the number of subscribers in three scenarios shaped like LiveKit's published
//! benchmark (livestream: 1 video publisher; audio room: 10 audio publishers; meeting: N×N
//! video), on both IO backends. For each it finds the most egress packets/s one shard core
//! sustains with loss < 0.5 % and p99 one-way latency < 50 ms, measures the reference
//! forwarder in the same run, and writes `benches/RESULTS.md` and `benches/e2e.png`.
//!
//! Run it with `./scripts/bench-e2e.sh` (builds the release binaries first). Environment:
//! E2E_BACKENDS (`io-uring,recvmmsg`), E2E_SCENARIOS (`livestream,audio,meeting`), E2E_SECS
//! (10, per point), E2E_MAX (largest subscriber count tried, 4000), RINGCAST_BIN, LOADTEST_BIN.

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
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Livestream => "livestream",
            Scenario::Audio => "audio",
            Scenario::Meeting => "meeting",
        }
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

fn start_server(backend: &str) -> (Server, u16) {
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
    (Server(child), grpc)
}

fn f(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(0.0)
}

fn run_point(backend: &str, scenario: Scenario, n: u32, secs: u64) -> Option<Point> {
    let (server, grpc) = start_server(backend);
    let json = std::env::temp_dir().join(format!("ringcast-e2e-{}-{n}.json", std::process::id()));
    let _ = std::fs::remove_file(&json);
    let status = Command::new("taskset")
        .arg("-c")
        .arg("1")
        .arg(bin("LOADTEST_BIN", "loadtest"))
        .args(scenario.loadtest_args(n))
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
    })
}

struct Sweep {
    backend: String,
    scenario: Scenario,
    points: Vec<Point>,
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

fn report(sweeps: &[Sweep], reference: f64, drained: f64, secs: u64) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# End-to-end benchmark results\n");
    let _ = writeln!(o, "- machine: {}", machine());
    let _ = writeln!(o, "- commit: `{}`, {}", commit(), chrono_free_date());
    let _ = writeln!(o, "- command: `./scripts/bench-e2e.sh` (E2E_SECS={secs})");
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
    for s in sweeps {
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
                if p.pass {
                    "pass".to_owned()
                } else if p.failures > 0 {
                    format!("fail ({} failed)", p.failures)
                } else {
                    "fail".to_owned()
                }
            );
        }
    }
    o
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
        .filter_map(|s| match s {
            "livestream" => Some(Scenario::Livestream),
            "audio" => Some(Scenario::Audio),
            "meeting" => Some(Scenario::Meeting),
            _ => None,
        })
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
            };
            for n in sc.points(max) {
                let Some(p) = run_point(b, *sc, n, secs) else {
                    println!("{} {b} N={n}: no report", sc.name());
                    break;
                };
                println!(
                    "{} {b} N={n}: {:.0} pkt/s, server {:.0} %, p99 {:.1} ms, loss {:.3} %, generator {:.0} %{} -> {}",
                    sc.name(),
                    p.egress_pps,
                    p.server_cpu,
                    p.p99_ms,
                    p.loss_pct,
                    p.generator_cpu,
                    if p.generator_bound { " (bound)" } else { "" },
                    if p.pass { "pass" } else { "fail" }
                );
                let pass = p.pass;
                sweep.points.push(p);
                if !pass {
                    break;
                }
            }
            sweeps.push(sweep);
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let md = report(&sweeps, reference, drained, secs);
    std::fs::write(dir.join("RESULTS.md"), &md).unwrap();
    match plot(&sweeps, &dir.join("e2e.png")) {
        Ok(()) => println!("wrote benches/RESULTS.md and benches/e2e.png"),
        Err(e) => println!("wrote benches/RESULTS.md; no plot: {e}"),
    }
    print!("{md}");
}
