//! Vigil detector: ingests agents' per-minute counters into an embedded store, judges
//! releases minute by minute and on dangerous-exception alerts, serves everything over an
//! HTTP API, and shows it on pages (the health board and a page per release).
//!
//! The service is two ports: gRPC for agents (`vigil.v1.Collector`, plus the standard
//! health and reflection services) and HTTP for people and tools (`/api/v1`, `/metrics`,
//! and the pages of [`pages`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use vigil_detector::{Detector, config::DetectorConfig};
//!
//! let config = DetectorConfig::load("/etc/vigil/detector.toml".as_ref())?;
//! let detector = Detector::bind(config).await?;
//! println!("agents connect to {}", detector.grpc_addr());
//! detector.serve(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod http_state;
pub mod ingest;
pub mod judge;
pub mod leader;
pub mod names;
pub mod pages;
pub mod release;
pub mod replay;
pub mod retention;
pub mod store;

// Prometheus metrics of ingest and judgement, served on `GET /metrics`.
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use vigil_proto::v1::collector_server::{CollectorServer, SERVICE_NAME as COLLECTOR_SERVICE};

use crate::config::DetectorConfig;
use crate::leader::Leadership;
use crate::store::{PostgresStore, SqliteStore, Store};

/// Largest report accepted on the gRPC port; a minute report of a busy app is a few KB.
pub const MAX_REPORT_BYTES: usize = 4 * 1024 * 1024;

