//! Marking a clinical document as restricted, as the HL7 CDA R2 Implementation Guide
//! "Data Segmentation for Privacy" (DS4P) does: the header's confidentiality raised to
//! R, the Privacy Segmented Document template declared, and a "Privacy and Security
//! Markings" section with the notice for people and one security observation per label
//! for software.
//!
//! The document is read on the same safe path as [`super::parse_cda`] and then
//! rewritten by splicing its own text where roxmltree says elements are: everything
//! that is not added or replaced stays as it was, byte for byte (attributes, comments,
//! white space, namespace declarations, encoding). What is added is written in the
//! document's encoding, with the prefix the document uses for the HL7 v3 namespace at
//! the place it goes, and with every value escaped.

use std::ops::Range;

use roxmltree::Node;

use super::decode::{self, Encoding};
use super::tree::{attr, child, children, has_template, is};
use super::{
    CdaError, CdaLimits, Code, REFRAIN_POLICY, SECURITY_OBSERVATION, read_xml, security_labels,
};

/// DS4P Privacy Segmented Document: the document-level template a labelled document
/// declares.
pub const PRIVACY_SEGMENTED_DOCUMENT: &str = "2.16.840.1.113883.3.3251.1.1";
/// DS4P Privacy Markings Section: the section holding the notice and the labels.
pub const PRIVACY_MARKINGS_SECTION: &str = "2.16.840.1.113883.3.3251.1.5";

/// HL7 v3 Confidentiality (N, R, V).
const HL7_CONFIDENTIALITY: &str = "2.16.840.1.113883.5.25";
/// HL7 v3 ActCode, the code system of the security observations' own codes.
const ACT_CODE: &str = "2.16.840.1.113883.5.4";
const LOINC: &str = "2.16.840.1.113883.6.1";
const XML_SCHEMA_INSTANCE: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// One DS4P security label to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityLabel {
    /// The label, such as `42CFRPart2`, `ETH` or `NORDSCLCD`.
    pub code: String,
    /// Its code system's OID, such as `2.16.840.1.113883.5.4` (ActCode).
    pub system: String,
    /// Its name for people; may be empty.
    pub display: String,
    pub kind: LabelKind,
}

/// Which DS4P observation carries a [`SecurityLabel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelKind {
    /// A policy or sensitivity (observation code SECCATOBS, template
    /// 2.16.840.1.113883.3.445.21).
    Category,
    /// A refrain policy such as NORDSCLCD (code SECCONOBS, template
    /// 2.16.840.1.113883.3.445.23).
    Refrain,
}

impl LabelKind {
    fn template(self) -> &'static str {
        match self {
            LabelKind::Category => SECURITY_OBSERVATION,
            LabelKind::Refrain => REFRAIN_POLICY,
        }
    }

    /// The observation's code (ActCode) and its name.
    fn observation_code(self) -> (&'static str, &'static str) {
        match self {
            LabelKind::Category => ("SECCATOBS", "security category observation"),
            LabelKind::Refrain => ("SECCONOBS", "security control observation"),
        }
    }
}

