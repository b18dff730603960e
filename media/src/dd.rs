//! The dependency descriptor RTP header extension (AV1 RTP specification, appendix A), as far
//! as an SFU needs it to thin layers: the mandatory fields of every packet and, from
//! the template dependency structure a keyframe carries, which spatial and temporal layer each
//! frame template is. Chromium sends it for VP8, VP9 and AV1 where it was negotiated, and then
//! leaves the VP8 payload descriptor without picture ids or TIDs.

/// Frame templates a structure has at most (template ids are six bits).
pub const MAX_TEMPLATES: usize = 64;

/// What every packet's descriptor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mandatory {
    pub start_of_frame: bool,
    pub end_of_frame: bool,
    pub template_id: u8,
    pub frame_number: u16,
}

/// The layers of a template dependency structure's templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Structure {
    pub template_id_offset: u8,
    /// Decode targets.
    pub decode_targets: u8,
    templates: u8,
    /// (spatial id, temporal id) of each template.
    layers: [(u8, u8); MAX_TEMPLATES],
}

impl Structure {
    /// The (spatial, temporal) layer of a frame with this template id, if the structure has
    /// the template.
    pub fn layer_of(&self, template_id: u8) -> Option<(u8, u8)> {
        let index = usize::from(template_id.wrapping_sub(self.template_id_offset) & 0x3F);
        (index < usize::from(self.templates)).then(|| self.layers[index])
    }

    /// Spatial layers in the structure.
    pub fn spatial_layers(&self) -> u8 {
        self.count(|(spatial, _)| spatial)
    }

    /// Temporal layers in the structure.
    pub fn temporal_layers(&self) -> u8 {
        self.count(|(_, temporal)| temporal)
    }

    /// One more than the highest id `id` picks from a template's layers.
    fn count(&self, id: impl Fn((u8, u8)) -> u8) -> u8 {
        self.layers[..usize::from(self.templates)]
            .iter()
            .map(|&l| id(l) + 1)
            .max()
            .unwrap_or(1)
    }
}

/// Reads bits most significant first.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.at / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.at % 8)) & 1);
            self.at += 1;
        }
        Some(v)
    }
}

