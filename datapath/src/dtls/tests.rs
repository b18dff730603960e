use super::*;

fn cert() -> (X509, PKey<Private>) {
    crate::dtls::self_signed().unwrap()
}

fn fp(c: &X509) -> Fingerprint {
    crate::dtls::fingerprint_sha256(c).unwrap()
}

/// Pumps datagrams between the two until neither sends; returns their events.
fn pump(a: &mut Dtls, b: &mut Dtls) -> (Vec<DtlsEvent>, Vec<DtlsEvent>, usize) {
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    let mut datagrams = 0;
    for _ in 0..50 {
        let mut moved = false;
        while let Some(d) = a.poll_transmit() {
            assert!(
                d.len() <= DTLS_MTU as usize + 100,
                "datagram of {} bytes",
                d.len()
            );
            datagrams += 1;
            moved = true;
            eb.extend(b.handle_datagram(&d));
        }
        while let Some(d) = b.poll_transmit() {
            datagrams += 1;
            moved = true;
            ea.extend(a.handle_datagram(&d));
        }
        if !moved {
            break;
        }
    }
    (ea, eb, datagrams)
}

#[test]
fn handshake_exports_matching_keys_for_each_profile() {
    let (sc, sk) = cert();
    let (cc, ck) = cert();
    for p in [
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
        SrtpProfile::Aes128CmHmacSha1_80,
    ] {
        let server_ctx = context(&sc, &sk, &[p]).unwrap();
        let client_ctx = context(&cc, &ck, &[p]).unwrap();
        let mut server = Dtls::new(&server_ctx, DtlsRole::Server, vec![fp(&cc)]).unwrap();
        let mut client = Dtls::new(&client_ctx, DtlsRole::Client, vec![fp(&sc)]).unwrap();
        let (se, ce, _) = pump(&mut server, &mut client);
        let [DtlsEvent::Connected(s)] = &se[..] else {
            panic!("server: {se:?}")
        };
        let [DtlsEvent::Connected(c)] = &ce[..] else {
            panic!("client: {ce:?}")
        };
        assert_eq!(s.profile, p);
        assert_eq!(s.local_key, c.remote_key);
        assert_eq!(s.local_salt, c.remote_salt);
        assert_eq!(s.remote_key, c.local_key);
        assert_ne!(s.local_key, s.remote_key);
        assert_eq!(s.local_key.len(), p.master_key_len());
        // The keys work as SRTP contexts on both sides.
        let mut tx = crate::srtp::Context::new(p, &s.local_key, &s.local_salt).unwrap();
        let mut rx = crate::srtp::Context::new(p, &c.remote_key, &c.remote_salt).unwrap();
        let mut pkt = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 5, 1, 2, 3];
        let len = pkt.len();
        pkt.resize(len + 16, 0);
        let n = tx.protect_rtp(&mut pkt, len).unwrap();
        assert_eq!(rx.unprotect_rtp(&mut pkt[..n]).unwrap(), len);
        assert!(server.is_connected() && client.is_connected());
    }
}

#[test]
fn preference_order_picks_gcm_when_both_offer_everything() {
    let (sc, sk) = cert();
    let (cc, ck) = cert();
    let all = [
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
        SrtpProfile::Aes128CmHmacSha1_80,
    ];
    let mut server = Dtls::new(
        &context(&sc, &sk, &all).unwrap(),
        DtlsRole::Server,
        vec![fp(&cc)],
    )
    .unwrap();
    let client_order = [SrtpProfile::Aes128CmHmacSha1_80, SrtpProfile::AeadAes128Gcm];
    let mut client = Dtls::new(
        &context(&cc, &ck, &client_order).unwrap(),
        DtlsRole::Client,
        vec![fp(&sc)],
    )
    .unwrap();
    let (se, _, _) = pump(&mut server, &mut client);
    // The server's (Ringcast's) preference wins: GCM even when the client lists SHA1_80 first.
    assert!(
        matches!(&se[..], [DtlsEvent::Connected(k)] if k.profile == SrtpProfile::AeadAes128Gcm),
        "{se:?}"
    );
}

#[test]
fn wrong_fingerprint_fails_the_transport() {
    let (sc, sk) = cert();
    let (cc, ck) = cert();
    let (other, _) = cert();
    let mut server = Dtls::new(
        &context(&sc, &sk, &[SrtpProfile::AeadAes128Gcm]).unwrap(),
        DtlsRole::Server,
        vec![fp(&other)],
    )
    .unwrap();
    let mut client = Dtls::new(
        &context(&cc, &ck, &[SrtpProfile::AeadAes128Gcm]).unwrap(),
        DtlsRole::Client,
        vec![fp(&sc)],
    )
    .unwrap();
    let (se, _, _) = pump(&mut server, &mut client);
    assert!(
        matches!(&se[..], [DtlsEvent::Closed(r)] if r.contains("fingerprint")),
        "{se:?}"
    );
    assert!(!server.is_connected());
}

#[test]
fn garbage_and_no_common_profile_fail_cleanly() {
    let (sc, sk) = cert();
    let (cc, ck) = cert();
    let mut server = Dtls::new(
        &context(&sc, &sk, &[SrtpProfile::AeadAes128Gcm]).unwrap(),
        DtlsRole::Server,
        vec![fp(&cc)],
    )
    .unwrap();
    // A datagram that is not DTLS: an error or nothing, never a panic.
    let _ = server.handle_datagram(&[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 5]);
    let mut server = Dtls::new(
        &context(&sc, &sk, &[SrtpProfile::AeadAes128Gcm]).unwrap(),
        DtlsRole::Server,
        vec![fp(&cc)],
    )
    .unwrap();
    let mut client = Dtls::new(
        &context(&cc, &ck, &[SrtpProfile::Aes128CmHmacSha1_80]).unwrap(),
        DtlsRole::Client,
        vec![fp(&sc)],
    )
    .unwrap();
    let (se, ce, _) = pump(&mut server, &mut client);
    let connected = |e: &[DtlsEvent]| e.iter().any(|e| matches!(e, DtlsEvent::Connected(_)));
    assert!(!connected(&se) && !connected(&ce), "{se:?} {ce:?}");
}

