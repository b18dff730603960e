//! Per-packet protocol costs: SRTP protect/unprotect of a 1200-byte packet for each profile,
//! and answering one ICE connectivity check.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast_benches::rtp_packet;
use ringcast_datapath::ice::IceLite;
use ringcast_datapath::srtp::{Context, SrtpProfile};
use ringcast_datapath::stun::{self, IceRole, Message};

const PROFILES: [(SrtpProfile, &str); 3] = [
    (SrtpProfile::AeadAes128Gcm, "aead_aes_128_gcm"),
    (SrtpProfile::AeadAes256Gcm, "aead_aes_256_gcm"),
    (SrtpProfile::Aes128CmHmacSha1_80, "aes_cm_128_hmac_sha1_80"),
];

fn context(p: SrtpProfile) -> Context {
    let key: Vec<u8> = (0..p.master_key_len() as u8).collect();
    let salt: Vec<u8> = (0..p.master_salt_len() as u8).collect();
    Context::new(p, &key, &salt).unwrap()
}

fn srtp(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp_1200B");
    g.throughput(Throughput::Bytes(1200));
    for (p, name) in PROFILES {
        let plain = rtp_packet(1, 1200);
        g.bench_function(format!("protect/{name}"), |b| {
            let mut tx = context(p);
            let mut buf = plain.clone();
            buf.resize(1200 + p.rtp_overhead(), 0);
            let mut seq = 0u16;
            b.iter(|| {
                seq = seq.wrapping_add(1);
                buf[..1200].copy_from_slice(&plain);
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                black_box(tx.protect_rtp(&mut buf, 1200).unwrap())
            })
        });
        // What forwarding does now: the header into the send slot, the payload sealed from the
        // received packet straight after it (one pass over the payload, against the copy and
        // in-place pass above).
        g.bench_function(format!("protect_from/{name}"), |b| {
            let mut tx = context(p);
            let mut buf = vec![0u8; 1200 + p.rtp_overhead()];
            let mut seq = 0u16;
            b.iter(|| {
                seq = seq.wrapping_add(1);
                buf[..12].copy_from_slice(&plain[..12]);
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                black_box(tx.protect_rtp_from(&mut buf, 12, &plain[12..]).unwrap())
            })
        });
        // Pre-encrypt a window of packets; each iteration decrypts a fresh one in place.
        g.bench_function(format!("unprotect/{name}"), |b| {
            let mut tx = context(p);
            let n = 4096u16;
            let packets: Vec<Vec<u8>> = (0..n)
                .map(|s| {
                    let mut buf = rtp_packet(s, 1200);
                    buf.resize(1200 + p.rtp_overhead(), 0);
                    let len = tx.protect_rtp(&mut buf, 1200).unwrap();
                    buf.truncate(len);
                    buf
                })
                .collect();
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    let mut rx = context(p);
                    let mut batch = packets.clone();
                    let take = (iters - done).min(u64::from(n)) as usize;
                    let start = Instant::now();
                    for pkt in batch.iter_mut().take(take) {
                        black_box(rx.unprotect_rtp(pkt).unwrap());
                    }
                    total += start.elapsed();
                    done += take as u64;
                }
                total
            })
        });
    }
    g.finish();
}

fn stun_check(c: &mut Criterion) {
    let mut req = [0u8; 200];
    let n = stun::write_binding_request(
        &mut req,
        &[3; 12],
        b"LOCALUFR:REMOTE01",
        0x6e00_01ff,
        IceRole::Controlling(7),
        true,
        b"localpassword0123456789a",
    )
    .unwrap();
    let req = &req[..n];
    let src = "192.0.2.10:40000".parse().unwrap();
    let mut ice = IceLite::new("LOCALUFR", "localpassword0123456789a", Some("REMOTE01"));
    let now = Instant::now();
    c.bench_function("stun/answer_check", |b| {
        let mut out = [0u8; stun::MAX_RESPONSE];
        b.iter(|| {
            let msg = Message::parse(black_box(req)).unwrap();
            black_box(ice.handle_check(&msg, src, now, &mut out))
        })
    });
}

criterion_group!(benches, srtp, stun_check);
criterion_main!(benches);
