//! XDM packages over Direct: IHE ITI-32 "Distribute Document Set on Media" as profiled
//! by "XDR and XDM for Direct Messaging". A ZIP file with `README.TXT`, `INDEX.HTM` and,
//! per submission set, `IHE_XDM/SUBSETnn/METADATA.XML` (an ebRS `SubmitObjectsRequest`)
//! beside the documents it lists.
//!
//! **Reading** ([`read_xdm`]) returns each submission set with its patient, authors,
//! intended recipients, submission time and content type, and each listed document with
//! its metadata and bytes. Names are matched without regard to letter case. Every
//! document's `hash` (SHA-1) and `size` are checked against its bytes. A changed,
//! missing or unlisted file, a reference that leaves its folder, or documents naming
//! different patients do not stop the package: they are returned as [`Problem`]s, each
//! one sentence for a clinician. `README.TXT`, `INDEX.HTM`, stylesheets and scripts
//! are never returned as documents; they are listed as [`IgnoredFile`]s.
//!
//! **Refused** ([`XdmError`], one sentence each): bytes that are not a ZIP or are cut
//! short; more entries, more unpacked bytes, deeper paths or higher compression ratios
//! than [`XdmLimits`] allow (the ratio is enforced while inflating, through a reader
//! that stops one byte past the limit, never trusting the sizes the headers declare);
//! names with `..`, a leading `/` or drive letter, a backslash, or control characters
//! such as NUL (they could write outside a folder if anyone extracted the package);
//! duplicate names, symbolic links and encryption; a METADATA.XML with a DTD (where
//! entity-expansion bombs live), one that is not well-formed or not a
//! `SubmitObjectsRequest`, and a ZIP with no METADATA.XML at all. [`is_xdm`] recognises
//! a package by its content, never by its file name.
//!
//! **Writing** ([`write_xdm`]) builds a one-subset package with Direct's minimal
//! metadata, from a caller-supplied time and random seed so that it stays pure.
//!
//! Nothing here does I/O or keeps state; callers on async code run it through
//! `spawn_blocking` (a large package takes milliseconds to hash and inflate).

mod archive;
mod error;
mod hl7;
mod metadata;
mod scheme;
#[cfg(test)]
mod tests;
mod write;

use std::collections::{BTreeSet, HashMap};

pub use archive::RATIO_EXEMPT_BYTES;
pub use error::{MetadataFault, NameFault, Problem, WriteError, XdmError};
pub use write::{Confidentiality, DocumentInput, Sender, XdmInput, write_xdm};

use archive::Archive;
use error::plain;
use metadata::{DocumentMetadata, Metadata};

/// Bounds on the work [`read_xdm`] does for one package. The defaults fit any package a
/// person sends by Direct (messages are limited to tens of megabytes) with room to
/// spare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdmLimits {
    /// The most entries (files and folders) the ZIP may hold. Default 1000.
    pub max_entries: usize,
    /// The most bytes all files may unpack to together. Default 64 MiB.
    pub max_total_size: u64,
    /// The most one entry may expand: unpacked bytes over stored bytes. Default 100.
    /// Entries that unpack to at most [`RATIO_EXEMPT_BYTES`] are exempt.
    pub max_ratio: u64,
    /// The most path components (folders and the file name) a name may have; the
    /// metadata itself is at depth 3 (`IHE_XDM/SUBSET01/METADATA.XML`). Default 8.
    pub max_depth: usize,
}

impl Default for XdmLimits {
    fn default() -> Self {
        XdmLimits {
            max_entries: 1000,
            max_total_size: 64 << 20,
            max_ratio: 100,
            max_depth: 8,
        }
    }
}

/// A code from a coded metadata attribute: classCode, typeCode, formatCode,
/// confidentialityCode, contentTypeCode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Code {
    /// The code (`nodeRepresentation`), such as `34133-9` or `N`.
    pub code: String,
    /// The code system (`codingScheme`), such as `2.16.840.1.113883.6.1` for LOINC.
    pub scheme: String,
    /// The display name, such as "Summary of episode note"; empty when not given.
    pub display: String,
}

/// A person or organization named in the metadata: an author or an intended recipient.
/// Names are decoded from their HL7 v2 form and put in reading order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Party {
    /// The person's name ("Dr Jane Smith").
    pub person: Option<String>,
    /// The organization's name.
    pub institution: Option<String>,
    /// The Direct (e-mail) address, or a telephone number when that is all there is.
    pub address: Option<String>,
}

