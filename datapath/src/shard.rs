//! One shard's protocol state, without IO: transports keyed by ufrag and by address (their
//! state and `RouteIo` in `transport`), the RFC 7983 demux, and what each datagram leads to.
//! A backend running `driver::ShardLoop` feeds datagrams and time in and sends the datagrams
//! queued in `outbox`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use openssl::ssl::SslContext;

use crate::IdMap;
use crate::dtls::{Dtls, DtlsEvent, DtlsRole, Fingerprint};
use crate::ice::{CheckOutcome, IceLite, Selected};
use crate::outbox::{Outbox, Queued};
use crate::pacer::Pacer;
use crate::srtp::{self, SrtpProfile};
use crate::stats::{DropReason, ShardStats};
use crate::stun::{self, Message};
use ringcast_types::route::Router;

pub(crate) mod driver;
mod transport;

pub use crate::demux::{Kind, classify};
pub use ringcast_types::TransportId;
pub use transport::RouteIo;
use transport::{MAX_EARLY_DTLS, MAX_VALIDATED, Transport};

/// What the control plane tells a shard about a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    pub id: TransportId,
    pub local_ufrag: String,
    pub local_pwd: String,
    /// `None` until the peer's SDP is known (a subscriber transport between offer and answer).
    pub remote: Option<RemoteConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    pub ufrag: String,
    pub dtls_role: DtlsRole,
    pub fingerprints: Vec<Fingerprint>,
}

/// Commands from the control plane; `C` is the router's own command type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<C> {
    /// Adds a transport, or updates it (ICE restart, peer parameters learned).
    Upsert(TransportConfig),
    Remove(TransportId),
    /// For the shard's media router.
    Router(C),
}

/// Reports to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connected {
        id: TransportId,
        profile: SrtpProfile,
    },
    Failed {
        id: TransportId,
        reason: String,
    },
    ConsentLost {
        id: TransportId,
    },
    /// The peer closed DTLS cleanly (close_notify): it left.
    Closed {
        id: TransportId,
    },
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// Largest datagram a shard accepts; bigger ones are counted drops.
pub const MAX_DATAGRAM: usize = 1500;
/// Send slots per shard (in flight plus queued) at most: 64 MiB of address space, touched only
/// as far as sweeps use it. A sweep that would need more yields (see `ShardCore::has_room`), so
/// this bounds memory, not the fan-out.
pub const OUTBOX_SLOTS: usize = 32 * 1024;
/// Slots kept free beyond the largest fan-out one datagram has produced.
const SEND_RESERVE_MARGIN: usize = 64;

/// A shard's state.
pub struct ShardCore<R: Router> {
    ssl: SslContext,
    router: R,
    transports: IdMap<TransportId, Transport>,
    by_ufrag: IdMap<String, TransportId>,
    by_addr: IdMap<SocketAddr, TransportId>,
    pub outbox: Outbox,
    /// Free slots a datagram may need: the most sends one datagram has produced, plus a margin.
    send_reserve: usize,
    pacer: Pacer,
    pace_bursts: bool,
    events: Vec<Event>,
    pub stats: ShardStats,
}

impl<R: Router> ShardCore<R> {
    pub fn new(ssl: SslContext, router: R) -> Self {
        Self::with_send_slots(ssl, router, OUTBOX_SLOTS)
    }

    /// A core whose outbox holds `slots` sends at most (queued plus in flight).
    pub fn with_send_slots(ssl: SslContext, router: R, slots: usize) -> Self {
        ShardCore {
            ssl,
            router,
            transports: IdMap::default(),
            by_ufrag: IdMap::default(),
            by_addr: IdMap::default(),
            outbox: Outbox::new(slots.max(1)),
            send_reserve: SEND_RESERVE_MARGIN,
            pacer: Pacer::default(),
            pace_bursts: true,
            events: Vec::new(),
            stats: ShardStats::default(),
        }
    }

    pub fn transport_count(&self) -> usize {
        self.transports.len()
    }

    pub fn router(&self) -> &R {
        &self.router
    }

