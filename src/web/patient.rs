//! "Messages about this patient": every message filed with a patient, across the
//! mailboxes assigned to the user (Trash left out), newest first, keyset paged. The
//! patient is named by identifier, or by name when the messages gave none; the
//! message page's patient banner links here.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use serde::Deserialize;

use super::session::{Chrome, CurrentUser};
use super::{AppError, AppResult, AppState};
use crate::clock::format_utc;
use crate::store::messages;

/// Messages on one page.
const PAGE: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new().route("/mail/patient", get(page))
}

/// The address of the list for a patient as stored on a message.
pub fn link(patient: &crate::patient::MessagePatient) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if patient.id.is_empty() {
        query.append_pair("name", &patient.name);
    } else {
        query.append_pair("id", &patient.id);
    }
    format!("/mail/patient?{}", query.finish())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PatientQuery {
    /// The identifier as stored ("12345 (1.2.840.114350)").
    id: String,
    /// The name, when there is no identifier.
    name: String,
    /// Keyset: messages with an id below this.
    before: Option<i64>,
}

pub struct Line {
    pub id: i64,
    pub mailbox: String,
    pub folder: String,
    pub from: String,
    pub subject: String,
    pub when: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "mail/patient.html")]
struct PatientPage {
    chrome: Chrome,
    /// How the patient is named: "HX-4471 (2.16.840.1.113883.19.999999)" or a name.
    named: String,
    lines: Vec<Line>,
    /// The next page's address, when there is one.
    next: String,
}

async fn page(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(q): Query<PatientQuery>,
) -> AppResult<PatientPage> {
    let (id, name) = (q.id.trim(), q.name.trim());
    if id.is_empty() && name.is_empty() || id.len() > 1000 || name.len() > 1000 {
        return Err(AppError::NotFound);
    }
    let found =
        messages::about_patient(&state.db, current.user.id, id, name, q.before, PAGE + 1).await?;
    let more = found.len() as i64 > PAGE;
    let lines: Vec<Line> = found
        .into_iter()
        .take(PAGE as usize)
        .map(|(row, mailbox)| Line {
            subject: row.listed_subject().to_owned(),
            id: row.id,
            mailbox,
            folder: row.folder,
            from: if row.from_name.is_empty() {
                row.from_addr
            } else {
                row.from_name
            },
            when: format_utc(row.received_at),
        })
        .collect();
    let next = match (more, lines.last()) {
        (true, Some(last)) => {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            if id.is_empty() {
                query.append_pair("name", name);
            } else {
                query.append_pair("id", id);
            }
            query.append_pair("before", &last.id.to_string());
            format!("/mail/patient?{}", query.finish())
        }
        _ => String::new(),
    };
    Ok(PatientPage {
        chrome: current.chrome,
        named: if id.is_empty() { name } else { id }.to_owned(),
        lines,
        next,
    })
}
