//! JSEP negotiation for Ringcast's two transports (RFC 8829, 8843, 8853).
//!
//! - Publisher transport: the client offers, Ringcast answers (`answer_publish`).
//! - Subscriber transport: Ringcast offers (`SubscriberOffer::build`), the client answers
//!   (`SubscriberOffer::accept_answer`).
//!
//! Ringcast is always ICE-lite, BUNDLEs everything and requires rtcp-mux. Pure functions of
//! their inputs: no IO, no clock, no randomness (credentials come in as arguments).

use std::collections::HashSet;

use crate::codec::{
    self, CodecName, CodecParams, MediaKind, NegotiatedCodec, accept_codecs, supported_extensions,
};
use crate::ice::IceCredentials;
use crate::sdp::{
    Candidate, Connection, Direction, ExtMap, Fingerprint, Group, MediaDescription, Origin, Rid,
    RidDirection, SessionDescription, Setup, Simulcast, SsrcAttr, SsrcGroup,
};

/// Most simulcast layers accepted per track; extra rids are removed from the answer.
pub const MAX_SIMULCAST_LAYERS: usize = 3;

/// Why a whole description was refused (each m-section problem is a rejection instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    #[error("the offer has no `a=group:BUNDLE`; Ringcast needs every m-section bundled")]
    NoBundle,
    #[error("m-section {index} has no `a=mid`")]
    MissingMid { index: usize },
    #[error("mid `{0}` appears twice")]
    DuplicateMid(String),
    #[error("no ICE credentials (a=ice-ufrag / a=ice-pwd) for the BUNDLE transport")]
    MissingIceCredentials,
    #[error("{0}")]
    BadIceCredentials(String),
    #[error("no `a=fingerprint` for the BUNDLE transport")]
    MissingFingerprint,
    #[error("fingerprint hash `{0}` is not one of sha-1, sha-224, sha-256, sha-384, sha-512")]
    UnsupportedFingerprint(String),
    #[error("`a=setup:{0}` is not allowed here")]
    BadSetup(&'static str),
    #[error("the answer has {got} m-sections but the offer had {want}")]
    MediaCountMismatch { got: usize, want: usize },
    #[error("answer m-section {index} has mid `{got}` but the offer's is `{want}`")]
    MidMismatch {
        index: usize,
        got: String,
        want: String,
    },
    #[error("the answer accepts no m-section it could bundle (no BUNDLE group)")]
    AnswerNotBundled,
}

pub use ringcast_types::DtlsRole;

/// Ringcast's side of a transport, as written into its descriptions.
#[derive(Debug, Clone)]
pub struct LocalTransport<'a> {
    pub ice: &'a IceCredentials,
    pub fingerprint: &'a Fingerprint,
    pub candidates: &'a [Candidate],
    /// Value of `o=`'s session id (decimal digits).
    pub session_id: &'a str,
    pub session_version: u64,
}

/// The peer's side of a transport, as the datapath needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTransport {
    pub ice_ufrag: String,
    pub ice_pwd: String,
    pub fingerprints: Vec<Fingerprint>,
    pub dtls_role: DtlsRole,
}

/// A simulcast encoding or the single encoding of a track, with the SSRCs the SDP gave for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// The rid, or `None` without simulcast.
    pub rid: Option<String>,
    /// Signalled SSRC (Chromium's simulcast offers signal none: they are learned from RTP).
    pub ssrc: Option<u32>,
    pub rtx_ssrc: Option<u32>,
}

/// What a publisher's accepted m-section will send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedMedia {
    pub mid: String,
    pub kind: MediaKind,
    /// Codecs the publisher may send, in its order of preference.
    pub codecs: Vec<NegotiatedCodec>,
    /// Header extensions with the publisher's ids.
    pub extensions: Vec<ExtMap>,
    pub encodings: Vec<Encoding>,
    /// `a=msid` stream and track ids, if given.
    pub stream_id: Option<String>,
    pub track_id: Option<String>,
}

