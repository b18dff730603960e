//! The gRPC services (`ringcast.v1.RoomService`, `ringcast.v1.Signaling`) and the only place
//! that knows tonic and the wire types: authentication, wire ↔ domain conversion (`wire`), and
//! the one place errors become gRPC statuses (below). The registry behind them never sees a
//! `Status` or a protobuf message.
//!
//! `room_service` is the customer's backend API (admin token), `signaling` the participant's.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tonic::{Request, Status};

use crate::auth::{AuthError, Authenticator};
use crate::plane::{PlaneError, ShardEvent};
use crate::registry::{ControlError, Registry};

mod room_service;
mod signaling;
mod wire;

pub use room_service::RoomServiceApi;
pub use signaling::SignalingApi;

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
            // The same command would be refused again: not worth a retry as it is.
            Plane(PlaneError::Refused { .. }) => Status::failed_precondition(msg),
            // A full queue or a stopped shard: worth a retry, later or elsewhere.
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

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::ids::ShardId;

    #[test]
    fn a_refused_shard_command_is_a_failed_precondition_a_busy_shard_unavailable() {
        let refused = ControlError::Plane(PlaneError::Refused {
            shard: ShardId(0),
            reason: "track-1 (mid `0`) has no codec to forward".to_owned(),
        });
        let status = Status::from(refused);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "media plane: shard-0 refused the command: track-1 (mid `0`) has no codec to forward"
        );
        let busy = Status::from(ControlError::Plane(PlaneError::Busy(ShardId(0))));
        assert_eq!(busy.code(), Code::Unavailable);
    }
}
