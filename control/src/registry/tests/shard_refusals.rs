//! A shard that refuses a command: the caller who waits on it gets the error and nothing
//! changes; a command no caller waits on is counted.

use super::*;
use crate::plane::PlaneError;

fn refused(shard: ShardId) -> PlaneError {
    PlaneError::Refused {
        shard,
        reason: "no".to_owned(),
    }
}

fn is_video_track(cmd: &ShardCommand) -> bool {
    matches!(cmd, ShardCommand::PublishTrack(t) if t.media.kind == MediaKind::Video)
}

#[test]
fn a_refused_track_fails_the_publish_and_the_shard_is_given_back_what_it_took() {
    let mut f = fixture(1);
    f.room("r");
    f.join("r", "alice");
    f.join("r", "bob");
    let mut bob = f.events("r", "bob");
    drain(&mut bob);
    let before = f.reg.list_participants("r").unwrap();
    f.plane
        .refuse_when(|shard, cmd| is_video_track(cmd).then(|| refused(shard)));

    let res = f
        .reg
        .publish(&rn("r"), &id("alice"), CHROMIUM_PUBLISH, &HashMap::new());
    assert_eq!(res.unwrap_err(), ControlError::Plane(refused(ShardId(0))));
    assert_eq!(f.reg.list_participants("r").unwrap(), before);
    assert!(
        drain(&mut bob).is_empty(),
        "nobody hears of a refused publish"
    );
    assert_eq!(f.reg.stats().tracks, 0);
    // The shard took the transport and the audio track before refusing the video: both are
    // taken back, the track first.
    assert!(f.plane.transports().is_empty());
    let cmds: Vec<ShardCommand> = f.plane.media_commands().into_iter().map(|c| c.1).collect();
    let audio = match &cmds[..] {
        [
            ShardCommand::PublishTrack(t),
            ShardCommand::UnpublishTrack(n),
        ] if t.track == *n => t.track,
        other => panic!("unexpected {other:?}"),
    };

    // Once the shard takes it, the same offer publishes, under ids never used before.
    f.plane.accept_all();
    let res = f.publish("r", "alice", CHROMIUM_PUBLISH);
    assert_eq!(res.tracks.len(), 2);
    let nums: Vec<TrackId> = f
        .plane
        .media_commands()
        .into_iter()
        .filter_map(|(_, c)| match c {
            ShardCommand::PublishTrack(t) => Some(t.track),
            _ => None,
        })
        .skip(1)
        .collect();
    assert_eq!(nums.len(), 2);
    assert!(
        nums.iter().all(|n| n.0 > audio.0),
        "{nums:?} after {audio:?}"
    );
    assert_eq!(f.plane.transports().len(), 1);
    assert!(
        drain(&mut bob)
            .iter()
            .any(|e| matches!(e, ParticipantEvent::TrackPublished(_)))
    );
}

#[test]
fn a_refused_renegotiation_keeps_the_transport_and_tracks_as_they_were() {
    let mut f = fixture(1);
    f.room("r");
    f.join("r", "alice");
    let first = f.publish("r", "alice", CHROMIUM_PUBLISH);
    let before = f.reg.list_participants("r").unwrap();
    let sent = f.plane.command_count();
    // The client restarts ICE and drops its video; the shard takes the transport update, then
    // refuses to unpublish the video.
    let restarted = CHROMIUM_PUBLISH
        .replace("a=ice-ufrag:cJ59", "a=ice-ufrag:NEWU")
        .replace("a=sendonly", "a=inactive");
    f.plane.refuse_when(|shard, cmd| {
        matches!(cmd, ShardCommand::UnpublishTrack(_)).then(|| PlaneError::Busy(shard))
    });
    let res = f
        .reg
        .publish(&rn("r"), &id("alice"), &restarted, &HashMap::new());
    assert_eq!(
        res.unwrap_err(),
        ControlError::Plane(PlaneError::Busy(ShardId(0)))
    );
    assert_eq!(f.reg.list_participants("r").unwrap(), before);
    assert_eq!(
        f.plane.transports()[0].1.remote.as_ref().unwrap().ice_ufrag,
        "cJ59",
        "the update is taken back"
    );
    assert_eq!(f.plane.command_count(), sent + 2, "the update and its undo");

    // The same offer as before the refusal still renegotiates to nothing new.
    f.plane.accept_all();
    let again = f.publish("r", "alice", CHROMIUM_PUBLISH);
    assert_eq!(
        again.tracks.iter().map(|t| &t.sid).collect::<Vec<_>>(),
        first.tracks.iter().map(|t| &t.sid).collect::<Vec<_>>()
    );
}

