//! HTML bodies: a sanitiser for display (ammonia, after a pass of our own that removes
//! forms and remote images and counts them), and a converter to plain text.

use std::borrow::Cow;
use std::sync::LazyLock;

use html5ever::serialize::{SerializeOpts, serialize};
use html5ever::tendril::TendrilSink;
use html5ever::{ParseOpts, QualName, local_name, ns, parse_fragment};
use markup5ever_rcdom::{Handle, NodeData, RcDom, SerializableHandle};

/// A sanitised HTML body and what was taken out of it, so the page can say
/// "2 remote images were blocked".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sanitized {
    /// HTML that is safe to place inside a page: no scripts, event handlers, styles,
    /// frames, forms or remote resources; links open in a new tab without a referrer.
    pub html: String,
    /// `<img>` elements removed because their source was not an inline PNG, JPEG or GIF
    /// (`data:image/...;base64,`): remote images, which would tell the sender when and
    /// where the message was read, and `cid:` references the caller did not inline.
    pub blocked_images: usize,
    /// `<form>` elements removed with everything inside them.
    pub removed_forms: usize,
}

/// Sanitises an HTML body for display; see [`Sanitized::html`].
///
/// Inline images that refer to other parts of the message (`cid:`) are removed like
/// remote ones: a caller that wants them shown rewrites them to `data:` URLs first.
pub fn sanitize_html(html: &str) -> String {
    sanitize_html_report(html).html
}

/// Like [`sanitize_html`], also counting the images and forms that were removed.
pub fn sanitize_html_report(html: &str) -> Sanitized {
    let dom = parse(html);
    let Some(root) = fragment_root(&dom) else {
        return Sanitized {
            html: String::new(),
            blocked_images: 0,
            removed_forms: 0,
        };
    };
    let (blocked_images, removed_forms) = remove_forms_and_remote_images(&root);
    let mut stripped = Vec::new();
    if serialize(
        &mut stripped,
        &SerializableHandle::from(root),
        SerializeOpts::default(),
    )
    .is_err()
    {
        // Writing to a Vec does not fail; should it, show nothing rather than the input.
        stripped.clear();
    }
    Sanitized {
        html: CLEANER
            .clean(&String::from_utf8_lossy(&stripped))
            .to_string(),
        blocked_images,
        removed_forms,
    }
}

/// ammonia's defaults (no scripts, event handlers, `style`, frames, objects, `<base>`,
/// `<meta>` or `<link>`), narrowed to the link schemes and images this webmail shows.
static CLEANER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut builder = ammonia::Builder::default();
    builder
        // Removed with their content, not just unwrapped: text inside these is not part
        // of the message as read.
        .add_clean_content_tags(["form", "title", "noscript", "textarea", "select"])
        // `data` only for inline images; `filter_attribute` keeps it off links.
        .url_schemes(["http", "https", "mailto", "data"].into())
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(Some("noopener noreferrer"))
        .set_tag_attribute_value("a", "target", "_blank")
        .attribute_filter(filter_attribute);
    builder
});

/// Keeps image sources to inline images and links to http, https and mailto, whatever
/// schemes are allowed for URLs in general.
fn filter_attribute<'u>(element: &str, attribute: &str, value: &'u str) -> Option<Cow<'u, str>> {
    let keep = match attribute {
        "src" => element == "img" && is_inline_image(value),
        "href" => is_link(value),
        // `cite` is a URL too, shown to nobody; it need not risk a `data:` document.
        "cite" => false,
        _ => true,
    };
    keep.then_some(Cow::Borrowed(value))
}

fn is_link(value: &str) -> bool {
    let value = value.trim_start().to_ascii_lowercase();
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| value.starts_with(scheme))
}

/// A base64 `data:` URL of a PNG, JPEG or GIF image.
fn is_inline_image(value: &str) -> bool {
    let value = value.trim();
    let Some((header, data)) = value.split_once(',') else {
        return false;
    };
    let header = header.to_ascii_lowercase();
    [
        "data:image/png;base64",
        "data:image/jpeg;base64",
        "data:image/gif;base64",
    ]
    .contains(&header.as_str())
        && data.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') || b.is_ascii_whitespace()
        })
}

