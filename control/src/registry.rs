//! Rooms, participants, tracks and subscriptions: the control plane's whole state, in memory.
//!
//! Every operation validates all its input before it changes anything, so a failed call leaves
//! the registry as it was. Time comes in as arguments (`now`), never from a clock here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::MediaKind;
use crate::dtls::DtlsIdentity;
use crate::events::{EventCounts, EventQueue, EventReader};
use crate::ice::{IceCredentials, host_candidates};
use crate::ids::{
    Identity, NameError, ParticipantSid, RoomName, RoomSid, ShardId, TrackSid, TransportId,
};
use crate::negotiate::{
    self, LocalTransport, NegotiationError, OutgoingTrack, PublishedMedia, Rejection,
    RemoteTransport, SubscriberOffer,
};
use crate::plane::{
    MediaPlane, PlaneError, ShardCommand, ShardEvent, SrtpProfile, SubscriptionSpec, TrackId,
    TrackSpec, TransportRole, TransportSpec, TransportState,
};
use crate::sdp::{self, Candidate, SdpError, SessionDescription};

/// Why an operation was refused. `api` maps each to one gRPC status.
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

/// Settings a room is created with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomSettings {
    pub max_participants: u32,
    pub empty_timeout_secs: u32,
    pub metadata: String,
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
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    pub name: RoomName,
    pub sid: RoomSid,
    pub settings: RoomSettings,
    pub created_at_unix_ms: i64,
    pub num_participants: u32,
    pub shard: ShardId,
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

/// Someone speaking, as `Events` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Speaker {
    pub identity: Identity,
    pub track: TrackSid,
    /// 0.0 (silence) to 1.0.
    pub level: f32,
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
}

/// Who is joining, from their access token.
#[derive(Debug, Clone)]
pub struct Joiner {
    pub room: RoomName,
    pub identity: Identity,
    pub name: String,
    pub can_publish: bool,
    pub can_subscribe: bool,
}

/// The registry's size, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryStats {
    pub rooms: usize,
    pub participants: usize,
    pub tracks: usize,
    /// `new`, `connected`, `failed`, `closed`.
    pub transports_by_state: BTreeMap<&'static str, usize>,
    /// Events replaced by a newer one about the same subject before their reader read them,
    /// since start.
    pub events_coalesced: u64,
    /// Events dropped by a backlog at its cap, since start.
    pub events_dropped: u64,
}

/// What `Join` returns.
#[derive(Debug, Clone)]
pub struct JoinInfo {
    pub room: RoomInfo,
    pub participant: ParticipantInfo,
    pub others: Vec<ParticipantInfo>,
    pub candidates: Vec<Candidate>,
}

/// What `Publish` returns.
#[derive(Debug, Clone)]
pub struct PublishResult {
    pub answer: String,
    pub tracks: Vec<TrackInfo>,
    pub rejected: Vec<Rejection>,
}

/// What `Subscribe` returns.
#[derive(Debug, Clone)]
pub struct SubscribeOffer {
    pub offer: String,
    pub version: u64,
    pub mid_to_track: Vec<(String, TrackSid)>,
}

/// Node-wide settings the registry needs.
#[derive(Clone)]
pub struct RegistryConfig {
    pub identity: Arc<DtlsIdentity>,
    pub srtp_profiles: Vec<SrtpProfile>,
}

struct Track {
    sid: TrackSid,
    /// The shards' number for it.
    num: TrackId,
    name: String,
    muted: bool,
    media: PublishedMedia,
}

struct PublisherTransport {
    id: TransportId,
    ice: IceCredentials,
    remote: RemoteTransport,
    session_id: String,
    version: u64,
}

