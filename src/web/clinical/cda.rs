//! The clinical document viewer: a page of ours with the document's header summary,
//! the Reportability Response card when it is one (with a link to the message that
//! carried the case report it answers, when the user may read one), the file of a
//! `nonXMLBody` through the PDF, image and text viewers, and the document itself
//! rendered by `directmail_content::cda::render_document` in a sandboxed frame.
//!
//! Why a frame, when the HTML is our own: the narrative comes from outside, and the
//! renderer's allowlist is the first line; the frame's sandbox (no scripts, no forms,
//! an opaque origin) and its own CSP (`default-src 'none'`, images only `data:`,
//! styles only our stylesheet) are the second, as for HTML mail.
//!
//! Why collapsed sections are rendered by the server: the frame cannot run scripts,
//! ours included, and its opaque origin has no access to our `localStorage`. So the
//! outer page lists the sections with a "collapse" box each (a GET form whose target is
//! the frame, which works without JavaScript for the document at hand), and
//! `static/cda.js` remembers the boxes by LOINC code in `localStorage` and asks for the
//! frame with those sections closed (`?collapsed=…`) in every document opened after.
//! A section toggled inside the frame is not remembered: the frame has no way to say so.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use directmail_content::cda::{
    Body, CdaLimits, Determination, Document, InstanceId, NonXmlContent, RenderOptions,
    ReportabilityResponse, Section, Viewer, default_section_order, parse_cda, priority_words,
    render_document,
};
use serde::Deserialize;

use super::{File, Place, load};
use crate::clock::format_utc;
use crate::filing::document_key;
use crate::store::documents;
use crate::web::message::{Reading, Show, Via, file_response, record_reading};
use crate::web::session::{Chrome, CurrentUser};
use crate::web::{AppError, AppResult, AppState, ClientIp};

/// Where links to other sites go: the leaving-the-site page (`web::leave`).
pub const LEAVE_PREFIX: &str = "/leave?to=";

/// The frame's policy: the HTML mail body's sandbox (popups only, so that links open
/// outside the frame), nothing loaded but `data:` images and our own stylesheet.
/// `'self'` is the frame's URL's origin, not its opaque sandboxed one (CSP3 §2.2.2; so
/// Chromium and Firefox, and WebKit since its fix of 2026); where a browser disagrees
/// the document shows unstyled, never less safe.
const FRAME_CSP: &str = "sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; \
img-src data:; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'";

/// The most section codes a frame request may name.
const MAX_COLLAPSED: usize = 200;

// ---------------------------------------------------------------------------------
// routes: the same three for an attachment and for a document of a package

pub async fn attachment_page(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((id, n)): Path<(i64, usize)>,
) -> AppResult<Response> {
    page(state, ip, current, id, Place { n, k: None }).await
}

pub async fn package_page(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((id, n, k)): Path<(i64, usize, usize)>,
) -> AppResult<Response> {
    page(state, ip, current, id, Place { n, k: Some(k) }).await
}

pub async fn attachment_frame(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((id, n)): Path<(i64, usize)>,
    RawQuery(query): RawQuery,
) -> AppResult<Response> {
    frame(state, ip, current, id, Place { n, k: None }, query).await
}

