//! Attachment checks against files built here, byte by byte, and a few written by qpdf
//! (`tests/fixtures/make-fixtures.sh`).

use std::io::Write;
use std::time::{Duration, Instant};

use super::*;

const MB: usize = 1_000_000;

fn everything() -> Policy {
    Policy {
        max_total_bytes: 10 * MB,
        allowed: Kind::ALL.to_vec(),
    }
}

fn pdf_only() -> Policy {
    Policy {
        max_total_bytes: 10 * MB,
        allowed: vec![],
    }
}

fn check(name: &str, bytes: &[u8]) -> Result<Accepted, Rejection> {
    check_attachment(name, None, bytes, &everything())
}

#[track_caller]
fn refused(name: &str, bytes: &[u8], code: &str) -> String {
    match check(name, bytes) {
        Ok(accepted) => panic!("{name} was accepted as {accepted:?}"),
        Err(rejection) => {
            assert_eq!(rejection.code, code, "{rejection}");
            rejection.to_string()
        }
    }
}

/// A PDF with the given objects (numbered from 1) and a cross-reference table.
fn pdf_from_objects(objects: &[String]) -> Vec<u8> {
    let mut out = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (index, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        write!(out, "{} 0 obj\n{body}\nendobj\n", index + 1).unwrap();
    }
    let xref = out.len();
    write!(out, "xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).unwrap();
    for offset in offsets {
        writeln!(out, "{offset:010} 00000 n ").unwrap();
    }
    write!(
        out,
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objects.len() + 1
    )
    .unwrap();
    out
}

fn stream(dict: &str, data: &str) -> String {
    format!(
        "<< {dict} /Length {} >>\nstream\n{data}\nendstream",
        data.len()
    )
}

/// A one-page PDF: `catalog` and `page` add entries to those dictionaries, and `extra`
/// objects are numbered from 5.
fn pdf(catalog: &str, page: &str, extra: &[&str]) -> Vec<u8> {
    let mut objects = vec![
        format!("<< /Type /Catalog /Pages 2 0 R {catalog} >>"),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R {page} >>"),
        stream(
            "",
            "BT /F1 12 Tf 72 700 Td (Lab results: see /JS initials) Tj ET",
        ),
    ];
    objects.extend(extra.iter().map(|object| (*object).to_owned()));
    pdf_from_objects(&objects)
}

fn good_pdf() -> Vec<u8> {
    pdf("", "", &[])
}

fn windows_program() -> Vec<u8> {
    let mut exe = vec![0_u8; 0x100];
    exe[..2].copy_from_slice(b"MZ");
    exe[0x3c..0x40].copy_from_slice(&0x80_u32.to_le_bytes());
    exe[0x80..0x84].copy_from_slice(b"PE\0\0");
    exe
}

fn zip_of(names: &[&str]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for name in names {
        writer.start_file(*name, options).unwrap();
        writer.write_all(b"<x/>").unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn docx() -> Vec<u8> {
    zip_of(&["[Content_Types].xml", "_rels/.rels", "word/document.xml"])
}

/// An OLE2 compound file whose one directory sector names `names` (after the root).
fn ole2(names: &[&str]) -> Vec<u8> {
    let mut file = vec![0_u8; 1024];
    file[..8].copy_from_slice(office::OLE2_MAGIC);
    let entries = std::iter::once(("Root Entry", 5_u8)).chain(names.iter().map(|name| (*name, 2)));
    for (index, (name, object_type)) in entries.enumerate() {
        let entry = &mut file[512 + index * 128..][..128];
        let units: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        entry[..units.len()].copy_from_slice(&units);
        let name_len = u16::try_from(units.len() + 2).unwrap();
        entry[64..66].copy_from_slice(&name_len.to_le_bytes());
        entry[66] = object_type;
        entry[67] = 1;
    }
    file
}

const CCDA: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
    <ClinicalDocument xmlns=\"urn:hl7-org:v3\"><title>Summary of care</title></ClinicalDocument>\n";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
const JPEG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0";
const GIF: &[u8] = b"GIF89a\x01\0\x01\0";

// --- PDF ---

#[test]
fn a_plain_pdf_is_accepted_whatever_its_name_or_declared_type() {
    let accepted = check_attachment(
        "scan",
        Some("application/octet-stream"),
        &good_pdf(),
        &pdf_only(),
    )
    .unwrap();
    assert_eq!(
        accepted,
        Accepted {
            kind: Kind::Pdf,
            content_type: "application/pdf"
        }
    );
}

#[test]
fn a_pdf_written_by_qpdf_with_compressed_object_streams_is_accepted() {
    let bytes = include_bytes!("../../tests/fixtures/clean-object-streams.pdf");
    assert_eq!(check("summary.pdf", bytes).unwrap().kind, Kind::Pdf);
}

#[test]
fn a_windows_program_named_pdf_is_refused_as_what_it_is() {
    let message = refused("scan.pdf", &windows_program(), Rejection::NOT_A_PDF);
    assert_eq!(
        message,
        "“scan.pdf” is not a PDF: its content is a Windows program."
    );
}

#[test]
fn a_file_declared_as_pdf_by_the_browser_must_be_one() {
    let rejection = check_attachment(
        "scan",
        Some("application/pdf; name=scan"),
        PNG,
        &everything(),
    )
    .unwrap_err();
    assert_eq!(rejection.code, Rejection::NOT_A_PDF);
    assert_eq!(
        rejection.to_string(),
        "“scan” is not a PDF: its content is a PNG image."
    );
}

#[test]
fn a_windows_program_is_never_allowed_and_the_message_lists_what_is() {
    let rejection = check_attachment("z.exe", None, &windows_program(), &pdf_only()).unwrap_err();
    assert_eq!(rejection.code, Rejection::TYPE_NOT_ALLOWED);
    assert_eq!(
        rejection.to_string(),
        "“z.exe”: this type of file (a Windows program) is not allowed; allowed types are PDF."
    );
    let message = refused("z.exe", &windows_program(), Rejection::TYPE_NOT_ALLOWED);
    assert!(
        message.ends_with(
            "allowed types are PDF, XML (such as C-CDA), images (PNG, JPEG or GIF), plain text and Word documents."
        ),
        "{message}"
    );
}

#[test]
fn other_programs_and_archives_are_named() {
    let cases: [(&[u8], &str); 3] = [
        (b"\x7fELF\x02\x01\x01\0", "a Linux program"),
        (b"Rar!\x1a\x07\x01\0", "a RAR archive"),
        (b"\x1f\x8b\x08\0\0\0", "a gzip archive"),
    ];
    for (bytes, description) in cases {
        let message = refused("f.bin", bytes, Rejection::TYPE_NOT_ALLOWED);
        assert!(message.contains(&format!("({description})")), "{message}");
    }
}

#[test]
fn an_encrypted_pdf_is_refused() {
    let encrypt = "<< /Filter /Standard /V 1 /R 2 /O <00> /U <00> /P -4 >>";
    let mut bytes = pdf("", "", &[encrypt]);
    let trailer = bytes.windows(8).rposition(|w| w == b"/Root 1 ").unwrap();
    bytes.splice(trailer..trailer, b"/Encrypt 5 0 R ".iter().copied());
    let message = refused("x.pdf", &bytes, Rejection::ENCRYPTED);
    assert_eq!(
        message,
        "“x.pdf” is encrypted (password-protected); remove the password and attach it again."
    );
}

#[test]
fn pdfs_encrypted_by_qpdf_are_refused_with_or_without_a_password_to_open_them() {
    let with_password = include_bytes!("../../tests/fixtures/encrypted-user-password.pdf");
    refused("a.pdf", with_password, Rejection::ENCRYPTED);
    // Only an owner password (restrictions on printing and the like): it opens without
    // a password, and lopdf decrypts it as it loads.
    let owner_only = include_bytes!("../../tests/fixtures/encrypted-owner-only.pdf");
    refused("b.pdf", owner_only, Rejection::ENCRYPTED);
    assert!(
        lopdf::Document::load_mem(owner_only)
            .unwrap()
            .was_encrypted()
    );
}

#[test]
fn a_pdf_encrypted_by_lopdf_is_refused() {
    let mut document = lopdf::Document::load_mem(&good_pdf()).unwrap();
    // Encryption keys derive from the file identifier (ISO 32000-1 §7.6.3.3).
    let id = lopdf::Object::string_literal(b"0123456789abcdef".to_vec());
    document.trailer.set("ID", vec![id.clone(), id]);
    let state = lopdf::EncryptionState::try_from(lopdf::EncryptionVersion::V2 {
        document: &document,
        owner_password: "owner",
        user_password: "",
        key_length: 128,
        permissions: lopdf::Permissions::all(),
    })
    .unwrap();
    document.encrypt(&state).unwrap();
    let mut bytes = Vec::new();
    document.save_to(&mut bytes).unwrap();
    refused("c.pdf", &bytes, Rejection::ENCRYPTED);
}

#[test]
fn javascript_run_when_the_pdf_opens_is_refused() {
    let bytes = pdf(
        "/OpenAction 5 0 R",
        "",
        &["<< /Type /Action /S /JavaScript /JS (app.alert\\(1\\)) >>"],
    );
    let message = refused("y.pdf", &bytes, Rejection::PDF_JAVASCRIPT);
    assert_eq!(
        message,
        "“y.pdf” contains JavaScript, which is not allowed in Direct attachments."
    );
}

#[test]
fn javascript_in_an_annotation_action_is_refused() {
    let annotation =
        "<< /Type /Annot /Subtype /Link /Rect [0 0 10 10] /A << /S /JavaScript /JS 6 0 R >> >>";
    let script = stream("", "app.launchURL('https://evil.example/')");
    let bytes = pdf("", "/Annots [5 0 R]", &[annotation, &script]);
    refused("y.pdf", &bytes, Rejection::PDF_JAVASCRIPT);
}

#[test]
fn javascript_in_the_names_tree_is_refused() {
    let bytes = pdf(
        "/Names << /JavaScript 5 0 R >>",
        "",
        &["<< /Names [(init) << /S /JavaScript /JS (this.print\\(\\)) >>] >>"],
    );
    refused("y.pdf", &bytes, Rejection::PDF_JAVASCRIPT);
}

#[test]
fn javascript_with_hex_escaped_names_is_refused() {
    let bytes = pdf(
        "/OpenAction << /S /J#61vaScr#69pt /J#53 (app.alert\\(1\\)) >>",
        "",
        &[],
    );
    refused("y.pdf", &bytes, Rejection::PDF_JAVASCRIPT);
}

#[test]
fn javascript_inside_a_compressed_object_stream_is_refused() {
    let bytes = include_bytes!("../../tests/fixtures/javascript-in-object-stream.pdf");
    assert!(
        bytes.windows(10).all(|w| w != b"JavaScript"),
        "the fixture should hide the name"
    );
    refused("y.pdf", bytes, Rejection::PDF_JAVASCRIPT);
}

/// A PDF whose open action, object 6, is packed in object stream 5 (with `filter` and
/// holding `data` after its header), found through a cross-reference stream.
fn pdf_with_packed_action(filter: &str, action: &[u8]) -> Vec<u8> {
    let mut out = b"%PDF-1.7\n".to_vec();
    let mut offsets = Vec::new();
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R /OpenAction 6 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        "<< /Producer (test) >>",
    ];
    for (index, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        write!(out, "{} 0 obj\n{body}\nendobj\n", index + 1).unwrap();
    }
    offsets.push(out.len());
    let mut packed = b"6 0 ".to_vec();
    packed.extend_from_slice(action);
    write!(
        out,
        "5 0 obj\n<< /Type /ObjStm /N 1 /First 4 {filter} /Length {} >>\nstream\n",
        packed.len()
    )
    .unwrap();
    out.extend_from_slice(&packed);
    out.extend_from_slice(b"\nendstream\nendobj\n");
    let xref = out.len();
    // ISO 32000-1 §7.5.8: type 1 (offset) and type 2 (object stream, index) entries.
    let mut entries = vec![0_u8, 0, 0, 0, 0, 0xff, 0xff];
    for offset in offsets.iter().chain([&xref]) {
        entries.push(1);
        entries.extend_from_slice(&u32::try_from(*offset).unwrap().to_be_bytes());
        entries.extend_from_slice(&[0, 0]);
    }
    entries.splice(6 * 7..6 * 7, [2, 0, 0, 0, 5, 0, 0]);
    write!(
        out,
        "7 0 obj\n<< /Type /XRef /Size 8 /W [1 4 2] /Root 1 0 R /Length {} >>\nstream\n",
        entries.len()
    )
    .unwrap();
    out.extend_from_slice(&entries);
    write!(out, "\nendstream\nendobj\nstartxref\n{xref}\n%%EOF\n").unwrap();
    out
}

#[test]
fn an_object_packed_in_an_object_stream_is_checked() {
    let benign = pdf_with_packed_action("", b"<< /S /URI /URI (https://example.org/) >>");
    assert!(check("a.pdf", &benign).is_ok());
    // Out of reach of the scan of raw bytes, which skips stream data.
    let script = pdf_with_packed_action("", b"<< /S /JavaScript /JS (app.alert\\(1\\)) >>");
    refused("y.pdf", &script, Rejection::PDF_JAVASCRIPT);
}

#[test]
fn a_pdf_whose_object_stream_cannot_be_unpacked_is_refused() {
    // The packed action cannot be read, so it cannot be checked; a more forgiving reader
    // might still make something of it.
    let bytes = pdf_with_packed_action("/Filter /FlateDecode", b"\x78\x9c not deflate data");
    refused("y.pdf", &bytes, Rejection::PDF_DAMAGED);
}

#[test]
fn javascript_in_an_object_the_cross_reference_table_leaves_out_is_refused() {
    let mut bytes = good_pdf();
    // Appended after %%EOF without a new cross-reference section: lopdf does not load
    // it, but a reader that repairs the file may.
    bytes.extend_from_slice(b"9 0 obj\n<< /S /JavaScript /JS (x) >>\nendobj\n");
    refused("y.pdf", &bytes, Rejection::PDF_JAVASCRIPT);
}

#[test]
fn a_launch_action_is_refused() {
    let bytes = pdf(
        "/OpenAction << /S /Launch /F (C:\\\\Windows\\\\System32\\\\cmd.exe) >>",
        "",
        &[],
    );
    let message = refused("y.pdf", &bytes, Rejection::PDF_LAUNCH);
    assert_eq!(
        message,
        "“y.pdf” contains launch actions (commands that start other programs), which are not allowed in Direct attachments."
    );
}

#[test]
fn embedded_files_are_refused() {
    let file_spec = "<< /Type /Filespec /F (payload.exe) /EF << /F 6 0 R >> >>";
    let embedded = stream("/Type /EmbeddedFile", "MZ");
    let bytes = pdf(
        "/Names << /EmbeddedFiles << /Names [(payload.exe) 5 0 R] >> >>",
        "",
        &[file_spec, &embedded],
    );
    let message = refused("y.pdf", &bytes, Rejection::PDF_EMBEDDED_FILES);
    assert_eq!(
        message,
        "“y.pdf” contains embedded files, which are not allowed in Direct attachments; attach those files separately."
    );
}

#[test]
fn a_file_attachment_annotation_is_refused() {
    let annotation = "<< /Type /Annot /Subtype /FileAttachment /Rect [0 0 10 10] /FS 6 0 R >>";
    let bytes = pdf(
        "",
        "/Annots [5 0 R]",
        &[annotation, "<< /Type /Filespec /F (a.txt) >>"],
    );
    refused("y.pdf", &bytes, Rejection::PDF_EMBEDDED_FILES);
}

#[test]
fn text_about_javascript_inside_strings_and_page_content_is_not_refused() {
    let bytes = pdf(
        "/Lang (en-US) /PageLabels << /Nums [0 << /P (/JavaScript notes) >>] >>",
        "",
        &[],
    );
    assert!(check("notes.pdf", &bytes).is_ok());
}

#[test]
fn a_damaged_or_truncated_pdf_is_refused() {
    let message = refused(
        "d.pdf",
        b"%PDF-1.7\nthis is not really a PDF at all\n",
        Rejection::PDF_DAMAGED,
    );
    assert_eq!(
        message,
        "“d.pdf” does not parse as a PDF (it may be damaged); save or print it to PDF again and attach the new file."
    );
    let bytes = good_pdf();
    refused("t.pdf", &bytes[..40], Rejection::PDF_DAMAGED);
}

#[test]
fn a_pdf_with_a_huge_number_of_objects_is_checked_quickly() {
    let started = Instant::now();
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [] /Count 0 >>".to_owned(),
    ];
    objects.extend((0..150_000).map(|n| format!("<< /N {n} /A [1 2 3] >>")));
    let bytes = pdf_from_objects(&objects);
    assert!(bytes.len() < 10 * MB, "{}", bytes.len());
    assert!(check("big.pdf", &bytes).is_ok());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_deeply_nested_pdf_is_checked_without_exhausting_the_stack() {
    let started = Instant::now();
    let depth = 1_000_000;
    let deep = |inner: &str| {
        vec![
            "<< /Type /Catalog /Pages 2 0 R /Deep 3 0 R >>".to_owned(),
            "<< /Type /Pages /Kids [] /Count 0 >>".to_owned(),
            format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth)),
            format!(
                "<< {}>>",
                "/A << ".repeat(depth / 10) + &">> ".repeat(depth / 10)
            ),
        ]
    };
    // lopdf gives up on objects nested this deeply (and loads the rest); the scan of the
    // raw bytes still sees what they hold.
    assert!(check("deep.pdf", &pdf_from_objects(&deep("0"))).is_ok());
    let hidden = pdf_from_objects(&deep("<< /S /JavaScript /JS (app.alert\\(1\\)) >>"));
    refused("deep.pdf", &hidden, Rejection::PDF_JAVASCRIPT);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_pdf_with_a_few_object_streams_more_than_the_budget_is_refused() {
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [] /Count 0 >>".to_owned(),
    ];
    // 25 object streams of up to 4 MiB each could inflate to 100 MiB: more than a
    // 30 MB message needs
    objects.extend((0..25).map(|_| stream("/Type /ObjStm /N 1 /First 4", "9 0 null")));
    refused(
        "many.pdf",
        &pdf_from_objects(&objects),
        Rejection::PDF_TOO_COMPLEX,
    );
}

