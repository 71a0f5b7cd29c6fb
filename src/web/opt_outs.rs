//! The HIE opt-out list of an organization (Illinois 740 ILCS 110; issue #13): its
//! administrator (or a HISP operator) lists, searches, adds, removes with a reason,
//! imports a CSV (upload → preview with every row's problems → confirm) and exports
//! it. Access is checked like every console page (`orgs::admin_org`): members get
//! 403, another organization's administrator 404.
//!
//! Every change and export is in the audit log with ids only, never a patient's name.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::rejection::FormRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::orgs::admin_org;
use super::session::{Chrome, CurrentUser};
use super::{AppError, AppResult, AppState, ClientIp, FieldErrors, form_or_400};
use crate::audit::{self, Event};
use crate::clock::format_utc;
use crate::directory::search::folded;
use crate::opt_outs::{self, FileProblem, OptOutInput};
use crate::store::opt_outs::{self as store, ListQuery, NewOptOut, OptOut, Recorder};
use crate::store::orgs::Org;

/// Entries per page.
pub const PAGE_SIZE: i64 = 50;

/// Longest removal reason, in characters.
const MAX_REASON: usize = 500;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/orgs/{org}/opt-outs", get(list_page).post(add))
        .route(
            "/orgs/{org}/opt-outs/{id}/remove",
            get(remove_page).post(remove),
        )
        .route("/orgs/{org}/opt-outs/import", post(upload))
        .route("/orgs/{org}/opt-outs/import/{upload}/apply", post(apply))
        .route("/orgs/{org}/opt-outs/export.csv", get(export_csv))
}

fn recorder(current: &CurrentUser) -> Recorder {
    Recorder {
        user_id: current.user.id,
        display_name: current.user.display_name.clone(),
    }
}

/// A row with its dates in words.
pub struct RowView {
    pub e: OptOut,
    pub recorded: String,
    pub removed: String,
}

impl RowView {
    fn new(e: OptOut) -> RowView {
        RowView {
            recorded: format_utc(e.recorded_at),
            removed: e.removed_at.map(format_utc).unwrap_or_default(),
            e,
        }
    }
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct Params {
    q: String,
    after: String,
    removed_after: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "orgs/opt_outs.html")]
struct ListPage {
    chrome: Chrome,
    org: Org,
    q: String,
    rows: Vec<RowView>,
    /// The id to continue after, for the "Next" link.
    next: Option<i64>,
    paged: bool,
    removed: Vec<RowView>,
    removed_next: Option<i64>,
    f: OptOutInput,
    errors: FieldErrors,
    import_error: String,
}

async fn list_view(
    state: &AppState,
    chrome: Chrome,
    org: Org,
    p: Params,
    f: OptOutInput,
    errors: FieldErrors,
    import_error: String,
) -> AppResult<ListPage> {
    let page = |removed: bool, after: &str| {
        let q = ListQuery {
            removed,
            search: p.q.clone(),
            after: after.trim().parse().ok(),
            limit: PAGE_SIZE + 1,
        };
        let db = state.db.clone();
        let org_id = org.id;
        async move {
            let mut rows = store::list(&db, org_id, &q).await?;
            let next = (rows.len() as i64 > PAGE_SIZE).then(|| rows[PAGE_SIZE as usize - 1].id);
            rows.truncate(PAGE_SIZE as usize);
            Ok::<_, sqlx::Error>((rows.into_iter().map(RowView::new).collect(), next))
        }
    };
    let (rows, next) = page(false, &p.after).await?;
    let (removed, removed_next) = page(true, &p.removed_after).await?;
    Ok(ListPage {
        chrome,
        org,
        paged: !p.after.is_empty() || !p.removed_after.is_empty(),
        q: p.q,
        rows,
        next,
        removed,
        removed_next,
        f,
        errors,
        import_error,
    })
}

async fn list_page(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    Query(p): Query<Params>,
) -> AppResult<ListPage> {
    let org = admin_org(&state, &current, org_id).await?;
    list_view(
        &state,
        current.chrome,
        org,
        p,
        OptOutInput::default(),
        FieldErrors::default(),
        String::new(),
    )
    .await
}

