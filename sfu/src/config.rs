//! Server configuration: built-in defaults < TOML file < environment (`RINGCAST_*`) < CLI flags.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use serde::{Deserialize, Serialize};

/// The development credentials a fresh checkout runs with. Refused on a non-loopback address.
pub const DEV_API_KEY: &str = "devkey";
pub const DEV_API_SECRET: &str = "devsecret-for-local-testing-only";

/// The shards' IO backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MediaBackend {
    /// io_uring where the kernel allows it, else recvmmsg.
    Auto,
    IoUring,
    /// recvmmsg/sendmmsg with GRO/GSO (quinn-udp).
    Recvmmsg,
}

/// SRTP protection profiles, as SDP/DTLS name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum SrtpProfileName {
    #[serde(rename = "AEAD_AES_128_GCM")]
    #[value(name = "AEAD_AES_128_GCM")]
    AeadAes128Gcm,
    #[serde(rename = "AEAD_AES_256_GCM")]
    #[value(name = "AEAD_AES_256_GCM")]
    AeadAes256Gcm,
    #[serde(rename = "AES_CM_128_HMAC_SHA1_80")]
    #[value(name = "AES_CM_128_HMAC_SHA1_80")]
    AesCm128HmacSha1_80,
}

impl SrtpProfileName {
    pub fn profile(self) -> ringcast_types::SrtpProfile {
        use ringcast_types::SrtpProfile as P;
        match self {
            SrtpProfileName::AeadAes128Gcm => P::AeadAes128Gcm,
            SrtpProfileName::AeadAes256Gcm => P::AeadAes256Gcm,
            SrtpProfileName::AesCm128HmacSha1_80 => P::Aes128CmHmacSha1_80,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC and gRPC-Web listen address.
    pub grpc_addr: SocketAddr,
    /// HTTP listen address: /healthz, /readyz, /metrics and the demo page.
    pub http_addr: SocketAddr,
    /// UDP port of shard 0; shard i listens on udp_port_base + i.
    pub udp_port_base: u16,
    /// Media shards (one per core); 0 = one per available core.
    pub shards: u16,
    /// Address the shards' UDP sockets bind; unset: 127.0.0.1 when every public IP is IPv4
    /// loopback, else `::` (dual-stack, all interfaces).
    pub udp_bind_ip: Option<IpAddr>,
    /// The shards' IO backend.
    pub media_backend: MediaBackend,
    /// SRTP profiles accepted, in order of preference.
    pub srtp_profiles: Vec<SrtpProfileName>,
    /// Spread each subscriber's bursts (a keyframe from a publisher that does not pace) at 2.5
    /// times its recent rate beyond a 16 KiB allowance.
    pub pace_bursts: bool,
    /// Addresses put into ICE candidates (IPv4 and/or IPv6), e.g. the node's public IP.
    pub public_ips: Vec<IpAddr>,
    pub api_key: String,
    pub api_secret: String,
    /// Seconds media keeps flowing after SIGTERM before transports close.
    pub drain_grace_secs: u64,
    pub log_format: LogFormat,
    /// `tracing` filter, e.g. `info` or `ringcast_control=debug,info`.
    pub log_level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            udp_port_base: 40000,
            shards: 0,
            udp_bind_ip: None,
            media_backend: MediaBackend::Auto,
            srtp_profiles: vec![
                SrtpProfileName::AeadAes128Gcm,
                SrtpProfileName::AeadAes256Gcm,
                SrtpProfileName::AesCm128HmacSha1_80,
            ],
            pace_bursts: true,
            public_ips: vec![IpAddr::from([127, 0, 0, 1])],
            api_key: DEV_API_KEY.to_owned(),
            api_secret: DEV_API_SECRET.to_owned(),
            drain_grace_secs: 10,
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
        }
    }
}

