//! Sending a message's documents as one XDM package (issue #12): the compose page's
//! box, recipients whose directory entry asks for packages, and the API's `xdm` field.
//! Each package is read back by our own reader, unpacked by the real `unzip`, its
//! METADATA.XML checked against the ebRS 3.0 structure, and received through the
//! real S/MIME path, where the recipient's page shows its card.

use directmail::store::inbound;
use directmail_content::xdm::{self, Package, XdmLimits};
use mail_parser::{MessageParser, MimeHeaders as _};
use regex::Regex;
use reqwest::StatusCode;

use crate::clinical::{cda_fixture, text};
use crate::helpers::{Browser, TestApp, pdf, run};
use crate::webmail::{compose, deadline, message_id_of, pause};

const ANA: &str = "ana@direct.lakeside.test";
const FRONT: &str = "front@direct.hillside.test";

/// The attachments of a stored message, as (file name, media type, bytes).
async fn attachments_of(app: &TestApp, message_id: i64) -> Vec<(String, String, Vec<u8>)> {
    let raw: Vec<u8> = sqlx::query_scalar("select raw from message_raw where message_id = $1")
        .bind(message_id)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    let parsed = MessageParser::default().parse(&raw).unwrap();
    parsed
        .attachments()
        .map(|a| {
            (
                a.attachment_name().unwrap_or_default().to_owned(),
                a.content_type()
                    .map(|t| format!("{}/{}", t.ctype(), t.subtype().unwrap_or_default()))
                    .unwrap_or_default(),
                a.contents().to_vec(),
            )
        })
        .collect()
}

/// Waits until a message with this subject is in the mailbox's Inbox.
async fn received(app: &TestApp, mailbox_id: i64, subject: &str) -> i64 {
    app.state.wake_sender.notify_one();
    let end = deadline();
    loop {
        let list = inbound::messages_in(&app.state.db, mailbox_id, "inbox", 50)
            .await
            .unwrap();
        if let Some(m) = list.iter().find(|m| m.subject == subject) {
            return m.id;
        }
        assert!(std::time::Instant::now() < end, "{subject:?} not delivered");
        pause().await;
    }
}

/// Uploads files to a draft as the page's script does.
async fn attach(b: &mut Browser, draft: i64, files: &[(&str, &str, &[u8])]) {
    let up = b
        .upload(&format!("/mail/drafts/{draft}/attachments"), files, true)
        .await;
    assert_eq!(up.status, StatusCode::OK, "{}", up.body);
}

/// The package a stored message carries: its only attachment besides the Direct
/// Context part, read by our own reader.
async fn package_of(app: &TestApp, message_id: i64) -> (Vec<u8>, Package) {
    let files: Vec<_> = attachments_of(app, message_id)
        .await
        .into_iter()
        .filter(|(name, ..)| name != "metadata.txt")
        .collect();
    assert_eq!(files.len(), 1, "one package: {:?}", names(&files));
    let (name, content_type, zip) = files.into_iter().next().unwrap();
    assert_eq!(
        (name.as_str(), content_type.as_str()),
        ("documents-xdm.zip", "application/zip")
    );
    assert!(xdm::is_xdm(&zip));
    let package = xdm::read_xdm(&zip, &XdmLimits::default()).expect("our reader reads it");
    (zip, package)
}

fn names(files: &[(String, String, Vec<u8>)]) -> Vec<&str> {
    files.iter().map(|(n, ..)| n.as_str()).collect()
}