/// An m-section refused in an answer (port 0), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub mid: String,
    pub reason: String,
}

/// The result of answering a publisher's offer.
#[derive(Debug, Clone)]
pub struct PublishAnswer {
    pub answer: SessionDescription,
    pub remote: RemoteTransport,
    /// Accepted m-sections the client sends on.
    pub media: Vec<PublishedMedia>,
    /// Accepted m-sections the client doesn't send on (recvonly/inactive in the offer).
    pub idle_mids: Vec<String>,
    pub rejected: Vec<Rejection>,
}

const FINGERPRINT_HASHES: [&str; 5] = ["sha-1", "sha-224", "sha-256", "sha-384", "sha-512"];

/// Reads the peer's ICE/DTLS parameters from the first m-section of the BUNDLE group.
fn remote_transport(
    sd: &SessionDescription,
    m: &MediaDescription,
    our_setup_for: impl Fn(Setup) -> Result<DtlsRole, NegotiationError>,
) -> Result<RemoteTransport, NegotiationError> {
    let (ufrag, pwd) = sd
        .ice_credentials(m)
        .ok_or(NegotiationError::MissingIceCredentials)?;
    IceCredentials::validate_remote(ufrag, pwd).map_err(NegotiationError::BadIceCredentials)?;
    let fingerprints = sd.fingerprints(m).to_vec();
    if fingerprints.is_empty() {
        return Err(NegotiationError::MissingFingerprint);
    }
    if let Some(f) = fingerprints
        .iter()
        .find(|f| !FINGERPRINT_HASHES.contains(&f.algorithm.as_str()))
    {
        return Err(NegotiationError::UnsupportedFingerprint(
            f.algorithm.clone(),
        ));
    }
    let setup = sd.setup(m).unwrap_or(Setup::ActPass);
    Ok(RemoteTransport {
        ice_ufrag: ufrag.to_owned(),
        ice_pwd: pwd.to_owned(),
        fingerprints,
        dtls_role: our_setup_for(setup)?,
    })
}

fn check_mids(sd: &SessionDescription) -> Result<(), NegotiationError> {
    let mut seen = HashSet::new();
    for (index, m) in sd.media.iter().enumerate() {
        let mid = m
            .mid
            .as_ref()
            .ok_or(NegotiationError::MissingMid { index })?;
        if !seen.insert(mid.as_str()) {
            return Err(NegotiationError::DuplicateMid(mid.clone()));
        }
    }
    Ok(())
}

/// Session part of every description Ringcast writes.
fn local_session(local: &LocalTransport<'_>, bundle: Vec<String>) -> SessionDescription {
    SessionDescription {
        origin: Origin {
            username: "-".to_owned(),
            session_id: local.session_id.to_owned(),
            session_version: local.session_version,
            net_type: "IN".to_owned(),
            addr_type: "IP4".to_owned(),
            address: "0.0.0.0".to_owned(),
        },
        session_name: "-".to_owned(),
        connection: None,
        bandwidths: Vec::new(),
        timing: (0, 0),
        ice_lite: true,
        groups: if bundle.is_empty() {
            Vec::new()
        } else {
            vec![Group {
                semantics: "BUNDLE".to_owned(),
                mids: bundle,
            }]
        },
        msid_semantic: None,
        attributes: Default::default(),
        media: Vec::new(),
    }
}

