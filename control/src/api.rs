//! The gRPC services (`ringcast.v1.RoomService`, `ringcast.v1.Signaling`): authentication,
//! wire ↔ domain conversion, and the one place errors become gRPC statuses.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::Stream;
use ringcast_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::auth::{self, AuthError, Authenticator, Grants, ParticipantToken};
use crate::codec::MediaKind;
use crate::plane::{ShardEvent, TransportRole, TransportState};
use crate::registry::{
    ControlError, Joiner, LeaveReason, ParticipantEvent, ParticipantInfo, Registry, RoomInfo,
    RoomSettings, TrackInfo,
};
use crate::sdp::Candidate;

/// Shared state behind both services.
pub struct Control {
    registry: Mutex<Registry>,
    auth: Authenticator,
}

impl Control {
    pub fn new(registry: Registry, auth: Authenticator) -> Arc<Self> {
        Arc::new(Control {
            registry: Mutex::new(registry),
            auth,
        })
    }

    /// The registry. A panic while it was held poisons the lock; the state is still consistent
    /// (every operation validates before it mutates), so keep serving.
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// Applies shard events and closes expired empty rooms until `events` closes.
    pub async fn run_housekeeping(self: Arc<Self>, mut events: mpsc::Receiver<ShardEvent>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.registry().handle_shard_event(ev),
                    None => return,
                },
                _ = tick.tick() => {
                    self.registry().sweep(Instant::now());
                }
            }
        }
    }
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---- errors → statuses (the only place) ----

