//! What a run does: from flags, or a TOML file whose keys are the flags' names (with `_`),
//! flags winning over the file.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ringcast_datapath::srtp::SrtpProfile;
use serde::{Deserialize, Serialize};

/// Synthetic Ringcast rooms: publishers and subscribers that do ICE, DTLS and SRTP through the
/// public API, then a report of throughput, loss and latency.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadtest", version)]
pub struct Args {
    /// A scenario file (TOML; keys as the flags, e.g. `subscribers = 100`).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Ringcast's gRPC address.
    #[arg(long)]
    pub grpc_addr: Option<String>,
    #[arg(long)]
    pub rooms: Option<u32>,
    /// Publishers per room.
    #[arg(long)]
    pub publishers: Option<u32>,
    /// Subscribe-only participants per room.
    #[arg(long)]
    pub subscribers: Option<u32>,
    /// Publishers also subscribe to everyone else (a meeting).
    #[arg(long)]
    pub publishers_subscribe: bool,
    /// The measured window, after every client connected (`10s`, `2m`, `500ms`).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[arg(long)]
    pub video_kbps: Option<u32>,
    #[arg(long)]
    pub fps: Option<u32>,
    #[arg(long, value_parser = parse_duration)]
    pub keyframe_interval: Option<Duration>,
    /// Publish audio only.
    #[arg(long)]
    pub audio_only: bool,
    /// Publish video only.
    #[arg(long)]
    pub video_only: bool,
    /// Publish video as three simulcast layers (rids q, h, f).
    #[arg(long)]
    pub simulcast: bool,
    /// Publishers send each video frame as one burst, as aiortc and GStreamer do (browsers
    /// pace at 2.5 times the bitrate).
    #[arg(long)]
    pub unpaced: bool,
    /// The SRTP profile every client offers: AEAD_AES_128_GCM, AEAD_AES_256_GCM or
    /// AES_CM_128_HMAC_SHA1_80.
    #[arg(long)]
    pub srtp_profile: Option<String>,
    /// Participants joining per second.
    #[arg(long)]
    pub ramp_rate: Option<u32>,
    /// Seeds ICE credentials, SSRCs and tie-breakers.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Decrypt and check 1 in this many received RTP packets (the rest are measured from their
    /// clear headers).
    #[arg(long)]
    pub decrypt_every: Option<u64>,
    /// Subscribers negotiate transport-wide sequence numbers and send transport-cc feedback
    /// every 100 ms, so Ringcast's congestion control runs on their transports.
    #[arg(long)]
    pub transport_cc: bool,
    /// Give up on clients not connected after this long.
    #[arg(long, value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Exit 1 if subscribers lose more than this share of packets (percent).
    #[arg(long)]
    pub max_loss: Option<f64>,
    /// Exit 1 if the p99 one-way latency exceeds this (milliseconds).
    #[arg(long)]
    pub max_p99_ms: Option<f64>,
    /// Pin the media engine to this core.
    #[arg(long)]
    pub pin_core: Option<usize>,
    /// Report this process's CPU (the server's) over the window.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Room names are `<prefix>-<n>`.
    #[arg(long)]
    pub room_prefix: Option<String>,
    /// No progress bar or live lines (for CI logs).
    #[arg(long)]
    pub quiet: bool,
}

/// The scenario file's keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub grpc_addr: Option<String>,
    pub rooms: Option<u32>,
    pub publishers: Option<u32>,
    pub subscribers: Option<u32>,
    pub publishers_subscribe: Option<bool>,
    pub duration: Option<String>,
    pub video_kbps: Option<u32>,
    pub fps: Option<u32>,
    pub keyframe_interval: Option<String>,
    pub audio_only: Option<bool>,
    pub video_only: Option<bool>,
    pub simulcast: Option<bool>,
    pub unpaced: Option<bool>,
    pub srtp_profile: Option<String>,
    pub ramp_rate: Option<u32>,
    pub seed: Option<u64>,
    pub decrypt_every: Option<u64>,
    pub transport_cc: Option<bool>,
    pub connect_timeout: Option<String>,
    pub max_loss: Option<f64>,
    pub max_p99_ms: Option<f64>,
    pub room_prefix: Option<String>,
}

