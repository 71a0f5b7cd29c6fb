//! Reading a message: headers, the trust verdict in plain words with its details,
//! delivery per recipient when sent from here, the body (text with links, or HTML
//! sanitized in a sandboxed frame), attachments (PDFs and images inline, the rest as
//! downloads; XDM packages as cards and clinical documents with a link to the viewer,
//! see [`super::clinical`]), a print view, and the actions: reply, reply all, forward,
//! mark unread, move. Every read and download is audited, through [`record_reading`].

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use mail_parser::{Message, MessageParser, MimeHeaders as _};
use serde::Deserialize;

use super::clinical::{Clinical, Open};
use super::mail::{Frame, apply_action, frame_on, own_mailbox};
use super::session::{Chrome, CurrentUser, flash};
use super::{AppError, AppResult, AppState, ClientIp};
use crate::audit::{self, Actor, Event};
use crate::clock::format_utc;
use crate::store::inbound::{self, StoredMessage};
use crate::store::mailboxes::Mailbox;
use crate::store::messages::{self as store, activity_label, status_word};
use crate::store::outbound;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/mail/messages/{id}", get(message))
        .route("/mail/messages/{id}/body", get(html_body))
        .route("/mail/messages/{id}/print", get(print))
        .route("/mail/messages/{id}/act", post(act))
        .route("/mail/messages/{id}/delivery", get(delivery_panel))
        .route("/mail/messages/{id}/attachments/{n}", get(attachment))
}

/// What of a message a reader was given. Each is one kind of audit entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// The message: its headers and text, and the list of attachments.
    Message,
    /// The HTML body (the message page's frame, or opened on its own).
    HtmlBody,
    /// The print view.
    Print,
    /// Attachment `n`, shown in the browser.
    AttachmentView(usize),
    /// Attachment `n`, downloaded.
    AttachmentDownload(usize),
    /// Document `k` of the XDM package that attachment `n` is, shown in the browser
    /// (a PDF or an image, or text in a page).
    PackageView(usize, usize),
    /// Document `k` of the XDM package that attachment `n` is, downloaded.
    PackageDownload(usize, usize),
    /// A clinical document in the viewer (attachment `n`, or document `k` of the
    /// package in it): the page, with its header summary.
    ClinicalDocument(usize, Option<usize>),
    /// The same document rendered, in the viewer's sandboxed frame.
    ClinicalFrame(usize, Option<usize>),
    /// The file of its `nonXMLBody`: shown in the browser (`true`) or downloaded.
    ClinicalFile(usize, Option<usize>, bool),
}

/// Where a reading was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Webmail,
    Api,
}

/// Records one read of message content in the audit log, committed before this
/// returns. Every route that returns a message's content or an attachment (these
/// pages and the API) records it through here, once it knows what it will return.
pub async fn record_reading(
    state: &AppState,
    actor: &Actor,
    id: i64,
    reading: Reading,
    via: Via,
) -> sqlx::Result<()> {
    // every access to a restricted record is audited with its label
    // (docs/sensitive-records.md)
    let label: Option<String> =
        sqlx::query_scalar("select restriction from messages where id = $1")
            .bind(id)
            .fetch_optional(&state.db.pool)
            .await?;
    let label = label.as_deref().and_then(crate::sensitivity::Law::parse);
    record_labelled_reading(state, actor, id, label, reading, via).await
}