impl From<ControlError> for Status {
    fn from(e: ControlError) -> Status {
        use ControlError::*;
        let msg = e.to_string();
        match e {
            RoomNotFound(_) | ParticipantNotFound { .. } | TrackNotFound(_) => {
                Status::not_found(msg)
            }
            RoomExists(_) => Status::already_exists(msg),
            RoomFull { .. } => Status::resource_exhausted(msg),
            BadName(_) | InvalidArgument(_) | Sdp(_) | Negotiation(_) => {
                Status::invalid_argument(msg)
            }
            PublishNotAllowed | SubscribeNotAllowed => Status::permission_denied(msg),
            FailedPrecondition(_) => Status::failed_precondition(msg),
            Draining => Status::unavailable(msg),
            Plane(_) => Status::unavailable(msg),
        }
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Status {
        if e.is_permission() {
            Status::permission_denied(e.to_string())
        } else {
            Status::unauthenticated(e.to_string())
        }
    }
}

fn bearer<T>(req: &Request<T>) -> Option<&str> {
    req.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
}

// ---- domain → wire ----

fn pb_kind(k: MediaKind) -> i32 {
    match k {
        MediaKind::Audio => pb::TrackKind::Audio as i32,
        MediaKind::Video => pb::TrackKind::Video as i32,
    }
}

fn pb_track(t: TrackInfo) -> pb::TrackInfo {
    pb::TrackInfo {
        sid: t.sid.to_string(),
        kind: pb_kind(t.kind),
        mid: t.mid,
        name: t.name,
        muted: t.muted,
        mime_type: t.mime_type,
        rids: t.rids,
        publisher_identity: t.publisher.to_string(),
    }
}

fn pb_participant(p: ParticipantInfo) -> pb::Participant {
    pb::Participant {
        identity: p.identity.to_string(),
        sid: p.sid.to_string(),
        name: p.name,
        joined_at_unix_ms: p.joined_at_unix_ms,
        can_publish: p.can_publish,
        can_subscribe: p.can_subscribe,
        tracks: p.tracks.into_iter().map(pb_track).collect(),
        subscribed_track_sids: p.subscriptions.into_iter().map(|s| s.to_string()).collect(),
    }
}

fn pb_room(r: RoomInfo) -> pb::Room {
    pb::Room {
        name: r.name.to_string(),
        sid: r.sid.to_string(),
        max_participants: r.settings.max_participants,
        empty_timeout_secs: r.settings.empty_timeout_secs,
        metadata: r.settings.metadata,
        created_at_unix_ms: r.created_at_unix_ms,
        num_participants: r.num_participants,
        shard: u32::from(r.shard.0),
    }
}

fn pb_candidate(c: &Candidate) -> pb::IceCandidate {
    pb::IceCandidate {
        candidate: c.to_string(),
    }
}

fn pb_role(r: TransportRole) -> i32 {
    match r {
        TransportRole::Publisher => pb::TransportRole::Publisher as i32,
        TransportRole::Subscriber => pb::TransportRole::Subscriber as i32,
    }
}

fn pb_rejected(r: crate::negotiate::Rejection) -> pb::RejectedMedia {
    pb::RejectedMedia {
        mid: r.mid,
        reason: r.reason,
    }
}

fn pb_event(e: ParticipantEvent) -> pb::Event {
    use pb::event::Event as E;
    let ev = match e {
        ParticipantEvent::Joined(p) => E::ParticipantJoined(pb::ParticipantJoined {
            participant: Some(pb_participant(p)),
        }),
        ParticipantEvent::Left {
            identity,
            sid,
            reason,
        } => E::ParticipantLeft(pb::ParticipantLeft {
            identity: identity.to_string(),
            sid: sid.to_string(),
            reason: match reason {
                LeaveReason::Left => pb::LeaveReason::Left,
                LeaveReason::Removed => pb::LeaveReason::Removed,
                LeaveReason::RoomDeleted => pb::LeaveReason::RoomDeleted,
                LeaveReason::Replaced => pb::LeaveReason::Replaced,
                LeaveReason::TransportFailed => pb::LeaveReason::TransportFailed,
                LeaveReason::ServerShutdown => pb::LeaveReason::ServerShutdown,
            } as i32,
        }),
        ParticipantEvent::TrackPublished(t) => E::TrackPublished(pb::TrackPublished {
            track: Some(pb_track(t)),
        }),
        ParticipantEvent::TrackUnpublished { track, publisher } => {
            E::TrackUnpublished(pb::TrackUnpublished {
                track_sid: track.to_string(),
                publisher_identity: publisher.to_string(),
            })
        }
        ParticipantEvent::TrackMuted {
            track,
            publisher,
            muted,
        } => E::TrackMuted(pb::TrackMuted {
            track_sid: track.to_string(),
            publisher_identity: publisher.to_string(),
            muted,
        }),
        ParticipantEvent::ActiveSpeakers(speakers) => {
            E::ActiveSpeakers(pb::ActiveSpeakersChanged {
                speakers: speakers
                    .into_iter()
                    .map(|s| pb::Speaker {
                        identity: s.identity.to_string(),
                        track_sid: s.track.to_string(),
                        level: s.level,
                    })
                    .collect(),
            })
        }
        ParticipantEvent::SubscriberOfferReady { version } => {
            E::SubscriberOfferReady(pb::SubscriberOfferReady {
                offer_version: version,
            })
        }
        ParticipantEvent::TransportState { role, state } => {
            let (state, reason) = match state {
                TransportState::Connected => (pb::TransportState::Connected, String::new()),
                TransportState::Failed(r) => (pb::TransportState::Failed, r),
                TransportState::ConsentLost => (
                    pb::TransportState::Failed,
                    "ICE consent expired (no STUN check for 30 s)".to_owned(),
                ),
                TransportState::Closed => (pb::TransportState::Closed, String::new()),
            };
            E::TransportState(pb::TransportStateChanged {
                role: pb_role(role),
                state: state as i32,
                reason,
            })
        }
    };
    pb::Event { event: Some(ev) }
}

// ---- RoomService ----

/// `ringcast.v1.RoomService`: for the customer's backend; every call needs an admin token.
#[derive(Clone)]
pub struct RoomServiceApi(pub Arc<Control>);

impl RoomServiceApi {
    fn admin<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.0.auth.require_admin(bearer(req))?;
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::room_service_server::RoomService for RoomServiceApi {
    async fn create_room(
        &self,
        req: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        self.admin(&req)?;
        let r = req.into_inner();
        let settings = RoomSettings {
            max_participants: r.max_participants,
            empty_timeout_secs: r.empty_timeout_secs,
            metadata: r.metadata,
        };
        let room =
            self.0
                .registry()
                .create_room(&r.name, settings, Instant::now(), now_unix_ms())?;
        Ok(Response::new(pb_room(room)))
    }

    async fn get_room(
        &self,
        req: Request<pb::GetRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        self.admin(&req)?;
        let room = self.0.registry().get_room(&req.get_ref().name)?;
        Ok(Response::new(pb_room(room)))
    }

    async fn list_rooms(
        &self,
        req: Request<pb::ListRoomsRequest>,
    ) -> Result<Response<pb::ListRoomsResponse>, Status> {
        self.admin(&req)?;
        let rooms = self.0.registry().list_rooms(&req.get_ref().names);
        Ok(Response::new(pb::ListRoomsResponse {
            rooms: rooms.into_iter().map(pb_room).collect(),
        }))
    }

    async fn delete_room(
        &self,
        req: Request<pb::DeleteRoomRequest>,
    ) -> Result<Response<pb::DeleteRoomResponse>, Status> {
        self.admin(&req)?;
        self.0.registry().delete_room(&req.get_ref().name)?;
        Ok(Response::new(pb::DeleteRoomResponse {}))
    }

    async fn list_participants(
        &self,
        req: Request<pb::ListParticipantsRequest>,
    ) -> Result<Response<pb::ListParticipantsResponse>, Status> {
        self.admin(&req)?;
        let ps = self.0.registry().list_participants(&req.get_ref().room)?;
        Ok(Response::new(pb::ListParticipantsResponse {
            participants: ps.into_iter().map(pb_participant).collect(),
        }))
    }

    async fn remove_participant(
        &self,
        req: Request<pb::RemoveParticipantRequest>,
    ) -> Result<Response<pb::RemoveParticipantResponse>, Status> {
        self.admin(&req)?;
        let r = req.get_ref();
        self.0.registry().remove_participant(
            &r.room,
            &r.identity,
            LeaveReason::Removed,
            Instant::now(),
        )?;
        Ok(Response::new(pb::RemoveParticipantResponse {}))
    }

    async fn mute_published_track(
        &self,
        req: Request<pb::MutePublishedTrackRequest>,
    ) -> Result<Response<pb::TrackInfo>, Status> {
        self.admin(&req)?;
        let r = req.get_ref();
        let t = self
            .0
            .registry()
            .mute_track(&r.room, &r.identity, &r.track_sid, r.muted)?;
        Ok(Response::new(pb_track(t)))
    }

    async fn update_subscriptions(
        &self,
        req: Request<pb::UpdateSubscriptionsRequest>,
    ) -> Result<Response<pb::UpdateSubscriptionsResponse>, Status> {
        self.admin(&req)?;
        let r = req.get_ref();
        let subs = self.0.registry().update_subscriptions(
            &r.room,
            &r.identity,
            &r.track_sids,
            r.subscribe,
        )?;
        Ok(Response::new(pb::UpdateSubscriptionsResponse {
            subscribed_track_sids: subs.into_iter().map(|s| s.to_string()).collect(),
        }))
    }

    async fn create_access_token(
        &self,
        req: Request<pb::CreateAccessTokenRequest>,
    ) -> Result<Response<pb::CreateAccessTokenResponse>, Status> {
        self.admin(&req)?;
        let r = req.into_inner();
        crate::ids::Identity::new(&r.identity).map_err(ControlError::from)?;
        if !r.room.is_empty() {
            crate::ids::RoomName::new(&r.room).map_err(ControlError::from)?;
        } else if !r.admin {
            return Err(Status::invalid_argument(
                "a participant token must name a room (or set admin)",
            ));
        }
        let ttl = match u64::from(r.ttl_secs) {
            0 => auth::DEFAULT_TTL_SECS,
            t if t > auth::MAX_TTL_SECS => {
                return Err(Status::invalid_argument(format!(
                    "ttl_secs {t} is above the maximum of {}",
                    auth::MAX_TTL_SECS
                )));
            }
            t => t,
        };
        let grants = Grants {
            room: r.room,
            admin: r.admin,
            publish: r.can_publish,
            subscribe: r.can_subscribe,
        };
        let (token, claims) =
            self.0
                .auth
                .mint(&r.identity, Some(&r.name), grants, auth::unix_now(), ttl)?;
        Ok(Response::new(pb::CreateAccessTokenResponse {
            token,
            expires_at_unix_ms: (claims.exp as i64).saturating_mul(1000),
        }))
    }
}

// ---- Signaling ----

/// `ringcast.v1.Signaling`: for one participant, identified by its access token.
#[derive(Clone)]
pub struct SignalingApi(pub Arc<Control>);

impl SignalingApi {
    fn participant<T>(&self, req: &Request<T>) -> Result<ParticipantToken, Status> {
        Ok(self.0.auth.require_participant(bearer(req))?)
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::signaling_server::Signaling for SignalingApi {
    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let t = self.participant(&req)?;
        let name = match req.get_ref().name.as_str() {
            "" => t.name.clone().unwrap_or_default(),
            n => n.to_owned(),
        };
        let who = Joiner {
            room: t.room,
            identity: t.identity,
            name,
            can_publish: t.publish,
            can_subscribe: t.subscribe,
        };
        let info = self
            .0
            .registry()
            .join(&who, Instant::now(), now_unix_ms())?;
        Ok(Response::new(pb::JoinResponse {
            room: Some(pb_room(info.room)),
            participant: Some(pb_participant(info.participant)),
            others: info.others.into_iter().map(pb_participant).collect(),
            candidates: info.candidates.iter().map(pb_candidate).collect(),
        }))
    }

    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let t = self.participant(&req)?;
        if !t.publish {
            return Err(AuthError::NoPublishGrant.into());
        }
        let r = req.into_inner();
        let names: HashMap<String, String> = r.track_names;
        let res = self
            .0
            .registry()
            .publish(&t.room, &t.identity, &r.sdp_offer, &names)?;
        Ok(Response::new(pb::PublishResponse {
            sdp_answer: res.answer,
            tracks: res.tracks.into_iter().map(pb_track).collect(),
            rejected: res.rejected.into_iter().map(pb_rejected).collect(),
        }))
    }

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SubscribeResponse>, Status> {
        let t = self.participant(&req)?;
        if !t.subscribe {
            return Err(AuthError::NoSubscribeGrant.into());
        }
        let o = self.0.registry().subscribe(&t.room, &t.identity)?;
        Ok(Response::new(pb::SubscribeResponse {
            sdp_offer: o.offer,
            offer_version: o.version,
            mid_to_track_sid: o
                .mid_to_track
                .into_iter()
                .map(|(m, t)| (m, t.to_string()))
                .collect(),
        }))
    }

