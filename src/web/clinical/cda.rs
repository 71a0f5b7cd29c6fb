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
//!
//! Section order works the same way: the frame is rendered with the top-level sections
//! named in `order=` first, in that order (`saved_section_order`; the preferred
//! sections lead when nothing is named, and codes a document lacks are ignored), and
//! the list beside it is in the same order. Each section there has "Move up" and "Move
//! down" buttons in the same form that, without JavaScript, ask for this page again
//! (`move=CODE:up`, `reset=order`): the page answers with a redirect to itself with
//! the new `order=` list (and the `collapsed=` boxes), for the document at hand.
//! `static/cda.js` instead moves the section in the list, keeps the order in
//! `localStorage` and asks for the frame with `?order=…&collapsed=…`, in every document
//! opened after; "Reset order" forgets it.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use directmail_content::cda::{
    Body, CdaLimits, Determination, Document, InstanceId, NonXmlContent, RenderOptions,
    ReportabilityResponse, Section, Viewer, parse_cda, priority_words, render_document,
    saved_section_order,
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

/// The most section codes a request may name in each of `collapsed=` and `order=`.
const MAX_CODES: usize = 200;

// ---------------------------------------------------------------------------------
// routes: the same three for an attachment and for a document of a package

pub async fn attachment_page(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((id, n)): Path<(i64, usize)>,
    RawQuery(query): RawQuery,
) -> AppResult<Response> {
    page(state, ip, current, id, Place { n, k: None }, query).await
}

pub async fn package_page(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((id, n, k)): Path<(i64, usize, usize)>,
    RawQuery(query): RawQuery,
) -> AppResult<Response> {
    page(state, ip, current, id, Place { n, k: Some(k) }, query).await
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
    /// For a restricted record ([`crate::web::purpose`]).
    #[serde(flatten)]
    purpose: crate::web::purpose::PurposeForm,
}

pub async fn attachment_file(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((id, n)): Path<(i64, usize)>,
    Query(q): Query<FileQuery>,
) -> AppResult<Response> {
    file(state, ip, current, id, Place { n, k: None }, &q).await
}

pub async fn package_file(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((id, n, k)): Path<(i64, usize, usize)>,
    Query(q): Query<FileQuery>,
) -> AppResult<Response> {
    file(state, ip, current, id, Place { n, k: Some(k) }, &q).await
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
    /// The top-level sections in the order the frame shows them, with the sections
    /// inside them that can be collapsed.
    sections: Vec<SideSection>,
    /// The codes whose boxes are checked (`collapsed=` of this page's query).
    collapsed: Vec<String>,
    /// This page's route, where the move buttons send the form.
    page: String,
    /// The frame's route, where the form goes otherwise.
    frame: String,
    /// The frame's first address: the route with this page's `order=` and `collapsed=`.
    frame_src: String,
    /// The file of a `nonXMLBody`.
    body: BodyView,
    /// Where the raw XML is downloaded.
    raw: String,
    /// The public-health routes that take this document's type, as (route id,
    /// "Illinois: ecr@aims.example"): "Report to public health" (`web::requests`).
    report_routes: Vec<(i64, String)>,
}

impl ViewerPage {
    /// Whether the box of section `code` is checked.
    fn is_collapsed(&self, code: &str) -> bool {
        self.collapsed.iter().any(|listed| listed == code)
    }
}

/// A top-level section in the list beside the frame, with the coded sections inside it
/// (which move with it).
struct SideSection {
    /// Its code and title, when it has a code not listed before: it can be collapsed
    /// and moved. A section without one is listed only for the sections inside it.
    head: Option<Head>,
    /// (LOINC code, title) of the sections inside it, at any depth, each code once.
    nested: Vec<(String, String)>,
}

