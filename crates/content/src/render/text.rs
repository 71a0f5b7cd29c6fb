//! Plain-text bodies: escaped HTML with links, and snippets for the message list.

use std::ops::Range;

/// Escapes plain text for HTML and turns `http://` and `https://` URLs and bare email
/// addresses into links. Line breaks are kept as they are, for a `<pre>` or a
/// `white-space: pre-wrap` element.
///
/// A URL ends at white space, a quote or an angle bracket; closing punctuation after it
/// (`.`, `,`, `)`, … — a `)` only when the URL has no `(` to match) is left outside
/// the link. Web links open in a new tab without a referrer.
pub fn linkify_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut done = 0;
    for (range, kind) in find_links(text) {
        escape_into(&mut out, &text[done..range.start]);
        let link = &text[range.clone()];
        match kind {
            LinkKind::Url => {
                out.push_str("<a href=\"");
                escape_into(&mut out, link);
                out.push_str("\" rel=\"noopener noreferrer\" target=\"_blank\">");
            }
            LinkKind::Email => {
                out.push_str("<a href=\"mailto:");
                escape_into(&mut out, link);
                out.push_str("\">");
            }
        }
        escape_into(&mut out, link);
        out.push_str("</a>");
        done = range.end;
    }
    escape_into(&mut out, &text[done..]);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkKind {
    Url,
    Email,
}

/// The links in `text`, in order, without overlaps.
fn find_links(text: &str) -> Vec<(Range<usize>, LinkKind)> {
    let bytes = text.as_bytes();
    let mut links = Vec::new();
    let mut earliest = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(end) = url_at(text, i) {
            links.push((i..end, LinkKind::Url));
            earliest = end;
            i = end;
        } else if bytes[i] == b'@'
            && let Some(range) = email_around(text, i, earliest)
        {
            earliest = range.end;
            i = range.end;
            links.push((range, LinkKind::Email));
        } else {
            i += 1;
        }
    }
    links
}

