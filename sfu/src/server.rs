//! Wires the node together: DTLS identity, media plane, control plane, the gRPC (+ gRPC-Web)
//! server and the HTTP server, and drains them on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use ringcast_control::auth::Authenticator;
use ringcast_control::dtls::DtlsIdentity;
use ringcast_control::plane::{MediaPlane, SrtpProfile};
use ringcast_control::registry::{Registry, RegistryConfig};
use ringcast_control::service::{Control, RoomServiceApi, SignalingApi};
use ringcast_datapath::{Backend, DatapathConfig};
use ringcast_proto::v1::room_service_server::RoomServiceServer;
use ringcast_proto::v1::signaling_server::SignalingServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{Config, MediaBackend};
use crate::media_plane::DatapathPlane;

/// A running node.
pub struct Server {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub control: Arc<Control>,
    pub plane: Arc<dyn MediaPlane>,
    datapath: Arc<DatapathPlane>,
    health: tonic_health::server::HealthReporter,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl Server {
    /// Binds every listener (port 0 picks a free one) and starts serving.
    pub async fn start(config: &Config) -> anyhow::Result<Server> {
        let identity = Arc::new(DtlsIdentity::generate()?);
        let metrics = crate::telemetry::prometheus();
        metrics::gauge!("ringcast_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        let shards = config.shard_count();
        let srtp: Vec<SrtpProfile> = config.srtp_profiles.iter().map(|p| p.profile()).collect();
        // Shards report transport events here; the control plane applies them.
        let (shard_events_tx, shard_events) = mpsc::channel(4096);
        let datapath = DatapathPlane::start(
            DatapathConfig {
                shards,
                bind_ip: config.effective_udp_bind_ip(),
                port_base: config.udp_port_base,
                backend: match config.media_backend {
                    MediaBackend::Auto => Backend::Auto,
                    MediaBackend::IoUring => Backend::IoUring,
                    MediaBackend::Recvmmsg => Backend::Fallback,
                },
                certificate: identity.certificate.clone(),
                private_key: identity.private_key.clone(),
                srtp_profiles: srtp.clone(),
                pin_threads: true,
                send_slots: ringcast_datapath::OUTBOX_SLOTS,
                pace_bursts: config.pace_bursts,
            },
            &config.public_ips,
            shard_events_tx,
        )?;
        let datapath = Arc::new(datapath);
        let plane: Arc<dyn MediaPlane> = datapath.clone();
        let registry = Registry::new(
            RegistryConfig {
                identity: identity.clone(),
                srtp_profiles: srtp,
            },
            plane.clone(),
        );
        let control = Control::new(
            registry,
            Authenticator::new(&config.api_key, &config.api_secret),
        );

        let grpc = TcpListener::bind(config.grpc_addr).await?;
        let http = TcpListener::bind(config.http_addr).await?;
        let grpc_addr = grpc.local_addr()?;
        let http_addr = http.local_addr()?;
        let (stop, stopped) = watch::channel(false);

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<RoomServiceServer<RoomServiceApi>>()
            .await;
        health.set_serving::<SignalingServer<SignalingApi>>().await;

        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(control.clone().run_housekeeping(shard_events)));

        // gRPC and gRPC-Web on one port. Tokens travel in a header, not cookies, so any origin
        // may call (CORS), and the gRPC-Web response headers are exposed to the page.
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::mirror_request())
            .allow_methods([axum::http::Method::POST, axum::http::Method::OPTIONS])
            .allow_headers(tower_http::cors::Any)
            .expose_headers([
                "grpc-status".parse()?,
                "grpc-message".parse()?,
                "grpc-status-details-bin".parse()?,
            ])
            .max_age(Duration::from_secs(3600));
        let grpc_server = tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(cors)
            .layer(tonic_web::GrpcWebLayer::new())
            .add_service(health_service)
            .add_service(RoomServiceServer::new(RoomServiceApi(control.clone())))
            .add_service(SignalingServer::new(SignalingApi(control.clone())));
        let mut s = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let res = grpc_server
                .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), async move {
                    let _ = s.wait_for(|v| *v).await;
                })
                .await;
            if let Err(e) = res {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }));

        let app = http_routes(control.clone(), plane.clone(), metrics)
            .merge(crate::demo::routes(grpc_addr.port()));
        let mut s = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let res = axum::serve(http, app)
                .with_graceful_shutdown(async move {
                    let _ = s.wait_for(|v| *v).await;
                })
                .await;
            if let Err(e) = res {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }));

        tracing::info!(%grpc_addr, %http_addr, shards, backend = plane.backend(), "ringcast serving");
        Ok(Server {
            grpc_addr,
            http_addr,
            control,
            plane,
            datapath,
            health,
            stop,
            tasks,
            grace: Duration::from_secs(config.drain_grace_secs),
        })
    }

    /// Graceful drain: refuse new rooms and joins (readiness false, health NOT_SERVING), let
    /// media flow for the grace period (or until `cut_short` resolves), then disconnect everyone
    /// and stop.
    pub async fn drain(self, cut_short: impl std::future::Future<Output = ()>) {
        self.control.registry().set_draining();
        self.health
            .set_not_serving::<RoomServiceServer<RoomServiceApi>>()
            .await;
        self.health
            .set_not_serving::<SignalingServer<SignalingApi>>()
            .await;
        tracing::info!(grace_secs = self.grace.as_secs(), "draining");
        tokio::select! {
            _ = tokio::time::sleep(self.grace) => {}
            _ = cut_short => tracing::info!("drain cut short"),
        }
        self.stop().await;
    }

    /// Disconnects everyone and stops serving at once.
    pub async fn stop(self) {
        self.control.registry().close_all(Instant::now());
        let _ = self.stop.send(true);
        self.datapath.stop();
        let mut tasks = self.tasks.into_iter();
        // The first task is housekeeping, which runs until aborted.
        if let Some(h) = tasks.next() {
            h.abort();
        }
        // The servers finish their in-flight calls (event streams ended with close_all).
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        tracing::info!("stopped");
    }
}

fn http_routes(
    control: Arc<Control>,
    plane: Arc<dyn MediaPlane>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> Router {
    let metrics_control = control.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                crate::telemetry::publish_allocator_stats();
                crate::telemetry::publish_registry_stats(&metrics_control.registry().stats());
                let body = metrics.render();
                async move { ([("content-type", "text/plain; version=0.0.4")], body) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = plane.ready() && !control.registry().is_draining();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
}
