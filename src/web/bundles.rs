//! Trust bundles in the operator console: import from a file or URL, refresh, what
//! each refresh changed, which domains use a bundle for receiving and sending, and
//! removal. HISP operators only.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::domains::{field, read_form, status};
use super::session::{self, Chrome, CurrentUser};
use super::{AppError, AppResult, AppState, ClientIp};
use crate::clock::format_utc;
use crate::pki::ImportProblem;
use crate::pki::bundles::{self, NewImport, Reader};
use crate::store::bundles::{self as store, AnchorFact, BundleRow, Uses};
use crate::store::orgs::Domain;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/bundles", get(list_page).post(import))
        .route("/bundles/{id}", get(bundle_page).post(replace_file))
        .route("/bundles/{id}/refresh", post(refresh_now))
        .route("/bundles/{id}/assign", post(assign))
        .route("/bundles/{id}/remove", post(remove))
}

fn reader(state: &AppState) -> Reader {
    Reader::new(&state.fetcher, &state.config)
}

/// Trust changed for recipients: what discovery remembered was judged with the old
/// anchors.
fn sending_trust_changed(state: &AppState) {
    state.discovery.clear_cache();
}

/// "Refreshed 2026-11-26 14:05 UTC" or "Failed 2026-11-26 14:05 UTC: why".
fn last_outcome(b: &BundleRow) -> String {
    match (b.last_attempt_at, &b.last_error) {
        (None, _) => "never".into(),
        (Some(at), None) => format!("succeeded {}", format_utc(at)),
        (Some(at), Some(e)) => format!("failed {}: {e}", format_utc(at)),
    }
}

pub struct ListRow {
    pub id: i64,
    pub name: String,
    pub source: String,
    pub anchors: i64,
    pub last: String,
    pub failed: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "operator/bundles.html")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<ListRow>,
    error: String,
    name: String,
    url: String,
    refresh_hours: String,
}

async fn list_view(
    state: &AppState,
    chrome: Chrome,
    error: String,
    name: String,
    url: String,
    refresh_hours: String,
) -> AppResult<ListPage> {
    let rows = store::list(&state.db)
        .await?
        .into_iter()
        .map(|b| ListRow {
            last: last_outcome(&b),
            failed: b.last_error.is_some(),
            source: b.url.clone().unwrap_or_else(|| "file".into()),
            anchors: b.anchor_count,
            id: b.id,
            name: b.name,
        })
        .collect();
    Ok(ListPage {
        chrome,
        rows,
        error,
        name,
        url,
        refresh_hours,
    })
}

async fn list_page(State(state): State<AppState>, current: CurrentUser) -> AppResult<ListPage> {
    current.require_operator()?;
    list_view(
        &state,
        current.chrome,
        String::new(),
        String::new(),
        String::new(),
        bundles::DEFAULT_REFRESH_HOURS.to_string(),
    )
    .await
}

async fn import(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    multipart: Multipart,
) -> AppResult<Response> {
    current.require_operator()?;
    let fields = read_form(multipart).await;
    let text = |name: &str| {
        fields
            .as_ref()
            .ok()
            .and_then(|f| field(f, name))
            .map(|v| String::from_utf8_lossy(v).trim().to_owned())
            .unwrap_or_default()
    };
    let (name, url, hours) = (text("name"), text("url"), text("refresh_hours"));
    let refuse = |message: String| async {
        let page = list_view(
            &state,
            current.chrome.clone(),
            message,
            name.clone(),
            url.clone(),
            hours.clone(),
        )
        .await?;
        Ok::<_, AppError>((StatusCode::BAD_REQUEST, page).into_response())
    };
    let fields = match &fields {
        Ok(f) => f,
        Err(message) => return refuse(message.clone()).await,
    };
    let refresh_hours = if hours.is_empty() {
        bundles::DEFAULT_REFRESH_HOURS
    } else {
        match hours.parse::<i64>() {
            Ok(h) => h,
            Err(_) => return refuse("The refresh interval is a number of hours.".into()).await,
        }
    };
    let file = field(fields, "file").map(<[u8]>::to_vec);
    if file.is_some() && !url.is_empty() {
        return refuse("Give either a file or a URL, not both.".into()).await;
    }
    let new = NewImport {
        name: name.clone(),
        url: (!url.is_empty()).then(|| url.clone()),
        file,
        signer: field(fields, "signer").map(<[u8]>::to_vec),
        refresh_hours,
    };
    let now = state.clock.now();
    match bundles::import(&state.db, &reader(&state), new, now, &current.actor(ip)).await {
        Ok((row, refresh)) => {
            session::flash(
                &current.session,
                format!(
                    "Imported the bundle \u{201c}{}\u{201d}: {} anchor(s). Assign it to domains below to use it.",
                    row.name, refresh.anchor_count
                ),
            )
            .await?;
            Ok(Redirect::to(&format!("/bundles/{}", row.id)).into_response())
        }
        Err(ImportProblem::Refused(message)) => refuse(message).await,
        Err(ImportProblem::Internal(e)) => Err(AppError::Internal(e)),
    }
}

