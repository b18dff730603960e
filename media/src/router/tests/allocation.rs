//! The subscriber's estimate chooses its simulcast layer: measured layer rates, the share-out,
//! down at once, up with headroom, each subscriber on its own.

use super::tracks::three_layers;
use super::*;

/// Packets per frame and bytes per packet of the q, h and f layers: about 150 kbit/s,
/// 480 kbit/s and 1.4 Mbit/s at 30 frames/s.
const SHAPE: [(u16, usize); 3] = [(1, 620), (2, 1000), (5, 1200)];
const SSRCS: [(u32, &str); 3] = [(0x10, "q"), (0x20, "h"), (0x30, "f")];
/// Their picture sizes, as their keyframes say.
const SIZES: [(u16, u16); 3] = [(320, 180), (640, 360), (1280, 720)];
/// Where each layer's picture ids and TL0PICIDX start: each layer numbers its own.
const PICTURE_IDS: [u16; 3] = [1000, 20000, 32700];
const TL0S: [u8; 3] = [0, 100, 250];

/// The layer a subscriber's packet came from, by its size.
fn layer_of(b: &[u8]) -> usize {
    let n = RtpPacket::parse(b).unwrap().payload.len();
    SHAPE.iter().position(|&(_, len)| len == n).unwrap()
}

fn remb(bps: u64, ssrc: u32) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    let mut w = rtcp::Writer::new(&mut b);
    w.remb(ssrc << 4, bps, &[ssrc]).unwrap();
    let n = w.len();
    b.truncate(n);
    b
}

struct Publisher {
    seq: [u16; 3],
    frame: u32,
    /// Three VP8 temporal layers (L1T3, as Chromium's simulcast): TIDs 0 2 1 2 by frame, a
    /// keyframe every 12 frames rather than 10.
    temporal: bool,
}

/// The TID of frame `n` in L1T3.
fn l1t3_tid(frame: u32) -> u8 {
    [0, 2, 1, 2][frame as usize % 4]
}

impl Publisher {
    /// `ms` of 30 frames/s on all three layers, a keyframe on each every 10 frames.
    fn run(&mut self, r: &mut MediaRouter, out: &mut Recorder, t0: Instant, ms: u32) {
        for _ in 0..ms / 33 {
            self.frame += 1;
            let now = t0 + Duration::from_millis(u64::from(self.frame) * 33);
            for (l, &(packets, len)) in SHAPE.iter().enumerate() {
                for k in 0..packets {
                    self.seq[l] += 1;
                    let (ssrc, rid) = SSRCS[l];
                    let every = if self.temporal { 12 } else { 10 };
                    let key = k == 0 && self.frame.is_multiple_of(every);
                    let mut p = vp8(ssrc, self.seq[l], self.frame * 3000, key, Some(("1", rid)));
                    // vp8() ends with a 5-byte payload: grow it to the layer's size.
                    p.resize(p.len() - 5 + len, 0x5A);
                    // The descriptor as Chromium writes it (X, a 15-bit picture id numbered
                    // per layer, TL0PICIDX), then the frame tag, and for a keyframe the start
                    // code and the layer's picture size.
                    let at = p.len() - len;
                    let pid = (PICTURE_IDS[l] + self.frame as u16) & 0x7FFF;
                    let tl0 = if self.temporal {
                        (self.frame / 4) as u8
                    } else {
                        self.frame as u8
                    };
                    let tl0 = tl0.wrapping_add(TL0S[l]);
                    let start = if k == 0 { 0x10 } else { 0 };
                    p[at..at + 5].copy_from_slice(&[
                        0x80 | start,
                        0xC0,
                        0x80 | (pid >> 8) as u8,
                        pid as u8,
                        tl0,
                    ]);
                    let mut at = at + 5;
                    if self.temporal {
                        p[at - 4] |= 0x20;
                        p[at] = l1t3_tid(self.frame) << 6;
                        at += 1;
                    }
                    p[at] = if key { 0 } else { 1 };
                    if key {
                        let (w, h) = SIZES[l];
                        p[at + 1..at + 10].copy_from_slice(&[0, 0, 0x9D, 0x01, 0x2A, 0, 0, 0, 0]);
                        p[at + 6..at + 8].copy_from_slice(&w.to_le_bytes());
                        p[at + 8..at + 10].copy_from_slice(&h.to_le_bytes());
                    }
                    r.rtp(PUB, &p, out, now);
                }
            }
            r.timeout(out, now);
        }
    }
}