/// [`record_reading`] for a caller that has the message's row, and with it its label.
pub async fn record_labelled_reading(
    state: &AppState,
    actor: &Actor,
    id: i64,
    label: Option<crate::sensitivity::Law>,
    reading: Reading,
    via: Via,
) -> sqlx::Result<()> {
    let (action, object, what) = match reading {
        Reading::Message => ("message.read", format!("message:{id}"), None),
        Reading::HtmlBody => ("message.read", format!("message:{id}"), Some("html body")),
        Reading::Print => ("message.print", format!("message:{id}"), None),
        Reading::AttachmentView(n) => ("attachment.view", format!("message:{id}/{n}"), None),
        Reading::AttachmentDownload(n) => {
            ("attachment.download", format!("message:{id}/{n}"), None)
        }
        Reading::PackageView(n, k) => ("attachment.view", format!("message:{id}/{n}/{k}"), None),
        Reading::PackageDownload(n, k) => {
            ("attachment.download", format!("message:{id}/{n}/{k}"), None)
        }
        Reading::ClinicalDocument(n, k) => (
            "attachment.view",
            place_object(id, n, k),
            Some("clinical document"),
        ),
        Reading::ClinicalFrame(n, k) => (
            "attachment.view",
            place_object(id, n, k),
            Some("clinical document, rendered"),
        ),
        Reading::ClinicalFile(n, k, shown) => (
            if shown {
                "attachment.view"
            } else {
                "attachment.download"
            },
            place_object(id, n, k),
            Some("clinical document, its file"),
        ),
    };
    let mut detail = match (via, what) {
        (Via::Webmail, None) => String::new(),
        (Via::Webmail, Some(what)) => what.to_owned(),
        (Via::Api, None) => "api".to_owned(),
        (Via::Api, Some(what)) => format!("api, {what}"),
    };
    if let Some(label) = label {
        if !detail.is_empty() {
            detail.push_str("; ");
        }
        detail.push_str("label: ");
        detail.push_str(label.as_str());
    }
    let event = Event::new(action, object).detail(detail);
    audit::record(&state.db, state.clock.now(), actor, event).await?;
    Ok(())
}

/// `message:{id}/{n}`, or `message:{id}/{n}/{k}` for document `k` of a package.
fn place_object(id: i64, n: usize, k: Option<usize>) -> String {
    match k {
        None => format!("message:{id}/{n}"),
        Some(k) => format!("message:{id}/{n}/{k}"),
    }
}

/// The message, if it is in one of the user's mailboxes.
pub async fn own_message(
    state: &AppState,
    current: &CurrentUser,
    id: i64,
) -> AppResult<(Mailbox, StoredMessage)> {
    let message = inbound::message(&state.db, id)
        .await?
        .ok_or(AppError::NotFound)?;
    let mailbox = own_mailbox(state, current, message.row.mailbox_id).await?;
    Ok((mailbox, message))
}

/// A part's declared type, lower case (`application/octet-stream` when absent).
pub fn content_type_of(part: &mail_parser::MessagePart<'_>) -> String {
    part.content_type()
        .map(|c| match c.subtype() {
            Some(sub) => format!("{}/{}", c.ctype(), sub),
            None => c.ctype().to_owned(),
        })
        .unwrap_or_else(|| "application/octet-stream".into())
        .to_ascii_lowercase()
}

/// How an attachment is offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Show {
    /// Opens in the browser's PDF viewer.
    Pdf,
    /// Shown in the page.
    Image,
    /// Download only.
    Download,
}

/// How an attachment is shown, from its bytes (never its declared type) and the
/// checks made on arrival: what fails them is download-only.
fn show_as(data: &[u8], refusal: Option<&str>) -> Show {
    match (directmail_content::inline_type(data), refusal) {
        (_, Some(_)) | (None, _) => Show::Download,
        (Some("application/pdf"), None) => Show::Pdf,
        (Some(_), None) => Show::Image,
    }
}

/// The message as received: loaded with it, or now, when the message page loaded it
/// without (`inbound::message_for_page`) and a kept value turned out not to read.
async fn raw_of(state: &AppState, message: &inbound::StoredMessage) -> AppResult<Vec<u8>> {
    if !message.raw.is_empty() {
        return Ok(message.raw.clone());
    }
    Ok(inbound::message(&state.db, message.row.id)
        .await?
        .ok_or(AppError::NotFound)?
        .raw)
}

/// The message's attachment checks ([`store::attachment_checks`]): stored on
/// arrival, or made now (off the async threads) for a message filed before.
async fn attachment_checks(
    state: &AppState,
    message: &inbound::StoredMessage,
) -> AppResult<String> {
    if let Some(checks) = &message.attachment_checks {
        return Ok(checks.clone());
    }
    let raw = raw_of(state, message).await?;
    let checks = tokio::task::spawn_blocking(move || store::attachment_checks(&raw))
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
    store::set_attachment_checks(&state.db, message.row.id, &checks).await?;
    Ok(checks)
}