/// Why the detector could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("token_file: {0}")]
    Token(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

/// The store a detector serves from.
#[derive(Debug)]
enum OpenStore {
    /// The embedded SQLite in `data_dir`: this detector alone.
    Embedded(Arc<SqliteStore>),
    /// A PostgreSQL database shared by several detectors.
    Shared(Arc<PostgresStore>, Box<sqlx::postgres::PgConnectOptions>),
}

/// A detector whose ports are bound and whose store is open, ready to serve.
#[derive(Debug)]
pub struct Detector {
    config: DetectorConfig,
    store: OpenStore,
    grpc: TcpListener,
    http: TcpListener,
    clock: Arc<dyn clock::Clock>,
}

impl Detector {
    /// Opens the store and binds both ports (port 0 picks a free one).
    ///
    /// # Errors
    /// [`DetectorError`] when a port cannot be bound, the token file cannot be read or the
    /// store cannot be opened.
    pub async fn bind(config: DetectorConfig) -> Result<Self, DetectorError> {
        config.token().map_err(DetectorError::Token)?;
        config.grpc_tls().map_err(DetectorError::Tls)?;
        let store = match config.shared_store().map_err(DetectorError::Config)? {
            Some(options) => OpenStore::Shared(
                Arc::new(PostgresStore::connect_with(options.clone()).await?),
                Box::new(options),
            ),
            None => {
                metrics::global().set_store_dir(&config.data_dir);
                OpenStore::Embedded(Arc::new(SqliteStore::open(&config.data_dir).await?))
            }
        };
        let grpc = bind(config.grpc_listen, "grpc_listen").await?;
        let http = bind(config.http_listen, "http_listen").await?;
        Ok(Self {
            config,
            store,
            grpc,
            http,
            clock: Arc::new(clock::SystemClock),
        })
    }

    /// The same detector with its judgement (minute rounds, release expiry) and its API's
    /// and pages' "now" on `clock` instead of the system clock. Ingest keeps the system
    /// clock: it stamps what arrives when it arrives.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn clock::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where agents connect.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.config.grpc_listen)
    }

    /// Where the HTTP API is served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.config.http_listen)
    }

    /// Serves both ports until `shutdown` resolves, then stops accepting, lets in-flight
    /// commits finish and returns.
    ///
    /// # Errors
    /// [`DetectorError`] when a server fails.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DetectorError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        match self.store {
            OpenStore::Embedded(ref store) => {
                let store = Arc::clone(store);
                metrics::global().set_leader(true);
                self.serve_on(store, Leadership::alone(), stop_rx).await
            }
            OpenStore::Shared(ref store, ref options) => {
                let store = Arc::clone(store);
                let lead = Leadership::compete((**options).clone(), stop_rx.clone());
                let served = self.serve_on(Arc::clone(&store), lead, stop_rx).await;
                store.close().await;
                served
            }
        }
    }

    /// Serves both ports from `store` until `stop_rx` turns true; judges while `lead` says.
    async fn serve_on<S: Store + retention::Retain>(
        self,
        store: Arc<S>,
        lead: Leadership,
        stop_rx: watch::Receiver<bool>,
    ) -> Result<(), DetectorError> {
        let token = self.config.token().map_err(DetectorError::Token)?;
        let (grpc_addr, http_addr) = (self.grpc_addr(), self.http_addr());

        let limits = self
            .config
            .limits()
            .map_err(|(key, reason)| DetectorError::Config(format!("{key}: {reason}")))?;
        let judge_params = self
            .config
            .judge_params()
            .map_err(|(key, reason)| DetectorError::Config(format!("{key}: {reason}")))?;
        let retention = self
            .config
            .retention()
            .map_err(|(key, reason)| DetectorError::Config(format!("{key}: {reason}")))?;

        let (alert_tx, alert_rx) = tokio::sync::mpsc::channel(release::ALERT_QUEUE);
        let ingest = ingest::Ingest::start_notifying(Arc::clone(&store), Some(alert_tx));
        // Webhooks are posted from memory, or, with a store that queues them, by the
        // leader from the queue.
        let decisions = if store.queues_webhooks() {
            tokio::spawn(release::webhook::run_queue(
                Arc::clone(&store),
                self.config.webhooks.clone(),
                lead.clone(),
                stop_rx.clone(),
            ));
            None
        } else {
            Some(release::webhook::start(self.config.webhooks.clone()))
        };
        tokio::spawn(retention::run(
            Arc::clone(&store),
            retention,
            Arc::clone(&self.clock),
            lead.clone(),
            stop_rx.clone(),
        ));
        let releases = Arc::new(
            release::Releases::new(Arc::clone(&store), decisions)
                .with_limits(limits)
                .with_params(judge_params)
                .with_clock(self.clock)
                .with_leadership(lead),
        );
        tokio::spawn(Arc::clone(&releases).run(alert_rx, stop_rx.clone()));
        let collector = InterceptedService::new(
            CollectorServer::new(ingest::CollectorService::with_stop(ingest, stop_rx.clone()))
                .max_decoding_message_size(MAX_REPORT_BYTES),
            auth::TokenCheck::new(token.clone()),
        );
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status(COLLECTOR_SERVICE, tonic_health::ServingStatus::Serving)
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(vigil_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| DetectorError::Tls(format!("reflection descriptors: {e}")))?;
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = self.config.grpc_tls().map_err(DetectorError::Tls)? {
            server = server
                .tls_config(tls)
                .map_err(|e| DetectorError::Tls(e.to_string()))?;
        }
        let grpc = server
            .add_service(health)
            .add_service(reflection)
            .add_service(collector)
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(self.grpc),
                stopped(stop_rx.clone()),
            );

        let app = api::router(Arc::new(api::ApiState::new(
            Arc::clone(&store),
            releases,
            token,
        )));
        // Peer addresses reach the token checks, which limit failures per address.
        let http = axum::serve(
            self.http,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(stop_rx));
        let tls = self.config.tls_cert.is_some();
        let store = if self.config.store.is_some() {
            "shared PostgreSQL".to_owned()
        } else {
            self.config.data_dir.display().to_string()
        };
        tracing::info!(grpc = %grpc_addr, tls, http = %http_addr, %store, "vigil-detector serving");
        let (grpc, http) = tokio::join!(grpc, http);
        grpc?;
        http.map_err(DetectorError::Http)?;
        tracing::info!("vigil-detector stopped");
        Ok(())
    }
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, DetectorError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DetectorError::Bind { addr, what, source })
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
