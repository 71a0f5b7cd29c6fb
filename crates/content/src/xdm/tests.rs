//! XDM reading and writing, against packages written here and ZIP files built byte by
//! byte (for what no ZIP writer would produce: lying headers, unsafe names, duplicates).

use std::io::{Cursor, Read, Write};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::DeflateEncoder;
use roxmltree::Node;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::scheme::*;
use super::*;

/// 2024-03-05 14:30:09 UTC.
const NOW: i64 = 1_709_649_009;
const PATIENT_ID: &str = "MRN-4471^^^&1.2.840.114350.1.13.0.1.7.5.737384.14&ISO";

const CCDA: &[u8] = b"<?xml version=\"1.0\"?>\n<ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>\n";
const PDF: &[u8] = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n";

fn code(code: &str, scheme: &str, display: &str) -> Code {
    Code {
        code: code.to_owned(),
        scheme: scheme.to_owned(),
        display: display.to_owned(),
    }
}

fn input() -> XdmInput<'static> {
    XdmInput {
        now: NOW,
        seed: [7; 16],
        sender: Sender {
            person: Some("Dr Jane Smith".to_owned()),
            institution: Some("Good Health Clinic & Labs".to_owned()),
            address: "jane.smith@direct.goodhealth.example".to_owned(),
        },
        recipients: vec![
            "referrals@direct.hospital.example".to_owned(),
            "records@direct.hospital.example".to_owned(),
        ],
        source_id: Some("1.2.840.114350.1.13.99".to_owned()),
        patient: Some(Patient {
            id: Some(PATIENT_ID.to_owned()),
            family_name: Some("Doe".to_owned()),
            given_names: Some("John Q".to_owned()),
            birth_date: Some("19560527".to_owned()),
            sex: Some("M".to_owned()),
        }),
        content_type: Some(code("57133-1", "2.16.840.1.113883.6.1", "Referral note")),
        documents: vec![
            DocumentInput {
                title: "Referral <&\"> note".to_owned(),
                mime_type: "text/xml".to_owned(),
                bytes: CCDA,
                confidentiality: Confidentiality::Restricted,
                creation_time: Some(NOW - 3600),
                type_code: Some(code("57133-1", "2.16.840.1.113883.6.1", "Referral note")),
                class_code: Some(code("11488-4", "2.16.840.1.113883.6.1", "Consult note")),
                security_labels: Vec::new(),
            },
            DocumentInput {
                title: "Scanned letter".to_owned(),
                mime_type: "application/pdf".to_owned(),
                bytes: PDF,
                confidentiality: Confidentiality::Normal,
                creation_time: None,
                type_code: None,
                class_code: None,
                security_labels: Vec::new(),
            },
        ],
    }
}

fn written() -> Vec<u8> {
    write_xdm(&input()).unwrap()
}

fn read(bytes: &[u8]) -> Result<Package, XdmError> {
    read_xdm(bytes, &XdmLimits::default())
}

/// Every file of a ZIP, in order.
fn unpack(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    (0..archive.len())
        .map(|index| {
            let mut file = archive.by_index(index).unwrap();
            let mut content = Vec::new();
            file.read_to_end(&mut content).unwrap();
            (file.name().to_owned(), content)
        })
        .collect()
}

/// A ZIP of `files`, deflated, written by the zip crate.
fn pack(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for (name, content) in files {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(content).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// The written package with its files changed by `edit`.
fn edited(edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) -> Vec<u8> {
    let mut files = unpack(&written());
    edit(&mut files);
    pack(&files)
}

fn file_mut<'a>(files: &'a mut [(String, Vec<u8>)], name: &str) -> &'a mut Vec<u8> {
    &mut files.iter_mut().find(|(n, _)| n == name).unwrap().1
}

fn metadata_text(bytes: &[u8]) -> String {
    let files = unpack(bytes);
    let (_, xml) = files
        .iter()
        .find(|(name, _)| name == "IHE_XDM/SUBSET01/METADATA.XML")
        .unwrap();
    String::from_utf8(xml.clone()).unwrap()
}

#[track_caller]
fn refused(bytes: &[u8]) -> XdmError {
    match read(bytes) {
        Ok(package) => panic!("read: {package:?}"),
        Err(error) => error,
    }
}

