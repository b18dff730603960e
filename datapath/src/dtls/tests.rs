use super::*;

fn cert() -> (X509, PKey<Private>) {
    crate::dtls::self_signed().unwrap()
}

fn fp(c: &X509) -> Fingerprint {
    Fingerprint::sha256(c).unwrap()
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
        Profile::AeadAes128Gcm,
        Profile::AeadAes256Gcm,
        Profile::Aes128CmHmacSha1_80,
    ] {
        let server_ctx = context(&sc, &sk, &[p]).unwrap();
        let client_ctx = context(&cc, &ck, &[p]).unwrap();
        let mut server = Dtls::new(&server_ctx, Role::Server, vec![fp(&cc)]).unwrap();
        let mut client = Dtls::new(&client_ctx, Role::Client, vec![fp(&sc)]).unwrap();
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
        Profile::AeadAes128Gcm,
        Profile::AeadAes256Gcm,
        Profile::Aes128CmHmacSha1_80,
    ];
    let mut server = Dtls::new(
        &context(&sc, &sk, &all).unwrap(),
        Role::Server,
        vec![fp(&cc)],
    )
    .unwrap();
    let client_order = [Profile::Aes128CmHmacSha1_80, Profile::AeadAes128Gcm];
    let mut client = Dtls::new(
        &context(&cc, &ck, &client_order).unwrap(),
        Role::Client,
        vec![fp(&sc)],
    )
    .unwrap();
    let (se, _, _) = pump(&mut server, &mut client);
    // The server's (Ringcast's) preference wins: GCM even when the client lists SHA1_80 first.
    assert!(
        matches!(&se[..], [DtlsEvent::Connected(k)] if k.profile == Profile::AeadAes128Gcm),
        "{se:?}"
    );
}

#[test]
fn wrong_fingerprint_fails_the_transport() {
    let (sc, sk) = cert();
    let (cc, ck) = cert();
    let (other, _) = cert();
    let mut server = Dtls::new(
        &context(&sc, &sk, &[Profile::AeadAes128Gcm]).unwrap(),
        Role::Server,
        vec![fp(&other)],
    )
    .unwrap();
    let mut client = Dtls::new(
        &context(&cc, &ck, &[Profile::AeadAes128Gcm]).unwrap(),
        Role::Client,
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
        &context(&sc, &sk, &[Profile::AeadAes128Gcm]).unwrap(),
        Role::Server,
        vec![fp(&cc)],
    )
    .unwrap();
    // A datagram that is not DTLS: an error or nothing, never a panic.
    let _ = server.handle_datagram(&[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 5]);
    let mut server = Dtls::new(
        &context(&sc, &sk, &[Profile::AeadAes128Gcm]).unwrap(),
        Role::Server,
        vec![fp(&cc)],
    )
    .unwrap();
    let mut client = Dtls::new(
        &context(&cc, &ck, &[Profile::Aes128CmHmacSha1_80]).unwrap(),
        Role::Client,
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
        &context(&cc, &ck, &[Profile::AeadAes128Gcm]).unwrap(),
        Role::Client,
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
