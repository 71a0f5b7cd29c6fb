//! What a file is, from its first bytes (and, for ZIP and OLE2 containers, the names
//! of the parts inside): never from its name.

use super::Kind;
use super::office;

/// The format of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Pdf,
    Png,
    Jpeg,
    Gif,
    /// Starts with `<?xml` or another `<` that is not HTML or SVG; well-formedness is
    /// checked later.
    Xml,
    /// UTF-8 text without NULs.
    Text,
    /// Text in a legacy 8-bit or other non-UTF-8 encoding.
    LegacyText,
    /// An Office Open XML word-processing document (.docx, .docm).
    Docx {
        macros: bool,
    },
    /// An OLE2 compound file holding a Word document (.doc), or an encrypted Office
    /// Open XML document (which is stored in an OLE2 container).
    Doc {
        macros: bool,
        encrypted: bool,
    },
    /// Anything never allowed, described for a person: "a Windows program".
    Other(&'static str),
}

impl Format {
    /// The allow-list kind, or `None` for formats that are never allowed.
    pub(super) fn kind(self) -> Option<Kind> {
        match self {
            Format::Pdf => Some(Kind::Pdf),
            Format::Png | Format::Jpeg | Format::Gif => Some(Kind::Image),
            Format::Xml => Some(Kind::Xml),
            Format::Text | Format::LegacyText => Some(Kind::Text),
            Format::Docx { .. } | Format::Doc { .. } => Some(Kind::Word),
            Format::Other(_) => None,
        }
    }

    /// What the content is, as in "its content is a Windows program".
    pub(super) fn description(self) -> &'static str {
        match self {
            Format::Pdf => "a PDF document",
            Format::Png => "a PNG image",
            Format::Jpeg => "a JPEG image",
            Format::Gif => "a GIF image",
            Format::Xml => "an XML document",
            Format::Text => "plain text",
            Format::LegacyText => "text in an encoding other than UTF-8",
            Format::Docx { .. } => "a Word document",
            Format::Doc {
                encrypted: true, ..
            } => "a password-protected Office document",
            Format::Doc { .. } => "a Word document",
            Format::Other(description) => description,
        }
    }

    /// The media type the file is sent and served with.
    pub(super) fn content_type(self) -> &'static str {
        match self {
            Format::Pdf => "application/pdf",
            Format::Png => "image/png",
            Format::Jpeg => "image/jpeg",
            Format::Gif => "image/gif",
            Format::Xml => "application/xml",
            Format::Text => "text/plain; charset=utf-8",
            Format::Docx { .. } => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
            Format::Doc { .. } => "application/msword",
            Format::LegacyText | Format::Other(_) => "application/octet-stream",
        }
    }
}

const UNKNOWN: &str = "a file of a type that was not recognised";

/// Magic numbers of formats that are refused, with how they are described.
const REFUSED_MAGIC: &[(&[u8], &str)] = &[
    (b"\x7fELF", "a Linux program"),
    (b"\xfe\xed\xfa\xce", "a macOS program"),
    (b"\xfe\xed\xfa\xcf", "a macOS program"),
    (b"\xce\xfa\xed\xfe", "a macOS program"),
    (b"\xcf\xfa\xed\xfe", "a macOS program"),
    (b"\xca\xfe\xba\xbe", "a macOS or Java program"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xfd7zXZ\x00", "an XZ archive"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\xff\xfe", "text in UTF-16 encoding"),
    (b"\xfe\xff", "text in UTF-16 encoding"),
    (b"{\\rtf", "an RTF document"),
    (b"%!PS", "a PostScript file"),
];

/// The formats a browser shows by itself (PDF and images), from the first bytes only.
pub(super) fn viewable(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(b"%PDF-") {
        Some(Format::Pdf)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.starts_with(b"\xff\xd8\xff") {
        Some(Format::Jpeg)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(Format::Gif)
    } else {
        None
    }
}

/// Decides the format of `bytes` (which are not empty).
pub(super) fn sniff(bytes: &[u8]) -> Format {
    if let Some(format) = viewable(bytes) {
        return format;
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return office::zip_format(bytes);
    }
    if bytes.starts_with(office::OLE2_MAGIC) {
        return office::ole2_format(bytes);
    }
    if is_windows_program(bytes) {
        return Format::Other("a Windows program");
    }
    if let Some((_, description)) = REFUSED_MAGIC
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
    {
        return Format::Other(description);
    }
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Format::Other("a WebP image");
    }
    text_format(bytes)
}

/// A DOS/Windows executable: `MZ`, and either the PE signature where the DOS header
/// points (every Windows program since 1993) or content that is not text.
fn is_windows_program(bytes: &[u8]) -> bool {
    if !bytes.starts_with(b"MZ") {
        return false;
    }
    let pe_signature = bytes
        .get(0x3c..0x40)
        .and_then(|offset| offset.try_into().ok())
        .map(|offset: [u8; 4]| u32::from_le_bytes(offset) as usize)
        .and_then(|offset| bytes.get(offset..offset.checked_add(4)?))
        .is_some_and(|signature| signature == b"PE\0\0");
    pe_signature || std::str::from_utf8(bytes).is_err() || bytes.contains(&0)
}

/// Text, XML, HTML, or something unrecognised.
fn text_format(bytes: &[u8]) -> Format {
    let body = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let start = body.trim_ascii_start();
    if start.starts_with(b"<") {
        if starts_with_ignore_case(start, b"<!doctype html")
            || starts_with_ignore_case(start, b"<html")
        {
            return Format::Other("a web page (HTML)");
        }
        if starts_with_ignore_case(start, b"<svg") {
            return Format::Other("an SVG drawing");
        }
        // Checked for encoding and well-formedness later, so that a damaged C-CDA is
        // reported as damaged XML rather than as an unknown type.
        return Format::Xml;
    }
    if body.contains(&0) {
        return Format::Other(UNKNOWN);
    }
    if std::str::from_utf8(body).is_ok() {
        return Format::Text;
    }
    // Only printable bytes and ordinary white space: text in Windows-1252 or the like.
    let legacy = body
        .iter()
        .all(|&b| b >= 0x20 && b != 0x7f || matches!(b, b'\t' | b'\n' | b'\r' | 0x0c));
    if legacy {
        Format::LegacyText
    } else {
        Format::Other(UNKNOWN)
    }
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}
