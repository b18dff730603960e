//! The media router in a simulated network (the model is in `sim/`): NACK and RTX repair
//! downstream and upstream, keyframe gating of newcomers, mute, renegotiation and departures.
//! Every run of a scenario is the same run: no sockets, no real time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod sim;

use std::time::Duration;

use ringcast_media::router::MediaCommand;
use ringcast_media::rtcp;
use ringcast_types::TransportId;

use sim::{Link, Node, Outbox, PUB, Sim, Subscriber, TRACK};

#[test]
fn nack_recovers_a_lossy_subscriber_and_the_others_are_unaffected() {
    for (seed, rtx) in [(1, true), (2, false), (3, true)] {
        let mut sim = Sim::new(seed);
        sim.subscribe(TransportId(2), Subscriber::new(0xA0, rtx));
        sim.subscribe(TransportId(3), Subscriber::new(0xB0, rtx));
        sim.links.insert(
            (Node::Router, Node::Peer(TransportId(2))),
            Link::lossy(0.05),
        );
        sim.run(Duration::from_secs(10));
        sim.settle();
        let (a, b) = (
            &sim.subscribers[&TransportId(2)],
            &sim.subscribers[&TransportId(3)],
        );
        assert!(
            sim.dropped > 30,
            "seed {seed}: the link lost {}",
            sim.dropped
        );
        assert!(a.nacks_sent > 10);
        assert!(
            a.is_contiguous(),
            "seed {seed} rtx {rtx}: the lossy subscriber recovered every packet: {:.4}, {} still missing",
            a.completeness(),
            a.missing.len()
        );
        assert_eq!(a.packets.len(), b.packets.len(), "seed {seed}");
        assert_eq!(b.nacks_sent, 0, "the clean subscriber never lost anything");
        assert!(b.is_contiguous());
        assert!(sim.router.stats.retransmitted >= sim.dropped / 2);
        assert_eq!(
            sim.publisher.nacked, 0,
            "answered from the router's history"
        );
    }
}

#[test]
fn upstream_loss_is_repaired_by_the_publisher_for_every_subscriber() {
    for seed in [11, 12, 13] {
        let mut sim = Sim::new(seed);
        sim.subscribe(TransportId(2), Subscriber::new(0xA0, true));
        sim.subscribe(TransportId(3), Subscriber::new(0xB0, false));
        sim.links
            .insert((Node::Peer(PUB), Node::Router), Link::lossy(0.05));
        sim.run(Duration::from_secs(10));
        sim.settle();
        assert!(sim.dropped > 30);
        assert!(sim.publisher.nacked > 0, "the router asked the publisher");
        assert!(sim.router.stats.rtx_in > 0, "and unwrapped its RTX");
        for (id, s) in &sim.subscribers {
            assert!(
                s.completeness() > 0.995,
                "seed {seed}, subscriber {id}: {:.4}",
                s.completeness()
            );
        }
    }
}

#[test]
fn a_new_subscriber_starts_on_a_keyframe_asked_for_with_a_pli() {
    let mut sim = Sim::new(21);
    sim.subscribe(TransportId(2), Subscriber::new(0xA0, true));
    sim.run(Duration::from_secs(2));
    let plis_before = sim.publisher.plis;
    let joined = sim.now;
    sim.subscribe(TransportId(3), Subscriber::new(0xB0, true));
    sim.run(Duration::from_secs(1));
    assert_eq!(sim.publisher.plis, plis_before + 1, "one PLI for the join");
    let (arrived, payload) = sim.subscribers[&TransportId(3)].first.clone().unwrap();
    assert_eq!(
        &payload[..2],
        &[0x10, 0x00],
        "the first packet starts a keyframe"
    );
    // PLI 10 ms up, the next frame (≤ 33 ms), 10 ms down.
    assert!(
        arrived - joined <= Duration::from_millis(70),
        "first media {:?} after subscribing",
        arrived - joined
    );
    assert!(sim.subscribers[&TransportId(3)].is_contiguous());
}

