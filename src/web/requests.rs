//! Requesting records over Direct: the "Request records" form (from the mailbox's
//! menu, or from a message's patient), the mailbox's requests page (open, overdue,
//! answered, cancelled; remind and cancel), the request card on a received request
//! with "Reply with documents", and "Report to public health" on a message that
//! carries a case report. The rules are in [`crate::requests`] and
//! [`crate::reporting`]; only members of the mailbox see or change its requests.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::compose::{check_file, read_capped};
use super::mail::{Frame, frame, own_mailbox};
use super::message::own_message;
use super::session::{Chrome, CurrentUser, flash};
use super::{AppError, AppResult, AppState, ClientIp};
use crate::audit::{self, Event};
use crate::clock::format_utc;
use crate::outbound::Attachment;
use crate::patient::{DraftPatient, FieldError, PURPOSES, SEXES};
use crate::requests::{self, MAX_AUTHORIZATION_BYTES, NEEDS, RequestInput, URGENCIES};
use crate::store::requests::{self as store, Filter, RequestRow};

/// Requests on one page of the list.
const PAGE: i64 = 50;

pub fn routes() -> Router<AppState> {
    // the form's body is held to the CSRF layer's multipart limit (1 MB); an
    // authorization over MAX_AUTHORIZATION_BYTES within it gets its own sentence
    Router::new()
        .route("/mail/{mailbox}/requests", get(list_page))
        .route("/mail/{mailbox}/requests/new", get(new_page).post(submit))
        .route("/mail/requests/new", get(new_from_message))
        .route("/mail/requests/{id}/cancel", post(cancel))
        .route("/mail/requests/{id}/remind", post(remind))
        .route(
            "/mail/messages/{id}/reply-with-documents",
            post(reply_with_documents),
        )
        .route("/mail/messages/{id}/report", post(report))
}

// ---------------------------------------------------------------------------------
// the form

#[derive(Template, WebTemplate)]
#[template(path = "mail/request_new.html")]
struct RequestPage {
    chrome: Chrome,
    frame: Frame,
    input: RequestInput,
    /// Each refused field and why, shown beside it.
    errors: Vec<FieldError>,
    /// The authorization was accepted, but must be chosen again (a browser cannot
    /// keep a file across a refused form).
    choose_again: bool,
    needs: &'static [(&'static str, &'static str)],
    urgencies: &'static [(&'static str, &'static str)],
    sexes: &'static [(&'static str, &'static str)],
    purposes: &'static [(&'static str, &'static str)],
    max_kb: usize,
}

impl RequestPage {
    fn error(&self, name: &str) -> &str {
        self.errors
            .iter()
            .find(|(field, _)| *field == name)
            .map(|(_, why)| why.as_str())
            .unwrap_or("")
    }

    /// Why the patient field `name` was refused ("" when it was not).
    fn patient_error(&self, name: &str) -> &str {
        self.error(name)
    }

    fn patient_sex(&self) -> &str {
        &self.input.patient.sex
    }

    fn patient_value(&self, name: &str) -> &str {
        self.input.patient.field(name)
    }

    fn is_needed(&self, key: &str) -> bool {
        self.input.needed.iter().any(|n| n == key)
    }
}