/// Puts Ringcast's transport attributes on an accepted m-section.
fn add_local_transport(m: &mut MediaDescription, local: &LocalTransport<'_>, setup: Setup) {
    let (addr_type, address) = match local.candidates.first() {
        Some(c) if c.address.contains(':') => ("IP6", c.address.clone()),
        Some(c) => ("IP4", c.address.clone()),
        None => ("IP4", "0.0.0.0".to_owned()),
    };
    m.port = local.candidates.first().map_or(9, |c| c.port);
    m.connection = Some(Connection {
        net_type: "IN".to_owned(),
        addr_type: addr_type.to_owned(),
        address,
    });
    m.candidates = local.candidates.to_vec();
    m.end_of_candidates = true;
    m.attributes.ice_ufrag = Some(local.ice.ufrag.clone());
    m.attributes.ice_pwd = Some(local.ice.pwd.clone());
    m.attributes.fingerprints = vec![local.fingerprint.clone()];
    m.attributes.setup = Some(setup);
    m.rtcp_mux = true;
}

/// A rejected m-section for an answer: port 0, the offer's kind, protocol, formats and mid.
fn rejected_section(offered: &MediaDescription) -> MediaDescription {
    let mut m = MediaDescription::new(&offered.kind, 0);
    m.protocol = offered.protocol.clone();
    m.formats = offered.formats.iter().take(1).cloned().collect();
    if m.formats.is_empty() {
        m.formats.push("0".to_owned());
    }
    m.mid = offered.mid.clone();
    m.connection = Some(Connection {
        net_type: "IN".to_owned(),
        addr_type: "IP4".to_owned(),
        address: "0.0.0.0".to_owned(),
    });
    m.attributes.direction = Some(Direction::Inactive);
    m
}

/// Why an offered m-section can't be accepted, if it can't.
fn reject_reason(
    m: &MediaDescription,
    bundled: &HashSet<&str>,
    codecs: &[NegotiatedCodec],
) -> Option<String> {
    let mid = m.mid.as_deref().unwrap_or_default();
    let Some(kind) = MediaKind::from_sdp(&m.kind) else {
        return Some(if m.kind == "application" {
            "data channels are not supported by Ringcast".to_owned()
        } else {
            format!("media kind `{}` is not supported", m.kind)
        });
    };
    if m.port == 0 && !m.bundle_only {
        return Some("the offer rejected this m-section (port 0)".to_owned());
    }
    if !m.protocol.contains("TLS/RTP/SAVP") {
        return Some(format!("protocol `{}` is not DTLS-SRTP", m.protocol));
    }
    if !bundled.contains(mid) {
        return Some("the m-section is not in the BUNDLE group".to_owned());
    }
    if !m.rtcp_mux {
        return Some("rtcp-mux is required".to_owned());
    }
    if codecs.is_empty() {
        let offered: Vec<String> = m
            .payload_types()
            .filter_map(|pt| m.rtpmap(pt))
            .map(|r| r.encoding.clone())
            .filter(|e| !e.eq_ignore_ascii_case("rtx"))
            .collect();
        let ours: Vec<&str> = CodecName::ALL
            .iter()
            .filter(|c| c.kind() == kind)
            .map(|c| c.encoding())
            .collect();
        return Some(format!(
            "no {} codec in common (offered: {}; Ringcast forwards {})",
            kind.as_str(),
            if offered.is_empty() {
                "none".to_owned()
            } else {
                offered.join(", ")
            },
            ours.join(", ")
        ));
    }
    None
}

/// The encodings a publisher m-section announces: simulcast rids, else its SSRCs.
fn encodings(m: &MediaDescription) -> Vec<Encoding> {
    let fid = |media: u32| {
        m.ssrc_groups
            .iter()
            .find(|g| g.semantics == "FID" && g.ssrcs.first() == Some(&media))
            .and_then(|g| g.ssrcs.get(1).copied())
    };
    // Primary SSRCs: those that are no FID group's repair SSRC, in order of appearance.
    let repair: HashSet<u32> = m
        .ssrc_groups
        .iter()
        .filter(|g| g.semantics == "FID")
        .filter_map(|g| g.ssrcs.get(1).copied())
        .collect();
    let mut primaries: Vec<u32> = Vec::new();
    for s in &m.ssrcs {
        if !repair.contains(&s.ssrc) && !primaries.contains(&s.ssrc) {
            primaries.push(s.ssrc);
        }
    }
    let rids: Vec<&Rid> = send_rids(m);
    if rids.is_empty() {
        return vec![Encoding {
            rid: None,
            ssrc: primaries.first().copied(),
            rtx_ssrc: primaries.first().and_then(|&s| fid(s)),
        }];
    }
    // Firefox lists one SSRC (and FID group) per rid, in rid order; Chromium lists none.
    let by_order = primaries.len() == rids.len();
    rids.iter()
        .enumerate()
        .map(|(i, r)| {
            let ssrc = by_order.then(|| primaries[i]);
            Encoding {
                rid: Some(r.id.clone()),
                ssrc,
                rtx_ssrc: ssrc.and_then(fid),
            }
        })
        .collect()
}

