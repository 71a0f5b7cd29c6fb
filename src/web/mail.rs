//! Reading mail in the browser: a mailbox's folders (newest first, keyset paged, unread
//! counts) and a message with its trust verdict in plain words, its delivery status
//! when sent from here, and its attachments. Only mailboxes assigned to the user.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mail_parser::{MessageParser, MimeHeaders as _};
use serde::Deserialize;

use super::session::{Chrome, CurrentUser};
use super::{AppError, AppResult, AppState, ClientIp};
use crate::audit::{self, Event};
use crate::clock::format_utc;
use crate::store::inbound::{self, MessageRow};
use crate::store::mailboxes::{self, Mailbox};
use crate::store::outbound;

const PAGE: i64 = 50;
const FOLDERS: [(&str, &str); 2] = [("inbox", "Inbox"), ("sent", "Sent")];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/mail/{mailbox}/{folder}", get(folder))
        .route("/mail/messages/{id}", get(message))
        .route("/mail/messages/{id}/attachments/{n}", get(attachment))
}

/// One of the user's mailboxes, or 404.
async fn own_mailbox(state: &AppState, current: &CurrentUser, id: i64) -> AppResult<Mailbox> {
    mailboxes::of_user(&state.db, current.user.id)
        .await?
        .into_iter()
        .find(|m| m.id == id)
        .ok_or(AppError::NotFound)
}

/// The trust badge in words (never colour alone).
fn badge(row: &MessageRow) -> String {
    match row.trust_code.as_str() {
        "trusted" => "Trusted".into(),
        "sent" => "Sent by you".into(),
        "notice" => "Notice".into(),
        other => format!("Not trusted ({other})"),
    }
}

pub struct Row {
    pub row: MessageRow,
    pub when: String,
    pub badge: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "mail/folder.html")]
