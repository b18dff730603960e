//! RTCP (RFC 3550 §6, RFC 4585, RFC 5104): a zero-copy reader for compound packets and writers
//! for the feedback Ringcast sends. Malformed input is an error the caller counts, never a panic.

/// Why an RTCP packet is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    #[error("shorter than an RTCP header")]
    TooShort,
    #[error("not RTCP version 2")]
    BadVersion,
    #[error("length field runs past the datagram")]
    BadLength,
    #[error("output buffer too small")]
    NoRoom,
}

/// One report block of an SR or RR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// 24-bit signed cumulative loss.
    pub cumulative_lost: i32,
    pub highest_seq: u32,
    pub jitter: u32,
    pub last_sr: u32,
    pub delay_since_last_sr: u32,
}

/// The receive interval of one stream between two report blocks (RFC 3550 A.3): what was
/// expected and received at the last report, for the block's fraction lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportInterval {
    expected_prior: u64,
    received_prior: u64,
}

impl ReportInterval {
    /// The fraction of packets lost (in 1/256) since the last call, given the totals now;
    /// starts the next interval.
    pub fn fraction_lost(&mut self, expected: u64, received: u64) -> u8 {
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8)
    }
}

/// One packet of a compound RTCP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rtcp<'a> {
    SenderReport {
        ssrc: u32,
        ntp: u64,
        rtp_ts: u32,
        packets: u32,
        octets: u32,
        reports: Reports<'a>,
    },
    ReceiverReport {
        ssrc: u32,
        reports: Reports<'a>,
    },
    /// Generic NACK (RTPFB FMT 1): lost packets of `media_ssrc`.
    Nack {
        sender_ssrc: u32,
        media_ssrc: u32,
        items: Nacks<'a>,
    },
    /// Picture Loss Indication (PSFB FMT 1).
    Pli {
        sender_ssrc: u32,
        media_ssrc: u32,
    },
    /// Full Intra Request (PSFB FMT 4): the SSRCs asked for a keyframe.
    Fir {
        sender_ssrc: u32,
        entries: &'a [u8],
    },
    /// Receiver Estimated Max Bitrate (PSFB FMT 15, "REMB").
    Remb {
        sender_ssrc: u32,
        bitrate_bps: u64,
        ssrcs: &'a [u8],
    },
    /// Transport-wide congestion control feedback (RTPFB FMT 15), kept raw.
    TransportCc {
        sender_ssrc: u32,
        media_ssrc: u32,
        body: &'a [u8],
    },
    /// SDES, BYE, APP, XR and other feedback: not interpreted.
    Other {
        packet_type: u8,
        fmt: u8,
    },
}

/// Report blocks of an SR/RR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reports<'a>(&'a [u8]);

impl<'a> Iterator for Reports<'a> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        if self.0.len() < 24 {
            return None;
        }
        let b = &self.0[..24];
        self.0 = &self.0[24..];
        let lost = u32::from_be_bytes([0, b[5], b[6], b[7]]);
        // Sign-extend the 24-bit value.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        Some(ReportBlock {
            ssrc: be32(b, 0),
            fraction_lost: b[4],
            cumulative_lost,
            highest_seq: be32(b, 8),
            jitter: be32(b, 12),
            last_sr: be32(b, 16),
            delay_since_last_sr: be32(b, 20),
        })
    }
}

/// Sequence numbers a generic NACK reports lost (PID plus the bitmask of the 16 following).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nacks<'a>(&'a [u8]);

impl Iterator for Nacks<'_> {
    type Item = (u16, u16);

    /// `(pid, blp)` pairs.
    fn next(&mut self) -> Option<(u16, u16)> {
        if self.0.len() < 4 {
            return None;
        }
        let item = (
            u16::from_be_bytes([self.0[0], self.0[1]]),
            u16::from_be_bytes([self.0[2], self.0[3]]),
        );
        self.0 = &self.0[4..];
        Some(item)
    }
}

