//! Clinical content in received messages: XDM packages shown as cards on the message
//! page ([`xdm`]), and clinical documents (C-CDA) opened in our own viewer ([`cda`]),
//! whether they came as an attachment or inside a package.
//!
//! Files are recognised by their bytes (`directmail_content::xdm::is_xdm`,
//! `directmail_content::cda::is_cda`), never by their names. Everything here reads a
//! message the user may already read ([`own_message`]: 404 otherwise), and every
//! response that carries content is audited through [`record_reading`] with the place
//! it came from (`message:{id}/{n}` or `message:{id}/{n}/{k}`). Parsing runs off the
//! async threads: the content crate is pure and synchronous.
//!
//! Routes, for attachment `n` of message `id`, and for document `k` of the XDM package
//! that attachment `n` is:
//!
//! | route | what |
//! | --- | --- |
//! | `…/attachments/{n}/cda` | the viewer page of a CDA attachment (`?order=…&collapsed=…`; with `move=` or `reset=`, a redirect to the page in the new order) |
//! | `…/attachments/{n}/cda/frame` | its rendered document, for the sandboxed frame (`?order=…&collapsed=…`) |
//! | `…/attachments/{n}/cda/file` | the file of its `nonXMLBody` |
//! | `…/attachments/{n}/xdm/{k}` | document `k`, in the viewer that suits it (`?download=1`: the file) |
//! | `…/attachments/{n}/xdm/{k}/cda`, `/cda/frame`, `/cda/file` | the same three for a CDA in a package |

pub mod cda;
pub mod xdm;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use mail_parser::{MessageParser, MimeHeaders as _};
use serde::Deserialize;

use super::message::{
    Reading, Show, Via, file_response, header_filename, own_message, record_reading,
};
use super::session::{Chrome, CurrentUser};
use super::{AppError, AppResult, AppState, ClientIp};
use directmail_content::xdm::{Problem, XdmLimits, read_xdm};

pub use xdm::{Clinical, inspect};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/mail/messages/{id}/attachments/{n}/cda",
            get(cda::attachment_page),
        )
        .route(
            "/mail/messages/{id}/attachments/{n}/cda/frame",
            get(cda::attachment_frame),
        )
        .route(
            "/mail/messages/{id}/attachments/{n}/cda/file",
            get(cda::attachment_file),
        )
        .route(
            "/mail/messages/{id}/attachments/{n}/xdm/{k}",
            get(package_document),
        )
        .route(
            "/mail/messages/{id}/attachments/{n}/xdm/{k}/cda",
            get(cda::package_page),
        )
        .route(
            "/mail/messages/{id}/attachments/{n}/xdm/{k}/cda/frame",
            get(cda::package_frame),
        )
        .route(
            "/mail/messages/{id}/attachments/{n}/xdm/{k}/cda/file",
            get(cda::package_file),
        )
}

/// Where a clinical file is in a message: attachment `n`, or document `k` of the XDM
/// package that attachment `n` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub n: usize,
    pub k: Option<usize>,
}

impl Place {
    /// The route of the file at this place in message `id` (the attachment, or the
    /// package's document).
    pub fn path(&self, id: i64) -> String {
        match self.k {
            None => format!("/mail/messages/{id}/attachments/{}", self.n),
            Some(k) => format!("/mail/messages/{id}/attachments/{}/xdm/{k}", self.n),
        }
    }

    /// Where to download the file itself: the attachment route (which never shows
    /// XML inline), or the package document with `?download=1`.
    pub fn download_path(&self, id: i64) -> String {
        match self.k {
            None => self.path(id),
            Some(_) => format!("{}?download=1", self.path(id)),
        }
    }
}

/// A file taken out of a message for one of the viewers.
pub struct File {
    /// A name safe for a `Content-Disposition` header.
    pub name: String,
    /// The title to show: the package's title for the document, or the file name.
    pub label: String,
    /// The type the sender declared in the package metadata (none for attachments,
    /// whose declared type is never used).
    pub declared: Option<String>,
    pub bytes: Vec<u8>,
    /// What is wrong with the package, as far as it concerns this document (a
    /// fingerprint or size that does not match, patients that differ), in sentences.
    pub problems: Vec<String>,
}

/// The file at `place` in message `id`, if the user can read the message (404
/// otherwise, and for an attachment or document that is not there, or a package that
/// was refused). Reading the MIME message and the package runs on a blocking thread.
pub async fn load(
    state: &AppState,
    current: &CurrentUser,
    id: i64,
    place: Place,
) -> AppResult<File> {
    let (_, message) = own_message(state, current, id).await?;
    let raw = message.raw;
    tokio::task::spawn_blocking(move || extract(&raw, place))
        .await?
        .ok_or(AppError::NotFound)
}

fn extract(raw: &[u8], place: Place) -> Option<File> {
    let parsed = MessageParser::default().parse(raw)?;
    let part = parsed.attachments().nth(place.n)?;
    let name = part.attachment_name().unwrap_or("attachment").to_owned();
    let bytes = part.contents();
    let Some(k) = place.k else {
        return Some(File {
            name: header_filename(&name),
            label: name,
            declared: None,
            bytes: bytes.to_vec(),
            problems: Vec::new(),
        });
    };
    if !directmail_content::xdm::is_xdm(bytes) {
        return None;
    }
    let package = read_xdm(bytes, &XdmLimits::default()).ok()?;
    let document = package.documents().nth(k)?;
    let label = document.label();
    let problems = package
        .problems
        .iter()
        .filter(|problem| concerns(problem, &label))
        .map(ToString::to_string)
        .collect();
    let file_name = document.uri.rsplit('/').next().unwrap_or(&document.uri);
    Some(File {
        name: header_filename(file_name),
        label,
        declared: document.mime_type.clone(),
        bytes: document.bytes.clone(),
        problems,
    })
}

