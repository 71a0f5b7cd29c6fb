//! Recognising a CDA document by its first bytes, without reading all of it: the
//! webmail decides from the content (never the file name or declared type) which
//! attachments open in the clinical document viewer.

use super::decode::decode_head;

/// How much of the start of a file is looked at: the prolog (XML declaration,
/// comments, processing instructions, a DTD) and the root element's start tag fit in
/// far less in any real document.
const REACH: usize = 64 * 1024;

/// The HL7 v3 namespace, of `ClinicalDocument` and everything in it.
const HL7_V3: &str = "urn:hl7-org:v3";

/// Whether `bytes` look like a CDA document: XML whose root element is
/// `ClinicalDocument` in the `urn:hl7-org:v3` namespace, in any encoding
/// [`super::parse_cda`] reads.
///
/// Only the start of the file is read (64 KiB at most), and nothing is checked beyond
/// the root's start tag: a document that declares a DTD, or is damaged further on, is
/// still recognised, so that the viewer can say why [`super::parse_cda`] refuses it.
pub fn is_cda(bytes: &[u8]) -> bool {
    let text = decode_head(bytes, REACH);
    root_start_tag(&text).is_some_and(|(name, attributes)| is_clinical_document(name, attributes))
}

/// The root element's name and the text of its attributes, after the prolog.
fn root_start_tag(text: &str) -> Option<(&str, &str)> {
    let mut rest = text.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("<?") {
            rest = &after[after.find("?>")? + 2..];
        } else if let Some(after) = rest.strip_prefix("<!--") {
            rest = &after[after.find("-->")? + 3..];
        } else if let Some(after) = rest.strip_prefix("<!DOCTYPE") {
            rest = &after[doctype_end(after)?..];
        } else if let Some(after) = rest.strip_prefix('<') {
            let tag = &after[..tag_end(after)?];
            let name_end = tag
                .find(|c: char| c.is_whitespace() || c == '/')
                .unwrap_or(tag.len());
            return Some((&tag[..name_end], &tag[name_end..]));
        } else {
            return None;
        }
        rest = rest.trim_start();
    }
}

/// Where a document type declaration that began just before `text` ends: after its
/// `>`, outside quotes and outside the internal subset (`[…]`).
fn doctype_end(text: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut in_subset = false;
    for (at, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[') => in_subset = true,
            (None, ']') => in_subset = false,
            (None, '>') if !in_subset => return Some(at + 1),
            _ => {}
        }
    }
    None
}

/// Where a start tag that began just before `text` ends: at its `>`, outside quotes.
fn tag_end(text: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (at, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some(at),
            _ => {}
        }
    }
    None
}

/// Whether the element `name` with these attributes is `ClinicalDocument` in the HL7 v3
/// namespace, declared on the element itself (the root has no ancestors to inherit one
/// from).
fn is_clinical_document(name: &str, attributes: &str) -> bool {
    let (prefix, local) = name.split_once(':').unwrap_or(("", name));
    if local != "ClinicalDocument" {
        return false;
    }
    let declaration = if prefix.is_empty() {
        "xmlns".to_owned()
    } else {
        format!("xmlns:{prefix}")
    };
    attribute_pairs(attributes).any(|(name, value)| name == declaration && value.trim() == HL7_V3)
}

/// `name="value"` pairs of a start tag's attribute text, as written (entities are not
/// decoded; a namespace name written with character references is not recognised).
fn attribute_pairs(mut text: &str) -> impl Iterator<Item = (&str, &str)> {
    std::iter::from_fn(move || {
        let rest = text.trim_start();
        let equals = rest.find('=')?;
        let name = rest[..equals].trim();
        let after = rest[equals + 1..].trim_start();
        let quote = after.chars().next().filter(|c| matches!(c, '"' | '\''))?;
        let value = &after[1..];
        let end = value.find(quote)?;
        text = &value[end + 1..];
        Some((name, &value[..end]))
    })
}

#[cfg(test)]
mod tests {
    use super::is_cda;

    #[test]
    fn a_clinical_document_is_recognised_by_its_root_and_namespace() {
        assert!(is_cda(include_bytes!(
            "../../tests/fixtures/cda/referral-note.xml"
        )));
        assert!(is_cda(include_bytes!(
            "../../tests/fixtures/cda/hostile.xml"
        )));
        assert!(is_cda(
            b"<v3:ClinicalDocument xmlns:v3 = 'urn:hl7-org:v3'><v3:title/></v3:ClinicalDocument>"
        ));
        assert!(is_cda(
            b"\xef\xbb\xbf<!-- a > in a comment --><?pi x?>\n<ClinicalDocument xmlns=\"urn:hl7-org:v3\">"
        ));
    }

    #[test]
    fn a_document_that_parse_cda_refuses_is_still_recognised_so_the_reason_can_be_shown() {
        assert!(is_cda(include_bytes!("../../tests/fixtures/cda/dtd.xml")));
        assert!(is_cda(include_bytes!(
            "../../tests/fixtures/cda/billion-laughs.xml"
        )));
        // cut short after the start tag
        assert!(is_cda(
            b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><title>Ref"
        ));
    }

    #[test]
    fn utf16_and_windows_1252_documents_are_recognised() {
        let text = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>";
        let mut le = vec![0xff, 0xfe];
        le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        assert!(is_cda(&le));
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert!(is_cda(&be));
        assert!(is_cda(
            b"<?xml version='1.0' encoding='ISO-8859-1'?><ClinicalDocument xmlns='urn:hl7-org:v3'><title>Caf\xe9</title></ClinicalDocument>"
        ));
    }

    #[test]
    fn other_files_are_not_clinical_documents() {
        for bytes in [
            &b"<ClinicalDocument><title/></ClinicalDocument>"[..],
            b"<ClinicalDocument xmlns=\"urn:hl7-org:v2\"/>",
            b"<x:ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>",
            b"<ClinicalDocumentary xmlns=\"urn:hl7-org:v3\"/>",
            b"<html><body>ClinicalDocument urn:hl7-org:v3</body></html>",
            b"<rs:SubmitObjectsRequest xmlns:rs=\"urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0\"/>",
            b"%PDF-1.7 <ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>",
            b"",
            b"<",
            b"<!DOCTYPE x [ <!ENTITY a '>'> ",
        ] {
            assert!(!is_cda(bytes), "{}", String::from_utf8_lossy(bytes));
        }
    }
}
