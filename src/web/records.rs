//! Records from FHIR servers ([`crate::records`]) in the portal.
//!
//! | route | who | what |
//! | --- | --- | --- |
//! | `/.well-known/jwks.json` | anyone | the portal's public signing keys (JWKS) |
//! | `/records/sources` | operators | the document sources, adding one (`POST`) |
//! | `/records/sources/{id}/remove` | operators | removing one (`POST`) |
//! | `/records` | members | the patient search (`?source=…&name=…&birth_date=…` or `&identifier=…`, with a purpose) |
//! | `/records/{source}/patients/{id}` | members | the patient's documents (`?type=…&from=…&to=…`, with the purpose) |
//! | `/records/{source}/patients/{id}/documents/{doc}/{n}` | members | retrieving attachment `n` of a document (`POST`, with the purpose) |
//! | `/records/retrieved/{id}` | the member who retrieved it | the document in the viewer that suits its content |
//! | `/records/retrieved/{id}/frame`, `/content` | the same | the C-CDA rendered for the sandboxed frame; the file (`?inline=1`: a PDF or image that passes the checks) |
//! | `/records/retrieved/{id}/file-to`, `/forward` | the same | filing it to a mailbox folder, or a draft with it attached (`POST`) |
//!
//! A member uses the sources of their own organization only (anybody else's is "not
//! found"), states a purpose for every query, and every query and retrieval is
//! audited with the source, the patient (the source's `Patient/{id}`, never a name)
//! and the purpose, failed ones too.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::message::{Show, file_response, header_filename};
use super::purpose::{PURPOSES, PurposeForm};
use super::session::{self, Chrome, CurrentUser};
use super::{AppError, AppResult, AppState, ClientIp, form_or_400};
use crate::audit::{self, Event};
use crate::clock::format_utc;
use crate::records::{self, Ctx, DocumentFilter, Failure, PatientQuery};
use crate::store::records::{self as store, NewSource, Retrieval, Source};
use crate::store::{mailboxes, messages, orgs};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/records/sources", get(sources_page).post(add_source))
        .route("/records/sources/{id}/remove", post(remove_source))
        .route("/records", get(search_page))
        .route("/records/{source}/patients/{patient}", get(documents_page))
        .route(
            "/records/{source}/patients/{patient}/documents/{doc}/{n}",
            post(retrieve),
        )
        .route("/records/retrieved/{id}", get(viewer))
        .route("/records/retrieved/{id}/frame", get(frame))
        .route("/records/retrieved/{id}/content", get(content))
        .route("/records/retrieved/{id}/file-to", post(file_to))
        .route("/records/retrieved/{id}/forward", post(forward))
}

/// The JWKS URL the FHIR servers' authorization servers register.
pub fn jwks_url(state: &AppState) -> String {
    format!("{}/.well-known/jwks.json", state.public_base)
}

async fn jwks(State(state): State<AppState>) -> AppResult<Response> {
    let set = records::keys::jwks(&state.db).await?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (axum::http::header::CACHE_CONTROL, "max-age=300"),
        ],
        set.to_string(),
    )
        .into_response())
}

// ---------------------------------------------------------------------------------
// the operator's sources

struct SourceRow {
    id: i64,
    org: String,
    name: String,
    base_url: String,
    token_url: String,
    client_id: String,
    scopes: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "operator/sources.html")]
struct SourcesPage {
    chrome: Chrome,
    rows: Vec<SourceRow>,
    orgs: Vec<(i64, String)>,
    jwks_url: String,
    error: String,
    form: SourceForm,
    default_scopes: &'static str,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct SourceForm {
    org: String,
    name: String,
    base_url: String,
    token_url: String,
    client_id: String,
    scopes: String,
}

async fn sources_view(
    state: &AppState,
    chrome: Chrome,
    error: String,
    form: SourceForm,
) -> AppResult<SourcesPage> {
    let orgs: Vec<(i64, String)> = orgs::list(&state.db, "", 1000, 0)
        .await?
        .into_iter()
        .map(|o| (o.id, o.name.to_string()))
        .collect();
    let org_name = |id: i64| {
        orgs.iter()
            .find(|(o, _)| *o == id)
            .map(|(_, n)| n.clone())
            .unwrap_or_default()
    };
    let rows = store::list(&state.db)
        .await?
        .into_iter()
        .map(|s| SourceRow {
            id: s.id,
            org: org_name(s.org_id),
            name: s.name,
            base_url: s.base_url,
            token_url: if s.token_url.is_empty() {
                "from .well-known/smart-configuration".into()
            } else {
                s.token_url
            },
            client_id: s.client_id,
            scopes: s.scopes,
        })
        .collect();
    Ok(SourcesPage {
        chrome,
        rows,
        orgs,
        jwks_url: jwks_url(state),
        error,
        form,
        default_scopes: records::DEFAULT_SCOPES,
    })
}

