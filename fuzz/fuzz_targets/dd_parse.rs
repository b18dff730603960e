//! Arbitrary dependency descriptor extensions: parsing never panics, and a parsed structure
//! answers for every template id within its layers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_media::dd;

fuzz_target!(|data: &[u8]| {
    if let Some((m, structure)) = dd::parse(data) {
        assert_eq!(m.template_id, data[0] & 0x3F);
        if let Some(s) = structure {
            let layers = s.temporal_layers();
            for t in 0..64 {
                if let Some((_, tid)) = s.layer_of(t) {
                    assert!(tid < layers);
                }
            }
        }
    }
});