#[test]
fn mute_and_unmute_keep_the_sequence_contiguous() {
    let mut sim = Sim::new(31);
    sim.subscribe(TransportId(2), Subscriber::new(0xA0, true));
    sim.run(Duration::from_secs(1));
    sim.command(MediaCommand::SetMuted {
        track: TRACK,
        muted: true,
    });
    let count = sim.subscribers[&TransportId(2)].packets.len();
    // Publishing goes on while muted: the router drops it.
    sim.run(Duration::from_secs(2));
    // Packets in flight at the mute still land; then nothing.
    let muted_count = sim.subscribers[&TransportId(2)].packets.len();
    assert!(muted_count - count <= 6);
    let (&last_ext, last) = sim.subscribers[&TransportId(2)]
        .packets
        .iter()
        .last()
        .unwrap();
    let last_ts = last.ts;
    sim.command(MediaCommand::SetMuted {
        track: TRACK,
        muted: false,
    });
    sim.run(Duration::from_secs(1));
    sim.settle();
    let s = &sim.subscribers[&TransportId(2)];
    assert!(s.packets.len() > muted_count + 60);
    assert!(s.is_contiguous(), "no hole where the mute was");
    assert_eq!(s.nacks_sent, 0, "so nothing to NACK");
    // The next packet's timestamp moved on by about the paused time (2 s at 90 kHz).
    let gap = s.packets[&(last_ext + 1)].ts.wrapping_sub(last_ts);
    assert!((175_000..=200_000).contains(&gap), "timestamp gap {gap}");
}

#[test]
fn renegotiation_moves_a_subscription_to_a_new_ssrc_from_a_keyframe() {
    let mut sim = Sim::new(41);
    sim.subscribe(TransportId(2), Subscriber::new(0xA0, true));
    sim.run(Duration::from_secs(1));
    // The subscriber's m-line is recycled with new SSRCs (e.g. after an unsubscribe).
    sim.command(MediaCommand::Unsubscribe {
        track: TRACK,
        subscriber: TransportId(2),
    });
    sim.run(Duration::from_millis(300));
    let old = sim.subscribers.remove(&TransportId(2)).unwrap();
    let plis = sim.publisher.plis;
    sim.subscribe(TransportId(2), Subscriber::new(0xC0, true));
    sim.run(Duration::from_secs(1));
    sim.settle();
    let new = &sim.subscribers[&TransportId(2)];
    assert!(old.packets.len() > 60);
    assert_eq!(sim.publisher.plis, plis + 1);
    assert_eq!(new.other_ssrcs, 0, "nothing more on the old SSRC");
    assert_eq!(&new.first.as_ref().unwrap().1[..2], &[0x10, 0x00]);
    assert!(new.packets.len() > 25 && new.is_contiguous());
}

#[test]
fn when_the_publisher_leaves_its_track_stops_and_other_tracks_go_on() {
    let mut sim = Sim::new(51);
    sim.subscribe(TransportId(2), Subscriber::new(0xA0, false));
    sim.subscribe(TransportId(3), Subscriber::new(0xB0, false));
    sim.run(Duration::from_secs(1));
    // A subscriber leaves: the other one goes on.
    sim.router.transport_removed(TransportId(3));
    let b = sim.subscribers[&TransportId(3)].packets.len();
    sim.run(Duration::from_millis(500));
    assert!(
        sim.subscribers[&TransportId(3)].packets.len() <= b + 6,
        "in flight only"
    );
    let a = sim.subscribers[&TransportId(2)].packets.len();
    assert!(a > 40);
    // The publisher leaves: its packets (still in flight, or from a stale sender) go nowhere.
    sim.router.transport_removed(PUB);
    sim.run(Duration::from_millis(500));
    let a2 = sim.subscribers[&TransportId(2)].packets.len();
    assert!(a2 <= a + 20, "only what was in flight");
    sim.run(Duration::from_millis(500));
    assert_eq!(
        sim.subscribers[&TransportId(2)].packets.len(),
        a2,
        "nothing more"
    );
    assert!(sim.router.stats.unknown_stream > 0, "dropped and counted");
    // NACKs for the gone track get nothing.
    let before = sim.router.stats.retransmitted;
    let mut out = Outbox::default();
    let mut b = vec![0u8; 64];
    let mut w = rtcp::Writer::new(&mut b);
    w.nack(1, 0xA0, &[1, 2, 3]).unwrap();
    let n = w.len();
    sim.router.rtcp(TransportId(2), &b[..n], &mut out, sim.at());
    assert_eq!(sim.router.stats.retransmitted, before);
    assert!(out.0.is_empty());
}