/// Parses the way ammonia does: as the content of a `<div>`, after [`limit_nesting`].
fn parse(html: &str) -> RcDom {
    let context = QualName::new(None, ns!(html), local_name!("div"));
    parse_fragment(
        RcDom::default(),
        ParseOpts::default(),
        context,
        vec![],
        false,
    )
    .one(&*limit_nesting(html))
}

/// How deeply elements may nest before their tags are dropped. Browsers cap it too
/// (Blink at 512); real mail stays far below.
const MAX_DEPTH: usize = 256;

/// Elements without content, and elements whose end tag is optional because the parser
/// closes them by itself: neither makes the tree deeper.
const NO_DEPTH: &[&str] = &[
    "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "image", "img",
    "input", "keygen", "link", "meta", "param", "source", "track", "wbr", "html", "head", "body",
    "p", "li", "dt", "dd", "tr", "td", "th", "thead", "tbody", "tfoot", "caption", "colgroup",
    "option", "optgroup", "rb", "rt", "rtc", "rp",
];

/// Elements whose content is text up to their end tag, not markup.
const RAW_TEXT: &[&str] = &[
    "script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "noscript",
];

/// Drops start tags that would open an element deeper than [`MAX_DEPTH`], and as many end
/// tags, keeping all text.
///
/// html5ever checks which elements are "in scope" by walking the stack of open
/// elements, for many start and end tags, so the time to parse nested `<div>`s grows
/// with the square of their number: a megabyte of them takes minutes. This linear scan
/// tracks the depth only roughly (it does not know which tags the parser will close on
/// its own), which costs fidelity only in messages nested absurdly deep or full of
/// unclosed tags; the parser and ammonia still see everything that is kept.
fn limit_nesting(html: &str) -> Cow<'_, str> {
    let bytes = html.as_bytes();
    let mut kept: Option<String> = None;
    let mut copied = 0;
    let mut depth = 0_usize;
    let mut i = 0;
    while let Some(at) = bytes[i..]
        .iter()
        .position(|&b| b == b'<')
        .map(|offset| i + offset)
    {
        let rest = &html[at..];
        if rest.starts_with("<!--") {
            i = rest.find("-->").map_or(bytes.len(), |end| at + end + 3);
            continue;
        }
        let closing = rest.starts_with("</");
        let name_start = at + 1 + usize::from(closing);
        let name_len = bytes[name_start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b':'))
            .count();
        if !bytes.get(name_start).is_some_and(u8::is_ascii_alphabetic) {
            // `<!doctype>`, `<?pi>`, or a lone `<` in text.
            i = at + 1;
            continue;
        }
        let name = html[name_start..name_start + name_len].to_ascii_lowercase();
        let end = html[name_start..]
            .find('>')
            .map_or(bytes.len(), |end| name_start + end + 1);
        i = end;
        if !closing && name == "plaintext" {
            break;
        }
        if !closing && RAW_TEXT.contains(&name.as_str()) {
            // Skip to the end tag; the start tag itself is kept or dropped like any other.
            let close = format!("</{name}");
            i = bytes[end..]
                .windows(close.len())
                .position(|window| window.eq_ignore_ascii_case(close.as_bytes()))
                .map_or(bytes.len(), |offset| end + offset);
        }
        if NO_DEPTH.contains(&name.as_str()) {
            continue;
        }
        let too_deep = if closing {
            let too_deep = depth > MAX_DEPTH;
            depth = depth.saturating_sub(1);
            too_deep
        } else {
            depth += 1;
            depth > MAX_DEPTH
        };
        if too_deep {
            kept.get_or_insert_with(String::new)
                .push_str(&html[copied..at]);
            copied = end;
        }
    }
    match kept {
        None => Cow::Borrowed(html),
        Some(mut kept) => {
            kept.push_str(&html[copied..]);
            Cow::Owned(kept)
        }
    }
}

/// The element that holds a parsed fragment's nodes.
fn fragment_root(dom: &RcDom) -> Option<Handle> {
    dom.document.children.borrow().first().cloned()
}

/// The local name of an HTML element (not of an SVG or MathML one).
fn html_element_name(node: &Handle) -> Option<&str> {
    match &node.data {
        NodeData::Element { name, .. } if name.ns == ns!(html) => Some(&name.local),
        _ => None,
    }
}

