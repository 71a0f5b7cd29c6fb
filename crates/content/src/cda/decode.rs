//! Bytes to text: the character encodings a CDA document may arrive in, base64 for
//! embedded files and images, and percent-encoding for the links we hand to the caller's
//! leaving-the-site page. Small on purpose: three encodings and two codecs are all a
//! clinical document needs, and none of it is worth a dependency.

use super::CdaError;

/// How the bytes of a document are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Utf8,
    Utf16Le,
    Utf16Be,
    /// windows-1252, also used for documents labelled ISO-8859-1 or US-ASCII.
    Windows1252,
}

/// The document's text, decoded from `bytes` as the byte-order mark or the XML
/// declaration says (XML 1.0 appendix F): UTF-8 (the default), UTF-16 in either byte
/// order, and ISO-8859-1 / windows-1252.
///
/// A document labelled ISO-8859-1 (or US-ASCII) is read as windows-1252, as browsers do
/// (WHATWG Encoding Standard §4.2): the two differ only in 0x80–0x9F, which are
/// invisible control characters in ISO-8859-1 and, in files that carry them, almost
/// always curly quotes and dashes typed on Windows.
pub(super) fn decode_text(bytes: &[u8]) -> Result<String, CdaError> {
    decode(bytes).map(|(text, _)| text)
}

/// Like [`decode_text`], also saying which encoding the bytes are in. Whatever was left
/// out of the text (byte-order marks) is at the start of `bytes`: the text, encoded
/// again with [`Encoding::encode`], is the rest of `bytes`, byte for byte.
pub(super) fn decode(bytes: &[u8]) -> Result<(String, Encoding), CdaError> {
    let (encoding, body) = detect(bytes)?;
    let text = match encoding {
        Encoding::Utf8 => std::str::from_utf8(body)
            .map_err(|_| CdaError::BadText { encoding: "UTF-8" })?
            .to_owned(),
        Encoding::Utf16Le | Encoding::Utf16Be => decode_utf16(body, encoding)?,
        Encoding::Windows1252 => body.iter().map(|&b| windows_1252(b)).collect(),
    };
    // A BOM decoded along with the text (UTF-16 detected from its first characters, or a
    // BOM after a UTF-8 one) is not part of the document.
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    };
    Ok((text, encoding))
}

impl Encoding {
    /// How many bytes `text` takes in this encoding.
    pub(super) fn encoded_len(self, text: &str) -> usize {
        match self {
            Encoding::Utf8 => text.len(),
            Encoding::Utf16Le | Encoding::Utf16Be => text.encode_utf16().count() * 2,
            Encoding::Windows1252 => text.chars().count(),
        }
    }

    /// `text` in this encoding. Text decoded from this encoding comes back as the bytes
    /// it was read from (every decoding here is one to one). A character windows-1252
    /// cannot hold becomes a character reference (`&#x2713;`), so `text` must be
    /// markup, or content or an attribute value, where XML allows one.
    pub(super) fn encode(self, text: &str) -> Vec<u8> {
        match self {
            Encoding::Utf8 => text.as_bytes().to_vec(),
            Encoding::Utf16Le => text.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            Encoding::Utf16Be => text.encode_utf16().flat_map(u16::to_be_bytes).collect(),
            Encoding::Windows1252 => {
                let mut out = Vec::with_capacity(text.len());
                for c in text.chars() {
                    match to_windows_1252(c) {
                        Some(byte) => out.push(byte),
                        None => out.extend(format!("&#x{:X};", u32::from(c)).bytes()),
                    }
                }
                out
            }
        }
    }
}

