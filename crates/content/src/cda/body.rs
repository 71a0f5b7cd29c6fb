//! The document body: sections of a `structuredBody` (CDA R2 §4.3) with their
//! narratives, nested sections and confidentiality, or the single file of a
//! `nonXMLBody` (§4.3.2); and the order in which sections are shown.

use roxmltree::Node;

use super::decode::{Base64Problem, base64_decode};
use super::header::{Code, code};
use super::narrative::{Media, Narrative, Stats, convert};
use super::tree::{attr, child, children, is, text_of};

/// The body of a CDA document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `structuredBody`: the top-level sections, in document order.
    Structured(Vec<Section>),
    /// `nonXMLBody`: one file (a PDF, an image, text…) for the caller's viewers. It is
    /// never rendered as HTML, whatever its media type.
    NonXml(NonXmlBody),
    /// No body at all.
    Empty,
}

/// A section of a structured body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The section's code, normally LOINC (such as `11450-4` for problems).
    pub code: Option<Code>,
    pub title: Option<String>,
    /// A confidentiality that differs from the document's (C-CDA allows one per
    /// section; DS4P uses it to mark restricted sections).
    pub confidentiality: Option<Code>,
    pub language: Option<String>,
    pub template_ids: Vec<String>,
    /// The human-readable narrative (`text`), ready for [`super::render_narrative`].
    pub narrative: Narrative,
    /// Sections inside this one (`component/section`), in document order. At
    /// [`MAX_SECTION_NESTING`], all sections below, flat.
    pub sections: Vec<Section>,
}

impl Section {
    /// The LOINC code of the section, if it has a code.
    pub fn loinc(&self) -> Option<&str> {
        self.code.as_ref().map(|code| code.code.as_str())
    }

    /// The title to show: the section's title, its code's name, or "Untitled section".
    pub fn display_title(&self) -> &str {
        self.title
            .as_deref()
            .or_else(|| {
                self.code
                    .as_ref()
                    .and_then(|code| code.display_name.as_deref())
            })
            .unwrap_or("Untitled section")
    }

    /// What was left out of this section's narrative and those of the sections inside
    /// it.
    pub fn stats(&self) -> Stats {
        let mut stats = self.narrative.stats();
        for section in &self.sections {
            stats += section.stats();
        }
        stats
    }
}

/// The file of a `nonXMLBody`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonXmlBody {
    /// The declared media type, lower-cased and without parameters, such as
    /// `application/pdf`; `application/octet-stream` when none or an invalid one is
    /// given.
    pub media_type: String,
    pub content: NonXmlContent,
}

/// What a `nonXMLBody` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonXmlContent {
    /// The file's bytes (base64-decoded, or the text itself as UTF-8).
    Data(Vec<u8>),
    /// A reference to a file outside the document, which is not fetched; the URL is for
    /// showing only.
    Reference(String),
    /// Compressed data (`compression` attribute: `DF`, `GZ`, `ZL`, `Z`), not inflated.
    Compressed(String),
    /// Data larger than [`super::CdaLimits::max_body_bytes`] once decoded.
    TooLarge,
    /// Base64 data with characters outside the base64 alphabet.
    Unreadable,
}

/// Which of the caller's viewers suits a [`NonXmlBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    /// A PDF (declared `application/pdf` and starting `%PDF-`). Pass it through
    /// [`crate::check_attachment`] before showing it, as any received PDF.
    Pdf,
    /// A PNG, JPEG or GIF, by declared type and signature.
    Image,
    /// `text/plain` in UTF-8: show it escaped, in a `<pre>`.
    PlainText,
    /// Anything else, `text/html` and `text/xml` included: offer it as a download
    /// (`Content-Disposition: attachment`), never inline.
    Download,
}

impl NonXmlBody {
    /// The viewer for this file's content.
    pub fn viewer(&self) -> Viewer {
        let NonXmlContent::Data(bytes) = &self.content else {
            return Viewer::Download;
        };
        match self.media_type.as_str() {
            "application/pdf" if bytes.starts_with(b"%PDF-") => Viewer::Pdf,
            "image/png" if bytes.starts_with(b"\x89PNG\r\n\x1a\n") => Viewer::Image,
            "image/jpeg" if bytes.starts_with(b"\xff\xd8\xff") => Viewer::Image,
            "image/gif" if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") => {
                Viewer::Image
            }
            "text/plain" if std::str::from_utf8(bytes).is_ok() => Viewer::PlainText,
            _ => Viewer::Download,
        }
    }
}

