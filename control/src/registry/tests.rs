//! Room lifecycle scenarios against the recording media plane.

use super::*;
use crate::events::EventReader;
use crate::plane::{RecordingMediaPlane, SubscriptionSpec, TrackSpec};
use crate::sdp::tests::{CHROMIUM_PUBLISH, CHROMIUM_SUBSCRIBE_ANSWER, FIREFOX_PUBLISH};

struct Fixture {
    reg: Registry,
    plane: Arc<RecordingMediaPlane>,
    now: Instant,
}

fn fixture(shards: u16) -> Fixture {
    let plane = Arc::new(RecordingMediaPlane::new(
        &["127.0.0.1".parse().unwrap()],
        40000,
        shards,
    ));
    let config = RegistryConfig {
        identity: Arc::new(DtlsIdentity::generate().unwrap()),
        srtp_profiles: SrtpProfile::ALL.to_vec(),
    };
    Fixture {
        reg: Registry::new(config, plane.clone()),
        plane,
        now: Instant::now(),
    }
}

fn rn(s: &str) -> RoomName {
    RoomName::new(s).unwrap()
}

fn joiner(room: &str, who: &str, can_publish: bool, can_subscribe: bool) -> Joiner {
    Joiner {
        room: rn(room),
        identity: id(who),
        name: who.to_owned(),
        can_publish,
        can_subscribe,
    }
}

fn id(s: &str) -> Identity {
    Identity::new(s).unwrap()
}

impl Fixture {
    fn room(&mut self, name: &str) -> RoomInfo {
        self.reg
            .create_room(name, RoomSettings::default(), self.now, 0)
            .unwrap()
    }

    fn join(&mut self, room: &str, who: &str) -> JoinInfo {
        self.reg
            .join(&joiner(room, who, true, true), self.now, 0)
            .unwrap()
    }

    /// `who` publishes `sdp` in `room`; it must succeed.
    fn publish(&mut self, room: &str, who: &str, sdp: &str) -> PublishResult {
        self.reg
            .publish(&rn(room), &id(who), sdp, &HashMap::new())
            .unwrap()
    }

    fn events(&mut self, room: &str, who: &str) -> EventReader {
        self.reg.events(&rn(room), &id(who)).unwrap()
    }
}

fn drain(rx: &mut EventReader) -> Vec<ParticipantEvent> {
    let mut v = Vec::new();
    while let Ok(e) = rx.try_recv() {
        v.push(e);
    }
    v
}

#[test]
fn room_crud_and_idempotent_create() {
    let mut f = fixture(1);
    let a = f.room("r1");
    assert_eq!(f.room("r1"), a, "same settings: same room");
    let other = RoomSettings {
        max_participants: 2,
        ..Default::default()
    };
    assert_eq!(
        f.reg.create_room("r1", other, f.now, 0),
        Err(ControlError::RoomExists("r1".into()))
    );
    assert!(matches!(
        f.reg
            .create_room("bad name", RoomSettings::default(), f.now, 0),
        Err(ControlError::BadName(_))
    ));
    assert_eq!(f.reg.list_rooms(&[]).len(), 1);
    assert_eq!(f.reg.get_room("r1").unwrap().sid, a.sid);
    assert_eq!(
        f.reg.get_room("nope"),
        Err(ControlError::RoomNotFound("nope".into()))
    );
    f.reg.delete_room("r1").unwrap();
    assert!(f.reg.list_rooms(&[]).is_empty());
    assert_eq!(
        f.reg.delete_room("r1"),
        Err(ControlError::RoomNotFound("r1".into()))
    );
}

#[test]
fn rooms_are_placed_on_the_least_loaded_shard() {
    let mut f = fixture(2);
    let a = f.room("a");
    let b = f.room("b");
    assert_ne!(a.shard, b.shard, "empty shards: spread by room count");
    // Load shard of `a` with a forwarded stream; the next room goes to the other shard even
    // after it has more rooms.
    f.join("a", "p1");
    f.join("a", "p2");
    f.publish("a", "p1", CHROMIUM_PUBLISH);
    let c = f.room("c");
    assert_eq!(c.shard, b.shard);
    let d = f.room("d");
    assert_eq!(d.shard, b.shard, "2 streams on a's shard vs 0 on b's");
}