async fn render(
    state: &AppState,
    current: CurrentUser,
    mailbox_id: i64,
    input: RequestInput,
    errors: Vec<FieldError>,
    choose_again: bool,
) -> AppResult<RequestPage> {
    Ok(RequestPage {
        frame: frame(state, &current, mailbox_id).await?,
        chrome: current.chrome,
        input,
        errors,
        choose_again,
        needs: &NEEDS,
        urgencies: &URGENCIES,
        sexes: &SEXES,
        purposes: &PURPOSES,
        max_kb: MAX_AUTHORIZATION_BYTES / 1024,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NewQuery {
    /// A message of the user's whose patient the request is about.
    message: Option<i64>,
}

/// The empty form, or one about the patient of `?message=`.
async fn new_page(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(mailbox_id): Path<i64>,
    Query(q): Query<NewQuery>,
) -> AppResult<RequestPage> {
    own_mailbox(&state, &current, mailbox_id).await?;
    let mut input = RequestInput {
        urgency: "routine".into(),
        ..RequestInput::default()
    };
    if let Some(id) = q.message {
        let (_, message) = own_message(&state, &current, id).await?;
        if let Some(patient) = &message.patient {
            input.patient = DraftPatient::of(patient);
        }
    }
    render(&state, current, mailbox_id, input, Vec::new(), false).await
}

/// "Request records for this patient" from the patient's messages: the form in the
/// mailbox of that message.
async fn new_from_message(
    State(state): State<AppState>,
    current: CurrentUser,
    Query(q): Query<NewQuery>,
) -> AppResult<Response> {
    let id = q.message.ok_or(AppError::NotFound)?;
    let (mailbox, _) = own_message(&state, &current, id).await?;
    Ok(Redirect::to(&format!("/mail/{}/requests/new?message={id}", mailbox.id)).into_response())
}

/// Reads the form: its text fields, and the authorization file checked (a real PDF,
/// within the limit). A file refused is a field error.
async fn read_request(
    state: &AppState,
    mut multipart: Multipart,
) -> AppResult<(RequestInput, Vec<FieldError>)> {
    let mut input = RequestInput::default();
    let mut errors: Vec<FieldError> = Vec::new();
    let unreadable = || {
        AppError::BadRequest(
            "The form could not be read; go back, choose the file again and send it.".into(),
        )
    };
    while let Some(mut field) = multipart.next_field().await.map_err(|_| unreadable())? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "authorization" {
            let file_name = field.file_name().unwrap_or_default().to_owned();
            let declared = field.content_type().map(str::to_owned);
            let data = read_capped(&mut field, MAX_AUTHORIZATION_BYTES)
                .await
                .map_err(|_| unreadable())?;
            if file_name.is_empty() && data.as_ref().is_some_and(|d| d.is_empty()) {
                continue; // no file chosen
            }
            let Some(data) = data else {
                errors.push((
                    "authorization",
                    format!(
                        "The authorization file is larger than {} KB; scan it at a lower resolution or in black and white and attach it again.",
                        MAX_AUTHORIZATION_BYTES / 1024
                    ),
                ));
                continue;
            };
            let policy = super::compose::policy(state, MAX_AUTHORIZATION_BYTES);
            let shown = if file_name.is_empty() {
                "authorization.pdf".to_owned()
            } else {
                file_name.clone()
            };
            match check_file(&shown, declared.as_deref(), data.clone(), &policy).await? {
                Ok("application/pdf") => {
                    input.authorization = Some(Attachment {
                        name: shown,
                        content_type: "application/pdf".into(),
                        data: data.to_vec(),
                    })
                }
                Ok(_) => errors.push((
                    "authorization",
                    format!("The authorization must be a PDF; {shown} is not one."),
                )),
                Err(why) => errors.push(("authorization", why)),
            }
            continue;
        }
        let text = read_capped(&mut field, 64 * 1024)
            .await
            .map_err(|_| unreadable())?
            .ok_or_else(|| AppError::BadRequest("A field of the form is too long.".into()))?;
        let text = String::from_utf8_lossy(&text).into_owned();
        let p = &mut input.patient;
        match name.as_str() {
            "to" => input.to = text,
            "patient_given" => p.given = text,
            "patient_family" => p.family = text,
            "patient_birth_date" => p.birth_date = text,
            "patient_sex" => p.sex = text,
            "patient_id" => p.id = text,
            "patient_purpose" => p.purpose = text,
            "needed" if !input.needed.contains(&text) => input.needed.push(text),
            "date_from" => input.date_from = text,
            "date_to" => input.date_to = text,
            "urgency" => input.urgency = text,
            "part2" => input.part2 = true,
            "note" => input.note = text,
            _ => {}
        }
    }
    Ok((input, errors))
}

async fn submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(mailbox_id): Path<i64>,
    multipart: Multipart,
) -> AppResult<Response> {
    let mailbox = own_mailbox(&state, &current, mailbox_id).await?;
    let (input, mut errors) = read_request(&state, multipart).await?;
    let now = state.clock.now();
    let context = match input.check(now) {
        Ok(context) => Some(context),
        Err(mut more) => {
            // a refused file is already said; "attach it" would say it twice
            more.retain(|(f, _)| *f != "authorization" || !errors.iter().any(|(e, _)| e == f));
            errors.append(&mut more);
            None
        }
    };
    if errors.is_empty() {
        let to = input.to.trim().to_owned();
        if let Err(why) = crate::recipients::check(&state.db, &state.discovery, &to, now).await? {
            errors.push(("to", why));
        }
    }
    let Some(context) = context.filter(|_| errors.is_empty()) else {
        let choose_again = input.authorization.is_some();
        let page = render(&state, current, mailbox.id, input, errors, choose_again).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    };
    let sent = requests::send(&state.db, &mailbox, &current.user, &input, context, now).await?;
    let mut tx = state.db.begin().await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new(
            "records.request",
            format!("record-request:{}", sent.request_id),
        )
        .detail(format!(
            "outbound:{}; to {}; {}{}",
            sent.outbound_id,
            input.to.trim(),
            input.needed.join(","),
            if input.authorization.is_some() {
                "; authorization attached"
            } else {
                ""
            }
        )),
    )
    .await?;
    tx.commit().await?;
    state.wake_sender.notify_one();
    flash(
        &current.session,
        "Request sent. It is listed under Record requests until the documents arrive.",
    )
    .await?;
    Ok(match sent.sent_message_id {
        Some(m) => Redirect::to(&format!("/mail/messages/{m}")),
        None => Redirect::to(&format!("/mail/{}/requests", mailbox.id)),
    }
    .into_response())
}