struct SubscriberTransport {
    id: TransportId,
    ice: IceCredentials,
    session_id: String,
    offer: SubscriberOffer,
    /// Bumped whenever the m-sections change; the next `Subscribe` builds this version.
    version: u64,
    /// The last offer built, and its version.
    last_offer: Option<(u64, SessionDescription)>,
    remote: Option<RemoteTransport>,
    /// The shard knows this transport (from the first offer on).
    added: bool,
    /// Subscriptions the shard forwards (from the answer that accepted them).
    on_shard: HashMap<TrackSid, TrackId>,
    /// SSRCs Ringcast sends with, per subscribed track.
    ssrcs: HashMap<TrackSid, (u32, Option<u32>)>,
}

struct Participant {
    sid: ParticipantSid,
    identity: Identity,
    name: String,
    joined_at_unix_ms: i64,
    can_publish: bool,
    can_subscribe: bool,
    publisher: Option<PublisherTransport>,
    subscriber: SubscriberTransport,
    tracks: Vec<Track>,
    subscriptions: BTreeSet<TrackSid>,
    events: EventQueue,
}

struct Room {
    sid: RoomSid,
    name: RoomName,
    settings: RoomSettings,
    created_at_unix_ms: i64,
    shard: ShardId,
    participants: BTreeMap<Identity, Participant>,
    empty_since: Option<Instant>,
    /// The speakers last reported to the room, by track.
    speakers: Vec<TrackSid>,
}

/// The state of every room on this node.
pub struct Registry {
    config: RegistryConfig,
    plane: Arc<dyn MediaPlane>,
    rooms: BTreeMap<RoomName, Room>,
    transports: HashMap<TransportId, (RoomName, Identity, TransportRole)>,
    /// Each transport's last reported state (`new` until its shard reports), for metrics.
    transport_states: HashMap<TransportId, &'static str>,
    next_transport: u64,
    next_track: u64,
    draining: bool,
    /// The event counts of participants who have left, so the totals never go down.
    retired_events: EventCounts,
}

fn track_info(t: &Track, publisher: &Identity) -> TrackInfo {
    TrackInfo {
        sid: t.sid.clone(),
        kind: t.media.kind,
        mid: t.media.mid.clone(),
        name: t.name.clone(),
        muted: t.muted,
        mime_type: t
            .media
            .codecs
            .first()
            .map(|c| c.name().mime_type())
            .unwrap_or_default(),
        rids: t
            .media
            .encodings
            .iter()
            .filter_map(|e| e.rid.clone())
            .collect(),
        publisher: publisher.clone(),
    }
}

impl Participant {
    fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            identity: self.identity.clone(),
            sid: self.sid.clone(),
            name: self.name.clone(),
            joined_at_unix_ms: self.joined_at_unix_ms,
            can_publish: self.can_publish,
            can_subscribe: self.can_subscribe,
            tracks: self
                .tracks
                .iter()
                .map(|t| track_info(t, &self.identity))
                .collect(),
            subscriptions: self.subscriptions.iter().cloned().collect(),
        }
    }

    /// Queues an event for the participant's `Events` reader, coalesced with what the reader
    /// has not read yet; it never waits and never cuts a reader off.
    fn notify(&self, ev: ParticipantEvent) {
        self.events.push(ev);
    }
}

impl Room {
    fn info(&self) -> RoomInfo {
        RoomInfo {
            name: self.name.clone(),
            sid: self.sid.clone(),
            settings: self.settings.clone(),
            created_at_unix_ms: self.created_at_unix_ms,
            num_participants: self.participants.len() as u32,
            shard: self.shard,
        }
    }

    /// Forwarded streams: every published track times its subscribers.
    fn load(&self) -> usize {
        self.participants
            .values()
            .map(|p| p.subscriptions.len())
            .sum()
    }

    fn participant(&mut self, identity: &Identity) -> Result<&mut Participant, ControlError> {
        let room = self.name.to_string();
        self.participants
            .get_mut(identity)
            .ok_or_else(|| ControlError::ParticipantNotFound {
                room,
                identity: identity.to_string(),
            })
    }

    fn notify_others(&self, except: &Identity, ev: &ParticipantEvent) {
        for (id, p) in &self.participants {
            if id != except {
                p.notify(ev.clone());
            }
        }
    }