    pub fn router_mut(&mut self) -> &mut R {
        &mut self.router
    }

    pub fn handle_command(&mut self, cmd: Command<R::Command>, now: Instant) {
        match cmd {
            Command::Upsert(c) => self.upsert(c, now),
            Command::Remove(id) => self.remove(id),
            Command::Router(c) => {
                let (router, mut io) = self.route_io(now);
                router.handle_command(c, &mut io, now);
            }
        }
    }

    /// The router and what it may use, borrowed apart.
    fn route_io(&mut self, now: Instant) -> (&mut R, RouteIo<'_>) {
        (
            &mut self.router,
            RouteIo {
                transports: &mut self.transports,
                outbox: &mut self.outbox,
                stats: &mut self.stats,
                pacer: &mut self.pacer,
                now,
            },
        )
    }

    fn upsert(&mut self, c: TransportConfig, now: Instant) {
        let id = c.id;
        match self.transports.get_mut(&id) {
            Some(t) => {
                if t.config.local_ufrag != c.local_ufrag {
                    self.by_ufrag.remove(&t.config.local_ufrag);
                    self.by_ufrag.insert(c.local_ufrag.clone(), id);
                }
                t.ice.restart(
                    &c.local_ufrag,
                    &c.local_pwd,
                    c.remote.as_ref().map(|r| r.ufrag.as_str()),
                );
                // DTLS starts once the peer's role and fingerprint are known; a change of
                // either (a new DTLS association) starts it again.
                let dtls_changed = t
                    .config
                    .remote
                    .as_ref()
                    .map(|r| (&r.dtls_role, &r.fingerprints))
                    != c.remote.as_ref().map(|r| (&r.dtls_role, &r.fingerprints));
                t.config = c;
                if dtls_changed {
                    t.dtls = None;
                    t.rx = None;
                    t.tx = None;
                    self.start_dtls(id, now);
                }
            }
            None => {
                let ice = IceLite::new(
                    &c.local_ufrag,
                    &c.local_pwd,
                    c.remote.as_ref().map(|r| r.ufrag.as_str()),
                );
                self.by_ufrag.insert(c.local_ufrag.clone(), id);
                self.transports.insert(
                    id,
                    Transport {
                        config: c,
                        ice,
                        validated: Vec::with_capacity(MAX_VALIDATED),
                        dtls_started: None,
                        early_dtls: Vec::new(),
                        dtls: None,
                        rx: None,
                        tx: None,
                        failed: false,
                    },
                );
                self.start_dtls(id, now);
            }
        }
    }

