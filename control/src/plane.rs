//! The control plane's only view of the media shards: commands out, events back.
//!
//! The datapath implements [`MediaPlane`]; until then (and in control-plane tests)
//! [`RecordingMediaPlane`] stands in. It records what it is told and carries no media.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use crate::ice::IceCredentials;
use crate::ids::{ParticipantSid, RoomSid, ShardId, TransportId};
use crate::negotiate::RemoteTransport;

/// A shard as signaling sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: ShardId,
    /// Addresses put into ICE candidates for transports on this shard (public IP : shard port).
    pub candidate_addrs: Vec<SocketAddr>,
}

/// Which of a participant's two transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportRole {
    Publisher,
    Subscriber,
}

pub use ringcast_types::{SrtpProfile, SubscriptionSettings, TrackId, TrackSource};

/// Everything a shard needs to run one transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSpec {
    pub id: TransportId,
    pub room: RoomSid,
    pub participant: ParticipantSid,
    pub role: TransportRole,
    /// Ringcast's credentials: STUN checks must carry `local.ufrag:remote.ufrag` and be signed
    /// with `local.pwd`.
    pub local_ice: IceCredentials,
    /// `None` until the peer's description arrives: a subscriber transport is added when
    /// Ringcast offers, so the browser's first checks (sent before its answer reaches us) are
    /// answered; integrity with our password is what authenticates them.
    pub remote: Option<RemoteTransport>,
    pub srtp_profiles: Vec<SrtpProfile>,
}

/// What the control plane asks of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardCommand {
    AddTransport(TransportSpec),
    /// New ICE credentials or remote parameters for a live transport (ICE restart, renegotiation).
    UpdateTransport(TransportSpec),
    RemoveTransport(TransportId),
    /// A track the publisher transport sends (again, if renegotiated: it replaces the old one).
    PublishTrack(TrackSpec),
    UnpublishTrack(TrackId),
    /// Pauses or resumes forwarding of a track.
    MuteTrack {
        track: TrackId,
        muted: bool,
    },
    /// Starts sending a track to a subscriber transport.
    Subscribe(SubscriptionSpec),
    /// New settings for a subscription the shard forwards.
    ConfigureSubscription {
        track: TrackId,
        subscriber: TransportId,
        settings: SubscriptionSettings,
    },
    Unsubscribe {
        track: TrackId,
        subscriber: TransportId,
    },
}

impl ShardCommand {
    /// The command's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ShardCommand::AddTransport(_) => "add_transport",
            ShardCommand::UpdateTransport(_) => "update_transport",
            ShardCommand::RemoveTransport(_) => "remove_transport",
            ShardCommand::PublishTrack(_) => "publish_track",
            ShardCommand::UnpublishTrack(_) => "unpublish_track",
            ShardCommand::MuteTrack { .. } => "mute_track",
            ShardCommand::Subscribe(_) => "subscribe",
            ShardCommand::ConfigureSubscription { .. } => "configure_subscription",
            ShardCommand::Unsubscribe { .. } => "unsubscribe",
        }
    }
}

/// What a shard needs to route a published track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSpec {
    pub track: TrackId,
    pub publisher: TransportId,
    /// The negotiated m-section: codec and payload types, extension ids, encodings.
    pub media: crate::negotiate::PublishedMedia,
    pub source: TrackSource,
}

/// One subscriber's copy of a track, as its transport negotiated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    pub track: TrackId,
    pub subscriber: TransportId,
    pub ssrc: u32,
    pub rtx_ssrc: Option<u32>,
    pub payload_type: u8,
    pub rtx_payload_type: Option<u8>,
    /// Header extensions the subscriber accepted, with its ids.
    pub extensions: Vec<crate::sdp::ExtMap>,
    /// What the subscriber asked of it.
    pub settings: SubscriptionSettings,
}

/// How a transport's state changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportState {
    /// ICE nominated and DTLS completed: media can flow.
    Connected,
    /// DTLS or ICE failed; the reason is for people.
    Failed(String),
    /// No valid STUN check for the consent timeout (RFC 7675).
    ConsentLost,
    Closed,
}

/// What a shard reports back.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ShardEvent {
    TransportState {
        id: TransportId,
        state: TransportState,
    },
    /// The shard's audible audio tracks, loudest first, with their levels (0.0 to 1.0); sent
    /// when that list changes, at most every 200 ms.
    ActiveSpeakers {
        shard: ShardId,
        speakers: Vec<(TrackId, f32)>,
    },
    /// Video subscriptions whose layers (or their subscriber's estimate) changed.
    SubscriptionQuality(Vec<(TransportId, TrackId, Quality)>),
    /// Which layers of a video track (lowest first) its subscribers need now.
    LayersWanted { track: TrackId, active: Vec<bool> },
}

