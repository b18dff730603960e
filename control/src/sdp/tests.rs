use proptest::prelude::*;

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sdp/",
            $name
        ))
    };
}

pub(crate) const CHROMIUM_PUBLISH: &str = fixture!("chromium156-publish-offer.sdp");
pub(crate) const CHROMIUM_PUBLISH_DC: &str = fixture!("chromium156-publish-offer-datachannel.sdp");
pub(crate) const CHROMIUM_PUBLISH_MAXBUNDLE: &str =
    fixture!("chromium156-publish-offer-maxbundle.sdp");
pub(crate) const CHROMIUM_SUBSCRIBE_ANSWER: &str = fixture!("chromium156-subscribe-answer.sdp");
pub(crate) const FIREFOX_PUBLISH: &str = fixture!("firefox153-publish-offer.sdp");
pub(crate) const FIREFOX_PUBLISH_DC: &str = fixture!("firefox153-publish-offer-datachannel.sdp");
pub(crate) const FIREFOX_PUBLISH_MAXBUNDLE: &str =
    fixture!("firefox153-publish-offer-maxbundle.sdp");
pub(crate) const FIREFOX_SUBSCRIBE_ANSWER: &str = fixture!("firefox153-subscribe-answer.sdp");
pub(crate) const SAFARI_OFFER: &str = fixture!("safari-offer.sdp");
pub(crate) const SAFARI_13_OFFER: &str = fixture!("safari-13.1-offer.sdp");

pub(crate) const ALL_FIXTURES: [(&str, &str); 10] = [
    ("chromium publish", CHROMIUM_PUBLISH),
    ("chromium publish datachannel", CHROMIUM_PUBLISH_DC),
    ("chromium publish max-bundle", CHROMIUM_PUBLISH_MAXBUNDLE),
    ("chromium subscribe answer", CHROMIUM_SUBSCRIBE_ANSWER),
    ("firefox publish", FIREFOX_PUBLISH),
    ("firefox publish datachannel", FIREFOX_PUBLISH_DC),
    ("firefox publish max-bundle", FIREFOX_PUBLISH_MAXBUNDLE),
    ("firefox subscribe answer", FIREFOX_SUBSCRIBE_ANSWER),
    ("safari offer", SAFARI_OFFER),
    ("safari 13.1 offer", SAFARI_13_OFFER),
];

#[test]
fn every_browser_fixture_parses_and_round_trips() {
    for (name, text) in ALL_FIXTURES {
        let sd = parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!sd.media.is_empty(), "{name}");
        let again = parse(&sd.to_string()).unwrap_or_else(|e| panic!("{name} rewritten: {e}"));
        assert_eq!(again, sd, "{name}");
    }
}

#[test]
fn chromium_simulcast_offer() {
    let sd = parse(CHROMIUM_PUBLISH).unwrap();
    assert_eq!(sd.bundle_group().unwrap().mids, ["0", "1"]);
    assert!(sd.attributes.extmap_allow_mixed);
    let [audio, video] = &sd.media[..] else {
        panic!("expected two m-sections")
    };
    assert_eq!(audio.kind, "audio");
    assert_eq!(sd.direction(audio), Direction::SendOnly);
    assert_eq!(audio.rtpmap(111).unwrap().encoding, "opus");
    assert_eq!(audio.fmtp(111).unwrap().get("useinbandfec"), Some("1"));
    assert!(audio.rtcp_mux && video.rtcp_mux);
    assert_eq!(sd.ice_credentials(audio).unwrap().0, "cJ59");
    assert_eq!(sd.fingerprints(audio)[0].algorithm, "sha-256");
    assert_eq!(sd.fingerprints(audio)[0].bytes.len(), 32);
    assert_eq!(sd.setup(audio), Some(Setup::ActPass));
    let rids: Vec<_> = video
        .rids
        .iter()
        .map(|r| (r.id.as_str(), r.direction))
        .collect();
    assert_eq!(
        rids,
        [
            ("q", RidDirection::Send),
            ("h", RidDirection::Send),
            ("f", RidDirection::Send)
        ]
    );
    let sc = video.simulcast.as_ref().unwrap();
    assert_eq!(sc.send.len(), 3);
    assert!(sc.recv.is_empty());
    assert!(
        video.ssrcs.is_empty(),
        "Chromium signals no SSRCs with simulcast"
    );
    // H.264 on payload types below 96 (39/40) parses like any other.
    assert!(video.rtpmap(39).is_some_and(|r| r.encoding == "H264"));
    let c = &audio.candidates[0];
    assert_eq!(
        (c.address.as_str(), c.transport.as_str(), c.typ.as_str()),
        ("127.0.0.1", "udp", "host")
    );
    assert!(c.extensions.iter().any(|(k, _)| k == "network-id"));
}

