//! Shared fixtures for Ringcast's benchmarks (`cargo bench -p ringcast-benches`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup: a panic is a failure report

/// A plaintext RTP packet of `len` bytes (12-byte header, SSRC 0x1234, payload type 96).
pub fn rtp_packet(seq: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&0x1234u32.to_be_bytes());
    p.resize(len, 0xA5);
    p
}

/// The datapath as the benchmarks run it: one shard on loopback (an ephemeral port), pinned,
/// burst pacing on, AES-128-GCM, a fresh certificate; and that certificate's fingerprint, for
/// the clients to check.
pub fn bench_datapath_config(
    backend: ringcast_datapath::Backend,
) -> (
    ringcast_datapath::DatapathConfig,
    ringcast_datapath::dtls::Fingerprint,
) {
    let (certificate, private_key) = ringcast_datapath::dtls::self_signed().unwrap();
    let fingerprint = ringcast_datapath::dtls::fingerprint_sha256(&certificate).unwrap();
    let config = ringcast_datapath::DatapathConfig {
        shards: 1,
        bind_ip: "127.0.0.1".parse().unwrap(),
        port_base: 0,
        backend,
        certificate,
        private_key,
        srtp_profiles: vec![ringcast_datapath::srtp::SrtpProfile::AeadAes128Gcm],
        pin_threads: true,
        send_slots: ringcast_datapath::OUTBOX_SLOTS,
        pace_bursts: true,
    };
    (config, fingerprint)
}

/// The shard-side half of a benchmark client: transport `id` with ufrag `S{id:04}`, the
/// benchmarks' password, and the client's DTLS fingerprint (the client speaks `C{id:04}`).
pub fn bench_transport<C>(
    id: u64,
    client_fp: &ringcast_datapath::dtls::Fingerprint,
) -> ringcast_datapath::Command<C> {
    ringcast_datapath::Command::Upsert(ringcast_datapath::TransportConfig {
        id: ringcast_datapath::TransportId(id),
        local_ufrag: format!("S{id:04}"),
        local_pwd: BENCH_PASSWORD.into(),
        remote: Some(ringcast_datapath::RemoteConfig {
            ufrag: format!("C{id:04}"),
            dtls_role: ringcast_datapath::dtls::DtlsRole::Server,
            fingerprints: vec![client_fp.clone()],
        }),
    })
}

/// The client-side half of `bench_transport`.
pub fn bench_client_config(
    id: u64,
    server_fp: &ringcast_datapath::dtls::Fingerprint,
) -> ringcast_datapath::client::ClientConfig {
    ringcast_datapath::client::ClientConfig {
        local_ufrag: format!("C{id:04}"),
        remote_ufrag: format!("S{id:04}"),
        remote_pwd: BENCH_PASSWORD.into(),
        tie_breaker: id + 1,
        server_fingerprints: vec![server_fp.clone()],
    }
}

const BENCH_PASSWORD: &str = "benchpassword0123456789a";

/// The reference forwarder: what one core does with no protocol logic at all (recvmmsg, then
/// per egress packet a copy and an AES-128-GCM encryption, then sendmmsg), and the publisher
/// that feeds it. The forwarding and end-to-end benchmarks report Ringcast against it,
/// measured in the same run.
pub mod reference {
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::{Aes128Gcm, KeyInit, Nonce};
    use ringcast_datapath::srtp::{Context, SrtpProfile};

    use crate::rtp_packet;

    /// Pins the calling thread to `core`.
    pub fn pin(core: usize) {
        // SAFETY: plain affinity call on the current thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(core, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
    /// Sends SRTP from `sock` to `to` as fast as it can until `stop`.
    pub fn publisher(
        sock: UdpSocket,
        to: SocketAddr,
        mut tx: Context,
        payload: usize,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<u64> {
        std::thread::spawn(move || {
            pin(1);
            let plain = rtp_packet(0, 12 + payload);
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

    /// Reads every sink until `stop` (on core 1, beside the publisher), as real subscribers do:
    /// on loopback a receiver that waits for datagrams costs the sender a wakeup per datagram,
    /// which sinks nobody reads (their buffers full, the kernel drops early) do not.
    fn drain(sinks: Vec<UdpSocket>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            pin(1);
            let mut fds: Vec<libc::pollfd> = sinks
                .iter()
                .map(|s| libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: `fds` outlives the call.
                let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 10) };
                if n <= 0 {
                    continue;
                }
                for (f, s) in fds.iter().zip(&sinks) {
                    if f.revents & libc::POLLIN != 0 {
                        // SAFETY: plain non-blocking receives into a local buffer.
                        while unsafe {
                            libc::recv(
                                s.as_raw_fd(),
                                buf.as_mut_ptr().cast(),
                                buf.len(),
                                libc::MSG_DONTWAIT,
                            )
                        } > 0
                        {}
                    }
                }
            }
        })
    }

    /// Runs the reference on core 0 fed by a publisher on core 1 for `secs`: egress packets/s
    /// to `subscribers` sinks that nobody reads.
    pub fn run(secs: u64, subscribers: usize, payload: usize) -> f64 {
        run_with(secs, subscribers, payload, false)
    }

    /// As [`run`], with the sinks read on core 1 (as the end-to-end benchmark's subscribers).
    pub fn run_drained(secs: u64, subscribers: usize, payload: usize) -> f64 {
        run_with(secs, subscribers, payload, true)
    }

    fn run_with(secs: u64, subscribers: usize, payload: usize, drained: bool) -> f64 {
        let ingress = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ingress_addr = ingress.local_addr().unwrap();
        let sinks: Vec<UdpSocket> = (0..subscribers)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let dests: Vec<SocketAddr> = sinks.iter().map(|s| s.local_addr().unwrap()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (sinks, reader) = if drained {
            (Vec::new(), Some(drain(sinks, stop.clone())))
        } else {
            (sinks, None)
        };
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
                let mut sbufs = vec![[0u8; 2048]; BATCH * subscribers];
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
                    BATCH * subscribers
                ];
                // SAFETY: zeroed mmsghdr is valid; pointers set below.
                let mut rmsgs: Vec<libc::mmsghdr> =
                    (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
                let mut smsgs: Vec<libc::mmsghdr> = (0..BATCH * subscribers)
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
        let tx = Context::new(SrtpProfile::AeadAes128Gcm, &key, &salt).unwrap();
        let sender = publisher(sender_sock, ingress_addr, tx, payload, stop.clone());
        std::thread::sleep(Duration::from_millis(500));
        let start_count = egress.load(Ordering::Relaxed);
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        let end_count = egress.load(Ordering::Relaxed);
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        let _ = sender.join();
        let _ = fwd.join();
        if let Some(r) = reader {
            let _ = r.join();
        }
        drop(sinks);
        (end_count - start_count) as f64 / elapsed.as_secs_f64()
    }
}