    async fn subscribe_answer(
        &self,
        req: Request<pb::SubscribeAnswerRequest>,
    ) -> Result<Response<pb::SubscribeAnswerResponse>, Status> {
        let t = self.participant(&req)?;
        if !t.subscribe {
            return Err(AuthError::NoSubscribeGrant.into());
        }
        let r = req.get_ref();
        let rejected = self.0.registry().subscribe_answer(
            &t.room,
            &t.identity,
            r.offer_version,
            &r.sdp_answer,
        )?;
        Ok(Response::new(pb::SubscribeAnswerResponse {
            rejected: rejected.into_iter().map(pb_rejected).collect(),
        }))
    }

    type EventsStream = EventStream;

    async fn events(
        &self,
        req: Request<pb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let t = self.participant(&req)?;
        let reader = self.0.registry().events(&t.room, &t.identity)?;
        let stream = reader.into_stream().map(|e| Ok(pb_event(e)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ice_restart(
        &self,
        req: Request<pb::IceRestartRequest>,
    ) -> Result<Response<pb::IceRestartResponse>, Status> {
        let t = self.participant(&req)?;
        let r = req.get_ref();
        let role = match pb::TransportRole::try_from(r.role) {
            Ok(pb::TransportRole::Publisher) => TransportRole::Publisher,
            Ok(pb::TransportRole::Subscriber) => TransportRole::Subscriber,
            _ => {
                return Err(Status::invalid_argument(
                    "role must be TRANSPORT_ROLE_PUBLISHER or TRANSPORT_ROLE_SUBSCRIBER",
                ));
            }
        };
        if role == TransportRole::Publisher && r.sdp_offer.is_empty() {
            return Err(Status::invalid_argument(
                "a publisher ICE restart needs the client's new offer in sdp_offer",
            ));
        }
        let (sdp, offer_version) =
            self.0
                .registry()
                .ice_restart(&t.room, &t.identity, role, &r.sdp_offer)?;
        Ok(Response::new(pb::IceRestartResponse { sdp, offer_version }))
    }

    async fn leave(
        &self,
        req: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        let t = self.participant(&req)?;
        self.0
            .registry()
            .leave(&t.room, &t.identity, Instant::now())?;
        Ok(Response::new(pb::LeaveResponse {}))
    }
}
