//! The fixed names of XDS metadata: ebRS namespaces, object types, classification and
//! external-identifier schemes, and the codes Direct uses. Reading and writing both
//! take them from here.
//!
//! The UUIDs are from IHE ITI TF-3 §4.2.5 ("Metadata object types" and the scheme
//! tables of §4.2.5.1–4.2.5.2); which of them an XDM package must carry is ITI TF-3
//! Table 4.3.1-3, column "XDM", as narrowed by "XDR and XDM for Direct Messaging" (the
//! Direct "minimal metadata").

/// ebXML Registry Services 3.0, life-cycle management: the `SubmitObjectsRequest` root
/// of METADATA.XML (ITI TF-2b §3.32.4.1.3).
pub(super) const LCM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0";
/// ebXML Registry Information Model 3.0: `RegistryObjectList` and everything in it.
pub(super) const RIM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0";

// ITI TF-3 §4.2.5: object types and classification nodes.

/// `ExtrinsicObject/@objectType` of a stable DocumentEntry (ITI TF-3 §4.2.5.2).
pub(super) const DOCUMENT_ENTRY: &str = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1";
/// `Classification/@classificationNode` marking a RegistryPackage as a SubmissionSet
/// (ITI TF-3 §4.2.5.1).
pub(super) const SUBMISSION_SET_NODE: &str = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd";
/// `classificationNode` marking a SubmissionSet as made with limited metadata (ITI TF-3
/// §4.2.5.1, Table 4.3.1-3; required by Direct for minimal metadata).
pub(super) const SUBMISSION_SET_LIMITED: &str = "urn:uuid:5003a9db-8d8d-49e6-bf0c-990e34ac7707";
/// `classificationNode` marking a DocumentEntry as made with limited metadata (ITI TF-3
/// §4.2.5.2, Table 4.3.1-3).
pub(super) const DOCUMENT_LIMITED: &str = "urn:uuid:ab9b591b-83ab-4d03-8f5d-f93b1fb92e85";

/// ebRIM object types written on the objects we make (ebRIM 3.0 §4.3, canonical
/// ObjectType scheme).
pub(super) const OBJECT_TYPE_PACKAGE: &str =
    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage";
pub(super) const OBJECT_TYPE_CLASSIFICATION: &str =
    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification";
pub(super) const OBJECT_TYPE_EXTERNAL_ID: &str =
    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier";
pub(super) const OBJECT_TYPE_ASSOCIATION: &str =
    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association";
/// The association from a SubmissionSet to each of its DocumentEntries (ITI TF-3
/// §4.2.2: HasMember, with the slot `SubmissionSetStatus` = `Original`).
pub(super) const HAS_MEMBER: &str = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember";

// ITI TF-3 §4.2.5.1: SubmissionSet classification and external-identifier schemes.

/// `XDSSubmissionSet.author` (classification scheme).
pub(super) const SUBMISSION_SET_AUTHOR: &str = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d";
/// `XDSSubmissionSet.contentTypeCode` (classification scheme).
pub(super) const SUBMISSION_SET_CONTENT_TYPE: &str =
    "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500";
/// `XDSSubmissionSet.patientId` (external identifier).
pub(super) const SUBMISSION_SET_PATIENT_ID: &str = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446";
/// `XDSSubmissionSet.sourceId` (external identifier).
pub(super) const SUBMISSION_SET_SOURCE_ID: &str = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832";
/// `XDSSubmissionSet.uniqueId` (external identifier).
pub(super) const SUBMISSION_SET_UNIQUE_ID: &str = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8";

// ITI TF-3 §4.2.5.2: DocumentEntry classification and external-identifier schemes.

/// `XDSDocumentEntry.author` (classification scheme).
pub(super) const DOCUMENT_AUTHOR: &str = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d";
/// `XDSDocumentEntry.classCode` (classification scheme).
pub(super) const DOCUMENT_CLASS_CODE: &str = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a";
/// `XDSDocumentEntry.confidentialityCode` (classification scheme).
pub(super) const DOCUMENT_CONFIDENTIALITY: &str = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f";
/// `XDSDocumentEntry.formatCode` (classification scheme).
pub(super) const DOCUMENT_FORMAT_CODE: &str = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d";
/// `XDSDocumentEntry.typeCode` (classification scheme).
pub(super) const DOCUMENT_TYPE_CODE: &str = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983";
/// `XDSDocumentEntry.patientId` (external identifier).
pub(super) const DOCUMENT_PATIENT_ID: &str = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427";
/// `XDSDocumentEntry.uniqueId` (external identifier).
pub(super) const DOCUMENT_UNIQUE_ID: &str = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab";

// Slot names (ITI TF-3 §4.2.3.2 and §4.2.3.3).

pub(super) const SLOT_SUBMISSION_TIME: &str = "submissionTime";
pub(super) const SLOT_INTENDED_RECIPIENT: &str = "intendedRecipient";
pub(super) const SLOT_CREATION_TIME: &str = "creationTime";
pub(super) const SLOT_HASH: &str = "hash";
pub(super) const SLOT_SIZE: &str = "size";
pub(super) const SLOT_URI: &str = "URI";
pub(super) const SLOT_SOURCE_PATIENT_ID: &str = "sourcePatientId";
pub(super) const SLOT_SOURCE_PATIENT_INFO: &str = "sourcePatientInfo";
pub(super) const SLOT_AUTHOR_PERSON: &str = "authorPerson";
pub(super) const SLOT_AUTHOR_INSTITUTION: &str = "authorInstitution";
pub(super) const SLOT_AUTHOR_TELECOM: &str = "authorTelecommunication";
pub(super) const SLOT_CODING_SCHEME: &str = "codingScheme";
pub(super) const SLOT_SUBMISSION_SET_STATUS: &str = "SubmissionSetStatus";

// Codes.

/// The formatCode Direct senders use when the MIME type says all a reader needs (ITI
/// TF-3 §4.2.3.2.9; IHE format codes, code system 1.3.6.1.4.1.19376.1.2.3).
pub(super) const FORMAT_MIME_TYPE_SUFFICIENT: &str = "urn:ihe:iti:xds:2017:mimeTypeSufficient";
pub(super) const IHE_FORMAT_CODES: &str = "1.3.6.1.4.1.19376.1.2.3";
/// HL7 v3 Confidentiality (N, R, V), the code system of confidentialityCode.
pub(super) const HL7_CONFIDENTIALITY: &str = "2.16.840.1.113883.5.25";
