//! STUN (RFC 8489) as ICE connectivity checks use it: a zero-copy parser for Binding requests
//! and writers for Binding success and error responses. No IO, no allocation, no clock.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha1::Sha1;

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
const HEADER: usize = 20;
const FINGERPRINT_XOR: u32 = 0x5354_554E;

pub const BINDING: u16 = 0x0001;

pub mod attr {
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;
}

/// The four STUN classes (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// Why a datagram is not a usable STUN message. Each is a counted drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("shorter than a STUN header")]
    TooShort,
    #[error("not STUN (top bits or magic cookie)")]
    NotStun,
    #[error("length field disagrees with the datagram")]
    BadLength,
    #[error("attribute runs past the end")]
    TruncatedAttribute,
    #[error("FINGERPRINT does not match")]
    BadFingerprint,
    #[error("attribute after FINGERPRINT")]
    AfterFingerprint,
    #[error("malformed attribute value")]
    BadAttribute,
}

/// Most unknown comprehension-required attributes remembered for a 420 response.
pub const MAX_UNKNOWN: usize = 4;

/// A parsed message, borrowing the datagram.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    raw: &'a [u8],
    pub class: Class,
    pub method: u16,
    pub transaction_id: [u8; 12],
    pub username: Option<&'a [u8]>,
    /// Offset of the MESSAGE-INTEGRITY attribute header.
    integrity_at: Option<usize>,
    pub fingerprint: bool,
    pub priority: Option<u32>,
    pub use_candidate: bool,
    pub ice_controlling: Option<u64>,
    pub ice_controlled: Option<u64>,
    unknown: [u16; MAX_UNKNOWN],
    unknown_len: usize,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// True if `b` looks like STUN (RFC 7983: first byte 0..=3) with the magic cookie.
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= HEADER && b[0] < 4 && be32(b, 4) == MAGIC_COOKIE
}

impl<'a> Message<'a> {
    pub fn parse(raw: &'a [u8]) -> Result<Self, StunError> {
        if raw.len() < HEADER {
            return Err(StunError::TooShort);
        }
        let ty = be16(raw, 0);
        if ty & 0xC000 != 0 || be32(raw, 4) != MAGIC_COOKIE {
            return Err(StunError::NotStun);
        }
        let len = usize::from(be16(raw, 2));
        if len % 4 != 0 || HEADER + len != raw.len() {
            return Err(StunError::BadLength);
        }
        let class = match ((ty >> 7) & 0x2) | ((ty >> 4) & 0x1) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        };
        let method = (ty & 0x000F) | ((ty >> 1) & 0x0070) | ((ty >> 2) & 0x0F80);
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&raw[8..20]);
        let mut m = Message {
            raw,
            class,
            method,
            transaction_id,
            username: None,
            integrity_at: None,
            fingerprint: false,
            priority: None,
            use_candidate: false,
            ice_controlling: None,
            ice_controlled: None,
            unknown: [0; MAX_UNKNOWN],
            unknown_len: 0,
        };
        let mut at = HEADER;
        while at < raw.len() {
            if at + 4 > raw.len() {
                return Err(StunError::TruncatedAttribute);
            }
            if m.fingerprint {
                return Err(StunError::AfterFingerprint);
            }
            let t = be16(raw, at);
            let l = usize::from(be16(raw, at + 2));
            let v = at + 4;
            let end = v + l;
            if end > raw.len() {
                return Err(StunError::TruncatedAttribute);
            }
            let value = &raw[v..end];
            let after_integrity = m.integrity_at.is_some();
            match t {
                attr::FINGERPRINT => {
                    if l != 4 {
                        return Err(StunError::BadAttribute);
                    }
                    let crc = crc32fast::hash(&raw[..at]) ^ FINGERPRINT_XOR;
                    if crc != be32(value, 0) {
                        return Err(StunError::BadFingerprint);
                    }
                    m.fingerprint = true;
                }
                // RFC 8489 §14.5: everything after MESSAGE-INTEGRITY but FINGERPRINT is ignored.
                _ if after_integrity => {}
                attr::MESSAGE_INTEGRITY => {
                    if l != 20 {
                        return Err(StunError::BadAttribute);
                    }
                    m.integrity_at = Some(at);
                }
                attr::USERNAME => {
                    if l > 513 {
                        return Err(StunError::BadAttribute);
                    }
                    m.username = Some(value);
                }
                attr::PRIORITY => {
                    if l != 4 {
                        return Err(StunError::BadAttribute);
                    }
                    m.priority = Some(be32(value, 0));
                }
                attr::USE_CANDIDATE => m.use_candidate = true,
                attr::ICE_CONTROLLING | attr::ICE_CONTROLLED => {
                    if l != 8 {
                        return Err(StunError::BadAttribute);
                    }
                    let tb = u64::from_be_bytes([
                        value[0], value[1], value[2], value[3], value[4], value[5], value[6],
                        value[7],
                    ]);
                    if t == attr::ICE_CONTROLLING {
                        m.ice_controlling = Some(tb);
                    } else {
                        m.ice_controlled = Some(tb);
                    }
                }
                attr::MESSAGE_INTEGRITY_SHA256 | attr::XOR_MAPPED_ADDRESS | attr::ERROR_CODE => {}
                // Comprehension-required and unknown: a request gets 420 listing it.
                t if t < 0x8000 && m.unknown_len < MAX_UNKNOWN => {
                    m.unknown[m.unknown_len] = t;
                    m.unknown_len += 1;
                }
                _ => {}
            }
            at = end + (4 - l % 4) % 4;
        }
        if at != raw.len() {
            return Err(StunError::TruncatedAttribute);
        }
        Ok(m)
    }

    /// Unknown comprehension-required attributes (RFC 8489 §6.3.1: answer with 420).
    pub fn unknown_required(&self) -> &[u16] {
        &self.unknown[..self.unknown_len]
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1, short-term credential: the key is the password).
    /// Constant-time comparison.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
            return false;
        };
        // The length field counts up to and including MESSAGE-INTEGRITY.
        let len = (at + 24 - HEADER) as u16;
        mac.update(&self.raw[..2]);
        mac.update(&len.to_be_bytes());
        mac.update(&self.raw[4..at]);
        mac.verify_slice(&self.raw[at + 4..at + 24]).is_ok()
    }

    /// The local and remote ufrags of an ICE check's `USERNAME` (`local:remote` from our view).
    pub fn ice_username(&self) -> Option<(&'a [u8], &'a [u8])> {
        let u = self.username?;
        let i = u.iter().position(|&b| b == b':')?;
        Some((&u[..i], &u[i + 1..]))
    }
}

