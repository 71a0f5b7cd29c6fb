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

/// Whether a field name as written (`name` before the colon) is `wanted`,
/// ignoring case and surrounding white space.
fn name_is(name: &[u8], wanted: &str) -> bool {
    std::str::from_utf8(name).is_ok_and(|n| n.trim().eq_ignore_ascii_case(wanted))
}

/// The lines of every field called `name`, borrowed, in order: `(true, line)`
/// for the first line of a field, `(false, line)` for its folded lines (a
/// folded line belongs to the last field line above it). Lines that are not
/// fields are skipped. Nothing is copied.
pub(crate) fn field_lines<'a>(
    header: &'a [u8],
    name: &'a str,
) -> impl Iterator<Item = (bool, &'a [u8])> {
    let mut current = false;
    header
        .split_inclusive(|&b| b == b'\n')
        .filter_map(move |line| {
            if matches!(line.first(), Some(b' ' | b'\t')) {
                return current.then_some((false, line));
            }
            // A line without a colon is not a field: skipped, `current` kept.
            let colon = line.iter().position(|&b| b == b':')?;
            current = name_is(&line[..colon], name);
            current.then_some((true, line))
        })
}

/// The unfolded value of the first field called `name` (case-insensitive),
/// trimmed, each folded line joined with one space.
pub(crate) fn first_value(header: &[u8], name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for (first, line) in field_lines(header, name) {
        match (&mut value, first) {
            (None, true) => value = Some(unfold_first(line)),
            (Some(v), false) => unfold_more(v, line),
            _ => break,
        }
    }
    value
}

/// The value on a field's first line, trimmed.
fn unfold_first(line: &[u8]) -> String {
    let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
    String::from_utf8_lossy(line.get(colon + 1..).unwrap_or_default())
        .trim()
        .to_string()
}

/// Append a folded line to a value (RFC 5322 §2.2.3, white space kept as one space).
fn unfold_more(value: &mut String, line: &[u8]) {
    value.push(' ');
    value.push_str(String::from_utf8_lossy(line).trim());
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

/// The Content-Type of a header block; a missing one means text/plain (RFC 2045 §5.2).
pub(crate) fn content_type(header: &[u8]) -> ContentType {
    let Some(value) = first_value(header, "Content-Type") else {
        return ContentType {
            mime: "text/plain".into(),
            params: Vec::new(),
        };
    };
    let mut parts = split_params(&value).into_iter();
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

/// Length of `n` bytes as base64 in 76-character CRLF lines (RFC 2045 §6.8;
/// padded, the last line short), as [`Base64InPlace`] writes them.
pub(crate) fn base64_lines_len(n: usize) -> usize {
    let rest = n % 57;
    n / 57 * 78
        + if rest == 0 {
            0
        } else {
            rest.div_ceil(3) * 4 + 2
        }
}

/// Base64 in 76-character CRLF lines written over the bytes it encodes, in one
/// buffer: the `n` bytes to encode lie at the end of a buffer of exactly
/// [`base64_lines_len`]`(n)` bytes, and the lines fill it from the front. Each
/// line is written only over bytes already encoded: line `j` (57 bytes in, 78
/// out) ends at `78(j+1)`, and the bytes of line `j+1` start at
/// `len - n + 57(j+1)`, where `len - n` is at least `21` times the number of
/// full lines. So no second buffer the size of the data is needed.
///
/// The bytes may be completed (e.g. encrypted in place) as the encoding goes:
/// [`advance`](Self::advance) encodes the lines whose bytes are all final.
pub(crate) struct Base64InPlace {
    n: usize,
    lines_done: usize,
}

impl Base64InPlace {
    /// For `n` bytes at the end of the buffer.
    pub(crate) fn new(n: usize) -> Self {
        Base64InPlace { n, lines_done: 0 }
    }

    /// Encode every full line whose bytes lie within the first `ready` of the `n`.
    pub(crate) fn advance(&mut self, buf: &mut [u8], ready: usize) {
        let start = buf.len() - self.n;
        let ready = ready.min(self.n);
        let mut chunk = [0u8; 57];
        while (self.lines_done + 1) * 57 <= ready {
            let from = start + self.lines_done * 57;
            chunk.copy_from_slice(&buf[from..from + 57]);
            let at = self.lines_done * 78;
            Self::line(&chunk, &mut buf[at..at + 78]);
            self.lines_done += 1;
        }
    }

    /// Encode what is left (all `n` bytes must be final) and the short last line.
    pub(crate) fn finish(mut self, buf: &mut [u8]) {
        self.advance(buf, self.n);
        let rest = self.n - self.lines_done * 57;
        if rest > 0 {
            let mut chunk = [0u8; 57];
            chunk[..rest].copy_from_slice(&buf[buf.len() - rest..]);
            let at = self.lines_done * 78;
            Self::line(&chunk[..rest], &mut buf[at..]);
        }
    }

    /// One line: the base64 of `chunk` (at most 57 bytes), then CRLF, at the
    /// start of `out`.
    fn line(chunk: &[u8], out: &mut [u8]) {
        let len = chunk.len().div_ceil(3) * 4;
        if let Ok(encoded) = Base64::encode(chunk, &mut out[..len]) {
            debug_assert_eq!(encoded.len(), len);
        }
        out[len..len + 2].copy_from_slice(b"\r\n");
    }
}

/// `data` as base64 in 76-character CRLF lines, in a buffer of exactly that size.
#[cfg(test)]
pub(crate) fn base64_lines(data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; base64_lines_len(data.len())];
    let at = buf.len() - data.len();
    buf[at..].copy_from_slice(data);
    Base64InPlace::new(data.len()).finish(&mut buf);
    buf
}

/// Decode base64, ignoring whitespace and line breaks. The result is the only
/// buffer the size of the data: it is allocated once at its final size (the
/// text is counted first), and the text is decoded into it a kilobyte at a
/// time through a buffer on the stack (no cleaned copy of the text).
pub(crate) fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let chars = text.iter().filter(|b| !b.is_ascii_whitespace()).count();
    let mut decoder = Base64Decoder {
        out: Vec::with_capacity(chars / 4 * 3),
        pending: [0; 1024],
        n: 0,
        ended: false,
    };
    for line in text.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.iter().any(u8::is_ascii_whitespace) {
            for &b in line.iter().filter(|b| !b.is_ascii_whitespace()) {
                decoder.push(&[b])?;
            }
        } else {
            decoder.push(line)?;
        }
    }
    decoder.flush()?;
    Some(decoder.out)
}

