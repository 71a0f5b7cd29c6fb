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
    let filing = directmail::filing::read(raw);
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
                index: &directmail::store::messages::Indexed::of(raw),
                attachment_checks: "",
                filing: &filing,
                signer_facts: None,
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
    // the block is the banner, not a file among the attachments
    let page = ana.get(&format!("/mail/messages/{id}")).await;
    assert!(!page.body.contains("metadata.txt"), "{}", page.body);
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
    // the referral note has a section marked restricted: the result shows the
    // patient, and "Restricted record" for its subject
    let result = found(&mut ana, mb.id, "Lopez").await;
    assert!(
        result.contains("Restricted record") && result.contains("Maria Elena Lopez"),
        "{result}"
    );
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
    let result = found(&mut ana, mb.id, "998991").await;
    assert!(
        result.contains("Restricted record") && result.contains("Lopez"),
        "{result}"
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
        assert_eq!(directmail::filing::read(&raw).patient, None, "{subject}");
        let id = deliver_raw(&app, mb.id, subject, &raw).await;
        assert_eq!(banner(&mut ana, id).await, "", "{subject}");
        // a block that does not read stays a file the user can open
        if context.is_some() {
            let page = ana.get(&format!("/mail/messages/{id}")).await;
            assert!(page.body.contains("metadata.txt"), "{subject}");
        }
    }
    let list = ana.get(&format!("/mail/{}/inbox", mb.id)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!list.body.contains("patient-tag"), "{}", list.body);
}

// ---------------------------------------------------------------------------------
// composing

/// The patient block as the compose form posts it, with the message's fields.
fn with_patient<'a>(
    fields: &[(&'a str, &'a str)],
    patient: [&'a str; 6],
) -> Vec<(&'a str, &'a str)> {
    let mut all = fields.to_vec();
    for (name, value) in [
        "patient_given",
        "patient_family",
        "patient_birth_date",
        "patient_sex",
        "patient_id",
        "patient_purpose",
    ]
    .into_iter()
    .zip(patient)
    {
        all.push((name, value));
    }
    all
}

