//! Building the application (no socket) and serving it (HTTP or HTTPS, graceful
//! shutdown). Tests build it on port 0 exactly as `directmail serve` does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use axum::{Router, middleware};
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;
use tower_sessions::{Expiry, SessionManagerLayer, SessionStore, cookie::SameSite};
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

use crate::bootstrap::{self, FirstOperator};
use crate::clock::Clock;
use crate::config::Config;
use crate::db::{Db, SessionPool};
use crate::secrets;
use crate::store::sessions::EndingStore;
use crate::web::{self, AppState, middleware as mw};

mod serve;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The HTTP application with every route and layer, ready to serve.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .merge(web::health::routes())
        .merge(web::auth::routes())
        .merge(web::account::routes())
        .merge(web::alerts::routes())
        .merge(web::webhooks::routes())
        .merge(web::orgs::routes())
        .merge(web::opt_outs::routes())
        .merge(web::disclosures::routes())
        .merge(web::domains::routes())
        .merge(web::bundles::routes())
        .merge(web::quarantine::routes())
        .merge(web::queue::routes())
        .merge(web::reporting::routes())
        .merge(web::figures::routes())
        .merge(web::lookup::routes())
        .merge(web::leave::routes())
        .merge(web::patient::routes())
        .merge(web::sso::routes())
        .merge(web::api::routes(&state.config))
        .merge(web::mail::routes(&state.config))
        .merge(web::audit_log::routes())
        .merge(web::directory::routes())
        .merge(web::records::routes())
        .nest_service("/static", ServeDir::new(static_dir()))
        .fallback(|| async { web::AppError::NotFound });
    apply_middleware(routes, state)
}

/// Where the stylesheet, scripts and vendored htmx are: beside the binary's crate in
/// development, or `DIRECTMAIL_STATIC_DIR` (the Docker image sets it).
fn static_dir() -> std::path::PathBuf {
    std::env::var_os("DIRECTMAIL_STATIC_DIR")
        .map(Into::into)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static"))
}

/// Every layer, in one place. A layer wraps what was added before it, so the list
/// reads from the innermost (next to the handlers) to the outermost.
fn apply_middleware(routes: Router<AppState>, state: AppState) -> Router {
    // CSRF wraps the whole router as one service (not each route, as `Router::layer`
    // does), so that a refused form can be answered by routing its page's GET.
    let body_timeout = Duration::from_secs(state.config.http_idle_timeout_seconds);
    // Innermost, on the routes, where the matched route's template is known: noted
    // for the HTTP figures (`mw::http_figures`, outermost).
    let routes = routes.layer(middleware::from_fn(mw::note_route));
    let routed = routes.with_state(state.clone());
    let guarded = Router::new().fallback_service(
        tower::ServiceBuilder::new()
            .layer(middleware::from_fn(mw::csrf))
            .service(routed),
    );
    // The extractors' limit; the CSRF layer already held url-encoded forms to
    // FORM_LIMIT and uploads to UPLOAD_LIMIT.
    let guarded = guarded.layer(DefaultBodyLimit::max(mw::UPLOAD_LIMIT));
    // CSRF needs the session, so the session layer sits outside it. The store
    // remembers ended sessions, so a request in flight at sign-out cannot save its
    // copy back (`store::sessions`).
    let with_sessions = match &state.db.sessions {
        SessionPool::Sqlite(pool) => guarded.layer(session_layer(
            ending(SqliteStore::new(pool.clone()), &state),
            &state.config,
        )),
        SessionPool::Postgres(pool) => guarded.layer(session_layer(
            ending(PostgresStore::new(pool.clone()), &state),
            &state.config,
        )),
    };
    let metrics = state.metrics.clone();
    with_sessions
        // Error pages need the request id set below, and see every status.
        .layer(middleware::from_fn(mw::error_pages))
        .layer(middleware::from_fn_with_state(state, mw::security_headers))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        // The trace span carries the request id on every log line of the request;
        // paths are logged, query strings are not (they may carry search terms).
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            let path = web::loggable_path(req.uri().path());
            tracing::info_span!("request", request_id = %id, method = %req.method(), path = %path)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        // Outermost, so it covers whatever reads the body (CSRF, extractors): a body
        // that stops arriving for the idle timeout fails the request, so a stalled
        // upload cannot hold a connection (a silent connection without a request is
        // closed by the serving loop, `serve`).
        .layer(tower::util::MapRequestLayer::new(
            move |req: axum::extract::Request| {
                req.map(|body| serve::stall_limited(body, body_timeout))
            },
        ))
        // Outermost: each request counted once, timed through every layer, with the
        // status the client gets (after error pages).
        .layer(middleware::from_fn_with_state(metrics, mw::http_figures))
}

