//! The datapath as the control plane's `MediaPlane`: shard commands translated into datapath
//! commands, datapath events into shard events. Neither crate knows the other; this does.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use ringcast_control::codec::ext;
use ringcast_control::ids::{ShardId, TransportId};
use ringcast_control::negotiate::DtlsRole;
use ringcast_control::plane::{
    MediaPlane, PlaneError, ShardCommand, ShardEvent, ShardInfo, SrtpProfile, TransportSpec,
    TransportState,
};
use ringcast_control::plane::{SubscriptionSpec, TrackNum, TrackSpec};
use ringcast_datapath::dtls::{Fingerprint, Role};
use ringcast_datapath::srtp::Profile;
use ringcast_datapath::{
    Command, Datapath, DatapathConfig, Event, RemoteConfig, SendError, TransportConfig,
};

use ringcast_media::router::{
    EncodingConfig, ForwardedExt, MediaCommand, MediaRouter, RtxConfig, SubscriptionConfig,
    TrackConfig, TrackId,
};
use tokio::sync::mpsc;

/// The running shards behind the `MediaPlane` trait.
pub struct DatapathPlane {
    // `Datapath` stops its threads on drop; the mutex only guards that final stop.
    datapath: Mutex<Datapath<MediaRouter>>,
    shards: Vec<ShardInfo>,
    backend: &'static str,
}

pub fn srtp_profile(p: SrtpProfile) -> Profile {
    match p {
        SrtpProfile::AeadAes128Gcm => Profile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm => Profile::AeadAes256Gcm,
        SrtpProfile::Aes128CmHmacSha1_80 => Profile::Aes128CmHmacSha1_80,
    }
}

fn profile_name(p: Profile) -> &'static str {
    match p {
        Profile::AeadAes128Gcm => "AEAD_AES_128_GCM",
        Profile::AeadAes256Gcm => "AEAD_AES_256_GCM",
        Profile::Aes128CmHmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
    }
}

impl DatapathPlane {
    /// Starts the shards; their events go to `events` (dropped, and counted, if it is full).
    pub fn start(
        config: DatapathConfig,
        public_ips: &[IpAddr],
        events: mpsc::Sender<ShardEvent>,
    ) -> std::io::Result<Self> {
        let speakers = events.clone();
        let sink = Arc::new(move |shard: u16, ev: Event| {
            let ev = match ev {
                Event::Connected { id, profile } => {
                    metrics::counter!("ringcast_transports_connected_total", "srtp_profile" => profile_name(profile))
                        .increment(1);
                    tracing::debug!(
                        shard,
                        transport = id.0,
                        profile = profile_name(profile),
                        "transport connected"
                    );
                    ShardEvent::TransportState {
                        id: control_id(id),
                        state: TransportState::Connected,
                    }
                }
                Event::Failed { id, reason } => {
                    tracing::info!(shard, transport = id.0, %reason, "transport failed");
                    ShardEvent::TransportState {
                        id: control_id(id),
                        state: TransportState::Failed(reason),
                    }
                }
                Event::ConsentLost { id } => ShardEvent::TransportState {
                    id: control_id(id),
                    state: TransportState::ConsentLost,
                },
                Event::Closed { id } => ShardEvent::TransportState {
                    id: control_id(id),
                    state: TransportState::Closed,
                },
            };
            if events.try_send(ev).is_err() {
                metrics::counter!("ringcast_shard_events_dropped_total").increment(1);
            }
        });
        // Each shard's router reports its active speakers straight to the control plane (a
        // few times a second at most, so a channel send is fine).
        let router = |shard: u16| {
            let events = speakers.clone();
            MediaRouter::with_speaker_sink(Box::new(move |list: &[(TrackId, f32)]| {
                let ev = ShardEvent::ActiveSpeakers {
                    shard: ShardId(shard),
                    speakers: list.iter().map(|(t, l)| (TrackNum(t.0), *l)).collect(),
                };
                if events.try_send(ev).is_err() {
                    metrics::counter!("ringcast_shard_events_dropped_total").increment(1);
                }
            }))
        };
        let datapath = Datapath::start(config, router, sink)?;
        let shards = datapath
            .local_addrs()
            .iter()
            .enumerate()
            .map(|(i, a)| ShardInfo {
                id: ShardId(i as u16),
                candidate_addrs: public_ips
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, a.port()))
                    .collect(),
            })
            .collect();
        let backend = datapath.backend();
        metrics::gauge!("ringcast_datapath_backend", "backend" => backend).set(1.0);
        Ok(DatapathPlane {
            datapath: Mutex::new(datapath),
            shards,
            backend,
        })
    }

    /// Stops the shard threads.
    pub fn stop(&self) {
        if let Ok(mut d) = self.datapath.lock() {
            d.stop();
        }
    }
}

/// The shards' copy of the control plane's transport id (the crates don't know each other).
fn shard_id(id: TransportId) -> ringcast_datapath::TransportId {
    ringcast_datapath::TransportId(id.0)
}

