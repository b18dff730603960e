//! Ringcast's public API, `ringcast.v1`: the generated messages, clients and servers.
//!
//! Nothing but generated code lives here; the control plane converts these wire types into its
//! domain types at its boundary. The `.proto` source is in `proto/ringcast/v1/`.

/// `ringcast.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("ringcast.v1");
}

/// Path of the `.proto` files, for clients generated in other languages.
pub const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
