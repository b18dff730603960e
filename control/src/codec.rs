//! What media Ringcast forwards: codecs, RTCP feedback and RTP header extensions, and the rules
//! that decide whether an offered codec matches one of ours. Pure functions, no state.

use crate::sdp::{Fmtp, MediaDescription, RtcpFb, RtpMap};

pub use ringcast_types::{CodecName, MediaKind};

/// The codec an rtpmap names, if it is one of ours with our clock rate and channels.
fn codec_from_rtpmap(r: &RtpMap) -> Option<CodecName> {
    let c = CodecName::ALL
        .into_iter()
        .find(|c| c.encoding().eq_ignore_ascii_case(&r.encoding))?;
    let channels_ok = match c.channels() {
        Some(n) => r.channels == Some(n),
        None => r.channels.is_none() || r.channels == Some(1),
    };
    (r.clock_rate == c.clock_rate() && channels_ok).then_some(c)
}

/// H.264 profiles (RFC 6184 §8.1, profile_idc + profile-iop), as WebRTC endpoints match them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum H264Profile {
    ConstrainedBaseline,
    Baseline,
    Main,
    Extended,
    High,
    ConstrainedHigh,
}

impl H264Profile {
    /// Profile of a `profile-level-id` (6 hex digits); the level is ignored, as the answerer may
    /// receive any level of the same profile.
    pub fn from_profile_level_id(plid: &str) -> Option<Self> {
        if plid.len() != 6 {
            return None;
        }
        let v = u32::from_str_radix(plid, 16).ok()?;
        let idc = (v >> 16) as u8;
        let iop = (v >> 8) as u8;
        // (idc, mask, value): iop & mask == value. Order matters: constrained forms first.
        const PATTERNS: [(u8, u8, u8, H264Profile); 8] = [
            (0x42, 0x4F, 0x40, H264Profile::ConstrainedBaseline),
            (0x4D, 0x8F, 0x80, H264Profile::ConstrainedBaseline),
            (0x58, 0xCF, 0xC0, H264Profile::ConstrainedBaseline),
            (0x42, 0x4F, 0x00, H264Profile::Baseline),
            (0x58, 0xCF, 0x80, H264Profile::Baseline),
            (0x4D, 0xAF, 0x00, H264Profile::Main),
            (0x58, 0xCF, 0x00, H264Profile::Extended),
            (0x64, 0xFF, 0x00, H264Profile::High),
        ];
        if idc == 0x64 && iop == 0x0C {
            return Some(H264Profile::ConstrainedHigh);
        }
        PATTERNS
            .iter()
            .find(|(i, mask, val, _)| *i == idc && iop & mask == *val)
            .map(|p| p.3)
    }
}

/// A codec's parameters that must agree between sender and receiver for them to be the same
/// codec (two H.264 entries with different packetization modes are different codecs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CodecParams {
    Opus,
    Vp8,
    /// profile-id (0 when absent).
    Vp9 {
        profile: u8,
    },
    H264 {
        profile: H264Profile,
        packetization_mode: u8,
    },
    /// profile (0 when absent).
    Av1 {
        profile: u8,
    },
}

impl CodecParams {
    pub fn name(&self) -> CodecName {
        match self {
            CodecParams::Opus => CodecName::Opus,
            CodecParams::Vp8 => CodecName::Vp8,
            CodecParams::Vp9 { .. } => CodecName::Vp9,
            CodecParams::H264 { .. } => CodecName::H264,
            CodecParams::Av1 { .. } => CodecName::Av1,
        }
    }

