//! The client engine: one thread drives every synthetic transport, as a shard does on the
//! server. Each transport has its own UDP socket, connected to its shard; one multishot receive
//! per socket fills buffers from a single provided-buffer ring, and each pass hands all of its
//! sends to the kernel in one submit (io_uring). Publishers' frames, sender and receiver
//! reports, NACKs, PLIs and the ICE/DTLS timers run from the same loop, woken through a timer
//! heap. Sends come from a preallocated slot pool: nothing is allocated per packet.
//!
//! The signaling side (tokio) hands transports in through `Command`s; the engine returns its
//! measurements when told to finish.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use io_uring::{IoUring, cqueue, opcode, types};
use ringcast_datapath::bufring::BufRing;
use ringcast_datapath::client::{Client, Received};
use ringcast_datapath::shard::{Kind, classify};
use ringcast_media::retransmit::History;
use ringcast_media::rtcp::{self, Rtcp};
use ringcast_media::rtp::RtpPacket;

use crate::media::{self, Source, Stream, TransportFeedback};
use crate::sdp::OfferedTrack;

const RECV_BUFS: u16 = 4096;
const BUF_SIZE: usize = 2048;
const BGID: u16 = 1;
/// Send slots: sends queued or in flight at once.
const SEND_SLOTS: usize = 16 * 1024;
const SLOT_SIZE: usize = 1600;
const RECV_FLAG: u64 = 1 << 63;
/// Receiver and sender reports: once a second per transport.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// A video stream without a keyframe this long after its transport connected asks for one.
const PLI_AFTER: Duration = Duration::from_millis(300);
/// Completions that wake a waiting engine (else its timer, at most 1 ms, does).
const WAIT_BATCH: usize = 32;
/// Completions handled per pass before the timers run again.
const MAX_COMPLETIONS_PER_PASS: usize = 2048;
/// SSRC our RTCP is sent with.
const OUR_SSRC: u32 = 0x10AD_7E57;

/// What a transport does.
pub enum Role {
    /// Sends these streams.
    Publisher(Vec<Source>),
    /// Receives what its offers announce; with `transport_cc`, sends the transport-wide
    /// feedback for what arrives (its answers kept the extension).
    Subscriber { transport_cc: bool },
}

/// A transport the signaling side set up: the socket is connected to its shard.
pub struct NewTransport {
    pub id: usize,
    pub participant: usize,
    pub socket: UdpSocket,
    pub client: Client,
    pub role: Role,
    /// When the participant called `Join` (time to first frame counts from here).
    pub joined_at: Instant,
}

pub enum Command {
    Add(Box<NewTransport>),
    /// A subscriber's latest answered offer: the tracks it must receive.
    Tracks {
        id: usize,
        tracks: Vec<OfferedTrack>,
    },
    /// The measured window starts now.
    Measure,
    /// Publishers stop; the engine keeps receiving (repairs in flight) until `Finish`.
    StopMedia,
    Finish,
}

/// What the engine publishes once a second for the live line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    pub transports: usize,
    pub connected: usize,
    pub failed: usize,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub lost: u64,
    pub nacks: u64,
    /// Received streams that have delivered at least one packet.
    pub streams_flowing: usize,
    /// Latest p99 of one-way latency (µs) over the last second, all streams.
    pub p99_us: u64,
    /// Counts the publications (one a second).
    pub seq: u64,
}

/// One received stream's results.
#[derive(Debug, Clone)]
pub struct StreamReport {
    pub ssrc: u32,
    pub video: bool,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub recovered: u64,
    pub nacked: u64,
    pub jitter_ms: f64,
    pub bytes: u64,
    /// Received in the measured window.
    pub window_packets: u64,
    pub window_bytes: u64,
    /// RTX packets received (probes and repairs), apart from the stream's own packets.
    pub rtx_received: u64,
}

#[derive(Debug, Clone)]
pub struct TransportReport {
    pub id: usize,
    pub participant: usize,
    pub publisher: bool,
    pub connected: bool,
    pub failure: Option<String>,
    pub connect_time: Option<Duration>,
    /// Join to the first decodable frame (a keyframe, or audio for audio-only).
    pub first_frame: Option<Duration>,
    /// Join until the transport was handed to the engine (Join, Events, Subscribe).
    pub signaling_time: Duration,
    /// DTLS done to the first decodable frame (waiting for a keyframe).
    pub frame_wait: Option<Duration>,
    /// Tracks the offers announced that sent nothing.
    pub missing_tracks: usize,
    pub tracks_offered: usize,
    pub streams: Vec<StreamReport>,
    pub packets_sent: u64,
    pub nacks_received: u64,
    pub plis_received: u64,
    pub srtp_failures: u64,
    /// Transport-wide feedback messages sent (subscribers with `transport_cc`).
    pub feedback_sent: u64,
    /// RTP packets of an SSRC no answered offer named, dropped.
    pub unknown_ssrc: u64,
}

