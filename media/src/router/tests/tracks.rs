//! Simulcast SSRCs learned from MID/RID, subscribers following the layers that flow, and
//! active speakers from audio levels.

use super::*;

#[test]
fn simulcast_ssrcs_are_learned_from_mid_and_rid() {
    let layers = vec![
        EncodingConfig {
            rid: Some("q".into()),
            ssrc: None,
            rtx_ssrc: None,
        },
        EncodingConfig {
            rid: Some("h".into()),
            ssrc: None,
            rtx_ssrc: None,
        },
        EncodingConfig {
            rid: Some("f".into()),
            ssrc: None,
            rtx_ssrc: None,
        },
    ];
    let (mut r, mut out, now) = router_with(layers);
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA0A0)), &mut out, now);
    assert!(out.rtcp.is_empty(), "no SSRC known yet: the PLI waits");
    // The full layer's first packet names its mid and rid: learned, and the pending PLI goes.
    r.rtp(
        PUB,
        &vp8(0x7F, 1, 0, false, Some(("1", "f"))),
        &mut out,
        now,
    );
    assert!(matches!(
        rtcp::read(&out.rtcp[0].1).next(),
        Some(Ok(Rtcp::Pli {
            media_ssrc: 0x7F,
            ..
        }))
    ));
    // Later packets carry no MID/RID: found by SSRC.
    r.rtp(PUB, &vp8(0x7F, 2, 3000, true, None), &mut out, now);
    assert_eq!(out.rtp.len(), 1);
    // Other layers are not sent to this subscriber.
    r.rtp(PUB, &vp8(0x3F, 1, 0, true, Some(("1", "q"))), &mut out, now);
    assert_eq!(out.rtp.len(), 1);
    // An unknown stream is counted.
    r.rtp(PUB, &vp8(0x99, 1, 0, true, None), &mut out, now);
    assert_eq!(r.stats.unknown_stream, 1);
}

/// An Opus packet with the audio-level extension (id 1) at `level` -dBov.
fn opus(seq: u16, level: u8) -> Vec<u8> {
    let mut p = vec![0x90, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&0x7000u32.to_be_bytes());
    p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0x80 | level, 0, 0]);
    p.extend_from_slice(&[0xFC, 0xFF, 0xFE]);
    p
}

#[test]
fn active_speakers_follow_the_audio_level() {
    use std::sync::{Arc, Mutex};
    let reports: Arc<Mutex<Vec<Vec<TrackId>>>> = Arc::default();
    let sink = reports.clone();
    let mut r = MediaRouter::with_speaker_sink(Box::new(move |s: &[(TrackId, f32)]| {
        sink.lock()
            .unwrap()
            .push(s.iter().map(|(t, _)| *t).collect());
    }));
    let mut out = Recorder::default();
    let t0 = Instant::now();
    r.command(
        MediaCommand::AddTrack(TrackConfig {
            id: TrackId(20),
            publisher: PUB,
            codec: CodecName::Opus,
            clock_rate: 48_000,
            payload_type: 111,
            rtx_payload_type: None,
            mid: "0".into(),
            mid_ext: None,
            rid_ext: None,
            rrid_ext: None,
            transport_cc_ext: None,
            source: Default::default(),
            forwarded_exts: vec![(1, ForwardedExt::AudioLevel)],
            encodings: vec![EncodingConfig {
                rid: None,
                ssrc: Some(0x7000),
                rtx_ssrc: None,
            }],
        }),
        &mut out,
        t0,
    );
    let mut seq = 0u16;
    let mut interval = |r: &mut MediaRouter, out: &mut Recorder, i: u32, level: u8| {
        for _ in 0..10 {
            seq += 1;
            r.rtp(PUB, &opus(seq, level), out, t0);
        }
        r.timeout(out, t0 + SPEAKER_INTERVAL * i);
    };
    interval(&mut r, &mut out, 0, 127);
    assert!(
        reports.lock().unwrap().is_empty(),
        "silence: nothing changed"
    );
    interval(&mut r, &mut out, 1, 20);
    assert_eq!(*reports.lock().unwrap(), [vec![TrackId(20)]]);
    interval(&mut r, &mut out, 2, 20);
    assert_eq!(reports.lock().unwrap().len(), 1, "reported on change only");
    for i in 3..20 {
        interval(&mut r, &mut out, i, 127);
    }
    assert_eq!(
        *reports.lock().unwrap(),
        [vec![TrackId(20)], vec![]],
        "then quiet"
    );
}

pub(super) fn three_layers() -> Vec<EncodingConfig> {
    ["q", "h", "f"]
        .iter()
        .map(|rid| EncodingConfig {
            rid: Some((*rid).into()),
            ssrc: None,
            rtx_ssrc: None,
        })
        .collect()
}

/// The SSRCs of the PLIs sent.
fn pli_ssrcs(out: &Recorder) -> Vec<u32> {
    out.rtcp
        .iter()
        .flat_map(|(_, b)| rtcp::read(b).collect::<Vec<_>>())
        .filter_map(|p| match p {
            Ok(Rtcp::Pli { media_ssrc, .. }) => Some(media_ssrc),
            _ => None,
        })
        .collect()
}

#[test]
fn subscribers_follow_the_simulcast_layers_that_flow() {
    let (mut r, mut out, t0) = router_with(three_layers());
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, t0);
    // 30 frames/s of one packet each; `layers` says which layers send, `key` on which frame.
    let mut seq = [0u16; 3];
    let mut frame = 0u32;
    let mut run = |r: &mut MediaRouter, out: &mut Recorder, ms: u32, layers: &[usize], key: u32| {
        for _ in 0..ms / 33 {
            frame += 1;
            let now = t0 + Duration::from_millis(u64::from(frame) * 33);
            for &l in layers {
                seq[l] += 1;
                let (ssrc, rid) = [(0x10, "q"), (0x20, "h"), (0x30, "f")][l];
                let p = vp8(
                    ssrc,
                    seq[l],
                    frame * 3000,
                    frame.is_multiple_of(key),
                    Some(("1", rid)),
                );
                r.rtp(PUB, &p, out, now);
            }
            r.timeout(out, now);
        }
    };
    // Only q and h flow (Chromium before its estimate allows f): the subscriber, pointed at f
    // while nothing was known, moves to h at once and opens on h's keyframe.
    run(&mut r, &mut out, 700, &[0, 1], 10);
    assert!(pli_ssrcs(&out).contains(&0x20), "{:?}", pli_ssrcs(&out));
    let got: Vec<RtpPacket<'_>> = parsed(&out.rtp);
    assert!(!got.is_empty());
    assert!(got.iter().all(|p| p.ssrc == 0xA));
    // f starts; after a second of it flowing the subscriber moves up on f's keyframe.
    out.rtp.clear();
    out.rtcp.clear();
    run(&mut r, &mut out, 1600, &[0, 1, 2], 10);
    assert!(pli_ssrcs(&out).contains(&0x30));
    assert_eq!(r.stats.layer_switches, 1);
    // f pauses: within LAYER_TIMEOUT plus a keyframe, back to h.
    run(&mut r, &mut out, 1000, &[0, 1], 10);
    assert_eq!(r.stats.layer_switches, 2);
    // Through it all one contiguous stream: no gap, no repeat.
    let seqs: Vec<u16> = parsed(&out.rtp).iter().map(|p| p.sequence).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "{seqs:?}"
    );
}
