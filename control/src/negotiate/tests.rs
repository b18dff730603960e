use super::*;
use crate::sdp::{self, parse};

// Real browser captures (see tests/fixtures/sdp/README.md).
use crate::sdp::tests::{
    CHROMIUM_PUBLISH, CHROMIUM_PUBLISH_DC, CHROMIUM_PUBLISH_MAXBUNDLE, CHROMIUM_SUBSCRIBE_ANSWER,
    FIREFOX_PUBLISH, FIREFOX_PUBLISH_DC, FIREFOX_PUBLISH_MAXBUNDLE, FIREFOX_SUBSCRIBE_ANSWER,
    SAFARI_OFFER,
};

struct Local {
    ice: IceCredentials,
    fingerprint: Fingerprint,
    candidates: Vec<Candidate>,
}

impl Local {
    fn new() -> Self {
        Local {
            ice: IceCredentials {
                ufrag: "rcufrag1".into(),
                pwd: "rcpassword0123456789abcd".into(),
            },
            fingerprint: Fingerprint {
                algorithm: "sha-256".into(),
                bytes: (0..32).collect(),
            },
            candidates: crate::ice::host_candidates(&[
                "127.0.0.1:40000".parse().unwrap(),
                "[::1]:40000".parse().unwrap(),
            ]),
        }
    }

    fn transport(&self) -> LocalTransport<'_> {
        LocalTransport {
            ice: &self.ice,
            fingerprint: &self.fingerprint,
            candidates: &self.candidates,
            session_id: "1234",
            session_version: 2,
        }
    }
}

fn answer(offer: &str) -> PublishAnswer {
    let local = Local::new();
    answer_publish(&parse(offer).unwrap(), &local.transport()).unwrap()
}

/// The answer, written and re-parsed, is a valid SDP that keeps the offer's m-line order.
fn check_answer_shape(offer: &str, a: &PublishAnswer) -> SessionDescription {
    let offer = parse(offer).unwrap();
    let text = a.answer.to_string();
    let sd = parse(&text).unwrap();
    assert!(sd.ice_lite);
    assert_eq!(sd.media.len(), offer.media.len());
    for (o, m) in offer.media.iter().zip(&sd.media) {
        assert_eq!(o.mid, m.mid);
        assert_eq!(o.kind, m.kind);
        if m.port != 0 {
            assert!(m.rtcp_mux);
            assert_eq!(m.attributes.ice_ufrag.as_deref(), Some("rcufrag1"));
            assert_eq!(m.attributes.setup, Some(Setup::Passive));
            assert_eq!(m.attributes.fingerprints.len(), 1);
            assert_eq!(m.candidates.len(), 2);
            // Only payload types the offer had.
            for pt in m.payload_types() {
                assert!(o.payload_types().any(|p| p == pt), "pt {pt} not offered");
            }
        }
    }
    sd
}

