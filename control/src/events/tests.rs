//! Coalescing, order, the cap, and how a reader's stream ends.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;

use super::*;
use super::{LeaveReason, ParticipantInfo, Speaker, TrackInfo};
use crate::codec::MediaKind;
use crate::ids::ParticipantSid;
use crate::plane::TransportState;

fn id(s: &str) -> Identity {
    Identity::new(s).unwrap()
}

fn tr(s: &str) -> TrackSid {
    TrackSid::parse(&format!("TR_{s}")).unwrap()
}

fn joined(who: &str, session: &str) -> ParticipantEvent {
    ParticipantEvent::Joined(ParticipantInfo {
        identity: id(who),
        sid: ParticipantSid::parse(&format!("PA_{session}")).unwrap(),
        name: who.to_owned(),
        joined_at_unix_ms: 0,
        can_publish: true,
        can_subscribe: true,
        tracks: Vec::new(),
        subscriptions: Vec::new(),
    })
}

fn left(who: &str) -> ParticipantEvent {
    ParticipantEvent::Left {
        identity: id(who),
        sid: ParticipantSid::parse("PA_x").unwrap(),
        reason: LeaveReason::Left,
    }
}

fn published(track: &str) -> ParticipantEvent {
    ParticipantEvent::TrackPublished(TrackInfo {
        sid: tr(track),
        kind: MediaKind::Audio,
        mid: "0".to_owned(),
        name: String::new(),
        muted: false,
        mime_type: "audio/opus".to_owned(),
        rids: Vec::new(),
        publisher: id("pub"),
        source: Default::default(),
    })
}

fn unpublished(track: &str) -> ParticipantEvent {
    ParticipantEvent::TrackUnpublished {
        track: tr(track),
        publisher: id("pub"),
    }
}

fn muted(track: &str, muted: bool) -> ParticipantEvent {
    ParticipantEvent::TrackMuted {
        track: tr(track),
        publisher: id("pub"),
        muted,
    }
}

fn offer(version: u64) -> ParticipantEvent {
    ParticipantEvent::SubscriberOfferReady { version }
}

fn transport(role: TransportRole, state: TransportState) -> ParticipantEvent {
    ParticipantEvent::TransportState { role, state }
}

fn speakers(tracks: &[&str]) -> ParticipantEvent {
    ParticipantEvent::ActiveSpeakers(
        tracks
            .iter()
            .map(|t| Speaker {
                identity: id("pub"),
                track: tr(t),
                level: 0.5,
            })
            .collect(),
    )
}

fn drain(b: &mut Backlog) -> Vec<ParticipantEvent> {
    std::iter::from_fn(|| b.pop()).collect()
}

#[test]
fn coalescing_per_subject() {
    use TransportRole::{Publisher, Subscriber};
    use TransportState::{Closed, Connected};
    // (what, pushed, read, coalesced)
    let cases: Vec<(&str, Vec<ParticipantEvent>, Vec<ParticipantEvent>, u64)> = vec![
        (
            "different subjects keep their order",
            vec![joined("a", "1"), joined("b", "1"), published("t")],
            vec![joined("a", "1"), joined("b", "1"), published("t")],
            0,
        ),
        (
            "a participant's latest event wins",
            vec![joined("a", "1"), left("a"), joined("a", "2")],
            vec![joined("a", "2")],
            2,
        ),
        (
            "an update moves its subject to the back",
            vec![joined("a", "1"), joined("b", "1"), left("a")],
            vec![joined("b", "1"), left("a")],
            1,
        ),
        (
            "a participant's tracks go before it does",
            vec![
                joined("a", "1"),
                published("t"),
                unpublished("t"),
                left("a"),
            ],
            vec![unpublished("t"), left("a")],
            2,
        ),
        (
            "a mute sits beside the publication",
            vec![published("t"), muted("t", true)],
            vec![published("t"), muted("t", true)],
            0,
        ),
        (
            "the latest mute wins",
            vec![muted("t", true), muted("u", true), muted("t", false)],
            vec![muted("u", true), muted("t", false)],
            1,
        ),
        (
            "an unpublished track drops its pending mute",
            vec![
                published("t"),
                muted("t", true),
                muted("u", true),
                unpublished("t"),
            ],
            vec![muted("u", true), unpublished("t")],
            2,
        ),
        (
            "only the latest subscriber offer",
            vec![offer(2), joined("a", "1"), offer(3), offer(4)],
            vec![joined("a", "1"), offer(4)],
            2,
        ),
        (
            "transport state per role",
            vec![
                transport(Publisher, Connected),
                transport(Subscriber, Connected),
                transport(Publisher, Closed),
            ],
            vec![
                transport(Subscriber, Connected),
                transport(Publisher, Closed),
            ],
            1,
        ),
        (
            "the latest speaker list wins, even an empty one",
            vec![speakers(&["t"]), speakers(&["u", "t"]), speakers(&[])],
            vec![speakers(&[])],
            2,
        ),
    ];
    for (what, pushed, read, coalesced) in cases {
        let mut b = Backlog::with_cap(MAX_BACKLOG);
        for ev in pushed {
            b.push(ev);
        }
        assert_eq!(drain(&mut b), read, "{what}");
        assert_eq!(
            b.counts,
            EventCounts {
                coalesced,
                dropped: 0
            },
            "{what}"
        );
        assert!(
            b.index.is_empty(),
            "{what}: the index empties with the queue"
        );
    }
}