    /// The track with `sid`, with its publisher.
    fn find_track(&self, sid: &TrackSid) -> Option<(&Participant, &Track)> {
        self.participants
            .values()
            .find_map(|p| p.tracks.iter().find(|t| &t.sid == sid).map(|t| (p, t)))
    }
}

fn random_u32_nonzero() -> u32 {
    let mut b = [0u8; 4];
    loop {
        crate::random::fill(&mut b);
        let v = u32::from_be_bytes(b);
        if v != 0 {
            return v;
        }
    }
}

fn session_id() -> String {
    let mut b = [0u8; 8];
    crate::random::fill(&mut b);
    // JSEP: at most 63 bits, so it fits a signed 64-bit integer.
    (u64::from_be_bytes(b) >> 1).to_string()
}

impl Registry {
    pub fn new(config: RegistryConfig, plane: Arc<dyn MediaPlane>) -> Self {
        Registry {
            config,
            plane,
            rooms: BTreeMap::new(),
            transports: HashMap::new(),
            transport_states: HashMap::new(),
            next_transport: 1,
            next_track: 1,
            draining: false,
            retired_events: EventCounts::default(),
        }
    }

    pub fn plane(&self) -> &Arc<dyn MediaPlane> {
        &self.plane
    }

    /// Stops accepting new rooms and joins (graceful drain).
    pub fn set_draining(&mut self) {
        self.draining = true;
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    fn room(&mut self, name: &RoomName) -> Result<&mut Room, ControlError> {
        self.rooms
            .get_mut(name)
            .ok_or_else(|| ControlError::RoomNotFound(name.to_string()))
    }

    fn new_transport_id(&mut self) -> TransportId {
        let id = TransportId(self.next_transport);
        self.next_transport += 1;
        id
    }

    fn candidates(&self, shard: ShardId) -> Vec<Candidate> {
        let addrs = self
            .plane
            .shards()
            .iter()
            .find(|s| s.id == shard)
            .map(|s| s.candidate_addrs.clone())
            .unwrap_or_default();
        host_candidates(&addrs)
    }

    /// The least loaded shard (forwarded streams, then rooms).
    fn place(&self) -> ShardId {
        let mut load: BTreeMap<ShardId, (usize, usize)> =
            self.plane.shards().iter().map(|s| (s.id, (0, 0))).collect();
        for r in self.rooms.values() {
            if let Some(l) = load.get_mut(&r.shard) {
                l.0 += r.load();
                l.1 += 1;
            }
        }
        load.into_iter()
            .min_by_key(|(id, l)| (*l, *id))
            .map(|(id, _)| id)
            .unwrap_or(ShardId(0))
    }

    // ---- RoomService ----

    pub fn create_room(
        &mut self,
        name: &str,
        settings: RoomSettings,
        now: Instant,
        now_unix_ms: i64,
    ) -> Result<RoomInfo, ControlError> {
        let name = RoomName::new(name)?;
        if settings.metadata.len() > 64 * 1024 {
            return Err(ControlError::InvalidArgument(
                "room metadata is larger than 64 KiB".to_owned(),
            ));
        }
        if let Some(r) = self.rooms.get(&name) {
            return if r.settings == settings {
                Ok(r.info())
            } else {
                Err(ControlError::RoomExists(name.to_string()))
            };
        }
        if self.draining {
            return Err(ControlError::Draining);
        }
        let shard = self.place();
        let room = Room {
            sid: RoomSid::generate(),
            name: name.clone(),
            settings,
            created_at_unix_ms: now_unix_ms,
            shard,
            participants: BTreeMap::new(),
            empty_since: Some(now),
            speakers: Vec::new(),
        };
        let info = room.info();
        tracing::info!(room = %name, sid = %info.sid, %shard, "room created");
        self.rooms.insert(name, room);
        Ok(info)
    }

    pub fn get_room(&self, name: &str) -> Result<RoomInfo, ControlError> {
        let name = RoomName::new(name)?;
        self.rooms
            .get(&name)
            .map(Room::info)
            .ok_or_else(|| ControlError::RoomNotFound(name.to_string()))
    }

    pub fn list_rooms(&self, names: &[String]) -> Vec<RoomInfo> {
        self.rooms
            .values()
            .filter(|r| names.is_empty() || names.iter().any(|n| n == r.name.as_str()))
            .map(Room::info)
            .collect()
    }

    pub fn delete_room(&mut self, name: &str) -> Result<(), ControlError> {
        let name = RoomName::new(name)?;
        let room = self
            .rooms
            .remove(&name)
            .ok_or_else(|| ControlError::RoomNotFound(name.to_string()))?;
        for (_, p) in room.participants {
            let ev = ParticipantEvent::Left {
                identity: p.identity.clone(),
                sid: p.sid.clone(),
                reason: LeaveReason::RoomDeleted,
            };
            p.notify(ev);
            self.retire(room.shard, p);
        }
        tracing::info!(room = %name, "room deleted");
        Ok(())
    }

    pub fn list_participants(&self, room: &str) -> Result<Vec<ParticipantInfo>, ControlError> {
        let name = RoomName::new(room)?;
        let room = self
            .rooms
            .get(&name)
            .ok_or_else(|| ControlError::RoomNotFound(name.to_string()))?;
        Ok(room.participants.values().map(Participant::info).collect())
    }

    pub fn remove_participant(
        &mut self,
        room: &str,
        identity: &str,
        reason: LeaveReason,
        now: Instant,
    ) -> Result<(), ControlError> {
        let room = RoomName::new(room)?;
        let identity = Identity::new(identity)?;
        self.room(&room)?.participant(&identity)?;
        self.remove(&room, &identity, reason, now);
        Ok(())
    }

    pub fn mute_track(
        &mut self,
        room: &str,
        identity: &str,
        track: &str,
        muted: bool,
    ) -> Result<TrackInfo, ControlError> {
        let room = RoomName::new(room)?;
        let identity = Identity::new(identity)?;
        let sid =
            TrackSid::parse(track).ok_or_else(|| ControlError::TrackNotFound(track.to_owned()))?;
        let r = self.room(&room)?;
        let p = r.participant(&identity)?;
        let t = p
            .tracks
            .iter_mut()
            .find(|t| t.sid == sid)
            .ok_or_else(|| ControlError::TrackNotFound(track.to_owned()))?;
        let changed = t.muted != muted;
        t.muted = muted;
        let (num, info) = (t.num, track_info(t, &identity));
        if changed {
            let ev = ParticipantEvent::TrackMuted {
                track: sid,
                publisher: identity.clone(),
                muted,
            };
            for p in r.participants.values() {
                p.notify(ev.clone());
            }
            let shard = r.shard;
            self.send_to_shard(shard, ShardCommand::MuteTrack { track: num, muted });
        }
        Ok(info)
    }

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

    // ---- Signaling ----

    pub fn join(
        &mut self,
        who: &Joiner,
        now: Instant,
        now_unix_ms: i64,
    ) -> Result<JoinInfo, ControlError> {
        let Joiner {
            room,
            identity,
            name,
            can_publish,
            can_subscribe,
        } = who;
        let (can_publish, can_subscribe) = (*can_publish, *can_subscribe);
        if self.draining {
            return Err(ControlError::Draining);
        }
        let r = self.room(room)?;
        let replacing = r.participants.contains_key(identity);
        if !replacing
            && r.settings.max_participants > 0
            && r.participants.len() >= r.settings.max_participants as usize
        {
            return Err(ControlError::RoomFull {
                room: room.to_string(),
                max: r.settings.max_participants,
            });
        }
        if name.len() > 256 {
            return Err(ControlError::InvalidArgument(
                "the display name is longer than 256 bytes".to_owned(),
            ));
        }
        if replacing {
            self.remove(room, identity, LeaveReason::Replaced, now);
        }
        let sub_id = self.new_transport_id();
        let p = Participant {
            sid: ParticipantSid::generate(),
            identity: identity.clone(),
            name: name.clone(),
            joined_at_unix_ms: now_unix_ms,
            can_publish,
            can_subscribe,
            publisher: None,
            subscriber: SubscriberTransport {
                id: sub_id,
                ice: IceCredentials::generate(),
                session_id: session_id(),
                offer: SubscriberOffer::default(),
                version: 1,
                last_offer: None,
                remote: None,
                added: false,
                on_shard: HashMap::new(),
                ssrcs: HashMap::new(),
            },
            tracks: Vec::new(),
            subscriptions: BTreeSet::new(),
            events: EventQueue::new(),
        };
        self.transport_states.insert(sub_id, "new");
        self.transports.insert(
            sub_id,
            (room.clone(), identity.clone(), TransportRole::Subscriber),
        );
        let r = self.room(room)?;
        let info = p.info();
        r.notify_others(identity, &ParticipantEvent::Joined(info.clone()));
        r.participants.insert(identity.clone(), p);
        r.empty_since = None;
        tracing::info!(room = %room, %identity, "participant joined");
        // Auto-subscribe to everything already published.
        if can_subscribe {
            let existing: Vec<TrackSid> = r
                .participants
                .values()
                .filter(|o| &o.identity != identity)
                .flat_map(|o| o.tracks.iter().map(|t| t.sid.clone()))
                .collect();
            for sid in existing {
                self.subscribe_track(room, identity, &sid);
            }
        }
        let shard = self.room(room)?.shard;
        let candidates = self.candidates(shard);
        let r = self.room(room)?;
        let others = r
            .participants
            .values()
            .filter(|o| &o.identity != identity)
            .map(Participant::info)
            .collect();
        let participant = r.participant(identity)?.info();
        Ok(JoinInfo {
            room: r.info(),
            participant,
            others,
            candidates,
        })
    }

    /// The reader of a participant's events, starting with what is pending since Join (each
    /// subject's latest event); a second call ends the first reader's stream and takes over.
    pub fn events(
        &mut self,
        room: &RoomName,
        identity: &Identity,
    ) -> Result<EventReader, ControlError> {
        Ok(self.room(room)?.participant(identity)?.events.reader())
    }

    pub fn publish(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        offer: &str,
        names: &HashMap<String, String>,
    ) -> Result<PublishResult, ControlError> {
        self.publish_with(room, identity, offer, names, false)
    }

    fn publish_with(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        offer: &str,
        names: &HashMap<String, String>,
        restart_ice: bool,
    ) -> Result<PublishResult, ControlError> {
        let offer = sdp::parse(offer)?;
        let shard = self.room(room)?.shard;
        let candidates = self.candidates(shard);
        let identity_cert = self.config.identity.clone();
        let fresh_id = TransportId(self.next_transport);
        let mut next_track = self.next_track;
        let srtp_profiles = self.config.srtp_profiles.clone();
        let r = self.room(room)?;
        let room_sid = r.sid.clone();
        let p = r.participant(identity)?;
        if !p.can_publish {
            return Err(ControlError::PublishNotAllowed);
        }
        // Negotiate first, commit after: a failed negotiation changes nothing.
        let (mut ice, session, version, id) = match &p.publisher {
            Some(t) if !restart_ice => (t.ice.clone(), t.session_id.clone(), t.version + 1, t.id),
            Some(t) => (
                IceCredentials::generate(),
                t.session_id.clone(),
                t.version + 1,
                t.id,
            ),
            None => (IceCredentials::generate(), session_id(), 2, fresh_id),
        };
        let answer_with = |ice: &IceCredentials| {
            let local = LocalTransport {
                ice,
                fingerprint: &identity_cert.fingerprint,
                candidates: &candidates,
                session_id: &session,
                session_version: version,
            };
            negotiate::answer_publish(&offer, &local)
        };
        let mut answer = answer_with(&ice)?;
        // New peer credentials in a renegotiation are an ICE restart (RFC 8445 §9): ours change too.
        if let Some(t) = &p.publisher
            && t.remote.ice_ufrag != answer.remote.ice_ufrag
            && t.ice == ice
        {
            ice = IceCredentials::generate();
            answer = answer_with(&ice)?;
        }
        let is_new = p.publisher.is_none();
        let spec = TransportSpec {
            id,
            room: room_sid,
            participant: p.sid.clone(),
            role: TransportRole::Publisher,
            local_ice: ice.clone(),
            remote: Some(answer.remote.clone()),
            srtp_profiles,
        };
        let changed = p
            .publisher
            .as_ref()
            .is_none_or(|t| t.remote != answer.remote || t.ice != ice);
        if changed {
            let cmd = if is_new {
                ShardCommand::AddTransport(spec)
            } else {
                ShardCommand::UpdateTransport(spec)
            };
            self.plane.send(shard, cmd)?;
        }
        if is_new {
            self.next_transport += 1;
            self.transport_states.insert(id, "new");
            self.transports.insert(
                id,
                (room.clone(), identity.clone(), TransportRole::Publisher),
            );
        }
        let r = self.room(room)?;
        let p = r.participant(identity)?;
        p.publisher = Some(PublisherTransport {
            id,
            ice,
            remote: answer.remote.clone(),
            session_id: session,
            version,
        });
        // Tracks: keep those whose mid still sends, add new ones, drop the rest; the shard hears
        // of every change.
        let mut published = Vec::new();
        let mut kept = Vec::new();
        let mut shard_cmds = Vec::new();
        for media in answer.media {
            match p
                .tracks
                .iter()
                .position(|t| t.media.mid == media.mid && t.media.kind == media.kind)
            {
                Some(i) => {
                    let mut t = p.tracks.swap_remove(i);
                    if t.media != media {
                        shard_cmds.push(ShardCommand::PublishTrack(TrackSpec {
                            track: t.num,
                            publisher: id,
                            media: media.clone(),
                        }));
                    }
                    t.media = media;
                    if let Some(n) = names.get(&t.media.mid) {
                        t.name = n.clone();
                    }
                    kept.push(t);
                }
                None => {
                    let num = TrackId(next_track);
                    next_track += 1;
                    shard_cmds.push(ShardCommand::PublishTrack(TrackSpec {
                        track: num,
                        publisher: id,
                        media: media.clone(),
                    }));
                    let t = Track {
                        sid: TrackSid::generate(),
                        num,
                        name: names.get(&media.mid).cloned().unwrap_or_default(),
                        muted: false,
                        media,
                    };
                    published.push(t.sid.clone());
                    kept.push(t);
                }
            }
        }
        let mut removed = Vec::new();
        for t in p.tracks.drain(..) {
            shard_cmds.push(ShardCommand::UnpublishTrack(t.num));
            removed.push(t.sid);
        }
        p.tracks = kept;
        let tracks: Vec<TrackInfo> = p.tracks.iter().map(|t| track_info(t, identity)).collect();
        self.next_track = next_track;
        for cmd in shard_cmds {
            self.send_to_shard(shard, cmd);
        }
        for sid in &removed {
            self.unpublish_from_others(room, identity, sid);
        }
        for info in tracks.iter().filter(|t| published.contains(&t.sid)) {
            let r = self.room(room)?;
            r.notify_others(identity, &ParticipantEvent::TrackPublished(info.clone()));
            let subscribers: Vec<Identity> = r
                .participants
                .values()
                .filter(|o| &o.identity != identity && o.can_subscribe)
                .map(|o| o.identity.clone())
                .collect();
            for s in subscribers {
                self.subscribe_track(room, &s, &info.sid);
            }
        }
        Ok(PublishResult {
            answer: answer.answer.to_string(),
            tracks,
            rejected: answer.rejected,
        })
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

    /// Gives the shard the subscriber transport's current parameters: added on the first offer,
    /// updated after an answer or an ICE restart.
    fn sync_subscriber_transport(
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
    fn sync_subscriptions(
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

    /// New ICE credentials for a transport. Publisher: answers `offer`. Subscriber: a new offer.
    pub fn ice_restart(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        role: TransportRole,
        offer: &str,
    ) -> Result<(String, u64), ControlError> {
        match role {
            TransportRole::Publisher => {
                let p = self.room(room)?.participant(identity)?;
                if p.publisher.is_none() {
                    return Err(ControlError::FailedPrecondition(
                        "nothing has been published yet; call Publish first".to_owned(),
                    ));
                }
                let res = self.publish_with(room, identity, offer, &HashMap::new(), true)?;
                Ok((res.answer, 0))
            }
            TransportRole::Subscriber => {
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
        }
    }

    pub fn leave(
        &mut self,
        room: &RoomName,
        identity: &Identity,
        now: Instant,
    ) -> Result<(), ControlError> {
        self.room(room)?.participant(identity)?;
        self.remove(room, identity, LeaveReason::Left, now);
        Ok(())
    }

    /// Applies a shard's report.
    pub fn handle_shard_event(&mut self, ev: ShardEvent) {
        match ev {
            ShardEvent::TransportState { id, state } => {
                let Some((room, identity, role)) = self.transports.get(&id).cloned() else {
                    return;
                };
                self.transport_states.insert(
                    id,
                    match state {
                        TransportState::Connected => "connected",
                        TransportState::Failed(_) | TransportState::ConsentLost => "failed",
                        TransportState::Closed => "closed",
                    },
                );
                let Ok(p) = self.room(&room).and_then(|r| r.participant(&identity)) else {
                    return;
                };
                p.notify(ParticipantEvent::TransportState {
                    role,
                    state: state.clone(),
                });
                if matches!(
                    state,
                    TransportState::Failed(_) | TransportState::ConsentLost
                ) && role == TransportRole::Publisher
                {
                    tracing::info!(room = %room, %identity, ?state, "publisher transport lost");
                }
            }
            ShardEvent::ActiveSpeakers { shard, speakers } => {
                self.active_speakers(shard, &speakers);
            }
        }
    }

    /// A shard's audible tracks, split by room: each room on the shard whose speakers changed
    /// hears the new list.
    fn active_speakers(&mut self, shard: ShardId, speakers: &[(TrackId, f32)]) {
        for room in self.rooms.values_mut().filter(|r| r.shard == shard) {
            let list: Vec<Speaker> = speakers
                .iter()
                .filter_map(|(num, level)| {
                    room.participants.values().find_map(|p| {
                        let t = p.tracks.iter().find(|t| t.num == *num)?;
                        Some(Speaker {
                            identity: p.identity.clone(),
                            track: t.sid.clone(),
                            level: *level,
                        })
                    })
                })
                .collect();
            if list.iter().map(|s| &s.track).ne(room.speakers.iter()) {
                room.speakers = list.iter().map(|s| s.track.clone()).collect();
                for p in room.participants.values() {
                    p.notify(ParticipantEvent::ActiveSpeakers(list.clone()));
                }
            }
        }
    }

    /// Counts for the metrics endpoint.
    pub fn stats(&self) -> RegistryStats {
        let mut transports_by_state = BTreeMap::new();
        for s in self.transport_states.values() {
            *transports_by_state.entry(*s).or_insert(0) += 1;
        }
        let mut events = self.retired_events;
        for p in self.rooms.values().flat_map(|r| r.participants.values()) {
            events += p.events.counts();
        }
        RegistryStats {
            rooms: self.rooms.len(),
            participants: self.rooms.values().map(|r| r.participants.len()).sum(),
            tracks: self
                .rooms
                .values()
                .flat_map(|r| r.participants.values())
                .map(|p| p.tracks.len())
                .sum(),
            transports_by_state,
            events_coalesced: events.coalesced,
            events_dropped: events.dropped,
        }
    }

    /// Closes rooms that have been empty longer than their `empty_timeout_secs`.
    pub fn sweep(&mut self, now: Instant) -> Vec<RoomName> {
        let expired: Vec<RoomName> = self
            .rooms
            .values()
            .filter(|r| {
                r.settings.empty_timeout_secs > 0
                    && r.empty_since.is_some_and(|t| {
                        now.saturating_duration_since(t)
                            >= Duration::from_secs(u64::from(r.settings.empty_timeout_secs))
                    })
            })
            .map(|r| r.name.clone())
            .collect();
        for name in &expired {
            tracing::info!(room = %name, "empty room closed after its timeout");
            self.rooms.remove(name);
        }
        expired
    }

    /// Disconnects everyone (shutdown).
    pub fn close_all(&mut self, now: Instant) {
        let all: Vec<(RoomName, Identity)> = self
            .rooms
            .values()
            .flat_map(|r| r.participants.keys().map(|i| (r.name.clone(), i.clone())))
            .collect();
        for (room, identity) in all {
            self.remove(&room, &identity, LeaveReason::ServerShutdown, now);
        }
    }

    // ---- internals ----

    /// A track/subscription command: a full or stopped shard is logged, not an error for the
    /// caller (signaling already succeeded; the shard resynchronises on the next change).
    fn send_to_shard(&self, shard: ShardId, cmd: ShardCommand) {
        if let Err(e) = self.plane.send(shard, cmd) {
            tracing::warn!(%shard, error = %e, "media command not delivered to the shard");
        }
    }

    /// Forgets a participant who is no longer in its room: its transports leave the shard, its
    /// event counts join the totals, and dropping it ends its `Events` stream once the stream
    /// has read what is pending.
    fn retire(&mut self, shard: ShardId, p: Participant) {
        self.retired_events += p.events.counts();
        let mut ids = vec![p.subscriber.id];
        ids.extend(p.publisher.as_ref().map(|t| t.id));
        for id in ids {
            self.transports.remove(&id);
            self.transport_states.remove(&id);
            let added = id != p.subscriber.id || p.subscriber.added;
            if added && let Err(e) = self.plane.send(shard, ShardCommand::RemoveTransport(id)) {
                tracing::warn!(%id, error = %e, "could not remove transport from its shard");
            }
        }
    }

    /// Removes a participant who is known to exist.
    fn remove(&mut self, room: &RoomName, identity: &Identity, reason: LeaveReason, now: Instant) {
        let Ok(r) = self.room(room) else { return };
        let Some(p) = r.participants.remove(identity) else {
            return;
        };
        if r.participants.is_empty() {
            r.empty_since = Some(now);
        }
        let shard = r.shard;
        let left = ParticipantEvent::Left {
            identity: identity.clone(),
            sid: p.sid.clone(),
            reason,
        };
        p.notify(left.clone());
        // Others see the tracks go before the participant does.
        let tracks: Vec<TrackSid> = p.tracks.iter().map(|t| t.sid.clone()).collect();
        for sid in &tracks {
            self.unpublish_from_others(room, identity, sid);
        }
        for t in &p.tracks {
            self.send_to_shard(shard, ShardCommand::UnpublishTrack(t.num));
        }
        if let Ok(r) = self.room(room) {
            r.notify_others(identity, &left);
        }
        self.retire(shard, p);
        tracing::info!(room = %room, %identity, ?reason, "participant left");
    }

    fn unpublish_from_others(&mut self, room: &RoomName, publisher: &Identity, sid: &TrackSid) {
        let Ok(r) = self.room(room) else { return };
        let ev = ParticipantEvent::TrackUnpublished {
            track: sid.clone(),
            publisher: publisher.clone(),
        };
        r.notify_others(publisher, &ev);
        let subscribers: Vec<Identity> = r
            .participants
            .values()
            .filter(|p| p.subscriptions.contains(sid))
            .map(|p| p.identity.clone())
            .collect();
        for s in subscribers {
            self.unsubscribe_track(room, &s, sid);
        }
    }

    fn subscribe_track(&mut self, room: &RoomName, identity: &Identity, sid: &TrackSid) {
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

    fn unsubscribe_track(&mut self, room: &RoomName, identity: &Identity, sid: &TrackSid) {
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

#[cfg(test)]
mod tests;