/// "Already on the list (recorded … by …)".
fn already_listed(e: &OptOut) -> String {
    format!(
        "This patient is already on the list (entry recorded {} by {}); nothing was added.",
        format_utc(e.recorded_at),
        e.recorded_by_name
    )
}

async fn add(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    form: Result<Form<OptOutInput>, FormRejection>,
) -> AppResult<Response> {
    let org = admin_org(&state, &current, org_id).await?;
    let mut errors = FieldErrors::default();
    let refuse = |f: OptOutInput, errors: FieldErrors, status: StatusCode| {
        let (state, chrome, org) = (&state, current.chrome.clone(), org.clone());
        async move {
            let page = list_view(
                state,
                chrome,
                org,
                Params::default(),
                f,
                errors,
                String::new(),
            )
            .await?;
            Ok::<_, AppError>((status, page).into_response())
        }
    };
    let f = match form {
        Ok(Form(f)) => f,
        Err(rejection) => {
            let (status, message) = super::auth::unreadable(&rejection);
            errors.add("form", message);
            return refuse(OptOutInput::default(), errors, status).await;
        }
    };
    let now = state.clock.now();
    let entry = match f.check(now) {
        Ok(e) => e,
        Err(problems) => {
            for (field, message) in problems {
                errors.add(field, message);
            }
            return refuse(f, errors, StatusCode::BAD_REQUEST).await;
        }
    };
    if let Some(existing) = store::active_duplicate(&state.db, org.id, &entry).await? {
        errors.add("form", already_listed(&existing));
        return refuse(f, errors, StatusCode::CONFLICT).await;
    }
    let mut tx = state.db.begin().await?;
    let id = store::insert(&mut tx, org.id, &entry, &recorder(&current), now).await?;
    super::finish_action(
        tx,
        &state,
        &current,
        ip,
        Event::new("opt_out.add", format!("opt_out:{id}")).org(Some(org.id)),
        // no name in the session store: the flash says what happened, the list shows who
        "The patient was added to the opt-out list.".to_owned(),
        &format!("/orgs/{}/opt-outs", org.id),
    )
    .await
}

// ---------- removal ----------

#[derive(Template, WebTemplate)]
#[template(path = "orgs/opt_out_remove.html")]
struct RemovePage {
    chrome: Chrome,
    org: Org,
    row: RowView,
    reason: String,
    error: String,
}

async fn entry_of(state: &AppState, org: &Org, id: i64) -> AppResult<OptOut> {
    store::get(&state.db, org.id, id)
        .await?
        .ok_or(AppError::NotFound)
}

