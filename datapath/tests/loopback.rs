//! Real sockets on loopback, both IO backends: a client does ICE, DTLS and SRTP against a shard
//! and the shard's counters show the decrypted packets.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use ringcast_datapath::client::{Client, ClientConfig, Received, connect_blocking};
use ringcast_datapath::dtls::{self, DtlsRole, Fingerprint};
use ringcast_datapath::srtp::SrtpProfile;
use ringcast_datapath::{
    Backend, Command, Datapath, DatapathConfig, Event, Fanout, FanoutCommand, RemoteConfig,
    TransportConfig, TransportId,
};

fn snapshotter() -> &'static Snapshotter {
    static S: OnceLock<Snapshotter> = OnceLock::new();
    S.get_or_init(|| {
        let r = DebuggingRecorder::new();
        let s = r.snapshotter();
        r.install().unwrap();
        s
    })
}

/// Counter totals: the debugging recorder's snapshot hands out what accumulated since the last
/// one, so totals are kept here.
/// Metric name, labels, total.
type Total = (String, Vec<(String, String)>, u64);

fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    static TOTALS: OnceLock<Mutex<HashMap<String, Total>>> = OnceLock::new();
    let totals = TOTALS.get_or_init(Default::default);
    let mut totals = totals.lock().unwrap();
    for (k, _, _, v) in snapshotter().snapshot().into_vec() {
        if let DebugValue::Counter(c) = v {
            let key = k.key();
            let e = totals.entry(format!("{key:?}")).or_insert_with(|| {
                (
                    key.name().to_owned(),
                    key.labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect(),
                    0,
                )
            });
            e.2 += c;
        }
    }
    totals
        .values()
        .filter(|(n, ls, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(l, v)| ls.iter().any(|(a, b)| a == l && b == v))
        })
        .map(|(_, _, c)| c)
        .sum()
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn cert() -> (X509, PKey<Private>) {
    ringcast_datapath::dtls::self_signed().unwrap()
}

fn fp(c: &X509) -> Fingerprint {
    dtls::fingerprint_sha256(c).unwrap()
}

/// One datapath with a single shard on loopback, and its events.
fn start(
    backend: Backend,
    profile: SrtpProfile,
    send_slots: usize,
    server_cert: &(X509, PKey<Private>),
) -> (Datapath<Fanout>, mpsc::Receiver<(u16, Event)>) {
    let (etx, erx) = mpsc::channel();
    let etx = std::sync::Mutex::new(etx);
    let dp = Datapath::start(
        DatapathConfig {
            shards: 1,
            bind_ip: "127.0.0.1".parse().unwrap(),
            port_base: 0,
            backend,
            certificate: server_cert.0.clone(),
            private_key: server_cert.1.clone(),
            srtp_profiles: vec![profile],
            pin_threads: false,
            send_slots,
            pace_bursts: true,
        },
        |_| Fanout::default(),
        Arc::new(move |shard, ev| {
            let _ = etx.lock().unwrap().send((shard, ev));
        }),
    )
    .unwrap();
    assert!(dp.ready());
    assert_eq!(
        dp.backend(),
        if backend == Backend::Fallback {
            "recvmmsg"
        } else {
            "io_uring"
        }
    );
    (dp, erx)
}

/// Adds transport `id` to shard 0 and connects a client to it (ICE, DTLS as client).
fn connect(
    dp: &Datapath<Fanout>,
    id: u64,
    server_cert: &X509,
    client_ctx: &openssl::ssl::SslContext,
    client_fp: &Fingerprint,
) -> (UdpSocket, Client) {
    let (ufrag, pwd) = (format!("S{id:03}"), format!("serverpassword{id:010}"));
    dp.send(
        0,
        Command::Upsert(TransportConfig {
            id: TransportId(id),
            local_ufrag: ufrag.clone(),
            local_pwd: pwd.clone(),
            remote: Some(RemoteConfig {
                ufrag: format!("C{id:03}"),
                dtls_role: DtlsRole::Server,
                fingerprints: vec![client_fp.clone()],
            }),
        }),
    )
    .unwrap();
    let server = dp.local_addrs()[0];
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut client = Client::new(
        client_ctx,
        ClientConfig {
            local_ufrag: format!("C{id:03}"),
            remote_ufrag: ufrag,
            remote_pwd: pwd,
            tie_breaker: id + 1,
            server_fingerprints: vec![fp(server_cert)],
        },
    )
    .unwrap();
    // The shard may not have applied the Upsert yet: its first checks then get 401s, which
    // the client retries past.
    if let Err(e) = connect_blocking(&mut client, &sock, server, Duration::from_secs(10)) {
        panic!("transport {id}: {e}");
    }
    (sock, client)
}

/// An RTP packet with `payload` bytes, room for the SRTP tag after it.
fn rtp(seq: u16, payload: usize) -> (Vec<u8>, usize) {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7]);
    p.extend(std::iter::repeat_n(1u8, payload));
    let len = p.len();
    p.resize(len + 16, 0);
    (p, len)
}

