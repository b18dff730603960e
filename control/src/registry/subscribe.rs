//! Subscribing: the subscriber transport Ringcast offers, the tracks it carries, and the
//! answers that tell the shard what to forward.
//!
//! An answer is negotiated against a copy of the offer state, then the shard hears of it
//! (the transport's peer parameters, the subscriptions that start and stop), then it is
//! committed; a refusal undoes what the shard took and commits nothing. Subscriptions that
//! follow from other participants' calls (a new track, one that ends) change the offer and
//! wait for the next answer; only stopping one is sent at once, as a command no caller waits on.

use std::collections::{BTreeSet, HashMap};

use super::{
    ControlError, Participant, ParticipantEvent, Registry, Room, ShardChange, random_u32_nonzero,
};
use crate::codec::MediaKind;
use crate::dtls::DtlsIdentity;
use crate::ice::IceCredentials;
use crate::ids::{Identity, RoomName, TrackSid, TransportId};
use crate::negotiate::{
    self, LocalTransport, OutgoingTrack, Rejection, RemoteTransport, SubscriberOffer,
};
use crate::plane::{
    ShardCommand, SubscriptionSettings, SubscriptionSpec, TransportRole, TransportSpec,
};
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
    /// Subscriptions the shard forwards, as it was told them (from the answer that accepted
    /// them).
    pub(super) on_shard: HashMap<TrackSid, SubscriptionSpec>,
    /// SSRCs Ringcast sends with, per subscribed track.
    pub(super) ssrcs: HashMap<TrackSid, (u32, Option<u32>)>,
    /// What the subscriber asked of its subscriptions (none: the defaults).
    pub(super) settings: HashMap<TrackSid, SubscriptionSettings>,
}

/// A subscriber's answer worked out against the current state before anything changes.
struct AnswerPlan {
    /// The offer state with the answer accepted.
    offer: SubscriberOffer,
    /// The transport's new peer parameters, if they changed.
    remote: Option<RemoteTransport>,
    /// The subscriptions the shard forwards once it has taken `shard_changes`.
    on_shard: HashMap<TrackSid, SubscriptionSpec>,
    shard_changes: Vec<ShardChange>,
    rejected: Vec<Rejection>,
}

/// The subscriptions `sub` carries once `answer` is accepted into `offer`, with the shard
/// changes that get there from what the shard forwards now: subscriptions that ended stop,
/// new ones start.
fn subscriptions_on_shard(
    r: &Room,
    sub: &SubscriberTransport,
    offer: &mut SubscriberOffer,
    answer: &negotiate::SubscriberAnswer,
    changes: &mut Vec<ShardChange>,
) -> HashMap<TrackSid, SubscriptionSpec> {
    let mut sending: Vec<(TrackSid, OutgoingTrack, String)> = Vec::new();
    for slot in &offer.slots {
        if let negotiate::SlotState::Sending(t) = &slot.state
            && let Some(sid) = TrackSid::parse(&t.track)
        {
            sending.push((sid, t.clone(), slot.mid.clone()));
        }
    }
    let mut on_shard = sub.on_shard.clone();
    let live: Vec<&TrackSid> = sending.iter().map(|(sid, _, _)| sid).collect();
    on_shard.retain(|sid, spec| {
        let keep = live.contains(&sid);
        if !keep {
            changes.push(ShardChange {
                apply: ShardCommand::Unsubscribe {
                    track: spec.track,
                    subscriber: sub.id,
                },
                undo: ShardCommand::Subscribe(spec.clone()),
            });
        }
        keep
    });
    for (sid, t, mid) in sending {
        let Some((_, track)) = r.find_track(&sid) else {
            continue;
        };
        if on_shard.contains_key(&sid) {
            continue;
        }
        let (pt, rtx_pt) = offer.payload_types.get_or_assign(&t.codec, &t.fmtp);
        let exts = answer
            .extensions
            .iter()
            .find(|(m, _)| *m == mid)
            .map(|(_, e)| e.clone())
            .unwrap_or_default();
        let rtx_ssrc = t.rtx_ssrc.filter(|_| !answer.rtx_declined.contains(&mid));
        let spec = SubscriptionSpec {
            track: track.num,
            subscriber: sub.id,
            ssrc: t.ssrc,
            rtx_ssrc,
            payload_type: pt,
            rtx_payload_type: rtx_ssrc.and(rtx_pt),
            extensions: exts,
            settings: sub.settings.get(&sid).copied().unwrap_or_default(),
        };
        changes.push(ShardChange {
            apply: ShardCommand::Subscribe(spec.clone()),
            undo: ShardCommand::Unsubscribe {
                track: track.num,
                subscriber: sub.id,
            },
        });
        on_shard.insert(sid, spec);
    }
    on_shard
}