/// Reads the body under `component`.
pub(super) fn read_body(root: Node, max_body_bytes: usize, media: &mut Media) -> Body {
    let Some(component) = child(root, "component") else {
        return Body::Empty;
    };
    if let Some(structured) = child(component, "structuredBody") {
        let mut counter = 0;
        return Body::Structured(read_sections(structured, 1, media, &mut counter));
    }
    match child(component, "nonXMLBody").and_then(|body| child(body, "text")) {
        Some(text) => Body::NonXml(read_non_xml(text, max_body_bytes)),
        None => Body::Empty,
    }
}

/// How deeply sections nest before deeper ones are listed flat, in document order,
/// inside the section at this level. Real documents nest three or four deep; the bound
/// keeps reading, rendering and dropping sections to a fixed recursion depth, whatever
/// the document.
pub const MAX_SECTION_NESTING: usize = 16;

/// The sections in `parent`'s `component`s, at nesting level `level` (1 for the top).
fn read_sections(
    parent: Node,
    level: usize,
    media: &mut Media,
    counter: &mut usize,
) -> Vec<Section> {
    children(parent, "component")
        .filter_map(|component| child(component, "section"))
        .map(|section| read_section(section, Some(level), media, counter))
        .collect()
}

/// Reads one section at `level`; with `None`, one listed flat, without its subsections.
fn read_section(
    node: Node,
    level: Option<usize>,
    media: &mut Media,
    counter: &mut usize,
) -> Section {
    *counter += 1;
    let scope = format!("cda-s{counter}");
    let narrative = child(node, "text")
        .map(|text| convert(text, &scope, media))
        .unwrap_or_default();
    let sections = match level {
        Some(level) if level < MAX_SECTION_NESTING => {
            read_sections(node, level + 1, media, counter)
        }
        // At the deepest level, every section below, flat: a loop, not a recursion.
        Some(_) => node
            .descendants()
            .skip(1)
            .filter(|below| {
                is(*below, "section") && below.parent().is_some_and(|p| is(p, "component"))
            })
            .map(|below| read_section(below, None, media, counter))
            .collect(),
        None => Vec::new(),
    };
    Section {
        code: child(node, "code").and_then(code),
        title: child(node, "title").and_then(text_of),
        confidentiality: child(node, "confidentialityCode").and_then(code),
        language: child(node, "languageCode")
            .and_then(|language| attr(language, "code"))
            .map(str::to_owned),
        template_ids: children(node, "templateId")
            .filter_map(|id| attr(id, "root"))
            .map(str::to_owned)
            .collect(),
        narrative,
        sections,
    }
}

/// The ED value of a `nonXMLBody` (CDA R2 §4.3.2; data type ED).
fn read_non_xml(text: Node, max_body_bytes: usize) -> NonXmlBody {
    let media_type = attr(text, "mediaType")
        .map(|declared| {
            declared
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|declared| is_media_type(declared))
        .unwrap_or_else(|| {
            // ED's default media type is text/plain; without the attribute at all, so is
            // this. A declared but malformed type is not trusted.
            if text.attribute("mediaType").is_none() {
                "text/plain".to_owned()
            } else {
                "application/octet-stream".to_owned()
            }
        });
    let content = if let Some(reference) = child(text, "reference") {
        NonXmlContent::Reference(attr(reference, "value").unwrap_or_default().to_owned())
    } else if let Some(compression) = attr(text, "compression") {
        NonXmlContent::Compressed(compression.to_owned())
    } else {
        let data: String = text
            .children()
            .filter(Node::is_text)
            .filter_map(|node| node.text())
            .collect();
        if attr(text, "representation") == Some("B64") {
            match base64_decode(&data, max_body_bytes) {
                Ok(bytes) => NonXmlContent::Data(bytes),
                Err(Base64Problem::TooLarge) => NonXmlContent::TooLarge,
                Err(Base64Problem::Invalid) => NonXmlContent::Unreadable,
            }
        } else if data.len() > max_body_bytes {
            NonXmlContent::TooLarge
        } else {
            NonXmlContent::Data(data.into_bytes())
        }
    };
    NonXmlBody {
        media_type,
        content,
    }
}

/// `type/subtype` of RFC 6838 token characters.
fn is_media_type(text: &str) -> bool {
    let token = |part: &str| {
        !part.is_empty()
            && part.len() <= 127
            && part.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'!' | b'#' | b'$' | b'&' | b'^' | b'_' | b'.' | b'+' | b'-'
                    )
            })
    };
    text.split_once('/')
        .is_some_and(|(kind, subtype)| token(kind) && token(subtype))
}