pub struct EngineReport {
    pub transports: Vec<TransportReport>,
    pub latency_audio: Histogram<u64>,
    pub latency_video: Histogram<u64>,
    pub window: Duration,
    /// Frames sent later than due (µs), the worst: a loop that can't keep up.
    pub max_send_lateness: Duration,
    pub send_slots_exhausted: u64,
    pub packets_decrypted: u64,
    pub packets_header_only: u64,
    /// Packets older than their stream's start (history replays), left out of the latency.
    pub packets_replayed: u64,
}

enum State {
    Publisher {
        sources: Vec<Source>,
        histories: Vec<History>,
        next_report: Instant,
        nacks: u64,
        plis: u64,
    },
    Subscriber {
        streams: Vec<Stream>,
        offered: Vec<OfferedTrack>,
        next_report: Instant,
        next_pli: Option<Instant>,
        /// Stream counters when the window started.
        window_start: Vec<(u32, u64, u64)>,
        /// Sends transport-wide feedback once an offer names the extension.
        transport_cc: bool,
        feedback: Option<TransportFeedback>,
    },
}

struct Transport {
    participant: usize,
    socket: UdpSocket,
    client: Client,
    state: State,
    joined_at: Instant,
    added_at: Instant,
    connected_at: Option<Instant>,
    first_frame: Option<Instant>,
    wake: Instant,
    sent: u64,
    srtp_failures: u64,
    /// Received RTP packets, for the decryption sample.
    rtp_seen: u64,
    /// RTP packets of an SSRC no answered offer named (subscribers).
    unknown_ssrc: u64,
}

/// The kernel side of the engine: ring, receive buffers, send slots.
struct Io {
    ring: IoUring,
    bufs: BufRing,
    slots: Box<[u8]>,
    free: Vec<u32>,
    /// (fd, slot, len) queued this pass.
    pending: Vec<(i32, u32, u32)>,
    packets_out: u64,
    exhausted: u64,
}

impl Io {
    /// Copies `data` into a slot and queues it for `fd`; RTP/RTCP are encrypted in the slot
    /// by `seal` first (it returns the sealed length).
    fn send(
        &mut self,
        fd: i32,
        data: &[u8],
        seal: impl FnOnce(&mut [u8], usize) -> Option<usize>,
    ) -> bool {
        let Some(slot) = self.free.pop() else {
            self.exhausted += 1;
            return false;
        };
        let at = slot as usize * SLOT_SIZE;
        let buf = &mut self.slots[at..at + SLOT_SIZE];
        let n = data.len().min(SLOT_SIZE - 32);
        buf[..n].copy_from_slice(&data[..n]);
        match seal(buf, n) {
            Some(len) => {
                self.pending.push((fd, slot, len as u32));
                true
            }
            None => {
                self.free.push(slot);
                false
            }
        }
    }

    fn submit_pending(&mut self) -> io::Result<()> {
        let mut sq = self.ring.submission();
        for (fd, slot, len) in self.pending.drain(..) {
            let ptr = self.slots[slot as usize * SLOT_SIZE..].as_ptr();
            let e = opcode::Send::new(types::Fd(fd), ptr, len)
                .build()
                .user_data(u64::from(slot));
            // SAFETY: the slot is not reused before its completion returns it to `free`.
            if unsafe { sq.push(&e) }.is_err() {
                drop(sq);
                self.ring.submit()?;
                sq = self.ring.submission();
                // SAFETY: as above.
                if unsafe { sq.push(&e) }.is_err() {
                    self.free.push(slot);
                    self.exhausted += 1;
                }
            }
        }
        Ok(())
    }

    fn arm(&mut self, fd: i32, id: usize) -> io::Result<()> {
        let e = opcode::RecvMulti::new(types::Fd(fd), BGID)
            .build()
            .user_data(RECV_FLAG | id as u64);
        let mut sq = self.ring.submission();
        // SAFETY: the receive writes only into ring buffers, which outlive the ring.
        if unsafe { sq.push(&e) }.is_err() {
            drop(sq);
            self.ring.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&e) }
                .map_err(|_| io::Error::other("submission queue full"))?;
        }
        Ok(())
    }
}