/// The layers of what `to` received since `from` (an index into the recorder).
fn layers_sent(out: &Recorder, to: TransportId, from: usize) -> Vec<usize> {
    out.rtp[from..]
        .iter()
        .filter(|(t, _)| *t == to)
        .map(|(_, b)| layer_of(b))
        .collect()
}

#[test]
fn each_subscriber_gets_the_layer_its_estimate_carries() {
    let (mut r, mut out, t0) = router_with(three_layers());
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, t0);
    r.command(MediaCommand::Subscribe(sub(SUB_B, 0xB)), &mut out, t0);
    let mut publisher = Publisher {
        seq: [0; 3],
        frame: 0,
        temporal: false,
    };
    // A says (REMB) it takes 400 kbit/s; B measures nothing and is not capped.
    r.rtcp(SUB_A, &remb(400_000, 0xA), &mut out, t0);
    publisher.run(&mut r, &mut out, t0, 3000);
    let mark = out.rtp.len();
    publisher.run(&mut r, &mut out, t0, 1000);
    let a = layers_sent(&out, SUB_A, mark);
    let b = layers_sent(&out, SUB_B, mark);
    assert!(
        !a.is_empty() && a.iter().all(|&l| l == 0),
        "A: q only: {a:?}"
    );
    assert!(
        !b.is_empty() && b.iter().all(|&l| l == 2),
        "B: f only: {b:?}"
    );

    // A's link widens: 1 Mbit/s carries h (480 k with headroom, beside q's 150 k) but not f.
    r.rtcp(SUB_A, &remb(1_000_000, 0xA), &mut out, t0);
    publisher.run(&mut r, &mut out, t0, 2000);
    let mark = out.rtp.len();
    publisher.run(&mut r, &mut out, t0, 1000);
    let a = layers_sent(&out, SUB_A, mark);
    assert!(!a.is_empty() && a.iter().all(|&l| l == 1), "A: h: {a:?}");

    // And narrows again: down at once (on the next keyframe of q).
    r.rtcp(SUB_A, &remb(200_000, 0xA), &mut out, t0);
    let before = r.stats.layer_switches;
    publisher.run(&mut r, &mut out, t0, 1000);
    assert!(r.stats.layer_switches > before);
    let mark = out.rtp.len();
    publisher.run(&mut r, &mut out, t0, 500);
    let a = layers_sent(&out, SUB_A, mark);
    assert!(
        !a.is_empty() && a.iter().all(|&l| l == 0),
        "A: q again: {a:?}"
    );
    // B was never moved.
    assert!(layers_sent(&out, SUB_B, 0).iter().skip(30).all(|&l| l == 2));
    // A's sends were paced to each estimate in turn; B, measured by nothing, never.
    let paced: Vec<Option<u64>> = out
        .pacing
        .iter()
        .filter(|(t, _)| *t == SUB_A)
        .map(|p| p.1)
        .collect();
    assert_eq!(paced, [Some(400_000), Some(1_000_000), Some(200_000)]);
    assert!(out.pacing.iter().all(|(t, _)| *t == SUB_A));
    // One contiguous stream for A through the switches: sequence numbers, and picture ids
    // and TL0PICIDX (the same within a picture, one more at the next).
    let sent: Vec<(u16, crate::vp8::Descriptor)> = out
        .rtp
        .iter()
        .filter(|(t, _)| *t == SUB_A)
        .map(|(_, b)| {
            let p = RtpPacket::parse(b).unwrap();
            (
                p.sequence,
                crate::vp8::Descriptor::parse(p.payload).unwrap(),
            )
        })
        .collect();
    assert!(sent.windows(2).all(|w| w[1].0 == w[0].0.wrapping_add(1)));
    let pictures: Vec<(u16, u8)> = sent
        .iter()
        .map(|(_, d)| (d.picture_id.unwrap().0, d.tl0_pic_idx.unwrap()))
        .collect();
    for w in pictures.windows(2) {
        let next = ((w[0].0 + 1) & 0x7FFF, w[0].1.wrapping_add(1));
        assert!(w[1] == w[0] || w[1] == next, "{:?} then {:?}", w[0], w[1]);
    }
    let layers = layers_sent(&out, SUB_A, 0);
    assert!(
        layers.windows(2).filter(|w| w[0] != w[1]).count() >= 2,
        "switched: {layers:?}"
    );
}

