//! NACKs answered from the history (as RTX where negotiated) within budgets, upstream loss
//! NACKed and repaired, keyframe requests relayed and throttled, reports both ways.

use super::*;

#[test]
fn nacks_are_answered_from_history_once_per_rtt() {
    let (mut r, mut out, now) = router_with(single());
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, now);
    stream(&mut r, &mut out, 1..=5, now);
    let sent = parsed(&out.rtp);
    let lost = sent[2].sequence;
    let lost_ts = sent[2].timestamp;
    let mut nack = [0u8; 64];
    let mut w = rtcp::Writer::new(&mut nack);
    w.nack(99, 0xA, &[lost]).unwrap();
    let n = w.len();
    let mut out2 = Recorder::default();
    r.rtcp(SUB_A, &nack[..n], &mut out2, now);
    assert_eq!(out2.rtp.len(), 1);
    let re = RtpPacket::parse(&out2.rtp[0].1).unwrap();
    assert_eq!(
        (re.ssrc, re.sequence, re.timestamp),
        (0xA, lost, lost_ts),
        "as first sent"
    );
    // The same NACK again within an RTT: not resent.
    r.rtcp(
        SUB_A,
        &nack[..n],
        &mut out2,
        now + Duration::from_millis(10),
    );
    assert_eq!(out2.rtp.len(), 1);
    assert_eq!(
        r.stats.retransmits_refused[Refusal::ResentWithinRtt.index()],
        1
    );
    // A NACK storm is capped by the budget: 300 packets in history, all NACKed at once.
    out.rtp.clear();
    for seq in 6..306u16 {
        r.rtp(
            PUB,
            &vp8(0x5000, seq, u32::from(seq) * 3000, false, None),
            &mut out,
            now,
        );
    }
    let seqs: Vec<u16> = out
        .rtp
        .iter()
        .map(|(_, b)| RtpPacket::parse(b).unwrap().sequence)
        .collect();
    assert_eq!(seqs.len(), 300);
    let mut big = vec![0u8; 8192];
    let mut w = rtcp::Writer::new(&mut big);
    w.nack(99, 0xA, &seqs).unwrap();
    let n = w.len();
    let mut out3 = Recorder::default();
    r.rtcp(
        SUB_A,
        &big[..n],
        &mut out3,
        now + Duration::from_millis(500),
    );
    assert_eq!(
        out3.rtp.len(),
        crate::retransmit::BUDGET_MIN_BURST as usize,
        "bounded by the burst"
    );
    assert_eq!(
        r.stats.retransmits_refused[Refusal::Budget.index()],
        300 - crate::retransmit::BUDGET_MIN_BURST as u64
    );
}

#[test]
fn every_subscriber_that_lost_a_packet_gets_it_resent() {
    // One keyframe packet lost to many subscribers at once (a burst on the shared egress):
    // each one's NACK is answered, not only the first one's.
    let (mut r, mut out, now) = router_with(single());
    let subs: Vec<TransportId> = (0..50).map(|i| TransportId(100 + i)).collect();
    for (i, s) in subs.iter().enumerate() {
        r.command(
            MediaCommand::Subscribe(sub(*s, 0xA000 + i as u32)),
            &mut out,
            now,
        );
    }
    stream(&mut r, &mut out, 1..=5, now);
    let mut resent = Recorder::default();
    for (i, s) in subs.iter().enumerate() {
        let first = out
            .rtp
            .iter()
            .find(|(to, _)| to == s)
            .map(|(_, b)| RtpPacket::parse(b).unwrap().sequence)
            .unwrap();
        let mut nack = [0u8; 64];
        let mut w = rtcp::Writer::new(&mut nack);
        w.nack(99, 0xA000 + i as u32, &[first.wrapping_add(2)])
            .unwrap();
        let n = w.len();
        r.rtcp(*s, &nack[..n], &mut resent, now + Duration::from_millis(5));
    }
    assert_eq!(resent.rtp.len(), subs.len(), "one repair per subscriber");
    assert_eq!(r.stats.retransmits_refused, [0; Refusal::ALL.len()]);
}

