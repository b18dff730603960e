//! What a participant's `Events` stream says: the events and the room state they carry.

use crate::codec::MediaKind;
use crate::ids::{Identity, ParticipantSid, TrackSid};
use crate::plane::{TransportRole, TransportState};

/// A participant as others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    pub identity: Identity,
    pub sid: ParticipantSid,
    pub name: String,
    pub joined_at_unix_ms: i64,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub tracks: Vec<TrackInfo>,
    pub subscriptions: Vec<TrackSid>,
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    Left,
    Removed,
    RoomDeleted,
    Replaced,
    TransportFailed,
    ServerShutdown,
}

/// What a participant's `Events` stream delivers. A reader that lags gets each subject's
/// latest event (see [`crate::events`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ParticipantEvent {
    Joined(ParticipantInfo),
    Left {
        identity: Identity,
        sid: ParticipantSid,
        reason: LeaveReason,
    },
    TrackPublished(TrackInfo),
    TrackUnpublished {
        track: TrackSid,
        publisher: Identity,
    },
    TrackMuted {
        track: TrackSid,
        publisher: Identity,
        muted: bool,
    },
    SubscriberOfferReady {
        version: u64,
    },
    TransportState {
        role: TransportRole,
        state: TransportState,
    },
    /// Who speaks in the room now, loudest first (empty: nobody).
    ActiveSpeakers(Vec<Speaker>),
    /// What one of the participant's video subscriptions is sent now.
    SubscriptionQuality {
        track: TrackSid,
        quality: crate::plane::Quality,
    },
    /// To a publisher: which layers (by rid, lowest first; no rid without simulcast) of one
    /// of its video tracks its subscribers need now.
    LayersWanted {
        track: TrackSid,
        layers: Vec<(Option<String>, bool)>,
    },
}

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
    pub source: crate::plane::TrackSource,
}

/// Someone speaking, as `Events` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Speaker {
    pub identity: Identity,
    pub track: TrackSid,
    /// 0.0 (silence) to 1.0.
    pub level: f32,
}