/// The first `max` bytes of `bytes` as text, for a look at the start of a document
/// ([`super::is_cda`]): decoded as [`decode_text`] would, except that a character cut at
/// the end, or bytes invalid in the encoding, become U+FFFD instead of an error. An
/// encoding this module does not read is looked at as if it were UTF-8, which is right
/// for the ASCII of the markup in every encoding a document might declare but UTF-16/32.
pub(super) fn decode_head(bytes: &[u8], max: usize) -> String {
    let (encoding, body) = detect(bytes).unwrap_or((Encoding::Utf8, bytes));
    let head = &body[..body.len().min(max)];
    let text = match encoding {
        Encoding::Utf8 => String::from_utf8_lossy(head).into_owned(),
        Encoding::Utf16Le | Encoding::Utf16Be => {
            let units = head.chunks_exact(2).map(|pair| {
                if encoding == Encoding::Utf16Le {
                    u16::from_le_bytes([pair[0], pair[1]])
                } else {
                    u16::from_be_bytes([pair[0], pair[1]])
                }
            });
            char::decode_utf16(units)
                .map(|unit| unit.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect()
        }
        Encoding::Windows1252 => head.iter().map(|&b| windows_1252(b)).collect(),
    };
    match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    }
}

/// The encoding of `bytes` and the bytes after any byte-order mark.
fn detect(bytes: &[u8]) -> Result<(Encoding, &[u8]), CdaError> {
    // UTF-32 first: its little-endian mark begins like UTF-16's.
    if bytes.starts_with(&[0xff, 0xfe, 0, 0]) || bytes.starts_with(&[0, 0, 0xfe, 0xff]) {
        return Err(CdaError::UnsupportedEncoding {
            name: "UTF-32".to_owned(),
        });
    }
    if let Some(rest) = bytes.strip_prefix(&[0xef, 0xbb, 0xbf]) {
        return Ok((Encoding::Utf8, rest));
    }
    if let Some(rest) = bytes.strip_prefix(&[0xff, 0xfe]) {
        return Ok((Encoding::Utf16Le, rest));
    }
    if let Some(rest) = bytes.strip_prefix(&[0xfe, 0xff]) {
        return Ok((Encoding::Utf16Be, rest));
    }
    // UTF-16 without a mark, recognised by "<?" (XML 1.0 appendix F.1).
    if bytes.starts_with(&[b'<', 0, b'?', 0]) {
        return Ok((Encoding::Utf16Le, bytes));
    }
    if bytes.starts_with(&[0, b'<', 0, b'?']) {
        return Ok((Encoding::Utf16Be, bytes));
    }
    let encoding = match declared_encoding(bytes) {
        None => Encoding::Utf8,
        Some(name) => match name.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Encoding::Utf8,
            // Declared UTF-16 but written in single bytes (no mark, no zero bytes where
            // UTF-16 has them): a wrong label from the tool that wrote it. The text is
            // read as UTF-8, and refused if it is not.
            "utf-16" | "utf-16le" | "utf-16be" | "utf16" => Encoding::Utf8,
            "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "iso_8859-1:1987" | "latin1"
            | "latin-1" | "l1" | "cp819" | "ibm819" | "iso-ir-100" | "csisolatin1"
            | "windows-1252" | "cp1252" | "x-cp1252" | "us-ascii" | "ascii" | "iso646-us" => {
                Encoding::Windows1252
            }
            _ => return Err(CdaError::UnsupportedEncoding { name }),
        },
    };
    Ok((encoding, bytes))
}

/// The `encoding` named in an XML declaration at the start of `bytes`, if there is one.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    /// Far longer than any real declaration; only this much is looked at.
    const DECLARATION_REACH: usize = 1024;
    let head = &bytes[..bytes.len().min(DECLARATION_REACH)];
    let start = head.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = head[start..].strip_prefix(b"<?xml")?;
    let end = head.windows(2).position(|pair| pair == b"?>")?;
    let declaration = std::str::from_utf8(&head[..end]).ok()?;
    let after = &declaration[declaration.find("encoding")? + "encoding".len()..];
    let after = after.trim_start().strip_prefix('=')?.trim_start();
    let quote = after.chars().next().filter(|c| matches!(c, '"' | '\''))?;
    let value = &after[1..];
    let name = &value[..value.find(quote)?];
    // Encoding names are Latin letters, digits and `._-` (XML 1.0 production [81]);
    // anything else is not a name, and is reported shortened and without controls.
    Some(name.chars().filter(|c| !c.is_control()).take(40).collect())
}

