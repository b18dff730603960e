use proptest::prelude::*;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn rfc3711_b3_key_derivation() {
    let mk = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
    let ms = hex("0EC675AD498AFEEBB6960B3AABE6");
    let mut k = [0u8; 16];
    derive(&mk, &ms, 0, &mut k);
    assert_eq!(k.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
    let mut s = [0u8; 14];
    derive(&mk, &ms, 2, &mut s);
    assert_eq!(s.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
    let mut a = [0u8; 94];
    derive(&mk, &ms, 1, &mut a);
    assert_eq!(
        a.to_vec(),
        hex(
            "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2"
        )
    );
}

#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let key = hex("2B7E151628AED2A6ABF7158809CF4F3C");
    let mut salt = [0u8; 14];
    salt.copy_from_slice(&hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"));
    let iv = cm_iv(&salt, 0, 0);
    assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
    let mut ks = [0u8; 48];
    let k: [u8; 16] = key.try_into().unwrap();
    cm_keystream(&Aes128Enc::new(&k.into()), iv, &mut ks);
    assert_eq!(ks[..16].to_vec(), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
    assert_eq!(ks[16..32].to_vec(), hex("D23513162B02D0F72A43A2FE4A5F97AB"));
    assert_eq!(ks[32..48].to_vec(), hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
}

const RFC7714_RTP: &str = "8040f17b8041f8d35501a0b2 47616c6c696120657374206f6d6e69732064697669736120696e207061727465732074726573";
const RFC7714_SRTP_128: &str = "8040f17b8041f8d35501a0b2
    f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833
    899d7f27beb16a9152cf765ee4390cce";

#[test]
fn rfc7714_16_1_aead_aes_128_gcm() {
    let key = hex("000102030405060708090a0b0c0d0e0f");
    let salt = hex("517569642070726f2071756f");
    assert_eq!(
        gcm_rtp_iv(&salt.clone().try_into().unwrap(), 0x5501_a0b2, 0xf17b).to_vec(),
        hex("51753c6580c2726f20718414")
    );
    let plain = hex(RFC7714_RTP);
    let mut tx = Context::from_session_keys(SrtpProfile::AeadAes128Gcm, &key, &salt);
    let mut buf = plain.clone();
    buf.resize(plain.len() + 16, 0);
    let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
    assert_eq!(buf[..n].to_vec(), hex(RFC7714_SRTP_128));
    let mut rx = Context::from_session_keys(SrtpProfile::AeadAes128Gcm, &key, &salt);
    let mut p = hex(RFC7714_SRTP_128);
    let len = rx.unprotect_rtp(&mut p).unwrap();
    assert_eq!(p[..len].to_vec(), plain);
    // Replay of the same packet is refused.
    let mut again = hex(RFC7714_SRTP_128);
    assert_eq!(rx.unprotect_rtp(&mut again), Err(SrtpError::Replayed));
    assert_eq!(
        again,
        hex(RFC7714_SRTP_128),
        "a refused packet is not touched"
    );
}

#[test]
fn rfc7714_srtcp_iv() {
    let salt: [u8; 12] = hex("517569642070726f2071756f").try_into().unwrap();
    assert_eq!(
        gcm_rtcp_iv(&salt, 0x4d61_7273, 0x5d4).to_vec(),
        hex("517524055203726f207170bb")
    );
}

fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, 96];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn pair(profile: SrtpProfile) -> (Context, Context) {
    let mk: Vec<u8> = (0..profile.master_key_len() as u8).collect();
    let ms: Vec<u8> = (100..100 + profile.master_salt_len() as u8).collect();
    (
        Context::new(profile, &mk, &ms).unwrap(),
        Context::new(profile, &mk, &ms).unwrap(),
    )
}

const PROFILES: [SrtpProfile; 3] = [
    SrtpProfile::Aes128CmHmacSha1_80,
    SrtpProfile::AeadAes128Gcm,
    SrtpProfile::AeadAes256Gcm,
];

#[test]
fn rtp_round_trip_tamper_replay_and_rollover() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        // Across the 16-bit wrap: the ROC must follow on both sides.
        for seq in (65530u32..65545).map(|s| s as u16) {
            let plain = rtp(seq, 0xCAFE, &[seq as u8; 100]);
            let mut buf = plain.clone();
            buf.resize(plain.len() + profile.rtp_overhead(), 0);
            let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
            assert_ne!(buf[12..plain.len()], plain[12..], "{profile:?} encrypted");
            let mut tampered = buf[..n].to_vec();
            tampered[20] ^= 1;
            assert_eq!(
                rx.unprotect_rtp(&mut tampered),
                Err(SrtpError::AuthFailed),
                "{profile:?}"
            );
            let len = rx.unprotect_rtp(&mut buf[..n]).unwrap();
            assert_eq!(buf[..len], plain[..], "{profile:?} seq {seq}");
            // A plaintext too short to be RTP is refused by the sender.
            tx.protect_rtp(&mut buf, 0).unwrap_err();
        }
    }
}

/// Sealing a payload from elsewhere gives the bytes sealing it in place gives, for every
/// profile and wherever the head ends (header only, or header plus a plaintext prefix).
#[test]
fn sealing_from_a_source_matches_sealing_in_place() {
    for profile in PROFILES {
        for payload_len in [0usize, 1, 15, 16, 17, 100, 1200] {
            let plain = rtp(
                7,
                0xBEEF,
                &(0..payload_len).map(|i| i as u8).collect::<Vec<_>>(),
            );
            for head in [12, 12 + payload_len / 3, plain.len()] {
                let (mut a, _) = pair(profile);
                let (mut b, mut rx) = pair(profile);
                let mut in_place = plain.clone();
                in_place.resize(plain.len() + profile.rtp_overhead(), 0);
                let n = a.protect_rtp(&mut in_place, plain.len()).unwrap();
                let mut slot = vec![0x5A; 2048];
                slot[..head].copy_from_slice(&plain[..head]);
                let m = b.protect_rtp_from(&mut slot, head, &plain[head..]).unwrap();
                assert_eq!(slot[..m], in_place[..n], "{profile:?} {payload_len} {head}");
                let len = rx.unprotect_rtp(&mut slot[..m]).unwrap();
                assert_eq!(slot[..len], plain[..]);
            }
        }
        // No room for the payload and tag, or a head that isn't an RTP header: refused.
        let (mut tx, _) = pair(profile);
        let plain = rtp(1, 1, &[0; 100]);
        let mut small = vec![0; plain.len() + profile.rtp_overhead() - 1];
        small[..12].copy_from_slice(&plain[..12]);
        assert_eq!(
            tx.protect_rtp_from(&mut small, 12, &plain[12..]),
            Err(SrtpError::NoRoom)
        );
        let mut slot = vec![0; 2048];
        assert_eq!(
            tx.protect_rtp_from(&mut slot, 4000, &[]),
            Err(SrtpError::NoRoom)
        );
        assert_eq!(
            tx.protect_rtp_from(&mut slot, 8, &plain[8..]),
            Err(SrtpError::TooShort)
        );
    }
}

#[test]
fn reordered_within_window_accepted_once() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        let mut packets = Vec::new();
        for seq in 1000..1200u16 {
            let plain = rtp(seq, 7, b"hello");
            let mut buf = plain.clone();
            buf.resize(plain.len() + profile.rtp_overhead(), 0);
            let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
            buf.truncate(n);
            packets.push(buf);
        }
        // Newest first, then an old one inside the window, then one outside.
        let mut p = packets[199].clone();
        rx.unprotect_rtp(&mut p).unwrap();
        let mut p = packets[150].clone();
        rx.unprotect_rtp(&mut p).unwrap();
        let mut p = packets[150].clone();
        assert_eq!(rx.unprotect_rtp(&mut p), Err(SrtpError::Replayed));
        let mut p = packets[10].clone();
        assert_eq!(
            rx.unprotect_rtp(&mut p),
            Err(SrtpError::Replayed),
            "outside the window"
        );
    }
}

