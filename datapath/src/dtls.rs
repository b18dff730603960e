//! DTLS-SRTP (RFC 5764) over OpenSSL with an in-memory transport: records go in as datagrams,
//! records come out as datagrams; the shard owns the socket and the timer.
//!
//! OpenSSL reassembles fragmented handshake messages (Chromium's ~1.4 KB post-quantum
//! ClientHello arrives in two datagrams) and keeps its own retransmission timer, which the
//! shard drives through `timeout` / `handle_timeout`. Once the peer shows it has finished the
//! handshake, `settle` frees OpenSSL's connection and keeps what the rest of the association
//! needs (see `settled`).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Duration;

use foreign_types::ForeignTypeRef;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslStream, SslVerifyMode,
    SslVersion,
};
use openssl::x509::X509;

use crate::srtp::SrtpProfile;

/// `SSL_CTX_set_max_send_fragment` (a macro over SSL_CTX_ctrl in ssl.h).
const SSL_CTRL_SET_MAX_SEND_FRAGMENT: std::ffi::c_int = 52;

/// Largest DTLS datagram we write; below any path MTU WebRTC meets.
pub const DTLS_MTU: u32 = 1200;
/// Datagrams buffered per direction before the oldest are dropped (a bound per transport).
const MAX_QUEUED: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum DtlsError {
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("the peer certificate does not match the SDP fingerprint")]
    FingerprintMismatch,
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    #[error("no SRTP profile was negotiated (use_srtp)")]
    NoSrtpProfile,
    #[error("the negotiated SRTP profile is not one Ringcast speaks")]
    UnknownSrtpProfile,
}

pub use ringcast_types::{DtlsRole, Fingerprint};

/// Keys exported after the handshake, per direction.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub profile: SrtpProfile,
    /// What we encrypt with.
    pub local_key: Vec<u8>,
    pub local_salt: Vec<u8>,
    /// What the peer encrypts with (we decrypt).
    pub remote_key: Vec<u8>,
    pub remote_salt: Vec<u8>,
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// A throwaway ECDSA P-256 self-signed certificate valid for a day, and its key: for DTLS
/// clients (tests, the load generator). The server's identity comes from the control plane.
pub fn self_signed() -> Result<(X509, PKey<Private>), DtlsError> {
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut b = X509::builder()?;
    let mut name = openssl::x509::X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, "ringcast-client")?;
    let name = name.build();
    b.set_version(2)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    let not_before = Asn1Time::days_from_now(0)?;
    let not_after = Asn1Time::days_from_now(1)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok((b.build(), key))
}

/// The SHA-256 fingerprint of `cert`, as SDP carries it.
pub fn fingerprint_sha256(cert: &X509) -> Result<Fingerprint, DtlsError> {
    Ok(Fingerprint {
        algorithm: "sha-256".to_owned(),
        bytes: cert.digest(MessageDigest::sha256())?.to_vec(),
    })
}

/// One SSL context per shard: the node's certificate, DTLS 1.2, use_srtp.
pub fn context(
    cert: &X509,
    key: &PKey<Private>,
    profiles: &[SrtpProfile],
) -> Result<SslContext, DtlsError> {
    Ok(context_builder(cert, key, profiles)?.build())
}