#[track_caller]
fn one_sentence(text: &str) {
    assert!(text.ends_with('.'), "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert!(text.chars().next().unwrap().is_uppercase(), "{text}");
}

// A ZIP built byte by byte (APPNOTE.TXT §4.3), for entries no writer would make.

struct Raw {
    name: Vec<u8>,
    content: Vec<u8>,
    deflate: bool,
    /// Deflated data to store as is, whatever `content` says (whose CRC is then wrong).
    precompressed: Option<Vec<u8>>,
    /// A compression method to declare instead of stored or deflate.
    method: Option<u16>,
    /// The uncompressed size to declare, when it should lie.
    declared_size: Option<u32>,
    flags: u16,
    /// `(made-by host, external attributes)`.
    unix_mode: Option<u32>,
}

impl Raw {
    fn stored(name: &[u8], content: &[u8]) -> Raw {
        Raw {
            name: name.to_vec(),
            content: content.to_vec(),
            deflate: false,
            precompressed: None,
            method: None,
            declared_size: None,
            flags: 0,
            unix_mode: None,
        }
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn raw_zip(entries: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for entry in entries {
        let data = match (&entry.precompressed, entry.deflate) {
            (Some(data), _) => data.clone(),
            (None, true) => deflate(&entry.content),
            (None, false) => entry.content.clone(),
        };
        let method: u16 = match entry.method {
            Some(method) => method,
            None if entry.deflate || entry.precompressed.is_some() => 8,
            None => 0,
        };
        let crc = crc32(&entry.content);
        let size = entry
            .declared_size
            .unwrap_or(u32::try_from(entry.content.len()).unwrap());
        let offset = u32::try_from(out.len()).unwrap();
        let name_len = u16::try_from(entry.name.len()).unwrap();
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&entry.flags.to_le_bytes());
        out.extend_from_slice(&method.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0x21, 0]); // time, date (1980-01-01)
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&entry.name);
        out.extend_from_slice(&data);

        let (made_by, external) = match entry.unix_mode {
            Some(mode) => (0x0314u16, mode << 16),
            None => (20u16, 0),
        };
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&made_by.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&entry.flags.to_le_bytes());
        central.extend_from_slice(&method.to_le_bytes());
        central.extend_from_slice(&[0, 0, 0x21, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&name_len.to_le_bytes());
        central.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attributes
        central.extend_from_slice(&external.to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(&entry.name);
    }
    let cd_offset = u32::try_from(out.len()).unwrap();
    let count = u16::try_from(entries.len()).unwrap();
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&u32::try_from(central.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// METADATA.XML for one stored document `DOC0001.TXT` holding `content`.
fn minimal_metadata(title: &str, content: &[u8], patient_id: &str) -> Vec<u8> {
    format!(
        r#"<lcm:SubmitObjectsRequest xmlns:lcm="{LCM}" xmlns:rim="{RIM}">
  <rim:RegistryObjectList>
    <rim:ExtrinsicObject id="Doc1" mimeType="text/plain" objectType="{DOCUMENT_ENTRY}">
      <rim:Slot name="URI"><rim:ValueList><rim:Value>doc0001.txt</rim:Value></rim:ValueList></rim:Slot>
      <rim:Slot name="hash"><rim:ValueList><rim:Value>{}</rim:Value></rim:ValueList></rim:Slot>
      <rim:Slot name="size"><rim:ValueList><rim:Value>{}</rim:Value></rim:ValueList></rim:Slot>
      <rim:Name><rim:LocalizedString value="{title}"/></rim:Name>
      <rim:ExternalIdentifier id="e1" registryObject="Doc1" identificationScheme="{DOCUMENT_PATIENT_ID}" value="{patient_id}"/>
    </rim:ExtrinsicObject>
    <rim:RegistryPackage id="Set1">
      <rim:Slot name="submissionTime"><rim:ValueList><rim:Value>20240101120000</rim:Value></rim:ValueList></rim:Slot>
    </rim:RegistryPackage>
    <rim:Classification id="c1" classifiedObject="Set1" classificationNode="{SUBMISSION_SET_NODE}"/>
  </rim:RegistryObjectList>
</lcm:SubmitObjectsRequest>"#,
        write::sha1_hex(content),
        content.len(),
        patient_id = patient_id.replace('&', "&amp;"),
    )
    .into_bytes()
}

// Writing and reading back.

#[test]
fn a_written_package_reads_back_with_the_same_documents_and_metadata() {
    let package = read(&written()).unwrap();
    assert_eq!(package.problems, vec![]);
    assert_eq!(package.submission_sets.len(), 1);
    let set = &package.submission_sets[0];
    assert_eq!(set.folder, "IHE_XDM/SUBSET01");
    assert_eq!(set.submission_time.as_deref(), Some("20240305143009"));
    assert_eq!(set.source_id.as_deref(), Some("1.2.840.114350.1.13.99"));
    assert!(set.unique_id.as_deref().unwrap().starts_with("2.25."));
    assert!(set.entry_uuid.as_deref().unwrap().starts_with("urn:uuid:"));
    assert_eq!(
        set.authors,
        vec![Party {
            person: Some("Dr Jane Smith".to_owned()),
            institution: Some("Good Health Clinic & Labs".to_owned()),
            address: Some("jane.smith@direct.goodhealth.example".to_owned()),
        }]
    );
    let recipients: Vec<Option<&str>> = set
        .intended_recipients
        .iter()
        .map(|party| party.address.as_deref())
        .collect();
    assert_eq!(
        recipients,
        vec![
            Some("referrals@direct.hospital.example"),
            Some("records@direct.hospital.example")
        ]
    );
    assert_eq!(set.content_type.as_ref().unwrap().display, "Referral note");
    let patient = set.patient.as_ref().unwrap();
    assert_eq!(patient.id.as_deref(), Some(PATIENT_ID));
    assert_eq!(patient.name().as_deref(), Some("John Q Doe"));
    assert_eq!(patient.birth_date.as_deref(), Some("19560527"));
    assert_eq!(patient.sex.as_deref(), Some("M"));

    let [xml, pdf] = set.documents.as_slice() else {
        panic!("{:?}", set.documents)
    };
    assert_eq!(xml.title.as_deref(), Some("Referral <&\"> note"));
    assert_eq!(xml.label(), "Referral <&\"> note");
    assert_eq!(xml.path, "IHE_XDM/SUBSET01/DOC0001.XML");
    assert_eq!(xml.uri, "DOC0001.XML");
    assert_eq!(xml.bytes, CCDA);
    assert_eq!(xml.mime_type.as_deref(), Some("text/xml"));
    assert_eq!(xml.type_code.as_ref().unwrap().display, "Referral note");
    assert_eq!(xml.class_code.as_ref().unwrap().code, "11488-4");
    assert_eq!(
        xml.format_code.as_ref().unwrap().code,
        "urn:ihe:iti:xds:2017:mimeTypeSufficient"
    );
    assert_eq!(
        xml.confidentiality,
        vec![Confidentiality::Restricted.code()]
    );
    assert_eq!(xml.creation_time.as_deref(), Some("20240305133009"));
    assert_eq!(xml.size, Some(CCDA.len() as u64));
    assert_eq!(xml.hash.as_deref(), Some(write::sha1_hex(CCDA).as_str()));
    assert_eq!(pdf.path, "IHE_XDM/SUBSET01/DOC0002.PDF");
    assert_eq!(pdf.bytes, PDF);
    assert_eq!(pdf.confidentiality[0].code, "N");
    assert_eq!(pdf.creation_time, None);
    assert_eq!(package.documents().count(), 2);

    let ignored: Vec<(&str, IgnoredKind)> = package
        .ignored
        .iter()
        .map(|file| (file.path.as_str(), file.kind))
        .collect();
    assert_eq!(
        ignored,
        vec![
            ("README.TXT", IgnoredKind::Readme),
            ("INDEX.HTM", IgnoredKind::Index)
        ]
    );
}

#[test]
fn security_labels_are_written_as_further_confidentiality_codes() {
    const ACT_CODE: &str = "2.16.840.1.113883.5.4";
    let part2 = code("42CFRPart2", ACT_CODE, "42 CFR Part2");
    let eth = code("ETH", ACT_CODE, "substance abuse information sensitivity");
    let refrain = code(
        "NORDSCLCD",
        ACT_CODE,
        "no redisclosure without consent directive",
    );
    let mut input = input();
    input.documents[0].security_labels = vec![
        part2.clone(),
        eth.clone(),
        // Repeats of the HL7 code and of a label are written once.
        code("R", HL7_CONFIDENTIALITY, "restricted"),
        code("42CFRPart2", ACT_CODE, "again"),
        refrain.clone(),
        // The same code in another scheme is another label.
        code("ETH", "1.2.3.4", "elsewhere"),
    ];
    let package = read(&write_xdm(&input).unwrap()).unwrap();
    let [xml, pdf] = package.submission_sets[0].documents.as_slice() else {
        panic!("{:?}", package.submission_sets[0].documents)
    };
    assert_eq!(
        xml.confidentiality,
        vec![
            Confidentiality::Restricted.code(),
            part2,
            eth,
            refrain,
            code("ETH", "1.2.3.4", "elsewhere"),
        ]
    );
    assert_eq!(pdf.confidentiality, vec![Confidentiality::Normal.code()]);
    assert!(package.problems.is_empty(), "{:?}", package.problems);
}

fn children<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Vec<Node<'a, 'input>> {
    node.children()
        .filter(|child| child.has_tag_name((RIM, name)))
        .collect()
}

/// The values of `node`'s own slot `name`.
fn slot(node: Node, name: &str) -> Vec<String> {
    children(node, "Slot")
        .into_iter()
        .filter(|slot| slot.attribute("name") == Some(name))
        .flat_map(|slot| {
            slot.descendants()
                .filter(|n| n.has_tag_name((RIM, "Value")))
        })
        .map(|value| value.text().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_written_metadata_is_an_ebrs_submission_with_direct_minimal_metadata() {
    let bytes = written();
    let xml = metadata_text(&bytes);
    let document = roxmltree::Document::parse(&xml).unwrap();
    let root = document.root_element();
    assert_eq!(root.tag_name().namespace(), Some(LCM));
    assert_eq!(root.tag_name().name(), "SubmitObjectsRequest");
    let list = root.first_element_child().unwrap();
    assert_eq!(list.tag_name().namespace(), Some(RIM));
    assert_eq!(list.tag_name().name(), "RegistryObjectList");
    for node in list.descendants().filter(Node::is_element) {
        assert_eq!(node.tag_name().namespace(), Some(RIM), "{node:?}");
    }
    let has_classification = |node: Node, attribute: &str, value: &str| {
        children(node, "Classification")
            .iter()
            .any(|c| c.attribute(attribute) == Some(value))
    };
    let identifier = |node: Node, scheme: &str| {
        children(node, "ExternalIdentifier")
            .into_iter()
            .find(|i| i.attribute("identificationScheme") == Some(scheme))
            .and_then(|i| i.attribute("value"))
            .map(str::to_owned)
    };
    // Every identifiable object has an id, and ids are unique.
    let ids: Vec<&str> = list
        .descendants()
        .filter(|n| {
            [
                "ExtrinsicObject",
                "RegistryPackage",
                "Classification",
                "ExternalIdentifier",
                "Association",
            ]
            .contains(&n.tag_name().name())
        })
        .map(|n| n.attribute("id").unwrap())
        .collect();
    let unique: std::collections::HashSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());

    let package = children(list, "RegistryPackage");
    let [set] = package.as_slice() else { panic!() };
    let set_id = set.attribute("id").unwrap();
    assert!(set_id.starts_with("urn:uuid:"));
    assert_eq!(slot(*set, "submissionTime"), vec!["20240305143009"]);
    assert_eq!(
        slot(*set, "intendedRecipient"),
        vec![
            "||^^Internet^referrals@direct.hospital.example",
            "||^^Internet^records@direct.hospital.example"
        ]
    );
    let author = children(*set, "Classification")
        .into_iter()
        .find(|c| c.attribute("classificationScheme") == Some(SUBMISSION_SET_AUTHOR))
        .unwrap();
    assert_eq!(author.attribute("classifiedObject"), Some(set_id));
    assert_eq!(slot(author, "authorPerson"), vec!["^Dr Jane Smith"]);
    assert_eq!(
        slot(author, "authorInstitution"),
        vec![r"Good Health Clinic \T\ Labs"]
    );
    assert_eq!(
        slot(author, "authorTelecommunication"),
        vec!["^^Internet^jane.smith@direct.goodhealth.example"]
    );
    assert!(has_classification(
        *set,
        "classificationScheme",
        SUBMISSION_SET_CONTENT_TYPE
    ));
    assert!(has_classification(
        *set,
        "classificationNode",
        SUBMISSION_SET_LIMITED
    ));
    assert!(
        identifier(*set, SUBMISSION_SET_UNIQUE_ID)
            .unwrap()
            .starts_with("2.25.")
    );
    assert_eq!(
        identifier(*set, SUBMISSION_SET_SOURCE_ID).as_deref(),
        Some("1.2.840.114350.1.13.99")
    );
    assert_eq!(
        identifier(*set, SUBMISSION_SET_PATIENT_ID).as_deref(),
        Some(PATIENT_ID)
    );
    // The package is a SubmissionSet by classification (ITI TF-3 §4.2.5.1).
    assert!(children(list, "Classification").iter().any(|c| {
        c.attribute("classifiedObject") == Some(set_id)
            && c.attribute("classificationNode") == Some(SUBMISSION_SET_NODE)
    }));

    let entries = children(list, "ExtrinsicObject");
    assert_eq!(entries.len(), 2);
    let files = unpack(&bytes);
    for (entry, file) in entries.iter().zip(["DOC0001.XML", "DOC0002.PDF"]) {
        let id = entry.attribute("id").unwrap();
        assert!(id.starts_with("urn:uuid:"));
        assert_eq!(entry.attribute("objectType"), Some(DOCUMENT_ENTRY));
        assert!(entry.attribute("mimeType").is_some());
        let content = &files
            .iter()
            .find(|(name, _)| name.ends_with(file))
            .unwrap()
            .1;
        assert_eq!(slot(*entry, "URI"), vec![file]);
        assert_eq!(slot(*entry, "hash"), vec![write::sha1_hex(content)]);
        assert_eq!(slot(*entry, "size"), vec![content.len().to_string()]);
        assert_eq!(slot(*entry, "sourcePatientId"), vec![PATIENT_ID]);
        assert_eq!(
            slot(*entry, "sourcePatientInfo"),
            vec![
                format!("PID-3|{PATIENT_ID}"),
                "PID-5|Doe^John Q".to_owned(),
                "PID-7|19560527".to_owned(),
                "PID-8|M".to_owned()
            ]
        );
        let format = children(*entry, "Classification")
            .into_iter()
            .find(|c| c.attribute("classificationScheme") == Some(DOCUMENT_FORMAT_CODE))
            .unwrap();
        assert_eq!(
            format.attribute("nodeRepresentation"),
            Some("urn:ihe:iti:xds:2017:mimeTypeSufficient")
        );
        assert_eq!(slot(format, "codingScheme"), vec![IHE_FORMAT_CODES]);
        assert!(has_classification(
            *entry,
            "classificationScheme",
            DOCUMENT_CONFIDENTIALITY
        ));
        assert!(has_classification(
            *entry,
            "classificationNode",
            DOCUMENT_LIMITED
        ));
        assert!(
            identifier(*entry, DOCUMENT_UNIQUE_ID)
                .unwrap()
                .starts_with("2.25.")
        );
        assert_eq!(
            identifier(*entry, DOCUMENT_PATIENT_ID).as_deref(),
            Some(PATIENT_ID)
        );
        for classification in children(*entry, "Classification") {
            assert_eq!(classification.attribute("classifiedObject"), Some(id));
        }
        // ebRIM 3.0 content order: Slot*, Name, Classification*, ExternalIdentifier*.
        let order: Vec<&str> = entry
            .children()
            .filter(Node::is_element)
            .map(|n| n.tag_name().name())
            .collect();
        let rank = |name: &str| match name {
            "Slot" => 0,
            "Name" => 1,
            "Classification" => 2,
            "ExternalIdentifier" => 3,
            other => panic!("{other}"),
        };
        assert!(
            order.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
            "{order:?}"
        );
        // One HasMember association from the SubmissionSet to each document.
        let associations: Vec<Node> = children(list, "Association")
            .into_iter()
            .filter(|a| a.attribute("targetObject") == Some(id))
            .collect();
        let [association] = associations.as_slice() else {
            panic!()
        };
        assert_eq!(association.attribute("associationType"), Some(HAS_MEMBER));
        assert_eq!(association.attribute("sourceObject"), Some(set_id));
        assert_eq!(slot(*association, "SubmissionSetStatus"), vec!["Original"]);
    }
    assert!(xml.contains("Referral &lt;&amp;&quot;&gt; note"));
}

#[test]
fn the_layout_has_readme_index_and_numbered_documents() {
    let files = unpack(&written());
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "README.TXT",
            "INDEX.HTM",
            "IHE_XDM/SUBSET01/METADATA.XML",
            "IHE_XDM/SUBSET01/DOC0001.XML",
            "IHE_XDM/SUBSET01/DOC0002.PDF"
        ]
    );
    let readme = String::from_utf8(files[0].1.clone()).unwrap();
    assert!(readme.contains(
        "Dr Jane Smith, Good Health Clinic & Labs <jane.smith@direct.goodhealth.example>"
    ));
    assert!(readme.contains("2024-03-05 14:30:09 UTC"));
    assert!(readme.contains("\r\n"));
    let index = String::from_utf8(files[1].1.clone()).unwrap();
    assert!(index.contains("href=\"IHE_XDM/SUBSET01/DOC0002.PDF\""));
    assert!(index.contains("Referral &lt;&amp;&quot;&gt; note"));
    assert!(!index.to_lowercase().contains("<script"));
    assert!(!index.contains("Referral <&"));
}

/// `xml` with every derived identifier replaced by a placeholder.
fn without_identifiers(xml: &str) -> String {
    let mut out = String::new();
    let mut rest = xml;
    loop {
        let uuid = rest.find("urn:uuid:").map(|at| (at, "urn:uuid:"));
        let oid = rest.find("\"2.25.").map(|at| (at + 1, "2.25."));
        let Some((at, prefix)) = [uuid, oid].into_iter().flatten().min() else {
            break;
        };
        out.push_str(&rest[..at]);
        out.push_str(prefix);
        out.push('*');
        rest = &rest[at + prefix.len()..];
        rest = rest.trim_start_matches(|c: char| c.is_ascii_hexdigit() || c == '-');
    }
    out.push_str(rest);
    out
}

#[test]
fn writing_is_pure_the_seed_and_time_decide_every_identifier() {
    assert_eq!(written(), written());
    let mut other = input();
    other.seed = [8; 16];
    let a = metadata_text(&written());
    let b = metadata_text(&write_xdm(&other).unwrap());
    assert_ne!(a, b);
    assert_eq!(without_identifiers(&a), without_identifiers(&b));
}

#[test]
fn without_a_source_id_one_is_derived_from_the_sender_and_stays_the_same() {
    let mut first = input();
    first.source_id = None;
    let mut second = first.clone();
    second.seed = [9; 16];
    let id = |input: &XdmInput| {
        read(&write_xdm(input).unwrap()).unwrap().submission_sets[0]
            .source_id
            .clone()
            .unwrap()
    };
    let source_id = id(&first);
    assert!(source_id.starts_with("2.25."), "{source_id}");
    assert!(hl7::is_oid(&source_id));
    assert_eq!(source_id, id(&second));
}

#[test]
fn writing_refuses_input_that_would_make_bad_metadata() {
    let attempt = |edit: fn(&mut XdmInput)| {
        let mut input = input();
        edit(&mut input);
        let error = write_xdm(&input).unwrap_err();
        one_sentence(&error.to_string());
        error
    };
    assert_eq!(attempt(|i| i.documents.clear()), WriteError::NoDocuments);
    assert_eq!(attempt(|i| i.recipients.clear()), WriteError::NoRecipients);
    assert!(matches!(
        attempt(|i| i.recipients[0] = "not an address".to_owned()),
        WriteError::InvalidAddress { .. }
    ));
    assert!(matches!(
        attempt(|i| i.sender.address = "<a@x.example>".to_owned()),
        WriteError::InvalidAddress { .. }
    ));
    assert_eq!(
        attempt(|i| i.source_id = Some("1.2.abc".to_owned())),
        WriteError::InvalidSourceId
    );
    assert_eq!(
        attempt(|i| i.patient.as_mut().unwrap().id = Some("12345".to_owned())),
        WriteError::InvalidPatientId
    );
    assert!(matches!(
        attempt(|i| i.documents[0].mime_type = "pdf".to_owned()),
        WriteError::InvalidMimeType { .. }
    ));
    assert_eq!(attempt(|i| i.now = 0), WriteError::InvalidTime);
}

#[test]
fn hl7_delimiters_in_names_and_addresses_survive_the_round_trip() {
    let mut input = input();
    input.sender.person = Some("Jane ^Smith| & Co~".to_owned());
    input.recipients = vec!["a&b|c^d@direct.example.org".to_owned()];
    let package = read(&write_xdm(&input).unwrap()).unwrap();
    let set = &package.submission_sets[0];
    assert_eq!(set.authors[0].person.as_deref(), Some("Jane ^Smith| & Co~"));
    assert_eq!(
        set.intended_recipients[0].address.as_deref(),
        Some("a&b|c^d@direct.example.org")
    );
}

#[test]
fn text_that_xml_cannot_hold_is_replaced_and_line_breaks_survive() {
    let mut input = input();
    input.documents[0].title = "Line one\nline two \u{1} end".to_owned();
    let package = read(&write_xdm(&input).unwrap()).unwrap();
    assert_eq!(
        package.submission_sets[0].documents[0].title.as_deref(),
        Some("Line one\nline two \u{fffd} end")
    );
}

#[test]
fn unix_time_becomes_the_utc_calendar() {
    let dtm = |seconds| write::Utc::from_unix(seconds).map(|t| t.dtm());
    assert_eq!(dtm(315_532_800).as_deref(), Some("19800101000000"));
    assert_eq!(dtm(951_782_400).as_deref(), Some("20000229000000"));
    assert_eq!(dtm(NOW).as_deref(), Some("20240305143009"));
    assert_eq!(dtm(253_402_300_799).as_deref(), Some("99991231235959"));
    assert_eq!(dtm(-1), None);
}

// Reading packages from other senders.

#[test]
fn several_submission_sets_are_read_whatever_the_letter_case_of_their_names() {
    let content = b"first document";
    let other = b"second document";
    let bytes = pack(&[
        ("readme.txt".to_owned(), b"hello".to_vec()),
        (
            "ihe_xdm/subset02/Metadata.Xml".to_owned(),
            minimal_metadata("Second", other, "B^^^&1.2.3&ISO"),
        ),
        ("ihe_xdm/subset02/DOC0001.TXT".to_owned(), other.to_vec()),
        (
            "IHE_XDM/Subset01/METADATA.XML".to_owned(),
            minimal_metadata("First", content, "A^^^&1.2.3&ISO"),
        ),
        ("IHE_XDM/Subset01/Doc0001.Txt".to_owned(), content.to_vec()),
        ("IHE_XDM/Subset01/CDA.XSL".to_owned(), b"<xsl/>".to_vec()),
    ]);
    assert!(is_xdm(&bytes));
    let package = read(&bytes).unwrap();
    let folders: Vec<&str> = package
        .submission_sets
        .iter()
        .map(|set| set.folder.as_str())
        .collect();
    assert_eq!(folders, vec!["IHE_XDM/Subset01", "ihe_xdm/subset02"]);
    let first = &package.submission_sets[0].documents[0];
    assert_eq!(first.title.as_deref(), Some("First"));
    assert_eq!(first.path, "IHE_XDM/Subset01/Doc0001.Txt");
    assert_eq!(first.bytes, content);
    assert_eq!(package.submission_sets[1].documents[0].bytes, other);
    assert_eq!(
        package.submission_sets[0].submission_time.as_deref(),
        Some("20240101120000")
    );
    // Two patients: worth a word, not a refusal.
    assert_eq!(package.problems, vec![Problem::DifferentPatients]);
    let kinds: Vec<IgnoredKind> = package.ignored.iter().map(|file| file.kind).collect();
    assert_eq!(kinds, vec![IgnoredKind::Readme, IgnoredKind::Stylesheet]);
}

#[test]
fn classifications_and_identifiers_are_found_at_the_top_of_the_list_too() {
    let content = b"text";
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<SubmitObjectsRequest xmlns="{LCM}"><RegistryObjectList xmlns="{RIM}">
  <ExtrinsicObject id="d" mimeType="text/plain">
    <Slot name="URI"><ValueList><Value>a.txt</Value></ValueList></Slot>
    <Slot name="sourcePatientInfo"><ValueList>
      <Value>PID-5|O\S\BRIEN^MARY^^^</Value><Value>PID-8|F</Value>
    </ValueList></Slot>
  </ExtrinsicObject>
  <Classification id="t" classificationScheme="{DOCUMENT_TYPE_CODE}" classifiedObject="d" nodeRepresentation="18842-5">
    <Slot name="codingScheme"><ValueList><Value>2.16.840.1.113883.6.1</Value></ValueList></Slot>
    <Name><LocalizedString value="Discharge summary"/></Name>
  </Classification>
  <ExternalIdentifier id="u" registryObject="d" identificationScheme="{DOCUMENT_UNIQUE_ID}" value="1.2.3.4"/>
  <RegistryPackage id="s">
    <Slot name="intendedRecipient"><ValueList><Value>Mercy^^^^^^^^^1.2.3|^Wel^Marcus|^^Internet^mwel@direct.example</Value></ValueList></Slot>
  </RegistryPackage>
  <Classification id="a" classificationScheme="{SUBMISSION_SET_AUTHOR}" classifiedObject="s" nodeRepresentation="">
    <Slot name="authorPerson"><ValueList><Value>^Welby^Marcus^^^Dr</Value></ValueList></Slot>
  </Classification>
</RegistryObjectList></SubmitObjectsRequest>"#
    );
    let bytes = pack(&[
        ("IHE_XDM/S1/METADATA.XML".to_owned(), xml.into_bytes()),
        ("IHE_XDM/S1/A.TXT".to_owned(), content.to_vec()),
    ]);
    let package = read(&bytes).unwrap();
    assert_eq!(package.problems, vec![]);
    let set = &package.submission_sets[0];
    assert_eq!(set.authors[0].person.as_deref(), Some("Dr Marcus Welby"));
    assert_eq!(
        set.intended_recipients,
        vec![Party {
            person: Some("Marcus Wel".to_owned()),
            institution: Some("Mercy".to_owned()),
            address: Some("mwel@direct.example".to_owned()),
        }]
    );
    let document = &set.documents[0];
    assert_eq!(
        document.type_code.as_ref().unwrap().display,
        "Discharge summary"
    );
    assert_eq!(document.unique_id.as_deref(), Some("1.2.3.4"));
    assert_eq!(document.label(), "a.txt");
    let patient = set.patient.as_ref().unwrap();
    assert_eq!(patient.family_name.as_deref(), Some("O^BRIEN"));
    assert_eq!(patient.sex.as_deref(), Some("F"));
}

#[test]
fn a_changed_document_is_reported_in_words_and_still_returned() {
    let bytes = edited(|files| {
        file_mut(files, "IHE_XDM/SUBSET01/DOC0002.PDF")[9] ^= 1;
    });
    let package = read(&bytes).unwrap();
    assert_eq!(package.problems.len(), 1);
    assert_eq!(
        package.problems[0].to_string(),
        "The document “Scanned letter” does not match the fingerprint its sender recorded; \
         it may have been changed."
    );
    assert_eq!(package.documents().count(), 2);
}

#[test]
fn a_document_of_another_size_is_reported_with_both_sizes() {
    let bytes = edited(|files| {
        file_mut(files, "IHE_XDM/SUBSET01/DOC0002.PDF").truncate(10);
    });
    let package = read(&bytes).unwrap();
    let messages: Vec<String> = package.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        vec![
            format!(
                "The document “Scanned letter” is not the size its sender recorded (10 bytes \
                 instead of {}); it may have been changed or cut short.",
                PDF.len()
            ),
            "The document “Scanned letter” does not match the fingerprint its sender \
             recorded; it may have been changed."
                .to_owned()
        ]
    );
}

