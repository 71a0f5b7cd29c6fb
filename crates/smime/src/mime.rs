//! Just enough MIME (RFC 2045/2046, RFC 5322) for S/MIME: split header and body,
//! read header fields, take a multipart apart while keeping each part's exact
//! bytes (a signature covers them byte for byte), and base64.

use std::borrow::Cow;

use base64ct::{Base64, Encoding};

/// Convert lone LF line ends to CRLF (RFC 5751 §3.1.1 canonical form). Input
/// that is already canonical is borrowed, not copied: messages can be tens of
/// megabytes, and seal and judge keep few copies at a time.
pub(crate) fn to_crlf(input: &[u8]) -> Cow<'_, [u8]> {
    let bare_lf = |i: usize| input[i] == b'\n' && (i == 0 || input[i - 1] != b'\r');
    let Some(first) = (0..input.len()).find(|&i| bare_lf(i)) else {
        return Cow::Borrowed(input);
    };
    let mut out = Vec::with_capacity(input.len() + input.len() / 50 + 2);
    let mut start = 0;
    for i in first..input.len() {
        if bare_lf(i) {
            out.extend_from_slice(&input[start..i]);
            out.extend_from_slice(b"\r\n");
            start = i + 1;
        }
    }
    out.extend_from_slice(&input[start..]);
    Cow::Owned(out)
}

/// Split an entity at the first empty line. Returns (header block, body).
/// An entity without an empty line is all header and an empty body.
pub(crate) fn split(entity: &[u8]) -> (&[u8], &[u8]) {
    let mut i = 0;
    while i < entity.len() {
        // A line starting at `i` that is empty ends the header.
        if entity[i..].starts_with(b"\r\n") {
            return (&entity[..i], &entity[i + 2..]);
        }
        if entity[i] == b'\n' {
            return (&entity[..i], &entity[i + 1..]);
        }
        match entity[i..].iter().position(|&b| b == b'\n') {
            Some(nl) => i += nl + 1,
            None => break,
        }
    }
    (entity, &[])
}

/// One header field: its name, the exact bytes of the field (folding and line
/// end included) and its unfolded value.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub name: String,
    pub raw: Vec<u8>,
    pub value: String,
}

/// Parse a header block into fields. Lines that are not fields are skipped.
pub(crate) fn fields(header: &[u8]) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < header.len() {
        let end = header[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(header.len(), |n| pos + n + 1);
        let line = &header[pos..end];
        let is_continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if is_continuation {
            if let Some(last) = out.last_mut() {
                last.raw.extend_from_slice(line);
                last.value.push(' ');
                last.value.push_str(String::from_utf8_lossy(line).trim());
            }
        } else if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
            let value = String::from_utf8_lossy(&line[colon + 1..])
                .trim()
                .to_string();
            let mut raw = line.to_vec();
            if !raw.ends_with(b"\n") {
                raw.extend_from_slice(b"\r\n");
            }
            out.push(Field { name, raw, value });
        }
        pos = end;
    }
    for f in &mut out {
        if !f.raw.ends_with(b"\r\n") {
            // Normalise a bare LF field end to CRLF when copying fields out.
            let mut fixed = to_crlf(&f.raw).into_owned();
            std::mem::swap(&mut f.raw, &mut fixed);
        }
    }
    out
}

/// The first field called `name` (case-insensitive).
pub(crate) fn find<'a>(fields: &'a [Field], name: &str) -> Option<&'a Field> {
    fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))
}

/// A parsed Content-Type: lower-case `type/subtype` and parameters (names
/// lower-case, values unquoted).
#[derive(Debug, Clone, Default)]
pub(crate) struct ContentType {
    pub mime: String,
    pub params: Vec<(String, String)>,
}

impl ContentType {
    /// The value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parse a Content-Type value; a missing one means text/plain (RFC 2045 §5.2).
pub(crate) fn content_type(fields: &[Field]) -> ContentType {
    let Some(f) = find(fields, "Content-Type") else {
        return ContentType {
            mime: "text/plain".into(),
            params: Vec::new(),
        };
    };
    let mut parts = split_params(&f.value).into_iter();
    let mime = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (n, v) = p.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
                .replace("\\\"", "\"");
            Some((n.trim().to_ascii_lowercase(), v))
        })
        .collect();
    ContentType { mime, params }
}

/// Split on `;` outside quoted strings.
fn split_params(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The exact bytes of each body part of a multipart body (RFC 2046 §5.1.1):
/// from after the delimiter line up to, not including, the line break before
/// the next delimiter. `None` when the closing delimiter is missing.
pub(crate) fn multipart_parts<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<&'a [u8]>> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut parts = Vec::new();
    let mut open: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let line_end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |n| pos + n + 1);
        let line = &body[pos..line_end];
        if let Some(rest) = line.strip_prefix(delim) {
            let closing = rest.starts_with(b"--");
            let rest = if closing { &rest[2..] } else { rest };
            if rest.iter().all(|b| b.is_ascii_whitespace()) {
                if let Some(start) = open {
                    // The line break before the delimiter belongs to the delimiter.
                    let mut end = pos;
                    if end > start && body[end - 1] == b'\n' {
                        end -= 1;
                        if end > start && body[end - 1] == b'\r' {
                            end -= 1;
                        }
                    }
                    parts.push(&body[start..end.max(start)]);
                }
                if closing {
                    return Some(parts);
                }
                open = Some(line_end);
            }
        }
        pos = line_end;
    }
    None
}