impl Registry {
    pub fn update_subscriptions(
        &mut self,
        room: &str,
        identity: &str,
        tracks: &[String],
        subscribe: bool,
        settings: Option<SubscriptionSettings>,
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
        for sid in &sids {
            if subscribe {
                self.subscribe_track(&room, &identity, sid);
            } else {
                self.unsubscribe_track(&room, &identity, sid);
            }
        }
        if let Some(settings) = settings.filter(|_| subscribe) {
            self.configure_subscriptions(&room, &identity, &sids, settings)?;
        }
        let r = self.room(&room)?;
        Ok(r.participant(&identity)?
            .subscriptions
            .iter()
            .cloned()
            .collect())
    }

    /// What `identity` asks of its subscriptions to `tracks` (each one it subscribes to):
    /// kept for the subscriptions to come, and told the shard at once for those it forwards.
    /// A refusal there leaves every setting as it was.
    pub fn update_subscription_settings(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        tracks: &[String],
        settings: SubscriptionSettings,
    ) -> Result<(), ControlError> {
        let p = self.room(room)?.participant(identity)?;
        let mut sids = Vec::with_capacity(tracks.len());
        for t in tracks {
            match TrackSid::parse(t) {
                Some(sid) if p.subscriptions.contains(&sid) => sids.push(sid),
                _ => {
                    return Err(ControlError::FailedPrecondition(format!(
                        "not subscribed to track `{t}`"
                    )));
                }
            }
        }
        self.configure_subscriptions(room, identity, &sids, settings)
    }

    fn configure_subscriptions(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        sids: &[TrackSid],
        settings: SubscriptionSettings,
    ) -> Result<(), ControlError> {
        let shard = self.room(room)?.shard;
        let p = self.room(room)?.participant(identity)?;
        let sub = &p.subscriber;
        let mut changes = Vec::new();
        for sid in sids {
            if let Some(spec) = sub.on_shard.get(sid)
                && spec.settings != settings
            {
                let configure = |settings| ShardCommand::ConfigureSubscription {
                    track: spec.track,
                    subscriber: sub.id,
                    settings,
                };
                changes.push(ShardChange {
                    apply: configure(settings),
                    undo: configure(spec.settings),
                });
            }
        }
        self.apply_on_shard(shard, changes)?;
        let p = self.room(room)?.participant(identity)?;
        for sid in sids {
            p.subscriber.settings.insert(sid.clone(), settings);
            if let Some(spec) = p.subscriber.on_shard.get_mut(sid) {
                spec.settings = settings;
            }
        }
        Ok(())
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
        let ice = p.subscriber.ice.clone();
        self.send_subscriber_transport(room, identity, ice)?;
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
        let ice = IceCredentials::generate();
        if p.subscriber.added {
            self.send_subscriber_transport(room, identity, ice)?;
        } else {
            p.subscriber.ice = ice;
        }
        let p = self.room(room)?.participant(identity)?;
        p.subscriber.version += 1;
        let o = build_subscriber_offer(p, &cert, &candidates);
        Ok((o.offer, o.version))
    }

    /// Gives the shard the subscriber transport with `ice` (added on the first offer, updated
    /// after an ICE restart), and keeps `ice` once the shard has taken it.
    fn send_subscriber_transport(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        ice: IceCredentials,
    ) -> Result<(), ControlError> {
        let r = self.room_ref(room)?;
        let sub = &r.member(identity)?.subscriber;
        let spec = self.subscriber_spec(r, identity, ice.clone(), sub.remote.clone())?;
        let cmd = if sub.added {
            ShardCommand::UpdateTransport(spec)
        } else {
            ShardCommand::AddTransport(spec)
        };
        self.plane.send(r.shard, cmd)?;
        let sub = &mut self.room(room)?.participant(identity)?.subscriber;
        sub.ice = ice;
        sub.added = true;
        Ok(())
    }

