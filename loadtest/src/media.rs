//! Synthetic media, sans-IO: what a publisher sends and what a subscriber measures.
//!
//! A `Source` is one outgoing stream: Opus-sized audio (20 ms, 50 packets/s, the RFC 6464
//! audio level) or VP8 at a bitrate and frame rate, with valid RFC 7741 payload descriptors,
//! a keyframe every few seconds (or when asked), and every packet stamped with its send time
//! twice: in the abs-send-time header extension (in the clear, so any packet can be timed) and
//! as 8 bytes in the payload (checked on packets that are decrypted). A `Stream` is one
//! received stream's statistics, and a `TransportFeedback` the transport-wide congestion
//! control feedback a subscriber transport owes Ringcast. No IO, no clock: time comes in as
//! arguments.

use std::time::{Duration, Instant};

use ringcast_cc::twcc::ArrivalRecorder;
use ringcast_media::rtcp::ReportBlock;
use ringcast_media::rtp::RtpPacket;

/// Marks the send timestamp in a payload.
pub const STAMP_MAGIC: [u8; 4] = *b"RCLT";
/// Largest RTP payload a source writes (a keyframe is split into packets of this size).
pub const MAX_PAYLOAD: usize = 1100;
/// A keyframe is this many times a delta frame.
const KEYFRAME_FACTOR: u64 = 6;

/// Header extension ids this stream's SDP negotiated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtIds {
    pub mid: Option<u8>,
    pub rid: Option<u8>,
    pub abs_send_time: Option<u8>,
    pub audio_level: Option<u8>,
    pub transport_cc: Option<u8>,
}

/// Nanoseconds from `epoch` to `at` (the loadtest's one clock).
pub fn nanos_since(epoch: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(epoch).as_nanos() as u64
}

/// abs-send-time (6.18 fixed point seconds, 24 bits) of `at`.
pub fn abs_send_time(epoch: Instant, at: Instant) -> u32 {
    ((nanos_since(epoch, at) << 18) / 1_000_000_000) as u32 & 0x00FF_FFFF
}

/// The time from an abs-send-time value to `now` (modulo its 64 s wrap).
pub fn abs_send_time_age(sent: u32, epoch: Instant, now: Instant) -> Duration {
    let d = abs_send_time(epoch, now).wrapping_sub(sent) & 0x00FF_FFFF;
    Duration::from_nanos((u64::from(d) * 1_000_000_000) >> 18)
}

/// Video leaves through a pacer at this multiple of its bitrate, as libwebrtc's does: a
/// keyframe is spread over tens of milliseconds, not sent as one burst.
pub const PACING_FACTOR: f64 = 2.5;
/// Frames waiting in the pacer at most (more: the oldest is dropped, as an encoder would).
const MAX_PACED_FRAMES: usize = 8;

/// A frame in the pacer: its packets go out one by one.
#[derive(Debug, Clone, Copy)]
struct Frame {
    key: bool,
    ts: u32,
    picture_id: u16,
    packets: usize,
    per: usize,
    next: usize,
}

#[derive(Debug, Clone)]
enum Kind {
    Audio,
    Video {
        fps: u32,
        delta_bytes: usize,
        keyframe_every: u64,
        picture_id: u16,
        force_key: bool,
        /// Bits per second the pacer releases.
        pacing_bps: f64,
        paced: std::collections::VecDeque<Frame>,
        /// When the pacer may send its next packet.
        pacer_free: Instant,
    },
}

/// One outgoing RTP stream.
#[derive(Debug, Clone)]
pub struct Source {
    kind: Kind,
    pub ssrc: u32,
    pub payload_type: u8,
    mid: String,
    rid: Option<String>,
    exts: ExtIds,
    seq: u16,
    ts_base: u32,
    clock_rate: u32,
    start: Instant,
    frames: u64,
    /// Packets and payload bytes sent (for sender reports).
    pub packets: u32,
    pub octets: u32,
}

/// Each packet is written through this.
pub type Emit<'a> = &'a mut dyn FnMut(&[u8]);

impl Source {
    pub fn audio(ssrc: u32, payload_type: u8, mid: &str, exts: ExtIds, start: Instant) -> Self {
        Self::new(
            Kind::Audio,
            ssrc,
            payload_type,
            mid,
            None,
            exts,
            48_000,
            start,
        )
    }

