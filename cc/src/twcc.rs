//! Transport-wide congestion control feedback, the RTCP RTPFB message with FMT 15
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1): a zero-copy parser for the
//! feedback subscribers send us, and the receive side's [`ArrivalRecorder`], which writes the
//! feedback we send publishers into the caller's buffer.
//!
//! The sequence numbers come from the RTP header extension named
//! `ringcast_types::ext::TRANSPORT_CC`. Parsing and iterating never allocate; malformed input
//! is a [`TwccError`], never a panic.

use std::time::Instant;

/// RTCP packet type of transport layer feedback (RFC 4585 §6.1).
pub const PT_RTPFB: u8 = 205;
/// The feedback message type of transport-wide CC within RTPFB (§3.1).
pub const FMT_TRANSPORT_CC: u8 = 15;
/// Receive deltas count in 250 µs (§3.1.5).
pub const DELTA_UNIT_US: i64 = 250;
/// The reference time counts in 64 ms (§3.1).
pub const REFERENCE_UNIT_US: i64 = 64_000;
/// The reference time field is 24 bits wide and wraps (~12 days).
pub const REFERENCE_WRAP: u32 = 1 << 24;

/// RTCP header, sender and media SSRC, then base sequence, status count, reference time and
/// feedback packet count.
const HEADER_LEN: usize = 20;
/// What follows the 12-byte common feedback header (RFC 4585 §6.1).
const FCI_HEADER_LEN: usize = 8;
const RUN_LENGTH_MAX: usize = 0x1fff;

/// Why a transport-cc feedback message is unusable, or could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TwccError {
    #[error("shorter than a transport-cc feedback header")]
    TooShort,
    #[error("not RTCP version 2")]
    BadVersion,
    #[error("not RTPFB transport-cc feedback (PT 205, FMT 15)")]
    NotTransportCc,
    #[error("length field runs past the datagram")]
    BadLength,
    #[error("padding count is zero or larger than the packet")]
    BadPadding,
    #[error("feedback reports no packet")]
    Empty,
    #[error("packet status chunks end before the status count")]
    MissingChunks,
    #[error("a packet status uses the reserved symbol")]
    ReservedSymbol,
    #[error("receive deltas end before the statuses that need them")]
    MissingDeltas,
    #[error("output buffer too small for one status")]
    NoRoom,
}

/// What the feedback says about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketStatus {
    /// Transport-wide sequence number.
    pub seq: u16,
    /// When it arrived, in µs after the message's reference time; `None` if it did not.
    pub received: Option<i64>,
}

/// One parsed transport-cc feedback message, borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feedback<'a> {
    sender_ssrc: u32,
    media_ssrc: u32,
    base_seq: u16,
    status_count: u16,
    reference_time: u32,
    feedback_count: u8,
    /// The status chunks, exactly as many as the status count needs.
    chunks: &'a [u8],
    /// The receive deltas, exactly as many bytes as the statuses need.
    deltas: &'a [u8],
}

impl<'a> Feedback<'a> {
    /// Parses one whole RTCP packet (header included); bytes past its length field are not
    /// looked at, so the caller may pass the rest of a compound packet.
    pub fn parse(packet: &'a [u8]) -> Result<Self, TwccError> {
        let head = packet.get(..4).ok_or(TwccError::TooShort)?;
        if head[0] >> 6 != 2 {
            return Err(TwccError::BadVersion);
        }
        if head[1] != PT_RTPFB || head[0] & 0x1f != FMT_TRANSPORT_CC {
            return Err(TwccError::NotTransportCc);
        }
        let len = (usize::from(u16::from_be_bytes([head[2], head[3]])) + 1) * 4;
        let mut packet = packet.get(..len).ok_or(TwccError::BadLength)?;
        if head[0] & 0x20 != 0 {
            let pad = usize::from(packet[len - 1]);
            if pad == 0 || pad > len - 4 {
                return Err(TwccError::BadPadding);
            }
            packet = &packet[..len - pad];
        }
        if packet.len() < HEADER_LEN {
            return Err(TwccError::TooShort);
        }
        Self::parse_fci(be32(&packet[4..8]), be32(&packet[8..12]), &packet[12..])
    }