struct Head {
    code: String,
    title: String,
    /// The first (last) section that can move: it has no "Move up" ("Move down").
    first: bool,
    last: bool,
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

/// The viewer page, its sections in the order of `order=` and with the boxes of
/// `collapsed=` checked; with `move=CODE:up` (`:down`) or `reset=order`, from a button
/// of the form when scripts do not run, a redirect to the page in the new order.
async fn page(
    state: AppState,
    ip: String,
    current: CurrentUser,
    id: i64,
    place: Place,
    query: Option<String>,
) -> AppResult<Response> {
    let query = query.as_deref();
    let mut order = codes(query, "order");
    let collapsed = codes(query, "collapsed");
    let change = order_change(query);
    let File {
        label,
        bytes,
        problems,
        ..
    } = load(&state, &current, id, place).await?;
    let base = format!("{}/cda", place.path(id));
    if let Some(change) = change {
        // nothing of the document is shown: the page it redirects to is the read
        let anchor = change.apply(&mut order);
        return Ok(
            Redirect::to(&format!("{base}{}{anchor}", view_query(&order, &collapsed)))
                .into_response(),
        );
    }
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
    let raw = place.download_path(id);
    // a report sends the message's attached documents (not those inside a package)
    let code = match (&parsed, place.k) {
        (Ok(Parsed { doc, .. }), None) => doc.document_type.as_ref().map(|c| c.code.clone()),
        _ => None,
    };
    let report_routes =
        crate::store::reporting::offered(&state.db, &code.into_iter().collect::<Vec<_>>()).await?;
    let frame = format!("{base}/frame");
    let frame_src = format!("{frame}{}", view_query(&order, &collapsed));
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
            collapsed,
            page: base,
            frame: String::new(),
            frame_src: String::new(),
            body: BodyView::None,
            raw,
            report_routes: Vec::new(),
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
            sections: side_list(doc.sections(), &order),
            collapsed,
            body: body_view(&doc, &base, body_refusal),
            page: base,
            frame,
            frame_src,
            raw,
            report_routes,
        },
    };
    Ok(page.into_response())
}

/// The header in a few lines: who, what, when, by whom, how confidential. The frame
/// repeats it in full (address, encounter, custodian).
pub fn summary(doc: &Document) -> Vec<(&'static str, String)> {
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

/// The top-level sections in the order the frame shows them for `order`, each with
/// the coded sections inside it, each code once. A top-level section with a code
/// already listed at the top level joins that entry: they move together.
fn side_list(sections: &[Section], order: &[String]) -> Vec<SideSection> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out: Vec<SideSection> = Vec::new();
    for top in saved_section_order(sections, order) {
        let code = top.loinc().filter(|code| is_code(code));
        let listed = code.and_then(|code| {
            out.iter()
                .position(|s| s.head.as_ref().is_some_and(|head| head.code == code))
        });
        let at = match (listed, code) {
            (Some(at), _) => at,
            (None, Some(code)) if !seen.contains(&code) => {
                seen.push(code);
                out.push(SideSection {
                    head: Some(Head {
                        code: code.to_owned(),
                        title: top.display_title().to_owned(),
                        first: false,
                        last: false,
                    }),
                    nested: Vec::new(),
                });
                out.len() - 1
            }
            _ => {
                out.push(SideSection {
                    head: None,
                    nested: Vec::new(),
                });
                out.len() - 1
            }
        };
        let mut stack: Vec<&Section> = top.sections.iter().rev().collect();
        while let Some(section) = stack.pop() {
            if let Some(code) = section.loinc().filter(|code| is_code(code))
                && !seen.contains(&code)
            {
                seen.push(code);
                out[at]
                    .nested
                    .push((code.to_owned(), section.display_title().to_owned()));
            }
            stack.extend(section.sections.iter().rev());
        }
    }
    out.retain(|s| s.head.is_some() || !s.nested.is_empty());
    if let Some(head) = out.iter_mut().find_map(|s| s.head.as_mut()) {
        head.first = true;
    }
    if let Some(head) = out.iter_mut().rev().find_map(|s| s.head.as_mut()) {
        head.last = true;
    }
    out
}

/// A button of the form without scripts: move one section, or forget the order.
#[derive(Debug, PartialEq)]
enum OrderChange {
    Move { code: String, up: bool },
    Reset,
}

/// What `move=CODE:up` (or `:down`) or `reset=order` in the page's query asks.
fn order_change(query: Option<&str>) -> Option<OrderChange> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).find_map(
        |(key, value)| match (&*key, value.rsplit_once(':')) {
            ("reset", _) if value == "order" => Some(OrderChange::Reset),
            ("move", Some((code, "up"))) if is_code(code) => Some(OrderChange::Move {
                code: code.to_owned(),
                up: true,
            }),
            ("move", Some((code, "down"))) if is_code(code) => Some(OrderChange::Move {
                code: code.to_owned(),
                up: false,
            }),
            _ => None,
        },
    )
}

