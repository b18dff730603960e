//! Any text: the SDP parser never panics, and whatever it accepts is written back to text that
//! parses to the same model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_control::sdp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sd) = sdp::parse(text) {
        let written = sd.to_string();
        let again = sdp::parse(&written).expect("Ringcast's own SDP must parse");
        assert_eq!(again, sd, "round trip changed the model:\n{written}");
    }
    let _ = sdp::parse_candidate(text);
});
