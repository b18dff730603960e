//! Rooms: their settings, their placement on a shard, and the RoomService calls that create,
//! list, delete and expire them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{ControlError, LeaveReason, Participant, ParticipantEvent, Registry, Track};
use crate::ids::{Identity, RoomName, RoomSid, ShardId, TrackSid};

/// Settings a room is created with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomSettings {
    pub max_participants: u32,
    pub empty_timeout_secs: u32,
    pub metadata: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    pub name: RoomName,
    pub sid: RoomSid,
    pub settings: RoomSettings,
    pub created_at_unix_ms: i64,
    pub num_participants: u32,
    pub shard: ShardId,
}

pub(super) struct Room {
    pub(super) sid: RoomSid,
    pub(super) name: RoomName,
    pub(super) settings: RoomSettings,
    pub(super) created_at_unix_ms: i64,
    pub(super) shard: ShardId,
    pub(super) participants: BTreeMap<Identity, Participant>,
    pub(super) empty_since: Option<Instant>,
    /// The speakers last reported to the room, by track.
    pub(super) speakers: Vec<TrackSid>,
}

impl Room {
    pub(super) fn info(&self) -> RoomInfo {
        RoomInfo {
            name: self.name.clone(),
            sid: self.sid.clone(),
            settings: self.settings.clone(),
            created_at_unix_ms: self.created_at_unix_ms,
            num_participants: self.participants.len() as u32,
            shard: self.shard,
        }
    }

    /// Forwarded streams: every published track times its subscribers.
    pub(super) fn load(&self) -> usize {
        self.participants
            .values()
            .map(|p| p.subscriptions.len())
            .sum()
    }

    pub(super) fn participant(
        &mut self,
        identity: &Identity,
    ) -> Result<&mut Participant, ControlError> {
        let room = &self.name;
        self.participants
            .get_mut(identity)
            .ok_or_else(|| not_in_room(room, identity))
    }

    pub(super) fn member(&self, identity: &Identity) -> Result<&Participant, ControlError> {
        self.participants
            .get(identity)
            .ok_or_else(|| not_in_room(&self.name, identity))
    }

    pub(super) fn notify_others(&self, except: &Identity, ev: &ParticipantEvent) {
        for (id, p) in &self.participants {
            if id != except {
                p.notify(ev.clone());
            }
        }
    }

    /// The track with `sid`, with its publisher.
    pub(super) fn find_track(&self, sid: &TrackSid) -> Option<(&Participant, &Track)> {
        self.participants
            .values()
            .find_map(|p| p.tracks.iter().find(|t| &t.sid == sid).map(|t| (p, t)))
    }
}

fn not_in_room(room: &RoomName, identity: &Identity) -> ControlError {
    ControlError::ParticipantNotFound {
        room: room.to_string(),
        identity: identity.to_string(),
    }
}

impl Registry {
    /// The least loaded shard (forwarded streams, then rooms).
    pub(super) fn place(&self) -> ShardId {
        let mut load: BTreeMap<ShardId, (usize, usize)> =
            self.plane.shards().iter().map(|s| (s.id, (0, 0))).collect();
        for r in self.rooms.values() {
            if let Some(l) = load.get_mut(&r.shard) {
                l.0 += r.load();
                l.1 += 1;
            }
        }
        load.into_iter()
            .min_by_key(|(id, l)| (*l, *id))
            .map(|(id, _)| id)
            .unwrap_or(ShardId(0))
    }

    pub fn create_room(
        &mut self,
        name: &str,
        settings: RoomSettings,
        now: Instant,
        now_unix_ms: i64,
    ) -> Result<RoomInfo, ControlError> {
        let name = RoomName::new(name)?;
        if settings.metadata.len() > 64 * 1024 {
            return Err(ControlError::InvalidArgument(
                "room metadata is larger than 64 KiB".to_owned(),
            ));
        }
        if let Some(r) = self.rooms.get(&name) {
            return if r.settings == settings {
                Ok(r.info())
            } else {
                Err(ControlError::RoomExists(name.to_string()))
            };
        }
        if self.draining {
            return Err(ControlError::Draining);
        }
        let shard = self.place();
        let room = Room {
            sid: RoomSid::generate(),
            name: name.clone(),
            settings,
            created_at_unix_ms: now_unix_ms,
            shard,
            participants: BTreeMap::new(),
            empty_since: Some(now),
            speakers: Vec::new(),
        };
        let info = room.info();
        tracing::info!(room = %name, sid = %info.sid, %shard, "room created");
        self.rooms.insert(name, room);
        Ok(info)
    }

    pub fn get_room(&self, name: &str) -> Result<RoomInfo, ControlError> {
        let name = RoomName::new(name)?;
        self.rooms
            .get(&name)
            .map(Room::info)
            .ok_or_else(|| ControlError::RoomNotFound(name.to_string()))
    }

    pub fn list_rooms(&self, names: &[String]) -> Vec<RoomInfo> {
        self.rooms
            .values()
            .filter(|r| names.is_empty() || names.iter().any(|n| n == r.name.as_str()))
            .map(Room::info)
            .collect()
    }

    pub fn delete_room(&mut self, name: &str) -> Result<(), ControlError> {
        let name = RoomName::new(name)?;
        let room = self
            .rooms
            .remove(&name)
            .ok_or_else(|| ControlError::RoomNotFound(name.to_string()))?;
        for (_, p) in room.participants {
            let ev = ParticipantEvent::Left {
                identity: p.identity.clone(),
                sid: p.sid.clone(),
                reason: LeaveReason::RoomDeleted,
            };
            p.notify(ev);
            self.retire(room.shard, p);
        }
        tracing::info!(room = %name, "room deleted");
        Ok(())
    }

    /// Closes rooms that have been empty longer than their `empty_timeout_secs`.
    pub fn sweep(&mut self, now: Instant) -> Vec<RoomName> {
        let expired: Vec<RoomName> = self
            .rooms
            .values()
            .filter(|r| {
                r.settings.empty_timeout_secs > 0
                    && r.empty_since.is_some_and(|t| {
                        now.saturating_duration_since(t)
                            >= Duration::from_secs(u64::from(r.settings.empty_timeout_secs))
                    })
            })
            .map(|r| r.name.clone())
            .collect();
        for name in &expired {
            tracing::info!(room = %name, "empty room closed after its timeout");
            self.rooms.remove(name);
        }
        expired
    }
}
