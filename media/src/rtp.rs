//! RTP header view (RFC 3550 §5.1) with header extensions (RFC 8285), and a writer that emits a
//! rewritten header — new SSRC, payload type, sequence number, timestamp and extension ids —
//! into a send buffer.

/// Why bytes are not an RTP packet we forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("shorter than its header")]
    TooShort,
    #[error("not RTP version 2")]
    BadVersion,
    #[error("padding longer than the payload")]
    BadPadding,
    #[error("output buffer too small")]
    NoRoom,
}

/// A parsed RTP packet, borrowing the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    csrc: &'a [u8],
    /// `(profile, data)` of the extension block, if any.
    extension: Option<(u16, &'a [u8])>,
    pub payload: &'a [u8],
}

/// One header extension element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    pub id: u8,
    pub data: &'a [u8],
}

const ONE_BYTE: u16 = 0xBEDE;
/// RFC 8285 two-byte profile: 0x100 in the top 12 bits, "appbits" in the low 4.
const TWO_BYTE_MASK: u16 = 0xFFF0;
const TWO_BYTE: u16 = 0x1000;

impl<'a> RtpPacket<'a> {
    pub fn parse(b: &'a [u8]) -> Result<Self, RtpError> {
        if b.len() < 12 {
            return Err(RtpError::TooShort);
        }
        if b[0] >> 6 != 2 {
            return Err(RtpError::BadVersion);
        }
        let cc = usize::from(b[0] & 0x0F);
        let mut at = 12 + 4 * cc;
        if b.len() < at {
            return Err(RtpError::TooShort);
        }
        let csrc = &b[12..at];
        let extension = if b[0] & 0x10 != 0 {
            if b.len() < at + 4 {
                return Err(RtpError::TooShort);
            }
            let profile = u16::from_be_bytes([b[at], b[at + 1]]);
            let words = usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]));
            let end = at + 4 + 4 * words;
            if b.len() < end {
                return Err(RtpError::TooShort);
            }
            let data = &b[at + 4..end];
            at = end;
            Some((profile, data))
        } else {
            None
        };
        let mut end = b.len();
        if b[0] & 0x20 != 0 {
            let pad = usize::from(*b.last().ok_or(RtpError::TooShort)?);
            if pad == 0 || pad > end - at {
                return Err(RtpError::BadPadding);
            }
            end -= pad;
        }
        Ok(RtpPacket {
            marker: b[1] & 0x80 != 0,
            payload_type: b[1] & 0x7F,
            sequence: u16::from_be_bytes([b[2], b[3]]),
            timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            csrc,
            extension,
            payload: &b[at..end],
        })
    }

    /// The header extension elements (one-byte or two-byte form); other profiles yield none.
    pub fn extensions(&self) -> Extensions<'a> {
        match self.extension {
            Some((p, data)) if p == ONE_BYTE => Extensions {
                data,
                two_byte: false,
            },
            Some((p, data)) if p & TWO_BYTE_MASK == TWO_BYTE => Extensions {
                data,
                two_byte: true,
            },
            _ => Extensions {
                data: &[],
                two_byte: false,
            },
        }
    }

    pub fn extension(&self, id: u8) -> Option<&'a [u8]> {
        self.extensions().find(|e| e.id == id).map(|e| e.data)
    }
}

/// Iterator over header extension elements.
#[derive(Debug, Clone)]
pub struct Extensions<'a> {
    data: &'a [u8],
    two_byte: bool,
}

impl<'a> Iterator for Extensions<'a> {
    type Item = Extension<'a>;

    fn next(&mut self) -> Option<Extension<'a>> {
        loop {
            let (&first, rest) = self.data.split_first()?;
            if first == 0 {
                // Padding.
                self.data = rest;
                continue;
            }
            let (id, len, body) = if self.two_byte {
                let (&len, body) = rest.split_first()?;
                (first, usize::from(len), body)
            } else {
                if first >> 4 == 15 {
                    // Reserved id 15: stop processing (RFC 8285 §4.2).
                    self.data = &[];
                    return None;
                }
                (first >> 4, usize::from(first & 0x0F) + 1, rest)
            };
            if body.len() < len {
                self.data = &[];
                return None;
            }
            self.data = &body[len..];
            return Some(Extension {
                id,
                data: &body[..len],
            });
        }
    }
}