/// The REMB the publisher was sent last.
fn last_remb(out: &Recorder) -> Option<u64> {
    out.rtcp
        .iter()
        .rev()
        .filter(|(to, _)| *to == PUB)
        .find_map(|(_, b)| {
            rtcp::read(b).find_map(|p| match p {
                Ok(Rtcp::Remb { bitrate_bps, .. }) => Some(bitrate_bps),
                _ => None,
            })
        })
}

#[test]
fn the_publisher_is_allowed_what_its_subscribers_take() {
    let (mut r, mut out, t0) = router_with(three_layers());
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, t0);
    let mut publisher = Publisher {
        seq: [0; 3],
        frame: 0,
        temporal: false,
    };
    // Its only subscriber takes 300 kbit/s: after a while, only q and the layer above (h,
    // kept encoding) are allowed for, not f.
    r.rtcp(SUB_A, &remb(300_000, 0xA), &mut out, t0);
    publisher.run(&mut r, &mut out, t0, 2000);
    assert_eq!(
        last_remb(&out),
        Some(PUBLISHER_MAX_BITRATE),
        "not lowered at once"
    );
    publisher.run(&mut r, &mut out, t0, 6000);
    let low = last_remb(&out).unwrap();
    let (q, h) = (150_000, 480_000);
    assert!(
        low > q + h && low < (q + h) * 3 / 2,
        "q and h with headroom: {low}"
    );
    // Its link widens: the publisher may send everything again at the next report.
    r.rtcp(SUB_A, &remb(5_000_000, 0xA), &mut out, t0);
    publisher.run(&mut r, &mut out, t0, 1500);
    let high = last_remb(&out).unwrap();
    assert!(high > 2_000_000, "all three: {high}");
    // A second subscriber nothing measures: no bound.
    r.command(MediaCommand::Subscribe(sub(SUB_B, 0xB)), &mut out, t0);
    r.rtcp(SUB_A, &remb(300_000, 0xA), &mut out, t0);
    publisher.run(&mut r, &mut out, t0, 8000);
    assert_eq!(last_remb(&out), Some(PUBLISHER_MAX_BITRATE));
}

