//! New subscribers wait for a keyframe (from the history when one is recent), numbering stays
//! continuous across mutes, and transports that go away are forgotten.

use super::*;

#[test]
fn new_subscriber_waits_for_a_keyframe_and_asks_for_one() {
    let (mut r, mut out, now) = router_with(single());
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA0A0)), &mut out, now);
    // PLI to the publisher for its SSRC.
    let [(to, pli)] = &out.rtcp[..] else {
        panic!("{:?}", out.rtcp)
    };
    assert_eq!(*to, PUB);
    assert!(matches!(
        rtcp::read(pli).next(),
        Some(Ok(Rtcp::Pli {
            media_ssrc: 0x5000,
            ..
        }))
    ));
    r.rtp(PUB, &vp8(0x5000, 100, 1000, false, None), &mut out, now);
    assert!(
        out.rtp.is_empty(),
        "delta frame before the keyframe is gated"
    );
    r.rtp(PUB, &vp8(0x5000, 101, 4000, true, None), &mut out, now);
    r.rtp(PUB, &vp8(0x5000, 102, 4000, false, None), &mut out, now);
    assert_eq!(out.rtp.len(), 2);
    let p = RtpPacket::parse(&out.rtp[0].1).unwrap();
    assert_eq!((p.ssrc, p.payload_type), (0xA0A0, 100));
    let q = RtpPacket::parse(&out.rtp[1].1).unwrap();
    assert_eq!(q.sequence, p.sequence.wrapping_add(1));
    // abs-send-time kept with the subscriber's id, nothing else.
    let exts: Vec<u8> = q.extensions().map(|e| e.id).collect();
    assert_eq!(exts, [7]);
    assert_eq!(r.stats.gated, 1);
}

#[test]
fn two_subscribers_get_their_own_ssrc_and_numbering() {
    let (mut r, mut out, now) = router_with(single());
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, now);
    r.rtp(PUB, &vp8(0x5000, 1, 0, true, None), &mut out, now);
    r.rtp(PUB, &vp8(0x5000, 2, 3000, false, None), &mut out, now);
    let later = now + Duration::from_secs(1);
    r.command(MediaCommand::Subscribe(sub(SUB_B, 0xB)), &mut out, later);
    r.rtp(PUB, &vp8(0x5000, 3, 6000, true, None), &mut out, later);
    let to_a: Vec<_> = out.rtp.iter().filter(|(t, _)| *t == SUB_A).collect();
    let to_b: Vec<_> = out.rtp.iter().filter(|(t, _)| *t == SUB_B).collect();
    assert_eq!((to_a.len(), to_b.len()), (3, 1));
    assert_eq!(RtpPacket::parse(&to_b[0].1).unwrap().ssrc, 0xB);
}

#[test]
fn mute_pauses_and_unmute_resumes_contiguously_from_a_keyframe() {
    let (mut r, mut out, now) = router_with(single());
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, now);
    r.rtp(PUB, &vp8(0x5000, 1, 0, true, None), &mut out, now);
    r.command(
        MediaCommand::SetMuted {
            track: TrackId(10),
            muted: true,
        },
        &mut out,
        now,
    );
    r.rtp(PUB, &vp8(0x5000, 2, 3000, false, None), &mut out, now);
    assert_eq!(out.rtp.len(), 1, "muted: nothing forwarded");
    let later = now + Duration::from_secs(2);
    r.command(
        MediaCommand::SetMuted {
            track: TrackId(10),
            muted: false,
        },
        &mut out,
        later,
    );
    r.rtp(PUB, &vp8(0x5000, 50, 150_000, false, None), &mut out, later);
    r.rtp(PUB, &vp8(0x5000, 51, 153_000, true, None), &mut out, later);
    assert_eq!(out.rtp.len(), 2);
    let a = RtpPacket::parse(&out.rtp[0].1).unwrap();
    let b = RtpPacket::parse(&out.rtp[1].1).unwrap();
    assert_eq!(
        b.sequence,
        a.sequence.wrapping_add(1),
        "no gap after the mute"
    );
    let dt = b.timestamp.wrapping_sub(a.timestamp);
    assert!(
        (179_000..=181_000).contains(&dt),
        "timestamp advanced by the 2 s pause: {dt}"
    );
}

#[test]
fn removing_a_transport_forgets_its_tracks_and_subscriptions() {
    let (mut r, mut out, now) = router_with(single());
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, now);
    r.transport_removed(SUB_A);
    r.rtp(PUB, &vp8(0x5000, 1, 0, true, None), &mut out, now);
    assert!(out.rtp.is_empty());
    r.transport_removed(PUB);
    r.rtp(PUB, &vp8(0x5000, 2, 0, true, None), &mut out, now);
    assert_eq!(r.stats.unknown_stream, 1);
}