/// The end of a URL starting at byte `start`, if one does.
fn url_at(text: &str, start: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let rest = &bytes[start..];
    let scheme_len = ["http://", "https://"]
        .iter()
        .find(|scheme| {
            rest.len() > scheme.len()
                && rest[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
        })?
        .len();
    // Not in the middle of a word, as in "xhttp://".
    if text[..start]
        .chars()
        .next_back()
        .is_some_and(char::is_alphanumeric)
    {
        return None;
    }
    let tail = &text[start..];
    let mut end = start
        + tail
            .char_indices()
            .find(|&(_, c)| {
                c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>' | '`')
            })
            .map_or(tail.len(), |(at, _)| at);
    // For each kind of bracket, how many more closing than opening ones the URL has: a
    // closing bracket at the end is trimmed only while it has no partner inside.
    let url = &text[start..end];
    let mut unmatched = [('(', ')'), ('[', ']'), ('{', '}')].map(|(open, close)| {
        (
            close,
            url.matches(close)
                .count()
                .saturating_sub(url.matches(open).count()),
        )
    });
    while let Some(last) = text[start..end].chars().next_back() {
        let trailing = match unmatched.iter_mut().find(|(close, _)| *close == last) {
            Some((_, excess)) if *excess > 0 => {
                *excess -= 1;
                true
            }
            Some(_) => false,
            None => matches!(last, '.' | ',' | ':' | ';' | '!' | '?' | '\'' | '*'),
        };
        if !trailing {
            break;
        }
        end -= last.len_utf8();
    }
    (end > start + scheme_len).then_some(end)
}

/// The email address around the `@` at byte `at`, starting no earlier than `earliest`.
fn email_around(text: &str, at: usize, earliest: usize) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    let is_local =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-');
    let is_domain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-');

    let mut start = at;
    while start > earliest && is_local(bytes[start - 1]) {
        start -= 1;
    }
    while bytes[start] == b'.' && start < at {
        start += 1;
    }
    let mut end = at + 1;
    while end < bytes.len() && is_domain(bytes[end]) {
        end += 1;
    }
    while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-') {
        end -= 1;
    }
    let local = &text[start..at];
    let domain = &text[at + 1..end];
    let labels: Vec<&str> = domain.split('.').collect();
    let top_level = labels.last().copied().unwrap_or_default();
    let valid = !local.is_empty()
        && labels.len() >= 2
        && labels.iter().all(|label| !label.is_empty())
        && top_level.len() >= 2
        && top_level.bytes().all(|b| b.is_ascii_alphabetic());
    valid.then_some(start..end)
}

/// Appends `text` to `out` escaped for HTML text and double- or single-quoted attribute
/// values.
pub(crate) fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// A one-line preview of a plain-text body for the message list, at most `max_chars`
/// characters long (the ellipsis included).
///
/// Blank lines, quoted lines (starting with `>`), the "… wrote:" line that introduces a
/// quote, and everything after a signature separator (`-- `) are skipped; the remaining
/// lines are joined with white space collapsed. A cut text ends in `…`, at a word
/// boundary where one is near, and never inside a combining sequence.
pub fn snippet(text: &str, max_chars: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|line| *line != "--")
        .filter(|line| !line.is_empty())
        .collect();
    let mut joined = String::new();
    for (index, line) in lines.iter().enumerate() {
        let quoted = line.starts_with('>');
        let introduces_quote = line.ends_with("wrote:")
            && lines
                .get(index + 1)
                .is_some_and(|next| next.starts_with('>'));
        if quoted || introduces_quote {
            continue;
        }
        for word in line.split_whitespace() {
            if !joined.is_empty() {
                joined.push(' ');
            }
            joined.push_str(word);
        }
        if joined.chars().count() > max_chars {
            break;
        }
    }
    shorten(&joined, max_chars)
}

/// `text` cut to at most `max_chars` characters, ellipsis included.
fn shorten(text: &str, max_chars: usize) -> String {
    /// How far back a cut may move to fall between words.
    const WORD_BOUNDARY_REACH: usize = 20;
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max_chars {
        return text.to_owned();
    }
    if max_chars == 0 {
        return String::new();
    }
    let mut cut = max_chars - 1;
    if let Some(space) = chars[..=cut].iter().rposition(|c| *c == ' ')
        && cut - space <= WORD_BOUNDARY_REACH
    {
        cut = space;
    }
    while cut > 0 && (extends_previous(chars[cut]) || chars[cut - 1] == '\u{200d}') {
        cut -= 1;
    }
    let mut short: String = chars[..cut].iter().collect();
    short.truncate(short.trim_end().len());
    short.push('…');
    short
}

/// Characters that belong to the character before them: combining marks, variation
/// selectors, the zero-width joiner, emoji skin tones and tag characters. (An
/// approximation of Unicode grapheme clusters, enough not to cut "é" or 👍🏽 in two.)
fn extends_previous(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036f}'
        | '\u{1ab0}'..='\u{1aff}'
        | '\u{1dc0}'..='\u{1dff}'
        | '\u{200d}'
        | '\u{20d0}'..='\u{20ff}'
        | '\u{fe00}'..='\u{fe0f}'
        | '\u{fe20}'..='\u{fe2f}'
        | '\u{1f3fb}'..='\u{1f3ff}'
        | '\u{e0020}'..='\u{e007f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_escaped_and_line_breaks_kept() {
        assert_eq!(
            linkify_text("a < b & 'c' \"d\"\n> e"),
            "a &lt; b &amp; &#39;c&#39; &quot;d&quot;\n&gt; e"
        );
    }

    #[test]
    fn a_url_with_markup_after_it_cannot_break_out_of_the_link() {
        assert_eq!(
            linkify_text(r#"http://x/"><script>alert(1)</script>"#),
            r#"<a href="http://x/" rel="noopener noreferrer" target="_blank">http://x/</a>&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"#
        );
        assert_eq!(
            linkify_text("https://x/a'onmouseover='alert(1)"),
            r#"<a href="https://x/a&#39;onmouseover=&#39;alert(1)" rel="noopener noreferrer" target="_blank">https://x/a&#39;onmouseover=&#39;alert(1)</a>"#
        );
    }

    #[test]
    fn trailing_punctuation_stays_outside_the_link() {
        let link = |url: &str| {
            format!(r#"<a href="{url}" rel="noopener noreferrer" target="_blank">{url}</a>"#)
        };
        assert_eq!(
            linkify_text("See (https://example.org/a)."),
            format!("See ({}).", link("https://example.org/a"))
        );
        assert_eq!(
            linkify_text("Wiki: https://en.wikipedia.org/wiki/Bar_(law), ok?"),
            format!(
                "Wiki: {}, ok?",
                link("https://en.wikipedia.org/wiki/Bar_(law)")
            )
        );
        assert_eq!(
            linkify_text("HTTPS://Example.org/?q=1&r=2!"),
            format!("{}!", link("HTTPS://Example.org/?q=1&amp;r=2"))
        );
    }

    #[test]
    fn a_url_followed_by_many_brackets_is_linked_in_linear_time() {
        let started = std::time::Instant::now();
        let text = format!("http://x.example/{}", ")".repeat(200_000));
        assert!(linkify_text(&text).starts_with("<a href=\"http://x.example/\""));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_scheme_alone_or_inside_a_word_is_not_a_link() {
        assert_eq!(
            linkify_text("http:// and xhttp://a.example"),
            "http:// and xhttp://a.example"
        );
    }

    #[test]
    fn email_addresses_become_mailto_links() {
        assert_eq!(
            linkify_text("Write to dr.smith+lab@direct.clinic.example, or (ops@x.example)."),
            "Write to <a href=\"mailto:dr.smith+lab@direct.clinic.example\">dr.smith+lab@direct.clinic.example</a>, \
             or (<a href=\"mailto:ops@x.example\">ops@x.example</a>)."
        );
    }

    #[test]
    fn things_that_only_resemble_addresses_are_left_alone() {
        for text in [
            "@home",
            "a@b",
            "a@b.",
            "a@.example",
            "x@host.c0m",
            "user@ example.org",
            "..@x.example",
        ] {
            assert_eq!(linkify_text(text), text.replace('&', "&amp;"), "{text}");
        }
    }

    #[test]
    fn an_address_inside_a_url_belongs_to_the_url() {
        let out = linkify_text("https://example.org/u/a@b.example");
        assert_eq!(out.matches("<a ").count(), 1, "{out}");
        assert!(!out.contains("mailto"), "{out}");
    }

    #[test]
    fn non_ascii_text_around_links_is_kept() {
        assert_eq!(
            linkify_text("Ünïcode→https://example.org/é…"),
            "Ünïcode→<a href=\"https://example.org/é…\" rel=\"noopener noreferrer\" target=\"_blank\">https://example.org/é…</a>"
        );
    }

    #[test]
    fn snippets_skip_blank_and_quoted_lines_and_collapse_white_space() {
        let body = "\n\n  Lab   results\tare in.\n\nOn Tue, Dr. A wrote:\n> old text\n>> older\nCall me.\n-- \nDr. B\n555-0100";
        assert_eq!(snippet(body, 100), "Lab results are in. Call me.");
    }

    #[test]
    fn a_line_ending_in_wrote_without_a_quote_is_kept() {
        assert_eq!(
            snippet("The patient wrote:\nthanks", 100),
            "The patient wrote: thanks"
        );
    }

    #[test]
    fn snippets_are_cut_at_a_word_boundary_with_an_ellipsis() {
        assert_eq!(
            snippet("Please review the attached discharge summary", 20),
            "Please review the…"
        );
        assert_eq!(
            snippet("Supercalifragilisticexpialidocious", 10),
            "Supercali…"
        );
        assert_eq!(snippet("exactly", 7), "exactly");
        assert_eq!(snippet("anything", 0), "");
        assert_eq!(snippet("> only quoted\n\n", 10), "");
    }

    #[test]
    fn snippets_never_split_a_character_or_combining_sequence() {
        assert_eq!(snippet("ééééé", 3), "éé…");
        // "e" + combining acute: the cut backs off rather than strand the accent.
        assert_eq!(snippet("abe\u{301}fg", 4), "ab…");
        assert_eq!(snippet("ok 👍🏽👍🏽", 5), "ok…");
        assert_eq!(snippet("日本語のテキスト", 5), "日本語の…");
    }
}
