//! `ringcast`: config → build → serve → wait for a signal → drain.

use anyhow::Context;
use clap::Parser;
use ringcast_control::auth::{Grants, unix_now};
use ringcast_sfu::config::{Cli, Config};
use ringcast_sfu::server::Server;
use ringcast_sfu::telemetry::init_logging;

/// jemalloc: steadier than glibc malloc for a long-running multi-threaded server, and it reports
/// its own statistics (exported as metrics).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (read before `main`): unused pages go back to the kernel within a second
/// (jemalloc's default keeps them 10 s, and lazily freed pages count in RSS until the kernel
/// wants them), purged by jemalloc's background thread rather than on some later allocation:
/// a join storm's transient buffers do not stay in the server's memory.
#[unsafe(export_name = "malloc_conf")]
pub static MALLOC_CONF: &u8 = &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli)?;
    if cli.print_config {
        print!("{}", config.to_toml_redacted());
        return Ok(());
    }
    init_logging(&config);
    // The control plane is one thread (DESIGN.md); media shards run on their own threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async {
        let server = Server::start(&config).await?;
        announce(&config, &server);
        shutdown_signal().await;
        // A second signal ends the drain early.
        server.drain(shutdown_signal()).await;
        Ok(())
    })
}

fn announce(config: &Config, server: &Server) {
    eprintln!(
        "Ringcast is up: gRPC + gRPC-Web on http://{}, HTTP (health, metrics) on http://{}, media UDP from port {}",
        server.grpc_addr, server.http_addr, config.udp_port_base
    );
    if config.uses_dev_credentials() {
        let auth = server.control.authenticator();
        let admin = Grants {
            admin: true,
            ..Grants::default()
        };
        let token = auth
            .mint("dev-admin", None, admin, unix_now(), 24 * 3600)
            .map(|(t, _)| t)
            .unwrap_or_default();
        eprintln!(
            "Development credentials (loopback only): API key `{}`, secret `{}`\nAdmin token for RoomService (24 h): {token}",
            config.api_key, config.api_secret
        );
        eprintln!(
            "Demo: open {} in two browser tabs",
            ringcast_sfu::demo::url(server.http_addr, &token)
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