#[test]
fn client_retransmits_on_timeout() {
    let (cc, ck) = cert();
    let mut client = Dtls::new(
        &context(&cc, &ck, &[SrtpProfile::AeadAes128Gcm]).unwrap(),
        DtlsRole::Client,
        vec![],
    )
    .unwrap();
    assert!(client.poll_transmit().is_some(), "ClientHello");
    let t = client.timeout().expect("a retransmission timer runs");
    assert!(t <= Duration::from_secs(1));
    std::thread::sleep(t + Duration::from_millis(20));
    assert_eq!(client.handle_timeout(), None);
    assert!(client.poll_transmit().is_some(), "ClientHello again");
}

/// A connected server and client whose client offers only `suite`.
fn connected_with_suite(suite: &str) -> (Dtls, Dtls) {
    let (sc, sk) = cert();
    let (cc, ck) = cert();
    let p = [SrtpProfile::AeadAes128Gcm];
    let server_ctx = context(&sc, &sk, &p).unwrap();
    let mut client_ctx = context_builder(&cc, &ck, &p).unwrap();
    client_ctx.set_cipher_list(suite).unwrap();
    let client_ctx = client_ctx.build();
    let mut server = Dtls::new(&server_ctx, DtlsRole::Server, vec![fp(&cc)]).unwrap();
    let mut client = Dtls::new(&client_ctx, DtlsRole::Client, vec![fp(&sc)]).unwrap();
    let (se, ce, _) = pump(&mut server, &mut client);
    assert!(matches!(se[..], [DtlsEvent::Connected(_)]), "{se:?}");
    assert!(matches!(ce[..], [DtlsEvent::Connected(_)]), "{ce:?}");
    (server, client)
}

const GCM_SUITES: [&str; 2] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
];

#[test]
fn a_settled_association_knows_the_peers_close_notify() {
    for suite in GCM_SUITES {
        for settle_server in [true, false] {
            let (mut server, mut client) = connected_with_suite(suite);
            let (settled, live) = if settle_server {
                (&mut server, &mut client)
            } else {
                (&mut client, &mut server)
            };
            settled.settle();
            assert!(settled.is_settled(), "{suite}");
            assert!(settled.poll_transmit().is_none(), "settling sends nothing");
            // OpenSSL's close_notify authenticates under the key derived from the session.
            live.close();
            let alert = live.poll_transmit().expect("close_notify");
            assert_eq!(
                settled.handle_datagram(&alert),
                Some(DtlsEvent::PeerClosed),
                "{suite}"
            );
            assert!(
                settled.handle_datagram(&alert).is_none(),
                "closed stays closed"
            );
        }
    }
}

#[test]
fn a_settled_association_still_sends_its_close_notify() {
    for suite in GCM_SUITES {
        let (mut server, mut client) = connected_with_suite(suite);
        server.settle();
        assert!(server.is_settled());
        server.close();
        let alert = server.poll_transmit().expect("close_notify");
        assert!(server.poll_transmit().is_none());
        // OpenSSL, on the other side, reads it as the end of the association.
        assert_eq!(
            client.handle_datagram(&alert),
            Some(DtlsEvent::PeerClosed),
            "{suite}"
        );
    }
}

#[test]
fn a_forged_alert_does_not_close_a_settled_association() {
    let (mut server, mut client) = connected_with_suite(GCM_SUITES[0]);
    server.settle();
    client.close();
    let alert = client.poll_transmit().unwrap();
    // Every single-bit change to the record's nonce, ciphertext or tag is refused, and so are
    // a wrong epoch, a truncation and a record of another type.
    for i in 13..alert.len() {
        let mut forged = alert.clone();
        forged[i] ^= 0x01;
        assert!(server.handle_datagram(&forged).is_none(), "byte {i}");
    }
    let mut epoch = alert.clone();
    epoch[4] ^= 0x03;
    let mut handshake = alert.clone();
    handshake[0] = 22;
    for bad in [
        epoch,
        handshake,
        alert[..alert.len() - 1].to_vec(),
        Vec::new(),
    ] {
        assert!(server.handle_datagram(&bad).is_none());
    }
    assert!(server.is_connected());
    // The genuine one still closes it, also behind another record in the same datagram.
    let mut two = alert[..13].to_vec();
    two[11..13].copy_from_slice(&0u16.to_be_bytes());
    two.extend_from_slice(&alert);
    assert_eq!(server.handle_datagram(&two), Some(DtlsEvent::PeerClosed));
}

#[test]
fn settling_keeps_openssl_for_a_suite_it_cannot_authenticate_and_waits_for_the_handshake() {
    let (mut server, mut client) = connected_with_suite("ECDHE-ECDSA-CHACHA20-POLY1305");
    server.settle();
    assert!(!server.is_settled());
    client.close();
    let alert = client.poll_transmit().unwrap();
    assert_eq!(server.handle_datagram(&alert), Some(DtlsEvent::PeerClosed));

    let (sc, sk) = cert();
    let ctx = context(&sc, &sk, &[SrtpProfile::AeadAes128Gcm]).unwrap();
    let mut handshaking = Dtls::new(&ctx, DtlsRole::Server, Vec::new()).unwrap();
    handshaking.settle();
    assert!(!handshaking.is_settled());
}