/// A patient as the metadata names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patient {
    /// The identifier as written, an HL7 CX such as `12345^^^&1.2.840.114350&ISO`.
    pub id: Option<String>,
    /// The family name.
    pub family_name: Option<String>,
    /// The given names, and middle names after them.
    pub given_names: Option<String>,
    /// The date of birth as written, `YYYYMMDD` (sometimes with a time).
    pub birth_date: Option<String>,
    /// The administrative sex code as written (`F`, `M`, `U`, …).
    pub sex: Option<String>,
}

impl Patient {
    /// The name in reading order ("JOHN Q DOE"), when there is one.
    pub fn name(&self) -> Option<String> {
        let words: Vec<&str> = [self.given_names.as_deref(), self.family_name.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        (!words.is_empty()).then(|| words.join(" "))
    }

    /// The patient of a Direct Context block, as a package's metadata names them: the
    /// identifier as `id^^^&OID&ISO` when its assigning authority is an OID (an
    /// identifier without one cannot stand in XDS metadata and is left out), the given
    /// and middle names, the birth date as `YYYYMMDD` and the sex code. `None` when the
    /// block names neither an identifier nor a patient.
    pub fn from_context(context: &crate::context::Context) -> Option<Patient> {
        let id = context
            .patient_identifier()
            .and_then(|(authority, id)| match authority {
                Some(oid) if hl7::is_oid(oid) && !id.contains(['^', '&', '|', '~', '\\']) => {
                    Some(format!("{id}^^^&{oid}&ISO"))
                }
                _ => None,
            });
        let person = context.patient.as_ref();
        let given: Vec<&str> = person
            .into_iter()
            .flat_map(|p| [p.given_name.as_deref(), p.middle_name.as_deref()])
            .flatten()
            .collect();
        let patient = Patient {
            id,
            family_name: person.and_then(|p| p.surname.clone()),
            given_names: (!given.is_empty()).then(|| given.join(" ")),
            birth_date: person
                .and_then(|p| p.date_of_birth.as_deref())
                .map(|date| date.replace('-', ""))
                .filter(|date| date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit())),
            sex: person.and_then(|p| p.gender.clone()),
        };
        (patient != Patient::default()).then_some(patient)
    }
}

/// A document from a package: its metadata as the sender recorded it, and its bytes.
///
/// The bytes are the sender's, unchecked: run them through the attachment checks
/// ([`check_attachment`](crate::check_attachment)) before offering them, as for any
/// received file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The file's name in the archive (`IHE_XDM/SUBSET01/DOC0001.XML`).
    pub path: String,
    /// The `URI` slot as written: the file name relative to the subset folder.
    pub uri: String,
    /// The DocumentEntry's id (entryUUID).
    pub entry_uuid: Option<String>,
    /// The DocumentEntry uniqueId.
    pub unique_id: Option<String>,
    /// The title.
    pub title: Option<String>,
    /// The MIME type the sender declared (not checked against the content).
    pub mime_type: Option<String>,
    /// What kind of document it is; [`Code::display`] is the name to show.
    pub type_code: Option<Code>,
    /// Its broad class.
    pub class_code: Option<Code>,
    /// Its format.
    pub format_code: Option<Code>,
    /// Its confidentiality codes (HL7 `N`, `R`, `V`, and others).
    pub confidentiality: Vec<Code>,
    /// When it was made, as written: UTC, `YYYY[MM[DD[hh[mm[ss]]]]]`.
    pub creation_time: Option<String>,
    /// Its authors.
    pub authors: Vec<Party>,
    /// The patient as the document's metadata names them (patientId and
    /// sourcePatientInfo).
    pub patient: Option<Patient>,
    /// The size the sender recorded, in bytes; checked against `bytes`.
    pub size: Option<u64>,
    /// The SHA-1 the sender recorded, in hexadecimal; checked against `bytes`.
    pub hash: Option<String>,
    /// The content.
    pub bytes: Vec<u8>,
}

impl Document {
    /// How to name the document to a person: its title, or else its file name.
    pub fn label(&self) -> String {
        self.title.clone().unwrap_or_else(|| self.uri.clone())
    }
}