// ---------------------------------------------------------------------------------
// the requests page

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListQuery {
    /// open (the default), overdue, answered or cancelled.
    show: String,
    before: Option<i64>,
}

pub struct Line {
    pub row: RequestRow,
    pub sent: String,
    pub needed: String,
    pub overdue: bool,
    /// When it was answered, cancelled or last reminded, in words.
    pub note: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "mail/requests.html")]
struct ListPage {
    chrome: Chrome,
    frame: Frame,
    show: &'static str,
    /// (key, label, count) of each list.
    tabs: Vec<(&'static str, &'static str, i64)>,
    lines: Vec<Line>,
    next: String,
    overdue_days: i64,
}

async fn list_page(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(mailbox_id): Path<i64>,
    Query(q): Query<ListQuery>,
) -> AppResult<ListPage> {
    let frame = frame(&state, &current, mailbox_id).await?;
    let (show, filter) = match q.show.as_str() {
        "overdue" => ("overdue", Filter::Overdue),
        "answered" => ("answered", Filter::Answered),
        "cancelled" => ("cancelled", Filter::Cancelled),
        _ => ("open", Filter::Open),
    };
    let days = state.config.record_request_overdue_days;
    let cutoff = state.clock.now() - days * 86_400;
    let found = store::list(&state.db, mailbox_id, filter, cutoff, q.before, PAGE + 1).await?;
    let more = found.len() as i64 > PAGE;
    let lines: Vec<Line> = found
        .into_iter()
        .take(PAGE as usize)
        .map(|row| {
            let needed = row
                .needed
                .split(',')
                .filter_map(|n| NEEDS.iter().find(|(k, _)| *k == n).map(|(_, w)| *w))
                .collect::<Vec<_>>()
                .join(", ");
            let note = match (row.answered_at, row.cancelled_at, row.reminded_at) {
                (Some(at), _, _) => format!("Answered {}", format_utc(at)),
                (_, Some(at), _) => format!("Cancelled {}", format_utc(at)),
                (_, _, Some(at)) => format!(
                    "Reminded {} time{}, last {}",
                    row.reminders,
                    if row.reminders == 1 { "" } else { "s" },
                    format_utc(at)
                ),
                _ => String::new(),
            };
            Line {
                sent: format_utc(row.created_at),
                overdue: row.status == "open" && row.created_at < cutoff,
                needed,
                note,
                row,
            }
        })
        .collect();
    let next = match (more, lines.last()) {
        (true, Some(last)) => format!(
            "/mail/{mailbox_id}/requests?show={show}&before={}",
            last.row.id
        ),
        _ => String::new(),
    };
    let [open, overdue, answered, cancelled] = store::counts(&state.db, mailbox_id, cutoff).await?;
    Ok(ListPage {
        chrome: current.chrome,
        frame,
        show,
        tabs: vec![
            ("open", "Open", open),
            ("overdue", "Overdue", overdue),
            ("answered", "Answered", answered),
            ("cancelled", "Cancelled", cancelled),
        ],
        lines,
        next,
        overdue_days: days,
    })
}

