//! The VP8 payload descriptor (RFC 7741 §4.2): its picture id, TL0PICIDX and temporal layer
//! index, and a per-subscriber rewrite that keeps picture ids and TL0PICIDX continuous across
//! simulcast switches (each layer numbers its pictures on its own), as a decoder that tracks
//! them for missing frames expects.

use crate::sequence::Skips;

/// The fields of a VP8 payload descriptor that Ringcast reads or rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// The picture id and whether it is the 15-bit form (M=1).
    pub picture_id: Option<(u16, bool)>,
    pub tl0_pic_idx: Option<u8>,
    /// The temporal layer index (T=1), and its layer sync bit.
    pub tid: Option<(u8, bool)>,
    /// The descriptor's length in bytes.
    pub len: usize,
}

/// Longest descriptor: required byte, X byte, two picture id bytes, TL0PICIDX, TID/KEYIDX.
pub const MAX_LEN: usize = 6;

impl Descriptor {
    /// Parses the descriptor at the start of a VP8 RTP payload; `None` if it is truncated.
    pub fn parse(p: &[u8]) -> Option<Descriptor> {
        let &d = p.first()?;
        let mut at = 1;
        let mut out = Descriptor {
            picture_id: None,
            tl0_pic_idx: None,
            tid: None,
            len: 1,
        };
        if d & 0x80 != 0 {
            let &x = p.get(at)?;
            at += 1;
            if x & 0x80 != 0 {
                let &b = p.get(at)?;
                if b & 0x80 != 0 {
                    let &lo = p.get(at + 1)?;
                    out.picture_id = Some((u16::from(b & 0x7F) << 8 | u16::from(lo), true));
                    at += 2;
                } else {
                    out.picture_id = Some((u16::from(b), false));
                    at += 1;
                }
            }
            if x & 0x40 != 0 {
                out.tl0_pic_idx = Some(*p.get(at)?);
                at += 1;
            }
            if x & 0x30 != 0 {
                let &t = p.get(at)?;
                if x & 0x20 != 0 {
                    out.tid = Some((t >> 6, t & 0x20 != 0));
                }
                at += 1;
            }
        }
        out.len = at;
        Some(out)
    }
}

/// Copies the descriptor at the start of `payload` (`d`, as parsed) into `out` with its
/// picture id and TL0PICIDX replaced, in the same form (7- or 15-bit). Returns its length.
pub fn write_rewritten(
    payload: &[u8],
    d: &Descriptor,
    picture_id: u16,
    tl0: u8,
    out: &mut [u8],
) -> usize {
    out[..d.len].copy_from_slice(&payload[..d.len]);
    let mut at = 2;
    if let Some((_, long)) = d.picture_id {
        if long {
            out[at] = 0x80 | ((picture_id >> 8) as u8 & 0x7F);
            out[at + 1] = picture_id as u8;
            at += 2;
        } else {
            out[at] = picture_id as u8 & 0x7F;
            at += 1;
        }
    }
    if d.tl0_pic_idx.is_some() {
        out[at] = tl0;
    }
    d.len
}

/// One subscriber's picture ids and TL0PICIDX for one track: continuous across the segments
/// it forwards (a simulcast switch, a mute), each segment shifted to follow the last output,
/// and across the pictures it is not sent (temporal layers above the one it gets; TL0PICIDX
/// counts only base-layer pictures, which are always sent, so it needs no closing up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PictureRewriter {
    /// The newest picture forwarded (extended output picture id, TL0PICIDX).
    last_out: Option<(u64, u8)>,
    segment: Option<Segment>,
    rebase: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    /// Width of the input's picture ids (7 or 15).
    bits: u32,
    start_in: u64,
    highest_in: u64,
    /// out = in + pid_offset + skips above in (mod 2^64, extended); TL0PICIDX + tl0_offset.
    pid_offset: u64,
    tl0_offset: u8,
    skips: Skips,
}

/// Extends a `bits`-wide counter against the highest extended value seen.
fn extend_bits(highest: u64, v: u16, bits: u32) -> u64 {
    let span = 1u64 << bits;
    let base = highest & !(span - 1);
    [base.wrapping_sub(span), base, base + span]
        .into_iter()
        .map(|b| b | u64::from(v))
        .min_by_key(|c| c.abs_diff(highest))
        .unwrap_or(u64::from(v))
}

