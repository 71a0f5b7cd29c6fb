//! Reading METADATA.XML: an ebRS 3.0 `SubmitObjectsRequest` (ITI TF-2b §3.32.4.1.3)
//! whose `RegistryObjectList` holds one SubmissionSet (a `RegistryPackage`), its
//! DocumentEntries (`ExtrinsicObject`s) and the associations between them.
//!
//! Classifications and external identifiers are found wherever ebRIM allows them:
//! nested in the object they describe, or at the top of the list pointing to it by id.
//! Attributes that are missing are `None`; only a document that is not XML, or not a
//! `SubmitObjectsRequest`, is refused.

use std::collections::HashMap;

use roxmltree::{Document, Node, ParsingOptions};

use super::error::{MetadataFault, XdmError};
use super::scheme::*;
use super::{Code, Party, Patient, hl7};

/// Roughly 100 bytes of parser memory each; a METADATA.XML of a few hundred documents
/// has tens of thousands.
const MAX_NODES: u32 = 1_000_000;

/// The SubmissionSet as its metadata describes it.
#[derive(Debug, Default)]
pub(super) struct SubmissionSetMetadata {
    pub entry_uuid: Option<String>,
    pub unique_id: Option<String>,
    pub source_id: Option<String>,
    pub patient_id: Option<String>,
    pub title: Option<String>,
    pub submission_time: Option<String>,
    pub authors: Vec<Party>,
    pub intended_recipients: Vec<Party>,
    pub content_type: Option<Code>,
}

/// One DocumentEntry as its metadata describes it.
#[derive(Debug, Default)]
pub(super) struct DocumentMetadata {
    pub entry_uuid: Option<String>,
    pub unique_id: Option<String>,
    pub title: Option<String>,
    pub mime_type: Option<String>,
    pub type_code: Option<Code>,
    pub class_code: Option<Code>,
    pub format_code: Option<Code>,
    pub confidentiality: Vec<Code>,
    pub creation_time: Option<String>,
    pub authors: Vec<Party>,
    pub patient: Option<Patient>,
    pub size: Option<String>,
    pub hash: Option<String>,
    pub uri: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct Metadata {
    pub submission_set: Option<SubmissionSetMetadata>,
    pub documents: Vec<DocumentMetadata>,
}

/// Parses one METADATA.XML; `path` names it in errors.
pub(super) fn parse(bytes: &[u8], path: &str) -> Result<Metadata, XdmError> {
    let malformed = |fault| XdmError::MetadataMalformed {
        path: path.to_owned(),
        fault,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| malformed(MetadataFault::NotUtf8))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // A DTD is refused, never expanded: it is where entity bombs and external entities
    // live, and ebRS metadata has no use for one.
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..ParsingOptions::default()
    };
    let document = Document::parse_with_options(text, options).map_err(|error| match error {
        roxmltree::Error::DtdDetected => XdmError::MetadataDtd {
            path: path.to_owned(),
        },
        other => malformed(MetadataFault::Syntax {
            line: other.pos().row,
        }),
    })?;
    let root = document.root_element();
    if !is(root, LCM, "SubmitObjectsRequest") {
        return Err(malformed(MetadataFault::NotSubmitObjectsRequest));
    }
    let list = root
        .children()
        .find(|node| is(*node, RIM, "RegistryObjectList"))
        .ok_or_else(|| malformed(MetadataFault::NotSubmitObjectsRequest))?;
    Ok(read_list(list))
}

fn is(node: Node, namespace: &str, name: &str) -> bool {
    node.is_element()
        && node.tag_name().name() == name
        && node.tag_name().namespace() == Some(namespace)
}

/// Classifications and external identifiers by the id of the object they describe.
struct Index<'a, 'input> {
    classifications: HashMap<&'a str, Vec<Node<'a, 'input>>>,
    identifiers: HashMap<&'a str, Vec<Node<'a, 'input>>>,
}