    /// Parses the feedback control information that follows the sender and media SSRC, for a
    /// caller whose compound RTCP reader has split those off. Trailing bytes (padding) are
    /// ignored.
    pub fn parse_fci(sender_ssrc: u32, media_ssrc: u32, fci: &'a [u8]) -> Result<Self, TwccError> {
        let head = fci.get(..FCI_HEADER_LEN).ok_or(TwccError::TooShort)?;
        let base_seq = u16::from_be_bytes([head[0], head[1]]);
        let status_count = u16::from_be_bytes([head[2], head[3]]);
        let reference_time = u32::from_be_bytes([0, head[4], head[5], head[6]]);
        let feedback_count = head[7];
        if status_count == 0 {
            return Err(TwccError::Empty);
        }
        // Walk the chunks once to learn where they end and how many delta bytes follow.
        let rest = &fci[FCI_HEADER_LEN..];
        let mut remaining = usize::from(status_count);
        let mut at = 0;
        let mut delta_len = 0;
        while remaining > 0 {
            let chunk = rest.get(at..at + 2).ok_or(TwccError::MissingChunks)?;
            let chunk = Chunk(u16::from_be_bytes([chunk[0], chunk[1]]));
            at += 2;
            let covered = chunk.len().min(remaining);
            for i in 0..covered {
                delta_len += match chunk.symbol(i) {
                    Symbol::NotReceived => 0,
                    Symbol::Small => 1,
                    Symbol::Large => 2,
                    Symbol::Reserved => return Err(TwccError::ReservedSymbol),
                };
            }
            remaining -= covered;
        }
        let chunks = &rest[..at];
        let deltas = rest
            .get(at..at + delta_len)
            .ok_or(TwccError::MissingDeltas)?;
        Ok(Self {
            sender_ssrc,
            media_ssrc,
            base_seq,
            status_count,
            reference_time,
            feedback_count,
            chunks,
            deltas,
        })
    }

    pub fn sender_ssrc(&self) -> u32 {
        self.sender_ssrc
    }

    pub fn media_ssrc(&self) -> u32 {
        self.media_ssrc
    }

    /// The transport-wide sequence number of the first status.
    pub fn base_seq(&self) -> u16 {
        self.base_seq
    }

    /// How many packets, from the base sequence on, this message reports.
    pub fn status_count(&self) -> u16 {
        self.status_count
    }

    /// The 24-bit reference time, in 64 ms units of the receiver's clock.
    pub fn reference_time(&self) -> u32 {
        self.reference_time
    }

    /// Counts feedback messages (mod 256), so a sender can tell one was lost.
    pub fn feedback_count(&self) -> u8 {
        self.feedback_count
    }

    /// Every reported packet in sequence order, received or not. Does not allocate.
    pub fn packets(&self) -> Packets<'a> {
        Packets {
            chunks: self.chunks,
            deltas: self.deltas,
            seq: self.base_seq,
            remaining: self.status_count,
            chunk: None,
            index: 0,
            at_us: 0,
        }
    }
}

/// Iterator over a [`Feedback`]'s statuses; see [`Feedback::packets`].
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    chunks: &'a [u8],
    deltas: &'a [u8],
    seq: u16,
    remaining: u16,
    chunk: Option<Chunk>,
    index: usize,
    /// Arrival of the last received packet, µs after the reference time.
    at_us: i64,
}

