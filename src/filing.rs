//! What is read from a message once, when it is filed (delivered into a mailbox, or
//! the Sent copy of a message written here), and stored with it: the patient it is
//! about ([`crate::patient`], migration 0017) and the clinical documents it carries
//! (migration 0019, `message_documents`), so that a Reportability Response can find
//! the message that carried the case report it answers.
//!
//! [`read`] parses the MIME message once, reads each XDM package once and parses each
//! CDA document once; the patient and the documents both come from that one reading.

use directmail_content::cda::{self, CdaLimits, Document, InstanceId};
use directmail_content::xdm::{self, XdmLimits};
use mail_parser::{MessageParser, MimeHeaders as _};

use crate::patient::{self, MessagePatient};
use crate::sensitivity::{Label, Labeller};

/// The message's text as a reader sees it: every text part in order (a sensitive
/// message sends its notice as the first one), a blank line between them. Every page
/// and index that shows or searches a message's text reads it here.
pub fn text_of(message: &mail_parser::Message<'_>) -> String {
    (0..message.text_body.len())
        .filter_map(|n| message.body_text(n))
        .filter(|t| !t.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A clinical document a message carries, by its identifier (`ClinicalDocument/id`),
/// in the form [`document_key`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedDocument {
    /// The identifier's root in lower case (an OID or a UUID), or "".
    pub root: String,
    /// The identifier's extension as written, or "".
    pub extension: String,
    /// The document type (its LOINC `code`), such as 55751-2 for an eICR; "" when the
    /// document gives none.
    pub code: String,
}

impl CarriedDocument {
    /// The record of a parsed document; `None` when it has no usable identifier.
    fn of(document: &Document) -> Option<CarriedDocument> {
        let (root, extension) = document_key(document.id.as_ref()?)?;
        let code = document
            .document_type
            .as_ref()
            .map(|c| c.code.trim())
            .filter(|c| c.len() <= MAX_ID)
            .unwrap_or_default()
            .to_owned();
        Some(CarriedDocument {
            root,
            extension,
            code,
        })
    }
}

/// What filing reads from a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filing {
    /// The patient it is about ([`patient::choose`]).
    pub patient: Option<MessagePatient>,
    /// Its clinical documents that have an identifier, each once: the CDA attachments
    /// in order, then the CDA documents of its XDM packages; at most [`MAX_DOCUMENTS`].
    pub documents: Vec<CarriedDocument>,
    /// Whether it is a restricted record, and why ([`crate::sensitivity`]).
    pub label: Option<Label>,
    /// Its Direct Context `type` and `id` ("" when it has no readable block).
    pub context_type: String,
    pub context_id: String,
    /// The Message-IDs it answers: In-Reply-To, then References (without angle
    /// brackets), at most [`MAX_REPLIES_TO`].
    pub replies_to: Vec<String>,
    /// How many files it carries, the Direct Context part not counted.
    pub files: usize,
}

/// The most Message-IDs of In-Reply-To and References kept.
pub const MAX_REPLIES_TO: usize = 50;

/// The most documents recorded for one message.
pub const MAX_DOCUMENTS: usize = 100;

/// The longest root or extension (in bytes) recorded or looked up. Real identifiers
/// are OIDs and UUIDs of a few dozen characters; longer ones are not kept.
const MAX_ID: usize = 256;

/// The identifier as `message_documents` stores and finds it: the root trimmed and in
/// lower case (OIDs have no letters; UUIDs are the same in either case), the extension
/// trimmed (it is case-sensitive). `None` when it has neither, or either is longer than
/// 256 bytes. Recording and looking up both go through here.
pub fn document_key(id: &InstanceId) -> Option<(String, String)> {
    let root = id
        .root
        .as_deref()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let extension = id
        .extension
        .as_deref()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let usable = !(root.is_empty() && extension.is_empty())
        && root.len() <= MAX_ID
        && extension.len() <= MAX_ID;
    usable.then_some((root, extension))
}

