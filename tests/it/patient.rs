//! The patient a message is about (issue #12): read once when the message is filed,
//! from its Direct Context block, else its XDM package, else its first clinical
//! document; shown as a banner on the message page and beside the subject in the
//! list, and found by search. A block that cannot be read leaves the message
//! without a patient, never in error.

use base64::Engine as _;
use directmail::store::inbound::{self, NewMessage};
use regex::Regex;
use reqwest::StatusCode;

use crate::clinical::{cda_fixture, document, package, text};
use crate::helpers::{Browser, TestApp};
use crate::webmail::{Mail, ana_desk, deliver};

const ANA: &str = "ana@direct.lakeside.test";

/// A Direct Context block about John Hawthorne.
const CONTEXT: &str = "version: 1.1\r\nid: 5f3c1a\r\npatient-id: 2.16.840.1.113883.19.999999:HX-4471\r\ntype: referral/order\r\npurpose: treatment\r\npatient: givenName=John; surname=Hawthorne; dateOfBirth=1961-12-31; gender=M; postalCode=12345\r\n";

/// A message carrying `headers` (each a whole line), the `context` block as a
/// `text/plain` part with Content-ID `<ctx@lakeside.test>`, and these attachments.
fn raw_message(
    subject: &str,
    headers: &[String],
    context: Option<&str>,
    files: &[(&str, Vec<u8>)],
) -> Vec<u8> {
    let boundary = "=_patient_0";
    let mut m = format!(
        "From: <dr.kim@direct.hillside.test>\r\nTo: dr.ana@direct.lakeside.test\r\nSubject: {subject}\r\nMessage-ID: <{}@hillside.test>\r\nMIME-Version: 1.0\r\n",
        subject.replace(' ', ".")
    );
    for h in headers {
        m.push_str(h);
        m.push_str("\r\n");
    }
    m.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease see the referral.\r\n"
    ));
    if let Some(context) = context {
        m.push_str(&format!(
            "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-ID: <ctx@lakeside.test>\r\nContent-Disposition: attachment; filename=\"metadata.txt\"\r\n\r\n{context}\r\n"
        ));
    }
    for (name, data) in files {
        let encoded = base64::engine::general_purpose::STANDARD.encode(data);
        m.push_str(&format!(
            "--{boundary}\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"
        ));
    }
    m.push_str(&format!("--{boundary}--\r\n"));
    m.into_bytes()
}

fn context_header() -> Vec<String> {
    vec!["X-Direct-Context: <ctx@lakeside.test>".to_owned()]
}

/// Files `raw` in a mailbox's Inbox as delivery does: its patient read once, first.
async fn deliver_raw(app: &TestApp, mailbox_id: i64, subject: &str, raw: &[u8]) -> i64 {
    let patient = directmail::patient::of_message(raw);
    let db = &app.state.db;
    let _turn = db.write_turn().await;
    let mut tx = db.begin().await.unwrap();
    let message_id = format!("{}@hillside.test", subject.replace(' ', "."));
    assert!(
        inbound::deliver(
            &mut tx,
            NewMessage {
                mailbox_id,
                inbound_id: None,
                message_id: Some(&message_id),
                from_addr: "dr.kim@direct.hillside.test",
                subject,
                trust_code: "trusted",
                trust_sentence: "The sender's signature is valid and trusted.",
                signer_subject: Some("CN=hillside.test"),
                signer_issuer: Some("CN=Hillside CA"),
                revocation: "checked",
                raw,
                attachment_checks: "",
                patient: patient.as_ref(),
            },
            app.now(),
        )
        .await
        .unwrap()
    );
    let id: i64 =
        sqlx::query_scalar("select id from messages where mailbox_id = $1 and message_id = $2")
            .bind(mailbox_id)
            .bind(&message_id)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    id
}

