//! PDF attachments: the file must load, must not be encrypted, and must carry no
//! JavaScript, launch actions or embedded files (ISO 32000-1 §12.6.4.16, §12.6.4.5,
//! §7.11.4, §12.5.6.15).
//!
//! Two looks at the file, because PDF readers repair damaged files in different ways:
//! a scan of the raw bytes for the names that mark those features (outside strings and
//! stream data, with `#xx` escapes decoded, so it also sees objects that lopdf's
//! cross-reference table leaves out), and a walk over every object lopdf loads, which
//! also sees the objects packed in compressed object streams.

use lopdf::xref::XrefEntry;
use lopdf::{Dictionary, Document, LoadOptions, Object};

use super::{Rejection, encrypted};

/// The most a single object or cross-reference stream may inflate to while loading. Real
/// ones are well under a megabyte; lopdf's own default is 256 MiB.
const MAX_STREAM_BYTES: usize = 4 * 1024 * 1024;

/// The most object and cross-reference streams a file may have, which with
/// [`MAX_STREAM_BYTES`] bounds what loading inflates to 96 MiB: about three times the
/// largest message (30 MB by default), so a file crafted to expand cannot make one
/// check hold more memory than a few messages do. Producers put about a hundred
/// objects in each object stream, so this still allows over 2,000 of them.
const MAX_PACKED_STREAMS: usize = 24;

/// Why a PDF was refused. The order is the order of precedence when a file has several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Problem {
    Encrypted,
    JavaScript,
    Launch,
    EmbeddedFiles,
    TooComplex,
    Damaged,
}

impl Problem {
    pub(super) fn rejection(self, file: &str) -> Rejection {
        let (code, message) = match self {
            Problem::Encrypted => return encrypted(file),
            Problem::JavaScript => (
                Rejection::PDF_JAVASCRIPT,
                format!("{file} contains JavaScript, which is not allowed in Direct attachments."),
            ),
            Problem::Launch => (
                Rejection::PDF_LAUNCH,
                format!(
                    "{file} contains launch actions (commands that start other programs), which \
                     are not allowed in Direct attachments."
                ),
            ),
            Problem::EmbeddedFiles => (
                Rejection::PDF_EMBEDDED_FILES,
                format!(
                    "{file} contains embedded files, which are not allowed in Direct \
                     attachments; attach those files separately."
                ),
            ),
            Problem::TooComplex => (
                Rejection::PDF_TOO_COMPLEX,
                format!(
                    "{file} is too complex to check safely; print it to a new PDF and attach \
                     that."
                ),
            ),
            Problem::Damaged => (
                Rejection::PDF_DAMAGED,
                format!(
                    "{file} does not parse as a PDF (it may be damaged); save or print it to PDF \
                     again and attach the new file."
                ),
            ),
        };
        Rejection::new(code, message)
    }
}

/// What a PDF name marks, if it marks something refused.
fn problem_named(name: &[u8]) -> Option<Problem> {
    match name {
        b"Encrypt" => Some(Problem::Encrypted),
        b"JavaScript" | b"JS" => Some(Problem::JavaScript),
        b"Launch" => Some(Problem::Launch),
        // RichMedia annotations and GoToE actions also carry or open embedded files.
        b"EmbeddedFiles" | b"EmbeddedFile" | b"FileAttachment" | b"RichMedia" | b"GoToE" => {
            Some(Problem::EmbeddedFiles)
        }
        _ => None,
    }
}

/// The most serious problem found so far.
#[derive(Default)]
struct Findings(Option<Problem>);

impl Findings {
    fn note(&mut self, problem: Problem) {
        self.0 = Some(self.0.map_or(problem, |found| found.min(problem)));
    }

    fn note_name(&mut self, name: &[u8]) {
        if let Some(problem) = problem_named(name) {
            self.note(problem);
        }
    }

    fn verdict(&self) -> Result<(), Problem> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Checks a PDF whose bytes start with `%PDF-`.
pub(super) fn check(bytes: &[u8]) -> Result<(), Problem> {
    let mut findings = Findings::default();
    let mut packed_streams = 0_usize;
    scan_names(bytes, |name| {
        findings.note_name(name);
        packed_streams += usize::from(name == b"ObjStm" || name == b"XRef");
    });
    if findings.0 == Some(Problem::Encrypted) {
        return findings.verdict();
    }
    if packed_streams > MAX_PACKED_STREAMS {
        findings.note(Problem::TooComplex);
        return findings.verdict();
    }

    let options = LoadOptions {
        max_decompressed_size: Some(MAX_STREAM_BYTES),
        ..LoadOptions::default()
    };
    match Document::load_mem_with_options(bytes, options) {
        Ok(document) => inspect(&document, &mut findings),
        Err(_) => findings.note(Problem::Damaged),
    }
    findings.verdict()
}

/// Judges a loaded document on its own, whatever the scan of its bytes found.
fn inspect(document: &Document, findings: &mut Findings) {
    // lopdf opens a file whose user password is empty, and removes `/Encrypt` from the
    // trailer as it decrypts; `was_encrypted` remembers.
    if document.was_encrypted() || document.trailer.has(b"Encrypt") {
        findings.note(Problem::Encrypted);
    }
    walk(document, findings);
    // An object that lopdf could not unpack from its object stream was not walked, but
    // a reader that decodes damaged streams more leniently may still run it.
    let unread_packed_object = document
        .reference_table
        .entries
        .iter()
        .any(|(&number, entry)| {
            matches!(entry, XrefEntry::Compressed { .. })
                && !document.objects.contains_key(&(number, 0))
        });
    if unread_packed_object || document.catalog().is_err() {
        findings.note(Problem::Damaged);
    }
}

/// Notes every name used as a key or a value in the trailer and in every loaded object,
/// stream dictionaries included. Iterative, since objects nest.
fn walk(document: &Document, findings: &mut Findings) {
    let mut stack: Vec<&Object> = document.objects.values().collect();
    push_entries(&document.trailer, findings, &mut stack);
    while let Some(object) = stack.pop() {
        match object {
            Object::Name(name) => findings.note_name(name),
            Object::Array(items) => stack.extend(items),
            Object::Dictionary(dict) => push_entries(dict, findings, &mut stack),
            Object::Stream(stream) => push_entries(&stream.dict, findings, &mut stack),
            _ => {}
        }
    }
}

/// Notes the keys of `dict` and leaves its values for [`walk`] to visit.
fn push_entries<'a>(dict: &'a Dictionary, findings: &mut Findings, stack: &mut Vec<&'a Object>) {
    for (key, value) in dict.iter() {
        findings.note_name(key);
        stack.push(value);
    }
}