/// Marks a CDA document as restricted and labels it (DS4P), returning the new document.
///
/// The document must be one [`super::parse_cda`] opens with `limits`; anything it
/// refuses (not a CDA document, a DTD, too large, too deep, damaged) is refused here
/// with the same error. Then:
///
/// - The header's `confidentialityCode` becomes R (restricted, code system
///   2.16.840.1.113883.5.25), unless it is already V (very restricted), which is never
///   lowered. A missing one is added after the header's `effectiveTime`.
/// - The header declares the DS4P Privacy Segmented Document template
///   ([`PRIVACY_SEGMENTED_DOCUMENT`]) after its other `templateId`s.
/// - A `structuredBody` gets, as its first section, a "Privacy and Security Markings"
///   section ([`PRIVACY_MARKINGS_SECTION`], LOINC 57017-6) whose narrative is `notice`
///   (one `paragraph` per block of text between blank lines, line breaks kept as `br`)
///   and with one entry per label: an `observation` with the label's template and
///   code ([`LabelKind`]) and the label as its coded `value`. When the document already
///   has such a section, no second one is added: the labels it does not already carry
///   anywhere are added to that section as entries, and its narrative is left alone.
/// - A `nonXMLBody` (or no body at all) has nowhere to hold a section: only the header
///   changes, and the notice and labels are not written into the document.
///
/// Everything else is left byte for byte as it was, in the document's own encoding.
/// What is added uses the namespace prefix the document uses for HL7 v3 where it goes,
/// follows the document's indentation when it is indented, and has every value escaped.
pub fn mark_restricted(
    bytes: &[u8],
    labels: &[SecurityLabel],
    notice: &str,
    limits: &CdaLimits,
) -> Result<Vec<u8>, CdaError> {
    if bytes.len() > limits.max_bytes {
        return Err(CdaError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let (text, encoding) = decode::decode(bytes)?;
    let (xml, offset) = read_xml(&text, limits)?;
    let root = xml.root_element();
    let source = Source::new(&text, offset, root);
    let labels = distinct(labels);
    // Pushed in document order: edits at the same place are applied in this order.
    let mut edits: Vec<Edit> = Vec::new();
    let header = source.prefix(root);

    let template = (!has_template(root, PRIVACY_SEGMENTED_DOCUMENT)).then(|| {
        last_child(root, &["templateId", "typeId", "realmCode"])
            .map_or(Place::FirstIn(root), Place::After)
    });
    let existing = child(root, "confidentialityCode");
    let confidentiality = existing.is_none().then(|| {
        last_child(
            root,
            &[
                "effectiveTime",
                "title",
                "code",
                "id",
                "templateId",
                "typeId",
                "realmCode",
            ],
        )
        .map_or(Place::FirstIn(root), Place::After)
    });
    match (template, confidentiality) {
        // One edit, so that a bare `<ClinicalDocument/>` is opened once.
        (Some(Place::FirstIn(_)), Some(Place::FirstIn(_))) => {
            edits.push(source.insert(Place::FirstIn(root), header, |w| {
                w.template();
                w.confidentiality();
            }));
        }
        (template, confidentiality) => {
            if let Some(place) = template {
                edits.push(source.insert(place, header, |w| w.template()));
            }
            if let Some(place) = confidentiality {
                edits.push(source.insert(place, header, |w| w.confidentiality()));
            }
        }
    }
    if let Some(existing) = existing
        && !is_restricted_enough(existing)
    {
        let mut w = Writer::new(header, None);
        w.confidentiality();
        edits.push(Edit {
            range: source.range(existing),
            text: w.out,
        });
    }

    let structured = child(root, "component").and_then(|body| child(body, "structuredBody"));
    if let Some(structured) = structured {
        let markings = children(structured, "component")
            .filter_map(|component| child(component, "section"))
            .find(|section| has_template(*section, PRIVACY_MARKINGS_SECTION));
        match markings {
            Some(section) => {
                let present = security_labels(root);
                let missing: Vec<&SecurityLabel> = labels
                    .into_iter()
                    .filter(|label| !present.iter().any(|code| carries(code, label)))
                    .collect();
                if !missing.is_empty() {
                    // Entries go after the section's other entries, before its
                    // subsections.
                    let place =
                        child(section, "component").map_or(Place::LastIn(section), Place::Before);
                    edits.push(source.insert(place, source.prefix(section), |w| {
                        for label in &missing {
                            w.entry(label);
                        }
                    }));
                }
            }
            None => {
                let place =
                    child(structured, "component").map_or(Place::LastIn(structured), Place::Before);
                edits.push(source.insert(place, source.prefix(structured), |w| {
                    w.markings_section(notice, &labels);
                }));
            }
        }
    }

    edits.sort_by_key(|edit| (edit.range.start, edit.range.end));
    Ok(splice(bytes, &text, encoding, &edits))
}

/// Whether an existing header `confidentialityCode` stays: V is never lowered, and an
/// R in the HL7 code system is already what would be written.
fn is_restricted_enough(existing: Node) -> bool {
    let system = attr(existing, "codeSystem");
    match attr(existing, "code") {
        Some("V") => system.is_none_or(|system| system == HL7_CONFIDENTIALITY),
        Some("R") => system == Some(HL7_CONFIDENTIALITY),
        _ => false,
    }
}

/// Whether a label the document carries is `label`: the same code, in the same code
/// system when the document names one.
fn carries(code: &Code, label: &SecurityLabel) -> bool {
    code.code == label.code
        && code
            .system
            .as_deref()
            .is_none_or(|system| label.system.is_empty() || system == label.system)
}

/// `labels` without repeats (same code and code system), first one kept.
fn distinct(labels: &[SecurityLabel]) -> Vec<&SecurityLabel> {
    let mut out: Vec<&SecurityLabel> = Vec::new();
    for label in labels {
        if !out
            .iter()
            .any(|seen| seen.code == label.code && seen.system == label.system)
        {
            out.push(label);
        }
    }
    out
}

/// The last v3 child element of `parent` with one of these names.
fn last_child<'a, 'input>(parent: Node<'a, 'input>, names: &[&str]) -> Option<Node<'a, 'input>> {
    parent
        .children()
        .rev()
        .find(|node| names.iter().any(|name| is(*node, name)))
}

/// Text to put in place of `range` (empty for an insertion) of the decoded text.
struct Edit {
    range: Range<usize>,
    text: String,
}

/// Where new elements go.
#[derive(Clone, Copy)]
enum Place<'a, 'input> {
    /// Right after this element, as its next sibling.
    After(Node<'a, 'input>),
    /// Right before this element, as its previous sibling.
    Before(Node<'a, 'input>),
    /// As the first children of this element.
    FirstIn(Node<'a, 'input>),
    /// As the last children of this element.
    LastIn(Node<'a, 'input>),
}

/// The decoded document, and what is needed to write into it like its author did.
struct Source<'t> {
    /// The whole decoded text.
    text: &'t str,
    /// Where the parsed text starts in `text`: node positions count from there.
    offset: usize,
    /// `\r\n` when the document's lines end so, else `\n`.
    newline: &'static str,
    /// One level of indentation, as the document's top-level elements are indented.
    unit: String,
}

impl<'t> Source<'t> {
    fn new(text: &'t str, offset: usize, root: Node) -> Source<'t> {
        let newline = match text.find('\n') {
            Some(at) if text[..at].ends_with('\r') => "\r\n",
            _ => "\n",
        };
        let mut source = Source {
            text,
            offset,
            newline,
            unit: "  ".to_owned(),
        };
        let outer = source.indent_at(source.range(root).start).unwrap_or("");
        let inner = root
            .children()
            .find(Node::is_element)
            .and_then(|first| source.indent_at(source.range(first).start));
        if let Some(inner) = inner
            && let Some(unit) = inner.strip_prefix(outer)
            && !unit.is_empty()
        {
            source.unit = unit.to_owned();
        }
        source
    }

    /// Where `node` is in `text`.
    fn range(&self, node: Node) -> Range<usize> {
        let range = node.range();
        range.start + self.offset..range.end + self.offset
    }

    /// The prefix of `element`'s name as written (`cda:`), or nothing.
    fn prefix(&self, element: Node) -> &'t str {
        let start = self.range(element).start + 1;
        let name = &self.text[start..];
        let name = &name[..name
            .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
            .unwrap_or(name.len())];
        match name.find(':') {
            Some(colon) => &self.text[start..start + colon + 1],
            None => "",
        }
    }

    /// The white space before `at` on its line, when there is nothing else before it
    /// and it is not the first line.
    fn indent_at(&self, at: usize) -> Option<&'t str> {
        let before = &self.text[..at];
        let space = &before[before.rfind('\n')? + 1..];
        space
            .chars()
            .all(|c| c == ' ' || c == '\t')
            .then_some(space)
    }

    /// Just after the `>` that ends `element`'s start tag.
    fn start_tag_end(&self, element: Node) -> usize {
        let range = self.range(element);
        let mut quote = None;
        for (index, c) in self.text[range.clone()].char_indices() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(open), _) if c == open => quote = None,
                (None, '>') => return range.start + index + 1,
                _ => {}
            }
        }
        range.end
    }

    /// An edit writing, at `place`, what `build` writes, in the namespace prefix
    /// `prefix` (bound to HL7 v3 where the new elements go).
    fn insert(&self, place: Place, prefix: &str, build: impl FnOnce(&mut Writer)) -> Edit {
        let newline = self.newline;
        // The indentation of the new elements' first line, if the document is indented
        // there, and what goes before and after them.
        let (at, indent, before, after): (Range<usize>, Option<String>, String, String) =
            match place {
                Place::After(node) => {
                    let end = self.range(node).end;
                    match self.indent_at(self.range(node).start) {
                        Some(indent) => (
                            end..end,
                            Some(indent.to_owned()),
                            format!("{newline}{indent}"),
                            String::new(),
                        ),
                        None => (end..end, None, String::new(), String::new()),
                    }
                }
                Place::Before(node) => {
                    let start = self.range(node).start;
                    match self.indent_at(start) {
                        Some(indent) => (
                            start..start,
                            Some(indent.to_owned()),
                            String::new(),
                            format!("{newline}{indent}"),
                        ),
                        None => (start..start, None, String::new(), String::new()),
                    }
                }
                Place::FirstIn(parent) | Place::LastIn(parent) => {
                    let range = self.range(parent);
                    let start_end = self.start_tag_end(parent);
                    let parent_indent = self.indent_at(range.start);
                    // As the children are indented, or one level deeper than the parent.
                    let elements = || parent.children().filter(Node::is_element);
                    let sibling = match place {
                        Place::FirstIn(_) => elements().next(),
                        _ => elements().next_back(),
                    };
                    let child_indent = match sibling {
                        Some(sibling) => {
                            self.indent_at(self.range(sibling).start).map(str::to_owned)
                        }
                        None => parent_indent.map(|indent| format!("{indent}{}", self.unit)),
                    };
                    if self.text[..start_end].ends_with("/>") {
                        // `<x/>` becomes `<x>…</x>`.
                        let open = self.text[range.start..start_end - 2].trim_end();
                        let name =
                            &open[1..open.find(|c: char| c.is_whitespace()).unwrap_or(open.len())];
                        let (before, after) = match (&child_indent, parent_indent) {
                            (Some(child), Some(parent)) => (
                                format!("{open}>{newline}{child}"),
                                format!("{newline}{parent}</{name}>"),
                            ),
                            _ => (format!("{open}>"), format!("</{name}>")),
                        };
                        (range, child_indent, before, after)
                    } else if matches!(place, Place::FirstIn(_)) {
                        let before = child_indent
                            .as_ref()
                            .map(|child| format!("{newline}{child}"))
                            .unwrap_or_default();
                        (start_end..start_end, child_indent, before, String::new())
                    } else {
                        let end_tag = self.text[..range.end].rfind("</").unwrap_or(range.end);
                        match (self.indent_at(end_tag), &child_indent) {
                            (Some(closing), Some(child)) => (
                                end_tag..end_tag,
                                Some(child.clone()),
                                child.strip_prefix(closing).unwrap_or_default().to_owned(),
                                format!("{newline}{closing}"),
                            ),
                            _ => (end_tag..end_tag, None, String::new(), String::new()),
                        }
                    }
                }
            };
        let mut writer = Writer::new(
            prefix,
            indent.map(|indent| Layout {
                indent,
                unit: self.unit.clone(),
                newline,
            }),
        );
        build(&mut writer);
        Edit {
            range: at,
            text: format!("{before}{}{after}", writer.out),
        }
    }
}