#[test]
fn a_listed_document_missing_from_the_zip_is_reported_in_words() {
    let bytes = edited(|files| files.retain(|(name, _)| !name.ends_with("DOC0001.XML")));
    let package = read(&bytes).unwrap();
    assert_eq!(
        package.problems,
        vec![Problem::MissingDocument {
            document: "Referral <&\"> note".to_owned()
        }]
    );
    assert_eq!(
        package.problems[0].to_string(),
        "The document “Referral <&\"> note” is listed in the package, but its file is missing."
    );
    assert_eq!(package.documents().count(), 1);
}

#[test]
fn a_file_the_metadata_does_not_list_is_reported_and_never_returned() {
    let bytes = edited(|files| {
        files.push(("IHE_XDM/SUBSET01/EXTRA.EXE".to_owned(), b"MZ".to_vec()));
        files.push(("IHE_XDM/SUBSET01/VIEW.JS".to_owned(), b"alert(1)".to_vec()));
        files.push(("AUTORUN.INF".to_owned(), b"[autorun]".to_vec()));
        files.push(("STYLE/CDA.XSL".to_owned(), b"<xsl/>".to_vec()));
    });
    let package = read(&bytes).unwrap();
    let messages: Vec<String> = package.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        vec![
            "The package holds a file that its list of contents does not mention \
             (“IHE_XDM/SUBSET01/EXTRA.EXE”); it was not opened.",
            "The package holds a file that its list of contents does not mention \
             (“IHE_XDM/SUBSET01/VIEW.JS”); it was not opened."
        ]
    );
    assert!(package.documents().all(|d| !d.path.contains("EXTRA")));
    let kinds: Vec<(&str, IgnoredKind)> = package
        .ignored
        .iter()
        .map(|file| (file.path.as_str(), file.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("README.TXT", IgnoredKind::Readme),
            ("INDEX.HTM", IgnoredKind::Index),
            ("IHE_XDM/SUBSET01/EXTRA.EXE", IgnoredKind::Unlisted),
            ("IHE_XDM/SUBSET01/VIEW.JS", IgnoredKind::Script),
            ("AUTORUN.INF", IgnoredKind::Script),
            ("STYLE/CDA.XSL", IgnoredKind::Stylesheet),
        ]
    );
}

