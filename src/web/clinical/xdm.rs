//! What the message page says about clinical attachments: an XDM package as a card
//! (patient, sender, recipient, each document with its type, time, confidentiality
//! and size, and the package's problems in sentences, or the one sentence saying why
//! it was refused), and a CDA attachment as a link to the viewer.
//!
//! The package's own `INDEX.HTM`, stylesheets and scripts are never served or
//! rendered: the card is written from the metadata, and documents open in our viewers.

use directmail_content::cda::{Time, confidentiality_words, is_cda};
use directmail_content::xdm::{self, Package, Party, Patient, XdmLimits};
use mail_parser::MessageParser;
use serde::{Deserialize, Serialize};

use super::{Open, open_as};
use crate::web::message::human_size;

/// What an attachment is, clinically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Clinical {
    /// A CDA document: it opens in the viewer.
    Cda,
    /// An XDM package: its card.
    Xdm(XdmCard),
}

/// An XDM package as the message page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdmCard {
    /// Why the package was not opened, in one sentence; it stays downloadable.
    pub refusal: Option<String>,
    pub sets: Vec<SetView>,
    /// What is wrong with the package, one sentence each.
    pub problems: Vec<String>,
    /// How many files of the package (its `INDEX.HTM`, stylesheets, scripts…) are not
    /// shown.
    pub ignored: usize,
}

/// One submission set: who sent what about whom, to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetView {
    /// (label, value): patient, patient ID, birth date, sex, author, intended
    /// recipient, time sent, reason.
    pub facts: Vec<(String, String)>,
    pub documents: Vec<DocumentView>,
}

/// One document of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentView {
    /// Its number in the package (all submission sets, in order), for its route.
    pub k: usize,
    pub title: String,
    /// What kind of document the sender says it is (its type code's name), or "".
    pub type_words: String,
    /// What the file is, from its bytes: "Clinical document (CDA)", "PDF document"…
    pub kind: String,
    pub size: String,
    /// When it was made, in words, or "".
    pub created: String,
    /// Its confidentiality in words ("Normal", "Restricted"…), or "".
    pub confidentiality: String,
    pub open: Open,
}

impl DocumentView {
    /// Why a file a browser could show is download-only ("" when it is not).
    pub fn refusal(&self) -> &str {
        match &self.open {
            Open::Download(Some(why)) => why,
            _ => "",
        }
    }
}

/// For each attachment of the message `raw` (numbered as the attachment route numbers
/// them), whether it is a clinical document or an XDM package, with the package's
/// card. CPU work (packages are inflated and hashed, PDFs in them checked): call it off
/// the async threads.
pub fn inspect(raw: &[u8]) -> Vec<Option<Clinical>> {
    let Some(parsed) = MessageParser::default().parse(raw) else {
        return Vec::new();
    };
    parsed
        .attachments()
        .map(|part| {
            let bytes = part.contents();
            if xdm::is_xdm(bytes) {
                Some(Clinical::Xdm(card(bytes)))
            } else if is_cda(bytes) {
                Some(Clinical::Cda)
            } else {
                None
            }
        })
        .collect()
}

/// The card of the package in `bytes`.
pub fn card(bytes: &[u8]) -> XdmCard {
    match xdm::read_xdm(bytes, &XdmLimits::default()) {
        Ok(package) => package_card(&package),
        Err(error) => XdmCard {
            refusal: Some(error.to_string()),
            sets: Vec::new(),
            problems: Vec::new(),
            ignored: 0,
        },
    }
}

fn package_card(package: &Package) -> XdmCard {
    let mut k = 0;
    let sets = package
        .submission_sets
        .iter()
        .map(|set| {
            let mut facts = Vec::new();
            if let Some(patient) = &set.patient {
                patient_facts(&mut facts, patient);
            }
            for author in &set.authors {
                facts.push(("From".into(), party(author)));
            }
            for recipient in &set.intended_recipients {
                facts.push(("For".into(), party(recipient)));
            }
            if let Some(sent) = set.submission_time.as_deref().and_then(utc_time) {
                facts.push(("Sent".into(), sent));
            }
            if let Some(reason) = &set.content_type {
                facts.push(("Reason".into(), code_words(reason)));
            }
            let documents = set
                .documents
                .iter()
                .map(|document| {
                    let view = document_view(k, document);
                    k += 1;
                    view
                })
                .collect();
            SetView { facts, documents }
        })
        .collect();
    XdmCard {
        refusal: None,
        sets,
        problems: package.problems.iter().map(ToString::to_string).collect(),
        ignored: package.ignored.len(),
    }
}