impl<'a, 'input> Index<'a, 'input> {
    fn new(list: Node<'a, 'input>) -> Self {
        let mut index = Index {
            classifications: HashMap::new(),
            identifiers: HashMap::new(),
        };
        for node in list.descendants() {
            let (map, attribute) = if is(node, RIM, "Classification") {
                (&mut index.classifications, "classifiedObject")
            } else if is(node, RIM, "ExternalIdentifier") {
                (&mut index.identifiers, "registryObject")
            } else {
                continue;
            };
            // A nested one that leaves out the reference describes its parent.
            let target = node.attribute(attribute).or_else(|| {
                node.parent_element()
                    .and_then(|parent| parent.attribute("id"))
            });
            if let Some(target) = target {
                map.entry(target).or_default().push(node);
            }
        }
        index
    }

    fn classifications(&self, id: Option<&str>) -> &[Node<'a, 'input>] {
        id.and_then(|id| self.classifications.get(id))
            .map_or(&[], Vec::as_slice)
    }

    fn by_scheme(&self, id: Option<&str>, scheme: &str) -> Vec<Node<'a, 'input>> {
        self.classifications(id)
            .iter()
            .filter(|node| node.attribute("classificationScheme") == Some(scheme))
            .copied()
            .collect()
    }

    fn has_node(&self, id: Option<&str>, classification_node: &str) -> bool {
        self.classifications(id)
            .iter()
            .any(|node| node.attribute("classificationNode") == Some(classification_node))
    }

    fn identifier(&self, id: Option<&str>, scheme: &str) -> Option<String> {
        id.and_then(|id| self.identifiers.get(id))?
            .iter()
            .find(|node| node.attribute("identificationScheme") == Some(scheme))
            .and_then(|node| node.attribute("value"))
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    }
}

fn read_list(list: Node) -> Metadata {
    let index = Index::new(list);
    let packages: Vec<Node> = list
        .children()
        .filter(|node| is(*node, RIM, "RegistryPackage"))
        .collect();
    // ITI TF-3 §4.2.5.1: a SubmissionSet is the RegistryPackage classified by the
    // SubmissionSet node (folders are RegistryPackages too). A package that forgets the
    // classification but has a single RegistryPackage is read as if it had it.
    let submission_set = packages
        .iter()
        .find(|package| index.has_node(package.attribute("id"), SUBMISSION_SET_NODE))
        .or(match packages.as_slice() {
            [only] => Some(only),
            _ => None,
        })
        .map(|package| read_submission_set(*package, &index));
    let documents = list
        .children()
        .filter(|node| is(*node, RIM, "ExtrinsicObject"))
        .map(|node| read_document(node, &index))
        .collect();
    Metadata {
        submission_set,
        documents,
    }
}

fn read_submission_set(package: Node, index: &Index) -> SubmissionSetMetadata {
    let id = package.attribute("id");
    SubmissionSetMetadata {
        entry_uuid: id.map(str::to_owned),
        unique_id: index.identifier(id, SUBMISSION_SET_UNIQUE_ID),
        source_id: index.identifier(id, SUBMISSION_SET_SOURCE_ID),
        patient_id: index.identifier(id, SUBMISSION_SET_PATIENT_ID),
        title: localized_name(package),
        submission_time: first_slot_value(package, SLOT_SUBMISSION_TIME),
        authors: index
            .by_scheme(id, SUBMISSION_SET_AUTHOR)
            .into_iter()
            .map(author)
            .collect(),
        intended_recipients: slot_values(package, SLOT_INTENDED_RECIPIENT)
            .iter()
            .map(|value| recipient(value))
            .filter(|party| *party != Party::default())
            .collect(),
        content_type: index
            .by_scheme(id, SUBMISSION_SET_CONTENT_TYPE)
            .first()
            .and_then(|node| code(*node)),
    }
}

