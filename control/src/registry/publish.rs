//! Publishing: the publisher transport, its tracks, and what others hear of them.
//!
//! A publish is four steps: negotiate (the answer, the transport and the track changes, worked
//! out from the current state alone), tell the shard, commit, announce to the others. The
//! publisher waits on the shard: a command it refuses is the publisher's error (and what it
//! took of the call is taken back), while what others' subscriptions need is only logged.

use std::collections::HashMap;
use std::sync::Arc;

use super::{ControlError, Participant, Registry, Room, ShardChange, session_id};
use crate::events::{ParticipantEvent, TrackInfo};
use crate::ice::IceCredentials;
use crate::ids::{Identity, RoomName, ShardId, TrackSid, TransportId};
use crate::negotiate::{
    self, LocalTransport, PublishAnswer, PublishedMedia, Rejection, RemoteTransport,
};
use crate::plane::{ShardCommand, TrackId, TrackSource, TrackSpec, TransportRole, TransportSpec};
use crate::sdp::{self, SessionDescription};

/// What `Publish` returns.
#[derive(Debug, Clone)]
pub struct PublishResult {
    pub answer: String,
    pub tracks: Vec<TrackInfo>,
    pub rejected: Vec<Rejection>,
}

#[derive(Clone)]
pub(super) struct Track {
    pub(super) sid: TrackSid,
    /// The shards' number for it.
    pub(super) num: TrackId,
    pub(super) name: String,
    pub(super) source: TrackSource,
    pub(super) muted: bool,
    pub(super) media: PublishedMedia,
}

/// What a publisher says of one of its tracks (by mid) beside its offer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackLabel {
    pub name: String,
    pub source: TrackSource,
}

pub(super) struct PublisherTransport {
    pub(super) id: TransportId,
    pub(super) ice: IceCredentials,
    pub(super) remote: RemoteTransport,
    pub(super) session_id: String,
    pub(super) version: u64,
}

/// A publish worked out against the current state before anything changes.
struct PublishPlan {
    shard: ShardId,
    answer: PublishAnswer,
    /// The publisher transport after this publish.
    transport: PublisherTransport,
    /// It did not exist before.
    is_new: bool,
    tracks: TrackChanges,
    /// What the shard must hear, the transport first (nothing if it has it as it is), then
    /// the tracks.
    shard_changes: Vec<ShardChange>,
}

/// What a publish does to the publisher's tracks. Tracks whose mid still sends are kept (and
/// published to the shard again if their media changed), new mids become new tracks, the rest
/// end.
struct TrackChanges {
    /// The tracks after the publish, in the answer's order.
    tracks: Vec<Track>,
    /// What the shard must hear: every publish, re-publish and unpublish, each with its undo.
    shard_changes: Vec<ShardChange>,
    added: Vec<TrackSid>,
    removed: Vec<TrackSid>,
    /// The next free track number.
    next_track: u64,
}

impl TrackChanges {
    fn new(
        old: &[Track],
        media: Vec<PublishedMedia>,
        labels: &HashMap<String, TrackLabel>,
        publisher: TransportId,
        mut next_track: u64,
    ) -> Self {
        let mut old = old.to_vec();
        let (mut tracks, mut shard_changes, mut added) = (Vec::new(), Vec::new(), Vec::new());
        let publish = |track, media: &PublishedMedia, source| {
            ShardCommand::PublishTrack(TrackSpec {
                track,
                publisher,
                media: media.clone(),
                source,
            })
        };
        for media in media {
            match old
                .iter()
                .position(|t| t.media.mid == media.mid && t.media.kind == media.kind)
            {
                Some(i) => {
                    let mut t = old.swap_remove(i);
                    let label = labels.get(&media.mid);
                    let source = label.map_or(t.source, |l| l.source);
                    if t.media != media || t.source != source {
                        shard_changes.push(ShardChange {
                            apply: publish(t.num, &media, source),
                            undo: publish(t.num, &t.media, t.source),
                        });
                    }
                    t.media = media;
                    t.source = source;
                    if let Some(l) = label {
                        t.name = l.name.clone();
                    }
                    tracks.push(t);
                }
                None => {
                    let num = TrackId(next_track);
                    next_track += 1;
                    let label = labels.get(&media.mid).cloned().unwrap_or_default();
                    shard_changes.push(ShardChange {
                        apply: publish(num, &media, label.source),
                        undo: ShardCommand::UnpublishTrack(num),
                    });
                    let t = Track {
                        sid: TrackSid::generate(),
                        num,
                        name: label.name,
                        source: label.source,
                        muted: false,
                        media,
                    };
                    added.push(t.sid.clone());
                    tracks.push(t);
                }
            }
        }
        let mut removed = Vec::new();
        for t in old {
            shard_changes.push(ShardChange {
                apply: ShardCommand::UnpublishTrack(t.num),
                undo: publish(t.num, &t.media, t.source),
            });
            removed.push(t.sid);
        }
        TrackChanges {
            tracks,
            shard_changes,
            added,
            removed,
            next_track,
        }
    }
}