    /// Reads the identity-relevant parameters of an offered codec; `None` if Ringcast can't
    /// forward it (unknown codec, or a profile we don't support).
    pub fn from_sdp(r: &RtpMap, fmtp: Option<&Fmtp>) -> Option<Self> {
        let get = |k: &str| fmtp.and_then(|f| f.get(k));
        Some(match codec_from_rtpmap(r)? {
            CodecName::Opus => CodecParams::Opus,
            CodecName::Vp8 => CodecParams::Vp8,
            CodecName::Vp9 => {
                let profile = get("profile-id").map_or(Some(0), |p| p.parse().ok())?;
                // Profiles 0 (8-bit 4:2:0) and 2 (10-bit 4:2:0) are what browsers send.
                if profile != 0 && profile != 2 {
                    return None;
                }
                CodecParams::Vp9 { profile }
            }
            CodecName::H264 => {
                // RFC 6184: an absent profile-level-id means 420010 (baseline, level 1).
                let profile = H264Profile::from_profile_level_id(
                    get("profile-level-id").unwrap_or("420010"),
                )?;
                let packetization_mode =
                    get("packetization-mode").map_or(Some(0), |p| p.parse().ok())?;
                if packetization_mode > 1 {
                    return None;
                }
                CodecParams::H264 {
                    profile,
                    packetization_mode,
                }
            }
            CodecName::Av1 => {
                let profile = get("profile").map_or(Some(0), |p| p.parse().ok())?;
                if profile != 0 {
                    return None;
                }
                CodecParams::Av1 { profile }
            }
        })
    }
}

/// A codec both sides agreed on, with the payload types the peer uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedCodec {
    pub params: CodecParams,
    pub pt: u8,
    /// fmtp line as Ringcast answers it (the parameters it accepts from the offer).
    pub fmtp: String,
    pub rtcp_fbs: Vec<RtcpFb>,
    /// The RTX payload type, if the peer offered RTX for this codec.
    pub rtx_pt: Option<u8>,
}

impl NegotiatedCodec {
    pub fn name(&self) -> CodecName {
        self.params.name()
    }

    /// Appends this codec (and its RTX) to an m-section: format, rtpmap, rtcp-fb and fmtp lines.
    pub fn write_to(&self, m: &mut MediaDescription) {
        let name = self.name();
        m.formats.push(self.pt.to_string());
        m.rtpmaps.push(RtpMap {
            pt: self.pt,
            encoding: name.encoding().to_owned(),
            clock_rate: name.clock_rate(),
            channels: name.channels(),
        });
        m.rtcp_fbs.extend(self.rtcp_fbs.iter().cloned());
        if !self.fmtp.is_empty() {
            m.fmtps.push(Fmtp {
                pt: self.pt,
                params: self.fmtp.clone(),
            });
        }
        if let Some(rtx) = self.rtx_pt {
            m.formats.push(rtx.to_string());
            m.rtpmaps.push(RtpMap {
                pt: rtx,
                encoding: "rtx".to_owned(),
                clock_rate: name.clock_rate(),
                channels: None,
            });
            m.fmtps.push(Fmtp {
                pt: rtx,
                params: format!("apt={}", self.pt),
            });
        }
    }
}

/// RTCP feedback Ringcast offers subscribers, per kind: `(type, parameter)`. transport-cc:
/// Ringcast stamps transport-wide sequence numbers on what it sends each subscriber and
/// estimates its downlink from the feedback (goog-remb where that is all it negotiated).
pub fn subscriber_feedback(kind: MediaKind) -> &'static [(&'static str, Option<&'static str>)] {
    match kind {
        MediaKind::Audio => &[("nack", None), ("transport-cc", None)],
        MediaKind::Video => &[
            ("goog-remb", None),
            ("transport-cc", None),
            ("ccm", Some("fir")),
            ("nack", None),
            ("nack", Some("pli")),
        ],
    }
}

/// RTCP feedback Ringcast accepts from publishers, per kind (as it offers subscribers).
/// Ringcast answers transport-wide sequence numbers with transport-wide feedback (every
/// 100 ms, see `ringcast_media::router`), which a publisher's send-side estimator follows;
/// without that feedback a Chromium publisher that negotiated it would lower its estimate by a
/// fifth every second. The REMB Ringcast sends stays a ceiling either way.
pub fn publisher_feedback(kind: MediaKind) -> &'static [(&'static str, Option<&'static str>)] {
    subscriber_feedback(kind)
}

