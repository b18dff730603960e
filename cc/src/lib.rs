//! Ringcast's congestion control: a send-side bandwidth estimate per subscriber transport, and
//! the transport-wide feedback Ringcast sends publishers (sans-IO: no socket, thread or clock
//! here; the caller passes `now`).
//!
//! - `twcc`: the RTCP transport-cc feedback message, parsed and written
//!   (draft-holmer-rmcat-transport-wide-cc-extensions-01).
//!
//! Pure state machines, table tested and fuzzed; the per-packet paths do not allocate.

pub mod twcc;
