//! Per-shard counters: plain integers on the hot path, published to the `metrics` registry
//! once per sweep (no label lookup, atomic or lock per packet).

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    UnknownFirstByte,
    UnknownSource,
    Oversize,
    MalformedStun,
    MalformedRtp,
    DtlsNotReady,
    SrtpNotReady,
    SrtpAuth,
    SrtpReplay,
    SendFailed,
    SendQueueFull,
}

impl DropReason {
    pub const ALL: [DropReason; 11] = [
        DropReason::UnknownFirstByte,
        DropReason::UnknownSource,
        DropReason::Oversize,
        DropReason::MalformedStun,
        DropReason::MalformedRtp,
        DropReason::DtlsNotReady,
        DropReason::SrtpNotReady,
        DropReason::SrtpAuth,
        DropReason::SrtpReplay,
        DropReason::SendFailed,
        DropReason::SendQueueFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownFirstByte => "unknown_first_byte",
            DropReason::UnknownSource => "unknown_source",
            DropReason::Oversize => "oversize",
            DropReason::MalformedStun => "malformed_stun",
            DropReason::MalformedRtp => "malformed_rtp",
            DropReason::DtlsNotReady => "dtls_not_ready",
            DropReason::SrtpNotReady => "srtp_not_ready",
            DropReason::SrtpAuth => "srtp_auth_failed",
            DropReason::SrtpReplay => "srtp_replay",
            DropReason::SendFailed => "send_failed",
            DropReason::SendQueueFull => "send_queue_full",
        }
    }
}

/// Counters since the last publish.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub stun_requests: u64,
    pub stun_failures: u64,
    pub dtls_in: u64,
    pub dtls_ok: u64,
    pub dtls_failed: u64,
    /// Associations whose OpenSSL state was freed once the peer proved it had our keys.
    pub dtls_settled: u64,
    pub rtp_in: u64,
    pub rtcp_in: u64,
    pub rtp_forwarded: u64,
    /// Sweeps that held datagrams back until sends completed (the outbox was short of slots).
    pub sweeps_yielded: u64,
    /// Datagrams the pacer held back before sending.
    pub paced: u64,
    pub drops: [u64; DropReason::ALL.len()],
    /// Handshake durations (seconds) since the last publish; at most `MAX_DURATIONS` kept.
    pub dtls_durations: Vec<f64>,
}

/// Handshakes remembered between publishes (a bound; more in 250 ms are not recorded).
const MAX_DURATIONS: usize = 256;

impl ShardStats {
    pub fn drop(&mut self, why: DropReason) {
        self.drops[why as usize] += 1;
    }

    pub fn dropped(&self, why: DropReason) -> u64 {
        self.drops[why as usize]
    }

    pub fn record_handshake(&mut self, d: std::time::Duration) {
        if self.dtls_durations.len() < MAX_DURATIONS {
            self.dtls_durations.push(d.as_secs_f64());
        }
    }
}

/// Registered metric handles of one shard.
pub struct ShardMetrics {
    packets_in: Counter,
    bytes_in: Counter,
    packets_out: Counter,
    bytes_out: Counter,
    stun_requests: Counter,
    stun_failures: Counter,
    dtls_ok: Counter,
    dtls_failed: Counter,
    dtls_settled: Counter,
    rtp_in: Counter,
    rtcp_in: Counter,
    rtp_forwarded: Counter,
    sweeps_yielded: Counter,
    paced: Counter,
    drops: Vec<Counter>,
    transports: Gauge,
    slots_touched: Gauge,
    slots: Gauge,
    batch: Histogram,
    dtls_duration: Histogram,
    sweep: Histogram,
}