/// Base64 text decoded in groups of 1024 characters (a multiple of 4); padding
/// is accepted only at the very end, as when the whole text is decoded at once.
struct Base64Decoder {
    out: Vec<u8>,
    pending: [u8; 1024],
    n: usize,
    /// A group ending in padding was decoded: nothing may follow.
    ended: bool,
}

impl Base64Decoder {
    fn push(&mut self, mut text: &[u8]) -> Option<()> {
        while !text.is_empty() {
            if self.n == self.pending.len() {
                self.flush()?;
            }
            let take = (self.pending.len() - self.n).min(text.len());
            self.pending[self.n..self.n + take].copy_from_slice(&text[..take]);
            self.n += take;
            text = &text[take..];
        }
        Some(())
    }

    fn flush(&mut self) -> Option<()> {
        let group = &self.pending[..self.n];
        if self.ended && !group.is_empty() {
            return None;
        }
        let mut bytes = [0u8; 768];
        self.out
            .extend_from_slice(Base64::decode(group, &mut bytes).ok()?);
        self.ended = group.last() == Some(&b'=');
        self.n = 0;
        Some(())
    }
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
            let out = base64_lines(&data);
            let text = &out[..];
            assert!(text.split(|&b| b == b'\n').all(|l| l.len() <= 77));
            assert_eq!(base64_decode(text).unwrap(), data, "{n}");
        }
        assert_eq!(base64_decode(b" aGVs\r\n bG8=\t\r\n").unwrap(), b"hello");
        assert_eq!(base64_decode(b"aG Vs bG8=").unwrap(), b"hello");
        assert!(base64_decode(b"a$==").is_none());
        // padding is the end, also where a group of 1024 characters ends
        let mut text = "QUJD".repeat(255);
        text.push_str("QQ==");
        assert_eq!(base64_decode(text.as_bytes()).unwrap().len(), 255 * 3 + 1);
        text.push_str("QUJD");
        assert!(base64_decode(text.as_bytes()).is_none());
        assert!(base64_decode(b"QQ==QUJD").is_none());
        assert!(base64_decode(b"QUJDQ").is_none());
        // a large text in many groups, exactly allocated
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let decoded = base64_decode(&base64_lines(&data)).unwrap();
        assert!(decoded == data);
        assert!(decoded.capacity() - decoded.len() < 3);
    }

    #[test]
    fn base64_in_place_writes_the_same_lines_as_encoding_into_another_buffer() {
        for n in (0usize..400).chain([5_000, 58_368, 58_369, 100_003]) {
            let data: Vec<u8> = (0..n).map(|i| (i * 131 + 7) as u8).collect();
            let mut want = Vec::new();
            for chunk in data.chunks(57) {
                want.extend_from_slice(Base64::encode_string(chunk).as_bytes());
                want.extend_from_slice(b"\r\n");
            }
            assert_eq!(base64_lines_len(n), want.len(), "{n}");
            assert!(base64_lines(&data) == want, "{n}");
            // Completed as it goes, in uneven steps, as seal does while encrypting.
            let mut buf = vec![0u8; want.len()];
            let at = buf.len() - n;
            let mut b64 = Base64InPlace::new(n);
            let mut ready = 0;
            while ready < n {
                let step = (ready % 700 + 1).min(n - ready);
                buf[at + ready..at + ready + step].copy_from_slice(&data[ready..ready + step]);
                ready += step;
                b64.advance(&mut buf, ready);
            }
            b64.finish(&mut buf);
            assert!(buf == want, "{n}, in steps");
        }
    }

    #[test]
    fn borrowed_field_lines_keep_folded_lines_with_their_field() {
        let h = b"From: Dr Lee\r\n <lee@a.example>\r\nnot a field\r\n\tfolded after it\r\n\
                  To: x@y.example\r\nfrom: second@a.example\r\nSubject: s";
        let lines: Vec<(bool, &[u8])> = field_lines(h, "From").collect();
        assert_eq!(
            lines,
            vec![
                (true, &b"From: Dr Lee\r\n"[..]),
                (false, &b" <lee@a.example>\r\n"[..]),
                (false, &b"\tfolded after it\r\n"[..]),
                (true, &b"from: second@a.example\r\n"[..]),
            ]
        );
        assert_eq!(
            first_value(h, "From").as_deref(),
            Some("Dr Lee <lee@a.example> folded after it")
        );
        assert_eq!(first_value(h, "subject").as_deref(), Some("s"));
        assert_eq!(first_value(h, "Cc"), None);
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
        let ct = content_type(b"Content-Type: multipart/signed;\r\n\tboundary=\"x;y\"\r\n");
        assert_eq!(ct.mime, "multipart/signed");
        assert_eq!(ct.param("boundary"), Some("x;y"));
    }
}
