//! `ringcast.v1.Signaling`: one participant's session (join, publish, subscribe, events).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::Stream;
use ringcast_proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::wire::{
    pb_candidate, pb_event, pb_participant, pb_rejected, pb_room, pb_track, settings, source,
};
use super::{Control, bearer, now_unix_ms};
use crate::auth::{AuthError, ParticipantToken};
use crate::plane::TransportRole;
use crate::registry::{Joiner, TrackLabel};

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
        let mut labels: HashMap<String, TrackLabel> = HashMap::new();
        for (mid, name) in r.track_names {
            labels.entry(mid).or_default().name = name;
        }
        for (mid, s) in r.track_sources {
            labels.entry(mid).or_default().source = source(s)?;
        }
        let res = self
            .0
            .registry()
            .publish(&t.room, &t.identity, &r.sdp_offer, &labels)?;
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

    async fn update_subscription_settings(
        &self,
        req: Request<pb::UpdateSubscriptionSettingsRequest>,
    ) -> Result<Response<pb::UpdateSubscriptionSettingsResponse>, Status> {
        let t = self.participant(&req)?;
        let r = req.get_ref();
        let s = settings(
            r.settings
                .as_ref()
                .ok_or_else(|| Status::invalid_argument("settings are required"))?,
        )?;
        self.0
            .registry()
            .update_subscription_settings(&t.room, &t.identity, &r.track_sids, s)?;
        Ok(Response::new(pb::UpdateSubscriptionSettingsResponse {}))
    }
}