#[test]
fn chromium_simulcast_publish() {
    let a = answer(CHROMIUM_PUBLISH);
    let sd = check_answer_shape(CHROMIUM_PUBLISH, &a);
    assert!(a.rejected.is_empty());
    assert_eq!(sd.bundle_group().unwrap().mids, ["0", "1"]);
    assert_eq!(a.remote.ice_ufrag, "cJ59");
    assert_eq!(a.remote.dtls_role, DtlsRole::Server);

    let audio = &a.media[0];
    assert_eq!(audio.kind, MediaKind::Audio);
    assert_eq!(
        audio.codecs.len(),
        1,
        "only opus of opus/red/G722/PCMU/PCMA/CN/telephone-event"
    );
    assert_eq!(audio.codecs[0].pt, 111);
    assert_eq!(audio.codecs[0].fmtp, "minptime=10;useinbandfec=1");
    let audio_exts: Vec<&str> = audio.extensions.iter().map(|e| e.uri.as_str()).collect();
    assert!(audio_exts.contains(&codec::ext::AUDIO_LEVEL));
    assert!(audio_exts.contains(&codec::ext::MID));

    let video = &a.media[1];
    let names: Vec<CodecName> = video.codecs.iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        [CodecName::Vp8],
        "the offerer's first forwardable codec, alone"
    );
    let vp8 = &video.codecs[0];
    assert_eq!((vp8.pt, vp8.rtx_pt), (96, Some(97)));
    let fbs: Vec<(&str, Option<&str>)> = vp8
        .rtcp_fbs
        .iter()
        .map(|f| (f.kind.as_str(), f.param.as_deref()))
        .collect();
    assert!(fbs.contains(&("nack", None)) && fbs.contains(&("nack", Some("pli"))));
    assert!(fbs.contains(&("goog-remb", None)));
    assert!(
        fbs.contains(&("transport-cc", None)),
        "Ringcast answers publishers with transport-wide feedback"
    );
    let answer_video = &sd.media[1];
    let answered: Vec<&str> = answer_video
        .rtpmaps
        .iter()
        .map(|r| r.encoding.as_str())
        .collect();
    assert_eq!(
        answered,
        ["VP8", "rtx"],
        "no red / ulpfec, one codec and its RTX"
    );
    // Simulcast answered as recv, in order.
    let rids: Vec<&str> = video
        .encodings
        .iter()
        .filter_map(|e| e.rid.as_deref())
        .collect();
    assert_eq!(rids, ["q", "h", "f"]);
    assert!(video.encodings.iter().all(|e| e.ssrc.is_none()));
    assert_eq!(
        answer_video.simulcast.as_ref().unwrap().recv.len(),
        3,
        "a=simulcast:recv q;h;f"
    );
    assert!(
        answer_video
            .rids
            .iter()
            .all(|r| r.direction == RidDirection::Recv)
    );
    assert_eq!(sd.direction(answer_video), Direction::RecvOnly);
    let video_exts: Vec<&str> = video.extensions.iter().map(|e| e.uri.as_str()).collect();
    for uri in [
        codec::ext::RID,
        codec::ext::REPAIRED_RID,
        codec::ext::MID,
        codec::ext::ABS_SEND_TIME,
        codec::ext::TRANSPORT_CC,
    ] {
        assert!(video_exts.contains(&uri), "{uri}");
    }
    assert!(!video_exts.contains(&"urn:ietf:params:rtp-hdrext:toffset"));
    // Ids are the offerer's.
    let offer = parse(CHROMIUM_PUBLISH).unwrap();
    for e in &video.extensions {
        assert!(
            offer
                .extmaps(&offer.media[1])
                .iter()
                .any(|o| o.id == e.id && o.uri == e.uri)
        );
    }
}

#[test]
fn firefox_simulcast_publish_learns_ssrcs_per_rid() {
    let a = answer(FIREFOX_PUBLISH);
    check_answer_shape(FIREFOX_PUBLISH, &a);
    assert!(a.rejected.is_empty());
    let video = a.media.iter().find(|m| m.kind == MediaKind::Video).unwrap();
    assert_eq!(video.codecs[0].name(), CodecName::Vp8);
    assert_eq!(video.codecs[0].pt, 120);
    assert!(!video.codecs.iter().any(|c| c.name() == CodecName::H264));
    assert_eq!(video.encodings.len(), 3);
    for e in &video.encodings {
        assert!(
            e.rid.is_some() && e.ssrc.is_some() && e.rtx_ssrc.is_some(),
            "{e:?}"
        );
    }
    // Firefox's sendonly-qualified extmaps come back recvonly.
    let sd = parse(&a.answer.to_string()).unwrap();
    let v = sd.media.iter().find(|m| m.kind == "video").unwrap();
    let rid = v
        .attributes
        .extmaps
        .iter()
        .find(|e| e.uri == codec::ext::RID)
        .unwrap();
    assert_eq!(rid.direction, Some(Direction::RecvOnly));
    assert!(v.attributes.extmap_allow_mixed);
}

#[test]
fn max_bundle_offers() {
    for offer in [CHROMIUM_PUBLISH_MAXBUNDLE, FIREFOX_PUBLISH_MAXBUNDLE] {
        let a = answer(offer);
        check_answer_shape(offer, &a);
        assert!(a.rejected.is_empty(), "{:?}", a.rejected);
        assert_eq!(a.media.len(), 2);
    }
}