async fn sources_page(
    State(state): State<AppState>,
    current: CurrentUser,
) -> AppResult<SourcesPage> {
    current.require_operator()?;
    sources_view(&state, current.chrome, String::new(), SourceForm::default()).await
}

async fn add_source(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    form: Result<axum::Form<SourceForm>, axum::extract::rejection::FormRejection>,
) -> AppResult<Response> {
    current.require_operator()?;
    let form = form_or_400(form)?;
    let refuse = |message: String| async {
        let page = sources_view(&state, current.chrome.clone(), message, form.clone()).await?;
        Ok::<_, AppError>((StatusCode::BAD_REQUEST, page).into_response())
    };
    let org = match form.org.parse::<i64>() {
        Ok(id) => orgs::get(&state.db, id).await?,
        Err(_) => None,
    };
    let Some(org) = org else {
        return refuse("Choose the organization whose members will use this source.".into()).await;
    };
    let mut new = NewSource {
        org_id: org.id,
        name: form.name.clone(),
        base_url: form.base_url.clone(),
        token_url: form.token_url.clone(),
        client_id: form.client_id.clone(),
        scopes: form.scopes.clone(),
    };
    if let Err(message) = records::check_source(&state.config.network_policy(), &mut new) {
        return refuse(message).await;
    }
    let now = state.clock.now();
    // the key the source's authorization server will know the portal by
    let key = records::keys::current(&state.db, &state.secret, now).await?;
    let mut tx = state.db.begin().await?;
    let Some(id) = store::add(&mut tx, &new, now).await? else {
        return refuse(format!(
            "{} already has a source called \u{201c}{}\u{201d}.",
            org.name, new.name
        ))
        .await;
    };
    let event = Event::new("records.source_add", format!("source:{id}"))
        .detail(format!(
            "{} at {}, client id {}, scopes {}",
            new.name, new.base_url, new.client_id, new.scopes
        ))
        .org(Some(org.id));
    let message = format!(
        "Added the source \u{201c}{}\u{201d}. Register the portal at that FHIR server with client id {}, the key set {} (key {}) and the scopes {}.",
        new.name,
        new.client_id,
        jwks_url(&state),
        key.kid,
        new.scopes
    );
    super::finish_action(tx, &state, &current, ip, event, message, "/records/sources").await
}

async fn remove_source(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    current.require_operator()?;
    let source = store::get(&state.db, id).await?.ok_or(AppError::NotFound)?;
    let mut tx = state.db.begin().await?;
    store::remove(&mut tx, id).await?;
    let event = Event::new("records.source_remove", format!("source:{id}"))
        .detail(source.name.clone())
        .org(Some(source.org_id));
    let message = format!("Removed the source \u{201c}{}\u{201d}.", source.name);
    super::finish_action(tx, &state, &current, ip, event, message, "/records/sources").await
}

// ---------------------------------------------------------------------------------
// members: search, documents, retrieval

/// Source `id`, when the user's organization has it (404 otherwise).
async fn own_source(state: &AppState, current: &CurrentUser, id: i64) -> AppResult<Source> {
    let source = store::get(&state.db, id).await?.ok_or(AppError::NotFound)?;
    if current.user.org_id != Some(source.org_id) {
        return Err(AppError::NotFound);
    }
    Ok(source)
}

/// Audits a query or retrieval (failed ones too) on the source, the patient and the
/// purpose.
async fn audit_query(
    state: &AppState,
    current: &CurrentUser,
    ip: String,
    action: &str,
    object: String,
    detail: String,
    outcome: Result<String, &Failure>,
) -> AppResult<()> {
    let outcome = match outcome {
        Ok(words) => words,
        Err(f) => format!("failed ({})", f.code),
    };
    audit::record(
        &state.db,
        state.clock.now(),
        &current.actor(ip),
        Event::new(action, object).detail(format!("{detail}; {outcome}")),
    )
    .await?;
    Ok(())
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct SearchQuery {
    source: String,
    name: String,
    birth_date: String,
    identifier: String,
    page: String,
    #[serde(flatten)]
    purpose: PurposeForm,
}

struct PatientRow {
    href: String,
    name: String,
    birth_date: String,
    gender: String,
    identifiers: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "records/search.html")]
