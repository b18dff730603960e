//! What the shards report back: transport states and active speakers, turned into
//! participants' events.

use super::Registry;
use crate::events::{ParticipantEvent, Speaker};
use crate::ids::ShardId;
use crate::ids::TransportId;
use crate::plane::{Quality, ShardEvent, TrackId, TransportRole, TransportState};

impl Registry {
    /// Applies a shard's report.
    pub fn handle_shard_event(&mut self, ev: ShardEvent) {
        match ev {
            ShardEvent::TransportState { id, state } => {
                let Some((room, identity, role)) = self.transports.get(&id).cloned() else {
                    return;
                };
                self.transport_states.insert(
                    id,
                    match state {
                        TransportState::Connected => "connected",
                        TransportState::Failed(_) | TransportState::ConsentLost => "failed",
                        TransportState::Closed => "closed",
                    },
                );
                let Ok(p) = self.room(&room).and_then(|r| r.participant(&identity)) else {
                    return;
                };
                p.notify(ParticipantEvent::TransportState {
                    role,
                    state: state.clone(),
                });
                if matches!(
                    state,
                    TransportState::Failed(_) | TransportState::ConsentLost
                ) && role == TransportRole::Publisher
                {
                    tracing::info!(room = %room, %identity, ?state, "publisher transport lost");
                }
            }
            ShardEvent::ActiveSpeakers { shard, speakers } => {
                self.active_speakers(shard, &speakers);
            }
            ShardEvent::SubscriptionQuality(reports) => {
                for (subscriber, track, quality) in reports {
                    self.subscription_quality(subscriber, track, quality);
                }
            }
            ShardEvent::LayersWanted { track, active } => self.layers_wanted(track, &active),
        }
    }

    /// Tells a publisher which layers of one of its tracks are needed (by rid, from what it
    /// published; a report about a track that is gone, or of another shape, is dropped).
    fn layers_wanted(&mut self, num: TrackId, active: &[bool]) {
        for r in self.rooms.values() {
            for p in r.participants.values() {
                let Some(t) = p.tracks.iter().find(|t| t.num == num) else {
                    continue;
                };
                let rids: Vec<Option<String>> = if t.media.encodings.is_empty() {
                    vec![None]
                } else {
                    t.media.encodings.iter().map(|e| e.rid.clone()).collect()
                };
                if rids.len() != active.len() {
                    tracing::debug!(track = %t.sid, "layers wanted for another shape of the track");
                    return;
                }
                p.notify(ParticipantEvent::LayersWanted {
                    track: t.sid.clone(),
                    layers: rids.into_iter().zip(active.iter().copied()).collect(),
                });
                return;
            }
        }
    }

    /// Tells a subscriber what one of its video subscriptions is sent now (a report about a
    /// transport or a track that is gone by now is dropped).
    fn subscription_quality(&mut self, subscriber: TransportId, num: TrackId, quality: Quality) {
        let Some((room, identity, TransportRole::Subscriber)) = self.transports.get(&subscriber)
        else {
            return;
        };
        let (room, identity) = (room.clone(), identity.clone());
        let Ok(r) = self.room(&room) else { return };
        let Some(track) = r
            .participants
            .values()
            .find_map(|p| p.tracks.iter().find(|t| t.num == num))
            .map(|t| t.sid.clone())
        else {
            return;
        };
        let Ok(p) = r.participant(&identity) else {
            return;
        };
        if p.subscriptions.contains(&track) {
            p.notify(ParticipantEvent::SubscriptionQuality { track, quality });
        }
    }

    /// A shard's audible tracks, split by room: each room on the shard whose speakers changed
    /// hears the new list.
    fn active_speakers(&mut self, shard: ShardId, speakers: &[(TrackId, f32)]) {
        for room in self.rooms.values_mut().filter(|r| r.shard == shard) {
            let list: Vec<Speaker> = speakers
                .iter()
                .filter_map(|(num, level)| {
                    room.participants.values().find_map(|p| {
                        let t = p.tracks.iter().find(|t| t.num == *num)?;
                        Some(Speaker {
                            identity: p.identity.clone(),
                            track: t.sid.clone(),
                            level: *level,
                        })
                    })
                })
                .collect();
            if list.iter().map(|s| &s.track).ne(room.speakers.iter()) {
                room.speakers = list.iter().map(|s| s.track.clone()).collect();
                for p in room.participants.values() {
                    p.notify(ParticipantEvent::ActiveSpeakers(list.clone()));
                }
            }
        }
    }
}
