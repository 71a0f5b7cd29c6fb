//! Reading the audit log: an organization's own (office managers) or all of it
//! (operators), filtered by user, action and dates, paged, and exported as CSV.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::session::{Chrome, CurrentUser};
use super::{AppError, AppResult, AppState};
use crate::audit::{self, Entry, Filter};
use crate::clock::{format_rfc3339, format_utc, parse_date};
use crate::domain::Role;
use crate::export::csv_safe;
use crate::store::orgs;

const PAGE: i64 = 50;
/// An export holds at most this many entries; narrow the dates for more.
const EXPORT_LIMIT: i64 = 100_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/audit", get(all_page))
        .route("/audit.csv", get(all_csv))
        .route("/orgs/{org}/audit", get(org_page))
        .route("/orgs/{org}/audit.csv", get(org_csv))
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct AuditQuery {
    user: String,
    action: String,
    from: String,
    until: String,
    before: String,
}

impl AuditQuery {
    /// The filter, or why it cannot be read.
    fn filter(&self, org_id: Option<i64>) -> Result<Filter, String> {
        let date = |s: &str, what: &str| -> Result<Option<i64>, String> {
            if s.trim().is_empty() {
                return Ok(None);
            }
            parse_date(s)
                .map(Some)
                .ok_or_else(|| format!("The {what} date must look like 2026-01-31."))
        };
        let non_empty = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(Filter {
            org_id,
            actor: non_empty(&self.user).map(|s| s.to_ascii_lowercase()),
            action: non_empty(&self.action),
            from: date(&self.from, "from")?,
            // "until" is inclusive of that whole day
            until: date(&self.until, "until")?.map(|d| d + 86_400),
            before_id: self.before.trim().parse().ok(),
        })
    }

    /// The query string for the same filter, for the next page and the CSV link.
    fn without_cursor(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("user", &self.user)
            .append_pair("action", &self.action)
            .append_pair("from", &self.from)
            .append_pair("until", &self.until)
            .finish()
    }
}

pub struct Row {
    pub entry: Entry,
    pub when: String,
    /// The object in words ("Referral for Ms. Diaz", "dr.ana@direct.lakeside.test"),
    /// and a link when the viewer may open it; the raw object otherwise.
    pub object: String,
    pub link: String,
}

/// Names the objects of `entries` for `viewer`: a message by its subject (a
/// restricted record as "Restricted record") with a link when it is in one of the
/// viewer's mailboxes, else by its mailbox; a mailbox by its address; an organization
/// by its name. Anything else stays as written.
async fn named(
    state: &AppState,
    viewer: i64,
    entries: &[Entry],
) -> AppResult<Vec<(String, String)>> {
    let own: Vec<i64> = crate::store::mailboxes::of_user(&state.db, viewer)
        .await?
        .iter()
        .map(|m| m.id)
        .collect();
    let mut out = Vec::with_capacity(entries.len());
    // a page often names the same object many times (one message read again and again):
    // each is looked up once
    let mut known: std::collections::HashMap<&str, (String, String)> =
        std::collections::HashMap::new();
    for e in entries {
        if let Some(named) = known.get(e.object.as_str()) {
            out.push(named.clone());
            continue;
        }
        let (kind, id) = e.object.split_once(':').unwrap_or(("", ""));
        let id: Option<i64> = id.parse().ok();
        let named = match (kind, id) {
            ("message", Some(id)) => {
                match crate::store::inbound::message_label(&state.db, id).await? {
                    Some((mailbox_id, address, subject)) if own.contains(&mailbox_id) => (
                        format!("{subject} ({address})"),
                        format!("/mail/messages/{id}"),
                    ),
                    Some((_, address, _)) => (format!("a message in {address}"), String::new()),
                    None => (format!("message {id} (deleted)"), String::new()),
                }
            }
            ("mailbox", Some(id)) => match crate::store::mailboxes::get(&state.db, id).await? {
                Some(m) => (m.address, String::new()),
                None => (e.object.clone(), String::new()),
            },
            ("org", Some(id)) => match orgs::get(&state.db, id).await? {
                Some(o) => (o.name, format!("/orgs/{id}")),
                None => (e.object.clone(), String::new()),
            },
            _ => (e.object.clone(), String::new()),
        };
        known.insert(e.object.as_str(), named.clone());
        out.push(named);
    }
    Ok(out)
}

