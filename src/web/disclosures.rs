//! The organization's report "Disclosures of restricted records" (issue #13): every
//! sensitive record its users sent in a range of days (who, which patient, to whom,
//! why, under which consent), paged on the page and whole in a CSV, for the patient
//! who asks for an accounting of disclosures. Access is checked like every console
//! page (`orgs::admin_org`): members get 403, another organization's administrator
//! 404. Each view and export is in the audit log with the range, never a patient.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::orgs::admin_org;
use super::session::{Chrome, CurrentUser};
use super::{AppError, AppResult, AppState, ClientIp, FieldErrors};
use crate::audit::{self, Event};
use crate::clock::format_utc;
use crate::disclosures::{self, Range, RangeInput};
use crate::store::disclosures::{self as store, Disclosure};
use crate::store::orgs::Org;

/// Rows per page.
pub const PAGE_SIZE: i64 = 50;

/// Most rows one export holds; a range with more is refused with a sentence rather
/// than cut short, since a patient's accounting must be whole.
const EXPORT_LIMIT: i64 = 100_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/orgs/{org}/disclosures", get(report_page))
        .route("/orgs/{org}/disclosures.csv", get(export_csv))
}

/// Where the next page starts: `before=SENT_AT.ID`, the last row shown.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Cursor {
    before: String,
}

impl Cursor {
    /// The row to continue before; anything unreadable starts at the newest.
    fn key(&self) -> Option<(i64, i64)> {
        let (at, id) = self.before.trim().split_once('.')?;
        Some((at.parse().ok()?, id.parse().ok()?))
    }
}

/// A row with its time and kind in words.
pub struct RowView {
    pub d: Disclosure,
    pub sent: String,
    pub kind: String,
}

impl RowView {
    fn new(d: Disclosure) -> RowView {
        RowView {
            sent: format_utc(d.sent_at),
            kind: disclosures::kind(&d.law).to_owned(),
            d,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "orgs/disclosures.html")]
struct ReportPage {
    chrome: Chrome,
    org: Org,
    /// The range in effect, or as typed when it is wrong.
    f: RangeInput,
    errors: FieldErrors,
    rows: Vec<RowView>,
    /// The range as a query string, for the links (older rows, first page, CSV).
    query: String,
    /// The cursor of the "Older" link, or "".
    older: String,
    paged: bool,
}

fn query_of(range: &Range) -> String {
    let f = range.input();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("from", &f.from).append_pair("to", &f.to);
    if !f.patient.is_empty() {
        query.append_pair("patient", &f.patient);
    }
    query.finish()
}

/// Records a view or an export in the audit log: the organization, the range and how
/// many rows were shown or written; never a patient.
async fn record(
    state: &AppState,
    current: &CurrentUser,
    ip: String,
    action: &'static str,
    org: &Org,
    range: &Range,
    rows: usize,
) -> AppResult<()> {
    let event = Event::new(action, format!("org:{}", org.id))
        .detail(format!(
            "{}; {rows} {}",
            range.describe(),
            if rows == 1 { "row" } else { "rows" }
        ))
        .org(Some(org.id));
    audit::record(&state.db, state.clock.now(), &current.actor(ip), event).await?;
    Ok(())
}

async fn report_page(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    Query(input): Query<RangeInput>,
    Query(cursor): Query<Cursor>,
) -> AppResult<Response> {
    let org = admin_org(&state, &current, org_id).await?;
    let now = state.clock.now();
    let range = match input.check(now) {
        Ok(r) => r,
        Err(problems) => {
            let mut errors = FieldErrors::default();
            for (field, message) in problems {
                errors.add(field, message);
            }
            let page = ReportPage {
                chrome: current.chrome,
                org,
                f: input,
                errors,
                rows: Vec::new(),
                query: String::new(),
                older: String::new(),
                paged: false,
            };
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let before = cursor.key();
    let rows = store::list(&state.db, org.id, &range.filter(), before, PAGE_SIZE + 1).await?;
    let (rows, older) = super::paginate(rows, PAGE_SIZE, |d| format!("{}.{}", d.sent_at, d.id));
    record(
        &state,
        &current,
        ip,
        "disclosures.view",
        &org,
        &range,
        rows.len(),
    )
    .await?;
    let page = ReportPage {
        chrome: current.chrome,
        org,
        f: range.input(),
        errors: FieldErrors::default(),
        rows: rows.into_iter().map(RowView::new).collect(),
        query: query_of(&range),
        older,
        paged: before.is_some(),
    };
    Ok(page.into_response())
}

async fn export_csv(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(org_id): Path<i64>,
    Query(input): Query<RangeInput>,
) -> AppResult<Response> {
    let org = admin_org(&state, &current, org_id).await?;
    let now = state.clock.now();
    let range = input.check(now).map_err(|problems| {
        let sentences: Vec<String> = problems.into_iter().map(|(_, m)| m).collect();
        AppError::BadRequest(sentences.join(" "))
    })?;
    let rows = store::list(&state.db, org.id, &range.filter(), None, EXPORT_LIMIT + 1).await?;
    if rows.len() as i64 > EXPORT_LIMIT {
        return Err(AppError::BadRequest(format!(
            "More than {EXPORT_LIMIT} disclosures were sent in this range, too many for one file; export shorter ranges one after the other."
        )));
    }
    let bytes = disclosures::export_csv(&rows)?;
    record(
        &state,
        &current,
        ip,
        "disclosures.export",
        &org,
        &range,
        rows.len(),
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"disclosures-{}-{}.csv\"",
                    range.from, range.to
                ),
            ),
        ],
        bytes,
    )
        .into_response())
}
