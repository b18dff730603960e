//! Transport-level fan-out, the simplest `Router`: every RTP packet of a transport goes,
//! unchanged, to each routed transport. The forwarding benchmark and the shard's tests run it
//! (the server runs `ringcast-media`'s router); built with the `test-support` feature.

use std::time::Instant;

use crate::IdMap;
use ringcast_types::TransportId;
use ringcast_types::route::{Egress, Router};

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
