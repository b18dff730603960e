//! SDP (RFC 8866) as WebRTC endpoints write it (RFC 8829 JSEP, 8843 BUNDLE, 8853 simulcast).
//!
//! A typed model, a parser that names the offending line, and a writer. The model keeps what
//! negotiation needs as typed fields and every other attribute verbatim in `other`, so
//! `parse(write(x)) == x`. No IO, no clock: a pure data module.

mod parse;
mod write;

pub use parse::{parse, parse_candidate};

use std::fmt;

/// Largest SDP accepted, in bytes: far above any real offer, small enough to bound the parser's work.
pub const MAX_SDP_BYTES: usize = 128 * 1024;
/// Most m-sections accepted in one description.
pub const MAX_MEDIA_SECTIONS: usize = 256;

/// What is wrong with an SDP, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is empty")]
    Empty,
    #[error("SDP is {0} bytes; at most {MAX_SDP_BYTES} are accepted")]
    TooLarge(usize),
    #[error("SDP has more than {MAX_MEDIA_SECTIONS} m-sections")]
    TooManyMedia,
    #[error("SDP line {line} (`{text}`): {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// The line, cut to 80 characters.
        text: String,
        reason: String,
    },
    #[error("SDP lacks a required `{0}=` line")]
    Missing(char),
}

/// `o=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: String,
    pub session_version: u64,
    pub net_type: String,
    pub addr_type: String,
    pub address: String,
}

/// `c=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub net_type: String,
    pub addr_type: String,
    pub address: String,
}

/// `b=<kind>:<value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    pub kind: String,
    pub value: u64,
}

/// `a=sendrecv` and friends (RFC 8866 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    /// The direction seen from the other side.
    pub fn reverse(self) -> Self {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// `a=setup` (RFC 4145, RFC 8842): who starts the DTLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setup {
    Active,
    Passive,
    ActPass,
    HoldConn,
}

impl Setup {
    pub fn as_str(self) -> &'static str {
        match self {
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::ActPass => "actpass",
            Setup::HoldConn => "holdconn",
        }
    }
}

/// `a=fingerprint:<hash> <hex bytes>` (RFC 8122).
pub use ringcast_types::Fingerprint;

/// `a=group:<semantics> <mid>...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub semantics: String,
    pub mids: Vec<String>,
}

/// `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub pt: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u16>,
}

/// `a=fmtp:<pt> <params>`; the parameters are kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmtp {
    pub pt: u8,
    pub params: String,
}

impl Fmtp {
    /// The `key=value` pairs (a bare `key` has an empty value), keys lower-cased.
    pub fn pairs(&self) -> impl Iterator<Item = (String, &str)> {
        self.params
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), v.trim()),
                None => (p.to_ascii_lowercase(), ""),
            })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// `a=rtcp-fb:<pt|*> <type> [<param>]` (RFC 4585).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcpFb {
    /// `None` is the wildcard `*`.
    pub pt: Option<u8>,
    pub kind: String,
    pub param: Option<String>,
}

/// `a=extmap:<id>[/<direction>] <uri> [<attributes>]` (RFC 8285).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtMap {
    pub id: u8,
    pub direction: Option<Direction>,
    pub uri: String,
    pub attributes: Option<String>,
}

/// `a=ssrc:<ssrc> <attribute>[:<value>]` (RFC 5576).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsrcAttr {
    pub ssrc: u32,
    pub attribute: String,
    pub value: Option<String>,
}

/// `a=ssrc-group:<semantics> <ssrc>...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsrcGroup {
    pub semantics: String,
    pub ssrcs: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RidDirection {
    Send,
    Recv,
}

impl RidDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            RidDirection::Send => "send",
            RidDirection::Recv => "recv",
        }
    }
}

/// `a=rid:<id> <send|recv> [<restrictions>]` (RFC 8851).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rid {
    pub id: String,
    pub direction: RidDirection,
    pub restrictions: Option<String>,
}

/// One stream in `a=simulcast`, possibly paused (`~`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulcastStream {
    pub rid: String,
    pub paused: bool,
}

/// `a=simulcast:` (RFC 8853). Each list entry is a set of alternatives (`,`), entries are `;`-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Simulcast {
    pub send: Vec<Vec<SimulcastStream>>,
    pub recv: Vec<Vec<SimulcastStream>>,
}

/// `a=candidate:` (RFC 8839).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub foundation: String,
    pub component: u16,
    /// Lower-cased, e.g. `udp`.
    pub transport: String,
    pub priority: u32,
    /// An IP address or an mDNS `.local` name, as written.
    pub address: String,
    pub port: u16,
    pub typ: String,
    pub raddr: Option<String>,
    pub rport: Option<u16>,
    /// Further `name value` pairs (`generation`, `tcptype`, `network-id`, ...), in order.
    pub extensions: Vec<(String, String)>,
}

/// Any attribute the model doesn't type, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

/// Attributes allowed at both session and media level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommonAttributes {
    pub ice_ufrag: Option<String>,
    pub ice_pwd: Option<String>,
    pub ice_options: Option<String>,
    pub fingerprints: Vec<Fingerprint>,
    pub setup: Option<Setup>,
    pub direction: Option<Direction>,
    pub extmap_allow_mixed: bool,
    pub extmaps: Vec<ExtMap>,
    pub other: Vec<Attribute>,
}

/// A whole session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Origin,
    pub session_name: String,
    pub connection: Option<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    pub timing: (u64, u64),
    pub ice_lite: bool,
    pub groups: Vec<Group>,
    pub msid_semantic: Option<String>,
    pub attributes: CommonAttributes,
    pub media: Vec<MediaDescription>,
}