    /// VP8 at `kbps` and `fps`, a keyframe every `keyframe_interval`, paced.
    #[allow(clippy::too_many_arguments)]
    pub fn video(
        ssrc: u32,
        payload_type: u8,
        mid: &str,
        rid: Option<&str>,
        exts: ExtIds,
        kbps: u32,
        fps: u32,
        keyframe_interval: Duration,
        start: Instant,
    ) -> Self {
        let fps = fps.max(1);
        let keyframe_every = (keyframe_interval.as_secs_f64() * f64::from(fps)).max(1.0) as u64;
        let avg = u64::from(kbps) * 1000 / 8 / u64::from(fps);
        // A group of `n` frames holds one keyframe of K deltas: n·avg = (n - 1 + K)·delta.
        let delta = (keyframe_every * avg / (keyframe_every - 1 + KEYFRAME_FACTOR)).max(40);
        let kind = Kind::Video {
            fps,
            delta_bytes: delta as usize,
            keyframe_every,
            picture_id: (ssrc & 0x7FFF) as u16,
            force_key: false,
            pacing_bps: f64::from(kbps.max(1)) * 1000.0 * PACING_FACTOR,
            paced: std::collections::VecDeque::with_capacity(MAX_PACED_FRAMES),
            pacer_free: start,
        };
        Self::new(kind, ssrc, payload_type, mid, rid, exts, 90_000, start)
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: Kind,
        ssrc: u32,
        payload_type: u8,
        mid: &str,
        rid: Option<&str>,
        exts: ExtIds,
        clock_rate: u32,
        start: Instant,
    ) -> Self {
        Source {
            kind,
            ssrc,
            payload_type,
            mid: mid.to_owned(),
            rid: rid.map(str::to_owned),
            exts,
            seq: (ssrc >> 16) as u16,
            ts_base: ssrc.rotate_left(7),
            clock_rate,
            start,
            frames: 0,
            packets: 0,
            octets: 0,
        }
    }

    fn frame_interval(&self) -> Duration {
        match self.kind {
            Kind::Audio => Duration::from_millis(20),
            Kind::Video { fps, .. } => Duration::from_secs(1) / fps,
        }
    }

    fn next_frame_at(&self) -> Instant {
        self.start + self.frame_interval() * self.frames as u32
    }

    /// When `poll` next has a packet to send: the next frame, or the pacer's next packet.
    pub fn next_at(&self) -> Instant {
        let frame = self.next_frame_at();
        match &self.kind {
            Kind::Video {
                paced, pacer_free, ..
            } if !paced.is_empty() => frame.min(*pacer_free),
            _ => frame,
        }
    }

    /// The RTP timestamp of frame `n`.
    fn timestamp(&self, frame: u64) -> u32 {
        let ticks = self.frame_interval().as_secs_f64() * f64::from(self.clock_rate);
        self.ts_base
            .wrapping_add((frame as f64 * ticks) as u64 as u32)
    }

    /// The RTP timestamp now, for a sender report.
    pub fn timestamp_at(&self, now: Instant) -> u32 {
        let secs = now.saturating_duration_since(self.start).as_secs_f64();
        self.ts_base
            .wrapping_add((secs * f64::from(self.clock_rate)) as u64 as u32)
    }

    /// Frames leave as one burst, as senders without a pacer (aiortc, GStreamer) send them.
    pub fn unpace(&mut self) {
        if let Kind::Video { pacing_bps, .. } = &mut self.kind {
            *pacing_bps = f64::INFINITY;
        }
    }

    /// The next video frame is a keyframe (a PLI or FIR arrived).
    pub fn request_keyframe(&mut self) {
        if let Kind::Video { force_key, .. } = &mut self.kind {
            *force_key = true;
        }
    }

    /// Captures every frame due by `now` and sends what the pacer lets out. A loop that fell
    /// behind by more than a second skips ahead rather than bursting.
    pub fn poll(&mut self, now: Instant, epoch: Instant, buf: &mut [u8], emit: Emit<'_>) {
        if now.saturating_duration_since(self.next_frame_at()) > Duration::from_secs(1) {
            let behind = now.saturating_duration_since(self.start).as_secs_f64()
                / self.frame_interval().as_secs_f64();
            self.frames = behind as u64;
        }
        while self.next_frame_at() <= now {
            let frame = self.frames;
            let at = self.next_frame_at();
            self.frames += 1;
            self.capture(frame, at, now, epoch, buf, emit);
        }
        self.send_paced(now, epoch, buf, emit);
    }

