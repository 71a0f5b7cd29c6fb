//! Writing: drafts kept on the server (saved as the user types, so a closed tab or a
//! session timeout loses nothing), recipients checked as they are typed, attachments
//! checked on the server (real PDFs without scripts, the operator's allow-list, the
//! size limit), reply / reply all / forward / edit-and-resend, and sending.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use mail_parser::{MessageParser, MimeHeaders as _};
use serde::Deserialize;

use super::mail::{Frame, frame, own_mailbox};
use super::message::{Show, file_response, header_filename, human_size};
use super::session::{Chrome, CurrentUser, flash};
use super::{AppError, AppResult, AppState, ClientIp};
use crate::audit::{self, Event};
use crate::clock::format_utc;
use crate::config::OuterSubject;
use crate::outbound::Attachment;
use crate::patient::{DraftPatient, FieldError, PURPOSES, SEXES};
use crate::sensitivity::{CHOICES, Law, OPT_OUT_EXCEPTIONS, PART2_EXCEPTIONS};
use crate::store::directory::Suggestion;
use crate::store::drafts::{self, AttachmentMeta, Draft, Start};
use crate::store::inbound::StoredMessage;
use crate::store::mailboxes::Mailbox;
use crate::store::messages;

/// What a multipart request may carry beyond its files (boundaries, part headers,
/// the other fields).
pub const MULTIPART_OVERHEAD: usize = 1024 * 1024;

/// Attachment checks running at once: each parses a whole file (a PDF's objects, an
/// office file's zip), so they run off the async threads and at most two at a time,
/// whatever the number of uploads in flight.
static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Checks one file against `policy` (the operator's types, `max_total_bytes` being
/// what the message still has room for) on a blocking thread, at most [`CHECKS`] at
/// once. The media type to store, or the sentence saying why not.
pub async fn check_file(
    name: &str,
    declared: Option<&str>,
    data: axum::body::Bytes,
    policy: &directmail_content::Policy,
) -> AppResult<Result<&'static str, String>> {
    let _permit = CHECKS
        .acquire()
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
    let (name, declared, policy) = (name.to_owned(), declared.map(str::to_owned), policy.clone());
    tokio::task::spawn_blocking(move || {
        directmail_content::check_attachment(&name, declared.as_deref(), &data, &policy)
            .map(|accepted| accepted.content_type)
            .map_err(|rejection| rejection.to_string())
    })
    .await
    .map_err(|e| AppError::Internal(e.into()))
}

/// The operator's attachment policy with room for `max_total_bytes`.
pub fn policy(state: &AppState, max_total_bytes: usize) -> directmail_content::Policy {
    directmail_content::Policy {
        max_total_bytes,
        allowed: state.config.attachment_types.0.clone(),
    }
}

/// The largest total of attachments in one message (`DIRECTMAIL_MAX_MESSAGE_MB`).
pub fn message_limit(config: &crate::config::Config) -> usize {
    config.max_message_mb as usize * 1024 * 1024
}

/// A multipart field's bytes, read chunk by chunk up to `cap`; `Ok(None)` when it
/// holds more (the rest is read and dropped, so the answer still reaches the
/// browser), never more than `cap` bytes kept.
pub async fn read_capped(
    field: &mut axum::extract::multipart::Field<'_>,
    cap: usize,
) -> Result<Option<axum::body::Bytes>, axum::extract::multipart::MultipartError> {
    let mut kept = Vec::new();
    let mut over = false;
    while let Some(chunk) = field.chunk().await? {
        if over || kept.len() + chunk.len() > cap {
            over = true;
            kept = Vec::new();
            continue;
        }
        kept.extend_from_slice(&chunk);
    }
    Ok((!over).then(|| kept.into()))
}