/// What the page says about the message's clinical attachments
/// ([`super::clinical::inspect`]): made on the first view (XDM packages are inflated,
/// hashed and their PDFs checked, off the async threads) and kept with the message,
/// whose content never changes; a kept value that no longer reads is made again.
async fn clinical_cards(
    state: &AppState,
    message: &inbound::StoredMessage,
) -> AppResult<Vec<Option<super::clinical::Clinical>>> {
    if let Some(cards) = message
        .clinical_cards
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
    {
        return Ok(cards);
    }
    let raw = raw_of(state, message).await?;
    let cards = tokio::task::spawn_blocking(move || super::clinical::inspect(&raw)).await?;
    let json = serde_json::to_string(&cards).map_err(|e| AppError::Internal(e.into()))?;
    store::set_clinical_cards(&state.db, message.row.id, &json).await?;
    Ok(cards)
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct AttachmentView {
    pub n: usize,
    pub name: String,
    pub content_type: String,
    pub size: String,
    pub show: Show,
    /// Why a file a browser could show is download-only.
    pub refusal: Option<String>,
    /// A clinical document (a link to the viewer) or an XDM package (its card); filled
    /// in on the message page only.
    #[serde(skip)]
    pub clinical: Option<Clinical>,
}

/// What the message page reads from a message's MIME: made on the first view (off the
/// async threads) and kept with the message (`messages.page_facts`), whose content
/// never changes, so a 20 MB message is not loaded and parsed again on every view. A
/// kept value of another version, or one that does not read, is made again.
#[derive(serde::Serialize, serde::Deserialize)]
struct PageFacts {
    version: u32,
    to: String,
    cc: String,
    html: bool,
    text: String,
    attachments: Vec<AttachmentView>,
}

/// Raise when [`PageFacts`] or what goes into it changes: kept facts are made again.
const PAGE_FACTS_VERSION: u32 = 1;

impl PageFacts {
    fn of(raw: &[u8], checks: &str) -> PageFacts {
        let parsed = MessageParser::default().parse(raw);
        let p = parsed.as_ref();
        PageFacts {
            version: PAGE_FACTS_VERSION,
            to: p.map(|p| addresses(p.to())).unwrap_or_default(),
            cc: p.map(|p| addresses(p.cc())).unwrap_or_default(),
            html: p.is_some_and(has_html),
            text: p.map(crate::filing::text_of).unwrap_or_default(),
            attachments: p.map(|p| attachments(p, checks)).unwrap_or_default(),
        }
    }
}

async fn page_facts(
    state: &AppState,
    message: &inbound::StoredMessage,
    checks: &str,
) -> AppResult<PageFacts> {
    if let Some(facts) = message
        .page_facts
        .as_deref()
        .and_then(|json| serde_json::from_str::<PageFacts>(json).ok())
        .filter(|f| f.version == PAGE_FACTS_VERSION)
    {
        return Ok(facts);
    }
    let raw = raw_of(state, message).await?;
    let checks = checks.to_owned();
    let facts = tokio::task::spawn_blocking(move || PageFacts::of(&raw, &checks)).await?;
    let json = serde_json::to_string(&facts).map_err(|e| AppError::Internal(e.into()))?;
    store::set_page_facts(&state.db, message.row.id, &json).await?;
    Ok(facts)
}

/// "12 KB", "3.4 MB".
pub fn human_size(bytes: usize) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else if bytes < 1024 * 1024 {
        format!("{} KB", bytes.div_ceil(1024))
    } else {
        format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
    }
}

fn attachments(parsed: &Message<'_>, checks: &str) -> Vec<AttachmentView> {
    // the Direct Context part is shown as the patient banner, not as a file
    let context = crate::patient::context_of(parsed).map(|(part, _)| part);
    parsed
        .attachments()
        .enumerate()
        .filter(|(_, a)| !context.is_some_and(|c| std::ptr::eq(*a, c)))
        .map(|(n, a)| {
            let refusal = store::attachment_refusal(checks, n);
            AttachmentView {
                n,
                name: a.attachment_name().unwrap_or("attachment").to_owned(),
                content_type: content_type_of(a),
                size: human_size(a.contents().len()),
                show: show_as(a.contents(), refusal.as_deref()),
                refusal,
                clinical: None,
            }
        })
        .collect()
}