fn attribute(node: &Handle, wanted: &str) -> Option<String> {
    match &node.data {
        NodeData::Element { attrs, .. } => attrs
            .borrow()
            .iter()
            .find(|attr| &*attr.name.local == wanted)
            .map(|attr| attr.value.to_string()),
        _ => None,
    }
}

/// Removes `<form>` elements (with their content) and `<img>` elements without an inline
/// image source. Returns how many images that had a source, and how many forms, went.
fn remove_forms_and_remote_images(root: &Handle) -> (usize, usize) {
    let (mut images, mut forms) = (0, 0);
    // Iterative: a hostile message can nest elements deeply.
    let mut stack = vec![root.clone()];
    while let Some(node) = stack.pop() {
        node.children
            .borrow_mut()
            .retain(|child| match html_element_name(child) {
                Some("form") => {
                    forms += 1;
                    false
                }
                Some("img") => match attribute(child, "src") {
                    Some(src) if is_inline_image(&src) => true,
                    Some(_) => {
                        images += 1;
                        false
                    }
                    None => false,
                },
                _ => true,
            });
        stack.extend(node.children.borrow().iter().cloned());
        if let NodeData::Element {
            template_contents, ..
        } = &node.data
        {
            stack.extend(template_contents.borrow().iter().cloned());
        }
    }
    (images, forms)
}

/// Plain text of an HTML body, for the search index and for snippets.
///
/// Entities are decoded; `<script>`, `<style>`, `<head>` and `<title>` content is
/// dropped; block elements and `<br>` end lines; text inside `<blockquote>` is prefixed
/// with `> `, as quoted plain text is, so that [`crate::snippet`] skips it.
pub fn html_to_text(html: &str) -> String {
    let dom = parse(html);
    let mut writer = TextWriter::default();
    let mut stack: Vec<Step> = fragment_root(&dom)
        .map(Step::Children)
        .into_iter()
        .collect();
    while let Some(step) = stack.pop() {
        match step {
            Step::Children(node) => {
                stack.extend(
                    node.children
                        .borrow()
                        .iter()
                        .rev()
                        .cloned()
                        .map(Step::Enter),
                );
            }
            Step::Enter(node) => match &node.data {
                NodeData::Text { contents } => writer.text(&contents.borrow()),
                NodeData::Element { name, .. } => {
                    let tag = Tag::of(&name.local);
                    if tag == Tag::Hidden {
                        continue;
                    }
                    writer.open(tag);
                    stack.push(Step::Leave(tag));
                    stack.push(Step::Children(node.clone()));
                }
                _ => {}
            },
            Step::Leave(tag) => writer.close(tag),
        }
    }
    writer.finish()
}

enum Step {
    Enter(Handle),
    Children(Handle),
    Leave(Tag),
}

/// How an element shapes the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Hidden,
    Inline,
    Block,
    LineBreak,
    Cell,
    Pre,
    Quote,
}

impl Tag {
    fn of(name: &str) -> Tag {
        match name {
            "script" | "style" | "head" | "title" | "template" | "noscript" | "select" => {
                Tag::Hidden
            }
            "br" => Tag::LineBreak,
            "td" | "th" => Tag::Cell,
            "pre" => Tag::Pre,
            "blockquote" => Tag::Quote,
            "p" | "div" | "li" | "tr" | "table" | "ul" | "ol" | "dl" | "dt" | "dd" | "hr"
            | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "section" | "article" | "header"
            | "footer" | "address" | "center" | "form" | "fieldset" | "figure" | "figcaption"
            | "main" | "nav" | "aside" => Tag::Block,
            _ => Tag::Inline,
        }
    }
}

/// Builds the text a line at a time, collapsing white space as HTML does (except in
/// `<pre>`).
#[derive(Default)]
struct TextWriter {
    out: String,
    quote_depth: usize,
    pre_depth: usize,
    at_line_start: bool,
    pending_space: bool,
}

impl TextWriter {
    fn open(&mut self, tag: Tag) {
        match tag {
            Tag::Block | Tag::LineBreak => self.end_line(),
            Tag::Pre => {
                self.end_line();
                self.pre_depth += 1;
            }
            Tag::Quote => {
                self.end_line();
                self.quote_depth += 1;
            }
            Tag::Cell => self.pending_space = true,
            Tag::Hidden | Tag::Inline => {}
        }
    }

