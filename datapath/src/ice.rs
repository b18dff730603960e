//! ICE-lite (RFC 8445 §2.5) for one transport: answer connectivity checks, bind the address the
//! controlling peer nominates, follow it to a new address, and expire consent (RFC 7675).
//! Sans-IO: the caller passes the parsed check, its source and the time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::stun::{self, Class, Message};

/// RFC 7675: consent expires 30 s after the last valid check.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a check led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Send `len` bytes of the output buffer back to the source.
    Reply { len: usize, nominated: bool },
    /// Not for us or not answerable: count and drop.
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    NotBindingRequest,
    NoFingerprint,
    BufferTooSmall,
}

/// What changed on a transport after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    Unchanged,
    /// The peer nominated an address (first time, or it moved).
    Now(SocketAddr),
}

/// ICE-lite state of one transport.
#[derive(Debug, Clone)]
pub struct IceLite {
    local_ufrag: String,
    local_pwd: String,
    /// Unknown until the peer's SDP arrives; checks are then accepted on integrity alone.
    remote_ufrag: Option<String>,
    selected: Option<SocketAddr>,
    last_valid: Option<Instant>,
}

impl IceLite {
    pub fn new(local_ufrag: &str, local_pwd: &str, remote_ufrag: Option<&str>) -> Self {
        IceLite {
            local_ufrag: local_ufrag.to_owned(),
            local_pwd: local_pwd.to_owned(),
            remote_ufrag: remote_ufrag.map(str::to_owned),
            selected: None,
            last_valid: None,
        }
    }

    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// New credentials (ICE restart); the selected address stays until a new nomination.
    pub fn restart(&mut self, local_ufrag: &str, local_pwd: &str, remote_ufrag: Option<&str>) {
        self.local_ufrag = local_ufrag.to_owned();
        self.local_pwd = local_pwd.to_owned();
        self.remote_ufrag = remote_ufrag.map(str::to_owned);
    }

    /// Answers a Binding request whose USERNAME's first part is our ufrag. `out` must hold
    /// `stun::MAX_RESPONSE` bytes. A check that fails authentication changes nothing.
    pub fn handle_check(
        &mut self,
        msg: &Message<'_>,
        src: SocketAddr,
        now: Instant,
        out: &mut [u8],
    ) -> (CheckOutcome, Selected) {
        if msg.class != Class::Request || msg.method != stun::BINDING {
            return (
                CheckOutcome::Drop(DropReason::NotBindingRequest),
                Selected::Unchanged,
            );
        }
        // RFC 8445 §7.2.2: ICE checks carry FINGERPRINT.
        if !msg.fingerprint {
            return (
                CheckOutcome::Drop(DropReason::NoFingerprint),
                Selected::Unchanged,
            );
        }
        let txid = msg.transaction_id;
        let error = |code: u16, unknown: &[u16], key: Option<&[u8]>, out: &mut [u8]| {
            match stun::write_binding_error(out, &txid, code, unknown, key) {
                Ok(len) => CheckOutcome::Reply {
                    len,
                    nominated: false,
                },
                Err(_) => CheckOutcome::Drop(DropReason::BufferTooSmall),
            }
        };
        let (Some((local, remote)), true) = (msg.ice_username(), msg.has_integrity()) else {
            return (error(400, &[], None, out), Selected::Unchanged);
        };
        let remote_ok = self
            .remote_ufrag
            .as_deref()
            .is_none_or(|r| r.as_bytes() == remote);
        if local != self.local_ufrag.as_bytes()
            || !remote_ok
            || !msg.verify_integrity(self.local_pwd.as_bytes())
        {
            return (error(401, &[], None, out), Selected::Unchanged);
        }
        let key = self.local_pwd.as_bytes();
        if !msg.unknown_required().is_empty() {
            return (
                error(420, msg.unknown_required(), Some(key), out),
                Selected::Unchanged,
            );
        }
        // Ringcast is lite, so always controlled: a peer that also claims to be controlled is in
        // conflict and must switch (RFC 8445 §7.3.1.1).
        if msg.ice_controlled.is_some() {
            return (error(487, &[], Some(key), out), Selected::Unchanged);
        }
        let len = match stun::write_binding_success(out, &txid, src, key) {
            Ok(len) => len,
            Err(_) => {
                return (
                    CheckOutcome::Drop(DropReason::BufferTooSmall),
                    Selected::Unchanged,
                );
            }
        };
        self.last_valid = Some(now);
        let mut selected = Selected::Unchanged;
        if msg.use_candidate && self.selected != Some(src) {
            self.selected = Some(src);
            selected = Selected::Now(src);
        }
        (
            CheckOutcome::Reply {
                len,
                nominated: msg.use_candidate,
            },
            selected,
        )
    }