/// The session store that keeps ended sessions ended.
fn ending<S>(store: S, state: &AppState) -> EndingStore<S> {
    // the longest a session record lives, and an hour to spare
    let remember = i64::from(state.config.session_lifetime_minutes) * 60 + 3600;
    EndingStore::new(store, state.db.clone(), state.clock.clone(), remember)
}

fn session_layer<S: SessionStore + Clone>(store: S, config: &Config) -> SessionManagerLayer<S> {
    SessionManagerLayer::new(store)
        .with_name("directmail_session")
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_secure(config.served_over_https())
        .with_path("/")
        // The absolute lifetime; the organization's idle timeout is enforced in
        // `web::session`, which also warns before it.
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(i64::from(
            config.session_lifetime_minutes,
        ))))
}

/// A built application bound to its port.
/// Tells the processing and delivery workers that the server is stopping: they
/// finish what they hold and claim nothing more.
#[derive(Clone, Debug)]
pub struct Stopping(tokio::sync::watch::Receiver<bool>);

impl Stopping {
    /// True once the server is stopping.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when the server starts stopping.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// How long the workers get, after the listeners closed, to finish what they claimed.
pub const WORKER_DEADLINE: Duration = Duration::from_secs(30);

pub struct Application {
    listener: TcpListener,
    router: Router,
    pub state: AppState,
    /// Set on the very first start: the operator's one-time password.
    pub first_operator: Option<FirstOperator>,
    tls: Option<Arc<rustls::ServerConfig>>,
    smtp_listener: TcpListener,
    smtp_config: directmail_smtp::Config,
    /// `DIRECTMAIL_METRICS_ADDR`'s listener; none when the figures are not served.
    metrics_listener: Option<TcpListener>,
    /// The processing and delivery workers, and how to tell them to stop.
    workers: Vec<tokio::task::JoinHandle<()>>,
    stop_workers: tokio::sync::watch::Sender<bool>,
}

impl Application {
    /// Connects and migrates the database, creates first-start records, and binds.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        Self::build_with_clock(config, Clock::default()).await
    }

