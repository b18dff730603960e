//! Registry scenarios against the recording media plane: this file has the fixture and the
//! room and participant lifecycle; `publish` and `shard` have the media flows, and
//! `shard_refusals` what happens when the shard does not take a command.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::codec::MediaKind;
use crate::dtls::DtlsIdentity;
use crate::events::EventReader;
use crate::ids::ParticipantSid;
use crate::negotiate::{self, NegotiationError};
use crate::plane::{
    RecordingMediaPlane, ShardEvent, SrtpProfile, SubscriptionSpec, TrackId, TrackSpec,
    TransportState,
};
use crate::sdp::tests::{CHROMIUM_PUBLISH, CHROMIUM_SUBSCRIBE_ANSWER, FIREFOX_PUBLISH};
use crate::sdp::{self, SdpError};

mod publish;
mod shard;
mod shard_refusals;
mod subscription_settings;

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

    /// Room "r" with alice and bob in it, alice publishing Chromium's offer: what she published.
    fn alice_publishes_to_bob(&mut self) -> PublishResult {
        self.room("r");
        self.join("r", "alice");
        self.join("r", "bob");
        self.publish("r", "alice", CHROMIUM_PUBLISH)
    }

    /// `who`, in room "r", answers the subscriber offer it is made now (Chromium's answer).
    fn answer(&mut self, who: &str) {
        let offer = self.reg.subscribe(&rn("r"), &id(who)).unwrap();
        self.reg
            .subscribe_answer(&rn("r"), &id(who), offer.version, CHROMIUM_SUBSCRIBE_ANSWER)
            .unwrap();
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
            .update_subscriptions("r", "alice", &["TR_nothing".into()], true, None),
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
