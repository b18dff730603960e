//! What a DTLS association needs once its handshake is over and SRTP runs outside it: the
//! peer's record key, to tell an authentic alert (close_notify, a fatal alert) from a forged
//! one, and nothing else. OpenSSL keeps about 60 KiB per association (its record and
//! handshake buffers, the peer certificate, the last flight for retransmission); this keeps
//! 60 bytes, so an idle subscriber transport costs what its SRTP contexts cost.
//!
//! The key comes from the session's master secret through the TLS 1.2 key expansion
//! (RFC 5246 §6.3), for the AES-GCM suites (RFC 5288) Ringcast offers; other suites keep
//! OpenSSL's state.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit, Nonce, Tag};
use hmac::{Hmac, Mac};
use openssl::ssl::SslRef;
use sha2::{Sha256, Sha384};

/// DTLS record header: type, version, epoch, sequence number, length.
const HEADER: usize = 13;
const CONTENT_ALERT: u8 = 21;
/// GCM's explicit nonce in each record, and its tag.
const EXPLICIT_NONCE: usize = 8;
const TAG: usize = 16;

/// An alert the peer sent after the handshake, authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alert {
    CloseNotify,
    Fatal(u8),
    Warning(u8),
}

/// The peer's write key and implicit nonce for the epoch the handshake ended in.
pub(super) struct PeerRecordKey {
    key: [u8; 32],
    key_len: usize,
    salt: [u8; 4],
    epoch: u16,
}

impl PeerRecordKey {
    /// The peer's key of a completed handshake, or None for a suite this does not verify.
    pub(super) fn derive(ssl: &SslRef, epoch: u16) -> Option<Self> {
        let name = ssl.current_cipher()?.name();
        let (key_len, sha384) = if name.ends_with("AES128-GCM-SHA256") {
            (16, false)
        } else if name.ends_with("AES256-GCM-SHA384") {
            (32, true)
        } else {
            return None;
        };
        let mut master = [0u8; 48];
        let n = ssl.session()?.master_key(&mut master);
        let (mut client, mut server) = ([0u8; 32], [0u8; 32]);
        if n != master.len()
            || ssl.client_random(&mut client) != 32
            || ssl.server_random(&mut server) != 32
        {
            return None;
        }
        let mut seed = [0u8; 64];
        seed[..32].copy_from_slice(&server);
        seed[32..].copy_from_slice(&client);
        // client_write_key, server_write_key, client_write_IV, server_write_IV (no MAC keys
        // for AEAD suites).
        let mut block = [0u8; 2 * 32 + 2 * 4];
        let block = &mut block[..2 * key_len + 8];
        if sha384 {
            prf::<Hmac<Sha384>>(&master, b"key expansion", &seed, block);
        } else {
            prf::<Hmac<Sha256>>(&master, b"key expansion", &seed, block);
        }
        let (k, iv) = if ssl.is_server() {
            (0, 2 * key_len)
        } else {
            (key_len, 2 * key_len + 4)
        };
        let mut key = [0u8; 32];
        key[..key_len].copy_from_slice(&block[k..k + key_len]);
        let mut salt = [0u8; 4];
        salt.copy_from_slice(&block[iv..iv + 4]);
        block.fill(0);
        master.fill(0);
        Some(PeerRecordKey {
            key,
            key_len,
            salt,
            epoch,
        })
    }

    pub(super) fn set_epoch(&mut self, epoch: u16) {
        self.epoch = epoch;
    }

    /// The first authentic alert among the datagram's records. Anything else (a forged or
    /// replayed-from-elsewhere record, a late handshake record, application data, which
    /// WebRTC without data channels never sends) is ignored, as OpenSSL would ignore it.
    pub(super) fn open(&self, datagram: &[u8]) -> Option<Alert> {
        let mut rest = datagram;
        while rest.len() >= HEADER {
            let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
            let Some(record) = rest.get(..HEADER + len) else {
                break;
            };
            rest = &rest[HEADER + len..];
            let epoch = u16::from_be_bytes([record[3], record[4]]);
            // An alert is two bytes of plaintext.
            if record[0] != CONTENT_ALERT || epoch != self.epoch || len != EXPLICIT_NONCE + 2 + TAG
            {
                continue;
            }
            let body = &record[HEADER..];
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(&self.salt);
            nonce[4..].copy_from_slice(&body[..EXPLICIT_NONCE]);
            // RFC 5246 §6.2.3.3: epoch and sequence number, type, version, plaintext length.
            let mut aad = [0u8; 13];
            aad[..8].copy_from_slice(&record[3..11]);
            aad[8] = record[0];
            aad[9..11].copy_from_slice(&record[1..3]);
            aad[11..].copy_from_slice(&2u16.to_be_bytes());
            let mut alert = [body[EXPLICIT_NONCE], body[EXPLICIT_NONCE + 1]];
            let mut t = [0u8; TAG];
            t.copy_from_slice(&body[EXPLICIT_NONCE + 2..]);
            let (tag, nonce) = (&Tag::from(t), &Nonce::from(nonce));
            let key = &self.key[..self.key_len];
            let ok = if self.key_len == 16 {
                Aes128Gcm::new_from_slice(key).is_ok_and(|c| {
                    c.decrypt_in_place_detached(nonce, &aad, &mut alert, tag)
                        .is_ok()
                })
            } else {
                Aes256Gcm::new_from_slice(key).is_ok_and(|c| {
                    c.decrypt_in_place_detached(nonce, &aad, &mut alert, tag)
                        .is_ok()
                })
            };
            if ok {
                return Some(match alert {
                    [_, 0] => Alert::CloseNotify,
                    [2, d] => Alert::Fatal(d),
                    [_, d] => Alert::Warning(d),
                });
            }
        }
        None
    }
}

impl Drop for PeerRecordKey {
    fn drop(&mut self) {
        self.key.fill(0);
    }
}

/// The TLS 1.2 PRF, P_hash (RFC 5246 §5): HMAC(secret, A(i) + label + seed), A(i) =
/// HMAC(secret, A(i-1)), A(0) = label + seed.
fn prf<M: Mac + KeyInit + Clone>(secret: &[u8], label: &[u8], seed: &[u8], out: &mut [u8]) {
    let Ok(mac) = <M as Mac>::new_from_slice(secret) else {
        return;
    };
    let mut a = mac
        .clone()
        .chain_update(label)
        .chain_update(seed)
        .finalize()
        .into_bytes();
    let mut filled = 0;
    while filled < out.len() {
        let chunk = mac
            .clone()
            .chain_update(&a)
            .chain_update(label)
            .chain_update(seed)
            .finalize()
            .into_bytes();
        let n = chunk.len().min(out.len() - filled);
        out[filled..filled + n].copy_from_slice(&chunk[..n]);
        filled += n;
        a = mac.clone().chain_update(&a).finalize().into_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TLS 1.2 PRF (SHA-256) test vector circulated on the IETF TLS list.
    #[test]
    fn prf_sha256_matches_the_published_vector() {
        let secret = hex("9bbe436ba940f017b17652849a71db35");
        let seed = hex("a0ba9f936cda311827a6f796ffd5198c");
        let want = hex(concat!(
            "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a",
            "6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab",
            "4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701",
            "87347b66"
        ));
        let mut out = vec![0u8; want.len()];
        prf::<Hmac<Sha256>>(&secret, b"test label", &seed, &mut out);
        assert_eq!(out, want);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