#[test]
fn settings_cap_the_layer_measured_or_not() {
    let (mut r, mut out, t0) = router_with(three_layers());
    let settings = |max_layer, width, height| SubscriptionSettings {
        max_layer,
        width,
        height,
        priority: 0,
        max_fps: 0,
    };
    // A asks for q at most; B renders at 600x300, which h covers; C says nothing.
    let mut a = sub(SUB_A, 0xA);
    a.settings = settings(Some(0), 0, 0);
    r.command(MediaCommand::Subscribe(a), &mut out, t0);
    let mut b = sub(SUB_B, 0xB);
    b.settings = settings(None, 600, 300);
    r.command(MediaCommand::Subscribe(b), &mut out, t0);
    r.command(MediaCommand::Subscribe(sub(SUB_C, 0xC)), &mut out, t0);
    let mut publisher = Publisher {
        seq: [0; 3],
        frame: 0,
        temporal: false,
    };
    publisher.run(&mut r, &mut out, t0, 3000);
    let mark = out.rtp.len();
    publisher.run(&mut r, &mut out, t0, 1000);
    for (who, to, layer) in [("A", SUB_A, 0), ("B", SUB_B, 1), ("C", SUB_C, 2)] {
        let got = layers_sent(&out, to, mark);
        assert!(
            !got.is_empty() && got.iter().all(|&l| l == layer),
            "{who}: {got:?}"
        );
    }
    // B's tile grows past h: f. A lifts its cap, but its REMB carries only h.
    r.command(
        MediaCommand::Configure {
            track: TrackId(10),
            subscriber: SUB_B,
            settings: settings(None, 1280, 720),
        },
        &mut out,
        t0,
    );
    r.rtcp(SUB_A, &remb(1_000_000, 0xA), &mut out, t0);
    r.command(
        MediaCommand::Configure {
            track: TrackId(10),
            subscriber: SUB_A,
            settings: SubscriptionSettings::default(),
        },
        &mut out,
        t0,
    );
    publisher.run(&mut r, &mut out, t0, 2000);
    let mark = out.rtp.len();
    publisher.run(&mut r, &mut out, t0, 1000);
    for (who, to, layer) in [("A", SUB_A, 1), ("B", SUB_B, 2)] {
        let got = layers_sent(&out, to, mark);
        assert!(
            !got.is_empty() && got.iter().all(|&l| l == layer),
            "{who}: {got:?}"
        );
    }
}

#[test]
fn subscribers_are_told_their_layers_and_estimate() {
    use std::sync::{Arc, Mutex};
    let (r, mut out, t0) = router_with(three_layers());
    let seen: Arc<Mutex<Vec<SubscriptionQuality>>> = Arc::default();
    let sink = seen.clone();
    let mut r = r.with_quality_sink(Box::new(move |b: &[SubscriptionQuality]| {
        sink.lock().unwrap().extend_from_slice(b)
    }));
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, t0);
    r.command(MediaCommand::Subscribe(sub(SUB_B, 0xB)), &mut out, t0);
    r.rtcp(SUB_A, &remb(400_000, 0xA), &mut out, t0);
    let mut publisher = Publisher {
        seq: [0; 3],
        frame: 0,
        temporal: false,
    };
    publisher.run(&mut r, &mut out, t0, 4000);
    let last = |who| {
        seen.lock()
            .unwrap()
            .iter()
            .rev()
            .find(|q| q.subscriber == who)
            .copied()
            .unwrap()
    };
    let a = last(SUB_A);
    assert_eq!(
        (a.track, a.current, a.target, a.layers, a.estimate_bps),
        (TrackId(10), Some(0), 0, 3, Some(400_000)),
        "{a:?}"
    );
    let b = last(SUB_B);
    assert_eq!((b.current, b.target, b.estimate_bps), (Some(2), 2, None));
    // Nothing more while nothing changes; a wider link is told (up to h, then on h).
    let before = seen.lock().unwrap().len();
    publisher.run(&mut r, &mut out, t0, 3000);
    assert_eq!(seen.lock().unwrap().len(), before, "nothing changed");
    r.rtcp(SUB_A, &remb(1_000_000, 0xA), &mut out, t0);
    publisher.run(&mut r, &mut out, t0, 3000);
    let a = last(SUB_A);
    assert_eq!(
        (a.current, a.target, a.estimate_bps),
        (Some(1), 1, Some(1_000_000))
    );
    let counts = r.layer_counts();
    assert_eq!(counts[0][..3], [0, 1, 1], "one on h, one on f now");
}

