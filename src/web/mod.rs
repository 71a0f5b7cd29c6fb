//! The browser portal: pages per area, each module owning its routes.
//!
//! - [`middleware`]: security headers, CSRF, error pages (applied in `app.rs`);
//! - [`session`]: who is signed in, idle timeout, sign-in helpers;
//! - [`auth`]: sign-in, MFA challenge, invites and resets, sign-out;
//! - [`account`]: a user's own password, MFA and sessions;
//! - [`orgs`]: the operator's and office manager's console;
//! - [`directory`]: the provider directory, address books and autocomplete;
//! - [`message`] and [`clinical`]: reading a message, its XDM packages and clinical
//!   documents; [`leave`]: the page before a link out of a document;
//! - [`health`]: `/healthz` and `/readyz`;
//! - [`figures`]: the console's figures page and the separate `/metrics` listener;
//! - [`records`]: FHIR document sources, the JWKS, and records retrieved from them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::clock::Clock;
use crate::config::Config;
use crate::db::Db;

pub mod account;
pub mod alerts;
pub mod api;
pub mod audit_log;
pub mod auth;
pub mod bundles;
pub mod clinical;
pub mod compose;
pub mod directory;
pub mod disclosures;
pub mod domains;
pub mod figures;
pub mod health;
pub mod leave;
pub mod lookup;
pub mod mail;
pub mod message;
pub mod middleware;
pub mod opt_outs;
pub mod orgs;
pub mod patient;
pub mod purpose;
pub mod quarantine;
pub mod queue;
pub mod records;
pub mod reporting;
pub mod requests;
pub mod session;
pub mod sso;
pub mod webhooks;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub clock: Clock,
    /// Where users reach the portal (`DIRECTMAIL_PUBLIC_URL`, or the bound address),
    /// for links handed out of band (invitations, resets).
    pub public_base: String,
    /// Seals private keys and TOTP secrets at rest.
    pub secret: Arc<crate::secrets::SecretKey>,
    /// Fetches and caches CRLs and AIA issuers for trust decisions.
    pub fetcher: crate::pki::fetch::Fetcher,
    /// Wakes the processor of received messages (after SMTP stores one, or a retry).
    pub wake_processor: Arc<tokio::sync::Notify>,
    /// Wakes the delivery worker after something was queued.
    pub wake_sender: Arc<tokio::sync::Notify>,
    /// Wakes the alert worker after an alert e-mail was queued.
    pub wake_alerts: Arc<tokio::sync::Notify>,
    /// Wakes the webhook worker after an event was queued or a delivery replayed.
    pub wake_webhooks: Arc<tokio::sync::Notify>,
    /// Certificate discovery (DNS CERT, LDAP) for recipients on other HISPs.
    pub discovery: Arc<directmail_discovery::Discovery>,
    /// This instance's figures (`/metrics`, the console's figures page).
    pub metrics: crate::metrics::Metrics,
    /// Document sources' HTTP client, access tokens and discovery ([`crate::records`]).
    pub records: Arc<crate::records::Records>,
}

impl FromRef<AppState> for Db {
    fn from_ref(state: &AppState) -> Db {
        state.db.clone()
    }
}

/// The request path's error. Each variant says the status it maps to; the page shown
/// is rendered by `middleware::error_pages` with the request id.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 404: no such thing, or not visible to this user (other organizations' objects
    /// are reported as missing, not forbidden, so their existence does not leak).
    #[error("not found")]
    NotFound,
    /// 403 with a sentence saying what the user cannot do.
    #[error("{0}")]
    Forbidden(String),
    /// 400 with a sentence saying what was wrong.
    #[error("{0}")]
    BadRequest(String),
    /// 503: too many password checks at once; nothing was done.
    #[error("busy")]
    Busy,
    /// 500: logged with its cause chain; the user sees only the request id.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Internal(anyhow::Error::new(e).context("database"))
    }
}

impl From<tower_sessions::session::Error> for AppError {
    fn from(e: tower_sessions::session::Error) -> Self {
        AppError::Internal(anyhow::Error::new(e).context("session store"))
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        AppError::Internal(anyhow::Error::new(e).context("background task"))
    }
}