/// The patient and the clinical documents of the message `raw`. CPU work (packages
/// are inflated and hashed, documents parsed): call it off the async threads. What
/// cannot be read (a refused package, a malformed document) is left out.
pub fn read(raw: &[u8]) -> Filing {
    let Some(message) = MessageParser::default().parse(raw) else {
        return Filing::default();
    };
    let limits = CdaLimits::default();
    let mut documents: Vec<CarriedDocument> = Vec::new();
    let mut keep = |document: &Document| {
        if let Some(carried) = CarriedDocument::of(document)
            && documents.len() < MAX_DOCUMENTS
            && !documents
                .iter()
                .any(|d| d.root == carried.root && d.extension == carried.extension)
        {
            documents.push(carried);
        }
    };
    // the first CDA attachment (parsed, or not when it cannot be read), for the patient
    let mut first_cda: Option<Option<Document>> = None;
    let mut from_packages: Option<MessagePatient> = None;
    let mut labeller = Labeller::default();
    labeller.text(&text_of(&message));
    for (n, part) in message.attachments().enumerate() {
        let bytes = part.contents();
        let name = part
            .attachment_name()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("attachment {}", n + 1));
        if xdm::is_xdm(bytes) {
            let Ok(package) = xdm::read_xdm(bytes, &XdmLimits::default()) else {
                continue;
            };
            if from_packages.is_none() {
                from_packages = patient::from_package(&package);
            }
            for document in package.documents() {
                labeller.xdm_document(&name, document);
                if !cda::is_cda(&document.bytes) {
                    continue;
                }
                if let Ok(parsed) = directmail_content::parse_cda(&document.bytes, &limits) {
                    labeller.cda(&format!("{} in {name}", document.label()), &parsed);
                    keep(&parsed);
                }
            }
        } else if cda::is_cda(bytes) {
            let parsed = directmail_content::parse_cda(bytes, &limits).ok();
            if let Some(document) = &parsed {
                labeller.cda(&name, document);
                keep(document);
            }
            if first_cda.is_none() {
                first_cda = Some(parsed);
            }
        }
    }
    let context = patient::context_block(&message);
    let files = message
        .attachments()
        .filter(|a| !context.as_ref().is_some_and(|(c, _)| std::ptr::eq(*a, *c)))
        .count();
    let clip = |s: Option<&String>| {
        s.map(|v| v.chars().take(MAX_ID).collect::<String>())
            .unwrap_or_default()
    };
    let (context_type, context_id) = context
        .as_ref()
        .map(|(_, block)| (clip(block.kind.as_ref()), clip(block.id.as_ref())))
        .unwrap_or_default();
    let mut replies_to: Vec<String> = Vec::new();
    for header in [message.in_reply_to(), message.references()] {
        for id in header.as_text_list().unwrap_or_default() {
            let id = id.trim().trim_matches(['<', '>']).to_owned();
            if !id.is_empty()
                && id.len() <= MAX_ID
                && !replies_to.contains(&id)
                && replies_to.len() < MAX_REPLIES_TO
            {
                replies_to.push(id);
            }
        }
    }
    Filing {
        patient: patient::choose(&message, from_packages, first_cda.flatten().as_ref()),
        documents,
        label: labeller.label(),
        context_type,
        context_id,
        replies_to,
        files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(root: Option<&str>, extension: Option<&str>) -> InstanceId {
        InstanceId {
            root: root.map(str::to_owned),
            extension: extension.map(str::to_owned),
        }
    }

    #[test]
    fn identifiers_are_kept_in_one_form() {
        assert_eq!(
            document_key(&id(Some(" 5B1E9C3A-7D2F-4A8B-9C0E-1F2A3B4C5D6E "), None)),
            Some(("5b1e9c3a-7d2f-4a8b-9c0e-1f2a3b4c5d6e".into(), String::new()))
        );
        assert_eq!(
            document_key(&id(Some("2.16.840.1.113883.19.5"), Some("eICR-77a"))),
            Some(("2.16.840.1.113883.19.5".into(), "eICR-77a".into()))
        );
        assert_eq!(document_key(&id(Some(" "), None)), None);
        assert_eq!(document_key(&id(Some(&"1.".repeat(200)), None)), None);
    }
}