impl PictureRewriter {
    /// The next packet starts a new segment (a switch, after a mute).
    pub fn rebase(&mut self) {
        self.rebase = true;
    }

    fn segment_for(&mut self, pid: u16, bits: u32, tl0: u8) -> &mut Segment {
        if self.rebase || self.segment.is_some_and(|s| s.bits != bits) {
            self.segment = None;
        }
        self.rebase = false;
        let last_out = self.last_out;
        self.segment.get_or_insert_with(|| {
            let in_ext = u64::from(pid) | (1 << 32);
            let (pid_offset, tl0_offset) = match last_out {
                // The first picture of the segment follows the last one out.
                Some((p, t)) => (
                    (p + 1).wrapping_sub(in_ext),
                    t.wrapping_add(1).wrapping_sub(tl0),
                ),
                None => (0u64.wrapping_sub(1 << 32), 0),
            };
            Segment {
                bits,
                start_in: in_ext,
                highest_in: in_ext,
                pid_offset,
                tl0_offset,
                skips: Skips::default(),
            }
        })
    }

    /// The output picture id and TL0PICIDX for a packet of the current segment whose
    /// descriptor is `d` (missing fields come out as 0, and are not written); `None` for a
    /// late packet of a picture from before the segment, or older than the skips remembered:
    /// it has no place in the output.
    pub fn rewrite(&mut self, d: &Descriptor) -> Option<(u16, u8)> {
        let (pid, long) = d.picture_id.unwrap_or((0, true));
        let bits = if long { 15 } else { 7 };
        let tl0 = d.tl0_pic_idx.unwrap_or(0);
        let seg = self.segment_for(pid, bits, tl0);
        let in_ext = extend_bits(seg.highest_in, pid, bits);
        if in_ext < seg.start_in {
            return None;
        }
        seg.highest_in = seg.highest_in.max(in_ext);
        let out = in_ext
            .wrapping_add(seg.pid_offset)
            .wrapping_add(seg.skips.above(in_ext)?);
        let tl0_out = tl0.wrapping_add(seg.tl0_offset);
        // Newest by picture id: late packets of older pictures do not move it.
        if self.last_out.is_none_or(|(p, _)| out > p) {
            self.last_out = Some((out, tl0_out));
        }
        Some(((out & ((1 << bits) - 1)) as u16, tl0_out))
    }