/// Marks a response whose body `middleware::error_pages` replaces with an error page.
#[derive(Clone, Debug)]
pub struct ErrorPage {
    pub message: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            AppError::NotFound => (
                StatusCode::NOT_FOUND,
                "We could not find that page. It may have moved, or you may not have access to it."
                    .to_owned(),
            ),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            AppError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is busy right now and nothing was changed. Try again in a moment."
                    .to_owned(),
            ),
            AppError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on our side and nothing was changed. If it happens again, give your administrator the request id below.".to_owned(),
                )
            }
        };
        let mut response = status.into_response();
        response.extensions_mut().insert(ErrorPage { message });
        response
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// The address the request came from: the peer, or the client named by a trusted
/// proxy's `X-Forwarded-For`.
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl<S> FromRequestParts<S> for ClientIp
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        Ok(ClientIp(
            client_ip(parts, &state.config.trusted_proxies).to_string(),
        ))
    }
}

/// Ends an action on one row: records `event` in the action's transaction, commits,
/// and sends the user back to `to` with `message` shown once.
pub async fn finish_action(
    mut tx: sqlx::Transaction<'_, sqlx::Any>,
    state: &AppState,
    current: &session::CurrentUser,
    ip: String,
    event: crate::audit::Event<'_>,
    message: String,
    to: &str,
) -> AppResult<Response> {
    crate::audit::append(&mut tx, state.clock.now(), &current.actor(ip), event).await?;
    tx.commit().await?;
    session::flash(&current.session, message).await?;
    Ok(axum::response::Redirect::to(to).into_response())
}

/// The peer address, or, when the peer is a trusted proxy, the right-most address in
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(parts: &Parts, trusted: &[IpAddr]) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

/// Whether the browser reached us over HTTPS (directly, or per a trusted proxy).
pub fn is_https(parts: &Parts, config: &Config) -> bool {
    if config.served_over_https() {
        return true;
    }
    let peer_trusted = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|c| config.trusted_proxies.contains(&c.0.ip()));
    peer_trusted
        && parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// argon2 takes a core and 19 MiB per check: at most two per core run at once, so a
/// flood of sign-ins queues (and then gets 503) instead of exhausting memory.
static HASHING: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    tokio::sync::Semaphore::new(cores * 2)
});

/// A turn at password hashing; waits up to 10 s.
pub async fn hashing_permit() -> AppResult<tokio::sync::SemaphorePermit<'static>> {
    match tokio::time::timeout(std::time::Duration::from_secs(10), HASHING.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(AppError::Busy),
    }
}

/// Checks a password against a stored hash (`None`: same time, always false).
pub async fn verify_password(stored: Option<String>, password: String) -> AppResult<bool> {
    let _turn = hashing_permit().await?;
    Ok(tokio::task::spawn_blocking(move || {
        crate::auth::verify_password(stored.as_deref(), &password)
    })
    .await?)
}

/// Hashes a new password with argon2id.
pub async fn hash_password(password: String) -> AppResult<String> {
    let _turn = hashing_permit().await?;
    tokio::task::spawn_blocking(move || crate::auth::hash_password(&password))
        .await?
        .map_err(|e| AppError::Internal(anyhow::anyhow!("hashing failed: {e}")))
}

/// A request path fit for logs: single-use tokens and other long opaque segments
/// (invitation links) are replaced, so no credential reaches a log line.
pub fn loggable_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.len() >= 24 {
                "{token}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The form, or a 400 saying it could not be read (for action buttons, which have
/// no page of their own to show again).
pub fn form_or_400<T>(
    form: Result<axum::Form<T>, axum::extract::rejection::FormRejection>,
) -> AppResult<T> {
    form.map(|axum::Form(f)| f)
        .map_err(|rejection| AppError::BadRequest(auth::unreadable(&rejection).1))
}

/// Field-level messages for re-rendering a form next to what was typed.
#[derive(Debug, Default, Clone)]
pub struct FieldErrors(HashMap<&'static str, String>);

impl FieldErrors {
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.entry(field).or_insert_with(|| message.into());
    }

    /// The message for `field`, or "" (templates test with `is_empty`).
    pub fn get(&self, field: &str) -> &str {
        self.0.get(field).map(String::as_str).unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Records a validation result, returning the value when it was valid.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &'static str,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e.to_string());
                None
            }
        }
    }
}

/// Keyset paging: `rows` were fetched one more than `page` to learn whether an older
/// page exists. Keeps `page` of them and gives the key of the last one kept, to go
/// on from ("Older"); empty on the last page.
pub fn paginate<T>(mut rows: Vec<T>, page: i64, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
    if rows.len() as i64 > page {
        rows.truncate(usize::try_from(page).unwrap_or(0));
        let next = rows.last().map(&key).unwrap_or_default();
        (rows, next)
    } else {
        (rows, String::new())
    }
}

/// A page number from a query string (1-based), never below 1 or absurdly high.
pub fn page_number(raw: Option<&str>) -> i64 {
    raw.and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(1)
        .clamp(1, 100_000)
}
