use std::time::{Duration, Instant};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use super::*;
use crate::stun::IceRole;
use crate::{Egress, Fanout, FanoutCommand, Router};

fn cert() -> (X509, PKey<Private>) {
    crate::dtls::self_signed().unwrap()
}

fn fp(c: &X509) -> Fingerprint {
    crate::dtls::fingerprint_sha256(c).unwrap()
}

const PEER: &str = "127.0.0.1:50000";

struct Peer {
    id: TransportId,
    dtls: Dtls,
    addr: SocketAddr,
    user: Vec<u8>,
    keys: Option<crate::dtls::SrtpKeys>,
}

fn setup() -> (ShardCore<Fanout>, Peer, Instant) {
    let (core, mut peers, now) = setup_n(1);
    (core, peers.remove(0), now)
}

/// A shard with `n` transports (ids 7, 8, ...) and a client for each on its own port.
fn setup_n(n: u16) -> (ShardCore<Fanout>, Vec<Peer>, Instant) {
    setup_with(n, Fanout::default())
}

fn setup_with<R: Router>(n: u16, router: R) -> (ShardCore<R>, Vec<Peer>, Instant) {
    let (sc, sk) = cert();
    let (cc, ck) = cert();
    let all = [
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
        SrtpProfile::Aes128CmHmacSha1_80,
    ];
    let mut core = ShardCore::new(crate::dtls::context(&sc, &sk, &all).unwrap(), router);
    let client_ctx = crate::dtls::context(&cc, &ck, &all).unwrap();
    let peers = (0..n)
        .map(|i| {
            let (local, remote) = if i == 0 {
                ("SRVR".to_owned(), "CLNT".to_owned())
            } else {
                (format!("SRV{i}"), format!("CLN{i}"))
            };
            let id = TransportId(7 + u64::from(i));
            core.handle_command(
                Command::Upsert(TransportConfig {
                    id,
                    local_ufrag: local.clone(),
                    local_pwd: "serverpassword012345678".into(),
                    remote: Some(RemoteConfig {
                        ufrag: remote.clone(),
                        dtls_role: DtlsRole::Server,
                        fingerprints: vec![fp(&cc)],
                    }),
                }),
                Instant::now(),
            );
            Peer {
                id,
                dtls: Dtls::new(&client_ctx, DtlsRole::Client, vec![fp(&sc)]).unwrap(),
                addr: SocketAddr::new([127, 0, 0, 1].into(), 50000 + i),
                user: format!("{local}:{remote}").into_bytes(),
                keys: None,
            }
        })
        .collect();
    (core, peers, Instant::now())
}

fn check(use_candidate: bool, pwd: &[u8]) -> Vec<u8> {
    check_as(b"SRVR:CLNT", use_candidate, pwd)
}

fn check_as(user: &[u8], use_candidate: bool, pwd: &[u8]) -> Vec<u8> {
    let mut b = [0u8; 200];
    let n = stun::write_binding_request(
        &mut b,
        &[1; 12],
        user,
        1,
        IceRole::Controlling(1),
        use_candidate,
        pwd,
    )
    .unwrap();
    b[..n].to_vec()
}

/// ICE then DTLS until both sides are connected.
fn connect(core: &mut ShardCore<Fanout>, peer: &mut Peer, now: Instant) {
    connect_with(core, peer, now, true);
}

fn connect_with(core: &mut ShardCore<Fanout>, peer: &mut Peer, now: Instant, nominate: bool) {
    let mut c = check_as(&peer.user, nominate, b"serverpassword012345678");
    core.handle_datagram(peer.addr, &mut c, now);
    let t: Vec<Transmit> = core.take_transmits();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].to, peer.addr);
    assert_eq!(&t[0].data[..2], &[0x01, 0x01], "binding success");
    for _ in 0..20 {
        while let Some(mut d) = peer.dtls.poll_transmit() {
            core.handle_datagram(peer.addr, &mut d, now);
        }
        let out: Vec<Transmit> = core.take_transmits();
        if out.is_empty() && peer.keys.is_some() {
            break;
        }
        for t in out {
            assert_eq!(t.to, peer.addr);
            if let Some(DtlsEvent::Connected(k)) = peer.dtls.handle_datagram(&t.data) {
                peer.keys = Some(k);
            }
        }
    }
    assert!(peer.keys.is_some(), "client connected");
    assert!(
        !core.stats.dtls_durations.is_empty(),
        "handshake duration recorded"
    );
    let ev: Vec<Event> = core.take_events().collect();
    assert_eq!(
        ev,
        [Event::Connected {
            id: peer.id,
            profile: SrtpProfile::AeadAes128Gcm
        }]
    );
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut v = vec![0x80, 96];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 42]);
    v.extend_from_slice(&[0xAB; 200]);
    v
}

