//! What the shard is told (tracks, subscriptions) and what it reports (transport states, speakers).

use super::*;
use crate::plane::Quality;

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
    // Extension ids come from the answer: this fixture answered an older offer's ids, of which
    // only transport-wide-cc (id 3) is also in ours, so only it is kept.
    for s in &subs {
        let kept: Vec<(u8, &str)> = s
            .extensions
            .iter()
            .map(|e| (e.id, e.uri.as_str()))
            .collect();
        assert_eq!(kept, [(3, crate::codec::ext::TRANSPORT_CC)]);
    }
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
        .update_subscriptions("r", "bob", std::slice::from_ref(&video), false, None)
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
fn subscribers_hear_what_their_subscriptions_are_sent() {
    let mut f = fixture(1);
    let res = f.alice_publishes_to_bob();
    f.answer("bob");
    let alice_pub = f
        .plane
        .transports()
        .into_iter()
        .find(|(_, t)| t.role == TransportRole::Publisher)
        .unwrap()
        .1
        .id;
    let video = res.tracks[1].clone();
    let (bob_sub, video_num) = f
        .plane
        .media_commands()
        .into_iter()
        .find_map(|(_, c)| match c {
            ShardCommand::Subscribe(s) if s.rtx_ssrc.is_some() => Some((s.subscriber, s.track)),
            _ => None,
        })
        .unwrap();
    let mut bob = f.events("r", "bob");
    let mut alice = f.events("r", "alice");
    drain(&mut bob);
    drain(&mut alice);
    let q = Quality {
        current: Some(0),
        target: 1,
        layers: 3,
        estimate_bps: Some(450_000),
        temporal: Some(1),
        temporal_layers: 3,
    };
    f.reg
        .handle_shard_event(ShardEvent::SubscriptionQuality(vec![
            (bob_sub, video_num, q),
            // Not a subscriber transport, an unknown one, a track that is gone: dropped.
            (alice_pub, video_num, q),
            (TransportId(999), video_num, q),
            (bob_sub, TrackId(999), q),
        ]));
    assert_eq!(
        drain(&mut bob),
        [ParticipantEvent::SubscriptionQuality {
            track: video.sid.clone(),
            quality: q
        }]
    );
    assert!(drain(&mut alice).is_empty());
}

#[test]
fn publishers_hear_which_layers_are_needed() {
    let mut f = fixture(1);
    let res = f.alice_publishes_to_bob();
    let video = res.tracks[1].clone();
    let num = f
        .plane
        .media_commands()
        .into_iter()
        .find_map(|(_, c)| match c {
            ShardCommand::PublishTrack(t) if t.media.kind == MediaKind::Video => Some(t.track),
            _ => None,
        })
        .unwrap();
    let mut alice = f.events("r", "alice");
    let mut bob = f.events("r", "bob");
    drain(&mut alice);
    drain(&mut bob);
    f.reg.handle_shard_event(ShardEvent::LayersWanted {
        track: num,
        active: vec![true, false, false],
    });
    // Another shape, or a track that is gone: dropped.
    f.reg.handle_shard_event(ShardEvent::LayersWanted {
        track: num,
        active: vec![true],
    });
    f.reg.handle_shard_event(ShardEvent::LayersWanted {
        track: TrackId(999),
        active: vec![true],
    });
    let rid = |r: &str| Some(r.to_owned());
    assert_eq!(
        drain(&mut alice),
        [ParticipantEvent::LayersWanted {
            track: video.sid,
            layers: vec![(rid("q"), true), (rid("h"), false), (rid("f"), false)],
        }]
    );
    assert!(drain(&mut bob).is_empty());
}
