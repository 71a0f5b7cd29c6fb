//! "Messages about this patient": every message filed with a patient, across the
//! mailboxes assigned to the user (Trash left out), newest first, keyset paged. The
//! patient is named by identifier, or by name when the messages gave none; the
//! message page's patient banner links here.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::session::{Chrome, CurrentUser};
use super::sso::{KEY_LAUNCH_PATIENT, LaunchPatient};
use super::{AppError, AppResult, AppState, ClientIp};
use crate::audit::Event;
use crate::clock::format_utc;
use crate::store::messages;
use crate::store::{drafts, mailboxes};

/// Messages on one page.
const PAGE: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/mail/patient", get(page))
        .route("/mail/patient/compose", post(compose))
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
    /// The patient an EHR launch opened this page for: a banner (when the EHR asked
    /// for one) and "Write a message about this patient".
    launch: Option<LaunchView>,
}

pub struct LaunchView {
    pub banner: bool,
    pub name: String,
    pub birth_date: String,
    pub sex: String,
    pub id: String,
    /// The user's mailboxes (id, address) to write from.
    pub mailboxes: Vec<(i64, String)>,
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
    // the launch's patient, when this page is about them
    let launched: Option<LaunchPatient> = current.session.get(KEY_LAUNCH_PATIENT).await?;
    let launch = match launched.filter(|l| l.listed() == (id.to_owned(), name.to_owned())) {
        Some(l) => {
            let p = l.patient;
            Some(LaunchView {
                banner: l.banner,
                name: format!("{} {}", p.given, p.family).trim().to_owned(),
                birth_date: p.birth_date,
                sex: crate::patient::SEXES
                    .iter()
                    .find(|(code, _)| *code == p.sex)
                    .map(|(_, words)| (*words).to_owned())
                    .unwrap_or_default(),
                id: p.id,
                mailboxes: mailboxes::of_user(&state.db, current.user.id)
                    .await?
                    .into_iter()
                    .map(|m| (m.id, m.address))
                    .collect(),
            })
        }
        None => None,
    };
    Ok(PatientPage {
        chrome: current.chrome,
        named: if id.is_empty() { name } else { id }.to_owned(),
        lines,
        next,
        launch,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ComposeForm {
    mailbox: String,
}

/// "Write a message about this patient" after an EHR launch: a new draft in the
/// chosen mailbox with the launch's patient block filled in.
async fn compose(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    form: Result<axum::Form<ComposeForm>, axum::extract::rejection::FormRejection>,
) -> AppResult<Response> {
    let form = super::form_or_400(form)?;
    let Some(launched) = current
        .session
        .get::<LaunchPatient>(KEY_LAUNCH_PATIENT)
        .await?
    else {
        return Err(AppError::BadRequest(
            "No patient was opened from the EHR in this session. Open the patient from the EHR again.".into(),
        ));
    };
    let mailbox_id = form
        .mailbox
        .parse::<i64>()
        .map_err(|_| AppError::NotFound)?;
    let mailbox = super::mail::own_mailbox(&state, &current, mailbox_id).await?;
    let start = drafts::Start {
        patient: launched.patient,
        ..drafts::Start::default()
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let id = drafts::create(&mut tx, mailbox.id, current.user.id, &start, now).await?;
    crate::audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("draft.create", format!("mailbox:{}", mailbox.id))
            .detail("about the EHR launch's patient"),
    )
    .await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("/mail/drafts/{id}")).into_response())
}
