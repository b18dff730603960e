//! Subscribing: the subscriber transport Ringcast offers, the tracks it carries, and the
//! answers that tell the shard what to forward.

use std::collections::{BTreeSet, HashMap};

use super::{ControlError, Participant, ParticipantEvent, Registry, random_u32_nonzero};
use crate::codec::MediaKind;
use crate::dtls::DtlsIdentity;
use crate::ice::IceCredentials;
use crate::ids::{Identity, RoomName, TrackSid, TransportId};
use crate::negotiate::{
    self, LocalTransport, OutgoingTrack, Rejection, RemoteTransport, SubscriberOffer,
};
use crate::plane::{ShardCommand, SubscriptionSpec, TrackId, TransportRole, TransportSpec};
use crate::sdp::{self, Candidate, SessionDescription};

/// What `Subscribe` returns.
#[derive(Debug, Clone)]
pub struct SubscribeOffer {
    pub offer: String,
    pub version: u64,
    pub mid_to_track: Vec<(String, TrackSid)>,
}

pub(super) struct SubscriberTransport {
    pub(super) id: TransportId,
    pub(super) ice: IceCredentials,
    pub(super) session_id: String,
    pub(super) offer: SubscriberOffer,
    /// Bumped whenever the m-sections change; the next `Subscribe` builds this version.
    pub(super) version: u64,
    /// The last offer built, and its version.
    pub(super) last_offer: Option<(u64, SessionDescription)>,
    pub(super) remote: Option<RemoteTransport>,
    /// The shard knows this transport (from the first offer on).
    pub(super) added: bool,
    /// Subscriptions the shard forwards (from the answer that accepted them).
    pub(super) on_shard: HashMap<TrackSid, TrackId>,
    /// SSRCs Ringcast sends with, per subscribed track.
    pub(super) ssrcs: HashMap<TrackSid, (u32, Option<u32>)>,
}

impl Registry {
    pub fn update_subscriptions(
        &mut self,
        room: &str,
        identity: &str,
        tracks: &[String],
        subscribe: bool,
    ) -> Result<Vec<TrackSid>, ControlError> {
        let room = RoomName::new(room)?;
        let identity = Identity::new(identity)?;
        let r = self.room(&room)?;
        let p = r.participant(&identity)?;
        if subscribe && !p.can_subscribe {
            return Err(ControlError::SubscribeNotAllowed);
        }
        let mut sids = Vec::with_capacity(tracks.len());
        for t in tracks {
            let sid = TrackSid::parse(t).ok_or_else(|| ControlError::TrackNotFound(t.clone()))?;
            match r.find_track(&sid) {
                Some((publisher, _)) if publisher.identity == identity => {
                    return Err(ControlError::InvalidArgument(format!(
                        "track `{t}` is the subscriber's own"
                    )));
                }
                Some(_) => sids.push(sid),
                None if !subscribe => sids.push(sid),
                None => return Err(ControlError::TrackNotFound(t.clone())),
            }
        }
        for sid in sids {
            if subscribe {
                self.subscribe_track(&room, &identity, &sid);
            } else {
                self.unsubscribe_track(&room, &identity, &sid);
            }
        }
        let r = self.room(&room)?;
        Ok(r.participant(&identity)?
            .subscriptions
            .iter()
            .cloned()
            .collect())
    }

    pub fn subscribe(
        &mut self,
        room: &RoomName,
        identity: &Identity,
    ) -> Result<SubscribeOffer, ControlError> {
        let shard = self.room(room)?.shard;
        let candidates = self.candidates(shard);
        let cert = self.config.identity.clone();
        let p = self.room(room)?.participant(identity)?;
        if !p.can_subscribe {
            return Err(ControlError::SubscribeNotAllowed);
        }
        self.sync_subscriber_transport(room, identity)?;
        let p = self.room(room)?.participant(identity)?;
        Ok(build_subscriber_offer(p, &cert, &candidates))
    }

    /// New ICE credentials for the subscriber transport, in a new offer.
    pub(super) fn restart_subscriber_ice(
        &mut self,
        room: &RoomName,
        identity: &Identity,
    ) -> Result<(String, u64), ControlError> {
        let shard = self.room(room)?.shard;
        let candidates = self.candidates(shard);
        let cert = self.config.identity.clone();
        let p = self.room(room)?.participant(identity)?;
        if !p.can_subscribe {
            return Err(ControlError::SubscribeNotAllowed);
        }
        p.subscriber.ice = IceCredentials::generate();
        p.subscriber.version += 1;
        if p.subscriber.added {
            self.sync_subscriber_transport(room, identity)?;
        }
        let p = self.room(room)?.participant(identity)?;
        let o = build_subscriber_offer(p, &cert, &candidates);
        Ok((o.offer, o.version))
    }

