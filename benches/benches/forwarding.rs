//! Shard forwarding on loopback: one SRTP publisher fanned out to 10 subscribers, egress
//! packets/s of one shard core, measured side by side with a reference forwarder that has no
//! protocol logic (recvmmsg, then the same AES-GCM encrypt per egress packet, sendmmsg).
//!
//! `cargo bench -p ringcast-benches --bench forwarding` (env: BENCH_SECS per run, default 3;
//! BENCH_RUNS, default 3; BENCH_BACKEND io_uring|recvmmsg, default io_uring; BENCH_ROUTER
//! media|fanout, default media: the server's media router with one track and 10 subscriptions,
//! or the datapath's bare fan-out). Prints the median egress packets/s of each and the ratio.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup: a panic is a failure report

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use ringcast_control::codec::CodecName;
use ringcast_datapath::client::{Client, connect_blocking};
use ringcast_datapath::dtls::{self, Fingerprint};
use ringcast_datapath::srtp::{Context, SrtpProfile};
use ringcast_datapath::{Backend, Command, Datapath, Fanout, FanoutCommand, Router, TransportId};
use ringcast_media::fixtures;
use ringcast_media::router::{MediaCommand, MediaRouter, TrackId};

const SUBSCRIBERS: usize = 10;
const PAYLOAD: usize = 1200;

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn snapshotter() -> &'static Snapshotter {
    static S: OnceLock<Snapshotter> = OnceLock::new();
    S.get_or_init(|| {
        let r = DebuggingRecorder::new();
        let s = r.snapshotter();
        r.install().unwrap();
        s
    })
}

/// Running totals of a counter over all labels (snapshots hand out deltas).
fn counter_total(name: &str) -> u64 {
    static TOTALS: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    let mut t = TOTALS.get_or_init(Default::default).lock().unwrap();
    for (k, _, _, v) in snapshotter().snapshot().into_vec() {
        if let DebugValue::Counter(c) = v {
            *t.entry(format!("{:?}", k.key())).or_default() += c;
            *t.entry(format!("name:{}", k.key().name())).or_default() += c;
        }
    }
    *t.get(&format!("name:{name}")).unwrap_or(&0)
}

fn cert() -> (X509, PKey<Private>) {
    ringcast_datapath::dtls::self_signed().unwrap()
}

fn fp(c: &X509) -> Fingerprint {
    dtls::fingerprint_sha256(c).unwrap()
}

/// ICE + DTLS from a client socket (the shared client); returns its SRTP keys.
fn connect(
    sock: &UdpSocket,
    server: SocketAddr,
    i: usize,
    ctx: &openssl::ssl::SslContext,
    server_fp: &Fingerprint,
) -> dtls::SrtpKeys {
    let mut c = Client::new(
        ctx,
        ringcast_benches::bench_client_config(i as u64, server_fp),
    )
    .unwrap();
    connect_blocking(&mut c, sock, server, Duration::from_secs(10)).unwrap();
    c.keys().cloned().unwrap()
}

/// Which router the shard runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Routing {
    Media,
    Fanout,
}

/// The media router's commands: the publisher's stream (SSRC 0x1234, payload type 96) as one
/// track without keyframe gating, and a subscription for each subscriber.
fn media_routes() -> Vec<MediaCommand> {
    let mut track = fixtures::vp8_track(TrackId(1), TransportId(0), fixtures::single(0x1234, None));
    track.codec = CodecName::Opus;
    track.clock_rate = 48_000;
    let mut cmds = vec![MediaCommand::AddTrack(track)];
    for sub in 1..=SUBSCRIBERS as u64 {
        cmds.push(MediaCommand::Subscribe(fixtures::subscription(
            TrackId(1),
            TransportId(sub),
            0x1000 + sub as u32,
            true,
        )));
    }
    cmds
}

fn run_shard(backend: Backend, secs: u64, routing: Routing) -> f64 {
    match routing {
        Routing::Media => run_with(backend, secs, |_| MediaRouter::default(), media_routes()),
        Routing::Fanout => run_with(
            backend,
            secs,
            |_| Fanout::default(),
            vec![FanoutCommand::Route {
                from: TransportId(0),
                to: (1..=SUBSCRIBERS as u64).map(TransportId).collect(),
            }],
        ),
    }
}

/// One run of the shard: egress packets/s.
fn run_with<R: Router>(
    backend: Backend,
    secs: u64,
    router: impl Fn(u16) -> R,
    routes: Vec<R::Command>,
) -> f64 {
    let (config, server_fp) = ringcast_benches::bench_datapath_config(backend);
    let (cc, ck) = cert();
    let mut dp = Datapath::start(config, router, Arc::new(|_, _| {})).unwrap();
    let server = dp.local_addrs()[0];
    let ctx = dtls::context(&cc, &ck, &[SrtpProfile::AeadAes128Gcm]).unwrap();
    let mut socks = Vec::new();
    let mut keys = Vec::new();
    for i in 0..=SUBSCRIBERS as u64 {
        dp.send(0, ringcast_benches::bench_transport(i, &fp(&cc)))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..=SUBSCRIBERS {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        keys.push(connect(&s, server, i, &ctx, &server_fp));
        socks.push(s);
    }
    for r in routes {
        dp.send(0, Command::Router(r)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let k = &keys[0];
    let tx = Context::new(k.profile, &k.local_key, &k.local_salt).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let pub_sock = socks.remove(0);
    let sender =
        ringcast_benches::reference::publisher(pub_sock, server, tx, PAYLOAD, stop.clone());
    // Warm up, then measure the shard's successful sends over the window.
    std::thread::sleep(Duration::from_millis(500));
    let start_count = counter_total("ringcast_packets_out_total");
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    // Counters are published every 250 ms: wait one period on both ends of the window.
    let end_count = counter_total("ringcast_packets_out_total");
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    dp.stop();
    drop(socks);
    (end_count - start_count) as f64 / elapsed.as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass other flags: run only for bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    snapshotter();
    let secs = env("BENCH_SECS", 3u64);
    let runs = env("BENCH_RUNS", 3usize);
    let backend = match std::env::var("BENCH_BACKEND").as_deref() {
        Ok("recvmmsg") => Backend::Fallback,
        _ => Backend::IoUring,
    };
    let routing = match std::env::var("BENCH_ROUTER").as_deref() {
        Ok("fanout") => Routing::Fanout,
        _ => Routing::Media,
    };
    let (mut shard, mut reference) = (Vec::new(), Vec::new());
    for i in 0..runs {
        // Alternate, so drift on a shared machine hits both alike.
        let s = run_shard(backend, secs, routing);
        let r = ringcast_benches::reference::run(secs, SUBSCRIBERS, PAYLOAD);
        println!(
            "run {i}: shard {s:.0} pkt/s, reference {r:.0} pkt/s, ratio {:.3}",
            s / r
        );
        shard.push(s);
        reference.push(r);
    }
    let (s, r) = (median(&mut shard), median(&mut reference));
    println!(
        "forwarding 1 -> {SUBSCRIBERS}, {PAYLOAD} B payload, AES-128-GCM, {} backend, {} router, {runs} runs x {secs} s:\n  shard     median egress {s:.0} pkt/s\n  reference median egress {r:.0} pkt/s\n  ratio     {:.3}",
        backend.name(),
        if routing == Routing::Media {
            "media"
        } else {
            "fan-out"
        },
        s / r
    );
}
