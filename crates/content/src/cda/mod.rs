//! Clinical documents (HL7 CDA R2, C-CDA R2.1) read in Rust and shown as our own HTML:
//! no XSLT, no vendor stylesheet.
//!
//! - [`is_cda`] recognises a CDA document from its first bytes (the root element and
//!   its namespace), so that callers pick the viewer by content, never by file name.
//! - [`parse_cda`] reads a document's bytes within [`CdaLimits`] (size, node count,
//!   nesting depth; no DTD, so no entity expansion) in UTF-8, UTF-16 or ISO-8859-1 /
//!   windows-1252, and returns a [`Document`]: the header (patient, authors, custodian,
//!   encounter, type, date, confidentiality, language), the body as [`Section`]s or as a
//!   [`NonXmlBody`] file, and for a Reportability Response the
//!   [`ReportabilityResponse`] card data. A [`CdaError`] displays as one sentence for a
//!   clinician.
//! - [`render_narrative`] writes one section's narrative; [`render_document`] the whole
//!   document with a header summary and collapsible sections. Only the elements of the
//!   CDA narrative block schema become HTML, with our own class names; everything else
//!   is left out and counted ([`Stats`]). Links to other sites go through the caller's
//!   leaving-the-site page; images are only PNG, JPEG or GIF embedded in the document.
//! - [`default_section_order`] and [`saved_section_order`] put the sections clinicians
//!   look for first (reason for referral, problems, medications, allergies, results) or
//!   in the order a user saved.
//! - [`mark_restricted`] labels a document the DS4P way before it is sent: header
//!   confidentiality R (V kept), the Privacy Segmented Document template, and a
//!   "Privacy and Security Markings" section with the notice and the [`SecurityLabel`]s,
//!   spliced into the document's own text so that nothing else changes.
//!
//! Why not the HL7 stylesheet: it has shipped cross-site scripting holes (a base64
//! `nonXMLBody` in an unsandboxed iframe, `onmouseover` on tables, `javascript:` in
//! `linkHtml`) and loads external images. Here a `nonXMLBody` is never HTML, no
//! attribute outside a short list survives, and nothing is fetched.
//!
//! Everything is pure and synchronous: bytes in, values and strings out. Parsing a
//! document of several megabytes takes milliseconds to a few hundred; callers on async
//! code use `spawn_blocking`. No walk over the tree recurses except over nested
//! sections, and those stop at [`MAX_SECTION_NESTING`] levels.

mod body;
mod decode;
mod detect;
mod header;
mod label;
mod narrative;
mod render;
mod rr;
mod tree;

pub use body::{
    Body, MAX_SECTION_NESTING, NonXmlBody, NonXmlContent, PREFERRED_SECTIONS, Section, Viewer,
    default_section_order, saved_section_order,
};
pub use detect::is_cda;
pub use header::{
    Address, Author, Code, Encounter, InstanceId, Patient, PersonName, Time, confidentiality_words,
};
pub use label::{
    LabelKind, PRIVACY_MARKINGS_SECTION, PRIVACY_SEGMENTED_DOCUMENT, SecurityLabel, mark_restricted,
};
pub use narrative::{Narrative, RenderOptions, Stats, render_narrative};
pub use render::render_document;
pub use rr::{
    Agency, Determination, EICR_DOCUMENT_CODE, Jurisdiction, RR_DOCUMENT_CODE,
    RR_DOCUMENT_TEMPLATE, ReportabilityResponse, ReportableCondition, RequestedAction,
    priority_words,
};

/// How much of a document [`parse_cda`] reads. Beyond these the document is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdaLimits {
    /// The document's size in bytes. Default 20 MB: a C-CDA with years of results is a
    /// few megabytes; a scanned record as a `nonXMLBody` is its file size and a third.
    pub max_bytes: usize,
    /// XML nodes (elements, text, comments). Default 1 000 000, about 100 MB of parser
    /// memory; a 10 000-row results table is some 150 000.
    pub max_nodes: u32,
    /// How deeply elements may nest. Default 256: real documents stay under 40, and
    /// browsers flatten HTML deeper than 512.
    pub max_depth: usize,
    /// The decoded file of a `nonXMLBody`. Default 16 MB.
    pub max_body_bytes: usize,
    /// One image shown inline from `renderMultiMedia`. Default 512 KB.
    pub max_image_bytes: usize,
    /// All images shown inline in one document, each reference counted. Default 4 MB.
    pub max_total_image_bytes: usize,
}

impl Default for CdaLimits {
    fn default() -> Self {
        CdaLimits {
            max_bytes: 20_000_000,
            max_nodes: 1_000_000,
            max_depth: 256,
            max_body_bytes: 16_000_000,
            max_image_bytes: 512_000,
            max_total_image_bytes: 4_000_000,
        }
    }
}