/// The ebRS 3.0 shape of a SubmitObjectsRequest as XDM uses it (ebRS 3.0 lcm and rim
/// schemas; ITI TF-3 §4.2.3): the elements, their namespaces, where each may appear and
/// the attributes the schema requires; plus the references between objects resolving.
fn check_ebrs(xml: &str) {
    const LCM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0";
    const RIM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0";
    let doc = roxmltree::Document::parse(xml).expect("well-formed METADATA.XML");
    let root = doc.root_element();
    assert_eq!(
        (root.tag_name().namespace(), root.tag_name().name()),
        (Some(LCM), "SubmitObjectsRequest")
    );
    let lists: Vec<_> = root.children().filter(|n| n.is_element()).collect();
    assert_eq!(lists.len(), 1, "one RegistryObjectList");
    let list = lists[0];
    assert_eq!(
        (list.tag_name().namespace(), list.tag_name().name()),
        (Some(RIM), "RegistryObjectList")
    );
    let mut ids = std::collections::HashSet::new();
    for node in doc.descendants().filter(|n| n.is_element()) {
        let name = node.tag_name().name();
        if node != root {
            assert_eq!(node.tag_name().namespace(), Some(RIM), "{name} in rim");
        }
        let required: &[&str] = match name {
            "ExtrinsicObject" => &["id", "mimeType", "objectType"],
            "RegistryPackage" => &["id"],
            "Association" => &["id", "associationType", "sourceObject", "targetObject"],
            // a scheme's value (classificationScheme) or a node (classificationNode)
            "Classification" => &["id", "classifiedObject"],
            "ExternalIdentifier" => &["id", "identificationScheme", "registryObject", "value"],
            "Slot" => &["name"],
            "LocalizedString" => &["value"],
            "SubmitObjectsRequest"
            | "RegistryObjectList"
            | "ValueList"
            | "Value"
            | "Name"
            | "Description"
            | "VersionInfo" => &[],
            other => panic!("{other} is not an element of the ebRS schema here"),
        };
        for attribute in required {
            assert!(
                node.attribute(*attribute).is_some(),
                "{name} without its required {attribute}"
            );
        }
        if name == "Classification" {
            assert!(
                node.attribute("classificationScheme").is_some()
                    != node.attribute("classificationNode").is_some(),
                "a Classification has a scheme or a node"
            );
        }
        if let Some(id) = node.attribute("id") {
            assert!(ids.insert(id.to_owned()), "id {id} twice");
        }
        // where each may stand
        let parent = node.parent_element().map(|p| p.tag_name().name());
        let allowed: &[&str] = match name {
            "ExtrinsicObject" | "RegistryPackage" | "Association" => &["RegistryObjectList"],
            "Classification" => &["RegistryObjectList", "ExtrinsicObject", "RegistryPackage"],
            "ExternalIdentifier" => &["ExtrinsicObject", "RegistryPackage"],
            "Slot" => &[
                "ExtrinsicObject",
                "RegistryPackage",
                "Association",
                "Classification",
            ],
            "ValueList" => &["Slot"],
            "Value" => &["ValueList"],
            "Name" | "Description" => &[
                "ExtrinsicObject",
                "RegistryPackage",
                "Classification",
                "ExternalIdentifier",
            ],
            "LocalizedString" => &["Name", "Description"],
            _ => &[],
        };
        if !allowed.is_empty() {
            assert!(
                parent.is_some_and(|p| allowed.contains(&p)),
                "{name} inside {parent:?}"
            );
        }
    }
    // every reference names an object of the request (or a scheme's UUID)
    for node in doc
        .descendants()
        .filter(|n| n.has_tag_name((RIM, "Association")))
    {
        for end in ["sourceObject", "targetObject"] {
            let target = node.attribute(end).unwrap();
            assert!(ids.contains(target), "{end} {target} is not in the request");
        }
    }
    for node in doc
        .descendants()
        .filter(|n| n.has_tag_name((RIM, "Classification")))
    {
        let classified = node.attribute("classifiedObject").unwrap();
        assert!(ids.contains(classified), "classifiedObject {classified}");
    }
}