pub struct AnchorView {
    pub subject: String,
    pub fingerprint: String,
    pub until: String,
    pub status: String,
}

pub struct FactView {
    pub subject: String,
    pub fingerprint: String,
    pub until: String,
}

pub struct RefreshView {
    pub when: String,
    pub error: String,
    pub added: Vec<FactView>,
    pub removed: Vec<FactView>,
    pub expiring: Vec<FactView>,
    pub anchor_count: i64,
}

pub struct AssignmentView {
    pub domain: String,
    pub uses: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "operator/bundle.html")]
struct BundlePage {
    chrome: Chrome,
    bundle: BundleRow,
    source: String,
    signer: String,
    schedule: String,
    last: String,
    anchors: Vec<AnchorView>,
    refreshes: Vec<RefreshView>,
    assignments: Vec<AssignmentView>,
    domains: Vec<Domain>,
    error: String,
}

fn facts(list: &[AnchorFact]) -> Vec<FactView> {
    list.iter()
        .map(|f| FactView {
            subject: f.subject.clone(),
            fingerprint: f.fingerprint.clone(),
            until: format_utc(f.not_after),
        })
        .collect()
}

async fn operator_bundle(state: &AppState, current: &CurrentUser, id: i64) -> AppResult<BundleRow> {
    current.require_operator()?;
    store::get(&state.db, id).await?.ok_or(AppError::NotFound)
}

async fn bundle_view(
    state: &AppState,
    chrome: Chrome,
    bundle: BundleRow,
    error: String,
) -> AppResult<BundlePage> {
    let now = state.clock.now();
    let anchors = store::anchors(&state.db, bundle.id)
        .await?
        .into_iter()
        .map(|a| AnchorView {
            status: status(a.not_before, a.not_after, now),
            until: format_utc(a.not_after),
            subject: a.subject,
            fingerprint: a.fingerprint,
        })
        .collect();
    let refreshes = store::refreshes(&state.db, bundle.id)
        .await?
        .into_iter()
        .map(|r| RefreshView {
            when: format_utc(r.at),
            error: r.error.clone().unwrap_or_default(),
            added: facts(&r.added),
            removed: facts(&r.removed),
            expiring: facts(&r.expiring),
            anchor_count: r.anchor_count,
        })
        .collect();
    let assignments = store::assignments_of_bundle(&state.db, bundle.id)
        .await?
        .into_iter()
        .map(|a| AssignmentView {
            domain: a.domain,
            uses: a.uses.label().to_owned(),
        })
        .collect();
    let signer = match bundle.signer_pem.as_deref() {
        None => {
            "none: the bundle is accepted unsigned, or signed by the certificate it carries".into()
        }
        Some(pem) => directmail_smime::parse_certificates(pem.as_bytes())
            .ok()
            .and_then(|c| c.into_iter().next())
            .map(|c| {
                let facts = crate::pki::info(&c);
                format!(
                    "{} (SHA-256 {}); unsigned or otherwise signed bundles are refused",
                    facts.subject, facts.fingerprint
                )
            })
            .unwrap_or_else(|| "a certificate that can no longer be read".into()),
    };
    let schedule = match (&bundle.url, bundle.next_refresh_at) {
        (None, _) => "none: imported from a file; upload a new file to replace its anchors".into(),
        (Some(_), Some(next)) => format!(
            "every {} hour(s); next at {}",
            bundle.refresh_hours,
            format_utc(next)
        ),
        (Some(_), None) => format!("every {} hour(s)", bundle.refresh_hours),
    };
    Ok(BundlePage {
        chrome,
        source: bundle
            .url
            .clone()
            .unwrap_or_else(|| "a file imported by an operator".into()),
        signer,
        schedule,
        last: last_outcome(&bundle),
        anchors,
        refreshes,
        assignments,
        domains: store::hosted_domains(&state.db).await?,
        bundle,
        error,
    })
}