    /// What the shard needs to run `identity`'s subscriber transport with `ice` and `remote`.
    fn subscriber_spec(
        &self,
        r: &Room,
        identity: &Identity,
        ice: IceCredentials,
        remote: Option<RemoteTransport>,
    ) -> Result<TransportSpec, ControlError> {
        let p = r.member(identity)?;
        Ok(TransportSpec {
            id: p.subscriber.id,
            room: r.sid.clone(),
            participant: p.sid.clone(),
            role: TransportRole::Subscriber,
            local_ice: ice,
            remote,
            srtp_profiles: self.config.srtp_profiles.clone(),
        })
    }

    /// Negotiate, tell the shard, commit, as a publish does: an answer the shard does not take
    /// (its transport parameters or a subscription it carries) changes nothing, and the same
    /// answer can be sent again.
    pub fn subscribe_answer(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        version: u64,
        answer: &str,
    ) -> Result<Vec<Rejection>, ControlError> {
        let answer = sdp::parse(answer)?;
        let mut plan = self.negotiate_subscriber_answer(room, identity, version, &answer)?;
        let shard = self.room_ref(room)?.shard;
        self.apply_on_shard(shard, std::mem::take(&mut plan.shard_changes))?;
        let sub = &mut self.room(room)?.participant(identity)?.subscriber;
        if !plan.rejected.is_empty() {
            // Rejected slots change the next offer.
            sub.version += 1;
        }
        sub.offer = plan.offer;
        if let Some(remote) = plan.remote {
            sub.remote = Some(remote);
            sub.added = true;
        }
        sub.on_shard = plan.on_shard;
        Ok(plan.rejected)
    }

    /// Accepts `answer` against a copy of the offer state and works out what the shard must
    /// hear: the transport's new peer parameters, and which tracks the transport now carries
    /// as the answer accepted them (payload type, SSRCs, extension ids).
    fn negotiate_subscriber_answer(
        &self,
        room: &RoomName,
        identity: &Identity,
        version: u64,
        answer: &SessionDescription,
    ) -> Result<AnswerPlan, ControlError> {
        let r = self.room_ref(room)?;
        let sub = &r.member(identity)?.subscriber;
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
        let mut offer = sub.offer.clone();
        let got = offer.accept_answer(offered, answer)?;
        let mut shard_changes = Vec::new();
        let changed = !got.remote.ice_ufrag.is_empty() && sub.remote.as_ref() != Some(&got.remote);
        let remote = changed.then(|| got.remote.clone());
        if let Some(remote) = &remote {
            let spec = self.subscriber_spec(r, identity, sub.ice.clone(), Some(remote.clone()))?;
            shard_changes.push(if sub.added {
                let old = self.subscriber_spec(r, identity, sub.ice.clone(), sub.remote.clone())?;
                ShardChange {
                    apply: ShardCommand::UpdateTransport(spec),
                    undo: ShardCommand::UpdateTransport(old),
                }
            } else {
                ShardChange {
                    apply: ShardCommand::AddTransport(spec),
                    undo: ShardCommand::RemoveTransport(sub.id),
                }
            });
        }
        let on_shard = subscriptions_on_shard(r, sub, &mut offer, &got, &mut shard_changes);
        Ok(AnswerPlan {
            offer,
            remote,
            on_shard,
            shard_changes,
            rejected: got.rejected,
        })
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
        p.subscriber.settings.remove(sid);
        if p.subscriber.offer.remove_track(sid.as_str()).is_some() {
            p.subscriber.version += 1;
            let version = p.subscriber.version;
            p.notify(ParticipantEvent::SubscriberOfferReady { version });
        }
        // Stop forwarding now; the renegotiation follows.
        let sub_id = p.subscriber.id;
        if let Some(spec) = p.subscriber.on_shard.remove(sid)
            && let Ok(shard) = self.room(room).map(|r| r.shard)
        {
            self.send_to_shard(
                shard,
                ShardCommand::Unsubscribe {
                    track: spec.track,
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