/// The rids a publisher sends, in `a=simulcast` order, at most `MAX_SIMULCAST_LAYERS`.
fn send_rids(m: &MediaDescription) -> Vec<&Rid> {
    let Some(sc) = &m.simulcast else {
        return Vec::new();
    };
    sc.send
        .iter()
        .filter_map(|alts| alts.first())
        .filter_map(|s| {
            m.rids
                .iter()
                .find(|r| r.id == s.rid && r.direction == RidDirection::Send)
        })
        .take(MAX_SIMULCAST_LAYERS)
        .collect()
}

/// Answers a publisher's offer.
pub fn answer_publish(
    offer: &SessionDescription,
    local: &LocalTransport<'_>,
) -> Result<PublishAnswer, NegotiationError> {
    check_mids(offer)?;
    let bundle = offer.bundle_group().ok_or(NegotiationError::NoBundle)?;
    let bundled: HashSet<&str> = bundle.mids.iter().map(String::as_str).collect();
    // The offerer-tagged m-section carries the transport parameters (RFC 8843 §7.2.1).
    let tagged = bundle
        .mids
        .iter()
        .find_map(|mid| offer.media.iter().find(|m| m.mid.as_deref() == Some(mid)))
        .ok_or(NegotiationError::NoBundle)?;
    let remote = remote_transport(offer, tagged, |s| match s {
        Setup::ActPass | Setup::Active => Ok(DtlsRole::Server),
        Setup::Passive => Ok(DtlsRole::Client),
        Setup::HoldConn => Err(NegotiationError::BadSetup("holdconn")),
    })?;
    let our_setup = match remote.dtls_role {
        DtlsRole::Server => Setup::Passive,
        DtlsRole::Client => Setup::Active,
    };

    let mut media = Vec::new();
    let mut idle_mids = Vec::new();
    let mut rejected = Vec::new();
    let mut sections = Vec::new();
    let mut accepted_mids = Vec::new();
    for m in &offer.media {
        let mid = m.mid.clone().unwrap_or_default();
        let kind = MediaKind::from_sdp(&m.kind);
        // One codec per m-section: the offerer's first that Ringcast forwards. Subscribers are
        // offered exactly that codec, so a publisher must not switch to another mid-stream.
        let mut codecs = kind.map(|k| accept_codecs(k, m)).unwrap_or_default();
        codecs.truncate(1);
        if let Some(reason) = reject_reason(m, &bundled, &codecs) {
            rejected.push(Rejection { mid, reason });
            sections.push(rejected_section(m));
            continue;
        }
        let Some(kind) = kind else { continue };
        let mut a = MediaDescription::new(&m.kind, 9);
        a.protocol = m.protocol.clone();
        a.mid = Some(mid.clone());
        add_local_transport(&mut a, local, our_setup);
        a.rtcp_rsize = m.rtcp_rsize;
        a.attributes.extmap_allow_mixed =
            m.attributes.extmap_allow_mixed || offer.attributes.extmap_allow_mixed;
        let exts: Vec<ExtMap> = offer
            .extmaps(m)
            .iter()
            .filter(|e| supported_extensions(kind).contains(&e.uri.as_str()))
            .filter(|e| e.direction.is_none_or(Direction::sends))
            .map(|e| ExtMap {
                id: e.id,
                direction: e.direction.map(Direction::reverse),
                uri: e.uri.clone(),
                attributes: None,
            })
            .collect();
        a.attributes.extmaps = exts.clone();
        for c in &codecs {
            c.write_to(&mut a);
        }
        let direction = offer.direction(m);
        let sending = direction.sends();
        a.attributes.direction = Some(if sending {
            Direction::RecvOnly
        } else {
            Direction::Inactive
        });
        let rids = send_rids(m);
        if sending && !rids.is_empty() {
            a.rids = rids
                .iter()
                .map(|r| Rid {
                    id: r.id.clone(),
                    direction: RidDirection::Recv,
                    restrictions: None,
                })
                .collect();
            let send = m
                .simulcast
                .as_ref()
                .map(|s| s.send.clone())
                .unwrap_or_default();
            a.simulcast = Some(Simulcast {
                send: Vec::new(),
                recv: send
                    .into_iter()
                    .filter_map(|alts| alts.into_iter().next())
                    .filter(|s| rids.iter().any(|r| r.id == s.rid))
                    .map(|s| vec![s])
                    .collect(),
            });
        }
        if sending {
            let (stream_id, track_id) = msid(m);
            media.push(PublishedMedia {
                mid: mid.clone(),
                kind,
                codecs,
                extensions: m
                    .attributes
                    .extmaps
                    .iter()
                    .chain(offer.attributes.extmaps.iter())
                    .filter(|e| exts.iter().any(|x| x.id == e.id))
                    .cloned()
                    .collect(),
                encodings: encodings(m),
                stream_id,
                track_id,
            });
        } else {
            idle_mids.push(mid.clone());
        }
        accepted_mids.push(mid);
        sections.push(a);
    }
    let mut answer = local_session(local, accepted_mids);
    answer.attributes.extmap_allow_mixed = offer.attributes.extmap_allow_mixed;
    answer.media = sections;
    Ok(PublishAnswer {
        answer,
        remote,
        media,
        idle_mids,
        rejected,
    })
}