struct FolderPage {
    chrome: Chrome,
    mailbox: Mailbox,
    folder: String,
    folder_label: String,
    /// (folder, label, unread)
    folders: Vec<(String, String, i64)>,
    rows: Vec<Row>,
    next_before: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PageQuery {
    before: String,
}

async fn folder(
    State(state): State<AppState>,
    current: CurrentUser,
    Path((mailbox_id, folder)): Path<(i64, String)>,
    Query(q): Query<PageQuery>,
) -> AppResult<FolderPage> {
    let mailbox = own_mailbox(&state, &current, mailbox_id).await?;
    let Some((folder, label)) = FOLDERS.iter().find(|(f, _)| *f == folder) else {
        return Err(AppError::NotFound);
    };
    let unread = inbound::unread_counts(&state.db, mailbox.id).await?;
    let mut rows = inbound::page(
        &state.db,
        mailbox.id,
        folder,
        q.before.trim().parse().ok(),
        PAGE + 1,
    )
    .await?;
    let next_before = if rows.len() as i64 > PAGE {
        rows.truncate(PAGE as usize);
        rows.last().map(|r| r.id.to_string()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(FolderPage {
        chrome: current.chrome,
        folders: FOLDERS
            .iter()
            .map(|(f, l)| {
                let n = unread
                    .iter()
                    .find(|(x, _)| x == f)
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                ((*f).to_owned(), (*l).to_owned(), n)
            })
            .collect(),
        mailbox,
        folder: (*folder).to_owned(),
        folder_label: (*label).to_owned(),
        rows: rows
            .into_iter()
            .map(|row| Row {
                when: format_utc(row.received_at),
                badge: badge(&row),
                row,
            })
            .collect(),
        next_before,
    })
}

/// The message, if it is in one of the user's mailboxes.
async fn own_message(
    state: &AppState,
    current: &CurrentUser,
    id: i64,
) -> AppResult<(Mailbox, inbound::StoredMessage)> {
    let message = inbound::message(&state.db, id)
        .await?
        .ok_or(AppError::NotFound)?;
    let mailbox = own_mailbox(state, current, message.row.mailbox_id).await?;
    Ok((mailbox, message))
}

#[derive(Template, WebTemplate)]
#[template(path = "mail/message.html")]
struct MessagePage {
    chrome: Chrome,
    id: i64,
    mailbox: Mailbox,
    folder: String,
    subject: String,
    from: String,
    to: String,
    cc: String,
    when: String,
    trusted: bool,
    trust_title: String,
    trust_sentence: String,
    signer: String,
    issuer: String,
    revocation: String,
    text: String,
    /// (index, name, type, size)
    attachments: Vec<(usize, String, String, usize)>,
    /// (recipient, status, detail)
    delivery: Vec<(String, String, String)>,
}

fn content_type(part: &mail_parser::MessagePart<'_>) -> String {
    part.content_type()
        .map(|c| match c.subtype() {
            Some(sub) => format!("{}/{}", c.ctype(), sub),
            None => c.ctype().to_owned(),
        })
        .unwrap_or_else(|| "application/octet-stream".into())
}

async fn message(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<MessagePage> {
    let (mailbox, message) = own_message(&state, &current, id).await?;
    let parsed = MessageParser::default().parse(&message.raw);
    let list = |a: Option<&mail_parser::Address<'_>>| -> String {
        a.map(|a| {
            a.iter()
                .filter_map(|x| x.address())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
    };
    let (to, cc, text, attachments) = match &parsed {
        Some(p) => (
            list(p.to()),
            list(p.cc()),
            p.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
            p.attachments()
                .enumerate()
                .map(|(n, a)| {
                    (
                        n,
                        a.attachment_name().unwrap_or("attachment").to_owned(),
                        content_type(a),
                        a.contents().len(),
                    )
                })
                .collect(),
        ),
        None => (String::new(), String::new(), String::new(), Vec::new()),
    };
    let delivery = match message.outbound_id {
        Some(oid) => outbound::statuses(&state.db, oid).await?,
        None => Vec::new(),
    };
    let now = state.clock.now();
    let mut tx = state.db.pool.begin().await?;
    if !message.row.is_read {
        inbound::set_read(&mut tx, id, true).await?;
    }
    audit::append(
        &mut tx,
        now,
        &current.actor(ip),
        Event::new("message.read", format!("message:{id}")),
    )
    .await?;
    tx.commit().await?;
    let r = message.row;
    let trusted = r.trust_code == "trusted";
    Ok(MessagePage {
        chrome: current.chrome,
        id,
        folder: message.folder,
        mailbox,
        trust_title: match r.trust_code.as_str() {
            "trusted" => "Trusted.".into(),
            "sent" => "Sent from this mailbox.".into(),
            "notice" => "Notice.".into(),
            _ => "Not trusted.".into(),
        },
        trusted,
        trust_sentence: r.trust_sentence,
        signer: r.signer_subject.unwrap_or_default(),
        issuer: message.signer_issuer.unwrap_or_default(),
        revocation: match r.revocation.as_str() {
            "checked" => "checked: not revoked".into(),
            "no-distribution-point" => "the certificate names no revocation list".into(),
            other => other.to_owned(),
        },
        subject: r.subject,
        from: r.from_addr,
        to,
        cc,
        when: format_utc(r.received_at),
        text,
        attachments,
        delivery,
    })
}

/// An attachment, always as a download (inline viewing, with a sandbox, comes with
/// the webmail pages); audited.
async fn attachment(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((id, n)): Path<(i64, usize)>,
) -> AppResult<Response> {
    let (_, message) = own_message(&state, &current, id).await?;
    let parsed = MessageParser::default()
        .parse(&message.raw)
        .ok_or(AppError::NotFound)?;
    let part = parsed.attachments().nth(n).ok_or(AppError::NotFound)?;
    let name: String = part
        .attachment_name()
        .unwrap_or("attachment")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' '))
        .collect();
    audit::record(
        &state.db,
        state.clock.now(),
        &current.actor(ip),
        Event::new("attachment.download", format!("message:{id}/{n}")),
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        part.contents().to_vec(),
    )
        .into_response())
}
