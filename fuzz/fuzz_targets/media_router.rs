//! Arbitrary RTP and RTCP from publishers and subscribers into a media router with a simulcast
//! video track (SSRCs learned from MID/RID, RTX), an audio track, and subscribers with and
//! without RTX: the router never panics, and everything it sends parses (RTP with the
//! subscriber's SSRC or its RTX SSRC; RTCP as a whole compound packet, transport-wide feedback
//! as a whole transport-cc message).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ringcast_types::{CodecName, SubscriptionSettings};
use ringcast_types::TransportId;
use ringcast_types::route::{Departure, Router};
use ringcast_media::router::{
    Egress, EncodingConfig, ForwardedExt, MediaCommand, MediaRouter, RtxConfig,
    SubscriptionConfig, TrackConfig, TrackId,
};
use ringcast_media::{rtcp, rtp::RtpPacket};

/// Subscriber SSRCs: 0x100 * transport (+1 for RTX).
struct Checked {
    buf: Vec<u8>,
}

impl Egress for Checked {
    fn send_rtp(&mut self, to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let n = write(&mut self.buf);
        if n == 0 {
            return false;
        }
        let p = RtpPacket::parse(&self.buf[..n]).expect("the router wrote bad RTP");
        let base = 0x100 * to.0 as u32;
        assert!(p.ssrc == base || p.ssrc == base + 1, "wrong SSRC for {to}");
        true
    }

    fn send_rtcp(&mut self, _to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        let n = write(&mut self.buf);
        if n == 0 {
            return false;
        }
        assert!(rtcp::read(&self.buf[..n]).all(|p| p.is_ok()), "the router wrote bad RTCP");
        if matches!(rtcp::read(&self.buf[..n]).next(), Some(Ok(rtcp::Rtcp::TransportCc { .. }))) {
            ringcast_cc::twcc::Feedback::parse(&self.buf[..n]).expect("the router wrote bad feedback");
        }
        true
    }
}

fn track(id: TrackId, codec: CodecName, pt: u8, rids: &[&str]) -> TrackConfig {
    TrackConfig {
        id,
        publisher: TransportId(1),
        codec,
        clock_rate: codec.clock_rate(),
        payload_type: pt,
        rtx_payload_type: (codec != CodecName::Opus).then_some(pt + 1),
        mid: id.0.to_string(),
        mid_ext: Some(4),
        rid_ext: Some(10),
        rrid_ext: Some(11),
        transport_cc_ext: Some(3),
        source: Default::default(),
        forwarded_exts: vec![
            (1, ForwardedExt::AudioLevel),
            (2, ForwardedExt::AbsSendTime),
            (12, ForwardedExt::DependencyDescriptor),
        ],
        encodings: if rids.is_empty() {
            vec![EncodingConfig { rid: None, ssrc: Some(0x50), rtx_ssrc: Some(0x51) }]
        } else {
            rids.iter()
                .map(|r| EncodingConfig { rid: Some((*r).into()), ssrc: None, rtx_ssrc: None })
                .collect()
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = MediaRouter::with_speaker_sink(Box::new(|_| {}));
    let mut out = Checked { buf: vec![0; 1500] };
    let t0 = Instant::now();
    r.command(MediaCommand::AddTrack(track(TrackId(0), CodecName::Opus, 111, &[])), &mut out, t0);
    r.command(MediaCommand::AddTrack(track(TrackId(1), CodecName::Vp8, 96, &["q", "h", "f"])), &mut out, t0);
    for sub in 2..4u64 {
        for t in [TrackId(0), TrackId(1)] {
            r.command(
                MediaCommand::Subscribe(SubscriptionConfig {
                    track: t,
                    subscriber: TransportId(sub),
                    ssrc: 0x100 * sub as u32,
                    payload_type: 100,
                    rtx: (sub == 2).then_some(RtxConfig {
                        ssrc: 0x100 * sub as u32 + 1,
                        payload_type: 101,
                    }),
                    exts: vec![(ForwardedExt::AbsSendTime, 3)],
                    transport_cc_ext: (sub == 3).then_some(5),
                    settings: Default::default(),
                }),
                &mut out,
                t0,
            );
        }
    }
    // Chunks: [control byte, length, bytes...]. Control: bits 0-1 sender (1 publisher, 2-3
    // subscribers), bit 2 RTCP, bits 3-7 milliseconds to advance; 0xFF toggles a mute, 0xFE
    // configures a subscription, 0xFD tells departures from the pacer (any sequence numbers,
    // any times, any transports).
    let mut now = t0;
    let mut rest = data;
    while let [ctl, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(ctl >> 3));
        if *ctl == 0xFF {
            r.command(MediaCommand::SetMuted { track: TrackId(1), muted: n % 2 == 0 }, &mut out, now);
            continue;
        }
        if *ctl == 0xFD {
            let departed: Vec<Departure> = datagram
                .chunks_exact(4)
                .map(|c| Departure {
                    to: TransportId(u64::from(c[0] & 3)),
                    seq: u16::from_be_bytes([c[1], c[2]]),
                    at: now + Duration::from_millis(u64::from(c[3])),
                })
                .collect();
            r.on_departures(&departed);
            continue;
        }
        if *ctl == 0xFE {
            // New settings for one subscriber's video: layer cap, rendered size, priority,
            // frame rate cap.
            let b = |i: usize| datagram.get(i).copied().unwrap_or(0);
            let settings = SubscriptionSettings {
                max_layer: (b(0) < 4).then_some(b(0)),
                width: u32::from(b(1)) * 8,
                height: u32::from(b(2)) * 8,
                priority: b(3),
                max_fps: u32::from(b(5) & 0x3F),
            };
            let subscriber = TransportId(2 + u64::from(b(4) & 1));
            r.command(MediaCommand::Configure { track: TrackId(1), subscriber, settings }, &mut out, now);
            continue;
        }
        let from = TransportId(u64::from(ctl & 3).max(1));
        if ctl & 4 != 0 {
            r.rtcp(from, datagram, &mut out, now);
        } else {
            r.rtp(from, datagram, &mut out, now);
        }
        r.timeout(&mut out, now);
    }
    r.transport_removed(TransportId(1));
    r.timeout(&mut out, now + Duration::from_secs(2));
});
