//! Ringcast's load generator: synthetic rooms of publishers and subscribers that behave like
//! real clients (the public gRPC API, ICE as the controlling agent, DTLS as client, SRTP in a
//! chosen profile, RTCP receiver reports, NACKs for real gaps and PLIs, transport-wide
//! congestion control feedback when asked for), driven by one io_uring engine thread so one
//! core loads a server core harder than itself.
//!
//! Modules: `scenario` (flags and TOML), `signal` (the API calls), `sdp` (offers and answers),
//! `media` (sources and received-stream statistics, sans-IO), `engine` (the IO loop),
//! `report` (JSON and the table), `run` (one whole run).

pub mod engine;
pub mod media;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod sdp;
pub mod signal;