#[test]
fn firefox_simulcast_offer_has_ssrcs_and_directional_extmaps() {
    let sd = parse(FIREFOX_PUBLISH).unwrap();
    assert_eq!(sd.attributes.direction, Some(Direction::SendRecv));
    let video = sd.media.iter().find(|m| m.kind == "video").unwrap();
    assert_eq!(
        video
            .ssrc_groups
            .iter()
            .filter(|g| g.semantics == "FID")
            .count(),
        3
    );
    assert!(video.attributes.extmap_allow_mixed);
    assert!(
        video
            .attributes
            .extmaps
            .iter()
            .any(|e| e.direction == Some(Direction::SendOnly))
    );
    assert!(video.rtpmap(120).is_some_and(|r| r.encoding == "VP8"));
    let audio = sd.media.iter().find(|m| m.kind == "audio").unwrap();
    assert!(audio.candidates.iter().any(|c| c.component == 2));
}

#[test]
fn firefox_max_bundle_is_bundle_only() {
    let sd = parse(FIREFOX_PUBLISH_MAXBUNDLE).unwrap();
    let video = &sd.media[1];
    assert_eq!(video.port, 0);
    assert!(video.bundle_only);
}

#[test]
fn datachannel_m_line() {
    for text in [CHROMIUM_PUBLISH_DC, FIREFOX_PUBLISH_DC] {
        let sd = parse(text).unwrap();
        let app = sd.media.iter().find(|m| m.kind == "application").unwrap();
        assert_eq!(app.protocol, "UDP/DTLS/SCTP");
        assert_eq!(app.formats, ["webrtc-datachannel"]);
        assert!(!app.is_rtp());
    }
}

#[test]
fn errors_name_the_line() {
    let bad = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:abc opus/48000/2\r\n";
    let e = parse(bad).unwrap_err();
    assert_eq!(
        e,
        SdpError::Line {
            line: 6,
            text: "a=rtpmap:abc opus/48000/2".into(),
            reason: "payload type `abc` is not a number".into()
        }
    );
    assert!(e.to_string().starts_with("SDP line 6 (`a=rtpmap:abc"));
    assert_eq!(parse(""), Err(SdpError::Empty));
    assert!(matches!(
        parse("o=- 1 2 IN IP4 x\r\n"),
        Err(SdpError::Line { line: 1, .. })
    ));
    assert_eq!(
        parse("v=0\r\ns=-\r\nt=0 0\r\n"),
        Err(SdpError::Missing('o'))
    );
    assert!(matches!(
        parse("v=0\r\nhello\r\n"),
        Err(SdpError::Line { line: 2, .. })
    ));
    assert!(matches!(
        parse("v=0\r\no=- 1 2 IN IP4 x\r\ns=-\r\nt=0 0\r\nm=video 70000 UDP/TLS/RTP/SAVPF 96\r\n"),
        Err(SdpError::Line { line: 5, .. })
    ));
    assert!(matches!(
        parse("v=0\r\no=- 1 2 IN IP4 x\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 200\r\n"),
        Err(SdpError::Line { line: 5, .. })
    ));
    let big = "v=0\r\n".to_owned() + &"a=x\r\n".repeat(MAX_SDP_BYTES / 5 + 1);
    assert!(matches!(parse(&big), Err(SdpError::TooLarge(_))));
}

#[test]
fn truncated_fixtures_never_panic() {
    for (_, text) in ALL_FIXTURES {
        for cut in (0..text.len()).step_by(7) {
            if text.is_char_boundary(cut) {
                let _ = parse(&text[..cut]);
            }
        }
    }
}

// ---- property tests: parse(write(x)) == x for the model ----

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9_.+-]{0,11}"
}

fn ice_token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9+/]{4,24}"
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![
        Just(Direction::SendRecv),
        Just(Direction::SendOnly),
        Just(Direction::RecvOnly),
        Just(Direction::Inactive)
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    prop_oneof![
        Just(Setup::Active),
        Just(Setup::Passive),
        Just(Setup::ActPass),
        Just(Setup::HoldConn)
    ]
}

fn fingerprint() -> impl Strategy<Value = Fingerprint> {
    (
        prop_oneof![Just("sha-256".to_owned()), Just("sha-1".to_owned())],
        prop::collection::vec(any::<u8>(), 1..33),
    )
        .prop_map(|(algorithm, bytes)| Fingerprint { algorithm, bytes })
}