#[test]
fn join_publish_subscribe_flow() {
    let mut f = fixture(1);
    f.room("r");
    let alice = f.join("r", "alice");
    assert_eq!(alice.candidates.len(), 1);
    assert_eq!(alice.candidates[0].port, 40000);
    let mut alice_ev = f.events("r", "alice");
    let bob = f.join("r", "bob");
    assert_eq!(bob.others.len(), 1);
    let mut bob_ev = f.events("r", "bob");
    assert!(
        matches!(&drain(&mut alice_ev)[..], [ParticipantEvent::Joined(p)] if p.identity.as_str() == "bob")
    );

    let res = f
        .reg
        .publish(
            &rn("r"),
            &id("alice"),
            CHROMIUM_PUBLISH,
            &HashMap::from([("1".into(), "camera".into())]),
        )
        .unwrap();
    assert_eq!(res.tracks.len(), 2);
    assert_eq!(res.tracks[1].name, "camera");
    assert_eq!(res.tracks[1].rids, ["q", "h", "f"]);
    assert_eq!(res.tracks[1].mime_type, "video/VP8");
    assert!(sdp::parse(&res.answer).unwrap().ice_lite);
    let t = f.plane.transports();
    assert_eq!(t.len(), 1, "the publisher transport");
    assert_eq!(t[0].1.role, TransportRole::Publisher);
    assert_eq!(t[0].1.remote.as_ref().unwrap().ice_ufrag, "cJ59");

    // Bob hears about both tracks and is auto-subscribed.
    let ev = drain(&mut bob_ev);
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, ParticipantEvent::TrackPublished(_)))
            .count(),
        2
    );
    let last_version = ev
        .iter()
        .filter_map(|e| match e {
            ParticipantEvent::SubscriberOfferReady { version } => Some(*version),
            _ => None,
        })
        .max()
        .unwrap();
    let offer = f.reg.subscribe(&rn("r"), &id("bob")).unwrap();
    assert_eq!(offer.version, last_version);
    assert_eq!(offer.mid_to_track.len(), 2);
    let sd = sdp::parse(&offer.offer).unwrap();
    assert_eq!(sd.media.len(), 2);
    assert!(
        sd.media
            .iter()
            .all(|m| sd.direction(m) == crate::sdp::Direction::SendOnly)
    );

    // A stale version is refused and changes nothing.
    let stale = f.reg.subscribe_answer(
        &rn("r"),
        &id("bob"),
        offer.version - 1,
        CHROMIUM_SUBSCRIBE_ANSWER,
    );
    assert!(matches!(stale, Err(ControlError::FailedPrecondition(_))));
    // The subscriber transport reached the shard with the offer, before any answer, so the
    // browser's first checks are answered; its peer parameters are still unknown.
    let t = f.plane.transports();
    assert_eq!(t.len(), 2);
    let sub = t
        .iter()
        .find(|t| t.1.role == TransportRole::Subscriber)
        .unwrap();
    assert_eq!(sub.1.remote, None);
    let rejected = f
        .reg
        .subscribe_answer(
            &rn("r"),
            &id("bob"),
            offer.version,
            CHROMIUM_SUBSCRIBE_ANSWER,
        )
        .unwrap();
    assert!(rejected.is_empty());
    let t = f.plane.transports();
    assert_eq!(t.len(), 2);
    let sub = t
        .iter()
        .find(|t| t.1.role == TransportRole::Subscriber)
        .unwrap();
    assert_eq!(
        sub.1.remote.as_ref().unwrap().dtls_role,
        negotiate::DtlsRole::Server
    );

    // Alice leaves: bob sees the tracks go and his subscriber offer shrinks to idle m-lines.
    f.reg.leave(&rn("r"), &id("alice"), f.now).unwrap();
    let ev = drain(&mut bob_ev);
    assert!(ev.iter().any(|e| matches!(
        e,
        ParticipantEvent::Left {
            reason: LeaveReason::Left,
            ..
        }
    )));
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, ParticipantEvent::TrackUnpublished { .. }))
            .count(),
        2
    );
    let bob_info = &f.reg.list_participants("r").unwrap()[0];
    assert!(bob_info.subscriptions.is_empty());
    assert_eq!(
        f.plane.transports().len(),
        1,
        "only bob's subscriber transport remains"
    );
    let offer = f.reg.subscribe(&rn("r"), &id("bob")).unwrap();
    let sd = sdp::parse(&offer.offer).unwrap();
    assert_eq!(sd.media.len(), 2, "m-lines are kept for reuse");
    assert!(
        sd.media
            .iter()
            .all(|m| sd.direction(m) == crate::sdp::Direction::Inactive)
    );

    // Carol publishes from Firefox: bob's idle m-lines are reused.
    f.join("r", "carol");
    f.publish("r", "carol", FIREFOX_PUBLISH);
    let offer = f.reg.subscribe(&rn("r"), &id("bob")).unwrap();
    let sd = sdp::parse(&offer.offer).unwrap();
    assert_eq!(sd.media.len(), 2);
    assert!(
        sd.media
            .iter()
            .all(|m| sd.direction(m) == crate::sdp::Direction::SendOnly)
    );
}

