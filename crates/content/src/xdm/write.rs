//! Writing an XDM package for a Direct message (ITI-32 as profiled by "XDR and XDM for
//! Direct Messaging"): `README.TXT`, `INDEX.HTM`, and one submission set in
//! `IHE_XDM/SUBSET01/` with `METADATA.XML` and the documents `DOC0001.XML`,
//! `DOC0002.PDF`, ….
//!
//! The metadata is Direct's minimal metadata, labelled as limited metadata (ITI TF-3
//! Table 4.3.1-3, column "XDM"). Nothing here reads a clock or a random source: the
//! time and a random seed come in with the input, so the same input gives the same
//! bytes.

use std::fmt::Write as _;
use std::io::{Cursor, Write as _};

use sha1::{Digest, Sha1};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use super::error::WriteError;
use super::scheme::*;
use super::{Code, Patient, hl7};

/// What goes into a package. See [`write_xdm`].
#[derive(Debug, Clone)]
pub struct XdmInput<'a> {
    /// When the package is made, in seconds since the Unix epoch: the submission time,
    /// and the time stamps of the files in the ZIP. UTC.
    pub now: i64,
    /// Sixteen random bytes from the caller. Every entryUUID and uniqueId in the package
    /// is derived from them, so they must be fresh for each package.
    pub seed: [u8; 16],
    /// Who sends the package: the SubmissionSet author.
    pub sender: Sender,
    /// The Direct addresses the package is for (intendedRecipient). At least one.
    pub recipients: Vec<String>,
    /// The sending organization's OID (sourceId). When `None`, an OID is derived from the
    /// sender's address (`2.25.` and a name-based UUID, ITU-T X.667), which is stable for
    /// that sender.
    pub source_id: Option<String>,
    /// The patient, when the sender knows them. `id` must be `id^^^&OID&ISO`; names,
    /// birth date (`YYYYMMDD`) and sex (`F`, `M`, `U`…) go into sourcePatientInfo.
    pub patient: Option<Patient>,
    /// The SubmissionSet contentTypeCode (why the package is sent), when known.
    pub content_type: Option<Code>,
    /// The documents, in order: `DOC0001`, `DOC0002`, ….
    pub documents: Vec<DocumentInput<'a>>,
}

/// The sender of a package.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sender {
    /// The person's name as it should be shown ("Dr Jane Smith").
    pub person: Option<String>,
    /// The organization's name.
    pub institution: Option<String>,
    /// The sender's Direct address (authorTelecommunication). Required.
    pub address: String,
}

/// One document to put in a package.
#[derive(Debug, Clone)]
pub struct DocumentInput<'a> {
    /// The title shown to the reader (the DocumentEntry name).
    pub title: String,
    /// The MIME type, such as `application/pdf` or `text/xml`; it also picks the file
    /// name's extension.
    pub mime_type: String,
    /// The content.
    pub bytes: &'a [u8],
    /// How confidential the document is; [`Confidentiality::Normal`] unless the sender
    /// says otherwise.
    pub confidentiality: Confidentiality,
    /// When the document was made, in seconds since the Unix epoch, when known.
    pub creation_time: Option<i64>,
    /// What kind of document it is (typeCode), when known.
    pub type_code: Option<Code>,
    /// Its broad class (classCode), when known.
    pub class_code: Option<Code>,
    /// Security labels beyond the HL7 confidentiality, such as the DS4P policy
    /// `42CFRPart2` or the refrain policy `NORDSCLCD` (ActCode,
    /// 2.16.840.1.113883.5.4): each written as one more confidentialityCode, in its own
    /// coding scheme, after the HL7 one. Repeats (same code and scheme as the HL7 code
    /// or an earlier label) are written once. Usually empty.
    pub security_labels: Vec<Code>,
}

/// HL7 v3 confidentiality (code system 2.16.840.1.113883.5.25), written as the
/// DocumentEntry confidentialityCode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Confidentiality {
    /// `N`: normal health information.
    #[default]
    Normal,
    /// `R`: restricted, such as mental health or HIV status.
    Restricted,
    /// `V`: very restricted, for the named recipients only.
    VeryRestricted,
}

impl Confidentiality {
    /// The code and its display name.
    pub fn code(self) -> Code {
        let (code, display) = match self {
            Confidentiality::Normal => ("N", "normal"),
            Confidentiality::Restricted => ("R", "restricted"),
            Confidentiality::VeryRestricted => ("V", "very restricted"),
        };
        Code {
            code: code.to_owned(),
            scheme: HL7_CONFIDENTIALITY.to_owned(),
            display: display.to_owned(),
        }
    }
}