/// Sends one RTP packet to each transport the moment it connects, as the media router's
/// keyframe replay for a newcomer does.
#[derive(Debug, Default)]
struct Greeter;

impl Router for Greeter {
    type Command = ();
    fn handle_command(&mut self, _: (), _: &mut dyn Egress, _: Instant) {}
    fn handle_rtp(&mut self, _: TransportId, _: &[u8], _: &mut dyn Egress, _: Instant) {}
    fn transport_connected(&mut self, id: TransportId, io: &mut dyn Egress, _now: Instant) {
        let p = rtp(1);
        assert!(io.send_rtp(id, &mut |buf| {
            buf[..p.len()].copy_from_slice(&p);
            p.len()
        }));
    }
}

#[test]
fn the_last_handshake_flight_leaves_before_the_first_srtp() {
    let (mut core, mut peers, now) = setup_with(1, Greeter);
    let peer = &mut peers[0];
    let mut c = check_as(&peer.user, true, b"serverpassword012345678");
    core.handle_datagram(peer.addr, &mut c, now);
    assert_eq!(core.take_transmits().len(), 1, "binding success");
    let mut srtp_seen = 0;
    for _ in 0..20 {
        while let Some(mut d) = peer.dtls.poll_transmit() {
            core.handle_datagram(peer.addr, &mut d, now);
        }
        for t in core.take_transmits() {
            match classify(&t.data) {
                Kind::Dtls => {
                    if let Some(DtlsEvent::Connected(k)) = peer.dtls.handle_datagram(&t.data) {
                        peer.keys = Some(k);
                    }
                }
                Kind::Rtp => {
                    // In this order the peer already holds its keys: it can decrypt this.
                    let k = peer
                        .keys
                        .as_ref()
                        .expect("SRTP sent before the handshake's end");
                    let mut rx =
                        srtp::Context::new(k.profile, &k.remote_key, &k.remote_salt).unwrap();
                    let mut d = t.data.clone();
                    assert!(rx.unprotect_rtp(&mut d).is_ok());
                    srtp_seen += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(peer.keys.is_some());
    assert_eq!(srtp_seen, 1);
}

#[test]
fn ice_dtls_then_srtp_is_decrypted_in_place() {
    let (mut core, mut peer, now) = setup();
    connect(&mut core, &mut peer, now);
    let k = peer.keys.clone().unwrap();
    let mut tx = srtp::Context::new(k.profile, &k.local_key, &k.local_salt).unwrap();
    for seq in 1..=10u16 {
        let plain = rtp(seq);
        let mut b = plain.clone();
        b.resize(plain.len() + 16, 0);
        let n = tx.protect_rtp(&mut b, plain.len()).unwrap();
        b.truncate(n);
        let sent = b.clone();
        core.handle_datagram(peer.addr, &mut b, now);
        assert_eq!(
            &b[..plain.len()],
            &plain[..],
            "decrypted in the receive buffer"
        );
        if seq == 10 {
            // The same ciphertext again is a replay.
            let mut again = sent;
            core.handle_datagram(peer.addr, &mut again, now);
        }
    }
    assert_eq!(core.stats.rtp_in, 10);
    assert_eq!(core.stats.dropped(DropReason::SrtpReplay), 1);
    // From an address that never passed ICE: a counted drop.
    let mut b = rtp(11);
    core.handle_datagram("127.0.0.1:1".parse().unwrap(), &mut b, now);
    assert_eq!(core.stats.dropped(DropReason::UnknownSource), 1);
    // Tampered SRTP: an authentication failure, counted.
    let plain = rtp(12);
    let mut b = plain.clone();
    b.resize(plain.len() + 16, 0);
    let n = tx.protect_rtp(&mut b, plain.len()).unwrap();
    b.truncate(n);
    b[30] ^= 1;
    core.handle_datagram(peer.addr, &mut b, now);
    assert_eq!(core.stats.dropped(DropReason::SrtpAuth), 1);
    // SRTCP from the peer.
    let mut rtcp = vec![0x80, 201, 0, 1, 0, 0, 0, 42];
    let len = rtcp.len();
    rtcp.resize(len + 20, 0);
    let mut ctx = srtp::Context::new(k.profile, &k.local_key, &k.local_salt).unwrap();
    let n = ctx.protect_rtcp(&mut rtcp, len).unwrap();
    core.handle_datagram(peer.addr, &mut rtcp[..n], now);
    assert_eq!(core.stats.rtcp_in, 1);
}

#[test]
fn junk_is_counted_never_fatal() {
    let (mut core, _, now) = setup();
    let src: SocketAddr = PEER.parse().unwrap();
    for d in [&[0xFFu8; 40][..], &[100; 10], &[], &[0x80], &[22; 13]] {
        let mut d = d.to_vec();
        core.handle_datagram(src, &mut d, now);
    }
    let mut big = vec![0x80; 1600];
    core.handle_datagram(src, &mut big, now);
    assert_eq!(core.stats.dropped(DropReason::Oversize), 1);
    assert!(core.stats.dropped(DropReason::UnknownFirstByte) >= 2);
    assert!(core.stats.dropped(DropReason::UnknownSource) >= 1);
    // A check with the wrong password gets 401 and binds nothing.
    let mut c = check(true, b"wrongpassword0123456789");
    core.handle_datagram(src, &mut c, now);
    let t: Vec<Transmit> = core.take_transmits();
    assert_eq!(&t[0].data[..2], &[0x01, 0x11], "error response");
    let mut d = vec![22u8; 30];
    core.handle_datagram(src, &mut d, now);
    assert!(
        core.stats.dropped(DropReason::UnknownSource) >= 2,
        "still unknown"
    );
}

#[test]
fn consent_loss_and_removal() {
    let (mut core, mut peer, now) = setup();
    connect(&mut core, &mut peer, now);
    core.handle_timeout(now + Duration::from_secs(29));
    assert_eq!(core.take_events().count(), 0);
    core.handle_timeout(now + Duration::from_secs(31));
    assert_eq!(
        core.take_events().collect::<Vec<_>>(),
        [Event::ConsentLost { id: TransportId(7) }]
    );
    core.handle_command(Command::Remove(TransportId(7)), Instant::now());
    assert_eq!(core.transport_count(), 0);
    let mut c = check(true, b"serverpassword012345678");
    core.handle_datagram(peer.addr, &mut c, now);
    let t: Vec<Transmit> = core.take_transmits();
    // close_notify went out on removal, then the check is refused as an unknown ufrag.
    let last = t.last().unwrap();
    assert_eq!(&last.data[..2], &[0x01, 0x11]);
}

/// Encrypts RTP `seq` with a peer's keys.
fn srtp_from(tx: &mut srtp::Context, seq: u16, payload: usize) -> Vec<u8> {
    let mut b = rtp(seq);
    b.resize(12 + payload, 0x5A);
    let len = b.len();
    b.resize(len + 16, 0);
    let n = tx.protect_rtp(&mut b, len).unwrap();
    b.truncate(n);
    b
}

#[test]
fn routed_rtp_is_reencrypted_for_each_subscriber() {
    let (mut core, mut peers, now) = setup_n(4);
    for p in &mut peers {
        connect(&mut core, p, now);
    }
    let to: Vec<TransportId> = peers[1..].iter().map(|p| p.id).collect();
    core.handle_command(
        Command::Router(FanoutCommand::Route {
            from: peers[0].id,
            to,
        }),
        Instant::now(),
    );
    let k = peers[0].keys.clone().unwrap();
    let mut tx = srtp::Context::new(k.profile, &k.local_key, &k.local_salt).unwrap();
    let mut rx: Vec<srtp::Context> = peers[1..]
        .iter()
        .map(|p| {
            let k = p.keys.clone().unwrap();
            srtp::Context::new(k.profile, &k.remote_key, &k.remote_salt).unwrap()
        })
        .collect();
    for seq in 0..5u16 {
        let mut pkt = srtp_from(&mut tx, seq, 1000);
        core.handle_datagram(peers[0].addr, &mut pkt, now);
        let out = core.take_transmits();
        assert_eq!(out.len(), 3, "one copy per subscriber");
        for (i, t) in out.into_iter().enumerate() {
            assert_eq!(t.to, peers[1 + i].addr);
            let mut d = t.data;
            let len = rx[i].unprotect_rtp(&mut d).unwrap();
            assert_eq!(&d[..len], &srtp_from_plain(seq, 1000)[..]);
        }
    }
    assert_eq!(core.stats.rtp_forwarded, 15);
    // A removed subscriber drops out of the route.
    core.handle_command(Command::Remove(peers[2].id), Instant::now());
    let closing = core.take_transmits();
    assert_eq!(closing.len(), 1, "close_notify to the removed peer");
    assert_eq!(closing[0].to, peers[2].addr);
    let mut pkt = srtp_from(&mut tx, 9, 100);
    core.handle_datagram(peers[0].addr, &mut pkt, now);
    assert_eq!(core.take_transmits().len(), 2);
}

fn srtp_from_plain(seq: u16, payload: usize) -> Vec<u8> {
    let mut b = rtp(seq);
    b.resize(12 + payload, 0x5A);
    b
}

/// Chromium sends its ClientHello right after the first successful check, before it nominates,
/// and moves media to a newly checked pair before nominating it.
#[test]
fn checked_but_unnominated_addresses_may_send() {
    let (mut core, mut peer, now) = setup();
    connect_with(&mut core, &mut peer, now, false);
    let k = peer.keys.clone().unwrap();
    let mut tx = srtp::Context::new(k.profile, &k.local_key, &k.local_salt).unwrap();
    let mut p = srtp_from(&mut tx, 1, 100);
    core.handle_datagram(peer.addr, &mut p, now);
    assert_eq!(core.stats.rtp_in, 1);
    // A second address passes a check (no nomination) and carries media at once.
    let moved: SocketAddr = "127.0.0.1:50999".parse().unwrap();
    let mut c = check(false, b"serverpassword012345678");
    core.handle_datagram(moved, &mut c, now);
    let mut p = srtp_from(&mut tx, 2, 100);
    core.handle_datagram(moved, &mut p, now);
    assert_eq!(core.stats.rtp_in, 2);
    // One that failed its check may not.
    let stranger: SocketAddr = "127.0.0.1:51000".parse().unwrap();
    let mut c = check(false, b"wrongpassword0123456789");
    core.handle_datagram(stranger, &mut c, now);
    let mut p = srtp_from(&mut tx, 3, 100);
    core.handle_datagram(stranger, &mut p, now);
    assert_eq!(core.stats.rtp_in, 2);
    assert_eq!(core.stats.dropped(DropReason::UnknownSource), 1);
}

#[test]
fn demux_follows_rfc7983() {
    assert_eq!(classify(&[0, 1]), Kind::Stun);
    assert_eq!(classify(&[3]), Kind::Stun);
    assert_eq!(classify(&[20]), Kind::Dtls);
    assert_eq!(classify(&[63]), Kind::Dtls);
    assert_eq!(classify(&[128, 96]), Kind::Rtp);
    assert_eq!(classify(&[0x80, 200]), Kind::Rtcp);
    assert_eq!(classify(&[191, 223]), Kind::Rtcp);
    assert_eq!(classify(&[64]), Kind::Other);
    assert_eq!(classify(&[192]), Kind::Other);
    assert_eq!(classify(&[]), Kind::Other);
}

#[global_allocator]
static ALLOC: crate::alloc_count::Counting = crate::alloc_count::Counting;

#[test]
fn srtp_receive_and_fanout_path_does_not_allocate() {
    let (mut core, mut peers, now) = setup_n(3);
    for p in &mut peers {
        connect(&mut core, p, now);
    }
    core.handle_command(
        Command::Router(FanoutCommand::Route {
            from: peers[0].id,
            to: vec![peers[1].id, peers[2].id],
        }),
        Instant::now(),
    );
    let peer = &peers[0];
    let k = peer.keys.clone().unwrap();
    let mut tx = srtp::Context::new(k.profile, &k.local_key, &k.local_salt).unwrap();
    let packets: Vec<Vec<u8>> = (0..1000u16)
        .map(|seq| {
            let mut b = rtp(seq);
            b.resize(b.len() + 1000, 0x5A);
            let len = b.len();
            b.resize(len + 16, 0);
            let n = tx.protect_rtp(&mut b, len).unwrap();
            b.truncate(n);
            b
        })
        .collect();
    let mut batch = packets.clone();
    // The first packet of an SSRC creates its replay and sender state; measure the steady state
    // after it. The IO loop empties the outbox every sweep; here every packet.
    core.handle_datagram(peer.addr, &mut batch[0], now);
    let mut queued = Vec::with_capacity(crate::shard::OUTBOX_SLOTS);
    let drain = |core: &mut ShardCore<Fanout>, queued: &mut Vec<crate::outbox::Queued>| {
        core.outbox.take_queue(queued);
        for q in queued.drain(..) {
            core.outbox.release(q.slot);
        }
    };
    drain(&mut core, &mut queued);
    let allocations = crate::alloc_count::count(|| {
        for p in batch.iter_mut().skip(1) {
            core.handle_datagram(peer.addr, p, now);
            drain(&mut core, &mut queued);
        }
    });
    assert_eq!(core.stats.rtp_in, 1000);
    assert_eq!(core.stats.rtp_forwarded, 2000);
    assert_eq!(allocations, 0, "allocations on the SRTP receive path");
    // The counter itself sees allocations.
    assert_eq!(
        crate::alloc_count::count(|| drop(std::hint::black_box(vec![1u8; 64]))),
        1
    );
}

/// A browser subscriber sends its ClientHello before its answer reaches Ringcast: the flight is
/// kept and handled when the peer's parameters arrive, not dropped.
#[test]
fn an_early_dtls_flight_waits_for_the_peer_parameters() {
    let (sc, sk) = cert();
    let (cc, ck) = cert();
    let all = [SrtpProfile::AeadAes128Gcm];
    let mut core = ShardCore::new(
        crate::dtls::context(&sc, &sk, &all).unwrap(),
        Fanout::default(),
    );
    let now = Instant::now();
    let mut config = TransportConfig {
        id: TransportId(7),
        local_ufrag: "SRVR".into(),
        local_pwd: "serverpassword012345678".into(),
        remote: None,
    };
    core.handle_command(Command::Upsert(config.clone()), now);
    let addr: SocketAddr = PEER.parse().unwrap();
    let mut c = check(true, b"serverpassword012345678");
    core.handle_datagram(addr, &mut c, now);
    assert_eq!(
        core.take_transmits().len(),
        1,
        "checks are answered before the answer"
    );
    let client_ctx = crate::dtls::context(&cc, &ck, &all).unwrap();
    let mut client = Dtls::new(&client_ctx, DtlsRole::Client, vec![fp(&sc)]).unwrap();
    while let Some(mut d) = client.poll_transmit() {
        core.handle_datagram(addr, &mut d, now);
    }
    assert!(core.take_transmits().is_empty(), "no DTLS yet");
    assert_eq!(
        core.stats.dropped(DropReason::DtlsNotReady),
        0,
        "kept, not dropped"
    );
    config.remote = Some(RemoteConfig {
        ufrag: "CLNT".into(),
        dtls_role: DtlsRole::Server,
        fingerprints: vec![fp(&cc)],
    });
    core.handle_command(Command::Upsert(config), now);
    let flight = core.take_transmits();
    assert!(
        !flight.is_empty(),
        "the server flight answers the kept ClientHello"
    );
    let mut connected = false;
    for t in flight {
        connected |= matches!(
            client.handle_datagram(&t.data),
            Some(DtlsEvent::Connected(_))
        );
    }
    while let Some(mut d) = client.poll_transmit() {
        core.handle_datagram(addr, &mut d, now);
    }
    for t in core.take_transmits() {
        connected |= matches!(
            client.handle_datagram(&t.data),
            Some(DtlsEvent::Connected(_))
        );
    }
    assert!(connected, "handshake completed without a retransmission");
}

#[test]
fn the_first_authentic_srtp_frees_openssl_and_close_notify_still_works_both_ways() {
    let (mut core, mut peers, now) = setup_n(2);
    for p in &mut peers {
        connect(&mut core, p, now);
    }
    for (i, p) in peers.iter_mut().enumerate() {
        let k = p.keys.clone().unwrap();
        let mut tx = srtp::Context::new(k.profile, &k.local_key, &k.local_salt).unwrap();
        // A forgery proves nothing: the association keeps OpenSSL's state.
        let mut forged = srtp_from(&mut tx, 1, 100);
        forged[20] ^= 1;
        core.handle_datagram(p.addr, &mut forged, now);
        assert_eq!(core.stats.dtls_settled, i as u64);
        let mut b = srtp_from(&mut tx, 2, 100);
        core.handle_datagram(p.addr, &mut b, now);
        assert_eq!(core.stats.dtls_settled, i as u64 + 1);
    }
    assert_eq!(core.stats.dtls_settled, 2);
    let _ = core.take_transmits();
    let _ = core.take_events().count();
    // The peer's close_notify, authenticated without OpenSSL, closes its transport.
    peers[0].dtls.close();
    let mut alert = peers[0].dtls.poll_transmit().unwrap();
    core.handle_datagram(peers[0].addr, &mut alert, now);
    assert_eq!(
        core.take_events().collect::<Vec<_>>(),
        [Event::Closed { id: peers[0].id }]
    );
    // Removing the other sends the close_notify written before OpenSSL's state was freed.
    core.handle_command(Command::Remove(peers[1].id), now);
    let out: Vec<Transmit> = core.take_transmits();
    let p = &mut peers[1];
    let ev: Vec<_> = out
        .iter()
        .filter(|t| t.to == p.addr)
        .filter_map(|t| p.dtls.handle_datagram(&t.data))
        .collect();
    assert_eq!(ev, [DtlsEvent::PeerClosed]);
}