impl OrderChange {
    /// Makes this change to `order`; returns the fragment of the page to show: the
    /// section moved, or the list.
    fn apply(&self, order: &mut Vec<String>) -> String {
        match self {
            OrderChange::Reset => {
                order.clear();
                "#cda-sections".to_owned()
            }
            OrderChange::Move { code, up } => {
                if let Some(at) = order.iter().position(|listed| listed == code) {
                    if *up && at > 0 {
                        order.swap(at - 1, at);
                    } else if !*up && at + 1 < order.len() {
                        order.swap(at, at + 1);
                    }
                }
                format!("#cda-s-{code}")
            }
        }
    }
}

/// `?order=…&collapsed=…` for these codes, or nothing when there are none.
fn view_query(order: &[String], collapsed: &[String]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for code in order {
        query.append_pair("order", code);
    }
    for code in collapsed {
        query.append_pair("collapsed", code);
    }
    let query = query.finish();
    if query.is_empty() {
        query
    } else {
        format!("?{query}")
    }
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

/// The section codes of the `key=` pairs of a query (repeated, as a form with
/// checkboxes or hidden fields sends them: `collapsed`, `order`), each once, at most
/// [`MAX_CODES`]; anything that is not a plain code is ignored.
pub fn codes(query: Option<&str>, key: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, code) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(name, code)| name == key && is_code(code))
    {
        if out.len() == MAX_CODES {
            break;
        }
        if !out.iter().any(|listed| *listed == code) {
            out.push(code.into_owned());
        }
    }
    out
}

/// The document rendered for the sandboxed frame of the viewer page, with the sections
/// named in `order=` first, in that order, and those in `collapsed=` closed. Served
/// with the frame's own CSP (see [`FRAME_CSP`]).
async fn frame(
    state: AppState,
    ip: String,
    current: CurrentUser,
    id: i64,
    place: Place,
    query: Option<String>,
) -> AppResult<Response> {
    let collapsed = codes(query.as_deref(), "collapsed");
    let order = codes(query.as_deref(), "order");
    let file = load(&state, &current, id, place).await?;
    let response = frame_response(file.bytes, file.label, order, collapsed).await?;
    record_reading(
        &state,
        &current.actor(ip),
        id,
        Reading::ClinicalFrame(place.n, place.k),
        Via::Webmail,
    )
    .await?;
    Ok(response)
}

