//! Participants: who joins, what others see of them, the events they hear, and how they
//! leave (on their own, removed, replaced, or at shutdown).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::{
    ControlError, PublisherTransport, Registry, RoomInfo, SubscriberTransport, Track, session_id,
    track_info,
};
use crate::events::{EventQueue, EventReader, LeaveReason, ParticipantEvent, ParticipantInfo};
use crate::ice::IceCredentials;
use crate::ids::{Identity, ParticipantSid, RoomName, ShardId, TrackSid};
use crate::negotiate::SubscriberOffer;
use crate::plane::{ShardCommand, TransportRole};
use crate::sdp::Candidate;

/// Who is joining, from their access token.
#[derive(Debug, Clone)]
pub struct Joiner {
    pub room: RoomName,
    pub identity: Identity,
    pub name: String,
    pub can_publish: bool,
    pub can_subscribe: bool,
}

/// What `Join` returns.
#[derive(Debug, Clone)]
pub struct JoinInfo {
    pub room: RoomInfo,
    pub participant: ParticipantInfo,
    pub others: Vec<ParticipantInfo>,
    pub candidates: Vec<Candidate>,
}

pub(super) struct Participant {
    pub(super) sid: ParticipantSid,
    pub(super) identity: Identity,
    pub(super) name: String,
    pub(super) joined_at_unix_ms: i64,
    pub(super) can_publish: bool,
    pub(super) can_subscribe: bool,
    pub(super) publisher: Option<PublisherTransport>,
    pub(super) subscriber: SubscriberTransport,
    pub(super) tracks: Vec<Track>,
    pub(super) subscriptions: BTreeSet<TrackSid>,
    pub(super) events: EventQueue,
}

impl Participant {
    pub(super) fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            identity: self.identity.clone(),
            sid: self.sid.clone(),
            name: self.name.clone(),
            joined_at_unix_ms: self.joined_at_unix_ms,
            can_publish: self.can_publish,
            can_subscribe: self.can_subscribe,
            tracks: self
                .tracks
                .iter()
                .map(|t| track_info(t, &self.identity))
                .collect(),
            subscriptions: self.subscriptions.iter().cloned().collect(),
        }
    }

    /// Queues an event for the participant's `Events` reader, coalesced with what the reader
    /// has not read yet; it never waits and never cuts a reader off.
    pub(super) fn notify(&self, ev: ParticipantEvent) {
        self.events.push(ev);
    }
}

impl Registry {
    pub fn list_participants(&self, room: &str) -> Result<Vec<ParticipantInfo>, ControlError> {
        let name = RoomName::new(room)?;
        let room = self
            .rooms
            .get(&name)
            .ok_or_else(|| ControlError::RoomNotFound(name.to_string()))?;
        Ok(room.participants.values().map(Participant::info).collect())
    }

    pub fn remove_participant(
        &mut self,
        room: &str,
        identity: &str,
        reason: LeaveReason,
        now: Instant,
    ) -> Result<(), ControlError> {
        let room = RoomName::new(room)?;
        let identity = Identity::new(identity)?;
        self.room(&room)?.participant(&identity)?;
        self.remove(&room, &identity, reason, now);
        Ok(())
    }