/// One m-section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `application`, ...
    pub kind: String,
    /// 0 means the m-section is rejected or bundled-only.
    pub port: u16,
    pub num_ports: Option<u16>,
    /// E.g. `UDP/TLS/RTP/SAVPF`.
    pub protocol: String,
    /// Payload types for RTP, `webrtc-datachannel` for SCTP.
    pub formats: Vec<String>,
    pub connection: Option<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    pub mid: Option<String>,
    pub rtcp_mux: bool,
    pub rtcp_mux_only: bool,
    pub rtcp_rsize: bool,
    pub bundle_only: bool,
    pub end_of_candidates: bool,
    pub msid: Vec<String>,
    pub candidates: Vec<Candidate>,
    pub rtpmaps: Vec<RtpMap>,
    pub rtcp_fbs: Vec<RtcpFb>,
    pub fmtps: Vec<Fmtp>,
    pub ssrc_groups: Vec<SsrcGroup>,
    pub ssrcs: Vec<SsrcAttr>,
    pub rids: Vec<Rid>,
    pub simulcast: Option<Simulcast>,
    pub attributes: CommonAttributes,
}

impl MediaDescription {
    /// An empty m-section of `kind` with the WebRTC RTP profile.
    pub fn new(kind: &str, port: u16) -> Self {
        MediaDescription {
            kind: kind.to_owned(),
            port,
            num_ports: None,
            protocol: "UDP/TLS/RTP/SAVPF".to_owned(),
            formats: Vec::new(),
            connection: None,
            bandwidths: Vec::new(),
            mid: None,
            rtcp_mux: false,
            rtcp_mux_only: false,
            rtcp_rsize: false,
            bundle_only: false,
            end_of_candidates: false,
            msid: Vec::new(),
            candidates: Vec::new(),
            rtpmaps: Vec::new(),
            rtcp_fbs: Vec::new(),
            fmtps: Vec::new(),
            ssrc_groups: Vec::new(),
            ssrcs: Vec::new(),
            rids: Vec::new(),
            simulcast: None,
            attributes: CommonAttributes::default(),
        }
    }

    pub fn is_rtp(&self) -> bool {
        self.protocol.contains("RTP/")
    }

    pub fn fmtp(&self, pt: u8) -> Option<&Fmtp> {
        self.fmtps.iter().find(|f| f.pt == pt)
    }

    pub fn rtpmap(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|r| r.pt == pt)
    }

    /// Puts `rtcp_fbs` and `fmtps` in the order the writer emits them: grouped under the first
    /// rtpmap of their payload type, in rtpmap order, the rest after (stable otherwise).
    pub(crate) fn canonicalize(&mut self) {
        let rank = |pt: Option<u8>| {
            pt.and_then(|pt| self.rtpmaps.iter().position(|r| r.pt == pt))
                .unwrap_or(usize::MAX)
        };
        let fb_rank: Vec<usize> = self.rtcp_fbs.iter().map(|f| rank(f.pt)).collect();
        let fmtp_rank: Vec<usize> = self.fmtps.iter().map(|f| rank(Some(f.pt))).collect();
        let mut fbs: Vec<(usize, RtcpFb)> =
            fb_rank.into_iter().zip(self.rtcp_fbs.drain(..)).collect();
        fbs.sort_by_key(|(r, _)| *r);
        self.rtcp_fbs = fbs.into_iter().map(|(_, f)| f).collect();
        let mut fmtps: Vec<(usize, Fmtp)> =
            fmtp_rank.into_iter().zip(self.fmtps.drain(..)).collect();
        fmtps.sort_by_key(|(r, _)| *r);
        self.fmtps = fmtps.into_iter().map(|(_, f)| f).collect();
    }

    /// The payload types listed on the m-line, skipping any that are not numbers.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse().ok())
    }
}

impl SessionDescription {
    /// The `a=group:BUNDLE` group, if any.
    pub fn bundle_group(&self) -> Option<&Group> {
        self.groups.iter().find(|g| g.semantics == "BUNDLE")
    }

    /// The ICE credentials of an m-section: its own, else the session's.
    pub fn ice_credentials<'a>(&'a self, m: &'a MediaDescription) -> Option<(&'a str, &'a str)> {
        let ufrag = m
            .attributes
            .ice_ufrag
            .as_deref()
            .or(self.attributes.ice_ufrag.as_deref())?;
        let pwd = m
            .attributes
            .ice_pwd
            .as_deref()
            .or(self.attributes.ice_pwd.as_deref())?;
        Some((ufrag, pwd))
    }

    pub fn fingerprints<'a>(&'a self, m: &'a MediaDescription) -> &'a [Fingerprint] {
        if m.attributes.fingerprints.is_empty() {
            &self.attributes.fingerprints
        } else {
            &m.attributes.fingerprints
        }
    }

    pub fn setup(&self, m: &MediaDescription) -> Option<Setup> {
        m.attributes.setup.or(self.attributes.setup)
    }

    /// The m-section's direction; RFC 8866 defaults to sendrecv.
    pub fn direction(&self, m: &MediaDescription) -> Direction {
        m.attributes
            .direction
            .or(self.attributes.direction)
            .unwrap_or(Direction::SendRecv)
    }

    /// Header extensions that apply to an m-section (its own, else the session's).
    pub fn extmaps<'a>(&'a self, m: &'a MediaDescription) -> &'a [ExtMap] {
        if m.attributes.extmaps.is_empty() {
            &self.attributes.extmaps
        } else {
            &m.attributes.extmaps
        }
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&write::write(self))
    }
}

#[cfg(test)]
pub(crate) mod tests;
