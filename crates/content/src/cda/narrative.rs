//! Section narratives (`section/text`, media type `text/x-hl7-text+xml`, CDA R2 §4.3.5)
//! rendered to our own HTML.
//!
//! The narrative block schema is the allowlist: each of its elements maps to one HTML
//! element we write ourselves, with our own class names for `styleCode` and only the
//! attributes listed here. Anything else — `script`, `img`, `iframe`, `style` or `on…`
//! attributes, elements of other namespaces — is left out and counted in [`Stats`].
//!
//! Work happens in two steps. While the document is parsed, [`convert`] walks the
//! `text` element once (a loop over roxmltree's open/close edges, so nesting costs no
//! stack) and keeps a flat list of events built only from the allowed vocabulary:
//! nothing of the input survives but text and values checked here. [`render_narrative`]
//! then writes that list out, escaping every text and attribute value. Elements placed
//! where HTML would move or drop them (a `td` outside a row, an `item` outside a list, a
//! link inside a link) are unwrapped, their text kept, so the browser builds the tree we
//! wrote and every element we open is closed inside the section.
//!
//! Images: `renderMultiMedia` shows only an `observationMedia` of the same document whose
//! value is base64 PNG, JPEG or GIF beginning with that format's signature, decoded and
//! re-encoded here into a `data:` URL, within a per-image and a per-document budget.
//! That is simpler and no less safe than handing the caller references to serve: no
//! route to authorise, nothing fetched, and the page's CSP already allows `img-src
//! data:`. SVG and references outside the document are never shown.

use std::collections::HashMap;
use std::sync::Arc;

use roxmltree::{Node, NodeId};

use super::decode::{base64_decode, base64_encode, percent_encode};
use super::tree::{V3, attr, child, is};
use crate::render::escape_into;

/// What was left out of a narrative, for a note under the document ("3 elements that
/// are not allowed in clinical documents were not shown").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Elements not shown as themselves: elements outside the narrative block schema
    /// (`script`, `img`, `iframe`, …, and every element of another namespace) and
    /// schema elements in a place HTML does not allow (a `td` outside a row). The text
    /// of unknown elements in the CDA namespace is kept; that of `script`, `style` and
    /// other elements whose content is not text for people, and of foreign namespaces,
    /// is not.
    pub dropped_elements: usize,
    /// Attributes outside the schema for their element (`onmouseover`, `style`,
    /// `class`, `href` on anything but `linkHtml`, …) and schema attributes with values
    /// we cannot use (a `colspan` of "many").
    pub dropped_attributes: usize,
    /// `linkHtml` elements whose `href` was not an `http:` or `https:` URL (such as
    /// `javascript:`, `data:` or a relative reference), shown as plain text.
    pub unlinked: usize,
    /// `renderMultiMedia` references not shown: to anything but a PNG, JPEG or GIF
    /// embedded in this document, to an image too large to inline, or to nothing.
    pub images_not_shown: usize,
}

impl Stats {
    /// Whether nothing was left out.
    pub fn is_clean(&self) -> bool {
        *self == Stats::default()
    }
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.dropped_elements += other.dropped_elements;
        self.dropped_attributes += other.dropped_attributes;
        self.unlinked += other.unlinked;
        self.images_not_shown += other.images_not_shown;
    }
}

/// A section's narrative, reduced to what [`render_narrative`] writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Narrative {
    events: Vec<Event>,
    stats: Stats,
}

impl Narrative {
    /// Whether the narrative has no elements and no text.
    pub fn is_empty(&self) -> bool {
        self.events.iter().all(|event| match event {
            Event::Text(text) => text.trim().is_empty(),
            _ => false,
        })
    }

    /// What was left out while reading it.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The narrative as plain text, for search and previews: blocks, rows and list
    /// items on their own lines, cells separated by tabs, white space collapsed.
    pub fn plain_text(&self) -> String {
        let mut out = String::new();
        for event in &self.events {
            match event {
                Event::Text(text) => super::tree::push_collapsed(&mut out, text),
                Event::Open(Tag::Br | Tag::Paragraph | Tag::Item | Tag::Tr, _)
                | Event::Close("</div>" | "</li>" | "</tr>" | "</caption>") => {
                    let trimmed = out.trim_end_matches([' ', '\t']).len();
                    out.truncate(trimmed);
                    if !out.is_empty() && !out.ends_with('\n') {
                        out.push('\n');
                    }
                }
                Event::Open(Tag::Cell { .. }, _)
                    if !out.is_empty() && !out.ends_with(['\n', '\t']) =>
                {
                    out.truncate(out.trim_end_matches(' ').len());
                    out.push('\t');
                }
                _ => {}
            }
        }
        out.trim().to_owned()
    }
}