fn read_document(object: Node, index: &Index) -> DocumentMetadata {
    let id = object.attribute("id");
    let first_code = |scheme| {
        index
            .by_scheme(id, scheme)
            .first()
            .and_then(|node| code(*node))
    };
    let patient_id = index.identifier(id, DOCUMENT_PATIENT_ID);
    DocumentMetadata {
        entry_uuid: id.map(str::to_owned),
        unique_id: index.identifier(id, DOCUMENT_UNIQUE_ID),
        title: localized_name(object),
        mime_type: object
            .attribute("mimeType")
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty()),
        type_code: first_code(DOCUMENT_TYPE_CODE),
        class_code: first_code(DOCUMENT_CLASS_CODE),
        format_code: first_code(DOCUMENT_FORMAT_CODE),
        confidentiality: index
            .by_scheme(id, DOCUMENT_CONFIDENTIALITY)
            .into_iter()
            .filter_map(code)
            .collect(),
        creation_time: first_slot_value(object, SLOT_CREATION_TIME),
        authors: index
            .by_scheme(id, DOCUMENT_AUTHOR)
            .into_iter()
            .map(author)
            .collect(),
        patient: source_patient(object, patient_id),
        size: first_slot_value(object, SLOT_SIZE),
        hash: first_slot_value(object, SLOT_HASH),
        uri: first_slot_value(object, SLOT_URI),
    }
}

/// The values of the object's own slot `name` (not those of nested classifications),
/// trimmed, without empty ones.
fn slot_values(object: Node, name: &str) -> Vec<String> {
    object
        .children()
        .filter(|node| is(*node, RIM, "Slot") && node.attribute("name") == Some(name))
        .flat_map(|slot| slot.children().filter(|node| is(*node, RIM, "ValueList")))
        .flat_map(|list| list.children().filter(|node| is(*node, RIM, "Value")))
        .filter_map(|value| value.text())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .collect()
}

fn first_slot_value(object: Node, name: &str) -> Option<String> {
    slot_values(object, name).into_iter().next()
}

/// `Name/LocalizedString/@value`: a title, or a code's display name.
fn localized_name(object: Node) -> Option<String> {
    object
        .children()
        .find(|node| is(*node, RIM, "Name"))?
        .children()
        .find(|node| is(*node, RIM, "LocalizedString"))?
        .attribute("value")
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// A coded classification: `nodeRepresentation`, the `codingScheme` slot and the name.
fn code(classification: Node) -> Option<Code> {
    let code = classification
        .attribute("nodeRepresentation")
        .map(str::trim)
        .filter(|value| !value.is_empty())?;
    Some(Code {
        code: code.to_owned(),
        scheme: first_slot_value(classification, SLOT_CODING_SCHEME).unwrap_or_default(),
        display: localized_name(classification).unwrap_or_default(),
    })
}

fn author(classification: Node) -> Party {
    let first = |name| {
        slot_values(classification, name)
            .into_iter()
            .next()
            .unwrap_or_default()
    };
    Party {
        person: hl7::person_from_xcn(&first(SLOT_AUTHOR_PERSON)),
        institution: hl7::organization_from_xon(&first(SLOT_AUTHOR_INSTITUTION)),
        address: hl7::address_from_xtn(&first(SLOT_AUTHOR_TELECOM)),
    }
}

fn recipient(value: &str) -> Party {
    let (organization, person, telecom) = hl7::split_recipient(value);
    Party {
        person: hl7::person_from_xcn(person),
        institution: hl7::organization_from_xon(organization),
        address: hl7::address_from_xtn(telecom),
    }
}

/// The patient as the document's source knows them: `sourcePatientInfo` (values such
/// as `PID-5|DOE^JOHN`, ITI TF-3 §4.2.3.2.23), with the document's patientId, or
/// `sourcePatientId` when there is none.
fn source_patient(object: Node, patient_id: Option<String>) -> Option<Patient> {
    let mut patient = Patient {
        id: patient_id.or_else(|| first_slot_value(object, SLOT_SOURCE_PATIENT_ID)),
        ..Patient::default()
    };
    for value in slot_values(object, SLOT_SOURCE_PATIENT_INFO) {
        let Some((field, content)) = value.split_once('|') else {
            continue;
        };
        let first = content.split('~').next().unwrap_or_default().trim();
        let text = (!first.is_empty()).then(|| hl7::unescape(first));
        match field.trim() {
            "PID-5" if patient.family_name.is_none() && patient.given_names.is_none() => {
                (patient.family_name, patient.given_names) = hl7::name_from_xpn(content);
            }
            "PID-7" if patient.birth_date.is_none() => patient.birth_date = text,
            "PID-8" if patient.sex.is_none() => patient.sex = text,
            _ => {}
        }
    }
    (patient != Patient::default()).then_some(patient)
}