/// The entries of a ZIP as the real `unzip` lists them, after `unzip -t` tested it.
async fn unzip_listing(zip: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("package.zip");
    std::fs::write(&path, zip).unwrap();
    let mut test = std::process::Command::new("unzip");
    test.arg("-tq").arg(&path);
    let tested = run(test).await;
    assert!(
        tested.status.success(),
        "unzip -t: {}{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );
    let mut list = std::process::Command::new("unzip");
    list.arg("-Z1").arg(&path);
    let listed = run(list).await;
    assert!(listed.status.success());
    String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// METADATA.XML of a package, as the real `unzip` extracts it.
async fn unzip_metadata(zip: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("package.zip");
    std::fs::write(&path, zip).unwrap();
    let mut extract = std::process::Command::new("unzip");
    extract
        .arg("-p")
        .arg(&path)
        .arg("IHE_XDM/SUBSET01/METADATA.XML");
    let out = run(extract).await;
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn ticked_documents_go_out_as_one_xdm_package_with_patient_author_and_fingerprints() {
    let app = TestApp::spawn().await;
    let (ana_box, kim_box) = app.lakeside_and_hillside().await;
    let mut ana = app.signed_in(ANA).await;
    let draft = compose(&mut ana, ana_box.id).await;
    let page = ana.get(&format!("/mail/drafts/{draft}")).await;
    assert!(
        page.body.contains("Send the attachments as an XDM package"),
        "the box is on the page"
    );
    let referral = cda_fixture("referral-note.xml");
    let letter = pdf("Referral letter for John Hawthorne");
    let note = "Echo booked for Tuesday.\n".as_bytes();
    attach(
        &mut ana,
        draft,
        &[
            ("referral.xml", "text/xml", &referral),
            ("letter.pdf", "application/pdf", &letter),
            ("note.txt", "text/plain", note),
        ],
    )
    .await;
    let sent = ana
        .post(
            &format!("/mail/drafts/{draft}/send"),
            &[
                ("to", FRONT),
                ("cc", ""),
                ("subject", "Referral with package"),
                ("body", "The documents are in the package."),
                ("patient_given", "John"),
                ("patient_family", "Hawthorne"),
                ("patient_birth_date", "1961-12-31"),
                ("patient_sex", "M"),
                ("patient_id", "2.16.840.1.113883.19.999999:HX-4471"),
                ("patient_purpose", "treatment"),
                ("xdm_box", "1"),
                ("as_xdm", "yes"),
            ],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let sent_id = message_id_of(&sent.location());

    // the Sent copy carries one package, and the Direct Context beside it
    let (zip, package) = package_of(&app, sent_id).await;
    assert!(package.problems.is_empty(), "{:?}", package.problems);
    let set = &package.submission_sets[0];
    let patient = set.patient.as_ref().expect("the patient in the metadata");
    assert_eq!(
        patient.id.as_deref(),
        Some("HX-4471^^^&2.16.840.1.113883.19.999999&ISO")
    );
    assert_eq!(patient.name().as_deref(), Some("John Hawthorne"));
    assert_eq!(patient.birth_date.as_deref(), Some("19611231"));
    assert_eq!(patient.sex.as_deref(), Some("M"));
    let author = &set.authors[0];
    assert_eq!(
        author.address.as_deref(),
        Some("dr.ana@direct.lakeside.test")
    );
    assert_eq!(author.institution.as_deref(), Some("Lakeside Clinic"));
    assert!(
        set.intended_recipients
            .iter()
            .any(|r| r.address.as_deref() == Some(FRONT)),
        "{:?}",
        set.intended_recipients
    );
    let documents: Vec<_> = package.documents().collect();
    assert_eq!(documents.len(), 3);
    // the clinical document is described by its own header
    assert_eq!(
        documents[0].title.as_deref(),
        Some("Referral to Cardiology")
    );
    assert_eq!(
        documents[0].type_code.as_ref().map(|c| c.code.as_str()),
        Some("57133-1")
    );
    assert_eq!(documents[0].mime_type.as_deref(), Some("text/xml"));
    assert_eq!(documents[0].bytes, referral);
    assert_eq!(documents[1].title.as_deref(), Some("letter.pdf"));
    assert_eq!(documents[1].bytes, letter);
    // a text file's charset parameter has no place in the metadata
    assert_eq!(documents[2].mime_type.as_deref(), Some("text/plain"));
    for d in &documents {
        assert_eq!(d.size, Some(d.bytes.len() as u64));
        assert!(d.hash.as_ref().is_some_and(|h| h.len() == 40));
    }

    // the real unzip agrees, and the metadata has the ebRS structure
    let listing = unzip_listing(&zip).await;
    for entry in [
        "README.TXT",
        "INDEX.HTM",
        "IHE_XDM/SUBSET01/METADATA.XML",
        "IHE_XDM/SUBSET01/DOC0001.XML",
        "IHE_XDM/SUBSET01/DOC0002.PDF",
        "IHE_XDM/SUBSET01/DOC0003.TXT",
    ] {
        assert!(listing.iter().any(|e| e == entry), "{entry} in {listing:?}");
    }
    check_ebrs(&unzip_metadata(&zip).await);

    // the audit says how it went, without the patient
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 100)
        .await
        .unwrap();
    let send = entries
        .iter()
        .find(|e| e.action == "message.send")
        .expect("the send audited");
    assert!(send.detail.contains("in an XDM package"), "{}", send.detail);
    assert!(!send.detail.contains("Hawthorne"));

    // the recipient, through the real S/MIME path, sees the package's card
    let got = received(&app, kim_box.id, "Referral with package").await;
    let mut kim = app.signed_in("kim@direct.hillside.test").await;
    let shown = text(&kim.get(&format!("/mail/messages/{got}")).await.body);
    for words in [
        "John Hawthorne",
        "Referral to Cardiology",
        "Referral note",
        "letter.pdf",
        "Lakeside Clinic",
    ] {
        assert!(shown.contains(words), "{words:?} not on the page: {shown}");
    }
}

#[tokio::test]
async fn a_recipient_whose_directory_entry_asks_for_packages_gets_one_without_the_box() {
    let app = TestApp::spawn().await;
    let (ana_box, _kim_box) = app.lakeside_and_hillside().await;
    let mut ana = app.signed_in(ANA).await;
    // Ana's address book says the front desk wants packages (the entry form's box)
    let created = ana
        .post(
            "/directory/entries",
            &[
                ("scope", "personal"),
                ("kind", "service"),
                ("name", "Hillside front desk"),
                ("addresses", FRONT),
                ("wants_xdm", "1"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let entry = ana.get(&created.location()).await;
    assert!(
        text(&entry.body).contains("Documents Sent as an XDM package"),
        "{}",
        entry.body
    );

    // the compose page says so once the recipient is typed, and sends a package
    let draft = compose(&mut ana, ana_box.id).await;
    attach(
        &mut ana,
        draft,
        &[("letter.pdf", "application/pdf", &pdf("A letter"))],
    )
    .await;
    let fields = [
        ("to", FRONT),
        ("cc", ""),
        ("subject", "Letter for the front desk"),
        ("body", "Attached."),
        ("xdm_box", "1"),
    ];
    let saved = ana.post(&format!("/mail/drafts/{draft}"), &fields).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let page = ana.get(&format!("/mail/drafts/{draft}")).await;
    let note = page
        .by_id("xdm-wanted")
        .expect("the directory's wish shown");
    assert!(note.contains(FRONT), "{note}");
    let sent = ana
        .post(&format!("/mail/drafts/{draft}/send"), &fields)
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let (_, package) = package_of(&app, message_id_of(&sent.location())).await;
    assert_eq!(package.documents().count(), 1);
    assert_eq!(package.submission_sets[0].patient, None, "no patient given");

    // a message without attachments goes as it is
    let draft = compose(&mut ana, ana_box.id).await;
    let plain = ana
        .post(
            &format!("/mail/drafts/{draft}/send"),
            &[
                ("to", FRONT),
                ("subject", "Just a note"),
                ("body", "No documents."),
                ("xdm_box", "1"),
            ],
        )
        .await;
    assert_eq!(plain.status, StatusCode::SEE_OTHER, "{}", plain.body);
    assert!(
        attachments_of(&app, message_id_of(&plain.location()))
            .await
            .is_empty()
    );

    // another user of the same practice has no such entry: no package for them
    let lakeside = directmail::store::orgs::get(&app.state.db, ana_box.org_id)
        .await
        .unwrap()
        .unwrap();
    let ben = app
        .user(
            Some(&lakeside),
            "ben@direct.lakeside.test",
            directmail::domain::Role::Member,
        )
        .await;
    crate::webmail::assign(&app, ana_box.id, ben.id).await;
    let mut ben_b = app.signed_in("ben@direct.lakeside.test").await;
    let draft = compose(&mut ben_b, ana_box.id).await;
    attach(
        &mut ben_b,
        draft,
        &[("letter.pdf", "application/pdf", &pdf("Another letter"))],
    )
    .await;
    let sent = ben_b
        .post(
            &format!("/mail/drafts/{draft}/send"),
            &[
                ("to", FRONT),
                ("subject", "From Ben"),
                ("body", "Attached."),
                ("xdm_box", "1"),
            ],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let files = attachments_of(&app, message_id_of(&sent.location())).await;
    assert_eq!(names(&files), ["letter.pdf"]);
}

#[tokio::test]
async fn the_box_without_attachments_sends_nothing_says_why_and_keeps_the_draft() {
    let app = TestApp::spawn().await;
    let (ana_box, _) = app.lakeside_and_hillside().await;
    let mut ana = app.signed_in(ANA).await;
    let draft = compose(&mut ana, ana_box.id).await;
    let refused = ana
        .post(
            &format!("/mail/drafts/{draft}/send"),
            &[
                ("to", FRONT),
                ("subject", "Package of nothing"),
                ("body", "Typed text that must not be lost."),
                ("xdm_box", "1"),
                ("as_xdm", "yes"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        text(&refused.body).contains("There are no attachments to send as an XDM package"),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("Typed text that must not be lost."));
    assert!(
        Regex::new(r#"<input type="checkbox" id="as_xdm"[^>]* checked>"#)
            .unwrap()
            .is_match(&refused.body),
        "the box stays ticked"
    );
    let outbound: i64 = sqlx::query_scalar("select count(*) from outbound_messages")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(outbound, 0, "nothing queued");

    // unticking it (the box's own field absent) is kept
    let saved = ana
        .post(
            &format!("/mail/drafts/{draft}"),
            &[
                ("to", FRONT),
                ("subject", "Package of nothing"),
                ("xdm_box", "1"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER);
    let page = ana.get(&format!("/mail/drafts/{draft}")).await;
    assert!(page.body.contains(r#"id="as_xdm""#));
    assert!(
        !Regex::new(r#"<input type="checkbox" id="as_xdm"[^>]* checked>"#)
            .unwrap()
            .is_match(&page.body),
        "the box is unticked"
    );
}

#[tokio::test]
async fn the_api_sends_a_package_when_asked() {
    use reqwest::multipart::{Form, Part};
    let app = TestApp::spawn().await;
    let token = crate::api::practice(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        ANA,
        "dr.ana@direct.lakeside.test",
    )
    .await;
    let referral = cda_fixture("referral-note.xml");
    let form = Form::new()
        .text("to", FRONT)
        .text("subject", "From the EHR")
        .text("text", "See the package.")
        .text("xdm", "true")
        .part(
            "attachment",
            Part::bytes(referral.clone())
                .file_name("referral.xml")
                .mime_str("application/xml")
                .unwrap(),
        );
    let (status, body) = crate::api::json(
        reqwest::Client::new()
            .post(app.url("/api/v1/messages"))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, package) = package_of(&app, body["id"].as_i64().unwrap()).await;
    let documents: Vec<_> = package.documents().collect();
    assert_eq!(documents.len(), 1);
    assert_eq!(documents[0].bytes, referral);
}

#[tokio::test]
async fn the_directory_csv_carries_the_wish_for_packages_in_and_out() {
    use directmail::directory::import::{Format, export};
    use directmail::directory::{Scope, csv};
    let app = TestApp::spawn().await;
    let wants = |address: &'static str| {
        let db = app.state.db.clone();
        async move {
            let flag: i64 = sqlx::query_scalar(
                "select e.wants_xdm from directory_entries e
                   join directory_addresses a on a.entry_id = e.id where a.address = $1",
            )
            .bind(address)
            .fetch_one(&db.pool)
            .await
            .unwrap();
            flag == 1
        }
    };
    let file = app.data_dir.path().join("directory.csv");
    std::fs::write(
        &file,
        "name,direct_addresses,xdm\nCounty Lab,lab@direct.county.test,yes\nRiver Clinic,river@direct.river.test,no\n",
    )
    .unwrap();
    let out = crate::directory::cli_import(&app, &file).await;
    assert_eq!(out["added"].as_i64(), Some(2), "{out}");
    assert!(wants("lab@direct.county.test").await);
    assert!(!wants("river@direct.river.test").await);

    // a file without the column (or an empty cell) keeps what the entry says
    std::fs::write(
        &file,
        "name,direct_addresses\nCounty Lab,lab@direct.county.test\n",
    )
    .unwrap();
    let out = crate::directory::cli_import(&app, &file).await;
    assert_eq!(out["updated"].as_i64(), Some(1), "{out}");
    assert!(wants("lab@direct.county.test").await);

    // the export writes it, and imports back
    let exported = String::from_utf8(
        export(&app.state.db, Scope::Public, Format::Csv)
            .await
            .unwrap(),
    )
    .unwrap();
    let header = exported.lines().next().unwrap();
    assert!(header.split(',').any(|c| c == "xdm"), "{header}");
    let lab = exported
        .lines()
        .find(|l| l.contains("lab@direct.county.test"))
        .unwrap();
    assert!(lab.split(',').any(|c| c == "yes"), "{lab}");

    // a value that is neither yes nor no is that row's problem, in words
    let rows = csv::parse("name,direct_addresses,xdm\nX,x@direct.x.test,perhaps\n").unwrap();
    let problem = rows[0].result.as_ref().unwrap_err();
    assert!(problem.contains("must be yes or no"), "{problem}");
}