/// The words of the patient banner on a message page ("" when there is none).
async fn banner(b: &mut Browser, id: i64) -> String {
    let page = b.get(&format!("/mail/messages/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    Regex::new(r#"(?s)<section class="patient-banner" id="patient".*?</section>"#)
        .unwrap()
        .find(&page.body)
        .map(|m| text(m.as_str()))
        .unwrap_or_default()
}

/// The subjects a search for `q` lists.
async fn found(b: &mut Browser, mailbox_id: i64, q: &str) -> String {
    let q = crate::helpers::serde_urlencode(&[("q", q)]);
    let page = b.get(&format!("/mail/{mailbox_id}/search?{q}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    text(&page.body)
}

#[tokio::test]
async fn a_direct_context_names_the_patient_on_the_page_in_the_list_and_for_search() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let raw = raw_message("Cardiology referral", &context_header(), Some(CONTEXT), &[]);
    let id = deliver_raw(&app, mb.id, "Cardiology referral", &raw).await;
    deliver(
        &app,
        mb.id,
        &Mail::new(
            "dr.kim@direct.hillside.test",
            "dr.ana@direct.lakeside.test",
            "Lunch on Friday",
            "No patient here.",
        ),
    )
    .await;
    let mut ana = app.signed_in(ANA).await;
    let words = banner(&mut ana, id).await;
    for shown in [
        "Patient: John Hawthorne (from the Direct Context)",
        "Birth date December 31, 1961",
        "Sex Male",
        "Patient ID HX-4471 (2.16.840.1.113883.19.999999)",
    ] {
        assert!(words.contains(shown), "{shown:?} not in {words}");
    }
    let list = ana.get(&format!("/mail/{}/inbox", mb.id)).await;
    let rows = text(&list.body);
    assert!(
        rows.contains("Cardiology referral Patient: John Hawthorne"),
        "{rows}"
    );
    assert_eq!(rows.matches("Patient:").count(), 1, "{rows}");
    for q in ["Hawthorne", "HX-4471", "4471"] {
        let hits = found(&mut ana, mb.id, q).await;
        assert!(hits.contains("Cardiology referral"), "{q}: {hits}");
        assert!(!hits.contains("Lunch on Friday"), "{q}: {hits}");
    }
}

#[tokio::test]
async fn a_message_with_only_an_xdm_package_takes_the_patient_from_its_metadata() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let note = cda_fixture("referral-note.xml");
    let zip = package(vec![document("Referral", "text/xml", &note)]);
    let raw = raw_message("Package", &[], None, &[("records.zip", zip)]);
    let id = deliver_raw(&app, mb.id, "Package", &raw).await;
    let mut ana = app.signed_in(ANA).await;
    let words = banner(&mut ana, id).await;
    for shown in [
        "Patient: Maria Elena Lopez (from the XDM package)",
        "Birth date March 4, 1958",
        "Sex Female",
        "Patient ID 998991 (2.16.840.1.113883.19.5)",
    ] {
        assert!(words.contains(shown), "{shown:?} not in {words}");
    }
    assert!(found(&mut ana, mb.id, "Lopez").await.contains("Package"));
}

#[tokio::test]
async fn a_message_with_only_a_clinical_document_takes_the_patient_from_its_record_target() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let raw = raw_message(
        "Referral note",
        &[],
        None,
        &[("note.xml", cda_fixture("referral-note.xml"))],
    );
    let id = deliver_raw(&app, mb.id, "Referral note", &raw).await;
    let mut ana = app.signed_in(ANA).await;
    let words = banner(&mut ana, id).await;
    for shown in [
        "(from the clinical document)",
        "Lopez",
        "Birth date March 4, 1958",
        "Sex Female",
        "Patient ID 998991 (2.16.840.1.113883.19.5.99999.2)",
    ] {
        assert!(words.contains(shown), "{shown:?} not in {words}");
    }
    assert!(
        found(&mut ana, mb.id, "998991")
            .await
            .contains("Referral note")
    );
}

#[tokio::test]
async fn the_direct_context_wins_when_the_sources_disagree() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let note = cda_fixture("referral-note.xml");
    let zip = package(vec![document("Referral", "text/xml", &note)]);
    let raw = raw_message(
        "Three sources",
        &context_header(),
        Some(CONTEXT),
        &[("records.zip", zip), ("note.xml", note.clone())],
    );
    let id = deliver_raw(&app, mb.id, "Three sources", &raw).await;
    // without the context, the package comes before the document
    let raw = raw_message(
        "Two sources",
        &[],
        None,
        &[
            ("note.xml", note.clone()),
            (
                "records.zip",
                package(vec![document("Referral", "text/xml", &note)]),
            ),
        ],
    );
    let second = deliver_raw(&app, mb.id, "Two sources", &raw).await;
    let mut ana = app.signed_in(ANA).await;
    let words = banner(&mut ana, id).await;
    assert!(
        words.contains("Patient: John Hawthorne (from the Direct Context)"),
        "{words}"
    );
    assert!(!words.contains("Lopez"), "{words}");
    let words = banner(&mut ana, second).await;
    assert!(words.contains("(from the XDM package)"), "{words}");
}

#[tokio::test]
async fn a_hostile_context_block_is_ignored_and_leaves_the_message_without_a_patient() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let many_lines = "x-note: y\r\n".repeat(10_000) + CONTEXT;
    let huge_value = format!(
        "patient: givenName={}; surname=Hawthorne\r\npatient-id: 1.2:3\r\n",
        "J".repeat(100_000)
    );
    let cases: Vec<(&str, Vec<String>, Option<&str>)> = vec![
        ("Ten thousand lines", context_header(), Some(&many_lines)),
        ("Huge values", context_header(), Some(&huge_value)),
        ("Missing part", context_header(), None),
        (
            "Two headers",
            vec![
                "X-Direct-Context: <ctx@lakeside.test>".to_owned(),
                "X-Direct-Context: <ctx@lakeside.test>".to_owned(),
            ],
            Some(CONTEXT),
        ),
        (
            "Not a pair",
            context_header(),
            Some("version: 1.1\r\nthis line has no colon\r\n"),
        ),
    ];
    let mut ana = app.signed_in(ANA).await;
    for (subject, headers, context) in cases {
        let raw = raw_message(subject, &headers, context, &[]);
        assert_eq!(directmail::patient::of_message(&raw), None, "{subject}");
        let id = deliver_raw(&app, mb.id, subject, &raw).await;
        assert_eq!(banner(&mut ana, id).await, "", "{subject}");
    }
    let list = ana.get(&format!("/mail/{}/inbox", mb.id)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!list.body.contains("patient-tag"), "{}", list.body);
}