/// A clinical document rendered for the viewer's sandboxed frame (or why it cannot
/// be: the sentence of `CdaError`), with the sections of `order` first and those of
/// `collapsed` closed, under the frame's own CSP ([`FRAME_CSP`]). Also the frame of a
/// document retrieved from a FHIR server (`web::records`).
pub async fn frame_response(
    bytes: Vec<u8>,
    label: String,
    order: Vec<String>,
    collapsed: Vec<String>,
) -> AppResult<Response> {
    let page =
        tokio::task::spawn_blocking(move || match parse_cda(&bytes, &CdaLimits::default()) {
            Ok(doc) => FramePage {
                title: doc.display_title().to_owned(),
                html: render_document(
                    &doc,
                    &RenderOptions {
                        section_order: &order,
                        collapsed: &collapsed,
                        new_window: true,
                        ..RenderOptions::new(LEAVE_PREFIX)
                    },
                ),
                error: None,
            },
            Err(error) => FramePage {
                title: label,
                html: String::new(),
                error: Some(error.to_string()),
            },
        })
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
    q: &FileQuery,
) -> AppResult<Response> {
    let inline = !q.inline.is_empty();
    let File { name, bytes, .. } = load(&state, &current, id, place).await?;
    let access = crate::web::purpose::Access::Fetch {
        what: match place.k {
            Some(k) => format!("file of document {k} of attachment {}", place.n),
            None => format!("file of attachment {}", place.n),
        },
        target: format!("{}/cda/file", place.path(id)),
        fields: if inline {
            vec![("inline".to_owned(), "1".to_owned())]
        } else {
            Vec::new()
        },
    };
    if let Some(prompt) =
        crate::web::purpose::require_for(&state, &current, ip.clone(), id, access, &q.purpose)
            .await?
    {
        return Ok(prompt);
    }
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
            codes(
                Some("collapsed=11450-4&x=1&collapsed=%22%3E&collapsed=10160-0&order=8716-3"),
                "collapsed"
            ),
            ["11450-4", "10160-0"]
        );
        assert_eq!(
            codes(
                Some("order=10160-0&order=&order=11450-4&order=10160-0&order=a%26b"),
                "order"
            ),
            ["10160-0", "11450-4"],
            "each once, and nothing but codes"
        );
        let many: String = (0..MAX_CODES + 5).map(|i| format!("order={i}&")).collect();
        assert_eq!(codes(Some(&many), "order").len(), MAX_CODES);
        assert!(codes(None, "collapsed").is_empty());
    }

    #[test]
    fn a_move_swaps_a_section_with_its_neighbour_and_reset_forgets_the_order() {
        let order = |codes: &[&str]| codes.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let moved = |query: &str, codes: &[&str]| {
            let mut list = order(codes);
            let anchor = order_change(Some(query)).map(|change| change.apply(&mut list));
            (list, anchor)
        };
        let abc = ["A", "B", "C"];
        assert_eq!(
            moved("order=A&move=B%3Aup", &abc),
            (order(&["B", "A", "C"]), Some("#cda-s-B".to_owned()))
        );
        assert_eq!(moved("move=B:down", &abc).0, order(&["A", "C", "B"]));
        // at the ends, and a code not in the list: as it was
        assert_eq!(moved("move=A:up", &abc).0, order(&abc));
        assert_eq!(moved("move=C:down", &abc).0, order(&abc));
        assert_eq!(moved("move=D:up", &abc).0, order(&abc));
        assert_eq!(
            moved("reset=order", &abc),
            (Vec::new(), Some("#cda-sections".to_owned()))
        );
        // anything else is no change at all
        for query in ["move=B", "move=B:left", "move=%22%3E:up", "reset=1", ""] {
            assert_eq!(order_change(Some(query)), None, "{query}");
        }
        assert_eq!(
            view_query(&order(&["B", "A"]), &order(&["A"])),
            "?order=B&order=A&collapsed=A"
        );
        assert_eq!(view_query(&[], &[]), "");
    }

    fn section(code: &str, title: &str, inside: Vec<Section>) -> Section {
        Section {
            code: (!code.is_empty()).then(|| directmail_content::cda::Code {
                code: code.to_owned(),
                system: None,
                display_name: None,
            }),
            title: Some(title.to_owned()),
            confidentiality: None,
            language: None,
            template_ids: vec![],
            narrative: Default::default(),
            sections: inside,
        }
    }

    /// The list as `head [nested…]`, `-` for an entry that cannot move, `^` and `$`
    /// for the first and last that can.
    fn shown(list: &[SideSection]) -> Vec<String> {
        list.iter()
            .map(|s| {
                let head = s.head.as_ref().map_or("-".to_owned(), |h| {
                    format!(
                        "{}{}{}",
                        if h.first { "^" } else { "" },
                        h.title,
                        if h.last { "$" } else { "" }
                    )
                });
                let nested: Vec<&str> = s.nested.iter().map(|(_, title)| title.as_str()).collect();
                format!("{head} {nested:?}")
            })
            .collect()
    }

    #[test]
    fn the_list_follows_the_frame_with_nested_sections_under_their_parent() {
        let sections = vec![
            section("29762-2", "Social", vec![]),
            section("", "Untitled", vec![section("8716-3", "Vitals", vec![])]),
            section("11450-4", "Problems", vec![]),
            section(
                "18776-5",
                "Plan",
                vec![section(
                    "69730-0",
                    "Instructions",
                    vec![section("bad code", "X", vec![])],
                )],
            ),
            section("", "Nothing coded", vec![]),
            section(
                "11450-4",
                "More problems",
                vec![section("10190-7", "Mental", vec![])],
            ),
        ];
        assert_eq!(
            shown(&side_list(&sections, &[])),
            [
                "^Problems [\"Mental\"]",
                "Social []",
                "- [\"Vitals\"]",
                "Plan$ [\"Instructions\"]",
            ],
            "preferred first; a second Problems moves with the first"
        );
        let order = [
            "18776-5".to_owned(),
            "29762-2".to_owned(),
            "42349-1".to_owned(),
        ];
        assert_eq!(
            shown(&side_list(&sections, &order)),
            [
                "^Plan [\"Instructions\"]",
                "Social []",
                "Problems$ [\"Mental\"]",
                "- [\"Vitals\"]",
            ]
        );
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
