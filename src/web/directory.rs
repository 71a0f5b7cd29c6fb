//! The provider directory in the browser: search for every signed-in user (htmx live
//! search), entry pages, editing by whoever owns the scope (operators: the shared
//! directory; office managers: their organization's contacts; everyone: their own
//! address book), certificates attached by operators, the import page (upload →
//! preview with every row's problems → confirm), exports, and the compose page's
//! autocomplete (`GET /directory/suggest?q=` → JSON).
//!
//! Visibility is checked on the server for every request: an entry the user may not
//! see answers 404, whether it exists or not.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::rejection::FormRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use axum_htmx::{HxHistoryRestoreRequest, HxRequest};
use serde::Deserialize;

use super::domains::{field, read_form};
use super::session::{self, Chrome, CurrentUser};
use super::{AppError, AppResult, AppState, ClientIp, form_or_400, page_number};
use crate::accounts::Refusal;
use crate::clock::format_utc;
use crate::directory::import::{self, Format, Options, Outcome};
use crate::directory::search::cut_query;
use crate::directory::{self, EntryInput, Scope, Viewer};
use crate::domain::{Email, Role, Specialty};
use crate::store::directory::{self as store, Entry, Query as SearchQuery};
use crate::store::mailboxes;
use crate::store::orgs;

/// Entries per page of results.
const PAGE_SIZE: i64 = 25;
/// Suggestions for the compose page, at most.
const SUGGEST_MAX: usize = 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/directory", get(search_page))
        .route("/directory/suggest", get(suggest))
        .route("/directory/entries", post(create_entry))
        .route("/directory/entries/new", get(new_entry_form))
        .route("/directory/entries/{id}", get(entry_page))
        .route(
            "/directory/entries/{id}/edit",
            get(edit_entry_form).post(update_entry),
        )
        .route("/directory/entries/{id}/delete", post(delete_entry))
        .route(
            "/directory/entries/{id}/certificate",
            post(attach_certificate),
        )
        .route(
            "/directory/entries/{id}/certificate/remove",
            post(remove_certificate),
        )
        .route("/directory/mailboxes/{mailbox}/listing", post(set_listing))
        .route("/directory/entries/{id}/save", post(save_to_address_book))
        .route(
            "/directory/address-book",
            get(address_book).post(add_to_address_book),
        )
        .route("/directory/import", get(import_page).post(upload))
        .route("/directory/import/{upload}/apply", post(apply_upload))
        .route("/directory/export.csv", get(export_csv))
        .route("/directory/export.json", get(export_fhir))
        .route("/directory/orgs/{org}", get(org_contacts))
}

pub fn viewer(current: &CurrentUser) -> Viewer {
    Viewer {
        user_id: current.user.id,
        org_id: current.user.org_id,
    }
}

/// Whether this user may see the entry: its scope's members, and operators for any
/// organization's contacts (never another user's address book).
fn may_see(current: &CurrentUser, entry: &Entry) -> bool {
    entry.visible_to(&viewer(current))
        || matches!(entry.scope(), Scope::Org(org) if current.can_admin(org))
}

/// Whether this user may change or delete the entry.
fn may_edit(current: &CurrentUser, entry: &Entry) -> bool {
    if entry.is_hosted() {
        return false;
    }
    match entry.scope() {
        Scope::Public => current.role() == Role::Operator,
        Scope::Org(org) => current.can_admin(org),
        Scope::Personal(user) => user == current.user.id,
    }
}

/// The entry if this user may see it; 404 otherwise.
async fn visible_entry(state: &AppState, current: &CurrentUser, id: i64) -> AppResult<Entry> {
    match store::get(&state.db, id).await? {
        Some(e) if may_see(current, &e) => Ok(e),
        _ => Err(AppError::NotFound),
    }
}

/// The entry if this user may change it; 404 when unseen, 403 when only seen.
async fn editable_entry(state: &AppState, current: &CurrentUser, id: i64) -> AppResult<Entry> {
    let entry = visible_entry(state, current, id).await?;
    if !may_edit(current, &entry) {
        return Err(AppError::Forbidden(if entry.is_hosted() {
            "This entry lists a mailbox hosted here; its name comes from the mailbox.".into()
        } else {
            "Only a HISP operator can change the shared directory, and only an organization's administrator its contacts.".into()
        }));
    }
    Ok(entry)
}

