//! The VP8 payload descriptor (RFC 7741 §4.2): its picture id, TL0PICIDX and temporal layer
//! index, and a per-subscriber rewrite that keeps picture ids and TL0PICIDX continuous across
//! simulcast switches (each layer numbers its pictures on its own), as a decoder that tracks
//! them for missing frames expects.

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
/// it forwards (a simulcast switch, a mute), each segment shifted to follow the last output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PictureRewriter {
    /// The output of the newest picture forwarded (picture id, TL0PICIDX).
    last_out: Option<(u16, u8)>,
    /// The current segment's offsets (added mod 2^15 and mod 2^8).
    offset: Option<(u16, u8)>,
    rebase: bool,
}

const PID_MASK: u16 = 0x7FFF;

impl PictureRewriter {
    /// The next packet starts a new segment (a switch, after a mute).
    pub fn rebase(&mut self) {
        self.rebase = true;
    }

    /// The output picture id and TL0PICIDX for a packet of the current segment whose
    /// descriptor is `d` (missing fields come out as 0, and are not written).
    pub fn rewrite(&mut self, d: &Descriptor) -> (u16, u8) {
        let (pid, long) = d.picture_id.unwrap_or((0, true));
        let mask = if long { PID_MASK } else { 0x7F };
        let tl0 = d.tl0_pic_idx.unwrap_or(0);
        let offset = match (self.offset, self.rebase) {
            (Some(o), false) => o,
            _ => {
                let o = match self.last_out {
                    // The first picture of the segment follows the last one out.
                    Some((p, t)) => (
                        p.wrapping_add(1).wrapping_sub(pid) & PID_MASK,
                        t.wrapping_add(1).wrapping_sub(tl0),
                    ),
                    None => (0, 0),
                };
                self.offset = Some(o);
                self.rebase = false;
                o
            }
        };
        let out = (
            pid.wrapping_add(offset.0) & mask,
            tl0.wrapping_add(offset.1),
        );
        // Newest by picture id (mod 2^15): late packets of older pictures do not move it.
        let newer = self
            .last_out
            .is_none_or(|(p, _)| (out.0.wrapping_sub(p) & mask) < mask / 2 + 1);
        if newer {
            self.last_out = Some(out);
        }
        out
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
            .map(|&(p, t)| r.rewrite(&desc(p, t)))
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
            .map(|&(p, t)| r.rewrite(&desc(p, t)))
            .collect();
        assert_eq!(
            f,
            [(102, 7), (103, 8), (104, 9), (103, 8)],
            "wraps; a late packet keeps its picture"
        );
        // And back: the next picture after the newest (104), not after the late one.
        r.rebase();
        assert_eq!(r.rewrite(&desc(500, 40)), (105, 10));
    }
}