/// The folder of the one submission set written.
const SUBSET: &str = "IHE_XDM/SUBSET01";

/// Builds an XDM package (a ZIP file) from `input`.
///
/// The package holds `README.TXT`, `INDEX.HTM` (a static list of the documents, no
/// scripts), `IHE_XDM/SUBSET01/METADATA.XML` and the documents. Its metadata carries
/// what Direct's minimal metadata requires: for the SubmissionSet the author (the
/// sender's name, organization and address), entryUUID, intendedRecipient, sourceId,
/// submissionTime, uniqueId and the limited-metadata classification, with patientId and
/// contentTypeCode when known; for each DocumentEntry the entryUUID, mimeType, uniqueId,
/// formatCode `urn:ihe:iti:xds:2017:mimeTypeSufficient`, hash (SHA-1), size, URI,
/// confidentialityCode (the HL7 code, then any security labels) and the
/// limited-metadata classification, with creationTime, typeCode, classCode, patientId
/// and sourcePatientInfo when known; and a HasMember association from the SubmissionSet
/// to each document.
pub fn write_xdm(input: &XdmInput) -> Result<Vec<u8>, WriteError> {
    check(input)?;
    let now = Utc::from_unix(input.now).ok_or(WriteError::InvalidTime)?;
    let files: Vec<String> = input
        .documents
        .iter()
        .enumerate()
        .map(|(index, document)| {
            format!("DOC{:04}.{}", index + 1, extension_for(&document.mime_type))
        })
        .collect();
    let metadata = metadata_xml(input, &now, &files)?;

    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(now.zip_time());
    let mut add = |name: &str, bytes: &[u8]| -> Result<(), WriteError> {
        zip.start_file(name, options).map_err(|_| WriteError::Zip)?;
        zip.write_all(bytes).map_err(|_| WriteError::Zip)
    };
    add("README.TXT", readme(input, &now, &files).as_bytes())?;
    add("INDEX.HTM", index_htm(input, &files).as_bytes())?;
    add(&format!("{SUBSET}/METADATA.XML"), metadata.as_bytes())?;
    for (document, file) in input.documents.iter().zip(&files) {
        add(&format!("{SUBSET}/{file}"), document.bytes)?;
    }
    let cursor = zip.finish().map_err(|_| WriteError::Zip)?;
    Ok(cursor.into_inner())
}

fn check(input: &XdmInput) -> Result<(), WriteError> {
    if input.documents.is_empty() {
        return Err(WriteError::NoDocuments);
    }
    if input.documents.len() > 9999 {
        return Err(WriteError::TooManyDocuments);
    }
    if input.recipients.is_empty() {
        return Err(WriteError::NoRecipients);
    }
    for address in std::iter::once(&input.sender.address).chain(&input.recipients) {
        if !is_address(address) {
            return Err(WriteError::InvalidAddress {
                address: address.clone(),
            });
        }
    }
    if input
        .source_id
        .as_deref()
        .is_some_and(|oid| !hl7::is_oid(oid))
    {
        return Err(WriteError::InvalidSourceId);
    }
    if input
        .patient
        .as_ref()
        .and_then(|patient| patient.id.as_deref())
        .is_some_and(|id| !hl7::is_patient_cx(id))
    {
        return Err(WriteError::InvalidPatientId);
    }
    for document in &input.documents {
        if !is_mime_type(&document.mime_type) {
            return Err(WriteError::InvalidMimeType {
                mime_type: document.mime_type.clone(),
            });
        }
    }
    Ok(())
}

/// An address that can stand in an XTN and in README.TXT: `local@domain`, printable
/// ASCII without spaces, quotes or angle brackets. The caller has already parsed it as a
/// Direct address; this only keeps nonsense out of the metadata. HL7 delimiters, which
/// RFC 5322 allows in a local part, are escaped where the address is written.
fn is_address(address: &str) -> bool {
    let printable = address.bytes().all(|b| b.is_ascii_graphic());
    let shape = address
        .rsplit_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    printable && shape && !address.contains(['<', '>', '"'])
}

/// `type/subtype`, each an RFC 2045 token.
fn is_mime_type(value: &str) -> bool {
    let token = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    value
        .split_once('/')
        .is_some_and(|(kind, subtype)| token(kind) && token(subtype))
}

