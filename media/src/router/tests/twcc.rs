//! Transport-wide congestion control both ways. Publishers: every packet with a transport-wide
//! sequence number is accounted for, once, at the interval. Subscribers: everything sent
//! carries the transport's next number, and their feedback (or REMB) drives the estimate.

use ringcast_cc::twcc::{ArrivalRecorder, Feedback};

use super::*;

/// A VP8 packet of stream `ssrc` carrying transport-wide sequence number `twcc` (id 3).
fn with_twcc(ssrc: u32, seq: u16, twcc: u16) -> Vec<u8> {
    let mut p = vec![0x90, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xBE, 0xDE, 0, 1]);
    p.push((fixtures::TRANSPORT_CC_EXT << 4) | 1);
    p.extend_from_slice(&twcc.to_be_bytes());
    p.push(0);
    p.extend_from_slice(&[0x10, 0x01, 0x9D, 0x01, 0x2A]);
    p
}

/// The transport-wide feedback messages among what went to `to`.
fn feedback(out: &Recorder, to: TransportId) -> Vec<Vec<u8>> {
    out.rtcp
        .iter()
        .filter(|(t, b)| *t == to && Feedback::parse(b).is_ok())
        .map(|(_, b)| b.clone())
        .collect()
}

#[test]
fn publishers_get_transport_wide_feedback_for_every_packet() {
    let (mut r, mut out, t0) = router_with(single());
    // 100..=110 sent 1 ms apart; 104 is lost, 110 is a probe on an unknown SSRC (padding on
    // a stream the router does not forward still counts).
    for twcc in (100u16..=109).filter(|&s| s != 104) {
        let at = t0 + Duration::from_millis(u64::from(twcc - 100));
        r.rtp(PUB, &with_twcc(0x5000, twcc, twcc), &mut out, at);
    }
    r.rtp(
        PUB,
        &with_twcc(0x9999, 1, 110),
        &mut out,
        t0 + Duration::from_millis(10),
    );
    // The first arrival schedules feedback (the lost media packet's NACK may come sooner).
    let due = t0 + TWCC_INTERVAL;
    assert!(r.wake_at().is_some_and(|w| w <= due));
    assert!(r.poll_timeout().is_some_and(|t| t <= due));
    r.timeout(&mut out, t0 + Duration::from_millis(50));
    assert!(feedback(&out, PUB).is_empty(), "not before the interval");

    r.timeout(&mut out, due);
    let sent = feedback(&out, PUB);
    assert_eq!(sent.len(), 1);
    let fb = Feedback::parse(&sent[0]).unwrap();
    assert_eq!((fb.sender_ssrc(), fb.media_ssrc()), (ROUTER_SSRC, 0x5000));
    assert_eq!((fb.base_seq(), fb.status_count()), (100, 11));
    let got: Vec<(u16, Option<i64>)> = fb.packets().map(|p| (p.seq, p.received)).collect();
    assert_eq!(got.iter().filter(|p| p.1.is_none()).count(), 1);
    assert_eq!(got[4], (104, None));
    // Arrivals 1 ms apart (the recorder keeps µs; the message has 250 µs steps).
    let times: Vec<i64> = got.iter().filter_map(|p| p.1).collect();
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], if w[0] == times[3] { 2000 } else { 1000 });
    }
    assert_eq!(r.stats.twcc_feedback_sent, 1);

    // Nothing new: nothing sent, nothing scheduled.
    r.timeout(&mut out, due + TWCC_INTERVAL);
    assert_eq!(feedback(&out, PUB).len(), 1);
    // The next arrival starts the next message where this one ended.
    r.rtp(
        PUB,
        &with_twcc(0x5000, 111, 111),
        &mut out,
        due + TWCC_INTERVAL,
    );
    r.timeout(&mut out, due + 2 * TWCC_INTERVAL);
    let sent = feedback(&out, PUB);
    let next = Feedback::parse(&sent[1]).unwrap();
    assert_eq!((next.base_seq(), next.status_count()), (111, 1));
    assert_eq!(next.feedback_count(), fb.feedback_count().wrapping_add(1));
}

#[test]
fn no_feedback_without_transport_cc_or_after_the_transport_left() {
    let mut track = video_track(single());
    track.transport_cc_ext = None;
    let (mut r, mut out, t0) = router_with_track(track);
    r.rtp(PUB, &with_twcc(0x5000, 1, 1), &mut out, t0);
    r.timeout(&mut out, t0 + TWCC_INTERVAL);
    assert!(feedback(&out, PUB).is_empty(), "not negotiated");

    let (mut r, mut out, t0) = router_with(single());
    r.rtp(PUB, &with_twcc(0x5000, 1, 1), &mut out, t0);
    r.transport_removed(PUB);
    r.timeout(&mut out, t0 + TWCC_INTERVAL);
    assert!(feedback(&out, PUB).is_empty(), "the publisher left");
}