pub struct Engine {
    io: Io,
    transports: Vec<Option<Transport>>,
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    epoch: Instant,
    decrypt_every: u64,
    publishing: bool,
    measuring: Option<Instant>,
    latency: Latencies,
    max_lateness: Duration,
    decrypted: u64,
    header_only: u64,
    live: Arc<Mutex<Live>>,
    scratch: Box<[u8]>,
    /// Transports whose multishot receive ended (reused each pass).
    rearm: Vec<usize>,
    live_seq: u64,
}

/// 1 µs to 60 s at 3 significant digits.
#[allow(clippy::expect_used)] // constant, valid bounds
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

impl Engine {
    /// `decrypt_every`: decrypt (and check) 1 in this many RTP packets; the others are measured
    /// from their clear header only.
    pub fn new(epoch: Instant, decrypt_every: u64, live: Arc<Mutex<Live>>) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            // Completions run only when the engine asks, and a waiting engine is woken when
            // WAIT_BATCH of them are ready (or its timer): on loopback every wakeup is the
            // sender's cost, so one per packet would bill the server for the generator.
            .setup_defer_taskrun()
            .setup_cqsize(65536)
            .build(4096)?;
        let bufs = BufRing::new(RECV_BUFS, BUF_SIZE)?;
        // SAFETY: `bufs` lives in the same Io as the ring and is unregistered in Drop first.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.ring_addr(), RECV_BUFS, BGID, 0)?;
        }
        Ok(Engine {
            io: Io {
                ring,
                bufs,
                slots: vec![0u8; SEND_SLOTS * SLOT_SIZE].into_boxed_slice(),
                free: (0..SEND_SLOTS as u32).rev().collect(),
                pending: Vec::with_capacity(SEND_SLOTS),
                packets_out: 0,
                exhausted: 0,
            },
            transports: Vec::new(),
            heap: BinaryHeap::new(),
            epoch,
            decrypt_every: decrypt_every.max(1),
            publishing: true,
            measuring: None,
            latency: Latencies {
                audio: histogram(),
                video: histogram(),
                live: histogram(),
                replayed: 0,
            },
            max_lateness: Duration::ZERO,
            decrypted: 0,
            header_only: 0,
            live,
            scratch: vec![0u8; BUF_SIZE].into_boxed_slice(),
            rearm: Vec::new(),
            live_seq: 0,
        })
    }

    /// Runs until `Finish` (or the command channel closes).
    pub fn run(mut self, commands: Receiver<Command>) -> io::Result<EngineReport> {
        let mut next_live = Instant::now() + Duration::from_secs(1);
        loop {
            loop {
                match commands.try_recv() {
                    Ok(Command::Finish) | Err(TryRecvError::Disconnected) => {
                        return Ok(self.report());
                    }
                    Ok(c) => self.command(c)?,
                    Err(TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            let wait = self
                .heap
                .peek()
                .map_or(Duration::from_millis(1), |Reverse((t, _))| {
                    t.saturating_duration_since(now)
                })
                .min(Duration::from_millis(1));
            self.io.submit_pending()?;
            let ts = types::Timespec::from(wait);
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.io.ring.submitter().submit_with_args(WAIT_BATCH, &args) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                    ) => {}
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            self.completions(now)?;
            self.timers(now);
            if now >= next_live {
                self.publish_live();
                next_live = now + Duration::from_secs(1);
            }
        }
    }

    fn command(&mut self, c: Command) -> io::Result<()> {
        match c {
            Command::Add(t) => {
                let t = *t;
                let fd = t.socket.as_raw_fd();
                let now = Instant::now();
                let state = match t.role {
                    Role::Publisher(sources) => State::Publisher {
                        histories: sources
                            .iter()
                            .map(|_| History::new(512, Duration::from_secs(1)))
                            .collect(),
                        sources,
                        next_report: now + REPORT_INTERVAL,
                        nacks: 0,
                        plis: 0,
                    },
                    Role::Subscriber { transport_cc } => State::Subscriber {
                        streams: Vec::new(),
                        offered: Vec::new(),
                        next_report: now + REPORT_INTERVAL,
                        next_pli: None,
                        window_start: Vec::new(),
                        transport_cc,
                        feedback: None,
                    },
                };
                if self.transports.len() <= t.id {
                    self.transports.resize_with(t.id + 1, || None);
                }
                self.transports[t.id] = Some(Transport {
                    participant: t.participant,
                    socket: t.socket,
                    client: t.client,
                    state,
                    joined_at: t.joined_at,
                    added_at: now,
                    connected_at: None,
                    first_frame: None,
                    wake: now,
                    sent: 0,
                    srtp_failures: 0,
                    rtp_seen: 0,
                    unknown_ssrc: 0,
                });
                self.io.arm(fd, t.id)?;
                self.heap.push(Reverse((now, t.id)));
            }
            Command::Tracks { id, tracks } => {
                if let Some(Some(t)) = self.transports.get_mut(id)
                    && let State::Subscriber {
                        streams,
                        offered,
                        transport_cc,
                        feedback,
                        ..
                    } = &mut t.state
                {
                    for o in &tracks {
                        let i = match streams.iter().position(|s| s.ssrc == o.ssrc) {
                            Some(i) => i,
                            None => {
                                let mut s = Stream::new(o.ssrc, o.video, o.clock_rate);
                                s.abs_send_time_ext = o.abs_send_time;
                                streams.push(s);
                                streams.len() - 1
                            }
                        };
                        streams[i].rtx_ssrc = o.rtx.map(|(ssrc, _)| ssrc);
                    }
                    // One id per URI on the BUNDLEd transport; the recorder is made once.
                    if *transport_cc
                        && let Some((ext, ssrc)) =
                            tracks.iter().find_map(|o| Some((o.transport_cc?, o.ssrc)))
                    {
                        match feedback {
                            Some(f) => f.set_ext(ext),
                            None => {
                                *feedback = Some(TransportFeedback::new(
                                    OUR_SSRC,
                                    ssrc,
                                    ext,
                                    Instant::now(),
                                ))
                            }
                        }
                    }
                    *offered = tracks;
                }
            }
            Command::Measure => {
                let now = Instant::now();
                self.measuring = Some(now);
                // Latency and lateness are the window's; loss counts from each stream's start.
                self.latency.audio.reset();
                self.latency.video.reset();
                self.max_lateness = Duration::ZERO;
                for t in self.transports.iter_mut().flatten() {
                    if let State::Subscriber {
                        streams,
                        window_start,
                        ..
                    } = &mut t.state
                    {
                        *window_start = streams
                            .iter()
                            .map(|s| (s.ssrc, s.received, s.bytes))
                            .collect();
                    }
                }
            }
            Command::StopMedia => self.publishing = false,
            Command::Finish => {}
        }
        Ok(())
    }

    fn completions(&mut self, now: Instant) -> io::Result<()> {
        let mut rearm = std::mem::take(&mut self.rearm);
        let mut cq = self.io.ring.completion();
        cq.sync();
        // Completions are copied out in batches so handling them may queue sends.
        let mut batch = [(0u64, 0i32, 0u32); 256];
        // A bounded share per pass, so a steady stream of arrivals never starves the timers
        // (the publishers' pacing and every report).
        let mut budget = MAX_COMPLETIONS_PER_PASS;
        while budget > 0 {
            let mut n = 0;
            for cqe in &mut cq {
                batch[n] = (cqe.user_data(), cqe.result(), cqe.flags());
                n += 1;
                if n == batch.len() {
                    break;
                }
            }
            if n == 0 {
                break;
            }
            budget = budget.saturating_sub(n);
            drop(cq);
            for &(ud, res, flags) in &batch[..n] {
                if ud & RECV_FLAG == 0 {
                    self.io.free.push(ud as u32);
                    if res >= 0 {
                        self.io.packets_out += 1;
                    }
                    continue;
                }
                let id = (ud & !RECV_FLAG) as usize;
                if !cqueue::more(flags) {
                    rearm.push(id);
                }
                let Some(bid) = cqueue::buffer_select(flags) else {
                    continue;
                };
                if res > 0 {
                    let len = res as usize;
                    let mut data = [0u8; BUF_SIZE];
                    data[..len].copy_from_slice(&self.io.bufs.buf_mut(bid)[..len]);
                    self.io.bufs.push(bid);
                    self.datagram(id, &mut data[..len], now);
                } else {
                    self.io.bufs.push(bid);
                }
            }
            self.io.bufs.publish();
            cq = self.io.ring.completion();
            cq.sync();
        }
        drop(cq);
        for id in rearm.drain(..) {
            if let Some(Some(t)) = self.transports.get_mut(id) {
                let fd = t.socket.as_raw_fd();
                self.io.arm(fd, id)?;
            }
        }
        self.rearm = rearm;
        Ok(())
    }

    /// Wakes transport `id` at `at` if that is sooner than it is due.
    fn schedule(
        heap: &mut BinaryHeap<Reverse<(Instant, usize)>>,
        t: &mut Transport,
        id: usize,
        at: Instant,
    ) {
        if at < t.wake {
            t.wake = at;
            heap.push(Reverse((at, id)));
        }
    }

    /// One datagram from transport `id`'s shard.
    fn datagram(&mut self, id: usize, buf: &mut [u8], now: Instant) {
        let Some(Some(t)) = self.transports.get_mut(id) else {
            return;
        };
        let kind = classify(buf);
        // Unsampled RTP of a stream already started is measured from its clear header; every
        // packet's transport-wide sequence number is read from it too, whatever its SSRC.
        if kind == Kind::Rtp
            && let State::Subscriber {
                streams, feedback, ..
            } = &mut t.state
            && t.connected_at.is_some()
        {
            t.rtp_seen += 1;
            let header_only = t.rtp_seen % self.decrypt_every != 0;
            let p = if header_only || feedback.is_some() {
                RtpPacket::parse(buf).ok()
            } else {
                None
            };
            if let (Some(f), Some(p)) = (feedback.as_mut(), &p) {
                f.on_packet(p, now);
            }
            // RTX is counted from its header too, unless it may carry a packet still missing
            // (its original sequence number is in the encrypted payload).
            if header_only
                && let Some(p) = &p
                && let Some(s) = streams.iter_mut().find(|s| s.rtx_ssrc == Some(p.ssrc))
                && !s.has_missing()
            {
                self.header_only += 1;
                s.on_rtx(None, 0, 0, false, now, self.epoch);
                return;
            }
            if header_only
                && let Some(p) = p
                && let Some(s) = streams.iter_mut().find(|s| s.ssrc == p.ssrc)
                && (!s.video || s.first_keyframe_at.is_some())
            {
                self.header_only += 1;
                if t.first_frame.is_none() && !s.video {
                    t.first_frame = Some(now);
                }
                let ast = s
                    .abs_send_time_ext
                    .and_then(|x| p.extension(x))
                    .filter(|e| e.len() == 3);
                let arrival = s.on_packet(
                    p.sequence,
                    p.timestamp,
                    p.payload.len(),
                    false,
                    now,
                    self.epoch,
                );
                if !arrival.duplicate
                    && let Some(e) = ast
                {
                    let sent = u32::from_be_bytes([0, e[0], e[1], e[2]]);
                    let age = media::abs_send_time_age(sent, self.epoch, now);
                    self.latency.record(s, now, age);
                }
                if arrival.gap {
                    Self::schedule(&mut self.heap, t, id, now);
                }
                return;
            }
        }
        match t.client.handle_datagram(buf, now) {
            Received::Connected => {
                t.connected_at = Some(now);
                Self::schedule(&mut self.heap, t, id, now);
            }
            Received::Rtp(n) => {
                self.decrypted += 1;
                let Ok(p) = RtpPacket::parse(&buf[..n]) else {
                    return;
                };
                if let State::Subscriber { streams, .. } = &mut t.state {
                    if let Some(s) = streams.iter_mut().find(|s| s.rtx_ssrc == Some(p.ssrc)) {
                        // RFC 4588: the original sequence number, then the original payload.
                        // Not a media packet: no latency sample, and loss only if it repairs.
                        let (osn, payload) = match p.payload {
                            [hi, lo, rest @ ..] => (Some(u16::from_be_bytes([*hi, *lo])), rest),
                            _ => (None, &[][..]),
                        };
                        let key = s.video && media::vp8_starts_keyframe(payload);
                        if s.on_rtx(osn, p.timestamp, payload.len(), key, now, self.epoch)
                            && key
                            && t.first_frame.is_none()
                        {
                            t.first_frame = Some(now);
                        }
                        return;
                    }
                    // A stream no answered offer named yet is not measured.
                    let Some(s) = streams.iter_mut().find(|s| s.ssrc == p.ssrc) else {
                        t.unknown_ssrc += 1;
                        return;
                    };
                    let key = s.video && media::vp8_starts_keyframe(p.payload);
                    let arrival = s.on_packet(
                        p.sequence,
                        p.timestamp,
                        p.payload.len(),
                        key,
                        now,
                        self.epoch,
                    );
                    if t.first_frame.is_none() && (key || !s.video) {
                        t.first_frame = Some(now);
                    }
                    if !arrival.duplicate
                        && let Some(stamp) = media::find_stamp(p.payload)
                    {
                        let age = Duration::from_nanos(
                            media::nanos_since(self.epoch, now).saturating_sub(stamp),
                        );
                        self.latency.record(s, now, age);
                    }
                    if arrival.gap {
                        Self::schedule(&mut self.heap, t, id, now);
                    }
                }
            }
            Received::Rtcp(n) => self.rtcp(id, n, buf, now),
            Received::Dropped(ringcast_datapath::client::Drop::SrtpAuth) => t.srtp_failures += 1,
            // A check answered or a handshake record: what follows (the ClientHello, the next
            // flight) goes out now, not at the next timer.
            Received::Nothing if t.connected_at.is_none() => {
                Self::schedule(&mut self.heap, t, id, now)
            }
            Received::Dropped(_) | Received::Nothing => {}
        }
    }

    fn rtcp(&mut self, id: usize, n: usize, buf: &[u8], now: Instant) {
        let Some(Some(t)) = self.transports.get_mut(id) else {
            return;
        };
        let fd = t.socket.as_raw_fd();
        for p in rtcp::read(&buf[..n]).flatten() {
            match (&mut t.state, p) {
                (
                    State::Publisher {
                        sources,
                        histories,
                        nacks,
                        ..
                    },
                    Rtcp::Nack {
                        media_ssrc, items, ..
                    },
                ) => {
                    *nacks += 1;
                    let Some(i) = sources.iter().position(|s| s.ssrc == media_ssrc) else {
                        continue;
                    };
                    for seq in items.lost() {
                        // The history is keyed by the 16-bit number here (one publisher session
                        // never sends 65,536 packets within the history's second).
                        if let Ok(p) = histories[i].get(u64::from(seq), now) {
                            let client = &mut t.client;
                            if self
                                .io
                                .send(fd, p, |b, len| client.protect_rtp(b, len).ok())
                            {
                                t.sent += 1;
                            }
                        }
                    }
                }
                (State::Publisher { sources, plis, .. }, Rtcp::Pli { media_ssrc, .. }) => {
                    *plis += 1;
                    if let Some(s) = sources.iter_mut().find(|s| s.ssrc == media_ssrc) {
                        s.request_keyframe();
                    }
                }
                (State::Publisher { sources, plis, .. }, Rtcp::Fir { entries, .. }) => {
                    *plis += 1;
                    for e in entries.chunks_exact(8) {
                        let ssrc = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
                        if let Some(s) = sources.iter_mut().find(|s| s.ssrc == ssrc) {
                            s.request_keyframe();
                        }
                    }
                }
                (State::Subscriber { streams, .. }, Rtcp::SenderReport { ssrc, ntp, .. }) => {
                    if let Some(s) = streams.iter_mut().find(|s| s.ssrc == ssrc) {
                        s.last_sr = Some(((ntp >> 16) as u32, now));
                    }
                }
                _ => {}
            }
        }
    }

    fn timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(Some(t)) = self.transports.get_mut(id) else {
                continue;
            };
            if t.wake != at {
                continue; // superseded by an earlier or later wake
            }
            let next = self.run_transport(id, now);
            if let Some(Some(t)) = self.transports.get_mut(id) {
                t.wake = next;
                self.heap.push(Reverse((next, id)));
            }
        }
    }

    /// A transport's due work; returns when it next has some.
    fn run_transport(&mut self, id: usize, now: Instant) -> Instant {
        let Some(Some(t)) = self.transports.get_mut(id) else {
            return now + Duration::from_secs(3600);
        };
        let fd = t.socket.as_raw_fd();
        t.client.handle_timeout(now);
        let mut out = [0u8; 1500];
        while let Some(n) = t.client.poll_transmit(now, &mut out) {
            if self.io.send(fd, &out[..n], |_, len| Some(len)) {
                t.sent += 1;
            }
        }
        let mut next = t.client.poll_timeout(now);
        if t.client.failure().is_some() {
            return now + Duration::from_secs(3600);
        }
        if t.connected_at.is_none() {
            return next;
        }
        let client = &mut t.client;
        match &mut t.state {
            State::Publisher {
                sources,
                histories,
                next_report,
                ..
            } => {
                if self.publishing {
                    for (s, h) in sources.iter_mut().zip(histories.iter_mut()) {
                        let late = now.saturating_duration_since(s.next_at());
                        if late > self.max_lateness && late < Duration::from_secs(1) {
                            self.max_lateness = late;
                        }
                        let io = &mut self.io;
                        let sent = &mut t.sent;
                        s.poll(now, self.epoch, &mut self.scratch, &mut |p| {
                            let seq = u16::from_be_bytes([p[2], p[3]]);
                            h.insert(u64::from(seq), p, now);
                            if io.send(fd, p, |b, len| client.protect_rtp(b, len).ok()) {
                                *sent += 1;
                            }
                        });
                        next = next.min(s.next_at());
                    }
                }
                if now >= *next_report {
                    *next_report = now + REPORT_INTERVAL;
                    let mut b = [0u8; 512];
                    let mut w = rtcp::Writer::new(&mut b);
                    let ntp = ntp_now();
                    for s in sources.iter() {
                        let _ =
                            w.sender_report(s.ssrc, ntp, s.timestamp_at(now), s.packets, s.octets);
                    }
                    let len = w.len();
                    if len > 0
                        && self
                            .io
                            .send(fd, &b[..len], |buf, n| client.protect_rtcp(buf, n).ok())
                    {
                        t.sent += 1;
                    }
                }
                next = next.min(*next_report);
            }
            State::Subscriber {
                streams,
                next_report,
                next_pli,
                feedback,
                ..
            } => {
                let mut b = [0u8; 1200];
                let mut w = rtcp::Writer::new(&mut b);
                let mut any = false;
                // NACKs for what is missing.
                let mut lost = [0u16; 64];
                for s in streams.iter_mut() {
                    let n = s.due_nacks(now, &mut lost);
                    if n > 0 && w.nack(OUR_SSRC, s.ssrc, &lost[..n]).is_ok() {
                        any = true;
                    }
                    if let Some(at) = s.next_nack(now) {
                        next = next.min(at.max(now + Duration::from_millis(1)));
                    }
                }
                // A decoder waiting for its first keyframe asks for one.
                let connected = t.connected_at.unwrap_or(now);
                let pli_due = next_pli.unwrap_or(connected + PLI_AFTER);
                if streams
                    .iter()
                    .any(|s| s.video && s.first_keyframe_at.is_none())
                {
                    if now >= pli_due {
                        for s in streams
                            .iter()
                            .filter(|s| s.video && s.first_keyframe_at.is_none())
                        {
                            if w.pli(OUR_SSRC, s.ssrc).is_ok() {
                                any = true;
                            }
                        }
                        *next_pli = Some(now + REPORT_INTERVAL);
                    }
                    next = next.min(next_pli.unwrap_or(pli_due));
                }
                if now >= *next_report {
                    *next_report = now + REPORT_INTERVAL;
                    let blocks: Vec<rtcp::ReportBlock> = streams
                        .iter_mut()
                        .filter(|s| s.received > 0)
                        .take(31)
                        .map(|s| s.report_block(now))
                        .collect();
                    if w.receiver_report(OUR_SSRC, &blocks).is_ok() {
                        any = true;
                    }
                }
                next = next.min(*next_report);
                let len = w.len();
                if any
                    && len > 0
                    && self
                        .io
                        .send(fd, &b[..len], |buf, n| client.protect_rtcp(buf, n).ok())
                {
                    t.sent += 1;
                }
                // Transport-wide feedback: each message an RTCP packet of its own (reduced
                // size, as libwebrtc sends it).
                if let Some(f) = feedback {
                    while let Some(n) = f.poll(now, &mut b) {
                        if self
                            .io
                            .send(fd, &b[..n], |buf, n| client.protect_rtcp(buf, n).ok())
                        {
                            t.sent += 1;
                            f.sent += 1;
                        }
                    }
                    next = next.min(f.due());
                }
            }
        }
        next.max(now + Duration::from_micros(100))
    }

    fn publish_live(&mut self) {
        self.live_seq += 1;
        let mut live = Live {
            seq: self.live_seq,
            packets_out: self.io.packets_out,
            p99_us: self.latency.live.value_at_quantile(0.99),
            ..Live::default()
        };
        self.latency.live.reset();
        for t in self.transports.iter().flatten() {
            live.transports += 1;
            if t.connected_at.is_some() {
                live.connected += 1;
            }
            if t.client.failure().is_some() {
                live.failed += 1;
            }
            if let State::Subscriber { streams, .. } = &t.state {
                for s in streams {
                    live.packets_in += s.received;
                    live.bytes_in += s.bytes;
                    live.lost += s.lost();
                    live.streams_flowing += usize::from(s.received > 0);
                    live.nacks += s.nacked;
                }
            }
        }
        if let Ok(mut l) = self.live.lock() {
            *l = live;
        }
    }

    fn report(mut self) -> EngineReport {
        self.publish_live();
        let window = self.measuring.map_or(Duration::ZERO, |t| {
            Instant::now().saturating_duration_since(t)
        });
        let mut transports = Vec::new();
        for (id, t) in self.transports.iter().enumerate() {
            let Some(t) = t else { continue };
            let mut r = TransportReport {
                id,
                participant: t.participant,
                publisher: matches!(t.state, State::Publisher { .. }),
                connected: t.connected_at.is_some(),
                failure: t.client.failure().map(str::to_owned).or_else(|| {
                    t.connected_at
                        .is_none()
                        .then(|| match t.client.check_error() {
                            Some(code) => format!("never connected (ICE check error {code})"),
                            None if t.client.is_checked() => {
                                "never connected (DTLS did not complete)".to_owned()
                            }
                            None => "never connected (no answer to ICE checks)".to_owned(),
                        })
                }),
                connect_time: t
                    .connected_at
                    .map(|c| c.saturating_duration_since(t.added_at)),
                first_frame: t
                    .first_frame
                    .map(|f| f.saturating_duration_since(t.joined_at)),
                signaling_time: t.added_at.saturating_duration_since(t.joined_at),
                frame_wait: t
                    .first_frame
                    .zip(t.connected_at)
                    .map(|(f, c)| f.saturating_duration_since(c)),
                missing_tracks: 0,
                tracks_offered: 0,
                streams: Vec::new(),
                packets_sent: t.sent,
                nacks_received: 0,
                plis_received: 0,
                srtp_failures: t.srtp_failures,
                feedback_sent: 0,
                unknown_ssrc: t.unknown_ssrc,
            };
            match &t.state {
                State::Publisher { nacks, plis, .. } => {
                    r.nacks_received = *nacks;
                    r.plis_received = *plis;
                }
                State::Subscriber {
                    streams,
                    offered,
                    window_start,
                    feedback,
                    ..
                } => {
                    r.feedback_sent = feedback.as_ref().map_or(0, |f| f.sent);
                    r.tracks_offered = offered.len();
                    r.missing_tracks = offered
                        .iter()
                        .filter(|o| !streams.iter().any(|s| s.ssrc == o.ssrc && s.received > 0))
                        .count();
                    for s in streams {
                        let (p0, b0) = window_start
                            .iter()
                            .find(|w| w.0 == s.ssrc)
                            .map_or((0, 0), |w| (w.1, w.2));
                        r.streams.push(StreamReport {
                            ssrc: s.ssrc,
                            video: s.video,
                            expected: s.expected(),
                            received: s.received,
                            lost: s.lost(),
                            duplicates: s.duplicates,
                            recovered: s.recovered,
                            nacked: s.nacked,
                            jitter_ms: s.jitter_ms(),
                            bytes: s.bytes,
                            window_packets: s.received - p0,
                            window_bytes: s.bytes - b0,
                            rtx_received: s.rtx_received,
                        });
                    }
                }
            }
            transports.push(r);
        }
        EngineReport {
            transports,
            latency_audio: self.latency.audio.clone(),
            latency_video: self.latency.video.clone(),
            window,
            max_send_lateness: self.max_lateness,
            send_slots_exhausted: self.io.exhausted,
            packets_decrypted: self.decrypted,
            packets_header_only: self.header_only,
            packets_replayed: self.latency.replayed,
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.io.ring.submitter().unregister_buf_ring(BGID);
    }
}

/// One-way latencies (µs): the window's, by kind, and the last second's for the live line.
struct Latencies {
    audio: Histogram<u64>,
    video: Histogram<u64>,
    live: Histogram<u64>,
    /// Packets sent before their stream's first packet arrived here: a newcomer's keyframe
    /// replayed from the server's history, old on purpose, so not a latency.
    replayed: u64,
}

impl Latencies {
    /// `age` of a packet of stream `s` that arrived at `now`.
    fn record(&mut self, s: &Stream, now: Instant, age: Duration) {
        if s.first_at
            .is_some_and(|first| now.checked_sub(age).is_some_and(|sent| sent < first))
        {
            self.replayed += 1;
            return;
        }
        let us = (age.as_micros() as u64).clamp(1, 60_000_000);
        let h = if s.video {
            &mut self.video
        } else {
            &mut self.audio
        };
        let _ = h.record(us);
        let _ = self.live.record(us);
    }
}

/// The wall clock as a 64-bit NTP timestamp (for sender reports).
fn ntp_now() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    (secs << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}
