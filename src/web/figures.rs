//! The operator's figures: the console's "System figures" page (`/figures`), and the
//! separate listener's `GET /metrics` (OpenMetrics text for Prometheus), both from
//! the same [`crate::metrics::Metrics`]. The page also warns of hosted certificates
//! and anchors that end within 30 days or have ended, each with what to do.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::session::{Chrome, CurrentUser};
use super::{AppResult, AppState};
use crate::clock::format_utc;
use crate::metrics::{Figures, days_left};
use crate::store::figures::{CertificateEnd, CertificateKind};

/// Days ahead the page warns of certificates and anchors that end.
const WARNING_DAYS: i64 = 30;

pub fn routes() -> Router<AppState> {
    Router::new().route("/figures", get(page))
}

/// The metrics listener's application: `GET /metrics` and nothing else.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

async fn scrape(State(state): State<AppState>) -> Response {
    match state.metrics.render(&state.db, state.clock.now()).await {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "could not read the figures");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the figures could not be read from the database\n",
            )
                .into_response()
        }
    }
}

/// A certificate or anchor that ends soon or has ended, in words.
pub struct Warning {
    /// "Hosted certificate", "Trust anchor", "Trust bundle anchor"
    pub what: &'static str,
    pub subject: String,
    /// The domain or bundle it belongs to, and the page where it is managed.
    pub owner: String,
    pub link: String,
    /// "ended 2026-…" or "ends 2026-… (in 12 days)"
    pub when: String,
    pub ended: bool,
    /// What the operator should do about it.
    pub todo: String,
    pub fingerprint: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "operator/figures.html")]
struct FiguresPage {
    chrome: Chrome,
    f: Figures,
    since: String,
    mean_to_processed: String,
    warnings: Vec<Warning>,
    /// How many certificates and anchors are watched in all.
    watched: usize,
}

async fn page(State(state): State<AppState>, current: CurrentUser) -> AppResult<FiguresPage> {
    current.require_operator()?;
    let now = state.clock.now();
    let f = state.metrics.figures(&state.db).await?;
    let warnings = warnings(&f.certificates, now, 100);
    Ok(FiguresPage {
        chrome: current.chrome,
        since: format_utc(f.started_at),
        mean_to_processed: duration_words(f.processed_mean_seconds),
        watched: f.certificates.len(),
        warnings,
        f,
    })
}

/// The certificates and anchors (soonest end first) that end within 30 days or have
/// ended, at most `limit`, each with what to do: the figures page and the operator's
/// home list the same ones.
pub fn warnings(ends: &[CertificateEnd], now: i64, limit: usize) -> Vec<Warning> {
    ends.iter()
        .filter(|c| c.not_after < now + WARNING_DAYS * 86_400)
        .take(limit)
        .map(|c| warning(c, now))
        .collect()
}

fn warning(c: &CertificateEnd, now: i64) -> Warning {
    let ended = c.not_after <= now;
    let when = if ended {
        format!("ended {}", format_utc(c.not_after))
    } else {
        let days = days_left(c.not_after, now).round();
        format!("ends {} (in {days} days)", format_utc(c.not_after))
    };
    let (owner, link) = match (&c.domain, &c.bundle) {
        (Some((domain_id, Some(org), name)), _) => {
            (name.clone(), format!("/orgs/{org}/domains/{domain_id}"))
        }
        (Some((_, None, name)), _) => (name.clone(), "/orgs".to_owned()),
        (None, Some((id, name))) => (name.clone(), format!("/bundles/{id}")),
        (None, None) => (String::new(), "/orgs".to_owned()),
    };
    let (what, todo) = match (c.kind, ended) {
        (CertificateKind::Hosted, false) => (
            "Hosted certificate",
            "Get a renewed certificate for this domain from its certificate authority and import it with its key on the domain's page before the end date; until then senders and recipients can still use the current one.",
        ),
        (CertificateKind::Hosted, true) => (
            "Hosted certificate",
            "Mail of this domain can no longer be signed or decrypted with it, and other HISPs refuse it: import a renewed certificate and key on the domain's page now.",
        ),
        (CertificateKind::Anchor, false) => (
            "Trust anchor",
            "Ask the anchor's owner for its successor and add it to this domain's anchors before the end date; remove the old one once it has ended.",
        ),
        (CertificateKind::Anchor, true) => (
            "Trust anchor",
            "Messages from senders under this anchor are quarantined as untrusted: add the owner's new anchor to this domain, then remove this one.",
        ),
        (CertificateKind::BundleAnchor, false) => (
            "Trust bundle anchor",
            "Refresh the bundle (or import its new file) before the end date; if the publisher has not replaced the anchor yet, ask them to.",
        ),
        (CertificateKind::BundleAnchor, true) => (
            "Trust bundle anchor",
            "Senders under this anchor are no longer trusted: refresh the bundle or import its new file, and ask the publisher if the anchor is still in it.",
        ),
    };
    Warning {
        what,
        subject: c.subject.clone(),
        owner,
        link,
        when,
        ended,
        todo: todo.to_owned(),
        fingerprint: c.fingerprint.clone(),
    }
}

/// "42 seconds", "7 minutes", "3.5 hours".
fn duration_words(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{} seconds", seconds.round())
    } else if seconds < 2.0 * 3600.0 {
        format!("{} minutes", (seconds / 60.0).round())
    } else {
        format!("{:.1} hours", seconds / 3600.0)
    }
}