/// How [`render_narrative`] and [`super::render_document`] write links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions<'a> {
    /// Where links to other sites go: the caller's page that says the user is leaving,
    /// as a prefix to which the percent-encoded URL is appended, such as `/leave?to=`.
    pub leave_prefix: &'a str,
    /// The user's saved order of top-level sections, as LOINC section codes; sections
    /// not named follow in the default order ([`super::default_section_order`]).
    pub section_order: &'a [String],
    /// Sections to show collapsed (their `<details>` without `open`), as LOINC section
    /// codes, at any level; all others are open.
    pub collapsed: &'a [String],
    /// Whether links to other sites open in a new window (`target="_blank"`): for a
    /// document shown in a frame, where the leaving-the-site page cannot be shown.
    pub new_window: bool,
}

impl<'a> RenderOptions<'a> {
    /// Options with this leaving-the-site prefix, the default section order, every
    /// section open, and links opening in the same window.
    pub fn new(leave_prefix: &'a str) -> Self {
        RenderOptions {
            leave_prefix,
            section_order: &[],
            collapsed: &[],
            new_window: false,
        }
    }
}

/// Writes a narrative as HTML, and says what was left out of it.
///
/// The HTML is a fragment to place inside an element of the page; every element it
/// opens it closes. Class names start with `cda-` (`cda-bold`, `cda-paragraph`,
/// `cda-footnote`, …) for the caller's stylesheet; there are no `style` attributes.
/// Links to other sites point at `opts.leave_prefix` followed by the percent-encoded
/// URL, with `rel="noopener noreferrer"`; images are PNG, JPEG or GIF data embedded in
/// the document, as `data:` URLs.
pub fn render_narrative(narrative: &Narrative, opts: &RenderOptions) -> (String, Stats) {
    let mut out = String::with_capacity(narrative.events.len() * 16);
    for event in &narrative.events {
        match event {
            Event::Open(tag, common) => open_tag(&mut out, tag, common, opts),
            Event::Close(close) => out.push_str(close),
            Event::Text(text) => escape_into(&mut out, text),
        }
    }
    (out, narrative.stats)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Open(Tag, Common),
    /// The end tag of the element opened last and not yet closed.
    Close(&'static str),
    Text(String),
}

/// The elements we write. Void ones (`Br`, `Col`, `FootnoteRef`) have no `Close`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tag {
    Content(Revised),
    Paragraph,
    List {
        ordered: bool,
    },
    Item,
    Table,
    TableCaption,
    /// A `caption` anywhere but in a table: an inline heading.
    Caption,
    Thead,
    Tbody,
    Tfoot,
    Tr,
    Cell {
        header: bool,
        colspan: Option<u16>,
        rowspan: Option<u16>,
        scope: Option<&'static str>,
    },
    Col {
        span: Option<u16>,
    },
    Colgroup {
        span: Option<u16>,
    },
    Br,
    Sub,
    Sup,
    Footnote {
        anchor: String,
        number: usize,
    },
    FootnoteRef {
        anchor: String,
        number: usize,
    },
    /// An `http:` or `https:` URL, as the document gave it.
    Link {
        url: String,
    },
    /// One entry per referenced object: the image, or `None` where it is not shown.
    Media {
        images: Vec<Option<Image>>,
    },
}

/// `content/@revised` (CDA R2 §4.3.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revised {
    None,
    Insert,
    Delete,
}

/// An embedded raster image, re-encoded by us.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Image {
    media_type: &'static str,
    base64: Arc<str>,
}

/// The attributes every narrative element may carry, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Common {
    /// Bits of [`STYLE_CLASSES`].
    styles: u8,
    /// `ID`, as `data-cda-id`: letters, digits and `._:-` only.
    id: Option<String>,
    /// `language`, as `lang`.
    lang: Option<String>,
}

/// `styleCode` values (CDA R2 §4.3.5.11) and our classes for them.
const STYLE_CLASSES: [(&str, &str); 8] = [
    ("bold", "cda-bold"),
    ("italics", "cda-italics"),
    ("underline", "cda-underline"),
    ("emphasis", "cda-emphasis"),
    ("lrule", "cda-lrule"),
    ("rrule", "cda-rrule"),
    ("toprule", "cda-toprule"),
    ("botrule", "cda-botrule"),
];

/// Where an element is, for what it may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Text and inline or block elements: the top of `text`, paragraphs, items, cells…
    Flow,
    /// Inside a link: text only.
    Link,
    List,
    Table,
    /// `thead`, `tbody`, `tfoot`.
    RowGroup,
    Row,
    Colgroup,
    Media,
}

struct Frame {
    id: NodeId,
    /// Inside an element left out with its content.
    skipped: bool,
    /// The place of the element's children: for an unwrapped or void element, its
    /// parent's.
    place: Place,
    close: Option<&'static str>,
}

/// Elements whose text is not for people; they are dropped with everything inside.
const DROPPED_WITH_CONTENT: &[&str] = &[
    "script", "style", "iframe", "frame", "frameset", "object", "embed", "applet", "noscript",
    "template", "textarea", "select", "title", "head", "svg", "math", "audio", "video", "canvas",
    "xml", "noembed", "noframes",
];

