//! SRTP and SRTCP (RFC 3711, RFC 7714): key derivation, AES_CM_128_HMAC_SHA1_80,
//! AEAD_AES_128_GCM and AEAD_AES_256_GCM, rollover counter estimation and replay windows.
//!
//! Sans-IO and in place: `unprotect_*` authenticates and decrypts inside the receive buffer,
//! `protect_*` encrypts inside the send buffer and appends the tag, and `protect_rtp_from`
//! encrypts a payload from where it lies (the received packet) straight into the send buffer.
//! No allocation per packet (per-SSRC state is allocated once, when an SSRC is first seen).

use aes::cipher::{BlockEncrypt, InnerIvInit, KeyInit, StreamCipher};
use aes::{Aes128, Aes128Enc, Aes256, Aes256Enc};
use hmac::{Hmac, Mac};
use sha1::Sha1;

mod gcm;
use gcm::{Gcm, GcmCipher};

/// AES-CM's keystream from `iv`, with the context's expanded key borrowed: no key schedule
/// per packet.
fn cm_ctr(cipher: &Aes128Enc, iv: [u8; 16]) -> ctr::Ctr128BE<&Aes128Enc> {
    let core =
        ctr::CtrCore::<&Aes128Enc, ctr::flavors::Ctr128BE>::inner_iv_init(cipher, &iv.into());
    ctr::Ctr128BE::from_core(core)
}

/// XORs AES-CM's keystream from `iv` into `data`.
fn cm_keystream(cipher: &Aes128Enc, iv: [u8; 16], data: &mut [u8]) {
    cm_ctr(cipher, iv).apply_keystream(data);
}
type HmacSha1 = Hmac<Sha1>;

pub use ringcast_types::SrtpProfile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("master key or salt has the wrong length for the profile")]
    BadKeyLength,
    #[error("packet too short")]
    TooShort,
    #[error("not an RTP/RTCP version 2 packet")]
    BadVersion,
    #[error("authentication failed")]
    AuthFailed,
    #[error("replayed packet")]
    Replayed,
    #[error("buffer lacks room for the tag")]
    NoRoom,
    #[error("too many SSRCs on one context")]
    TooManyStreams,
    #[error("no SRTP keys yet (DTLS has not completed)")]
    NoKeys,
}

/// Most SSRCs one context tracks (a bound an attacker can't push past).
pub const MAX_STREAMS: usize = 64;
/// Replay window in packets (RFC 3711 asks for at least 64).
pub const REPLAY_WINDOW: u64 = 128;