fn context_builder(
    cert: &X509,
    key: &PKey<Private>,
    profiles: &[SrtpProfile],
) -> Result<SslContextBuilder, DtlsError> {
    let mut b = SslContextBuilder::new(SslMethod::dtls())?;
    b.set_certificate(cert)?;
    b.set_private_key(key)?;
    b.check_private_key()?;
    // OpenSSL 3.0 speaks DTLS up to 1.2; Chromium and Firefox offer 1.3 and 1.2 and settle on 1.2.
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_options(SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET);
    // A connection is idle after its handshake (SRTP runs outside it), yet it keeps its record
    // buffers. The write buffer is sized by the largest record we may send: ours never exceed
    // the MTU, so 1,200 bytes instead of 16 KiB (about 15 KiB less per transport). (Freeing
    // the buffers is no option: SSL_MODE_RELEASE_BUFFERS leaves DTLS's alone in OpenSSL 3.0,
    // and after SSL_free_buffers its DTLS alert path writes through a null buffer.)
    // SAFETY: a valid context being built; the control code takes a plain integer.
    unsafe {
        openssl_sys::SSL_CTX_ctrl(
            b.as_ptr(),
            SSL_CTRL_SET_MAX_SEND_FRAGMENT,
            DTLS_MTU as std::ffi::c_long,
            std::ptr::null_mut(),
        );
    }
    // WebRTC peers use self-signed certificates: trust comes from the SDP fingerprint, which is
    // checked when the handshake completes.
    b.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        |_, _| true,
    );
    let names: Vec<&str> = profiles.iter().map(|p| p.openssl_name()).collect();
    b.set_tlsext_use_srtp(&names.join(":"))?;
    // AEAD suites only; after the handshake `Dtls::settle` authenticates alerts itself for the
    // AES-GCM ones.
    b.set_cipher_list("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384")?;
    Ok(b)
}

/// Datagrams in and out of OpenSSL.
#[derive(Debug, Default)]
struct MemIo {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl Read for MemIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.incoming.pop_front() {
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for MemIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.outgoing.len() >= MAX_QUEUED {
            self.outgoing.pop_front();
        }
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a DTLS transport reports.
#[derive(Debug, PartialEq, Eq)]
pub enum DtlsEvent {
    Connected(SrtpKeys),
    /// The peer ended the association cleanly (close_notify).
    PeerClosed,
    /// The handshake or the association failed.
    Closed(String),
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Handshaking,
    Connected,
    Closed,
}

/// One DTLS association.
pub struct Dtls {
    inner: Inner,
    fingerprints: Vec<Fingerprint>,
    state: State,
    /// `settle` ran (whether or not it could free OpenSSL's state): it is tried once.
    settle_tried: bool,
}

enum Inner {
    /// OpenSSL's association: the handshake, and what follows until the peer shows it has
    /// completed it too.
    Live(SslStream<MemIo>),
    /// After `settle`: the peer's record key (to authenticate its alerts) and our own
    /// close_notify, written by OpenSSL before it was freed and sent when we close.
    Settled {
        peer: PeerRecordKey,
        close_notify: Vec<u8>,
        outgoing: Option<Vec<u8>>,
    },
}

impl std::fmt::Debug for Dtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dtls")
            .field("state", &self.state)
            .field("settled", &self.is_settled())
            .finish_non_exhaustive()
    }
}

impl Dtls {
    pub fn new(
        ctx: &SslContext,
        role: DtlsRole,
        fingerprints: Vec<Fingerprint>,
    ) -> Result<Self, DtlsError> {
        let mut ssl = Ssl::new(ctx)?;
        ssl.set_mtu(DTLS_MTU)?;
        match role {
            DtlsRole::Server => ssl.set_accept_state(),
            DtlsRole::Client => ssl.set_connect_state(),
        }
        let stream = SslStream::new(ssl, MemIo::default())?;
        let mut d = Dtls {
            inner: Inner::Live(stream),
            fingerprints,
            state: State::Handshaking,
            settle_tried: false,
        };
        if role == DtlsRole::Client {
            // Produces the ClientHello.
            let _ = d.drive();
        }
        Ok(d)
    }

    /// OpenSSL's state has been freed (see `settle`).
    pub fn is_settled(&self) -> bool {
        matches!(self.inner, Inner::Settled { .. })
    }