#[test]
fn datachannel_is_rejected_cleanly() {
    for offer in [CHROMIUM_PUBLISH_DC, FIREFOX_PUBLISH_DC] {
        let a = answer(offer);
        let sd = check_answer_shape(offer, &a);
        assert_eq!(a.rejected.len(), 1);
        assert!(a.rejected[0].reason.contains("data channels"));
        let app = sd.media.iter().find(|m| m.kind == "application").unwrap();
        assert_eq!(app.port, 0);
        assert_eq!(app.protocol, "UDP/DTLS/SCTP");
        assert!(
            !sd.bundle_group()
                .unwrap()
                .mids
                .contains(app.mid.as_ref().unwrap())
        );
        assert_eq!(a.media.len(), 2, "audio and video still published");
        // Without simulcast the SSRC and its RTX come from the FID group.
        let v = a.media.iter().find(|m| m.kind == MediaKind::Video).unwrap();
        assert_eq!(v.encodings.len(), 1);
        assert!(v.encodings[0].ssrc.is_some() && v.encodings[0].rtx_ssrc.is_some());
        assert!(v.track_id.is_some());
    }
}

#[test]
fn safari_offer_h264_matched() {
    let a = answer(SAFARI_OFFER);
    check_answer_shape(SAFARI_OFFER, &a);
    let video = a.media.iter().find(|m| m.kind == MediaKind::Video).unwrap();
    let h264: Vec<&NegotiatedCodec> = video
        .codecs
        .iter()
        .filter(|c| c.name() == CodecName::H264)
        .collect();
    assert_eq!(h264.len(), 1, "Safari's first: H.264 constrained high");
    let answer = parse(&a.answer.to_string()).unwrap();
    let v = answer.media.iter().find(|m| m.kind == "video").unwrap();
    let f = v.fmtp(h264[0].pt).unwrap();
    assert_eq!(f.get("packetization-mode"), Some("1"));
    assert_eq!(f.get("profile-level-id"), Some("640c1f"));
    assert_eq!(
        h264[0].params,
        CodecParams::H264 {
            profile: codec::H264Profile::ConstrainedHigh,
            packetization_mode: 1
        }
    );
    assert!(h264[0].fmtp.contains("profile-level-id=640c1f"));
}

fn edit(offer: &str, f: impl FnOnce(&mut SessionDescription)) -> SessionDescription {
    let mut sd = parse(offer).unwrap();
    f(&mut sd);
    sd
}

#[test]
fn whole_offer_errors() {
    let local = Local::new();
    let t = local.transport();
    let no_bundle = edit(CHROMIUM_PUBLISH, |sd| sd.groups.clear());
    assert_eq!(
        answer_publish(&no_bundle, &t).unwrap_err(),
        NegotiationError::NoBundle
    );
    let no_mid = edit(CHROMIUM_PUBLISH, |sd| sd.media[1].mid = None);
    assert_eq!(
        answer_publish(&no_mid, &t).unwrap_err(),
        NegotiationError::MissingMid { index: 1 }
    );
    let dup = edit(CHROMIUM_PUBLISH, |sd| sd.media[1].mid = Some("0".into()));
    assert_eq!(
        answer_publish(&dup, &t).unwrap_err(),
        NegotiationError::DuplicateMid("0".into())
    );
    let no_fp = edit(CHROMIUM_PUBLISH, |sd| {
        for m in &mut sd.media {
            m.attributes.fingerprints.clear();
        }
    });
    assert_eq!(
        answer_publish(&no_fp, &t).unwrap_err(),
        NegotiationError::MissingFingerprint
    );
    let no_ice = edit(CHROMIUM_PUBLISH, |sd| {
        for m in &mut sd.media {
            m.attributes.ice_pwd = None;
        }
    });
    assert_eq!(
        answer_publish(&no_ice, &t).unwrap_err(),
        NegotiationError::MissingIceCredentials
    );
    let short_pwd = edit(CHROMIUM_PUBLISH, |sd| {
        sd.media[0].attributes.ice_pwd = Some("short".into())
    });
    assert!(matches!(
        answer_publish(&short_pwd, &t).unwrap_err(),
        NegotiationError::BadIceCredentials(_)
    ));
    let passive = edit(CHROMIUM_PUBLISH, |sd| {
        sd.media[0].attributes.setup = Some(Setup::Passive)
    });
    let a = answer_publish(&passive, &t).unwrap();
    assert_eq!(a.remote.dtls_role, DtlsRole::Client);
    assert_eq!(a.answer.media[0].attributes.setup, Some(Setup::Active));
}