/// The limits and the embedded media that [`convert`] uses, shared by all sections of a
/// document.
pub(super) struct Media<'a, 'input> {
    /// `observationMedia` elements by their `ID`.
    by_id: HashMap<&'a str, Node<'a, 'input>>,
    /// Images already decoded, by `ID`.
    decoded: HashMap<String, Option<Image>>,
    max_image_bytes: usize,
    /// Bytes of images the document may still inline (each reference counts again:
    /// every one is written out).
    budget: usize,
}

impl<'a, 'input> Media<'a, 'input> {
    pub(super) fn new(
        document: &'a roxmltree::Document<'input>,
        max_image_bytes: usize,
        max_total_image_bytes: usize,
    ) -> Self {
        let by_id = document
            .descendants()
            .filter(|node| is(*node, "observationMedia"))
            .filter_map(|node| Some((attr(node, "ID")?, node)))
            .collect();
        Media {
            by_id,
            decoded: HashMap::new(),
            max_image_bytes,
            budget: max_total_image_bytes,
        }
    }

    /// The image an `observationMedia` with this `ID` holds, if it is a PNG, JPEG or GIF
    /// embedded in base64, within the size limits.
    fn image(&mut self, id: &str) -> Option<Image> {
        if !self.decoded.contains_key(id) {
            let image = self
                .by_id
                .get(id)
                .and_then(|node| decode_image(child(*node, "value")?, self.max_image_bytes));
            self.decoded.insert(id.to_owned(), image);
        }
        let image = self.decoded.get(id)?.clone()?;
        let size = image.base64.len() / 4 * 3;
        self.budget = self.budget.checked_sub(size)?;
        Some(image)
    }
}

/// An ED value holding a raster image: declared PNG, JPEG or GIF, base64, and starting
/// with that format's signature. A `reference` to outside the document is never
/// followed.
fn decode_image(value: Node, max_bytes: usize) -> Option<Image> {
    let declared = attr(value, "mediaType")?.to_ascii_lowercase();
    let (media_type, signature): (&'static str, &[&[u8]]) = match declared.as_str() {
        "image/png" => ("image/png", &[b"\x89PNG\r\n\x1a\n"]),
        "image/jpeg" | "image/jpg" => ("image/jpeg", &[b"\xff\xd8\xff"]),
        "image/gif" => ("image/gif", &[b"GIF87a", b"GIF89a"]),
        _ => return None,
    };
    if attr(value, "representation") != Some("B64") || attr(value, "compression").is_some() {
        return None;
    }
    let data: String = value
        .children()
        .filter(Node::is_text)
        .filter_map(|text| text.text())
        .collect();
    let bytes = base64_decode(&data, max_bytes).ok()?;
    signature
        .iter()
        .any(|magic| bytes.starts_with(magic))
        .then(|| Image {
            media_type,
            base64: base64_encode(&bytes).into(),
        })
}

/// Reads the narrative block `text` into a [`Narrative`]. `scope` makes footnote anchors
/// unique in the page (one per section).
///
/// One pass over the nodes in document order. A stack holds the elements open above
/// the current node: before each node, those that are not its ancestors are closed.
/// Elements inside a skipped one are pushed too, marked skipped, so their text is left
/// out.
pub(super) fn convert(text: Node, scope: &str, media: &mut Media) -> Narrative {
    let footnotes = number_footnotes(text);
    let mut narrative = Narrative::default();
    let mut stack: Vec<Frame> = Vec::new();
    for node in text.descendants().skip(1) {
        let parent = node.parent().map(|parent| parent.id());
        while let Some(top) = stack.last() {
            if Some(top.id) == parent {
                break;
            }
            if let Some(Frame {
                close: Some(close), ..
            }) = stack.pop()
            {
                narrative.events.push(Event::Close(close));
            }
        }
        let (skipped, place) = stack
            .last()
            .map_or((false, Place::Flow), |frame| (frame.skipped, frame.place));
        if node.is_text() {
            let content = node.text().unwrap_or_default();
            let structural = matches!(
                place,
                Place::List | Place::Table | Place::RowGroup | Place::Row | Place::Colgroup
            );
            // White space between rows and cells is layout, not text; HTML would move it
            // out of the table.
            let layout = structural && content.trim().is_empty();
            if !skipped && !layout {
                narrative.events.push(Event::Text(content.to_owned()));
            }
            continue;
        }
        if !node.is_element() {
            continue;
        }
        let mut frame = Frame {
            id: node.id(),
            place,
            close: None,
            skipped,
        };
        if !skipped {
            match read_element(node, place, scope, &footnotes, media, &mut narrative.stats) {
                Reading::Skip => {
                    narrative.stats.dropped_elements += 1;
                    frame.skipped = true;
                }
                Reading::Unwrap => {}
                Reading::Write {
                    tag,
                    common,
                    place,
                    close,
                    first_text,
                } => {
                    narrative.events.push(Event::Open(tag, common));
                    if let Some(text) = first_text {
                        narrative.events.push(Event::Text(text));
                    }
                    frame.place = place.unwrap_or(frame.place);
                    frame.close = close;
                }
            }
        }
        stack.push(frame);
    }
    while let Some(frame) = stack.pop() {
        if let Some(close) = frame.close {
            narrative.events.push(Event::Close(close));
        }
    }
    narrative
}