    pub fn join(
        &mut self,
        who: &Joiner,
        now: Instant,
        now_unix_ms: i64,
    ) -> Result<JoinInfo, ControlError> {
        let Joiner {
            room,
            identity,
            name,
            can_publish,
            can_subscribe,
        } = who;
        let (can_publish, can_subscribe) = (*can_publish, *can_subscribe);
        if self.draining {
            return Err(ControlError::Draining);
        }
        let r = self.room(room)?;
        let replacing = r.participants.contains_key(identity);
        if !replacing
            && r.settings.max_participants > 0
            && r.participants.len() >= r.settings.max_participants as usize
        {
            return Err(ControlError::RoomFull {
                room: room.to_string(),
                max: r.settings.max_participants,
            });
        }
        if name.len() > 256 {
            return Err(ControlError::InvalidArgument(
                "the display name is longer than 256 bytes".to_owned(),
            ));
        }
        if replacing {
            self.remove(room, identity, LeaveReason::Replaced, now);
        }
        let sub_id = self.new_transport_id();
        let p = Participant {
            sid: ParticipantSid::generate(),
            identity: identity.clone(),
            name: name.clone(),
            joined_at_unix_ms: now_unix_ms,
            can_publish,
            can_subscribe,
            publisher: None,
            subscriber: SubscriberTransport {
                id: sub_id,
                ice: IceCredentials::generate(),
                session_id: session_id(),
                offer: SubscriberOffer::default(),
                version: 1,
                last_offer: None,
                remote: None,
                added: false,
                on_shard: HashMap::new(),
                ssrcs: HashMap::new(),
                settings: HashMap::new(),
            },
            tracks: Vec::new(),
            subscriptions: BTreeSet::new(),
            events: EventQueue::new(),
        };
        self.transport_states.insert(sub_id, "new");
        self.transports.insert(
            sub_id,
            (room.clone(), identity.clone(), TransportRole::Subscriber),
        );
        let r = self.room(room)?;
        let info = p.info();
        r.notify_others(identity, &ParticipantEvent::Joined(info.clone()));
        r.participants.insert(identity.clone(), p);
        r.empty_since = None;
        tracing::info!(room = %room, %identity, "participant joined");
        // Auto-subscribe to everything already published.
        if can_subscribe {
            let existing: Vec<TrackSid> = r
                .participants
                .values()
                .filter(|o| &o.identity != identity)
                .flat_map(|o| o.tracks.iter().map(|t| t.sid.clone()))
                .collect();
            for sid in existing {
                self.subscribe_track(room, identity, &sid);
            }
        }
        let shard = self.room(room)?.shard;
        let candidates = self.candidates(shard);
        let r = self.room(room)?;
        let others = r
            .participants
            .values()
            .filter(|o| &o.identity != identity)
            .map(Participant::info)
            .collect();
        let participant = r.participant(identity)?.info();
        Ok(JoinInfo {
            room: r.info(),
            participant,
            others,
            candidates,
        })
    }

    /// The reader of a participant's events, starting with what is pending since Join (each
    /// subject's latest event); a second call ends the first reader's stream and takes over.
    pub fn events(
        &mut self,
        room: &RoomName,
        identity: &Identity,
    ) -> Result<EventReader, ControlError> {
        Ok(self.room(room)?.participant(identity)?.events.reader())
    }

    pub fn leave(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        now: Instant,
    ) -> Result<(), ControlError> {
        self.room(room)?.participant(identity)?;
        self.remove(room, identity, LeaveReason::Left, now);
        Ok(())
    }

    /// Disconnects everyone (shutdown).
    pub fn close_all(&mut self, now: Instant) {
        let all: Vec<(RoomName, Identity)> = self
            .rooms
            .values()
            .flat_map(|r| r.participants.keys().map(|i| (r.name.clone(), i.clone())))
            .collect();
        for (room, identity) in all {
            self.remove(&room, &identity, LeaveReason::ServerShutdown, now);
        }
    }

    /// Forgets a participant who is no longer in its room: its transports leave the shard, its
    /// event counts join the totals, and dropping it ends its `Events` stream once the stream
    /// has read what is pending.
    pub(super) fn retire(&mut self, shard: ShardId, p: Participant) {
        self.retired_events += p.events.counts();
        let mut ids = vec![p.subscriber.id];
        ids.extend(p.publisher.as_ref().map(|t| t.id));
        for id in ids {
            self.transports.remove(&id);
            self.transport_states.remove(&id);
            let added = id != p.subscriber.id || p.subscriber.added;
            if added {
                self.send_to_shard(shard, ShardCommand::RemoveTransport(id));
            }
        }
    }

    /// Removes a participant who is known to exist.
    pub(super) fn remove(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        reason: LeaveReason,
        now: Instant,
    ) {
        let Ok(r) = self.room(room) else { return };
        let Some(p) = r.participants.remove(identity) else {
            return;
        };
        if r.participants.is_empty() {
            r.empty_since = Some(now);
        }
        let shard = r.shard;
        let left = ParticipantEvent::Left {
            identity: identity.clone(),
            sid: p.sid.clone(),
            reason,
        };
        p.notify(left.clone());
        // Others see the tracks go before the participant does.
        let tracks: Vec<TrackSid> = p.tracks.iter().map(|t| t.sid.clone()).collect();
        for sid in &tracks {
            self.unpublish_from_others(room, identity, sid);
        }
        for t in &p.tracks {
            self.send_to_shard(shard, ShardCommand::UnpublishTrack(t.num));
        }
        if let Ok(r) = self.room(room) {
            r.notify_others(identity, &left);
        }
        self.retire(shard, p);
        tracing::info!(room = %room, %identity, ?reason, "participant left");
    }
}