/// The feedback of a publisher's `offered` that Ringcast supports for a payload type, in offer
/// order.
pub fn accept_feedback(kind: MediaKind, pt: u8, offered: &[RtcpFb]) -> Vec<RtcpFb> {
    let supported = publisher_feedback(kind);
    let mut out: Vec<RtcpFb> = Vec::new();
    for fb in offered
        .iter()
        .filter(|fb| fb.pt == Some(pt) || fb.pt.is_none())
    {
        let ok = supported
            .iter()
            .any(|(k, p)| *k == fb.kind && p.map(str::to_owned) == fb.param);
        let dup = out.iter().any(|o| o.kind == fb.kind && o.param == fb.param);
        if ok && !dup {
            out.push(RtcpFb {
                pt: Some(pt),
                kind: fb.kind.clone(),
                param: fb.param.clone(),
            });
        }
    }
    out
}

/// The fmtp parameters Ringcast echoes in an answer for a codec it accepts.
pub fn answer_fmtp(params: &CodecParams, offered: Option<&Fmtp>) -> String {
    let keep: &[&str] = match params {
        CodecParams::Opus => &[
            "minptime",
            "useinbandfec",
            "usedtx",
            "stereo",
            "sprop-stereo",
        ],
        CodecParams::Vp8 => &[],
        CodecParams::Vp9 { .. } => &["profile-id"],
        CodecParams::H264 { .. } => &[
            "level-asymmetry-allowed",
            "packetization-mode",
            "profile-level-id",
        ],
        CodecParams::Av1 { .. } => &["level-idx", "profile", "tier"],
    };
    let Some(f) = offered else {
        return String::new();
    };
    f.pairs()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .map(|(k, v)| if v.is_empty() { k } else { format!("{k}={v}") })
        .collect::<Vec<_>>()
        .join(";")
}

/// RTP header extensions Ringcast understands.
pub use ringcast_types::ext;

/// Extensions Ringcast accepts from publishers, per kind (transport-wide sequence numbers,
/// which Ringcast answers with transport-wide feedback, see `publisher_feedback`).
pub fn supported_extensions(kind: MediaKind) -> &'static [&'static str] {
    match kind {
        MediaKind::Audio => &[
            ext::MID,
            ext::ABS_SEND_TIME,
            ext::AUDIO_LEVEL,
            ext::TRANSPORT_CC,
        ],
        MediaKind::Video => &[
            ext::MID,
            ext::RID,
            ext::REPAIRED_RID,
            ext::ABS_SEND_TIME,
            ext::TRANSPORT_CC,
            ext::DEPENDENCY_DESCRIPTOR,
        ],
    }
}

/// Extensions Ringcast offers subscribers, with the ids it uses (RFC 8285 one-byte ids).
pub fn subscriber_extensions(kind: MediaKind) -> &'static [(u8, &'static str)] {
    match kind {
        MediaKind::Audio => &[
            (1, ext::MID),
            (2, ext::ABS_SEND_TIME),
            (3, ext::TRANSPORT_CC),
            (4, ext::AUDIO_LEVEL),
        ],
        MediaKind::Video => &[
            (1, ext::MID),
            (2, ext::ABS_SEND_TIME),
            (3, ext::TRANSPORT_CC),
            (5, ext::DEPENDENCY_DESCRIPTOR),
        ],
    }
}