/// One submission set: one folder `IHE_XDM/<subset>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionSet {
    /// The folder as named in the archive (`IHE_XDM/SUBSET01`).
    pub folder: String,
    /// The SubmissionSet's id (entryUUID).
    pub entry_uuid: Option<String>,
    /// The SubmissionSet uniqueId.
    pub unique_id: Option<String>,
    /// The sending system's OID (sourceId).
    pub source_id: Option<String>,
    /// The title, when the sender gave one.
    pub title: Option<String>,
    /// The patient: the SubmissionSet patientId (or the first document's), with the name,
    /// birth date and sex from the first document that gives them.
    pub patient: Option<Patient>,
    /// The authors (for Direct, the sender).
    pub authors: Vec<Party>,
    /// Whom the sender meant the documents for.
    pub intended_recipients: Vec<Party>,
    /// When it was sent, as written: UTC, `YYYYMMDDhhmmss` or shorter.
    pub submission_time: Option<String>,
    /// Why it was sent (contentTypeCode).
    pub content_type: Option<Code>,
    /// The documents that could be read, in the order the metadata lists them.
    pub documents: Vec<Document>,
}

/// What an ignored file in the package is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoredKind {
    /// `README.TXT` at the root.
    Readme,
    /// `INDEX.HTM` (or `.HTML`) at the root.
    Index,
    /// A stylesheet (`.XSL`, `.XSLT`, `.CSS`), such as the one that renders a CDA.
    Stylesheet,
    /// A script (`.JS`, `.VBS`, …) or `AUTORUN.INF`.
    Script,
    /// A file in a subset folder that the metadata does not list (also a
    /// [`Problem::UnlistedFile`]).
    Unlisted,
    /// Anything else outside the subset folders.
    Other,
}

/// A file in the package that is not a document and was not opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredFile {
    /// The file's name in the archive.
    pub path: String,
    /// What it is.
    pub kind: IgnoredKind,
}

/// A package that was read. Its problems do not stop it from being shown, but must be
/// shown with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The submission sets, in folder-name order.
    pub submission_sets: Vec<SubmissionSet>,
    /// Files that are not documents: `README.TXT`, `INDEX.HTM`, stylesheets, scripts
    /// and anything unlisted.
    pub ignored: Vec<IgnoredFile>,
    /// What is wrong with the package, in words for a clinician.
    pub problems: Vec<Problem>,
}

impl Package {
    /// Every document of every submission set.
    pub fn documents(&self) -> impl Iterator<Item = &Document> {
        self.submission_sets
            .iter()
            .flat_map(|set| set.documents.iter())
    }
}

/// Whether `bytes` are an XDM package: a ZIP whose central directory names an
/// `IHE_XDM/<subset>/METADATA.XML`, in any letter case. Reads no entry and decompresses
/// nothing; time is linear in the length of `bytes`. A package that [`read_xdm`] would
/// refuse for its size or names may still be recognised here, so that the refusal can
/// be explained.
pub fn is_xdm(bytes: &[u8]) -> bool {
    let limits = XdmLimits {
        max_entries: usize::from(u16::MAX),
        ..XdmLimits::default()
    };
    archive::central_directory(bytes, &limits).is_ok_and(|directory| {
        directory
            .records
            .iter()
            .any(|record| subset_of_metadata(&String::from_utf8_lossy(&record.name_raw)).is_some())
    })
}

/// The subset folder's key (`ihe_xdm/subset01`) when `name` is
/// `IHE_XDM/<subset>/METADATA.XML` in any letter case.
fn subset_of_metadata(name: &str) -> Option<String> {
    let key = archive::key(name);
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["ihe_xdm", subset, "metadata.xml"] if !subset.is_empty() => {
            Some(format!("ihe_xdm/{subset}"))
        }
        _ => None,
    }
}