#[test]
fn stylesheets_and_scripts_are_never_documents_even_when_listed() {
    let bytes = edited(|files| {
        let xml = file_mut(files, "IHE_XDM/SUBSET01/METADATA.XML");
        let text = String::from_utf8(xml.clone())
            .unwrap()
            .replace(">DOC0002.PDF<", ">VIEW.JS<")
            .replace("mimeType=\"text/xml\"", "mimeType=\"text/xsl\"");
        *xml = text.into_bytes();
        files.push(("IHE_XDM/SUBSET01/VIEW.JS".to_owned(), b"alert(1)".to_vec()));
    });
    let package = read(&bytes).unwrap();
    assert_eq!(package.documents().count(), 0);
    let kinds: Vec<(&str, IgnoredKind)> = package
        .ignored
        .iter()
        .map(|file| (file.path.as_str(), file.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("IHE_XDM/SUBSET01/DOC0001.XML", IgnoredKind::Stylesheet),
            ("IHE_XDM/SUBSET01/VIEW.JS", IgnoredKind::Script),
            ("README.TXT", IgnoredKind::Readme),
            ("INDEX.HTM", IgnoredKind::Index),
            ("IHE_XDM/SUBSET01/DOC0002.PDF", IgnoredKind::Unlisted),
        ]
    );
    // The PDF is no longer listed.
    assert_eq!(
        package.problems,
        vec![Problem::UnlistedFile {
            path: "IHE_XDM/SUBSET01/DOC0002.PDF".to_owned()
        }]
    );
}