fn addresses(a: Option<&mail_parser::Address<'_>>) -> String {
    a.map(|a| {
        a.iter()
            .filter_map(|x| {
                let addr = x.address()?;
                Some(match x.name() {
                    Some(n) if !n.trim().is_empty() => format!("{} <{addr}>", n.trim()),
                    _ => addr.to_owned(),
                })
            })
            .collect::<Vec<_>>()
            .join(", ")
    })
    .unwrap_or_default()
}

/// The sender as stored at delivery: the one reading of the signed From
/// (`directmail_smime::read_originator`), never a second parse of the raw message.
fn sender_line(row: &inbound::MessageRow) -> String {
    if row.from_name.is_empty() {
        row.from_addr.clone()
    } else {
        format!("{} <{}>", row.from_name, row.from_addr)
    }
}

/// Whether the message's main body is HTML (shown sanitized in a frame).
fn has_html(parsed: &Message<'_>) -> bool {
    parsed.html_body_count() > 0
        && parsed
            .html_part(0)
            .is_some_and(|p| content_type_of(p) == "text/html")
}

/// One delivery line on a Sent message.
pub struct DeliveryLine {
    pub recipient: String,
    /// The stored state (`dispatched`), and in a word ("delivered").
    pub state: String,
    pub status: String,
    /// What happened, in a sentence: "Delivered to Dr. Ruiz's HISP".
    pub sentence: String,
    /// When the state last changed: "at" or "since" it, and the time (ISO 8601 for
    /// the browser to show in local time, and as UTC).
    pub since: &'static str,
    pub iso: String,
    pub utc: String,
    pub failed: bool,
    pub detail: String,
}

/// The delivery panel of a Sent message (`mail/delivery.html`): on the message page,
/// and on its own for the page to poll until every recipient's HISP has answered.
#[derive(Template, WebTemplate)]
#[template(path = "mail/delivery.html")]
pub struct DeliveryPanel {
    pub id: i64,
    pub delivery: Vec<DeliveryLine>,
    pub any_failed: bool,
    /// Some recipient's delivery may still change: the panel asks again.
    pub polling: bool,
}

impl DeliveryPanel {
    /// The panel of outbound message `outbound_id`, shown on message `id`.
    pub async fn load(state: &AppState, id: i64, outbound_id: i64) -> AppResult<DeliveryPanel> {
        let lines = outbound::status_lines(&state.db, outbound_id).await?;
        let addresses: Vec<&str> = lines.iter().map(|l| l.recipient.as_str()).collect();
        let names = crate::store::directory::names_for(&state.db, &addresses).await?;
        let delivery: Vec<DeliveryLine> = lines
            .into_iter()
            .map(|l| {
                let whose = match names.get(&l.recipient.to_ascii_lowercase()) {
                    Some(name) => format!("{name}\u{2019}s"),
                    None => "their".to_owned(),
                };
                let sentence = match l.state.as_str() {
                    "queued" if l.detail.is_empty() => "Waiting to be sent".to_owned(),
                    "queued" => "Waiting to be sent again".to_owned(),
                    "sent" => format!("Sent to {whose} HISP, waiting for it to confirm receipt"),
                    "processed" => format!("Delivered to {whose} HISP"),
                    "dispatched" => {
                        format!("Delivered to {whose} system, as their HISP confirmed")
                    }
                    "failed" => "Not delivered".to_owned(),
                    other => other.to_owned(),
                };
                DeliveryLine {
                    failed: l.state == "failed",
                    status: status_word(&l.state).to_owned(),
                    since: if store::is_final(&l.state) {
                        "at"
                    } else {
                        "since"
                    },
                    iso: crate::clock::format_rfc3339(l.updated_at),
                    utc: format_utc(l.updated_at),
                    sentence,
                    state: l.state,
                    recipient: l.recipient,
                    detail: l.detail,
                }
            })
            .collect();
        Ok(DeliveryPanel {
            id,
            any_failed: delivery.iter().any(|d| d.failed),
            polling: delivery.iter().any(|d| !store::is_final(&d.state)),
            delivery,
        })
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "mail/message.html")]
struct MessagePage {
    /// The restricted-record banner, when it is one.
    restriction: Option<RestrictionBanner>,
    chrome: Chrome,
    frame: Frame,
    id: i64,
    folder: String,
    subject: String,
    from: String,
    to: String,
    cc: String,
    when: String,
    when_iso: String,
    /// The banner's style: `ok` (trusted, or sent from here), `test` (trusted through
    /// a development or test CA), `warn` (anything else).
    trust_style: &'static str,
    trust_title: String,
    trust_sentence: String,
    /// The signer's certificate, for its details panel.
    certificate: Option<CertificateDetails>,
    /// Linkified, escaped text (when the body is not HTML).
    text_html: String,
    html: bool,
    attachments: Vec<AttachmentView>,
    /// Each recipient's delivery, on a message sent from here.
    delivery: Option<DeliveryPanel>,
    /// "Read by Ana Ruiz at …" lines, on shared mailboxes.
    activity: Vec<String>,
    /// Folders to move to: (key, label).
    targets: Vec<(String, String)>,
    /// The patient the message is about, read when it was filed.
    patient: Option<PatientBanner>,
    /// The records-request card, and the public-health routes it can be reported on.
    extras: super::requests::Extras,
}