    /// Gives the shard the subscriber transport's current parameters: added on the first offer,
    /// updated after an answer or an ICE restart.
    pub(super) fn sync_subscriber_transport(
        &mut self,
        room: &RoomName,
        identity: &Identity,
    ) -> Result<(), ControlError> {
        let srtp_profiles = self.config.srtp_profiles.clone();
        let r = self.room(room)?;
        let (shard, room_sid) = (r.shard, r.sid.clone());
        let p = r.participant(identity)?;
        let sub = &p.subscriber;
        let spec = TransportSpec {
            id: sub.id,
            room: room_sid,
            participant: p.sid.clone(),
            role: TransportRole::Subscriber,
            local_ice: sub.ice.clone(),
            remote: sub.remote.clone(),
            srtp_profiles,
        };
        let cmd = if sub.added {
            ShardCommand::UpdateTransport(spec)
        } else {
            ShardCommand::AddTransport(spec)
        };
        self.plane.send(shard, cmd)?;
        self.room(room)?.participant(identity)?.subscriber.added = true;
        Ok(())
    }

    pub fn subscribe_answer(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        version: u64,
        answer: &str,
    ) -> Result<Vec<Rejection>, ControlError> {
        let answer = sdp::parse(answer)?;
        let p = self.room(room)?.participant(identity)?;
        let sub = &mut p.subscriber;
        let Some((offered_version, offered)) = &sub.last_offer else {
            return Err(ControlError::FailedPrecondition(
                "no subscriber offer has been made; call Subscribe first".to_owned(),
            ));
        };
        if *offered_version != version {
            return Err(ControlError::FailedPrecondition(format!(
                "the answer is for offer {version} but the latest offer is {offered_version}; call Subscribe again"
            )));
        }
        let mut offer_state = sub.offer.clone();
        let got = offer_state.accept_answer(offered, &answer)?;
        let changed = !got.remote.ice_ufrag.is_empty() && sub.remote.as_ref() != Some(&got.remote);
        if !got.rejected.is_empty() {
            // Rejected slots change the next offer.
            sub.version += 1;
        }
        sub.offer = offer_state;
        let sub_id = sub.id;
        if changed {
            sub.remote = Some(got.remote.clone());
            self.sync_subscriber_transport(room, identity)?;
        }
        self.sync_subscriptions(room, identity, sub_id, &got);
        Ok(got.rejected)
    }

    /// Tells the shard which tracks the subscriber transport now carries, as its answer accepted
    /// them: payload type, SSRCs, extension ids.
    pub(super) fn sync_subscriptions(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        sub_id: TransportId,
        answer: &negotiate::SubscriberAnswer,
    ) {
        let Ok(r) = self.room(room) else { return };
        let shard = r.shard;
        let Some(p) = r.participants.get(identity) else {
            return;
        };
        let mut sending: Vec<(TrackSid, OutgoingTrack, String)> = Vec::new();
        for slot in &p.subscriber.offer.slots {
            if let negotiate::SlotState::Sending(t) = &slot.state
                && let Some(sid) = TrackSid::parse(&t.track)
            {
                sending.push((sid, t.clone(), slot.mid.clone()));
            }
        }
        let nums: Vec<Option<TrackId>> = sending
            .iter()
            .map(|(sid, _, _)| r.find_track(sid).map(|(_, t)| t.num))
            .collect();
        let Ok(p) = r.participant(identity) else {
            return;
        };
        let mut cmds = Vec::new();
        let live: Vec<&TrackSid> = sending.iter().map(|(sid, _, _)| sid).collect();
        p.subscriber.on_shard.retain(|sid, num| {
            let keep = live.contains(&sid);
            if !keep {
                cmds.push(ShardCommand::Unsubscribe {
                    track: *num,
                    subscriber: sub_id,
                });
            }
            keep
        });
        for ((sid, t, mid), num) in sending.into_iter().zip(nums) {
            let Some(num) = num else { continue };
            if p.subscriber.on_shard.contains_key(&sid) {
                continue;
            }
            let (pt, rtx_pt) = p
                .subscriber
                .offer
                .payload_types
                .get_or_assign(&t.codec, &t.fmtp);
            let exts = answer
                .extensions
                .iter()
                .find(|(m, _)| *m == mid)
                .map(|(_, e)| e.clone())
                .unwrap_or_default();
            let rtx_ssrc = t.rtx_ssrc.filter(|_| !answer.rtx_declined.contains(&mid));
            p.subscriber.on_shard.insert(sid, num);
            cmds.push(ShardCommand::Subscribe(SubscriptionSpec {
                track: num,
                subscriber: sub_id,
                ssrc: t.ssrc,
                rtx_ssrc,
                payload_type: pt,
                rtx_payload_type: rtx_ssrc.and(rtx_pt),
                extensions: exts,
            }));
        }
        for c in cmds {
            self.send_to_shard(shard, c);
        }
    }

