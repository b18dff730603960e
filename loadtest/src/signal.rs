//! What a synthetic participant says to Ringcast's public gRPC API, as a real client does:
//! an admin token (minted with the API key and secret, as a backend would) for `CreateRoom` and
//! `CreateAccessToken`; then with the participant's token `Join`, `Publish` (our offer, its
//! answer), `Events`, and `Subscribe` / `SubscribeAnswer` again on every
//! `SubscriberOfferReady`. Each transport it sets up goes to the engine.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use openssl::ssl::SslContext;
use ringcast_control::auth::{Authenticator, Grants};
use ringcast_datapath::client::{Client, ClientConfig};
use ringcast_datapath::dtls::Fingerprint;
use ringcast_proto::v1 as pb;
use ringcast_proto::v1::room_service_client::RoomServiceClient;
use ringcast_proto::v1::signaling_client::SignalingClient;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::engine::{Command, NewTransport, Role};
use crate::media::Source;
use crate::rng::Rng;
use crate::sdp::{self, Local, PublishPlan};

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cannot reach Ringcast's gRPC API at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error(
        "{rpc}: the server refused our credentials (RINGCAST_API_KEY / RINGCAST_API_SECRET must be the server's): {message}"
    )]
    Unauthenticated { rpc: &'static str, message: String },
    #[error("{rpc}: room `{room}` is full: {message}")]
    RoomFull {
        rpc: &'static str,
        room: String,
        message: String,
    },
    #[error("{rpc} failed ({code:?}): {message}")]
    Rpc {
        rpc: &'static str,
        code: Code,
        message: String,
    },
    #[error("minting a token: {0}")]
    Token(String),
    #[error(transparent)]
    Sdp(#[from] sdp::SdpError),
    #[error("Ringcast's SDP has no UDP candidate to send to")]
    NoCandidate,
    #[error("client transport: {0}")]
    Client(#[from] ringcast_datapath::client::ClientError),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the media engine has stopped")]
    EngineGone,
}

fn rpc_error(rpc: &'static str, room: &str, s: Status) -> SignalError {
    match s.code() {
        Code::Unauthenticated => SignalError::Unauthenticated {
            rpc,
            message: s.message().to_owned(),
        },
        Code::ResourceExhausted => SignalError::RoomFull {
            rpc,
            room: room.to_owned(),
            message: s.message().to_owned(),
        },
        Code::Unavailable
            if s.message().contains("connect") || s.message().contains("transport") =>
        {
            SignalError::Unreachable {
                addr: String::new(),
                reason: s.message().to_owned(),
            }
        }
        code => SignalError::Rpc {
            rpc,
            code,
            message: s.message().to_owned(),
        },
    }
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

/// The API, with an admin token.
#[derive(Clone)]
pub struct Api {
    channel: Channel,
    admin: String,
}

impl Api {
    /// Connects to `addr` (`http://host:port`) and mints an admin token with the API key and
    /// secret.
    pub async fn connect(addr: &str, key: &str, secret: &str) -> Result<Self, SignalError> {
        let unreachable = |reason: String| SignalError::Unreachable {
            addr: addr.to_owned(),
            reason,
        };
        let endpoint = Endpoint::from_shared(addr.to_owned())
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| {
            let mut reason = e.to_string();
            if let Some(src) = std::error::Error::source(&e) {
                reason = format!("{reason}: {src}");
            }
            unreachable(reason)
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let (admin, _) = Authenticator::new(key, secret)
            .mint(
                "loadtest-admin",
                None,
                Grants {
                    admin: true,
                    ..Grants::default()
                },
                now,
                6 * 3600,
            )
            .map_err(|e| SignalError::Token(e.to_string()))?;
        Ok(Api { channel, admin })
    }

    fn rooms(&self) -> RoomServiceClient<Channel> {
        RoomServiceClient::new(self.channel.clone())
    }

    pub fn signaling(&self) -> SignalingClient<Channel> {
        SignalingClient::new(self.channel.clone())
    }

    /// Creates the room (idempotent) with room for `max` participants.
    pub async fn create_room(&self, name: &str, max: u32) -> Result<(), SignalError> {
        match self
            .rooms()
            .create_room(with_token(
                pb::CreateRoomRequest {
                    name: name.to_owned(),
                    max_participants: max,
                    empty_timeout_secs: 30,
                    metadata: "loadtest".to_owned(),
                },
                &self.admin,
            ))
            .await
        {
            Ok(_) => Ok(()),
            // It exists with other settings (an operator made it): use it as it is.
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(rpc_error("CreateRoom", name, s)),
        }
    }

    pub async fn token(
        &self,
        room: &str,
        identity: &str,
        publish: bool,
        subscribe: bool,
    ) -> Result<String, SignalError> {
        let r = self
            .rooms()
            .create_access_token(with_token(
                pb::CreateAccessTokenRequest {
                    room: room.to_owned(),
                    identity: identity.to_owned(),
                    name: identity.to_owned(),
                    can_publish: publish,
                    can_subscribe: subscribe,
                    admin: false,
                    ttl_secs: 6 * 3600,
                },
                &self.admin,
            ))
            .await
            .map_err(|s| rpc_error("CreateAccessToken", room, s))?;
        Ok(r.into_inner().token)
    }

    /// Deletes the room (everyone in it is disconnected).
    pub async fn delete_room(&self, name: &str) -> Result<(), SignalError> {
        self.rooms()
            .delete_room(with_token(
                pb::DeleteRoomRequest {
                    name: name.to_owned(),
                },
                &self.admin,
            ))
            .await
            .map_err(|s| rpc_error("DeleteRoom", name, s))?;
        Ok(())
    }
}

/// What a publisher sends.
#[derive(Debug, Clone, Copy)]
pub struct MediaPlan {
    pub audio: bool,
    pub video: bool,
    pub video_kbps: u32,
    pub fps: u32,
    pub keyframe_interval: Duration,
    pub simulcast: bool,
    /// Frames leave as one burst instead of paced.
    pub unpaced: bool,
}

/// One participant of the scenario.
#[derive(Debug, Clone)]
pub struct Participant {
    pub index: usize,
    pub room: String,
    pub identity: String,
    pub publish: Option<MediaPlan>,
    pub subscribe: bool,
}

/// What every participant shares.
pub struct Shared {
    pub api: Api,
    /// Our DTLS certificate and SRTP profile, as a client context.
    pub ssl: SslContext,
    pub fingerprint: Fingerprint,
    pub engine: SyncSender<Command>,
    pub epoch: Instant,
    pub seed: u64,
    /// Subscribers keep transport-wide sequence numbers and send their feedback.
    pub transport_cc: bool,
    next_id: AtomicUsize,
    /// `Events` messages subscribers have read.
    pub events_read: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn new(
        api: Api,
        ssl: SslContext,
        fingerprint: Fingerprint,
        engine: SyncSender<Command>,
        epoch: Instant,
        seed: u64,
        transport_cc: bool,
    ) -> Self {
        Shared {
            api,
            ssl,
            fingerprint,
            engine,
            epoch,
            seed,
            transport_cc,
            next_id: AtomicUsize::new(0),
            events_read: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn send(&self, c: Command) -> Result<(), SignalError> {
        self.engine.send(c).map_err(|_| SignalError::EngineGone)
    }
}

/// A socket connected to `server`, with a receive buffer that holds a keyframe burst.
fn socket_to(server: SocketAddr) -> Result<UdpSocket, SignalError> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::]:0".parse().map_err(std::io::Error::other)?
    };
    let s = UdpSocket::bind(local)?;
    s.connect(server)?;
    // Room for a keyframe burst (forced where the process may, else net.core.rmem_max caps it).
    ringcast_datapath::io::request_socket_buffer(
        &s,
        ringcast_datapath::io::SocketBuffer::Receive,
        1 << 20,
    );
    Ok(s)
}

fn client_for(
    shared: &Shared,
    local: &Local,
    remote: &sdp::Remote,
    rng: &mut Rng,
) -> Result<Client, SignalError> {
    Ok(Client::new(
        &shared.ssl,
        ClientConfig {
            local_ufrag: local.ufrag.clone(),
            remote_ufrag: remote.ufrag.clone(),
            remote_pwd: remote.pwd.clone(),
            tie_breaker: rng.next_u64(),
            server_fingerprints: remote.fingerprints.clone(),
        },
    )?)
}

/// Joins, publishes and subscribes as `p` says; returns once its transports are handed to the
/// engine (the subscriber keeps renegotiating in a task of its own).
pub async fn run(shared: Arc<Shared>, p: Participant) -> Result<(), SignalError> {
    let mut rng = Rng::new(shared.seed ^ (p.index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let token = shared
        .api
        .token(&p.room, &p.identity, p.publish.is_some(), p.subscribe)
        .await?;
    let joined_at = Instant::now();
    let mut sig = shared.api.signaling();
    let join = sig
        .join(with_token(
            pb::JoinRequest {
                name: p.identity.clone(),
            },
            &token,
        ))
        .await
        .map_err(|s| rpc_error("Join", &p.room, s))?;
    drop(join);
    if p.subscribe {
        // Events first, so no SubscriberOfferReady is missed.
        let events = sig
            .events(with_token(pb::EventsRequest {}, &token))
            .await
            .map_err(|s| rpc_error("Events", &p.room, s))?
            .into_inner();
        let mut side = SubscriberSide {
            local: Local {
                ufrag: rng.token(8),
                pwd: rng.token(24),
                fingerprint: shared.fingerprint.clone(),
            },
            id: shared.next_id.fetch_add(1, Ordering::Relaxed),
            shared: shared.clone(),
            token: token.clone(),
            p: p.clone(),
            rng,
            answered: None,
            created: false,
            joined_at,
        };
        side.negotiate().await?;
        tokio::spawn(async move {
            let mut events = events;
            while let Some(Ok(ev)) = events.next().await {
                side.shared.events_read.fetch_add(1, Ordering::Relaxed);
                if let Some(pb::event::Event::SubscriberOfferReady(o)) = ev.event
                    && o.offer_version > side.answered.unwrap_or(0)
                    && let Err(e) = side.negotiate().await
                {
                    tracing::warn!(participant = %side.p.identity, error = %e, "renegotiation failed");
                }
            }
        });
    }
    if let Some(plan) = p.publish {
        publish(&shared, &token, &p, plan, joined_at).await?;
    }
    Ok(())
}

/// A participant's subscriber side: its transport and the offers it answered.
struct SubscriberSide {
    shared: Arc<Shared>,
    token: String,
    p: Participant,
    local: Local,
    id: usize,
    rng: Rng,
    answered: Option<u64>,
    /// The transport was handed to the engine.
    created: bool,
    joined_at: Instant,
}

impl SubscriberSide {
    /// One negotiation: `Subscribe`, then our answer. The first offer with media sets the
    /// transport up.
    async fn negotiate(&mut self) -> Result<(), SignalError> {
        let room = self.p.room.clone();
        let mut sig = self.shared.api.signaling();
        let offer = sig
            .subscribe(with_token(pb::SubscribeRequest {}, &self.token))
            .await
            .map_err(|s| rpc_error("Subscribe", &room, s))?
            .into_inner();
        if Some(offer.offer_version) == self.answered {
            return Ok(());
        }
        let desc = ringcast_control::sdp::parse(&offer.sdp_offer).map_err(sdp::SdpError::from)?;
        let transport_cc = self.shared.transport_cc;
        let answer =
            sdp::subscribe_answer(&desc, &self.local, self.rng.next_u64() >> 1, transport_cc);
        let tracks = sdp::offered_tracks(&desc);
        // The transport starts with the first offer that has one (an offer without
        // m-sections has nothing to check).
        if !self.created
            && let Ok(remote) = sdp::remote(&desc)
        {
            let server = remote.candidate.ok_or(SignalError::NoCandidate)?;
            let client = client_for(&self.shared, &self.local, &remote, &mut self.rng)?;
            self.shared.send(Command::Add(Box::new(NewTransport {
                id: self.id,
                participant: self.p.index,
                socket: socket_to(server)?,
                client,
                role: Role::Subscriber { transport_cc },
                joined_at: self.joined_at,
            })))?;
            self.created = true;
        }
        self.shared.send(Command::Tracks {
            id: self.id,
            tracks,
        })?;
        let res = sig
            .subscribe_answer(with_token(
                pb::SubscribeAnswerRequest {
                    sdp_answer: answer,
                    offer_version: offer.offer_version,
                },
                &self.token,
            ))
            .await;
        match res {
            Ok(_) => {
                self.answered = Some(offer.offer_version);
                Ok(())
            }
            // A newer offer exists: the next SubscriberOfferReady brings it.
            Err(s) if s.code() == Code::FailedPrecondition => Ok(()),
            Err(s) => Err(rpc_error("SubscribeAnswer", &room, s)),
        }
    }
}

async fn publish(
    shared: &Arc<Shared>,
    token: &str,
    p: &Participant,
    plan: MediaPlan,
    joined_at: Instant,
) -> Result<(), SignalError> {
    let mut rng = Rng::new(shared.seed ^ 0xB0B ^ p.index as u64);
    let local = Local {
        ufrag: rng.token(8),
        pwd: rng.token(24),
        fingerprint: shared.fingerprint.clone(),
    };
    let layers = if plan.simulcast { 3 } else { 1 };
    let ssrcs = PublishPlan {
        audio_ssrc: plan.audio.then(|| rng.ssrc()),
        video_ssrcs: if plan.video {
            (0..layers).map(|_| rng.ssrc()).collect()
        } else {
            Vec::new()
        },
    };
    let offer = sdp::publish_offer(&local, &ssrcs, rng.next_u64() >> 1);
    let mut names = std::collections::HashMap::new();
    if plan.audio {
        names.insert("0".to_owned(), "microphone".to_owned());
    }
    if plan.video {
        names.insert("1".to_owned(), "camera".to_owned());
    }
    let answer = shared
        .api
        .signaling()
        .publish(with_token(
            pb::PublishRequest {
                sdp_offer: offer,
                track_names: names,
                track_sources: Default::default(),
            },
            token,
        ))
        .await
        .map_err(|s| rpc_error("Publish", &p.room, s))?
        .into_inner();
    if let Some(r) = answer.rejected.first() {
        return Err(SignalError::Rpc {
            rpc: "Publish",
            code: Code::InvalidArgument,
            message: format!("the server rejected mid {}: {}", r.mid, r.reason),
        });
    }
    let desc = ringcast_control::sdp::parse(&answer.sdp_answer).map_err(sdp::SdpError::from)?;
    let remote = sdp::remote(&desc)?;
    let server = remote.candidate.ok_or(SignalError::NoCandidate)?;
    let start = Instant::now();
    let mut sources = Vec::new();
    if let Some(ssrc) = ssrcs.audio_ssrc {
        sources.push(Source::audio(
            ssrc,
            111,
            "0",
            sdp::ext_ids(&desc, "0"),
            start,
        ));
    }
    let exts = sdp::ext_ids(&desc, "1");
    for (i, ssrc) in ssrcs.video_ssrcs.iter().enumerate() {
        // Simulcast layers at 1/16, 1/4 and all of the bitrate (a 720p ladder's shape).
        let (rid, kbps) = if layers == 1 {
            (None, plan.video_kbps)
        } else {
            (Some(sdp::RIDS[i]), plan.video_kbps >> (4 - 2 * i.min(2)))
        };
        let mut v = Source::video(
            *ssrc,
            96,
            "1",
            rid,
            exts,
            kbps.max(30),
            plan.fps,
            plan.keyframe_interval,
            start,
        );
        if plan.unpaced {
            v.unpace();
        }
        sources.push(v);
    }
    let client = client_for(shared, &local, &remote, &mut rng)?;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    shared.send(Command::Add(Box::new(NewTransport {
        id,
        participant: p.index,
        socket: socket_to(server)?,
        client,
        role: Role::Publisher(sources),
        joined_at,
    })))
}
