//! ICE credentials and Ringcast's host candidates (RFC 8445, RFC 8839). No IO.

use std::net::{IpAddr, SocketAddr};

use crate::random::random_chars;
use crate::sdp::Candidate;

/// RFC 8445 §5.3 `ice-char`: ALPHA / DIGIT / "+" / "/".
const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Our ufrag length: 8 ice-chars = 48 bits (RFC 8445 asks for at least 24).
pub const UFRAG_LEN: usize = 8;
/// Our password length: 24 ice-chars = 144 bits (RFC 8445 asks for at least 128, i.e. 22 chars).
pub const PWD_LEN: usize = 24;

/// A ufrag/password pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    pub ufrag: String,
    pub pwd: String,
}

impl IceCredentials {
    /// Fresh credentials from the CSPRNG.
    pub fn generate() -> Self {
        IceCredentials {
            ufrag: random_chars(ICE_CHARS, UFRAG_LEN),
            pwd: random_chars(ICE_CHARS, PWD_LEN),
        }
    }

    /// Checks a peer's credentials against RFC 8839 §5.4: ufrag 4–256 and pwd 22–256 ice-chars.
    pub fn validate_remote(ufrag: &str, pwd: &str) -> Result<(), String> {
        let ok = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        };
        if !(4..=256).contains(&ufrag.len()) || !ok(ufrag) {
            return Err(format!(
                "ice-ufrag `{}` must be 4 to 256 characters of [A-Za-z0-9+/]",
                ufrag.chars().take(64).collect::<String>()
            ));
        }
        if !(22..=256).contains(&pwd.len()) || !ok(pwd) {
            return Err("ice-pwd must be 22 to 256 characters of [A-Za-z0-9+/]".to_owned());
        }
        Ok(())
    }
}

/// RFC 8445 §5.1.2.1 priority of a host candidate.
pub fn host_priority(local_preference: u16, component: u16) -> u32 {
    (126u32 << 24) | (u32::from(local_preference) << 8) | (256 - u32::from(component.min(256)))
}

/// Host candidates (UDP, component 1: Ringcast is rtcp-mux only) for each address, IPv6 after IPv4.
pub fn host_candidates(addrs: &[SocketAddr]) -> Vec<Candidate> {
    let mut sorted: Vec<SocketAddr> = addrs.to_vec();
    sorted.sort_by_key(|a| a.is_ipv6());
    sorted
        .iter()
        .enumerate()
        .map(|(i, a)| {
            // Prefer IPv4 (higher local preference) and keep preferences distinct.
            let pref = if a.is_ipv4() { 65535 } else { 65000 } - i as u16;
            Candidate {
                foundation: match a.ip() {
                    IpAddr::V4(_) => "1".to_owned(),
                    IpAddr::V6(_) => "2".to_owned(),
                },
                component: 1,
                transport: "udp".to_owned(),
                priority: host_priority(pref, 1),
                address: a.ip().to_string(),
                port: a.port(),
                typ: "host".to_owned(),
                raddr: None,
                rport: None,
                extensions: Vec::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_have_rfc_lengths_and_charset() {
        let c = IceCredentials::generate();
        assert_eq!(c.ufrag.len(), UFRAG_LEN);
        assert_eq!(c.pwd.len(), PWD_LEN);
        IceCredentials::validate_remote(&c.ufrag, &c.pwd).unwrap();
        assert_ne!(c, IceCredentials::generate());
    }

    #[test]
    fn remote_credentials_are_checked() {
        assert!(IceCredentials::validate_remote("abc", &"p".repeat(22)).is_err());
        assert!(IceCredentials::validate_remote("abcd", &"p".repeat(21)).is_err());
        assert!(IceCredentials::validate_remote("ab:d", &"p".repeat(22)).is_err());
        assert!(IceCredentials::validate_remote("abcd", &"p".repeat(22)).is_ok());
    }

    #[test]
    fn host_priority_matches_rfc_formula() {
        // type preference 126, local preference 65535, component 1.
        assert_eq!(host_priority(65535, 1), 2_130_706_431);
    }

    #[test]
    fn candidates_for_v4_and_v6() {
        let c = host_candidates(&[
            "[::1]:40001".parse().unwrap(),
            "127.0.0.1:40001".parse().unwrap(),
        ]);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].address, "127.0.0.1");
        assert_eq!(c[1].address, "::1");
        assert!(c[0].priority > c[1].priority);
        assert_eq!(
            c[0].to_string(),
            "1 1 udp 2130706431 127.0.0.1 40001 typ host"
        );
    }
}
