//! The running backbone: the event log connection, the projections and the API, started
//! together by `handover serve`, `handover dev` and the integration tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use handover_api::{AppState, Auth, Metrics, Readiness};
use handover_nats::{EventLog, LogConfig};
use handover_projections::{run_journeys, Journeys, Progress};
use handover_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, DEFAULT_NATS_URL};

/// How often the stream, consumer and projection-lag sample behind `/metrics` and the
/// integration page is taken.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// A running backbone.
pub struct Runtime {
    /// Where the API listens, when it runs.
    pub api_addr: Option<SocketAddr>,
    /// Where the HL7 MLLP listener listens, when it runs.
    pub hl7_addr: Option<SocketAddr>,
    /// Where each listening adapter listens, by adapter name.
    pub adapter_addrs: std::collections::BTreeMap<&'static str, SocketAddr>,
    /// The event log.
    pub log: EventLog,
    /// The read-model store.
    pub store: Store,
    /// The journey projection's progress.
    pub journey_progress: watch::Receiver<Progress>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The rebuild queue (zero-downtime rebuilds; see `handover_projections::rebuild`).
    pub rebuilds: Arc<handover_projections::Rebuilds>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// How long the event log may go without answering the status sample (taken every
/// [`STATUS_INTERVAL`]) before `/readyz` says it is not ready. A nats-server that is hung,
/// frozen or unreachable behind a half-open connection keeps the client "connected" for
/// minutes (until its pings go unanswered); its silence is what shows it, so that a load
/// balancer stops sending events this instance can only answer with `503`.
pub const LOG_SILENT_AFTER: Duration = Duration::from_secs(10);

struct Ready {
    log: EventLog,
    /// When the event log last answered the status sample.
    answered: Arc<std::sync::Mutex<std::time::Instant>>,
    failing: Arc<std::sync::Mutex<Option<(String, u64)>>>,
    progress: watch::Receiver<Progress>,
    max_lag: u64,
    projections: bool,
}

impl Readiness for Ready {
    fn check(&self) -> Result<(), String> {
        if !self.log.is_connected() {
            return Err("not connected to NATS".into());
        }
        let silent = self
            .answered
            .lock()
            .map(|at| at.elapsed())
            .unwrap_or_default();
        if silent > LOG_SILENT_AFTER {
            return Err(format!(
                "the event log (NATS JetStream) has not answered for {} s",
                silent.as_secs()
            ));
        }
        let p = *self.progress.borrow();
        if self.projections && !p.open {
            // Until the projection knows how far behind it is (e.g. just restarted), it
            // cannot claim to be caught up.
            return Err("journey projection starting".into());
        }
        if let Some((e, at)) = self.failing.lock().ok().and_then(|f| f.clone()) {
            // Failing until it commits past the position where it failed.
            if p.position <= at {
                return Err(format!("journey projection failing: {e}"));
            }
        }
        if p.pending > self.max_lag {
            return Err(format!("journey projection is {} events behind", p.pending));
        }
        Ok(())
    }
}

impl Runtime {
    /// Connects to NATS, opens the store and starts the enabled components. The API serves
    /// on `api_listener` when given, else binds the configured address.
    pub async fn start(
        cfg: &Config,
        api_listener: Option<tokio::net::TcpListener>,
    ) -> anyhow::Result<Runtime> {
        let key = cfg.pseudonym_key()?;
        // Identity providers first: a bad JWKS file stops start-up before anything runs.
        let oidc = oidc_providers(&cfg.oidc)?;
        let url = cfg
            .nats
            .url
            .clone()
            .unwrap_or_else(|| DEFAULT_NATS_URL.to_string());
        let log = EventLog::connect(
            &url,
            LogConfig {
                auth: cfg.nats_auth()?,
                ..cfg.log_config()
            },
            key.clone(),
        )
        .await?;
        let store = open_store(&cfg.store)?;
        if store.compressed() != cfg.store.compression {
            tracing::warn!(
                compressed = store.compressed(),
                "the read-model store keeps the compression it was created with; store.compression applies to new stores"
            );
        }
        let journey_tree = store.tree(handover_projections::journeys::NAME)?;
        // The projection's consumer is this store's own (two servers projecting one stream
        // must not share one); the names used before that are removed.
        let consumer = handover_projections::runner::consumer_name(&store.instance_id().await?);
        if cfg.projections.enabled {
            for legacy in handover_projections::runner::LEGACY_CONSUMERS {
                log.delete_consumer(legacy).await?;
            }
        }
        let journeys = Journeys::new(key);
        let metrics = Arc::new(Metrics::default());
        {
            // Publish counters and JetStream ack latency, whoever publishes.
            let log = log.clone();
            metrics.add_source(move || log.render_metrics());
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        let progress_tx = Arc::new(progress_tx);
        let mut tasks = Vec::new();
        // The projection's last error while it is failing; readiness reports it.
        let failing: Arc<std::sync::Mutex<Option<(String, u64)>>> = Arc::default();
        let answered = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));