impl ShardMetrics {
    pub fn register(shard: u16, backend: &'static str) -> Self {
        let s = shard.to_string();
        gauge!("ringcast_shard_info", "shard" => s.clone(), "backend" => backend).set(1.0);
        ShardMetrics {
            packets_in: counter!("ringcast_packets_in_total", "shard" => s.clone()),
            bytes_in: counter!("ringcast_bytes_in_total", "shard" => s.clone()),
            packets_out: counter!("ringcast_packets_out_total", "shard" => s.clone()),
            bytes_out: counter!("ringcast_bytes_out_total", "shard" => s.clone()),
            stun_requests: counter!("ringcast_stun_checks_total", "shard" => s.clone()),
            stun_failures: counter!("ringcast_stun_check_failures_total", "shard" => s.clone()),
            dtls_ok: counter!("ringcast_dtls_handshakes_total", "shard" => s.clone(), "result" => "ok"),
            dtls_failed: counter!("ringcast_dtls_handshakes_total", "shard" => s.clone(), "result" => "failed"),
            dtls_settled: counter!("ringcast_dtls_settled_total", "shard" => s.clone()),
            rtp_in: counter!("ringcast_srtp_packets_in_total", "shard" => s.clone(), "kind" => "rtp"),
            rtcp_in: counter!("ringcast_srtp_packets_in_total", "shard" => s.clone(), "kind" => "rtcp"),
            rtp_forwarded: counter!("ringcast_rtp_forwarded_total", "shard" => s.clone()),
            sweeps_yielded: counter!("ringcast_shard_sweeps_yielded_total", "shard" => s.clone()),
            paced: counter!("ringcast_paced_datagrams_total", "shard" => s.clone()),
            drops: DropReason::ALL
                .iter()
                .map(|d| counter!("ringcast_drops_total", "shard" => s.clone(), "reason" => d.as_str()))
                .collect(),
            transports: gauge!("ringcast_shard_transports", "shard" => s.clone()),
            slots_touched: gauge!("ringcast_send_slots_resident", "shard" => s.clone()),
            slots: gauge!("ringcast_send_slots", "shard" => s.clone()),
            batch: histogram!("ringcast_shard_sweep_batch_size", "shard" => s.clone()),
            dtls_duration: histogram!("ringcast_dtls_handshake_seconds", "shard" => s.clone()),
            sweep: histogram!("ringcast_shard_forwarding_seconds", "shard" => s),
        }
    }

    /// Adds `stats` to the registry and zeroes it.
    pub fn publish(&self, stats: &mut ShardStats, transports: usize) {
        for d in stats.dtls_durations.drain(..) {
            self.dtls_duration.record(d);
        }
        let durations = std::mem::take(&mut stats.dtls_durations);
        let s = std::mem::take(stats);
        // Keep the (empty) buffer's capacity for the next period.
        stats.dtls_durations = durations;
        self.packets_in.increment(s.packets_in);
        self.bytes_in.increment(s.bytes_in);
        self.packets_out.increment(s.packets_out);
        self.bytes_out.increment(s.bytes_out);
        self.stun_requests.increment(s.stun_requests);
        self.stun_failures.increment(s.stun_failures);
        self.dtls_ok.increment(s.dtls_ok);
        self.dtls_failed.increment(s.dtls_failed);
        self.dtls_settled.increment(s.dtls_settled);
        self.rtp_in.increment(s.rtp_in);
        self.rtcp_in.increment(s.rtcp_in);
        self.rtp_forwarded.increment(s.rtp_forwarded);
        self.sweeps_yielded.increment(s.sweeps_yielded);
        self.paced.increment(s.paced);
        for (c, n) in self.drops.iter().zip(s.drops) {
            c.increment(n);
        }
        self.transports.set(transports as f64);
    }

    /// The send slots whose pages may be resident (touched since the last trim), of all.
    pub fn record_send_slots(&self, touched: usize, all: usize) {
        self.slots_touched.set(touched as f64);
        self.slots.set(all as f64);
    }

    pub fn record_batch(&self, n: usize) {
        self.batch.record(n as f64);
    }

    /// Time from harvesting a sweep's datagrams to queueing its sends: how long a packet spends
    /// inside the shard.
    pub fn record_forwarding(&self, d: std::time::Duration) {
        self.sweep.record(d.as_secs_f64());
    }
}