fn document_view(k: usize, document: &xdm::Document) -> DocumentView {
    let name = document.uri.rsplit('/').next().unwrap_or(&document.uri);
    let open = open_as(name, document.mime_type.as_deref(), &document.bytes);
    let kind = match &open {
        Open::Viewer => "Clinical document (CDA)".to_owned(),
        Open::Inline(_) | Open::Download(Some(_)) => {
            match directmail_content::inline_type(&document.bytes) {
                Some("application/pdf") => "PDF document".to_owned(),
                Some(image) => format!(
                    "{} image",
                    image.trim_start_matches("image/").to_ascii_uppercase()
                ),
                None => "File".to_owned(),
            }
        }
        Open::Text => "Text".to_owned(),
        Open::Download(None) => match document.mime_type.as_deref() {
            Some(t) if t.contains("xml") => "XML file".to_owned(),
            Some(t) if !t.trim().is_empty() => format!("File ({})", t.trim()),
            _ => "File".to_owned(),
        },
    };
    DocumentView {
        k,
        title: document.label(),
        type_words: document
            .type_code
            .as_ref()
            .map(code_words)
            .unwrap_or_default(),
        kind,
        size: human_size(document.bytes.len()),
        created: document
            .creation_time
            .as_deref()
            .and_then(utc_time)
            .unwrap_or_default(),
        confidentiality: document
            .confidentiality
            .iter()
            .map(|code| {
                confidentiality_words(&code.code)
                    .map(str::to_owned)
                    .unwrap_or_else(|| code_words(code))
            })
            .collect::<Vec<_>>()
            .join(", "),
        open,
    }
}

fn patient_facts(facts: &mut Vec<(String, String)>, patient: &Patient) {
    if let Some(name) = patient.name() {
        facts.push(("Patient".into(), name));
    }
    if let Some(id) = patient.id.as_deref().and_then(patient_id) {
        facts.push(("Patient ID".into(), id));
    }
    if let Some(birth) = patient.birth_date.as_deref().and_then(Time::parse) {
        facts.push(("Birth date".into(), birth.readable));
    }
    if let Some(sex) = patient.sex.as_deref().and_then(sex_words) {
        facts.push(("Sex".into(), sex));
    }
}

/// An HL7 CX identifier as "12345 (1.2.840.114350)" (see [`crate::patient::cx_display`]).
fn patient_id(cx: &str) -> Option<String> {
    crate::patient::cx_display(cx)
}

/// HL7 v2 administrative sex (table 0001) in words.
fn sex_words(code: &str) -> Option<String> {
    crate::patient::sex_words(code)
}

/// An XDS time (UTC, `YYYY[MM[DD[hh[mm[ss]]]]]`) in words.
fn utc_time(raw: &str) -> Option<String> {
    let time = Time::parse(raw)?;
    Some(if time.raw.len() > 8 && time.readable != time.raw {
        format!("{} UTC", time.readable)
    } else {
        time.readable
    })
}

/// A person or organization: "Dr Jane Smith, Lakeside Clinic (dr.smith@direct.example)".
fn party(party: &Party) -> String {
    let names: Vec<&str> = [party.person.as_deref(), party.institution.as_deref()]
        .into_iter()
        .flatten()
        .filter(|s| !s.trim().is_empty())
        .collect();
    match (names.is_empty(), party.address.as_deref()) {
        (false, Some(address)) => format!("{} ({address})", names.join(", ")),
        (false, None) => names.join(", "),
        (true, Some(address)) => address.to_owned(),
        (true, None) => "Not named".to_owned(),
    }
}

/// A code's name, or the code itself.
fn code_words(code: &xdm::Code) -> String {
    if code.display.trim().is_empty() {
        code.code.clone()
    } else {
        code.display.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_sexes_and_times_read_as_words() {
        assert_eq!(
            patient_id("12345^^^&1.2.840.114350&ISO").as_deref(),
            Some("12345 (1.2.840.114350)")
        );
        assert_eq!(patient_id("777").as_deref(), Some("777"));
        assert_eq!(patient_id("^^^&1.2&ISO"), None);
        assert_eq!(sex_words("F").as_deref(), Some("Female"));
        assert_eq!(sex_words(" "), None);
        assert_eq!(
            utc_time("20240312143000").as_deref(),
            Some("March 12, 2024, 14:30 UTC")
        );
        assert_eq!(utc_time("19600412").as_deref(), Some("April 12, 1960"));
    }
}