#[test]
fn m_section_rejections_have_reasons() {
    let local = Local::new();
    let t = local.transport();
    // Video with only codecs Ringcast doesn't forward.
    let no_codec = edit(CHROMIUM_PUBLISH, |sd| {
        let v = &mut sd.media[1];
        v.rtpmaps
            .retain(|r| ["red", "ulpfec", "rtx"].contains(&r.encoding.as_str()));
        let kept: Vec<String> = v.rtpmaps.iter().map(|r| r.pt.to_string()).collect();
        v.formats = kept;
    });
    let a = answer_publish(&no_codec, &t).unwrap();
    assert_eq!(a.rejected.len(), 1);
    assert_eq!(a.rejected[0].mid, "1");
    assert!(
        a.rejected[0].reason.starts_with("no video codec in common"),
        "{}",
        a.rejected[0].reason
    );
    assert_eq!(a.answer.media[1].port, 0);
    assert_eq!(a.answer.bundle_group().unwrap().mids, ["0"]);
    assert_eq!(a.media.len(), 1);

    let no_mux = edit(CHROMIUM_PUBLISH, |sd| sd.media[0].rtcp_mux = false);
    let a = answer_publish(&no_mux, &t).unwrap();
    assert_eq!(a.rejected[0].reason, "rtcp-mux is required");

    let recvonly = edit(CHROMIUM_PUBLISH, |sd| {
        sd.media[0].attributes.direction = Some(Direction::RecvOnly)
    });
    let a = answer_publish(&recvonly, &t).unwrap();
    assert_eq!(a.idle_mids, ["0"]);
    assert_eq!(
        a.answer.media[0].attributes.direction,
        Some(Direction::Inactive)
    );
}

fn outgoing(track: &str, codec: CodecParams, ssrc: u32, rtx: Option<u32>) -> OutgoingTrack {
    OutgoingTrack {
        track: track.into(),
        stream_id: "PA_pub".into(),
        fmtp: if codec == CodecParams::Opus {
            "minptime=10;useinbandfec=1".into()
        } else {
            String::new()
        },
        codec,
        ssrc,
        rtx_ssrc: rtx,
        cname: "ringcast".into(),
    }
}

#[test]
fn subscriber_offer_reuses_m_lines() {
    let local = Local::new();
    let mut s = SubscriberOffer::default();
    assert_eq!(
        s.add_track(
            MediaKind::Audio,
            outgoing("TR_a", CodecParams::Opus, 10, None)
        ),
        "0"
    );
    assert_eq!(
        s.add_track(
            MediaKind::Video,
            outgoing("TR_v", CodecParams::Vp8, 20, Some(21))
        ),
        "1"
    );
    let offer = s.build(&local.transport());
    let text = offer.to_string();
    let sd = parse(&text).unwrap();
    assert!(sd.ice_lite);
    assert_eq!(sd.bundle_group().unwrap().mids, ["0", "1"]);
    let v = &sd.media[1];
    assert_eq!(sd.direction(v), Direction::SendOnly);
    assert_eq!(v.attributes.setup, Some(Setup::ActPass));
    assert_eq!(v.ssrc_groups[0].ssrcs, [20, 21]);
    assert_eq!(v.rtpmap(96).unwrap().encoding, "VP8");
    assert_eq!(v.fmtp(97).unwrap().params, "apt=96");
    assert_eq!(v.msid, ["PA_pub TR_v"]);

    // Remove the video, add another: same m-line, same mid.
    assert_eq!(s.remove_track("TR_v"), Some("1".into()));
    let idle = s.build(&local.transport());
    assert_eq!(
        idle.media[1].attributes.direction,
        Some(Direction::Inactive)
    );
    assert_eq!(
        s.add_track(
            MediaKind::Video,
            outgoing("TR_w", CodecParams::Vp8, 30, Some(31))
        ),
        "1"
    );
    assert_eq!(s.build(&local.transport()).media.len(), 2);
    // A second video track needs a new m-line.
    assert_eq!(
        s.add_track(
            MediaKind::Video,
            outgoing("TR_x", CodecParams::Vp9 { profile: 0 }, 40, Some(41))
        ),
        "2"
    );
    let sd = s.build(&local.transport());
    assert_eq!(sd.media.len(), 3);
    assert_eq!(sd.media[2].rtpmap(98).unwrap().encoding, "VP9");
}

