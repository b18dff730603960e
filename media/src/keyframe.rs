//! Keyframe detection from RTP payloads, so a new subscriber starts on a frame it can decode:
//! VP8 (RFC 7741), VP9 (RFC 9628), H.264 (RFC 6184) and AV1 (the AV1 RTP payload format).
//! True means "this packet starts a keyframe"; anything malformed is "no".

use ringcast_types::CodecName;

/// Whether `payload` (the RTP payload, after the header) begins a keyframe of `codec`.
pub fn starts_keyframe(codec: CodecName, payload: &[u8]) -> bool {
    match codec {
        CodecName::Vp8 => vp8(payload),
        CodecName::Vp9 => vp9(payload),
        CodecName::H264 => h264(payload),
        CodecName::Av1 => av1(payload),
        // Every audio packet can be decoded on its own.
        CodecName::Opus => true,
    }
}

/// The picture size a keyframe's first packet gives, where the codec says it there: VP8
/// (RFC 6386 §9.1: after the start code 9d 01 2a, 14-bit width and height, little-endian).
pub fn frame_size(codec: CodecName, payload: &[u8]) -> Option<(u16, u16)> {
    if codec != CodecName::Vp8 || !vp8(payload) {
        return None;
    }
    let at = vp8_descriptor_len(payload)?;
    let h = payload.get(at..at + 10)?;
    if h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([h[6], h[7]]) & 0x3FFF;
    let ht = u16::from_le_bytes([h[8], h[9]]) & 0x3FFF;
    (w > 0 && ht > 0).then_some((w, ht))
}

/// RFC 7741 §4.2–4.3: a packet with S=1 and PID=0 starts a frame; its VP8 payload header's
/// P bit (inverse key frame flag) is 0 for a key frame.
fn vp8(p: &[u8]) -> bool {
    vp8_descriptor_len(p).is_some_and(|at| p.get(at).is_some_and(|h| h & 0x01 == 0))
}

/// The length of the payload descriptor of a packet that starts a VP8 frame.
fn vp8_descriptor_len(p: &[u8]) -> Option<usize> {
    let &d = p.first()?;
    let (x, s, pid) = (d & 0x80 != 0, d & 0x10 != 0, d & 0x07);
    if !s || pid != 0 {
        return None;
    }
    let mut at = 1;
    if x {
        let &ext = p.get(at)?;
        at += 1;
        if ext & 0x80 != 0 {
            // I: PictureID, 7 or 15 bits.
            let &pid = p.get(at)?;
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1; // L: TL0PICIDX
        }
        if ext & 0x30 != 0 {
            at += 1; // T or K: TID/Y/KEYIDX
        }
    }
    Some(at)
}

/// RFC 9628 §4.2: B=1 (start of a frame) and P=0 (not inter-picture predicted) on spatial layer 0.
fn vp9(p: &[u8]) -> bool {
    let Some(&d) = p.first() else { return false };
    let (i, inter, l, b) = (d & 0x80 != 0, d & 0x40 != 0, d & 0x20 != 0, d & 0x08 != 0);
    if inter || !b {
        return false;
    }
    if !l {
        return true;
    }
    // Layer indices: after the picture id; spatial id is bits 3..1 of that byte.
    let at = 1 + if i {
        match p.get(1) {
            Some(pid) if pid & 0x80 != 0 => 2,
            Some(_) => 1,
            None => return false,
        }
    } else {
        0
    };
    p.get(at).is_some_and(|li| (li >> 1) & 0x07 == 0)
}