/// `a=msid:<stream> <track>`, else the RFC 5576 `a=ssrc:<n> msid:` form.
fn msid(m: &MediaDescription) -> (Option<String>, Option<String>) {
    let v = m.msid.first().cloned().or_else(|| {
        m.ssrcs
            .iter()
            .find(|s| s.attribute == "msid")
            .and_then(|s| s.value.clone())
    });
    match v {
        Some(v) => {
            let mut it = v.split_ascii_whitespace();
            let stream = it.next().filter(|s| *s != "-").map(str::to_owned);
            (stream, it.next().map(str::to_owned))
        }
        None => (None, None),
    }
}

/// One m-section of the subscriber transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberSlot {
    pub mid: String,
    pub kind: MediaKind,
    pub state: SlotState,
}

/// What a subscriber m-section currently does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// Forwards a track.
    Sending(OutgoingTrack),
    /// Reusable: offered `inactive` until a track of the same kind needs it.
    Idle,
    /// The subscriber rejected it (port 0); recycled with a fresh mid when a slot is needed.
    Rejected,
}

/// A track as a subscriber receives it: Ringcast's SSRCs and the codec it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingTrack {
    /// Opaque id of the published track (the registry's track sid).
    pub track: String,
    /// `a=msid` stream id: the publisher's participant sid.
    pub stream_id: String,
    pub codec: CodecParams,
    /// fmtp parameters of the publisher's codec (H.264 profile-level-id etc.).
    pub fmtp: String,
    pub ssrc: u32,
    pub rtx_ssrc: Option<u32>,
    pub cname: String,
}

/// Payload types of a subscriber transport: one per distinct codec configuration, fixed for the
/// life of the transport so that BUNDLEd m-sections never give one payload type two meanings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadTypes {
    assigned: Vec<(CodecParams, String, u8, Option<u8>)>,
}