/// Parses a dependency descriptor: its mandatory fields, and the structure's template layers
/// where it carries one. `None` if it is truncated or its layers are malformed.
pub fn parse(ext: &[u8]) -> Option<(Mandatory, Option<Structure>)> {
    let &[b0, hi, lo, ..] = ext else {
        return None;
    };
    let mandatory = Mandatory {
        start_of_frame: b0 & 0x80 != 0,
        end_of_frame: b0 & 0x40 != 0,
        template_id: b0 & 0x3F,
        frame_number: u16::from_be_bytes([hi, lo]),
    };
    if ext.len() == 3 {
        return Some((mandatory, None));
    }
    let mut bits = Bits { data: ext, at: 24 };
    let structure_present = bits.read(1)? == 1;
    // active_decode_targets_present, custom_dtis, custom_fdiffs, custom_chains.
    bits.read(4)?;
    if !structure_present {
        return Some((mandatory, None));
    }
    let template_id_offset = bits.read(6)? as u8;
    let decode_targets = bits.read(5)? as u8 + 1;
    let mut layers = [(0u8, 0u8); MAX_TEMPLATES];
    let (mut spatial, mut temporal, mut templates) = (0u8, 0u8, 0usize);
    loop {
        *layers.get_mut(templates)? = (spatial, temporal);
        templates += 1;
        match bits.read(2)? {
            0 => {}
            1 => temporal = temporal.checked_add(1)?,
            2 => {
                temporal = 0;
                spatial = spatial.checked_add(1)?;
            }
            _ => break,
        }
    }
    Some((
        mandatory,
        Some(Structure {
            template_id_offset,
            decode_targets,
            templates: templates as u8,
            layers,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Captured from Chromium 156 publishing VP8 simulcast with scalabilityMode L1T3 (the
    /// congestion browser test's publisher): a keyframe's descriptor with its structure, then
    /// the next frames' (TIDs 2 1 2 0 of the L1T3 pattern) and one with custom fdiffs and
    /// chains.
    const KEYFRAME: [u8; 23] = [
        0xc0, 0x00, 0x01, 0x80, 0x02, 0x04, 0x4e, 0xaa, 0xaf, 0x28, 0x60, 0x41, 0x4d, 0x34, 0x53,
        0x8a, 0x09, 0x40, 0x40, 0x3b, 0xc0, 0x21, 0x80,
    ];
    const NEXT: [&[u8]; 5] = [
        &[0xc5, 0x00, 0x02],
        &[0xc3, 0x00, 0x03],
        &[0xc5, 0x00, 0x09, 0x12, 0x40],
        &[0xc2, 0x00, 0x12, 0x13, 0x60],
        &[0xc4, 0x00, 0x16, 0x13, 0x6a, 0x80],
    ];

    #[test]
    fn chromium_l1t3() {
        let (m, s) = parse(&KEYFRAME).unwrap();
        assert_eq!(
            m,
            Mandatory {
                start_of_frame: true,
                end_of_frame: true,
                template_id: 0,
                frame_number: 1
            }
        );
        let s = s.unwrap();
        assert_eq!((s.template_id_offset, s.decode_targets), (0, 3));
        let tids: Vec<_> = (0..8).map(|t| s.layer_of(t).map(|l| l.1)).collect();
        assert_eq!(
            tids,
            [
                Some(0),
                Some(0),
                Some(0),
                Some(1),
                Some(1),
                Some(2),
                Some(2),
                None
            ]
        );
        assert_eq!(s.temporal_layers(), 3);
        let next: Vec<_> = NEXT
            .iter()
            .map(|d| {
                let (m, none) = parse(d).unwrap();
                assert_eq!(none, None);
                (m.frame_number, s.layer_of(m.template_id).unwrap().1)
            })
            .collect();
        assert_eq!(next, [(2, 2), (3, 1), (9, 2), (18, 0), (22, 1)]);
    }

    /// Captured from Chromium 156 publishing VP9 with scalabilityMode L3T3_KEY (one SSRC, a
    /// superframe of up to three spatial layer frames, each its own DD frame number, the
    /// marker on the last packet of the highest): the first keyframe's descriptor.
    const VP9_L3T3_KEY: [u8; 92] = [
        0xc0, 0x00, 0x01, 0xc0, 0x08, 0x14, 0x85, 0x21, 0x4e, 0xaa, 0xaa, 0xa8, 0x00, 0x06, 0x00,
        0x00, 0x40, 0x00, 0x10, 0x00, 0x02, 0xaa, 0x80, 0xa8, 0x00, 0x06, 0x00, 0x00, 0x40, 0x00,
        0x10, 0x00, 0x02, 0xa0, 0x00, 0xa8, 0x00, 0x06, 0x00, 0x00, 0x40, 0x00, 0x16, 0xd5, 0x49,
        0x24, 0x1b, 0x55, 0x24, 0x90, 0x6d, 0x54, 0x92, 0x31, 0x57, 0xe0, 0x01, 0x97, 0x4c, 0xa8,
        0x64, 0x33, 0x0e, 0x22, 0x23, 0x96, 0xec, 0xa8, 0x65, 0x53, 0x04, 0x22, 0x43, 0x90, 0xec,
        0xa8, 0x77, 0x53, 0x00, 0xef, 0x00, 0x86, 0x01, 0xdf, 0x01, 0x0d, 0x03, 0xbf, 0x02, 0x1b,
        0x1f, 0x80,
    ];

    #[test]
    fn chromium_vp9_l3t3_key() {
        let (m, s) = parse(&VP9_L3T3_KEY).unwrap();
        assert_eq!((m.template_id, m.frame_number), (0, 1));
        let s = s.unwrap();
        assert_eq!((s.spatial_layers(), s.temporal_layers()), (3, 3));
        assert_eq!(s.decode_targets, 9);
        // Each frame's template as its DD named it, against the spatial and temporal ids its
        // VP9 payload descriptor carried (SID and TID of its layer byte): the keyframe's
        // second and third spatial frames, then one superframe of each temporal layer.
        #[rustfmt::skip]
        let seen: [(u8, (u8, u8)); 11] = [
            (5, (1, 0)), (10, (2, 0)),
            (1, (0, 0)), (6, (1, 0)), (11, (2, 0)),
            (2, (0, 1)), (7, (1, 1)), (12, (2, 1)),
            (3, (0, 2)), (8, (1, 2)), (13, (2, 2)),
        ];
        for (template, layer) in seen {
            assert_eq!(s.layer_of(template), Some(layer), "template {template}");
        }
    }

    #[test]
    fn offsets_spatial_layers_and_bad_input() {
        // Offset 60, two spatial layers of two temporal layers each: idc 1 2 1 3.
        // flags 10000, offset 111100, dt-1 00011, layers 01 10 01 11.
        let d = [0x80, 0, 7, 0b1000_0111, 0b1000_0011, 0b0110_0111];
        let s = parse(&d).unwrap().1.unwrap();
        assert_eq!(s.template_id_offset, 60);
        assert_eq!(s.decode_targets, 4);
        let layers: Vec<_> = [60, 61, 62, 63, 0].map(|t| s.layer_of(t)).to_vec();
        assert_eq!(
            layers,
            [Some((0, 0)), Some((0, 1)), Some((1, 0)), Some((1, 1)), None]
        );
        assert_eq!((s.spatial_layers(), s.temporal_layers()), (2, 2));
        assert_eq!(parse(&[0x80, 0]), None, "truncated mandatory fields");
        assert_eq!(parse(&d[..5]), None, "structure cut short");
        // 64 templates of 'same layer' and no end.
        let mut long = vec![0x80, 0, 7, 0x80, 0x00];
        long.extend([0u8; 17]);
        assert_eq!(parse(&long), None, "more templates than ids");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(d in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Some((m, s)) = parse(&d) {
                prop_assert_eq!(m.template_id, d[0] & 0x3F);
                if let Some(s) = s {
                    for t in 0..64 {
                        let _ = s.layer_of(t);
                    }
                }
            }
        }
    }
}
