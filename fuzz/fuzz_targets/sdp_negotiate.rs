//! Any offer that parses: negotiation never panics, and an answer it produces parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_control::ice::{IceCredentials, host_candidates};
use ringcast_control::negotiate::{LocalTransport, answer_publish};
use ringcast_control::sdp::{self, Fingerprint};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(offer) = sdp::parse(text) else { return };
    let ice = IceCredentials {
        ufrag: "fuzzufrg".into(),
        pwd: "fuzzpassword0123456789ab".into(),
    };
    let fingerprint = Fingerprint {
        algorithm: "sha-256".into(),
        bytes: vec![7; 32],
    };
    let candidates = host_candidates(&["127.0.0.1:40000".parse().unwrap()]);
    let local = LocalTransport {
        ice: &ice,
        fingerprint: &fingerprint,
        candidates: &candidates,
        session_id: "1",
        session_version: 1,
    };
    if let Ok(a) = answer_publish(&offer, &local) {
        sdp::parse(&a.answer.to_string()).expect("answers must parse");
    }
});