    pub async fn build_with_clock(config: Config, clock: Clock) -> anyhow::Result<Application> {
        let db = Db::connect(&config.database_url()).await?;
        db.migrate().await?;
        match &db.sessions {
            SessionPool::Sqlite(pool) => SqliteStore::new(pool.clone()).migrate().await,
            SessionPool::Postgres(pool) => PostgresStore::new(pool.clone()).migrate().await,
        }
        .context("cannot create the session table")?;
        let (secret, source) = secrets::load(&config)?;
        secrets::check_against_database(&db, &secret).await?;
        // before anything is audited: from here on every entry is keyed
        crate::audit::key_chain(&db, &crate::audit::AuditKey::derive(&secret), clock.now())
            .await
            .context("cannot key the audit log")?;
        let sealed = secrets::seal_plaintext_totp(&db, &secret)
            .await
            .context("cannot seal the TOTP secrets stored in clear")?;
        if sealed > 0 {
            tracing::info!(
                users = sealed,
                "sealed TOTP secrets stored in clear by an older version"
            );
        }
        if source == secrets::KeySource::Development {
            tracing::warn!(
                path = %config.data_dir.join("secret.key").display(),
                "DEVELOPMENT KEY-ENCRYPTION KEY in use: private keys are sealed with a key generated into the data directory. Set DIRECTMAIL_SECRET_KEY or DIRECTMAIL_SECRET_KEY_FILE in production, and keep that key apart from database backups."
            );
        }
        // Everything that can fail comes before first-start records, so the one-time
        // password is never created without being printed.
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(load_tls(cert, key)?)),
            _ => None,
        };
        let listener = TcpListener::bind(config.http_addr).await.with_context(|| {
            format!(
                "cannot listen on {}: the port is in use or not allowed; choose another with DIRECTMAIL_HTTP_ADDR",
                config.http_addr
            )
        })?;
        let smtp_listener = TcpListener::bind(config.smtp_addr).await.with_context(|| {
            format!(
                "cannot listen for SMTP on {}: the port is in use or not allowed; choose another with DIRECTMAIL_SMTP_ADDR",
                config.smtp_addr
            )
        })?;
        let metrics_listener = match config.metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "cannot listen for metrics on {addr}: the port is in use or not allowed; choose another with DIRECTMAIL_METRICS_ADDR, or unset it"
                )
            })?),
            None => None,
        };
        let smtp_tls = match (&config.smtp_tls_cert, &config.smtp_tls_key) {
            (Some(cert), Some(key)) => {
                let read = |p: &std::path::Path, what: &str| {
                    std::fs::read(p).with_context(|| format!("cannot read {what} {}", p.display()))
                };
                Some(
                    directmail_smtp::tls_config_from_pem(
                        &read(cert, "DIRECTMAIL_SMTP_TLS_CERT")?,
                        &read(key, "DIRECTMAIL_SMTP_TLS_KEY")?,
                    )
                    .context("the SMTP TLS certificate and key are not usable")?,
                )
            }
            _ => None,
        };
        let smtp_config = directmail_smtp::Config {
            listen_addr: smtp_listener.local_addr()?,
            hostname: config
                .smtp_hostname
                .clone()
                .unwrap_or_else(|| config.hisp_domain.clone()),
            tls: smtp_tls,
            max_message_size: usize::try_from(config.smtp_max_size).unwrap_or(usize::MAX),
            ..directmail_smtp::Config::default()
        };
        let first_operator = bootstrap::run(&db, &config, &secret, clock.now()).await?;
        let filled = crate::store::messages::backfill(&db).await?;
        if filled > 0 {
            tracing::info!(
                messages = filled,
                "filled the list and search fields of older messages"
            );
        }
        let bound = listener.local_addr()?;
        let public_base = match &config.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None if tls.is_some() => format!("https://{bound}"),
            None => format!("http://{bound}"),
        };
        let metrics = crate::metrics::Metrics::new(clock.now());
        let fetcher = crate::pki::fetch::Fetcher::new(
            Duration::from_secs(config.fetch_timeout_seconds),
            config.network_policy(),
            &config.extra_https_roots()?,
        )?
        .with_metrics(metrics.clone());
        let discovery = crate::recipients::discovery(&db, &fetcher, &config)?;
        let records = Arc::new(crate::records::Records::new(&config)?);
        let state = AppState {
            records,
            discovery,
            db,
            config: Arc::new(config),
            clock,
            public_base,
            secret: Arc::new(secret),
            fetcher,
            wake_processor: Arc::default(),
            wake_sender: Arc::default(),
            wake_alerts: Arc::default(),
            wake_webhooks: Arc::default(),
            metrics,
        };
        let leases = crate::leases::Leases::new(state.config.claim_seconds);
        leases.spawn_renewal(state.db.clone(), state.clock.clone());
        let (stop_workers, stopping) = tokio::sync::watch::channel(false);
        let stopping = Stopping(stopping);
        let mut workers = Vec::new();
        // several workers, so that a message whose certificates point at slow servers
        // does not hold up the others (each message is claimed by one worker)
        for _ in 0..crate::inbound::WORKERS {
            workers.push(tokio::spawn(
                crate::inbound::Processor {
                    db: state.db.clone(),
                    secret: state.secret.clone(),
                    fetcher: state.fetcher.clone(),
                    clock: state.clock.clone(),
                    wake: state.wake_processor.clone(),
                    wake_sender: state.wake_sender.clone(),
                    wake_alerts: state.wake_alerts.clone(),
                    wake_webhooks: state.wake_webhooks.clone(),
                    metrics: state.metrics.clone(),
                    stop: stopping.clone(),
                    leases: leases.clone(),
                }
                .run(),
            ));
        }
        // several senders too, so that one slow or unreachable peer (a mail exchanger
        // that does not answer, a DNS server that times out) holds up only its own
        // messages, not every message and notification behind it
        let sender = crate::outbound::Sender {
            db: state.db.clone(),
            secret: state.secret.clone(),
            clock: state.clock.clone(),
            wake: state.wake_sender.clone(),
            wake_inbound: state.wake_processor.clone(),
            relay: state.config.smtp_relay.clone(),
            notify_timeout: i64::try_from(state.config.notify_timeout).unwrap_or(3600),
            retry_deadline: i64::try_from(state.config.retry_deadline).unwrap_or(86_400),
            dns_resolver: state.config.dns_resolver,
            mx_port: state.config.smtp_mx_port,
            network: state.config.network_policy(),
            discovery: state.discovery.clone(),
            metrics: state.metrics.clone(),
            wake_webhooks: state.wake_webhooks.clone(),
            stop: stopping.clone(),
            leases,
            hostname: state
                .config
                .smtp_hostname
                .clone()
                .unwrap_or_else(|| state.config.hisp_domain.clone()),
        };
        for _ in 0..crate::outbound::WORKERS {
            workers.push(tokio::spawn(sender.clone().run()));
        }
        // one webhook worker with DIRECTMAIL_WEBHOOK_CONCURRENCY requests in flight; it
        // finishes those when stopping, so it is waited for like the senders
        workers.push(tokio::spawn(
            crate::webhooks::Deliverer::new(
                &state.config,
                state.db.clone(),
                state.secret.clone(),
                state.clock.clone(),
                state.wake_webhooks.clone(),
                stopping.clone(),
            )?
            .run(),
        ));
        if !state.config.directory_sources.is_empty() {
            tokio::spawn(
                crate::directory::refresh::Refresher {
                    db: state.db.clone(),
                    clock: state.clock.clone(),
                    sources: state.config.directory_sources.clone(),
                    every_minutes: state.config.directory_refresh_minutes,
                    timeout: Duration::from_secs(state.config.fetch_timeout_seconds),
                    network: state.config.network_policy(),
                    https_roots: state.config.extra_https_roots().unwrap_or_default(),
                }
                .run(),
            );
        }
        // one alert worker: alerts are few, and a relay that is down only delays them
        workers.push(tokio::spawn(
            crate::alerts::Alerter::new(
                &state.config,
                state.db.clone(),
                state.secret.clone(),
                state.clock.clone(),
                state.public_base.clone(),
                state.wake_alerts.clone(),
            )?
            .run(stopping.clone()),
        ));
        spawn_session_cleanup(&state);
        spawn_trash_purge(&state);
        spawn_bundle_refresh(&state);
        if let Some(addr) = state.config.dns_cert_addr {
            crate::pki::publish::start(state.db.clone(), state.clock.clone(), addr).await?;
        }
        Ok(Application {
            listener,
            router: router(state.clone()),
            state,
            first_operator,
            tls,
            smtp_listener,
            smtp_config,
            metrics_listener,
            workers,
            stop_workers,
        })
    }

    /// Where the SMTP listener is bound.
    pub fn smtp_addr(&self) -> std::io::Result<SocketAddr> {
        self.smtp_listener.local_addr()
    }

    /// Where `/metrics` is served, when `DIRECTMAIL_METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting, finishes requests and
    /// SMTP transactions in flight, and gives the workers [`WORKER_DEADLINE`] to finish
    /// the messages they claimed (they claim no more); a claim still held then lapses
    /// within `DIRECTMAIL_CLAIM_SECONDS` (nothing renews it once the process has
    /// exited), and another instance or the next start takes it over.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // one shutdown signal for both listeners
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let when = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let backend = crate::smtp::PortalBackend {
            db: self.state.db.clone(),
            clock: self.state.clock.clone(),
            hostname: self.smtp_config.hostname.clone(),
            wake: self.state.wake_processor.clone(),
            metrics: self.state.metrics.clone(),
        };
        let smtp = tokio::spawn(directmail_smtp::serve(
            self.smtp_listener,
            self.smtp_config,
            backend,
            when(stopped.clone()),
        ));
        if let Some(listener) = self.metrics_listener {
            let app = web::figures::metrics_router(self.state.clone());
            let stop = when(stopped.clone());
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            });
        }
        let make = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        let limits = serve::Limits::from_config(&self.state.config);
        let http = serve::serve(self.listener, make, self.tls, limits, when(stopped))
            .await
            .context("the HTTP server stopped");
        // SMTP sessions get a bounded time to finish their messages
        let _ = tokio::time::timeout(Duration::from_secs(30), smtp).await;
        let _ = self.stop_workers.send(true);
        let finished = futures_util::future::join_all(self.workers);
        if tokio::time::timeout(WORKER_DEADLINE, finished)
            .await
            .is_err()
        {
            tracing::warn!(
                "stopping with messages still being processed or sent; their claims lapse"
            );
        }
        http
    }
}

