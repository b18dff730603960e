//! Router scenarios with a recording egress: what each subscriber receives.

use super::*;
use crate::fixtures;
use crate::keyframe::starts_keyframe;
use crate::retransmit::Refusal;
use crate::rtcp::{self, Rtcp};
use crate::rtp::RtpPacket;
use ringcast_types::CodecName;

#[derive(Default)]
struct Recorder {
    rtp: Vec<(TransportId, Vec<u8>)>,
    rtcp: Vec<(TransportId, Vec<u8>)>,
    /// Transports without keys yet: sends to them fail.
    not_connected: Vec<TransportId>,
}

impl Egress for Recorder {
    fn send_rtp(&mut self, to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        if self.not_connected.contains(&to) {
            return false;
        }
        let mut buf = [0u8; 2048];
        let n = write(&mut buf);
        self.rtp.push((to, buf[..n].to_vec()));
        n > 0
    }

    fn send_rtcp(&mut self, to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let mut buf = [0u8; 2048];
        let n = write(&mut buf);
        self.rtcp.push((to, buf[..n].to_vec()));
        n > 0
    }
}

/// PLIs among the RTCP sent.
fn plis(out: &Recorder) -> usize {
    out.rtcp
        .iter()
        .flat_map(|(_, b)| rtcp::read(b).collect::<Vec<_>>())
        .filter(|p| matches!(p, Ok(Rtcp::Pli { .. })))
        .count()
}

const PUB: TransportId = TransportId(1);
const SUB_A: TransportId = TransportId(2);
const SUB_B: TransportId = TransportId(3);

fn video_track(encodings: Vec<EncodingConfig>) -> TrackConfig {
    fixtures::vp8_track(TrackId(10), PUB, encodings)
}

fn sub(subscriber: TransportId, ssrc: u32) -> SubscriptionConfig {
    fixtures::subscription(TrackId(10), subscriber, ssrc, false)
}

/// A VP8 packet; `key` makes it the start of a keyframe. Extensions: abs-send-time (id 2),
/// optionally MID (4) and RID (10).
fn vp8(ssrc: u32, seq: u16, ts: u32, key: bool, mid_rid: Option<(&str, &str)>) -> Vec<u8> {
    let mut ext = vec![0x22, 0xAA, 0xBB, 0xCC]; // id 2, 3 bytes
    if let Some((mid, rid)) = mid_rid {
        ext.push(0x40 | (mid.len() as u8 - 1));
        ext.extend_from_slice(mid.as_bytes());
        ext.push(0xA0 | (rid.len() as u8 - 1));
        ext.extend_from_slice(rid.as_bytes());
    }
    while ext.len() % 4 != 0 {
        ext.push(0);
    }
    let mut p = vec![0x90, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xBE, 0xDE]);
    p.extend_from_slice(&((ext.len() / 4) as u16).to_be_bytes());
    p.extend_from_slice(&ext);
    // VP8 descriptor: S=1, PID=0; payload header P bit = !key.
    p.extend_from_slice(&[0x10, if key { 0x00 } else { 0x01 }, 0x9D, 0x01, 0x2A]);
    p
}

/// VP8 packets `seqs` of the signalled stream 0x5000, 3000 ticks apart; 1 starts a keyframe.
fn stream(
    r: &mut MediaRouter,
    out: &mut Recorder,
    seqs: std::ops::RangeInclusive<u16>,
    now: Instant,
) {
    for seq in seqs {
        r.rtp(
            PUB,
            &vp8(0x5000, seq, u32::from(seq) * 3000, seq == 1, None),
            out,
            now,
        );
    }
}

/// The RTP packets sent.
fn parsed(sent: &[(TransportId, Vec<u8>)]) -> Vec<RtpPacket<'_>> {
    sent.iter()
        .map(|(_, b)| RtpPacket::parse(b).unwrap())
        .collect()
}

fn router_with(encodings: Vec<EncodingConfig>) -> (MediaRouter, Recorder, Instant) {
    let mut r = MediaRouter::default();
    let mut out = Recorder::default();
    let now = Instant::now();
    r.command(
        MediaCommand::AddTrack(video_track(encodings)),
        &mut out,
        now,
    );
    (r, out, now)
}

fn single() -> Vec<EncodingConfig> {
    vec![EncodingConfig {
        rid: None,
        ssrc: Some(0x5000),
        rtx_ssrc: None,
    }]
}

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

fn with_rtx(c: SubscriptionConfig) -> SubscriptionConfig {
    fixtures::subscription(c.track, c.subscriber, c.ssrc, true)
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

fn nack_datagram(media_ssrc: u32, lost: &[u16]) -> Vec<u8> {
    let mut b = vec![0u8; 256];
    let mut w = rtcp::Writer::new(&mut b);
    w.nack(99, media_ssrc, lost).unwrap();
    let n = w.len();
    b.truncate(n);
    b
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

fn three_layers() -> Vec<EncodingConfig> {
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