async fn bundle_page(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<BundlePage> {
    let bundle = operator_bundle(&state, &current, id).await?;
    bundle_view(&state, current.chrome, bundle, String::new()).await
}

/// The flash after a refresh: what changed, or why nothing did.
fn refresh_message(name: &str, r: &store::Refresh) -> String {
    match &r.error {
        Some(e) => format!(
            "The refresh of \u{201c}{name}\u{201d} failed, so its {} anchor(s) were kept: {e}.",
            r.anchor_count
        ),
        None => format!(
            "Refreshed \u{201c}{name}\u{201d}: {} added, {} removed, {} expiring within 30 days; {} anchor(s) now.",
            r.added.len(),
            r.removed.len(),
            r.expiring.len(),
            r.anchor_count
        ),
    }
}

/// The bundle's page again with a sentence saying what was refused (400).
async fn refused(
    state: &AppState,
    current: &CurrentUser,
    bundle: BundleRow,
    message: String,
) -> AppResult<Response> {
    let page = bundle_view(state, current.chrome.clone(), bundle, message).await?;
    Ok((StatusCode::BAD_REQUEST, page).into_response())
}

/// Refreshes (from the URL, or from `file`) and says what changed, or why not.
async fn run_refresh(
    state: &AppState,
    current: &CurrentUser,
    ip: String,
    bundle: BundleRow,
    file: Option<Vec<u8>>,
) -> AppResult<Response> {
    let now = state.clock.now();
    let result = bundles::refresh(
        &state.db,
        &reader(state),
        &bundle,
        file,
        now,
        &current.actor(ip),
    )
    .await;
    match result {
        Ok(r) => {
            if r.error.is_none() {
                sending_trust_changed(state);
            }
            session::flash(&current.session, refresh_message(&bundle.name, &r)).await?;
            Ok(Redirect::to(&format!("/bundles/{}", bundle.id)).into_response())
        }
        Err(ImportProblem::Refused(message)) => refused(state, current, bundle, message).await,
        Err(ImportProblem::Internal(e)) => Err(AppError::Internal(e)),
    }
}

async fn refresh_now(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let bundle = operator_bundle(&state, &current, id).await?;
    run_refresh(&state, &current, ip, bundle, None).await
}

async fn replace_file(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
    multipart: Multipart,
) -> AppResult<Response> {
    let bundle = operator_bundle(&state, &current, id).await?;
    let file = match read_form(multipart).await {
        Ok(fields) => field(&fields, "file").map(<[u8]>::to_vec),
        Err(message) => return refused(&state, &current, bundle, message).await,
    };
    if file.is_none() && bundle.url.is_none() {
        let message = "Choose the new bundle file (.p7b).".to_owned();
        return refused(&state, &current, bundle, message).await;
    }
    run_refresh(&state, &current, ip, bundle, file).await
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub struct AssignForm {
    domain: String,
    uses: String,
}

async fn assign(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
    form: Result<axum::Form<AssignForm>, axum::extract::rejection::FormRejection>,
) -> AppResult<Response> {
    let form = super::form_or_400(form)?;
    let bundle = operator_bundle(&state, &current, id).await?;
    let Some(uses) = Uses::parse(&form.uses) else {
        let message = "Choose what the domain uses the bundle for.".to_owned();
        return refused(&state, &current, bundle, message).await;
    };
    let domain_id = form.domain.trim().parse::<i64>().unwrap_or(0);
    let Some(domain) = store::hosted_domains(&state.db)
        .await?
        .into_iter()
        .find(|d| d.id == domain_id)
    else {
        let message = "Choose one of the hosted domains.".to_owned();
        return refused(&state, &current, bundle, message).await;
    };
    let now = state.clock.now();
    let before =
        bundles::assign(&state.db, &bundle, &domain, uses, now, &current.actor(ip)).await?;
    if before.sending != uses.sending {
        sending_trust_changed(&state);
    }
    let message = if uses == Uses::NONE {
        format!(
            "{} no longer uses \u{201c}{}\u{201d}.",
            domain.name, bundle.name
        )
    } else {
        format!(
            "{} now uses \u{201c}{}\u{201d} for {}.",
            domain.name,
            bundle.name,
            uses.label()
        )
    };
    session::flash(&current.session, message).await?;
    Ok(Redirect::to(&format!("/bundles/{}", bundle.id)).into_response())
}

async fn remove(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let bundle = operator_bundle(&state, &current, id).await?;
    let now = state.clock.now();
    if !bundles::remove(&state.db, &bundle, now, &current.actor(ip)).await? {
        return Err(AppError::NotFound);
    }
    sending_trust_changed(&state);
    session::flash(
        &current.session,
        format!(
            "Removed the bundle \u{201c}{}\u{201d} with its {} anchor(s) and its domain assignments.",
            bundle.name, bundle.anchor_count
        ),
    )
    .await?;
    Ok(Redirect::to("/bundles").into_response())
}
