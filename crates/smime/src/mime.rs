//! Just enough MIME (RFC 2045/2046, RFC 5322) for S/MIME: split header and body,
//! read header fields, take a multipart apart while keeping each part's exact
//! bytes (a signature covers them byte for byte), and base64.

use base64ct::{Base64, Encoding};

/// Convert lone LF line ends to CRLF (RFC 5751 §3.1.1 canonical form).
pub(crate) fn to_crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 50);
    let mut prev = 0u8;
    for &b in input {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
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
            let mut fixed = to_crlf(&f.raw);
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

/// Base64 with CRLF line breaks every 76 characters (RFC 2045 §6.8).
pub(crate) fn base64_lines(data: &[u8]) -> String {
    let encoded = Base64::encode_string(data);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    out
}

/// Decode base64, ignoring whitespace and line breaks.
pub(crate) fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let clean: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    Base64::decode_vec(std::str::from_utf8(&clean).ok()?).ok()
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
