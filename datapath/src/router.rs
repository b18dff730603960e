//! The shard's side of the routing seam (`ringcast_types::route`): `RouteIo`, the `Egress`
//! that encrypts a router's packets into the shard's send slots. The datapath knows nothing of
//! rooms: the media router lives in `ringcast-media`. `Fanout` here is the simplest router,
//! transport-level fan-out, used by the forwarding benchmark and tests.

use std::time::Instant;

use crate::IdMap;
use crate::outbox::Outbox;
use crate::shard::{Transport, TransportId};
use crate::stats::{DropReason, ShardStats};

pub use ringcast_types::route::{Egress, Router};

/// What a router may do with the shard's transports: write, encrypt and queue packets.
pub struct RouteIo<'a> {
    pub(crate) transports: &'a mut IdMap<TransportId, Transport>,
    pub(crate) outbox: &'a mut Outbox,
    pub(crate) stats: &'a mut ShardStats,
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
}

/// Transport-level fan-out: every RTP packet of a transport goes, unchanged, to each routed
/// transport (re-encrypted with its keys).
#[derive(Debug, Default)]
pub struct Fanout {
    routes: IdMap<TransportId, Vec<TransportId>>,
}

/// Commands of the `Fanout` router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanoutCommand {
    /// Replaces the routes of `from`; an empty `to` removes them.
    Route {
        from: TransportId,
        to: Vec<TransportId>,
    },
}

impl Router for Fanout {
    type Command = FanoutCommand;

    fn handle_command(&mut self, cmd: FanoutCommand, _io: &mut dyn Egress, _now: Instant) {
        let FanoutCommand::Route { from, to } = cmd;
        if to.is_empty() {
            self.routes.remove(&from);
        } else {
            self.routes.insert(from, to);
        }
    }

    fn handle_rtp(&mut self, from: TransportId, packet: &[u8], io: &mut dyn Egress, _now: Instant) {
        let Some(targets) = self.routes.get(&from) else {
            return;
        };
        // The header goes as it is; the payload is sealed from the packet into each slot.
        let Ok(hdr) = crate::srtp::rtp_header_len(packet) else {
            return;
        };
        let (header, payload) = packet.split_at(hdr);
        for &to in targets {
            io.send_rtp_payload(
                to,
                &mut |buf| match buf.get_mut(..hdr) {
                    Some(b) => {
                        b.copy_from_slice(header);
                        hdr
                    }
                    None => 0,
                },
                payload,
            );
        }
    }

    fn transport_removed(&mut self, id: TransportId) {
        self.routes.remove(&id);
        for targets in self.routes.values_mut() {
            targets.retain(|t| *t != id);
        }
    }
}