#[derive(Template, WebTemplate)]
#[template(path = "audit/log.html")]
struct LogPage {
    chrome: Chrome,
    /// `/audit` or `/orgs/{id}/audit`
    base: String,
    scope: String,
    rows: Vec<Row>,
    q: AuditQuery,
    query: String,
    next_before: String,
    /// Why the filter as typed cannot be used ("" when it can).
    problem: String,
}

async fn all_page(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(q): Query<AuditQuery>,
) -> AppResult<Response> {
    current.require_operator()?;
    page(
        &state,
        current.user.id,
        current.chrome,
        "/audit".into(),
        "All organizations".into(),
        None,
        q,
    )
    .await
}

async fn org_page(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    Query(q): Query<AuditQuery>,
) -> AppResult<Response> {
    let org = readable_org(&state, &current, org_id).await?;
    page(
        &state,
        current.user.id,
        current.chrome,
        format!("/orgs/{}/audit", org.id),
        org.name,
        Some(org.id),
        q,
    )
    .await
}

async fn readable_org(
    state: &AppState,
    current: &CurrentUser,
    org_id: i64,
) -> AppResult<orgs::Org> {
    if !current.can_admin(org_id) {
        return Err(if current.role() == Role::Member {
            AppError::Forbidden(
                "Only your organization's administrator can read its audit log.".into(),
            )
        } else {
            AppError::NotFound
        });
    }
    orgs::get(&state.db, org_id)
        .await?
        .ok_or(AppError::NotFound)
}

async fn page(
    state: &AppState,
    viewer: i64,
    chrome: Chrome,
    base: String,
    scope: String,
    org_id: Option<i64>,
    q: AuditQuery,
) -> AppResult<Response> {
    // a filter that cannot be used comes back as typed, with why, and lists nothing
    let (entries, next_before, problem) = match q.filter(org_id) {
        Ok(filter) => {
            let entries = audit::list(&state.db, &filter, PAGE + 1).await?;
            let (entries, next) = super::paginate(entries, PAGE, |e| e.id.to_string());
            (entries, next, String::new())
        }
        Err(problem) => (Vec::new(), String::new(), problem),
    };
    let names = named(state, viewer, &entries).await?;
    let status = if problem.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = LogPage {
        chrome,
        base,
        scope,
        rows: entries
            .into_iter()
            .zip(names)
            .map(|(entry, (object, link))| Row {
                when: format_utc(entry.at),
                object,
                link,
                entry,
            })
            .collect(),
        query: q.without_cursor(),
        q,
        next_before,
        problem,
    };
    Ok((status, page).into_response())
}

async fn all_csv(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(q): Query<AuditQuery>,
) -> AppResult<Response> {
    current.require_operator()?;
    csv(&state, None, "directmail-audit.csv", q).await
}

async fn org_csv(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    Query(q): Query<AuditQuery>,
) -> AppResult<Response> {
    let org = readable_org(&state, &current, org_id).await?;
    csv(
        &state,
        Some(org.id),
        &format!("directmail-audit-org-{}.csv", org.id),
        q,
    )
    .await
}

async fn csv(
    state: &AppState,
    org_id: Option<i64>,
    name: &str,
    q: AuditQuery,
) -> AppResult<Response> {
    let mut filter = q.filter(org_id).map_err(AppError::BadRequest)?;
    filter.before_id = None;
    let entries = audit::list(&state.db, &filter, EXPORT_LIMIT).await?;
    let mut out = csv::Writer::from_writer(Vec::new());
    let header = [
        "id",
        "time",
        "organization",
        "actor",
        "action",
        "object",
        "ip",
        "detail",
        "hash",
    ];
    out.write_record(header).map_err(anyhow::Error::from)?;
    for e in entries {
        out.write_record([
            e.id.to_string(),
            format_rfc3339(e.at),
            e.org_id.map(|v| v.to_string()).unwrap_or_default(),
            csv_safe(&e.actor),
            csv_safe(&e.action),
            csv_safe(&e.object),
            csv_safe(&e.ip),
            csv_safe(&e.detail),
            e.hash,
        ])
        .map_err(anyhow::Error::from)?;
    }
    let bytes = out.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}
