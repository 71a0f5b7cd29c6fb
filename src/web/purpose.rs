//! The purpose prompt for restricted records (docs/sensitive-records.md): printing,
//! downloading an attachment of, or forwarding a restricted message needs the user to
//! say why (treatment, payment, operations, with the patient's consent on file, or
//! another purpose in their words). The answer is audited with the record's label
//! (`restricted.access`). Ordinary messages are not asked.
//!
//! The prompt is the handler's own answer when no purpose came with the request, so
//! every way in (the page's links and buttons, a bookmarked address) meets it; its
//! form sends the same request again with the purpose.

use askama::Template;
use askama_web::WebTemplate;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::session::{Chrome, CurrentUser};
use super::{AppResult, AppState};
use crate::audit::{self, Event};
use crate::sensitivity::Law;
use crate::store::inbound::StoredMessage;

/// The purposes offered, as (value, words).
pub const PURPOSES: [(&str, &str); 5] = [
    ("treatment", "Treatment"),
    ("payment", "Payment"),
    ("operations", "Health care operations"),
    ("consent", "Disclosure with the patient's consent on file"),
    ("other", "Other (say which)"),
];

/// The longest purpose in the user's words.
const MAX_OTHER: usize = 200;

/// The purpose fields of a request (absent when the prompt has not been answered).
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default)]
pub struct PurposeForm {
    pub purpose: String,
    pub purpose_other: String,
}

impl PurposeForm {
    /// The purpose as audited, or why it cannot be accepted ("" when none came).
    pub fn stated(&self) -> Result<String, &'static str> {
        match self.purpose.as_str() {
            "treatment" | "payment" | "operations" | "consent" => Ok(self.purpose.clone()),
            "other" => {
                let other = self.purpose_other.trim();
                if other.is_empty() {
                    Err("Say which other purpose, or choose one of the others.")
                } else if other.chars().count() > MAX_OTHER || other.chars().any(char::is_control) {
                    Err("The purpose in your words is at most 200 characters on one line.")
                } else {
                    Ok(format!("other: {other}"))
                }
            }
            "" => Err(""),
            _ => Err("Choose one of the purposes listed."),
        }
    }
}

/// What the user wants to do with the record.
pub enum Access {
    Print,
    /// Attachment `n`, as numbered by the attachment route.
    Download(usize),
    Forward,
    /// A file the clinical viewers serve (a package's document, a `nonXMLBody`): what
    /// it is for the audit, the address to ask again, and the query to keep.
    Fetch {
        what: String,
        target: String,
        fields: Vec<(String, String)>,
    },
}

#[derive(Template, WebTemplate)]
#[template(path = "mail/purpose.html")]
struct PurposePage {
    chrome: Chrome,
    id: i64,
    law_words: String,
    action_words: &'static str,
    method: &'static str,
    target: String,
    fields: Vec<(String, String)>,
    error: String,
    chosen: String,
    other: String,
    purposes: [(&'static str, &'static str); 5],
}

/// `None` when the request may go ahead: the message is not restricted, or a valid
/// purpose came with it (then audited). Otherwise the prompt, as the response.
pub async fn require(
    state: &AppState,
    current: &CurrentUser,
    ip: String,
    message: &StoredMessage,
    access: Access,
    form: &PurposeForm,
) -> AppResult<Option<Response>> {
    let (id, restriction) = (message.row.id, message.row.restriction);
    decide(state, current, ip, (id, restriction), access, form).await
}

/// [`require`] for message `id`, when the caller has not loaded it (the clinical
/// viewers, which read one file of it).
pub async fn require_for(
    state: &AppState,
    current: &CurrentUser,
    ip: String,
    id: i64,
    access: Access,
    form: &PurposeForm,
) -> AppResult<Option<Response>> {
    let restriction = crate::store::messages::restriction(&state.db, id).await?;
    decide(state, current, ip, (id, restriction), access, form).await
}

/// Records an access to restricted message `id` with its purpose and label.
pub async fn audit_access(
    state: &AppState,
    actor: &crate::audit::Actor,
    id: i64,
    law: Law,
    what: &str,
    purpose: &str,
) -> sqlx::Result<()> {
    audit::record(
        &state.db,
        state.clock.now(),
        actor,
        Event::new("restricted.access", format!("message:{id}")).detail(format!(
            "{what}; purpose: {purpose}; label: {}",
            law.as_str()
        )),
    )
    .await?;
    Ok(())
}

async fn decide(
    state: &AppState,
    current: &CurrentUser,
    ip: String,
    (id, restriction): (i64, Option<Law>),
    access: Access,
    form: &PurposeForm,
) -> AppResult<Option<Response>> {
    let Some(law) = restriction else {
        return Ok(None);
    };
    let error = match form.stated() {
        Ok(purpose) => {
            let what = match access {
                Access::Print => "print".to_owned(),
                Access::Download(n) => format!("download attachment {n}"),
                Access::Forward => "forward".to_owned(),
                Access::Fetch { what, .. } => what,
            };
            audit_access(state, &current.actor(ip), id, law, &what, &purpose).await?;
            return Ok(None);
        }
        Err(why) => why,
    };
    let (action_words, method, target, fields) = match access {
        Access::Print => (
            "print it",
            "get",
            format!("/mail/messages/{id}/print"),
            Vec::new(),
        ),
        Access::Download(n) => (
            "download its attachment",
            "get",
            format!("/mail/messages/{id}/attachments/{n}"),
            Vec::new(),
        ),
        Access::Forward => (
            "forward it",
            "post",
            format!("/mail/messages/{id}/act"),
            vec![("action".to_owned(), "forward".to_owned())],
        ),
        Access::Fetch { target, fields, .. } => {
            ("open or download this file", "get", target, fields)
        }
    };
    let status = if error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = PurposePage {
        chrome: current.chrome.clone(),
        id,
        law_words: law.words().to_owned(),
        action_words,
        method,
        target,
        fields,
        error: error.to_owned(),
        chosen: form.purpose.clone(),
        other: form.purpose_other.clone(),
        purposes: PURPOSES,
    };
    Ok(Some((status, page).into_response()))
}