enum Reading {
    /// Leave the element and everything inside it out.
    Skip,
    /// Leave the element out, keep what is inside.
    Unwrap,
    Write {
        tag: Tag,
        common: Common,
        /// The place of the element's children; `None` for void elements.
        place: Option<Place>,
        close: Option<&'static str>,
        /// Text to write first (a link without text shows its URL).
        first_text: Option<String>,
    },
}

/// Decides what becomes of one element of the narrative, found in `place`.
fn read_element(
    node: Node,
    place: Place,
    scope: &str,
    footnotes: &HashMap<String, usize>,
    media: &mut Media,
    stats: &mut Stats,
) -> Reading {
    let name = node.tag_name().name();
    if node.tag_name().namespace() != Some(V3)
        || DROPPED_WITH_CONTENT
            .iter()
            .any(|dropped| dropped.eq_ignore_ascii_case(name))
    {
        return Reading::Skip;
    }
    let allowed = match place {
        Place::Flow => matches!(
            name,
            "content"
                | "paragraph"
                | "list"
                | "table"
                | "br"
                | "sub"
                | "sup"
                | "footnote"
                | "footnoteRef"
                | "linkHtml"
                | "renderMultiMedia"
                | "caption"
        ),
        Place::Link => false,
        Place::List => matches!(name, "item" | "caption"),
        Place::Table => matches!(
            name,
            "caption" | "col" | "colgroup" | "thead" | "tbody" | "tfoot" | "tr"
        ),
        Place::RowGroup => name == "tr",
        Place::Row => matches!(name, "th" | "td"),
        Place::Colgroup => name == "col",
        Place::Media => name == "caption",
    };
    if !allowed {
        stats.dropped_elements += 1;
        return Reading::Unwrap;
    }
    let common = read_attributes(node, stats);
    let write = |tag, place, close| Reading::Write {
        tag,
        common: common.clone(),
        place,
        close,
        first_text: None,
    };
    match name {
        "content" => {
            let (revised, close) = match attr(node, "revised") {
                Some("insert") => (Revised::Insert, "</ins>"),
                Some("delete") => (Revised::Delete, "</del>"),
                _ => (Revised::None, "</span>"),
            };
            write(Tag::Content(revised), Some(Place::Flow), Some(close))
        }
        "paragraph" => write(Tag::Paragraph, Some(Place::Flow), Some("</div>")),
        "list" => {
            let ordered = attr(node, "listType") == Some("ordered");
            let close = if ordered { "</ol>" } else { "</ul>" };
            write(Tag::List { ordered }, Some(Place::List), Some(close))
        }
        "item" => write(Tag::Item, Some(Place::Flow), Some("</li>")),
        "table" => write(Tag::Table, Some(Place::Table), Some("</table>")),
        "caption" if place == Place::Table => {
            write(Tag::TableCaption, Some(Place::Flow), Some("</caption>"))
        }
        "caption" => write(Tag::Caption, Some(Place::Flow), Some("</span>")),
        "thead" => write(Tag::Thead, Some(Place::RowGroup), Some("</thead>")),
        "tbody" => write(Tag::Tbody, Some(Place::RowGroup), Some("</tbody>")),
        "tfoot" => write(Tag::Tfoot, Some(Place::RowGroup), Some("</tfoot>")),
        "tr" => write(Tag::Tr, Some(Place::Row), Some("</tr>")),
        "th" | "td" => {
            let header = name == "th";
            let cell = Tag::Cell {
                header,
                colspan: span(node, "colspan", stats),
                rowspan: span(node, "rowspan", stats),
                scope: match attr(node, "scope") {
                    None => None,
                    Some("row") => Some("row"),
                    Some("col") => Some("col"),
                    Some("rowgroup") => Some("rowgroup"),
                    Some("colgroup") => Some("colgroup"),
                    Some(_) => {
                        stats.dropped_attributes += 1;
                        None
                    }
                },
            };
            write(
                cell,
                Some(Place::Flow),
                Some(if header { "</th>" } else { "</td>" }),
            )
        }
        "col" => write(
            Tag::Col {
                span: span(node, "span", stats),
            },
            None,
            None,
        ),
        "colgroup" => write(
            Tag::Colgroup {
                span: span(node, "span", stats),
            },
            Some(Place::Colgroup),
            Some("</colgroup>"),
        ),
        "br" => write(Tag::Br, None, None),
        "sub" => write(Tag::Sub, Some(Place::Flow), Some("</sub>")),
        "sup" => write(Tag::Sup, Some(Place::Flow), Some("</sup>")),
        "footnote" => {
            let key = attr(node, "ID").map_or_else(|| anonymous_key(node), str::to_owned);
            let number = footnotes.get(&key).copied().unwrap_or_default();
            write(
                Tag::Footnote {
                    anchor: format!("{scope}-fn-{number}"),
                    number,
                },
                Some(Place::Flow),
                Some("</span>"),
            )
        }
        "footnoteRef" => match attr(node, "IDREF").and_then(|id| footnotes.get(id)) {
            Some(&number) => write(
                Tag::FootnoteRef {
                    anchor: format!("{scope}-fn-{number}"),
                    number,
                },
                None,
                None,
            ),
            // A reference to no footnote shows nothing; what is inside it still shows.
            None => Reading::Unwrap,
        },
        "linkHtml" => match attr(node, "href").and_then(outside_link) {
            Some(url) => {
                let has_text = node
                    .descendants()
                    .any(|d| d.is_text() && !d.text().unwrap_or_default().trim().is_empty());
                Reading::Write {
                    tag: Tag::Link { url: url.clone() },
                    common,
                    place: Some(Place::Link),
                    close: Some("</a>"),
                    first_text: (!has_text).then_some(url),
                }
            }
            None => {
                stats.unlinked += 1;
                Reading::Unwrap
            }
        },
        "renderMultiMedia" => {
            let images: Vec<Option<Image>> = attr(node, "referencedObject")
                .unwrap_or_default()
                .split_whitespace()
                .map(|id| media.image(id))
                .collect();
            let missing = images.iter().filter(|image| image.is_none()).count();
            stats.images_not_shown += if images.is_empty() { 1 } else { missing };
            let images = if images.is_empty() {
                vec![None]
            } else {
                images
            };
            write(Tag::Media { images }, Some(Place::Media), Some("</span>"))
        }
        // `allowed` above lists only the names matched here.
        _ => Reading::Unwrap,
    }
}

