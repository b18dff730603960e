//! The SDP a synthetic participant writes (a publisher's offer, a subscriber's answer) and
//! what it reads from Ringcast's (ICE credentials, fingerprint, candidate, extension ids,
//! SSRCs). Offers and answers are shaped like Chromium's; Ringcast's SDP is read with the
//! control plane's parser.

use std::fmt::Write;
use std::net::SocketAddr;

use ringcast_control::codec::ext::TRANSPORT_CC;
use ringcast_control::codec::{MediaKind, accept_codecs};
use ringcast_control::sdp::{self, Direction, MediaDescription, SessionDescription};
use ringcast_datapath::dtls::Fingerprint;

use crate::media::ExtIds;

const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const RID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
const AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// Our side of a transport: ICE credentials and certificate fingerprint.
#[derive(Debug, Clone)]
pub struct Local {
    pub ufrag: String,
    pub pwd: String,
    pub fingerprint: Fingerprint,
}

fn fingerprint_line(f: &Fingerprint) -> String {
    let hex: Vec<String> = f.bytes.iter().map(|b| format!("{b:02X}")).collect();
    format!("a=fingerprint:{} {}\r\n", f.algorithm, hex.join(":"))
}

/// What a publisher sends.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub audio_ssrc: Option<u32>,
    /// One SSRC, or three (rids q, h, f) for simulcast.
    pub video_ssrcs: Vec<u32>,
}

/// Simulcast rids, lowest first.
pub const RIDS: [&str; 3] = ["q", "h", "f"];

/// The publisher's offer: audio (Opus) and/or video (VP8), sendonly, BUNDLEd, rtcp-mux.
pub fn publish_offer(local: &Local, plan: &PublishPlan, session: u64) -> String {
    let mut mids = Vec::new();
    if plan.audio_ssrc.is_some() {
        mids.push("0");
    }
    if !plan.video_ssrcs.is_empty() {
        mids.push("1");
    }
    let mut s = format!(
        "v=0\r\no=- {session} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS lt\r\n",
        mids.join(" ")
    );
    let transport = |s: &mut String, mid: &str| {
        let _ = write!(
            s,
            "c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=ice-options:trickle\r\n{}a=setup:actpass\r\na=mid:{mid}\r\n",
            local.ufrag,
            local.pwd,
            fingerprint_line(&local.fingerprint)
        );
    };
    if let Some(ssrc) = plan.audio_ssrc {
        s.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n");
        transport(&mut s, "0");
        let _ = write!(
            s,
            "a=extmap:1 {AUDIO_LEVEL}\r\na=extmap:2 {ABS_SEND_TIME}\r\na=extmap:4 {MID}\r\na=sendonly\r\na=msid:lt audio\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=ssrc:{ssrc} cname:loadtest\r\na=ssrc:{ssrc} msid:lt audio\r\n"
        );
    }
    if !plan.video_ssrcs.is_empty() {
        s.push_str("m=video 9 UDP/TLS/RTP/SAVPF 96\r\n");
        transport(&mut s, "1");
        let _ = write!(
            s,
            "a=extmap:2 {ABS_SEND_TIME}\r\na=extmap:4 {MID}\r\na=extmap:10 {RID}\r\na=sendonly\r\na=msid:lt video\r\na=rtcp-mux\r\na=rtcp-rsize\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n"
        );
        if plan.video_ssrcs.len() == 1 {
            let ssrc = plan.video_ssrcs[0];
            let _ = write!(
                s,
                "a=ssrc:{ssrc} cname:loadtest\r\na=ssrc:{ssrc} msid:lt video\r\n"
            );
        } else {
            // As Chromium does: rids, no SSRCs (Ringcast learns them from MID and RID).
            let n = plan.video_ssrcs.len().min(RIDS.len());
            for rid in &RIDS[..n] {
                let _ = write!(s, "a=rid:{rid} send\r\n");
            }
            let _ = write!(s, "a=simulcast:send {}\r\n", RIDS[..n].join(";"));
        }
    }
    s
}

