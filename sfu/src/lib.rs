//! Ringcast's SFU crate: the `ringcast` server binary's parts (configuration, wiring, logging).
//! Media routing (rooms → tracks → subscriptions on the shards) lands here with the datapath.

pub mod config;
pub mod media;
pub mod media_plane;
pub mod server;
pub mod telemetry;
