//! The operator's certificate lookup: runs certificate discovery for an address now
//! (not from the cache) and shows every step, the outcome in a sentence, and the
//! certificate chosen, for answering "why does it say no certificate?".

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use der::Decode as _;
use futures_util::StreamExt as _;
use serde::Deserialize;

use super::session::{Chrome, CurrentUser};
use super::{AppResult, AppState, ClientIp};
use crate::audit::{self, Event};

pub fn routes() -> Router<AppState> {
    Router::new().route("/discovery", get(page))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LookupQuery {
    address: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "operator/discovery.html")]
struct LookupPage {
    chrome: Chrome,
    address: String,
    looked_up: bool,
    summary: String,
    /// The outcome is known (the part of the page after the steps).
    done: bool,
    /// (label, value) facts about the certificate chosen.
    certificate: Vec<(String, String)>,
}

/// One step of a lookup, as it is streamed into the page's list.
#[derive(Template)]
#[template(source = "<li>{{ step }}</li>\n", ext = "html")]
struct StepItem<'a> {
    step: &'a str,
}

/// Where the steps go in the page: the page is sent up to here at once, each step as it
/// is taken, then the rest once the outcome is known.
const STEPS_MARK: &str = "<!--steps-->";

async fn page(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Query(q): Query<LookupQuery>,
) -> AppResult<Response> {
    current.require_operator()?;
    let address = q.address.trim().to_owned();
    let mut page = LookupPage {
        chrome: current.chrome.clone(),
        address: address.clone(),
        looked_up: false,
        summary: String::new(),
        done: false,
        certificate: Vec::new(),
    };
    if address.is_empty() {
        return Ok(page.into_response());
    }
    page.looked_up = true;
    audit::record(
        &state.db,
        state.clock.now(),
        &current.actor(ip),
        Event::new("discovery.lookup", &address),
    )
    .await?;
    let at = std::time::SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs(state.clock.now().max(0) as u64);
    let (progress, steps) = tokio::sync::mpsc::unbounded_channel::<String>();
    let discovery = state.discovery.clone();
    let looked_for = address.clone();
    let lookup =
        tokio::spawn(async move { discovery.lookup_watched(&looked_for, at, progress).await });
    let first = page.render().map_err(anyhow::Error::from)?;
    let head = first
        .split_once(STEPS_MARK)
        .map(|(head, _)| head.to_owned())
        .unwrap_or_default();
    let each = futures_util::stream::unfold(steps, |mut steps| async move {
        let step = steps.recv().await?;
        let item = StepItem { step: &step }.render().unwrap_or_default();
        Some((item, steps))
    });
    let rest = futures_util::stream::once(async move {
        match lookup.await {
            Ok(Ok(outcome)) => {
                page.summary = outcome.summary.clone();
                if let Some(found) = &outcome.certificate {
                    page.certificate = certificate_facts(found);
                }
            }
            Ok(Err(e)) => page.summary = format!("“{address}” cannot be looked up: {e}."),
            Err(_) => page.summary = "The lookup stopped before it finished.".to_owned(),
        }
        page.done = true;
        page.render()
            .ok()
            .and_then(|all| all.split_once(STEPS_MARK).map(|(_, tail)| tail.to_owned()))
            .unwrap_or_default()
    });
    let body = futures_util::stream::once(async move { head })
        .chain(each)
        .chain(rest)
        .map(|part| Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(part)));
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// What the page says about the certificate chosen.
fn certificate_facts(found: &directmail_discovery::Discovered) -> Vec<(String, String)> {
    let mut facts = Vec::new();
    if let Ok(cert) = directmail_smime::Certificate::from_der(&found.der) {
        let info = crate::pki::info(&cert);
        facts = vec![
            ("Subject".into(), info.subject),
            ("Issuer".into(), info.issuer),
            (
                "Valid until".into(),
                crate::clock::format_utc(info.not_after),
            ),
            ("SHA-256 fingerprint".into(), info.fingerprint),
        ];
    }
    facts.push((
        "Found".into(),
        format!("{:?}, {:?}", found.source.method, found.source.binding),
    ));
    facts
}