    fn start_dtls(&mut self, id: TransportId, now: Instant) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        let Some(remote) = &t.config.remote else {
            return;
        };
        match Dtls::new(&self.ssl, remote.dtls_role, remote.fingerprints.clone()) {
            Ok(d) => t.dtls = Some(d),
            Err(e) => {
                t.failed = true;
                self.events.push(Event::Failed {
                    id,
                    reason: format!("cannot start DTLS: {e}"),
                });
            }
        }
        // A flight that arrived before the peer's parameters (a browser subscriber starts DTLS
        // before its answer reaches us) is handled now instead of waiting for a retransmission.
        let early = std::mem::take(&mut t.early_dtls);
        for d in early {
            let Some(dtls) = self.transports.get_mut(&id).and_then(|t| t.dtls.as_mut()) else {
                break;
            };
            let ev = dtls.handle_datagram(&d);
            self.stats.dtls_in += 1;
            if let Some(t) = self.transports.get_mut(&id) {
                t.dtls_started.get_or_insert(now);
            }
            self.on_dtls_event(id, ev, now);
        }
        self.flush_dtls(id);
    }

    fn remove(&mut self, id: TransportId) {
        self.router.transport_removed(id);
        for q in self.pacer.remove(id).into_iter().flatten() {
            self.outbox.release(q.slot);
        }
        if let Some(mut t) = self.transports.remove(&id) {
            self.by_ufrag.remove(&t.config.local_ufrag);
            for a in &t.validated {
                self.by_addr.remove(a);
            }
            let to = t.send_addr();
            if let Some(d) = &mut t.dtls {
                d.close();
                if let Some(to) = to {
                    while let Some(data) = d.poll_transmit() {
                        if !self.outbox.push_copy(to, &data) {
                            self.stats.drop(DropReason::SendQueueFull);
                        }
                    }
                }
            }
        }
    }

    /// True while the outbox can take the sends of another datagram: the IO loop hands it
    /// datagrams only then, and otherwise sends what is queued first and resumes after the
    /// kernel has completed some (a keyframe fanned out to thousands is spread over several
    /// submissions instead of dropped).
    pub fn has_room(&self) -> bool {
        self.outbox.free_slots() >= self.send_reserve
    }

    /// Turns burst pacing on or off (on by default).
    pub fn pacing(mut self, on: bool) -> Self {
        self.pace_bursts = on;
        self
    }

    /// Paces the queue the IO loop took from the outbox (held datagrams keep their slots) and
    /// adds the held ones whose time has come. Called once per loop pass, with or without new
    /// datagrams.
    pub fn pace(&mut self, queue: &mut Vec<Queued>, now: Instant) {
        if !self.pace_bursts {
            return;
        }
        self.pacer.admit(queue, now);
        self.stats.paced += self.pacer.take_paced();
        let departed = self.pacer.departed();
        if !departed.is_empty() {
            self.router.on_departures(departed);
            departed.clear();
        }
    }

    /// When the pacer next lets a held datagram out.
    pub fn next_release(&self) -> Option<Instant> {
        self.pacer.next_release()
    }

    /// Handles one received datagram. `buf` is the receive buffer, decrypted in place.
    pub fn handle_datagram(&mut self, src: SocketAddr, buf: &mut [u8], now: Instant) {
        let queued = self.outbox.queued().len();
        self.handle_one(src, buf, now);
        let produced = self.outbox.queued().len().saturating_sub(queued);
        if produced + SEND_RESERVE_MARGIN > self.send_reserve {
            // At most half the pool, so a yielding loop always gets room back.
            self.send_reserve = (produced + SEND_RESERVE_MARGIN).min(self.outbox.slots() / 2);
        }
    }

    fn handle_one(&mut self, src: SocketAddr, buf: &mut [u8], now: Instant) {
        self.stats.packets_in += 1;
        self.stats.bytes_in += buf.len() as u64;
        if buf.len() > MAX_DATAGRAM {
            self.stats.drop(DropReason::Oversize);
            return;
        }
        match classify(buf) {
            Kind::Stun => self.handle_stun(src, buf, now),
            Kind::Dtls => self.handle_dtls(src, buf, now),
            Kind::Rtp => self.handle_srtp(src, buf, false, now),
            Kind::Rtcp => self.handle_srtp(src, buf, true, now),
            Kind::Other => self.stats.drop(DropReason::UnknownFirstByte),
        }
    }

    fn handle_stun(&mut self, src: SocketAddr, buf: &[u8], now: Instant) {
        let msg = match Message::parse(buf) {
            Ok(m) => m,
            Err(_) => return self.stats.drop(DropReason::MalformedStun),
        };
        self.stats.stun_requests += 1;
        let mut out = [0u8; stun::MAX_RESPONSE];
        let Some((local, _)) = msg.ice_username() else {
            // No USERNAME: not a check for any transport. Answer 400 only to requests.
            if msg.class == stun::Class::Request
                && let Ok(len) =
                    stun::write_binding_error(&mut out, &msg.transaction_id, 400, &[], None)
            {
                self.send(src, &out[..len]);
            }
            self.stats.stun_failures += 1;
            return;
        };
        let id = std::str::from_utf8(local)
            .ok()
            .and_then(|u| self.by_ufrag.get(u))
            .copied();
        let Some(t) = id.and_then(|id| self.transports.get_mut(&id)) else {
            // Unknown ufrag: RFC 8489 §9.1.3 answers 401, unsigned.
            self.stats.stun_failures += 1;
            if msg.class == stun::Class::Request
                && let Ok(len) =
                    stun::write_binding_error(&mut out, &msg.transaction_id, 401, &[], None)
            {
                self.send(src, &out[..len]);
            }
            return;
        };
        let id = t.config.id;
        let (outcome, selected) = t.ice.handle_check(&msg, src, now, &mut out);
        match outcome {
            CheckOutcome::Reply { len, .. } => {
                let ok = out[0] == 0x01 && out[1] == 0x01;
                if ok {
                    self.validate(id, src);
                } else {
                    self.stats.stun_failures += 1;
                }
                self.send(src, &out[..len]);
            }
            CheckOutcome::Drop(_) => {
                self.stats.stun_failures += 1;
                self.stats.drop(DropReason::MalformedStun);
            }
        }
        if let Selected::Now(_) = selected {
            // DTLS flights waiting for an address (we are the client) can go now.
            self.flush_dtls(id);
        }
    }

    /// Lets `addr` send DTLS and media for transport `id` (it just passed a check).
    fn validate(&mut self, id: TransportId, addr: SocketAddr) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        if let Some(i) = t.validated.iter().position(|a| *a == addr) {
            // Newest last.
            t.validated.remove(i);
        } else if t.validated.len() >= MAX_VALIDATED {
            let old = t.validated.remove(0);
            if t.ice.selected() != Some(old) {
                self.by_addr.remove(&old);
            } else {
                t.validated.push(old);
                let older = t.validated.remove(0);
                self.by_addr.remove(&older);
            }
        }
        t.validated.push(addr);
        // An address another transport had validated moves to this one (its check proved it).
        if let Some(prev) = self.by_addr.insert(addr, id)
            && prev != id
            && let Some(other) = self.transports.get_mut(&prev)
        {
            other.validated.retain(|a| *a != addr);
        }
    }

    fn handle_dtls(&mut self, src: SocketAddr, buf: &[u8], now: Instant) {
        let Some(&id) = self.by_addr.get(&src) else {
            return self.stats.drop(DropReason::UnknownSource);
        };
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        let Some(d) = &mut t.dtls else {
            // Peer parameters not known yet: keep the first flight (bounded) for when they are.
            if t.early_dtls.len() < MAX_EARLY_DTLS {
                t.early_dtls.push(buf.to_vec());
            } else {
                self.stats.drop(DropReason::DtlsNotReady);
            }
            return;
        };
        t.dtls_started.get_or_insert(now);
        let ev = d.handle_datagram(buf);
        self.stats.dtls_in += 1;
        self.on_dtls_event(id, ev, now);
        self.flush_dtls(id);
    }

    fn on_dtls_event(&mut self, id: TransportId, ev: Option<DtlsEvent>, now: Instant) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        match ev {
            Some(DtlsEvent::Connected(keys)) => {
                let rx = srtp::Context::new(keys.profile, &keys.remote_key, &keys.remote_salt);
                let tx = srtp::Context::new(keys.profile, &keys.local_key, &keys.local_salt);
                match (rx, tx) {
                    (Ok(rx), Ok(tx)) => {
                        t.rx = Some(rx);
                        t.tx = Some(tx);
                        self.stats.dtls_ok += 1;
                        if let Some(start) = t.dtls_started {
                            self.stats
                                .record_handshake(now.saturating_duration_since(start));
                        }
                        self.events.push(Event::Connected {
                            id,
                            profile: keys.profile,
                        });
                        // Our last handshake flight goes first: until the peer has it, it
                        // cannot decrypt what the router sends now (a keyframe replay), and
                        // browsers drop SRTP that arrives before their handshake completes.
                        self.flush_dtls(id);
                        let (router, mut io) = self.route_io(now);
                        router.transport_connected(id, &mut io, now);
                    }
                    _ => {
                        t.failed = true;
                        self.stats.dtls_failed += 1;
                        self.events.push(Event::Failed {
                            id,
                            reason: "exported SRTP keys have the wrong length".to_owned(),
                        });
                    }
                }
            }
            Some(DtlsEvent::PeerClosed) => {
                t.failed = true;
                t.rx = None;
                t.tx = None;
                self.events.push(Event::Closed { id });
            }
            Some(DtlsEvent::Closed(reason)) => {
                if t.rx.is_none() {
                    self.stats.dtls_failed += 1;
                }
                t.failed = true;
                self.events.push(Event::Failed { id, reason });
            }
            None => {}
        }
    }

    fn flush_dtls(&mut self, id: TransportId) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        let to = t.send_addr();
        let (Some(d), Some(to)) = (&mut t.dtls, to) else {
            return;
        };
        while let Some(data) = d.poll_transmit() {
            if !self.outbox.push_copy(to, &data) {
                self.stats.drop(DropReason::SendQueueFull);
            }
        }
    }

    fn send(&mut self, to: SocketAddr, data: &[u8]) {
        if !self.outbox.push_copy(to, data) {
            self.stats.drop(DropReason::SendQueueFull);
        }
    }

    fn handle_srtp(&mut self, src: SocketAddr, buf: &mut [u8], rtcp: bool, now: Instant) {
        let Some(&id) = self.by_addr.get(&src) else {
            return self.stats.drop(DropReason::UnknownSource);
        };
        let Some(t) = self.transports.get_mut(&id) else {
            return self.stats.drop(DropReason::UnknownSource);
        };
        let Some(rx) = t.rx.as_mut() else {
            return self.stats.drop(DropReason::SrtpNotReady);
        };
        let res = if rtcp {
            rx.unprotect_rtcp(buf)
        } else {
            rx.unprotect_rtp(buf)
        };
        match res {
            Ok(len) => {
                // The peer has the keys, so its handshake is over: OpenSSL's state can go.
                if let Some(d) = t.dtls.as_mut().filter(|d| !d.is_settled()) {
                    d.settle();
                    self.stats.dtls_settled += u64::from(d.is_settled());
                }
                let (router, mut io) = self.route_io(now);
                if rtcp {
                    io.stats.rtcp_in += 1;
                    router.handle_rtcp(id, &buf[..len], &mut io, now);
                } else {
                    io.stats.rtp_in += 1;
                    router.handle_rtp(id, &buf[..len], &mut io, now);
                }
            }
            Err(srtp::SrtpError::Replayed) => self.stats.drop(DropReason::SrtpReplay),
            Err(srtp::SrtpError::AuthFailed) => self.stats.drop(DropReason::SrtpAuth),
            Err(_) => self.stats.drop(DropReason::MalformedRtp),
        }
    }

    /// Drives timers: DTLS retransmissions and consent expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<TransportId> = self.transports.keys().copied().collect();
        for id in ids {
            let Some(t) = self.transports.get_mut(&id) else {
                continue;
            };
            if !t.failed && t.ice.consent_expired(now) {
                t.failed = true;
                self.events.push(Event::ConsentLost { id });
                continue;
            }
            let ev = match &mut t.dtls {
                Some(d) if d.timeout().is_some_and(|t| t.is_zero()) => d.handle_timeout(),
                _ => None,
            };
            self.on_dtls_event(id, ev, now);
            self.flush_dtls(id);
        }
        let (router, mut io) = self.route_io(now);
        router.handle_timeout(&mut io, now);
    }

    /// When `handle_timeout` next has work: the nearest DTLS or router timer, else a second.
    pub fn poll_timeout(&self, now: Instant) -> Duration {
        let router = self
            .router
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now));
        self.transports
            .values()
            .filter_map(|t| t.dtls.as_ref().and_then(Dtls::timeout))
            .chain(router)
            .min()
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1))
    }

    /// The queued datagrams, copied out and their slots released: for tests and tools, not for
    /// the IO loops (they send from the slots).
    pub fn take_transmits(&mut self) -> Vec<Transmit> {
        let mut q = Vec::new();
        self.outbox.take_queue(&mut q);
        q.into_iter()
            .map(|x| {
                let t = Transmit {
                    to: x.to,
                    data: self.outbox.data(&x).to_vec(),
                };
                self.outbox.release(x.slot);
                t
            })
            .collect()
    }

    /// Events for the control plane.
    pub fn take_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }
}

#[cfg(test)]
mod tests;