/// What others hear of a committed publish.
struct Published {
    /// All the publisher's tracks.
    tracks: Vec<TrackInfo>,
    added: Vec<TrackSid>,
    removed: Vec<TrackSid>,
}

pub(super) fn track_info(t: &Track, publisher: &Identity) -> TrackInfo {
    TrackInfo {
        sid: t.sid.clone(),
        kind: t.media.kind,
        mid: t.media.mid.clone(),
        name: t.name.clone(),
        muted: t.muted,
        mime_type: t
            .media
            .codecs
            .first()
            .map(|c| c.name().mime_type())
            .unwrap_or_default(),
        rids: t
            .media
            .encodings
            .iter()
            .filter_map(|e| e.rid.clone())
            .collect(),
        publisher: publisher.clone(),
        source: t.source,
    }
}

impl Registry {
    pub fn mute_track(
        &mut self,
        room: &str,
        identity: &str,
        track: &str,
        muted: bool,
    ) -> Result<TrackInfo, ControlError> {
        let room = RoomName::new(room)?;
        let identity = Identity::new(identity)?;
        let sid =
            TrackSid::parse(track).ok_or_else(|| ControlError::TrackNotFound(track.to_owned()))?;
        let plane = Arc::clone(&self.plane);
        let r = self.room(&room)?;
        let shard = r.shard;
        let t = r
            .participant(&identity)?
            .tracks
            .iter_mut()
            .find(|t| t.sid == sid)
            .ok_or_else(|| ControlError::TrackNotFound(track.to_owned()))?;
        let changed = t.muted != muted;
        if changed {
            // The shard first: if it refuses, nothing changes and nobody hears of it.
            plane.send(
                shard,
                ShardCommand::MuteTrack {
                    track: t.num,
                    muted,
                },
            )?;
            t.muted = muted;
        }
        let info = track_info(t, &identity);
        if changed {
            let ev = ParticipantEvent::TrackMuted {
                track: sid,
                publisher: identity.clone(),
                muted,
            };
            for p in r.participants.values() {
                p.notify(ev.clone());
            }
        }
        Ok(info)
    }

    pub fn publish(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        offer: &str,
        labels: &HashMap<String, TrackLabel>,
    ) -> Result<PublishResult, ControlError> {
        self.publish_with(room, identity, offer, labels, false)
    }

    /// New ICE credentials for the publisher transport, in the answer to the client's new offer.
    pub(super) fn restart_publisher_ice(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        offer: &str,
    ) -> Result<String, ControlError> {
        if self.room_ref(room)?.member(identity)?.publisher.is_none() {
            return Err(ControlError::FailedPrecondition(
                "nothing has been published yet; call Publish first".to_owned(),
            ));
        }
        Ok(self
            .publish_with(room, identity, offer, &HashMap::new(), true)?
            .answer)
    }

    /// Negotiate, tell the shard, commit, announce. A call that fails changes nothing: a
    /// negotiation error before the shard hears anything, a shard's refusal after what it took
    /// of this call is taken back (see [`Registry::apply_on_shard`]).
    fn publish_with(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        offer: &str,
        labels: &HashMap<String, TrackLabel>,
        restart_ice: bool,
    ) -> Result<PublishResult, ControlError> {
        let offer = sdp::parse(offer)?;
        let mut plan = self.negotiate_publish(room, identity, &offer, labels, restart_ice)?;
        self.reserve_ids(&plan);
        self.apply_on_shard(plan.shard, std::mem::take(&mut plan.shard_changes))?;
        let answer = plan.answer.answer.to_string();
        let rejected = plan.answer.rejected.clone();
        let changes = self.commit_publish(room, identity, plan)?;
        self.announce_publish(room, identity, &changes)?;
        Ok(PublishResult {
            answer,
            tracks: changes.tracks,
            rejected,
        })
    }

    /// Works out the answer and everything it changes, from the current state alone.
    fn negotiate_publish(
        &self,
        room: &RoomName,
        identity: &Identity,
        offer: &SessionDescription,
        labels: &HashMap<String, TrackLabel>,
        restart_ice: bool,
    ) -> Result<PublishPlan, ControlError> {
        let r = self.room_ref(room)?;
        let p = r.member(identity)?;
        if !p.can_publish {
            return Err(ControlError::PublishNotAllowed);
        }
        let (answer, transport) = self.answer_publisher(r.shard, p, offer, restart_ice)?;
        let mut tracks = TrackChanges::new(
            &p.tracks,
            answer.media.clone(),
            labels,
            transport.id,
            self.next_track,
        );
        let spec = self.publisher_spec(r, p, &transport);
        let transport_change = match &p.publisher {
            None => Some(ShardChange {
                apply: ShardCommand::AddTransport(spec),
                undo: ShardCommand::RemoveTransport(transport.id),
            }),
            Some(t) if t.remote != transport.remote || t.ice != transport.ice => {
                Some(ShardChange {
                    apply: ShardCommand::UpdateTransport(spec),
                    undo: ShardCommand::UpdateTransport(self.publisher_spec(r, p, t)),
                })
            }
            Some(_) => None,
        };
        let shard_changes = transport_change
            .into_iter()
            .chain(std::mem::take(&mut tracks.shard_changes))
            .collect();
        Ok(PublishPlan {
            shard: r.shard,
            is_new: p.publisher.is_none(),
            answer,
            transport,
            tracks,
            shard_changes,
        })
    }