    /// Frame `frame`, due at `at`: audio goes at once, video into the pacer.
    fn capture(
        &mut self,
        frame: u64,
        at: Instant,
        now: Instant,
        epoch: Instant,
        buf: &mut [u8],
        emit: Emit<'_>,
    ) {
        let ts = self.timestamp(frame);
        match &mut self.kind {
            Kind::Audio => {
                // Opus at ~32 kb/s: 80 bytes per 20 ms; a talking level most of the time.
                let level = if frame % 50 < 40 { 30 } else { 127 };
                let n = write_packet(
                    buf,
                    &Header {
                        pt: self.payload_type,
                        seq: self.seq,
                        ts,
                        ssrc: self.ssrc,
                        marker: false,
                        exts: self.exts,
                        mid: &self.mid,
                        rid: self.rid.as_deref(),
                        abs_send_time: abs_send_time(epoch, now),
                        audio_level: Some(0x80 | level),
                    },
                    &[],
                    nanos_since(epoch, now),
                    80,
                );
                self.seq = self.seq.wrapping_add(1);
                self.packets = self.packets.wrapping_add(1);
                self.octets = self.octets.wrapping_add(80);
                emit(&buf[..n]);
            }
            Kind::Video {
                delta_bytes,
                keyframe_every,
                picture_id,
                force_key,
                paced,
                pacer_free,
                ..
            } => {
                let key = frame.is_multiple_of(*keyframe_every) || *force_key;
                *force_key = false;
                let size = if key {
                    *delta_bytes * KEYFRAME_FACTOR as usize
                } else {
                    *delta_bytes
                };
                let packets = size.div_ceil(MAX_PAYLOAD).max(1);
                *picture_id = (*picture_id + 1) & 0x7FFF;
                if paced.len() == MAX_PACED_FRAMES {
                    paced.pop_front();
                }
                if paced.is_empty() {
                    *pacer_free = (*pacer_free).max(at);
                }
                paced.push_back(Frame {
                    key,
                    ts,
                    picture_id: *picture_id,
                    packets,
                    per: size.div_ceil(packets),
                    next: 0,
                });
            }
        }
    }

    /// Sends the packets the pacer releases by `now`.
    fn send_paced(&mut self, now: Instant, epoch: Instant, buf: &mut [u8], emit: Emit<'_>) {
        let Kind::Video {
            paced,
            pacer_free,
            pacing_bps,
            ..
        } = &mut self.kind
        else {
            return;
        };
        while *pacer_free <= now {
            let Some(f) = paced.front_mut() else { break };
            let i = f.next;
            let first = i == 0;
            // RFC 7741 §4.2: X=1, S on the first packet, PID 0; I=1, M=1: a 15-bit PictureID.
            let mut desc = [0u8; 14];
            desc[0] = 0x80 | if first { 0x10 } else { 0 };
            desc[1] = 0x80;
            desc[2] = 0x80 | (f.picture_id >> 8) as u8;
            desc[3] = f.picture_id as u8;
            let mut d = 4;
            if first {
                // §4.3: the frame tag; P (bit 0) is 0 for a keyframe, show_frame set.
                desc[4] = if f.key { 0x10 } else { 0x11 };
                d = 7;
                if f.key {
                    // The keyframe start code and a 640x360 frame.
                    desc[7..14].copy_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
                    d = 14;
                }
            }
            let n = write_packet(
                buf,
                &Header {
                    pt: self.payload_type,
                    seq: self.seq,
                    ts: f.ts,
                    ssrc: self.ssrc,
                    marker: i + 1 == f.packets,
                    exts: self.exts,
                    mid: &self.mid,
                    rid: self.rid.as_deref(),
                    abs_send_time: abs_send_time(epoch, now),
                    audio_level: None,
                },
                &desc[..d],
                nanos_since(epoch, now),
                f.per,
            );
            self.seq = self.seq.wrapping_add(1);
            self.packets = self.packets.wrapping_add(1);
            self.octets = self.octets.wrapping_add(f.per as u32);
            *pacer_free += Duration::from_secs_f64((n * 8) as f64 / *pacing_bps);
            f.next += 1;
            if f.next == f.packets {
                paced.pop_front();
            }
            emit(&buf[..n]);
        }
        if paced.is_empty() {
            *pacer_free = (*pacer_free).max(now);
        }
    }
}

struct Header<'a> {
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    marker: bool,
    exts: ExtIds,
    mid: &'a str,
    rid: Option<&'a str>,
    abs_send_time: u32,
    audio_level: Option<u8>,
}