fn spawn_session_cleanup(state: &AppState) {
    use tower_sessions::ExpiredDeletion as _;
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            let result = match &state.db.sessions {
                SessionPool::Sqlite(p) => SqliteStore::new(p.clone()).delete_expired().await,
                SessionPool::Postgres(p) => PostgresStore::new(p.clone()).delete_expired().await,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not delete expired sessions");
            }
            let now = state.clock.now();
            if let Err(e) = crate::store::sessions::forget_ended(&state.db, now).await {
                tracing::warn!(error = %e, "could not forget ended sessions");
            }
            // refusals counted in windows that have closed get their summary entry
            let window = i64::from(state.config.lockout_minutes) * 60;
            if let Err(e) = crate::accounts::summarise_refusals(&state.db, now, window).await {
                tracing::warn!(error = %e, "could not summarise refused sign-ins");
            }
            if let Err(e) = crate::store::throttle::forget_unknown_failures(&state.db, now).await {
                tracing::warn!(error = %e, "could not forget old failed sign-ins");
            }
        }
    });
}

/// Deletes messages kept in Trash longer than `DIRECTMAIL_TRASH_RETENTION_DAYS`.
fn spawn_trash_purge(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let keep = i64::from(state.config.trash_retention_days) * 86_400;
            match crate::store::messages::purge_trash(&state.db, state.clock.now() - keep).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(messages = n, "emptied Trash past its retention"),
                Err(e) => tracing::warn!(error = %e, "could not empty Trash"),
            }
        }
    });
}