#[test]
fn layers_nobody_needs_are_paused_and_resumed_when_needed() {
    use std::sync::{Arc, Mutex};
    let (r, mut out, t0) = router_with(three_layers());
    type Told = Vec<(TrackId, Vec<bool>)>;
    let told: Arc<Mutex<Told>> = Arc::default();
    let sink = told.clone();
    let mut r = r.with_layers_sink(Box::new(move |t: TrackId, l: &[bool]| {
        sink.lock().unwrap().push((t, l.to_vec()))
    }));
    let mut publisher = Publisher {
        seq: [0; 3],
        frame: 0,
        temporal: false,
    };
    let last = || told.lock().unwrap().last().cloned();
    // Nobody subscribes: all paused, once that held for PAUSE_AFTER.
    publisher.run(&mut r, &mut out, t0, 2000);
    assert_eq!(last(), None, "not yet");
    publisher.run(&mut r, &mut out, t0, 2000);
    assert_eq!(last(), Some((TrackId(10), vec![false; 3])));
    // A subscriber that renders small (q covers it): q resumes at once.
    let mut a = sub(SUB_A, 0xA);
    a.settings = SubscriptionSettings {
        width: 300,
        height: 160,
        ..SubscriptionSettings::default()
    };
    let t = t0 + Duration::from_millis(4000);
    r.command(MediaCommand::Subscribe(a), &mut out, t);
    r.timeout(&mut out, t);
    assert_eq!(last(), Some((TrackId(10), vec![true, false, false])));
    // Its tile grows past h: all of them, at once.
    r.command(
        MediaCommand::Configure {
            track: TrackId(10),
            subscriber: SUB_A,
            settings: SubscriptionSettings::default(),
        },
        &mut out,
        t,
    );
    r.timeout(&mut out, t);
    assert_eq!(last(), Some((TrackId(10), vec![true; 3])));
    assert_eq!(told.lock().unwrap().len(), 3, "each change told once");
}

/// What `to` was sent since `from`: (sequence number, picture id, TL0PICIDX, TID) per packet.
fn vp8_sent(out: &Recorder, to: TransportId, from: usize) -> Vec<(u16, u16, u8, u8)> {
    out.rtp[from..]
        .iter()
        .filter(|(t, _)| *t == to)
        .map(|(_, b)| {
            let p = RtpPacket::parse(b).unwrap();
            let d = crate::vp8::Descriptor::parse(p.payload).unwrap();
            (
                p.sequence,
                d.picture_id.unwrap().0,
                d.tl0_pic_idx.unwrap(),
                d.tid.unwrap().0,
            )
        })
        .collect()
}

