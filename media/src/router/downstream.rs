//! A subscriber transport's downlink: the transport-wide sequence numbers Ringcast stamps on
//! everything it sends there (one sequence across all of the transport's streams, RTX
//! included), and the bandwidth estimate (`ringcast_cc::Estimator`) that the subscriber's
//! transport-cc feedback, or its REMB where that is all it negotiated, drives.

use std::time::Instant;

use ringcast_cc::twcc::Feedback;
use ringcast_cc::{Config, Estimator};
use ringcast_types::TransportId;

use super::MediaRouter;

/// One subscriber transport's congestion control state.
pub(super) struct Downstream {
    /// The subscriber's extension id for transport-wide sequence numbers, where it
    /// negotiated transport-cc.
    ext: Option<u8>,
    /// The sequence number the next packet carries.
    next_seq: u16,
    pub(super) estimator: Estimator,
}

impl Downstream {
    fn new(ext: Option<u8>) -> Self {
        Downstream {
            ext,
            next_seq: 0,
            estimator: Estimator::new(Config::default()),
        }
    }

    /// The extension element the next packet to this subscriber carries: its id and the
    /// sequence number. Only a packet that is sent takes the number (see `sent`), so the
    /// subscriber sees no gap that is not loss.
    pub(super) fn next_element(&self) -> Option<(u8, [u8; 2])> {
        self.ext.map(|id| (id, self.next_seq.to_be_bytes()))
    }

    /// The packet that carried `next_element` (`len` bytes of RTP) was sent.
    pub(super) fn sent(&mut self, len: usize, now: Instant) {
        if self.ext.is_some() {
            self.estimator.on_packet_sent(self.next_seq, len, now, None);
            self.next_seq = self.next_seq.wrapping_add(1);
        }
    }
}

impl MediaRouter {
    /// A subscription on `subscriber`, which negotiated transport-wide sequence numbers under
    /// `ext` (or not): its transport's downlink state, made at the first.
    pub(super) fn expect_downstream(&mut self, subscriber: TransportId, ext: Option<u8>) {
        let d = self
            .downstream
            .entry(subscriber)
            .or_insert_with(|| Downstream::new(ext));
        // One id per URI on a BUNDLEd transport; a renegotiation may still move it.
        if ext.is_some() {
            d.ext = ext;
        }
    }

    /// Transport-wide feedback from a subscriber.
    pub(super) fn subscriber_feedback(
        &mut self,
        from: TransportId,
        sender_ssrc: u32,
        media_ssrc: u32,
        fci: &[u8],
        now: Instant,
    ) {
        let Some(d) = self.downstream.get_mut(&from) else {
            return;
        };
        match Feedback::parse_fci(sender_ssrc, media_ssrc, fci) {
            Ok(fb) => {
                d.estimator.on_feedback(&fb, now);
                self.stats.twcc_feedback_received += 1;
            }
            Err(_) => self.stats.malformed_rtcp += 1,
        }
    }

    /// A subscriber's REMB: its estimate where it has no transport-wide feedback.
    pub(super) fn subscriber_remb(&mut self, from: TransportId, bitrate: u64, now: Instant) {
        if let Some(d) = self.downstream.get_mut(&from) {
            d.estimator.on_remb(bitrate, now);
        }
    }

    /// The bandwidth estimate for a subscriber transport, bits/s.
    pub fn subscriber_estimate(&self, subscriber: TransportId) -> Option<u64> {
        Some(self.downstream.get(&subscriber)?.estimator.target_bitrate())
    }
}