/// The request, when it belongs to one of the user's mailboxes (else 404).
async fn own_request(
    state: &AppState,
    current: &CurrentUser,
    id: i64,
) -> AppResult<(crate::store::mailboxes::Mailbox, RequestRow)> {
    let request = store::get(&state.db, id).await?.ok_or(AppError::NotFound)?;
    let mailbox = own_mailbox(state, current, request.mailbox_id).await?;
    Ok((mailbox, request))
}

async fn cancel(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let (mailbox, request) = own_request(&state, &current, id).await?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let done = store::cancel(&mut tx, request.id, now).await?;
    if done {
        audit::append(
            &mut tx,
            now,
            &current.actor(ip),
            Event::new("records.request.cancel", format!("record-request:{id}")),
        )
        .await?;
    }
    tx.commit().await?;
    flash(
        &current.session,
        if done {
            "Request cancelled. Documents that still arrive are filed in the Inbox as usual."
        } else {
            "Only an open request can be cancelled."
        },
    )
    .await?;
    Ok(Redirect::to(&format!("/mail/{}/requests", mailbox.id)).into_response())
}

async fn remind(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let (mailbox, request) = own_request(&state, &current, id).await?;
    let back = format!("/mail/{}/requests?show=overdue", mailbox.id);
    if request.status != "open" {
        flash(&current.session, "Only an open request can be reminded.").await?;
        return Ok(Redirect::to(&back).into_response());
    }
    let now = state.clock.now();
    let outbound_id = requests::remind(
        &state.db,
        &mailbox,
        &current.user.display_name,
        &request,
        now,
    )
    .await?;
    let mut tx = state.db.begin().await?;
    store::reminded(&mut tx, request.id, now).await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("records.request.remind", format!("record-request:{id}"))
            .detail(format!("outbound:{outbound_id}")),
    )
    .await?;
    tx.commit().await?;
    state.wake_sender.notify_one();
    flash(
        &current.session,
        format!("Reminder sent to {}.", request.recipient),
    )
    .await?;
    Ok(Redirect::to(&back).into_response())
}

// ---------------------------------------------------------------------------------
// on the message page

/// The card of a received records request.
pub struct RequestCard {
    pub from: String,
}

/// What the message page offers beyond reading: the request card on a received
/// records request, and the public-health routes its case reports can go on.
pub struct Extras {
    pub request: Option<RequestCard>,
    /// On the Sent copy of a request of this mailbox: its state in words ("open",
    /// "overdue", "answered", "cancelled") and the requests page.
    pub sent_request: Option<(String, String)>,
    /// (route id, "Illinois: ecr@aims.example") of each route carrying a document type
    /// the message has.
    pub report_routes: Vec<(i64, String)>,
}