impl Nacks<'_> {
    /// Every lost sequence number, in order.
    pub fn lost(self) -> impl Iterator<Item = u16> {
        self.flat_map(|(pid, blp)| {
            std::iter::once(pid).chain(
                (0..16)
                    .filter(move |i| blp & (1 << i) != 0)
                    .map(move |i| pid.wrapping_add(i + 1)),
            )
        })
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Iterator over the packets of a compound RTCP datagram. A malformed packet yields one error
/// and ends the iteration.
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

/// Reads a compound RTCP datagram (already decrypted).
pub fn read(datagram: &[u8]) -> Compound<'_> {
    Compound { rest: datagram }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<Rtcp<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = parse_one(self.rest);
        match r {
            Ok((p, len)) => {
                self.rest = &self.rest[len..];
                Some(Ok(p))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

fn parse_one(b: &[u8]) -> Result<(Rtcp<'_>, usize), RtcpError> {
    if b.len() < 4 {
        return Err(RtcpError::TooShort);
    }
    if b[0] >> 6 != 2 {
        return Err(RtcpError::BadVersion);
    }
    let count = b[0] & 0x1F;
    let pt = b[1];
    let len = 4 * (usize::from(u16::from_be_bytes([b[2], b[3]])) + 1);
    if len > b.len() {
        return Err(RtcpError::BadLength);
    }
    let mut body = &b[4..len];
    if b[0] & 0x20 != 0 {
        // Padding: the last octet counts it.
        let pad = usize::from(*body.last().ok_or(RtcpError::BadLength)?);
        if pad == 0 || pad > body.len() {
            return Err(RtcpError::BadLength);
        }
        body = &body[..body.len() - pad];
    }
    let need = |n: usize| {
        if body.len() < n {
            Err(RtcpError::TooShort)
        } else {
            Ok(())
        }
    };
    let p = match pt {
        200 => {
            need(24)?;
            let reports = &body[24..];
            need(24 + 24 * usize::from(count))?;
            Rtcp::SenderReport {
                ssrc: be32(body, 0),
                ntp: (u64::from(be32(body, 4)) << 32) | u64::from(be32(body, 8)),
                rtp_ts: be32(body, 12),
                packets: be32(body, 16),
                octets: be32(body, 20),
                reports: Reports(&reports[..24 * usize::from(count)]),
            }
        }
        201 => {
            need(4 + 24 * usize::from(count))?;
            Rtcp::ReceiverReport {
                ssrc: be32(body, 0),
                reports: Reports(&body[4..4 + 24 * usize::from(count)]),
            }
        }
        205 | 206 => {
            need(8)?;
            let (sender_ssrc, media_ssrc) = (be32(body, 0), be32(body, 4));
            let fci = &body[8..];
            match (pt, count) {
                (205, 1) => Rtcp::Nack {
                    sender_ssrc,
                    media_ssrc,
                    items: Nacks(fci),
                },
                (205, 15) => Rtcp::TransportCc {
                    sender_ssrc,
                    media_ssrc,
                    body: fci,
                },
                (206, 1) => Rtcp::Pli {
                    sender_ssrc,
                    media_ssrc,
                },
                (206, 4) => Rtcp::Fir {
                    sender_ssrc,
                    entries: fci,
                },
                (206, 15) if fci.len() >= 8 && &fci[..4] == b"REMB" => {
                    let n = usize::from(fci[4]);
                    let exp = u32::from(fci[5] >> 2);
                    let mantissa = (u64::from(fci[5] & 0x03) << 16)
                        | (u64::from(fci[6]) << 8)
                        | u64::from(fci[7]);
                    let ssrcs = fci.get(8..8 + 4 * n).ok_or(RtcpError::TooShort)?;
                    Rtcp::Remb {
                        sender_ssrc,
                        bitrate_bps: mantissa.checked_shl(exp).unwrap_or(u64::MAX),
                        ssrcs,
                    }
                }
                _ => Rtcp::Other {
                    packet_type: pt,
                    fmt: count,
                },
            }
        }
        _ => Rtcp::Other {
            packet_type: pt,
            fmt: count,
        },
    };
    Ok((p, len))
}

/// Writes RTCP packets one after another into a caller's buffer.
pub struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Writer<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        Writer { buf, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn header(&mut self, count: u8, pt: u8, words: usize) -> Result<usize, RtcpError> {
        let total = 4 * (words + 1);
        if self.buf.len() < self.len + total {
            return Err(RtcpError::NoRoom);
        }
        let at = self.len;
        self.buf[at] = 0x80 | (count & 0x1F);
        self.buf[at + 1] = pt;
        self.buf[at + 2..at + 4].copy_from_slice(&(words as u16).to_be_bytes());
        self.len += total;
        Ok(at + 4)
    }

    fn put32(&mut self, at: usize, v: u32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Receiver report with up to 31 blocks.
    pub fn receiver_report(&mut self, ssrc: u32, blocks: &[ReportBlock]) -> Result<(), RtcpError> {
        let blocks = &blocks[..blocks.len().min(31)];
        let at = self.header(blocks.len() as u8, 201, 1 + 6 * blocks.len())?;
        self.put32(at, ssrc);
        for (i, b) in blocks.iter().enumerate() {
            self.block(at + 4 + 24 * i, b);
        }
        Ok(())
    }

    /// Sender report (no report blocks).
    pub fn sender_report(
        &mut self,
        ssrc: u32,
        ntp: u64,
        rtp_ts: u32,
        packets: u32,
        octets: u32,
    ) -> Result<(), RtcpError> {
        let at = self.header(0, 200, 6)?;
        self.put32(at, ssrc);
        self.put32(at + 4, (ntp >> 32) as u32);
        self.put32(at + 8, ntp as u32);
        self.put32(at + 12, rtp_ts);
        self.put32(at + 16, packets);
        self.put32(at + 20, octets);
        Ok(())
    }

    fn block(&mut self, at: usize, b: &ReportBlock) {
        self.put32(at, b.ssrc);
        let lost = (b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0x00FF_FFFF;
        self.put32(at + 4, (u32::from(b.fraction_lost) << 24) | lost);
        self.put32(at + 8, b.highest_seq);
        self.put32(at + 12, b.jitter);
        self.put32(at + 16, b.last_sr);
        self.put32(at + 20, b.delay_since_last_sr);
    }

    /// Generic NACK for `lost` (ascending sequence numbers of `media_ssrc`).
    pub fn nack(
        &mut self,
        sender_ssrc: u32,
        media_ssrc: u32,
        lost: &[u16],
    ) -> Result<(), RtcpError> {
        // Pack into (pid, blp) items.
        let mut items = [(0u16, 0u16); 64];
        let mut n = 0;
        for &s in lost {
            if n > 0 {
                let (pid, blp) = &mut items[n - 1];
                let d = s.wrapping_sub(*pid);
                if (1..=16).contains(&d) {
                    *blp |= 1 << (d - 1);
                    continue;
                }
            }
            if n == items.len() {
                break;
            }
            items[n] = (s, 0);
            n += 1;
        }
        let at = self.header(1, 205, 2 + n)?;
        self.put32(at, sender_ssrc);
        self.put32(at + 4, media_ssrc);
        for (i, (pid, blp)) in items[..n].iter().enumerate() {
            self.put32(at + 8 + 4 * i, (u32::from(*pid) << 16) | u32::from(*blp));
        }
        Ok(())
    }

    /// Receiver Estimated Max Bitrate for `ssrcs` (draft-alvestrand-rmcat-remb).
    pub fn remb(
        &mut self,
        sender_ssrc: u32,
        bitrate_bps: u64,
        ssrcs: &[u32],
    ) -> Result<(), RtcpError> {
        let ssrcs = &ssrcs[..ssrcs.len().min(255)];
        let at = self.header(15, 206, 4 + ssrcs.len())?;
        self.put32(at, sender_ssrc);
        self.put32(at + 4, 0);
        self.buf[at + 8..at + 12].copy_from_slice(b"REMB");
        // 6-bit exponent, 18-bit mantissa.
        let mut exp = 0u32;
        let mut mantissa = bitrate_bps;
        while mantissa > 0x3FFFF {
            mantissa >>= 1;
            exp += 1;
        }
        self.put32(
            at + 12,
            ((ssrcs.len() as u32) << 24) | (exp.min(63) << 18) | mantissa as u32,
        );
        for (i, s) in ssrcs.iter().enumerate() {
            self.put32(at + 16 + 4 * i, *s);
        }
        Ok(())
    }

    /// Picture Loss Indication.
    pub fn pli(&mut self, sender_ssrc: u32, media_ssrc: u32) -> Result<(), RtcpError> {
        let at = self.header(1, 206, 2)?;
        self.put32(at, sender_ssrc);
        self.put32(at + 4, media_ssrc);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rr_nack_pli_round_trip_as_one_compound() {
        let mut buf = [0u8; 256];
        let mut w = Writer::new(&mut buf);
        let block = ReportBlock {
            ssrc: 0xAA,
            fraction_lost: 12,
            cumulative_lost: -3,
            highest_seq: 0x1_0005,
            jitter: 77,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 9,
        };
        w.receiver_report(1, &[block]).unwrap();
        w.nack(1, 0xBB, &[100, 101, 116, 117, 200]).unwrap();
        w.pli(1, 0xBB).unwrap();
        let n = w.len();
        let pkts: Vec<Rtcp<'_>> = read(&buf[..n]).map(Result::unwrap).collect();
        assert_eq!(pkts.len(), 3);
        let Rtcp::ReceiverReport { ssrc: 1, reports } = pkts[0] else {
            panic!("{:?}", pkts[0])
        };
        assert_eq!(reports.collect::<Vec<_>>(), [block]);
        let Rtcp::Nack {
            media_ssrc: 0xBB,
            items,
            ..
        } = pkts[1]
        else {
            panic!()
        };
        assert_eq!(items.lost().collect::<Vec<_>>(), [100, 101, 116, 117, 200]);
        assert_eq!(
            items.count(),
            3,
            "100 (+101, +116), 117, 200: 116 fits pid 100's mask"
        );
        assert_eq!(
            pkts[2],
            Rtcp::Pli {
                sender_ssrc: 1,
                media_ssrc: 0xBB
            }
        );
    }

    #[test]
    fn sender_report_and_remb() {
        let mut buf = [0u8; 128];
        let mut w = Writer::new(&mut buf);
        w.sender_report(5, 0x0102_0304_0506_0708, 9000, 10, 1200)
            .unwrap();
        let n = w.len();
        // Chromium's REMB: 1.5 Mb/s for one SSRC (exp 4, mantissa 93750).
        let remb = [
            0x8F,
            206,
            0,
            5,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            b'R',
            b'E',
            b'M',
            b'B',
            1,
            (4 << 2) | 0x01,
            0x6E,
            0x36,
            0,
            0,
            0,
            0x42,
        ];
        buf[n..n + remb.len()].copy_from_slice(&remb);
        let pkts: Vec<Rtcp<'_>> = read(&buf[..n + remb.len()]).map(Result::unwrap).collect();
        assert!(matches!(
            pkts[0],
            Rtcp::SenderReport {
                ssrc: 5,
                ntp: 0x0102_0304_0506_0708,
                rtp_ts: 9000,
                packets: 10,
                octets: 1200,
                ..
            }
        ));
        let Rtcp::Remb {
            bitrate_bps, ssrcs, ..
        } = pkts[1]
        else {
            panic!("{:?}", pkts[1])
        };
        assert_eq!(bitrate_bps, 93750 << 4);
        assert_eq!(ssrcs, [0, 0, 0, 0x42]);
    }

    #[test]
    fn remb_round_trip() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        w.remb(1, 2_500_000, &[7, 8]).unwrap();
        let n = w.len();
        let Some(Ok(Rtcp::Remb {
            bitrate_bps, ssrcs, ..
        })) = read(&buf[..n]).next()
        else {
            panic!()
        };
        // 18-bit mantissa: exact to within 1/2^17.
        assert!(
            bitrate_bps <= 2_500_000 && bitrate_bps > 2_499_960,
            "{bitrate_bps}"
        );
        assert_eq!(ssrcs, [0, 0, 0, 7, 0, 0, 0, 8]);
    }

    #[test]
    fn malformed_is_an_error_not_a_panic() {
        assert_eq!(read(&[0x80, 201]).next(), Some(Err(RtcpError::TooShort)));
        assert_eq!(
            read(&[0x40, 201, 0, 0]).next(),
            Some(Err(RtcpError::BadVersion))
        );
        assert_eq!(
            read(&[0x80, 201, 0, 9, 0, 0, 0, 0]).next(),
            Some(Err(RtcpError::BadLength))
        );
        // RR claiming two blocks but carrying none.
        assert_eq!(
            read(&[0x82, 201, 0, 1, 0, 0, 0, 1]).next(),
            Some(Err(RtcpError::TooShort))
        );
        let mut w_buf = [0u8; 8];
        assert_eq!(
            Writer::new(&mut w_buf).pli(1, 2).map(|_| ()),
            Err(RtcpError::NoRoom)
        );
    }

    proptest::proptest! {
        #[test]
        fn reader_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            for p in read(&data) {
                if let Ok(Rtcp::Nack { items, .. }) = p {
                    let _ = items.lost().count();
                }
                if let Ok(Rtcp::ReceiverReport { reports, .. } | Rtcp::SenderReport { reports, .. }) = p {
                    let _ = reports.count();
                }
            }
        }
    }
}