/// Reads an XDM package: see the [module documentation](self) for what is read, what is
/// reported as a [`Problem`] and what is refused. Work is bounded by `limits`.
pub fn read_xdm(bytes: &[u8], limits: &XdmLimits) -> Result<Package, XdmError> {
    let archive = Archive::open(bytes, limits)?;

    // (folder key, index of METADATA.XML), in folder-name order.
    let mut subsets: Vec<(String, usize)> = archive
        .entries
        .iter()
        .enumerate()
        .filter(|(_, entry)| !entry.is_dir)
        .filter_map(|(index, entry)| Some((subset_of_metadata(&entry.name)?, index)))
        .collect();
    if subsets.is_empty() {
        return Err(XdmError::NoMetadata);
    }
    subsets.sort();

    let mut reading = Reading {
        used: subsets.iter().map(|(_, index)| *index).collect(),
        archive,
        cache: HashMap::new(),
        ignored: Vec::new(),
        problems: Vec::new(),
    };
    let mut submission_sets = Vec::new();
    for (folder_key, metadata_index) in &subsets {
        let metadata_path = reading.archive.entries[*metadata_index].name.clone();
        let xml = reading.archive.read(*metadata_index)?;
        let metadata = metadata::parse(&xml, &metadata_path)?;
        let folder = metadata_path
            .rsplit_once('/')
            .map_or_else(String::new, |(folder, _)| folder.to_owned());
        submission_sets.push(reading.subset(folder, folder_key, metadata)?);
    }

    let Reading {
        archive,
        used,
        mut ignored,
        mut problems,
        ..
    } = reading;
    for (index, entry) in archive.entries.iter().enumerate() {
        if entry.is_dir || used.contains(&index) {
            continue;
        }
        let in_subset = subsets
            .iter()
            .any(|(folder, _)| entry.key.starts_with(&format!("{folder}/")));
        let kind = auxiliary_kind(&entry.key, None).unwrap_or(match entry.key.as_str() {
            _ if in_subset => IgnoredKind::Unlisted,
            "readme.txt" => IgnoredKind::Readme,
            "index.htm" | "index.html" => IgnoredKind::Index,
            "autorun.inf" => IgnoredKind::Script,
            _ => IgnoredKind::Other,
        });
        // Stylesheets beside the documents are expected (they render CDA); anything
        // else the metadata does not list, scripts included, is worth a word.
        if in_subset && kind != IgnoredKind::Stylesheet {
            problems.push(Problem::UnlistedFile {
                path: entry.name.clone(),
            });
        }
        ignored.push(IgnoredFile {
            path: entry.name.clone(),
            kind,
        });
    }

    if patient_ids(&submission_sets).len() > 1 {
        problems.push(Problem::DifferentPatients);
    }
    Ok(Package {
        submission_sets,
        ignored,
        problems,
    })
}

/// A stylesheet or a script, by the file's extension or the MIME type its metadata
/// declares: never returned as a document, even when the metadata lists it.
fn auxiliary_kind(key: &str, mime_type: Option<&str>) -> Option<IgnoredKind> {
    let extension = key
        .rsplit_once('.')
        .map(|(_, extension)| extension)
        .unwrap_or_default();
    let mime_type = mime_type
        .map(|mime| {
            mime.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let stylesheet = matches!(extension, "xsl" | "xslt" | "css")
        || matches!(
            mime_type.as_str(),
            "text/css" | "text/xsl" | "application/xslt+xml"
        );
    let script = matches!(
        extension,
        "js" | "mjs" | "vbs" | "vbe" | "jse" | "wsf" | "wsh" | "hta" | "bat" | "cmd" | "ps1"
    ) || matches!(
        mime_type.as_str(),
        "text/javascript"
            | "application/javascript"
            | "application/x-javascript"
            | "application/ecmascript"
            | "text/vbscript"
    );
    if stylesheet {
        Some(IgnoredKind::Stylesheet)
    } else if script {
        Some(IgnoredKind::Script)
    } else {
        None
    }
}

/// The state of one [`read_xdm`] call across its submission sets.
struct Reading<'a> {
    archive: Archive<'a>,
    /// Entries that are metadata, documents, or listed stylesheets and scripts.
    used: BTreeSet<usize>,
    /// Documents already inflated, in case two entries name the same file.
    cache: HashMap<usize, Vec<u8>>,
    ignored: Vec<IgnoredFile>,
    problems: Vec<Problem>,
}

impl Reading<'_> {
    /// Builds one submission set from its metadata, reading the documents it lists.
    fn subset(
        &mut self,
        folder: String,
        folder_key: &str,
        metadata: Metadata,
    ) -> Result<SubmissionSet, XdmError> {
        let mut documents = Vec::new();
        for entry in metadata.documents {
            let label = entry
                .title
                .clone()
                .or_else(|| entry.uri.clone())
                .or_else(|| entry.entry_uuid.clone())
                .unwrap_or_else(|| "untitled".to_owned());
            let Some(uri) = entry.uri.clone() else {
                self.problems
                    .push(Problem::MissingDocument { document: label });
                continue;
            };
            let Some(relative) = relative_path(&uri) else {
                self.problems.push(Problem::ReferenceOutsideFolder {
                    document: label,
                    uri,
                });
                continue;
            };
            let key = format!("{folder_key}/{}", relative.to_ascii_lowercase());
            let Some(index) = self
                .archive
                .find(&key)
                .filter(|index| !self.archive.entries[*index].is_dir)
            else {
                self.problems
                    .push(Problem::MissingDocument { document: label });
                continue;
            };
            let path = self.archive.entries[index].name.clone();
            self.used.insert(index);
            if let Some(kind) = auxiliary_kind(&key, entry.mime_type.as_deref()) {
                self.ignored.push(IgnoredFile { path, kind });
                continue;
            }
            let bytes = match self.cache.get(&index) {
                Some(bytes) => bytes.clone(),
                None => {
                    let bytes = self.archive.read(index)?;
                    self.cache.insert(index, bytes.clone());
                    bytes
                }
            };
            self.problems
                .extend(integrity_problems(&entry, &label, &bytes));
            documents.push(document(entry, path, uri, bytes));
        }

        let set = metadata.submission_set.unwrap_or_default();
        let patient = subset_patient(set.patient_id.clone(), &documents);
        Ok(SubmissionSet {
            folder,
            entry_uuid: set.entry_uuid,
            unique_id: set.unique_id,
            source_id: set.source_id,
            title: set.title,
            patient,
            authors: set.authors,
            intended_recipients: set.intended_recipients,
            submission_time: set.submission_time,
            content_type: set.content_type,
            documents,
        })
    }
}