/// Writes one RTP packet: header, one-byte header extensions, `prefix` (payload descriptor),
/// the stamp (magic + 8 bytes), then filler up to `payload` bytes. Returns the length.
fn write_packet(
    buf: &mut [u8],
    h: &Header<'_>,
    prefix: &[u8],
    stamp: u64,
    payload: usize,
) -> usize {
    buf[0] = 0x80;
    buf[1] = h.pt | if h.marker { 0x80 } else { 0 };
    buf[2..4].copy_from_slice(&h.seq.to_be_bytes());
    buf[4..8].copy_from_slice(&h.ts.to_be_bytes());
    buf[8..12].copy_from_slice(&h.ssrc.to_be_bytes());
    let mut at = 16;
    let mut ext = |id: Option<u8>, data: &[u8], at: &mut usize| {
        if let Some(id) = id
            && !data.is_empty()
            && data.len() <= 16
        {
            buf[*at] = (id << 4) | (data.len() as u8 - 1);
            buf[*at + 1..*at + 1 + data.len()].copy_from_slice(data);
            *at += 1 + data.len();
        }
    };
    ext(
        h.exts.abs_send_time,
        &h.abs_send_time.to_be_bytes()[1..],
        &mut at,
    );
    ext(h.exts.mid, h.mid.as_bytes(), &mut at);
    if let Some(rid) = h.rid {
        ext(h.exts.rid, rid.as_bytes(), &mut at);
    }
    if let Some(level) = h.audio_level {
        ext(h.exts.audio_level, &[level], &mut at);
    }
    if at > 16 {
        while (at - 16) % 4 != 0 {
            buf[at] = 0;
            at += 1;
        }
        buf[0] |= 0x10;
        buf[12..14].copy_from_slice(&[0xBE, 0xDE]);
        buf[14..16].copy_from_slice(&(((at - 16) / 4) as u16).to_be_bytes());
    } else {
        at = 12;
    }
    let body = at;
    buf[at..at + prefix.len()].copy_from_slice(prefix);
    at += prefix.len();
    buf[at..at + 4].copy_from_slice(&STAMP_MAGIC);
    buf[at + 4..at + 12].copy_from_slice(&stamp.to_be_bytes());
    at += 12;
    let end = (body + payload).max(at);
    buf[at..end].fill(0x55);
    end
}

/// The send stamp in a decrypted payload, if it has one (within its first 32 bytes).
pub fn find_stamp(payload: &[u8]) -> Option<u64> {
    let head = &payload[..payload.len().min(32)];
    let at = head.windows(4).position(|w| w == STAMP_MAGIC)?;
    let b = payload.get(at + 4..at + 12)?;
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// Whether a VP8 payload starts a keyframe (as the server decides it).
pub fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    ringcast_media::keyframe::starts_keyframe(ringcast_control::codec::CodecName::Vp8, payload)
}

/// Packets a stream tracks as missing at most (a longer gap is counted lost at once).
const MAX_MISSING: usize = 128;
/// A missing packet is NACKed at most this often, this many times.
const NACK_RETRY: Duration = Duration::from_millis(30);
const NACK_TRIES: u8 = 4;
/// Received sequence numbers remembered for duplicate detection.
const DUP_WINDOW: u64 = 1024;

#[derive(Debug, Clone, Copy)]
struct Missing {
    ext: u64,
    last_nack: Option<Instant>,
    tries: u8,
}

/// One received stream.
#[derive(Debug, Clone)]
pub struct Stream {
    pub ssrc: u32,
    pub video: bool,
    /// The abs-send-time extension's id on this stream, if negotiated.
    pub abs_send_time_ext: Option<u8>,
    /// The SSRC of the RTX stream that repairs this one, if negotiated.
    pub rtx_ssrc: Option<u32>,
    /// RTX packets received: bandwidth probes and repairs alike (those that brought a missing
    /// packet are also in `received` and `recovered`, as a plain retransmission would be).
    pub rtx_received: u64,
    clock_rate: u32,
    base: Option<u64>,
    highest: u64,
    pub received: u64,
    pub duplicates: u64,
    pub bytes: u64,
    /// Missing packets that arrived later (repairs, reordering).
    pub recovered: u64,
    pub nacked: u64,
    seen: [u64; (DUP_WINDOW / 64) as usize],
    missing: Vec<Missing>,
    /// RFC 3550 interarrival jitter, in timestamp units.
    jitter: f64,
    last_transit: Option<i64>,
    pub first_at: Option<Instant>,
    pub first_keyframe_at: Option<Instant>,
    interval: ringcast_media::rtcp::ReportInterval,
    /// The middle of the last sender report's NTP time, and when it arrived.
    pub last_sr: Option<(u32, Instant)>,
}

/// What one packet told the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub duplicate: bool,
    /// The packet left a gap before it (new packets to NACK).
    pub gap: bool,
}

impl Stream {
    pub fn new(ssrc: u32, video: bool, clock_rate: u32) -> Self {
        Stream {
            ssrc,
            video,
            abs_send_time_ext: None,
            rtx_ssrc: None,
            rtx_received: 0,
            clock_rate: clock_rate.max(1),
            base: None,
            highest: 0,
            received: 0,
            duplicates: 0,
            bytes: 0,
            recovered: 0,
            nacked: 0,
            seen: [0; (DUP_WINDOW / 64) as usize],
            missing: Vec::with_capacity(MAX_MISSING),
            jitter: 0.0,
            last_transit: None,
            first_at: None,
            first_keyframe_at: None,
            interval: Default::default(),
            last_sr: None,
        }
    }

