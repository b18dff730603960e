//! The seam between a shard's transports and media routing.
//!
//! The shard (datapath) owns sockets, ICE, DTLS and SRTP; a `Router` owns what happens to
//! decrypted media (rooms, tracks, subscriptions, rewriting, NACK, PLI). It sees plaintext
//! packets and sends through an `Egress`, which for the shard encrypts into its send slots.
//! Neither side knows the other's crate: the datapath runs any `Router`, the media router runs
//! on any `Egress` (the shard's, or a recorder in tests and benchmarks).

use std::fmt;
use std::time::Instant;

use crate::TransportId;

/// Where a router's packets go.
pub trait Egress {
    /// Sends one RTP packet to `to`: `write` puts the plaintext packet at the start of the
    /// buffer and returns its length (0: nothing to send). False if it was not sent (the
    /// transport is not connected, or nothing could take it).
    fn send_rtp(&mut self, to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool;

    /// Sends one RTP packet whose payload (or its tail) is `payload`, taken as it is: `head`
    /// writes what comes before it (the header, and any plaintext prefix such as an RTX
    /// packet's original sequence number) at the start of the buffer and returns that length
    /// (0: nothing to send). The shard's egress encrypts `payload` from where it lies straight
    /// into its send slot, so a forwarded payload is read once and written once; this default
    /// copies it after the head and sends that.
    fn send_rtp_payload(
        &mut self,
        to: TransportId,
        head: &mut dyn FnMut(&mut [u8]) -> usize,
        payload: &[u8],
    ) -> bool {
        self.send_rtp(to, &mut |buf| {
            let n = head(buf);
            let end = n + payload.len();
            if n == 0 || end > buf.len() {
                return 0;
            }
            buf[n..end].copy_from_slice(payload);
            end
        })
    }

    /// As `send_rtp`, for a compound RTCP packet.
    fn send_rtcp(&mut self, to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool;

    /// What `to`'s downlink is estimated to carry (bits/s; `None`: nothing measures it):
    /// what is sent there is paced to it. Egress that does not pace ignores it.
    fn set_pacing_rate(&mut self, _to: TransportId, _bps: Option<u64>) {}

    /// The RTP packet just sent to `to` carries transport-wide sequence number `seq`. An
    /// egress that holds it back to pace it tells when it did leave (`Router::on_departures`):
    /// a congestion controller measures delay from the time a packet left, not from the time
    /// it was handed over.
    fn transport_seq(&mut self, _to: TransportId, _seq: u16) {}
}

/// A packet tagged by `Egress::transport_seq` that was held back to pace it, and when it left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Departure {
    pub to: TransportId,
    pub seq: u16,
    pub at: Instant,
}

/// Media routing on one shard. All calls come from the shard's thread, one at a time.
pub trait Router: Send + 'static {
    /// What the control plane sends this router.
    type Command: Send + fmt::Debug + 'static;

    fn handle_command(&mut self, cmd: Self::Command, io: &mut dyn Egress, now: Instant);

    /// A decrypted RTP packet from `from`.
    fn handle_rtp(&mut self, from: TransportId, packet: &[u8], io: &mut dyn Egress, now: Instant);

    /// A decrypted (compound) RTCP packet from `from`.
    fn handle_rtcp(
        &mut self,
        _from: TransportId,
        _packet: &[u8],
        _io: &mut dyn Egress,
        _now: Instant,
    ) {
    }

    /// A transport is gone; forget what refers to it.
    fn transport_removed(&mut self, _id: TransportId) {}

    /// Packets the egress held back to pace them left, at these times (in the order they left).
    fn on_departures(&mut self, _departed: &[Departure]) {}

    /// A transport completed DTLS: it can be sent to from now on.
    fn transport_connected(&mut self, _id: TransportId, _io: &mut dyn Egress, _now: Instant) {}

    /// Publishes the router's own counters (called with the shard's, every 250 ms).
    fn publish_metrics(&mut self, _shard: u16) {}

    /// Periodic work (reports, keyframe request throttling); called at least once a second,
    /// and when `poll_timeout` asks.
    fn handle_timeout(&mut self, _io: &mut dyn Egress, _now: Instant) {}

    /// When `handle_timeout` should run next, if sooner than a second from now.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// A deadline the packets and commands just handled created (a gap to NACK, a throttled
    /// keyframe request), checked after every sweep; must be cheap. `poll_timeout` is the full
    /// answer, asked after each `handle_timeout`.
    fn wake_at(&self) -> Option<Instant> {
        None
    }
}