    /// Answers `offer` on the publisher transport, with its current ICE credentials unless this
    /// is an ICE restart: one asked for, or one the peer started by changing its own
    /// credentials in a renegotiation (RFC 8445 §9), where ours change too.
    fn answer_publisher(
        &self,
        shard: ShardId,
        p: &Participant,
        offer: &SessionDescription,
        restart_ice: bool,
    ) -> Result<(PublishAnswer, PublisherTransport), ControlError> {
        let (mut ice, session_id, version, id) = match &p.publisher {
            Some(t) if !restart_ice => (t.ice.clone(), t.session_id.clone(), t.version + 1, t.id),
            Some(t) => (
                IceCredentials::generate(),
                t.session_id.clone(),
                t.version + 1,
                t.id,
            ),
            None => (
                IceCredentials::generate(),
                session_id(),
                2,
                TransportId(self.next_transport),
            ),
        };
        let candidates = self.candidates(shard);
        let answer_with = |ice: &IceCredentials| {
            let local = LocalTransport {
                ice,
                fingerprint: &self.config.identity.fingerprint,
                candidates: &candidates,
                session_id: &session_id,
                session_version: version,
            };
            negotiate::answer_publish(offer, &local)
        };
        let mut answer = answer_with(&ice)?;
        if let Some(t) = &p.publisher
            && t.remote.ice_ufrag != answer.remote.ice_ufrag
            && t.ice == ice
        {
            ice = IceCredentials::generate();
            answer = answer_with(&ice)?;
        }
        let transport = PublisherTransport {
            id,
            ice,
            remote: answer.remote.clone(),
            session_id,
            version,
        };
        Ok((answer, transport))
    }

    /// What the shard needs to run `t`, `p`'s publisher transport.
    fn publisher_spec(&self, r: &Room, p: &Participant, t: &PublisherTransport) -> TransportSpec {
        TransportSpec {
            id: t.id,
            room: r.sid.clone(),
            participant: p.sid.clone(),
            role: TransportRole::Publisher,
            local_ice: t.ice.clone(),
            remote: Some(t.remote.clone()),
            srtp_profiles: self.config.srtp_profiles.clone(),
        }
    }

    /// Takes the plan's new transport and track numbers for good before the shard sees them:
    /// even if this call fails, an id a shard may have seen is never handed out again.
    fn reserve_ids(&mut self, plan: &PublishPlan) {
        if plan.is_new {
            self.next_transport = self.next_transport.max(plan.transport.id.0 + 1);
        }
        self.next_track = self.next_track.max(plan.tracks.next_track);
    }

    /// Makes the plan the registry's state; returns what changed for others.
    fn commit_publish(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        plan: PublishPlan,
    ) -> Result<Published, ControlError> {
        let id = plan.transport.id;
        if plan.is_new {
            self.transport_states.insert(id, "new");
            self.transports.insert(
                id,
                (room.clone(), identity.clone(), TransportRole::Publisher),
            );
        }
        let p = self.room(room)?.participant(identity)?;
        p.publisher = Some(plan.transport);
        p.tracks = plan.tracks.tracks;
        Ok(Published {
            tracks: p.tracks.iter().map(|t| track_info(t, identity)).collect(),
            added: plan.tracks.added,
            removed: plan.tracks.removed,
        })
    }

    /// Others hear of the tracks that ended, then of the new ones, and subscribe to them.
    fn announce_publish(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        changes: &Published,
    ) -> Result<(), ControlError> {
        for sid in &changes.removed {
            self.unpublish_from_others(room, identity, sid);
        }
        for info in changes
            .tracks
            .iter()
            .filter(|t| changes.added.contains(&t.sid))
        {
            let r = self.room(room)?;
            r.notify_others(identity, &ParticipantEvent::TrackPublished(info.clone()));
            let subscribers: Vec<Identity> = r
                .participants
                .values()
                .filter(|o| &o.identity != identity && o.can_subscribe)
                .map(|o| o.identity.clone())
                .collect();
            for s in subscribers {
                self.subscribe_track(room, &s, &info.sid);
            }
        }
        Ok(())
    }

    pub(super) fn unpublish_from_others(
        &mut self,
        room: &RoomName,
        publisher: &Identity,
        sid: &TrackSid,
    ) {
        let Ok(r) = self.room(room) else { return };
        let ev = ParticipantEvent::TrackUnpublished {
            track: sid.clone(),
            publisher: publisher.clone(),
        };
        r.notify_others(publisher, &ev);
        let subscribers: Vec<Identity> = r
            .participants
            .values()
            .filter(|p| p.subscriptions.contains(sid))
            .map(|p| p.identity.clone())
            .collect();
        for s in subscribers {
            self.unsubscribe_track(room, &s, sid);
        }
    }
}