/// The transport-wide sequence number a subscriber's packet carries (id 3), if any.
fn stamped(b: &[u8]) -> Option<u16> {
    let p = RtpPacket::parse(b).unwrap();
    p.extension(3).map(|d| u16::from_be_bytes([d[0], d[1]]))
}

#[test]
fn subscribers_get_one_sequence_across_streams_and_repairs() {
    let (mut r, mut out, t0) = router_with(single());
    let mut a = with_rtx(sub(SUB_A, 0xA));
    a.transport_cc_ext = Some(3);
    r.command(MediaCommand::Subscribe(a), &mut out, t0);
    r.command(MediaCommand::Subscribe(sub(SUB_B, 0xB)), &mut out, t0);
    // A packet that is not sent (no keys yet) takes no number: no gap the subscriber would
    // read as loss.
    out.not_connected.push(SUB_A);
    stream(&mut r, &mut out, 1..=1, t0);
    out.not_connected.clear();
    r.transport_connected(SUB_A, &mut out, t0);
    stream(&mut r, &mut out, 2..=4, t0);
    let to = |out: &Recorder, who| -> Vec<Option<u16>> {
        out.rtp
            .iter()
            .filter(|(t, _)| *t == who)
            .map(|(_, b)| stamped(b))
            .collect()
    };
    let a_seqs = to(&out, SUB_A);
    assert_eq!(
        a_seqs,
        [Some(0), Some(1), Some(2), Some(3)],
        "the replayed keyframe, then 2..=4"
    );
    assert!(
        to(&out, SUB_B).iter().all(Option::is_none),
        "B did not negotiate it"
    );
    // A repair (RTX) continues the same sequence.
    let first = parsed(&out.rtp)
        .iter()
        .find(|p| p.ssrc == 0xA)
        .map(|p| p.sequence)
        .unwrap();
    r.rtcp(SUB_A, &nack_datagram(0xA, &[first]), &mut out, t0);
    let last = out.rtp.iter().rev().find(|(t, _)| *t == SUB_A).unwrap();
    assert_eq!(
        RtpPacket::parse(&last.1).unwrap().ssrc,
        with_rtx(sub(SUB_A, 0xA)).rtx.unwrap().ssrc
    );
    assert_eq!(stamped(&last.1), Some(4));
    // Each stamped packet is told to the egress with its number, right after it is sent (a
    // pacer that holds one reports when it left).
    assert_eq!(
        out.transport_seqs,
        (0..=4).map(|s| (SUB_A, s)).collect::<Vec<_>>()
    );
}

#[test]
fn subscriber_feedback_and_remb_drive_their_estimates() {
    let (mut r, mut out, t0) = router_with(single());
    let mut a = sub(SUB_A, 0xA);
    a.transport_cc_ext = Some(3);
    r.command(MediaCommand::Subscribe(a), &mut out, t0);
    r.command(MediaCommand::Subscribe(sub(SUB_B, 0xB)), &mut out, t0);
    assert_eq!(
        r.subscriber_estimate(SUB_A),
        Some(1_000_000),
        "the starting estimate"
    );
    assert_eq!(
        r.subscriber_estimate(SUB_B),
        None,
        "nothing measures B yet: no estimator"
    );
    // A: its arrivals, fed back as its browser would, 1 ms after each send.
    let mut rec = ArrivalRecorder::new(0xA0, 0xA, 256);
    for seq in 1..=40u16 {
        let at = t0 + Duration::from_millis(u64::from(seq) * 5);
        let before = out.rtp.len();
        stream(&mut r, &mut out, seq..=seq, at);
        for (_, b) in out.rtp[before..].iter().filter(|(t, _)| *t == SUB_A) {
            rec.on_packet(stamped(b).unwrap(), at + Duration::from_millis(1));
        }
    }
    let mut buf = [0u8; 1200];
    let n = rec.poll_feedback(&mut buf).unwrap().unwrap();
    r.rtcp(SUB_A, &buf[..n], &mut out, t0 + Duration::from_millis(250));
    assert_eq!(r.stats.twcc_feedback_received, 1);
    assert_eq!(r.stats.malformed_rtcp, 0);
    // B: REMB only.
    let mut remb = [0u8; 64];
    let mut w = rtcp::Writer::new(&mut remb);
    w.remb(0xB0, 450_000, &[0xB]).unwrap();
    let n = w.len();
    r.rtcp(SUB_B, &remb[..n], &mut out, t0);
    assert_eq!(r.subscriber_estimate(SUB_B), Some(450_000));
    // Gone with the transport.
    r.transport_removed(SUB_B);
    assert_eq!(r.subscriber_estimate(SUB_B), None);
}
