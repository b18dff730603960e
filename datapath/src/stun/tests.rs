use proptest::prelude::*;

use super::*;

/// RFC 5769 §2.1: sample request (short-term credentials).
const RFC5769_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

/// RFC 5769 §2.2: sample IPv4 response, XOR-MAPPED-ADDRESS 192.0.2.1:32853.
const RFC5769_RESPONSE_V4: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];

const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
const TXID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

#[test]
fn rfc5769_request() {
    let m = Message::parse(&RFC5769_REQUEST).unwrap();
    assert_eq!(m.class, Class::Request);
    assert_eq!(m.method, BINDING);
    assert_eq!(m.transaction_id, TXID);
    // The username is "evtj:h6vY" (the vector pads with spaces).
    assert_eq!(m.ice_username().unwrap(), (&b"evtj"[..], &b"h6vY"[..]));
    assert_eq!(m.priority, Some(0x6e00_01ff));
    assert_eq!(m.ice_controlled, Some(0x932f_f9b1_5126_3b36));
    assert!(m.fingerprint);
    assert!(m.verify_integrity(PASSWORD));
    assert!(!m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBu"));
    assert!(
        m.unknown_required().is_empty(),
        "SOFTWARE is comprehension-optional"
    );
}

#[test]
fn rfc5769_response_v4() {
    let m = Message::parse(&RFC5769_RESPONSE_V4).unwrap();
    assert_eq!(m.class, Class::Success);
    assert!(m.verify_integrity(PASSWORD));
    let v = find_attribute(&RFC5769_RESPONSE_V4, attr::XOR_MAPPED_ADDRESS).unwrap();
    assert_eq!(
        decode_xor_mapped(v, &TXID),
        Some("192.0.2.1:32853".parse().unwrap())
    );
}

#[test]
fn our_xor_mapped_address_matches_rfc5769() {
    let mut out = [0u8; MAX_RESPONSE];
    let n = write_binding_success(
        &mut out,
        &TXID,
        "192.0.2.1:32853".parse().unwrap(),
        PASSWORD,
    )
    .unwrap();
    let v = find_attribute(&out[..n], attr::XOR_MAPPED_ADDRESS).unwrap();
    assert_eq!(v, [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
    // RFC 5769 §2.3: [2001:db8:1234:5678:11:2233:4455:6677]:32853.
    let n = write_binding_success(
        &mut out,
        &TXID,
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap(),
        PASSWORD,
    )
    .unwrap();
    let v = find_attribute(&out[..n], attr::XOR_MAPPED_ADDRESS).unwrap();
    assert_eq!(
        v,
        [
            0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25,
            0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9
        ]
    );
    let m = Message::parse(&out[..n]).unwrap();
    assert_eq!(m.class, Class::Success);
    assert!(m.fingerprint && m.verify_integrity(PASSWORD));
}

#[test]
fn request_round_trip_and_tampering() {
    let mut out = [0u8; MAX_RESPONSE];
    let n = write_binding_request(
        &mut out,
        &TXID,
        b"abcd:efgh",
        1234,
        IceRole::Controlling(42),
        true,
        b"pass",
    )
    .unwrap();
    let m = Message::parse(&out[..n]).unwrap();
    assert!(m.use_candidate && m.verify_integrity(b"pass"));
    assert_eq!(m.ice_controlling, Some(42));
    assert_eq!(m.ice_username().unwrap(), (&b"abcd"[..], &b"efgh"[..]));
    // Flip any bit before FINGERPRINT: the fingerprint (or integrity) catches it.
    for i in 20..n - 8 {
        let mut t = out;
        t[i] ^= 0x01;
        if let Ok(m) = Message::parse(&t[..n]) {
            assert!(!m.verify_integrity(b"pass"), "byte {i}");
        }
    }
}

#[test]
fn error_responses() {
    let mut out = [0u8; MAX_RESPONSE];
    let n = write_binding_error(&mut out, &TXID, 487, &[], Some(b"k")).unwrap();
    let m = Message::parse(&out[..n]).unwrap();
    assert_eq!(m.class, Class::Error);
    assert!(m.verify_integrity(b"k"));
    let e = find_attribute(&out[..n], attr::ERROR_CODE).unwrap();
    assert_eq!((e[2], e[3]), (4, 87));
    let n = write_binding_error(&mut out, &TXID, 420, &[0x0777, 0x0042], None).unwrap();
    assert_eq!(
        find_attribute(&out[..n], attr::UNKNOWN_ATTRIBUTES).unwrap(),
        [0x07, 0x77, 0x00, 0x42]
    );
    assert!(!Message::parse(&out[..n]).unwrap().has_integrity());
}

#[test]
fn malformed() {
    assert_eq!(Message::parse(&[0; 10]).unwrap_err(), StunError::TooShort);
    let mut bad = RFC5769_REQUEST;
    bad[4] = 0;
    assert_eq!(Message::parse(&bad).unwrap_err(), StunError::NotStun);
    assert_eq!(
        Message::parse(&RFC5769_REQUEST[..100]).unwrap_err(),
        StunError::BadLength
    );
    let mut bad = RFC5769_REQUEST;
    bad[107] ^= 1;
    assert_eq!(Message::parse(&bad).unwrap_err(), StunError::BadFingerprint);
    // An attribute length that runs past the end.
    let mut bad = RFC5769_REQUEST;
    bad[22] = 0x40;
    assert!(Message::parse(&bad).is_err());
    assert!(!is_stun(&[0x80; 30]));
    assert!(is_stun(&RFC5769_REQUEST));
}

#[test]
fn unknown_comprehension_required_is_reported() {
    let mut out = [0u8; MAX_RESPONSE];
    let n = write_binding_request(
        &mut out,
        &TXID,
        b"a:b",
        1,
        IceRole::Controlling(1),
        false,
        b"k",
    )
    .unwrap();
    // Splice an unknown required attribute 0x7777 after the header.
    let mut v = out[..20].to_vec();
    v.extend_from_slice(&[0x77, 0x77, 0x00, 0x00]);
    v.extend_from_slice(&out[20..n - 32]); // drop integrity + fingerprint
    let len = (v.len() - 20) as u16;
    v[2..4].copy_from_slice(&len.to_be_bytes());
    let m = Message::parse(&v).unwrap();
    assert_eq!(m.unknown_required(), [0x7777]);
}

proptest! {
    #[test]
    fn parse_never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Message::parse(&data);
    }

    #[test]
    fn mutated_request_never_panics(i in 0usize..108, b in any::<u8>()) {
        let mut m = RFC5769_REQUEST;
        m[i] = b;
        if let Ok(msg) = Message::parse(&m) {
            let _ = msg.verify_integrity(PASSWORD);
            let _ = msg.ice_username();
        }
    }
}
