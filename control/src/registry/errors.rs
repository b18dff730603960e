//! Why a registry operation was refused: one enum, mapped to gRPC statuses in `service`.

use crate::ids::NameError;
use crate::negotiate::NegotiationError;
use crate::plane::PlaneError;
use crate::sdp::SdpError;

/// Why an operation was refused. `service` maps each to one gRPC status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("room `{0}` does not exist")]
    RoomNotFound(String),
    #[error("room `{0}` already exists with different settings")]
    RoomExists(String),
    #[error("participant `{identity}` is not in room `{room}`")]
    ParticipantNotFound { room: String, identity: String },
    #[error("track `{0}` does not exist")]
    TrackNotFound(String),
    #[error("room `{room}` is full ({max} participants)")]
    RoomFull { room: String, max: u32 },
    #[error(transparent)]
    BadName(#[from] NameError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("the SDP is invalid: {0}")]
    Sdp(#[from] SdpError),
    #[error("the SDP can't be negotiated: {0}")]
    Negotiation(#[from] NegotiationError),
    #[error("this participant may not publish")]
    PublishNotAllowed,
    #[error("this participant may not subscribe")]
    SubscribeNotAllowed,
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("the server is draining and accepts no new rooms or participants")]
    Draining,
    #[error("media plane: {0}")]
    Plane(#[from] PlaneError),
}