#[test]
fn refusals_say_why() {
    let (mut r, mut out, now) = router_with(single());
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, now);
    stream(&mut r, &mut out, 1..=5, now);
    let first = RtpPacket::parse(&out.rtp[0].1).unwrap().sequence;
    let nack = |seq: u16| {
        let mut b = [0u8; 64];
        let mut w = rtcp::Writer::new(&mut b);
        w.nack(99, 0xA, &[seq]).unwrap();
        let n = w.len();
        b[..n].to_vec()
    };
    let mut sink = Recorder::default();
    // Never sent to this subscriber.
    r.rtcp(SUB_A, &nack(first.wrapping_add(100)), &mut sink, now);
    assert_eq!(
        r.stats.retransmits_refused[Refusal::UnknownSequence.index()],
        1
    );
    // Sent, but older than the history keeps.
    r.rtcp(SUB_A, &nack(first), &mut sink, now + Duration::from_secs(5));
    assert_eq!(
        r.stats.retransmits_refused[Refusal::NotInHistory.index()],
        1
    );
    assert!(sink.rtp.is_empty());
}

#[test]
fn subscriber_pli_is_relayed_throttled() {
    let (mut r, mut out, now) = router_with(single());
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, now);
    r.rtp(PUB, &vp8(0x5000, 1, 0, true, None), &mut out, now);
    out.rtcp.clear();
    let mut pli = [0u8; 32];
    let mut w = rtcp::Writer::new(&mut pli);
    w.pli(99, 0xA).unwrap();
    let n = w.len();
    let t = now + Duration::from_secs(1);
    r.rtcp(SUB_A, &pli[..n], &mut out, t);
    r.rtcp(SUB_A, &pli[..n], &mut out, t + Duration::from_millis(100));
    assert_eq!(out.rtcp.len(), 1, "second one within 500 ms is absorbed");
    r.rtcp(SUB_A, &pli[..n], &mut out, t + Duration::from_millis(600));
    assert_eq!(out.rtcp.len(), 2);
    // Garbage RTCP is counted.
    r.rtcp(SUB_A, &[0x80, 201, 0, 9], &mut out, t);
    assert_eq!(r.stats.malformed_rtcp, 1);
}

#[test]
fn a_throttled_keyframe_request_is_retried() {
    let (mut r, mut out, now) = router_with(single());
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, now);
    r.rtp(PUB, &vp8(0x5000, 1, 0, true, None), &mut out, now);
    // A asks again 100 ms later, right after the keyframe its first request produced.
    let mut pli = [0u8; 32];
    let mut w = rtcp::Writer::new(&mut pli);
    w.pli(99, 0xA).unwrap();
    let n = w.len();
    let t = now + Duration::from_millis(100);
    r.rtcp(SUB_A, &pli[..n], &mut out, t);
    assert_eq!(plis(&out), 1, "throttled");
    assert_eq!(r.stats.plis_coalesced, 1);
    r.timeout(&mut out, t + Duration::from_millis(200));
    assert_eq!(plis(&out), 1, "still inside the interval");
    r.timeout(&mut out, now + PLI_INTERVAL);
    assert_eq!(plis(&out), 2, "asked again when the interval ended");
}

#[test]
fn publishers_get_receiver_reports_and_remb() {
    let (mut r, mut out, now) = router_with(single());
    for seq in [1u16, 2, 3, 5, 6] {
        r.rtp(PUB, &vp8(0x5000, seq, 0, true, None), &mut out, now);
    }
    r.timeout(&mut out, now);
    // The reports, then a NACK for the missing packet (the next test's subject).
    let [(to, pkt), (_, nack)] = &out.rtcp[..] else {
        panic!("{:?}", out.rtcp)
    };
    assert_eq!(*to, PUB);
    assert!(matches!(
        rtcp::read(nack).next(),
        Some(Ok(Rtcp::Nack { .. }))
    ));
    let pkts: Vec<Rtcp<'_>> = rtcp::read(pkt).map(Result::unwrap).collect();
    let Rtcp::ReceiverReport { reports, .. } = pkts[0] else {
        panic!("{:?}", pkts[0])
    };
    let b: Vec<rtcp::ReportBlock> = reports.collect();
    assert_eq!(
        (b[0].ssrc, b[0].cumulative_lost),
        (0x5000, 1),
        "seq 4 missing"
    );
    assert_eq!(b[0].fraction_lost, (256 / 6) as u8);
    let Rtcp::Remb { bitrate_bps, .. } = pkts[1] else {
        panic!("{:?}", pkts[1])
    };
    assert!(bitrate_bps > 2_900_000);
    // Not again before the interval (the NACK is retried meanwhile).
    r.timeout(&mut out, now + Duration::from_millis(500));
    let reports = out
        .rtcp
        .iter()
        .filter(|(_, b)| matches!(rtcp::read(b).next(), Some(Ok(Rtcp::ReceiverReport { .. }))))
        .count();
    assert_eq!(reports, 1);
}

