//! Router scenarios with a recording egress: what each subscriber and publisher receives.
//! The helpers are here; the scenarios are grouped by concept: `subscriptions` (the keyframe
//! gate, numbering, mute, newcomers), `feedback` (NACK, RTX, reports, keyframe requests),
//! `tracks` (simulcast layers learned and followed, active speakers), `twcc` (transport-wide
//! congestion control both ways), `allocation` (the estimate choosing layers).

use super::*;
use crate::fixtures;
use crate::keyframe::starts_keyframe;
use crate::retransmit::Refusal;
use crate::rtcp::{self, Rtcp};
use crate::rtp::RtpPacket;
use ringcast_types::CodecName;

mod allocation;
mod feedback;
mod subscriptions;
mod tracks;
mod twcc;

#[derive(Default)]
struct Recorder {
    rtp: Vec<(TransportId, Vec<u8>)>,
    rtcp: Vec<(TransportId, Vec<u8>)>,
    /// Transports without keys yet: sends to them fail.
    not_connected: Vec<TransportId>,
    /// Pacing rates set, in order.
    pacing: Vec<(TransportId, Option<u64>)>,
    /// Transport-wide sequence numbers told for the packets sent, in order.
    transport_seqs: Vec<(TransportId, u16)>,
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

    fn set_pacing_rate(&mut self, to: TransportId, bps: Option<u64>) {
        self.pacing.push((to, bps));
    }

    fn transport_seq(&mut self, to: TransportId, seq: u16) {
        self.transport_seqs.push((to, seq));
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
const SUB_C: TransportId = TransportId(4);

fn video_track(encodings: Vec<EncodingConfig>) -> TrackConfig {
    fixtures::vp8_track(TrackId(10), PUB, encodings)
}

fn sub(subscriber: TransportId, ssrc: u32) -> SubscriptionConfig {
    fixtures::subscription(TrackId(10), subscriber, ssrc, false)
}

fn with_rtx(c: SubscriptionConfig) -> SubscriptionConfig {
    fixtures::subscription(c.track, c.subscriber, c.ssrc, true)
}

/// A subscriber's NACK of `lost` packets of `media_ssrc`.
fn nack_datagram(media_ssrc: u32, lost: &[u16]) -> Vec<u8> {
    let mut b = vec![0u8; 256];
    let mut w = rtcp::Writer::new(&mut b);
    w.nack(99, media_ssrc, lost).unwrap();
    let n = w.len();
    b.truncate(n);
    b
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
    router_with_track(video_track(encodings))
}

/// A router with `track` added.
fn router_with_track(track: TrackConfig) -> (MediaRouter, Recorder, Instant) {
    let mut r = MediaRouter::default();
    let mut out = Recorder::default();
    let now = Instant::now();
    r.command(MediaCommand::AddTrack(track), &mut out, now);
    (r, out, now)
}

fn single() -> Vec<EncodingConfig> {
    vec![EncodingConfig {
        rid: None,
        ssrc: Some(0x5000),
        rtx_ssrc: None,
    }]
}
