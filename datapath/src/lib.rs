//! Ringcast's media shards: each one core, one io_uring ring and one UDP port, shared-nothing.
//!
//! The protocol cores here are sans-IO (no sockets, no clock): `stun` (RFC 8489 checks),
//! `ice` (ICE-lite per transport), `srtp` (RFC 3711 / RFC 7714 contexts). Only the shard loop
//! does IO and reads the clock.

pub mod alloc_count;
pub mod bufring;
pub mod client;
pub mod dtls;
mod fallback;
pub mod ice;
pub mod io;
pub mod outbox;
pub mod pacer;
pub mod router;
pub mod shard;
pub mod srtp;
pub mod stats;
pub mod stun;
mod uring;
mod wake;

pub use ringcast_types::IdMap;

pub use io::{Backend, Datapath, DatapathConfig, EventSink, SendError};
pub use router::{Egress, Fanout, FanoutCommand, RouteIo, Router};
pub use shard::{Command, Event, OUTBOX_SLOTS, RemoteConfig, TransportConfig, TransportId};