impl PayloadTypes {
    /// The (pt, rtx pt) for a codec configuration, assigning new ones on first use.
    pub fn get_or_assign(&mut self, codec: &CodecParams, fmtp: &str) -> (u8, Option<u8>) {
        if let Some((_, _, pt, rtx)) = self
            .assigned
            .iter()
            .find(|(c, f, _, _)| c == codec && f == fmtp)
        {
            return (*pt, *rtx);
        }
        let used: HashSet<u8> = self
            .assigned
            .iter()
            .flat_map(|(_, _, p, r)| std::iter::once(*p).chain(*r))
            .collect();
        let preferred: (u8, Option<u8>) = match codec {
            CodecParams::Opus => (111, None),
            CodecParams::Vp8 => (96, Some(97)),
            CodecParams::Vp9 { profile: 0 } => (98, Some(99)),
            CodecParams::Vp9 { .. } => (100, Some(101)),
            CodecParams::H264 { .. } => (102, Some(103)),
            CodecParams::Av1 { .. } => (45, Some(46)),
        };
        let mut free = (96..=127u8)
            .chain(35..=63)
            .filter(|p| !used.contains(p) && *p != 111);
        let pt = if used.contains(&preferred.0) {
            free.next()
        } else {
            Some(preferred.0)
        };
        let rtx = match preferred.1 {
            Some(r) if !used.contains(&r) && Some(r) != pt => Some(r),
            Some(_) => free.find(|p| Some(*p) != pt),
            None => None,
        };
        // 61 dynamic payload types are more than any transport has codec configurations; when
        // exhausted, reuse the last one rather than fail.
        let pt = pt.unwrap_or(127);
        self.assigned
            .push((codec.clone(), fmtp.to_owned(), pt, rtx));
        (pt, rtx)
    }
}

/// The subscriber transport's negotiation state: its m-sections and payload types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriberOffer {
    pub slots: Vec<SubscriberSlot>,
    pub payload_types: PayloadTypes,
    next_mid: u32,
}

/// What the subscriber accepted in its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberAnswer {
    pub remote: RemoteTransport,
    pub rejected: Vec<Rejection>,
    /// Header extensions the subscriber accepted, per mid (Ringcast's ids).
    pub extensions: Vec<(String, Vec<ExtMap>)>,
    /// Mids whose answer left out the offered RTX payload type: repairs there must repeat the
    /// original packets, because the subscriber would not read an RTX stream.
    pub rtx_declined: Vec<String>,
}

impl SubscriberOffer {
    fn fresh_mid(&mut self) -> String {
        let mid = self.next_mid.to_string();
        self.next_mid += 1;
        mid
    }

    /// Assigns `track` to an m-section: an idle one of its kind, else a recycled rejected one,
    /// else a new one. Returns its mid.
    pub fn add_track(&mut self, kind: MediaKind, track: OutgoingTrack) -> String {
        if let Some(s) = self
            .slots
            .iter_mut()
            .find(|s| s.kind == kind && s.state == SlotState::Idle)
        {
            s.state = SlotState::Sending(track);
            return s.mid.clone();
        }
        let mid = self.fresh_mid();
        let slot = SubscriberSlot {
            mid: mid.clone(),
            kind,
            state: SlotState::Sending(track),
        };
        match self
            .slots
            .iter_mut()
            .find(|s| s.state == SlotState::Rejected)
        {
            Some(s) => *s = slot,
            None => self.slots.push(slot),
        }
        mid
    }

    /// Stops sending `track`; its m-section becomes idle. Returns the mid if it was sent.
    pub fn remove_track(&mut self, track: &str) -> Option<String> {
        let s = self
            .slots
            .iter_mut()
            .find(|s| matches!(&s.state, SlotState::Sending(t) if t.track == track))?;
        s.state = SlotState::Idle;
        Some(s.mid.clone())
    }

