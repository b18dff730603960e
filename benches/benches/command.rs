//! How long a control command waits before its shard applies it, on an idle shard (the case a
//! Publish or Subscribe meets between media packets): `Datapath::send(Remove)` to the client
//! receiving the close_notify the shard sends when it applies the removal. Both backends.
//!
//! `cargo bench -p ringcast-benches --bench command` (env: BENCH_COMMANDS per backend,
//! default 200). Prints p50, p90, p99 and the maximum per backend.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup: a panic is a failure report

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringcast_datapath::client::{Client, connect_blocking};
use ringcast_datapath::dtls;
use ringcast_datapath::srtp::SrtpProfile;
use ringcast_datapath::{Backend, Command, Datapath, Fanout, TransportId};

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// Latencies in microseconds, one per command.
fn run(backend: Backend, commands: u64) -> Vec<f64> {
    let (config, server_fp) = ringcast_benches::bench_datapath_config(backend);
    let (cc, ck) = dtls::self_signed().unwrap();
    let client_fp = dtls::fingerprint_sha256(&cc).unwrap();
    let mut dp = Datapath::start(config, |_| Fanout::default(), Arc::new(|_, _| {})).unwrap();
    let server = dp.local_addrs()[0];
    let ctx = dtls::context(&cc, &ck, &[SrtpProfile::AeadAes128Gcm]).unwrap();
    let mut out = Vec::new();
    for i in 0..commands {
        dp.send(0, ringcast_benches::bench_transport(i, &client_fp))
            .unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut c =
            Client::new(&ctx, ringcast_benches::bench_client_config(i, &server_fp)).unwrap();
        connect_blocking(&mut c, &sock, server, Duration::from_secs(10)).unwrap();
        // Let the shard go idle: it is then blocked waiting for a datagram or its timer.
        std::thread::sleep(Duration::from_millis(23));
        sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let start = Instant::now();
        dp.send(0, Command::Remove(TransportId(i))).unwrap();
        let mut buf = [0u8; 2048];
        loop {
            let (n, _) = sock.recv_from(&mut buf).expect("close_notify within 1 s");
            let _ = c.handle_datagram(&mut buf[..n], Instant::now());
            if c.failure().is_some() {
                break;
            }
        }
        out.push(start.elapsed().as_secs_f64() * 1e6);
    }
    dp.stop();
    out
}

fn quantile(v: &[f64], q: f64) -> f64 {
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass other flags: run only for bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let commands = env("BENCH_COMMANDS", 200u64);
    for backend in [Backend::IoUring, Backend::Fallback] {
        let mut v = run(backend, commands);
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "command to an idle shard, {} backend, {commands} commands: p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
            backend.name(),
            quantile(&v, 0.5),
            quantile(&v, 0.9),
            quantile(&v, 0.99),
            v[v.len() - 1],
        );
    }
}