/// RFC 6184: an IDR slice (5) or SPS (7), alone, in a STAP-A (24), or starting a FU-A (28).
fn h264(p: &[u8]) -> bool {
    let Some(&h) = p.first() else { return false };
    let is_key = |t: u8| t == 5 || t == 7;
    match h & 0x1F {
        24 => {
            // STAP-A: 16-bit sizes, each followed by a NAL unit.
            let mut at = 1;
            while at + 2 < p.len() {
                let size = usize::from(u16::from_be_bytes([p[at], p[at + 1]]));
                if size == 0 {
                    return false;
                }
                if is_key(p[at + 2] & 0x1F) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        28 => p
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && is_key(fu & 0x1F)),
        t => is_key(t),
    }
}

/// AV1 RTP aggregation header: N=1 marks the first packet of a coded video sequence (which
/// begins with a key frame); Z=0 means it also starts an OBU.
fn av1(p: &[u8]) -> bool {
    p.first().is_some_and(|h| h & 0x08 != 0 && h & 0x80 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_cases() {
        let cases: &[(&[u8], bool, &str)] = &[
            (&[0x10, 0x00], true, "S=1 PID=0, P=0: key"),
            (&[0x10, 0x01], false, "P=1: inter frame"),
            (&[0x00, 0x00], false, "not the start of a partition"),
            (&[0x11, 0x00], false, "PID 1"),
            (
                &[0x90, 0x80, 0x81, 0x23, 0x00],
                true,
                "X with a 15-bit PictureID",
            ),
            (
                &[0x90, 0xE0, 0x05, 0x07, 0x40, 0x00],
                true,
                "X with 7-bit PictureID, TL0PICIDX, TID",
            ),
            (
                &[0x90, 0xE0, 0x05, 0x07, 0x40],
                false,
                "X fields but no payload header",
            ),
            (&[0x90, 0x80], false, "truncated"),
            (&[], false, "empty"),
        ];
        for (p, want, why) in cases {
            assert_eq!(starts_keyframe(CodecName::Vp8, p), *want, "{why}");
        }
    }

    #[test]
    fn vp8_keyframe_sizes() {
        // A keyframe from Chromium's 320x180 layer: descriptor (X, I 15-bit, T), frame tag
        // (P=0), start code, width 320 and height 180 with scale bits 0.
        let key = [
            0x90, 0xA0, 0x81, 0x23, 0x40, 0x50, 0x1F, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xB4,
            0x00, 0x00,
        ];
        assert_eq!(frame_size(CodecName::Vp8, &key), Some((320, 180)));
        // Scale bits are not part of the size.
        let mut scaled = key;
        scaled[12] |= 0xC0;
        assert_eq!(frame_size(CodecName::Vp8, &scaled), Some((320, 180)));
        let mut inter = key;
        inter[5] |= 0x01;
        assert_eq!(frame_size(CodecName::Vp8, &inter), None, "not a keyframe");
        let mut bad = key;
        bad[8] = 0;
        assert_eq!(frame_size(CodecName::Vp8, &bad), None, "no start code");
        assert_eq!(frame_size(CodecName::Vp8, &key[..12]), None, "truncated");
        assert_eq!(frame_size(CodecName::H264, &key), None, "VP8 only");
    }

    #[test]
    fn vp9_cases() {
        let cases: &[(&[u8], bool, &str)] = &[
            (&[0x08], true, "B=1, P=0, no layers"),
            (&[0x48], false, "inter-predicted"),
            (&[0x00], false, "not the start of a frame"),
            (
                &[0xA8, 0x81, 0x02, 0x00],
                true,
                "I with 15-bit id, L with spatial 0",
            ),
            (&[0xA8, 0x01, 0x20], true, "I 7-bit, temporal 1, spatial 0"),
            (&[0xA8, 0x01, 0x22], false, "spatial layer 1"),
        ];
        for (p, want, why) in cases {
            assert_eq!(starts_keyframe(CodecName::Vp9, p), *want, "{why}");
        }
    }

    #[test]
    fn h264_cases() {
        let cases: &[(&[u8], bool, &str)] = &[
            (&[0x65, 0x88], true, "IDR slice"),
            (&[0x67, 0x42], true, "SPS"),
            (&[0x41, 0x9A], false, "non-IDR slice"),
            (
                &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xCE],
                true,
                "STAP-A with SPS",
            ),
            (
                &[0x78, 0x00, 0x02, 0x41, 0x9A],
                false,
                "STAP-A with a P slice",
            ),
            (&[0x7C, 0x85, 0x88], true, "FU-A start of an IDR"),
            (&[0x7C, 0x05, 0x88], false, "FU-A continuation"),
            (&[0x7C, 0x81], false, "FU-A start of a P slice"),
        ];
        for (p, want, why) in cases {
            assert_eq!(starts_keyframe(CodecName::H264, p), *want, "{why}");
        }
    }

    #[test]
    fn av1_cases() {
        assert!(starts_keyframe(CodecName::Av1, &[0x18, 0x0A]));
        assert!(!starts_keyframe(CodecName::Av1, &[0x10, 0x0A]), "N=0");
        assert!(
            !starts_keyframe(CodecName::Av1, &[0x88]),
            "Z=1: continues an OBU"
        );
        assert!(starts_keyframe(CodecName::Opus, &[]));
    }
}
