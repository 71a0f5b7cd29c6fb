//! Attachment checks: what an uploaded file really is, and whether a Direct message may
//! carry it under the operator's policy.

mod office;
mod pdf;
mod sniff;
#[cfg(test)]
mod tests;
mod xml;

use std::fmt;
use std::str::FromStr;

use sniff::Format;

/// The media type of a file a browser can show by itself (`application/pdf`,
/// `image/png`, `image/jpeg`, `image/gif`), from its first bytes (never its name or
/// declared type); `None` for anything else, which is offered as a download.
pub fn inline_type(bytes: &[u8]) -> Option<&'static str> {
    sniff::viewable(bytes).map(Format::content_type)
}

/// Why a received file that a browser could show (see [`inline_type`]) must only be
/// downloaded: it fails the checks an upload gets (a PDF with scripts, launch actions
/// or embedded files, encrypted or damaged; an image that is not what it says).
/// `None` for a file that may be shown, and for one that is download-only anyway.
pub fn inline_refusal(name: &str, bytes: &[u8]) -> Option<String> {
    inline_type(bytes)?;
    let any = Policy {
        max_total_bytes: usize::MAX,
        allowed: Kind::ALL.to_vec(),
    };
    check_attachment(name, None, bytes, &any)
        .err()
        .map(|r| r.to_string())
}

/// A family of attachments the operator can allow. PDF is always allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// PDF documents (`application/pdf`).
    Pdf,
    /// XML documents, such as C-CDA (`application/xml`).
    Xml,
    /// PNG, JPEG and GIF images.
    Image,
    /// Plain text in UTF-8 (`text/plain`).
    Text,
    /// Word documents: `.docx`, and the older `.doc`.
    Word,
}

impl Kind {
    /// Every kind, in the order used when listing them.
    pub const ALL: [Kind; 5] = [Kind::Pdf, Kind::Xml, Kind::Image, Kind::Text, Kind::Word];

    /// The name an operator writes in the allow-list: `pdf`, `xml`, `image`, `text`, `word`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Pdf => "pdf",
            Kind::Xml => "xml",
            Kind::Image => "image",
            Kind::Text => "text",
            Kind::Word => "word",
        }
    }

    /// How the kind is named to a person, as in "allowed types are PDF and plain text".
    pub fn description(self) -> &'static str {
        match self {
            Kind::Pdf => "PDF",
            Kind::Xml => "XML (such as C-CDA)",
            Kind::Image => "images (PNG, JPEG or GIF)",
            Kind::Text => "plain text",
            Kind::Word => "Word documents",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A name in an allow-list that is not one of [`Kind::label`]'s names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKind {
    /// The name as it was written.
    pub name: String,
}

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = Kind::ALL.iter().map(|kind| kind.label()).collect();
        write!(
            f,
            "unknown attachment type \"{}\"; the known types are {}",
            self.name,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownKind {}

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        kind_from_str(s)
    }
}

/// Parses one allow-list name (`pdf`, `xml`, `image`, `text`, `word`), ignoring case and
/// surrounding spaces.
pub fn kind_from_str(s: &str) -> Result<Kind, UnknownKind> {
    let name = s.trim();
    Kind::ALL
        .into_iter()
        .find(|kind| kind.label().eq_ignore_ascii_case(name))
        .ok_or_else(|| UnknownKind {
            name: name.to_owned(),
        })
}

/// Parses a comma-separated allow-list such as `"pdf,xml,image"`. Empty items are
/// ignored and repeated names are kept once.
pub fn parse_kinds(list: &str) -> Result<Vec<Kind>, UnknownKind> {
    let mut kinds = Vec::new();
    for item in list.split(',').filter(|item| !item.trim().is_empty()) {
        let kind = kind_from_str(item)?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// The operator's rules for attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The most bytes the attachments of one message may add up to. [`check_attachment`]
    /// sees one file and refuses a file larger than this on its own; the caller checks
    /// the sum.
    pub max_total_bytes: usize,
    /// The kinds allowed besides PDF, which is always allowed.
    pub allowed: Vec<Kind>,
}

impl Policy {
    /// Whether files of `kind` may be attached.
    pub fn allows(&self, kind: Kind) -> bool {
        kind == Kind::Pdf || self.allowed.contains(&kind)
    }

    /// The allowed kinds, PDF included, in [`Kind::ALL`] order.
    pub fn allowed_kinds(&self) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|kind| self.allows(*kind))
            .collect()
    }
}

/// A file that may be attached, with the type decided from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The kind the content belongs to.
    pub kind: Kind,
    /// The media type to send and serve the file with, decided from the content, never
    /// taken from the browser.
    pub content_type: &'static str,
}

/// Why a file may not be attached. `Display` gives one plain sentence that names the file
/// and, where there is one, what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// A stable code to branch on or count: one of the `Rejection::*` constants.
    pub code: &'static str,
    message: String,
}

impl Rejection {
    /// The file has no content.
    pub const EMPTY: &'static str = "empty";
    /// The file is larger than [`Policy::max_total_bytes`].
    pub const TOO_LARGE: &'static str = "too_large";
    /// The content is of a type the policy does not allow (or that is never allowed).
    pub const TYPE_NOT_ALLOWED: &'static str = "type_not_allowed";
    /// The name or declared type says PDF, but the content is something else.
    pub const NOT_A_PDF: &'static str = "not_a_pdf";
    /// A PDF that cannot be read.
    pub const PDF_DAMAGED: &'static str = "pdf_damaged";
    /// A PDF with too many object streams to check within bounded memory.
    pub const PDF_TOO_COMPLEX: &'static str = "pdf_too_complex";
    /// An encrypted (password-protected) PDF or Office document.
    pub const ENCRYPTED: &'static str = "encrypted";
    /// A PDF that carries JavaScript.
    pub const PDF_JAVASCRIPT: &'static str = "pdf_javascript";
    /// A PDF with launch actions, which start other programs.
    pub const PDF_LAUNCH: &'static str = "pdf_launch";
    /// A PDF with embedded files or file-attachment annotations.
    pub const PDF_EMBEDDED_FILES: &'static str = "pdf_embedded_files";
    /// An Office document with macros.
    pub const MACROS: &'static str = "macros";
    /// XML that is not well-formed.
    pub const XML_MALFORMED: &'static str = "xml_malformed";
    /// XML with a document type declaration, refused to rule out entity expansion.
    pub const XML_DTD: &'static str = "xml_dtd";
    /// Text or XML in an encoding other than UTF-8.
    pub const NOT_UTF8: &'static str = "not_utf8";

