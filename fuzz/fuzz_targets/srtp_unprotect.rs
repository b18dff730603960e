//! Any datagram, as SRTP and as SRTCP, for each profile: unprotect never panics and never
//! accepts a packet that wasn't made with the key (the fuzzer can't forge a tag).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_datapath::srtp::{Context, SrtpProfile};

fuzz_target!(|data: &[u8]| {
    for p in [SrtpProfile::AeadAes128Gcm, SrtpProfile::AeadAes256Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
        let key = vec![7u8; p.master_key_len()];
        let salt = vec![9u8; p.master_salt_len()];
        let mut ctx = Context::new(p, &key, &salt).expect("valid key lengths");
        let mut buf = data.to_vec();
        assert!(ctx.unprotect_rtp(&mut buf).is_err(), "forged SRTP accepted");
        let mut buf = data.to_vec();
        assert!(ctx.unprotect_rtcp(&mut buf).is_err(), "forged SRTCP accepted");
    }
});
