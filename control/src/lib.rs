//! Ringcast's control plane: rooms, participants, access tokens, SDP negotiation, ICE
//! credentials and the DTLS identity, served over gRPC (and gRPC-Web).
//!
//! It decides, the datapath forwards: the control plane never touches media. It talks to the
//! media shards only through the [`plane::MediaPlane`] trait (commands out, events back).
//!
//! Module map: `sdp` (model, parser, writer), `codec` (what we forward), `negotiate` (JSEP
//! offer/answer), `ice`, `dtls`, `auth`, `ids`, `plane` (the shard interface), `registry`
//! (rooms state), `events` (each participant's coalescing event queue), `service` (the tonic services and the one place errors become gRPC statuses).

pub mod auth;
pub mod codec;
pub mod dtls;
pub mod events;
pub mod ice;
pub mod ids;
pub mod negotiate;
pub mod plane;
mod random;
pub mod registry;
pub mod sdp;
pub mod service;