/// Calls `on_name` with each name token in the raw file, `#xx` escapes decoded
/// (ISO 32000-1 §7.3.5), skipping comments, strings and stream data.
fn scan_names(bytes: &[u8], mut on_name: impl FnMut(&[u8])) {
    let mut i = 0;
    let mut name = Vec::new();
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'%' => {
                i += bytes[i..]
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(bytes.len() - i);
            }
            b'(' => i = skip_literal_string(bytes, i),
            b'<' if bytes.get(i + 1) == Some(&b'<') => i += 2,
            b'<' => {
                i += bytes[i..]
                    .iter()
                    .position(|&b| b == b'>')
                    .map_or(bytes.len() - i, |end| end + 1);
            }
            b'/' => {
                i += 1;
                name.clear();
                while let Some(&b) = bytes.get(i).filter(|&&b| is_regular(b)) {
                    if let Some(escaped) = hex_escape(bytes, i) {
                        name.push(escaped);
                        i += 3;
                    } else {
                        name.push(b);
                        i += 1;
                    }
                }
                on_name(&name);
            }
            b's' if is_stream_keyword(bytes, i) => {
                i = find(bytes, i, b"endstream")
                    .map_or(bytes.len(), |end| end + b"endstream".len());
            }
            _ => i += 1,
        }
    }
}

/// The index just past the literal string that opens at `start`; strings nest in
/// balanced parentheses and `\` escapes the next byte.
fn skip_literal_string(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0_usize;
    let mut i = start;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

/// `stream` as a keyword: after white space or `>>`, and followed by an end of line.
fn is_stream_keyword(bytes: &[u8], i: usize) -> bool {
    let before = i.checked_sub(1).and_then(|j| bytes.get(j));
    bytes[i..].starts_with(b"stream")
        && before.is_some_and(|&b| is_white_space(b) || b == b'>')
        && matches!(bytes.get(i + 6), Some(b'\r' | b'\n'))
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| from + at)
}

fn is_white_space(b: u8) -> bool {
    matches!(b, 0 | b'\t' | b'\n' | 0x0c | b'\r' | b' ')
}

/// Not white space and not a delimiter (ISO 32000-1 §7.2.2).
fn is_regular(b: u8) -> bool {
    !is_white_space(b) && !b"()<>[]{}/%".contains(&b)
}

/// The byte that `#` and two hexadecimal digits at `i` stand for in a name.
fn hex_escape(bytes: &[u8], i: usize) -> Option<u8> {
    let digit = |at: usize| char::from(*bytes.get(at)?).to_digit(16);
    if bytes.get(i) != Some(&b'#') {
        return None;
    }
    u8::try_from(digit(i + 1)? << 4 | digit(i + 2)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(bytes: &[u8]) -> Vec<String> {
        let mut found = Vec::new();
        scan_names(bytes, |name| {
            found.push(String::from_utf8_lossy(name).into_owned())
        });
        found
    }

    fn inspected(bytes: &[u8]) -> Option<Problem> {
        let mut findings = Findings::default();
        inspect(&Document::load_mem(bytes).unwrap(), &mut findings);
        findings.0
    }

    #[test]
    fn a_loaded_document_that_was_decrypted_on_loading_counts_as_encrypted() {
        let owner_only = include_bytes!("../../tests/fixtures/encrypted-owner-only.pdf");
        assert_eq!(inspected(owner_only), Some(Problem::Encrypted));
        let with_password = include_bytes!("../../tests/fixtures/encrypted-user-password.pdf");
        assert_eq!(inspected(with_password), Some(Problem::Encrypted));
    }

    #[test]
    fn names_escaped_in_the_file_are_decoded_by_lopdf() {
        let bytes = include_bytes!("../../tests/fixtures/clean-object-streams.pdf");
        assert_eq!(inspected(bytes), None);
        let escaped = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R /OpenAction << /S /J#61vaScript /JS (x) >> >>\nendobj\n2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n";
        assert_eq!(inspected(escaped), Some(Problem::JavaScript));
    }

    #[test]
    fn the_scan_decodes_hex_escapes_in_names() {
        assert_eq!(
            names(b"<</S/J#61vaScript/JS#20x>>"),
            ["S", "JavaScript", "JS x"]
        );
    }

    #[test]
    fn the_scan_skips_strings_comments_and_stream_data() {
        let bytes = b"% /JS in a comment\n<</A (see /JS (nested) \\) /JS) /B <2F4A53>>> stream\n/JS\nendstream /C";
        assert_eq!(names(bytes), ["A", "B", "C"]);
    }

    #[test]
    fn the_scan_ends_at_an_unterminated_string() {
        assert_eq!(names(b"/A (never closed /JS"), ["A"]);
    }
}
