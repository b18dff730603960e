//! The client end of a Ringcast transport, sans-IO: ICE as the controlling agent (checks with
//! USE-CANDIDATE, retransmitted until answered, then consent refreshes), DTLS as client, and
//! SRTP/SRTCP both ways. The loadtest's synthetic participants, the datapath's loopback tests
//! and the benches all drive this one type; `connect_blocking` runs it on a plain socket.
//!
//! No IO and no clock here: the caller feeds datagrams and `now`, and sends what
//! `poll_transmit` writes.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use openssl::ssl::SslContext;

use crate::demux::{Kind, classify};
use crate::dtls::{Dtls, DtlsError, DtlsEvent, DtlsRole, Fingerprint, SrtpKeys};
use crate::srtp::{self, SrtpError, SrtpProfile};
use crate::stun::{self, Class, IceRole, Message};

/// A check is retransmitted this often until it is answered (RFC 8445 §14.3 paces checks at
/// 50 ms; one pair needs no more).
pub const CHECK_RETRANSMIT: Duration = Duration::from_millis(50);
/// Consent refresh once connected (RFC 7675 asks for one every 5 s on average).
pub const CONSENT_INTERVAL: Duration = Duration::from_secs(5);

/// What a client needs to reach one server transport: the server's ICE credentials and DTLS
/// fingerprint from its SDP, and our own ufrag.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub local_ufrag: String,
    pub remote_ufrag: String,
    pub remote_pwd: String,
    pub tie_breaker: u64,
    pub server_fingerprints: Vec<Fingerprint>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("DTLS: {0}")]
    Dtls(#[from] DtlsError),
    #[error("DTLS failed: {0}")]
    DtlsFailed(String),
    #[error("SRTP keys: {0}")]
    Srtp(#[from] SrtpError),
    #[error("not connected within {after:?} (last ICE check error: {last_check_error:?})")]
    Timeout {
        after: Duration,
        /// A check error keeps the client checking (the server may not know the transport
        /// yet); it is reported if the client never connects.
        last_check_error: Option<u16>,
    },
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// What one received datagram was.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Decrypted RTP of this length, in place at the start of the buffer.
    Rtp(usize),
    /// Decrypted compound RTCP of this length, in place.
    Rtcp(usize),
    /// DTLS completed just now: SRTP works from here on.
    Connected,
    /// Handled inside (a check response, a handshake record).
    Nothing,
    /// Not usable: the reason, for the caller's counters.
    Dropped(Drop),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    Malformed,
    SrtpNotReady,
    SrtpAuth,
    SrtpReplay,
}

/// One client transport.
pub struct Client {
    config: ClientConfig,
    dtls: Dtls,
    /// The transaction id of the outstanding check, and how many were sent.
    txid: [u8; 12],
    checks: u64,
    next_check: Option<Instant>,
    checked: bool,
    check_error: Option<u16>,
    failed: Option<String>,
    keys: Option<SrtpKeys>,
    tx: Option<srtp::Context>,
    rx: Option<srtp::Context>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("checked", &self.checked)
            .field("connected", &self.tx.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with its DTLS ClientHello ready; `ctx` carries our certificate.
    pub fn new(ctx: &SslContext, config: ClientConfig) -> Result<Self, ClientError> {
        let dtls = Dtls::new(ctx, DtlsRole::Client, config.server_fingerprints.clone())?;
        let mut txid = [0u8; 12];
        txid[..8].copy_from_slice(&config.tie_breaker.to_be_bytes());
        Ok(Client {
            config,
            dtls,
            txid,
            checks: 0,
            next_check: None,
            checked: false,
            check_error: None,
            failed: None,
            keys: None,
            tx: None,
            rx: None,
        })
    }

    /// ICE answered our check: the server takes DTLS and media from our address.
    pub fn is_checked(&self) -> bool {
        self.checked
    }

    pub fn is_connected(&self) -> bool {
        self.tx.is_some()
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The error code of the last check the server refused (400, 401, 487), if any.
    pub fn check_error(&self) -> Option<u16> {
        self.check_error
    }

    /// Why the transport failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub fn profile(&self) -> Option<SrtpProfile> {
        self.keys.as_ref().map(|k| k.profile)
    }

    /// Writes the next datagram to send into `out` and returns its length: a check when one
    /// is due, else a DTLS record (only after a check was answered, as the server requires).
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        if self.next_check.is_none_or(|t| now >= t) {
            let wait = if self.checked {
                CONSENT_INTERVAL
            } else {
                CHECK_RETRANSMIT
            };
            self.next_check = Some(now + wait);
            self.checks += 1;
            self.txid[8..].copy_from_slice(&(self.checks as u32).to_be_bytes());
            let user = format!("{}:{}", self.config.remote_ufrag, self.config.local_ufrag);
            if let Ok(n) = stun::write_binding_request(
                out,
                &self.txid,
                user.as_bytes(),
                0x6E00_01FF,
                IceRole::Controlling(self.config.tie_breaker),
                true,
                self.config.remote_pwd.as_bytes(),
            ) {
                return Some(n);
            }
        }
        if !self.checked {
            return None;
        }
        let d = self.dtls.poll_transmit()?;
        let n = d.len().min(out.len());
        out[..n].copy_from_slice(&d[..n]);
        Some(n)
    }

    /// When `handle_timeout` or `poll_transmit` next has work.
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        let dtls = self.dtls.timeout().map(|t| now + t);
        let check = self.next_check.unwrap_or(now);
        dtls.map_or(check, |d| d.min(check))
    }

    /// Drives DTLS retransmissions.
    pub fn handle_timeout(&mut self, _now: Instant) {
        if self.dtls.timeout().is_some_and(|t| t.is_zero())
            && let Some(DtlsEvent::Closed(why)) = self.dtls.handle_timeout()
        {
            self.failed = Some(why);
        }
    }

    /// Handles one datagram from the server; RTP and RTCP are decrypted in place.
    pub fn handle_datagram(&mut self, buf: &mut [u8], now: Instant) -> Received {
        match classify(buf) {
            Kind::Stun => self.on_stun(buf, now),
            Kind::Dtls => match self.dtls.handle_datagram(buf) {
                Some(DtlsEvent::Connected(keys)) => match self.on_keys(keys) {
                    Ok(()) => Received::Connected,
                    Err(e) => {
                        self.failed = Some(e.to_string());
                        Received::Nothing
                    }
                },
                Some(DtlsEvent::Closed(why)) => {
                    self.failed = Some(why);
                    Received::Nothing
                }
                Some(DtlsEvent::PeerClosed) => {
                    self.failed = Some("the server closed DTLS".to_owned());
                    Received::Nothing
                }
                None => Received::Nothing,
            },
            Kind::Rtp | Kind::Rtcp => {
                let rtcp = classify(buf) == Kind::Rtcp;
                let Some(rx) = self.rx.as_mut() else {
                    return Received::Dropped(Drop::SrtpNotReady);
                };
                let res = if rtcp {
                    rx.unprotect_rtcp(buf)
                } else {
                    rx.unprotect_rtp(buf)
                };
                match res {
                    Ok(n) if rtcp => Received::Rtcp(n),
                    Ok(n) => Received::Rtp(n),
                    Err(SrtpError::Replayed) => Received::Dropped(Drop::SrtpReplay),
                    Err(SrtpError::AuthFailed) => Received::Dropped(Drop::SrtpAuth),
                    Err(_) => Received::Dropped(Drop::Malformed),
                }
            }
            Kind::Other => Received::Dropped(Drop::Malformed),
        }
    }

    fn on_stun(&mut self, buf: &[u8], now: Instant) -> Received {
        let Ok(m) = Message::parse(buf) else {
            return Received::Dropped(Drop::Malformed);
        };
        if m.transaction_id[..8] != self.txid[..8] {
            return Received::Dropped(Drop::Malformed);
        }
        match m.class {
            Class::Success if !self.checked => {
                self.checked = true;
                self.next_check = Some(now + CONSENT_INTERVAL);
            }
            Class::Error => {
                let code = stun::find_attribute(buf, stun::attr::ERROR_CODE)
                    .filter(|v| v.len() >= 4)
                    .map_or(0, |v| u16::from(v[2] & 0x7) * 100 + u16::from(v[3]));
                self.check_error = Some(code);
            }
            _ => {}
        }
        Received::Nothing
    }

    fn on_keys(&mut self, keys: SrtpKeys) -> Result<(), SrtpError> {
        self.tx = Some(srtp::Context::new(
            keys.profile,
            &keys.local_key,
            &keys.local_salt,
        )?);
        self.rx = Some(srtp::Context::new(
            keys.profile,
            &keys.remote_key,
            &keys.remote_salt,
        )?);
        self.keys = Some(keys);
        Ok(())
    }

    /// Encrypts the `len`-byte RTP packet at the start of `buf` in place (room for the tag
    /// must follow it); returns the SRTP length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.tx
            .as_mut()
            .ok_or(SrtpError::NoKeys)?
            .protect_rtp(buf, len)
    }

    /// As `protect_rtp`, for compound RTCP.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.tx
            .as_mut()
            .ok_or(SrtpError::NoKeys)?
            .protect_rtcp(buf, len)
    }

    /// The keys DTLS exported, once connected (for tools that encrypt elsewhere).
    pub fn keys(&self) -> Option<&SrtpKeys> {
        self.keys.as_ref()
    }
}

/// Runs `client` on a plain blocking socket until DTLS completes or `timeout` passes. For
/// tests and benches; RTP that arrives meanwhile is dropped.
pub fn connect_blocking(
    client: &mut Client,
    sock: &UdpSocket,
    server: SocketAddr,
    timeout: Duration,
) -> Result<(), ClientError> {
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    while !client.is_connected() {
        let now = Instant::now();
        if let Some(why) = client.failure() {
            return Err(ClientError::DtlsFailed(why.to_owned()));
        }
        if now.duration_since(start) > timeout {
            return Err(ClientError::Timeout {
                after: timeout,
                last_check_error: client.check_error(),
            });
        }
        client.handle_timeout(now);
        while let Some(n) = client.poll_transmit(now, &mut buf) {
            sock.send_to(&buf[..n], server)?;
        }
        let wait = client
            .poll_timeout(now)
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        sock.set_read_timeout(Some(wait))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == server => {
                client.handle_datagram(&mut buf[..n], Instant::now());
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
