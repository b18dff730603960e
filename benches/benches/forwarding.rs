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
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, KeyInit, Nonce};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use ringcast_benches::rtp_packet;
use ringcast_control::codec::CodecName;
use ringcast_datapath::client::{Client, ClientConfig, connect_blocking};
use ringcast_datapath::dtls::{self, Fingerprint, Role};
use ringcast_datapath::srtp::{Context, Profile};
use ringcast_datapath::{
    Backend, Command, Datapath, DatapathConfig, Fanout, FanoutCommand, RemoteConfig, Router,
    TransportConfig, TransportId,
};
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
    Fingerprint::sha256(c).unwrap()
}

fn pin(core: usize) {
    // SAFETY: plain affinity call on the current thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
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
        ClientConfig {
            local_ufrag: format!("C{i:03}"),
            remote_ufrag: format!("S{i:03}"),
            remote_pwd: "benchpassword0123456789a".into(),
            tie_breaker: i as u64 + 1,
            server_fingerprints: vec![server_fp.clone()],
        },
    )
    .unwrap();
    connect_blocking(&mut c, sock, server, Duration::from_secs(10)).unwrap();
    c.keys().cloned().unwrap()
}

/// Sends SRTP from `sock` to `to` as fast as it can until `stop`.
fn publisher(
    sock: UdpSocket,
    to: SocketAddr,
    mut tx: Context,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        pin(1);
        let plain = rtp_packet(0, 12 + PAYLOAD);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 16, 0);
        let mut seq = 0u16;
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            seq = seq.wrapping_add(1);
            buf[..plain.len()].copy_from_slice(&plain);
            buf[2..4].copy_from_slice(&seq.to_be_bytes());
            let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
            if sock.send_to(&buf[..n], to).is_ok() {
                sent += 1;
            }
        }
        sent
    })
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
    let (sc, sk) = cert();
    let (cc, ck) = cert();
    let mut dp = Datapath::start(
        DatapathConfig {
            shards: 1,
            bind_ip: "127.0.0.1".parse().unwrap(),
            port_base: 0,
            backend,
            certificate: sc.clone(),
            private_key: sk,
            srtp_profiles: vec![Profile::AeadAes128Gcm],
            pin_threads: true,
            send_slots: ringcast_datapath::OUTBOX_SLOTS,
            pace_bursts: true,
        },
        router,
        Arc::new(|_, _| {}),
    )
    .unwrap();
    let server = dp.local_addrs()[0];
    let ctx = dtls::context(&cc, &ck, &[Profile::AeadAes128Gcm]).unwrap();
    let mut socks = Vec::new();
    let mut keys = Vec::new();
    for i in 0..=SUBSCRIBERS as u64 {
        dp.send(
            0,
            Command::Upsert(TransportConfig {
                id: TransportId(i),
                local_ufrag: format!("S{i:03}"),
                local_pwd: "benchpassword0123456789a".into(),
                remote: Some(RemoteConfig {
                    ufrag: format!("C{i:03}"),
                    dtls_role: Role::Server,
                    fingerprints: vec![fp(&cc)],
                }),
            }),
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..=SUBSCRIBERS {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        keys.push(connect(&s, server, i, &ctx, &fp(&sc)));
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
    let sender = publisher(pub_sock, server, tx, stop.clone());
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

/// The reference: recvmmsg, 10 × (copy + AES-128-GCM encrypt), sendmmsg. Egress packets/s.
fn run_reference(secs: u64) -> f64 {
    let ingress = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ingress_addr = ingress.local_addr().unwrap();
    let sinks: Vec<UdpSocket> = (0..SUBSCRIBERS)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let dests: Vec<SocketAddr> = sinks.iter().map(|s| s.local_addr().unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let egress = Arc::new(AtomicU64::new(0));
    let fwd = {
        let (stop, egress) = (stop.clone(), egress.clone());
        std::thread::spawn(move || {
            pin(0);
            ingress
                .set_read_timeout(Some(Duration::from_millis(10)))
                .unwrap();
            let out = UdpSocket::bind("127.0.0.1:0").unwrap();
            let aead = Aes128Gcm::new_from_slice(&[7u8; 16]).unwrap();
            const BATCH: usize = 32;
            let mut rbufs = vec![[0u8; 2048]; BATCH];
            let mut sbufs = vec![[0u8; 2048]; BATCH * SUBSCRIBERS];
            let addrs: Vec<libc::sockaddr_in> = dests
                .iter()
                .map(|d| {
                    let SocketAddr::V4(a) = d else { unreachable!() };
                    // SAFETY: zeroed sockaddr_in is valid.
                    let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                    s.sin_family = libc::AF_INET as _;
                    s.sin_port = a.port().to_be();
                    s.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                    s
                })
                .collect();
            let mut riov: Vec<libc::iovec> = Vec::with_capacity(BATCH);
            let mut siov: Vec<libc::iovec> = vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH * SUBSCRIBERS
            ];
            // SAFETY: zeroed mmsghdr is valid; pointers set below.
            let mut rmsgs: Vec<libc::mmsghdr> =
                (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
            let mut smsgs: Vec<libc::mmsghdr> = (0..BATCH * SUBSCRIBERS)
                .map(|_| unsafe { std::mem::zeroed() })
                .collect();
            for b in rbufs.iter_mut() {
                riov.push(libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: b.len(),
                });
            }
            for (m, iov) in rmsgs.iter_mut().zip(riov.iter_mut()) {
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
            }
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: buffers and headers outlive the call.
                let n = unsafe {
                    libc::recvmmsg(
                        ingress.as_raw_fd(),
                        rmsgs.as_mut_ptr(),
                        BATCH as u32,
                        0,
                        std::ptr::null_mut(),
                    )
                };
                if n <= 0 {
                    continue;
                }
                let mut k = 0;
                for i in 0..n as usize {
                    let len = rmsgs[i].msg_len as usize;
                    for (d, addr) in addrs.iter().enumerate() {
                        let b = &mut sbufs[k];
                        b[..len].copy_from_slice(&rbufs[i][..len]);
                        seq += 1;
                        let mut nonce = [0u8; 12];
                        nonce[4..].copy_from_slice(&seq.to_be_bytes());
                        let (head, body) = b.split_at_mut(12);
                        let tag = aead
                            .encrypt_in_place_detached(
                                &Nonce::from(nonce),
                                head,
                                &mut body[..len - 12],
                            )
                            .unwrap();
                        body[len - 12..len + 4].copy_from_slice(&tag);
                        siov[k] = libc::iovec {
                            iov_base: b.as_mut_ptr().cast(),
                            iov_len: len + 16,
                        };
                        smsgs[k].msg_hdr.msg_iov = &mut siov[k];
                        smsgs[k].msg_hdr.msg_iovlen = 1;
                        smsgs[k].msg_hdr.msg_name =
                            (addr as *const libc::sockaddr_in).cast_mut().cast();
                        smsgs[k].msg_hdr.msg_namelen =
                            std::mem::size_of::<libc::sockaddr_in>() as u32;
                        k += 1;
                        let _ = d;
                    }
                }
                let mut off = 0;
                while off < k {
                    // SAFETY: as above.
                    let sent = unsafe {
                        libc::sendmmsg(
                            out.as_raw_fd(),
                            smsgs[off..].as_mut_ptr(),
                            (k - off) as u32,
                            0,
                        )
                    };
                    if sent <= 0 {
                        break;
                    }
                    egress.fetch_add(sent as u64, Ordering::Relaxed);
                    off += sent as usize;
                }
            }
        })
    };
    // The same publisher traffic (SRTP-sized packets), into the reference.
    let sender_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let key: Vec<u8> = (0..16).collect();
    let salt: Vec<u8> = (0..12).collect();
    let tx = Context::new(Profile::AeadAes128Gcm, &key, &salt).unwrap();
    let sender = publisher(sender_sock, ingress_addr, tx, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let start_count = egress.load(Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let end_count = egress.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    let _ = fwd.join();
    drop(sinks);
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
        let r = run_reference(secs);
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