    fn new(code: &'static str, message: String) -> Self {
        Rejection { code, message }
    }

    /// The sentence shown to the person who attached the file.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Rejection {}

/// Decides whether a file may be attached to a Direct message.
///
/// The type is decided from `bytes` alone; `name` and `declared_type` (the browser's
/// guess) only name the file in messages and catch a file that claims to be a PDF but is
/// not. `bytes` must already be bounded by the caller (the upload limit): the work done
/// here grows with their length.
pub fn check_attachment(
    name: &str,
    declared_type: Option<&str>,
    bytes: &[u8],
    policy: &Policy,
) -> Result<Accepted, Rejection> {
    let file = display_name(name);
    if bytes.is_empty() {
        return Err(Rejection::new(
            Rejection::EMPTY,
            format!("{file} is empty (0 bytes); check that you chose the right file."),
        ));
    }
    if bytes.len() > policy.max_total_bytes {
        return Err(Rejection::new(
            Rejection::TOO_LARGE,
            format!(
                "{file} is too large ({}); attachments may be at most {} in total.",
                human_size(bytes.len()),
                human_size(policy.max_total_bytes)
            ),
        ));
    }

    let format = sniff::sniff(bytes);
    if claims_pdf(name, declared_type) && format != Format::Pdf {
        return Err(Rejection::new(
            Rejection::NOT_A_PDF,
            format!(
                "{file} is not a PDF: its content is {}.",
                format.description()
            ),
        ));
    }
    let Some(kind) = format.kind().filter(|kind| policy.allows(*kind)) else {
        return Err(not_allowed(&file, format.description(), policy));
    };

    match format {
        Format::Pdf => pdf::check(bytes).map_err(|problem| problem.rejection(&file))?,
        Format::Xml => xml::check(bytes).map_err(|problem| problem.rejection(&file, policy))?,
        Format::LegacyText => return Err(not_utf8(&file, "text")),
        Format::Docx { macros: true } | Format::Doc { macros: true, .. } => {
            return Err(Rejection::new(
                Rejection::MACROS,
                format!(
                    "{file} contains macros, which are not allowed in Direct attachments; \
                     save it as a Word document without macros (.docx) and attach it again."
                ),
            ));
        }
        Format::Doc {
            encrypted: true, ..
        } => return Err(encrypted(&file)),
        _ => {}
    }
    Ok(Accepted {
        kind,
        content_type: format.content_type(),
    })
}

fn not_allowed(file: &str, description: &str, policy: &Policy) -> Rejection {
    Rejection::new(
        Rejection::TYPE_NOT_ALLOWED,
        format!(
            "{file}: this type of file ({description}) is not allowed; allowed types are {}.",
            allowed_list(policy)
        ),
    )
}

fn encrypted(file: &str) -> Rejection {
    Rejection::new(
        Rejection::ENCRYPTED,
        format!(
            "{file} is encrypted (password-protected); remove the password and attach it again."
        ),
    )
}

fn not_utf8(file: &str, what: &str) -> Rejection {
    Rejection::new(
        Rejection::NOT_UTF8,
        format!(
            "{file} is {what} in an encoding other than UTF-8, which is not supported; \
             save it as UTF-8 and attach it again."
        ),
    )
}

/// Whether the file presents itself as a PDF, by its name or by the browser's type.
fn claims_pdf(name: &str, declared_type: Option<&str>) -> bool {
    let by_name = name.trim_end().to_ascii_lowercase().ends_with(".pdf");
    let by_type = declared_type.is_some_and(|declared| {
        let essence = declared.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/pdf")
            || essence.eq_ignore_ascii_case("application/x-pdf")
    });
    by_name || by_type
}

/// The file's name in curly quotes, for the start of a sentence: control characters
/// removed and a long name shortened, since it came from the uploader.
fn display_name(name: &str) -> String {
    const MAX_CHARS: usize = 80;
    let clean: String = name.trim().chars().filter(|c| !c.is_control()).collect();
    if clean.is_empty() {
        return "The attachment".to_owned();
    }
    if clean.chars().count() > MAX_CHARS {
        let short: String = clean.chars().take(MAX_CHARS - 1).collect();
        return format!("“{short}…”");
    }
    format!("“{clean}”")
}

/// "PDF, XML (such as C-CDA) and plain text".
fn allowed_list(policy: &Policy) -> String {
    let names: Vec<&str> = policy
        .allowed_kinds()
        .into_iter()
        .map(Kind::description)
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

/// A size as a person reads it, in decimal units like file managers show.
fn human_size(bytes: usize) -> String {
    if bytes >= 1_000_000 {
        // One decimal place: precision beyond f64's 53 bits does not matter here.
        format!("{:.1} MB", bytes as f64 / 1e6).replace(".0 ", " ")
    } else if bytes >= 1_000 {
        format!("{} kB", bytes / 1_000)
    } else {
        format!("{bytes} bytes")
    }
}