/// The control plane's id of a transport a shard reports on.
fn control_id(id: ringcast_datapath::TransportId) -> TransportId {
    TransportId(id.0)
}

fn forwarded(uri: &str) -> Option<ForwardedExt> {
    match uri {
        ext::AUDIO_LEVEL => Some(ForwardedExt::AudioLevel),
        ext::ABS_SEND_TIME => Some(ForwardedExt::AbsSendTime),
        ext::DEPENDENCY_DESCRIPTOR => Some(ForwardedExt::DependencyDescriptor),
        _ => None,
    }
}

fn track_config(spec: TrackSpec) -> Option<TrackConfig> {
    let m = spec.media;
    let codec = m.codecs.first()?;
    let id_of = |uri: &str| m.extensions.iter().find(|e| e.uri == uri).map(|e| e.id);
    Some(TrackConfig {
        id: TrackId(spec.track.0),
        publisher: shard_id(spec.publisher),
        codec: codec.name(),
        clock_rate: codec.name().clock_rate(),
        payload_type: codec.pt,
        rtx_payload_type: codec.rtx_pt,
        mid_ext: id_of(ext::MID),
        rid_ext: id_of(ext::RID),
        rrid_ext: id_of(ext::REPAIRED_RID),
        forwarded_exts: m
            .extensions
            .iter()
            .filter_map(|e| forwarded(&e.uri).map(|f| (e.id, f)))
            .collect(),
        encodings: m
            .encodings
            .iter()
            .map(|e| EncodingConfig {
                rid: e.rid.clone(),
                ssrc: e.ssrc,
                rtx_ssrc: e.rtx_ssrc,
            })
            .collect(),
        mid: m.mid,
    })
}

fn subscription_config(spec: SubscriptionSpec) -> SubscriptionConfig {
    SubscriptionConfig {
        track: TrackId(spec.track.0),
        subscriber: shard_id(spec.subscriber),
        ssrc: spec.ssrc,
        payload_type: spec.payload_type,
        rtx: spec
            .rtx_ssrc
            .zip(spec.rtx_payload_type)
            .map(|(ssrc, payload_type)| RtxConfig { ssrc, payload_type }),
        exts: spec
            .extensions
            .iter()
            .filter_map(|e| forwarded(&e.uri).map(|f| (f, e.id)))
            .collect(),
    }
}

fn transport_config(spec: TransportSpec) -> TransportConfig {
    TransportConfig {
        id: shard_id(spec.id),
        local_ufrag: spec.local_ice.ufrag,
        local_pwd: spec.local_ice.pwd,
        remote: spec.remote.map(|r| RemoteConfig {
            ufrag: r.ice_ufrag,
            dtls_role: match r.dtls_role {
                DtlsRole::Server => Role::Server,
                DtlsRole::Client => Role::Client,
            },
            fingerprints: r
                .fingerprints
                .into_iter()
                .map(|f| Fingerprint {
                    algorithm: f.algorithm,
                    bytes: f.bytes,
                })
                .collect(),
        }),
    }
}

impl MediaPlane for DatapathPlane {
    fn shards(&self) -> &[ShardInfo] {
        &self.shards
    }

    fn send(&self, shard: ShardId, cmd: ShardCommand) -> Result<(), PlaneError> {
        let cmd = match cmd {
            ShardCommand::AddTransport(spec) | ShardCommand::UpdateTransport(spec) => {
                Command::Upsert(transport_config(spec))
            }
            ShardCommand::RemoveTransport(id) => Command::Remove(shard_id(id)),
            ShardCommand::PublishTrack(spec) => match track_config(spec) {
                Some(c) => Command::Router(MediaCommand::AddTrack(c)),
                None => return Ok(()),
            },
            ShardCommand::UnpublishTrack(t) => {
                Command::Router(MediaCommand::RemoveTrack(TrackId(t.0)))
            }
            ShardCommand::MuteTrack { track, muted } => Command::Router(MediaCommand::SetMuted {
                track: TrackId(track.0),
                muted,
            }),
            ShardCommand::Subscribe(spec) => {
                Command::Router(MediaCommand::Subscribe(subscription_config(spec)))
            }
            ShardCommand::Unsubscribe { track, subscriber } => {
                Command::Router(MediaCommand::Unsubscribe {
                    track: TrackId(track.0),
                    subscriber: shard_id(subscriber),
                })
            }
            // A command this build doesn't know is a programming error, not input: say so.
            #[allow(unreachable_patterns)]
            other => {
                tracing::error!(?other, "shard command without a datapath translation");
                return Ok(());
            }
        };
        let d = self
            .datapath
            .lock()
            .map_err(|_| PlaneError::Stopped(shard))?;
        d.send(shard.0, cmd).map_err(|e| match e {
            SendError::NoSuchShard => PlaneError::NoSuchShard(shard),
            SendError::Busy => PlaneError::Busy(shard),
            SendError::Stopped => PlaneError::Stopped(shard),
        })
    }

    fn ready(&self) -> bool {
        self.datapath.lock().is_ok_and(|d| d.ready())
    }

    fn backend(&self) -> &'static str {
        self.backend
    }
}