/// A complete, checked scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub grpc_addr: String,
    pub rooms: u32,
    pub publishers: u32,
    pub subscribers: u32,
    pub publishers_subscribe: bool,
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    pub audio: bool,
    pub video: bool,
    pub video_kbps: u32,
    pub fps: u32,
    #[serde(serialize_with = "secs")]
    pub keyframe_interval: Duration,
    pub simulcast: bool,
    pub unpaced: bool,
    #[serde(serialize_with = "profile_name")]
    pub srtp_profile: SrtpProfile,
    pub ramp_rate: u32,
    pub seed: u64,
    pub decrypt_every: u64,
    /// Subscribers send transport-wide congestion control feedback.
    pub transport_cc: bool,
    #[serde(serialize_with = "secs")]
    pub connect_timeout: Duration,
    pub max_loss: Option<f64>,
    pub max_p99_ms: Option<f64>,
    pub room_prefix: String,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn profile_name<S: serde::Serializer>(p: &SrtpProfile, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.name())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read the scenario file {0}: {1}")]
    Read(String, String),
    #[error("the scenario file {0} is not valid: {1}")]
    Parse(String, String),
    #[error("`{0}` is not a duration (try 10s, 2m, 500ms)")]
    Duration(String),
    #[error(
        "unknown SRTP profile `{0}` (AEAD_AES_128_GCM, AEAD_AES_256_GCM, AES_CM_128_HMAC_SHA1_80)"
    )]
    Profile(String),
    #[error("{0}")]
    Invalid(&'static str),
}

/// `10s`, `1.5s`, `250ms`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| ScenarioError::Duration(s.to_owned()).to_string())?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(ScenarioError::Duration(s.to_owned()).to_string()),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(ScenarioError::Duration(s.to_owned()).to_string());
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn parse_profile(s: &str) -> Result<SrtpProfile, ScenarioError> {
    match s.to_ascii_uppercase().replace('-', "_").as_str() {
        "AEAD_AES_128_GCM" => Ok(SrtpProfile::AeadAes128Gcm),
        "AEAD_AES_256_GCM" => Ok(SrtpProfile::AeadAes256Gcm),
        "AES_CM_128_HMAC_SHA1_80" | "AES128_CM_HMAC_SHA1_80" | "SRTP_AES128_CM_SHA1_80" => {
            Ok(SrtpProfile::Aes128CmHmacSha1_80)
        }
        _ => Err(ScenarioError::Profile(s.to_owned())),
    }
}