/// The document's bytes with `edits` (sorted, not overlapping) made, each written in
/// the document's encoding; the bytes between them are copied, never re-encoded.
fn splice(bytes: &[u8], text: &str, encoding: Encoding, edits: &[Edit]) -> Vec<u8> {
    let added: usize = edits.iter().map(|edit| edit.text.len()).sum();
    let mut out = Vec::with_capacity(bytes.len() + added * 2);
    // Byte-order marks, which are not in `text`, come first.
    let mut byte = bytes.len().saturating_sub(encoding.encoded_len(text));
    let mut char_at = 0;
    out.extend_from_slice(&bytes[..byte]);
    for edit in edits {
        if edit.range.start < char_at {
            // Overlapping edits are never made; were one made, it is left out rather
            // than written over another.
            debug_assert!(false, "overlapping edits");
            continue;
        }
        let start = byte + encoding.encoded_len(&text[char_at..edit.range.start]);
        out.extend_from_slice(&bytes[byte..start]);
        out.extend_from_slice(&encoding.encode(&edit.text));
        byte = start + encoding.encoded_len(&text[edit.range.clone()]);
        char_at = edit.range.end;
    }
    out.extend_from_slice(&bytes[byte..]);
    out
}

/// How new elements are laid out: one a line, from `indent`, deeper by `unit`.
struct Layout {
    indent: String,
    unit: String,
    newline: &'static str,
}