    fn bit(&mut self, ext: u64) -> (&mut u64, u64) {
        let i = (ext % DUP_WINDOW) as usize;
        (&mut self.seen[i / 64], 1 << (i % 64))
    }

    /// A packet arrived at `now`; `keyframe`: it starts a keyframe.
    pub fn on_packet(
        &mut self,
        seq: u16,
        ts: u32,
        len: usize,
        keyframe: bool,
        now: Instant,
        epoch: Instant,
    ) -> Arrival {
        let ext = match self.base {
            None => {
                let e = u64::from(seq) | (1 << 32);
                self.base = Some(e);
                self.highest = e;
                self.first_at = Some(now);
                let (w, b) = self.bit(e);
                *w |= b;
                self.account(ts, len, keyframe, now, epoch);
                return Arrival {
                    duplicate: false,
                    gap: false,
                };
            }
            Some(_) => ringcast_media::sequence::extend(self.highest, seq),
        };
        let mut gap = false;
        if ext > self.highest {
            // Forget the window's numbers that this packet moves past.
            let from = self.highest + 1;
            if ext - self.highest >= DUP_WINDOW {
                self.seen = [0; (DUP_WINDOW / 64) as usize];
            } else {
                for e in from..=ext {
                    let (w, b) = self.bit(e);
                    *w &= !b;
                }
            }
            for e in from..ext {
                if self.missing.len() < MAX_MISSING {
                    self.missing.push(Missing {
                        ext: e,
                        last_nack: None,
                        tries: 0,
                    });
                    gap = true;
                }
            }
            self.highest = ext;
        } else if self.highest - ext >= DUP_WINDOW || self.base.is_some_and(|b| ext < b) {
            // Too old to tell: count it as a duplicate rather than a new packet.
            self.duplicates += 1;
            return Arrival {
                duplicate: true,
                gap: false,
            };
        }
        let (w, b) = self.bit(ext);
        if *w & b != 0 {
            self.duplicates += 1;
            return Arrival {
                duplicate: true,
                gap: false,
            };
        }
        *w |= b;
        if let Some(i) = self.missing.iter().position(|m| m.ext == ext) {
            self.missing.swap_remove(i);
            self.recovered += 1;
        }
        self.account(ts, len, keyframe, now, epoch);
        Arrival {
            duplicate: false,
            gap,
        }
    }

    /// Whether packets are missing (an RTX packet may then carry one of them).
    pub fn has_missing(&self) -> bool {
        !self.missing.is_empty()
    }

    /// An RTX packet of this stream arrived at `now`. Only counted, unless it carries `osn`,
    /// the original sequence number, of a packet still missing (its RFC 4588 payload read,
    /// `keyframe` and `len` the original's): then it is that packet, repaired. Probes copy
    /// packets already received, and nothing an RTX packet says is a gap, a duplicate or a
    /// jump of the media stream. Returns whether it repaired a packet.
    pub fn on_rtx(
        &mut self,
        osn: Option<u16>,
        ts: u32,
        len: usize,
        keyframe: bool,
        now: Instant,
        epoch: Instant,
    ) -> bool {
        self.rtx_received += 1;
        let Some(osn) = osn else { return false };
        if self.base.is_none() {
            return false;
        }
        let ext = ringcast_media::sequence::extend(self.highest, osn);
        if !self.missing.iter().any(|m| m.ext == ext) {
            return false;
        }
        let arrival = self.on_packet(osn, ts, len, keyframe, now, epoch);
        !arrival.duplicate
    }

    fn account(&mut self, ts: u32, len: usize, keyframe: bool, now: Instant, epoch: Instant) {
        self.received += 1;
        self.bytes += len as u64;
        if keyframe && self.first_keyframe_at.is_none() {
            self.first_keyframe_at = Some(now);
        }
        // RFC 3550 A.8, arrival in timestamp units.
        let arrival =
            (nanos_since(epoch, now) as u128 * u128::from(self.clock_rate) / 1_000_000_000) as i64;
        let transit = arrival - i64::from(ts);
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// Packets expected from the first to the highest received.
    pub fn expected(&self) -> u64 {
        self.base.map_or(0, |b| self.highest - b + 1)
    }

    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / f64::from(self.clock_rate)
    }