/// Why a document was not opened. Displays as one sentence for the clinician.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdaError {
    /// Larger than [`CdaLimits::max_bytes`].
    TooLarge { limit: usize },
    /// An encoding other than UTF-8, UTF-16 and ISO-8859-1 / windows-1252.
    UnsupportedEncoding { name: String },
    /// Bytes that are not valid in the encoding the document uses.
    BadText { encoding: &'static str },
    /// A document type declaration: where entity expansion ("billion laughs") and
    /// external entities live. Never read.
    Dtd,
    /// More nodes than [`CdaLimits::max_nodes`].
    TooManyNodes { limit: u32 },
    /// Nested deeper than [`CdaLimits::max_depth`].
    TooDeep { limit: usize },
    /// Not well-formed XML.
    Malformed { line: u32 },
    /// Well-formed XML, but its root is not an HL7 v3 `ClinicalDocument`.
    NotCda,
}

impl std::fmt::Display for CdaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CdaError::TooLarge { limit } => write!(
                f,
                "This document is larger than the {} this viewer opens; it was not opened.",
                size(*limit)
            ),
            CdaError::UnsupportedEncoding { name } => write!(
                f,
                "This document is written in a character encoding this viewer cannot read \
                 (\u{201c}{name}\u{201d}); it was not opened."
            ),
            CdaError::BadText { encoding } => write!(
                f,
                "This document's text is not valid {encoding}, the encoding it uses; it may be \
                 damaged, and it was not opened."
            ),
            CdaError::Dtd => f.write_str(
                "This document declares a DTD, which is not allowed in a clinical document; it \
                 was not opened.",
            ),
            CdaError::TooManyNodes { limit } => write!(
                f,
                "This document has more parts than this viewer opens (over {limit}); it was not \
                 opened."
            ),
            CdaError::TooDeep { limit } => write!(
                f,
                "This document is nested more deeply than a clinical document should be (over \
                 {limit} levels); it was not opened."
            ),
            CdaError::Malformed { line } => write!(
                f,
                "This document is not well-formed XML (the first error is on line {line}); it \
                 may be damaged, and it was not opened."
            ),
            CdaError::NotCda => f.write_str(
                "This file is XML but not a clinical document (HL7 CDA); it was not opened.",
            ),
        }
    }
}

impl std::error::Error for CdaError {}

/// A byte count for people: "812 bytes", "14 KB", "2.3 MB".
pub(crate) fn size(bytes: usize) -> String {
    match bytes {
        0..1_000 => format!("{bytes} bytes"),
        1_000..1_000_000 => format!("{} KB", bytes / 1_000),
        _ => format!("{:.1} MB", bytes as f64 / 1_000_000.0),
    }
}

/// A parsed clinical document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The document's identifier (`ClinicalDocument/id`).
    pub id: Option<InstanceId>,
    /// The templates it declares conformance to (`templateId/@root`), such as
    /// `2.16.840.1.113883.10.20.22.1.14` for a C-CDA Referral Note.
    pub template_ids: Vec<String>,
    /// The kind of document (`code`, LOINC), such as 57133-1 "Referral note".
    pub document_type: Option<Code>,
    pub title: Option<String>,
    /// When the document was created.
    pub effective_time: Option<Time>,
    /// N (normal), R (restricted) or V (very restricted); see [`confidentiality_words`].
    pub confidentiality: Option<Code>,
    /// `languageCode`, such as `en-US`.
    pub language: Option<String>,
    /// The patient of the first `recordTarget` (C-CDA documents have exactly one).
    pub patient: Option<Patient>,
    pub authors: Vec<Author>,
    /// The organization that keeps the original (`custodian`).
    pub custodian: Option<String>,
    /// `componentOf/encompassingEncounter`.
    pub encounter: Option<Encounter>,
    pub body: Body,
    /// For a Reportability Response ([`Document::is_reportability_response`]), what it
    /// says.
    pub reportability: Option<ReportabilityResponse>,
    /// The values of the DS4P security observations anywhere in the document (Security
    /// Observation 2.16.840.1.113883.3.445.21, Refrain Policy 2.16.840.1.113883.3.445.23):
    /// policies such as `42CFRPart2`, sensitivities such as `ETH` or `PSY`, obligations
    /// and refrain policies such as `NORDSCLCD`. Each code once, in document order.
    pub security_labels: Vec<Code>,
}

impl Document {
    /// The title to show: the document's title, its type's name, or "Clinical document".
    pub fn display_title(&self) -> &str {
        self.title
            .as_deref()
            .or_else(|| {
                self.document_type
                    .as_ref()
                    .and_then(|code| code.display_name.as_deref())
            })
            .unwrap_or("Clinical document")
    }

    /// The top-level sections, in document order; none for a `nonXMLBody`.
    pub fn sections(&self) -> &[Section] {
        match &self.body {
            Body::Structured(sections) => sections,
            _ => &[],
        }
    }

    /// What was left out of all the narratives.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        for section in self.sections() {
            stats += section.stats();
        }
        stats
    }

    /// Whether this is a public health Reportability Response (LOINC 88085-6, or the
    /// RR document template).
    pub fn is_reportability_response(&self) -> bool {
        is_reportability_response(self.document_type.as_ref(), &self.template_ids)
    }
}