#[test]
fn failed_calls_change_nothing() {
    let mut f = fixture(1);
    f.room("r");
    f.join("r", "alice");
    let before = f.reg.list_participants("r").unwrap();
    let bad = f
        .reg
        .publish(&rn("r"), &id("alice"), "v=0\r\nbogus\r\n", &HashMap::new());
    assert!(matches!(
        bad,
        Err(ControlError::Sdp(SdpError::Line { line: 2, .. }))
    ));
    let no_bundle = CHROMIUM_PUBLISH.replace("a=group:BUNDLE 0 1\r\n", "");
    assert!(matches!(
        f.reg
            .publish(&rn("r"), &id("alice"), &no_bundle, &HashMap::new()),
        Err(ControlError::Negotiation(NegotiationError::NoBundle))
    ));
    assert_eq!(f.reg.list_participants("r").unwrap(), before);
    assert_eq!(f.plane.command_count(), 0);
    assert!(matches!(
        f.reg.join(&joiner("missing", "x", true, true), f.now, 0),
        Err(ControlError::RoomNotFound(_))
    ));
    assert!(matches!(
        f.reg.mute_track("r", "alice", "TR_nothing", true),
        Err(ControlError::TrackNotFound(_))
    ));
    assert!(matches!(
        f.reg
            .update_subscriptions("r", "alice", &["TR_nothing".into()], true),
        Err(ControlError::TrackNotFound(_))
    ));
    assert_eq!(f.reg.list_participants("r").unwrap(), before);
}

#[test]
fn grants_are_enforced() {
    let mut f = fixture(1);
    f.room("r");
    f.reg
        .join(&joiner("r", "viewer", false, true), f.now, 0)
        .unwrap();
    assert_eq!(
        f.reg
            .publish(&rn("r"), &id("viewer"), CHROMIUM_PUBLISH, &HashMap::new())
            .unwrap_err(),
        ControlError::PublishNotAllowed
    );
    f.reg
        .join(&joiner("r", "cam", true, false), f.now, 0)
        .unwrap();
    assert_eq!(
        f.reg.subscribe(&rn("r"), &id("cam")).unwrap_err(),
        ControlError::SubscribeNotAllowed
    );
}

#[test]
fn full_room_and_replaced_identity() {
    let mut f = fixture(1);
    let s = RoomSettings {
        max_participants: 1,
        ..Default::default()
    };
    f.reg.create_room("r", s, f.now, 0).unwrap();
    let first = f.join("r", "a");
    let mut ev = f.events("r", "a");
    assert!(matches!(
        f.reg.join(&joiner("r", "b", true, true), f.now, 0),
        Err(ControlError::RoomFull { max: 1, .. })
    ));
    // Same identity again replaces the first session, even in a full room.
    let second = f.join("r", "a");
    assert_ne!(first.participant.sid, second.participant.sid);
    assert!(drain(&mut ev).iter().any(|e| matches!(
        e,
        ParticipantEvent::Left {
            reason: LeaveReason::Replaced,
            ..
        }
    )));
    assert_eq!(f.reg.list_participants("r").unwrap().len(), 1);
}