fn extmap() -> impl Strategy<Value = ExtMap> {
    (
        1u8..=255,
        prop::option::of(direction()),
        "[a-z]{2,8}:[a-z0-9:.-]{1,20}",
        prop::option::of("[a-z]{1,6}"),
    )
        .prop_map(|(id, direction, uri, attributes)| ExtMap {
            id,
            direction,
            uri,
            attributes,
        })
}

fn other_attribute() -> impl Strategy<Value = Attribute> {
    (
        "x-[a-z]{1,8}",
        prop::option::of("[a-zA-Z0-9 =;:/.-]{0,16}[a-zA-Z0-9]"),
    )
        .prop_map(|(name, value)| Attribute { name, value })
}

fn common() -> impl Strategy<Value = CommonAttributes> {
    (
        prop::option::of(ice_token()),
        prop::option::of(ice_token()),
        prop::option::of(Just("trickle".to_owned())),
        prop::collection::vec(fingerprint(), 0..2),
        prop::option::of(setup()),
        prop::option::of(direction()),
        any::<bool>(),
        prop::collection::vec(extmap(), 0..3),
        prop::collection::vec(other_attribute(), 0..3),
    )
        .prop_map(
            |(
                ice_ufrag,
                ice_pwd,
                ice_options,
                fingerprints,
                setup,
                direction,
                mixed,
                extmaps,
                other,
            )| {
                CommonAttributes {
                    ice_ufrag,
                    ice_pwd,
                    ice_options,
                    fingerprints,
                    setup,
                    direction,
                    extmap_allow_mixed: mixed,
                    extmaps,
                    other,
                }
            },
        )
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (
        "[0-9]{1,10}",
        1u16..3,
        prop_oneof![Just("udp".to_owned()), Just("tcp".to_owned())],
        any::<u32>(),
        prop_oneof![
            any::<[u8; 4]>().prop_map(|b| std::net::Ipv4Addr::from(b).to_string()),
            any::<[u16; 8]>().prop_map(|b| std::net::Ipv6Addr::from(b).to_string()),
            "[a-f0-9-]{8}\\.local",
        ],
        any::<u16>(),
        prop_oneof![Just("host"), Just("srflx"), Just("relay")].prop_map(str::to_owned),
        prop::option::of(("[0-9.]{7,15}", any::<u16>())),
        prop::collection::vec(("x[a-z-]{1,8}", "[a-z0-9]{1,6}"), 0..3),
    )
        .prop_map(
            |(foundation, component, transport, priority, address, port, typ, rel, extensions)| {
                Candidate {
                    foundation,
                    component,
                    transport,
                    priority,
                    address,
                    port,
                    typ,
                    raddr: rel.as_ref().map(|r| r.0.clone()),
                    rport: rel.map(|r| r.1),
                    extensions,
                }
            },
        )
}