/// What a video subscription is sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quality {
    /// The layer sent now (0 the lowest); `None` while nothing is sent.
    pub current: Option<u8>,
    /// The layer it is moving to, or stays on.
    pub target: u8,
    pub layers: u8,
    /// The subscriber's downlink estimate, bits/s, where something measures it.
    pub estimate_bps: Option<u64>,
    /// The highest temporal layer sent, where fewer than all of them are; how many there are.
    pub temporal: Option<u8>,
    pub temporal_layers: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaneError {
    #[error("{0} does not exist")]
    NoSuchShard(ShardId),
    #[error("{0}'s command queue is full")]
    Busy(ShardId),
    #[error("{0} has stopped")]
    Stopped(ShardId),
    /// The shard cannot carry out this command (e.g. a track it has no way to forward); the
    /// reason is for people.
    #[error("{shard} refused the command: {reason}")]
    Refused { shard: ShardId, reason: String },
}

/// The media shards, as the control plane drives them. Calls never block: a full queue is an
/// error the caller reports, not a wait. A command the shard cannot carry out is an error too
/// ([`PlaneError::Refused`]), never a silent `Ok`.
pub trait MediaPlane: Send + Sync + 'static {
    fn shards(&self) -> &[ShardInfo];
    fn send(&self, shard: ShardId, cmd: ShardCommand) -> Result<(), PlaneError>;
    /// Every shard is running.
    fn ready(&self) -> bool;
    /// Short name for logs and metrics, e.g. `io_uring`.
    fn backend(&self) -> &'static str;
}

/// A stand-in media plane that only records the transports it is given. **It carries no media**:
/// it is what the control plane's tests use, and what the server runs until a datapath exists.
/// Tests can make it refuse commands ([`RecordingMediaPlane::refuse_when`]).
#[derive(Debug)]
pub struct RecordingMediaPlane {
    shards: Vec<ShardInfo>,
    transports: Mutex<BTreeMap<TransportId, (ShardId, TransportSpec)>>,
    media: Mutex<Vec<(ShardId, ShardCommand)>>,
    commands: Mutex<usize>,
    refusal: Mutex<Option<Refusal>>,
}

/// Decides which commands a [`RecordingMediaPlane`] refuses, and with what error.
type RefusalFn = dyn Fn(ShardId, &ShardCommand) -> Option<PlaneError> + Send + Sync;

struct Refusal(Box<RefusalFn>);

impl std::fmt::Debug for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refusal")
    }
}

impl RecordingMediaPlane {
    /// `n` shards whose candidates are `ip:port_base + i`.
    pub fn new(ips: &[std::net::IpAddr], port_base: u16, n: u16) -> Self {
        let shards = (0..n)
            .map(|i| ShardInfo {
                id: ShardId(i),
                candidate_addrs: ips
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, port_base.saturating_add(i)))
                    .collect(),
            })
            .collect();
        RecordingMediaPlane {
            shards,
            transports: Mutex::new(BTreeMap::new()),
            media: Mutex::new(Vec::new()),
            commands: Mutex::new(0),
            refusal: Mutex::new(None),
        }
    }

    /// From now on, a command for which `refuse` gives an error fails with it, and is neither
    /// recorded nor counted (as if the shard's queue had turned it away).
    pub fn refuse_when(
        &self,
        refuse: impl Fn(ShardId, &ShardCommand) -> Option<PlaneError> + Send + Sync + 'static,
    ) {
        if let Ok(mut r) = self.refusal.lock() {
            *r = Some(Refusal(Box::new(refuse)));
        }
    }

    /// Takes every command again.
    pub fn accept_all(&self) {
        if let Ok(mut r) = self.refusal.lock() {
            *r = None;
        }
    }

    /// The transports currently added, with their shard.
    pub fn transports(&self) -> Vec<(ShardId, TransportSpec)> {
        self.transports
            .lock()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The track, mute and subscription commands received, in order.
    pub fn media_commands(&self) -> Vec<(ShardId, ShardCommand)> {
        self.media.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// How many commands were received.
    pub fn command_count(&self) -> usize {
        self.commands.lock().map(|c| *c).unwrap_or(0)
    }
}

impl MediaPlane for RecordingMediaPlane {
    fn shards(&self) -> &[ShardInfo] {
        &self.shards
    }

    fn send(&self, shard: ShardId, cmd: ShardCommand) -> Result<(), PlaneError> {
        if !self.shards.iter().any(|s| s.id == shard) {
            return Err(PlaneError::NoSuchShard(shard));
        }
        if let Ok(r) = self.refusal.lock()
            && let Some(e) = r.as_ref().and_then(|r| (r.0)(shard, &cmd))
        {
            return Err(e);
        }
        let (Ok(mut t), Ok(mut n)) = (self.transports.lock(), self.commands.lock()) else {
            return Err(PlaneError::Stopped(shard));
        };
        *n += 1;
        match cmd {
            ShardCommand::AddTransport(spec) | ShardCommand::UpdateTransport(spec) => {
                t.insert(spec.id, (shard, spec));
            }
            ShardCommand::RemoveTransport(id) => {
                t.remove(&id);
            }
            other => {
                if let Ok(mut m) = self.media.lock() {
                    m.push((shard, other));
                }
            }
        }
        Ok(())
    }

    fn ready(&self) -> bool {
        true
    }

    fn backend(&self) -> &'static str {
        "recording (no media)"
    }
}
