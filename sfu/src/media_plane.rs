//! The datapath as the control plane's `MediaPlane`: shard commands translated into datapath
//! commands, datapath events into shard events. Neither crate knows the other; this does.
//! Both speak `ringcast-types`' ids, profiles and fingerprints, so what is left here is the
//! shape of the commands.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use ringcast_control::codec::ext;
use ringcast_control::ids::ShardId;
use ringcast_control::plane::{
    MediaPlane, PlaneError, ShardCommand, ShardEvent, ShardInfo, TransportSpec, TransportState,
};
use ringcast_control::plane::{Quality, SubscriptionSpec, TrackSpec};
use ringcast_datapath::{
    Command, Datapath, DatapathConfig, Event, RemoteConfig, SendError, TransportConfig,
};

use ringcast_media::router::{
    EncodingConfig, ForwardedExt, MediaCommand, MediaRouter, RtxConfig, SubscriptionConfig,
    SubscriptionQuality, TrackConfig,
};
use ringcast_types::TrackId;
use tokio::sync::mpsc;

/// The running shards behind the `MediaPlane` trait.
pub struct DatapathPlane {
    // `Datapath` stops its threads on drop; the mutex only guards that final stop.
    datapath: Mutex<Datapath<MediaRouter>>,
    shards: Vec<ShardInfo>,
    backend: &'static str,
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
                    metrics::counter!("ringcast_transports_connected_total", "srtp_profile" => profile.name())
                        .increment(1);
                    tracing::debug!(
                        shard,
                        transport = id.0,
                        profile = profile.name(),
                        "transport connected"
                    );
                    ShardEvent::TransportState {
                        id,
                        state: TransportState::Connected,
                    }
                }
                Event::Failed { id, reason } => {
                    tracing::info!(shard, transport = id.0, %reason, "transport failed");
                    ShardEvent::TransportState {
                        id,
                        state: TransportState::Failed(reason),
                    }
                }
                Event::ConsentLost { id } => ShardEvent::TransportState {
                    id,
                    state: TransportState::ConsentLost,
                },
                Event::Closed { id } => ShardEvent::TransportState {
                    id,
                    state: TransportState::Closed,
                },
            };
            if events.try_send(ev).is_err() {
                metrics::counter!("ringcast_shard_events_dropped_total").increment(1);
            }
        });
        // Each shard's router reports its active speakers and what its video subscriptions
        // are sent straight to the control plane (a few times a second at most, a batch each
        // time, so a channel send is fine).
        let router = |shard: u16| {
            let events = speakers.clone();
            let quality = speakers.clone();
            let layers = speakers.clone();
            MediaRouter::with_speaker_sink(Box::new(move |list: &[(TrackId, f32)]| {
                let ev = ShardEvent::ActiveSpeakers {
                    shard: ShardId(shard),
                    speakers: list.to_vec(),
                };
                if events.try_send(ev).is_err() {
                    metrics::counter!("ringcast_shard_events_dropped_total").increment(1);
                }
            }))
            .with_quality_sink(Box::new(move |batch: &[SubscriptionQuality]| {
                let ev = ShardEvent::SubscriptionQuality(
                    batch
                        .iter()
                        .map(|q| {
                            let quality = Quality {
                                current: q.current,
                                target: q.target,
                                layers: q.layers,
                                estimate_bps: q.estimate_bps,
                                temporal: q.temporal,
                                temporal_layers: q.temporal_layers,
                            };
                            (q.subscriber, q.track, quality)
                        })
                        .collect(),
                );
                if quality.try_send(ev).is_err() {
                    metrics::counter!("ringcast_shard_events_dropped_total").increment(1);
                }
            }))
            .with_layers_sink(Box::new(move |track: TrackId, active: &[bool]| {
                let ev = ShardEvent::LayersWanted {
                    track,
                    active: active.to_vec(),
                };
                if layers.try_send(ev).is_err() {
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

/// The router's view of a published track; `Err` says why it cannot forward it.
fn track_config(spec: TrackSpec) -> Result<TrackConfig, String> {
    let m = spec.media;
    let Some(codec) = m.codecs.first() else {
        return Err(format!(
            "{} (mid `{}`) has no codec to forward",
            spec.track, m.mid
        ));
    };
    let id_of = |uri: &str| m.extensions.iter().find(|e| e.uri == uri).map(|e| e.id);
    Ok(TrackConfig {
        id: spec.track,
        publisher: spec.publisher,
        codec: codec.name(),
        clock_rate: codec.name().clock_rate(),
        payload_type: codec.pt,
        rtx_payload_type: codec.rtx_pt,
        mid_ext: id_of(ext::MID),
        rid_ext: id_of(ext::RID),
        rrid_ext: id_of(ext::REPAIRED_RID),
        transport_cc_ext: id_of(ext::TRANSPORT_CC),
        source: spec.source,
        forwarded_exts: m
            .extensions
            .iter()
            .filter_map(|e| ForwardedExt::from_uri(&e.uri).map(|f| (e.id, f)))
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
        track: spec.track,
        subscriber: spec.subscriber,
        ssrc: spec.ssrc,
        payload_type: spec.payload_type,
        rtx: spec
            .rtx_ssrc
            .zip(spec.rtx_payload_type)
            .map(|(ssrc, payload_type)| RtxConfig { ssrc, payload_type }),
        exts: spec
            .extensions
            .iter()
            .filter_map(|e| ForwardedExt::from_uri(&e.uri).map(|f| (f, e.id)))
            .collect(),
        transport_cc_ext: spec
            .extensions
            .iter()
            .find(|e| e.uri == ext::TRANSPORT_CC)
            .map(|e| e.id),
        settings: spec.settings,
    }
}

fn transport_config(spec: TransportSpec) -> TransportConfig {
    TransportConfig {
        id: spec.id,
        local_ufrag: spec.local_ice.ufrag,
        local_pwd: spec.local_ice.pwd,
        remote: spec.remote.map(|r| RemoteConfig {
            ufrag: r.ice_ufrag,
            dtls_role: r.dtls_role,
            fingerprints: r.fingerprints,
        }),
    }
}

/// A shard command as the datapath takes it; a command it cannot carry out is refused, so the
/// control plane hears of it instead of believing it done.
fn datapath_command(
    shard: ShardId,
    cmd: ShardCommand,
) -> Result<Command<MediaCommand>, PlaneError> {
    let refused = |reason: String| PlaneError::Refused { shard, reason };
    Ok(match cmd {
        ShardCommand::AddTransport(spec) | ShardCommand::UpdateTransport(spec) => {
            Command::Upsert(transport_config(spec))
        }
        ShardCommand::RemoveTransport(id) => Command::Remove(id),
        ShardCommand::PublishTrack(spec) => {
            Command::Router(MediaCommand::AddTrack(track_config(spec).map_err(refused)?))
        }
        ShardCommand::UnpublishTrack(t) => Command::Router(MediaCommand::RemoveTrack(t)),
        ShardCommand::MuteTrack { track, muted } => {
            Command::Router(MediaCommand::SetMuted { track, muted })
        }
        ShardCommand::Subscribe(spec) => {
            Command::Router(MediaCommand::Subscribe(subscription_config(spec)))
        }
        ShardCommand::ConfigureSubscription {
            track,
            subscriber,
            settings,
        } => Command::Router(MediaCommand::Configure {
            track,
            subscriber,
            settings,
        }),
        ShardCommand::Unsubscribe { track, subscriber } => {
            Command::Router(MediaCommand::Unsubscribe { track, subscriber })
        }
        // A command this build doesn't know is a programming error, not input: say so.
        #[allow(unreachable_patterns)]
        other => {
            tracing::error!(?other, "shard command without a datapath translation");
            return Err(refused(format!("this datapath cannot carry out {other:?}")));
        }
    })
}

impl MediaPlane for DatapathPlane {
    fn shards(&self) -> &[ShardInfo] {
        &self.shards
    }

    fn send(&self, shard: ShardId, cmd: ShardCommand) -> Result<(), PlaneError> {
        let cmd = datapath_command(shard, cmd)?;
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

#[cfg(test)]
mod tests {
    use ringcast_control::codec::MediaKind;
    use ringcast_control::negotiate::PublishedMedia;
    use ringcast_types::TransportId;

    use super::*;

    #[test]
    fn a_track_without_a_codec_is_refused_not_dropped() {
        let spec = TrackSpec {
            track: TrackId(7),
            publisher: TransportId(1),
            media: PublishedMedia {
                mid: "1".to_owned(),
                kind: MediaKind::Video,
                codecs: Vec::new(),
                extensions: Vec::new(),
                encodings: Vec::new(),
                stream_id: None,
                track_id: None,
            },
            source: Default::default(),
        };
        let err = datapath_command(ShardId(2), ShardCommand::PublishTrack(spec)).err();
        assert_eq!(
            err,
            Some(PlaneError::Refused {
                shard: ShardId(2),
                reason: "track-7 (mid `1`) has no codec to forward".to_owned(),
            })
        );
        assert!(datapath_command(ShardId(2), ShardCommand::UnpublishTrack(TrackId(7))).is_ok());
    }
}
