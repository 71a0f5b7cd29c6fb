//! XML attachments (C-CDA and others): UTF-8, well-formed, without a DTD, and not a web
//! page or drawing in disguise.

use super::{Policy, Rejection, not_allowed, not_utf8};

/// Roughly 100 bytes of parser memory each; far more than any real C-CDA holds.
const MAX_NODES: u32 = 5_000_000;

const SVG_NAMESPACE: &str = "http://www.w3.org/2000/svg";
const XHTML_NAMESPACE: &str = "http://www.w3.org/1999/xhtml";

/// Why an XML attachment was refused.
#[derive(Debug)]
pub(super) enum Problem {
    NotUtf8,
    Dtd,
    Malformed {
        line: u32,
    },
    /// Well-formed, but its root says it is something browsers render and run scripts
    /// in.
    Disguised(&'static str),
}

impl Problem {
    pub(super) fn rejection(&self, file: &str, policy: &Policy) -> Rejection {
        match self {
            Problem::NotUtf8 => not_utf8(file, "XML"),
            Problem::Dtd => Rejection::new(
                Rejection::XML_DTD,
                format!(
                    "{file} contains a document type declaration (DTD), which is not allowed in \
                     Direct attachments."
                ),
            ),
            Problem::Malformed { line } => Rejection::new(
                Rejection::XML_MALFORMED,
                format!(
                    "{file} does not parse as XML (it may be damaged; the first error is on line \
                     {line})."
                ),
            ),
            Problem::Disguised(description) => not_allowed(file, description, policy),
        }
    }
}

/// Checks XML content that [`super::sniff`] recognised by its leading `<`.
pub(super) fn check(bytes: &[u8]) -> Result<(), Problem> {
    let text = std::str::from_utf8(bytes).map_err(|_| Problem::NotUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // White space before the XML declaration is an error by the letter of XML 1.0 §2.8,
    // but harmless; skip it and count its lines so positions still match the file.
    let body = text.trim_start();
    let skipped_lines = text[..text.len() - body.len()].matches('\n').count();
    // A DTD is refused, not expanded: it is where entity bombs and external entities live.
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    let document =
        roxmltree::Document::parse_with_options(body, options).map_err(|error| match error {
            roxmltree::Error::DtdDetected => Problem::Dtd,
            other => Problem::Malformed {
                line: other
                    .pos()
                    .row
                    .saturating_add(u32::try_from(skipped_lines).unwrap_or(u32::MAX)),
            },
        })?;
    match document.root_element().tag_name().namespace() {
        Some(SVG_NAMESPACE) => Err(Problem::Disguised("an SVG drawing")),
        Some(XHTML_NAMESPACE) => Err(Problem::Disguised("a web page (XHTML)")),
        _ => Ok(()),
    }
}
