//! Publishing: the publisher transport, its tracks, and what others hear of them.

use std::collections::HashMap;

use super::{ControlError, ParticipantEvent, Registry, session_id};
use crate::codec::MediaKind;
use crate::ice::IceCredentials;
use crate::ids::{Identity, RoomName, TrackSid, TransportId};
use crate::negotiate::{self, LocalTransport, PublishedMedia, Rejection, RemoteTransport};
use crate::plane::{ShardCommand, TrackId, TrackSpec, TransportRole, TransportSpec};
use crate::sdp;

/// A published track as others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    pub sid: TrackSid,
    pub kind: MediaKind,
    pub mid: String,
    pub name: String,
    pub muted: bool,
    pub mime_type: String,
    pub rids: Vec<String>,
    pub publisher: Identity,
}

/// What `Publish` returns.
#[derive(Debug, Clone)]
pub struct PublishResult {
    pub answer: String,
    pub tracks: Vec<TrackInfo>,
    pub rejected: Vec<Rejection>,
}

pub(super) struct Track {
    pub(super) sid: TrackSid,
    /// The shards' number for it.
    pub(super) num: TrackId,
    pub(super) name: String,
    pub(super) muted: bool,
    pub(super) media: PublishedMedia,
}

pub(super) struct PublisherTransport {
    pub(super) id: TransportId,
    pub(super) ice: IceCredentials,
    pub(super) remote: RemoteTransport,
    pub(super) session_id: String,
    pub(super) version: u64,
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
        let r = self.room(&room)?;
        let p = r.participant(&identity)?;
        let t = p
            .tracks
            .iter_mut()
            .find(|t| t.sid == sid)
            .ok_or_else(|| ControlError::TrackNotFound(track.to_owned()))?;
        let changed = t.muted != muted;
        t.muted = muted;
        let (num, info) = (t.num, track_info(t, &identity));
        if changed {
            let ev = ParticipantEvent::TrackMuted {
                track: sid,
                publisher: identity.clone(),
                muted,
            };
            for p in r.participants.values() {
                p.notify(ev.clone());
            }
            let shard = r.shard;
            self.send_to_shard(shard, ShardCommand::MuteTrack { track: num, muted });
        }
        Ok(info)
    }

    pub fn publish(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        offer: &str,
        names: &HashMap<String, String>,
    ) -> Result<PublishResult, ControlError> {
        self.publish_with(room, identity, offer, names, false)
    }

    pub(super) fn publish_with(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        offer: &str,
        names: &HashMap<String, String>,
        restart_ice: bool,
    ) -> Result<PublishResult, ControlError> {
        let offer = sdp::parse(offer)?;
        let shard = self.room(room)?.shard;
        let candidates = self.candidates(shard);
        let identity_cert = self.config.identity.clone();
        let fresh_id = TransportId(self.next_transport);
        let mut next_track = self.next_track;
        let srtp_profiles = self.config.srtp_profiles.clone();
        let r = self.room(room)?;
        let room_sid = r.sid.clone();
        let p = r.participant(identity)?;
        if !p.can_publish {
            return Err(ControlError::PublishNotAllowed);
        }
        // Negotiate first, commit after: a failed negotiation changes nothing.
        let (mut ice, session, version, id) = match &p.publisher {
            Some(t) if !restart_ice => (t.ice.clone(), t.session_id.clone(), t.version + 1, t.id),
            Some(t) => (
                IceCredentials::generate(),
                t.session_id.clone(),
                t.version + 1,
                t.id,
            ),
            None => (IceCredentials::generate(), session_id(), 2, fresh_id),
        };
        let answer_with = |ice: &IceCredentials| {
            let local = LocalTransport {
                ice,
                fingerprint: &identity_cert.fingerprint,
                candidates: &candidates,
                session_id: &session,
                session_version: version,
            };
            negotiate::answer_publish(&offer, &local)
        };
        let mut answer = answer_with(&ice)?;
        // New peer credentials in a renegotiation are an ICE restart (RFC 8445 §9): ours change too.
        if let Some(t) = &p.publisher
            && t.remote.ice_ufrag != answer.remote.ice_ufrag
            && t.ice == ice
        {
            ice = IceCredentials::generate();
            answer = answer_with(&ice)?;
        }
        let is_new = p.publisher.is_none();
        let spec = TransportSpec {
            id,
            room: room_sid,
            participant: p.sid.clone(),
            role: TransportRole::Publisher,
            local_ice: ice.clone(),
            remote: Some(answer.remote.clone()),
            srtp_profiles,
        };
        let changed = p
            .publisher
            .as_ref()
            .is_none_or(|t| t.remote != answer.remote || t.ice != ice);
        if changed {
            let cmd = if is_new {
                ShardCommand::AddTransport(spec)
            } else {
                ShardCommand::UpdateTransport(spec)
            };
            self.plane.send(shard, cmd)?;
        }
        if is_new {
            self.next_transport += 1;
            self.transport_states.insert(id, "new");
            self.transports.insert(
                id,
                (room.clone(), identity.clone(), TransportRole::Publisher),
            );
        }
        let r = self.room(room)?;
        let p = r.participant(identity)?;
        p.publisher = Some(PublisherTransport {
            id,
            ice,
            remote: answer.remote.clone(),
            session_id: session,
            version,
        });
        // Tracks: keep those whose mid still sends, add new ones, drop the rest; the shard hears
        // of every change.
        let mut published = Vec::new();
        let mut kept = Vec::new();
        let mut shard_cmds = Vec::new();
        for media in answer.media {
            match p
                .tracks
                .iter()
                .position(|t| t.media.mid == media.mid && t.media.kind == media.kind)
            {
                Some(i) => {
                    let mut t = p.tracks.swap_remove(i);
                    if t.media != media {
                        shard_cmds.push(ShardCommand::PublishTrack(TrackSpec {
                            track: t.num,
                            publisher: id,
                            media: media.clone(),
                        }));
                    }
                    t.media = media;
                    if let Some(n) = names.get(&t.media.mid) {
                        t.name = n.clone();
                    }
                    kept.push(t);
                }
                None => {
                    let num = TrackId(next_track);
                    next_track += 1;
                    shard_cmds.push(ShardCommand::PublishTrack(TrackSpec {
                        track: num,
                        publisher: id,
                        media: media.clone(),
                    }));
                    let t = Track {
                        sid: TrackSid::generate(),
                        num,
                        name: names.get(&media.mid).cloned().unwrap_or_default(),
                        muted: false,
                        media,
                    };
                    published.push(t.sid.clone());
                    kept.push(t);
                }
            }
        }
        let mut removed = Vec::new();
        for t in p.tracks.drain(..) {
            shard_cmds.push(ShardCommand::UnpublishTrack(t.num));
            removed.push(t.sid);
        }
        p.tracks = kept;
        let tracks: Vec<TrackInfo> = p.tracks.iter().map(|t| track_info(t, identity)).collect();
        self.next_track = next_track;
        for cmd in shard_cmds {
            self.send_to_shard(shard, cmd);
        }
        for sid in &removed {
            self.unpublish_from_others(room, identity, sid);
        }
        for info in tracks.iter().filter(|t| published.contains(&t.sid)) {
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
        Ok(PublishResult {
            answer: answer.answer.to_string(),
            tracks,
            rejected: answer.rejected,
        })
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