#[test]
fn readme_and_index_are_not_documents_even_when_the_metadata_lists_them_elsewhere() {
    // A URI naming the root README climbs out of the subset folder: not followed.
    let bytes = edited(|files| {
        let xml = file_mut(files, "IHE_XDM/SUBSET01/METADATA.XML");
        let text = String::from_utf8(xml.clone())
            .unwrap()
            .replace(">DOC0002.PDF<", ">../../README.TXT<");
        *xml = text.into_bytes();
    });
    let package = read(&bytes).unwrap();
    assert_eq!(
        package.problems[0].to_string(),
        "The document “Scanned letter” points to a file outside the package \
         (“../../README.TXT”), so it was not opened."
    );
    assert!(package.documents().all(|d| !d.path.ends_with("README.TXT")));
    assert!(
        package
            .ignored
            .iter()
            .any(|file| file.kind == IgnoredKind::Readme)
    );
}

#[test]
fn uris_with_a_scheme_or_an_absolute_path_are_not_followed() {
    for uri in [
        "http://example.org/x.pdf",
        "/etc/passwd",
        "C:\\x.pdf",
        "a/../../b",
    ] {
        let bytes = edited(|files| {
            let xml = file_mut(files, "IHE_XDM/SUBSET01/METADATA.XML");
            let text = String::from_utf8(xml.clone())
                .unwrap()
                .replace(">DOC0002.PDF<", &format!(">{uri}<"));
            *xml = text.into_bytes();
        });
        let package = read(&bytes).unwrap();
        assert!(
            matches!(&package.problems[..], [Problem::ReferenceOutsideFolder { uri: u, .. }, Problem::UnlistedFile { .. }] if u == uri),
            "{uri}: {:?}",
            package.problems
        );
    }
}