#[test]
fn a_newcomer_starts_from_a_recent_keyframe_without_a_pli() {
    let (mut r, mut out, now) = router_with(single());
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, now);
    stream(&mut r, &mut out, 1..=3, now);
    assert_eq!(plis(&out), 1);
    // B joins 100 ms after the keyframe: it gets the keyframe and what followed, at once.
    let t = now + Duration::from_millis(100);
    out.rtp.clear();
    r.command(MediaCommand::Subscribe(sub(SUB_B, 0xB)), &mut out, t);
    let sent_b = out.rtp.clone();
    let to_b: Vec<RtpPacket<'_>> = parsed(&sent_b);
    assert_eq!(to_b.len(), 3, "{:?}", out.rtp);
    assert!(out.rtp.iter().all(|(to, _)| *to == SUB_B));
    assert!(starts_keyframe(CodecName::Vp8, to_b[0].payload));
    assert_eq!(to_b[1].sequence, to_b[0].sequence.wrapping_add(1));
    assert_eq!(plis(&out), 1, "no keyframe asked for B");
    assert_eq!(r.stats.keyframe_replays, 1);
    // Live packets continue B's numbering.
    out.rtp.clear();
    r.rtp(PUB, &vp8(0x5000, 4, 12_000, false, None), &mut out, t);
    let b_live = out.rtp.iter().find(|(to, _)| *to == SUB_B).unwrap();
    assert_eq!(
        RtpPacket::parse(&b_live.1).unwrap().sequence,
        to_b[2].sequence.wrapping_add(1)
    );
    // C joins when the keyframe is too old to replay: the publisher is asked.
    let late = now + KEYFRAME_REPLAY_AGE + Duration::from_millis(1);
    out.rtp.clear();
    r.command(
        MediaCommand::Subscribe(sub(TransportId(9), 0xC)),
        &mut out,
        late,
    );
    assert!(out.rtp.is_empty());
    assert_eq!(plis(&out), 2);
}

#[test]
fn a_join_storm_costs_the_publisher_one_keyframe() {
    let (mut r, mut out, now) = router_with(single());
    let joiners: Vec<TransportId> = (0..300).map(|i| TransportId(100 + i)).collect();
    for (i, j) in joiners.iter().enumerate() {
        out.not_connected.push(*j);
        let at = now + Duration::from_millis(i as u64);
        r.command(
            MediaCommand::Subscribe(sub(*j, 0xA000 + i as u32)),
            &mut out,
            at,
        );
    }
    // The keyframe the first request produced arrives while their DTLS is still going.
    let t = now + Duration::from_millis(300);
    stream(&mut r, &mut out, 1..=5, t);
    out.not_connected.clear();
    for (i, j) in joiners.iter().enumerate() {
        r.transport_connected(*j, &mut out, t + Duration::from_millis(i as u64));
    }
    assert_eq!(plis(&out), 1, "one PLI for 300 joiners");
    assert_eq!(r.stats.keyframe_replays, 300);
    for j in &joiners {
        let first = out.rtp.iter().find(|(to, _)| to == j).unwrap();
        let p = RtpPacket::parse(&first.1).unwrap();
        assert!(
            starts_keyframe(CodecName::Vp8, p.payload),
            "{j:?} starts on a keyframe"
        );
    }
}

#[test]
fn the_gate_opens_only_on_a_keyframe_that_was_sent() {
    let (mut r, mut out, now) = router_with(single());
    out.not_connected.push(SUB_A);
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, now);
    // The keyframe arrives before the subscriber's DTLS is done: lost for it.
    r.rtp(PUB, &vp8(0x5000, 1, 0, true, None), &mut out, now);
    out.not_connected.clear();
    // Connected now, when that keyframe is too old to replay: a delta frame must still be
    // gated, and a keyframe is asked for.
    let later = now + KEYFRAME_REPLAY_AGE.max(PLI_INTERVAL) + Duration::from_millis(1);
    r.transport_connected(SUB_A, &mut out, later);
    assert_eq!(plis(&out), 2, "PLI at subscribe, PLI on connect");
    r.rtp(PUB, &vp8(0x5000, 2, 3000, false, None), &mut out, later);
    assert!(out.rtp.is_empty());
    r.rtp(PUB, &vp8(0x5000, 3, 6000, true, None), &mut out, later);
    assert_eq!(out.rtp.len(), 1);
}