fn run(backend: Backend, profile: SrtpProfile) {
    // The tests share shard 0's counters: one at a time.
    let _serial = serial();
    snapshotter();
    let server_cert = cert();
    let (cc, ck) = cert();
    let (mut dp, erx) = start(
        backend,
        profile,
        ringcast_datapath::OUTBOX_SLOTS,
        &server_cert,
    );
    let server = dp.local_addrs()[0];
    let ctx = dtls::context(&cc, &ck, &[profile]).unwrap();
    let (sock, mut client) = connect(&dp, 1, &server_cert.0, &ctx, &fp(&cc));
    let client_addr = sock.local_addr().unwrap().to_string();
    let (shard, ev) = erx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (shard, ev),
        (
            0,
            Event::Connected {
                id: TransportId(1),
                profile
            }
        )
    );
    // SRTP: 50 packets, one replay, one from a stranger.
    let before = counter("ringcast_srtp_packets_in_total", &[("kind", "rtp")]);
    let replays_before = counter("ringcast_drops_total", &[("reason", "srtp_replay")]);
    let mut last = Vec::new();
    for seq in 0..50u16 {
        let (mut p, len) = rtp(seq, 160);
        let n = client.protect_rtp(&mut p, len).unwrap();
        sock.send_to(&p[..n], server).unwrap();
        last = p[..n].to_vec();
    }
    sock.send_to(&last, server).unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(&last, server).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter("ringcast_srtp_packets_in_total", &[("kind", "rtp")]) < before + 50 {
        assert!(
            Instant::now() < deadline,
            "shard did not count 50 packets ({client_addr})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        counter("ringcast_srtp_packets_in_total", &[("kind", "rtp")]),
        before + 50
    );
    assert!(counter("ringcast_drops_total", &[("reason", "srtp_replay")]) > replays_before);
    assert!(counter("ringcast_drops_total", &[("reason", "unknown_source")]) >= 1);
    dp.send(0, Command::Remove(TransportId(1))).unwrap();
    dp.stop();
}

#[test]
fn io_uring_backend() {
    run(Backend::IoUring, SrtpProfile::AeadAes128Gcm);
}

#[test]
fn fallback_backend() {
    run(Backend::Fallback, SrtpProfile::Aes128CmHmacSha1_80);
}

/// A burst whose fan-out needs several times the shard's send slots: the sweep yields until
/// sends complete instead of dropping, and every subscriber gets every packet.
fn burst(backend: Backend) {
    const SUBSCRIBERS: u64 = 24;
    const PACKETS: u16 = 400;
    let _serial = serial();
    snapshotter();
    let server_cert = cert();
    let (cc, ck) = cert();
    let profile = SrtpProfile::AeadAes128Gcm;
    let (mut dp, _events) = start(backend, profile, 256, &server_cert);
    let server = dp.local_addrs()[0];
    let ctx = dtls::context(&cc, &ck, &[profile]).unwrap();
    let (pub_sock, mut publisher) = connect(&dp, 100, &server_cert.0, &ctx, &fp(&cc));
    let subs: Vec<(UdpSocket, Client)> = (1..=SUBSCRIBERS)
        .map(|id| connect(&dp, id, &server_cert.0, &ctx, &fp(&cc)))
        .collect();
    dp.send(
        0,
        Command::Router(FanoutCommand::Route {
            from: TransportId(100),
            to: (1..=SUBSCRIBERS).map(TransportId).collect(),
        }),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let full_before = counter("ringcast_drops_total", &[("reason", "send_queue_full")]);
    let yields_before = counter("ringcast_shard_sweeps_yielded_total", &[]);
    // Each subscriber reads on its own thread, so no client socket buffer overflows.
    let readers: Vec<_> = subs
        .into_iter()
        .map(|(sock, mut c)| {
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                let mut buf = [0u8; 2048];
                let deadline = Instant::now() + Duration::from_secs(10);
                while seen.len() < usize::from(PACKETS) && Instant::now() < deadline {
                    if let Ok((n, _)) = sock.recv_from(&mut buf)
                        && let Received::Rtp(len) = c.handle_datagram(&mut buf[..n], Instant::now())
                        && len >= 4
                    {
                        seen.insert(u16::from_be_bytes([buf[2], buf[3]]));
                    }
                }
                seen.len()
            })
        })
        .collect();
    for seq in 0..PACKETS {
        let (mut p, len) = rtp(seq, 1000);
        let n = publisher.protect_rtp(&mut p, len).unwrap();
        pub_sock.send_to(&p[..n], server).unwrap();
    }
    let got: Vec<usize> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    // Published every 250 ms.
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        got.iter().all(|n| *n == usize::from(PACKETS)),
        "every subscriber gets all {PACKETS}: {got:?}"
    );
    assert_eq!(
        counter("ringcast_drops_total", &[("reason", "send_queue_full")]),
        full_before,
        "nothing dropped for lack of slots"
    );
    assert!(
        counter("ringcast_shard_sweeps_yielded_total", &[]) > yields_before,
        "the burst needed more than 256 slots at once, so sweeps yielded"
    );
    dp.stop();
}

#[test]
fn io_uring_burst_beyond_the_send_slots() {
    burst(Backend::IoUring);
}

#[test]
fn fallback_burst_beyond_the_send_slots() {
    burst(Backend::Fallback);
}