/// What Ringcast's SDP says about one transport.
#[derive(Debug, Clone)]
pub struct Remote {
    pub ufrag: String,
    pub pwd: String,
    pub fingerprints: Vec<Fingerprint>,
    /// The first UDP host candidate.
    pub candidate: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum SdpError {
    #[error("Ringcast's SDP does not parse: {0}")]
    Parse(#[from] sdp::SdpError),
    #[error("Ringcast's SDP lacks {0}")]
    Missing(&'static str),
}

/// The transport parameters of Ringcast's SDP (from its first m-section with a port).
pub fn remote(desc: &SessionDescription) -> Result<Remote, SdpError> {
    let m = desc
        .media
        .iter()
        .find(|m| m.port != 0)
        .ok_or(SdpError::Missing("an m-section with a port"))?;
    let (ufrag, pwd) = desc
        .ice_credentials(m)
        .ok_or(SdpError::Missing("ICE credentials"))?;
    let fingerprints: Vec<Fingerprint> = desc
        .fingerprints(m)
        .iter()
        .map(|f| Fingerprint {
            algorithm: f.algorithm.clone(),
            bytes: f.bytes.clone(),
        })
        .collect();
    if fingerprints.is_empty() {
        return Err(SdpError::Missing("a DTLS fingerprint"));
    }
    let candidate = desc
        .media
        .iter()
        .flat_map(|m| &m.candidates)
        .filter(|c| c.transport == "udp")
        .find_map(|c| Some(SocketAddr::new(c.address.parse().ok()?, c.port)));
    Ok(Remote {
        ufrag: ufrag.to_owned(),
        pwd: pwd.to_owned(),
        fingerprints,
        candidate,
    })
}

/// The extension ids an m-section of Ringcast's SDP maps (answer or offer).
pub fn ext_ids(desc: &SessionDescription, mid: &str) -> ExtIds {
    let Some(m) = desc.media.iter().find(|m| m.mid.as_deref() == Some(mid)) else {
        return ExtIds::default();
    };
    let mut ids = ExtIds::default();
    for e in desc.extmaps(m) {
        match e.uri.as_str() {
            MID => ids.mid = Some(e.id),
            RID => ids.rid = Some(e.id),
            ABS_SEND_TIME => ids.abs_send_time = Some(e.id),
            AUDIO_LEVEL => ids.audio_level = Some(e.id),
            TRANSPORT_CC => ids.transport_cc = Some(e.id),
            _ => {}
        }
    }
    ids
}

/// One track a subscriber offer sends us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedTrack {
    pub mid: String,
    pub video: bool,
    pub ssrc: u32,
    pub payload_type: u8,
    pub clock_rate: u32,
    pub abs_send_time: Option<u8>,
    /// The transport-wide sequence number's id (one per BUNDLEd transport).
    pub transport_cc: Option<u8>,
    /// The RTX stream repairing (and probing) this one, if the offer has RTX for the codec we
    /// answer: its SSRC (the second of the `FID` group) and payload type.
    pub rtx: Option<(u32, u8)>,
}

/// The payload type a subscriber answers an m-section with (its first codec), and the RTX
/// payload type whose `apt` names it, if the offer has one (as Ringcast's negotiation reads it).
fn answered_codec(m: &MediaDescription) -> (u8, Option<u8>) {
    let pt = m.payload_types().next().unwrap_or(0);
    let rtx = MediaKind::from_sdp(&m.kind).and_then(|kind| {
        accept_codecs(kind, m)
            .into_iter()
            .find(|c| c.pt == pt)
            .and_then(|c| c.rtx_pt)
    });
    (pt, rtx)
}

/// The sending m-sections of a subscriber offer.
pub fn offered_tracks(desc: &SessionDescription) -> Vec<OfferedTrack> {
    desc.media
        .iter()
        .filter(|m| m.port != 0 && desc.direction(m) == Direction::SendOnly)
        .filter_map(|m| {
            let mid = m.mid.clone()?;
            let fid = m.ssrc_groups.iter().find(|g| g.semantics == "FID");
            let ssrc = fid
                .and_then(|g| g.ssrcs.first().copied())
                .or_else(|| m.ssrcs.first().map(|s| s.ssrc))?;
            m.payload_types().next()?;
            let (pt, rtx_pt) = answered_codec(m);
            let rtx = rtx_pt
                .zip(fid.and_then(|g| g.ssrcs.get(1).copied()))
                .map(|(pt, ssrc)| (ssrc, pt));
            let clock_rate = m.rtpmap(pt).map_or(90_000, |r| r.clock_rate);
            let exts = ext_ids(desc, &mid);
            Some(OfferedTrack {
                video: m.kind == "video",
                ssrc,
                payload_type: pt,
                clock_rate,
                abs_send_time: exts.abs_send_time,
                transport_cc: exts.transport_cc,
                rtx,
                mid,
            })
        })
        .collect()
}

/// A subscriber's answer: every m-section accepted recvonly with its first codec and the RTX
/// offered for it (`apt` that codec: repairs and bandwidth probes then come on the RTX SSRC of
/// the offer's `FID` group, as to a browser), every offered extension kept but transport-wide
/// sequence numbers, which are kept only with `transport_cc` (the subscriber then sends their
/// feedback); inactive or rejected m-sections mirrored.
pub fn subscribe_answer(
    offer: &SessionDescription,
    local: &Local,
    session: u64,
    transport_cc: bool,
) -> String {
    let mids: Vec<&str> = offer
        .media
        .iter()
        .filter(|m| m.port != 0)
        .filter_map(|m| m.mid.as_deref())
        .collect();
    let mut s = format!(
        "v=0\r\no=- {session} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n",
        mids.join(" ")
    );
    for m in &offer.media {
        let mid = m.mid.as_deref().unwrap_or_default();
        let (pt, rtx) = answered_codec(m);
        if m.port == 0 {
            let _ = write!(
                s,
                "m={} 0 UDP/TLS/RTP/SAVPF {pt}\r\na=mid:{mid}\r\na=inactive\r\n",
                m.kind
            );
            continue;
        }
        let formats = match rtx {
            Some(rtx) => format!("{pt} {rtx}"),
            None => pt.to_string(),
        };
        let _ = write!(
            s,
            "m={} 9 UDP/TLS/RTP/SAVPF {formats}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=ice-options:trickle\r\n{}a=setup:active\r\na=mid:{mid}\r\n",
            m.kind,
            local.ufrag,
            local.pwd,
            fingerprint_line(&local.fingerprint)
        );
        // Transport-wide sequence numbers only from a subscriber that sends their feedback: a
        // transport that negotiated them but never answers would have its estimate, and so
        // its layers, stuck where they started.
        for e in offer
            .extmaps(m)
            .iter()
            .filter(|e| transport_cc || e.uri != TRANSPORT_CC)
        {
            let _ = write!(s, "a=extmap:{} {}\r\n", e.id, e.uri);
        }
        let dir = if offer.direction(m) == Direction::SendOnly {
            "recvonly"
        } else {
            "inactive"
        };
        let _ = write!(s, "a={dir}\r\na=rtcp-mux\r\na=rtcp-rsize\r\n");
        if let Some(r) = m.rtpmap(pt) {
            let channels = r.channels.map(|c| format!("/{c}")).unwrap_or_default();
            let _ = write!(
                s,
                "a=rtpmap:{pt} {}/{}{channels}\r\n",
                r.encoding, r.clock_rate
            );
        }
        for fb in m.rtcp_fbs.iter().filter(|f| f.pt == Some(pt)) {
            match &fb.param {
                Some(p) => {
                    let _ = write!(s, "a=rtcp-fb:{pt} {} {p}\r\n", fb.kind);
                }
                None => {
                    let _ = write!(s, "a=rtcp-fb:{pt} {}\r\n", fb.kind);
                }
            }
        }
        if let Some(f) = m.fmtp(pt) {
            let pairs: Vec<String> = f.pairs().map(|(k, v)| format!("{k}={v}")).collect();
            if !pairs.is_empty() {
                let _ = write!(s, "a=fmtp:{pt} {}\r\n", pairs.join(";"));
            }
        }
        if let (Some(rtx), Some(r)) = (rtx, m.rtpmap(pt)) {
            let _ = write!(
                s,
                "a=rtpmap:{rtx} rtx/{}\r\na=fmtp:{rtx} apt={pt}\r\n",
                r.clock_rate
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Local {
        Local {
            ufrag: "abcd".into(),
            pwd: "0123456789abcdef012345".into(),
            fingerprint: Fingerprint {
                algorithm: "sha-256".into(),
                bytes: vec![0xAB; 32],
            },
        }
    }

    #[test]
    fn offers_parse_as_ringcast_reads_them() {
        for plan in [
            PublishPlan {
                audio_ssrc: Some(1),
                video_ssrcs: vec![2],
            },
            PublishPlan {
                audio_ssrc: None,
                video_ssrcs: vec![2, 3, 4],
            },
            PublishPlan {
                audio_ssrc: Some(1),
                video_ssrcs: vec![],
            },
        ] {
            let text = publish_offer(&local(), &plan, 7);
            let d = sdp::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let n =
                usize::from(plan.audio_ssrc.is_some()) + usize::from(!plan.video_ssrcs.is_empty());
            assert_eq!(d.media.len(), n);
            let m = &d.media[0];
            assert_eq!(
                d.ice_credentials(m),
                Some(("abcd", "0123456789abcdef012345"))
            );
            if plan.video_ssrcs.len() == 3 {
                assert_eq!(d.media[0].rids.len(), 3);
            }
        }
    }

    /// A subscriber offer shaped like Ringcast's: audio and video, sendonly, BUNDLEd, every
    /// extension Ringcast offers subscribers (transport-wide sequence numbers as id 3).
    const RINGCAST_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:srvr\r\na=ice-pwd:0123456789abcdef012345\r\n\
        a=fingerprint:sha-256 AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB\r\n\
        a=setup:actpass\r\na=mid:0\r\n\
        a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
        a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
        a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
        a=extmap:4 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
        a=sendonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n\
        a=ssrc:1001 cname:ringcast\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n\
        a=ice-ufrag:srvr\r\na=ice-pwd:0123456789abcdef012345\r\n\
        a=fingerprint:sha-256 AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB\r\n\
        a=setup:actpass\r\na=mid:1\r\n\
        a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
        a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
        a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
        a=sendonly\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 transport-cc\r\n\
        a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=ssrc:2002 cname:ringcast\r\n";

    /// `RINGCAST_OFFER` with its video m-section's formats replaced by `formats`, these
    /// `codecs` lines added, and the FID group of media SSRC 2002 and RTX SSRC 2003.
    fn offer_with_rtx(formats: &str, codecs: &str) -> SessionDescription {
        let text = RINGCAST_OFFER
            .replace(
                "m=video 9 UDP/TLS/RTP/SAVPF 96",
                &format!("m=video 9 UDP/TLS/RTP/SAVPF {formats}"),
            )
            .replace(
                "a=ssrc:2002 cname:ringcast\r\n",
                &format!(
                    "{codecs}a=ssrc-group:FID 2002 2003\r\na=ssrc:2002 cname:ringcast\r\n\
                     a=ssrc:2003 cname:ringcast\r\n"
                ),
            );
        sdp::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn rtx_is_answered_for_the_accepted_codec() {
        // As Ringcast offers video to a subscriber: VP8 96 and its RTX 97.
        let offer = offer_with_rtx("96 97", "a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n");
        let tracks = offered_tracks(&offer);
        let video = tracks.iter().find(|t| t.video).unwrap();
        assert_eq!((video.ssrc, video.payload_type), (2002, 96));
        assert_eq!(video.rtx, Some((2003, 97)), "the FID group's second SSRC");
        let audio = tracks.iter().find(|t| !t.video).unwrap();
        assert_eq!(audio.rtx, None, "no RTX offered for Opus");
        for transport_cc in [false, true] {
            let text = subscribe_answer(&offer, &local(), 9, transport_cc);
            let answer = sdp::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let m = &answer.media[1];
            assert_eq!(m.payload_types().collect::<Vec<_>>(), [96, 97], "{text}");
            assert_eq!(m.rtpmap(97).map(|r| r.encoding.as_str()), Some("rtx"));
            assert_eq!(m.fmtp(97).and_then(|f| f.get("apt")), Some("96"));
            // As Ringcast reads the answer: VP8 with its RTX, so repairs and probes use it.
            let codecs = accept_codecs(MediaKind::Video, m);
            assert_eq!(
                codecs.iter().map(|c| (c.pt, c.rtx_pt)).collect::<Vec<_>>(),
                [(96, Some(97))]
            );
            assert_eq!(answer.media[0].payload_types().collect::<Vec<_>>(), [111]);
        }
    }

    #[test]
    fn rtx_of_another_codec_is_not_answered() {
        // RTX 97 repairs H264 98, not the VP8 the answer keeps: the answer has no RTX, and the
        // track none either, its FID group notwithstanding.
        let offer = offer_with_rtx(
            "96 98 97",
            "a=rtpmap:98 H264/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=98\r\n",
        );
        let video = offered_tracks(&offer)
            .into_iter()
            .find(|t| t.video)
            .unwrap();
        assert_eq!(video.rtx, None);
        let text = subscribe_answer(&offer, &local(), 9, false);
        let answer = sdp::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(answer.media[1].payload_types().collect::<Vec<_>>(), [96]);
        assert!(answer.media[1].rtpmap(97).is_none(), "{text}");
    }

    #[test]
    fn transport_wide_sequence_numbers_are_answered_only_when_asked_for() {
        let offer = sdp::parse(RINGCAST_OFFER).unwrap();
        let tracks = offered_tracks(&offer);
        assert_eq!(tracks.len(), 2);
        assert!(
            tracks.iter().all(|t| t.transport_cc == Some(3)),
            "{tracks:?}"
        );
        assert_eq!(ext_ids(&offer, "1").transport_cc, Some(3));
        for transport_cc in [false, true] {
            let text = subscribe_answer(&offer, &local(), 9, transport_cc);
            let answer = sdp::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            for mid in ["0", "1"] {
                let ids = ext_ids(&answer, mid);
                let want = transport_cc.then_some(3);
                assert_eq!(
                    ids.transport_cc, want,
                    "mid {mid}, flag {transport_cc}\n{text}"
                );
                // The other extensions are kept either way.
                assert_eq!(
                    (ids.mid, ids.abs_send_time),
                    (Some(1), Some(2)),
                    "mid {mid}"
                );
            }
            assert_eq!(
                text.matches(TRANSPORT_CC).count(),
                if transport_cc { 2 } else { 0 }
            );
        }
    }
}
