//! Ringcast's media shards: each one core, one io_uring ring and one UDP port, shared-nothing.
//!
//! Each layer imports only those below it:
//! - sans-IO protocol cores (no sockets, no clock): `demux` (RFC 7983), `stun` (RFC 8489
//!   checks), `ice` (ICE-lite per transport), `dtls` (handshake, then the settled record
//!   key), `srtp` (RFC 3711 / RFC 7714 contexts); send-side state: `outbox` (send slots) and
//!   `pacer`;
//! - `shard`: one shard's core: transports and their IO (`RouteIo`, the `Egress` a media
//!   router sends through), demux to ICE/DTLS/SRTP, and `shard::driver`, what a backend runs;
//! - `backend`: the IO loops, io_uring and recvmmsg/sendmmsg, driving a shard;
//! - `io`: the `Datapath` handle: sockets, threads, the command queues and their wake-ups.
//!
//! `client` is a peer built on the same protocol cores, for the load generator and tests.
//! The media router is not here: the datapath runs any `ringcast_types::route::Router`.

pub mod bufring;
pub mod client;
pub mod demux;
pub mod dtls;
pub mod ice;
pub mod io;
pub mod outbox;
pub mod pacer;
pub mod shard;
pub mod srtp;
pub mod stats;
pub mod stun;

mod backend;
mod wake;

/// Test support (the `test-support` feature): a counting allocator for no-allocation tests,
/// and the bare fan-out router the forwarding benchmark runs.
#[cfg(any(test, feature = "test-support"))]
pub mod alloc_count;
#[cfg(any(test, feature = "test-support"))]
mod fanout;
#[cfg(any(test, feature = "test-support"))]
pub use fanout::{Fanout, FanoutCommand};

pub use ringcast_types::IdMap;
pub use ringcast_types::route::{Egress, Router};

pub use io::{Backend, Datapath, DatapathConfig, EventSink, SendError};
pub use shard::{
    Command, Event, OUTBOX_SLOTS, RemoteConfig, RouteIo, TransportConfig, TransportId,
};