        let rebuilds = Arc::new(handover_projections::Rebuilds::default());
        {
            // Parked events and rebuild progress, as gauges at /metrics.
            let (progress, status) = (progress_rx.clone(), rebuilds.subscribe());
            metrics.add_source(move || {
                crate::ops::render_metrics(&progress.borrow(), &status.borrow())
            });
        }
        if cfg.projections.enabled {
            let (l, st, j, r) = (
                log.clone(),
                store.clone(),
                journeys.clone(),
                rebuilds.clone(),
            );
            let mut stop = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let stop = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                r.run(l, st, j, stop).await;
            }));
            // A tree written by another version of the projection is rebuilt and swapped in
            // while it keeps serving.
            if let Some(old) = handover_projections::Rebuilds::outdated(&journey_tree)? {
                let reason = format!(
                    "version {old} -> {}",
                    handover_projections::journeys::JOURNEY_VERSION
                );
                tracing::info!(
                    projection = "journey",
                    reason,
                    "projection code changed; rebuilding"
                );
                let _ = rebuilds.request(handover_projections::journeys::NAME, &reason);
            }
        }
        if cfg.projections.enabled {
            let (log, tree, journeys, metrics) = (
                log.clone(),
                journey_tree.clone(),
                journeys.clone(),
                metrics.clone(),
            );
            let failing = failing.clone();
            let mut stop = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let mut backoff = Duration::from_millis(200);
                loop {
                    let stop_signal = {
                        let mut stop = stop.clone();
                        async move {
                            let _ = stop.wait_for(|s| *s).await;
                        }
                    };
                    match run_journeys(log.clone(), &consumer, tree.clone(), journeys.clone(), progress_tx.clone(), stop_signal).await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::error!(error = %e, projection = "journey", "projection stopped; restarting");
                            let at = progress_tx.borrow().position;
                            if let Ok(mut f) = failing.lock() {
                                *f = Some((e.to_string(), at));
                            }
                            metrics.set_gauge("handover_projection_errors", "projection=\"journey\"", 1.0);
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }));
        }

        // Every registered adapter whose section is configured.
        let mut adapter_addrs = std::collections::BTreeMap::new();
        for adapter in handover_adapters::ADAPTERS {
            let Some(section) = cfg.adapters.get(adapter.config_section) else {
                continue;
            };
            let ctx = handover_adapters::Context {
                sink: Arc::new(log.clone()),
                shutdown: shutdown_rx.clone(),
            };
            let started = (adapter.start)(section.clone(), ctx)
                .await
                .map_err(|e| anyhow::anyhow!("cannot start the {} adapter: {e}", adapter.name))?;
            if let Some(a) = started.listening {
                adapter_addrs.insert(adapter.name, a);
            }
            metrics.add_source(started.metrics);
            tasks.push(tokio::spawn(started.task));
        }
        let hl7_addr = adapter_addrs.get("hl7").copied();

        let mut api_addr = None;
        if cfg.api.enabled {
            let listener = match api_listener {
                Some(l) => l,
                None => tokio::net::TcpListener::bind(cfg.api.listen)
                    .await
                    .with_context(|| format!("cannot listen on {} (api.listen)", cfg.api.listen))?,
            };
            api_addr = Some(listener.local_addr()?);
            let auth = Arc::new(
                Auth::new(&cfg.tokens)
                    .map_err(|e| anyhow::anyhow!(e))?
                    .with_oidc(oidc),
            );
            if !auth.oidc().is_empty() {
                // A JWKS URL that cannot be fetched now is retried; its tokens get 401 meanwhile.
                auth.oidc().load().await;
                let providers = auth.oidc().clone();
                let mut stop = shutdown_rx.clone();
                tasks.push(tokio::spawn(providers.run_refresh(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })));
            }
            let audit = log.audit_log().await?;
            let state = AppState {
                sink: Arc::new(log.clone()),
                journeys: journeys.clone(),
                journey_tree: journey_tree.clone(),
                auth: auth.clone(),
                readiness: Arc::new(Ready {
                    log: log.clone(),
                    answered: answered.clone(),
                    failing: failing.clone(),
                    progress: progress_rx.clone(),
                    max_lag: cfg.projections.ready_max_lag,
                    projections: cfg.projections.enabled,
                }),
                metrics: metrics.clone(),
                progress: progress_rx.clone(),
                sessions: Default::default(),
                audit: Arc::new(audit),
                log_admin: Some(Arc::new(log.clone())),
                rebuilds: rebuilds.clone(),
            };
            let app = handover_api::app(state).merge(handover_api::admin::router(
                handover_api::admin::AdminState {
                    auth,
                    rebuilds: rebuilds.clone(),
                },
            ));
            let mut stop = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let signal = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = handover_api::serve(listener, app, signal).await {
                    tracing::error!(error = %e, "API server failed");
                }
            }));
        }

        {
            // The status sample: streams, consumers, projection lag (see `crate::status`).
            let (inspector, stream, metrics, progress) = (
                log.inspector(),
                cfg.nats.stream.clone(),
                metrics.clone(),
                progress_rx.clone(),
            );
            let projections = cfg.projections.enabled;
            let mut stop = shutdown_rx.clone();
            let answered = answered.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let position = progress.borrow().position;
                    let rows: Vec<(&str, u64)> = if projections {
                        vec![(handover_projections::journeys::NAME, position)]
                    } else {
                        Vec::new()
                    };
                    let status = crate::status::sample(&inspector, &stream, &rows).await;
                    if status.error.is_none() {
                        if let Ok(mut at) = answered.lock() {
                            *at = std::time::Instant::now();
                        }
                    }
                    metrics.set_status(status);
                    tokio::select! {
                        _ = tokio::time::sleep(STATUS_INTERVAL) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }));
        }

        Ok(Runtime {
            api_addr,
            hl7_addr,
            adapter_addrs,
            log,
            store,
            journey_progress: progress_rx,
            rebuilds,
            metrics,
            shutdown,
            tasks,
        })
    }

    /// Waits until the journey projection has applied stream position `seq`.
    pub async fn projected(&self, seq: u64, timeout: Duration) -> anyhow::Result<()> {
        let mut rx = self.journey_progress.clone();
        tokio::time::timeout(timeout, rx.wait_for(|p| p.position >= seq))
            .await
            .context("timed out waiting for the projection")?
            .context("projection stopped")?;
        Ok(())
    }

    /// Stops every component gracefully: in-flight requests and batches finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = self.store.flush().await;
    }

    /// Stops every component at once, as a crash would: no graceful shutdown and no flush;
    /// a batch being applied is abandoned wherever it is. Returns once the tasks are gone.
    pub async fn abort(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The OpenID Connect providers of `configs`, fetching JWKS URLs with an HTTPS client
/// (rustls, the system's trust store).
pub fn oidc_providers(
    configs: &[handover_api::oidc::OidcConfig],
) -> anyhow::Result<handover_api::oidc::Providers> {
    let fetch: Option<handover_api::oidc::JwksFetcher> =
        if configs.iter().any(|c| c.jwks_url.is_some()) {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .user_agent(concat!("handover/", env!("CARGO_PKG_VERSION")))
                .build()
                .context("cannot build the HTTPS client for JWKS URLs")?;
            Some(Arc::new(move |url: String| {
                let client = client.clone();
                Box::pin(async move { fetch_jwks(&client, &url).await })
            }))
        } else {
            None
        };
    Ok(handover_api::oidc::Providers::new(configs, fetch)?)
}

/// Largest JWKS document accepted.
const MAX_JWKS: usize = 1024 * 1024;

async fn fetch_jwks(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let resp = client
        .get(url)
        .header(
            reqwest::header::ACCEPT,
            "application/json, application/jwk-set+json",
        )
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    let body = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
    if body.len() > MAX_JWKS {
        return Err(format!(
            "GET {url}: the JWKS is larger than {MAX_JWKS} bytes"
        ));
    }
    Ok(body.to_vec())
}

/// Opens the store as `[store]` says, creating its directory.
pub fn open_store(cfg: &crate::config::StoreConfig) -> anyhow::Result<Store> {
    let path = &cfg.path;
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    Store::open_with(path, cfg.cache_mb.max(1) * 1024 * 1024, cfg.compression)
        .with_context(|| format!("cannot open the read-model store at {}", path.display()))
}

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM (`systemctl stop`, `docker stop`,
/// Kubernetes), so either stops the process gracefully.
pub async fn stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
