//! The IO backends: each runs a shard's loop on its socket (batched receive, the core, batched
//! send). They import the shard; nothing in the shard imports them.

pub(crate) mod fallback;
pub(crate) mod sockaddr;
pub(crate) mod uring;
