//! The publisher model: a VP8 track of one encoding or of simulcast layers, each with its own
//! SSRC and RTX SSRC, sending a frame every 33 ms on every layer; NACKs answered with RTX from
//! what it sent, PLIs with a keyframe on the layer asked for, and (optionally) a keyframe on
//! every layer at a fixed interval. Each packet's payload names its layer (`LAYER_BYTE`), so
//! subscribers can tell which layer the router sent them after it rewrote the SSRC.

use std::collections::HashMap;
use std::time::Duration;

use ringcast_media::fixtures::{self, VP8_PT, VP8_RTX_PT};
use ringcast_media::router::EncodingConfig;
use ringcast_media::rtcp::{self, Rtcp};
use ringcast_media::rtp::RtpPacket;

use super::{MEDIA_SSRC, RTX_SSRC};

/// Where a packet's payload carries the index of its layer: after the VP8 payload descriptor
/// (1 byte) and the start of the frame header the model writes (4 bytes).
pub const LAYER_BYTE: usize = 5;
/// Packets the publisher keeps per layer to answer NACKs.
const KEPT: u16 = 1024;

/// One encoding as the publisher sends it: packets per frame (delta, key) of `size` bytes of
/// payload.
#[derive(Debug, Clone, Copy)]
pub struct LayerSpec {
    pub rid: Option<&'static str>,
    pub ssrc: u32,
    pub rtx_ssrc: u32,
    pub packets: usize,
    pub key_packets: usize,
    pub size: usize,
}

impl LayerSpec {
    /// Media bitrate of delta frames at 30 frames/s, bits/s.
    pub fn bitrate(&self) -> u64 {
        (self.packets * self.size * 8 * 30) as u64
    }
}

struct Layer {
    spec: LayerSpec,
    seq: u16,
    rtx_seq: u16,
    sent: HashMap<u16, Vec<u8>>,
    keyframe_due: bool,
    /// Not sent (as a browser stops a layer its own estimate cannot carry).
    paused: bool,
}

pub struct Publisher {
    layers: Vec<Layer>,
    pub ts: u32,
    pub muted: bool,
    pub plis: u32,
    pub nacked: u32,
    /// A keyframe on every layer this often, besides those asked for.
    pub keyframe_interval: Option<Duration>,
    next_periodic: Duration,
}

/// The VP8 payload of a packet of `layer`: the first of a frame starts it (S=1, PID 0), and on
/// a keyframe carries P=0 in the payload header.
pub fn vp8_payload(first: bool, key: bool, layer: u8, size: usize) -> Vec<u8> {
    let mut p = vec![if first { 0x10 } else { 0x00 }];
    p.push(if key { 0x00 } else { 0x01 });
    p.extend_from_slice(&[0x9D, 0x01, 0x2A, layer]);
    p.resize(size.max(LAYER_BYTE + 1), 0xAB);
    p
}

pub fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0x80, (u8::from(marker) << 7) | pt];
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&ssrc.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

impl Publisher {
    /// One encoding: 3 packets of 300 bytes a frame, 6 for a keyframe (about 220 kbit/s).
    pub fn new() -> Publisher {
        Publisher::with_layers(&[LayerSpec {
            rid: None,
            ssrc: MEDIA_SSRC,
            rtx_ssrc: RTX_SSRC,
            packets: 3,
            key_packets: 6,
            size: 300,
        }])
    }

    /// Three simulcast layers q/h/f of about 150 kbit/s, 500 kbit/s and 1.5 Mbit/s (keyframes
    /// three times a delta frame), a keyframe on each every `keyframe_interval`.
    pub fn simulcast(keyframe_interval: Duration) -> Publisher {
        let layer = |rid, ssrc, packets, size| LayerSpec {
            rid: Some(rid),
            ssrc,
            rtx_ssrc: ssrc + 1,
            packets,
            key_packets: 3 * packets,
            size,
        };
        let mut p = Publisher::with_layers(&[
            layer("q", MEDIA_SSRC, 1, 625),
            layer("h", 0x2000, 2, 1040),
            layer("f", 0x3000, 6, 1040),
        ]);
        p.keyframe_interval = Some(keyframe_interval);
        p
    }