#[test]
fn a_pdf_with_too_many_object_streams_is_refused_before_it_is_inflated() {
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [] /Count 0 >>".to_owned(),
    ];
    objects.extend((0..300).map(|_| stream("/Type /ObjStm /N 1 /First 4", "9 0 null")));
    let message = refused(
        "many.pdf",
        &pdf_from_objects(&objects),
        Rejection::PDF_TOO_COMPLEX,
    );
    assert_eq!(
        message,
        "“many.pdf” is too complex to check safely; print it to a new PDF and attach that."
    );
}

// --- size, emptiness, names ---

#[test]
fn an_empty_file_is_refused() {
    let message = refused("blank.pdf", b"", Rejection::EMPTY);
    assert_eq!(
        message,
        "“blank.pdf” is empty (0 bytes); check that you chose the right file."
    );
}

#[test]
fn a_file_larger_than_the_policy_allows_is_refused() {
    let policy = Policy {
        max_total_bytes: 1_000,
        allowed: vec![],
    };
    let mut bytes = good_pdf();
    bytes.resize(2_500_000, b' ');
    let rejection = check_attachment("big.pdf", None, &bytes, &policy).unwrap_err();
    assert_eq!(rejection.code, Rejection::TOO_LARGE);
    assert_eq!(
        rejection.to_string(),
        "“big.pdf” is too large (2.5 MB); attachments may be at most 1 kB in total."
    );
}