    fn close(&mut self, tag: Tag) {
        match tag {
            Tag::Block => self.end_line(),
            Tag::Pre => {
                self.end_line();
                self.pre_depth -= 1;
            }
            Tag::Quote => {
                self.end_line();
                self.quote_depth -= 1;
            }
            Tag::Cell => self.pending_space = true,
            Tag::Hidden | Tag::Inline | Tag::LineBreak => {}
        }
    }

    fn text(&mut self, text: &str) {
        if self.pre_depth > 0 {
            for (index, line) in text.split('\n').enumerate() {
                if index > 0 {
                    self.end_line();
                }
                self.word(line.trim_end_matches('\r'));
            }
            return;
        }
        if text.starts_with(char::is_whitespace) {
            self.pending_space = true;
        }
        for word in text.split_whitespace() {
            self.word(word);
            self.pending_space = true;
        }
        if !text.ends_with(char::is_whitespace) {
            self.pending_space = false;
        }
    }

    fn word(&mut self, word: &str) {
        // Zero-width characters that newsletters pad their preview text with.
        let word: String = word
            .chars()
            .filter(|c| {
                !matches!(
                    c,
                    '\u{200b}'..='\u{200d}' | '\u{feff}' | '\u{034f}' | '\u{ad}'
                )
            })
            .collect();
        if word.is_empty() {
            return;
        }
        if self.at_line_start || self.out.is_empty() {
            for _ in 0..self.quote_depth {
                self.out.push_str("> ");
            }
            self.at_line_start = false;
        } else if self.pending_space {
            self.out.push(' ');
        }
        self.out.push_str(&word);
        self.pending_space = false;
    }

    fn end_line(&mut self) {
        if !self.out.is_empty() && !self.at_line_start {
            self.out.push('\n');
        }
        self.at_line_start = true;
        self.pending_space = false;
    }