fn decode_utf16(body: &[u8], encoding: Encoding) -> Result<String, CdaError> {
    let bad = CdaError::BadText { encoding: "UTF-16" };
    if !body.len().is_multiple_of(2) {
        return Err(bad);
    }
    let units = body.chunks_exact(2).map(|pair| {
        if encoding == Encoding::Utf16Le {
            u16::from_le_bytes([pair[0], pair[1]])
        } else {
            u16::from_be_bytes([pair[0], pair[1]])
        }
    });
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| bad)
}

/// One windows-1252 byte as a character (WHATWG index-windows-1252; the five unassigned
/// bytes map to the C1 controls of the same value).
fn windows_1252(byte: u8) -> char {
    match byte {
        0x80..=0x9f => WINDOWS_1252_HIGH[usize::from(byte - 0x80)],
        _ => char::from(byte),
    }
}

/// The windows-1252 byte of `c`, if it has one: the inverse of [`windows_1252`].
fn to_windows_1252(c: char) -> Option<u8> {
    match u32::from(c) {
        code @ (0..=0x7f | 0xa0..=0xff) => u8::try_from(code).ok(),
        _ => WINDOWS_1252_HIGH
            .iter()
            .position(|&high| high == c)
            .and_then(|index| u8::try_from(0x80 + index).ok()),
    }
}

/// The characters of the windows-1252 bytes 0x80 to 0x9F.
const WINDOWS_1252_HIGH: [char; 32] = [
    '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}', '\u{8f}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}', '\u{178}',
];

/// Why base64 content could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Base64Problem {
    /// A character outside the base64 alphabet (white space is allowed and skipped).
    Invalid,
    /// The decoded data would be larger than the limit given.
    TooLarge,
}

/// Decodes base64 (RFC 4648 §4; white space skipped, padding optional), refusing before
/// allocating if the result would exceed `max_bytes`.
pub(super) fn base64_decode(text: &str, max_bytes: usize) -> Result<Vec<u8>, Base64Problem> {
    let significant = text.bytes().filter(|b| !b.is_ascii_whitespace()).count();
    if significant / 4 * 3 > max_bytes.saturating_add(3) {
        return Err(Base64Problem::TooLarge);
    }
    let mut out = Vec::with_capacity(significant / 4 * 3 + 3);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    let mut padding = 0;
    for byte in text.bytes().filter(|b| !b.is_ascii_whitespace()) {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding += 1;
                continue;
            }
            _ => return Err(Base64Problem::Invalid),
        };
        // Data after padding is not base64.
        if padding > 0 {
            return Err(Base64Problem::Invalid);
        }
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    if padding > 2 || bits >= 6 {
        return Err(Base64Problem::Invalid);
    }
    if out.len() > max_bytes {
        return Err(Base64Problem::TooLarge);
    }
    Ok(out)
}