impl MessagePage {
    /// Some recipient's delivery failed: the page offers "Edit and resend".
    fn any_failed(&self) -> bool {
        self.delivery.as_ref().is_some_and(|d| d.any_failed)
    }
}

/// The signer's certificate as the message page's details panel shows it.
pub struct CertificateDetails {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    /// "2026-01-01 00:00 UTC to 2027-01-01 00:00 UTC", when known.
    pub validity: String,
    /// The SHA-256 fingerprint in pairs ("AB:CD:…"), when known.
    pub fingerprint: String,
    /// Signer, issuer, anchor: the path it was trusted along.
    pub chain: Vec<String>,
    /// Revocation, in a sentence with when it was checked.
    pub revocation: String,
}

impl CertificateDetails {
    fn of(
        subject: String,
        issuer: String,
        facts: Option<&crate::store::inbound::SignerFacts>,
        revocation: &str,
        received_at: i64,
    ) -> CertificateDetails {
        let mut chain = vec![subject.clone()];
        if !issuer.is_empty() && issuer != subject {
            chain.push(issuer.clone());
        }
        if let Some(anchor) = facts.and_then(|f| f.anchor.clone())
            && !chain.contains(&anchor)
        {
            chain.push(anchor);
        }
        let when = format_utc(received_at);
        CertificateDetails {
            serial: facts.map(|f| f.serial.clone()).unwrap_or_default(),
            validity: facts
                .map(|f| {
                    format!(
                        "{} to {}",
                        format_utc(f.not_before),
                        format_utc(f.not_after)
                    )
                })
                .unwrap_or_default(),
            fingerprint: facts
                .map(|f| {
                    f.fingerprint
                        .as_bytes()
                        .chunks(2)
                        .map(|pair| String::from_utf8_lossy(pair).to_ascii_uppercase())
                        .collect::<Vec<_>>()
                        .join(":")
                })
                .unwrap_or_default(),
            revocation: match revocation {
                "checked" => format!(
                    "Not revoked: its revocation list was checked when the message arrived ({when})."
                ),
                "no-distribution-point" => {
                    "The certificate names no revocation list, so there was nothing to check."
                        .into()
                }
                "not-reached" => {
                    "Not checked: the message was judged before revocation was reached.".into()
                }
                other => match other.strip_prefix("not checked: ") {
                    Some(why) => {
                        format!("Could not be checked when the message arrived ({when}): {why}.")
                    }
                    None => other.to_owned(),
                },
            },
            subject,
            issuer,
            chain,
        }
    }
}

/// The banner of a restricted record (docs/sensitive-records.md), on the message page
/// and its print view: which rules apply, what they ask of the reader, and why the
/// message is restricted.
pub struct RestrictionBanner {
    pub heading: &'static str,
    pub statement: &'static str,
    pub reasons: Vec<String>,
}

impl RestrictionBanner {
    pub fn of(message: &inbound::StoredMessage) -> Option<RestrictionBanner> {
        let law = message.row.restriction?;
        Some(RestrictionBanner {
            heading: law.words(),
            statement: law.statement(),
            reasons: message.restriction_reasons.clone(),
        })
    }
}