fn is_reportability_response(document_type: Option<&Code>, template_ids: &[String]) -> bool {
    document_type.is_some_and(|code| code.code == RR_DOCUMENT_CODE)
        || template_ids.iter().any(|id| id == RR_DOCUMENT_TEMPLATE)
}

/// Reads a CDA document.
///
/// The encoding comes from the byte-order mark or the XML declaration: UTF-8 (also the
/// default), UTF-16, ISO-8859-1 and windows-1252 (both read as windows-1252). A DTD is
/// refused, never expanded; so are documents beyond `limits`. The root must be
/// `ClinicalDocument` in the HL7 v3 namespace; beyond that, missing parts are simply
/// absent from the result, as real documents vary.
pub fn parse_cda(bytes: &[u8], limits: &CdaLimits) -> Result<Document, CdaError> {
    if bytes.len() > limits.max_bytes {
        return Err(CdaError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let text = decode::decode_text(bytes)?;
    let (xml, _) = read_xml(&text, limits)?;
    let root = xml.root_element();
    let header = header::read_header(root);
    let mut media =
        narrative::Media::new(&xml, limits.max_image_bytes, limits.max_total_image_bytes);
    let body = body::read_body(root, limits.max_body_bytes, &mut media);
    let reportability =
        is_reportability_response(header.document_type.as_ref(), &header.template_ids)
            .then(|| rr::read_reportability(root));
    let security_labels = security_labels(root);
    let header::Header {
        id,
        template_ids,
        document_type,
        title,
        effective_time,
        confidentiality,
        language,
        patient,
        authors,
        custodian,
        encounter,
    } = header;
    Ok(Document {
        id,
        template_ids,
        document_type,
        title,
        effective_time,
        confidentiality,
        language,
        patient,
        authors,
        custodian,
        encounter,
        body,
        reportability,
        security_labels,
    })
}

/// The XML of a decoded document, checked as [`parse_cda`] checks it (no DTD, within the
/// node and depth limits, a `ClinicalDocument` in the v3 namespace), and where in `text`
/// the parsed part starts: node positions are counted from there.
fn read_xml<'t>(
    text: &'t str,
    limits: &CdaLimits,
) -> Result<(roxmltree::Document<'t>, usize), CdaError> {
    // White space before the XML declaration is an error by the letter of XML 1.0 §2.8,
    // but harmless; skip it and count its lines so positions still match the file.
    let body = text.trim_start();
    let skipped = text.len() - body.len();
    let skipped_lines = text[..skipped].matches('\n').count();
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: limits.max_nodes,
        ..roxmltree::ParsingOptions::default()
    };
    let xml =
        roxmltree::Document::parse_with_options(body, options).map_err(|error| match error {
            roxmltree::Error::DtdDetected => CdaError::Dtd,
            roxmltree::Error::NodesLimitReached => CdaError::TooManyNodes {
                limit: limits.max_nodes,
            },
            other => CdaError::Malformed {
                line: other
                    .pos()
                    .row
                    .saturating_add(u32::try_from(skipped_lines).unwrap_or(u32::MAX)),
            },
        })?;
    check_depth(&xml, limits.max_depth)?;
    if !tree::is(xml.root_element(), "ClinicalDocument") {
        return Err(CdaError::NotCda);
    }
    Ok((xml, skipped))
}

/// DS4P: the Security Observation and Refrain Policy templates.
const SECURITY_OBSERVATION: &str = "2.16.840.1.113883.3.445.21";
const REFRAIN_POLICY: &str = "2.16.840.1.113883.3.445.23";

/// See [`Document::security_labels`]. One pass over the elements (the parser's node
/// limit bounds it).
fn security_labels(root: roxmltree::Node) -> Vec<Code> {
    let mut labels: Vec<Code> = Vec::new();
    for observation in root.descendants().filter(|n| tree::is(*n, "observation")) {
        if !(tree::has_template(observation, SECURITY_OBSERVATION)
            || tree::has_template(observation, REFRAIN_POLICY))
        {
            continue;
        }
        for value in tree::children(observation, "value") {
            if let Some(code) = header::code(value)
                && !labels.iter().any(|known| known.code == code.code)
            {
                labels.push(code);
            }
        }
    }
    labels
}

/// Refuses documents whose elements nest deeper than `limit`, in one pass over the
/// elements in document order with a stack of the open ones (no recursion, whatever
/// the depth).
fn check_depth(xml: &roxmltree::Document, limit: usize) -> Result<(), CdaError> {
    let mut open: Vec<roxmltree::NodeId> = Vec::new();
    for node in xml.root().descendants().filter(roxmltree::Node::is_element) {
        let parent = node.parent().map(|parent| parent.id());
        while open.last().is_some_and(|top| Some(*top) != parent) {
            open.pop();
        }
        open.push(node.id());
        if open.len() > limit {
            return Err(CdaError::TooDeep { limit });
        }
    }
    Ok(())
}