impl Iterator for Packets<'_> {
    type Item = PacketStatus;

    fn next(&mut self) -> Option<PacketStatus> {
        if self.remaining == 0 {
            return None;
        }
        let chunk = match self.chunk {
            Some(chunk) if self.index < chunk.len() => chunk,
            _ => {
                let (bytes, rest) = self.chunks.split_first_chunk::<2>()?;
                self.chunks = rest;
                self.index = 0;
                let chunk = Chunk(u16::from_be_bytes(*bytes));
                self.chunk = Some(chunk);
                // A zero-length run covers nothing: move on to the next chunk.
                if chunk.len() == 0 {
                    return self.next();
                }
                chunk
            }
        };
        let symbol = chunk.symbol(self.index);
        self.index += 1;
        let received = match symbol {
            Symbol::NotReceived => None,
            Symbol::Small => {
                let (&d, rest) = self.deltas.split_first()?;
                self.deltas = rest;
                self.at_us += i64::from(d) * DELTA_UNIT_US;
                Some(self.at_us)
            }
            Symbol::Large => {
                let (d, rest) = self.deltas.split_first_chunk::<2>()?;
                self.deltas = rest;
                self.at_us += i64::from(i16::from_be_bytes(*d)) * DELTA_UNIT_US;
                Some(self.at_us)
            }
            // Rejected when parsed.
            Symbol::Reserved => return None,
        };
        let status = PacketStatus {
            seq: self.seq,
            received,
        };
        self.seq = self.seq.wrapping_add(1);
        self.remaining -= 1;
        Some(status)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.remaining)))
    }
}

/// A packet status symbol (§3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Symbol {
    NotReceived,
    /// Received, with a one-byte delta.
    Small,
    /// Received, with a two-byte signed delta.
    Large,
    Reserved,
}

impl Symbol {
    fn from_bits(bits: u16) -> Self {
        match bits & 3 {
            0 => Symbol::NotReceived,
            1 => Symbol::Small,
            2 => Symbol::Large,
            _ => Symbol::Reserved,
        }
    }

    fn bits(self) -> u16 {
        match self {
            Symbol::NotReceived => 0,
            Symbol::Small => 1,
            Symbol::Large => 2,
            Symbol::Reserved => 3,
        }
    }
}

/// One packet status chunk: a run length chunk (§3.1.3) or a status vector chunk (§3.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk(u16);

impl Chunk {
    /// How many statuses it holds (a vector's trailing ones may lie past the status count).
    fn len(self) -> usize {
        match self.0 >> 14 {
            0 | 1 => usize::from(self.0) & RUN_LENGTH_MAX,
            2 => 14,
            _ => 7,
        }
    }