/// Whether a package's problem is about the document labelled `label` (or about every
/// document, as differing patients are).
fn concerns(problem: &Problem, label: &str) -> bool {
    match problem {
        Problem::FingerprintMismatch { document }
        | Problem::SizeMismatch { document, .. }
        | Problem::MissingDocument { document }
        | Problem::ReferenceOutsideFolder { document, .. } => document == label,
        Problem::DifferentPatients => true,
        _ => false,
    }
}

/// How a document from a package (or the file of a `nonXMLBody`) is offered, from its
/// bytes: the rules of ordinary attachments, plus plain text shown escaped in a page.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Open {
    /// A clinical document: our viewer.
    Viewer,
    /// A PDF or an image that passes the checks an upload gets: shown by the browser,
    /// from a sandboxed response.
    Inline(Show),
    /// UTF-8 plain text, shown escaped in a page of ours.
    Text,
    /// Anything else, and what fails the checks (the reason, when there is one).
    Download(Option<String>),
}

/// [`Open`] for a file; CPU work for a PDF (it is parsed), so off the async threads.
pub fn open_as(name: &str, declared: Option<&str>, bytes: &[u8]) -> Open {
    if directmail_content::cda::is_cda(bytes) {
        return Open::Viewer;
    }
    if let Some(kind) = directmail_content::inline_type(bytes) {
        return match directmail_content::inline_refusal(name, bytes) {
            Some(why) => Open::Download(Some(why)),
            None if kind == "application/pdf" => Open::Inline(Show::Pdf),
            None => Open::Inline(Show::Image),
        };
    }
    if is_plain_text(declared, bytes) {
        return Open::Text;
    }
    Open::Download(None)
}

/// Declared `text/plain`, and UTF-8 without NUL: what the text page shows.
fn is_plain_text(declared: Option<&str>, bytes: &[u8]) -> bool {
    declared.is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/plain"))
    }) && !bytes.contains(&0)
        && std::str::from_utf8(bytes).is_ok()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DocumentQuery {
    download: String,
    /// For a restricted record ([`crate::web::purpose`]).
    #[serde(flatten)]
    purpose: crate::web::purpose::PurposeForm,
}

#[derive(Template, WebTemplate)]
#[template(path = "mail/text_document.html")]
struct TextPage {
    chrome: Chrome,
    id: i64,
    title: String,
    problems: Vec<String>,
    text: String,
    download: String,
}

/// Document `k` of the package in attachment `n`, in the viewer that suits it: a
/// clinical document goes to the viewer page; a PDF or image that passes the checks
/// is shown by the browser; plain text in a page; anything else, and anything asked
/// for with `?download=1`, is downloaded. Audited as a view or a download of
/// `message:{id}/{n}/{k}`.
async fn package_document(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    current: CurrentUser,
    Path((id, n, k)): Path<(i64, usize, usize)>,
    Query(q): Query<DocumentQuery>,
) -> AppResult<Response> {
    let place = Place { n, k: Some(k) };
    let File {
        name,
        label,
        declared,
        bytes,
        problems,
    } = load(&state, &current, id, place).await?;
    let (open, bytes) = if q.download.is_empty() {
        let name = name.clone();
        tokio::task::spawn_blocking(move || (open_as(&name, declared.as_deref(), &bytes), bytes))
            .await?
    } else {
        (Open::Download(None), bytes)
    };
    if matches!(open, Open::Inline(_) | Open::Download(_)) {
        let access = crate::web::purpose::Access::Fetch {
            what: format!("download document {k} of attachment {n}"),
            target: place.path(id),
            fields: if q.download.is_empty() {
                Vec::new()
            } else {
                vec![("download".to_owned(), "1".to_owned())]
            },
        };
        if let Some(prompt) =
            crate::web::purpose::require_for(&state, &current, ip.clone(), id, access, &q.purpose)
                .await?
        {
            return Ok(prompt);
        }
    }
    let actor = current.actor(ip);
    match open {
        Open::Viewer => Ok(Redirect::to(&format!("{}/cda", place.path(id))).into_response()),
        Open::Inline(show) => {
            record_reading(&state, &actor, id, Reading::PackageView(n, k), Via::Webmail).await?;
            Ok(file_response(&name, bytes, show))
        }
        Open::Text => {
            record_reading(&state, &actor, id, Reading::PackageView(n, k), Via::Webmail).await?;
            Ok(TextPage {
                chrome: current.chrome,
                id,
                title: label,
                problems,
                text: String::from_utf8_lossy(&bytes).into_owned(),
                download: place.download_path(id),
            }
            .into_response())
        }
        Open::Download(_) => {
            record_reading(
                &state,
                &actor,
                id,
                Reading::PackageDownload(n, k),
                Via::Webmail,
            )
            .await?;
            Ok(file_response(&name, bytes, Show::Download))
        }
    }
}