/// The attributes of the narrative block schema for each element (CDA R2 NarrativeBlock.xsd).
/// Those we do not write (presentational `width`, `border`, `align`…) are left out
/// silently; any other attribute is counted.
fn schema_attributes(element: &str) -> &'static [&'static str] {
    match element {
        "content" => &["revised"],
        "linkHtml" => &["name", "href", "rel", "rev", "title"],
        "footnoteRef" => &["IDREF"],
        "renderMultiMedia" => &["referencedObject"],
        "list" => &["listType"],
        "table" => &[
            "summary",
            "width",
            "border",
            "frame",
            "rules",
            "cellspacing",
            "cellpadding",
        ],
        "thead" | "tbody" | "tfoot" | "tr" => &["align", "char", "charoff", "valign"],
        "th" | "td" => &[
            "abbr", "axis", "headers", "scope", "rowspan", "colspan", "align", "char", "charoff",
            "valign",
        ],
        "col" | "colgroup" => &["span", "width", "align", "char", "charoff", "valign"],
        _ => &[],
    }
}

/// Reads `ID`, `language` and `styleCode`, and counts attributes outside the schema.
fn read_attributes(node: Node, stats: &mut Stats) -> Common {
    let element = node.tag_name().name();
    let mut common = Common::default();
    for attribute in node.attributes() {
        if attribute.namespace().is_some() {
            stats.dropped_attributes += 1;
            continue;
        }
        let value = attribute.value().trim();
        match attribute.name() {
            "ID" => {
                common.id = (!value.is_empty()
                    && value.len() <= 64
                    && value.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
                    }))
                .then(|| value.to_owned());
            }
            "language" => {
                common.lang = (!value.is_empty()
                    && value.len() <= 35
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                .then(|| value.to_owned());
            }
            "styleCode" => {
                for code in value.split_whitespace() {
                    if let Some(bit) = STYLE_CLASSES
                        .iter()
                        .position(|(name, _)| name.eq_ignore_ascii_case(code))
                    {
                        common.styles |= 1 << bit;
                    }
                }
            }
            other if schema_attributes(element).contains(&other) => {}
            _ => stats.dropped_attributes += 1,
        }
    }
    common
}

/// A `colspan`, `rowspan` or `span` from 1 to 1000 (HTML's own cap for `colspan`).
fn span(node: Node, name: &str, stats: &mut Stats) -> Option<u16> {
    let value = node.attribute(name)?;
    match value.trim().parse::<u16>() {
        Ok(number @ 1..=1000) => Some(number),
        _ => {
            stats.dropped_attributes += 1;
            None
        }
    }
}

/// The URL of a link to another site: `http:` or `https:`, a host, no white space or
/// control characters. Anything else (`javascript:`, `data:`, `#ref`, relative paths)
/// is `None`.
pub(super) fn outside_link(href: &str) -> Option<String> {
    let href = href.trim_matches(|c: char| c.is_ascii_whitespace());
    let rest = strip_prefix_ignoring_case(href, "https://")
        .or_else(|| strip_prefix_ignoring_case(href, "http://"))?;
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if host_end == 0 || href.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    Some(href.to_owned())
}