    pub fn with_layers(specs: &[LayerSpec]) -> Publisher {
        Publisher {
            layers: specs
                .iter()
                .enumerate()
                .map(|(i, &spec)| Layer {
                    spec,
                    seq: 1000 + 10_000 * i as u16,
                    rtx_seq: 5000 + 10_000 * i as u16,
                    sent: HashMap::new(),
                    keyframe_due: true,
                    paused: false,
                })
                .collect(),
            ts: 90_000,
            muted: false,
            plis: 0,
            nacked: 0,
            keyframe_interval: None,
            next_periodic: Duration::ZERO,
        }
    }

    pub fn spec(&self, layer: usize) -> LayerSpec {
        self.layers[layer].spec
    }

    /// Stops or resumes sending `layer` (resuming on a keyframe).
    pub fn set_paused(&mut self, layer: usize, paused: bool) {
        let l = &mut self.layers[layer];
        l.keyframe_due |= l.paused && !paused;
        l.paused = paused;
    }

    /// The track's encodings as signalled: rids (if simulcast), SSRCs and RTX SSRCs.
    pub fn encodings(&self) -> Vec<EncodingConfig> {
        match self.layers.as_slice() {
            [one] if one.spec.rid.is_none() => {
                fixtures::single(one.spec.ssrc, Some(one.spec.rtx_ssrc))
            }
            layers => layers
                .iter()
                .map(|l| EncodingConfig {
                    rid: l.spec.rid.map(Into::into),
                    ssrc: Some(l.spec.ssrc),
                    rtx_ssrc: Some(l.spec.rtx_ssrc),
                })
                .collect(),
        }
    }

    /// One frame at `now` on every layer.
    pub fn frame(&mut self, now: Duration) -> Vec<Vec<u8>> {
        if let Some(every) = self.keyframe_interval
            && now >= self.next_periodic
        {
            self.next_periodic = now + every;
            for l in &mut self.layers {
                l.keyframe_due = true;
            }
        }
        self.ts = self.ts.wrapping_add(3000);
        let ts = self.ts;
        let mut out = Vec::new();
        for (i, l) in self
            .layers
            .iter_mut()
            .enumerate()
            .filter(|(_, l)| !l.paused)
        {
            let key = std::mem::take(&mut l.keyframe_due);
            let n = if key {
                l.spec.key_packets
            } else {
                l.spec.packets
            };
            for k in 0..n {
                let payload = vp8_payload(k == 0, key, i as u8, l.spec.size);
                let p = rtp(VP8_PT, l.seq, ts, l.spec.ssrc, k == n - 1, &payload);
                l.sent.remove(&l.seq.wrapping_sub(KEPT));
                l.sent.insert(l.seq, p.clone());
                l.seq = l.seq.wrapping_add(1);
                out.push(p);
            }
        }
        out
    }

    /// RTCP from the router: NACKs answered with RTX, PLIs with the next frame of that layer a
    /// keyframe (every layer's, for an SSRC it does not know).
    pub fn rtcp(&mut self, datagram: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for p in rtcp::read(datagram).flatten() {
            match p {
                Rtcp::Pli { media_ssrc, .. } => {
                    self.plis += 1;
                    let known = self.layers.iter().any(|l| l.spec.ssrc == media_ssrc);
                    for l in &mut self.layers {
                        if !known || l.spec.ssrc == media_ssrc {
                            l.keyframe_due = true;
                        }
                    }
                }
                Rtcp::Nack {
                    media_ssrc, items, ..
                } => {
                    let Some(l) = self.layers.iter_mut().find(|l| l.spec.ssrc == media_ssrc) else {
                        continue;
                    };
                    for seq in items.lost() {
                        self.nacked += 1;
                        let Some(orig) = l.sent.get(&seq) else {
                            continue;
                        };
                        let o = RtpPacket::parse(orig).unwrap();
                        let mut payload = seq.to_be_bytes().to_vec();
                        payload.extend_from_slice(o.payload);
                        out.push(rtp(
                            VP8_RTX_PT,
                            l.rtx_seq,
                            o.timestamp,
                            l.spec.rtx_ssrc,
                            o.marker,
                            &payload,
                        ));
                        l.rtx_seq = l.rtx_seq.wrapping_add(1);
                    }
                }
                _ => {}
            }
        }
        out
    }
}