/// The extension of a document's file name, from its MIME type.
fn extension_for(mime_type: &str) -> &'static str {
    match mime_type.to_ascii_lowercase().as_str() {
        "text/xml" | "application/xml" | "application/hl7-v3+xml" => "XML",
        "application/pdf" => "PDF",
        "text/plain" => "TXT",
        "image/png" => "PNG",
        "image/jpeg" => "JPG",
        "image/gif" => "GIF",
        "image/tiff" => "TIF",
        "application/msword" => "DOC",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "DOCX",
        "application/rtf" | "text/rtf" => "RTF",
        _ => "BIN",
    }
}

/// Identifiers derived from the caller's seed: each call gives the next one.
struct Ids {
    seed: [u8; 16],
    counter: u32,
}

impl Ids {
    /// A version-4-shaped UUID: SHA-1 of the seed and a counter, with the version and
    /// variant bits set (RFC 9562 §5.4). As random as the seed.
    fn next_bytes(&mut self) -> [u8; 16] {
        let mut hasher = Sha1::new();
        hasher.update(b"directmail XDM identifier\0");
        hasher.update(self.seed);
        hasher.update(self.counter.to_be_bytes());
        self.counter += 1;
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        bytes
    }

    /// `urn:uuid:…`, for entryUUIDs and the ids of classifications and identifiers.
    fn urn(&mut self) -> String {
        format!("urn:uuid:{}", uuid_text(self.next_bytes()))
    }

    /// `2.25.…`, an OID made from a UUID (ITU-T X.667 §6.3), for uniqueIds.
    fn oid(&mut self) -> String {
        uuid_oid(self.next_bytes())
    }
}