    pub(super) fn subscribe_track(&mut self, room: &RoomName, identity: &Identity, sid: &TrackSid) {
        let Ok(r) = self.room(room) else { return };
        let Some((publisher, track)) = r.find_track(sid) else {
            return;
        };
        let Some(codec) = track.media.codecs.first() else {
            return;
        };
        let kind = track.media.kind;
        let stream_id = publisher.sid.to_string();
        let (codec, fmtp) = (codec.params.clone(), codec.fmtp.clone());
        let Ok(p) = r.participant(identity) else {
            return;
        };
        if !p.subscriptions.insert(sid.clone()) {
            return;
        }
        let used: BTreeSet<u32> = p
            .subscriber
            .ssrcs
            .values()
            .flat_map(|(a, b)| std::iter::once(*a).chain(*b))
            .collect();
        let fresh = || loop {
            let s = random_u32_nonzero();
            if !used.contains(&s) {
                return s;
            }
        };
        let ssrc = fresh();
        let rtx = (kind == MediaKind::Video).then(|| {
            loop {
                let s = fresh();
                if s != ssrc {
                    return s;
                }
            }
        });
        p.subscriber.ssrcs.insert(sid.clone(), (ssrc, rtx));
        p.subscriber.offer.add_track(
            kind,
            OutgoingTrack {
                track: sid.to_string(),
                stream_id: stream_id.clone(),
                codec,
                fmtp,
                ssrc,
                rtx_ssrc: rtx,
                // The publisher's CNAME groups its audio and video for lip sync.
                cname: stream_id,
            },
        );
        p.subscriber.version += 1;
        let version = p.subscriber.version;
        p.notify(ParticipantEvent::SubscriberOfferReady { version });
    }

    pub(super) fn unsubscribe_track(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        sid: &TrackSid,
    ) {
        let Ok(p) = self.room(room).and_then(|r| r.participant(identity)) else {
            return;
        };
        if !p.subscriptions.remove(sid) {
            return;
        }
        p.subscriber.ssrcs.remove(sid);
        if p.subscriber.offer.remove_track(sid.as_str()).is_some() {
            p.subscriber.version += 1;
            let version = p.subscriber.version;
            p.notify(ParticipantEvent::SubscriberOfferReady { version });
        }
        // Stop forwarding now; the renegotiation follows.
        let sub_id = p.subscriber.id;
        if let Some(num) = p.subscriber.on_shard.remove(sid)
            && let Ok(shard) = self.room(room).map(|r| r.shard)
        {
            self.send_to_shard(
                shard,
                ShardCommand::Unsubscribe {
                    track: num,
                    subscriber: sub_id,
                },
            );
        }
    }
}

fn build_subscriber_offer(
    p: &mut Participant,
    cert: &DtlsIdentity,
    candidates: &[Candidate],
) -> SubscribeOffer {
    let sub = &mut p.subscriber;
    let version = sub.version;
    let local = LocalTransport {
        ice: &sub.ice,
        fingerprint: &cert.fingerprint,
        candidates,
        session_id: &sub.session_id,
        session_version: version + 1,
    };
    let offer = sub.offer.build(&local);
    let text = offer.to_string();
    let mid_to_track = sub
        .offer
        .slots
        .iter()
        .filter_map(|s| match &s.state {
            negotiate::SlotState::Sending(t) => {
                TrackSid::parse(&t.track).map(|sid| (s.mid.clone(), sid))
            }
            _ => None,
        })
        .collect();
    sub.last_offer = Some((version, offer));
    SubscribeOffer {
        offer: text,
        version,
        mid_to_track,
    }
}