#[test]
fn mute_and_unsubscribe_notify() {
    let mut f = fixture(1);
    f.room("r");
    f.join("r", "a");
    f.join("r", "b");
    let res = f.publish("r", "a", CHROMIUM_PUBLISH);
    let mut ev = f.events("r", "b");
    drain(&mut ev);
    let video = res.tracks[1].sid.to_string();
    let info = f.reg.mute_track("r", "a", &video, true).unwrap();
    assert!(info.muted);
    assert!(
        drain(&mut ev)
            .iter()
            .any(|e| matches!(e, ParticipantEvent::TrackMuted { muted: true, .. }))
    );
    let subs = f
        .reg
        .update_subscriptions("r", "b", std::slice::from_ref(&video), false)
        .unwrap();
    assert_eq!(subs.len(), 1);
    assert!(
        drain(&mut ev)
            .iter()
            .any(|e| matches!(e, ParticipantEvent::SubscriberOfferReady { .. }))
    );
    let subs = f
        .reg
        .update_subscriptions("r", "b", &[video], true)
        .unwrap();
    assert_eq!(subs.len(), 2);
    assert!(matches!(
        f.reg
            .update_subscriptions("r", "a", &[res.tracks[0].sid.to_string()], true),
        Err(ControlError::InvalidArgument(_))
    ));
}

#[test]
fn draining_refuses_new_work_and_empty_rooms_expire() {
    let mut f = fixture(1);
    let s = RoomSettings {
        empty_timeout_secs: 10,
        ..Default::default()
    };
    f.reg.create_room("r", s, f.now, 0).unwrap();
    f.room("keep");
    assert!(f.reg.sweep(f.now + Duration::from_secs(9)).is_empty());
    f.join("r", "a");
    assert!(
        f.reg.sweep(f.now + Duration::from_secs(60)).is_empty(),
        "occupied"
    );
    f.reg
        .leave(&rn("r"), &id("a"), f.now + Duration::from_secs(60))
        .unwrap();
    assert_eq!(f.reg.sweep(f.now + Duration::from_secs(70)), [rn("r")]);
    assert_eq!(f.reg.list_rooms(&[]).len(), 1);

    f.reg.set_draining();
    assert_eq!(
        f.reg.create_room("new", RoomSettings::default(), f.now, 0),
        Err(ControlError::Draining)
    );
    assert!(matches!(
        f.reg.join(&joiner("keep", "x", true, true), f.now, 0),
        Err(ControlError::Draining)
    ));
}

#[test]
fn ice_restart_rotates_credentials() {
    let mut f = fixture(1);
    f.room("r");
    f.join("r", "a");
    assert!(matches!(
        f.reg.ice_restart(
            &rn("r"),
            &id("a"),
            TransportRole::Publisher,
            CHROMIUM_PUBLISH
        ),
        Err(ControlError::FailedPrecondition(_))
    ));
    let first = f.publish("r", "a", CHROMIUM_PUBLISH);
    let ufrag = |s: &str| {
        sdp::parse(s).unwrap().media[0]
            .attributes
            .ice_ufrag
            .clone()
            .unwrap()
    };
    let (answer, _) = f
        .reg
        .ice_restart(
            &rn("r"),
            &id("a"),
            TransportRole::Publisher,
            CHROMIUM_PUBLISH,
        )
        .unwrap();
    assert_ne!(ufrag(&first.answer), ufrag(&answer));
    // A renegotiation with new peer credentials is an ICE restart too.
    let restarted = CHROMIUM_PUBLISH.replace("a=ice-ufrag:cJ59", "a=ice-ufrag:NEWU");
    let again = f.publish("r", "a", &restarted);
    assert_ne!(ufrag(&again.answer), ufrag(&answer));
    assert_eq!(
        f.plane.transports()[0].1.remote.as_ref().unwrap().ice_ufrag,
        "NEWU"
    );
    // Same offer again: nothing changes.
    let same = f.publish("r", "a", &restarted);
    assert_eq!(ufrag(&same.answer), ufrag(&again.answer));
    assert_eq!(
        same.tracks.iter().map(|t| &t.sid).collect::<Vec<_>>(),
        again.tracks.iter().map(|t| &t.sid).collect::<Vec<_>>()
    );

    let (offer, v) = f
        .reg
        .ice_restart(&rn("r"), &id("a"), TransportRole::Subscriber, "")
        .unwrap();
    let (offer2, v2) = f
        .reg
        .ice_restart(&rn("r"), &id("a"), TransportRole::Subscriber, "")
        .unwrap();
    assert!(v2 > v);
    assert_ne!(offer, offer2);
}

