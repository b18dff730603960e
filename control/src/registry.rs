//! Rooms, participants, tracks and subscriptions: the control plane's whole state, in memory.
//!
//! Every operation validates all its input before it changes anything, so a failed call leaves
//! the registry as it was. That holds for the shard too: a command the caller waits on (a
//! publish's transport and tracks, a mute, the subscriptions an answer accepts, a transport's
//! new parameters) that the shard refuses is the caller's error, and
//! what the shard took of the same call is taken back. A command no caller waits on (what a
//! leave or another participant's call asks of the shard) is logged and counted
//! ([`RegistryStats::shard_commands_failed`]).
//!
//! Time comes in as arguments (`now`), never from a clock here, and nothing here knows the
//! wire: `service` turns calls and errors into gRPC.
//!
//! One file per concept: `room` (rooms, their shard, their expiry), `participant` (join, the
//! events a participant hears, leave), `publish` (the publisher transport and its tracks),
//! `subscribe` (the subscriber transport Ringcast offers, and what the shard forwards on it),
//! `shard_events` (what the shards report back) and `errors`. This file holds the registry
//! itself and what those share.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::dtls::DtlsIdentity;
use crate::events::EventCounts;
use crate::ice::host_candidates;
use crate::ids::{Identity, RoomName, ShardId, TransportId};
use crate::plane::{MediaPlane, ShardCommand, SrtpProfile, TransportRole};
use crate::sdp::Candidate;

mod errors;
mod participant;
mod publish;
mod room;
mod shard_events;
mod subscribe;

pub use crate::events::{LeaveReason, ParticipantEvent, ParticipantInfo, Speaker, TrackInfo};
pub use errors::ControlError;
use participant::Participant;
pub use participant::{JoinInfo, Joiner};
pub use publish::{PublishResult, TrackLabel};
use publish::{PublisherTransport, Track, track_info};
use room::Room;
pub use room::{RoomInfo, RoomSettings};
pub use subscribe::SubscribeOffer;
use subscribe::SubscriberTransport;

/// The registry's size, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryStats {
    pub rooms: usize,
    pub participants: usize,
    pub tracks: usize,
    /// `new`, `connected`, `failed`, `closed`.
    pub transports_by_state: BTreeMap<&'static str, usize>,
    /// Events replaced by a newer one about the same subject before their reader read them,
    /// since start.
    pub events_coalesced: u64,
    /// Events dropped by a backlog at its cap, since start.
    pub events_dropped: u64,
    /// Shard commands that no caller was waiting on (a side effect of another participant's
    /// call, a leave, an undo) and that the shard did not take, since start. Those a caller
    /// waits on are its error instead.
    pub shard_commands_failed: u64,
}

/// Node-wide settings the registry needs.
#[derive(Clone)]
pub struct RegistryConfig {
    pub identity: Arc<DtlsIdentity>,
    pub srtp_profiles: Vec<SrtpProfile>,
}

/// The state of every room on this node.
pub struct Registry {
    config: RegistryConfig,
    plane: Arc<dyn MediaPlane>,
    rooms: BTreeMap<RoomName, Room>,
    transports: HashMap<TransportId, (RoomName, Identity, TransportRole)>,
    /// Each transport's last reported state (`new` until its shard reports), for metrics.
    transport_states: HashMap<TransportId, &'static str>,
    next_transport: u64,
    next_track: u64,
    draining: bool,
    /// The event counts of participants who have left, so the totals never go down.
    retired_events: EventCounts,
    /// See [`RegistryStats::shard_commands_failed`].
    shard_commands_failed: u64,
}

/// A shard command, and the one that takes it back if a later command of the same call fails.
struct ShardChange {
    apply: ShardCommand,
    undo: ShardCommand,
}

fn random_u32_nonzero() -> u32 {
    let mut b = [0u8; 4];
    loop {
        crate::random::fill(&mut b);
        let v = u32::from_be_bytes(b);
        if v != 0 {
            return v;
        }
    }
}

fn session_id() -> String {
    let mut b = [0u8; 8];
    crate::random::fill(&mut b);
    // JSEP: at most 63 bits, so it fits a signed 64-bit integer.
    (u64::from_be_bytes(b) >> 1).to_string()
}