#[test]
fn a_link_under_the_lowest_layer_gets_fewer_frames_and_a_frame_rate_cap_holds() {
    let (mut r, mut out, t0) = router_with(three_layers());
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, t0);
    r.command(MediaCommand::Subscribe(sub(SUB_B, 0xB)), &mut out, t0);
    let mut c = sub(SUB_C, 0xC);
    c.settings.max_fps = 15;
    r.command(MediaCommand::Subscribe(c), &mut out, t0);
    let mut publisher = Publisher {
        seq: [0; 3],
        frame: 0,
        temporal: true,
    };
    // q is about 160 kbit/s whole, 40 up to TID 0 (every fourth frame), 80 up to TID 1.
    r.rtcp(SUB_A, &remb(60_000, 0xA), &mut out, t0);
    publisher.run(&mut r, &mut out, t0, 3000);
    let mark = out.rtp.len();
    publisher.run(&mut r, &mut out, t0, 2000);
    let a = vp8_sent(&out, SUB_A, mark);
    assert!(!a.is_empty(), "A is sent something");
    assert!(a.iter().all(|p| p.3 == 0), "A: TID 0 only: {a:?}");
    assert!(layers_sent(&out, SUB_A, mark).iter().all(|&l| l == 0));
    // B, measured by nothing, gets all of f; C, at most 15 frames/s, TIDs 0 and 1.
    let tids = |to| {
        let mut t: Vec<u8> = vp8_sent(&out, to, mark).iter().map(|p| p.3).collect();
        t.sort_unstable();
        t.dedup();
        t
    };
    assert_eq!(tids(SUB_B), [0, 1, 2]);
    assert_eq!(tids(SUB_C), [0, 1]);
    assert!(r.stats.temporal_skipped > 0);

    // A's link widens: all of its frames again, then the layers above.
    r.rtcp(SUB_A, &remb(1_000_000, 0xA), &mut out, t0);
    publisher.run(&mut r, &mut out, t0, 3000);
    let mark2 = out.rtp.len();
    publisher.run(&mut r, &mut out, t0, 1000);
    let mut t: Vec<u8> = vp8_sent(&out, SUB_A, mark2).iter().map(|p| p.3).collect();
    t.dedup();
    assert!(t.contains(&2), "A: all temporal layers again: {t:?}");

    // Through all of it each subscriber's stream is contiguous: sequence numbers one apart,
    // picture ids the same within a picture and one more at the next, TL0PICIDX one more
    // after each base-layer picture.
    for to in [SUB_A, SUB_C] {
        let sent = vp8_sent(&out, to, 0);
        for w in sent.windows(2) {
            let ((s0, p0, l0, _), (s1, p1, l1, t1)) = (w[0], w[1]);
            assert_eq!(s1, s0.wrapping_add(1), "{to:?}: sequence {w:?}");
            assert!(p1 == p0 || p1 == (p0 + 1) & 0x7FFF, "{to:?}: picture {w:?}");
            let next_tl0 = p1 != p0 && t1 == 0;
            let tl0 = if next_tl0 { l0.wrapping_add(1) } else { l0 };
            assert_eq!(l1, tl0, "{to:?}: TL0PICIDX {w:?}");
        }
    }
}

/// The publisher's (and the subscribers') id for the dependency descriptor.
const DD_EXT: u8 = 12;
/// Chromium 156's keyframe descriptor for L1T3 (as `dd`'s fixture): its template structure,
/// whose templates 0-2 are TID 0, 3-4 TID 1 and 5-6 TID 2.
const DD_KEYFRAME: [u8; 23] = [
    0xc0, 0x00, 0x01, 0x80, 0x02, 0x04, 0x4e, 0xaa, 0xaf, 0x28, 0x60, 0x41, 0x4d, 0x34, 0x53, 0x8a,
    0x09, 0x40, 0x40, 0x3b, 0xc0, 0x21, 0x80,
];

/// Packet `k` of `packets` of frame `frame` on layer `l`, as Chromium sends VP8 simulcast
/// with the dependency descriptor negotiated: the DD (two-byte header extensions) tells the
/// frame's number, shared by the three layers, and its template; the VP8 payload descriptor
/// has neither picture id nor TID.
fn dd_packet(l: usize, seq: u16, frame: u32, k: u16, packets: u16, key: bool) -> Vec<u8> {
    let (ssrc, rid) = SSRCS[l];
    let template = match (key, l1t3_tid(frame)) {
        (true, _) => 0,
        (false, 0) => 2,
        (false, 1) => 3,
        _ => 5,
    };
    let mut dd = if key && k == 0 {
        DD_KEYFRAME.to_vec()
    } else {
        vec![0; 3]
    };
    dd[0] = u8::from(k == 0) << 7 | u8::from(k + 1 == packets) << 6 | template;
    dd[1..3].copy_from_slice(&(frame as u16).to_be_bytes());
    let mut ext = vec![4, 1, b'1', 10, rid.len() as u8];
    ext.extend_from_slice(rid.as_bytes());
    ext.extend([DD_EXT, dd.len() as u8]);
    ext.extend(&dd);
    ext.resize(ext.len().next_multiple_of(4), 0);
    let mut p = vec![0x90, 96];
    p.extend(seq.to_be_bytes());
    p.extend((frame * 3000).to_be_bytes());
    p.extend(ssrc.to_be_bytes());
    p.extend([0x10, 0x00]);
    p.extend(((ext.len() / 4) as u16).to_be_bytes());
    p.extend(ext);
    let at = p.len();
    p.resize(at + SHAPE[l].1, 0x5A);
    p[at] = if k == 0 { 0x10 } else { 0 };
    p[at + 1] = u8::from(!key);
    if key && k == 0 {
        let (w, h) = SIZES[l];
        p[at + 2..at + 5].copy_from_slice(&[0, 0, 0x9D]);
        p[at + 5..at + 7].copy_from_slice(&[0x01, 0x2A]);
        p[at + 7..at + 9].copy_from_slice(&w.to_le_bytes());
        p[at + 9..at + 11].copy_from_slice(&h.to_le_bytes());
    }
    p
}