/// Encodes `bytes` as base64 with padding (RFC 4648 §4).
pub(super) fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (index, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if index <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `text` with every byte but the RFC 3986 unreserved characters percent-encoded, fit to
/// be one query parameter's value.
pub(super) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3 / 2);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 15)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_with_or_without_a_mark_is_read_as_is() {
        assert_eq!(decode_text("<a>é</a>".as_bytes()).unwrap(), "<a>é</a>");
        assert_eq!(
            decode_text(b"\xef\xbb\xbf<a>\xc3\xa9</a>").unwrap(),
            "<a>é</a>"
        );
        assert!(matches!(
            decode_text(b"<a>\xe9</a>"),
            Err(CdaError::BadText { encoding: "UTF-8" })
        ));
    }

    #[test]
    fn latin1_and_windows_1252_declarations_are_honoured() {
        let latin1 = b"<?xml version='1.0' encoding='ISO-8859-1'?><a>Jos\xe9 \x93M\xfcller\x94</a>";
        assert_eq!(
            decode_text(latin1).unwrap(),
            "<?xml version='1.0' encoding='ISO-8859-1'?><a>José “Müller”</a>"
        );
        let cp1252 = b"<?xml version=\"1.0\" encoding = \"windows-1252\" ?><a>\x80</a>";
        assert!(decode_text(cp1252).unwrap().ends_with("<a>€</a>"));
    }

    #[test]
    fn utf16_is_recognised_by_its_mark_or_its_first_characters() {
        let text = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><a>Zoë 😀</a>";
        let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        for bytes in [
            [&[0xff, 0xfe][..], &le].concat(),
            [&[0xfe, 0xff][..], &be].concat(),
            le.clone(),
            be,
        ] {
            assert_eq!(decode_text(&bytes).unwrap(), text);
        }
        let mut odd = [&[0xff, 0xfe][..], &le].concat();
        odd.push(0);
        assert!(matches!(
            decode_text(&odd),
            Err(CdaError::BadText { encoding: "UTF-16" })
        ));
    }

    #[test]
    fn decoded_text_encodes_back_to_its_bytes() {
        let all_bytes: Vec<u8> = (0..=255u8).collect();
        let latin1 = [
            &b"<?xml version='1.0' encoding='windows-1252'?><a>"[..],
            &all_bytes,
            b"</a>",
        ]
        .concat();
        let text = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><a>Zoë 😀</a>";
        let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        for bytes in [
            latin1,
            [&[0xff, 0xfe][..], &le].concat(),
            be,
            "\u{feff}<a>é</a>".as_bytes().to_vec(),
        ] {
            let (text, encoding) = decode(&bytes).unwrap();
            let encoded = encoding.encode(&text);
            assert_eq!(encoded.len(), encoding.encoded_len(&text));
            assert!(bytes.ends_with(&encoded), "{encoding:?}");
        }
        assert_eq!(Encoding::Windows1252.encode("é€✓"), b"\xe9\x80&#x2713;");
    }

    #[test]
    fn other_encodings_are_named_in_the_refusal() {
        let err = decode_text(b"<?xml version='1.0' encoding='Shift_JIS'?><a/>").unwrap_err();
        assert!(matches!(&err, CdaError::UnsupportedEncoding { name } if name == "Shift_JIS"));
        assert!(matches!(
            decode_text(&[0xff, 0xfe, 0, 0, b'<', 0, 0, 0]),
            Err(CdaError::UnsupportedEncoding { .. })
        ));
    }

    #[test]
    fn base64_round_trips_and_refuses_what_is_not_base64() {
        for data in [
            &b""[..],
            b"a",
            b"ab",
            b"abc",
            b"abcd",
            b"\x00\xff\x10\x89PNG",
        ] {
            let encoded = base64_encode(data);
            assert_eq!(base64_decode(&encoded, 100).unwrap(), data, "{encoded}");
        }
        assert_eq!(base64_encode(b"abcd"), "YWJjZA==");
        assert_eq!(base64_decode(" YWJj\n ZA== ", 100).unwrap(), b"abcd");
        assert_eq!(base64_decode("YWJjZA", 100).unwrap(), b"abcd");
        assert_eq!(base64_decode("YW<j", 100), Err(Base64Problem::Invalid));
        assert_eq!(base64_decode("YQ==YQ==", 100), Err(Base64Problem::Invalid));
        assert_eq!(base64_decode("YWJjZA==", 3), Err(Base64Problem::TooLarge));
    }

    #[test]
    fn percent_encoding_leaves_only_unreserved_characters() {
        assert_eq!(
            percent_encode("https://x.example/a b?c=d&e=\"é\""),
            "https%3A%2F%2Fx.example%2Fa%20b%3Fc%3Dd%26e%3D%22%C3%A9%22"
        );
    }
}