fn strip_prefix_ignoring_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.get(..prefix.len())?
        .eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Footnotes numbered from 1 in document order, by `ID` (and by position for those
/// without one).
fn number_footnotes(text: Node) -> HashMap<String, usize> {
    let mut numbers = HashMap::new();
    for (index, footnote) in text
        .descendants()
        .filter(|node| is(*node, "footnote"))
        .enumerate()
    {
        let key = attr(footnote, "ID").map_or_else(|| anonymous_key(footnote), str::to_owned);
        numbers.entry(key).or_insert(index + 1);
    }
    numbers
}

/// The key of a footnote without `ID`: one no `ID` attribute can equal, as IDs have no
/// spaces.
fn anonymous_key(node: Node) -> String {
    format!(" {}", node.id().get())
}

fn open_tag(out: &mut String, tag: &Tag, common: &Common, opts: &RenderOptions) {
    let (name, class) = match tag {
        Tag::Content(Revised::None) => ("span", None),
        Tag::Content(Revised::Insert) => ("ins", Some("cda-inserted")),
        Tag::Content(Revised::Delete) => ("del", Some("cda-deleted")),
        Tag::Paragraph => ("div", Some("cda-paragraph")),
        Tag::List { ordered: true } => ("ol", Some("cda-list")),
        Tag::List { ordered: false } => ("ul", Some("cda-list")),
        Tag::Item => ("li", None),
        Tag::Table => ("table", Some("cda-table")),
        Tag::TableCaption => ("caption", None),
        Tag::Caption => ("span", Some("cda-caption")),
        Tag::Thead => ("thead", None),
        Tag::Tbody => ("tbody", None),
        Tag::Tfoot => ("tfoot", None),
        Tag::Tr => ("tr", None),
        Tag::Cell { header: true, .. } => ("th", None),
        Tag::Cell { header: false, .. } => ("td", None),
        Tag::Col { .. } => ("col", None),
        Tag::Colgroup { .. } => ("colgroup", None),
        Tag::Br => ("br", None),
        Tag::Sub => ("sub", None),
        Tag::Sup => ("sup", None),
        Tag::Footnote { .. } => ("span", Some("cda-footnote")),
        Tag::FootnoteRef { .. } => ("sup", Some("cda-footnote-ref")),
        Tag::Link { .. } => ("a", Some("cda-link")),
        Tag::Media { .. } => ("span", Some("cda-media")),
    };
    out.push('<');
    out.push_str(name);
    let classes: Vec<&str> = class
        .into_iter()
        .chain(
            STYLE_CLASSES
                .iter()
                .enumerate()
                .filter(|(bit, _)| common.styles & (1 << bit) != 0)
                .map(|(_, (_, class))| *class),
        )
        .collect();
    if !classes.is_empty() {
        out.push_str(" class=\"");
        out.push_str(&classes.join(" "));
        out.push('"');
    }
    if let Some(id) = &common.id {
        attribute(out, "data-cda-id", id);
    }
    if let Some(lang) = &common.lang {
        attribute(out, "lang", lang);
    }
    match tag {
        Tag::Cell {
            colspan,
            rowspan,
            scope,
            ..
        } => {
            if let Some(colspan) = colspan {
                attribute(out, "colspan", &colspan.to_string());
            }
            if let Some(rowspan) = rowspan {
                attribute(out, "rowspan", &rowspan.to_string());
            }
            if let Some(scope) = scope {
                attribute(out, "scope", scope);
            }
        }
        Tag::Col { span: Some(span) } | Tag::Colgroup { span: Some(span) } => {
            attribute(out, "span", &span.to_string());
        }
        Tag::Footnote { anchor, .. } => attribute(out, "id", anchor),
        Tag::Link { url } => link_attributes(out, url, opts),
        _ => {}
    }
    out.push('>');
    match tag {
        Tag::Footnote { number, .. } => {
            out.push_str(&format!(
                "<sup class=\"cda-footnote-number\">{number}</sup> "
            ));
        }
        Tag::FootnoteRef { anchor, number } => {
            out.push_str("<a href=\"#");
            escape_into(out, anchor);
            out.push_str(&format!("\">{number}</a></sup>"));
        }
        Tag::Media { images } => {
            for image in images {
                match image {
                    Some(image) => {
                        out.push_str(
                            "<img class=\"cda-image\" alt=\"Image from the document\" src=\"data:",
                        );
                        out.push_str(image.media_type);
                        out.push_str(";base64,");
                        // Base64 we wrote ourselves: nothing to escape.
                        out.push_str(&image.base64);
                        out.push_str("\">");
                    }
                    None => out.push_str(
                        "<span class=\"cda-image-withheld\">[An image is not shown: it is not \
                         a picture embedded in this document.]</span>",
                    ),
                }
            }
        }
        _ => {}
    }
}

/// The attributes of a link to `url` through the caller's leaving-the-site page.
fn link_attributes(out: &mut String, url: &str, opts: &RenderOptions) {
    attribute(
        out,
        "href",
        &format!("{}{}", opts.leave_prefix, percent_encode(url)),
    );
    attribute(out, "rel", "noopener noreferrer");
    if opts.new_window {
        attribute(out, "target", "_blank");
    }
    attribute(out, "title", url);
}

/// A whole link to `url` (checked by [`outside_link`]) showing `text`.
pub(super) fn write_link(out: &mut String, url: &str, text: &str, opts: &RenderOptions) {
    out.push_str("<a class=\"cda-link\"");
    link_attributes(out, url, opts);
    out.push('>');
    escape_into(out, text);
    out.push_str("</a>");
}

fn attribute(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    escape_into(out, value);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first `text` element under `node`.
    fn first_text<'a, 'input>(node: Node<'a, 'input>) -> Option<Node<'a, 'input>> {
        node.descendants().find(|n| is(*n, "text"))
    }

    fn render(inner: &str) -> (String, Stats) {
        let xml = format!(
            "<section xmlns='urn:hl7-org:v3' xmlns:x='http://www.w3.org/1999/xhtml'><text>{inner}</text>\
             <entry><observationMedia ID='png1'><value mediaType='image/png' representation='B64'>\
             iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==\
             </value></observationMedia>\
             <observationMedia ID='svg'><value mediaType='image/svg+xml' representation='B64'>PHN2Zz48L3N2Zz4=</value></observationMedia>\
             <observationMedia ID='remote'><value mediaType='image/png'><reference value='http://tracker.example/p.png'/></value></observationMedia>\
             </entry></section>"
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let mut media = Media::new(&doc, 100_000, 1_000_000);
        let narrative = convert(
            first_text(doc.root_element()).unwrap(),
            "cda-s1",
            &mut media,
        );
        render_narrative(&narrative, &RenderOptions::new("/leave?to="))
    }

    #[test]
    fn narrative_elements_map_to_our_own_html() {
        let (html, stats) = render(
            "<paragraph styleCode='Bold Italics xLeft'>Take <content styleCode='Underline'>two</content> \
             tablets<br/>daily H<sub>2</sub>O x<sup>2</sup></paragraph>\
             <list listType='ordered'><caption>Steps</caption><item>One</item><item>Two</item></list>\
             <list><item>Bullet</item></list>",
        );
        assert_eq!(
            html,
            "<div class=\"cda-paragraph cda-bold cda-italics\">Take <span class=\"cda-underline\">two</span> \
             tablets<br>daily H<sub>2</sub>O x<sup>2</sup></div>\
             <ol class=\"cda-list\"><span class=\"cda-caption\">Steps</span><li>One</li><li>Two</li></ol>\
             <ul class=\"cda-list\"><li>Bullet</li></ul>"
        );
        assert!(stats.is_clean(), "{stats:?}");
    }

    #[test]
    fn tables_keep_their_structure_and_bounded_spans() {
        let (html, stats) = render(
            "<table border='1' width='100%'><caption>Labs</caption><colgroup span='2'><col/></colgroup>\
             <thead><tr><th scope='col'>Test</th><th>Value</th></tr></thead>\
             <tbody><tr><td colspan='2' rowspan='99999' styleCode='Botrule'>HbA1c</td></tr></tbody></table>",
        );
        assert_eq!(
            html,
            "<table class=\"cda-table\"><caption>Labs</caption><colgroup span=\"2\"><col></colgroup>\
             <thead><tr><th scope=\"col\">Test</th><th>Value</th></tr></thead>\
             <tbody><tr><td class=\"cda-botrule\" colspan=\"2\">HbA1c</td></tr></tbody></table>"
        );
        assert_eq!(stats.dropped_attributes, 1, "the out-of-range rowspan");
    }

    #[test]
    fn misplaced_table_parts_are_unwrapped_and_their_text_kept() {
        let (html, stats) = render(
            "<paragraph><td>loose cell</td><item>loose item</item></paragraph>\
             <table>\n  <td>cell in a table</td>\n</table>\
             <linkHtml href='https://a.example'>outer <linkHtml href='https://b.example'>inner</linkHtml></linkHtml>",
        );
        assert_eq!(
            html,
            "<div class=\"cda-paragraph\">loose cellloose item</div>\
             <table class=\"cda-table\">cell in a table</table>\
             <a class=\"cda-link\" href=\"/leave?to=https%3A%2F%2Fa.example\" rel=\"noopener noreferrer\" \
             title=\"https://a.example\">outer inner</a>"
        );
        assert_eq!(stats.dropped_elements, 4);
    }

    #[test]
    fn scripts_foreign_elements_and_event_handlers_are_dropped() {
        let (html, stats) = render(
            "<paragraph onmouseover='alert(1)' style='color:red' class='x'>Hi\
             <script>alert('s')</script><SCRIPT>alert('S')</SCRIPT>\
             <x:script>alert('x')</x:script><x:b>bold?</x:b>\
             <img src='http://tracker.example/p.gif'/><iframe src='https://evil.example'>frame text</iframe>\
             <blink>kept text</blink></paragraph>",
        );
        assert_eq!(html, "<div class=\"cda-paragraph\">Hikept text</div>");
        assert_eq!(stats.dropped_elements, 7);
        assert_eq!(stats.dropped_attributes, 3);
    }

    #[test]
    fn only_http_links_are_links_and_they_go_through_the_leaving_page() {
        let (html, stats) = render(
            "<linkHtml href=' JavaScript:alert(1)'>js</linkHtml> \
             <linkHtml href='data:text/html,&lt;script&gt;'>data</linkHtml> \
             <linkHtml href='#ref1'>fragment</linkHtml> <linkHtml href='//evil.example'>relative</linkHtml> \
             <linkHtml href='https:///path'>no host</linkHtml> \
             <linkHtml href='https://x.example/a?b=&quot;c&quot;&amp;d=1' title='t'/>",
        );
        assert_eq!(
            html,
            "js data fragment relative no host \
             <a class=\"cda-link\" href=\"/leave?to=https%3A%2F%2Fx.example%2Fa%3Fb%3D%22c%22%26d%3D1\" \
             rel=\"noopener noreferrer\" title=\"https://x.example/a?b=&quot;c&quot;&amp;d=1\">\
             https://x.example/a?b=&quot;c&quot;&amp;d=1</a>"
        );
        assert_eq!(stats.unlinked, 5);
    }

    #[test]
    fn only_embedded_raster_images_are_shown() {
        let (html, stats) = render(
            "<renderMultiMedia referencedObject='png1'><caption>Wound</caption></renderMultiMedia>\
             <renderMultiMedia referencedObject='svg remote missing'/><renderMultiMedia/>",
        );
        assert!(
            html.starts_with(
                "<span class=\"cda-media\"><img class=\"cda-image\" alt=\"Image from the document\" \
                 src=\"data:image/png;base64,iVBORw0KGgo"
            ),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"cda-caption\">Wound</span></span>"),
            "{html}"
        );
        assert_eq!(html.matches("cda-image-withheld").count(), 4, "{html}");
        assert!(
            !html.contains("tracker.example") && !html.contains("svg+xml"),
            "{html}"
        );
        assert_eq!(stats.images_not_shown, 4);
    }

    #[test]
    fn footnotes_are_numbered_and_referenced_within_the_section() {
        let (html, _) = render(
            "See note<footnoteRef IDREF='fn-a'/>.<footnote ID='fn-a'>Fasting.</footnote>\
             <footnoteRef IDREF='nowhere'/>",
        );
        assert_eq!(
            html,
            "See note<sup class=\"cda-footnote-ref\"><a href=\"#cda-s1-fn-1\">1</a></sup>.\
             <span class=\"cda-footnote\" data-cda-id=\"fn-a\" id=\"cda-s1-fn-1\">\
             <sup class=\"cda-footnote-number\">1</sup> Fasting.</span>"
        );
    }

    #[test]
    fn ids_and_languages_are_kept_only_when_plain() {
        let (html, _) = render(
            "<content ID='m1' language='es-MX'>uno</content>\
             <content ID='a&quot; onclick=&quot;x' language='en US'>dos</content>",
        );
        assert_eq!(
            html,
            "<span data-cda-id=\"m1\" lang=\"es-MX\">uno</span><span>dos</span>"
        );
    }

    #[test]
    fn revisions_show_as_insertions_and_deletions() {
        let (html, _) = render(
            "<content revised='delete'>10 mg</content><content revised='insert'>20 mg</content>",
        );
        assert_eq!(
            html,
            "<del class=\"cda-deleted\">10 mg</del><ins class=\"cda-inserted\">20 mg</ins>"
        );
    }

    #[test]
    fn plain_text_keeps_rows_and_cells_apart() {
        let xml = "<text xmlns='urn:hl7-org:v3'><paragraph>Allergies</paragraph>\
                   <table><tr><td>Penicillin</td><td>Hives</td></tr><tr><td>Latex</td><td>Rash</td></tr></table></text>";
        let doc = roxmltree::Document::parse(xml).unwrap();
        let mut media = Media::new(&doc, 0, 0);
        let narrative = convert(doc.root_element(), "s", &mut media);
        assert_eq!(
            narrative.plain_text(),
            "Allergies\nPenicillin\tHives\nLatex\tRash"
        );
    }

    #[test]
    fn the_image_budget_is_spent_per_reference() {
        let refs = "<renderMultiMedia referencedObject='png1'/>".repeat(3);
        let xml = format!(
            "<section xmlns='urn:hl7-org:v3'><text>{refs}</text><entry><observationMedia ID='png1'>\
             <value mediaType='image/png' representation='B64'>\
             iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==\
             </value></observationMedia></entry></section>"
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        // Room for two copies of the 70-byte image.
        let mut media = Media::new(&doc, 1000, 150);
        let narrative = convert(first_text(doc.root_element()).unwrap(), "s", &mut media);
        let (html, stats) = render_narrative(&narrative, &RenderOptions::new("/l?u="));
        assert_eq!(html.matches("<img").count(), 2);
        assert_eq!(stats.images_not_shown, 1);
    }
}