#[test]
fn payload_types_stay_unique_across_configurations() {
    let mut p = PayloadTypes::default();
    let h264 = |profile, mode| CodecParams::H264 {
        profile,
        packetization_mode: mode,
    };
    let cb = h264(codec::H264Profile::ConstrainedBaseline, 1);
    let a = p.get_or_assign(&cb, "profile-level-id=42e01f;packetization-mode=1");
    let b = p.get_or_assign(
        &h264(codec::H264Profile::High, 1),
        "profile-level-id=640032;packetization-mode=1",
    );
    let c = p.get_or_assign(&cb, "profile-level-id=42e01f;packetization-mode=1");
    assert_eq!(a, (102, Some(103)));
    assert_eq!(a, c);
    assert_ne!(a.0, b.0);
    let all = [a.0, a.1.unwrap(), b.0, b.1.unwrap()];
    let unique: HashSet<u8> = all.into_iter().collect();
    assert_eq!(unique.len(), 4);
}

/// Chromium's and Firefox's real answers to an ice-lite server offer (captured with the offer in
/// interop/browser/capture-sdp.mjs, which matches what `SubscriberOffer::build` produces).
#[test]
fn browser_subscribe_answers() {
    for (name, text) in [
        ("chromium", CHROMIUM_SUBSCRIBE_ANSWER),
        ("firefox", FIREFOX_SUBSCRIBE_ANSWER),
    ] {
        let answer = parse(text).unwrap();
        let local = Local::new();
        let mut s = SubscriberOffer::default();
        s.add_track(
            MediaKind::Audio,
            outgoing("aud1", CodecParams::Opus, 1111, None),
        );
        s.add_track(
            MediaKind::Video,
            outgoing("vid1", CodecParams::Vp8, 2222, Some(3333)),
        );
        let offer = s.build(&local.transport());
        let got = s
            .accept_answer(&offer, &answer)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(got.rejected.is_empty(), "{name}: {:?}", got.rejected);
        assert_eq!(
            got.remote.dtls_role,
            DtlsRole::Server,
            "{name} answers setup:active"
        );
        assert_eq!(got.extensions.len(), 2);
        // The answer is valid against the captured offer's mids only if counts match.
        let mut wrong = s.clone();
        wrong.add_track(MediaKind::Video, outgoing("x", CodecParams::Vp8, 1, None));
        let bigger = wrong.build(&local.transport());
        assert!(matches!(
            wrong.accept_answer(&bigger, &answer),
            Err(NegotiationError::MediaCountMismatch { .. })
        ));
    }
}

#[test]
fn subscriber_rejection_recycles_the_slot() {
    let local = Local::new();
    let mut s = SubscriberOffer::default();
    s.add_track(
        MediaKind::Audio,
        outgoing("aud1", CodecParams::Opus, 1111, None),
    );
    s.add_track(
        MediaKind::Video,
        outgoing("vid1", CodecParams::Vp8, 2222, Some(3333)),
    );
    let offer = s.build(&local.transport());
    let mut answer = parse(CHROMIUM_SUBSCRIBE_ANSWER).unwrap();
    answer.media[1].port = 0;
    let got = s.accept_answer(&offer, &answer).unwrap();
    assert_eq!(got.rejected.len(), 1);
    assert_eq!(s.slots[1].state, SlotState::Rejected);
    let again = s.build(&local.transport());
    assert_eq!(again.media[1].port, 0);
    assert_eq!(again.bundle_group().unwrap().mids, ["0"]);
    // Recycled with a fresh mid.
    assert_eq!(
        s.add_track(
            MediaKind::Video,
            outgoing("vid2", CodecParams::Vp8, 5, None)
        ),
        "2"
    );
    assert_eq!(s.slots.len(), 2);
}

#[test]
fn candidate_attribute_parses() {
    let c = sdp::parse_candidate("candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host").unwrap();
    assert_eq!(c.port, 40000);
}