    /// True once a selected pair has gone `CONSENT_TIMEOUT` without a valid check.
    pub fn consent_expired(&self, now: Instant) -> bool {
        match (self.selected, self.last_valid) {
            (Some(_), Some(t)) => now.saturating_duration_since(t) >= CONSENT_TIMEOUT,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::{IceRole, attr, find_attribute, write_binding_request};

    const TX: [u8; 12] = [7; 12];

    fn check(user: &[u8], key: &[u8], use_candidate: bool) -> Vec<u8> {
        check_as(user, key, use_candidate, IceRole::Controlling(99))
    }

    fn check_as(user: &[u8], key: &[u8], use_candidate: bool, role: IceRole) -> Vec<u8> {
        let mut b = [0u8; 200];
        let n = write_binding_request(&mut b, &TX, user, 1, role, use_candidate, key).unwrap();
        b[..n].to_vec()
    }

    fn code(resp: &[u8]) -> Option<u16> {
        find_attribute(resp, attr::ERROR_CODE).map(|e| u16::from(e[2]) * 100 + u16::from(e[3]))
    }

    #[test]
    fn valid_check_is_answered_and_nominates() {
        let mut ice = IceLite::new("LOCL", "localpassword0123456789", Some("RMTE"));
        let now = Instant::now();
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let req = check(b"LOCL:RMTE", b"localpassword0123456789", false);
        let msg = Message::parse(&req).unwrap();
        let mut out = [0u8; 200];
        let (o, s) = ice.handle_check(&msg, src, now, &mut out);
        let CheckOutcome::Reply {
            len,
            nominated: false,
        } = o
        else {
            panic!("{o:?}")
        };
        assert_eq!(s, Selected::Unchanged, "no USE-CANDIDATE yet");
        let resp = Message::parse(&out[..len]).unwrap();
        assert_eq!(resp.class, Class::Success);
        assert_eq!(resp.transaction_id, TX);
        assert!(resp.verify_integrity(b"localpassword0123456789"));
        let xma = find_attribute(&out[..len], attr::XOR_MAPPED_ADDRESS).unwrap();
        assert_eq!(stun::decode_xor_mapped(xma, &TX), Some(src));

        let req = check(b"LOCL:RMTE", b"localpassword0123456789", true);
        let (_, s) = ice.handle_check(&Message::parse(&req).unwrap(), src, now, &mut out);
        assert_eq!(s, Selected::Now(src));
        assert_eq!(ice.selected(), Some(src));
        // Network change: a nominating check from a new address moves the transport.
        let moved: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let (_, s) = ice.handle_check(&Message::parse(&req).unwrap(), moved, now, &mut out);
        assert_eq!(s, Selected::Now(moved));
    }

    #[test]
    fn bad_checks_change_nothing() {
        let mut ice = IceLite::new("LOCL", "localpassword0123456789", Some("RMTE"));
        let now = Instant::now();
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut out = [0u8; 200];
        for (user, key, want) in [
            (&b"LOCL:RMTE"[..], &b"wrongpassword0123456789"[..], 401),
            (b"LOCL:OTHR", b"localpassword0123456789", 401),
            (b"NOPE:RMTE", b"localpassword0123456789", 401),
            (b"LOCLRMTE", b"localpassword0123456789", 400),
        ] {
            let req = check(user, key, true);
            let (o, s) = ice.handle_check(&Message::parse(&req).unwrap(), src, now, &mut out);
            let CheckOutcome::Reply { len, .. } = o else {
                panic!()
            };
            assert_eq!(
                code(&out[..len]),
                Some(want),
                "{:?}",
                std::str::from_utf8(user)
            );
            assert_eq!(s, Selected::Unchanged);
            assert!(
                !Message::parse(&out[..len]).unwrap().has_integrity(),
                "unauthenticated: unsigned"
            );
        }
        assert_eq!(ice.selected(), None);
        assert!(
            !ice.consent_expired(now + CONSENT_TIMEOUT * 2),
            "no selected pair, no consent"
        );
    }

    #[test]
    fn role_conflict_is_487() {
        let mut ice = IceLite::new("LOCL", "localpassword0123456789", None);
        let req = check_as(
            b"LOCL:ANY",
            b"localpassword0123456789",
            false,
            IceRole::Controlled(5),
        );
        let msg = Message::parse(&req).unwrap();
        assert!(msg.ice_controlled.is_some());
        let mut out = [0u8; 200];
        let (o, _) = ice.handle_check(
            &msg,
            "127.0.0.1:1".parse().unwrap(),
            Instant::now(),
            &mut out,
        );
        let CheckOutcome::Reply { len, .. } = o else {
            panic!()
        };
        assert_eq!(code(&out[..len]), Some(487));
        assert!(
            Message::parse(&out[..len])
                .unwrap()
                .verify_integrity(b"localpassword0123456789")
        );
    }

    #[test]
    fn consent_expires_after_30s_without_checks() {
        let mut ice = IceLite::new("LOCL", "localpassword0123456789", Some("RMTE"));
        let t0 = Instant::now();
        let req = check(b"LOCL:RMTE", b"localpassword0123456789", true);
        let mut out = [0u8; 200];
        ice.handle_check(
            &Message::parse(&req).unwrap(),
            "127.0.0.1:9".parse().unwrap(),
            t0,
            &mut out,
        );
        assert!(!ice.consent_expired(t0 + Duration::from_secs(29)));
        ice.handle_check(
            &Message::parse(&req).unwrap(),
            "127.0.0.1:9".parse().unwrap(),
            t0 + Duration::from_secs(20),
            &mut out,
        );
        assert!(!ice.consent_expired(t0 + Duration::from_secs(49)));
        assert!(ice.consent_expired(t0 + Duration::from_secs(50)));
    }
}