/// RFC 3711 §4.3.1 key derivation (kdr = 0): AES-CM of the master key over
/// (label << 48) XOR master salt, truncated to `out.len()`.
fn derive(master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label;
    out.fill(0);
    // Keystream = AES(key, iv), AES(key, iv+1), ...; a 256-bit master key uses AES-256.
    let a128 = Aes128::new_from_slice(master_key).ok();
    let a256 = Aes256::new_from_slice(master_key).ok();
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut ctr_iv = iv;
        let c = u16::from_be_bytes([ctr_iv[14], ctr_iv[15]]).wrapping_add(i as u16);
        ctr_iv[14..].copy_from_slice(&c.to_be_bytes());
        let mut b = aes::Block::from(ctr_iv);
        match (&a128, &a256) {
            (Some(a), _) => a.encrypt_block(&mut b),
            (_, Some(a)) => a.encrypt_block(&mut b),
            // Context::new checked the key length.
            _ => {}
        }
        let block: [u8; 16] = b.into();
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// Session keys for one direction of RTP or RTCP.
enum Keys {
    Cm {
        /// The session key, expanded once.
        cipher: Box<Aes128Enc>,
        salt: [u8; 14],
        /// Keyed once: each packet starts from a copy of this state.
        auth: HmacSha1,
    },
    Gcm128 {
        aead: Box<Gcm<Aes128Enc>>,
        salt: [u8; 12],
    },
    Gcm256 {
        aead: Box<Gcm<Aes256Enc>>,
        salt: [u8; 12],
    },
}

impl Keys {
    /// Derives keys with labels `base` (cipher), `base + 1` (auth), `base + 2` (salt).
    fn derive(profile: SrtpProfile, mk: &[u8], ms: &[u8], base: u8) -> Keys {
        match profile {
            SrtpProfile::Aes128CmHmacSha1_80 => {
                let mut key = [0u8; 16];
                let mut auth = [0u8; 20];
                let mut salt = [0u8; 14];
                derive(mk, ms, base, &mut key);
                derive(mk, ms, base + 1, &mut auth);
                derive(mk, ms, base + 2, &mut salt);
                Keys::cm(key, salt, &auth)
            }
            SrtpProfile::AeadAes128Gcm => {
                let mut key = [0u8; 16];
                let mut salt = [0u8; 12];
                derive(mk, ms, base, &mut key);
                derive(mk, ms, base + 2, &mut salt);
                Keys::gcm(&key, salt)
            }
            SrtpProfile::AeadAes256Gcm => {
                let mut key = [0u8; 32];
                let mut salt = [0u8; 12];
                derive(mk, ms, base, &mut key);
                derive(mk, ms, base + 2, &mut salt);
                Keys::gcm(&key, salt)
            }
        }
    }

    fn cm(key: [u8; 16], salt: [u8; 14], auth: &[u8]) -> Keys {
        Keys::Cm {
            cipher: Box::new(Aes128Enc::new(&key.into())),
            salt,
            // HMAC takes keys of any length.
            auth: <HmacSha1 as Mac>::new_from_slice(auth).unwrap_or_else(|_| unreachable_hmac()),
        }
    }

    fn gcm(key: &[u8], salt: [u8; 12]) -> Keys {
        match (Gcm::new(key), Gcm::new(key)) {
            (_, Some(aead)) => Keys::Gcm256 {
                aead: Box::new(aead),
                salt,
            },
            (Some(aead), _) => Keys::Gcm128 {
                aead: Box::new(aead),
                salt,
            },
            // Context::new checked the key length.
            _ => unreachable_key(),
        }
    }

    fn tag_len(&self) -> usize {
        match self {
            Keys::Cm { .. } => 10,
            _ => 16,
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> HmacSha1 {
    // `Hmac::new_from_slice` never fails; keep the type checker happy without `unwrap`.
    panic!("HMAC rejected a key")
}

#[allow(clippy::panic)]
fn unreachable_key() -> Keys {
    panic!("AES-GCM key length was checked by Context::new")
}

/// AES-CM IV (RFC 3711 §4.1.1): (salt << 16) XOR (ssrc << 64) XOR (index << 16).
fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (i, b) in ssrc.to_be_bytes().iter().enumerate() {
        iv[4 + i] ^= b;
    }
    let idx = index.to_be_bytes();
    for i in 0..6 {
        iv[8 + i] ^= idx[2 + i];
    }
    iv
}

/// GCM RTP IV (RFC 7714 §8.1): (00 00 || SSRC || ROC || SEQ) XOR salt.
fn gcm_rtp_iv(salt: &[u8; 12], ssrc: u32, index: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
    for (a, b) in iv.iter_mut().zip(salt) {
        *a ^= b;
    }
    iv
}

/// GCM RTCP IV (RFC 7714 §9.1): (00 00 || SSRC || 00 00 || 0 || index) XOR salt.
fn gcm_rtcp_iv(salt: &[u8; 12], ssrc: u32, index: u32) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..12].copy_from_slice(&index.to_be_bytes());
    for (a, b) in iv.iter_mut().zip(salt) {
        *a ^= b;
    }
    iv
}

/// Receive state of one SSRC: highest index seen and a replay bitmap below it.
#[derive(Debug, Clone, Copy, Default)]
struct Replay {
    started: bool,
    highest: u64,
    /// Bit i set: index `highest - i` was received.
    window: u128,
}

impl Replay {
    fn check(&self, index: u64) -> Result<(), SrtpError> {
        if !self.started || index > self.highest {
            return Ok(());
        }
        let delta = self.highest - index;
        if delta >= REPLAY_WINDOW || self.window & (1u128 << delta) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    fn accept(&mut self, index: u64) {
        if !self.started {
            *self = Replay {
                started: true,
                highest: index,
                window: 1,
            };
        } else if index > self.highest {
            let shift = index - self.highest;
            self.window = if shift >= 128 {
                0
            } else {
                self.window << shift
            } | 1;
            self.highest = index;
        } else {
            self.window |= 1u128 << (self.highest - index);
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    ssrc: u32,
    rtp: Replay,
    rtcp: Replay,
    /// Sender side: next SRTCP index; highest sent RTP index.
    tx_rtcp_index: u32,
    tx_rtp: Option<u64>,
}

/// One direction's SRTP/SRTCP state: either what we receive or what we send.
pub struct Context {
    profile: SrtpProfile,
    rtp: Keys,
    rtcp: Keys,
    streams: Vec<Stream>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("profile", &self.profile)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

/// RFC 3711 Appendix A: the index of `seq` given the highest index seen.
pub fn estimate_index(highest: u64, seq: u16) -> u64 {
    let roc = highest >> 16;
    let s_l = (highest & 0xFFFF) as u16;
    let v = if s_l < 32768 {
        if seq > s_l && seq - s_l > 32768 {
            // Before the first ROC there is nothing: stay at 0.
            roc.saturating_sub(1)
        } else {
            roc
        }
    } else if s_l - 32768 > seq {
        roc + 1
    } else {
        roc
    };
    (v << 16) | u64::from(seq)
}

/// Length of the RTP header (fixed part, CSRCs, extension).
pub fn rtp_header_len(b: &[u8]) -> Result<usize, SrtpError> {
    if b.len() < 12 {
        return Err(SrtpError::TooShort);
    }
    if b[0] >> 6 != 2 {
        return Err(SrtpError::BadVersion);
    }
    let mut len = 12 + 4 * usize::from(b[0] & 0x0F);
    if b[0] & 0x10 != 0 {
        if b.len() < len + 4 {
            return Err(SrtpError::TooShort);
        }
        len += 4 + 4 * usize::from(u16::from_be_bytes([b[len + 2], b[len + 3]]));
    }
    if b.len() < len {
        return Err(SrtpError::TooShort);
    }
    Ok(len)
}

impl Context {
    pub fn new(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<Self, SrtpError> {
        if master_key.len() != profile.master_key_len()
            || master_salt.len() != profile.master_salt_len()
        {
            return Err(SrtpError::BadKeyLength);
        }
        Ok(Context {
            profile,
            rtp: Keys::derive(profile, master_key, master_salt, 0),
            rtcp: Keys::derive(profile, master_key, master_salt, 3),
            streams: Vec::with_capacity(16),
        })
    }

    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    fn stream(&mut self, ssrc: u32) -> Result<&mut Stream, SrtpError> {
        if let Some(i) = self.streams.iter().position(|s| s.ssrc == ssrc) {
            return Ok(&mut self.streams[i]);
        }
        if self.streams.len() >= MAX_STREAMS {
            return Err(SrtpError::TooManyStreams);
        }
        self.streams.push(Stream {
            ssrc,
            ..Stream::default()
        });
        let last = self.streams.len() - 1;
        Ok(&mut self.streams[last])
    }

    /// Authenticates and decrypts an SRTP packet in place; returns the plaintext RTP length.
    /// A packet that fails changes no state.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let hdr = rtp_header_len(buf)?;
        let tag_len = self.rtp.tag_len();
        if buf.len() < hdr + tag_len {
            return Err(SrtpError::TooShort);
        }
        let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let stream = self.stream(ssrc)?;
        let index = if stream.rtp.started {
            estimate_index(stream.rtp.highest, seq)
        } else {
            u64::from(seq)
        };
        stream.rtp.check(index)?;
        let end = buf.len() - tag_len;
        match &self.rtp {
            Keys::Cm { cipher, salt, auth } => {
                let mut mac = auth.clone();
                mac.update(&buf[..end]);
                mac.update(&((index >> 16) as u32).to_be_bytes());
                let full = mac.finalize().into_bytes();
                if !bool::from(subtle::ConstantTimeEq::ct_eq(&full[..10], &buf[end..])) {
                    return Err(SrtpError::AuthFailed);
                }
                let iv = cm_iv(salt, ssrc, index);
                cm_keystream(cipher, iv, &mut buf[hdr..end]);
            }
            Keys::Gcm128 { aead, salt } => gcm_rtp_open(aead, salt, buf, hdr, end, ssrc, index)?,
            Keys::Gcm256 { aead, salt } => gcm_rtp_open(aead, salt, buf, hdr, end, ssrc, index)?,
        }
        // Authenticated: now the index may move the window.
        if let Some(s) = self.streams.iter_mut().find(|s| s.ssrc == ssrc) {
            s.rtp.accept(index);
        }
        Ok(end)
    }

    /// Encrypts the RTP packet in `buf[..len]` in place and appends the tag; returns the SRTP
    /// length. `buf` needs `profile().rtp_overhead()` spare bytes.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.protect_rtp_from(buf, len, &[])
    }

    /// Seals an RTP packet whose first `head` bytes (the header, and any plaintext before
    /// `payload`, such as an RTX packet's original sequence number) are in `buf`, and whose
    /// remaining payload is `payload`, wherever it lies: its ciphertext is written straight
    /// into `buf[head..]`, so a forwarded payload is read once and written once. Appends the
    /// tag; returns the SRTP length. `buf` needs `payload.len()` plus
    /// `profile().rtp_overhead()` bytes after `head`.
    pub fn protect_rtp_from(
        &mut self,
        buf: &mut [u8],
        head: usize,
        payload: &[u8],
    ) -> Result<usize, SrtpError> {
        let tag_len = self.rtp.tag_len();
        let len = head + payload.len();
        if head > buf.len() || buf.len() < len + tag_len {
            return Err(SrtpError::NoRoom);
        }
        let hdr = rtp_header_len(&buf[..head])?;
        let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let stream = self.stream(ssrc)?;
        let index = match stream.tx_rtp {
            Some(h) => estimate_index(h, seq),
            None => u64::from(seq),
        };
        stream.tx_rtp = Some(stream.tx_rtp.map_or(index, |h| h.max(index)));
        let tag = match &self.rtp {
            Keys::Cm { cipher, salt, auth } => {
                let mut ctr = cm_ctr(cipher, cm_iv(salt, ssrc, index));
                ctr.apply_keystream(&mut buf[hdr..head]);
                ctr.apply_keystream_b2b(payload, &mut buf[head..len])
                    .map_err(|_| SrtpError::NoRoom)?;
                let mut mac = auth.clone();
                mac.update(&buf[..len]);
                mac.update(&((index >> 16) as u32).to_be_bytes());
                let full = mac.finalize().into_bytes();
                let mut tag = [0u8; 16];
                tag[..10].copy_from_slice(&full[..10]);
                tag
            }
            Keys::Gcm128 { aead, salt } => {
                aead.seal_from(&gcm_rtp_iv(salt, ssrc, index), buf, hdr, head, payload)
            }
            Keys::Gcm256 { aead, salt } => {
                aead.seal_from(&gcm_rtp_iv(salt, ssrc, index), buf, hdr, head, payload)
            }
        };
        buf[len..len + tag_len].copy_from_slice(&tag[..tag_len]);
        Ok(len + tag_len)
    }

    /// Authenticates and decrypts an SRTCP packet in place; returns the plaintext RTCP length.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.rtcp.tag_len();
        if buf.len() < 8 + 4 + tag_len {
            return Err(SrtpError::TooShort);
        }
        if buf[0] >> 6 != 2 {
            return Err(SrtpError::BadVersion);
        }
        let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let n = buf.len();
        // AES-CM: ... || E|index || tag. GCM: ... || tag || E|index.
        let (e_at, tag_at) = match self.rtcp {
            Keys::Cm { .. } => (n - tag_len - 4, n - tag_len),
            _ => (n - 4, n - 4 - tag_len),
        };
        let e_index = u32::from_be_bytes([buf[e_at], buf[e_at + 1], buf[e_at + 2], buf[e_at + 3]]);
        let encrypted = e_index & 0x8000_0000 != 0;
        let index = e_index & 0x7FFF_FFFF;
        self.stream(ssrc)?.rtcp.check(u64::from(index))?;
        let plain_len = match &self.rtcp {
            Keys::Cm { cipher, salt, auth } => {
                let mut mac = auth.clone();
                mac.update(&buf[..tag_at]);
                let full = mac.finalize().into_bytes();
                if !bool::from(subtle::ConstantTimeEq::ct_eq(&full[..10], &buf[tag_at..])) {
                    return Err(SrtpError::AuthFailed);
                }
                if encrypted {
                    let iv = cm_iv(salt, ssrc, u64::from(index));
                    cm_keystream(cipher, iv, &mut buf[8..e_at]);
                }
                e_at
            }
            Keys::Gcm128 { aead, salt } => gcm_rtcp_open(aead, salt, buf, ssrc, e_index, tag_at)?,
            Keys::Gcm256 { aead, salt } => gcm_rtcp_open(aead, salt, buf, ssrc, e_index, tag_at)?,
        };
        if let Some(s) = self.streams.iter_mut().find(|s| s.ssrc == ssrc) {
            s.rtcp.accept(u64::from(index));
        }
        Ok(plain_len)
    }

    /// Encrypts the RTCP packet in `buf[..len]` in place and appends tag and index.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let overhead = self.profile.rtcp_overhead();
        if len < 8 || buf.len() < len + overhead {
            return Err(SrtpError::NoRoom);
        }
        let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let stream = self.stream(ssrc)?;
        let index = stream.tx_rtcp_index & 0x7FFF_FFFF;
        stream.tx_rtcp_index = (index + 1) & 0x7FFF_FFFF;
        let e_index = 0x8000_0000 | index;
        match &self.rtcp {
            Keys::Cm { cipher, salt, auth } => {
                let iv = cm_iv(salt, ssrc, u64::from(index));
                cm_keystream(cipher, iv, &mut buf[8..len]);
                buf[len..len + 4].copy_from_slice(&e_index.to_be_bytes());
                let mut mac = auth.clone();
                mac.update(&buf[..len + 4]);
                let full = mac.finalize().into_bytes();
                buf[len + 4..len + 14].copy_from_slice(&full[..10]);
            }
            Keys::Gcm128 { aead, salt } => gcm_rtcp_seal(aead, salt, buf, len, ssrc, e_index),
            Keys::Gcm256 { aead, salt } => gcm_rtcp_seal(aead, salt, buf, len, ssrc, e_index),
        }
        Ok(len + overhead)
    }
}

fn gcm_rtp_open<A: GcmCipher>(
    aead: &Gcm<A>,
    salt: &[u8; 12],
    buf: &mut [u8],
    hdr: usize,
    end: usize,
    ssrc: u32,
    index: u64,
) -> Result<(), SrtpError> {
    let iv = gcm_rtp_iv(salt, ssrc, index);
    let (head, rest) = buf.split_at_mut(hdr);
    let (payload, tag) = rest.split_at_mut(end - hdr);
    aead.open_in_place(&iv, head, payload, tag)
        .map_err(|_| SrtpError::AuthFailed)
}

fn gcm_aad(buf: &[u8], e_index: u32) -> [u8; 12] {
    let mut aad = [0u8; 12];
    aad[..8].copy_from_slice(&buf[..8]);
    aad[8..].copy_from_slice(&e_index.to_be_bytes());
    aad
}

fn gcm_rtcp_open<A: GcmCipher>(
    aead: &Gcm<A>,
    salt: &[u8; 12],
    buf: &mut [u8],
    ssrc: u32,
    e_index: u32,
    tag_at: usize,
) -> Result<usize, SrtpError> {
    let iv = gcm_rtcp_iv(salt, ssrc, e_index & 0x7FFF_FFFF);
    let aad = gcm_aad(buf, e_index);
    let (body, tail) = buf.split_at_mut(tag_at);
    let tag = &tail[..16];
    if e_index & 0x8000_0000 == 0 {
        // Unencrypted SRTCP: the whole packet is authenticated data.
        let mut aad_full = [0u8; 1500];
        if body.len() + 4 > aad_full.len() {
            return Err(SrtpError::TooShort);
        }
        aad_full[..body.len()].copy_from_slice(body);
        aad_full[body.len()..body.len() + 4].copy_from_slice(&e_index.to_be_bytes());
        aead.open_in_place(&iv, &aad_full[..body.len() + 4], &mut [], tag)
            .map_err(|_| SrtpError::AuthFailed)?;
        return Ok(tag_at);
    }
    aead.open_in_place(&iv, &aad, &mut body[8..], tag)
        .map_err(|_| SrtpError::AuthFailed)?;
    Ok(tag_at)
}

fn gcm_rtcp_seal<A: GcmCipher>(
    aead: &Gcm<A>,
    salt: &[u8; 12],
    buf: &mut [u8],
    len: usize,
    ssrc: u32,
    e_index: u32,
) {
    let iv = gcm_rtcp_iv(salt, ssrc, e_index & 0x7FFF_FFFF);
    let aad = gcm_aad(buf, e_index);
    let tag = aead.seal_in_place(&iv, &aad, &mut buf[8..len]);
    buf[len..len + 16].copy_from_slice(&tag);
    buf[len + 16..len + 20].copy_from_slice(&e_index.to_be_bytes());
}

/// Test access to the session-key layer (RFC vectors give session keys directly).
#[cfg(test)]
impl Context {
    fn from_session_keys(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> Self {
        let make = || match profile {
            SrtpProfile::Aes128CmHmacSha1_80 => unreachable!("CM vectors go through the KDF"),
            _ => {
                let mut s = [0u8; 12];
                s.copy_from_slice(salt);
                Keys::gcm(key, s)
            }
        };
        Context {
            profile,
            rtp: make(),
            rtcp: make(),
            streams: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