/// Append `data` as base64 with CRLF line breaks every 76 characters
/// (RFC 2045 §6.8), written straight into `out` (no intermediate string).
pub(crate) fn push_base64_lines(out: &mut Vec<u8>, data: &[u8]) {
    // 57 input bytes make one full 76-character line.
    // reserve_exact: amortised growth would double a large buffer.
    out.reserve_exact(base64_lines_len(data.len()));
    let mut line = [0u8; 76];
    for chunk in data.chunks(57) {
        if let Ok(encoded) = Base64::encode(chunk, &mut line) {
            out.extend_from_slice(encoded.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Length of `n` bytes as base64 in 76-character CRLF lines (padded, the last
/// line short), as [`push_base64_lines`] and [`Base64Lines`] write them.
pub(crate) fn base64_lines_len(n: usize) -> usize {
    let rest = n % 57;
    n / 57 * 78
        + if rest == 0 {
            0
        } else {
            rest.div_ceil(3) * 4 + 2
        }
}

/// Base64 in 76-character CRLF lines, written as the bytes come, in pieces of
/// any size (the same lines as [`push_base64_lines`] on the whole).
pub(crate) struct Base64Lines<'a> {
    out: &'a mut Vec<u8>,
    pending: [u8; 57],
    n: usize,
}

impl<'a> Base64Lines<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Base64Lines {
            out,
            pending: [0; 57],
            n: 0,
        }
    }

    fn line(out: &mut Vec<u8>, chunk: &[u8]) {
        let mut line = [0u8; 76];
        if let Ok(encoded) = Base64::encode(chunk, &mut line) {
            out.extend_from_slice(encoded.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Write the last, short line.
    pub(crate) fn finish(self) {
        if self.n > 0 {
            Self::line(self.out, &self.pending[..self.n]);
        }
    }
}

impl crate::outbound::Sink for Base64Lines<'_> {
    fn put(&mut self, mut data: &[u8]) {
        if self.n > 0 {
            let take = (57 - self.n).min(data.len());
            self.pending[self.n..self.n + take].copy_from_slice(&data[..take]);
            self.n += take;
            data = &data[take..];
            if self.n < 57 {
                return;
            }
            Self::line(self.out, &self.pending);
            self.n = 0;
        }
        let mut chunks = data.chunks_exact(57);
        for chunk in &mut chunks {
            Self::line(self.out, chunk);
        }
        let rest = chunks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.n = rest.len();
    }
}

/// Decode base64, ignoring whitespace and line breaks. Decodes in place in one
/// buffer the size of the text (the decoded bytes are then at its start).
pub(crate) fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut clean: Vec<u8> = Vec::with_capacity(text.len());
    for line in text.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.iter().any(u8::is_ascii_whitespace) {
            clean.extend(line.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        } else {
            clean.extend_from_slice(line);
        }
    }
    let len = Base64::decode_in_place(&mut clean).ok()?.len();
    clean.truncate(len);
    // Give back the last quarter (base64 is 4/3 of the bytes): for a large
    // message this shrinks in place rather than copying.
    clean.shrink_to_fit();
    Some(clean)
}

/// The addr-spec of the first address in an address header value
/// (`"Dr Smith" <dr.smith@example.org>` gives `dr.smith@example.org`).
pub(crate) fn first_address(value: &str) -> Option<String> {
    let candidate = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(',').next().unwrap_or(value),
    };
    let addr = candidate.trim();
    if addr.contains('@') && !addr.contains(char::is_whitespace) {
        Some(addr.to_string())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_crlf_borrows_canonical_input_and_fixes_bare_lf() {
        assert!(matches!(to_crlf(b"a\r\nb\r\n"), Cow::Borrowed(_)));
        assert!(matches!(to_crlf(b"no line end"), Cow::Borrowed(_)));
        assert_eq!(&*to_crlf(b"\na\nb\r\nc\n\n"), b"\r\na\r\nb\r\nc\r\n\r\n");
    }

    #[test]
    fn base64_lines_round_trip_through_the_whitespace_tolerant_decoder() {
        for n in [0usize, 1, 56, 57, 58, 114, 1000] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let mut out = b"x".to_vec();
            push_base64_lines(&mut out, &data);
            let text = &out[1..];
            assert!(text.split(|&b| b == b'\n').all(|l| l.len() <= 77));
            assert_eq!(base64_decode(text).unwrap(), data, "{n}");
        }
        assert_eq!(base64_decode(b" aGVs\r\n bG8=\t\r\n").unwrap(), b"hello");
        assert_eq!(base64_decode(b"aG Vs bG8=").unwrap(), b"hello");
        assert!(base64_decode(b"a$==").is_none());
    }

    #[test]
    fn multipart_parts_keep_exact_bytes_without_the_delimiter_line_break() {
        let body = b"preamble\r\n--b\r\nA: 1\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b--\r\n";
        let parts = multipart_parts(body, "b").unwrap();
        assert_eq!(parts, vec![&b"A: 1\r\n\r\nx"[..], &b"\r\ny"[..]]);
    }

    #[test]
    fn first_address_takes_the_angle_bracket_form() {
        assert_eq!(
            first_address("\"Dr, Smith\" <a@b.org>").as_deref(),
            Some("a@b.org")
        );
        assert_eq!(first_address("a@b.org").as_deref(), Some("a@b.org"));
        assert_eq!(first_address("undisclosed"), None);
    }

    #[test]
    fn folded_fields_are_unfolded() {
        let f = fields(b"Content-Type: multipart/signed;\r\n\tboundary=\"x;y\"\r\n");
        let ct = content_type(&f);
        assert_eq!(ct.mime, "multipart/signed");
        assert_eq!(ct.param("boundary"), Some("x;y"));
    }
}