impl Scenario {
    /// Flags over the file over the defaults.
    pub fn resolve(a: &Args) -> Result<Scenario, ScenarioError> {
        let f = match &a.scenario {
            Some(p) => {
                let name = p.display().to_string();
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ScenarioError::Read(name.clone(), e.to_string()))?;
                toml::from_str::<File>(&text)
                    .map_err(|e| ScenarioError::Parse(name, e.to_string()))?
            }
            None => File::default(),
        };
        let dur = |flag: Option<Duration>,
                   file: &Option<String>,
                   default: Duration|
         -> Result<Duration, ScenarioError> {
            match (flag, file) {
                (Some(d), _) => Ok(d),
                (None, Some(s)) => {
                    parse_duration(s).map_err(|_| ScenarioError::Duration(s.clone()))
                }
                (None, None) => Ok(default),
            }
        };
        let audio_only = a.audio_only || f.audio_only.unwrap_or(false);
        let video_only = a.video_only || f.video_only.unwrap_or(false);
        if audio_only && video_only {
            return Err(ScenarioError::Invalid(
                "--audio-only and --video-only exclude each other",
            ));
        }
        let s = Scenario {
            grpc_addr: a
                .grpc_addr
                .clone()
                .or(f.grpc_addr)
                .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned()),
            rooms: a.rooms.or(f.rooms).unwrap_or(1),
            publishers: a.publishers.or(f.publishers).unwrap_or(1),
            subscribers: a.subscribers.or(f.subscribers).unwrap_or(10),
            publishers_subscribe: a.publishers_subscribe || f.publishers_subscribe.unwrap_or(false),
            duration: dur(a.duration, &f.duration, Duration::from_secs(10))?,
            audio: !video_only,
            video: !audio_only,
            video_kbps: a.video_kbps.or(f.video_kbps).unwrap_or(1000),
            fps: a.fps.or(f.fps).unwrap_or(30),
            keyframe_interval: dur(
                a.keyframe_interval,
                &f.keyframe_interval,
                Duration::from_secs(2),
            )?,
            simulcast: a.simulcast || f.simulcast.unwrap_or(false),
            unpaced: a.unpaced || f.unpaced.unwrap_or(false),
            srtp_profile: match a.srtp_profile.as_ref().or(f.srtp_profile.as_ref()) {
                Some(p) => parse_profile(p)?,
                None => SrtpProfile::AeadAes128Gcm,
            },
            ramp_rate: a.ramp_rate.or(f.ramp_rate).unwrap_or(100),
            seed: a.seed.or(f.seed).unwrap_or(1),
            decrypt_every: a.decrypt_every.or(f.decrypt_every).unwrap_or(1),
            transport_cc: a.transport_cc || f.transport_cc.unwrap_or(false),
            connect_timeout: dur(
                a.connect_timeout,
                &f.connect_timeout,
                Duration::from_secs(30),
            )?,
            max_loss: a.max_loss.or(f.max_loss),
            max_p99_ms: a.max_p99_ms.or(f.max_p99_ms),
            room_prefix: a
                .room_prefix
                .clone()
                .or(f.room_prefix)
                .unwrap_or_else(|| "loadtest".to_owned()),
        };
        if s.rooms == 0 {
            return Err(ScenarioError::Invalid("--rooms must be at least 1"));
        }
        if s.publishers == 0 {
            return Err(ScenarioError::Invalid("--publishers must be at least 1"));
        }
        if s.subscribers == 0 && !s.publishers_subscribe {
            return Err(ScenarioError::Invalid(
                "nobody subscribes: give --subscribers or --publishers-subscribe",
            ));
        }
        if s.ramp_rate == 0 {
            return Err(ScenarioError::Invalid("--ramp-rate must be at least 1"));
        }
        if s.fps == 0 || s.fps > 120 {
            return Err(ScenarioError::Invalid("--fps must be 1 to 120"));
        }
        if s.decrypt_every == 0 {
            return Err(ScenarioError::Invalid("--decrypt-every must be at least 1"));
        }
        Ok(s)
    }

    /// Participants in all rooms.
    pub fn participants(&self) -> u32 {
        self.rooms * (self.publishers + self.subscribers)
    }

    /// Transports in all rooms: a publisher has one (two when it also subscribes), a
    /// subscriber one.
    pub fn transports(&self) -> u32 {
        let per_pub = if self.publishers_subscribe { 2 } else { 1 };
        self.rooms * (self.publishers * per_pub + self.subscribers)
    }

    /// Streams a subscriber of this scenario receives from one publisher.
    pub fn streams_per_publisher(&self) -> u32 {
        u32::from(self.audio) + u32::from(self.video)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["loadtest"];
        v.extend_from_slice(extra);
        Args::parse_from(v)
    }

    #[test]
    fn defaults_flags_and_durations() {
        let s = Scenario::resolve(&args(&[])).unwrap();
        assert_eq!((s.rooms, s.publishers, s.subscribers), (1, 1, 10));
        assert_eq!(s.duration, Duration::from_secs(10));
        assert!(!s.transport_cc, "off unless asked for");
        assert!(
            Scenario::resolve(&args(&["--transport-cc"]))
                .unwrap()
                .transport_cc
        );
        let s = Scenario::resolve(&args(&[
            "--subscribers",
            "500",
            "--duration",
            "250ms",
            "--audio-only",
        ]))
        .unwrap();
        assert_eq!(s.subscribers, 500);
        assert_eq!(s.duration, Duration::from_millis(250));
        assert!(s.audio && !s.video);
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn bad_scenarios_are_clear_errors() {
        for (flags, want) in [
            (&["--rooms", "0"][..], "--rooms"),
            (&["--subscribers", "0"][..], "nobody subscribes"),
            (&["--audio-only", "--video-only"][..], "exclude"),
            (&["--srtp-profile", "ROT13"][..], "unknown SRTP profile"),
        ] {
            let e = Scenario::resolve(&args(flags)).unwrap_err().to_string();
            assert!(e.contains(want), "{flags:?}: {e}");
        }
    }

    #[test]
    fn a_file_is_overridden_by_flags() {
        let dir = std::env::temp_dir().join(format!("lt-scenario-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.toml");
        std::fs::write(
            &p,
            "subscribers = 40\nduration = \"3s\"\nsrtp_profile = \"AEAD_AES_256_GCM\"\ntransport_cc = true\n",
        )
        .unwrap();
        let path = p.to_str().unwrap();
        let s = Scenario::resolve(&args(&["--scenario", path, "--subscribers", "7"])).unwrap();
        assert_eq!(s.subscribers, 7);
        assert_eq!(s.duration, Duration::from_secs(3));
        assert_eq!(s.srtp_profile, SrtpProfile::AeadAes256Gcm);
        assert!(s.transport_cc);
        std::fs::write(&p, "subscriber = 40\n").unwrap();
        let e = Scenario::resolve(&args(&["--scenario", path])).unwrap_err();
        assert!(matches!(e, ScenarioError::Parse(..)), "{e}");
    }
}