/// An RTX packet (payload type 97) repairing `osn`: the original sequence number, then a
/// VP8 delta-frame payload. Extensions: MID (4) and repaired-RID (11), when given.
fn rtx(ssrc: u32, seq: u16, osn: u16, ts: u32, mid_rrid: Option<(&str, &str)>) -> Vec<u8> {
    let mut p = vec![0x80, 97];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    if let Some((mid, rrid)) = mid_rrid {
        p[0] |= 0x10;
        let mut ext = vec![0x40 | (mid.len() as u8 - 1)];
        ext.extend_from_slice(mid.as_bytes());
        ext.push(0xB0 | (rrid.len() as u8 - 1));
        ext.extend_from_slice(rrid.as_bytes());
        while ext.len() % 4 != 0 {
            ext.push(0);
        }
        p.extend_from_slice(&[0xBE, 0xDE]);
        p.extend_from_slice(&((ext.len() / 4) as u16).to_be_bytes());
        p.extend_from_slice(&ext);
    }
    p.extend_from_slice(&osn.to_be_bytes());
    p.extend_from_slice(&[0x10, 0x01, 0x9D, 0x01, 0x2A]);
    p
}

/// The NACKed sequence numbers in the RTCP sent to `to`.
fn nacked(out: &Recorder, to: TransportId) -> Vec<u16> {
    out.rtcp
        .iter()
        .filter(|(t, _)| *t == to)
        .flat_map(|(_, b)| rtcp::read(b).collect::<Vec<_>>())
        .filter_map(|p| match p {
            Ok(Rtcp::Nack { items, .. }) => Some(items.lost().collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn nacks_are_answered_with_rtx_where_the_subscriber_negotiated_it() {
    let (mut r, mut out, now) = router_with(single());
    r.command(
        MediaCommand::Subscribe(with_rtx(sub(SUB_A, 0xA))),
        &mut out,
        now,
    );
    stream(&mut r, &mut out, 1..=4, now);
    let sent = parsed(&out.rtp);
    let mut out2 = Recorder::default();
    r.rtcp(
        SUB_A,
        &nack_datagram(0xA, &[sent[1].sequence, sent[2].sequence]),
        &mut out2,
        now,
    );
    let repairs: Vec<RtpPacket<'_>> = out2
        .rtp
        .iter()
        .map(|(_, b)| RtpPacket::parse(b).unwrap())
        .collect();
    assert_eq!(repairs.len(), 2);
    for (i, (re, orig)) in repairs.iter().zip(&sent[1..3]).enumerate() {
        assert_eq!((re.ssrc, re.payload_type), (0xB, 101), "the RTX stream");
        assert_eq!(
            re.sequence,
            0xBu16.wrapping_add(i as u16),
            "its own numbering"
        );
        assert_eq!(re.timestamp, orig.timestamp);
        assert_eq!(re.payload[..2], orig.sequence.to_be_bytes(), "OSN first");
        assert_eq!(&re.payload[2..], orig.payload);
    }
}

#[test]
fn upstream_loss_is_nacked_and_the_rtx_repair_fills_the_hole() {
    let encodings = vec![EncodingConfig {
        rid: None,
        ssrc: Some(0x5000),
        rtx_ssrc: Some(0x5001),
    }];
    let (mut r, mut out, now) = router_with(encodings);
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, now);
    for seq in [1u16, 2, 4] {
        r.rtp(
            PUB,
            &vp8(0x5000, seq, u32::from(seq) * 3000, seq == 1, None),
            &mut out,
            now,
        );
    }
    assert_eq!(out.rtp.len(), 3);
    let first = RtpPacket::parse(&out.rtp[0].1).unwrap().sequence;
    assert_eq!(r.wake_at(), Some(now), "the gap wants the timer at once");
    out.rtcp.clear();
    r.timeout(&mut out, now);
    assert_eq!(r.wake_at(), None);
    assert_eq!(nacked(&out, PUB), [3], "the publisher is asked for 3");
    // Not again within the retry interval.
    r.timeout(&mut out, now + Duration::from_millis(5));
    assert_eq!(nacked(&out, PUB), [3]);
    // The repair arrives on the RTX SSRC: unwrapped and forwarded in its place.
    let later = now + Duration::from_millis(30);
    r.rtp(PUB, &rtx(0x5001, 900, 3, 9000, None), &mut out, later);
    let re = RtpPacket::parse(&out.rtp[3].1).unwrap();
    assert_eq!(
        (re.ssrc, re.payload_type, re.sequence),
        (0xA, 100, first.wrapping_add(2))
    );
    assert_eq!(re.payload, &[0x10, 0x01, 0x9D, 0x01, 0x2A]);
    assert_eq!(r.stats.rtx_in, 1);
    // A second copy is a duplicate; an RTX without media is a probe.
    r.rtp(PUB, &rtx(0x5001, 901, 3, 9000, None), &mut out, later);
    let mut probe = rtx(0x5001, 902, 0, 0, None);
    probe.truncate(12);
    r.rtp(PUB, &probe, &mut out, later);
    assert_eq!(out.rtp.len(), 4);
    assert_eq!((r.stats.duplicates, r.stats.rtx_padding), (1, 1));
    // Repaired: no more NACKs for it.
    out.rtcp.clear();
    r.timeout(&mut out, later + Duration::from_millis(100));
    assert!(nacked(&out, PUB).is_empty());
}

#[test]
fn unsignalled_rtx_is_learned_from_mid_and_repaired_rid() {
    let layers = ["q", "f"]
        .iter()
        .map(|rid| EncodingConfig {
            rid: Some((*rid).into()),
            ssrc: None,
            rtx_ssrc: None,
        })
        .collect();
    let (mut r, mut out, now) = router_with(layers);
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, now);
    for seq in [1u16, 3] {
        r.rtp(
            PUB,
            &vp8(0x5F, seq, 0, seq == 1, Some(("1", "f"))),
            &mut out,
            now,
        );
    }
    r.rtp(PUB, &rtx(0x6F, 1, 2, 0, Some(("1", "f"))), &mut out, now);
    assert_eq!(r.stats.rtx_in, 1);
    let seqs: Vec<u16> = out
        .rtp
        .iter()
        .map(|(_, b)| RtpPacket::parse(b).unwrap().sequence)
        .collect();
    assert_eq!(seqs, [1, 3, 2], "the repair takes its original place");
    // Known by SSRC from now on, even without the extensions.
    r.rtp(PUB, &rtx(0x6F, 2, 3, 0, None), &mut out, now);
    assert_eq!(r.stats.duplicates, 1);
}

#[test]
fn sender_reports_are_rewritten_and_receiver_reports_give_the_rtt() {
    let (mut r, mut out, now) = router_with(single());
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, now);
    for seq in 1..=2u16 {
        r.rtp(
            PUB,
            &vp8(0x5000, seq, 1000 + u32::from(seq) * 3000, seq == 1, None),
            &mut out,
            now,
        );
    }
    let last_ts = RtpPacket::parse(&out.rtp[1].1).unwrap().timestamp;
    let payload_bytes: usize = out
        .rtp
        .iter()
        .map(|(_, b)| RtpPacket::parse(b).unwrap().payload.len())
        .sum();
    out.rtcp.clear();
    let ntp: u64 = 0xE000_0000_1234_5678;
    let mut b = [0u8; 64];
    let mut w = rtcp::Writer::new(&mut b);
    w.sender_report(0x5000, ntp, 1000 + 2 * 3000, 2, 10)
        .unwrap();
    let n = w.len();
    r.rtcp(PUB, &b[..n], &mut out, now);
    let [(to, sr)] = &out.rtcp[..] else {
        panic!("{:?}", out.rtcp)
    };
    assert_eq!(*to, SUB_A);
    let Some(Ok(Rtcp::SenderReport {
        ssrc,
        ntp: n2,
        rtp_ts,
        packets,
        octets,
        ..
    })) = rtcp::read(sr).next()
    else {
        panic!("{sr:?}")
    };
    assert_eq!((ssrc, n2, rtp_ts), (0xA, ntp, last_ts));
    assert_eq!((packets, octets as usize), (2, payload_bytes));
    // The subscriber's report 60 ms later, having held the SR for 10 ms: RTT 50 ms.
    let block = rtcp::ReportBlock {
        ssrc: 0xA,
        fraction_lost: 0,
        cumulative_lost: 0,
        highest_seq: 2,
        jitter: 0,
        last_sr: (ntp >> 16) as u32,
        delay_since_last_sr: 655,
    };
    let mut b = [0u8; 64];
    let mut w = rtcp::Writer::new(&mut b);
    w.receiver_report(0x77, &[block]).unwrap();
    let n = w.len();
    r.rtcp(SUB_A, &b[..n], &mut out, now + Duration::from_millis(60));
    let rtt = r.subscriber_rtt(TrackId(10), SUB_A).unwrap();
    assert!(
        rtt >= Duration::from_millis(49) && rtt <= Duration::from_millis(51),
        "{rtt:?}"
    );
}