    fn symbol(self, i: usize) -> Symbol {
        match self.0 >> 14 {
            0 | 1 => Symbol::from_bits(self.0 >> 13),
            // One-bit symbols: 0 is not received, 1 is received with a small delta.
            2 => Symbol::from_bits((self.0 >> (13 - i)) & 1),
            _ => Symbol::from_bits(self.0 >> (12 - 2 * i)),
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    let mut w = [0; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_be_bytes(w)
}

/// The receive side of transport-wide CC: remembers when each transport-wide sequence number
/// arrived and writes feedback messages for them (§3.1).
///
/// Arrivals live in a fixed ring allocated once, so [`ArrivalRecorder::on_packet`] never
/// allocates. Sequence numbers are unwrapped across the 16-bit wrap; a duplicate keeps its first
/// arrival; a packet that arrives after its number was reported (as lost) is counted and
/// dropped, as is one older than the ring.
#[derive(Debug)]
pub struct ArrivalRecorder {
    sender_ssrc: u32,
    media_ssrc: u32,
    /// Arrival (µs since `epoch`) by extended sequence, at `ext % len`.
    slots: Vec<Slot>,
    /// The symbol and delta of each status of the message being written.
    scratch: Vec<(Symbol, i16)>,
    epoch: Option<Instant>,
    highest: Option<u64>,
    next_unreported: u64,
    reported_any: bool,
    feedback_count: u8,
    /// Unwrapped, in 64 ms units.
    last_reference: i64,
    late: u64,
    duplicates: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    ext: u64,
    arrival_us: i64,
}

const EMPTY: Slot = Slot {
    ext: u64::MAX,
    arrival_us: 0,
};

impl ArrivalRecorder {
    /// A recorder whose feedback names `sender_ssrc` (ours) and `media_ssrc` (the publisher's
    /// first SSRC, as browsers expect), remembering up to `window` sequence numbers (at least
    /// 64).
    pub fn new(sender_ssrc: u32, media_ssrc: u32, window: usize) -> Self {
        let window = window.max(64);
        Self {
            sender_ssrc,
            media_ssrc,
            slots: vec![EMPTY; window],
            scratch: Vec::with_capacity(window),
            epoch: None,
            highest: None,
            next_unreported: 0,
            reported_any: false,
            feedback_count: 0,
            last_reference: 0,
            late: 0,
            duplicates: 0,
        }
    }

    /// Packets that arrived after their sequence number had been reported, or too late for the
    /// ring.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Packets whose sequence number had already arrived.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Records that the packet with transport-wide sequence `seq` arrived at `now`.
    pub fn on_packet(&mut self, seq: u16, now: Instant) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival_us = now
            .checked_duration_since(epoch)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let window = self.slots.len() as u64;
        let ext = match self.highest {
            // Start high so that reordering before the first packet cannot go below zero.
            None => {
                let ext = (1 << 32) + u64::from(seq);
                self.next_unreported = ext;
                ext
            }
            Some(highest) => unwrap_seq(highest, seq),
        };
        if ext < self.next_unreported {
            if !self.reported_any && self.next_unreported - ext < window {
                self.next_unreported = ext;
            } else {
                self.late += 1;
                return;
            }
        }
        let highest = self.highest.map_or(ext, |h| h.max(ext));
        if highest - ext >= window {
            self.late += 1;
            return;
        }
        self.highest = Some(highest);
        // What the ring has forgotten is reported as lost no longer: skip it.
        self.next_unreported = self.next_unreported.max(highest + 1 - window);
        let slot = &mut self.slots[(ext % window) as usize];
        if slot.ext == ext {
            self.duplicates += 1;
            return;
        }
        *slot = Slot { ext, arrival_us };
    }

    /// Whether there are arrivals (or losses before them) not yet reported.
    pub fn has_unreported(&self) -> bool {
        self.highest.is_some_and(|h| h >= self.next_unreported)
    }

    fn arrival(&self, ext: u64) -> Option<i64> {
        let slot = self.slots[(ext % self.slots.len() as u64) as usize];
        (slot.ext == ext).then_some(slot.arrival_us)
    }

    /// Writes one feedback message for the oldest unreported packets into `buf`, as many as fit
    /// in `buf.len()` bytes (round the caller's MTU budget into the slice), and returns its
    /// length, or `None` when everything has been reported. Call again until `None`: a long
    /// window, or a gap in arrival times a delta cannot span, splits into several messages.
    pub fn poll_feedback(&mut self, buf: &mut [u8]) -> Result<Option<usize>, TwccError> {
        let Some(highest) = self.highest else {
            return Ok(None);
        };
        let start = self.next_unreported;
        if start > highest {
            return Ok(None);
        }
        // The reference time is the first arrival's, rounded down to 64 ms; deltas are taken
        // on the unwrapped clock and only the field wraps.
        let reference = (start..=highest)
            .find_map(|ext| self.arrival(ext))
            .map_or(self.last_reference, |t| t / REFERENCE_UNIT_US);
        let mut last_us = reference * REFERENCE_UNIT_US;
        self.scratch.clear();
        let mut delta_len = 0;
        for ext in start..=highest {
            if self.scratch.len() == usize::from(u16::MAX) {
                break;
            }
            let (symbol, delta) = match self.arrival(ext) {
                None => (Symbol::NotReceived, 0),
                Some(t) => {
                    let q = div_round(t - last_us, DELTA_UNIT_US);
                    match (u8::try_from(q), i16::try_from(q)) {
                        (Ok(_), _) => (Symbol::Small, q as i16),
                        (_, Ok(d)) => (Symbol::Large, d),
                        // Too far from the previous arrival: the next message starts here.
                        _ => break,
                    }
                }
            };
            let this_len = match symbol {
                Symbol::Small => 1,
                Symbol::Large => 2,
                _ => 0,
            };
            let n = self.scratch.len() + 1;
            // Every chunk but the last covers at least 7 statuses, so this bound holds.
            let size = (HEADER_LEN + 2 * n.div_ceil(7) + delta_len + this_len).next_multiple_of(4);
            if size > buf.len() {
                break;
            }
            self.scratch.push((symbol, delta));
            delta_len += this_len;
            last_us += i64::from(delta) * DELTA_UNIT_US;
        }
        if self.scratch.is_empty() {
            return Err(TwccError::NoRoom);
        }
        let count = self.scratch.len();
        // The base sequence is the low 16 bits of the extended one.
        let base_seq = start as u16;
        buf[4..8].copy_from_slice(&self.sender_ssrc.to_be_bytes());
        buf[8..12].copy_from_slice(&self.media_ssrc.to_be_bytes());
        buf[12..14].copy_from_slice(&base_seq.to_be_bytes());
        buf[14..16].copy_from_slice(&(count as u16).to_be_bytes());
        let field = (reference % i64::from(REFERENCE_WRAP)) as u32;
        buf[16..19].copy_from_slice(&field.to_be_bytes()[1..]);
        buf[19] = self.feedback_count;
        let mut at = HEADER_LEN;
        at += write_chunks(&self.scratch, &mut buf[at..]);
        for &(symbol, delta) in &self.scratch {
            match symbol {
                Symbol::Small => {
                    buf[at] = delta as u8;
                    at += 1;
                }
                Symbol::Large => {
                    buf[at..at + 2].copy_from_slice(&delta.to_be_bytes());
                    at += 2;
                }
                _ => {}
            }
        }
        let len = at.next_multiple_of(4);
        let pad = len - at;
        buf[at..len].fill(0);
        let mut first = (2 << 6) | FMT_TRANSPORT_CC;
        if pad > 0 {
            first |= 0x20;
            buf[len - 1] = pad as u8;
        }
        buf[0] = first;
        buf[1] = PT_RTPFB;
        buf[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
        self.next_unreported = start + count as u64;
        self.reported_any = true;
        self.feedback_count = self.feedback_count.wrapping_add(1);
        self.last_reference = reference;
        Ok(Some(len))
    }
}

/// Unwraps a 16-bit sequence number to the extended one nearest `near`.
pub(crate) fn unwrap_seq(near: u64, seq: u16) -> u64 {
    let diff = i64::from(seq.wrapping_sub(near as u16) as i16);
    near.saturating_add_signed(diff)
}

fn div_round(n: i64, d: i64) -> i64 {
    if n >= 0 {
        (n + d / 2) / d
    } else {
        -((-n + d / 2) / d)
    }
}

/// Encodes the symbols as status chunks into `out` (sized by the caller's bound) and returns the
/// bytes written: long runs as run length chunks, mixed stretches as 14 one-bit or 7 two-bit
/// symbols, so that every chunk but the last covers at least 7 statuses.
fn write_chunks(symbols: &[(Symbol, i16)], out: &mut [u8]) -> usize {
    let mut at = 0;
    let mut i = 0;
    while i < symbols.len() {
        let rest = &symbols[i..];
        let first = rest[0].0;
        let run = rest
            .iter()
            .take(RUN_LENGTH_MAX)
            .take_while(|s| s.0 == first)
            .count();
        let one_bit = rest.iter().take(14).all(|s| s.0 != Symbol::Large);
        let (chunk, covered) = if run >= 14 || (run >= 7 && !one_bit) {
            ((first.bits() << 13) | run as u16, run)
        } else if one_bit {
            let k = rest.len().min(14);
            let mut c = 0x8000;
            for (j, s) in rest[..k].iter().enumerate() {
                c |= (s.0.bits() & 1) << (13 - j);
            }
            (c, k)
        } else {
            let k = rest.len().min(7);
            let mut c = 0xc000;
            for (j, s) in rest[..k].iter().enumerate() {
                c |= s.0.bits() << (12 - 2 * j);
            }
            (c, k)
        };
        out[at..at + 2].copy_from_slice(&chunk.to_be_bytes());
        at += 2;
        i += covered;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn statuses(fb: &Feedback<'_>) -> Vec<(u16, Option<i64>)> {
        fb.packets().map(|p| (p.seq, p.received)).collect()
    }

    /// A message assembled by hand from the chunk encodings the draft illustrates (§3.1.3,
    /// §3.1.4): a run length chunk of 221 "not received" (`0|00|0000011011101`), the one-bit
    /// vector `1|0|01111100011100` (lost, 5 received, 3 lost, 3 received, 2 lost), a two-bit
    /// vector `1|1|00 10 01 01 01 01 01` (lost, large delta, 5 small deltas) and a run of small
    /// deltas of which the status count uses only 2.
    #[test]
    fn hand_built_chunks_parse() {
        #[rustfmt::skip]
        let mut p = vec![
            0xaf, 205, 0, 0, // V=2 P=1 FMT=15, PT=205, length set below
            0, 0, 0, 1, // sender SSRC
            0, 0, 0, 2, // media SSRC
            0xff, 0xf0, // base sequence 65520: the statuses wrap past 65535
            0, 244, // 221 + 14 + 7 + 2 statuses
            0x01, 0x00, 0x02, // reference time 65538 × 64 ms
            9, // feedback packet count
            0x00, 0xdd, // run length: not received × 221
            0x9f, 0x1c, // one-bit vector
            0xc9, 0x55, // two-bit vector
            0x20, 0x03, // run length: small delta × 3 (2 used)
            4, 4, 4, 4, 4, 4, 4, 4, // the one-bit vector's 8 arrivals, 1 ms apart
            0xff, 0xfc, // large: −4 (−1 ms)
            2, 2, 2, 2, 2, // five small deltas of 500 µs
            1, 1, // the final run's two
        ];
        // 20 + 8 + 17 = 45 bytes: pad to 48 with the count in the last byte.
        p.extend([0, 0, 3]);
        let words = (p.len() / 4 - 1) as u16;
        p[2..4].copy_from_slice(&words.to_be_bytes());

        let fb = Feedback::parse(&p).unwrap();
        assert_eq!(fb.sender_ssrc(), 1);
        assert_eq!(fb.media_ssrc(), 2);
        assert_eq!(fb.base_seq(), 65520);
        assert_eq!(fb.status_count(), 244);
        assert_eq!(fb.reference_time(), 0x01_0002);
        assert_eq!(fb.feedback_count(), 9);
        let s = statuses(&fb);
        assert_eq!(s.len(), 244);
        assert!(s[..221].iter().all(|p| p.1.is_none()));
        assert_eq!(s[15].0, 65535);
        assert_eq!(s[16].0, 0);
        let vector1: Vec<_> = s[221..235].iter().map(|p| p.1.map(|t| t / 1000)).collect();
        let (n, r) = (None, Some);
        assert_eq!(
            vector1,
            [
                n,
                r(1),
                r(2),
                r(3),
                r(4),
                r(5),
                n,
                n,
                n,
                r(6),
                r(7),
                r(8),
                n,
                n
            ]
        );
        let two_bit: Vec<_> = s[235..242].iter().map(|p| p.1).collect();
        assert_eq!(
            two_bit,
            [n, r(7000), r(7500), r(8000), r(8500), r(9000), r(9500)]
        );
        assert_eq!(
            &s[242..],
            [(65520u16.wrapping_add(242), r(9750)), (227, r(10_000))]
        );
        // One more status would take a third delta from the final run: the padding is no delta.
        p[14..16].copy_from_slice(&245u16.to_be_bytes());
        assert_eq!(Feedback::parse(&p), Err(TwccError::MissingDeltas));
    }

    #[test]
    fn fci_parse_matches_whole_packet() {
        let mut rec = ArrivalRecorder::new(7, 8, 256);
        let t0 = Instant::now();
        for i in 0..10u16 {
            rec.on_packet(i, t0 + Duration::from_millis(u64::from(i) * 3));
        }
        let mut buf = [0u8; 1200];
        let n = rec.poll_feedback(&mut buf).unwrap().unwrap();
        let whole = Feedback::parse(&buf[..n]).unwrap();
        let fci = Feedback::parse_fci(7, 8, &buf[12..n]).unwrap();
        assert_eq!(statuses(&whole), statuses(&fci));
    }

    #[test]
    fn malformed_input_is_an_error() {
        let ok = {
            let mut rec = ArrivalRecorder::new(1, 2, 64);
            let t0 = Instant::now();
            rec.on_packet(5, t0);
            rec.on_packet(7, t0 + Duration::from_millis(100));
            let mut buf = [0u8; 100];
            let n = rec.poll_feedback(&mut buf).unwrap().unwrap();
            buf[..n].to_vec()
        };
        assert!(Feedback::parse(&ok).is_ok());
        assert_eq!(Feedback::parse(&ok[..3]), Err(TwccError::TooShort));
        let mut v = ok.clone();
        v[0] = 0x4f;
        assert_eq!(Feedback::parse(&v), Err(TwccError::BadVersion));
        let mut v = ok.clone();
        v[1] = 206;
        assert_eq!(Feedback::parse(&v), Err(TwccError::NotTransportCc));
        assert_eq!(
            Feedback::parse(&ok[..ok.len() - 4]),
            Err(TwccError::BadLength)
        );
        let mut v = ok.clone();
        v[14..16].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(Feedback::parse(&v), Err(TwccError::Empty));
        let mut v = ok.clone();
        v[14..16].copy_from_slice(&3000u16.to_be_bytes());
        assert_eq!(Feedback::parse(&v), Err(TwccError::MissingChunks));
        // A run of the reserved symbol.
        let mut v = ok.clone();
        v[20..22].copy_from_slice(&0x6003u16.to_be_bytes());
        assert_eq!(Feedback::parse(&v), Err(TwccError::ReservedSymbol));
        // A run of 3 large deltas needs 6 bytes the packet lacks.
        let mut v = ok.clone();
        v[20..22].copy_from_slice(&0x4003u16.to_be_bytes());
        assert_eq!(Feedback::parse(&v), Err(TwccError::MissingDeltas));
        let mut v = ok.clone();
        v[0] |= 0x20;
        let last = v.len() - 1;
        v[last] = 0;
        assert_eq!(Feedback::parse(&v), Err(TwccError::BadPadding));
    }

    #[test]
    fn wrap_reorder_and_duplicates() {
        let mut rec = ArrivalRecorder::new(1, 2, 1024);
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        rec.on_packet(65534, ms(0));
        rec.on_packet(0, ms(2)); // 65535 late
        rec.on_packet(65535, ms(3)); // reordered
        rec.on_packet(0, ms(4)); // duplicate: the first arrival stands
        rec.on_packet(2, ms(5)); // 1 lost
        assert_eq!(rec.duplicates(), 1);
        let mut buf = [0u8; 1200];
        let n = rec.poll_feedback(&mut buf).unwrap().unwrap();
        let fb = Feedback::parse(&buf[..n]).unwrap();
        let s = statuses(&fb);
        assert_eq!(
            s,
            [
                (65534, Some(0)),
                (65535, Some(3000)),
                (0, Some(2000)),
                (1, None),
                (2, Some(5000))
            ]
        );
        assert_eq!(rec.poll_feedback(&mut buf), Ok(None));
        // Reported as lost: a late arrival is counted, not reported again.
        rec.on_packet(1, ms(6));
        assert_eq!(rec.late(), 1);
        assert!(!rec.has_unreported());
    }

    #[test]
    fn splits_to_fit_the_budget() {
        let mut rec = ArrivalRecorder::new(1, 2, 4096);
        let t0 = Instant::now();
        for i in 0..1000u16 {
            // Every other packet lost and a large delta now and then: many chunks and deltas.
            if i % 3 != 0 {
                let jitter = if i % 10 == 0 { 80 } else { 0 };
                rec.on_packet(i, t0 + Duration::from_millis(u64::from(i) + jitter));
            }
        }
        let mut buf = [0u8; 1500];
        let mut seen = Vec::new();
        let mut messages = 0;
        while let Some(n) = rec.poll_feedback(&mut buf[..200]).unwrap() {
            assert!(n <= 200);
            let fb = Feedback::parse(&buf[..n]).unwrap();
            assert_eq!(fb.feedback_count(), messages);
            seen.extend(fb.packets().map(|p| p.seq));
            messages += 1;
        }
        assert!(messages > 5);
        assert_eq!(seen, (1..999).collect::<Vec<u16>>());
        assert_eq!(rec.poll_feedback(&mut buf[..23]), Ok(None));
        rec.on_packet(1000, t0 + Duration::from_secs(2));
        assert_eq!(rec.poll_feedback(&mut buf[..23]), Err(TwccError::NoRoom));
    }

    #[test]
    fn a_gap_too_long_for_a_delta_starts_a_new_message() {
        let mut rec = ArrivalRecorder::new(1, 2, 64);
        let t0 = Instant::now();
        rec.on_packet(1, t0);
        // 10 s later: more than an i16 of 250 µs (8.2 s).
        rec.on_packet(2, t0 + Duration::from_secs(10));
        let mut buf = [0u8; 1200];
        let n = rec.poll_feedback(&mut buf).unwrap().unwrap();
        let fb = Feedback::parse(&buf[..n]).unwrap();
        assert_eq!(statuses(&fb), [(1, Some(0))]);
        let n = rec.poll_feedback(&mut buf).unwrap().unwrap();
        let fb = Feedback::parse(&buf[..n]).unwrap();
        assert_eq!(fb.reference_time(), 156); // 10 s / 64 ms
        let at = i64::from(fb.reference_time()) * REFERENCE_UNIT_US;
        assert_eq!(statuses(&fb), [(2, Some(10_000_000 - at))]);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever arrived, in whatever order: build → parse reports every sequence number
            /// from the first to the highest, the arrivals within 250 µs quantisation (no drift),
            /// and the rest as lost.
            #[test]
            fn build_then_parse_round_trips(
                start in any::<u16>(),
                arrivals in proptest::collection::vec((0u16..600, 0u64..2_000_000), 1..300),
                budget in 40usize..1400,
            ) {
                let t0 = Instant::now();
                let mut rec = ArrivalRecorder::new(9, 10, 1024);
                let mut expect = std::collections::BTreeMap::new();
                // Sort by arrival time: that is the order a receiver sees them in.
                let mut arrivals = arrivals;
                arrivals.sort_by_key(|a| a.1);
                for &(off, us) in &arrivals {
                    rec.on_packet(start.wrapping_add(off), t0 + Duration::from_micros(us));
                    expect.entry(off).or_insert(us as i64);
                }
                let first = arrivals[0].0;
                let mut buf = vec![0u8; budget];
                let mut got = std::collections::BTreeMap::new();
                let mut next_off = None;
                while let Some(n) = rec.poll_feedback(&mut buf).unwrap() {
                    let fb = Feedback::parse(&buf[..n]).unwrap();
                    let reference = i64::from(fb.reference_time()) * REFERENCE_UNIT_US;
                    for p in fb.packets() {
                        let off = p.seq.wrapping_sub(start);
                        if let Some(prev) = next_off {
                            prop_assert_eq!(off, prev);
                        }
                        next_off = Some(off + 1);
                        got.insert(off, p.received.map(|r| r + reference));
                    }
                }
                // Reported from the first arrival on (earlier ones that came late are late).
                let lo = *got.keys().next().unwrap();
                prop_assert!(lo <= first);
                let hi = *expect.keys().last().unwrap();
                prop_assert_eq!(*got.keys().last().unwrap(), hi);
                let t_first = arrivals[0].1 as i64;
                for (off, at) in got {
                    match (expect.get(&off), at) {
                        (Some(&want), Some(at)) => {
                            // The recorder's epoch is the first arrival.
                            prop_assert!((at - (want - t_first)).abs() <= 125, "{} vs {}", at, want);
                        }
                        (None, None) => {}
                        // Arrived after it was reported lost.
                        (Some(_), None) => prop_assert!(rec.late() > 0),
                        (None, Some(_)) => prop_assert!(false, "reported an arrival that did not happen"),
                    }
                }
            }

            #[test]
            fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
                if let Ok(fb) = Feedback::parse(&data) {
                    prop_assert!(fb.packets().count() <= usize::from(fb.status_count()));
                }
            }
        }
    }
}