/// Builds STUN messages into a caller's buffer.
struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

/// The buffer was too small for the response. Callers pass at least `MAX_RESPONSE` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("buffer too small for the STUN response")]
pub struct BufferTooSmall;

/// Largest response this module writes.
pub const MAX_RESPONSE: usize = 160;

impl<'b> Writer<'b> {
    fn new(buf: &'b mut [u8], ty: u16, txid: &[u8; 12]) -> Result<Self, BufferTooSmall> {
        if buf.len() < MAX_RESPONSE {
            return Err(BufferTooSmall);
        }
        buf[0..2].copy_from_slice(&ty.to_be_bytes());
        buf[2..4].copy_from_slice(&0u16.to_be_bytes());
        buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf[8..20].copy_from_slice(txid);
        Ok(Writer { buf, len: HEADER })
    }

    fn attr(&mut self, t: u16, value: &[u8]) {
        let at = self.len;
        self.buf[at..at + 2].copy_from_slice(&t.to_be_bytes());
        self.buf[at + 2..at + 4].copy_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf[at + 4..at + 4 + value.len()].copy_from_slice(value);
        let padded = value.len().div_ceil(4) * 4;
        self.buf[at + 4 + value.len()..at + 4 + padded].fill(0);
        self.len = at + 4 + padded;
    }

    fn set_length(&mut self, body: usize) {
        self.buf[2..4].copy_from_slice(&(body as u16).to_be_bytes());
    }

    fn xor_mapped_address(&mut self, addr: SocketAddr) {
        let mut v = [0u8; 20];
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        let n = match addr {
            SocketAddr::V4(a) => {
                v[1] = 0x01;
                v[2..4].copy_from_slice(&port.to_be_bytes());
                let ip = u32::from(*a.ip()) ^ MAGIC_COOKIE;
                v[4..8].copy_from_slice(&ip.to_be_bytes());
                8
            }
            SocketAddr::V6(a) => {
                v[1] = 0x02;
                v[2..4].copy_from_slice(&port.to_be_bytes());
                let mut key = [0u8; 16];
                key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                key[4..].copy_from_slice(&self.buf[8..20]);
                for (i, b) in a.ip().octets().iter().enumerate() {
                    v[4 + i] = b ^ key[i];
                }
                20
            }
        };
        self.attr(attr::XOR_MAPPED_ADDRESS, &v[..n]);
    }

    fn integrity(&mut self, key: &[u8]) {
        self.set_length(self.len + 24 - HEADER);
        let tag = match Hmac::<Sha1>::new_from_slice(key) {
            Ok(mut mac) => {
                mac.update(&self.buf[..self.len]);
                mac.finalize().into_bytes()
            }
            // HMAC accepts any key length; unreachable, but never panic on the hot path.
            Err(_) => Default::default(),
        };
        self.attr(attr::MESSAGE_INTEGRITY, &tag);
    }