    /// Ringcast's offer for the current slots.
    pub fn build(&mut self, local: &LocalTransport<'_>) -> SessionDescription {
        let bundle: Vec<String> = self
            .slots
            .iter()
            .filter(|s| s.state != SlotState::Rejected)
            .map(|s| s.mid.clone())
            .collect();
        let mut sd = local_session(local, bundle);
        sd.msid_semantic = Some("WMS *".to_owned());
        let mut pts = std::mem::take(&mut self.payload_types);
        for slot in &self.slots {
            let kind = slot.kind.as_str();
            if slot.state == SlotState::Rejected {
                let mut m = MediaDescription::new(kind, 0);
                m.formats.push(
                    if slot.kind == MediaKind::Audio {
                        "111"
                    } else {
                        "96"
                    }
                    .to_owned(),
                );
                m.mid = Some(slot.mid.clone());
                m.attributes.direction = Some(Direction::Inactive);
                sd.media.push(m);
                continue;
            }
            let mut m = MediaDescription::new(kind, 9);
            m.mid = Some(slot.mid.clone());
            add_local_transport(&mut m, local, Setup::ActPass);
            m.rtcp_rsize = true;
            m.attributes.extmaps = codec::subscriber_extensions(slot.kind)
                .iter()
                .map(|(id, uri)| ExtMap {
                    id: *id,
                    direction: None,
                    uri: (*uri).to_owned(),
                    attributes: None,
                })
                .collect();
            match &slot.state {
                SlotState::Sending(t) => {
                    let (pt, rtx_pt) = pts.get_or_assign(&t.codec, &t.fmtp);
                    let codec = NegotiatedCodec {
                        params: t.codec.clone(),
                        pt,
                        fmtp: t.fmtp.clone(),
                        rtcp_fbs: codec::subscriber_feedback(slot.kind)
                            .iter()
                            .map(|(k, p)| crate::sdp::RtcpFb {
                                pt: Some(pt),
                                kind: (*k).to_owned(),
                                param: p.map(str::to_owned),
                            })
                            .collect(),
                        rtx_pt: if slot.kind == MediaKind::Video {
                            rtx_pt
                        } else {
                            None
                        },
                    };
                    codec.write_to(&mut m);
                    m.attributes.direction = Some(Direction::SendOnly);
                    m.msid = vec![format!("{} {}", t.stream_id, t.track)];
                    let ssrcs: Vec<u32> = std::iter::once(t.ssrc).chain(t.rtx_ssrc).collect();
                    if ssrcs.len() == 2 {
                        m.ssrc_groups.push(SsrcGroup {
                            semantics: "FID".to_owned(),
                            ssrcs: ssrcs.clone(),
                        });
                    }
                    for s in ssrcs {
                        m.ssrcs.push(SsrcAttr {
                            ssrc: s,
                            attribute: "cname".to_owned(),
                            value: Some(t.cname.clone()),
                        });
                        m.ssrcs.push(SsrcAttr {
                            ssrc: s,
                            attribute: "msid".to_owned(),
                            value: Some(format!("{} {}", t.stream_id, t.track)),
                        });
                    }
                }
                _ => {
                    // Idle: keep a codec of the kind so the m-section stays valid.
                    let params = if slot.kind == MediaKind::Audio {
                        CodecParams::Opus
                    } else {
                        CodecParams::Vp8
                    };
                    let (pt, _) = pts.get_or_assign(
                        &params,
                        if slot.kind == MediaKind::Audio {
                            "minptime=10;useinbandfec=1"
                        } else {
                            ""
                        },
                    );
                    m.formats.push(pt.to_string());
                    m.rtpmaps.push(crate::sdp::RtpMap {
                        pt,
                        encoding: params.name().encoding().to_owned(),
                        clock_rate: params.name().clock_rate(),
                        channels: params.name().channels(),
                    });
                    m.attributes.direction = Some(Direction::Inactive);
                }
            }
            sd.media.push(m);
        }
        self.payload_types = pts;
        sd
    }

