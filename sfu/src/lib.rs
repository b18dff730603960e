//! Ringcast's SFU crate: the `ringcast` server binary's parts (configuration, wiring, logging,
//! the demo page). Media routing is `ringcast-media`; this wires it into the datapath.

pub mod config;
pub mod demo;
pub mod media_plane;
pub mod server;
pub mod telemetry;
