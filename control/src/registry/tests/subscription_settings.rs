//! What a subscriber asks of its subscriptions: kept for those to come, told the shard at once
//! for those it forwards, and left as it was when the shard refuses.

use super::*;
use crate::plane::{PlaneError, SubscriptionSettings};

fn configured(f: &Fixture) -> Vec<(TrackId, SubscriptionSettings)> {
    f.plane
        .media_commands()
        .into_iter()
        .filter_map(|(_, c)| match c {
            ShardCommand::ConfigureSubscription {
                track, settings, ..
            } => Some((track, settings)),
            _ => None,
        })
        .collect()
}

fn subscribed(f: &Fixture) -> Vec<SubscriptionSpec> {
    f.plane
        .media_commands()
        .into_iter()
        .filter_map(|(_, c)| match c {
            ShardCommand::Subscribe(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn settings_reach_the_shard_before_and_after_the_answer() {
    let mut f = fixture(1);
    let res = f.alice_publishes_to_bob();
    let video = res.tracks[1].sid.to_string();
    let small = SubscriptionSettings {
        max_layer: Some(1),
        width: 320,
        height: 180,
        priority: 3,
        max_fps: 15,
    };
    // Before the answer: kept, and sent with the subscription.
    f.reg
        .update_subscription_settings(&rn("r"), &id("bob"), std::slice::from_ref(&video), small)
        .unwrap();
    assert!(configured(&f).is_empty(), "nothing on the shard yet");
    f.answer("bob");
    let subs = subscribed(&f);
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0].settings, SubscriptionSettings::default(), "audio");
    assert_eq!(subs[1].settings, small);
    // After: told the shard at once, and only when it changes.
    let large = SubscriptionSettings {
        width: 1280,
        height: 720,
        ..small
    };
    for _ in 0..2 {
        f.reg
            .update_subscription_settings(&rn("r"), &id("bob"), std::slice::from_ref(&video), large)
            .unwrap();
    }
    assert_eq!(configured(&f), [(subs[1].track, large)]);
    // UpdateSubscriptions can set them for the tracks it subscribes to.
    f.reg
        .update_subscriptions("r", "bob", std::slice::from_ref(&video), true, Some(small))
        .unwrap();
    assert_eq!(configured(&f).last(), Some(&(subs[1].track, small)));
    // A track bob does not subscribe to (his own, unknown, or unsubscribed) is refused.
    f.reg
        .update_subscriptions("r", "bob", std::slice::from_ref(&video), false, None)
        .unwrap();
    for t in [video.as_str(), "TR_unknown", "nonsense"] {
        assert!(matches!(
            f.reg
                .update_subscription_settings(&rn("r"), &id("bob"), &[t.to_owned()], small),
            Err(ControlError::FailedPrecondition(_))
        ));
    }
}

#[test]
fn a_refused_setting_changes_nothing() {
    let mut f = fixture(1);
    let res = f.alice_publishes_to_bob();
    let video = res.tracks[1].sid.to_string();
    f.answer("bob");
    f.plane.refuse_when(|shard, cmd| {
        matches!(cmd, ShardCommand::ConfigureSubscription { .. }).then(|| PlaneError::Busy(shard))
    });
    let s = SubscriptionSettings {
        max_layer: Some(0),
        ..SubscriptionSettings::default()
    };
    assert_eq!(
        f.reg
            .update_subscription_settings(&rn("r"), &id("bob"), std::slice::from_ref(&video), s),
        Err(ControlError::Plane(PlaneError::Busy(ShardId(0))))
    );
    assert!(configured(&f).is_empty());
    // Not kept: the same settings again are a change, and reach the shard once it takes them.
    f.plane.refuse_when(|_, _| None);
    f.reg
        .update_subscription_settings(&rn("r"), &id("bob"), std::slice::from_ref(&video), s)
        .unwrap();
    let track = subscribed(&f)[1].track;
    assert_eq!(configured(&f).last(), Some(&(track, s)));
}