    /// The missing packets due for a NACK now (16-bit numbers into `out`); returns how many.
    pub fn due_nacks(&mut self, now: Instant, out: &mut [u16]) -> usize {
        self.missing.retain(|m| m.tries < NACK_TRIES);
        let mut n = 0;
        for m in &mut self.missing {
            if n == out.len() {
                break;
            }
            if m.last_nack
                .is_none_or(|t| now.saturating_duration_since(t) >= NACK_RETRY)
            {
                m.last_nack = Some(now);
                m.tries += 1;
                out[n] = m.ext as u16;
                n += 1;
            }
        }
        self.nacked += n as u64;
        n
    }

    /// When a missing packet is next due for a NACK (`now` for one never asked for).
    pub fn next_nack(&self, now: Instant) -> Option<Instant> {
        self.missing
            .iter()
            .filter(|m| m.tries < NACK_TRIES)
            .map(|m| m.last_nack.map_or(now, |t| t + NACK_RETRY))
            .min()
    }

    /// A receiver report block for this stream (RFC 3550 §6.4.1), advancing the interval.
    pub fn report_block(&mut self, now: Instant) -> ReportBlock {
        let expected = self.expected();
        let fraction = self.interval.fraction_lost(expected, self.received);
        let (lsr, dlsr) = self.last_sr.map_or((0, 0), |(mid, at)| {
            (
                mid,
                (now.saturating_duration_since(at).as_secs_f64() * 65536.0) as u32,
            )
        });
        ReportBlock {
            ssrc: self.ssrc,
            fraction_lost: fraction,
            cumulative_lost: self.lost().min(0x7F_FFFF) as i32,
            highest_seq: (self.highest & 0xFFFF_FFFF) as u32,
            jitter: self.jitter as u32,
            last_sr: lsr,
            delay_since_last_sr: dlsr,
        }
    }
}

/// How often a subscriber transport sends transport-wide feedback (as libwebrtc does, about).
pub const FEEDBACK_INTERVAL: Duration = Duration::from_millis(100);
/// Transport-wide sequence numbers a subscriber transport remembers until they are reported.
const FEEDBACK_WINDOW: usize = 2048;

/// A subscriber transport's transport-wide congestion control feedback: the arrival of every
/// packet stamped with a transport-wide sequence number (probes and repairs too), reported
/// every `FEEDBACK_INTERVAL`. Allocated once per transport; recording never allocates.
#[derive(Debug)]
pub struct TransportFeedback {
    recorder: ArrivalRecorder,
    /// The header extension's id on this transport.
    ext: u8,
    due: Instant,
    /// Messages handed to the socket.
    pub sent: u64,
}

impl TransportFeedback {
    /// Feedback from `sender_ssrc` (ours) about `media_ssrc` (the first stream offered), for
    /// sequence numbers under extension `ext`; the first is due an interval after `now`.
    pub fn new(sender_ssrc: u32, media_ssrc: u32, ext: u8, now: Instant) -> Self {
        TransportFeedback {
            recorder: ArrivalRecorder::new(sender_ssrc, media_ssrc, FEEDBACK_WINDOW),
            ext,
            due: now + FEEDBACK_INTERVAL,
            sent: 0,
        }
    }

    /// A renegotiation may move the extension's id.
    pub fn set_ext(&mut self, ext: u8) {
        self.ext = ext;
    }

    /// A packet arrived at `now` (its header is read in the clear, so it need not be decrypted).
    pub fn on_packet(&mut self, p: &RtpPacket<'_>, now: Instant) {
        if let Some(&[hi, lo]) = p.extension(self.ext) {
            self.recorder.on_packet(u16::from_be_bytes([hi, lo]), now);
        }
    }

    /// When the next feedback is due.
    pub fn due(&self) -> Instant {
        self.due
    }