/// Command line; each flag also reads its `RINGCAST_*` environment variable.
#[derive(Debug, Default, Parser)]
#[command(name = "ringcast", version, about = "Ringcast WebRTC SFU")]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "RINGCAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (secret redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    #[arg(long, env = "RINGCAST_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    #[arg(long, env = "RINGCAST_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    #[arg(long, env = "RINGCAST_UDP_PORT_BASE")]
    pub udp_port_base: Option<u16>,
    #[arg(long, env = "RINGCAST_SHARDS")]
    pub shards: Option<u16>,
    #[arg(long, env = "RINGCAST_UDP_BIND_IP")]
    pub udp_bind_ip: Option<IpAddr>,
    #[arg(long, env = "RINGCAST_MEDIA_BACKEND")]
    pub media_backend: Option<MediaBackend>,
    /// `true` or `false`.
    #[arg(long, env = "RINGCAST_PACE_BURSTS")]
    pub pace_bursts: Option<bool>,
    /// SRTP profiles in order of preference (env: comma-separated).
    #[arg(
        long = "srtp-profile",
        env = "RINGCAST_SRTP_PROFILES",
        value_delimiter = ','
    )]
    pub srtp_profiles: Vec<SrtpProfileName>,
    /// Candidate address; repeat for IPv4 and IPv6 (env: comma-separated).
    #[arg(long = "public-ip", env = "RINGCAST_PUBLIC_IP", value_delimiter = ',')]
    pub public_ips: Vec<IpAddr>,
    #[arg(long, env = "RINGCAST_API_KEY")]
    pub api_key: Option<String>,
    #[arg(long, env = "RINGCAST_API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,
    #[arg(long, env = "RINGCAST_DRAIN_GRACE_SECS")]
    pub drain_grace_secs: Option<u64>,
    #[arg(long, env = "RINGCAST_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    #[arg(long, env = "RINGCAST_LOG_LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Layers the file named by `cli.config` and then the flags/environment over the defaults.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let mut c = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => Config::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => {$(
                if let Some(v) = &cli.$f {
                    c.$f = v.clone();
                }
            )*};
        }
        set!(
            grpc_addr,
            http_addr,
            udp_port_base,
            shards,
            media_backend,
            pace_bursts,
            api_key,
            api_secret,
            drain_grace_secs,
            log_format,
            log_level
        );
        if !cli.public_ips.is_empty() {
            c.public_ips = cli.public_ips.clone();
        }
        if !cli.srtp_profiles.is_empty() {
            c.srtp_profiles = cli.srtp_profiles.clone();
        }
        if cli.udp_bind_ip.is_some() {
            c.udp_bind_ip = cli.udp_bind_ip;
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.public_ips.is_empty() {
            return bad(
                "public_ips is empty: ICE candidates need the address clients reach this node on; set --public-ip or RINGCAST_PUBLIC_IP"
                    .into(),
            );
        }
        if let Some(ip) = self.public_ips.iter().find(|ip| ip.is_unspecified()) {
            return bad(format!(
                "public IP {ip} is unspecified; give the address clients reach this node on"
            ));
        }
        if self.api_key.is_empty() || self.api_secret.len() < 16 {
            return bad("api_key must be set and api_secret must be at least 16 bytes".into());
        }
        let public = !self.grpc_addr.ip().is_loopback() || !self.http_addr.ip().is_loopback();
        if public && self.api_secret == DEV_API_SECRET {
            return bad(
                "the development API secret is only allowed on loopback; set --api-secret (RINGCAST_API_SECRET)"
                    .into(),
            );
        }
        if self.srtp_profiles.is_empty() {
            return bad("srtp_profiles is empty".into());
        }
        if u32::from(self.udp_port_base) + u32::from(self.shard_count()) > 65536 {
            return bad("udp_port_base + shards exceeds port 65535".into());
        }
        Ok(())
    }

    /// Shards to run: `shards`, or one per available core.
    pub fn shard_count(&self) -> u16 {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get().min(usize::from(u16::MAX)) as u16)
                .unwrap_or(1)
        }
    }

    /// Where the shards bind: the configured address, else loopback for a loopback-only node,
    /// else every interface (dual-stack).
    pub fn effective_udp_bind_ip(&self) -> IpAddr {
        self.udp_bind_ip.unwrap_or_else(|| {
            if self
                .public_ips
                .iter()
                .all(|ip| ip.is_loopback() && ip.is_ipv4())
            {
                IpAddr::from([127, 0, 0, 1])
            } else {
                IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED)
            }
        })
    }

    pub fn uses_dev_credentials(&self) -> bool {
        self.api_secret == DEV_API_SECRET
    }

    /// The configuration as TOML with the secret redacted.
    pub fn to_toml_redacted(&self) -> String {
        let mut c = self.clone();
        if !c.uses_dev_credentials() {
            c.api_secret = "<redacted>".to_owned();
        }
        toml::to_string(&c).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("ringcast").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_are_loopback_and_valid() {
        let c = Config::load(&Cli::default()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.udp_port_base, 40000);
        assert!(c.shard_count() >= 1);
    }

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("ringcast-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "udp_port_base = 50000\nshards = 3\nlog_format = \"json\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = Config::load(&cli(&["--config", p])).unwrap();
        assert_eq!(
            (c.udp_port_base, c.shards, c.log_format),
            (50000, 3, LogFormat::Json)
        );
        assert_eq!(
            c.grpc_addr,
            Config::default().grpc_addr,
            "unset keys keep defaults"
        );
        let c = Config::load(&cli(&[
            "--config",
            p,
            "--shards",
            "2",
            "--public-ip",
            "::1",
            "--public-ip",
            "127.0.0.1",
        ]))
        .unwrap();
        assert_eq!(c.shards, 2, "flag beats file");
        assert_eq!(c.udp_port_base, 50000);
        assert_eq!(c.public_ips.len(), 2);

        std::fs::write(&path, "udp_port_bsae = 1\n").unwrap();
        let e = Config::load(&cli(&["--config", p]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("udp_port_bsae"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dev_secret_refused_off_loopback() {
        let e = Config::load(&cli(&["--grpc-addr", "0.0.0.0:50051"])).unwrap_err();
        assert!(e.to_string().contains("--api-secret"));
        let ok = Config::load(&cli(&[
            "--grpc-addr",
            "0.0.0.0:50051",
            "--api-secret",
            "a-real-secret-of-enough-length",
        ]))
        .unwrap();
        assert!(ok.to_toml_redacted().contains("<redacted>"));
        assert!(Config::load(&cli(&["--public-ip", "0.0.0.0"])).is_err());
    }

    #[test]
    fn printed_config_parses_back() {
        let c = Config::default();
        let back: Config = toml::from_str(&c.to_toml_redacted()).unwrap();
        assert_eq!(back, c);
    }
}