    fn finish_with_fingerprint(mut self) -> usize {
        self.set_length(self.len + 8 - HEADER);
        let crc = crc32fast::hash(&self.buf[..self.len]) ^ FINGERPRINT_XOR;
        self.attr(attr::FINGERPRINT, &crc.to_be_bytes());
        self.len
    }
}

/// Writes a Binding success response: XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT.
pub fn write_binding_success(
    out: &mut [u8],
    txid: &[u8; 12],
    mapped: SocketAddr,
    key: &[u8],
) -> Result<usize, BufferTooSmall> {
    let mut w = Writer::new(out, 0x0101, txid)?;
    w.xor_mapped_address(mapped);
    w.integrity(key);
    Ok(w.finish_with_fingerprint())
}

/// Writes a Binding error response. It is signed when `key` is known (RFC 8489 §9.1.3: not for
/// 400 and 401, where the request couldn't be authenticated).
pub fn write_binding_error(
    out: &mut [u8],
    txid: &[u8; 12],
    code: u16,
    unknown: &[u16],
    key: Option<&[u8]>,
) -> Result<usize, BufferTooSmall> {
    let mut w = Writer::new(out, 0x0111, txid)?;
    let reason: &[u8] = match code {
        400 => b"Bad Request",
        401 => b"Unauthorized",
        420 => b"Unknown Attribute",
        487 => b"Role Conflict",
        _ => b"Error",
    };
    let mut v = [0u8; 4 + 20];
    v[2] = (code / 100) as u8;
    v[3] = (code % 100) as u8;
    v[4..4 + reason.len()].copy_from_slice(reason);
    w.attr(attr::ERROR_CODE, &v[..4 + reason.len()]);
    if !unknown.is_empty() {
        let mut u = [0u8; 2 * MAX_UNKNOWN];
        for (i, t) in unknown.iter().take(MAX_UNKNOWN).enumerate() {
            u[2 * i..2 * i + 2].copy_from_slice(&t.to_be_bytes());
        }
        w.attr(
            attr::UNKNOWN_ATTRIBUTES,
            &u[..2 * unknown.len().min(MAX_UNKNOWN)],
        );
    }
    if let Some(k) = key {
        w.integrity(k);
    }
    Ok(w.finish_with_fingerprint())
}

/// The ICE role attribute a check carries, with its tie-breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceRole {
    Controlling(u64),
    Controlled(u64),
}

/// Writes a Binding request (ICE check) — used by tests and the load-test client.
pub fn write_binding_request(
    out: &mut [u8],
    txid: &[u8; 12],
    username: &[u8],
    priority: u32,
    role: IceRole,
    use_candidate: bool,
    key: &[u8],
) -> Result<usize, BufferTooSmall> {
    if username.len() > 64 {
        return Err(BufferTooSmall);
    }
    let mut w = Writer::new(out, 0x0001, txid)?;
    w.attr(attr::USERNAME, username);
    w.attr(attr::PRIORITY, &priority.to_be_bytes());
    match role {
        IceRole::Controlling(tb) => w.attr(attr::ICE_CONTROLLING, &tb.to_be_bytes()),
        IceRole::Controlled(tb) => w.attr(attr::ICE_CONTROLLED, &tb.to_be_bytes()),
    }
    if use_candidate {
        w.attr(attr::USE_CANDIDATE, &[]);
    }
    w.integrity(key);
    Ok(w.finish_with_fingerprint())
}

/// The address in a XOR-MAPPED-ADDRESS value (for tests and clients).
pub fn decode_xor_mapped(value: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    if value.len() < 8 {
        return None;
    }
    let port = be16(value, 2) ^ (MAGIC_COOKIE >> 16) as u16;
    match value[1] {
        0x01 => {
            let ip = std::net::Ipv4Addr::from(be32(value, 4) ^ MAGIC_COOKIE);
            Some(SocketAddr::from((ip, port)))
        }
        0x02 if value.len() >= 20 => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(txid);
            let mut o = [0u8; 16];
            for i in 0..16 {
                o[i] = value[4 + i] ^ key[i];
            }
            Some(SocketAddr::from((std::net::Ipv6Addr::from(o), port)))
        }
        _ => None,
    }
}

/// Finds an attribute's value in a raw message (tests and clients; not the hot path).
pub fn find_attribute(raw: &[u8], t: u16) -> Option<&[u8]> {
    let mut at = HEADER;
    while at + 4 <= raw.len() {
        let ty = be16(raw, at);
        let l = usize::from(be16(raw, at + 2));
        let v = raw.get(at + 4..at + 4 + l)?;
        if ty == t {
            return Some(v);
        }
        at += 4 + l.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests;