impl Registry {
    pub fn new(config: RegistryConfig, plane: Arc<dyn MediaPlane>) -> Self {
        Registry {
            config,
            plane,
            rooms: BTreeMap::new(),
            transports: HashMap::new(),
            transport_states: HashMap::new(),
            next_transport: 1,
            next_track: 1,
            draining: false,
            retired_events: EventCounts::default(),
            shard_commands_failed: 0,
        }
    }

    pub fn plane(&self) -> &Arc<dyn MediaPlane> {
        &self.plane
    }

    /// Stops accepting new rooms and joins (graceful drain).
    pub fn set_draining(&mut self) {
        self.draining = true;
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    fn room(&mut self, name: &RoomName) -> Result<&mut Room, ControlError> {
        self.rooms
            .get_mut(name)
            .ok_or_else(|| ControlError::RoomNotFound(name.to_string()))
    }

    fn room_ref(&self, name: &RoomName) -> Result<&Room, ControlError> {
        self.rooms
            .get(name)
            .ok_or_else(|| ControlError::RoomNotFound(name.to_string()))
    }

    fn new_transport_id(&mut self) -> TransportId {
        let id = TransportId(self.next_transport);
        self.next_transport += 1;
        id
    }

    fn candidates(&self, shard: ShardId) -> Vec<Candidate> {
        let addrs = self
            .plane
            .shards()
            .iter()
            .find(|s| s.id == shard)
            .map(|s| s.candidate_addrs.clone())
            .unwrap_or_default();
        host_candidates(&addrs)
    }

    /// New ICE credentials for a transport. Publisher: answers `offer`. Subscriber: a new offer.
    pub fn ice_restart(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        role: TransportRole,
        offer: &str,
    ) -> Result<(String, u64), ControlError> {
        match role {
            TransportRole::Publisher => Ok((self.restart_publisher_ice(room, identity, offer)?, 0)),
            TransportRole::Subscriber => self.restart_subscriber_ice(room, identity),
        }
    }

    /// Counts for the metrics endpoint.
    pub fn stats(&self) -> RegistryStats {
        let mut transports_by_state = BTreeMap::new();
        for s in self.transport_states.values() {
            *transports_by_state.entry(*s).or_insert(0) += 1;
        }
        let mut events = self.retired_events;
        for p in self.rooms.values().flat_map(|r| r.participants.values()) {
            events += p.events.counts();
        }
        RegistryStats {
            rooms: self.rooms.len(),
            participants: self.rooms.values().map(|r| r.participants.len()).sum(),
            tracks: self
                .rooms
                .values()
                .flat_map(|r| r.participants.values())
                .map(|p| p.tracks.len())
                .sum(),
            transports_by_state,
            events_coalesced: events.coalesced,
            events_dropped: events.dropped,
            shard_commands_failed: self.shard_commands_failed,
        }
    }

    /// Sends the commands of one call, in order, for a caller who waits on them. If the shard
    /// refuses one, it is given back the ones it took (last first) and the refusal is the
    /// caller's error, so the call can commit nothing. An undo the shard refuses too is only
    /// logged and counted: the shard then holds state the registry does not, under an id that is
    /// never handed out again.
    fn apply_on_shard(
        &mut self,
        shard: ShardId,
        changes: Vec<ShardChange>,
    ) -> Result<(), ControlError> {
        let mut taken = Vec::with_capacity(changes.len());
        for ShardChange { apply, undo } in changes {
            let name = apply.name();
            if let Err(e) = self.plane.send(shard, apply) {
                tracing::info!(%shard, command = name, error = %e, "shard refused a command");
                for undo in taken.into_iter().rev() {
                    self.send_to_shard(shard, undo);
                }
                return Err(e.into());
            }
            taken.push(undo);
        }
        Ok(())
    }

    /// Sends a command no caller waits on: a side effect of another participant's call, a
    /// leave, an undo. A refusal is logged and counted, not an error: the shard hears of the
    /// subject again at its next change.
    fn send_to_shard(&mut self, shard: ShardId, cmd: ShardCommand) {
        let name = cmd.name();
        if let Err(e) = self.plane.send(shard, cmd) {
            self.shard_commands_failed += 1;
            tracing::warn!(%shard, command = name, error = %e, "shard command not delivered");
        }
    }
}

#[cfg(test)]
mod tests;
