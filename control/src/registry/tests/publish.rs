//! Publishing and subscribing as participants see it: answers, tracks, offers, mute, ICE restarts.

use super::*;
use crate::plane::TrackSource;

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
            &HashMap::from([(
                "1".into(),
                TrackLabel {
                    name: "camera".into(),
                    source: TrackSource::ScreenShare,
                },
            )]),
        )
        .unwrap();
    assert_eq!(res.tracks.len(), 2);
    assert_eq!(res.tracks[1].name, "camera");
    assert_eq!(res.tracks[1].source, TrackSource::ScreenShare);
    assert_eq!(res.tracks[0].source, TrackSource::Unknown, "not said");
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
        .update_subscriptions("r", "b", std::slice::from_ref(&video), false, None)
        .unwrap();
    assert_eq!(subs.len(), 1);
    assert!(
        drain(&mut ev)
            .iter()
            .any(|e| matches!(e, ParticipantEvent::SubscriberOfferReady { .. }))
    );
    let subs = f
        .reg
        .update_subscriptions("r", "b", &[video], true, None)
        .unwrap();
    assert_eq!(subs.len(), 2);
    assert!(matches!(
        f.reg
            .update_subscriptions("r", "a", &[res.tracks[0].sid.to_string()], true, None),
        Err(ControlError::InvalidArgument(_))
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