/// The confirmation page: the entry, and the reason to give.
async fn remove_page(
    State(state): State<AppState>,
    current: CurrentUser,
    Path((org_id, id)): Path<(i64, i64)>,
) -> AppResult<RemovePage> {
    let org = admin_org(&state, &current, org_id).await?;
    let e = entry_of(&state, &org, id).await?;
    Ok(RemovePage {
        chrome: current.chrome,
        org,
        row: RowView::new(e),
        reason: String::new(),
        error: String::new(),
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RemoveForm {
    reason: String,
}

async fn remove(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, id)): Path<(i64, i64)>,
    form: Result<Form<RemoveForm>, FormRejection>,
) -> AppResult<Response> {
    let org = admin_org(&state, &current, org_id).await?;
    let e = entry_of(&state, &org, id).await?;
    let f = form_or_400(form)?;
    let reason = f.reason.split_whitespace().collect::<Vec<_>>().join(" ");
    let problem = if e.is_removed() {
        "This entry was already removed; nothing changed.".to_owned()
    } else if reason.is_empty() {
        "Say why the entry is removed (for example: the patient revoked the opt-out in writing on 2026-03-01).".to_owned()
    } else if reason.chars().count() > MAX_REASON {
        format!("The reason is longer than {MAX_REASON} characters.")
    } else {
        String::new()
    };
    if !problem.is_empty() {
        let status = if e.is_removed() {
            StatusCode::CONFLICT
        } else {
            StatusCode::BAD_REQUEST
        };
        return Ok((
            status,
            RemovePage {
                chrome: current.chrome,
                org,
                row: RowView::new(e),
                reason: f.reason,
                error: problem,
            },
        )
            .into_response());
    }
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if !store::remove(&mut tx, e.id, &recorder(&current), &reason, now).await? {
        // removed by someone else a moment ago
        tx.rollback().await?;
        return Err(AppError::BadRequest(
            "This entry was already removed; nothing changed.".into(),
        ));
    }
    super::finish_action(
        tx,
        &state,
        &current,
        ip,
        Event::new("opt_out.remove", format!("opt_out:{}", e.id)).org(Some(org.id)),
        "The entry was removed from the opt-out list; it is kept under \u{201c}Removed\u{201d}."
            .to_owned(),
        &format!("/orgs/{}/opt-outs", org.id),
    )
    .await
}

// ---------- import ----------

/// A row of a file and what becomes of it.
pub struct RowNote {
    pub line: usize,
    /// "Anna Jones", to help find the row (empty when it could not be read).
    pub label: String,
    pub message: String,
}

/// What applying a file would do.
pub struct Preview {
    pub to_add: Vec<(usize, NewOptOut)>,
    pub duplicates: Vec<RowNote>,
    pub errors: Vec<RowNote>,
}

/// Checks every row of a file against the rules and the list as it is now.
async fn evaluate(
    state: &AppState,
    org: &Org,
    bytes: &[u8],
    now: i64,
) -> AppResult<Result<Preview, FileProblem>> {
    let rows = match opt_outs::parse_csv(bytes) {
        Ok(r) => r,
        Err(problem) => return Ok(Err(problem)),
    };
    let mut preview = Preview {
        to_add: Vec::new(),
        duplicates: Vec::new(),
        errors: Vec::new(),
    };
    // the rows already accepted, to find a patient listed twice in one file
    struct Seen {
        line: usize,
        identifier: Option<(String, String)>,
        name_key: String,
    }
    let mut seen: Vec<Seen> = Vec::new();
    for row in rows {
        let input = match row.result {
            Ok(i) => i,
            Err(message) => {
                preview.errors.push(RowNote {
                    line: row.line,
                    label: String::new(),
                    message,
                });
                continue;
            }
        };
        let label = format!("{} {}", input.given_name, input.family_name)
            .trim()
            .to_owned();
        let entry = match input.check(now) {
            Ok(e) => e,
            Err(problems) => {
                preview.errors.push(RowNote {
                    line: row.line,
                    label,
                    message: problems
                        .into_iter()
                        .map(|(_, m)| m)
                        .collect::<Vec<_>>()
                        .join(" "),
                });
                continue;
            }
        };
        let name_key = format!(
            "{}|{}|{}",
            folded(&entry.family_name),
            folded(&entry.given_name),
            entry.birth_date
        );
        let earlier = seen.iter().find(|s| {
            s.name_key == name_key
                || (entry.identifier.is_some() && s.identifier == entry.identifier)
        });
        if let Some(Seen { line, .. }) = earlier {
            preview.duplicates.push(RowNote {
                line: row.line,
                label,
                message: format!("The same patient as row {line}; not added twice."),
            });
            continue;
        }
        if let Some(existing) = store::active_duplicate(&state.db, org.id, &entry).await? {
            preview.duplicates.push(RowNote {
                line: row.line,
                label,
                message: format!(
                    "Already on the list (entry recorded {} by {}); not added.",
                    format_utc(existing.recorded_at),
                    existing.recorded_by_name
                ),
            });
            continue;
        }
        seen.push(Seen {
            line: row.line,
            identifier: entry.identifier.clone(),
            name_key,
        });
        preview.to_add.push((row.line, entry));
    }
    Ok(Ok(preview))
}

#[derive(Template, WebTemplate)]
#[template(path = "orgs/opt_out_preview.html")]
struct PreviewPage {
    chrome: Chrome,
    org: Org,
    upload_id: i64,
    adding: usize,
    duplicates: Vec<RowNote>,
    errors: Vec<RowNote>,
}

impl PreviewPage {
    /// The preview, 200 when it can be applied, 422 when a row is wrong.
    fn respond(chrome: Chrome, org: Org, upload_id: i64, preview: Preview) -> Response {
        let status = if preview.errors.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let page = PreviewPage {
            chrome,
            org,
            upload_id,
            adding: preview.to_add.len(),
            duplicates: preview.duplicates,
            errors: preview.errors,
        };
        (status, page).into_response()
    }
}

/// Step 1: the file is checked (nothing is saved to the list) and, when it can be
/// applied, kept an hour; the preview says what would be added, what is already
/// listed, and every wrong row.
async fn upload(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    multipart: Multipart,
) -> AppResult<Response> {
    let org = admin_org(&state, &current, org_id).await?;
    let refuse = |message: String| async {
        let page = list_view(
            &state,
            current.chrome.clone(),
            org.clone(),
            Params::default(),
            OptOutInput::default(),
            FieldErrors::default(),
            message,
        )
        .await?;
        Ok::<_, AppError>((StatusCode::BAD_REQUEST, page).into_response())
    };
    let bytes = match super::directory::read_file(multipart).await {
        Ok(Some((_, b))) => b,
        Ok(None) => return refuse("Choose a CSV file to import.".into()).await,
        Err(message) => return refuse(message).await,
    };
    let now = state.clock.now();
    let preview = match evaluate(&state, &org, &bytes, now).await? {
        Ok(p) => p,
        Err(problem) => return refuse(problem.0).await,
    };
    // kept only when it can be applied: a wrong file's names are not stored at all
    let upload_id = if preview.errors.is_empty() && !preview.to_add.is_empty() {
        // parse_csv read it as UTF-8
        let text = String::from_utf8_lossy(&bytes);
        store::save_upload(&state.db, org.id, current.user.id, &text, now).await?
    } else {
        0
    };
    Ok(PreviewPage::respond(
        current.chrome,
        org,
        upload_id,
        preview,
    ))
}

/// Step 2: the kept file is checked again and its new entries added, all or none.
async fn apply(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((org_id, upload_id)): Path<(i64, i64)>,
) -> AppResult<Response> {
    let org = admin_org(&state, &current, org_id).await?;
    let now = state.clock.now();
    let content = store::upload(&state.db, upload_id, org.id, current.user.id, now)
        .await?
        .ok_or_else(|| {
            AppError::BadRequest(
                "This preview has expired (an hour) or was already applied; upload the file again."
                    .into(),
            )
        })?;
    let preview = evaluate(&state, &org, content.as_bytes(), now)
        .await?
        .map_err(|p| AppError::BadRequest(p.0))?;
    if !preview.errors.is_empty() {
        // the list changed since the preview, and now a row is wrong
        return Ok(PreviewPage::respond(
            current.chrome,
            org,
            upload_id,
            preview,
        ));
    }
    let by = recorder(&current);
    let mut tx = state.db.begin().await?;
    for (_, entry) in &preview.to_add {
        store::insert(&mut tx, org.id, entry, &by, now).await?;
    }
    store::delete_upload(&mut tx, upload_id).await?;
    let (added, skipped) = (preview.to_add.len(), preview.duplicates.len());
    super::finish_action(
        tx,
        &state,
        &current,
        ip,
        Event::new("opt_out.import", format!("org:{}", org.id))
            .detail(format!("{added} added, {skipped} already listed"))
            .org(Some(org.id)),
        format!(
            "Imported: {added} added to the opt-out list, {skipped} already on it (not added)."
        ),
        &format!("/orgs/{}/opt-outs", org.id),
    )
    .await
}

// ---------- export ----------

async fn export_csv(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(org_id): Path<i64>,
) -> AppResult<Response> {
    let org = admin_org(&state, &current, org_id).await?;
    let entries = store::all(&state.db, org.id).await?;
    let bytes = opt_outs::export_csv(&entries, format_utc)?;
    audit::record(
        &state.db,
        state.clock.now(),
        &current.actor(ip),
        Event::new("opt_out.export", format!("org:{}", org.id))
            .detail(format!("{} entries", entries.len()))
            .org(Some(org.id)),
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"hie-opt-outs-{}.csv\"", org.id),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        bytes,
    )
        .into_response())
}