/// The option selected in the `<select id=…>` of a page.
fn selected(body: &str, id: &str) -> String {
    let select = Regex::new(&format!(
        r#"(?s)<select[^>]*\bid="{id}"[^>]*>(.*?)</select>"#
    ))
    .unwrap()
    .captures(body)
    .unwrap_or_else(|| panic!("no select {id}"))[1]
        .to_owned();
    Regex::new(r#"<option value="([^"]*)" selected>"#)
        .unwrap()
        .captures(&select)
        .map(|c| c[1].to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_patient_block_goes_out_as_a_direct_context_is_read_back_and_starts_the_reply() {
    use crate::webmail::{compose, delivered, draft_id, field, message_id_of};
    let app = TestApp::spawn().await;
    let (ana_box, kim_box) = app.lakeside_and_hillside().await;
    let mut ana = app.signed_in(ANA).await;
    let draft = compose(&mut ana, ana_box.id).await;
    let fields = with_patient(
        &[
            ("to", "front@direct.hillside.test"),
            ("cc", ""),
            ("subject", "Echo this week"),
            ("body", "Please see him this week."),
        ],
        [
            "John",
            "Hawthorne",
            "1961-12-31",
            "M",
            "2.16.840.1.113883.19.999999:HX-4471",
            "treatment",
        ],
    );
    let sent = ana
        .post(&format!("/mail/drafts/{draft}/send"), &fields)
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let sent_id = message_id_of(&sent.location());

    // the outgoing MIME: the header names the metadata.txt part, which reads back
    let raw: Vec<u8> = sqlx::query_scalar("select raw from message_raw where message_id = $1")
        .bind(sent_id)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("X-Direct-Context: <context."), "{text}");
    assert!(text.contains("metadata.txt"), "{text}");
    let patient = directmail::filing::read(&raw).patient.expect("a patient");
    assert_eq!(patient.source, directmail::patient::Source::Context);
    assert_eq!(patient.name, "John Hawthorne");
    assert_eq!(patient.id, "HX-4471 (2.16.840.1.113883.19.999999)");
    assert_eq!(patient.birth_date, "1961-12-31");
    assert_eq!(patient.sex, "Male");
    assert!(
        banner(&mut ana, sent_id)
            .await
            .contains("Patient: John Hawthorne (from the Direct Context)")
    );

    // the recipient, through the real S/MIME path, reads the same patient
    let received = delivered(&app, kim_box.id, "Echo this week").await;
    let mut kim = app.signed_in("kim@direct.hillside.test").await;
    let words = banner(&mut kim, received).await;
    for shown in [
        "Patient: John Hawthorne (from the Direct Context)",
        "Birth date December 31, 1961",
        "Sex Male",
        "Patient ID HX-4471 (2.16.840.1.113883.19.999999)",
    ] {
        assert!(words.contains(shown), "{shown:?} not in {words}");
    }

    // the reply starts with the same patient
    let reply = kim
        .post(
            &format!("/mail/messages/{received}/act"),
            &[("action", "reply")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let page = kim
        .get(&format!("/mail/drafts/{}", draft_id(&reply.location())))
        .await;
    assert_eq!(field(&page, "patient_given"), "John");
    assert_eq!(field(&page, "patient_family"), "Hawthorne");
    assert_eq!(field(&page, "patient_birth_date"), "1961-12-31");
    assert_eq!(
        field(&page, "patient_id"),
        "2.16.840.1.113883.19.999999:HX-4471"
    );
    assert_eq!(selected(&page.body, "patient_sex"), "M");
    assert_eq!(selected(&page.body, "patient_purpose"), "treatment");
}

#[tokio::test]
async fn a_refused_patient_block_shows_each_error_beside_its_field_and_keeps_what_was_typed() {
    use crate::webmail::{compose, field};
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let mut ana = app.signed_in(ANA).await;
    let draft = compose(&mut ana, mb.id).await;
    let message = [
        ("to", "front@direct.hillside.test"),
        ("cc", ""),
        ("subject", "Follow-up"),
        ("body", "See attached."),
    ];

    // typed and saved as it goes, kept across a reload
    let typed = with_patient(&message, ["A;B", "", "2999-01-01", "X", "", "treatment"]);
    let saved = ana
        .post_with(
            &format!("/mail/drafts/{draft}"),
            &typed,
            &[("x-autosave", "1")],
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    let page = ana.get(&format!("/mail/drafts/{draft}")).await;
    assert_eq!(field(&page, "patient_given"), "A;B");
    assert_eq!(field(&page, "patient_birth_date"), "2999-01-01");

    let refused = ana
        .post(&format!("/mail/drafts/{draft}/send"), &typed)
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = |id: &str| {
        Regex::new(&format!(
            r#"<p class="field-error" id="{id}-error">([^<]*)</p>"#
        ))
        .unwrap()
        .captures(&refused.body)
        .map(|c| crate::webmail::unescape(&c[1]))
        .unwrap_or_default()
    };
    assert!(
        error("patient_given").contains("semicolon"),
        "{}",
        refused.body
    );
    assert!(error("patient_family").contains("family name or identifier"));
    assert!(error("patient_birth_date").contains("in the future"));
    assert!(error("patient_sex").contains("from the list"));
    assert_eq!(error("patient_id"), "");
    assert!(
        refused
            .body
            .contains(r#"aria-describedby="patient_birth_date-error""#)
    );
    assert_eq!(field(&refused, "patient_given"), "A;B");
    assert_eq!(field(&refused, "patient_birth_date"), "2999-01-01");
    assert_eq!(field(&refused, "subject"), "Follow-up");

    // a date that does not exist, and a name too long
    let long = "x".repeat(101);
    let typed = with_patient(&message, ["Ann", &long, "2023-02-30", "F", "", "treatment"]);
    let refused = ana
        .post(&format!("/mail/drafts/{draft}/send"), &typed)
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("not a real date"), "{}", refused.body);
    assert!(refused.body.contains("longer than 100 characters"));
    assert_eq!(field(&refused, "patient_family"), long);
    assert_eq!(selected(&refused.body, "patient_sex"), "F");
}

// ---------------------------------------------------------------------------------
// messages about one patient

#[tokio::test]
async fn the_banner_links_to_the_patients_messages_across_the_users_mailboxes_paged() {
    use crate::webmail::{assign, desk, mailbox};
    use directmail::store::mailboxes::MailboxKind;
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let shared = mailbox(
        &app,
        mb.org_id,
        "direct.lakeside.test",
        "front@direct.lakeside.test",
        MailboxKind::Shared,
    )
    .await;
    let ana_id: i64 = sqlx::query_scalar("select id from users where email = $1")
        .bind(ANA)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assign(&app, shared.id, ana_id).await;
    // someone else's mailbox, with a message about the same patient
    let other = desk(
        &app,
        "Hillside Care",
        "direct.hillside.test",
        "kim@direct.hillside.test",
        "dr.kim@direct.hillside.test",
    )
    .await;
    let about = |subject: &str| raw_message(subject, &context_header(), Some(CONTEXT), &[]);
    let first = deliver_raw(&app, mb.id, "Referral 0", &about("Referral 0")).await;
    for n in 1..=50 {
        let subject = format!("Referral {n}");
        deliver_raw(&app, mb.id, &subject, &about(&subject)).await;
    }
    deliver_raw(
        &app,
        shared.id,
        "At the front desk",
        &about("At the front desk"),
    )
    .await;
    deliver_raw(&app, other.id, "Not for Ana", &about("Not for Ana")).await;
    deliver(
        &app,
        mb.id,
        &Mail::new(
            "dr.kim@direct.hillside.test",
            "dr.ana@direct.lakeside.test",
            "Another patient",
            "No context.",
        ),
    )
    .await;

    let mut ana = app.signed_in(ANA).await;
    let page = ana.get(&format!("/mail/messages/{first}")).await;
    let link = Regex::new(r#"<a href="([^"]+)" id="patient-messages">"#)
        .unwrap()
        .captures(&page.body)
        .unwrap_or_else(|| panic!("no link: {}", page.body))[1]
        .replace("&amp;", "&")
        .replace("&#38;", "&");
    assert!(link.starts_with("/mail/patient?id="), "{link}");
    let list = ana.get(&link).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let words = text(&list.body);
    assert!(
        words.contains("Messages about HX-4471 (2.16.840.1.113883.19.999999)"),
        "{words}"
    );
    assert!(
        words.contains("At the front desk") && words.contains("front@direct.lakeside.test"),
        "{words}"
    );
    assert!(!words.contains("Not for Ana") && !words.contains("Another patient"));
    let rows = |body: &str| {
        Regex::new(r#"<tr data-id="(\d+)">"#)
            .unwrap()
            .captures_iter(body)
            .map(|c| c[1].parse::<i64>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(&list.body).len(), 50);
    let next = Regex::new(r#"<a href="([^"]+)" id="patient-next">"#)
        .unwrap()
        .captures(&list.body)
        .unwrap_or_else(|| panic!("no next page: {}", list.body))[1]
        .replace("&amp;", "&")
        .replace("&#38;", "&");
    let older = ana.get(&next).await;
    assert_eq!(older.status, StatusCode::OK);
    assert_eq!(rows(&older.body).len(), 2, "{next}");
    assert_eq!(rows(&older.body).last(), Some(&first), "{next}");
    assert!(!older.body.contains("patient-next"));

    // a patient no message names lists nothing
    let none = ana.get("/mail/patient?id=nobody").await;
    assert!(none.body.contains("No messages about this patient."));
    assert_eq!(ana.get("/mail/patient").await.status, StatusCode::NOT_FOUND);
}