#[test]
fn a_refused_mute_changes_nothing_and_nobody_hears_of_it() {
    let mut f = fixture(1);
    f.room("r");
    f.join("r", "alice");
    f.join("r", "bob");
    let res = f.publish("r", "alice", CHROMIUM_PUBLISH);
    let mut bob = f.events("r", "bob");
    drain(&mut bob);
    let video = res.tracks[1].sid.to_string();
    f.plane.refuse_when(|shard, cmd| {
        matches!(cmd, ShardCommand::MuteTrack { .. }).then(|| PlaneError::Stopped(shard))
    });
    assert_eq!(
        f.reg.mute_track("r", "alice", &video, true),
        Err(ControlError::Plane(PlaneError::Stopped(ShardId(0))))
    );
    assert!(!f.reg.list_participants("r").unwrap()[0].tracks[1].muted);
    assert!(drain(&mut bob).is_empty());
    // Asking for what is already so sends nothing, so nothing can fail.
    assert!(!f.reg.mute_track("r", "alice", &video, false).unwrap().muted);
}

#[test]
fn commands_no_caller_waits_on_are_counted_when_refused() {
    let mut f = fixture(1);
    f.room("r");
    f.join("r", "alice");
    f.join("r", "bob");
    f.publish("r", "alice", CHROMIUM_PUBLISH);
    let offer = f.reg.subscribe(&rn("r"), &id("bob")).unwrap();
    f.reg
        .subscribe_answer(
            &rn("r"),
            &id("bob"),
            offer.version,
            CHROMIUM_SUBSCRIBE_ANSWER,
        )
        .unwrap();
    assert_eq!(f.reg.stats().shard_commands_failed, 0);
    f.plane
        .refuse_when(|shard, _| Some(PlaneError::Stopped(shard)));
    // Alice's leave succeeds; what it asks of the shard fails: bob's two subscriptions end,
    // her two tracks end, her publisher transport goes.
    f.reg.leave(&rn("r"), &id("alice"), f.now).unwrap();
    assert_eq!(f.reg.stats().shard_commands_failed, 5);
    assert_eq!(f.reg.list_participants("r").unwrap().len(), 1);
}

#[test]
fn a_refused_subscription_fails_the_answer_and_the_same_answer_can_be_sent_again() {
    let mut f = fixture(1);
    f.room("r");
    f.join("r", "alice");
    f.join("r", "bob");
    f.publish("r", "alice", CHROMIUM_PUBLISH);
    let offer = f.reg.subscribe(&rn("r"), &id("bob")).unwrap();
    let sent = f.plane.media_commands().len();
    f.plane.refuse_when(|shard, cmd| {
        matches!(cmd, ShardCommand::Subscribe(s) if s.rtx_ssrc.is_some()).then(|| refused(shard))
    });
    let answer = |f: &mut Fixture| {
        f.reg.subscribe_answer(
            &rn("r"),
            &id("bob"),
            offer.version,
            CHROMIUM_SUBSCRIBE_ANSWER,
        )
    };
    assert_eq!(
        answer(&mut f).unwrap_err(),
        ControlError::Plane(refused(ShardId(0)))
    );
    // The transport's peer parameters and the audio subscription were taken back.
    let sub = |f: &Fixture| {
        f.plane
            .transports()
            .into_iter()
            .find(|t| t.1.role == TransportRole::Subscriber)
            .unwrap()
    };
    assert_eq!(sub(&f).1.remote, None);
    let tail: Vec<ShardCommand> = f
        .plane
        .media_commands()
        .into_iter()
        .skip(sent)
        .map(|c| c.1)
        .collect();
    assert!(
        matches!(&tail[..], [ShardCommand::Subscribe(s), ShardCommand::Unsubscribe { track, .. }] if s.track == *track),
        "{tail:?}"
    );

    f.plane.accept_all();
    assert!(answer(&mut f).unwrap().is_empty());
    assert!(sub(&f).1.remote.is_some());
    let subscribed = f
        .plane
        .media_commands()
        .into_iter()
        .skip(sent + 2)
        .filter(|(_, c)| matches!(c, ShardCommand::Subscribe(_)))
        .count();
    assert_eq!(subscribed, 2);
}