/// The patient banner on the message page, in words.
pub struct PatientBanner {
    pub name: String,
    pub birth_date: String,
    pub sex: String,
    pub id: String,
    /// "from the Direct Context", "from the XDM package", "from the clinical document".
    pub source: &'static str,
    /// "Messages about this patient".
    pub link: String,
}

impl PatientBanner {
    fn of(p: &crate::patient::MessagePatient) -> PatientBanner {
        PatientBanner {
            name: p.name.clone(),
            birth_date: p.birth_date_words(),
            sex: p.sex.clone(),
            id: p.id.clone(),
            source: p.source.words(),
            link: super::patient::link(p),
        }
    }
}

async fn message(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<MessagePage> {
    let mut conn = state.db.pool.acquire().await?;
    let message = inbound::message_for_page(&mut *conn, id)
        .await?
        .ok_or(AppError::NotFound)?;
    // the frame also checks that the mailbox is the user's, so it comes first
    let mut frame = frame_on(&mut conn, &current, message.row.mailbox_id).await?;
    drop(conn);
    let checks = attachment_checks(&state, &message).await?;
    let PageFacts {
        to,
        cc,
        html,
        text,
        attachments: mut attachment_list,
        ..
    } = page_facts(&state, &message, &checks).await?;
    // made on the first view even without attachments, so later views need no raw
    let cards = clinical_cards(&state, &message).await?;
    for (view, clinical) in attachment_list.iter_mut().zip(cards) {
        view.clinical = clinical;
    }
    let from = sender_line(&message.row);
    let delivery = match message.outbound_id {
        Some(oid) => Some(DeliveryPanel::load(&state, id, oid).await?),
        None => None,
    };
    record_labelled_reading(
        &state,
        &current.actor(ip),
        id,
        message.row.restriction,
        Reading::Message,
        Via::Webmail,
    )
    .await?;
    if !message.row.is_read {
        let _turn = state.db.write_turn().await;
        let mut tx = state.db.begin().await?;
        inbound::set_read(&mut tx, id, true).await?;
        store::record_activity(
            &mut tx,
            id,
            current.user.id,
            &current.user.display_name,
            "read",
            state.clock.now(),
        )
        .await?;
        tx.commit().await?;
        frame.count_read(&message.folder);
    }
    let mut conn = state.db.pool.acquire().await?;
    let activity = store::activity(&mut *conn, id)
        .await?
        .into_iter()
        .map(|(name, action, at)| {
            format!("{} by {name}, {}", activity_label(&action), format_utc(at))
        })
        .collect();
    let targets = frame
        .folders
        .iter()
        .filter(|f| !matches!(f.key.as_str(), "drafts" | "sent") && f.key != message.folder)
        .map(|f| (f.key.clone(), f.label.clone()))
        .collect();
    let patient = message.patient.as_ref().map(PatientBanner::of);
    let restriction = RestrictionBanner::of(&message);
    let extras = super::requests::extras(&state, &mut conn, &message).await?;
    drop(conn);
    let r = message.row;
    let test = r.trust_code == "trusted" && r.test_anchor;
    let trust_title: String = match r.trust_code.as_str() {
        "trusted" if test => "Test certificate \u{2014} not for real patient data.".into(),
        "trusted" => "Trusted.".into(),
        "sent" => "Sent from this mailbox.".into(),
        "notice" => "Notice from this system.".into(),
        "retrieved" => "Retrieved from a FHIR server by a member of this mailbox.".into(),
        _ => "Not trusted.".into(),
    };
    let trust_style = match r.trust_code.as_str() {
        "trusted" if test => "test",
        "trusted" | "sent" | "retrieved" => "ok",
        _ => "warn",
    };
    let certificate = r.signer_subject.clone().map(|subject| {
        CertificateDetails::of(
            subject,
            message.signer_issuer.clone().unwrap_or_default(),
            message.signer_facts.as_ref(),
            &r.revocation,
            r.received_at,
        )
    });
    // a Sent copy's stored sentence is its title: say it once
    let trust_sentence = if r.trust_sentence == trust_title {
        String::new()
    } else {
        r.trust_sentence
    };
    Ok(MessagePage {
        restriction,
        patient,
        extras,
        chrome: current.chrome,
        frame,
        id,
        folder: message.folder,
        trust_title,
        trust_style,
        trust_sentence,
        certificate,
        subject: if r.subject.is_empty() {
            "(no subject)".into()
        } else {
            r.subject
        },
        from,
        to,
        cc,
        when: format_utc(r.received_at),
        when_iso: crate::clock::format_rfc3339(r.received_at),
        text_html: directmail_content::linkify_text(&text),
        html,
        attachments: attachment_list,
        delivery,
        activity,
        targets,
    })
}

/// The delivery panel alone, which the Sent message's page polls until every
/// recipient's HISP has answered (a background request: it does not keep the session
/// alive). Nothing of the message's content is in it.
async fn delivery_panel(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<DeliveryPanel> {
    let (mailbox_id, outbound_id) = store::mailbox_and_outbound(&state.db, id)
        .await?
        .ok_or(AppError::NotFound)?;
    super::mail::own_mailbox(&state, &current, mailbox_id).await?;
    let outbound_id = outbound_id.ok_or(AppError::NotFound)?;
    DeliveryPanel::load(&state, id, outbound_id).await
}

/// The HTML body, sanitized, for the sandboxed frame on the message page: no
/// scripts, forms or remote images, and a CSP that forbids them again.
async fn html_body(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let (_, message) = own_message(&state, &current, id).await?;
    let parsed = MessageParser::default()
        .parse(&message.raw)
        .ok_or(AppError::NotFound)?;
    let html = parsed.body_html(0).ok_or(AppError::NotFound)?;
    record_reading(
        &state,
        &current.actor(ip),
        id,
        Reading::HtmlBody,
        Via::Webmail,
    )
    .await?;
    let clean = directmail_content::sanitize_html_report(&html);
    let mut note = String::new();
    if clean.blocked_images > 0 || clean.removed_forms > 0 {
        note = format!(
            "<p style=\"font:14px sans-serif;background:#fff4e5;padding:6px\">For your safety, {} remote image(s) and {} form(s) in this message were blocked.</p>",
            clean.blocked_images, clean.removed_forms
        );
    }
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><base target=\"_blank\"></head><body>{note}{}</body></html>",
        clean.html
    );
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'",
        ),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    Ok(response)
}

