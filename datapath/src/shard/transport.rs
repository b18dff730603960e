//! A transport's state on the shard (ICE, DTLS, SRTP contexts, validated addresses) and
//! `RouteIo`, the `Egress` through which a router writes, encrypts and queues packets for the
//! shard's transports.

use std::net::SocketAddr;
use std::time::Instant;

use crate::IdMap;
use crate::dtls::Dtls;
use crate::ice::IceLite;
use crate::outbox::Outbox;
use crate::pacer::Pacer;
use crate::srtp;
use crate::stats::{DropReason, ShardStats};
use ringcast_types::TransportId;
use ringcast_types::route::Egress;

use super::TransportConfig;

/// DTLS datagrams kept per transport while its peer parameters are unknown (a ClientHello
/// flight is two or three).
pub(super) const MAX_EARLY_DTLS: usize = 8;

/// Addresses per transport that may send media: those that passed an authenticated check.
pub(super) const MAX_VALIDATED: usize = 8;

pub(crate) struct Transport {
    pub(super) config: TransportConfig,
    pub(super) ice: IceLite,
    /// Sources that passed an authenticated check, newest last. ICE lets the controlling peer
    /// send DTLS and media on a checked pair before it nominates it (Chromium sends its
    /// ClientHello right after the first successful check, and moves media to a new pair
    /// before nominating it), so all of them are accepted; we send to the nominated one, or
    /// before any nomination to the newest.
    pub(super) validated: Vec<SocketAddr>,
    /// First DTLS datagram from the peer: the handshake's start, for its duration metric.
    pub(super) dtls_started: Option<Instant>,
    /// DTLS datagrams that arrived before the peer's parameters; replayed when DTLS starts.
    pub(super) early_dtls: Vec<Vec<u8>>,
    pub(super) dtls: Option<Dtls>,
    pub(super) rx: Option<srtp::Context>,
    pub(super) tx: Option<srtp::Context>,
    pub(super) failed: bool,
}

impl Transport {
    /// Where to send: the nominated address, else the newest checked one.
    pub(crate) fn send_addr(&self) -> Option<SocketAddr> {
        self.ice
            .selected()
            .or_else(|| self.validated.last().copied())
    }
}

/// What a router may do with the shard's transports: write, encrypt and queue packets.
pub struct RouteIo<'a> {
    pub(super) transports: &'a mut IdMap<TransportId, Transport>,
    pub(super) outbox: &'a mut Outbox,
    pub(super) stats: &'a mut ShardStats,
    pub(super) pacer: &'a mut Pacer,
    pub(super) now: Instant,
}

impl RouteIo<'_> {
    /// True once `id` has SRTP keys and an address.
    pub fn is_connected(&self, id: TransportId) -> bool {
        self.transports
            .get(&id)
            .is_some_and(|t| t.tx.is_some() && t.send_addr().is_some())
    }

    /// Sends one RTP packet to `to`: `write` puts the plaintext packet at the start of the slot
    /// and returns its length (0: nothing to send); it is encrypted in place and queued.
    /// False if the transport isn't connected, no slot is free, or encryption failed.
    pub fn send_rtp(&mut self, to: TransportId, write: impl FnOnce(&mut [u8]) -> usize) -> bool {
        self.send(to, false, write)
    }

    /// Sends one RTP packet: `head` writes the header (and any plaintext prefix of the
    /// payload) at the start of the slot and returns its length (0: nothing to send); the
    /// rest of the payload, `payload`, is encrypted from where it lies straight into the slot
    /// after it. One write of the payload, no copy before the cipher.
    pub fn send_rtp_payload(
        &mut self,
        to: TransportId,
        head: impl FnOnce(&mut [u8]) -> usize,
        payload: &[u8],
    ) -> bool {
        self.seal(to, false, |tx, buf| {
            let room = buf.len() - tx.profile().rtp_overhead();
            let Some(head_room) = room.checked_sub(payload.len()) else {
                return Err(0);
            };
            let n = head(&mut buf[..head_room]);
            if n == 0 {
                return Err(0);
            }
            tx.protect_rtp_from(buf, n, payload).map_err(|_| n)
        })
    }

    /// As `send_rtp`, for a compound RTCP packet.
    pub fn send_rtcp(&mut self, to: TransportId, write: impl FnOnce(&mut [u8]) -> usize) -> bool {
        self.send(to, true, write)
    }

    fn send(
        &mut self,
        to: TransportId,
        rtcp: bool,
        write: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        self.seal(to, rtcp, |tx, buf| {
            // Leave room for the SRTP tag and SRTCP index.
            let room = buf.len() - tx.profile().rtcp_overhead();
            let n = write(&mut buf[..room]);
            match (n, rtcp) {
                (0, _) => Err(0),
                (n, false) => tx.protect_rtp(buf, n).map_err(|_| n),
                (n, true) => tx.protect_rtcp(buf, n).map_err(|_| n),
            }
        })
    }

    /// Takes a send slot for `to` and queues what `seal` leaves in it: `Ok(length)` of the
    /// protected packet, or `Err(n)` when there is nothing to send (n = 0) or the n bytes
    /// written could not be protected.
    fn seal(
        &mut self,
        to: TransportId,
        rtcp: bool,
        seal: impl FnOnce(&mut crate::srtp::Context, &mut [u8]) -> Result<usize, usize>,
    ) -> bool {
        let Some(t) = self.transports.get_mut(&to) else {
            return false;
        };
        let addr = t.send_addr();
        let (Some(tx), Some(addr)) = (t.tx.as_mut(), addr) else {
            return false;
        };
        let Some((slot, buf)) = self.outbox.alloc() else {
            self.stats.drop(DropReason::SendQueueFull);
            return false;
        };
        match seal(tx, buf) {
            Ok(n) => {
                // RTP is paced per transport; RTCP (small, and feedback) goes at once.
                self.outbox.push_flow(slot, addr, n, (!rtcp).then_some(to));
                if !rtcp {
                    self.stats.rtp_forwarded += 1;
                }
                true
            }
            Err(written) => {
                self.outbox.release(slot);
                if written > 0 {
                    self.stats.drop(DropReason::MalformedRtp);
                }
                false
            }
        }
    }
}

impl Egress for RouteIo<'_> {
    fn send_rtp(&mut self, to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        RouteIo::send_rtp(self, to, write)
    }

    fn send_rtp_payload(
        &mut self,
        to: TransportId,
        head: &mut dyn FnMut(&mut [u8]) -> usize,
        payload: &[u8],
    ) -> bool {
        RouteIo::send_rtp_payload(self, to, head, payload)
    }

    fn send_rtcp(&mut self, to: TransportId, write: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        RouteIo::send_rtcp(self, to, write)
    }

    fn set_pacing_rate(&mut self, to: TransportId, bps: Option<u64>) {
        if self.transports.contains_key(&to) {
            self.pacer.set_target(to, bps, self.now);
        }
    }

    fn transport_seq(&mut self, to: TransportId, seq: u16) {
        self.outbox.tag_last(to, seq);
    }
}