    fn finish(self) -> String {
        self.out.trim_end().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sanitized(html: &str) -> String {
        sanitize_html(html)
    }

    #[test]
    fn scripts_and_event_handlers_are_removed() {
        let out = sanitized(
            r#"<p onclick="steal()">Hi<script>alert(1)</script></p><img src=x onerror=alert(1)>"#,
        );
        assert_eq!(out, "<p>Hi</p>");
    }

    #[test]
    fn javascript_and_data_links_lose_their_href() {
        let out = sanitized(
            r#"<a href="javascript:alert(1)">a</a><a href=" JaVaScRiPt:alert(1)">b</a><a href="java&#x09;script:alert(1)">c</a><a href="data:text/html,<script>alert(1)</script>">d</a><a href="vbscript:x">e</a>"#,
        );
        assert!(!out.contains("href"), "{out}");
        assert!(out.contains(">a</a>") && out.contains(">e</a>"), "{out}");
    }

    #[test]
    fn links_open_in_a_new_tab_without_referrer_and_keep_http_https_mailto() {
        let out = sanitized(
            r#"<a href="https://example.org/a?b=1&amp;c=2" target="_self" rel="opener">x</a><a href="mailto:a@example.org">m</a><a href="/relative">r</a>"#,
        );
        assert!(
            out.contains(r#"href="https://example.org/a?b=1&amp;c=2""#),
            "{out}"
        );
        assert!(out.contains(r#"href="mailto:a@example.org""#), "{out}");
        assert_eq!(
            out.matches(r#"rel="noopener noreferrer""#).count(),
            3,
            "{out}"
        );
        assert_eq!(out.matches(r#"target="_blank""#).count(), 3, "{out}");
        assert!(
            !out.contains("_self") && !out.contains("opener\"") && !out.contains("/relative"),
            "{out}"
        );
    }

    #[test]
    fn svg_with_script_is_removed() {
        let out = sanitized(
            r#"<svg onload="alert(1)"><script>alert(2)</script><image href="https://t.example/p.png"/></svg>ok"#,
        );
        assert_eq!(out, "ok");
    }

    #[test]
    fn forms_and_their_controls_are_removed_and_counted() {
        let report = sanitize_html_report(
            r#"<p>Verify your account</p><form action="https://evil.example/"><input name=pw type=password><button>Log in</button></form><form></form><input value=stray><button>Go</button>"#,
        );
        assert_eq!(report.removed_forms, 2);
        assert_eq!(report.html, "<p>Verify your account</p>Go");
    }

    #[test]
    fn remote_images_are_removed_and_counted_and_inline_ones_kept() {
        let inline = "data:image/png;base64,iVBORw0KGgo=";
        let report = sanitize_html_report(&format!(
            r#"<img src="https://tracker.example/p.gif" width=1 height=1><img src="cid:logo@x"><img src="{inline}" alt="logo"><img src="data:image/svg+xml;base64,PHN2Zz4="><img alt="no source"><p style="background:url(https://t.example/x)">x</p>"#
        ));
        assert_eq!(report.blocked_images, 3);
        assert_eq!(report.removed_forms, 0);
        assert_eq!(
            report.html,
            format!(r#"<img src="{inline}" alt="logo"><p>x</p>"#)
        );
    }

    #[test]
    fn styles_meta_base_link_and_frames_are_removed() {
        let out = sanitized(
            r#"<meta http-equiv="refresh" content="0;url=https://evil.example/"><base href="https://evil.example/"><link rel=stylesheet href="https://evil.example/s.css"><style>p{color:red}</style><p style="width: expression(alert(1))">t</p><iframe src="https://evil.example/"></iframe><object data="x.swf"></object><embed src="x.swf"><title>Newsletter</title>"#,
        );
        assert_eq!(out, "<p>t</p>");
    }

    #[test]
    fn deeply_nested_html_is_flattened_quickly_and_keeps_its_text() {
        let started = std::time::Instant::now();
        let depth = 100_000;
        let html = format!(
            "{}deep text{}",
            "<div><form>".repeat(depth),
            "</form></div>".repeat(depth)
        );
        let report = sanitize_html_report(&html);
        assert_eq!(
            report.removed_forms, 1,
            "nested forms are not formed; the first is removed whole"
        );
        assert_eq!(
            html_to_text(&format!("{}deep text", "<div>".repeat(depth))),
            "deep text"
        );
        assert_eq!(html_to_text(&"<blockquote>".repeat(depth)), "");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn nesting_is_limited_only_beyond_the_maximum_depth() {
        let ordinary = "<div><p>One<p>Two<br><img src=x><script>if (a<b) {}</script><table><tr><td>x</table></div>";
        assert!(matches!(limit_nesting(ordinary), Cow::Borrowed(_)));
        let deep = "<div>".repeat(MAX_DEPTH + 3);
        assert_eq!(limit_nesting(&deep), "<div>".repeat(MAX_DEPTH));
        let html = format!(
            "{}{}x{}{}",
            "<b>".repeat(MAX_DEPTH),
            "<i>",
            "</i>",
            "</b>".repeat(MAX_DEPTH)
        );
        assert_eq!(
            limit_nesting(&html),
            format!("{}x{}", "<b>".repeat(MAX_DEPTH), "</b>".repeat(MAX_DEPTH))
        );
    }

    #[test]
    fn tags_inside_scripts_and_comments_do_not_count_towards_the_depth() {
        let html = format!(
            "<script>{}</SCRIPT><!--{}-->",
            "<div>".repeat(1_000),
            "<div>".repeat(1_000)
        );
        assert!(matches!(limit_nesting(&html), Cow::Borrowed(_)));
    }

    #[test]
    fn many_raw_text_elements_are_scanned_in_linear_time() {
        let started = std::time::Instant::now();
        let html = "<title>x</title>".repeat(100_000);
        assert!(matches!(limit_nesting(&html), Cow::Borrowed(_)));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn html_to_text_decodes_entities_and_drops_scripts_and_styles() {
        let text = html_to_text(
            "<html><head><title>T</title><style>p{}</style></head><body><p>Caf&eacute; &amp; more&nbsp;here</p><script>var x=1;</script><p>Line<br>two</p></body></html>",
        );
        assert_eq!(text, "Café & more here\nLine\ntwo");
    }

    #[test]
    fn html_to_text_marks_quotes_and_keeps_preformatted_lines() {
        let text = html_to_text(
            "<div>Reply   text</div><blockquote type=cite><p>old</p><p>older</p></blockquote><pre>a\n  b</pre><table><tr><td>1</td><td>2</td></tr></table>",
        );
        assert_eq!(text, "Reply text\n> old\n> older\na\n  b\n1 2");
    }
}