pub async fn package_frame(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((id, n, k)): Path<(i64, usize, usize)>,
    RawQuery(query): RawQuery,
) -> AppResult<Response> {
    frame(state, ip, current, id, Place { n, k: Some(k) }, query).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct FileQuery {
    inline: String,
}

pub async fn attachment_file(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((id, n)): Path<(i64, usize)>,
    Query(q): Query<FileQuery>,
) -> AppResult<Response> {
    file(
        state,
        ip,
        current,
        id,
        Place { n, k: None },
        !q.inline.is_empty(),
    )
    .await
}

pub async fn package_file(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((id, n, k)): Path<(i64, usize, usize)>,
    Query(q): Query<FileQuery>,
) -> AppResult<Response> {
    file(
        state,
        ip,
        current,
        id,
        Place { n, k: Some(k) },
        !q.inline.is_empty(),
    )
    .await
}

// ---------------------------------------------------------------------------------
// the viewer page

#[derive(Template, WebTemplate)]
#[template(path = "mail/cda.html")]
struct ViewerPage {
    chrome: Chrome,
    id: i64,
    title: String,
    /// What is wrong with the package the document came in, as it concerns it.
    problems: Vec<String>,
    /// Why the document was not opened (one sentence from `CdaError`).
    error: Option<String>,
    /// The header summary: (label, value).
    facts: Vec<(&'static str, String)>,
    rr: Option<RrCard>,
    /// (LOINC code, title) of the sections that can be collapsed, in the order shown.
    sections: Vec<(String, String)>,
    /// The frame's route.
    frame: String,
    /// The file of a `nonXMLBody`.
    body: BodyView,
    /// Where the raw XML is downloaded.
    raw: String,
}

/// How the page offers the file of a `nonXMLBody`.
enum BodyView {
    /// A structured body (or none): everything is in the frame.
    None,
    /// A PDF that passed the checks: opens in the browser's viewer.
    Pdf { href: String },
    /// An image that passed the checks: shown in the page.
    Image { href: String },
    /// UTF-8 text: shown escaped in the page.
    Text { text: String },
    /// Anything else, or what failed the checks (with the reason): a download.
    Download {
        href: String,
        media_type: String,
        refusal: Option<String>,
    },
}

/// A Reportability Response as a card.
struct RrCard {
    /// The most pressing determination in words ("Reportable").
    headline: String,
    priority: String,
    conditions: Vec<RrCondition>,
    /// The case report it answers.
    eicr: CaseReport,
}

/// What the card says about the case report (eICR) a response answers.
enum CaseReport {
    /// The response does not name one (no eICR External Document Reference, or one
    /// without a usable `id`).
    Unnamed,
    /// A message the user may read carries it: a link to that message.
    Found {
        href: String,
        /// Whether it is our Sent copy ("sent on"), or a message received ("received on").
        sent: bool,
        when: String,
        subject: String,
    },
    /// No message the user may read carries it; its identifier as the response gives it.
    NotHere { id: String },
}

struct RrCondition {
    name: String,
    places: Vec<RrPlace>,
}

struct RrPlace {
    /// The determination in words.
    determination: String,
    /// `reportable`, `may-be-reportable`, … for the stylesheet (the words say it too).
    class: &'static str,
    /// The agency responsible, with its contacts.
    agency: String,
    /// Why it concerns this jurisdiction, when it says ("Patient home address").
    relevance: String,
    timeframe: String,
    reason: String,
    actions: Vec<RrAction>,
}

struct RrAction {
    text: String,
    priority: String,
    /// Through the leaving-the-site page; `None` for an action without a web address.
    href: Option<String>,
}

/// What the page needs from a document, worked out on a blocking thread.
struct Parsed {
    doc: Document,
    /// Why the `nonXMLBody` file may not be shown (a PDF or image failing the checks).
    body_refusal: Option<String>,
}

async fn page(
    state: AppState,
    ip: String,
    current: CurrentUser,
    id: i64,
    place: Place,
) -> AppResult<Response> {
    let File {
        label,
        bytes,
        problems,
        ..
    } = load(&state, &current, id, place).await?;
    let parsed = tokio::task::spawn_blocking(move || {
        parse_cda(&bytes, &CdaLimits::default()).map(|doc| {
            let body_refusal = match &doc.body {
                Body::NonXml(body) => match (&body.content, body.viewer()) {
                    (NonXmlContent::Data(data), Viewer::Pdf | Viewer::Image) => {
                        directmail_content::inline_refusal("document", data)
                    }
                    _ => None,
                },
                _ => None,
            };
            Parsed { doc, body_refusal }
        })
    })
    .await?;
    record_reading(
        &state,
        &current.actor(ip),
        id,
        Reading::ClinicalDocument(place.n, place.k),
        Via::Webmail,
    )
    .await?;
    let eicr = match &parsed {
        Ok(Parsed { doc, .. }) if doc.reportability.is_some() => {
            let answered = doc
                .reportability
                .as_ref()
                .and_then(|rr| rr.eicr_id.as_ref());
            Some(case_report(&state, &current, id, answered).await?)
        }
        _ => None,
    };
    let base = format!("{}/cda", place.path(id));
    let raw = place.download_path(id);
    let page = match parsed {
        Err(error) => ViewerPage {
            chrome: current.chrome,
            id,
            title: label,
            problems,
            error: Some(error.to_string()),
            facts: Vec::new(),
            rr: None,
            sections: Vec::new(),
            frame: String::new(),
            body: BodyView::None,
            raw,
        },
        Ok(Parsed { doc, body_refusal }) => ViewerPage {
            chrome: current.chrome,
            id,
            title: doc.display_title().to_owned(),
            problems,
            error: None,
            facts: summary(&doc),
            rr: doc
                .reportability
                .as_ref()
                .zip(eicr)
                .map(|(rr, eicr)| rr_card(rr, eicr)),
            sections: collapsible(doc.sections()),
            body: body_view(&doc, &base, body_refusal),
            frame: format!("{base}/frame"),
            raw,
        },
    };
    Ok(page.into_response())
}

/// The header in a few lines: who, what, when, by whom, how confidential. The frame
/// repeats it in full (address, encounter, custodian).
fn summary(doc: &Document) -> Vec<(&'static str, String)> {
    let mut facts = Vec::new();
    if let Some(patient) = &doc.patient {
        if let Some(name) = &patient.name {
            facts.push(("Patient", name.with_prefix()));
        }
        if let Some(id) = patient.ids.first() {
            facts.push(("Patient ID", id.to_string()));
        }
        if let Some(birth) = &patient.birth_time {
            facts.push(("Birth date", birth.readable.clone()));
        }
        if let Some(sex) = patient.sex() {
            facts.push(("Sex", sex));
        }
    }
    if let Some(kind) = &doc.document_type {
        facts.push(("Document type", kind.label().to_owned()));
    }
    if let Some(time) = &doc.effective_time {
        facts.push(("Date", time.readable.clone()));
    }
    let authors: Vec<String> = doc
        .authors
        .iter()
        .filter_map(|author| {
            let who = author
                .person
                .as_ref()
                .map(|name| name.with_prefix())
                .or_else(|| author.device.clone());
            let parts: Vec<String> = who.into_iter().chain(author.organization.clone()).collect();
            (!parts.is_empty()).then(|| parts.join(", "))
        })
        .collect();
    if !authors.is_empty() {
        facts.push(("Author", authors.join("; ")));
    }
    if let Some(code) = &doc.confidentiality {
        let words = directmail_content::cda::confidentiality_words(&code.code)
            .unwrap_or(code.label())
            .to_owned();
        facts.push(("Confidentiality", words));
    }
    facts
}

/// The sections with a code, top level in the order the frame shows them and nested
/// ones after their parent, each code once.
fn collapsible(sections: &[Section]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut stack: Vec<&Section> = default_section_order(sections).into_iter().rev().collect();
    while let Some(section) = stack.pop() {
        if let Some(code) = section.loinc().filter(|code| is_code(code))
            && !out.iter().any(|(seen, _)| seen == code)
        {
            out.push((code.to_owned(), section.display_title().to_owned()));
        }
        stack.extend(section.sections.iter().rev());
    }
    out
}

/// A LOINC-like code as the renderer writes it in `data-loinc`: letters, digits, `.`
/// and `-`, at most 32.
fn is_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 32
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
}

fn body_view(doc: &Document, base: &str, refusal: Option<String>) -> BodyView {
    let Body::NonXml(body) = &doc.body else {
        return BodyView::None;
    };
    let NonXmlContent::Data(data) = &body.content else {
        // a reference not followed, compressed or damaged data: the frame says which
        return BodyView::None;
    };
    let href = format!("{base}/file");
    match (body.viewer(), refusal) {
        (Viewer::Pdf, None) => BodyView::Pdf { href },
        (Viewer::Image, None) => BodyView::Image { href },
        (Viewer::PlainText, _) => BodyView::Text {
            text: String::from_utf8_lossy(data).into_owned(),
        },
        (_, refusal) => BodyView::Download {
            href,
            media_type: body.media_type.clone(),
            refusal,
        },
    }
}

/// The most characters of a case report's identifier shown.
const MAX_SHOWN_ID: usize = 200;

/// The case report `answered` (a response's eICR identifier) as the card of message
/// `id` tells it: the message that carried it among those `current` may read, the
/// same rule as every mail page (never one of a mailbox they are not assigned to), or
/// that there is none.
async fn case_report(
    state: &AppState,
    current: &CurrentUser,
    id: i64,
    answered: Option<&InstanceId>,
) -> AppResult<CaseReport> {
    let Some(answered) = answered.filter(|a| !a.to_string().trim().is_empty()) else {
        return Ok(CaseReport::Unnamed);
    };
    let carrier = match document_key(answered) {
        Some((root, extension)) => {
            documents::carrier(&state.db, current.user.id, (&root, &extension), id).await?
        }
        None => None,
    };
    Ok(match carrier {
        Some(carrier) => CaseReport::Found {
            href: format!("/mail/messages/{}", carrier.message_id),
            sent: carrier.folder == "sent",
            when: format_utc(carrier.at),
            subject: if carrier.subject.trim().is_empty() {
                "(no subject)".to_owned()
            } else {
                carrier.subject
            },
        },
        None => CaseReport::NotHere {
            id: answered.to_string().chars().take(MAX_SHOWN_ID).collect(),
        },
    })
}

fn rr_card(rr: &ReportabilityResponse, eicr: CaseReport) -> RrCard {
    RrCard {
        eicr,
        headline: rr
            .strongest()
            .map(|d| d.words().to_owned())
            .unwrap_or_else(|| "No determination given".to_owned()),
        priority: rr
            .priority
            .as_ref()
            .map(|p| priority_words(p).to_owned())
            .unwrap_or_default(),
        conditions: rr
            .conditions
            .iter()
            .map(|condition| RrCondition {
                name: condition
                    .condition
                    .as_ref()
                    .map(|c| c.label().to_owned())
                    .unwrap_or_else(|| "Unnamed condition".to_owned()),
                places: condition
                    .jurisdictions
                    .iter()
                    .map(|place| RrPlace {
                        determination: place
                            .determination
                            .as_ref()
                            .map(|d| d.words().to_owned())
                            .unwrap_or_else(|| "No determination given".to_owned()),
                        class: match place.determination {
                            Some(Determination::Reportable) => "reportable",
                            Some(Determination::MayBeReportable) => "may-be-reportable",
                            Some(Determination::NotReportable) => "not-reportable",
                            Some(Determination::NoRuleMet) => "no-rule-met",
                            _ => "other",
                        },
                        agency: place
                            .responsible_agency
                            .as_ref()
                            .or(place.routing_entity.as_ref())
                            .map(|agency| {
                                if agency.contact.is_empty() {
                                    agency.name.clone()
                                } else {
                                    format!("{} ({})", agency.name, agency.contact.join(", "))
                                }
                            })
                            .unwrap_or_default(),
                        relevance: place
                            .location_relevance
                            .as_ref()
                            .map(|c| c.label().to_owned())
                            .unwrap_or_default(),
                        timeframe: place.timeframe.clone().unwrap_or_default(),
                        reason: place.reason.clone().unwrap_or_default(),
                        actions: place
                            .actions
                            .iter()
                            .map(|action| {
                                let href = action.url.as_deref().and_then(leave_link);
                                let text = action
                                    .description
                                    .clone()
                                    .or_else(|| action.kind.as_ref().map(|k| k.label().to_owned()))
                                    .or_else(|| href.as_ref().and(action.url.clone()))
                                    .unwrap_or_else(|| "See the agency's instructions".to_owned());
                                RrAction {
                                    text,
                                    priority: action
                                        .priority
                                        .as_ref()
                                        .map(|p| priority_words(p).to_owned())
                                        .unwrap_or_default(),
                                    href,
                                }
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// A web address through the leaving-the-site page; `None` for anything but http(s).
fn leave_link(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url.trim()).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return None;
    }
    Some(format!(
        "{LEAVE_PREFIX}{}",
        url::form_urlencoded::byte_serialize(parsed.as_str().as_bytes()).collect::<String>()
    ))
}

// ---------------------------------------------------------------------------------
// the frame

#[derive(Template)]
#[template(path = "mail/cda_frame.html")]
struct FramePage {
    title: String,
    /// The document as `render_document` wrote it.
    html: String,
    error: Option<String>,
}

/// The section codes to show collapsed, from `collapsed=` pairs (repeated, as a form
/// with checkboxes sends them); anything that is not a plain code is ignored.
fn collapsed_codes(query: Option<&str>) -> Vec<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "collapsed")
        .map(|(_, value)| value.into_owned())
        .filter(|code| is_code(code))
        .take(MAX_COLLAPSED)
        .collect()
}

/// The document rendered for the sandboxed frame of the viewer page, with the sections
/// named in `collapsed=` closed. Served with the frame's own CSP (see [`FRAME_CSP`]).
async fn frame(
    state: AppState,
    ip: String,
    current: CurrentUser,
    id: i64,
    place: Place,
    query: Option<String>,
) -> AppResult<Response> {
    let collapsed = collapsed_codes(query.as_deref());
    let file = load(&state, &current, id, place).await?;
    let page =
        tokio::task::spawn_blocking(
            move || match parse_cda(&file.bytes, &CdaLimits::default()) {
                Ok(doc) => FramePage {
                    title: doc.display_title().to_owned(),
                    html: render_document(
                        &doc,
                        &RenderOptions {
                            collapsed: &collapsed,
                            new_window: true,
                            ..RenderOptions::new(LEAVE_PREFIX)
                        },
                    ),
                    error: None,
                },
                Err(error) => FramePage {
                    title: file.label,
                    html: String::new(),
                    error: Some(error.to_string()),
                },
            },
        )
        .await?;
    record_reading(
        &state,
        &current.actor(ip),
        id,
        Reading::ClinicalFrame(place.n, place.k),
        Via::Webmail,
    )
    .await?;
    let html = page
        .render()
        .map_err(|e| AppError::Internal(anyhow::Error::new(e).context("cda frame")))?;
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(FRAME_CSP),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    Ok(response)
}

// ---------------------------------------------------------------------------------
// the file of a nonXMLBody

/// The file of a document's `nonXMLBody`: with `inline`, a PDF or image that passes the
/// checks an upload gets, shown by the browser from a sandboxed response; otherwise
/// (and for everything else: text, HTML, XML, …) a download. Never rendered as HTML.
async fn file(
    state: AppState,
    ip: String,
    current: CurrentUser,
    id: i64,
    place: Place,
    inline: bool,
) -> AppResult<Response> {
    let File { name, bytes, .. } = load(&state, &current, id, place).await?;
    let (data, show, extension) = tokio::task::spawn_blocking(move || {
        let doc = parse_cda(&bytes, &CdaLimits::default()).ok()?;
        let Body::NonXml(body) = doc.body else {
            return None;
        };
        let viewer = body.viewer();
        let NonXmlContent::Data(data) = body.content else {
            return None;
        };
        let passes = || directmail_content::inline_refusal("document", &data).is_none();
        let show = match viewer {
            Viewer::Pdf if inline && passes() => Show::Pdf,
            Viewer::Image if inline && passes() => Show::Image,
            _ => Show::Download,
        };
        let extension = match directmail_content::inline_type(&data) {
            Some("application/pdf") => "pdf",
            Some("image/png") => "png",
            Some("image/jpeg") => "jpg",
            Some("image/gif") => "gif",
            _ if viewer == Viewer::PlainText => "txt",
            _ => "bin",
        };
        Some((data, show, extension))
    })
    .await?
    .ok_or(AppError::NotFound)?;
    record_reading(
        &state,
        &current.actor(ip),
        id,
        Reading::ClinicalFile(place.n, place.k, show != Show::Download),
        Via::Webmail,
    )
    .await?;
    let stem = name
        .rsplit_once('.')
        .map_or(name.as_str(), |(stem, _)| stem);
    Ok(file_response(
        &format!("{stem}-content.{extension}"),
        data,
        show,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_codes_are_taken_from_the_frame_query() {
        assert_eq!(
            collapsed_codes(Some(
                "collapsed=11450-4&x=1&collapsed=%22%3E&collapsed=10160-0"
            )),
            ["11450-4", "10160-0"]
        );
        assert!(collapsed_codes(None).is_empty());
    }

    #[test]
    fn only_web_addresses_go_through_the_leaving_page() {
        assert_eq!(
            leave_link("https://health.example/form?a=1&b=2").as_deref(),
            Some("/leave?to=https%3A%2F%2Fhealth.example%2Fform%3Fa%3D1%26b%3D2")
        );
        assert_eq!(leave_link("javascript:alert(1)"), None);
        assert_eq!(leave_link("mailto:x@example.org"), None);
    }
}