pub fn routes(config: &crate::config::Config) -> Router<AppState> {
    // the request may carry a message's worth of files, and no more
    let upload_limit = message_limit(config) + MULTIPART_OVERHEAD;
    Router::new()
        .route("/mail/{mailbox}/compose", get(new_page).post(compose))
        .route("/mail/{mailbox}/compose/send", post(compose_and_send))
        .route(
            "/mail/{mailbox}/compose/attachments",
            post(compose_and_upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/mail/drafts/{id}", get(page).post(save))
        .route("/mail/drafts/{id}/send", post(send))
        .route("/mail/drafts/{id}/delete", post(discard))
        .route(
            "/mail/drafts/{id}/attachments",
            post(upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/mail/drafts/{id}/attachments/{aid}", get(download))
        .route("/mail/drafts/{id}/attachments/{aid}/delete", post(remove))
        .route("/mail/check-address", get(check_address))
        .route("/mail/suggest", get(suggest))
}

/// The user's own draft (drafts are private to their writer), or 404.
async fn own_draft(
    state: &AppState,
    current: &CurrentUser,
    id: i64,
) -> AppResult<(Mailbox, Draft)> {
    let draft = drafts::get(&state.db, id)
        .await?
        .filter(|d| d.user_id == current.user.id)
        .ok_or(AppError::NotFound)?;
    let mailbox = own_mailbox(state, current, draft.mailbox_id).await?;
    Ok((mailbox, draft))
}

/// "New message": the compose page with nothing stored yet. The draft is made by the
/// first thing written or attached (the page's script saves it then; without scripts,
/// by Save, Send or Attach), so an abandoned page leaves nothing behind.
async fn new_page(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(mailbox_id): Path<i64>,
) -> AppResult<ComposePage> {
    let mailbox = own_mailbox(&state, &current, mailbox_id).await?;
    let draft = Draft::blank(mailbox.id, current.user.id);
    render(&state, current, mailbox, draft, Feedback::default()).await
}

/// Makes the draft of a new message in `mailbox`.
async fn create_draft(
    state: &AppState,
    current: &CurrentUser,
    mailbox: &Mailbox,
) -> AppResult<i64> {
    let mut tx = state.db.begin().await?;
    let id = drafts::create(
        &mut tx,
        mailbox.id,
        current.user.id,
        &Start::default(),
        state.clock.now(),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// The header that tells the new-message page's script which draft it now edits.
const DRAFT_HEADER: &str = "x-draft";

/// The first save of a new message: makes the draft with what was typed, then answers
/// as a save of that draft would (the script learns the draft from `X-Draft`).
async fn compose(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    current: CurrentUser,
    Path(mailbox_id): Path<i64>,
    Query(q): Query<BeaconQuery>,
    axum::Form(form): axum::Form<DraftForm>,
) -> AppResult<Response> {
    let mailbox = own_mailbox(&state, &current, mailbox_id).await?;
    let background = headers.contains_key("x-autosave") || q.beacon.is_some();
    if let Some(why) = over_limits(&form) {
        let blank = Draft::blank(mailbox.id, current.user.id);
        return refuse_over_limits(&state, current, mailbox, blank, &form, background, why).await;
    }
    let id = create_draft(&state, &current, &mailbox).await?;
    let mut answer = store_and_answer(&state, ip, current, mailbox, id, background, &form).await?;
    if background {
        *answer.status_mut() = StatusCode::CREATED;
        if let Ok(value) = id.to_string().parse() {
            answer.headers_mut().insert(DRAFT_HEADER, value);
        }
    }
    Ok(answer)
}

/// Stores the form in the user's draft `id` and answers: the time saved (to the
/// page's script, or a beacon), else the send (its Send button without scripts), else
/// back to the draft.
async fn store_and_answer(
    state: &AppState,
    ip: String,
    current: CurrentUser,
    mailbox: Mailbox,
    id: i64,
    background: bool,
    form: &DraftForm,
) -> AppResult<Response> {
    let now = store_form(state, id, form).await?;
    if background {
        return Ok(format!("Saved at {}", format_utc(now)).into_response());
    }
    if form.action == "send" {
        return send_draft(state, current, ip, mailbox, id, &form.reviewed).await;
    }
    flash(&current.session, "Draft saved.").await?;
    Ok(Redirect::to(&format!("/mail/drafts/{id}")).into_response())
}

/// Send on a new message that was never saved (a page without scripts).
async fn compose_and_send(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(mailbox_id): Path<i64>,
    axum::Form(form): axum::Form<DraftForm>,
) -> AppResult<Response> {
    let mailbox = own_mailbox(&state, &current, mailbox_id).await?;
    if let Some(why) = over_limits(&form) {
        let blank = Draft::blank(mailbox.id, current.user.id);
        return refuse_over_limits(&state, current, mailbox, blank, &form, false, why).await;
    }
    let id = create_draft(&state, &current, &mailbox).await?;
    store_form(&state, id, &form).await?;
    send_draft(&state, current, ip, mailbox, id, &form.reviewed).await
}

/// Attach on a new message that was never saved (a page without scripts).
async fn compose_and_upload(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    current: CurrentUser,
    Path(mailbox_id): Path<i64>,
    multipart: Multipart,
) -> AppResult<Response> {
    let mailbox = own_mailbox(&state, &current, mailbox_id).await?;
    let id = create_draft(&state, &current, &mailbox).await?;
    let mut answer = upload_into(&state, ip, &headers, &current, id, multipart).await?;
    if let Ok(value) = id.to_string().parse() {
        answer.headers_mut().insert(DRAFT_HEADER, value);
    }
    Ok(answer)
}

/// "Re: …" / "Fwd: …" without stacking prefixes.
fn prefixed(prefix: &str, subject: &str) -> String {
    let lower = subject.to_ascii_lowercase();
    if lower.starts_with(&format!("{}:", prefix.to_ascii_lowercase())) {
        subject.to_owned()
    } else {
        format!("{prefix}: {subject}")
    }
}

fn quoted(text: &str) -> String {
    text.lines()
        .map(|l| format!("> {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A draft made from a message: a reply, reply to all, forward (with attachments), or
/// an edit of a sent message to resend it. Returns the draft's id.
pub async fn draft_from(
    state: &AppState,
    current: &CurrentUser,
    ip: String,
    mailbox: &Mailbox,
    message: &StoredMessage,
    mode: &str,
) -> AppResult<i64> {
    let parsed = MessageParser::default()
        .parse(&message.raw)
        .ok_or_else(|| AppError::BadRequest("This message could not be read.".into()))?;
    let list = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|x| x.address().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default()
    };
    let own = mailbox.address.to_ascii_lowercase();
    let from = message.row.from_addr.to_ascii_lowercase();
    let text = crate::filing::text_of(&parsed);
    let when = format_utc(message.row.received_at);
    let subject = message.row.subject.clone();
    let parent = message.message_id.clone();
    let refs = {
        let mut r: Vec<String> = parsed
            .references()
            .as_text_list()
            .map(|l| l.iter().map(|s| format!("<{s}>")).collect())
            .unwrap_or_default();
        if let Some(p) = &parent {
            r.push(format!("<{p}>"));
        }
        (!r.is_empty()).then(|| r.join(" "))
    };
    let mut start = Start {
        // a reply to, or forward of, a restricted record starts restricted
        law: message.row.restriction,
        ..Start::default()
    };
    let mut files: Vec<Attachment> = Vec::new();
    match mode {
        "reply" | "reply-all" => {
            // replying to our own Sent copy goes to its recipients
            let mut to = if from == own {
                list(parsed.to())
            } else {
                vec![from.clone()]
            };
            let mut cc = Vec::new();
            if mode == "reply-all" {
                if from != own {
                    to.extend(list(parsed.to()));
                }
                cc = list(parsed.cc());
            }
            to.retain(|a| *a != own);
            to.dedup();
            cc.retain(|a| *a != own && !to.contains(a));
            start.to = to.join(", ");
            start.cc = cc.join(", ");
            start.subject = prefixed("Re", &subject);
            start.body = format!(
                "\n\nOn {when}, {} wrote:\n{}",
                message.row.from_addr,
                quoted(&text)
            );
            start.in_reply_to = parent.clone().map(|p| format!("<{p}>"));
            start.refs = refs;
            // a reply is about the same patient
            if let Some(patient) = &message.patient {
                start.patient = crate::patient::DraftPatient::of(patient);
            }
        }
        "forward" => {
            // References (without In-Reply-To) marks the draft as a forward of it
            start.refs = parent.clone().map(|p| format!("<{p}>"));
            start.subject = prefixed("Fwd", &subject);
            start.body = format!(
                "\n\n---------- Forwarded message ----------\nFrom: {}\nDate: {when}\nSubject: {subject}\n\n{text}",
                message.row.from_addr
            );
            files = carried(&parsed);
        }
        "resend" => {
            start.to = list(parsed.to()).join(", ");
            start.cc = list(parsed.cc()).join(", ");
            start.subject = subject;
            start.body = text;
            start.in_reply_to = parsed.in_reply_to().as_text().map(|p| format!("<{p}>"));
            files = carried(&parsed);
        }
        _ => return Err(AppError::BadRequest("That action is not known.".into())),
    }
    let event = Event::new("draft.create", format!("message:{}", message.row.id)).detail(mode);
    draft_with_files(state, current, ip, mailbox, &start, files, event).await
}

/// A draft in `mailbox` that starts as `start`, with `files` attached once they pass
/// the checks an upload gets (those that do not are named in a message shown once),
/// audited as `event`. Returns the draft's id. Also the forward of a document
/// retrieved from a FHIR server (`web::records`).
pub async fn draft_with_files(
    state: &AppState,
    current: &CurrentUser,
    ip: String,
    mailbox: &Mailbox,
    start: &Start,
    files: Vec<Attachment>,
    event: Event<'_>,
) -> AppResult<i64> {
    // files carried over are checked like uploads: what arrived is not always
    // something this HISP lets its users send
    let mut room = message_limit(&state.config);
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for mut f in files {
        let data = axum::body::Bytes::from(std::mem::take(&mut f.data));
        match check_file(
            &f.name,
            Some(&f.content_type),
            data.clone(),
            &policy(state, room),
        )
        .await?
        {
            Ok(content_type) => {
                room = room.saturating_sub(data.len());
                f.content_type = content_type.to_owned();
                f.data = data.to_vec();
                kept.push(f);
            }
            Err(why) => refused.push(format!("Not attached: {why}")),
        }
    }
    if !refused.is_empty() {
        flash(&current.session, refused.join(" ")).await?;
    }
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let id = drafts::create(&mut tx, mailbox.id, current.user.id, start, now).await?;
    drafts::copy_attachments(&mut tx, id, &kept).await?;
    audit::append(&mut tx, now, &current.actor(ip), event).await?;
    tx.commit().await?;
    Ok(id)
}

/// The attachments of a message, to forward or resend.
fn carried(parsed: &mail_parser::Message<'_>) -> Vec<Attachment> {
    parsed
        .attachments()
        .map(|a| Attachment {
            name: a.attachment_name().unwrap_or("attachment").to_owned(),
            content_type: super::message::content_type_of(a),
            data: a.contents().to_vec(),
        })
        .collect()
}

/// An address typed in To or Cc, with what the server found about it.
pub struct Chip {
    /// `to` or `cc`: the field it is shown under.
    pub field: &'static str,
    pub address: String,
    pub ok: bool,
    pub note: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "mail/compose.html")]
struct ComposePage {
    chrome: Chrome,
    frame: Frame,
    draft: Draft,
    /// Where the page's forms post: the draft, or, for a new message not yet stored,
    /// the mailbox's compose address (which makes the draft).
    base: String,
    attachments: Vec<(AttachmentMeta, String)>,
    /// Per-address results after a refused send.
    chips: Vec<Chip>,
    /// Why nothing was sent (each once; a recipient's problem is beside it instead).
    errors: Vec<String>,
    saved: String,
    subject_visible: bool,
    max_mb: u32,
    allowed: String,
    /// Each refused patient field and why, shown beside it.
    patient_errors: Vec<FieldError>,
    sexes: &'static [(&'static str, &'static str)],
    purposes: &'static [(&'static str, &'static str)],
    /// The recipients whose directory entry asks for XDM packages.
    wanting_xdm: Vec<String>,
    /// The "Sensitive" section's lists.
    sensitive_choices: Vec<(&'static str, &'static str)>,
    part2_exceptions: &'static [(&'static str, &'static str)],
    opt_out_exceptions: &'static [(&'static str, &'static str)],
    /// Why the Part 2 consent does not do, beside it.
    sensitive_error: String,
    /// Set when the opt-out list stopped the message: why, with the exceptions offered.
    opt_out: String,
    /// The recipients to confirm before a sensitive record goes, and the key the
    /// confirming button sends.
    review: Vec<crate::sensitive_send::Reviewed>,
    review_key: String,
}

/// What a send attempt found, shown on the compose page it comes back to.
#[derive(Default)]
struct Feedback {
    chips: Vec<Chip>,
    /// Why nothing was sent, one item each.
    errors: Vec<String>,
    patient_errors: Vec<FieldError>,
    sensitive_error: String,
    opt_out: String,
    review: Vec<crate::sensitive_send::Reviewed>,
}

impl ComposePage {
    /// Why the patient field `name` was refused ("" when it was not).
    fn patient_error(&self, name: &str) -> &str {
        self.patient_errors
            .iter()
            .find(|(field, _)| *field == name)
            .map(|(_, why)| why.as_str())
            .unwrap_or("")
    }

    /// The stored form of the draft's "Sensitive" choice ("" when none).
    fn law(&self) -> &'static str {
        self.draft
            .sensitive
            .law
            .map(Law::as_str)
            .unwrap_or_default()
    }

    /// Whether a recipient in `field` (`to`, `cc`) cannot be sent to.
    fn field_refused(&self, field: &str) -> bool {
        self.chips.iter().any(|c| c.field == field && !c.ok)
    }

    /// Whether the attachment `id` is the one picked as the patient's consent.
    fn is_consent(&self, id: &i64) -> bool {
        self.draft.sensitive.consent_attachment_id == Some(*id)
    }

    fn patient_sex(&self) -> &str {
        &self.draft.patient.sex
    }

    /// What was typed in the patient field `name`.
    fn patient_value(&self, name: &str) -> &str {
        self.draft.patient.field(name)
    }
}

async fn render(
    state: &AppState,
    current: CurrentUser,
    mailbox: Mailbox,
    draft: Draft,
    feedback: Feedback,
) -> AppResult<ComposePage> {
    // a new message (id 0) has no files yet
    let stored = if draft.id == 0 {
        Vec::new()
    } else {
        drafts::attachments(&state.db, draft.id).await?
    };
    let attachments = stored
        .into_iter()
        .map(|a| {
            let size = human_size(a.size as usize);
            (a, size)
        })
        .collect();
    let mut allowed = vec!["PDF".to_owned()];
    allowed.extend(
        state
            .config
            .attachment_types
            .0
            .iter()
            .map(|k| k.label().to_owned()),
    );
    let recipients: Vec<String> = split_addresses(&draft.to)
        .into_iter()
        .chain(split_addresses(&draft.cc))
        .collect();
    let wanting_xdm = crate::store::directory::wanting_xdm(
        &state.db,
        &super::directory::viewer(&current),
        &recipients,
    )
    .await?;
    Ok(ComposePage {
        base: if draft.id == 0 {
            format!("/mail/{}/compose", mailbox.id)
        } else {
            format!("/mail/drafts/{}", draft.id)
        },
        wanting_xdm,
        frame: frame(state, &current, mailbox.id).await?,
        chrome: current.chrome,
        saved: if draft.id == 0 {
            "Nothing is kept until you write or attach something.".to_owned()
        } else {
            format!(
                "Kept on the server; last saved {}",
                format_utc(draft.updated_at)
            )
        },
        draft,
        attachments,
        chips: feedback.chips,
        errors: feedback.errors,
        sensitive_choices: CHOICES
            .iter()
            .map(|(law, words)| (law.as_str(), *words))
            .collect(),
        part2_exceptions: &PART2_EXCEPTIONS,
        opt_out_exceptions: &OPT_OUT_EXCEPTIONS,
        sensitive_error: feedback.sensitive_error,
        opt_out: feedback.opt_out,
        review_key: crate::sensitive_send::review_key(&feedback.review),
        review: feedback.review,
        subject_visible: state.config.outer_subject == OuterSubject::Visible,
        max_mb: state.config.max_message_mb,
        allowed: allowed.join(", "),
        patient_errors: feedback.patient_errors,
        sexes: &SEXES,
        purposes: &PURPOSES,
    })
}

async fn page(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<ComposePage> {
    let (mailbox, draft) = own_draft(&state, &current, id).await?;
    render(&state, current, mailbox, draft, Feedback::default()).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DraftForm {
    to: String,
    cc: String,
    subject: String,
    body: String,
    /// "send" when the form's Send button was used without scripts.
    action: String,
    /// The patient block; absent from a form without one (it is then kept as saved).
    patient_given: Option<String>,
    patient_family: Option<String>,
    patient_birth_date: Option<String>,
    patient_sex: Option<String>,
    patient_id: Option<String>,
    patient_purpose: Option<String>,
    /// Present when the form shows the "send as an XDM package" box, whose own field
    /// (`as_xdm`) is absent when it is not ticked.
    xdm_box: Option<String>,
    as_xdm: Option<String>,
    /// Present when the form shows the "Sensitive" section.
    sensitive_box: Option<String>,
    sensitivity: String,
    consent_attachment: String,
    consent_scope: String,
    no_consent_basis: String,
    no_consent_reason: String,
    opt_out_exception: String,
    /// Sent by the button that confirms the recipients of a sensitive record.
    reviewed: String,
}

impl DraftForm {
    /// `draft` with what this form has typed in it (the parts the form carries).
    fn apply(&self, draft: &mut Draft) {
        draft.to = self.to.clone();
        draft.cc = self.cc.clone();
        draft.subject = self.subject.clone();
        draft.body = self.body.clone();
        if let Some(patient) = self.patient() {
            draft.patient = patient;
        }
        if self.xdm_box.is_some() {
            draft.as_xdm = self.as_xdm.is_some();
        }
        if let Some(sensitive) = self.sensitive() {
            draft.sensitive = sensitive;
        }
    }

    /// The "Sensitive" section as chosen and typed, when the form has one.
    fn sensitive(&self) -> Option<drafts::Sensitive> {
        self.sensitive_box.as_ref()?;
        Some(drafts::Sensitive {
            law: Law::parse(self.sensitivity.trim()),
            consent_attachment_id: self.consent_attachment.trim().parse().ok(),
            consent_scope: self.consent_scope.trim().to_owned(),
            no_consent_basis: self.no_consent_basis.trim().to_owned(),
            no_consent_reason: self.no_consent_reason.trim().to_owned(),
            opt_out_exception: self.opt_out_exception.trim().to_owned(),
        })
    }

    /// The patient block as typed, when the form has one.
    fn patient(&self) -> Option<DraftPatient> {
        let fields = [
            &self.patient_given,
            &self.patient_family,
            &self.patient_birth_date,
            &self.patient_sex,
            &self.patient_id,
            &self.patient_purpose,
        ];
        if fields.iter().all(|f| f.is_none()) {
            return None;
        }
        let typed = |f: &Option<String>| f.clone().unwrap_or_default();
        Some(DraftPatient {
            given: typed(&self.patient_given),
            family: typed(&self.patient_family),
            birth_date: typed(&self.patient_birth_date),
            sex: typed(&self.patient_sex),
            id: typed(&self.patient_id),
            purpose: self
                .patient_purpose
                .clone()
                .unwrap_or_else(|| "treatment".into()),
        })
    }
}

#[derive(Deserialize)]
struct BeaconQuery {
    /// Sent by the page as it closes (`navigator.sendBeacon`, no custom headers).
    beacon: Option<String>,
}

/// Longest body text accepted (the form layer also bounds the request).
const BODY_LIMIT: usize = 60 * 1024;

/// Why the form holds more than a draft may (then nothing of it is stored), if it does.
fn over_limits(form: &DraftForm) -> Option<String> {
    if form.body.len() > BODY_LIMIT || form.subject.chars().count() > 500 {
        return Some(
            "The text is longer than a message may be here (60 KB); attach a document instead."
                .into(),
        );
    }
    // the patient block is kept as typed, within bounds that no real patient block
    // reaches; it is checked field by field when the draft is sent
    if form.patient().is_some_and(|p| {
        [
            &p.given,
            &p.family,
            &p.birth_date,
            &p.sex,
            &p.id,
            &p.purpose,
        ]
        .iter()
        .any(|f| f.len() > 1000)
    }) {
        return Some("A patient field is longer than it may be here.".into());
    }
    let limit = crate::sensitive_send::MAX_TEXT;
    if form.sensitive().is_some_and(|s| {
        [&s.consent_scope, &s.no_consent_reason]
            .iter()
            .any(|t| t.chars().count() > limit)
    }) {
        return Some(format!(
            "The consent's scope and the reason are kept to {limit} characters each."
        ));
    }
    None
}

/// A form over the limits, refused before anything is stored: the page's script (or
/// a beacon) gets the sentence; a page gets the compose page again with what was
/// typed and the sentence.
async fn refuse_over_limits(
    state: &AppState,
    current: CurrentUser,
    mailbox: Mailbox,
    mut draft: Draft,
    form: &DraftForm,
    background: bool,
    why: String,
) -> AppResult<Response> {
    if background {
        return Err(AppError::BadRequest(why));
    }
    form.apply(&mut draft);
    let feedback = Feedback {
        errors: vec![why],
        ..Feedback::default()
    };
    let page = render(state, current, mailbox, draft, feedback).await?;
    Ok((StatusCode::BAD_REQUEST, page).into_response())
}

/// Stores the form in draft `id` (checked with [`over_limits`] before); the time saved.
async fn store_form(state: &AppState, id: i64, form: &DraftForm) -> AppResult<i64> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    drafts::save(
        &mut tx,
        id,
        &form.to,
        &form.cc,
        form.subject.trim_end(),
        &form.body,
        now,
    )
    .await?;
    if let Some(patient) = form.patient() {
        drafts::save_patient(&mut tx, id, &patient).await?;
    }
    if form.xdm_box.is_some() {
        drafts::save_as_xdm(&mut tx, id, form.as_xdm.is_some()).await?;
    }
    if let Some(sensitive) = form.sensitive() {
        drafts::save_sensitive(&mut tx, id, &sensitive).await?;
    }
    tx.commit().await?;
    Ok(now)
}

/// Saves the draft: the page's script calls this as the user types (answering with
/// the time saved); a form post without scripts saves (or sends) and comes back.
async fn save(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    current: CurrentUser,
    Path(id): Path<i64>,
    Query(q): Query<BeaconQuery>,
    axum::Form(form): axum::Form<DraftForm>,
) -> AppResult<Response> {
    let (mailbox, draft) = own_draft(&state, &current, id).await?;
    let background = headers.contains_key("x-autosave") || q.beacon.is_some();
    if let Some(why) = over_limits(&form) {
        return refuse_over_limits(&state, current, mailbox, draft, &form, background, why).await;
    }
    store_and_answer(&state, ip, current, mailbox, draft.id, background, &form).await
}

async fn send(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
    axum::Form(form): axum::Form<DraftForm>,
) -> AppResult<Response> {
    let (mailbox, draft) = own_draft(&state, &current, id).await?;
    if let Some(why) = over_limits(&form) {
        return refuse_over_limits(&state, current, mailbox, draft, &form, false, why).await;
    }
    store_form(&state, draft.id, &form).await?;
    send_draft(&state, current, ip, mailbox, draft.id, &form.reviewed).await
}

/// Addresses typed in a field: separated by commas, semicolons or spaces; a
/// "Name <address>" form keeps the address.
pub fn split_addresses(text: &str) -> Vec<String> {
    text.split([',', ';', '\n'])
        .map(|a| {
            let a = a.trim();
            match (a.rfind('<'), a.rfind('>')) {
                (Some(l), Some(r)) if l < r => a[l + 1..r].trim().to_owned(),
                _ => a.to_owned(),
            }
        })
        .flat_map(|a| a.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|a| !a.is_empty())
        .collect()
}

async fn send_draft(
    state: &AppState,
    current: CurrentUser,
    ip: String,
    mailbox: Mailbox,
    id: i64,
    reviewed: &str,
) -> AppResult<Response> {
    let draft = drafts::get(&state.db, id)
        .await?
        .ok_or(AppError::NotFound)?;
    let to = split_addresses(&draft.to);
    let cc = split_addresses(&draft.cc);
    let now = state.clock.now();
    let mut feedback = Feedback::default();
    let fields = to
        .iter()
        .map(|a| ("to", a))
        .chain(cc.iter().map(|a| ("cc", a)));
    for (field, address) in fields {
        let result = crate::recipients::check(&state.db, &state.discovery, address, now).await?;
        feedback.chips.push(Chip {
            field,
            address: address.clone(),
            ok: result.is_ok(),
            note: result.unwrap_or_else(|e| e),
        });
    }
    // each problem once: a recipient's beside its field, the rest in the list above
    let mut problems = Vec::new();
    if to.is_empty() {
        problems.push("Add at least one recipient in To.".to_owned());
    }
    let refused = feedback.chips.iter().filter(|c| !c.ok).count();
    if refused > 0 {
        let mut marked: Vec<&str> = feedback
            .chips
            .iter()
            .filter(|c| !c.ok)
            .map(|c| if c.field == "to" { "To" } else { "Cc" })
            .collect();
        marked.dedup();
        problems.push(format!(
            "{} cannot receive it: see the {} under {}.",
            if refused == 1 {
                "One recipient".to_owned()
            } else {
                format!("{refused} recipients")
            },
            if refused == 1 { "mark" } else { "marks" },
            marked.join(" and ")
        ));
    }
    // the descriptions only: the files are read once the draft is known to go
    let metas = drafts::attachments(&state.db, id).await?;
    if draft.as_xdm && metas.is_empty() {
        problems.push(
            "There are no attachments to send as an XDM package: attach the documents, or untick the box."
                .to_owned(),
        );
    }
    let sensitive = draft.sensitive.clone();
    if let Some(why) = crate::sensitive_send::consent_problem(&sensitive, &metas) {
        problems.push("The consent needs attention: see Sensitive record.".into());
        feedback.sensitive_error = why;
    }
    let viewer = super::directory::viewer(&current);
    let recipients: Vec<String> = to.iter().chain(&cc).cloned().collect();
    let wanting_xdm = crate::store::directory::wanting_xdm(&state.db, &viewer, &recipients).await?;
    let mut context = match draft.patient.to_context(now) {
        Ok(context) => context,
        Err(errors) => {
            problems.push("The patient details need correcting: see Patient.".to_owned());
            feedback.patient_errors = errors;
            None
        }
    };
    // a reply to a records request carries the request's Direct Context id, by which
    // the requester knows what it answers
    if let Some(id) =
        crate::requests::answered_context(&state.db, mailbox.id, draft.in_reply_to.as_deref())
            .await?
    {
        let block = context
            .take()
            .unwrap_or_else(|| directmail_content::context::Context {
                version: Some("1.1".into()),
                ..Default::default()
            });
        context = Some(directmail_content::context::Context {
            id: Some(id),
            ..block
        });
    }
    if !problems.is_empty() {
        feedback.errors = problems;
        let page = render(state, current, mailbox, draft, feedback).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let normalize = |list: Vec<String>| -> Vec<String> {
        list.into_iter()
            .filter_map(|a| crate::domain::Email::parse(&a).ok())
            .map(|e| e.as_str().to_owned())
            .collect()
    };
    let mut attachments = drafts::attachment_data(&state.db, id).await?;
    let mut disclosure = None;
    if let Some(law) = sensitive.law {
        let all = normalize(recipients.clone());
        let rows = crate::sensitive_send::review(&state.db, &viewer, mailbox.org_id, &all).await?;
        let patients = tokio::task::spawn_blocking({
            let (block, files) = (draft.patient.clone(), attachments.clone());
            move || crate::opt_outs::patients_of(&block, &files)
        })
        .await
        .map_err(anyhow::Error::from)?;
        // the operator's reporting routes are public-health addresses too
        let mut public_health = state.config.public_health_addresses.clone();
        public_health.0.extend(
            crate::store::reporting::list(&state.db)
                .await?
                .into_iter()
                .map(|r| r.address),
        );
        let stop = crate::sensitive_send::opt_out_stop(
            &state.db,
            &public_health,
            &sensitive,
            &patients,
            &rows,
            mailbox.org_id,
        )
        .await?;
        if let Some(stop) = &stop {
            let org = crate::store::orgs::get(&state.db, mailbox.org_id)
                .await?
                .map(|o| o.name)
                .unwrap_or_default();
            feedback.opt_out = stop.sentence(&org);
            if crate::sensitive_send::opt_out_exception(&sensitive).is_none() {
                feedback.errors =
                    vec!["The patient opted out of sharing: see Sensitive record.".into()];
                let page = render(state, current, mailbox, draft, feedback).await?;
                return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
            }
        }
        if reviewed != crate::sensitive_send::review_key(&rows) {
            // shown, not refused: the sender confirms who receives a sensitive record
            feedback.chips.clear();
            feedback.review = rows;
            let page = render(state, current, mailbox, draft, feedback).await?;
            return Ok(page.into_response());
        }
        let labelled = tokio::task::spawn_blocking(move || {
            crate::packaging::label_documents(&mut attachments, law).map(|_| attachments)
        })
        .await
        .map_err(anyhow::Error::from)?;
        attachments = match labelled {
            Ok(files) => files,
            Err(why) => {
                feedback.errors = vec![format!("{why}.")];
                let page = render(state, current, mailbox, draft, feedback).await?;
                return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
            }
        };
        disclosure = Some((law, all, patients.into_iter().next(), stop));
    }
    let message = crate::outbound::Draft {
        to: normalize(to),
        cc: normalize(cc),
        subject: draft.subject.clone(),
        text: draft.body.clone(),
        attachments,
        in_reply_to: draft.in_reply_to.clone(),
        references: draft.refs.clone(),
        context,
        as_xdm: draft.as_xdm || !wanting_xdm.is_empty(),
        sensitive: sensitive
            .law
            .map(|law| crate::sensitivity::Outgoing::new(law, &sensitive.consent_scope)),
        idempotency_key: None,
    };
    let outbound_id = crate::outbound::submit_draft(
        &state.db,
        &mailbox,
        &current.user.display_name,
        &message,
        now,
    )
    .await?;
    let sent_id = messages::sent_copy(&state.db, outbound_id).await?;
    let mut tx = state.db.begin().await?;
    drafts::delete(&mut tx, id).await?;
    // a reply names its parent in In-Reply-To; a forward only in References
    let parent = match (&draft.in_reply_to, &draft.refs) {
        (Some(p), _) => Some((p.as_str(), "reply")),
        (None, Some(r)) => r.split_whitespace().last().map(|p| (p, "forward")),
        _ => None,
    };
    if let Some((parent, action)) = parent {
        let parent = parent.trim_matches(['<', '>']);
        if let Some(original) = messages::by_message_id(&mut tx, mailbox.id, parent).await? {
            messages::record_activity(
                &mut tx,
                original,
                current.user.id,
                &current.user.display_name,
                action,
                now,
            )
            .await?;
        }
    }
    let actor = current.actor(ip);
    audit::append(
        &mut tx,
        now,
        &actor,
        Event::new("message.send", format!("outbound:{outbound_id}")).detail(format!(
            "{} recipient(s), {} attachment(s){}{}",
            message.to.len() + message.cc.len(),
            message.attachments.len(),
            if message.as_xdm && !message.attachments.is_empty() {
                " in an XDM package"
            } else {
                ""
            },
            match sensitive.law {
                Some(law) => format!("; marked sensitive, label: {}", law.as_str()),
                None => String::new(),
            }
        )),
    )
    .await?;
    if let Some((law, recipients, patient, stop)) = disclosure {
        let exception = crate::sensitive_send::opt_out_exception(&sensitive);
        if let (Some(stop), Some(exception)) = (&stop, exception) {
            audit::append(
                &mut tx,
                now,
                &actor,
                Event::new("opt_out.exception", format!("outbound:{outbound_id}")).detail(
                    format!(
                        "opt-out entry {} ; sent outside the organization under the exception: {exception}",
                        stop.entry.id
                    ),
                ),
            )
            .await?;
        }
        let purpose = crate::patient::PURPOSES
            .iter()
            .find(|(key, _)| *key == draft.patient.purpose)
            .map(|(_, words)| *words)
            .unwrap_or("Treatment");
        crate::store::disclosures::insert(
            &mut tx,
            &crate::store::disclosures::Disclosure {
                law: law.as_str().to_owned(),
                patient: patient.as_ref().map(patient_words).unwrap_or_default(),
                recipients: recipients.join(", "),
                purpose: match (stop.is_some(), exception) {
                    (true, Some(exception)) => {
                        format!("{purpose}; patient opted out, sent under: {exception}")
                    }
                    _ => purpose.to_owned(),
                },
                consent: crate::sensitive_send::consent_words(&sensitive, &metas),
                ..sent_disclosure(&current, &mailbox, outbound_id, now)
            },
        )
        .await?;
    }
    tx.commit().await?;
    state.wake_sender.notify_one();
    flash(
        &current.session,
        "Sent. Delivery is shown below for each recipient.",
    )
    .await?;
    Ok(match sent_id {
        Some(m) => Redirect::to(&format!("/mail/messages/{m}")),
        None => Redirect::to(&format!("/mail/{}/sent", mailbox.id)),
    }
    .into_response())
}

/// A disclosure of a restricted record the signed-in user sent from `mailbox` as
/// outbound message `outbound_id` at `now`: who, from where and when. The caller adds
/// what was disclosed, to whom and why.
pub(super) fn sent_disclosure(
    current: &CurrentUser,
    mailbox: &Mailbox,
    outbound_id: i64,
    now: i64,
) -> crate::store::disclosures::Disclosure {
    crate::store::disclosures::Disclosure {
        org_id: Some(mailbox.org_id),
        mailbox_id: Some(mailbox.id),
        mailbox_address: mailbox.address.clone(),
        user_id: Some(current.user.id),
        user_name: current.user.display_name.clone(),
        outbound_id: Some(outbound_id),
        sent_at: now,
        ..Default::default()
    }
}

/// A patient as the disclosures report names them: "Ana Lopez, born 1970-03-12,
/// 2.16.840.1.113883.19.5:12345".
fn patient_words(p: &crate::store::opt_outs::MatchInput) -> String {
    let name = format!("{} {}", p.given.trim(), p.family.trim());
    let mut parts = vec![name.trim().to_owned()];
    if !p.birth_date.is_empty() {
        parts.push(format!("born {}", p.birth_date));
    }
    if let Some((authority, id)) = &p.identifier {
        parts.push(format!("{authority}:{id}"));
    }
    parts.retain(|s| !s.is_empty());
    parts.join(", ")
}

async fn discard(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let (mailbox, draft) = own_draft(&state, &current, id).await?;
    let mut tx = state.db.begin().await?;
    drafts::delete(&mut tx, draft.id).await?;
    tx.commit().await?;
    flash(&current.session, "Draft discarded.").await?;
    Ok(Redirect::to(&format!("/mail/{}/drafts", mailbox.id)).into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "mail/attachments.html")]
struct AttachmentList {
    draft_id: i64,
    attachments: Vec<(AttachmentMeta, String)>,
    /// Why files were refused, one sentence each.
    refused: Vec<String>,
}

/// Adds files to a draft. Each is checked on the server; refused files are named
/// with the reason, and the others are kept. Answers with the attachment list
/// (for the page's script) or goes back to the draft (without scripts).
async fn upload(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    current: CurrentUser,
    Path(id): Path<i64>,
    multipart: Multipart,
) -> AppResult<Response> {
    let (_, draft) = own_draft(&state, &current, id).await?;
    upload_into(&state, ip, &headers, &current, draft.id, multipart).await
}

/// Checks and stores each uploaded file of the draft `draft_id` (already known to be
/// the user's own).
async fn upload_into(
    state: &AppState,
    ip: String,
    headers: &HeaderMap,
    current: &CurrentUser,
    draft_id: i64,
    mut multipart: Multipart,
) -> AppResult<Response> {
    let limit = message_limit(&state.config);
    let too_large = |name: &str| {
        format!(
            "“{name}” is too large: the attachments of one message may add up to {} MB; nothing was attached.",
            state.config.max_message_mb
        )
    };
    let mut refused = Vec::new();
    let mut added = Vec::new();
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                refused.push(format!(
                    "The upload did not complete ({e}); nothing more was attached. The limit is {} MB per message.",
                    state.config.max_message_mb
                ));
                break;
            }
        };
        if field.name() != Some("file") {
            continue;
        }
        let name = field.file_name().unwrap_or("attachment").to_owned();
        let declared = field.content_type().map(str::to_owned);
        let used = {
            let mut conn = state.db.pool.acquire().await?;
            drafts::attached_bytes(&mut conn, draft_id).await? as usize
        };
        let room = limit.saturating_sub(used);
        let data = match read_capped(&mut field, room).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                refused.push(too_large(name.trim()));
                continue;
            }
            Err(e) => {
                refused.push(format!(
                    "“{name}” did not arrive whole ({e}); nothing was attached."
                ));
                break;
            }
        };
        if name.trim().is_empty() && data.is_empty() {
            continue;
        }
        // the check runs before the write lock is taken: a large PDF holds up no one
        let content_type = match check_file(
            &name,
            declared.as_deref(),
            data.clone(),
            &policy(state, room),
        )
        .await?
        {
            Ok(t) => t,
            Err(why) => {
                refused.push(why);
                continue;
            }
        };
        let _turn = state.db.write_turn().await;
        let mut tx = state.db.begin().await?;
        // another upload to the same draft may have landed meanwhile
        let used = drafts::attached_bytes(&mut tx, draft_id).await? as usize;
        if used + data.len() > limit {
            tx.rollback().await?;
            refused.push(too_large(name.trim()));
            continue;
        }
        let stored_name = name.trim().to_owned();
        drafts::add_attachment(&mut tx, draft_id, &stored_name, content_type, &data).await?;
        audit::append(
            &mut tx,
            state.clock.now(),
            &current.actor(ip.clone()),
            Event::new("draft.attach", format!("draft:{}", draft_id)).detail(format!(
                "{} bytes, {}",
                data.len(),
                content_type
            )),
        )
        .await?;
        tx.commit().await?;
        added.push(stored_name);
    }
    if headers.contains_key("x-upload") {
        let status = if refused.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let list = attachment_list(state, draft_id, refused).await?;
        return Ok((status, list).into_response());
    }
    let mut text = Vec::new();
    if !added.is_empty() {
        text.push(format!("Attached: {}.", added.join(", ")));
    }
    text.extend(refused);
    flash(&current.session, text.join(" ")).await?;
    Ok(Redirect::to(&format!("/mail/drafts/{}", draft_id)).into_response())
}

async fn attachment_list(
    state: &AppState,
    draft_id: i64,
    refused: Vec<String>,
) -> AppResult<AttachmentList> {
    Ok(AttachmentList {
        draft_id,
        attachments: drafts::attachments(&state.db, draft_id)
            .await?
            .into_iter()
            .map(|a| {
                let size = human_size(a.size as usize);
                (a, size)
            })
            .collect(),
        refused,
    })
}

async fn download(
    State(state): State<AppState>,
    current: CurrentUser,
    Path((id, aid)): Path<(i64, i64)>,
) -> AppResult<Response> {
    let (_, draft) = own_draft(&state, &current, id).await?;
    let (name, _, data) = drafts::attachment(&state.db, draft.id, aid)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(file_response(&header_filename(&name), data, Show::Download))
}

async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    current: CurrentUser,
    Path((id, aid)): Path<(i64, i64)>,
) -> AppResult<Response> {
    let (_, draft) = own_draft(&state, &current, id).await?;
    let mut tx = state.db.begin().await?;
    let gone = drafts::remove_attachment(&mut tx, draft.id, aid).await?;
    tx.commit().await?;
    if !gone {
        return Err(AppError::NotFound);
    }
    if headers.contains_key("hx-request") {
        return Ok(attachment_list(&state, draft.id, Vec::new())
            .await?
            .into_response());
    }
    flash(&current.session, "Attachment removed.").await?;
    Ok(Redirect::to(&format!("/mail/drafts/{}", draft.id)).into_response())
}

#[derive(Deserialize)]
struct AddressQuery {
    address: String,
}

/// Whether a message can be sent to one address, for the chip the page shows.
async fn check_address(
    State(state): State<AppState>,
    _current: CurrentUser,
    Query(q): Query<AddressQuery>,
) -> AppResult<axum::Json<serde_json::Value>> {
    let address = split_addresses(&q.address)
        .into_iter()
        .next()
        .unwrap_or_default();
    // the check as the address is typed gives up after a few seconds: a domain that
    // answers nothing that fast has published no Direct certificate we can use now
    // (sending checks again, fully)
    let check = crate::recipients::check(&state.db, &state.discovery, &address, state.clock.now());
    let seconds = state.config.address_check_seconds;
    let result = match tokio::time::timeout(std::time::Duration::from_secs(seconds), check).await {
        Ok(result) => result?,
        Err(_) => Err(format!(
            "{} (No Direct certificate was found for it within {seconds} second{}.)",
            crate::recipients::NOT_DIRECT,
            if seconds == 1 { "" } else { "s" },
        )),
    };
    Ok(axum::Json(match result {
        Ok(how) => serde_json::json!({ "address": address, "ok": true, "note": how }),
        Err(why) => serde_json::json!({ "address": address, "ok": false, "note": why }),
    }))
}

#[derive(Deserialize)]
struct SuggestQuery {
    q: String,
}

/// Addresses for the To/Cc autocomplete: the provider directory first (this HISP's
/// listed mailboxes, organization contacts and the user's address book included),
/// then the user's recent recipients.
async fn suggest(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(q): Query<SuggestQuery>,
) -> AppResult<axum::Json<Vec<Suggestion>>> {
    const MOST: usize = 8;
    let q = q.q.trim();
    if q.chars().count() < 2 {
        return Ok(axum::Json(Vec::new()));
    }
    let viewer = super::directory::viewer(&current);
    let mut out = crate::store::directory::suggest(&state.db, &viewer, q, MOST).await?;
    for address in messages::recent_recipients(&state.db, current.user.id, q, MOST).await? {
        if out.len() < MOST && !out.iter().any(|o| o.address.eq_ignore_ascii_case(&address)) {
            out.push(Suggestion {
                name: String::new(),
                address,
                detail: "recent".into(),
                has_certificate: false,
            });
        }
    }
    Ok(axum::Json(out))
}