#[test]
fn file_names_in_messages_lose_control_characters_and_are_shortened() {
    let long = format!("{}.pdf", "a\u{7}".repeat(200));
    let message = refused(&long, b"", Rejection::EMPTY);
    assert!(
        message.starts_with(&format!("“{}…” is empty", "a".repeat(79))),
        "{message}"
    );
    assert_eq!(
        refused("  ", b"", Rejection::EMPTY),
        "The attachment is empty (0 bytes); check that you chose the right file."
    );
}

// --- the allow-list ---

#[test]
fn each_kind_is_accepted_when_allowed_and_refused_when_not() {
    let docx = docx();
    let doc = ole2(&["WordDocument", "1Table"]);
    let cases: [(&str, &[u8], Kind, &str); 8] = [
        ("ccda.xml", CCDA.as_bytes(), Kind::Xml, "application/xml"),
        ("x.png", PNG, Kind::Image, "image/png"),
        ("x.jpg", JPEG, Kind::Image, "image/jpeg"),
        ("x.gif", GIF, Kind::Image, "image/gif"),
        (
            "notes.txt",
            "Née à Québec.\r\nPlan: follow up.\n".as_bytes(),
            Kind::Text,
            "text/plain; charset=utf-8",
        ),
        (
            "letter.docx",
            &docx,
            Kind::Word,
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        ("letter.doc", &doc, Kind::Word, "application/msword"),
        ("r.pdf", &good_pdf(), Kind::Pdf, "application/pdf"),
    ];
    for (name, bytes, kind, content_type) in cases {
        let only_this = Policy {
            max_total_bytes: MB,
            allowed: vec![kind],
        };
        assert_eq!(
            check_attachment(name, None, bytes, &only_this),
            Ok(Accepted { kind, content_type }),
            "{name}"
        );
        let others = Policy {
            max_total_bytes: MB,
            allowed: Kind::ALL
                .into_iter()
                .filter(|other| *other != kind)
                .collect(),
        };
        let outcome = check_attachment(name, None, bytes, &others);
        if kind == Kind::Pdf {
            assert!(outcome.is_ok(), "PDF is always allowed");
        } else {
            assert_eq!(
                outcome.unwrap_err().code,
                Rejection::TYPE_NOT_ALLOWED,
                "{name}"
            );
        }
    }
}

#[test]
fn a_docx_is_a_word_document_but_another_zip_is_not() {
    assert_eq!(check("a.docx", &docx()).unwrap().kind, Kind::Word);
    let message = refused(
        "a.docx",
        &zip_of(&["notes.txt", "word.exe"]),
        Rejection::TYPE_NOT_ALLOWED,
    );
    assert!(message.contains("(a ZIP archive)"), "{message}");
    let spreadsheet = zip_of(&["[Content_Types].xml", "xl/workbook.xml"]);
    let message = refused("a.xlsx", &spreadsheet, Rejection::TYPE_NOT_ALLOWED);
    assert!(message.contains("(an Excel spreadsheet)"), "{message}");
}

#[test]
fn word_documents_with_macros_are_refused() {
    let docm = zip_of(&[
        "[Content_Types].xml",
        "word/document.xml",
        "word/vbaProject.bin",
    ]);
    let message = refused("a.docm", &docm, Rejection::MACROS);
    assert_eq!(
        message,
        "“a.docm” contains macros, which are not allowed in Direct attachments; save it as a Word document without macros (.docx) and attach it again."
    );
    refused(
        "a.doc",
        &ole2(&["WordDocument", "Macros", "VBA"]),
        Rejection::MACROS,
    );
}

#[test]
fn a_password_protected_office_document_is_refused_as_encrypted() {
    refused(
        "a.docx",
        &ole2(&["EncryptionInfo", "EncryptedPackage"]),
        Rejection::ENCRYPTED,
    );
    let message =
        check_attachment("a.docx", None, &ole2(&["EncryptedPackage"]), &pdf_only()).unwrap_err();
    assert!(
        message
            .to_string()
            .contains("(a password-protected Office document)"),
        "{message}"
    );
}

#[test]
fn other_ole2_files_are_not_word_documents() {
    let message = refused("a.xls", &ole2(&["Workbook"]), Rejection::TYPE_NOT_ALLOWED);
    assert!(message.contains("(an Excel spreadsheet)"), "{message}");
}

// --- XML and text ---

#[test]
fn malformed_xml_is_refused_with_the_line_of_the_first_error() {
    let bytes =
        b"\n<?xml version=\"1.0\"?>\n<ClinicalDocument>\n<title>x</titel>\n</ClinicalDocument>";
    let message = refused("ccda.xml", bytes, Rejection::XML_MALFORMED);
    assert_eq!(
        message,
        "“ccda.xml” does not parse as XML (it may be damaged; the first error is on line 4)."
    );
}

#[test]
fn xml_with_a_dtd_is_refused() {
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><a>&lol2;</a>";
    refused("a.xml", bomb.as_bytes(), Rejection::XML_DTD);
}

#[test]
fn html_svg_and_xhtml_are_not_accepted_as_xml() {
    for (bytes, description) in [
        ("<!DOCTYPE html><p>hi", "a web page (HTML)"),
        ("  <HTML><body>", "a web page (HTML)"),
        (
            "<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
            "an SVG drawing",
        ),
        (
            "<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"/>",
            "an SVG drawing",
        ),
        (
            "<?xml version=\"1.0\"?><html xmlns=\"http://www.w3.org/1999/xhtml\"/>",
            "a web page (XHTML)",
        ),
    ] {
        let message = refused("a.xml", bytes.as_bytes(), Rejection::TYPE_NOT_ALLOWED);
        assert!(message.contains(&format!("({description})")), "{message}");
    }
}

#[test]
fn deeply_nested_xml_is_handled() {
    let depth = 100_000;
    let xml = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    assert!(check("deep.xml", xml.as_bytes()).is_ok());
}

#[test]
fn text_in_a_legacy_encoding_is_refused_with_advice() {
    let message = refused("notes.txt", b"Caf\xe9 au lait\r\n", Rejection::NOT_UTF8);
    assert_eq!(
        message,
        "“notes.txt” is text in an encoding other than UTF-8, which is not supported; save it as UTF-8 and attach it again."
    );
    refused(
        "c.xml",
        b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>\xe9</a>",
        Rejection::NOT_UTF8,
    );
}

#[test]
fn binary_data_is_not_text() {
    let message = refused("x.txt", b"abc\0def", Rejection::TYPE_NOT_ALLOWED);
    assert!(
        message.contains("(a file of a type that was not recognised)"),
        "{message}"
    );
}

// --- the allow-list's names ---

#[test]
fn allow_lists_parse_from_names() {
    assert_eq!(
        parse_kinds(" PDF, xml,image,,text , word,xml"),
        Ok(vec![
            Kind::Pdf,
            Kind::Xml,
            Kind::Image,
            Kind::Text,
            Kind::Word
        ])
    );
    assert_eq!(parse_kinds(""), Ok(vec![]));
    assert_eq!("Image".parse::<Kind>(), Ok(Kind::Image));
    for kind in Kind::ALL {
        assert_eq!(kind_from_str(kind.label()), Ok(kind));
    }
}

#[test]
fn an_unknown_name_in_an_allow_list_says_which_names_are_known() {
    let error = parse_kinds("pdf,images").unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown attachment type \"images\"; the known types are pdf, xml, image, text, word"
    );
}

#[test]
fn what_a_browser_may_show_comes_from_the_bytes_whatever_the_file_claims() {
    assert_eq!(inline_type(b"%PDF-1.7\n"), Some("application/pdf"));
    assert_eq!(inline_type(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
    assert_eq!(inline_type(b"\xff\xd8\xff\xe0"), Some("image/jpeg"));
    assert_eq!(inline_type(b"GIF89a"), Some("image/gif"));
    assert_eq!(
        inline_type(b"MZ\x90\x00\x03\x00\x00\x00"),
        None,
        "a program"
    );
    assert_eq!(
        inline_type(b"<svg onload=alert(1)>"),
        None,
        "SVG is never inline"
    );
    assert_eq!(inline_type(b"II*\x00"), None, "TIFF");
    assert_eq!(inline_type(b""), None);
}