    /// Frees OpenSSL's state of a connected association, keeping only what authenticates the
    /// peer's alerts and our close_notify: about 60 KiB less per transport. Call it once the
    /// peer has shown it completed the handshake (an authenticated SRTP or SRTCP packet: it
    /// has the exported keys, so it has our last flight and will not retransmit its own).
    /// Safe because WebRTC without data channels sends nothing else over DTLS. Tried once;
    /// a suite whose records this cannot authenticate keeps OpenSSL's state.
    pub fn settle(&mut self) {
        if self.settle_tried || self.state != State::Connected {
            return;
        }
        self.settle_tried = true;
        let Inner::Live(stream) = &mut self.inner else {
            return;
        };
        if !stream.get_ref().outgoing.is_empty() {
            self.settle_tried = false; // unsent records: not yet
            return;
        }
        // The epoch the handshake ended in: 1 (no renegotiation in DTLS-SRTP); checked against
        // our close_notify's below.
        let Some(mut peer) = PeerRecordKey::derive(stream.ssl(), 1) else {
            return;
        };
        let _ = stream.shutdown();
        let close_notify = stream.get_mut().outgoing.pop_front().unwrap_or_default();
        if let Some(h) = close_notify.get(3..5) {
            peer.set_epoch(u16::from_be_bytes([h[0], h[1]]));
        }
        self.fingerprints = Vec::new();
        self.inner = Inner::Settled {
            peer,
            close_notify,
            outgoing: None,
        };
    }

    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Feeds one received DTLS datagram.
    pub fn handle_datagram(&mut self, data: &[u8]) -> Option<DtlsEvent> {
        if self.state == State::Closed {
            return None;
        }
        let stream = match &mut self.inner {
            Inner::Live(stream) => stream,
            Inner::Settled { peer, .. } => {
                return match peer.open(data)? {
                    Alert::CloseNotify => {
                        self.state = State::Closed;
                        Some(DtlsEvent::PeerClosed)
                    }
                    Alert::Fatal(code) => {
                        self.state = State::Closed;
                        Some(DtlsEvent::Closed(format!(
                            "the peer sent fatal alert {code}"
                        )))
                    }
                    Alert::Warning(_) => None,
                };
            }
        };
        let io = stream.get_mut();
        if io.incoming.len() >= MAX_QUEUED {
            io.incoming.pop_front();
        }
        io.incoming.push_back(data.to_vec());
        self.drive()
    }