    /// Writes the next feedback message due at `now` into `buf` (one RTCP packet, at most
    /// `buf.len()` bytes) and returns its length; call until `None`, which also schedules the
    /// next interval.
    pub fn poll(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if now < self.due {
            return None;
        }
        match self.recorder.poll_feedback(buf) {
            Ok(Some(n)) => Some(n),
            Ok(None) | Err(_) => {
                self.due = now + FEEDBACK_INTERVAL;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(p: &[u8]) -> ringcast_media::rtp::RtpPacket<'_> {
        ringcast_media::rtp::RtpPacket::parse(p).unwrap()
    }

    #[test]
    fn video_frames_have_descriptors_keyframes_and_stamps() {
        let t0 = Instant::now();
        let exts = ExtIds {
            mid: Some(4),
            abs_send_time: Some(2),
            ..ExtIds::default()
        };
        let mut v = Source::video(
            0x1234,
            96,
            "1",
            None,
            exts,
            1000,
            30,
            Duration::from_secs(2),
            t0,
        );
        let mut packets: Vec<Vec<u8>> = Vec::new();
        let mut buf = [0u8; 1500];
        for ms in (0..2000).step_by(10) {
            v.poll(t0 + Duration::from_millis(ms), t0, &mut buf, &mut |p| {
                packets.push(p.to_vec())
            });
        }
        // 60 frames in 2 s (frame 0 at t0 through frame 59 at 1966 ms).
        let frames: std::collections::BTreeSet<u32> =
            packets.iter().map(|p| parse(p).timestamp).collect();
        assert_eq!(frames.len(), 60);
        let first = parse(&packets[0]);
        assert!(vp8_starts_keyframe(first.payload), "frame 0 is a keyframe");
        assert_eq!(first.extension(4), Some(&b"1"[..]));
        assert!(first.extension(2).is_some());
        assert!(find_stamp(first.payload).is_some());
        let keys = packets
            .iter()
            .filter(|p| vp8_starts_keyframe(parse(p).payload))
            .count();
        assert_eq!(keys, 1, "one keyframe per 2 s");
        // The bitrate: about 1 Mb/s of payload over the 2 s.
        let bytes: usize = packets.iter().map(|p| parse(p).payload.len()).sum();
        assert!((200_000..=300_000).contains(&bytes), "{bytes} bytes in 2 s");
        // Consecutive sequence numbers, marker on each frame's last packet.
        for w in packets.windows(2) {
            assert_eq!(parse(&w[1]).sequence, parse(&w[0]).sequence.wrapping_add(1));
        }
        assert!(
            packets
                .iter()
                .all(|p| p.len() <= 12 + 12 + MAX_PAYLOAD + 16)
        );
        // The keyframe (6 deltas, ~5 packets at 1 Mb/s) leaves over ~15 ms, not at once.
        let mut v2 = Source::video(9, 96, "1", None, exts, 1000, 30, Duration::from_secs(2), t0);
        let mut at_start = 0;
        v2.poll(t0, t0, &mut buf, &mut |_| at_start += 1);
        assert_eq!(at_start, 1, "one packet at the frame time, the rest paced");
        assert!(v2.next_at() > t0 && v2.next_at() < t0 + Duration::from_millis(5));
        // A PLI makes the next frame a keyframe.
        v.request_keyframe();
        packets.clear();
        v.poll(t0 + Duration::from_millis(2040), t0, &mut buf, &mut |p| {
            packets.push(p.to_vec())
        });
        assert!(vp8_starts_keyframe(parse(&packets[0]).payload));
    }

    #[test]
    fn audio_is_50_packets_a_second_with_a_level() {
        let t0 = Instant::now();
        let exts = ExtIds {
            audio_level: Some(3),
            ..ExtIds::default()
        };
        let mut a = Source::audio(7, 111, "0", exts, t0);
        let mut n = 0;
        let mut buf = [0u8; 1500];
        for ms in (0..1000).step_by(5) {
            a.poll(t0 + Duration::from_millis(ms), t0, &mut buf, &mut |p| {
                assert!(parse(p).extension(3).is_some());
                n += 1;
            });
        }
        assert_eq!(n, 50);
        // A loop that stalled for seconds resumes on schedule instead of bursting.
        let mut late = 0;
        a.poll(t0 + Duration::from_secs(5), t0, &mut buf, &mut |_| {
            late += 1
        });
        assert_eq!(late, 1);
    }

    #[test]
    fn streams_count_loss_duplicates_and_repairs() {
        let t0 = Instant::now();
        let mut s = Stream::new(1, true, 90_000);
        for seq in [10u16, 11, 13, 14, 14, 12, 16] {
            s.on_packet(seq, u32::from(seq) * 3000, 100, seq == 10, t0, t0);
        }
        assert_eq!(s.expected(), 7);
        assert_eq!(s.received, 6);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.lost(), 1, "15 never came");
        assert_eq!(s.recovered, 1, "12 came late");
        let mut out = [0u16; 8];
        assert_eq!(s.due_nacks(t0, &mut out), 1);
        assert_eq!(out[0], 15);
        assert_eq!(
            s.due_nacks(t0, &mut out),
            0,
            "not again within the retry time"
        );
        assert_eq!(s.due_nacks(t0 + NACK_RETRY, &mut out), 1);
        assert!(s.first_keyframe_at.is_some());
        let b = s.report_block(t0);
        assert_eq!(b.cumulative_lost, 1);
        assert_eq!(b.fraction_lost, (256 / 7) as u8);
    }

    #[test]
    fn rtx_is_counted_apart_and_repairs_only_what_is_missing() {
        let t0 = Instant::now();
        let mut s = Stream::new(1, true, 90_000);
        s.rtx_ssrc = Some(2);
        let rtx = |s: &mut Stream, osn: Option<u16>| s.on_rtx(osn, 0, 100, false, t0, t0);
        assert!(!rtx(&mut s, Some(5)), "before the stream's first packet");
        for seq in [10u16, 11, 13] {
            s.on_packet(seq, u32::from(seq) * 3000, 100, seq == 10, t0, t0);
        }
        // Probes: copies of packets that arrived, an RTX without a payload, a number far off.
        assert!(!rtx(&mut s, Some(11)));
        assert!(!rtx(&mut s, Some(13)));
        assert!(!rtx(&mut s, None));
        assert!(!rtx(&mut s, Some(40_000)));
        assert!(!rtx(&mut s, Some(14)), "ahead of the stream: not a gap");
        assert_eq!((s.expected(), s.received, s.lost()), (4, 3, 1));
        assert_eq!((s.duplicates, s.recovered), (0, 0));
        assert!(s.has_missing());
        // The repair of 12, then a probe copy of it.
        assert!(rtx(&mut s, Some(12)));
        assert!(!rtx(&mut s, Some(12)));
        assert_eq!((s.expected(), s.received, s.lost()), (4, 4, 0));
        assert_eq!((s.duplicates, s.recovered), (0, 1));
        assert!(!s.has_missing());
        assert_eq!(s.rtx_received, 8);
        // The media stream goes on from where it was.
        let a = s.on_packet(14, 14 * 3000, 100, false, t0, t0);
        assert!(!a.duplicate && !a.gap);
        assert_eq!((s.expected(), s.lost()), (5, 0));
    }

    #[test]
    fn streams_survive_wraps_and_jumps() {
        let t0 = Instant::now();
        let mut s = Stream::new(1, false, 48_000);
        for seq in (65530u16..=65535).chain(0..5) {
            s.on_packet(seq, 0, 10, false, t0, t0);
        }
        assert_eq!((s.expected(), s.received, s.lost()), (11, 11, 0));
        s.on_packet(30_000, 0, 10, false, t0, t0);
        assert_eq!(s.received, 12);
        assert!(s.lost() > 1000, "a jump is loss");
    }

    #[test]
    fn transport_feedback_reports_every_interval() {
        use ringcast_cc::twcc::Feedback;
        let t0 = Instant::now();
        let mut f = TransportFeedback::new(0x10, 0x20, 3, t0);
        // Packets with the sequence number as one-byte extension 3, one without it.
        let mut buf = [0u8; 64];
        let mut packet = |seq: u16, ext: u8| -> Vec<u8> {
            buf[0] = 0x90;
            buf[1] = 96;
            buf[12..16].copy_from_slice(&[0xBE, 0xDE, 0, 1]);
            buf[16] = (ext << 4) | 1;
            buf[17..19].copy_from_slice(&seq.to_be_bytes());
            buf[19] = 0;
            buf[..24].to_vec()
        };
        for (i, seq) in [100u16, 101, 103].into_iter().enumerate() {
            let at = t0 + Duration::from_millis(10 * i as u64);
            f.on_packet(&parse(&packet(seq, 3)), at);
        }
        f.on_packet(&parse(&packet(102, 5)), t0 + Duration::from_millis(5));
        let mut out = [0u8; 1200];
        assert_eq!(
            f.poll(t0 + Duration::from_millis(50), &mut out),
            None,
            "not yet due"
        );
        let at = t0 + FEEDBACK_INTERVAL;
        let n = f.poll(at, &mut out).unwrap();
        let fb = Feedback::parse(&out[..n]).unwrap();
        assert_eq!((fb.sender_ssrc(), fb.media_ssrc()), (0x10, 0x20));
        let got: Vec<(u16, bool)> = fb
            .packets()
            .map(|s| (s.seq, s.received.is_some()))
            .collect();
        assert_eq!(got, [(100, true), (101, true), (102, false), (103, true)]);
        assert_eq!(f.poll(at, &mut out), None, "all reported");
        assert_eq!(f.due(), at + FEEDBACK_INTERVAL);
        assert_eq!(f.poll(f.due(), &mut out), None, "nothing new to report");
    }

    #[test]
    fn abs_send_time_measures_age() {
        let t0 = Instant::now();
        let sent = abs_send_time(t0, t0 + Duration::from_secs(70));
        let age = abs_send_time_age(sent, t0, t0 + Duration::from_millis(70_012));
        assert!((age.as_micros() as i64 - 12_000).abs() < 10, "{age:?}");
    }
}