#[derive(Template, WebTemplate)]
#[template(path = "mail/print.html")]
struct PrintPage {
    restriction: Option<RestrictionBanner>,
    subject: String,
    from: String,
    to: String,
    cc: String,
    when: String,
    trust: String,
    text: String,
    attachments: Vec<AttachmentView>,
}

async fn print(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
    Query(purpose): Query<super::purpose::PurposeForm>,
) -> AppResult<Response> {
    let (_, message) = own_message(&state, &current, id).await?;
    let access = super::purpose::Access::Print;
    if let Some(prompt) =
        super::purpose::require(&state, &current, ip.clone(), &message, access, &purpose).await?
    {
        return Ok(prompt);
    }
    let checks = attachment_checks(&state, &message).await?;
    let parsed = MessageParser::default().parse(&message.raw);
    record_reading(&state, &current.actor(ip), id, Reading::Print, Via::Webmail).await?;
    let r = &message.row;
    Ok(PrintPage {
        restriction: RestrictionBanner::of(&message),
        subject: r.subject.clone(),
        from: sender_line(r),
        to: parsed
            .as_ref()
            .map(|p| addresses(p.to()))
            .unwrap_or_default(),
        cc: parsed
            .as_ref()
            .map(|p| addresses(p.cc()))
            .unwrap_or_default(),
        when: format_utc(r.received_at),
        trust: r.trust_sentence.clone(),
        text: parsed
            .as_ref()
            .map(crate::filing::text_of)
            .unwrap_or_default(),
        attachments: parsed
            .as_ref()
            .map(|p| attachments(p, &checks))
            .unwrap_or_default(),
    }
    .into_response())
}

