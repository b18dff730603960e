//! Logging setup: `tracing` to stderr, as text or JSON.

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log_level`.
pub fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let res = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = res {
        eprintln!("logging already initialised: {e}");
    }
}

/// The process's Prometheus recorder, installed on first use (tests start several servers in
/// one process; they share it).
pub fn prometheus() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; /metrics shows only this one's"
                );
            }
            handle
        })
        .clone()
}

/// Publishes the allocator's statistics as gauges (called periodically by the server). Reads
/// jemalloc's counters when it is the global allocator (the `ringcast` binary); elsewhere the
/// reads fail and nothing is published.
pub fn publish_allocator_stats() {
    use tikv_jemalloc_ctl::{epoch, stats};
    if epoch::advance().is_err() {
        return;
    }
    let read = [
        ("allocated", stats::allocated::read()),
        ("active", stats::active::read()),
        ("resident", stats::resident::read()),
        ("mapped", stats::mapped::read()),
        ("retained", stats::retained::read()),
    ];
    for (kind, v) in read {
        if let Ok(v) = v {
            metrics::gauge!("ringcast_jemalloc_bytes", "kind" => kind).set(v as f64);
        }
    }
}

/// Rooms, participants, tracks and transports by state, as gauges, and what the participants'
/// event queues coalesced or dropped and the shard commands no caller saw fail, as counters
/// (refreshed when scraped).
pub fn publish_registry_stats(s: &ringcast_control::registry::RegistryStats) {
    metrics::gauge!("ringcast_rooms").set(s.rooms as f64);
    metrics::gauge!("ringcast_participants").set(s.participants as f64);
    metrics::gauge!("ringcast_published_tracks").set(s.tracks as f64);
    for state in ["new", "connected", "failed", "closed"] {
        let n = s.transports_by_state.get(state).copied().unwrap_or(0);
        metrics::gauge!("ringcast_transports", "state" => state).set(n as f64);
    }
    metrics::counter!("ringcast_events_coalesced_total").absolute(s.events_coalesced);
    metrics::counter!("ringcast_events_dropped_total").absolute(s.events_dropped);
    metrics::counter!("ringcast_shard_commands_failed_total").absolute(s.shard_commands_failed);
}
