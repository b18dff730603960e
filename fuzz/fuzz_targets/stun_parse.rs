//! Any datagram: the STUN parser never panics, and an ICE-lite transport answering whatever
//! parses never panics and never binds an address without a valid signature.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use ringcast_datapath::ice::{IceLite, Selected};
use ringcast_datapath::stun::{self, Message};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse(data) else { return };
    let _ = msg.ice_username();
    let mut ice = IceLite::new("LOCL", "localpassword0123456789", None);
    let mut out = [0u8; stun::MAX_RESPONSE];
    let (_, selected) = ice.handle_check(&msg, "127.0.0.1:9".parse().unwrap(), Instant::now(), &mut out);
    if selected != Selected::Unchanged {
        assert!(msg.verify_integrity(b"localpassword0123456789"), "bound without integrity");
    }
});