/// An m-section in the writer's canonical order: each codec's rtcp-fb and fmtp follow its rtpmap.
fn media() -> impl Strategy<Value = MediaDescription> {
    let codecs = prop::collection::vec(
        (
            0u8..=127,
            "[A-Za-z][A-Za-z0-9-]{0,7}",
            1u32..200_000,
            prop::option::of(1u16..9),
            prop::collection::vec(("[a-z-]{2,10}", prop::option::of("[a-z]{2,6}")), 0..3),
            prop::option::of("[a-z-]{1,10}=[0-9]{1,4}(;[a-z-]{1,10}=[0-9a-f]{1,6}){0,2}"),
        ),
        0..4,
    );
    (
        (
            prop_oneof![Just("audio"), Just("video"), Just("application")].prop_map(str::to_owned),
            any::<u16>(),
            prop::option::of(1u16..4),
            codecs,
            prop::option::of(("IN", "IP4", "[0-9.]{7,15}")),
            prop::option::of(token()),
            any::<[bool; 5]>(),
            prop::collection::vec("[a-zA-Z0-9-]{1,12}( [a-zA-Z0-9-]{1,12})?", 0..2),
        ),
        (
            prop::collection::vec(candidate(), 0..3),
            prop::collection::vec(
                (
                    any::<u32>(),
                    "[a-z]{1,8}",
                    prop::option::of("[a-zA-Z0-9 {}-]{0,12}[a-z]"),
                ),
                0..4,
            ),
            prop::collection::vec(("FID|SIM", prop::collection::vec(any::<u32>(), 1..4)), 0..2),
            prop::collection::vec(
                (
                    "[a-z0-9]{1,4}",
                    any::<bool>(),
                    prop::option::of("max-width=[0-9]{3}"),
                ),
                0..3,
            ),
            prop::option::of(prop::collection::vec(
                prop::collection::vec(("[a-z0-9]{1,4}", any::<bool>()), 1..3),
                1..3,
            )),
            common(),
            prop::collection::vec(("[A-Z]{2}", any::<u32>()), 0..2),
        ),
    )
        .prop_map(
            |(
                (kind, port, num_ports, codecs, conn, mid, flags, msid),
                (candidates, ssrcs, groups, rids, simulcast, attributes, bandwidths),
            )| {
                let mut m = MediaDescription::new(&kind, port);
                m.num_ports = num_ports;
                let mut seen = std::collections::HashSet::new();
                for (pt, enc, clock, ch, fbs, fmtp) in codecs {
                    if !seen.insert(pt) {
                        continue;
                    }
                    m.formats.push(pt.to_string());
                    m.rtpmaps.push(RtpMap {
                        pt,
                        encoding: enc,
                        clock_rate: clock,
                        channels: ch,
                    });
                    for (kind, param) in fbs {
                        m.rtcp_fbs.push(RtcpFb {
                            pt: Some(pt),
                            kind,
                            param,
                        });
                    }
                    if let Some(params) = fmtp {
                        m.fmtps.push(Fmtp { pt, params });
                    }
                }
                if m.formats.is_empty() {
                    m.formats.push("0".into());
                }
                m.connection = conn.map(|(n, a, addr)| Connection {
                    net_type: n,
                    addr_type: a,
                    address: addr,
                });
                m.bandwidths = bandwidths
                    .into_iter()
                    .map(|(kind, v)| Bandwidth {
                        kind,
                        value: u64::from(v),
                    })
                    .collect();
                m.mid = mid;
                [
                    m.rtcp_mux,
                    m.rtcp_mux_only,
                    m.rtcp_rsize,
                    m.bundle_only,
                    m.end_of_candidates,
                ] = flags;
                m.msid = msid;
                m.candidates = candidates;
                m.ssrcs = ssrcs
                    .into_iter()
                    .map(|(ssrc, attribute, value)| SsrcAttr {
                        ssrc,
                        attribute,
                        value,
                    })
                    .collect();
                m.ssrc_groups = groups
                    .into_iter()
                    .map(|(semantics, ssrcs)| SsrcGroup { semantics, ssrcs })
                    .collect();
                m.rids = rids
                    .into_iter()
                    .map(|(id, send, restrictions)| Rid {
                        id,
                        direction: if send {
                            RidDirection::Send
                        } else {
                            RidDirection::Recv
                        },
                        restrictions,
                    })
                    .collect();
                m.simulcast = simulcast.map(|list| {
                    let list: Vec<Vec<SimulcastStream>> = list
                        .into_iter()
                        .map(|alts| {
                            alts.into_iter()
                                .map(|(rid, paused)| SimulcastStream { rid, paused })
                                .collect()
                        })
                        .collect();
                    Simulcast {
                        send: list.clone(),
                        recv: list.into_iter().rev().collect(),
                    }
                });
                m.attributes = attributes;
                m
            },
        )
}

fn session() -> impl Strategy<Value = SessionDescription> {
    (
        (token(), "[0-9]{1,19}", any::<u64>(), "[0-9.]{7,15}"),
        "[a-zA-Z0-9 -]{0,10}[a-z-]",
        any::<(u32, u32)>(),
        any::<bool>(),
        prop::collection::vec(("BUNDLE|LS", prop::collection::vec(token(), 0..4)), 0..2),
        prop::option::of("WMS( [a-z*]{1,6})?"),
        common(),
        prop::collection::vec(media(), 0..4),
    )
        .prop_map(
            |(
                (user, sid, version, addr),
                name,
                timing,
                ice_lite,
                groups,
                msid_semantic,
                attributes,
                media,
            )| {
                SessionDescription {
                    origin: Origin {
                        username: user,
                        session_id: sid,
                        session_version: version,
                        net_type: "IN".into(),
                        addr_type: "IP4".into(),
                        address: addr,
                    },
                    session_name: name,
                    connection: None,
                    bandwidths: Vec::new(),
                    timing: (u64::from(timing.0), u64::from(timing.1)),
                    ice_lite,
                    groups: groups
                        .into_iter()
                        .map(|(semantics, mids)| Group { semantics, mids })
                        .collect(),
                    msid_semantic,
                    attributes,
                    media,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_write_round_trip(sd in session()) {
        let text = sd.to_string();
        let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(parsed, sd);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "(v=0\r\n)?([a-z]=[ -~]{0,40}\r?\n){0,20}") {
        let _ = parse(&text);
    }

    #[test]
    fn mutated_fixture_never_panics(idx in 0usize..10, pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = ALL_FIXTURES[idx].1.as_bytes().to_vec();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = parse(text);
        }
    }
}