/// Actions from the message page: reply, reply all, forward, edit and resend (each
/// opens a draft), mark unread, move, archive, trash.
async fn act(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path(id): Path<i64>,
    axum::Form(form): axum::Form<ActForm>,
) -> AppResult<Response> {
    let (mailbox, message) = own_message(&state, &current, id).await?;
    if form.action == "forward"
        && let Some(prompt) = super::purpose::require(
            &state,
            &current,
            ip.clone(),
            &message,
            super::purpose::Access::Forward,
            &form.purpose,
        )
        .await?
    {
        return Ok(prompt);
    }
    match form.action.as_str() {
        "reply" | "reply-all" | "forward" | "resend" => {
            let draft =
                super::compose::draft_from(&state, &current, ip, &mailbox, &message, &form.action)
                    .await?;
            Ok(Redirect::to(&format!("/mail/drafts/{draft}")).into_response())
        }
        "unread" | "archive" | "trash" | "move" => {
            let text = apply_action(
                &state,
                &current,
                ip,
                &mailbox,
                &[id],
                &form.action,
                &form.folder,
            )
            .await?;
            if form.action == "unread" {
                let mut tx = state.db.begin().await?;
                store::record_activity(
                    &mut tx,
                    id,
                    current.user.id,
                    &current.user.display_name,
                    "unread",
                    state.clock.now(),
                )
                .await?;
                tx.commit().await?;
            }
            flash(&current.session, text).await?;
            Ok(Redirect::to(&format!("/mail/{}/{}", mailbox.id, message.folder)).into_response())
        }
        _ => Err(AppError::BadRequest("That action is not known.".into())),
    }
}

#[derive(Deserialize)]
struct ActForm {
    action: String,
    #[serde(default)]
    folder: String,
    /// For forwarding a restricted record ([`super::purpose`]).
    #[serde(flatten)]
    purpose: super::purpose::PurposeForm,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AttachmentQuery {
    inline: String,
    /// For a restricted record's attachment ([`super::purpose`]).
    #[serde(flatten)]
    purpose: super::purpose::PurposeForm,
}

/// A name safe in a `Content-Disposition` header.
pub fn header_filename(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' '))
        .collect();
    if clean.trim().is_empty() {
        "attachment".into()
    } else {
        clean
    }
}

/// An attachment: PDFs and images inline when asked (`?inline=1`) from a sandboxed
/// response of the type its bytes show; everything else as a download. Audited.
async fn attachment(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((id, n)): Path<(i64, usize)>,
    Query(q): Query<AttachmentQuery>,
) -> AppResult<Response> {
    let (_, message) = own_message(&state, &current, id).await?;
    let access = super::purpose::Access::Download(n);
    if let Some(prompt) =
        super::purpose::require(&state, &current, ip.clone(), &message, access, &q.purpose).await?
    {
        return Ok(prompt);
    }
    let parsed = MessageParser::default()
        .parse(&message.raw)
        .ok_or(AppError::NotFound)?;
    let part = parsed.attachments().nth(n).ok_or(AppError::NotFound)?;
    let name = header_filename(part.attachment_name().unwrap_or("attachment"));
    let data = part.contents().to_vec();
    let inline = !q.inline.is_empty();
    let show = if inline {
        let checks = attachment_checks(&state, &message).await?;
        show_as(&data, store::attachment_refusal(&checks, n).as_deref())
    } else {
        Show::Download
    };
    let reading = if show == Show::Download {
        Reading::AttachmentDownload(n)
    } else {
        Reading::AttachmentView(n)
    };
    record_reading(&state, &current.actor(ip), id, reading, Via::Webmail).await?;
    Ok(file_response(&name, data, show))
}

/// A file as a download, or inline (PDF, image) under a sandboxing CSP.
pub fn file_response(name: &str, data: Vec<u8>, show: Show) -> Response {
    let (ctype, disposition) = match show {
        Show::Pdf => ("application/pdf", "inline"),
        Show::Image => (
            directmail_content::inline_type(&data).unwrap_or("application/octet-stream"),
            "inline",
        ),
        Show::Download => ("application/octet-stream", "attachment"),
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, ctype.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("{disposition}; filename=\"{name}\""),
            ),
        ],
        data,
    )
        .into_response();
    if show != Show::Download {
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "sandbox; default-src 'none'; img-src 'self'; object-src 'self'",
            ),
        );
    }
    response
}
