//! Ringcast's vocabulary, at the bottom of the crate graph: what control, datapath and media
//! all name, and the one seam between the shards and media routing (`route`). Plain data,
//! protocol constants and traits; its one dependency is a hasher. A crate that needs the word
//! for a codec or a transport does not pull in the crate that negotiates it.

use std::fmt;

pub mod route;

/// A hash map for keys Ringcast issues or has authenticated (transport and track ids, SSRCs,
/// validated addresses): foldhash, seeded per process, instead of SipHash on the per-packet
/// lookups.
pub type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// One ICE + DTLS-SRTP transport (a participant has a publisher and a subscriber transport),
/// numbered by the control plane and used by the shards as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransportId(pub u64);

impl fmt::Display for TransportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transport-{}", self.0)
    }
}

/// A published track as the shards number it (the API names it by its `TrackSid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(pub u64);

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "track-{}", self.0)
    }
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn from_sdp(kind: &str) -> Option<Self> {
        match kind {
            "audio" => Some(MediaKind::Audio),
            "video" => Some(MediaKind::Video),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// What a published track carries, as its publisher says: screen shares are shared a
/// subscriber's bandwidth first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrackSource {
    #[default]
    Unknown,
    Camera,
    Microphone,
    ScreenShare,
    ScreenShareAudio,
}

/// What a subscriber asks of one subscription. Its bandwidth is shared out by these, and a
/// video subscription is never sent more than they allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionSettings {
    /// The highest simulcast layer it may get (0 the lowest); `None`: any.
    pub max_layer: Option<u8>,
    /// The size it is rendered at, in pixels (0: not said): a layer larger than needed to
    /// cover it is not sent, where the layers' sizes are known.
    pub width: u32,
    pub height: u32,
    /// Shared out first: higher first, then screen shares, the active speaker, then the
    /// larger rendered size.
    pub priority: u8,
    /// The highest frame rate it wants (0: any): VP8 temporal layers above it are not sent.
    pub max_fps: u32,
}

/// The codecs Ringcast forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecName {
    Opus,
    Vp8,
    Vp9,
    H264,
    Av1,
}

impl CodecName {
    pub const ALL: [CodecName; 5] = [
        CodecName::Opus,
        CodecName::Vp8,
        CodecName::Vp9,
        CodecName::H264,
        CodecName::Av1,
    ];

    /// The rtpmap encoding name as browsers write it.
    pub fn encoding(self) -> &'static str {
        match self {
            CodecName::Opus => "opus",
            CodecName::Vp8 => "VP8",
            CodecName::Vp9 => "VP9",
            CodecName::H264 => "H264",
            CodecName::Av1 => "AV1",
        }
    }

    pub fn kind(self) -> MediaKind {
        match self {
            CodecName::Opus => MediaKind::Audio,
            _ => MediaKind::Video,
        }
    }

    pub fn clock_rate(self) -> u32 {
        match self {
            CodecName::Opus => 48_000,
            _ => 90_000,
        }
    }

    pub fn channels(self) -> Option<u16> {
        match self {
            CodecName::Opus => Some(2),
            _ => None,
        }
    }

    /// MIME type, e.g. `video/VP8`.
    pub fn mime_type(self) -> String {
        format!("{}/{}", self.kind().as_str(), self.encoding())
    }
}

impl fmt::Display for CodecName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encoding())
    }
}

/// SRTP protection profiles Ringcast speaks (RFC 5764 §4.1.2, RFC 7714 §14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    AeadAes128Gcm,
    AeadAes256Gcm,
    Aes128CmHmacSha1_80,
}

impl SrtpProfile {
    /// Every profile, in Ringcast's order of preference.
    pub const ALL: [SrtpProfile; 3] = [
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
        SrtpProfile::Aes128CmHmacSha1_80,
    ];

    /// The name the RFCs and IANA's registry give it, which Ringcast's config, metrics and
    /// loadtest use too.
    pub fn name(self) -> &'static str {
        match self {
            SrtpProfile::AeadAes128Gcm => "AEAD_AES_128_GCM",
            SrtpProfile::AeadAes256Gcm => "AEAD_AES_256_GCM",
            SrtpProfile::Aes128CmHmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
        }
    }

    /// The name OpenSSL's `use_srtp` list uses.
    pub fn openssl_name(self) -> &'static str {
        match self {
            SrtpProfile::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            SrtpProfile::AeadAes256Gcm => "SRTP_AEAD_AES_256_GCM",
            SrtpProfile::Aes128CmHmacSha1_80 => "SRTP_AES128_CM_SHA1_80",
        }
    }

    /// IANA DTLS-SRTP protection profile id (RFC 5764, RFC 7714).
    pub fn from_dtls_id(id: u16) -> Option<Self> {
        match id {
            0x0001 => Some(SrtpProfile::Aes128CmHmacSha1_80),
            0x0007 => Some(SrtpProfile::AeadAes128Gcm),
            0x0008 => Some(SrtpProfile::AeadAes256Gcm),
            _ => None,
        }
    }

    pub fn master_key_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmHmacSha1_80 | SrtpProfile::AeadAes128Gcm => 16,
            SrtpProfile::AeadAes256Gcm => 32,
        }
    }

    pub fn master_salt_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmHmacSha1_80 => 14,
            _ => 12,
        }
    }

    /// Bytes SRTP appends to an RTP packet (the tag).
    pub fn rtp_overhead(self) -> usize {
        match self {
            SrtpProfile::Aes128CmHmacSha1_80 => 10,
            _ => 16,
        }
    }

    /// Bytes SRTCP appends (tag + E|index).
    pub fn rtcp_overhead(self) -> usize {
        self.rtp_overhead() + 4
    }
}

/// Who starts the DTLS handshake on a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsRole {
    /// Ringcast waits for the ClientHello (`a=setup:passive` on our side).
    Server,
    /// Ringcast sends the ClientHello (`a=setup:active` on our side).
    Client,
}

/// A certificate fingerprint, as `a=fingerprint:<hash> <hex bytes>` carries it (RFC 8122).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Lower case hash function name, e.g. `sha-256`.
    pub algorithm: String,
    pub bytes: Vec<u8>,
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.algorithm)?;
        for (i, b) in self.bytes.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// RTP header extension URIs Ringcast negotiates or reads (RFC 8285 names them in SDP).
pub mod ext {
    pub const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
    pub const RID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
    pub const REPAIRED_RID: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
    pub const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
    pub const TRANSPORT_CC: &str =
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
    pub const AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
    pub const DEPENDENCY_DESCRIPTOR: &str =
        "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtls_ids_round_trip_and_lengths_follow_the_rfcs() {
        for (p, id, key, salt, tag) in [
            (SrtpProfile::Aes128CmHmacSha1_80, 1, 16, 14, 10),
            (SrtpProfile::AeadAes128Gcm, 7, 16, 12, 16),
            (SrtpProfile::AeadAes256Gcm, 8, 32, 12, 16),
        ] {
            assert_eq!(SrtpProfile::from_dtls_id(id), Some(p));
            assert_eq!(
                (p.master_key_len(), p.master_salt_len(), p.rtp_overhead()),
                (key, salt, tag)
            );
            assert_eq!(p.rtcp_overhead(), tag + 4);
        }
        assert_eq!(SrtpProfile::from_dtls_id(2), None);
    }

    #[test]
    fn fingerprints_print_as_sdp_writes_them() {
        let f = Fingerprint {
            algorithm: "sha-256".into(),
            bytes: vec![0xAB, 0x01, 0xFF],
        };
        assert_eq!(f.to_string(), "sha-256 AB:01:FF");
    }
}
