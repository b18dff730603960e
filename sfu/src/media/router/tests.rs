//! Router scenarios with a recording egress: what each subscriber receives.

use super::*;
use crate::media::rtp::RtpPacket;

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

const PUB: TransportId = 1;
const SUB_A: TransportId = 2;
const SUB_B: TransportId = 3;

fn video_track(encodings: Vec<EncodingConfig>) -> TrackConfig {
    TrackConfig {
        id: 10,
        publisher: PUB,
        codec: CodecName::Vp8,
        clock_rate: 90_000,
        payload_type: 96,
        rtx_payload_type: Some(97),
        mid: "1".into(),
        mid_ext: Some(4),
        rid_ext: Some(10),
        forwarded_exts: vec![(2, ForwardedExt::AbsSendTime)],
        encodings,
    }
}

fn sub(subscriber: TransportId, ssrc: u32) -> SubscriptionConfig {
    SubscriptionConfig {
        track: 10,
        subscriber,
        ssrc,
        payload_type: 100,
        exts: vec![(ForwardedExt::AbsSendTime, 7)],
    }
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
        },
        EncodingConfig {
            rid: Some("h".into()),
            ssrc: None,
        },
        EncodingConfig {
            rid: Some("f".into()),
            ssrc: None,
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
            track: 10,
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
            track: 10,
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
    for seq in 1..=5u16 {
        r.rtp(
            PUB,
            &vp8(0x5000, seq, u32::from(seq) * 3000, seq == 1, None),
            &mut out,
            now,
        );
    }
    let sent: Vec<RtpPacket<'_>> = out
        .rtp
        .iter()
        .map(|(_, b)| RtpPacket::parse(b).unwrap())
        .collect();
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
    assert_eq!(r.stats.retransmits_refused, 1);
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
        NACK_BUDGET.1 as usize,
        "bounded by the burst"
    );
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
    // B subscribes 100 ms later, after the keyframe A's request produced.
    let t = now + Duration::from_millis(100);
    r.command(MediaCommand::Subscribe(sub(SUB_B, 0xB)), &mut out, t);
    assert_eq!(plis(&out), 1, "throttled");
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
    let [(to, pkt)] = &out.rtcp[..] else {
        panic!("{:?}", out.rtcp)
    };
    assert_eq!(*to, PUB);
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
    // Not again before the interval.
    r.timeout(&mut out, now + Duration::from_millis(500));
    assert_eq!(out.rtcp.len(), 1);
}

#[test]
fn the_gate_opens_only_on_a_keyframe_that_was_sent() {
    let (mut r, mut out, now) = router_with(single());
    out.not_connected.push(SUB_A);
    r.command(MediaCommand::Subscribe(sub(SUB_A, 0xA)), &mut out, now);
    // The keyframe arrives before the subscriber's DTLS is done: lost for it.
    r.rtp(PUB, &vp8(0x5000, 1, 0, true, None), &mut out, now);
    out.not_connected.clear();
    // Connected now: a delta frame must still be gated, and a keyframe is asked for.
    r.transport_connected(SUB_A, &mut out, now + PLI_INTERVAL);
    assert_eq!(plis(&out), 2, "PLI at subscribe, PLI on connect");
    r.rtp(
        PUB,
        &vp8(0x5000, 2, 3000, false, None),
        &mut out,
        now + PLI_INTERVAL,
    );
    assert!(out.rtp.is_empty());
    r.rtp(
        PUB,
        &vp8(0x5000, 3, 6000, true, None),
        &mut out,
        now + PLI_INTERVAL,
    );
    assert_eq!(out.rtp.len(), 1);
}
