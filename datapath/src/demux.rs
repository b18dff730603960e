//! RFC 7983 demultiplexing: which protocol a datagram on a bundled port carries.

/// Packets a shard demuxes (RFC 7983 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Other,
}

/// RFC 7983: STUN 0–3, DTLS 20–63, RTP/RTCP 128–191 (RTCP by payload type 192–223, RFC 5761).
pub fn classify(d: &[u8]) -> Kind {
    match d.first() {
        Some(0..=3) => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        Some(128..=191) => match d.get(1) {
            Some(192..=223) => Kind::Rtcp,
            Some(_) => Kind::Rtp,
            None => Kind::Other,
        },
        _ => Kind::Other,
    }
}