/// Writes new elements in the v3 namespace (with `prefix`), escaping every value.
struct Writer<'p> {
    out: String,
    prefix: &'p str,
    /// `None`: everything on one line.
    layout: Option<Layout>,
    depth: usize,
}

impl<'p> Writer<'p> {
    fn new(prefix: &'p str, layout: Option<Layout>) -> Writer<'p> {
        Writer {
            out: String::new(),
            prefix,
            layout,
            depth: 0,
        }
    }

    /// Starts the next element on its own line (but the first).
    fn line(&mut self) {
        if let Some(layout) = &self.layout
            && !self.out.is_empty()
        {
            self.out.push_str(layout.newline);
            self.out.push_str(&layout.indent);
            for _ in 0..self.depth {
                self.out.push_str(&layout.unit);
            }
        }
    }

    fn tag(&mut self, name: &str, attributes: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(self.prefix);
        self.out.push_str(name);
        for (key, value) in attributes {
            self.out.push(' ');
            self.out.push_str(key);
            self.out.push_str("=\"");
            escape_into(&mut self.out, value, true);
            self.out.push('"');
        }
    }

    fn open(&mut self, name: &str, attributes: &[(&str, &str)]) {
        self.line();
        self.tag(name, attributes);
        self.out.push('>');
        self.depth += 1;
    }

    fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.line();
        self.end_tag(name);
    }

    fn end_tag(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(self.prefix);
        self.out.push_str(name);
        self.out.push('>');
    }

    fn empty(&mut self, name: &str, attributes: &[(&str, &str)]) {
        self.line();
        self.tag(name, attributes);
        self.out.push_str("/>");
    }

    /// An element holding only `text`, on one line.
    fn leaf(&mut self, name: &str, text: &str) {
        self.line();
        self.tag(name, &[]);
        self.out.push('>');
        escape_into(&mut self.out, text, false);
        self.end_tag(name);
    }

    fn template(&mut self) {
        self.empty("templateId", &[("root", PRIVACY_SEGMENTED_DOCUMENT)]);
    }

    fn confidentiality(&mut self) {
        self.empty(
            "confidentialityCode",
            &[
                ("code", "R"),
                ("codeSystem", HL7_CONFIDENTIALITY),
                ("displayName", "restricted"),
            ],
        );
    }

    fn markings_section(&mut self, notice: &str, labels: &[&SecurityLabel]) {
        self.open("component", &[]);
        self.open("section", &[]);
        self.empty("templateId", &[("root", PRIVACY_MARKINGS_SECTION)]);
        self.empty(
            "code",
            &[
                ("code", "57017-6"),
                ("codeSystem", LOINC),
                ("codeSystemName", "LOINC"),
                ("displayName", "Privacy policy Organization Document"),
            ],
        );
        self.leaf("title", "Privacy and Security Markings");
        let paragraphs = paragraphs(notice);
        if paragraphs.is_empty() {
            self.empty("text", &[]);
        } else {
            self.open("text", &[]);
            for lines in paragraphs {
                self.line();
                self.tag("paragraph", &[]);
                self.out.push('>');
                for (index, line) in lines.iter().enumerate() {
                    if index > 0 {
                        self.tag("br", &[]);
                        self.out.push_str("/>");
                    }
                    escape_into(&mut self.out, line, false);
                }
                self.end_tag("paragraph");
            }
            self.close("text");
        }
        for label in labels {
            self.entry(label);
        }
        self.close("section");
        self.close("component");
    }

    /// One label as a DS4P security observation.
    fn entry(&mut self, label: &SecurityLabel) {
        self.open("entry", &[]);
        self.open("observation", &[("classCode", "OBS"), ("moodCode", "EVN")]);
        self.empty("templateId", &[("root", label.kind.template())]);
        let (code, display) = label.kind.observation_code();
        self.empty(
            "code",
            &[
                ("code", code),
                ("codeSystem", ACT_CODE),
                ("codeSystemName", "ActCode"),
                ("displayName", display),
            ],
        );
        // The `xsi` prefix is declared on the element itself, whatever the document
        // declares; a document whose v3 prefix is `xsi` gets another one.
        let xsi = if self.prefix == "xsi:" { "xsi2" } else { "xsi" };
        let declaration = format!("xmlns:{xsi}");
        let kind = format!("{xsi}:type");
        let mut attributes = vec![
            (declaration.as_str(), XML_SCHEMA_INSTANCE),
            (kind.as_str(), "CE"),
            ("code", label.code.as_str()),
        ];
        if !label.system.is_empty() {
            attributes.push(("codeSystem", &label.system));
        }
        if !label.display.is_empty() {
            attributes.push(("displayName", &label.display));
        }
        self.empty("value", &attributes);
        self.close("observation");
        self.close("entry");
    }
}

