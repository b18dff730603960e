//! Domain ↔ wire: the registry's types as protobuf messages, and the requests' settings as
//! the registry's types (with the error that says what to fix).

use ringcast_proto::v1 as pb;
use tonic::Status;

use crate::codec::MediaKind;
use crate::plane::{SubscriptionSettings, TrackSource, TransportRole, TransportState};
use crate::registry::{LeaveReason, ParticipantEvent, ParticipantInfo, RoomInfo, TrackInfo};
use crate::sdp::Candidate;

pub(super) fn pb_kind(k: MediaKind) -> i32 {
    match k {
        MediaKind::Audio => pb::TrackKind::Audio as i32,
        MediaKind::Video => pb::TrackKind::Video as i32,
    }
}

pub(super) fn pb_track(t: TrackInfo) -> pb::TrackInfo {
    pb::TrackInfo {
        sid: t.sid.to_string(),
        kind: pb_kind(t.kind),
        mid: t.mid,
        name: t.name,
        muted: t.muted,
        mime_type: t.mime_type,
        rids: t.rids,
        publisher_identity: t.publisher.to_string(),
        source: pb_source(t.source) as i32,
    }
}

fn pb_source(s: TrackSource) -> pb::TrackSource {
    match s {
        TrackSource::Unknown => pb::TrackSource::Unspecified,
        TrackSource::Camera => pb::TrackSource::Camera,
        TrackSource::Microphone => pb::TrackSource::Microphone,
        TrackSource::ScreenShare => pb::TrackSource::ScreenShare,
        TrackSource::ScreenShareAudio => pb::TrackSource::ScreenShareAudio,
    }
}

pub(super) fn source(v: i32) -> Result<TrackSource, Status> {
    Ok(match pb::TrackSource::try_from(v) {
        Ok(pb::TrackSource::Unspecified) => TrackSource::Unknown,
        Ok(pb::TrackSource::Camera) => TrackSource::Camera,
        Ok(pb::TrackSource::Microphone) => TrackSource::Microphone,
        Ok(pb::TrackSource::ScreenShare) => TrackSource::ScreenShare,
        Ok(pb::TrackSource::ScreenShareAudio) => TrackSource::ScreenShareAudio,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown track source {v}"
            )));
        }
    })
}

/// A request's subscription settings: quality as a layer cap (low, medium, high are layers
/// 0, 1, 2), size and priority as given.
pub(super) fn settings(s: &pb::SubscriptionSettings) -> Result<SubscriptionSettings, Status> {
    let max_layer = match pb::VideoQuality::try_from(s.max_quality) {
        Ok(pb::VideoQuality::Unspecified) => None,
        Ok(pb::VideoQuality::Low) => Some(0),
        Ok(pb::VideoQuality::Medium) => Some(1),
        Ok(pb::VideoQuality::High) => Some(2),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown max_quality {}",
                s.max_quality
            )));
        }
    };
    let priority =
        u8::try_from(s.priority).map_err(|_| Status::invalid_argument("priority must be 0-255"))?;
    Ok(SubscriptionSettings {
        max_layer,
        width: s.width,
        height: s.height,
        priority,
        max_fps: s.max_fps,
    })
}

pub(super) fn pb_participant(p: ParticipantInfo) -> pb::Participant {
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

pub(super) fn pb_room(r: RoomInfo) -> pb::Room {
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

pub(super) fn pb_candidate(c: &Candidate) -> pb::IceCandidate {
    pb::IceCandidate {
        candidate: c.to_string(),
    }
}

pub(super) fn pb_role(r: TransportRole) -> i32 {
    match r {
        TransportRole::Publisher => pb::TransportRole::Publisher as i32,
        TransportRole::Subscriber => pb::TransportRole::Subscriber as i32,
    }
}

pub(super) fn pb_rejected(r: crate::negotiate::Rejection) -> pb::RejectedMedia {
    pb::RejectedMedia {
        mid: r.mid,
        reason: r.reason,
    }
}

pub(super) fn pb_event(e: ParticipantEvent) -> pb::Event {
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
        ParticipantEvent::SubscriptionQuality { track, quality } => {
            E::SubscriptionQuality(pb::SubscriptionQualityChanged {
                track_sid: track.to_string(),
                current_layer: quality.current.map_or(-1, i32::from),
                target_layer: u32::from(quality.target),
                layers: u32::from(quality.layers),
                estimate_bps: quality.estimate_bps.unwrap_or(0),
                temporal_layers_sent: quality.temporal.map_or(0, |t| u32::from(t) + 1),
                temporal_layers: u32::from(quality.temporal_layers),
            })
        }
        ParticipantEvent::LayersWanted { track, layers } => {
            E::TrackLayersWanted(pb::TrackLayersWanted {
                track_sid: track.to_string(),
                layers: layers
                    .into_iter()
                    .map(|(rid, active)| pb::LayerWanted {
                        rid: rid.unwrap_or_default(),
                        active,
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