/// Sections shown first, in this order, when the user has not chosen one: Reason for
/// referral, Problems, Medications, Allergies, Results (LOINC section codes).
pub const PREFERRED_SECTIONS: [&str; 5] = ["42349-1", "11450-4", "10160-0", "48765-2", "30954-2"];

/// The top-level sections in the order to show them: those of
/// [`PREFERRED_SECTIONS`] first, in that order, then the rest in document order.
/// Several sections with the same code keep their document order.
pub fn default_section_order(sections: &[Section]) -> Vec<&Section> {
    saved_section_order(sections, &[] as &[&str])
}

/// The top-level sections in a user's saved order: sections whose LOINC code is in
/// `saved` first, in that order; then the others in the default order
/// ([`default_section_order`]). Codes in `saved` that the document does not have are
/// ignored. Nested sections stay inside their parent, in document order.
pub fn saved_section_order<'a>(
    sections: &'a [Section],
    saved: &[impl AsRef<str>],
) -> Vec<&'a Section> {
    let saved: Vec<&str> = saved.iter().map(AsRef::as_ref).collect();
    let position = |list: &[&str], code: Option<&str>| {
        code.and_then(|code| list.iter().position(|listed| *listed == code))
            .unwrap_or(usize::MAX)
    };
    let mut ordered: Vec<(usize, usize, usize, &Section)> = sections
        .iter()
        .enumerate()
        .map(|(index, section)| {
            (
                position(&saved, section.loinc()),
                position(&PREFERRED_SECTIONS, section.loinc()),
                index,
                section,
            )
        })
        .collect();
    ordered.sort_by_key(|&(saved, preferred, index, _)| (saved, preferred, index));
    ordered.into_iter().map(|(.., section)| section).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(loinc: &str) -> Section {
        Section {
            code: (!loinc.is_empty()).then(|| Code {
                code: loinc.to_owned(),
                system: None,
                display_name: None,
            }),
            title: Some(loinc.to_owned()),
            confidentiality: None,
            language: None,
            template_ids: vec![],
            narrative: Narrative::default(),
            sections: vec![],
        }
    }

    fn codes(sections: Vec<&Section>) -> Vec<&str> {
        sections
            .into_iter()
            .map(|section| section.title.as_deref().unwrap_or_default())
            .collect()
    }

    #[test]
    fn preferred_sections_come_first_and_the_rest_keep_document_order() {
        let sections: Vec<Section> = [
            "29762-2", "30954-2", "", "48765-2", "11450-4", "42349-1", "10160-0", "18776-5",
        ]
        .map(section)
        .into();
        assert_eq!(
            codes(default_section_order(&sections)),
            [
                "42349-1", "11450-4", "10160-0", "48765-2", "30954-2", "29762-2", "", "18776-5"
            ]
        );
    }

    #[test]
    fn a_saved_order_goes_first_and_unknown_codes_are_ignored() {
        let sections: Vec<Section> = ["29762-2", "30954-2", "11450-4", "8716-3", "11450-4"]
            .map(section)
            .into();
        let saved = ["8716-3", "99999-9", "29762-2"];
        assert_eq!(
            codes(saved_section_order(&sections, &saved)),
            ["8716-3", "29762-2", "11450-4", "11450-4", "30954-2"]
        );
    }

    #[test]
    fn non_xml_bodies_are_classified_by_type_and_content() {
        let body = |media_type: &str, bytes: &[u8]| NonXmlBody {
            media_type: media_type.to_owned(),
            content: NonXmlContent::Data(bytes.to_vec()),
        };
        assert_eq!(body("application/pdf", b"%PDF-1.7").viewer(), Viewer::Pdf);
        assert_eq!(
            body("application/pdf", b"<html>").viewer(),
            Viewer::Download
        );
        assert_eq!(body("image/gif", b"GIF89a..").viewer(), Viewer::Image);
        assert_eq!(body("text/plain", b"hello").viewer(), Viewer::PlainText);
        assert_eq!(body("text/html", b"<b>hi</b>").viewer(), Viewer::Download);
        assert!(is_media_type("application/pdf"));
        assert!(!is_media_type("text/html\"><script>"));
        assert!(!is_media_type("pdf"));
    }
}