/// The codecs an m-section offers that Ringcast accepts, in the offerer's order, each with its
/// RTX payload type if RTX was offered for it.
pub fn accept_codecs(kind: MediaKind, m: &MediaDescription) -> Vec<NegotiatedCodec> {
    let mut out: Vec<NegotiatedCodec> = Vec::new();
    for pt in m.payload_types() {
        let Some(r) = m.rtpmap(pt) else { continue };
        let fmtp = m.fmtp(pt);
        let Some(params) = CodecParams::from_sdp(r, fmtp) else {
            continue;
        };
        if params.name().kind() != kind {
            continue;
        }
        let rtx_pt = m.payload_types().find(|&x| {
            m.rtpmap(x)
                .is_some_and(|r| r.encoding.eq_ignore_ascii_case("rtx"))
                && m.fmtp(x).and_then(|f| f.get("apt")) == Some(pt.to_string().as_str())
        });
        out.push(NegotiatedCodec {
            fmtp: answer_fmtp(&params, fmtp),
            rtcp_fbs: accept_feedback(kind, pt, &m.rtcp_fbs),
            params,
            pt,
            rtx_pt,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_profiles() {
        use H264Profile::*;
        let cases = [
            ("42e01f", ConstrainedBaseline),
            ("42c01f", ConstrainedBaseline),
            ("4d801f", ConstrainedBaseline),
            ("42001f", Baseline),
            ("4d001f", Main),
            ("640032", High),
            ("640c1f", ConstrainedHigh),
            ("f4001f", High),
        ];
        for (plid, want) in cases {
            let got = H264Profile::from_profile_level_id(plid);
            if plid == "f4001f" {
                assert_eq!(got, None, "High 4:4:4 is not supported");
            } else {
                assert_eq!(got, Some(want), "{plid}");
            }
        }
        assert_eq!(H264Profile::from_profile_level_id("42e0"), None);
        assert_eq!(H264Profile::from_profile_level_id("zzzzzz"), None);
    }

    fn rtpmap(enc: &str, clock: u32, ch: Option<u16>) -> RtpMap {
        RtpMap {
            pt: 100,
            encoding: enc.into(),
            clock_rate: clock,
            channels: ch,
        }
    }

    #[test]
    fn codec_params_from_sdp() {
        let f = |s: &str| Fmtp {
            pt: 100,
            params: s.into(),
        };
        assert_eq!(
            CodecParams::from_sdp(&rtpmap("opus", 48000, Some(2)), None),
            Some(CodecParams::Opus)
        );
        assert_eq!(
            CodecParams::from_sdp(&rtpmap("opus", 8000, Some(2)), None),
            None
        );
        assert_eq!(
            CodecParams::from_sdp(&rtpmap("PCMU", 8000, None), None),
            None
        );
        assert_eq!(
            CodecParams::from_sdp(
                &rtpmap("H264", 90000, None),
                Some(&f(
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                ))
            ),
            Some(CodecParams::H264 {
                profile: H264Profile::ConstrainedBaseline,
                packetization_mode: 1
            })
        );
        assert_eq!(
            CodecParams::from_sdp(&rtpmap("VP9", 90000, None), Some(&f("profile-id=2"))),
            Some(CodecParams::Vp9 { profile: 2 })
        );
        assert_eq!(
            CodecParams::from_sdp(&rtpmap("VP9", 90000, None), Some(&f("profile-id=1"))),
            None
        );
        assert_eq!(
            CodecParams::from_sdp(&rtpmap("AV1", 90000, None), Some(&f("profile=1"))),
            None
        );
    }

    #[test]
    fn opus_fmtp_answer_keeps_fec_and_dtx() {
        let f = Fmtp {
            pt: 111,
            params: "minptime=10;useinbandfec=1;usedtx=1;foo=bar".into(),
        };
        assert_eq!(
            answer_fmtp(&CodecParams::Opus, Some(&f)),
            "minptime=10;useinbandfec=1;usedtx=1"
        );
    }

    #[test]
    fn feedback_is_intersected() {
        let offered = vec![
            RtcpFb {
                pt: Some(96),
                kind: "goog-remb".into(),
                param: None,
            },
            RtcpFb {
                pt: Some(96),
                kind: "nack".into(),
                param: Some("pli".into()),
            },
            RtcpFb {
                pt: Some(96),
                kind: "nack".into(),
                param: Some("sli".into()),
            },
            RtcpFb {
                pt: Some(97),
                kind: "nack".into(),
                param: None,
            },
            RtcpFb {
                pt: None,
                kind: "ccm".into(),
                param: Some("fir".into()),
            },
            RtcpFb {
                pt: Some(96),
                kind: "transport-cc".into(),
                param: None,
            },
        ];
        let got = accept_feedback(MediaKind::Video, 96, &offered);
        let kinds: Vec<_> = got
            .iter()
            .map(|f| (f.kind.as_str(), f.param.as_deref()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("goog-remb", None),
                ("nack", Some("pli")),
                ("ccm", Some("fir")),
                ("transport-cc", None)
            ]
        );
        assert!(got.iter().all(|f| f.pt == Some(96)));
    }
}
