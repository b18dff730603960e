//! Ringcast's media routing: what the shards do to each packet between a publisher and a
//! subscriber (the datapath's `Router`). Its own crate so it builds, tests and fuzzes without
//! the server around it.
//!
//! Pure functions and small state machines (no IO, no clock, no allocation per packet), table
//! tested: `rtp` (header view and rewriting into a send buffer), `keyframe` (codec keyframe
//! detection for gating new subscribers), `sequence` (per-subscriber sequence number and
//! timestamp continuity across pauses and source switches), `upstream` (publisher loss to
//! NACK), `speakers` (audio levels), `retransmit` (NACK history and budgets). `router` puts
//! them together as the shard's `MediaRouter`, split by concept: track (layers, history),
//! subscription (gate, rewrite), forward (the pure forwarding decision and layer selector),
//! feedback (RTCP, reports, NACK, RTX).

pub mod dd;
/// Ready-made tracks and subscriptions for tests and benchmarks (the `test-support` feature).
#[cfg(any(test, feature = "test-support"))]
pub mod fixtures;
pub mod keyframe;
pub mod retransmit;
pub mod router;
pub mod rtcp;
pub mod rtp;
pub mod sequence;
pub mod speakers;
pub mod table;
pub mod upstream;
pub mod vp8;
