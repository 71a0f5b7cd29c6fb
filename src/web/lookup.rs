//! The operator's certificate lookup: runs certificate discovery for an address now
//! (not from the cache) and shows every step, the outcome in a sentence, and the
//! certificate chosen, for answering "why does it say no certificate?".

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use der::Decode as _;
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
    steps: Vec<String>,
    /// (label, value) facts about the certificate chosen.
    certificate: Vec<(String, String)>,
}

async fn page(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Query(q): Query<LookupQuery>,
) -> AppResult<LookupPage> {
    current.require_operator()?;
    let address = q.address.trim().to_owned();
    let mut page = LookupPage {
        chrome: current.chrome.clone(),
        address: address.clone(),
        looked_up: false,
        summary: String::new(),
        steps: Vec::new(),
        certificate: Vec::new(),
    };
    if address.is_empty() {
        return Ok(page);
    }
    page.looked_up = true;
    state.discovery.forget(&address);
    let at = std::time::SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs(state.clock.now().max(0) as u64);
    match state.discovery.lookup_at(&address, at).await {
        Ok(outcome) => {
            page.summary = outcome.summary.clone();
            page.steps = outcome.steps.clone();
            if let Some(found) = &outcome.certificate {
                if let Ok(cert) = directmail_smime::Certificate::from_der(&found.der) {
                    let facts = crate::pki::info(&cert);
                    page.certificate = vec![
                        ("Subject".into(), facts.subject),
                        ("Issuer".into(), facts.issuer),
                        (
                            "Valid until".into(),
                            crate::clock::format_utc(facts.not_after),
                        ),
                        ("SHA-256 fingerprint".into(), facts.fingerprint),
                    ];
                }
                page.certificate.push((
                    "Found".into(),
                    format!("{:?}, {:?}", found.source.method, found.source.binding),
                ));
            }
        }
        Err(e) => page.summary = format!("“{address}” cannot be looked up: {e}."),
    }
    audit::record(
        &state.db,
        state.clock.now(),
        &current.actor(ip),
        Event::new("discovery.lookup", &address),
    )
    .await?;
    Ok(page)
}