    /// Applies the subscriber's answer to the offer `offered` (the one `build` returned).
    pub fn accept_answer(
        &mut self,
        offered: &SessionDescription,
        answer: &SessionDescription,
    ) -> Result<SubscriberAnswer, NegotiationError> {
        if answer.media.len() != offered.media.len() {
            return Err(NegotiationError::MediaCountMismatch {
                got: answer.media.len(),
                want: offered.media.len(),
            });
        }
        for (index, (o, a)) in offered.media.iter().zip(&answer.media).enumerate() {
            if o.mid != a.mid {
                return Err(NegotiationError::MidMismatch {
                    index,
                    got: a.mid.clone().unwrap_or_default(),
                    want: o.mid.clone().unwrap_or_default(),
                });
            }
        }
        let tagged = answer
            .bundle_group()
            .and_then(|g| g.mids.first())
            .and_then(|mid| answer.media.iter().find(|m| m.mid.as_ref() == Some(mid)))
            .or_else(|| answer.media.iter().find(|m| m.port != 0));
        let remote = match tagged {
            Some(m) => remote_transport(answer, m, |s| match s {
                Setup::Active => Ok(DtlsRole::Server),
                Setup::Passive => Ok(DtlsRole::Client),
                Setup::ActPass => Err(NegotiationError::BadSetup("actpass")),
                Setup::HoldConn => Err(NegotiationError::BadSetup("holdconn")),
            })?,
            None if answer.media.is_empty() => RemoteTransport {
                ice_ufrag: String::new(),
                ice_pwd: String::new(),
                fingerprints: Vec::new(),
                dtls_role: DtlsRole::Server,
            },
            None => return Err(NegotiationError::AnswerNotBundled),
        };
        let mut rejected = Vec::new();
        let mut extensions = Vec::new();
        let mut rtx_declined = Vec::new();
        for (o, a) in offered.media.iter().zip(&answer.media) {
            let mid = a.mid.clone().unwrap_or_default();
            let Some(slot) = self.slots.iter_mut().find(|s| s.mid == mid) else {
                continue;
            };
            if o.port == 0 {
                continue;
            }
            let codec_ok = match &slot.state {
                SlotState::Sending(t) => accept_codecs(slot.kind, a)
                    .iter()
                    .any(|c| c.params == t.codec),
                _ => true,
            };
            if (a.port == 0 && !a.bundle_only) || !codec_ok {
                rejected.push(Rejection {
                    mid: mid.clone(),
                    reason: if codec_ok {
                        "the subscriber rejected this m-section".to_owned()
                    } else {
                        "the subscriber's answer lacks the track's codec".to_owned()
                    },
                });
                slot.state = SlotState::Rejected;
                continue;
            }
            let offered_exts = &o.attributes.extmaps;
            let accepted: Vec<ExtMap> = answer
                .extmaps(a)
                .iter()
                .filter(|e| offered_exts.iter().any(|x| x.id == e.id && x.uri == e.uri))
                .cloned()
                .collect();
            let is_rtx = |m: &&crate::sdp::RtpMap| m.encoding.eq_ignore_ascii_case("rtx");
            let offered_rtx = o.rtpmaps.iter().filter(is_rtx).count() > 0;
            let answered_rtx = a
                .rtpmaps
                .iter()
                .filter(is_rtx)
                .any(|m| o.rtpmaps.iter().filter(is_rtx).any(|x| x.pt == m.pt));
            if offered_rtx && !answered_rtx {
                rtx_declined.push(mid.clone());
            }
            extensions.push((mid, accepted));
        }
        Ok(SubscriberAnswer {
            remote,
            rejected,
            extensions,
            rtx_declined,
        })
    }
}

#[cfg(test)]
mod tests;