/// What a subscriber's copy of a packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    pub ssrc: u32,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
}

/// Writes `pkt` with `rw` applied into `out`, keeping only the header extensions `map` gives an
/// id for (publisher id → subscriber id) in the one-byte form where they fit, two-byte
/// otherwise. With `rtx_osn`, the payload is prefixed with that original sequence number: an
/// RTX packet (RFC 4588 §4). Returns the packet length. CSRCs are kept; padding is dropped.
pub fn write_rewritten(
    pkt: &RtpPacket<'_>,
    rw: &Rewrite,
    map: impl Fn(u8) -> Option<u8>,
    rtx_osn: Option<u16>,
    out: &mut [u8],
) -> Result<usize, RtpError> {
    let at = write_rewritten_head(pkt, rw, map, None, rtx_osn, out)?;
    let end = at + pkt.payload.len();
    if out.len() < end {
        return Err(RtpError::NoRoom);
    }
    out[at..end].copy_from_slice(pkt.payload);
    Ok(end)
}

/// As `write_rewritten`, without the payload: writes the header (and an RTX packet's original
/// sequence number) and returns its length, for an egress that seals `pkt.payload` straight
/// after it (`Egress::send_rtp_payload`). `added` is one more extension element Ringcast
/// writes itself (a subscriber's transport-wide sequence number), after those kept.
pub fn write_rewritten_head(
    pkt: &RtpPacket<'_>,
    rw: &Rewrite,
    map: impl Fn(u8) -> Option<u8>,
    added: Option<(u8, &[u8])>,
    rtx_osn: Option<u16>,
    out: &mut [u8],
) -> Result<usize, RtpError> {
    let fixed = 12 + pkt.csrc.len();
    if out.len() < fixed {
        return Err(RtpError::NoRoom);
    }
    let cc = (pkt.csrc.len() / 4) as u8;
    out[1] = (u8::from(rw.marker) << 7) | (rw.payload_type & 0x7F);
    out[2..4].copy_from_slice(&rw.sequence.to_be_bytes());
    out[4..8].copy_from_slice(&rw.timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&rw.ssrc.to_be_bytes());
    out[12..fixed].copy_from_slice(pkt.csrc);
    let elements = || {
        pkt.extensions()
            .filter_map(|e| map(e.id).map(|id| (id, e.data)))
            .chain(added)
    };
    // Decide the form: one-byte unless an element is longer than 16 bytes or an id above 14.
    let mut two_byte = false;
    let mut any = false;
    for (id, data) in elements() {
        any = true;
        two_byte |= id > 14 || data.len() > 16 || data.is_empty();
    }
    let mut at = fixed;
    if any {
        if out.len() < at + 4 {
            return Err(RtpError::NoRoom);
        }
        let start = at + 4;
        let mut w = start;
        for (id, data) in elements() {
            let need = data.len() + if two_byte { 2 } else { 1 };
            if out.len() < w + need {
                return Err(RtpError::NoRoom);
            }
            if two_byte {
                out[w] = id;
                out[w + 1] = data.len() as u8;
                w += 2;
            } else {
                out[w] = (id << 4) | (data.len() as u8 - 1);
                w += 1;
            }
            out[w..w + data.len()].copy_from_slice(data);
            w += data.len();
        }
        let padded = (w - start).div_ceil(4) * 4;
        if out.len() < start + padded {
            return Err(RtpError::NoRoom);
        }
        out[w..start + padded].fill(0);
        let profile = if two_byte { TWO_BYTE } else { ONE_BYTE };
        out[at..at + 2].copy_from_slice(&profile.to_be_bytes());
        out[at + 2..at + 4].copy_from_slice(&((padded / 4) as u16).to_be_bytes());
        at = start + padded;
    }
    out[0] = 0x80 | (u8::from(any) << 4) | cc;
    if let Some(osn) = rtx_osn {
        if out.len() < at + 2 {
            return Err(RtpError::NoRoom);
        }
        out[at..at + 2].copy_from_slice(&osn.to_be_bytes());
        at += 2;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// V=2, X=1, CC=1, M=1, PT=96, seq 0x1234, ts 0xAABBCCDD, SSRC 0x01020304, CSRC 9,
    /// one-byte extensions: id 1 (1 byte: 0x7F audio level), id 3 (3 bytes), padding.
    fn sample() -> Vec<u8> {
        let mut p = vec![
            0x91, 0xE0, 0x12, 0x34, 0xAA, 0xBB, 0xCC, 0xDD, 1, 2, 3, 4, 0, 0, 0, 9,
        ];
        p.extend_from_slice(&[
            0xBE, 0xDE, 0x00, 0x02, 0x10, 0x7F, 0x32, 0xA, 0xB, 0xC, 0x00, 0x00,
        ]);
        p.extend_from_slice(b"payload!");
        p
    }

    #[test]
    fn parses_header_and_extensions() {
        let b = sample();
        let p = RtpPacket::parse(&b).unwrap();
        assert!(p.marker);
        assert_eq!(
            (p.payload_type, p.sequence, p.timestamp, p.ssrc),
            (96, 0x1234, 0xAABB_CCDD, 0x0102_0304)
        );
        let exts: Vec<(u8, &[u8])> = p.extensions().map(|e| (e.id, e.data)).collect();
        assert_eq!(exts, [(1, &[0x7F][..]), (3, &[0xA, 0xB, 0xC][..])]);
        assert_eq!(p.payload, b"payload!");
    }

    #[test]
    fn rewrites_into_a_send_buffer() {
        let b = sample();
        let p = RtpPacket::parse(&b).unwrap();
        let rw = Rewrite {
            ssrc: 0xDEAD_BEEF,
            payload_type: 111,
            sequence: 7,
            timestamp: 42,
            marker: false,
        };
        let mut out = [0u8; 200];
        // Keep id 3 as id 5, drop id 1.
        let n = write_rewritten(&p, &rw, |id| (id == 3).then_some(5), None, &mut out).unwrap();
        let q = RtpPacket::parse(&out[..n]).unwrap();
        assert_eq!(
            (q.ssrc, q.payload_type, q.sequence, q.timestamp, q.marker),
            (0xDEAD_BEEF, 111, 7, 42, false)
        );
        let exts: Vec<(u8, &[u8])> = q.extensions().map(|e| (e.id, e.data)).collect();
        assert_eq!(exts, [(5, &[0xA, 0xB, 0xC][..])]);
        assert_eq!(q.payload, b"payload!");
        assert_eq!(q.csrc, &[0, 0, 0, 9]);
        // No extension kept: no extension block at all.
        let n = write_rewritten(&p, &rw, |_| None, None, &mut out).unwrap();
        assert_eq!(out[0] & 0x10, 0);
        assert_eq!(n, 16 + 8);
        // An id above 14 switches to the two-byte form.
        let n = write_rewritten(&p, &rw, |id| Some(id + 20), None, &mut out).unwrap();
        let q = RtpPacket::parse(&out[..n]).unwrap();
        let exts: Vec<(u8, &[u8])> = q.extensions().map(|e| (e.id, e.data)).collect();
        assert_eq!(exts, [(21, &[0x7F][..]), (23, &[0xA, 0xB, 0xC][..])]);
        assert_eq!(
            write_rewritten(&p, &rw, |_| None, None, &mut [0u8; 10]),
            Err(RtpError::NoRoom)
        );
    }

    /// The head alone is the whole packet up to its payload, for every form and with an OSN.
    #[test]
    fn the_head_is_the_packet_without_its_payload() {
        let b = sample();
        let p = RtpPacket::parse(&b).unwrap();
        let rw = Rewrite {
            ssrc: 1,
            payload_type: 100,
            sequence: 9,
            timestamp: 3,
            marker: true,
        };
        let maps: [fn(u8) -> Option<u8>; 3] =
            [|_| None, |id| (id == 3).then_some(5), |id| Some(id + 20)];
        for map in maps {
            for osn in [None, Some(0xBEEF)] {
                let mut whole = [0u8; 200];
                let n = write_rewritten(&p, &rw, map, osn, &mut whole).unwrap();
                let mut head = [0u8; 200];
                let h = write_rewritten_head(&p, &rw, map, None, osn, &mut head).unwrap();
                assert_eq!(h + p.payload.len(), n);
                assert_eq!(head[..h], whole[..h]);
                assert_eq!(&whole[h..n], p.payload);
            }
        }
    }

    /// An element Ringcast adds (a transport-wide sequence number) follows those kept, in the
    /// form they take, or makes the two-byte form where its id needs it.
    #[test]
    fn an_added_element_follows_the_kept_ones() {
        let b = sample();
        let p = RtpPacket::parse(&b).unwrap();
        let rw = Rewrite {
            ssrc: 1,
            payload_type: 100,
            sequence: 9,
            timestamp: 3,
            marker: false,
        };
        let keep3 = |id: u8| (id == 3).then_some(5);
        for (map, added_id, two_byte) in [
            (keep3 as fn(u8) -> Option<u8>, 7u8, false),
            (|_| None, 7, false),
            (keep3, 20, true),
        ] {
            let mut head = [0u8; 200];
            let h = write_rewritten_head(
                &p,
                &rw,
                map,
                Some((added_id, &[0x12, 0x34])),
                None,
                &mut head,
            )
            .unwrap();
            head[h..h + p.payload.len()].copy_from_slice(p.payload);
            let q = RtpPacket::parse(&head[..h + p.payload.len()]).unwrap();
            let exts: Vec<(u8, &[u8])> = q.extensions().map(|e| (e.id, e.data)).collect();
            let mut want: Vec<(u8, &[u8])> = Vec::new();
            if map(3).is_some() {
                want.push((5, &[0xA, 0xB, 0xC]));
            }
            want.push((added_id, &[0x12, 0x34]));
            assert_eq!(exts, want);
            assert_eq!(
                q.extension.map(|(p, _)| p & TWO_BYTE_MASK == TWO_BYTE),
                Some(two_byte)
            );
            assert_eq!(q.payload, p.payload);
        }
    }

    #[test]
    fn writes_rtx_with_the_original_sequence_first() {
        let b = sample();
        let p = RtpPacket::parse(&b).unwrap();
        let rw = Rewrite {
            ssrc: 0xFEED,
            payload_type: 97,
            sequence: 1,
            timestamp: 0xAABB_CCDD,
            marker: true,
        };
        let mut out = [0u8; 200];
        let n = write_rewritten(&p, &rw, |_| None, Some(0x1234), &mut out).unwrap();
        let q = RtpPacket::parse(&out[..n]).unwrap();
        assert_eq!((q.ssrc, q.payload_type, q.sequence), (0xFEED, 97, 1));
        assert_eq!(&q.payload[..2], &[0x12, 0x34]);
        assert_eq!(&q.payload[2..], b"payload!");
    }

    #[test]
    fn rejects_bad_packets() {
        assert_eq!(RtpPacket::parse(&[0x80; 11]), Err(RtpError::TooShort));
        assert_eq!(RtpPacket::parse(&[0x40; 20]), Err(RtpError::BadVersion));
        let mut b = sample();
        b[0] |= 0x20;
        *b.last_mut().unwrap() = 200;
        assert_eq!(RtpPacket::parse(&b), Err(RtpError::BadPadding));
        let mut b = sample();
        b[19] = 0x40; // extension length past the end
        assert_eq!(RtpPacket::parse(&b), Err(RtpError::TooShort));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(p) = RtpPacket::parse(&data) {
                let _ = p.extensions().count();
                let mut out = [0u8; 512];
                let rw = Rewrite { ssrc: 1, payload_type: 1, sequence: 1, timestamp: 1, marker: true };
                let _ = write_rewritten(&p, &rw, Some, Some(7), &mut out);
            }
        }
    }
}