/// Refreshes trust bundles when their interval has passed, and forgets what
/// certificate discovery remembered when the anchors for sending change (a refresh,
/// an assignment, or a change made by the CLI or another instance).
fn spawn_bundle_refresh(state: &AppState) {
    let state = state.clone();
    let reader = crate::pki::bundles::Reader::new(&state.fetcher, &state.config);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        let mut sending = crate::pki::bundles::SendingAnchorsWatch::default();
        loop {
            tick.tick().await;
            let now = state.clock.now();
            if let Err(e) = crate::pki::bundles::refresh_due(&state.db, &reader, now).await {
                tracing::warn!(error = format!("{e:#}"), "could not refresh trust bundles");
            }
            match sending.changed(&state.db).await {
                Ok(true) => state.discovery.clear_cache(),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not read the anchors for sending"),
            }
        }
    });
}

fn load_tls(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<rustls::ServerConfig> {
    let cert_pem = std::fs::read(cert)
        .with_context(|| format!("cannot read DIRECTMAIL_TLS_CERT {}", cert.display()))?;
    let key_pem = std::fs::read(key)
        .with_context(|| format!("cannot read DIRECTMAIL_TLS_KEY {}", key.display()))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "DIRECTMAIL_TLS_CERT {} is not a PEM certificate chain",
                cert.display()
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "DIRECTMAIL_TLS_CERT {} holds no certificate",
        cert.display()
    );
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .with_context(|| {
            format!(
                "DIRECTMAIL_TLS_KEY {} holds no PEM private key",
                key.display()
            )
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not belong together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called
/// (not when first polled), so a signal that arrives right after start-up is caught.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => {},
                () = wait(int) => {},
            }
            tracing::info!("shutting down: finishing requests in flight");
        }
    }
    #[cfg(not(unix))]
    async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: finishing requests in flight");
    }
}