// Refusals.

#[test]
fn a_zip_bomb_is_refused_quickly_without_being_unpacked() {
    // 50 MB of zeros deflates to about 50 kB: a ratio near 1000.
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
    let zeros = vec![0u8; 1 << 16];
    let total = 50_000_000usize;
    let mut written_len = 0;
    while written_len < total {
        let n = zeros.len().min(total - written_len);
        encoder.write_all(&zeros[..n]).unwrap();
        written_len += n;
    }
    let compressed = encoder.finish().unwrap();
    assert!(compressed.len() < 100_000, "{}", compressed.len());

    // As a writer would declare it, and with the header lying that it is small.
    for declared in [50_000_000u32, 100] {
        let metadata = Raw::stored(
            b"IHE_XDM/SUBSET01/METADATA.XML",
            &minimal_metadata("Bomb", b"", "A^^^&1.2.3&ISO"),
        );
        let mut bomb = Raw::stored(b"IHE_XDM/SUBSET01/DOC0001.TXT", b"");
        bomb.precompressed = Some(compressed.clone());
        bomb.declared_size = Some(declared);
        let bytes = raw_zip(&[metadata, bomb]);
        let start = Instant::now();
        let error = refused(&bytes);
        assert_eq!(
            error,
            XdmError::CompressionRatio {
                name: "IHE_XDM/SUBSET01/DOC0001.TXT".to_owned()
            },
            "declared {declared}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        one_sentence(&error.to_string());
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .rposition(|w| w == needle)
        .unwrap()
}

#[test]
fn the_total_unpacked_size_is_bounded() {
    let limits = XdmLimits {
        max_total_size: 1000,
        ..XdmLimits::default()
    };
    let error = read_xdm(&written(), &limits).unwrap_err();
    assert_eq!(error, XdmError::TooLarge { limit: 1000 });
    assert_eq!(
        error.to_string(),
        "The XDM package unpacks to more than 1000 bytes, more than this system opens."
    );
    // A header that understates sizes is caught while inflating.
    let content = vec![b'a'; 5000];
    let mut metadata = Raw::stored(
        b"IHE_XDM/SUBSET01/METADATA.XML",
        &minimal_metadata("Big", &content, "A^^^&1.2.3&ISO"),
    );
    metadata.declared_size = Some(10);
    let mut document = Raw::stored(b"IHE_XDM/SUBSET01/DOC0001.TXT", &content);
    document.deflate = true;
    document.declared_size = Some(10);
    let limits = XdmLimits {
        max_total_size: 4000,
        ..XdmLimits::default()
    };
    let error = read_xdm(&raw_zip(&[metadata, document]), &limits).unwrap_err();
    assert_eq!(error, XdmError::TooLarge { limit: 4000 });
}

#[test]
fn a_truncated_package_is_refused_as_incomplete() {
    let bytes = written();
    for cut in [bytes.len() - 1, bytes.len() / 2, 100] {
        let error = refused(&bytes[..cut]);
        assert_eq!(error, XdmError::Truncated, "cut at {cut}");
        assert!(!is_xdm(&bytes[..cut]));
    }
    assert_eq!(
        XdmError::Truncated.to_string(),
        "The XDM package is incomplete (it was cut short in transit or when it was saved); \
         ask the sender to send it again."
    );
}

#[test]
fn a_damaged_entry_is_refused() {
    // A local header overwritten: the central directory points at nothing.
    let mut bytes = written();
    let name = b"IHE_XDM/SUBSET01/DOC0002.PDF";
    let local = bytes.windows(name.len()).position(|w| w == name).unwrap() - 30;
    bytes[local..local + 4].copy_from_slice(b"XXXX");
    assert_eq!(refused(&bytes), XdmError::Damaged);
    // Stored data changed under its CRC.
    let mut bytes = raw_zip(&[
        Raw::stored(
            b"IHE_XDM/SUBSET01/METADATA.XML",
            &minimal_metadata("X", b"abc", "A^^^&1.2.3&ISO"),
        ),
        Raw::stored(b"IHE_XDM/SUBSET01/DOC0001.TXT", b"abc"),
    ]);
    let at = find(&bytes, b"abc");
    bytes[at] = b'x';
    let error = refused(&bytes);
    assert_eq!(error, XdmError::Damaged);
    one_sentence(&error.to_string());
}

#[test]
fn a_compression_method_other_than_deflate_is_refused_when_needed() {
    let metadata = || {
        Raw::stored(
            b"IHE_XDM/SUBSET01/METADATA.XML",
            &minimal_metadata("X", b"x", "A^^^&1.2.3&ISO"),
        )
    };
    let bzip2 = |name: &[u8]| {
        let mut entry = Raw::stored(name, b"x");
        entry.method = Some(12);
        entry
    };
    let error = refused(&raw_zip(&[
        metadata(),
        bzip2(b"IHE_XDM/SUBSET01/DOC0001.TXT"),
    ]));
    assert_eq!(
        error,
        XdmError::UnsupportedCompression {
            name: "IHE_XDM/SUBSET01/DOC0001.TXT".to_owned()
        }
    );
    one_sentence(&error.to_string());
    // A file that is never opened does not matter.
    let package = read(&raw_zip(&[
        metadata(),
        Raw::stored(b"IHE_XDM/SUBSET01/DOC0001.TXT", b"x"),
        bzip2(b"README.TXT"),
    ]))
    .unwrap();
    assert_eq!(package.documents().count(), 1);
}

#[test]
fn zip64_records_and_data_before_the_archive_are_read() {
    let files = unpack(&written());
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .large_file(true);
    for (name, content) in &files {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(content).unwrap();
    }
    let zip64 = zip.finish().unwrap().into_inner();
    let has = |needle: &[u8]| zip64.windows(needle.len()).any(|w| w == needle);
    // The sizes are in ZIP64 extra fields (header 0x0001, APPNOTE §4.5.3).
    assert!(has(b"\xff\xff\xff\xff\xff\xff\xff\xff"), "no ZIP64 sizes");
    let package = read(&zip64).unwrap();
    assert_eq!(package.problems, vec![]);
    assert_eq!(package.documents().count(), 2);

    // A ZIP64 end record, found through its locator (APPNOTE §4.3.14–4.3.15).
    let package = read(&with_zip64_end(&written())).unwrap();
    assert_eq!(package.documents().count(), 2);
    let limits = XdmLimits {
        max_entries: 3,
        ..XdmLimits::default()
    };
    assert_eq!(
        read_xdm(&with_zip64_end(&written()), &limits).unwrap_err(),
        XdmError::TooManyEntries { limit: 3 }
    );

    // A self-extracting stub in front, as some archivers write.
    let mut prefixed = vec![b'#'; 300];
    prefixed.extend_from_slice(&written());
    assert!(is_xdm(&prefixed));
    assert_eq!(read(&prefixed).unwrap().documents().count(), 2);
}

/// `zip` (with a plain 22-byte end record) given a ZIP64 end record and locator, its
/// plain end record saying "see ZIP64".
fn with_zip64_end(zip: &[u8]) -> Vec<u8> {
    let eocd = zip.len() - 22;
    let count = u64::from(u16::from_le_bytes([zip[eocd + 10], zip[eocd + 11]]));
    let cd_size = u64::from(u32::from_le_bytes(
        zip[eocd + 12..eocd + 16].try_into().unwrap(),
    ));
    let cd_offset = u64::from(u32::from_le_bytes(
        zip[eocd + 16..eocd + 20].try_into().unwrap(),
    ));
    let mut out = zip[..eocd].to_vec();
    let record = out.len() as u64;
    out.extend_from_slice(b"PK\x06\x06");
    out.extend_from_slice(&44u64.to_le_bytes());
    out.extend_from_slice(&45u16.to_le_bytes());
    out.extend_from_slice(&45u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(b"PK\x06\x07");
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&record.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&[0xff; 4]);
    out.extend_from_slice(&[0xff; 8]);
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

#[test]
fn bytes_that_are_not_a_zip_are_refused() {
    for bytes in [&b""[..], b"%PDF-1.7\n", b"PK", &[0u8; 100]] {
        assert_eq!(refused(bytes), XdmError::NotZip);
        assert!(!is_xdm(bytes));
    }
}

#[test]
fn a_zip_without_metadata_is_not_an_xdm_package() {
    let bytes = pack(&[
        ("README.TXT".to_owned(), b"hi".to_vec()),
        ("IHE_XDM/SUBSET01/DOC0001.PDF".to_owned(), PDF.to_vec()),
        ("IHE_XDM/METADATA.XML".to_owned(), b"<x/>".to_vec()),
    ]);
    assert!(!is_xdm(&bytes));
    let error = refused(&bytes);
    assert_eq!(error, XdmError::NoMetadata);
    one_sentence(&error.to_string());
}

#[test]
fn is_xdm_looks_at_content_and_never_at_a_file_name() {
    let bytes = written();
    assert!(is_xdm(&bytes));
    let lower = edited(|files| {
        for (name, _) in files.iter_mut() {
            *name = name.to_lowercase();
        }
    });
    assert!(is_xdm(&lower));
    assert!(read(&lower).is_ok());
    // A Word document is a ZIP, not an XDM package.
    let docx = pack(&[
        ("[Content_Types].xml".to_owned(), b"<Types/>".to_vec()),
        ("word/document.xml".to_owned(), b"<w:document/>".to_vec()),
    ]);
    assert!(!is_xdm(&docx));
}

#[test]
fn names_that_could_point_outside_the_package_are_refused() {
    let cases: [(&[u8], NameFault); 8] = [
        (b"../evil", NameFault::ParentFolder),
        (b"IHE_XDM/SUBSET01/../../evil", NameFault::ParentFolder),
        (b"/abs", NameFault::Absolute),
        (b"C:/windows/evil", NameFault::Absolute),
        (b"a\\b", NameFault::Backslash),
        (b"a\0b", NameFault::ControlCharacter),
        (b"a//b", NameFault::Irregular),
        (b"./a", NameFault::Irregular),
    ];
    for (name, fault) in cases {
        let bytes = raw_zip(&[
            Raw::stored(
                b"IHE_XDM/SUBSET01/METADATA.XML",
                &minimal_metadata("X", b"x", "A^^^&1.2.3&ISO"),
            ),
            Raw::stored(b"IHE_XDM/SUBSET01/DOC0001.TXT", b"x"),
            Raw::stored(name, b"evil"),
        ]);
        let error = refused(&bytes);
        assert!(
            matches!(&error, XdmError::UnsafeName { fault: f, .. } if *f == fault),
            "{name:?}: {error:?}"
        );
        one_sentence(&error.to_string());
    }
    let error = refused(&raw_zip(&[Raw::stored(b"../evil", b"x")]));
    assert_eq!(
        error.to_string(),
        "The XDM package was not opened: the file name “../evil” climbs out of its folder \
         (\"..\"), which could point outside the package."
    );
}

#[test]
fn the_same_name_twice_in_any_case_is_refused() {
    for second in [
        &b"IHE_XDM/SUBSET01/DOC0001.TXT"[..],
        b"ihe_xdm/subset01/doc0001.txt",
    ] {
        let bytes = raw_zip(&[
            Raw::stored(
                b"IHE_XDM/SUBSET01/METADATA.XML",
                &minimal_metadata("X", b"x", "A^^^&1.2.3&ISO"),
            ),
            Raw::stored(b"IHE_XDM/SUBSET01/DOC0001.TXT", b"x"),
            Raw::stored(second, b"something else"),
        ]);
        assert!(matches!(refused(&bytes), XdmError::DuplicateName { .. }));
    }
}

#[test]
fn links_and_encrypted_entries_are_refused() {
    let mut link = Raw::stored(b"IHE_XDM/SUBSET01/DOC0001.TXT", b"/etc/passwd");
    link.unix_mode = Some(0o120_777);
    let metadata = || {
        Raw::stored(
            b"IHE_XDM/SUBSET01/METADATA.XML",
            &minimal_metadata("X", b"x", "A^^^&1.2.3&ISO"),
        )
    };
    assert!(matches!(
        refused(&raw_zip(&[metadata(), link])),
        XdmError::Link { .. }
    ));
    let mut secret = Raw::stored(b"IHE_XDM/SUBSET01/DOC0001.TXT", b"x");
    secret.flags = 1;
    assert_eq!(
        refused(&raw_zip(&[metadata(), secret])),
        XdmError::Encrypted
    );
    let mut plain_file = Raw::stored(b"IHE_XDM/SUBSET01/DOC0001.TXT", b"x");
    plain_file.unix_mode = Some(0o100_644);
    assert!(read(&raw_zip(&[metadata(), plain_file])).is_ok());
}

#[test]
fn a_dtd_in_the_metadata_is_refused_before_any_entity_is_expanded() {
    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0">&lol9;</lcm:SubmitObjectsRequest>"#;
    let external = r#"<?xml version="1.0"?>
<!DOCTYPE x SYSTEM "file:///etc/passwd"><x/>"#;
    for xml in [laughs, external] {
        let bytes = edited(|files| {
            *file_mut(files, "IHE_XDM/SUBSET01/METADATA.XML") = xml.as_bytes().to_vec();
        });
        let error = refused(&bytes);
        assert_eq!(
            error,
            XdmError::MetadataDtd {
                path: "IHE_XDM/SUBSET01/METADATA.XML".to_owned()
            }
        );
        assert_eq!(
            error.to_string(),
            "The XDM package was not opened: its list of contents \
             (IHE_XDM/SUBSET01/METADATA.XML) contains a document type declaration (DTD), \
             which is not allowed."
        );
    }
}

#[test]
fn malformed_metadata_is_refused_with_what_is_wrong() {
    let cases: [(&[u8], MetadataFault); 4] = [
        (
            b"<lcm:SubmitObjectsRequest\n\n<oops",
            MetadataFault::Syntax { line: 3 },
        ),
        (b"\xff\xfe<\0x\0/\0>\0", MetadataFault::NotUtf8),
        (
            b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>",
            MetadataFault::NotSubmitObjectsRequest,
        ),
        (
            b"<SubmitObjectsRequest xmlns=\"urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0\"/>",
            MetadataFault::NotSubmitObjectsRequest,
        ),
    ];
    for (xml, fault) in cases {
        let bytes = edited(|files| {
            *file_mut(files, "IHE_XDM/SUBSET01/METADATA.XML") = xml.to_vec();
        });
        let error = refused(&bytes);
        assert!(
            matches!(&error, XdmError::MetadataMalformed { fault: f, .. } if *f == fault),
            "{error:?}"
        );
        one_sentence(&error.to_string());
    }
}

#[test]
fn too_many_entries_are_refused_before_any_is_read() {
    let mut files = unpack(&written());
    for n in 0..20 {
        files.push((format!("EXTRA/{n}.TXT"), Vec::new()));
    }
    let limits = XdmLimits {
        max_entries: 10,
        ..XdmLimits::default()
    };
    let error = read_xdm(&pack(&files), &limits).unwrap_err();
    assert_eq!(error, XdmError::TooManyEntries { limit: 10 });
    assert_eq!(
        error.to_string(),
        "The XDM package holds more than 10 files, more than this system opens."
    );
    // 1001 entries against the default.
    let many: Vec<Raw> = (0..1001)
        .map(|n| Raw::stored(format!("F{n}").as_bytes(), b""))
        .collect();
    assert_eq!(
        refused(&raw_zip(&many)),
        XdmError::TooManyEntries { limit: 1000 }
    );
}

#[test]
fn paths_deeper_than_the_limit_are_refused() {
    let deep = "IHE_XDM/SUBSET01/a/b/c/d/e/f/g.txt";
    let bytes = edited(|files| files.push((deep.to_owned(), b"x".to_vec())));
    let error = refused(&bytes);
    assert_eq!(
        error,
        XdmError::TooDeep {
            name: deep.to_owned(),
            limit: 8
        }
    );
    one_sentence(&error.to_string());
    let just_deep_enough = "IHE_XDM/SUBSET01/a/b/c/d/e/g.txt";
    let bytes = edited(|files| files.push((just_deep_enough.to_owned(), b"x".to_vec())));
    assert!(read(&bytes).is_ok());
}

#[test]
fn many_false_end_records_are_refused_in_linear_time() {
    // Each false end-of-central-directory record would make a naive reader scan the file
    // again: quadratic. Two megabytes of them must be turned away at once.
    let mut bytes = b"PK\x03\x04".to_vec();
    for _ in 0..100_000 {
        bytes.extend_from_slice(b"PK\x05\x06\0\0\0\0\x01\0\x01\0\x2e\0\0\0\0\0\0\0\0\0");
    }
    let start = Instant::now();
    assert_eq!(refused(&bytes), XdmError::Damaged);
    assert!(!is_xdm(&bytes));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn every_refusal_and_problem_is_one_plain_sentence() {
    let errors = [
        XdmError::NotZip,
        XdmError::Truncated,
        XdmError::Damaged,
        XdmError::TooManyEntries { limit: 1000 },
        XdmError::TooLarge { limit: 64 << 20 },
        XdmError::CompressionRatio {
            name: "a\nb".to_owned(),
        },
        XdmError::TooDeep {
            name: "a".to_owned(),
            limit: 8,
        },
        XdmError::DuplicateName {
            name: "a".to_owned(),
        },
        XdmError::Link {
            name: "a".to_owned(),
        },
        XdmError::Encrypted,
        XdmError::UnsupportedCompression {
            name: "a".to_owned(),
        },
        XdmError::NoMetadata,
    ];
    for error in errors {
        one_sentence(&error.to_string());
    }
    assert_eq!(
        XdmError::TooLarge { limit: 64 << 20 }.to_string(),
        "The XDM package unpacks to more than 64 MiB, more than this system opens."
    );
    let problems = [
        Problem::FingerprintMismatch {
            document: "Referral note".to_owned(),
        },
        Problem::SizeMismatch {
            document: "x".to_owned(),
            recorded: 1,
            actual: 2,
        },
        Problem::MissingDocument {
            document: "x".to_owned(),
        },
        Problem::ReferenceOutsideFolder {
            document: "x".to_owned(),
            uri: "../x".to_owned(),
        },
        Problem::UnlistedFile {
            path: "x".to_owned(),
        },
        Problem::DifferentPatients,
    ];
    for problem in problems {
        one_sentence(&problem.to_string());
    }
    assert_eq!(
        Problem::FingerprintMismatch {
            document: "Referral note".to_owned()
        }
        .to_string(),
        "The document “Referral note” does not match the fingerprint its sender recorded; it \
         may have been changed."
    );
}

#[test]
fn the_default_limits_are_documented_values() {
    let limits = XdmLimits::default();
    assert_eq!(limits.max_entries, 1000);
    assert_eq!(limits.max_total_size, 64 * 1024 * 1024);
    assert_eq!(limits.max_ratio, 100);
    assert_eq!(limits.max_depth, 8);
}

// ---------------------------------------------------------------------------------
// The patient of a Direct Context block, for a package the portal writes.

#[test]
fn a_direct_context_patient_becomes_the_package_patient_and_reads_back() {
    use crate::context::{Context, ContextPatient};
    let context = Context {
        patient_id: Some("1.2.840.114350.1.13:MRN-4471".into()),
        patient: Some(ContextPatient {
            given_name: Some("Anna".into()),
            middle_name: Some("Maria".into()),
            surname: Some("Jones".into()),
            date_of_birth: Some("1961-12-31".into()),
            gender: Some("F".into()),
            postal_code: None,
        }),
        ..Context::default()
    };
    let patient = Patient::from_context(&context).expect("a patient");
    assert_eq!(
        patient.id.as_deref(),
        Some("MRN-4471^^^&1.2.840.114350.1.13&ISO")
    );
    assert_eq!(patient.name().as_deref(), Some("Anna Maria Jones"));
    assert_eq!(patient.birth_date.as_deref(), Some("19611231"));
    let package = write_xdm(&XdmInput {
        patient: Some(patient.clone()),
        ..input()
    })
    .unwrap();
    let read = read(&package).unwrap();
    let set = &read.submission_sets[0];
    assert_eq!(set.patient.as_ref(), Some(&patient));
}

#[test]
fn a_context_identifier_without_an_oid_authority_is_left_out_and_the_name_kept() {
    use crate::context::{Context, ContextPatient};
    for patient_id in ["MRN-4471", "hospital:MRN-4471", "1.2.3:MRN^4471"] {
        let context = Context {
            patient_id: Some(patient_id.into()),
            patient: Some(ContextPatient {
                surname: Some("Jones".into()),
                date_of_birth: Some("31/12/1961".into()),
                ..ContextPatient::default()
            }),
            ..Context::default()
        };
        let patient = Patient::from_context(&context).expect("a patient");
        assert_eq!(patient.id, None, "{patient_id}");
        assert_eq!(patient.family_name.as_deref(), Some("Jones"));
        assert_eq!(patient.birth_date, None, "a date that is not YYYYMMDD");
    }
    assert_eq!(Patient::from_context(&Context::default()), None);
}