    /// Leaves the picture of a packet whose descriptor is `d` out of the output: the picture
    /// ids after it close up. Only a picture newer than every one seen is left out this way;
    /// more packets of it change nothing.
    pub fn skip(&mut self, d: &Descriptor) {
        let Some((pid, long)) = d.picture_id else {
            return;
        };
        let bits = if long { 15 } else { 7 };
        if self.rebase {
            return;
        }
        let Some(seg) = self.segment.as_mut().filter(|s| s.bits == bits) else {
            return;
        };
        let in_ext = extend_bits(seg.highest_in, pid, bits);
        if in_ext > seg.highest_in && seg.skips.skip(in_ext) {
            seg.highest_in = in_ext;
            seg.pid_offset = seg.pid_offset.wrapping_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_as_browsers_send_them() {
        #[rustfmt::skip]
        let cases: [(&[u8], Option<Descriptor>); 6] = [
            // Chromium: X, I (15-bit 0x1234), L (TL0PICIDX 7), T (TID 2, Y) and K.
            (&[0x90, 0xF0, 0x92, 0x34, 0x07, 0xB0, 0x9D], Some(Descriptor {
                picture_id: Some((0x1234, true)), tl0_pic_idx: Some(7), tid: Some((2, true)), len: 6 })),
            // 7-bit picture id only.
            (&[0x90, 0x80, 0x05, 0x00], Some(Descriptor {
                picture_id: Some((5, false)), tl0_pic_idx: None, tid: None, len: 3 })),
            // No extension byte.
            (&[0x10, 0x00], Some(Descriptor { picture_id: None, tl0_pic_idx: None, tid: None, len: 1 })),
            // K without T: KEYIDX only, no TID.
            (&[0x90, 0x10, 0x03], Some(Descriptor { picture_id: None, tl0_pic_idx: None, tid: None, len: 3 })),
            (&[0x90, 0xC0, 0x92], None),
            (&[], None),
        ];
        for (p, want) in cases {
            assert_eq!(Descriptor::parse(p), want, "{p:02x?}");
        }
    }

    #[test]
    fn rewriting_keeps_the_form_and_the_rest() {
        let p = [0x90, 0xF0, 0x92, 0x34, 0x07, 0xB0, 0x9D, 0x01];
        let d = Descriptor::parse(&p).unwrap();
        let mut out = [0u8; MAX_LEN];
        let n = write_rewritten(&p, &d, 0x7FFF, 200, &mut out);
        assert_eq!(&out[..n], &[0x90, 0xF0, 0xFF, 0xFF, 200, 0xB0]);
        let short = [0x90, 0xC0, 0x05, 0x09, 0xAA];
        let d = Descriptor::parse(&short).unwrap();
        let n = write_rewritten(&short, &d, 0x1FF, 3, &mut out);
        assert_eq!(&out[..n], &[0x90, 0xC0, 0x7F, 3], "7-bit: mod 128");
    }

    fn desc(pid: u16, tl0: u8) -> Descriptor {
        Descriptor {
            picture_id: Some((pid, true)),
            tl0_pic_idx: Some(tl0),
            tid: Some((0, false)),
            len: 6,
        }
    }

    #[test]
    fn picture_ids_continue_across_a_switch() {
        let mut r = PictureRewriter::default();
        // Layer q: pictures 100, 101 (two packets each), TL0 5, 6.
        let q: Vec<(u16, u8)> = [(100, 5), (100, 5), (101, 6), (101, 6)]
            .iter()
            .map(|&(p, t)| r.rewrite(&desc(p, t)).unwrap())
            .collect();
        assert_eq!(
            q,
            [(100, 5), (100, 5), (101, 6), (101, 6)],
            "the first passes through"
        );
        // A switch to f, whose pictures are numbered 0x7FFE.. and TL0 250..: it follows on.
        r.rebase();
        let f: Vec<(u16, u8)> = [(0x7FFE, 250), (0x7FFF, 251), (0, 252), (0x7FFF, 251)]
            .iter()
            .map(|&(p, t)| r.rewrite(&desc(p, t)).unwrap())
            .collect();
        assert_eq!(
            f,
            [(102, 7), (103, 8), (104, 9), (103, 8)],
            "wraps; a late packet keeps its picture"
        );
        // And back: the next picture after the newest (104), not after the late one.
        r.rebase();
        assert_eq!(r.rewrite(&desc(500, 40)), Some((105, 10)));
    }

    #[test]
    fn skipped_pictures_close_up() {
        let mut r = PictureRewriter::default();
        let t = |pid: u16, tl0: u8, tid: u8| Descriptor {
            tid: Some((tid, false)),
            ..desc(pid, tl0)
        };
        // L1T3 pattern TID 0 2 1 2 0: the subscriber gets TL0 and TL1 only.
        assert_eq!(r.rewrite(&t(0x7FFE, 9, 0)), Some((0x7FFE, 9)));
        r.skip(&t(0x7FFF, 9, 2));
        r.skip(&t(0x7FFF, 9, 2));
        assert_eq!(r.rewrite(&t(0, 9, 1)), Some((0x7FFF, 9)));
        r.skip(&t(1, 9, 2));
        assert_eq!(r.rewrite(&t(2, 10, 0)), Some((0, 10)), "wraps at 15 bits");
        // A late packet of a picture sent keeps its number; one of a skipped picture is not
        // skipped twice.
        assert_eq!(r.rewrite(&t(0, 9, 1)), Some((0x7FFF, 9)));
        r.skip(&t(1, 9, 2));
        assert_eq!(r.rewrite(&t(3, 10, 2)), Some((1, 10)));
        // Older than the segment: no place.
        assert_eq!(r.rewrite(&t(0x7FF0, 8, 0)), None);
        // A switch follows on from the newest.
        r.rebase();
        assert_eq!(r.rewrite(&t(77, 200, 0)), Some((2, 11)));
    }
}