/// The notice as paragraphs (blocks between blank lines) of lines, each trimmed.
fn paragraphs(notice: &str) -> Vec<Vec<&str>> {
    let mut paragraphs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    // Lines end in `\n`, `\r\n` or a lone `\r`.
    for line in notice.lines().flat_map(|line| line.split('\r')) {
        let line = line.trim();
        if line.is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    paragraphs
}

/// Appends `text` escaped for XML content, or for a double-quoted attribute value (line
/// breaks and tabs as character references, which attribute-value normalization would
/// turn into spaces). Characters XML 1.0 cannot hold (§2.2) become U+FFFD.
fn escape_into(out: &mut String, text: &str, attribute: bool) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if u32::from(c) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {
                out.push('\u{fffd}');
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::V3;
    use super::super::{Body, Document, Section, parse_cda};
    use super::*;

    const REFERRAL: &[u8] = include_bytes!("../../tests/fixtures/cda/referral-note.xml");
    const NON_XML: &[u8] = include_bytes!("../../tests/fixtures/cda/hostile-nonxml-html.xml");
    const DTD: &[u8] = include_bytes!("../../tests/fixtures/cda/dtd.xml");
    const BILLION_LAUGHS: &[u8] = include_bytes!("../../tests/fixtures/cda/billion-laughs.xml");

    const NOTICE: &str = "This information has been disclosed to you from records protected by \
                          federal confidentiality rules (42 CFR part 2).";

    fn label(code: &str, display: &str, kind: LabelKind) -> SecurityLabel {
        SecurityLabel {
            code: code.to_owned(),
            system: ACT_CODE.to_owned(),
            display: display.to_owned(),
            kind,
        }
    }

    fn part2() -> Vec<SecurityLabel> {
        vec![
            label("42CFRPart2", "42 CFR Part2", LabelKind::Category),
            label(
                "ETH",
                "substance abuse information sensitivity",
                LabelKind::Category,
            ),
            label(
                "NORDSCLCD",
                "no redisclosure without consent directive",
                LabelKind::Refrain,
            ),
        ]
    }

    #[track_caller]
    fn mark(bytes: &[u8], labels: &[SecurityLabel], notice: &str) -> Vec<u8> {
        mark_restricted(bytes, labels, notice, &CdaLimits::default())
            .unwrap_or_else(|error| panic!("{error}"))
    }

    #[track_caller]
    fn parse(bytes: &[u8]) -> Document {
        parse_cda(bytes, &CdaLimits::default()).unwrap_or_else(|error| panic!("{error}"))
    }

    #[track_caller]
    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[track_caller]
    fn assert_labelled(doc: &Document, labels: &[SecurityLabel]) {
        for label in labels {
            assert!(
                doc.security_labels.contains(&Code {
                    code: label.code.clone(),
                    system: Some(label.system.clone()),
                    display_name: (!label.display.is_empty()).then(|| label.display.clone()),
                }),
                "{label:?} not in {:?}",
                doc.security_labels
            );
        }
    }

    fn is_markings(section: &Section) -> bool {
        section
            .template_ids
            .iter()
            .any(|id| id == PRIVACY_MARKINGS_SECTION)
    }

    /// What identifies a section and its content, whatever its place.
    fn summary(section: &Section) -> (Option<String>, Option<String>, Vec<String>, String, usize) {
        (
            section.loinc().map(str::to_owned),
            section.title.clone(),
            section.template_ids.clone(),
            section.narrative.plain_text(),
            section.sections.len(),
        )
    }

    /// Every element of the document is in the HL7 v3 namespace.
    #[track_caller]
    fn assert_all_v3(bytes: &[u8]) {
        let text = text(bytes);
        let xml = roxmltree::Document::parse(&text).unwrap();
        for element in xml.descendants().filter(roxmltree::Node::is_element) {
            assert_eq!(
                element.tag_name().namespace(),
                Some(V3),
                "{:?}",
                element.tag_name()
            );
        }
    }

    #[test]
    fn a_referral_note_is_marked_restricted_with_a_markings_section_first() {
        let labels = part2();
        let marked = mark(REFERRAL, &labels, NOTICE);
        let original = parse(REFERRAL);
        let doc = parse(&marked);

        let confidentiality = doc.confidentiality.as_ref().unwrap();
        assert_eq!(confidentiality.code, "R");
        assert_eq!(confidentiality.system.as_deref(), Some(HL7_CONFIDENTIALITY));
        let mut templates = original.template_ids.clone();
        templates.push(PRIVACY_SEGMENTED_DOCUMENT.to_owned());
        assert_eq!(doc.template_ids, templates);
        assert_labelled(&doc, &labels);
        assert_eq!(doc.security_labels.len(), labels.len());

        let (first, rest) = doc.sections().split_first().unwrap();
        assert!(is_markings(first), "{first:?}");
        assert_eq!(
            first.title.as_deref(),
            Some("Privacy and Security Markings")
        );
        assert_eq!(first.loinc(), Some("57017-6"));
        assert_eq!(first.narrative.plain_text(), NOTICE);
        let before: Vec<_> = original.sections().iter().map(summary).collect();
        let after: Vec<_> = rest.iter().map(summary).collect();
        assert_eq!(after, before);
        // The header reads as before, but for its confidentiality.
        assert_eq!(doc.title, original.title);
        assert_eq!(doc.patient, original.patient);
        assert_eq!(doc.authors, original.authors);
        assert_eq!(doc.encounter, original.encounter);
    }

    #[test]
    fn every_structured_fixture_is_marked() {
        let fixtures: [&[u8]; 4] = [
            REFERRAL,
            include_bytes!("../../tests/fixtures/cda/hostile.xml"),
            include_bytes!("../../tests/fixtures/cda/eicr.xml"),
            include_bytes!("../../tests/fixtures/cda/reportability-response.xml"),
        ];
        for fixture in fixtures {
            let original = parse(fixture);
            let marked = mark(fixture, &part2(), NOTICE);
            let doc = parse(&marked);
            assert_eq!(doc.confidentiality.as_ref().unwrap().code, "R");
            assert_labelled(&doc, &part2());
            assert_eq!(doc.sections().len(), original.sections().len() + 1);
            assert!(is_markings(&doc.sections()[0]));
            assert_eq!(doc.id, original.id);
            assert_eq!(doc.reportability, original.reportability);
            assert_eq!(mark(&marked, &part2(), NOTICE), marked);
        }
    }

    #[test]
    fn everything_but_the_marks_stays_byte_for_byte() {
        let marked = text(&mark(REFERRAL, &part2(), NOTICE));
        // The section, indented like its siblings, one element a line.
        let start = marked
            .find(
                "<component>\n        <section>\n          \
                 <templateId root=\"2.16.840.1.113883.3.3251.1.5\"/>",
            )
            .unwrap();
        let end = start + marked[start..].find("</component>\n      ").unwrap() + 19;
        let section = &marked[start..end];
        assert!(section.contains(
            "\n          <entry>\n            <observation classCode=\"OBS\" moodCode=\"EVN\">\n              \
             <templateId root=\"2.16.840.1.113883.3.445.23\"/>\n              \
             <code code=\"SECCONOBS\" codeSystem=\"2.16.840.1.113883.5.4\" codeSystemName=\"ActCode\" \
             displayName=\"security control observation\"/>\n              \
             <value xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"CE\" \
             code=\"NORDSCLCD\" codeSystem=\"2.16.840.1.113883.5.4\" \
             displayName=\"no redisclosure without consent directive\"/>\n"
        ));
        let unmarked = format!("{}{}", &marked[..start], &marked[end..])
            .replacen(
                "\n  <templateId root=\"2.16.840.1.113883.3.3251.1.1\"/>",
                "",
                1,
            )
            .replacen(
                "<confidentialityCode code=\"R\" codeSystem=\"2.16.840.1.113883.5.25\" \
                 displayName=\"restricted\"/>",
                "<confidentialityCode code=\"N\" codeSystem=\"2.16.840.1.113883.5.25\"/>",
                1,
            );
        assert_eq!(unmarked, text(REFERRAL));
        // The new template is the header's last one.
        assert!(marked.contains(
            "extension=\"2015-08-01\"/>\n  <templateId root=\"2.16.840.1.113883.3.3251.1.1\"/>\n  <id "
        ));
    }

    #[test]
    fn a_prefixed_document_gets_prefixed_elements() {
        // The default namespace is another one: an unprefixed element would not be CDA.
        let source = "<?xml version=\"1.0\"?><cda:ClinicalDocument xmlns:cda=\"urn:hl7-org:v3\" \
                      xmlns=\"urn:example:other\"><cda:typeId root=\"2.16.840.1.113883.1.3\" \
                      extension=\"POCD_HD000040\"/><cda:templateId root=\"1.2.3\"/><cda:id \
                      root=\"1.2.3.4\"/><cda:effectiveTime value=\"20240312\"/><cda:component>\
                      <cda:structuredBody><cda:component><cda:section><cda:title>Problems\
                      </cda:title><cda:text>None known.</cda:text></cda:section></cda:component>\
                      </cda:structuredBody></cda:component></cda:ClinicalDocument>";
        let labels = [label(
            "PSY",
            "psychiatry disorder information sensitivity",
            LabelKind::Category,
        )];
        let marked = mark(source.as_bytes(), &labels, "Restricted & private");
        let expected = "<?xml version=\"1.0\"?><cda:ClinicalDocument xmlns:cda=\"urn:hl7-org:v3\" \
                      xmlns=\"urn:example:other\"><cda:typeId root=\"2.16.840.1.113883.1.3\" \
                      extension=\"POCD_HD000040\"/><cda:templateId root=\"1.2.3\"/>\
                      <cda:templateId root=\"2.16.840.1.113883.3.3251.1.1\"/><cda:id \
                      root=\"1.2.3.4\"/><cda:effectiveTime value=\"20240312\"/>\
                      <cda:confidentialityCode code=\"R\" codeSystem=\"2.16.840.1.113883.5.25\" \
                      displayName=\"restricted\"/><cda:component>\
                      <cda:structuredBody><cda:component><cda:section>\
                      <cda:templateId root=\"2.16.840.1.113883.3.3251.1.5\"/>\
                      <cda:code code=\"57017-6\" codeSystem=\"2.16.840.1.113883.6.1\" \
                      codeSystemName=\"LOINC\" displayName=\"Privacy policy Organization Document\"/>\
                      <cda:title>Privacy and Security Markings</cda:title><cda:text><cda:paragraph>\
                      Restricted &amp; private</cda:paragraph></cda:text><cda:entry>\
                      <cda:observation classCode=\"OBS\" moodCode=\"EVN\">\
                      <cda:templateId root=\"2.16.840.1.113883.3.445.21\"/>\
                      <cda:code code=\"SECCATOBS\" codeSystem=\"2.16.840.1.113883.5.4\" \
                      codeSystemName=\"ActCode\" displayName=\"security category observation\"/>\
                      <cda:value xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
                      xsi:type=\"CE\" code=\"PSY\" codeSystem=\"2.16.840.1.113883.5.4\" \
                      displayName=\"psychiatry disorder information sensitivity\"/>\
                      </cda:observation></cda:entry></cda:section></cda:component>\
                      <cda:component><cda:section><cda:title>Problems\
                      </cda:title><cda:text>None known.</cda:text></cda:section></cda:component>\
                      </cda:structuredBody></cda:component></cda:ClinicalDocument>";
        assert_eq!(text(&marked), expected);
        assert_all_v3(&marked);
        let doc = parse(&marked);
        assert_eq!(doc.confidentiality.as_ref().unwrap().code, "R");
        assert_labelled(&doc, &labels);
        let titles: Vec<_> = doc.sections().iter().map(Section::display_title).collect();
        assert_eq!(titles, ["Privacy and Security Markings", "Problems"]);

        // Each new element takes the prefix of the element it goes into.
        let mixed = "<ClinicalDocument xmlns=\"urn:hl7-org:v3\">\n  <id root=\"1.2\"/>\n  \
                     <component>\n    <v3:structuredBody xmlns:v3=\"urn:hl7-org:v3\" \
                     xmlns=\"urn:example:other\">\n      <v3:component><v3:section><v3:title>A\
                     </v3:title></v3:section></v3:component>\n    </v3:structuredBody>\n  \
                     </component>\n</ClinicalDocument>\n";
        let marked = mark(mixed.as_bytes(), &labels, "Notice");
        assert_all_v3(&marked);
        let doc = parse(&marked);
        assert!(is_markings(&doc.sections()[0]));
        assert_eq!(doc.sections()[1].title.as_deref(), Some("A"));
        // The new template goes where CDA puts templates: before the `id`.
        assert!(text(&marked).starts_with(
            "<ClinicalDocument xmlns=\"urn:hl7-org:v3\">\n  <templateId \
             root=\"2.16.840.1.113883.3.3251.1.1\"/>\n  <id root=\"1.2\"/>\n  <confidentialityCode"
        ));
    }

    #[test]
    fn very_restricted_stays_very_restricted() {
        let source = text(REFERRAL).replacen(
            "<confidentialityCode code=\"N\"",
            "<confidentialityCode code=\"V\"",
            1,
        );
        let marked = text(&mark(source.as_bytes(), &part2(), NOTICE));
        assert!(
            marked.contains(
                "<confidentialityCode code=\"V\" codeSystem=\"2.16.840.1.113883.5.25\"/>"
            )
        );
        // Only the restricted section of the original says R.
        assert_eq!(marked.matches("code=\"R\"").count(), 1);
        let doc = parse(marked.as_bytes());
        assert_eq!(doc.confidentiality.as_ref().unwrap().code, "V");
        assert_labelled(&doc, &part2());
    }

    #[test]
    fn marking_twice_gives_one_markings_section() {
        let once = mark(REFERRAL, &part2(), NOTICE);
        assert_eq!(mark(&once, &part2(), "Another notice"), once);

        let mut more = part2();
        more.push(label(
            "PSY",
            "psychiatry disorder information sensitivity",
            LabelKind::Category,
        ));
        let twice = mark(&once, &more, "Another notice");
        let doc = parse(&twice);
        let markings: Vec<&Section> = doc.sections().iter().filter(|s| is_markings(s)).collect();
        assert_eq!(markings.len(), 1);
        assert_eq!(markings[0].narrative.plain_text(), NOTICE);
        assert_labelled(&doc, &more);
        assert_eq!(doc.security_labels.len(), more.len());
        assert_eq!(text(&twice).matches("code=\"PSY\"").count(), 1);
        assert_eq!(text(&twice).matches(PRIVACY_SEGMENTED_DOCUMENT).count(), 1);
        assert_eq!(doc.sections().len(), parse(REFERRAL).sections().len() + 1);
    }

    #[test]
    fn a_non_xml_body_gets_only_the_header() {
        let marked = mark(NON_XML, &part2(), NOTICE);
        let doc = parse(&marked);
        assert_eq!(doc.confidentiality.as_ref().unwrap().code, "R");
        assert!(
            doc.template_ids
                .iter()
                .any(|id| id == PRIVACY_SEGMENTED_DOCUMENT)
        );
        assert!(doc.security_labels.is_empty());
        assert!(matches!(&doc.body, Body::NonXml(_)));
        assert_eq!(doc.body, parse(NON_XML).body);
        let unmarked = text(&marked)
            .replacen(
                "\n  <templateId root=\"2.16.840.1.113883.3.3251.1.1\"/>",
                "",
                1,
            )
            .replacen(
                "code=\"R\" codeSystem=\"2.16.840.1.113883.5.25\" displayName=\"restricted\"",
                "code=\"N\" codeSystem=\"2.16.840.1.113883.5.25\"",
                1,
            );
        assert_eq!(unmarked, text(NON_XML));
    }

    #[test]
    fn what_parse_cda_refuses_is_refused() {
        let limits = CdaLimits::default();
        let deep = format!(
            "<ClinicalDocument xmlns=\"urn:hl7-org:v3\">{}{}</ClinicalDocument>",
            "<a>".repeat(300),
            "</a>".repeat(300)
        );
        let cases: [&[u8]; 6] = [
            DTD,
            BILLION_LAUGHS,
            b"<html xmlns=\"http://www.w3.org/1999/xhtml\"><body/></html>",
            b"<ClinicalDocument>no namespace</ClinicalDocument>",
            b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><title></ClinicalDocument>",
            deep.as_bytes(),
        ];
        for bytes in cases {
            let refused = mark_restricted(bytes, &part2(), NOTICE, &limits).unwrap_err();
            assert_eq!(refused, parse_cda(bytes, &limits).unwrap_err());
        }
        assert_eq!(mark_restricted(DTD, &[], "", &limits), Err(CdaError::Dtd));
        let small = CdaLimits {
            max_bytes: 100,
            ..limits
        };
        assert_eq!(
            mark_restricted(REFERRAL, &[], "", &small),
            Err(CdaError::TooLarge { limit: 100 })
        );
    }

    #[test]
    fn hostile_notice_and_labels_are_escaped() {
        let notice = "</text><script>alert(\"x\")</script> & <![CDATA[ ]]> &amp; \u{1}'";
        let labels = [SecurityLabel {
            code: "X\"/><script>".to_owned(),
            system: "1.2&3".to_owned(),
            display: "a\nb\t'c' <d>".to_owned(),
            kind: LabelKind::Refrain,
        }];
        let marked = mark(REFERRAL, &labels, notice);
        let doc = parse(&marked);
        let expected = notice.replace('\u{1}', "\u{fffd}");
        assert_eq!(doc.sections()[0].narrative.plain_text(), expected);
        assert_labelled(&doc, &labels);
        let xml_text = text(&marked);
        let xml = roxmltree::Document::parse(&xml_text).unwrap();
        assert!(!xml.descendants().any(|node| node.has_tag_name("script")));
        let paragraph = xml
            .descendants()
            .find(|node| node.has_tag_name("paragraph"))
            .unwrap();
        assert_eq!(paragraph.text(), Some(expected.as_str()));
    }

    #[test]
    fn a_notice_is_split_into_paragraphs_with_its_line_breaks() {
        let notice = "  First line\nsecond line\r\n\r\n \t\nSecond paragraph\rstill it\n\n";
        let marked = mark(REFERRAL, &[], notice);
        let doc = parse(&marked);
        assert_eq!(
            doc.sections()[0].narrative.plain_text(),
            "First line\nsecond line\nSecond paragraph\nstill it"
        );
        let xml_text = text(&marked);
        let xml = roxmltree::Document::parse(&xml_text).unwrap();
        let section = xml
            .descendants()
            .find(|node| node.has_tag_name("section"))
            .unwrap();
        let paragraphs: Vec<Vec<&str>> = section
            .descendants()
            .filter(|node| node.has_tag_name("paragraph"))
            .map(|paragraph| paragraph.children().filter_map(|n| n.text()).collect())
            .collect();
        assert_eq!(
            paragraphs,
            [
                vec!["First line", "second line"],
                vec!["Second paragraph", "still it"]
            ]
        );
        // No labels, no entries; an empty notice, an empty narrative.
        assert!(!section.children().any(|node| node.has_tag_name("entry")));
        let empty = mark(REFERRAL, &[], "");
        assert!(
            text(&empty)
                .contains("<title>Privacy and Security Markings</title>\n          <text/>\n")
        );
        assert!(parse(&empty).sections()[0].narrative.is_empty());
    }

    #[test]
    fn an_empty_or_bare_body_and_header_are_filled_in() {
        let bare = "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><component>\
                    <structuredBody/></component></ClinicalDocument>";
        let marked = mark(bare.as_bytes(), &part2(), NOTICE);
        assert!(text(&marked).starts_with(
            "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><templateId \
             root=\"2.16.840.1.113883.3.3251.1.1\"/><confidentialityCode code=\"R\""
        ));
        let doc = parse(&marked);
        assert_eq!(doc.confidentiality.as_ref().unwrap().code, "R");
        assert_eq!(doc.sections().len(), 1);
        assert!(is_markings(&doc.sections()[0]));
        assert_labelled(&doc, &part2());

        let empty = "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>";
        let marked = text(&mark(empty.as_bytes(), &part2(), NOTICE));
        assert_eq!(
            marked,
            "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><templateId \
             root=\"2.16.840.1.113883.3.3251.1.1\"/><confidentialityCode code=\"R\" \
             codeSystem=\"2.16.840.1.113883.5.25\" displayName=\"restricted\"/>\
             </ClinicalDocument>"
        );
        assert_eq!(parse(marked.as_bytes()).confidentiality.unwrap().code, "R");

        let indented = "<ClinicalDocument xmlns=\"urn:hl7-org:v3\">\n\t<id root=\"1\"/>\n\t\
                        <component>\n\t\t<structuredBody>\n\t\t</structuredBody>\n\t</component>\n\
                        </ClinicalDocument>";
        let marked = text(&mark(indented.as_bytes(), &[], "N"));
        assert!(marked.contains("\t\t<structuredBody>\n\t\t\t<component>\n\t\t\t\t<section>\n"));
        assert!(marked.contains("\t\t\t</component>\n\t\t</structuredBody>"));
        assert!(marked.contains(
            "\n\t<templateId root=\"2.16.840.1.113883.3.3251.1.1\"/>\n\t<id root=\"1\"/>\n\t\
             <confidentialityCode"
        ));
        assert_eq!(parse(marked.as_bytes()).sections().len(), 1);
    }

    #[test]
    fn other_encodings_stay_in_their_encoding() {
        let notice = "Café – € ✓ 😀";
        // windows-1252: é and – are single bytes; ✓ and 😀 are not in it.
        let mut latin1 = b"<?xml version=\"1.0\" encoding=\"windows-1252\"?>\r\n\
                           <ClinicalDocument xmlns=\"urn:hl7-org:v3\">\r\n  <title>Caf\xe9 \x96 \
                           r\xe9sum\xe9</title>\r\n  <component>\r\n    <structuredBody>\r\n      \
                           <component><section><title>\xc9t\xe9</title></section></component>\r\n    \
                           </structuredBody>\r\n  </component>\r\n</ClinicalDocument>\r\n"
            .to_vec();
        let marked = mark(&latin1, &part2(), notice);
        let doc = parse(&marked);
        assert_eq!(doc.title.as_deref(), Some("Café – résumé"));
        assert_eq!(doc.sections()[0].narrative.plain_text(), notice);
        assert_eq!(doc.sections()[1].title.as_deref(), Some("Été"));
        let written = b"<paragraph>Caf\xe9 \x96 \x80 &#x2713; &#x1F600;</paragraph>";
        assert!(marked.windows(written.len()).any(|w| w == written));
        // CRLF line ends throughout; the original bytes kept.
        assert!(!marked.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
        assert!(marked.ends_with(&latin1[latin1.len() - 80..]));
        latin1.truncate(60);
        assert!(marked.starts_with(&latin1));

        // UTF-16 with a byte-order mark.
        let source = String::from_utf8(REFERRAL.to_vec()).unwrap().replacen(
            "encoding=\"UTF-8\"",
            "encoding=\"UTF-16\"",
            1,
        );
        let utf16: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain(source.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let marked = mark(&utf16, &part2(), notice);
        assert!(marked.starts_with(&utf16[..200]));
        assert!(marked.ends_with(&utf16[utf16.len() - 200..]));
        let doc = parse(&marked);
        assert_eq!(doc.sections()[0].narrative.plain_text(), notice);
        assert_labelled(&doc, &part2());
        let units: Vec<u16> = marked[2..]
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .collect();
        let decoded = String::from_utf16(&units).unwrap();
        assert_eq!(decoded, text(&mark(source.as_bytes(), &part2(), notice)));
    }
}