/// "Hosted here", "Imported from …", "Added by hand", "Your address book".
fn source_label(entry: &Entry) -> String {
    match entry.source.as_str() {
        "hosted" => "A mailbox hosted here".into(),
        "manual" => "Added by hand".into(),
        "personal" => "Your address book".into(),
        other => match other.strip_prefix("import:") {
            Some(from) => format!("Imported from {from}"),
            None => other.to_owned(),
        },
    }
}

/// One result row, with its words ready.
pub struct Row {
    pub entry: Entry,
    pub detail: String,
    pub scope_label: &'static str,
}

impl Row {
    fn new(entry: Entry) -> Row {
        Row {
            detail: entry.detail(),
            scope_label: match entry.scope() {
                Scope::Public => "",
                Scope::Org(_) => "Your organization's contact",
                Scope::Personal(_) => "Your address book",
            },
            entry,
        }
    }
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct SearchParams {
    q: String,
    specialty: String,
    place: String,
    page: String,
}

impl SearchParams {
    /// The same search, for the pager's links.
    fn query_string(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("q", &self.q)
            .append_pair("specialty", &self.specialty)
            .append_pair("place", &self.place)
            .finish()
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "directory/search.html")]
struct SearchPage {
    chrome: Chrome,
    p: SearchParams,
    rows: Vec<Row>,
    page: i64,
    has_next: bool,
    query: String,
    is_operator: bool,
    admin_org: Option<i64>,
}

#[derive(Template, WebTemplate)]
#[template(path = "directory/search_partial.html")]
struct SearchPartial {
    p: SearchParams,
    rows: Vec<Row>,
    page: i64,
    has_next: bool,
    query: String,
}

async fn search_page(
    State(state): State<AppState>,
    current: CurrentUser,
    HxRequest(htmx): HxRequest,
    HxHistoryRestoreRequest(restore): HxHistoryRestoreRequest,
    Query(p): Query<SearchParams>,
) -> AppResult<Response> {
    let page = page_number(Some(&p.page));
    let q = SearchQuery {
        text: cut_query(&p.q).to_owned(),
        specialty: p.specialty.chars().take(100).collect(),
        place: p.place.chars().take(100).collect(),
    };
    let mut found = store::search(
        &state.db,
        &viewer(&current),
        &q,
        PAGE_SIZE + 1,
        (page - 1) * PAGE_SIZE,
    )
    .await?;
    let has_next = found.len() as i64 > PAGE_SIZE;
    found.truncate(PAGE_SIZE as usize);
    let rows = found.into_iter().map(Row::new).collect();
    let query = p.query_string();
    // history restores also carry HX-Request but need the whole page
    Ok(if htmx && !restore {
        SearchPartial {
            p,
            rows,
            page,
            has_next,
            query,
        }
        .into_response()
    } else {
        SearchPage {
            is_operator: current.role() == Role::Operator,
            admin_org: current
                .user
                .org_id
                .filter(|_| current.role() == Role::OrgAdmin),
            chrome: current.chrome,
            p,
            rows,
            page,
            has_next,
            query,
        }
        .into_response()
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SuggestParams {
    q: String,
    limit: Option<usize>,
}

/// `GET /directory/suggest?q=lee&limit=8` → `[{"name", "address", "detail",
/// "has_certificate"}]`, for the compose page's autocomplete.
async fn suggest(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(p): Query<SuggestParams>,
) -> AppResult<Json<Vec<store::Suggestion>>> {
    let limit = p.limit.unwrap_or(8).clamp(1, SUGGEST_MAX);
    // `suggest` cuts the text to the same length as the search page
    Ok(Json(
        directory::suggest(&state.db, &viewer(&current), &p.q, limit).await?,
    ))
}

// ---------- an entry ----------

pub struct AddressView {
    pub address: String,
    pub certificate: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "directory/entry.html")]
struct EntryPage {
    chrome: Chrome,
    row: Row,
    addresses: Vec<AddressView>,
    specialties: Vec<Specialty>,
    source: String,
    confirmed: String,
    can_edit: bool,
    can_attach: bool,
    /// For a hosted mailbox the user may list or unlist: whether it is listed.
    listing: Option<bool>,
    can_save: bool,
    error: String,
}

async fn entry_view(
    state: &AppState,
    current: CurrentUser,
    entry: Entry,
    error: String,
) -> AppResult<EntryPage> {
    let now = state.clock.now();
    let listing = match entry.mailbox_id {
        Some(id) => match mailboxes::get(&state.db, id).await? {
            Some(m) if current.can_admin(m.org_id) => Some(true),
            _ => None,
        },
        None => None,
    };
    Ok(EntryPage {
        addresses: entry
            .addresses
            .iter()
            .map(|a| AddressView {
                address: a.address.clone(),
                certificate: match (&a.cert_subject, a.cert_not_after) {
                    (Some(subject), Some(until)) if until < now => {
                        format!("{subject}: expired {}", format_utc(until))
                    }
                    (Some(subject), Some(until)) => {
                        format!("{subject}, valid until {}", format_utc(until))
                    }
                    _ => String::new(),
                },
            })
            .collect(),
        specialties: entry.specialties.clone(),
        source: source_label(&entry),
        confirmed: format_utc(entry.confirmed_at),
        can_edit: may_edit(&current, &entry),
        can_attach: current.role() == Role::Operator
            && !entry.is_hosted()
            && !matches!(entry.scope(), Scope::Personal(_)),
        listing,
        can_save: !matches!(entry.scope(), Scope::Personal(_)),
        row: Row::new(entry),
        chrome: current.chrome,
        error,
    })
}

async fn entry_page(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<EntryPage> {
    let entry = visible_entry(&state, &current, id).await?;
    entry_view(&state, current, entry, String::new()).await
}

// ---------- adding and changing entries ----------

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct EntryForm {
    /// `public`, `org` or `personal` (new entries only).
    scope: String,
    org: String,
    kind: String,
    name: String,
    organization: String,
    npi: String,
    specialties: String,
    address_line: String,
    city: String,
    state: String,
    zip: String,
    phone: String,
    addresses: String,
    /// "1" when "Send documents as an XDM package" is ticked.
    wants_xdm: String,
}

impl EntryForm {
    fn from_entry(e: &Entry) -> EntryForm {
        EntryForm {
            scope: e.scope.clone(),
            org: e.org_id.map(|o| o.to_string()).unwrap_or_default(),
            kind: e.kind.as_str().to_owned(),
            name: e.name.clone(),
            organization: e.organization.clone(),
            npi: e.npi.clone().unwrap_or_default(),
            specialties: Specialty::format_list(&e.specialties),
            address_line: e.address_line.clone(),
            city: e.city.clone(),
            state: e.state.clone(),
            zip: e.zip.clone(),
            phone: e.phone.clone(),
            addresses: e
                .addresses
                .iter()
                .map(|a| a.address.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            wants_xdm: if e.wants_xdm { "1" } else { "" }.to_owned(),
        }
    }

    /// The typed entry, or the problems in sentences.
    fn input(&self) -> Result<EntryInput, Vec<String>> {
        let specialties = Specialty::parse_list(&self.specialties).map_err(|e| vec![e.0])?;
        Ok(EntryInput {
            kind: self.kind.clone(),
            name: self.name.clone(),
            organization: self.organization.clone(),
            npi: self.npi.clone(),
            specialties: specialties.into_iter().map(|s| (s.code, s.label)).collect(),
            address_line: self.address_line.clone(),
            city: self.city.clone(),
            state: self.state.clone(),
            zip: self.zip.clone(),
            phone: self.phone.clone(),
            addresses: self
                .addresses
                .split([';', ',', '\n', ' '])
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            certificate: None,
            fhir_id: String::new(),
            // the form always shows the box: unticked means no
            wants_xdm: Some(!self.wants_xdm.is_empty()),
        })
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "directory/form.html")]
struct FormPage {
    chrome: Chrome,
    /// `/directory/entries` or `/directory/entries/{id}/edit`
    action: String,
    heading: String,
    f: EntryForm,
    problems: Vec<String>,
}

/// The scope a new entry goes to, if this user may add there.
fn new_scope(current: &CurrentUser, f: &EntryForm) -> AppResult<Scope> {
    match f.scope.as_str() {
        "public" if current.role() == Role::Operator => Ok(Scope::Public),
        "public" => Err(AppError::Forbidden(
            "Only a HISP operator can add to the shared directory.".into(),
        )),
        "org" => {
            let org = f
                .org
                .parse::<i64>()
                .ok()
                .or(current.user.org_id)
                .ok_or(AppError::NotFound)?;
            if current.can_admin(org) {
                Ok(Scope::Org(org))
            } else if current.user.org_id == Some(org) {
                Err(AppError::Forbidden(
                    "Only your organization's administrator can add to its contacts.".into(),
                ))
            } else {
                Err(AppError::NotFound)
            }
        }
        _ => Ok(Scope::Personal(current.user.id)),
    }
}

fn heading_for(scope: Scope) -> &'static str {
    match scope {
        Scope::Public => "Add to the shared directory",
        Scope::Org(_) => "Add an organization contact",
        Scope::Personal(_) => "Add to my address book",
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct NewParams {
    scope: String,
    org: String,
}

async fn new_entry_form(current: CurrentUser, Query(p): Query<NewParams>) -> AppResult<FormPage> {
    let f = EntryForm {
        scope: p.scope,
        org: p.org,
        ..EntryForm::default()
    };
    let scope = new_scope(&current, &f)?;
    Ok(FormPage {
        chrome: current.chrome,
        action: "/directory/entries".into(),
        heading: heading_for(scope).into(),
        f,
        problems: Vec::new(),
    })
}

async fn create_entry(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    form: Result<Form<EntryForm>, FormRejection>,
) -> AppResult<Response> {
    let f = form_or_400(form)?;
    let scope = new_scope(&current, &f)?;
    let now = state.clock.now();
    let page = |problems: Vec<String>, status: StatusCode| {
        (
            status,
            FormPage {
                chrome: current.chrome.clone(),
                action: "/directory/entries".into(),
                heading: heading_for(scope).into(),
                f: f.clone(),
                problems,
            },
        )
            .into_response()
    };
    let data = match f.input().and_then(|i| {
        i.validate(now)
            .map_err(|p| p.into_iter().map(|e| e.0).collect())
    }) {
        Ok(d) => d,
        Err(problems) => return Ok(page(problems, StatusCode::BAD_REQUEST)),
    };
    match directory::create(&state.db, &current.actor(ip), scope, &data, now).await {
        Ok(id) => {
            session::flash(
                &current.session,
                format!("Added \u{201c}{}\u{201d}.", data.name),
            )
            .await?;
            Ok(Redirect::to(&format!("/directory/entries/{id}")).into_response())
        }
        Err(Refusal::Refused(m)) => Ok(page(vec![m], StatusCode::CONFLICT)),
        Err(Refusal::Store(e)) => Err(e.into()),
    }
}

async fn edit_entry_form(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<FormPage> {
    let entry = editable_entry(&state, &current, id).await?;
    Ok(FormPage {
        chrome: current.chrome,
        action: format!("/directory/entries/{id}/edit"),
        heading: format!("Change \u{201c}{}\u{201d}", entry.name),
        f: EntryForm::from_entry(&entry),
        problems: Vec::new(),
    })
}

async fn update_entry(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
    form: Result<Form<EntryForm>, FormRejection>,
) -> AppResult<Response> {
    let entry = editable_entry(&state, &current, id).await?;
    let f = form_or_400(form)?;
    let now = state.clock.now();
    let page = |problems: Vec<String>, status: StatusCode| {
        (
            status,
            FormPage {
                chrome: current.chrome.clone(),
                action: format!("/directory/entries/{id}/edit"),
                heading: format!("Change \u{201c}{}\u{201d}", entry.name),
                f: f.clone(),
                problems,
            },
        )
            .into_response()
    };
    let data = match f.input().and_then(|mut i| {
        i.fhir_id = entry.fhir_id.clone().unwrap_or_default();
        i.validate(now)
            .map_err(|p| p.into_iter().map(|e| e.0).collect())
    }) {
        Ok(d) => d,
        Err(problems) => return Ok(page(problems, StatusCode::BAD_REQUEST)),
    };
    match directory::change(&state.db, &current.actor(ip), &entry, &data, now).await {
        Ok(()) => {
            session::flash(&current.session, "Saved.").await?;
            Ok(Redirect::to(&format!("/directory/entries/{id}")).into_response())
        }
        Err(Refusal::Refused(m)) => Ok(page(vec![m], StatusCode::CONFLICT)),
        Err(Refusal::Store(e)) => Err(e.into()),
    }
}

async fn delete_entry(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let entry = editable_entry(&state, &current, id).await?;
    directory::remove(&state.db, &current.actor(ip), &entry, state.clock.now())
        .await
        .map_err(refusal)?;
    session::flash(
        &current.session,
        format!("Removed \u{201c}{}\u{201d}.", entry.name),
    )
    .await?;
    Ok(Redirect::to(match entry.scope() {
        Scope::Personal(_) => "/directory/address-book",
        _ => "/directory",
    })
    .into_response())
}

fn refusal(r: Refusal) -> AppError {
    match r {
        Refusal::Refused(m) => AppError::BadRequest(m),
        Refusal::Store(e) => e.into(),
    }
}

// ---------- certificates and listing ----------

async fn attach_certificate(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
    multipart: Multipart,
) -> AppResult<Response> {
    current.require_operator()?;
    let entry = visible_entry(&state, &current, id).await?;
    let fields = match read_form(multipart).await {
        Ok(f) => f,
        Err(message) => {
            let page = entry_view(&state, current, entry, message).await?;
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let address = field(&fields, "address")
        .map(|v| String::from_utf8_lossy(v).trim().to_owned())
        .unwrap_or_default();
    let problem = match (Email::parse(&address), field(&fields, "certificate")) {
        (Err(e), _) => e.0,
        (_, None) => "Choose the certificate file (PEM or DER).".to_owned(),
        (Ok(address), Some(bytes)) => {
            let now = state.clock.now();
            match directory::attach_certificate(
                &state.db,
                &current.actor(ip),
                &entry,
                &address,
                Some(bytes),
                now,
            )
            .await
            {
                Ok(_) => {
                    session::flash(
                        &current.session,
                        format!("Certificate attached to {address}."),
                    )
                    .await?;
                    return Ok(Redirect::to(&format!("/directory/entries/{id}")).into_response());
                }
                Err(Refusal::Refused(m)) => m,
                Err(Refusal::Store(e)) => return Err(e.into()),
            }
        }
    };
    let page = entry_view(&state, current, entry, problem).await?;
    Ok((StatusCode::BAD_REQUEST, page).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AddressForm {
    address: String,
}

async fn remove_certificate(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
    form: Result<Form<AddressForm>, FormRejection>,
) -> AppResult<Response> {
    current.require_operator()?;
    let entry = visible_entry(&state, &current, id).await?;
    let f = form_or_400(form)?;
    let address = Email::parse(&f.address).map_err(|e| AppError::BadRequest(e.0))?;
    directory::attach_certificate(
        &state.db,
        &current.actor(ip),
        &entry,
        &address,
        None,
        state.clock.now(),
    )
    .await
    .map_err(refusal)?;
    session::flash(
        &current.session,
        format!("Certificate of {address} removed."),
    )
    .await?;
    Ok(Redirect::to(&format!("/directory/entries/{id}")).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListingForm {
    listed: String,
    next: String,
}

/// Lists or unlists a hosted mailbox (its organization's administrator or an operator).
async fn set_listing(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(mailbox_id): Path<i64>,
    form: Result<Form<ListingForm>, FormRejection>,
) -> AppResult<Response> {
    let f = form_or_400(form)?;
    let mailbox = match mailboxes::get(&state.db, mailbox_id).await? {
        Some(m) if current.can_admin(m.org_id) => m,
        Some(m) if current.user.org_id == Some(m.org_id) => {
            return Err(AppError::Forbidden(
                "Only your organization's administrator can change how its mailboxes are listed."
                    .into(),
            ));
        }
        _ => return Err(AppError::NotFound),
    };
    let listed = f.listed == "1";
    directory::set_listing(
        &state.db,
        &current.actor(ip),
        &mailbox,
        listed,
        state.clock.now(),
    )
    .await
    .map_err(refusal)?;
    session::flash(
        &current.session,
        if listed {
            format!("{} is listed in the directory.", mailbox.address)
        } else {
            format!("{} is no longer listed in the directory.", mailbox.address)
        },
    )
    .await?;
    let next = super::auth::safe_next(&f.next);
    Ok(Redirect::to(if next == "/" { "/directory" } else { &next }).into_response())
}

// ---------- the personal address book ----------

#[derive(Template, WebTemplate)]
#[template(path = "directory/address_book.html")]
struct AddressBookPage {
    chrome: Chrome,
    rows: Vec<Row>,
    page: i64,
    has_next: bool,
    address: String,
    name: String,
    error: String,
}

async fn address_book_view(
    state: &AppState,
    current: &CurrentUser,
    page: i64,
    address: String,
    name: String,
    error: String,
) -> AppResult<AddressBookPage> {
    let mut list = store::list_scope(
        &state.db,
        Scope::Personal(current.user.id),
        PAGE_SIZE + 1,
        (page - 1) * PAGE_SIZE,
    )
    .await?;
    let has_next = list.len() as i64 > PAGE_SIZE;
    list.truncate(PAGE_SIZE as usize);
    Ok(AddressBookPage {
        chrome: current.chrome.clone(),
        rows: list.into_iter().map(Row::new).collect(),
        page,
        has_next,
        address,
        name,
        error,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PageParams {
    page: String,
}

async fn address_book(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(p): Query<PageParams>,
) -> AppResult<AddressBookPage> {
    address_book_view(
        &state,
        &current,
        page_number(Some(&p.page)),
        String::new(),
        String::new(),
        String::new(),
    )
    .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AddressBookForm {
    address: String,
    name: String,
    /// Where to go back to (the message the sender was added from).
    next: String,
}

/// `POST /directory/address-book` (address, name, optional next): "add sender to
/// address book". htmx requests get a status fragment; others a redirect.
async fn add_to_address_book(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    HxRequest(htmx): HxRequest,
    form: Result<Form<AddressBookForm>, FormRejection>,
) -> AppResult<Response> {
    let f = form_or_400(form)?;
    let now = state.clock.now();
    let result = match Email::parse(&f.address) {
        Err(e) => Err(e.0),
        Ok(address) => match directory::add_to_address_book(
            &state.db,
            &current.actor(ip),
            current.user.id,
            &address,
            &f.name,
            now,
        )
        .await
        {
            Ok(added) => Ok((address, added)),
            Err(Refusal::Refused(m)) => Err(m),
            Err(Refusal::Store(e)) => return Err(e.into()),
        },
    };
    match result {
        Ok((address, added)) => {
            let message = if added {
                format!("{address} was added to your address book.")
            } else {
                format!("{address} was already in your address book; its name was updated.")
            };
            if htmx {
                return Ok(Html(format!(
                    "<p class=\"banner ok\" role=\"status\">{}</p>",
                    askama::filters::escape(&message, askama::filters::Html)
                        .map(|e| e.to_string())
                        .unwrap_or_default()
                ))
                .into_response());
            }
            session::flash(&current.session, message).await?;
            let next = super::auth::safe_next(&f.next);
            Ok(Redirect::to(if f.next.is_empty() || next == "/" {
                "/directory/address-book"
            } else {
                &next
            })
            .into_response())
        }
        Err(message) if htmx => Ok((
            StatusCode::BAD_REQUEST,
            Html(format!(
                "<p class=\"banner error\" role=\"alert\">{}</p>",
                askama::filters::escape(&message, askama::filters::Html)
                    .map(|e| e.to_string())
                    .unwrap_or_default()
            )),
        )
            .into_response()),
        Err(message) => {
            let page = address_book_view(&state, &current, 1, f.address, f.name, message).await?;
            Ok((StatusCode::BAD_REQUEST, page).into_response())
        }
    }
}

/// Copies a visible entry's name and first address into the user's address book.
async fn save_to_address_book(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let entry = visible_entry(&state, &current, id).await?;
    let Some(first) = entry.addresses.first() else {
        return Err(AppError::BadRequest(
            "This entry has no Direct address.".into(),
        ));
    };
    let address = Email::parse(&first.address).map_err(|e| AppError::BadRequest(e.0))?;
    directory::add_to_address_book(
        &state.db,
        &current.actor(ip),
        current.user.id,
        &address,
        &entry.name,
        state.clock.now(),
    )
    .await
    .map_err(refusal)?;
    session::flash(
        &current.session,
        format!("{address} is in your address book."),
    )
    .await?;
    Ok(Redirect::to(&format!("/directory/entries/{id}")).into_response())
}

// ---------- import and export (operators) ----------

pub struct SourceView {
    pub url: String,
    pub last_success: String,
    pub last_error: String,
    pub entries: i64,
}

#[derive(Template, WebTemplate)]
#[template(path = "directory/import.html")]
struct ImportPage {
    chrome: Chrome,
    error: String,
    sources: Vec<SourceView>,
    refresh_minutes: u64,
}

async fn import_view(state: &AppState, chrome: Chrome, error: String) -> AppResult<ImportPage> {
    let known = store::sources(&state.db).await?;
    let sources = state
        .config
        .directory_sources
        .iter()
        .map(|url| {
            let s = known.iter().find(|s| s.url == url.as_str());
            SourceView {
                url: url.to_string(),
                last_success: s
                    .and_then(|s| s.last_success_at)
                    .map(format_utc)
                    .unwrap_or_else(|| "never".into()),
                last_error: s.and_then(|s| s.last_error.clone()).unwrap_or_default(),
                entries: s.map(|s| s.entries).unwrap_or(0),
            }
        })
        .collect();
    Ok(ImportPage {
        chrome,
        error,
        sources,
        refresh_minutes: state.config.directory_refresh_minutes,
    })
}

async fn import_page(State(state): State<AppState>, current: CurrentUser) -> AppResult<ImportPage> {
    current.require_operator()?;
    import_view(&state, current.chrome, String::new()).await
}

#[derive(Template, WebTemplate)]
#[template(path = "directory/preview.html")]
struct PreviewPage {
    chrome: Chrome,
    upload_id: i64,
    file_name: String,
    outcome: Outcome,
}

fn import_options(file_name: &str, dry_run: bool) -> Options {
    Options {
        scope: Scope::Public,
        source: import::source_for(file_name),
        dry_run,
        prune: false,
    }
}

/// Step 1: the upload is checked (a dry run) and kept; the preview shows what would
/// change and every wrong row.
async fn upload(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    multipart: Multipart,
) -> AppResult<Response> {
    current.require_operator()?;
    let refuse = |message: String| async {
        let page = import_view(&state, current.chrome.clone(), message).await?;
        Ok::<_, AppError>((StatusCode::BAD_REQUEST, page).into_response())
    };
    let (file_name, bytes) = match read_file(multipart).await {
        Ok(Some(f)) => f,
        Ok(None) => {
            return refuse("Choose a CSV file or a FHIR R4 Bundle (JSON) to import.".into()).await;
        }
        Err(message) => return refuse(message).await,
    };
    let text = match import::text(&bytes) {
        Ok(t) => t.to_owned(),
        Err(e) => return refuse(e.0).await,
    };
    let now = state.clock.now();
    let outcome = match import::run(
        &state.db,
        &current.actor(ip),
        text.as_bytes(),
        &import_options(&file_name, true),
        now,
    )
    .await
    {
        Ok(o) => o,
        Err(import::ImportError::File(e)) => return refuse(e.0).await,
        Err(import::ImportError::Store(e)) => return Err(e.into()),
    };
    let upload_id =
        store::save_upload(&state.db, current.user.id, &file_name, &text, None, now).await?;
    let status = if outcome.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((
        status,
        PreviewPage {
            chrome: current.chrome,
            upload_id,
            file_name,
            outcome,
        },
    )
        .into_response())
}

/// The `file` field of an upload with its file name.
pub(super) async fn read_file(
    mut multipart: Multipart,
) -> Result<Option<(String, Vec<u8>)>, String> {
    loop {
        match multipart.next_field().await {
            Ok(Some(f)) if f.name() == Some("file") => {
                let name = f
                    .file_name()
                    .map(str::to_owned)
                    .filter(|n| !n.trim().is_empty())
                    .unwrap_or_else(|| "upload".into());
                let bytes = f.bytes().await.map_err(|_| {
                    "The upload was cut off or too large; try again with a smaller file.".to_owned()
                })?;
                return Ok((!bytes.is_empty()).then(|| (name, bytes.to_vec())));
            }
            Ok(Some(_)) => {}
            Ok(None) => return Ok(None),
            Err(_) => {
                return Err(
                    "The upload could not be read; choose the file again and send it.".into(),
                );
            }
        }
    }
}

/// Step 2: the kept upload is applied, all rows or none.
async fn apply_upload(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(upload_id): Path<i64>,
) -> AppResult<Response> {
    current.require_operator()?;
    let now = state.clock.now();
    let upload = store::upload(&state.db, upload_id, current.user.id, now)
        .await?
        .ok_or_else(|| {
            AppError::BadRequest(
                "This preview has expired (an hour) or was already applied; upload the file again."
                    .into(),
            )
        })?;
    let outcome = import::run(
        &state.db,
        &current.actor(ip),
        upload.content.as_bytes(),
        &import_options(&upload.file_name, false),
        now,
    )
    .await
    .map_err(|e| match e {
        import::ImportError::File(f) => AppError::BadRequest(f.0),
        import::ImportError::Store(e) => e.into(),
    })?;
    if !outcome.applied {
        // the directory changed since the preview, and now a row clashes
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            PreviewPage {
                chrome: current.chrome,
                upload_id,
                file_name: upload.file_name,
                outcome,
            },
        )
            .into_response());
    }
    let mut conn = state.db.pool.acquire().await?;
    store::delete_upload(&mut conn, upload.id).await?;
    session::flash(
        &current.session,
        format!(
            "Imported {}: {} added, {} updated.",
            upload.file_name, outcome.added, outcome.updated
        ),
    )
    .await?;
    Ok(Redirect::to("/directory").into_response())
}

async fn export(state: &AppState, current: &CurrentUser, format: Format) -> AppResult<Response> {
    current.require_operator()?;
    let bytes = import::export(&state.db, Scope::Public, format).await?;
    let (content_type, name) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "directory.csv"),
        Format::Fhir => ("application/fhir+json", "directory.json"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

async fn export_csv(State(state): State<AppState>, current: CurrentUser) -> AppResult<Response> {
    export(&state, &current, Format::Csv).await
}

async fn export_fhir(State(state): State<AppState>, current: CurrentUser) -> AppResult<Response> {
    export(&state, &current, Format::Fhir).await
}

// ---------- an organization's contacts and listed mailboxes ----------

pub struct MailboxListing {
    pub id: i64,
    pub address: String,
    pub name: String,
    pub listed: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "directory/org.html")]
struct OrgPage {
    chrome: Chrome,
    org: orgs::Org,
    rows: Vec<Row>,
    mailboxes: Vec<MailboxListing>,
    page: i64,
    has_next: bool,
}

async fn org_contacts(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    Query(p): Query<PageParams>,
) -> AppResult<OrgPage> {
    if !current.can_admin(org_id) {
        return Err(if current.user.org_id == Some(org_id) {
            AppError::Forbidden(
                "Only your organization's administrator can manage its contacts.".into(),
            )
        } else {
            AppError::NotFound
        });
    }
    let org = orgs::get(&state.db, org_id)
        .await?
        .ok_or(AppError::NotFound)?;
    let page = page_number(Some(&p.page));
    let mut list = store::list_scope(
        &state.db,
        Scope::Org(org.id),
        PAGE_SIZE + 1,
        (page - 1) * PAGE_SIZE,
    )
    .await?;
    let has_next = list.len() as i64 > PAGE_SIZE;
    list.truncate(PAGE_SIZE as usize);
    let mut listings = Vec::new();
    for m in mailboxes::names_for_org(&state.db, org.id).await? {
        listings.push(MailboxListing {
            listed: store::is_listed(&state.db, m.id).await?,
            id: m.id,
            address: m.address,
            name: m.display_name,
        });
    }
    Ok(OrgPage {
        chrome: current.chrome,
        org,
        rows: list.into_iter().map(Row::new).collect(),
        mailboxes: listings,
        page,
        has_next,
    })
}