/// The `URI` slot as a path inside the subset folder, or `None` when it leaves the
/// folder: `..`, an absolute path, a backslash, or a URL with a scheme.
fn relative_path(uri: &str) -> Option<&str> {
    let uri = uri.trim();
    let path = uri.strip_prefix("./").unwrap_or(uri);
    if path.contains(':') || archive::name_fault(path.as_bytes()).is_some() || path.ends_with('/') {
        return None;
    }
    Some(path)
}

/// The document's recorded size and fingerprint against its bytes.
fn integrity_problems(entry: &DocumentMetadata, label: &str, bytes: &[u8]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let actual = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if let Some(recorded) = &entry.size {
        match recorded.parse::<u64>() {
            Ok(recorded) if recorded == actual => {}
            Ok(recorded) => problems.push(Problem::SizeMismatch {
                document: label.to_owned(),
                recorded,
                actual,
            }),
            // A size that is not a number cannot vouch for the file; the fingerprint
            // still can.
            Err(_) => {}
        }
    }
    if let Some(recorded) = &entry.hash
        && !recorded.eq_ignore_ascii_case(&write::sha1_hex(bytes))
    {
        problems.push(Problem::FingerprintMismatch {
            document: label.to_owned(),
        });
    }
    problems
}

fn document(entry: DocumentMetadata, path: String, uri: String, bytes: Vec<u8>) -> Document {
    Document {
        path,
        uri,
        size: entry.size.as_deref().and_then(|size| size.parse().ok()),
        entry_uuid: entry.entry_uuid,
        unique_id: entry.unique_id,
        title: entry.title,
        mime_type: entry.mime_type,
        type_code: entry.type_code,
        class_code: entry.class_code,
        format_code: entry.format_code,
        confidentiality: entry.confidentiality,
        creation_time: entry.creation_time,
        authors: entry.authors,
        patient: entry.patient,
        hash: entry.hash,
        bytes,
    }
}

/// The submission set's patient: its own patientId, or else the first document's;
/// the demographics from the first document that has them.
fn subset_patient(patient_id: Option<String>, documents: &[Document]) -> Option<Patient> {
    let from_documents = || {
        documents
            .iter()
            .filter_map(|document| document.patient.as_ref())
            .find_map(|patient| patient.id.clone())
    };
    let demographics = documents
        .iter()
        .filter_map(|document| document.patient.as_ref())
        .find(|patient| patient.name().is_some() || patient.birth_date.is_some())
        .cloned()
        .unwrap_or_default();
    let patient = Patient {
        id: patient_id.or_else(from_documents),
        ..demographics
    };
    (patient != Patient::default()).then_some(patient)
}

/// Every patient identifier the package names, compared without case or spaces.
fn patient_ids(sets: &[SubmissionSet]) -> BTreeSet<String> {
    let set_ids = sets.iter().filter_map(|set| set.patient.as_ref());
    let document_ids = sets
        .iter()
        .flat_map(|set| set.documents.iter())
        .filter_map(|document| document.patient.as_ref());
    set_ids
        .chain(document_ids)
        .filter_map(|patient| patient.id.as_deref())
        .map(|id| plain(id).to_lowercase().replace(' ', ""))
        .collect()
}
