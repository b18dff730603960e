//! `ringcast.v1.RoomService`: rooms and participants, for the customer's backend.

use std::sync::Arc;
use std::time::Instant;

use ringcast_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::wire::{pb_participant, pb_room, pb_track, settings};
use super::{Control, bearer, now_unix_ms};
use crate::auth::{self, Grants};
use crate::registry::{ControlError, LeaveReason, RoomSettings};

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
        let settings = r.settings.as_ref().map(settings).transpose()?;
        let subs = self.0.registry().update_subscriptions(
            &r.room,
            &r.identity,
            &r.track_sids,
            r.subscribe,
            settings,
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
