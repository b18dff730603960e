//! Transport-wide feedback to publishers (draft-holmer-rmcat-transport-wide-cc-extensions-01):
//! every packet a publisher sends with a transport-wide sequence number has its arrival time
//! recorded, and every `TWCC_INTERVAL` the publisher gets transport-cc feedback for what
//! arrived since the last, which its send-side estimator (Chromium's and Firefox's goog_cc)
//! turns into its sending rate. Per publisher transport: the sequence numbers span all of a
//! BUNDLEd transport's streams, whatever track they belong to.

use std::time::{Duration, Instant};

use ringcast_cc::twcc::ArrivalRecorder;
use ringcast_types::TransportId;
use ringcast_types::route::Egress;

use super::{MediaRouter, ROUTER_SSRC};
use crate::rtp::RtpPacket;

/// How often a publisher gets feedback: libwebrtc's receivers default to 100 ms, which its
/// estimator is tuned for.
pub const TWCC_INTERVAL: Duration = Duration::from_millis(100);

/// Arrivals remembered per publisher (16 bytes each): 4 s of a three-layer publisher's 500
/// packets/s, so a feedback that could not be sent is covered by the next.
const ARRIVAL_WINDOW: usize = 2048;

/// One publisher transport's transport-wide state.
pub(super) struct Upstream {
    /// The publisher's extension id for the transport-wide sequence number.
    ext: u8,
    /// Made at the first packet that carries the extension (its SSRC names the feedback).
    recorder: Option<ArrivalRecorder>,
    next_feedback: Option<Instant>,
}

impl MediaRouter {
    /// A publisher's track negotiated transport-wide sequence numbers under `ext`.
    pub(super) fn expect_transport_cc(&mut self, publisher: TransportId, ext: u8) {
        let u = self.upstream_cc.entry(publisher).or_insert(Upstream {
            ext,
            recorder: None,
            next_feedback: None,
        });
        // BUNDLE keeps one id per URI on a transport; a renegotiation may still move it.
        u.ext = ext;
    }

    /// Records the arrival of a publisher's packet if it carries a transport-wide sequence
    /// number. Before anything else looks at the packet: padding and probes count too.
    pub(super) fn record_arrival(&mut self, from: TransportId, p: &RtpPacket<'_>, now: Instant) {
        let Some(u) = self.upstream_cc.get_mut(&from) else {
            return;
        };
        let Some(&[hi, lo]) = p.extension(u.ext) else {
            return;
        };
        let recorder = u
            .recorder
            .get_or_insert_with(|| ArrivalRecorder::new(ROUTER_SSRC, p.ssrc, ARRIVAL_WINDOW));
        recorder.on_packet(u16::from_be_bytes([hi, lo]), now);
        if u.next_feedback.is_none() {
            let at = now + TWCC_INTERVAL;
            u.next_feedback = Some(at);
            self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
        }
    }

    /// Sends each publisher whose interval is up the feedback for what arrived since its last.
    pub(super) fn send_transport_feedback(&mut self, out: &mut dyn Egress, now: Instant) {
        for (&publisher, u) in self.upstream_cc.iter_mut() {
            let (Some(due), Some(recorder)) = (u.next_feedback, u.recorder.as_mut()) else {
                continue;
            };
            if now < due {
                continue;
            }
            // As many messages as the arrivals need, each one RTCP packet in its own datagram.
            let mut more = true;
            while more {
                more = false;
                let sent = out.send_rtcp(publisher, &mut |buf| match recorder.poll_feedback(buf) {
                    Ok(Some(n)) => {
                        more = true;
                        n
                    }
                    _ => 0,
                });
                if sent {
                    self.stats.twcc_feedback_sent += 1;
                } else {
                    break;
                }
            }
            u.next_feedback = recorder.has_unreported().then_some(now + TWCC_INTERVAL);
        }
    }

    /// When the next feedback is due.
    pub(super) fn next_transport_feedback(&self) -> Option<Instant> {
        self.upstream_cc
            .values()
            .filter_map(|u| u.next_feedback)
            .min()
    }
}
