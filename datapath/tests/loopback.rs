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
use ringcast_datapath::dtls::{self, Dtls, DtlsEvent, Fingerprint, Role};
use ringcast_datapath::srtp::{self, Profile};
use ringcast_datapath::stun::{self, IceRole};
use ringcast_datapath::{
    Backend, Command, Datapath, DatapathConfig, Event, Fanout, RemoteConfig, TransportConfig,
    TransportId,
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

fn cert() -> (X509, PKey<Private>) {
    ringcast_datapath::dtls::self_signed().unwrap()
}

fn fp(c: &X509) -> Fingerprint {
    Fingerprint::sha256(c).unwrap()
}

fn run(backend: Backend, profile: Profile) {
    // Both tests use shard 0's counters: one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    snapshotter();
    let (sc, sk) = cert();
    let (cc, ck) = cert();
    let (etx, erx) = mpsc::channel();
    let etx = std::sync::Mutex::new(etx);
    let mut dp = Datapath::start(
        DatapathConfig {
            shards: 1,
            bind_ip: "127.0.0.1".parse().unwrap(),
            port_base: 0,
            backend,
            certificate: sc.clone(),
            private_key: sk,
            srtp_profiles: vec![profile],
            pin_threads: false,
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
    let server = dp.local_addrs()[0];
    dp.send(
        0,
        Command::Upsert(TransportConfig {
            id: TransportId(1),
            local_ufrag: "SRVR".into(),
            local_pwd: "serverpassword012345678".into(),
            remote: Some(RemoteConfig {
                ufrag: "CLNT".into(),
                dtls_role: Role::Server,
                fingerprints: vec![fp(&cc)],
            }),
        }),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let client_addr = sock.local_addr().unwrap().to_string();
    let mut buf = [0u8; 2048];
    // ICE: nominate.
    let mut req = [0u8; 200];
    let n = stun::write_binding_request(
        &mut req,
        &[9; 12],
        b"SRVR:CLNT",
        1,
        IceRole::Controlling(3),
        true,
        b"serverpassword012345678",
    )
    .unwrap();
    sock.send_to(&req[..n], server).unwrap();
    let (len, _) = sock.recv_from(&mut buf).unwrap();
    let resp = stun::Message::parse(&buf[..len]).unwrap();
    assert_eq!(resp.class, stun::Class::Success);
    // DTLS as client.
    let ctx = dtls::context(&cc, &ck, &[profile]).unwrap();
    let mut d = Dtls::new(&ctx, Role::Client, vec![fp(&sc)]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let keys = loop {
        assert!(Instant::now() < deadline, "DTLS did not complete");
        while let Some(out) = d.poll_transmit() {
            sock.send_to(&out, server).unwrap();
        }
        match sock.recv_from(&mut buf) {
            Ok((len, _)) => {
                if let Some(DtlsEvent::Connected(k)) = d.handle_datagram(&buf[..len]) {
                    break k;
                }
            }
            Err(_) => {
                if d.timeout().is_some_and(|t| t.is_zero()) {
                    d.handle_timeout();
                }
            }
        }
    };
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
    let mut tx = srtp::Context::new(profile, &keys.local_key, &keys.local_salt).unwrap();
    let mut last = Vec::new();
    for seq in 0..50u16 {
        let mut p = vec![0x80, 111];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7]);
        p.extend_from_slice(&[1u8; 160]);
        let len = p.len();
        p.resize(len + 16, 0);
        let n = tx.protect_rtp(&mut p, len).unwrap();
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
    run(Backend::IoUring, Profile::AeadAes128Gcm);
}

#[test]
fn fallback_backend() {
    run(Backend::Fallback, Profile::Aes128CmHmacSha1_80);
}