struct SearchPage {
    chrome: Chrome,
    sources: Vec<(i64, String)>,
    q: SearchQuery,
    purposes: [(&'static str, &'static str); 5],
    error: String,
    searched: bool,
    rows: Vec<PatientRow>,
    total: String,
    next: Option<String>,
}

/// The purpose fields as a query string (`&purpose=…`), to carry to the next step.
fn purpose_query(p: &PurposeForm) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    s.append_pair("purpose", &p.purpose);
    if p.purpose == "other" {
        s.append_pair("purpose_other", &p.purpose_other);
    }
    s.finish()
}

/// A date as the date input sends it.
fn is_date(s: &str) -> bool {
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).is_ok()
}

async fn search_page(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Query(q): Query<SearchQuery>,
) -> AppResult<Response> {
    let org_id = current.user.org_id.ok_or_else(|| {
        AppError::Forbidden("Records are retrieved by the members of an organization.".into())
    })?;
    let sources: Vec<Source> = store::of_org(&state.db, org_id).await?;
    let mut page = SearchPage {
        chrome: current.chrome.clone(),
        sources: sources.iter().map(|s| (s.id, s.name.clone())).collect(),
        q: q.clone(),
        purposes: PURPOSES,
        error: String::new(),
        searched: false,
        rows: Vec::new(),
        total: String::new(),
        next: None,
    };
    if q.source.is_empty() {
        return Ok(page.into_response());
    }
    let source = match q.source.parse::<i64>() {
        Ok(id) => own_source(&state, &current, id).await?,
        Err(_) => return Err(AppError::NotFound),
    };
    let refuse = |mut page: SearchPage, message: &str| {
        page.error = message.to_owned();
        Ok((StatusCode::BAD_REQUEST, page).into_response())
    };
    let purpose = match q.purpose.stated() {
        Ok(p) => p,
        Err("") => return refuse(page, "Say why you are looking up this patient's records."),
        Err(why) => return refuse(page, why),
    };
    let (name, birth_date, identifier) = (q.name.trim(), q.birth_date.trim(), q.identifier.trim());
    let query = if !identifier.is_empty() {
        if identifier.len() > 200 || identifier.chars().any(char::is_control) {
            return refuse(
                page,
                "The identifier is at most 200 characters on one line.",
            );
        }
        PatientQuery::Identifier(identifier.to_owned())
    } else if !name.is_empty() && is_date(birth_date) {
        if name.chars().count() > 100 || name.chars().any(char::is_control) {
            return refuse(page, "The name is at most 100 characters on one line.");
        }
        PatientQuery::NameAndBirthDate {
            name: name.to_owned(),
            birth_date: birth_date.to_owned(),
        }
    } else {
        return refuse(
            page,
            "Search by the patient's name and birth date, or by an identifier (system|value, or the value alone).",
        );
    };
    let ctx = Ctx {
        db: &state.db,
        secret: &state.secret,
        source: &source,
        now: state.clock.now(),
    };
    let found = state
        .records
        .patients(
            &ctx,
            &query,
            (!q.page.is_empty()).then_some(q.page.as_str()),
        )
        .await;
    audit_query(
        &state,
        &current,
        ip,
        "records.patient_search",
        format!("source:{}", source.id),
        format!("{}; purpose: {purpose}", query.kind()),
        found.as_ref().map(|p| format!("{} found", p.items.len())),
    )
    .await?;
    page.searched = true;
    match found {
        Err(f) => {
            page.error = f.sentence;
            Ok((StatusCode::BAD_GATEWAY, page).into_response())
        }
        Ok(found) => {
            let carry = purpose_query(&q.purpose);
            page.rows = found
                .items
                .into_iter()
                .map(|p| PatientRow {
                    href: format!("/records/{}/patients/{}?{carry}", source.id, p.id),
                    name: p.name,
                    birth_date: p.birth_date,
                    gender: p.gender,
                    identifiers: p.identifiers.join(", "),
                })
                .collect();
            page.total = found.total.map(|t| t.to_string()).unwrap_or_default();
            page.next = found.next.map(|next| {
                let mut s = url::form_urlencoded::Serializer::new(String::new());
                s.append_pair("source", &q.source)
                    .append_pair("name", &q.name)
                    .append_pair("birth_date", &q.birth_date)
                    .append_pair("identifier", &q.identifier)
                    .append_pair("page", &next);
                format!("/records?{}&{carry}", s.finish())
            });
            Ok(page.into_response())
        }
    }
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct DocumentsQuery {
    #[serde(rename = "type")]
    doc_type: String,
    from: String,
    to: String,
    page: String,
    #[serde(flatten)]
    purpose: PurposeForm,
}

struct DocumentRow {
    id: String,
    type_text: String,
    date: String,
    description: String,
    status: String,
    /// (number, words) of each attachment.
    files: Vec<(usize, String)>,
}

#[derive(Template, WebTemplate)]
#[template(path = "records/documents.html")]
struct DocumentsPage {
    chrome: Chrome,
    source: Source,
    patient_id: String,
    patient: String,
    q: DocumentsQuery,
    types: [(&'static str, &'static str); 6],
    error: String,
    rows: Vec<DocumentRow>,
    docref: bool,
    next: Option<String>,
}

/// Document types offered as a filter (LOINC), as (code, words).
const DOCUMENT_TYPES: [(&str, &str); 6] = [
    ("", "All types"),
    ("34133-9", "Summary of episode note"),
    ("18842-5", "Discharge summary"),
    ("11506-3", "Progress note"),
    ("11502-2", "Laboratory report"),
    ("18748-4", "Diagnostic imaging study"),
];

async fn documents_page(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((source_id, patient)): Path<(i64, String)>,
    Query(q): Query<DocumentsQuery>,
) -> AppResult<Response> {
    let source = own_source(&state, &current, source_id).await?;
    if !records::is_fhir_id(&patient) {
        return Err(AppError::NotFound);
    }
    let mut page = DocumentsPage {
        chrome: current.chrome.clone(),
        source: source.clone(),
        patient_id: patient.clone(),
        patient: format!("Patient/{patient}"),
        q: q.clone(),
        types: DOCUMENT_TYPES,
        error: String::new(),
        rows: Vec::new(),
        docref: false,
        next: None,
    };
    let purpose = match q.purpose.stated() {
        Ok(p) => p,
        Err(why) => {
            page.error = if why.is_empty() {
                "Say why you are looking up this patient's records: start again from the search."
                    .into()
            } else {
                why.into()
            };
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    if !DOCUMENT_TYPES.iter().any(|(c, _)| *c == q.doc_type)
        || !(q.from.is_empty() || is_date(&q.from))
        || !(q.to.is_empty() || is_date(&q.to))
    {
        page.error = "Choose a document type from the list and dates as YYYY-MM-DD.".into();
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    let ctx = Ctx {
        db: &state.db,
        secret: &state.secret,
        source: &source,
        now: state.clock.now(),
    };
    let filter = DocumentFilter {
        type_code: q.doc_type.clone(),
        from: q.from.clone(),
        to: q.to.clone(),
    };
    let found = match state.records.patient(&ctx, &patient).await {
        Ok(p) => {
            page.patient = patient_words(&p);
            state
                .records
                .documents(
                    &ctx,
                    &patient,
                    &filter,
                    (!q.page.is_empty()).then_some(q.page.as_str()),
                )
                .await
        }
        Err(f) => Err(f),
    };
    audit_query(
        &state,
        &current,
        ip,
        "records.document_search",
        format!("source:{}/Patient/{patient}", source.id),
        format!(
            "purpose: {purpose}; type {}; from {}; to {}",
            if q.doc_type.is_empty() {
                "any"
            } else {
                &q.doc_type
            },
            if q.from.is_empty() { "-" } else { &q.from },
            if q.to.is_empty() { "-" } else { &q.to },
        ),
        found.as_ref().map(|(p, docref)| {
            format!(
                "{} found{}",
                p.items.len(),
                if *docref { " ($docref)" } else { "" }
            )
        }),
    )
    .await?;
    match found {
        Err(f) => {
            page.error = f.sentence;
            Ok((StatusCode::BAD_GATEWAY, page).into_response())
        }
        Ok((found, docref)) => {
            page.docref = docref;
            page.rows = found
                .items
                .into_iter()
                .map(|d| DocumentRow {
                    files: d
                        .attachments
                        .iter()
                        .enumerate()
                        .map(|(n, (title, ctype, size))| {
                            let mut words = if title.is_empty() {
                                format!("File {}", n + 1)
                            } else {
                                title.clone()
                            };
                            if !ctype.is_empty() {
                                words.push_str(&format!(" ({ctype}"));
                                if let Some(size) = size {
                                    words.push_str(&format!(
                                        ", {}",
                                        super::message::human_size(*size as usize)
                                    ));
                                }
                                words.push(')');
                            }
                            (n, words)
                        })
                        .collect(),
                    id: d.id,
                    type_text: d.type_text,
                    date: d.date,
                    description: d.description,
                    status: d.status,
                })
                .collect();
            page.next = found.next.map(|next| {
                let mut s = url::form_urlencoded::Serializer::new(String::new());
                s.append_pair("type", &q.doc_type)
                    .append_pair("from", &q.from)
                    .append_pair("to", &q.to)
                    .append_pair("page", &next);
                format!(
                    "/records/{}/patients/{patient}?{}&{}",
                    source.id,
                    s.finish(),
                    purpose_query(&q.purpose)
                )
            });
            Ok(page.into_response())
        }
    }
}

/// "Lena Lopez, born 1980-04-12", as the source gives them (at most 200 characters).
fn patient_words(p: &records::PatientHit) -> String {
    [p.name.as_str(), p.birth_date.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(", born ")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RetrieveForm {
    #[serde(flatten)]
    purpose: PurposeForm,
}

async fn retrieve(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((source_id, patient, doc, n)): Path<(i64, String, String, usize)>,
    form: Result<axum::Form<RetrieveForm>, axum::extract::rejection::FormRejection>,
) -> AppResult<Response> {
    let form = form_or_400(form)?;
    let source = own_source(&state, &current, source_id).await?;
    if !records::is_fhir_id(&patient) || !records::is_fhir_id(&doc) {
        return Err(AppError::NotFound);
    }
    let purpose = form.purpose.stated().map_err(|why| {
        AppError::BadRequest(if why.is_empty() {
            "Say why you are retrieving this patient's record.".into()
        } else {
            why.into()
        })
    })?;
    let now = state.clock.now();
    let ctx = Ctx {
        db: &state.db,
        secret: &state.secret,
        source: &source,
        now,
    };
    // the patient as the server has them (which also checks they are there)
    let got = match state.records.patient(&ctx, &patient).await {
        Ok(p) => state
            .records
            .retrieve(&ctx, &patient, &doc, n)
            .await
            .map(|r| (r, patient_words(&p))),
        Err(f) => Err(f),
    };
    let object = format!("source:{}/DocumentReference/{doc}", source.id);
    let detail = format!("Patient/{patient}; file {n}; purpose: {purpose}");
    let retrieved = match got {
        Err(f) => {
            audit_query(
                &state,
                &current,
                ip,
                "records.retrieve",
                object,
                detail,
                Err(&f),
            )
            .await?;
            // the error page, with the sentence, as the server's answer
            let mut response = StatusCode::BAD_GATEWAY.into_response();
            response.extensions_mut().insert(super::ErrorPage {
                message: f.sentence,
            });
            return Ok(response);
        }
        Ok(r) => r,
    };
    let (retrieved, label) = retrieved;
    let size = retrieved.data.len();
    let mut tx = state.db.begin().await?;
    let id = store::keep(
        &mut tx,
        &Retrieval {
            id: 0,
            user_id: current.user.id,
            source_id: source.id,
            patient_ref: format!("Patient/{patient}"),
            patient_label: label,
            document_ref: format!("DocumentReference/{doc}#{n}"),
            title: retrieved.title.chars().take(200).collect(),
            declared_type: retrieved.declared_type.chars().take(100).collect(),
            purpose: purpose.clone(),
            data: retrieved.data,
            retrieved_at: now,
        },
        now,
    )
    .await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("records.retrieve", object)
            .detail(format!("{detail}; {size} bytes; retrieval:{id}")),
    )
    .await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("/records/retrieved/{id}")).into_response())
}

// ---------------------------------------------------------------------------------
// a retrieved document

/// How a retrieved document is shown, from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cda,
    Pdf,
    Image,
    Download,
}

/// How to show `data`, and what to say when the server's declared type does not
/// match what the content is (or the content fails the checks an upload gets).
fn judge(source: &str, declared: &str, data: &[u8]) -> (Kind, Option<String>) {
    let (kind, refusal) = if directmail_content::cda::is_cda(data) {
        (Kind::Cda, None)
    } else {
        match directmail_content::inline_type(data) {
            Some(t) => match directmail_content::inline_refusal("document", data) {
                Some(why) => (Kind::Download, Some(why)),
                None if t == "application/pdf" => (Kind::Pdf, None),
                None => (Kind::Image, None),
            },
            None => (Kind::Download, None),
        }
    };
    let declared_l = declared.to_ascii_lowercase();
    let expected = if declared_l == "application/pdf" {
        Some(Kind::Pdf)
    } else if declared_l.starts_with("image/") {
        Some(Kind::Image)
    } else if declared_l.contains("xml") {
        Some(Kind::Cda)
    } else {
        None
    };
    let lie = expected.is_some_and(|e| e != kind);
    let words = match (lie, kind, refusal) {
        (true, Kind::Download, _) => Some(format!(
            "{source} declared this document as {declared}, but its content is not that; it is not opened in a viewer, only offered as a download."
        )),
        (true, _, _) => Some(format!(
            "{source} declared this document as {declared}, but its content is something else; it is shown as what its content is."
        )),
        (false, _, Some(why)) => Some(format!("{why} It is offered only as a download.")),
        (false, _, None) => None,
    };
    (kind, words)
}

/// The file name of a retrieved document, with the extension its content gives.
fn file_name(r: &Retrieval, kind: Kind) -> String {
    let stem = header_filename(&r.title);
    let ext = match kind {
        Kind::Cda => "xml",
        Kind::Pdf => "pdf",
        Kind::Image => match directmail_content::inline_type(&r.data) {
            Some("image/png") => "png",
            Some("image/gif") => "gif",
            _ => "jpg",
        },
        Kind::Download => "bin",
    };
    format!("{stem}.{ext}")
}

fn content_type(kind: Kind, data: &[u8]) -> &'static str {
    match kind {
        Kind::Cda => "application/xml",
        Kind::Pdf | Kind::Image => {
            directmail_content::inline_type(data).unwrap_or("application/octet-stream")
        }
        Kind::Download => "application/octet-stream",
    }
}

async fn own_retrieval(
    state: &AppState,
    current: &CurrentUser,
    id: i64,
) -> AppResult<(Retrieval, Source)> {
    let r = store::retrieval(&state.db, id, current.user.id, state.clock.now())
        .await?
        .ok_or(AppError::NotFound)?;
    let source = own_source(state, current, r.source_id).await?;
    Ok((r, source))
}

#[derive(Template, WebTemplate)]
#[template(path = "records/viewer.html")]
struct ViewerPage {
    chrome: Chrome,
    id: i64,
    title: String,
    source: String,
    patient: String,
    document_ref: String,
    when: String,
    purpose: String,
    declared: String,
    is_cda: bool,
    is_pdf: bool,
    is_image: bool,
    warning: String,
    facts: Vec<(&'static str, String)>,
    /// (value `mailbox:folder`, words) of every folder a copy may be filed in.
    folders: Vec<(String, String)>,
    mailboxes: Vec<(i64, String)>,
}

async fn viewer(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let (r, source) = own_retrieval(&state, &current, id).await?;
    let (kind, warning) = judge(&source.name, &r.declared_type, &r.data);
    let facts = if kind == Kind::Cda {
        let data = r.data.clone();
        tokio::task::spawn_blocking(move || {
            directmail_content::parse_cda(&data, &directmail_content::CdaLimits::default())
                .map(|doc| super::clinical::cda::summary(&doc))
                .unwrap_or_default()
        })
        .await?
    } else {
        Vec::new()
    };
    let boxes = mailboxes::of_user(&state.db, current.user.id).await?;
    let mut folders = Vec::new();
    for m in &boxes {
        for (key, label) in messages::SYSTEM_FOLDERS {
            if matches!(key, "inbox" | "archive") {
                folders.push((
                    format!("{}:{key}", m.id),
                    format!("{} \u{2014} {label}", m.address),
                ));
            }
        }
        for (key, name) in messages::sidebar(&state.db, current.user.id, m.id)
            .await?
            .folders
        {
            folders.push((
                format!("{}:{key}", m.id),
                format!("{} \u{2014} {name}", m.address),
            ));
        }
    }
    audit_read(&state, &current, ip, &r, "the viewer page").await?;
    Ok(ViewerPage {
        chrome: current.chrome.clone(),
        id,
        title: r.title.clone(),
        source: source.name.clone(),
        patient: if r.patient_label.is_empty() {
            r.patient_ref.clone()
        } else {
            r.patient_label.clone()
        },
        document_ref: r.document_ref.clone(),
        when: format_utc(r.retrieved_at),
        purpose: r.purpose.clone(),
        declared: r.declared_type.clone(),
        is_cda: kind == Kind::Cda,
        is_pdf: kind == Kind::Pdf,
        is_image: kind == Kind::Image,
        warning: warning.unwrap_or_default(),
        facts,
        folders,
        mailboxes: boxes.iter().map(|m| (m.id, m.address.clone())).collect(),
    }
    .into_response())
}

/// Audits a read of a retrieved document's content (the frame, the file).
async fn audit_read(
    state: &AppState,
    current: &CurrentUser,
    ip: String,
    r: &Retrieval,
    what: &str,
) -> AppResult<()> {
    audit_query(
        state,
        current,
        ip,
        "records.view",
        format!("retrieval:{}", r.id),
        format!(
            "source:{}/{}; {}",
            r.source_id, r.document_ref, r.patient_ref
        ),
        Ok(format!("{what}; purpose: {}", r.purpose)),
    )
    .await
}

async fn frame(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
    RawQuery(query): RawQuery,
) -> AppResult<Response> {
    let (r, source) = own_retrieval(&state, &current, id).await?;
    if judge(&source.name, &r.declared_type, &r.data).0 != Kind::Cda {
        return Err(AppError::NotFound);
    }
    audit_read(&state, &current, ip, &r, "the rendered document").await?;
    let codes = |key: &str| super::clinical::cda::codes(query.as_deref(), key);
    super::clinical::cda::frame_response(r.data, r.title, codes("order"), codes("collapsed")).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContentQuery {
    inline: String,
}

async fn content(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
    Query(q): Query<ContentQuery>,
) -> AppResult<Response> {
    let (r, source) = own_retrieval(&state, &current, id).await?;
    let (kind, _) = judge(&source.name, &r.declared_type, &r.data);
    let show = match kind {
        Kind::Pdf if !q.inline.is_empty() => Show::Pdf,
        Kind::Image if !q.inline.is_empty() => Show::Image,
        _ => Show::Download,
    };
    let name = file_name(&r, kind);
    let what = if show == Show::Download {
        "the file, downloaded"
    } else {
        "the file, shown"
    };
    audit_read(&state, &current, ip, &r, what).await?;
    Ok(file_response(&name, r.data, show))
}

/// A retrieved document as a message: from the mailbox (named for the source), to
/// it, with a few lines saying where it came from, and the document attached.
/// Returns the raw MIME and its Message-ID.
fn as_message(
    r: &Retrieval,
    source: &Source,
    mailbox: &mailboxes::Mailbox,
    retrieved_by: &str,
    now: i64,
) -> anyhow::Result<(Vec<u8>, String, String)> {
    let (kind, _) = judge(&source.name, &r.declared_type, &r.data);
    let domain = mailbox
        .address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or("localhost");
    let message_id = format!("{}@{domain}", crate::auth::new_token().0);
    let subject = format!("{} (retrieved from {})", r.title, source.name);
    let body = describe(r, source, retrieved_by);
    let raw = mail_builder::MessageBuilder::new()
        .from((format!("{} (FHIR)", source.name), mailbox.address.clone()))
        .to(mailbox.address.clone())
        .subject(subject.clone())
        .message_id(message_id.clone())
        .date(now)
        .text_body(body)
        .attachment(
            content_type(kind, &r.data),
            file_name(r, kind),
            r.data.clone(),
        )
        .write_to_vec()?;
    Ok((raw, message_id, subject))
}

/// Where a retrieved document came from, in lines.
fn describe(r: &Retrieval, source: &Source, retrieved_by: &str) -> String {
    format!(
        "Retrieved from {} ({}) by {retrieved_by} on {}.\nPatient: {} ({})\nDocument: {}\nPurpose: {}\n",
        source.name,
        source.base_url,
        format_utc(r.retrieved_at),
        r.patient_label,
        r.patient_ref,
        r.document_ref,
        r.purpose
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FileToForm {
    folder: String,
}

async fn file_to(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
    form: Result<axum::Form<FileToForm>, axum::extract::rejection::FormRejection>,
) -> AppResult<Response> {
    let form = form_or_400(form)?;
    let (r, source) = own_retrieval(&state, &current, id).await?;
    let (mailbox_id, key) = form
        .folder
        .split_once(':')
        .and_then(|(m, k)| Some((m.parse::<i64>().ok()?, k.to_owned())))
        .ok_or_else(|| AppError::BadRequest("Choose a folder to file the document in.".into()))?;
    let mailbox = super::mail::own_mailbox(&state, &current, mailbox_id).await?;
    let label = messages::folder_label(&state.db, mailbox.id, &key)
        .await?
        .filter(|_| !matches!(key.as_str(), "drafts" | "sent" | "trash"))
        .ok_or_else(|| AppError::BadRequest("Choose a folder to file the document in.".into()))?;
    let now = state.clock.now();
    let (raw, message_id, subject) =
        as_message(&r, &source, &mailbox, &current.user.email, now).map_err(AppError::Internal)?;
    let filing = {
        let raw = raw.clone();
        tokio::task::spawn_blocking(move || crate::filing::read(&raw)).await?
    };
    let mut tx = state.db.begin().await?;
    let place = crate::store::inbound::Local {
        folder: &key,
        trust_code: "retrieved",
        trust_sentence: &format!(
            "Retrieved from {} ({}) by {}; not received by Direct.",
            source.name, source.base_url, current.user.email
        ),
        outbound_id: None,
    };
    let message = crate::store::inbound::file_local(
        &mut tx,
        mailbox.id,
        &place,
        &message_id,
        &mailbox.address,
        &subject,
        &raw,
        &filing,
        now,
    )
    .await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("records.file", format!("message:{message}")).detail(format!(
            "retrieval:{id}; source:{}/{}; {}; purpose: {}; into {} {key}",
            source.id, r.document_ref, r.patient_ref, r.purpose, mailbox.address
        )),
    )
    .await?;
    tx.commit().await?;
    session::flash(
        &current.session,
        format!(
            "Filed the document in {} \u{2014} {label}.",
            mailbox.address
        ),
    )
    .await?;
    Ok(Redirect::to(&format!("/mail/messages/{message}")).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ForwardForm {
    mailbox: String,
}

async fn forward(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
    form: Result<axum::Form<ForwardForm>, axum::extract::rejection::FormRejection>,
) -> AppResult<Response> {
    let form = form_or_400(form)?;
    let (r, source) = own_retrieval(&state, &current, id).await?;
    let mailbox_id = form
        .mailbox
        .parse::<i64>()
        .map_err(|_| AppError::BadRequest("Choose the mailbox to send from.".into()))?;
    let mailbox = super::mail::own_mailbox(&state, &current, mailbox_id).await?;
    let (raw, _, _) = as_message(
        &r,
        &source,
        &mailbox,
        &current.user.email,
        state.clock.now(),
    )
    .map_err(AppError::Internal)?;
    let patient = tokio::task::spawn_blocking(move || crate::filing::read(&raw).patient).await?;
    let (kind, _) = judge(&source.name, &r.declared_type, &r.data);
    let start = crate::store::drafts::Start {
        subject: format!("Fwd: {}", r.title),
        body: format!(
            "\n\n---------- Retrieved document ----------\n{}",
            describe(&r, &source, &current.user.email)
        ),
        patient: patient
            .as_ref()
            .map(crate::patient::DraftPatient::of)
            .unwrap_or_default(),
        ..Default::default()
    };
    let files = vec![crate::outbound::Attachment {
        name: file_name(&r, kind),
        content_type: content_type(kind, &r.data).to_owned(),
        data: r.data.clone(),
    }];
    let event = Event::new("draft.create", format!("retrieval:{id}")).detail(format!(
        "forward of source:{}/{}; {}; purpose: {}",
        source.id, r.document_ref, r.patient_ref, r.purpose
    ));
    let draft =
        super::compose::draft_with_files(&state, &current, ip, &mailbox, &start, files, event)
            .await?;
    Ok(Redirect::to(&format!("/mail/drafts/{draft}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_type_the_content_contradicts_is_said() {
        let html = b"<html><script>alert(1)</script></html>";
        let (kind, words) = judge("County EHR", "application/pdf", html);
        assert_eq!(kind, Kind::Download);
        assert!(
            words
                .expect("a sentence")
                .contains("declared this document as application/pdf")
        );
        let (kind, words) = judge("County EHR", "application/octet-stream", html);
        assert_eq!((kind, words), (Kind::Download, None));
    }
}