#[test]
fn shard_events_reach_the_participant() {
    let mut f = fixture(1);
    f.room("r");
    f.join("r", "a");
    f.publish("r", "a", CHROMIUM_PUBLISH);
    let mut ev = f.events("r", "a");
    let tid = f.plane.transports()[0].1.id;
    f.reg.handle_shard_event(ShardEvent::TransportState {
        id: tid,
        state: TransportState::Connected,
    });
    // Unknown transports are ignored.
    f.reg.handle_shard_event(ShardEvent::TransportState {
        id: TransportId(999),
        state: TransportState::Closed,
    });
    assert_eq!(
        drain(&mut ev),
        [ParticipantEvent::TransportState {
            role: TransportRole::Publisher,
            state: TransportState::Connected
        }]
    );
}

#[test]
fn the_shard_hears_of_tracks_and_subscriptions() {
    let mut f = fixture(1);
    f.room("r");
    f.join("r", "alice");
    f.join("r", "bob");
    let res = f.publish("r", "alice", CHROMIUM_PUBLISH);
    let media = f.plane.media_commands();
    let published: Vec<&TrackSpec> = media
        .iter()
        .filter_map(|(_, c)| match c {
            ShardCommand::PublishTrack(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(published.len(), 2);
    assert_eq!(published[1].media.encodings.len(), 3, "simulcast layers");
    // Nothing is forwarded to bob before his answer.
    assert!(
        !media
            .iter()
            .any(|(_, c)| matches!(c, ShardCommand::Subscribe(_)))
    );
    let offer = f.reg.subscribe(&rn("r"), &id("bob")).unwrap();
    f.reg
        .subscribe_answer(
            &rn("r"),
            &id("bob"),
            offer.version,
            CHROMIUM_SUBSCRIBE_ANSWER,
        )
        .unwrap();
    let subs: Vec<SubscriptionSpec> = f
        .plane
        .media_commands()
        .into_iter()
        .filter_map(|(_, c)| match c {
            ShardCommand::Subscribe(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(subs.len(), 2);
    let pts: Vec<u8> = subs.iter().map(|s| s.payload_type).collect();
    assert_eq!(
        pts,
        [111, 96],
        "Ringcast's payload types on bob's transport"
    );
    assert!(subs[1].rtx_payload_type.is_some() && subs[1].rtx_ssrc.is_some());
    // Extension ids come from the answer (this fixture answered an older offer's ids, so none
    // match ours: none are kept).
    assert!(subs.iter().all(|s| s.extensions.is_empty()));
    // Answering again changes nothing on the shard.
    let before = f.plane.media_commands().len();
    let offer = f.reg.subscribe(&rn("r"), &id("bob")).unwrap();
    f.reg
        .subscribe_answer(
            &rn("r"),
            &id("bob"),
            offer.version,
            CHROMIUM_SUBSCRIBE_ANSWER,
        )
        .unwrap();
    assert_eq!(f.plane.media_commands().len(), before);
    // Mute, unsubscribe, leave.
    let video = res.tracks[1].sid.to_string();
    f.reg.mute_track("r", "alice", &video, true).unwrap();
    f.reg
        .update_subscriptions("r", "bob", std::slice::from_ref(&video), false)
        .unwrap();
    f.reg.leave(&rn("r"), &id("alice"), f.now).unwrap();
    let tail: Vec<ShardCommand> = f
        .plane
        .media_commands()
        .into_iter()
        .skip(before)
        .map(|(_, c)| c)
        .collect();
    assert!(matches!(
        tail[0],
        ShardCommand::MuteTrack { muted: true, .. }
    ));
    assert!(matches!(tail[1], ShardCommand::Unsubscribe { .. }));
    assert_eq!(
        tail.iter()
            .filter(|c| matches!(c, ShardCommand::UnpublishTrack(_)))
            .count(),
        2
    );
}

#[test]
fn active_speakers_reach_their_room_only_when_they_change() {
    let mut f = fixture(1);
    f.room("r");
    f.room("other");
    f.join("r", "alice");
    f.join("r", "bob");
    f.join("other", "carol");
    let res = f.publish("r", "alice", CHROMIUM_PUBLISH);
    let audio = f
        .plane
        .media_commands()
        .iter()
        .find_map(|(_, c)| match c {
            ShardCommand::PublishTrack(t) if t.media.kind == MediaKind::Audio => Some(t.track),
            _ => None,
        })
        .unwrap();
    let mut bob = f.events("r", "bob");
    let mut carol = f.events("other", "carol");
    drain(&mut bob);
    drain(&mut carol);
    let speaking = ShardEvent::ActiveSpeakers {
        shard: ShardId(0),
        speakers: vec![(audio, 0.5), (TrackId(9999), 0.9)],
    };
    f.reg.handle_shard_event(speaking.clone());
    let expected = ParticipantEvent::ActiveSpeakers(vec![Speaker {
        identity: id("alice"),
        track: res.tracks[0].sid.clone(),
        level: 0.5,
    }]);
    assert_eq!(drain(&mut bob), [expected], "unknown tracks are skipped");
    assert!(drain(&mut carol).is_empty(), "another room");
    f.reg.handle_shard_event(speaking);
    assert!(drain(&mut bob).is_empty(), "no change, no event");
    f.reg.handle_shard_event(ShardEvent::ActiveSpeakers {
        shard: ShardId(0),
        speakers: vec![],
    });
    assert_eq!(drain(&mut bob), [ParticipantEvent::ActiveSpeakers(vec![])]);
}

#[test]
fn a_subscriber_that_declines_rtx_gets_plain_retransmissions() {
    let mut f = fixture(1);
    f.room("r");
    f.join("r", "alice");
    f.join("r", "bob");
    f.publish("r", "alice", CHROMIUM_PUBLISH);
    // Chromium's answer with RTX taken out, as a browser that doesn't do RTX answers.
    let answer: String = CHROMIUM_SUBSCRIBE_ANSWER
        .replace(
            "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
        )
        .lines()
        .filter(|l| !l.starts_with("a=rtpmap:97") && !l.starts_with("a=fmtp:97"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let offer = f.reg.subscribe(&rn("r"), &id("bob")).unwrap();
    f.reg
        .subscribe_answer(&rn("r"), &id("bob"), offer.version, &answer)
        .unwrap();
    let video = f
        .plane
        .media_commands()
        .into_iter()
        .find_map(|(_, c)| match c {
            ShardCommand::Subscribe(s) if s.payload_type == 96 => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!((video.rtx_ssrc, video.rtx_payload_type), (None, None));
}

#[test]
fn a_large_room_waits_for_a_late_reader_as_one_event_per_participant() {
    let mut f = fixture(1);
    f.room("big");
    let who = |i: usize| format!("p{i:03}");
    for i in 0..300 {
        f.join("big", &who(i));
    }
    // Ten rejoin (each replaces its session): a late reader hears of the latest session only.
    let mut latest: HashMap<String, ParticipantSid> = HashMap::new();
    for i in 1..=10 {
        latest.insert(who(i), f.join("big", &who(i)).participant.sid);
    }
    let mut ev = f.events("big", &who(0));
    let mut seen = BTreeSet::new();
    for e in drain(&mut ev) {
        let ParticipantEvent::Joined(p) = e else {
            panic!("unexpected {e:?}");
        };
        if let Some(sid) = latest.get(p.identity.as_str()) {
            assert_eq!(&p.sid, sid, "{}", p.identity);
        }
        assert!(seen.insert(p.identity), "each identity once");
    }
    assert_eq!(seen.len(), 299);
    let stats = f.reg.stats();
    assert_eq!(stats.events_dropped, 0);
    // p000 alone coalesced each rejoin's Left and Joined into the first Joined.
    assert!(stats.events_coalesced >= 20, "{stats:?}");
}

#[test]
fn a_removed_participant_reads_its_own_left_then_its_stream_ends() {
    let mut f = fixture(1);
    f.room("r");
    f.join("r", "a");
    f.join("r", "b");
    let ev = f.events("r", "a");
    f.reg
        .remove_participant("r", "a", LeaveReason::Removed, f.now)
        .unwrap();
    assert!(matches!(
        ev.try_recv(),
        Ok(ParticipantEvent::Joined(p)) if p.identity.as_str() == "b"
    ));
    assert!(matches!(
        ev.try_recv(),
        Ok(ParticipantEvent::Left { identity, reason: LeaveReason::Removed, .. }) if identity.as_str() == "a"
    ));
    assert_eq!(ev.try_recv(), Err(crate::events::TryRecvError::Ended));
}
