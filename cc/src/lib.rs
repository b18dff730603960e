//! Ringcast's congestion control: a send-side bandwidth estimate per subscriber transport, and
//! the transport-wide feedback Ringcast sends publishers. Sans-IO: no socket, thread or clock
//! here; every call takes the caller's `now`.
//!
//! - `twcc`: the RTCP transport-cc feedback message, parsed and written, and the receive side's
//!   arrival recorder (draft-holmer-rmcat-transport-wide-cc-extensions-01);
//! - `history`: what was sent under each transport-wide sequence number;
//! - `delay`: inter-arrival groups, trendline, overuse detector and AIMD (GCC, goog_cc);
//! - `loss`: the loss-based ceiling;
//! - `probe`: probe clusters to find headroom, and their measurement;
//! - `estimator`: the façade a transport holds, [`Estimator`];
//! - `sim` (feature `test-support`): a seeded bottleneck link for scenario tests.
//!
//! Pure state machines, table tested and fuzzed; the per-packet paths do not allocate.

pub mod delay;
pub mod estimator;
pub mod history;
pub mod loss;
pub mod probe;
/// A simulated bottleneck link (the `test-support` feature).
#[cfg(any(test, feature = "test-support"))]
pub mod sim;
pub mod twcc;

pub use estimator::{Config, Estimator};
pub use history::ClusterId;
pub use probe::ProbeCluster;