fn uuid_text(b: [u8; 16]) -> String {
    let hex = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn uuid_oid(b: [u8; 16]) -> String {
    format!("2.25.{}", u128::from_be_bytes(b))
}

/// The sourceId used when the caller has none: the OID of the name-based UUID (RFC 9562
/// §5.5, SHA-1, URL namespace) of `mailto:<sender>`; the same sender always gets the
/// same sourceId.
fn source_id_for(address: &str) -> String {
    // RFC 9562 Appendix A: the URL namespace, 6ba7b811-9dad-11d1-80b4-00c04fd430c8.
    const URL_NAMESPACE: [u8; 16] = [
        0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30,
        0xc8,
    ];
    let mut hasher = Sha1::new();
    hasher.update(URL_NAMESPACE);
    hasher.update(format!("mailto:{}", address.to_ascii_lowercase()).as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x50;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid_oid(bytes)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

pub(super) fn sha1_hex(bytes: &[u8]) -> String {
    hex(&Sha1::digest(bytes))
}

/// A UTC calendar time.
pub(super) struct Utc {
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl Utc {
    /// The calendar time of `seconds` since the epoch, for the years 1980 to 9999 (a ZIP
    /// time stamp cannot go earlier, an XDS DTM later).
    pub(super) fn from_unix(seconds: i64) -> Option<Utc> {
        let days = seconds.div_euclid(86_400);
        let of_day = seconds.rem_euclid(86_400);
        // H. Hinnant, "chrono-Compatible Low-Level Date Algorithms", civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        if !(1980..=9999).contains(&year) {
            return None;
        }
        Some(Utc {
            year,
            month: u8::try_from(month).ok()?,
            day: u8::try_from(day).ok()?,
            hour: u8::try_from(of_day / 3600).ok()?,
            minute: u8::try_from(of_day % 3600 / 60).ok()?,
            second: u8::try_from(of_day % 60).ok()?,
        })
    }

    /// XDS DTM to the second, `YYYYMMDDHHMMSS` (ITI TF-3 §4.2.3.1.4).
    pub(super) fn dtm(&self) -> String {
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    fn readable(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    fn zip_time(&self) -> DateTime {
        u16::try_from(self.year)
            .ok()
            .and_then(|year| {
                DateTime::from_date_and_time(
                    year,
                    self.month,
                    self.day,
                    self.hour,
                    self.minute,
                    self.second,
                )
                .ok()
            })
            // After 2107 a ZIP cannot say; the DOS epoch is the usual stand-in.
            .unwrap_or_default()
    }
}

/// Text for XML content and attribute values: markup characters escaped, line breaks
/// kept as character references (attribute-value normalization would turn them into
/// spaces), and characters XML 1.0 cannot hold at all (§2.2) replaced by U+FFFD.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A little indenting XML writer for the `rim:` vocabulary.
struct Xml {
    out: String,
    depth: usize,
}

impl Xml {
    fn line(&mut self, text: &str) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn tag(name: &str, attributes: &[(&str, &str)], empty: bool) -> String {
        let mut tag = format!("<{name}");
        for (key, value) in attributes {
            let _ = write!(tag, " {key}=\"{}\"", esc(value));
        }
        tag.push_str(if empty { "/>" } else { ">" });
        tag
    }

    fn open(&mut self, name: &str, attributes: &[(&str, &str)]) {
        self.line(&Self::tag(name, attributes, false));
        self.depth += 1;
    }

    fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.line(&format!("</{name}>"));
    }

    fn empty(&mut self, name: &str, attributes: &[(&str, &str)]) {
        self.line(&Self::tag(name, attributes, true));
    }

    fn slot(&mut self, name: &str, values: &[String]) {
        self.open("rim:Slot", &[("name", name)]);
        self.open("rim:ValueList", &[]);
        for value in values {
            self.line(&format!("<rim:Value>{}</rim:Value>", esc(value)));
        }
        self.close("rim:ValueList");
        self.close("rim:Slot");
    }

    fn name(&mut self, text: &str) {
        self.open("rim:Name", &[]);
        self.empty("rim:LocalizedString", &[("value", text)]);
        self.close("rim:Name");
    }

    /// A coded classification (ITI TF-3 §4.2.3.1.2): the code, its scheme and name.
    fn code(&mut self, ids: &mut Ids, scheme: &str, object: &str, code: &Code) {
        let id = ids.urn();
        self.open(
            "rim:Classification",
            &[
                ("id", &id),
                ("objectType", OBJECT_TYPE_CLASSIFICATION),
                ("classificationScheme", scheme),
                ("classifiedObject", object),
                ("nodeRepresentation", &code.code),
            ],
        );
        self.slot(SLOT_CODING_SCHEME, std::slice::from_ref(&code.scheme));
        self.name(&code.display);
        self.close("rim:Classification");
    }

    /// A classification by node only, such as the limited-metadata label.
    fn label(&mut self, ids: &mut Ids, object: &str, node: &str) {
        let id = ids.urn();
        self.empty(
            "rim:Classification",
            &[
                ("id", &id),
                ("objectType", OBJECT_TYPE_CLASSIFICATION),
                ("classifiedObject", object),
                ("classificationNode", node),
            ],
        );
    }

    /// An external identifier (ITI TF-3 §4.2.3.1.3) with its conventional name.
    fn identifier(&mut self, ids: &mut Ids, scheme: &str, object: &str, value: &str, name: &str) {
        let id = ids.urn();
        self.open(
            "rim:ExternalIdentifier",
            &[
                ("id", &id),
                ("objectType", OBJECT_TYPE_EXTERNAL_ID),
                ("identificationScheme", scheme),
                ("registryObject", object),
                ("value", value),
            ],
        );
        self.name(name);
        self.close("rim:ExternalIdentifier");
    }
}

/// `sourcePatientInfo` values (ITI TF-3 §4.2.3.2.23).
fn source_patient_info(patient: &Patient) -> Vec<String> {
    let mut values = Vec::new();
    if let Some(id) = &patient.id {
        values.push(format!("PID-3|{id}"));
    }
    if patient.family_name.is_some() || patient.given_names.is_some() {
        values.push(format!(
            "PID-5|{}^{}",
            hl7::escape(patient.family_name.as_deref().unwrap_or_default()),
            hl7::escape(patient.given_names.as_deref().unwrap_or_default())
        ));
    }
    if let Some(birth_date) = &patient.birth_date {
        values.push(format!("PID-7|{}", hl7::escape(birth_date)));
    }
    if let Some(sex) = &patient.sex {
        values.push(format!("PID-8|{}", hl7::escape(sex)));
    }
    values
}

fn metadata_xml(input: &XdmInput, now: &Utc, files: &[String]) -> Result<String, WriteError> {
    let mut ids = Ids {
        seed: input.seed,
        counter: 0,
    };
    let set_id = ids.urn();
    let set_unique_id = ids.oid();
    let document_ids: Vec<(String, String)> = input
        .documents
        .iter()
        .map(|_| (ids.urn(), ids.oid()))
        .collect();
    let patient = input.patient.as_ref();
    let patient_id = patient.and_then(|patient| patient.id.as_deref());

    let mut xml = Xml {
        out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
        depth: 0,
    };
    xml.open(
        "lcm:SubmitObjectsRequest",
        &[("xmlns:lcm", LCM), ("xmlns:rim", RIM)],
    );
    xml.open("rim:RegistryObjectList", &[]);

    for ((document, file), (entry_uuid, unique_id)) in
        input.documents.iter().zip(files).zip(&document_ids)
    {
        // ebRIM 3.0 order within a RegistryObject: Slot*, Name, Description,
        // Classification*, ExternalIdentifier*.
        xml.open(
            "rim:ExtrinsicObject",
            &[
                ("id", entry_uuid),
                ("mimeType", &document.mime_type),
                ("objectType", DOCUMENT_ENTRY),
            ],
        );
        if let Some(created) = document.creation_time {
            let created = Utc::from_unix(created).ok_or(WriteError::InvalidTime)?;
            xml.slot(SLOT_CREATION_TIME, &[created.dtm()]);
        }
        xml.slot(SLOT_HASH, &[sha1_hex(document.bytes)]);
        xml.slot(SLOT_SIZE, &[document.bytes.len().to_string()]);
        if let Some(id) = patient_id {
            xml.slot(SLOT_SOURCE_PATIENT_ID, &[id.to_owned()]);
        }
        if let Some(patient) = patient {
            let info = source_patient_info(patient);
            if !info.is_empty() {
                xml.slot(SLOT_SOURCE_PATIENT_INFO, &info);
            }
        }
        xml.slot(SLOT_URI, std::slice::from_ref(file));
        xml.name(&document.title);
        if let Some(class_code) = &document.class_code {
            xml.code(&mut ids, DOCUMENT_CLASS_CODE, entry_uuid, class_code);
        }
        let mut confidentiality = vec![document.confidentiality.code()];
        for label in &document.security_labels {
            if !confidentiality
                .iter()
                .any(|written| written.code == label.code && written.scheme == label.scheme)
            {
                confidentiality.push(label.clone());
            }
        }
        for code in &confidentiality {
            xml.code(&mut ids, DOCUMENT_CONFIDENTIALITY, entry_uuid, code);
        }
        xml.code(
            &mut ids,
            DOCUMENT_FORMAT_CODE,
            entry_uuid,
            &Code {
                code: FORMAT_MIME_TYPE_SUFFICIENT.to_owned(),
                scheme: IHE_FORMAT_CODES.to_owned(),
                display: "mimeType Sufficient".to_owned(),
            },
        );
        if let Some(type_code) = &document.type_code {
            xml.code(&mut ids, DOCUMENT_TYPE_CODE, entry_uuid, type_code);
        }
        xml.label(&mut ids, entry_uuid, DOCUMENT_LIMITED);
        if let Some(id) = patient_id {
            xml.identifier(
                &mut ids,
                DOCUMENT_PATIENT_ID,
                entry_uuid,
                id,
                "XDSDocumentEntry.patientId",
            );
        }
        xml.identifier(
            &mut ids,
            DOCUMENT_UNIQUE_ID,
            entry_uuid,
            unique_id,
            "XDSDocumentEntry.uniqueId",
        );
        xml.close("rim:ExtrinsicObject");
    }

    xml.open(
        "rim:RegistryPackage",
        &[("id", &set_id), ("objectType", OBJECT_TYPE_PACKAGE)],
    );
    xml.slot(SLOT_SUBMISSION_TIME, &[now.dtm()]);
    // ITI TF-3 §4.2.3.3.6 as profiled by Direct: no organization, no person, the
    // recipient's Direct address as an XTN.
    let recipients: Vec<String> = input
        .recipients
        .iter()
        .map(|address| format!("||^^Internet^{}", hl7::escape(address)))
        .collect();
    xml.slot(SLOT_INTENDED_RECIPIENT, &recipients);
    let author_id = ids.urn();
    xml.open(
        "rim:Classification",
        &[
            ("id", &author_id),
            ("objectType", OBJECT_TYPE_CLASSIFICATION),
            ("classificationScheme", SUBMISSION_SET_AUTHOR),
            ("classifiedObject", &set_id),
            ("nodeRepresentation", ""),
        ],
    );
    if let Some(person) = &input.sender.person {
        // XCN has no component for a whole name; HL7 puts an unparsed name in the
        // family name (component 2) rather than guess where given names end.
        xml.slot(SLOT_AUTHOR_PERSON, &[format!("^{}", hl7::escape(person))]);
    }
    if let Some(institution) = &input.sender.institution {
        xml.slot(SLOT_AUTHOR_INSTITUTION, &[hl7::escape(institution)]);
    }
    xml.slot(
        SLOT_AUTHOR_TELECOM,
        &[format!("^^Internet^{}", hl7::escape(&input.sender.address))],
    );
    xml.close("rim:Classification");
    if let Some(content_type) = &input.content_type {
        xml.code(&mut ids, SUBMISSION_SET_CONTENT_TYPE, &set_id, content_type);
    }
    xml.label(&mut ids, &set_id, SUBMISSION_SET_LIMITED);
    if let Some(id) = patient_id {
        xml.identifier(
            &mut ids,
            SUBMISSION_SET_PATIENT_ID,
            &set_id,
            id,
            "XDSSubmissionSet.patientId",
        );
    }
    let source_id = input
        .source_id
        .clone()
        .unwrap_or_else(|| source_id_for(&input.sender.address));
    xml.identifier(
        &mut ids,
        SUBMISSION_SET_SOURCE_ID,
        &set_id,
        &source_id,
        "XDSSubmissionSet.sourceId",
    );
    xml.identifier(
        &mut ids,
        SUBMISSION_SET_UNIQUE_ID,
        &set_id,
        &set_unique_id,
        "XDSSubmissionSet.uniqueId",
    );
    xml.close("rim:RegistryPackage");

    xml.label(&mut ids, &set_id, SUBMISSION_SET_NODE);
    for (entry_uuid, _) in &document_ids {
        let id = ids.urn();
        xml.open(
            "rim:Association",
            &[
                ("id", &id),
                ("objectType", OBJECT_TYPE_ASSOCIATION),
                ("associationType", HAS_MEMBER),
                ("sourceObject", &set_id),
                ("targetObject", entry_uuid),
            ],
        );
        xml.slot(SLOT_SUBMISSION_SET_STATUS, &["Original".to_owned()]);
        xml.close("rim:Association");
    }
    xml.close("rim:RegistryObjectList");
    xml.close("lcm:SubmitObjectsRequest");
    Ok(xml.out)
}

/// README.TXT (ITI TF-2b §3.32.4.1.2.2): who made the package, with what, and how to
/// open it. CRLF line ends, for the systems most likely to open it by hand.
fn readme(input: &XdmInput, now: &Utc, files: &[String]) -> String {
    let sender = &input.sender;
    let who = [sender.person.as_deref(), sender.institution.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
    let from = if who.is_empty() {
        sender.address.clone()
    } else {
        format!("{who} <{}>", sender.address)
    };
    let mut lines = vec![
        "This package holds health documents sent by Direct secure messaging, in the IHE"
            .to_owned(),
        "XDM format (IHE IT Infrastructure Technical Framework, transaction ITI-32).".to_owned(),
        String::new(),
        format!("Sent by:      {from}"),
        format!("Sent to:      {}", input.recipients.join(", ")),
        format!("Created:      {}", now.readable()),
        format!(
            "Created with: directmail {} (Direct secure messaging webmail)",
            env!("CARGO_PKG_VERSION")
        ),
        String::new(),
        "Open INDEX.HTM in a web browser for the list of documents. The documents are in"
            .to_owned(),
        format!("the folder {SUBSET}, described by METADATA.XML in that folder:"),
        String::new(),
    ];
    for (document, file) in input.documents.iter().zip(files) {
        lines.push(format!("  {file}  {}", one_line(&document.title)));
    }
    lines.push(String::new());
    lines.push(format!(
        "For questions about this package, contact the sender at {}.",
        sender.address
    ));
    let mut text = lines.join("\r\n");
    text.push_str("\r\n");
    text
}

/// INDEX.HTM: a static page listing the documents with links; no scripts, no styles
/// from elsewhere.
fn index_htm(input: &XdmInput, files: &[String]) -> String {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Documents sent by Direct secure messaging</title>\n</head>\n<body>\n\
         <h1>Documents sent by Direct secure messaging</h1>\n",
    );
    let _ = writeln!(
        html,
        "<p>From {} to {}.</p>",
        esc(&input.sender.address),
        esc(&input.recipients.join(", "))
    );
    html.push_str("<ul>\n");
    for (document, file) in input.documents.iter().zip(files) {
        let _ = writeln!(
            html,
            "<li><a href=\"{SUBSET}/{file}\">{}</a> ({}, {} bytes)</li>",
            esc(&one_line(&document.title)),
            esc(&document.mime_type),
            document.bytes.len()
        );
    }
    html.push_str(
        "</ul>\n<p>See <a href=\"README.TXT\">README.TXT</a> for who made this package.</p>\n\
         </body>\n</html>\n",
    );
    html
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