#[test]
fn a_read_subject_starts_afresh() {
    let mut b = Backlog::with_cap(MAX_BACKLOG);
    b.push(offer(1));
    assert_eq!(b.pop(), Some(offer(1)));
    b.push(offer(2));
    assert_eq!(drain(&mut b), [offer(2)]);
    assert_eq!(b.counts.coalesced, 0, "nothing pending was replaced");
}

#[test]
fn the_cap_drops_the_oldest_roster_entries() {
    let mut b = Backlog::with_cap(3);
    for ev in [offer(1), joined("a", "1"), joined("b", "1")] {
        b.push(ev);
    }
    // Full: an update of a pending subject costs nothing, a new one drops the oldest
    // participant or track, never the offer.
    b.push(joined("b", "2"));
    assert_eq!(b.counts.dropped, 0);
    b.push(joined("c", "1"));
    assert_eq!(b.queue.len(), 3);
    assert_eq!(
        b.counts,
        EventCounts {
            coalesced: 1,
            dropped: 1
        }
    );
    assert_eq!(
        drain(&mut b),
        [offer(1), joined("b", "2"), joined("c", "1")]
    );
}

#[test]
fn a_thousand_joiners_before_events_is_a_thousand_entries() {
    let q = EventQueue::new();
    let who = |i: usize| format!("p{i:04}");
    for session in ["1", "2"] {
        for i in 0..1000 {
            q.push(joined(&who(i), session));
        }
    }
    for i in (0..1000).step_by(2) {
        q.push(left(&who(i)));
        q.push(joined(&who(i), "3"));
    }
    assert_eq!(q.shared.lock().backlog.queue.len(), 1000);
    assert_eq!(
        q.counts(),
        EventCounts {
            coalesced: 2000,
            dropped: 0
        }
    );
    let r = q.reader();
    let mut seen = BTreeSet::new();
    while let Ok(ev) = r.try_recv() {
        let ParticipantEvent::Joined(p) = ev else {
            panic!("unexpected {ev:?}");
        };
        let latest = if seen.len() < 500 { "PA_2" } else { "PA_3" };
        assert_eq!(p.sid.as_str(), latest, "{}", p.identity);
        assert!(seen.insert(p.identity), "each identity once");
    }
    assert_eq!(seen.len(), 1000);
    // Read out, the backlog keeps no room-sized index for the rest of the session.
    assert!(q.shared.lock().backlog.index_capacity() <= IDLE_INDEX_CAPACITY);
}

#[tokio::test]
async fn a_waiting_reader_wakes_on_a_push() {
    let q = EventQueue::new();
    let mut r = q.reader();
    let read = tokio::spawn(async move { r.recv().await });
    tokio::task::yield_now().await;
    q.push(offer(1));
    let got = tokio::time::timeout(Duration::from_secs(5), read).await;
    assert_eq!(got.unwrap().unwrap(), Some(offer(1)));
}

#[tokio::test]
async fn a_new_reader_takes_over_and_ends_the_old_stream() {
    let q = EventQueue::new();
    q.push(joined("a", "1"));
    let mut first = q.reader();
    assert_eq!(first.recv().await, Some(joined("a", "1")));
    let waiting = tokio::spawn(async move { first.recv().await });
    tokio::task::yield_now().await;
    // The first reader is woken by the push, but the second takes over before it runs (one
    // thread): the event is the second's.
    q.push(joined("b", "1"));
    let second = q.reader();
    let old = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    assert_eq!(old.unwrap().unwrap(), None, "the old stream ended");
    assert_eq!(second.try_recv(), Ok(joined("b", "1")));
    assert_eq!(second.try_recv(), Err(TryRecvError::Empty));
    // A reader replaced with events pending ends at once and leaves them to the new one.
    q.push(left("a"));
    let third = q.reader();
    assert_eq!(second.try_recv(), Err(TryRecvError::Ended));
    assert_eq!(third.try_recv(), Ok(left("a")));
    assert_eq!(third.try_recv(), Err(TryRecvError::Empty));
}

#[tokio::test]
async fn the_stream_ends_when_the_participant_is_gone() {
    let q = EventQueue::new();
    let r = q.reader();
    let stream = tokio::spawn(r.into_stream().collect::<Vec<_>>());
    tokio::task::yield_now().await;
    q.push(joined("b", "1"));
    q.push(left("a"));
    drop(q);
    let got = tokio::time::timeout(Duration::from_secs(5), stream).await;
    // What was pending is still read, then the stream ends.
    assert_eq!(got.unwrap().unwrap(), [joined("b", "1"), left("a")]);
}