#[test]
fn rtcp_round_trip_and_tamper() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        // A receiver report: V=2, RC=0, PT=201, length=1, SSRC.
        let plain = vec![0x80, 201, 0, 1, 0, 0, 0, 9];
        for _ in 0..3 {
            let mut buf = plain.clone();
            buf.resize(plain.len() + profile.rtcp_overhead(), 0);
            let n = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
            assert_eq!(n, plain.len() + profile.rtcp_overhead());
            let mut bad = buf[..n].to_vec();
            bad[5] ^= 1;
            assert!(rx.unprotect_rtcp(&mut bad).is_err(), "{profile:?}");
            let len = rx.unprotect_rtcp(&mut buf[..n]).unwrap();
            assert_eq!(buf[..len], plain[..], "{profile:?}");
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let (_, mut rx) = pair(SrtpProfile::AeadAes128Gcm);
    assert_eq!(rx.unprotect_rtp(&mut [0x80; 5]), Err(SrtpError::TooShort));
    assert_eq!(
        rx.unprotect_rtp(&mut [0x00; 40]),
        Err(SrtpError::BadVersion)
    );
    assert!(Context::new(SrtpProfile::AeadAes128Gcm, &[0; 16], &[0; 14]).is_err());
    // Extension length pointing past the end.
    let mut p = rtp(1, 1, &[0; 30]);
    p[0] |= 0x10;
    p[14] = 0xFF;
    assert_eq!(rx.unprotect_rtp(&mut p), Err(SrtpError::TooShort));
}

#[test]
fn index_estimation() {
    assert_eq!(estimate_index(0x1_0005, 3), 0x1_0003);
    assert_eq!(estimate_index(0x1_FFF0, 2), 0x2_0002, "wrap forward");
    assert_eq!(
        estimate_index(0x2_0002, 0xFFF0),
        0x1_FFF0,
        "late packet from before the wrap"
    );
    assert_eq!(
        estimate_index(5, 0xFFF0),
        0xFFF0,
        "no ROC below zero at the start"
    );
}

proptest! {
    #[test]
    fn unprotect_never_panics(data in prop::collection::vec(any::<u8>(), 0..300), p in 0usize..3) {
        let (_, mut rx) = pair(PROFILES[p]);
        let mut d = data.clone();
        let _ = rx.unprotect_rtp(&mut d);
        let mut d = data;
        let _ = rx.unprotect_rtcp(&mut d);
    }
}