pub async fn extras(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    message: &crate::store::inbound::StoredMessage,
) -> AppResult<Extras> {
    let request = (message.context_type == requests::CONTEXT_TYPE && message.folder != "sent")
        .then(|| RequestCard {
            from: message.row.from_addr.clone(),
        });
    let codes: Vec<String> = crate::store::documents::of_message(&mut *conn, message.row.id)
        .await?
        .into_iter()
        .map(|d| d.code)
        .collect();
    let report_routes = crate::store::reporting::offered(&mut *conn, &codes).await?;
    let sent_request = match message.folder.as_str() {
        "sent" => store::by_sent_copy(&mut *conn, message.row.id)
            .await?
            .map(|r| {
                let cutoff = state.clock.now() - state.config.record_request_overdue_days * 86_400;
                let words = if r.status == "open" && r.created_at < cutoff {
                    "overdue".to_owned()
                } else {
                    r.status.clone()
                };
                (words, format!("/mail/{}/requests", r.mailbox_id))
            }),
        _ => None,
    };
    Ok(Extras {
        request,
        sent_request,
        report_routes,
    })
}

/// "Reply with documents" on a received records request: a reply draft to the
/// requester, about the request's patient, whose Direct Context will carry the
/// request's id.
async fn reply_with_documents(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let (mailbox, message) = own_message(&state, &current, id).await?;
    let draft =
        super::compose::draft_from(&state, &current, ip, &mailbox, &message, "reply").await?;
    flash(
        &current.session,
        "Attach the documents asked for, then send. The reply names the request, so the requester's list shows it answered.",
    )
    .await?;
    Ok(Redirect::to(&format!("/mail/drafts/{draft}")).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ReportForm {
    route: i64,
}

/// "Report to public health": the message's case reports go on the chosen route.
/// The HIE opt-out list is not consulted (see [`crate::reporting`]).
async fn report(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
    axum::Form(form): axum::Form<ReportForm>,
) -> AppResult<Response> {
    let (mailbox, message) = own_message(&state, &current, id).await?;
    let back = format!("/mail/messages/{id}");
    let Some(route) = crate::store::reporting::get(&state.db, form.route).await? else {
        flash(
            &current.session,
            "Choose a reporting route from the list; ask your operator to add one if there is none.",
        )
        .await?;
        return Ok(Redirect::to(&back).into_response());
    };
    let now = state.clock.now();
    let Some(reported) = crate::reporting::report(
        &state.db,
        &mailbox,
        &current.user.display_name,
        &message,
        &route,
        now,
    )
    .await?
    else {
        flash(
            &current.session,
            format!(
                "This message carries no document that goes to {} (that route takes {}).",
                route.jurisdiction,
                route.document_types.join(", ")
            ),
        )
        .await?;
        return Ok(Redirect::to(&back).into_response());
    };
    let mut tx = state.db.begin().await?;
    audit::append(
        &mut tx,
        now,
        &current.actor(ip.clone()),
        Event::new("public_health.report", format!("message:{id}")).detail(format!(
            "outbound:{}; route {} ({}); {} document(s)",
            reported.outbound_id, route.jurisdiction, route.address, reported.documents
        )),
    )
    .await?;
    if let Some(law) = message.row.restriction {
        crate::store::disclosures::insert(
            &mut tx,
            &crate::store::disclosures::Disclosure {
                law: law.as_str().to_owned(),
                patient: message
                    .patient
                    .as_ref()
                    .map(|p| p.label().to_owned())
                    .unwrap_or_default(),
                recipients: route.address.clone(),
                purpose: "Public-health reporting".into(),
                ..super::compose::sent_disclosure(&current, &mailbox, reported.outbound_id, now)
            },
        )
        .await?;
    }
    tx.commit().await?;
    state.wake_sender.notify_one();
    flash(
        &current.session,
        format!(
            "Reported to {} ({}). The Reportability Response will link back to this report.",
            route.jurisdiction, route.address
        ),
    )
    .await?;
    Ok(match reported.sent_message_id {
        Some(m) => Redirect::to(&format!("/mail/messages/{m}")),
        None => Redirect::to(&back),
    }
    .into_response())
}