    /// Advances the handshake, or reads (and discards) application data after it: WebRTC sends
    /// none on the DTLS association without data channels, but alerts must be processed.
    fn drive(&mut self) -> Option<DtlsEvent> {
        let Inner::Live(stream) = &mut self.inner else {
            return None;
        };
        match self.state {
            State::Handshaking => match stream.do_handshake() {
                Ok(()) => Some(match self.on_connected() {
                    Ok(keys) => {
                        self.state = State::Connected;
                        DtlsEvent::Connected(keys)
                    }
                    Err(e) => {
                        self.state = State::Closed;
                        DtlsEvent::Closed(e.to_string())
                    }
                }),
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => None,
                Err(e) => {
                    self.state = State::Closed;
                    Some(DtlsEvent::Closed(format!("handshake failed: {e}")))
                }
            },
            State::Connected => {
                let mut buf = [0u8; 2048];
                let ev = loop {
                    match stream.ssl_read(&mut buf) {
                        Ok(0) => break Some(DtlsEvent::PeerClosed),
                        Ok(_) => continue,
                        Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                            break Some(DtlsEvent::PeerClosed);
                        }
                        Err(e)
                            if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) =>
                        {
                            break None;
                        }
                        Err(e) => break Some(DtlsEvent::Closed(format!("DTLS error: {e}"))),
                    }
                };
                if ev.is_some() {
                    self.state = State::Closed;
                }
                ev
            }
            State::Closed => None,
        }
    }

    fn on_connected(&self) -> Result<SrtpKeys, DtlsError> {
        let Inner::Live(stream) = &self.inner else {
            return Err(DtlsError::Handshake(
                "settled before it connected".to_owned(),
            ));
        };
        let ssl = stream.ssl();
        let cert = ssl.peer_certificate().ok_or(DtlsError::NoPeerCertificate)?;
        let matches = self.fingerprints.iter().any(|f| {
            let md = match f.algorithm.as_str() {
                "sha-1" => MessageDigest::sha1(),
                "sha-224" => MessageDigest::sha224(),
                "sha-256" => MessageDigest::sha256(),
                "sha-384" => MessageDigest::sha384(),
                "sha-512" => MessageDigest::sha512(),
                _ => return false,
            };
            cert.digest(md).is_ok_and(|d| *d == *f.bytes)
        });
        if !matches {
            return Err(DtlsError::FingerprintMismatch);
        }
        let id = ssl
            .selected_srtp_profile()
            .ok_or(DtlsError::NoSrtpProfile)?
            .id();
        let profile =
            SrtpProfile::from_dtls_id(id.as_raw() as u16).ok_or(DtlsError::UnknownSrtpProfile)?;
        let (kl, sl) = (profile.master_key_len(), profile.master_salt_len());
        let mut m = vec![0u8; 2 * (kl + sl)];
        ssl.export_keying_material(&mut m, "EXTRACTOR-dtls_srtp", None)?;
        // RFC 5764 §4.2: client key, server key, client salt, server salt.
        let (ck, rest) = m.split_at(kl);
        let (sk, rest) = rest.split_at(kl);
        let (cs, ss) = rest.split_at(sl);
        let server = ssl.is_server();
        let (lk, ls, rk, rs) = if server {
            (sk, ss, ck, cs)
        } else {
            (ck, cs, sk, ss)
        };
        Ok(SrtpKeys {
            profile,
            local_key: lk.to_vec(),
            local_salt: ls.to_vec(),
            remote_key: rk.to_vec(),
            remote_salt: rs.to_vec(),
        })
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        match &mut self.inner {
            Inner::Live(stream) => stream.get_mut().outgoing.pop_front(),
            Inner::Settled { outgoing, .. } => outgoing.take(),
        }
    }

    /// How long until OpenSSL wants `handle_timeout` (during the handshake).
    pub fn timeout(&self) -> Option<Duration> {
        let (State::Handshaking, Inner::Live(stream)) = (&self.state, &self.inner) else {
            return None;
        };
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // DTLSv1_get_timeout is a macro over SSL_ctrl(DTLS_CTRL_GET_TIMEOUT).
        #[allow(unsafe_code)]
        // SAFETY: a valid SSL pointer owned by `stream`, and a timeval OpenSSL writes into.
        let r = unsafe {
            openssl_sys::SSL_ctrl(
                stream.ssl().as_ptr(),
                DTLS_CTRL_GET_TIMEOUT,
                0,
                (&mut tv as *mut libc::timeval).cast(),
            )
        };
        (r == 1).then(|| Duration::new(tv.tv_sec.max(0) as u64, (tv.tv_usec.max(0) as u32) * 1000))
    }

    /// Retransmits the last flight if OpenSSL's timer expired.
    pub fn handle_timeout(&mut self) -> Option<DtlsEvent> {
        let (State::Handshaking, Inner::Live(stream)) = (&self.state, &self.inner) else {
            return None;
        };
        #[allow(unsafe_code)]
        // SAFETY: a valid SSL pointer owned by `stream`; HANDLE_TIMEOUT takes no argument.
        let r = unsafe {
            openssl_sys::SSL_ctrl(
                stream.ssl().as_ptr(),
                DTLS_CTRL_HANDLE_TIMEOUT,
                0,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            self.state = State::Closed;
            return Some(DtlsEvent::Closed("DTLS handshake timed out".to_owned()));
        }
        None
    }

    /// Sends close_notify.
    pub fn close(&mut self) {
        if self.state == State::Connected {
            match &mut self.inner {
                Inner::Live(stream) => {
                    let _ = stream.shutdown();
                }
                Inner::Settled {
                    close_notify,
                    outgoing,
                    ..
                } => *outgoing = Some(std::mem::take(close_notify)).filter(|c| !c.is_empty()),
            }
        }
        self.state = State::Closed;
    }
}

const DTLS_CTRL_GET_TIMEOUT: libc::c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: libc::c_int = 74;

mod settled;
use settled::{Alert, PeerRecordKey};

#[cfg(test)]
mod tests;