/// The sequence numbers and DD templates of what `to` received since `from`.
fn dd_sent(out: &Recorder, to: TransportId, from: usize) -> Vec<(u16, u8)> {
    out.rtp[from..]
        .iter()
        .filter(|(t, _)| *t == to)
        .map(|(_, b)| {
            let p = RtpPacket::parse(b).unwrap();
            let dd = p.extension(DD_EXT).expect("the DD is forwarded");
            (p.sequence, crate::dd::parse(dd).unwrap().0.template_id)
        })
        .collect()
}

#[test]
fn temporal_layers_from_the_dependency_descriptor_are_thinned() {
    let mut track = video_track(three_layers());
    track
        .forwarded_exts
        .push((DD_EXT, ForwardedExt::DependencyDescriptor));
    let (mut r, mut out, t0) = router_with_track(track);
    for (who, ssrc) in [(SUB_A, 0xA), (SUB_B, 0xB)] {
        let mut s = sub(who, ssrc);
        s.exts.push((ForwardedExt::DependencyDescriptor, DD_EXT));
        r.command(MediaCommand::Subscribe(s), &mut out, t0);
    }
    // A takes 60 kbit/s, under the lowest layer (q, ~150 kbit/s whole); B is not measured.
    r.rtcp(SUB_A, &remb(60_000, 0xA), &mut out, t0);
    let mut seq = [0u16; 3];
    let mut run = |r: &mut MediaRouter, out: &mut Recorder, frames: std::ops::Range<u32>| {
        for frame in frames {
            let now = t0 + Duration::from_millis(u64::from(frame) * 33);
            let key = frame % 12 == 1;
            for (l, &(packets, _)) in SHAPE.iter().enumerate() {
                for k in 0..packets {
                    seq[l] = seq[l].wrapping_add(1);
                    r.rtp(PUB, &dd_packet(l, seq[l], frame, k, packets, key), out, now);
                }
            }
            r.timeout(out, now);
        }
    };
    run(&mut r, &mut out, 1..91);
    let mark = out.rtp.len();
    run(&mut r, &mut out, 91..151);
    let a = dd_sent(&out, SUB_A, mark);
    assert!(!a.is_empty(), "A is sent something");
    assert!(
        a.iter().all(|&(_, t)| t <= 2),
        "A: TID 0 frames only (templates 0-2): {a:?}"
    );
    assert!(layers_sent(&out, SUB_A, mark).iter().all(|&l| l == 0));
    let mut b: Vec<u8> = dd_sent(&out, SUB_B, mark).iter().map(|x| x.1).collect();
    b.sort_unstable();
    b.dedup();
    assert_eq!(b, [0, 2, 3, 5], "B: every frame");
    assert!(r.stats.temporal_skipped > 0);
    // A's stream stays contiguous through what it is not sent.
    let all = dd_sent(&out, SUB_A, 0);
    assert!(
        all.windows(2).all(|w| w[1].0 == w[0].0.wrapping_add(1)),
        "A: sequence numbers one apart: {all:?}"
    );
}
