//! Sensitive records (issue #13), as sent: the compose page's "Sensitive" choice puts
//! the law's notice first (checked word for word after `openssl cms` decrypts what
//! went to another HISP), labels the C-CDA documents, asks for the Part 2 consent,
//! shows each recipient's organization before the record goes, stops a mental-health
//! record about a patient who opted out of HIE sharing, and records each disclosure.
//! Replies and forwards of a restricted record start restricted.

use directmail::sensitivity::{Law, Outgoing, PART2_NOTICE};
use directmail_content::cda::{self, CdaLimits};
use mail_parser::{MessageParser, MimeHeaders as _};
use reqwest::StatusCode;

use crate::clinical::cda_fixture;
use crate::helpers::{Browser, Page, TestApp, opted_out, pdf};
use crate::outbound::{app_relaying_to_sink, foreign_kim, opened_by_kim};
use crate::webmail::compose;

const ANA: &str = "ana@direct.lakeside.test";
const KIM: &str = "kim@direct.far.test";

/// Ana's practice, with a certificate to send from.
async fn lakeside(app: &TestApp) -> directmail::store::mailboxes::Mailbox {
    app.practice(
        "Lakeside Clinic",
        "direct.lakeside.test",
        ANA,
        "dr.ana@direct.lakeside.test",
    )
    .await
}

/// The text inside the element with this id, up to `end` (its closing tag), tags
/// left out and entities decoded.
fn text_of(page: &Page, id: &str, end: &str) -> Option<String> {
    let start = page.body.find(&format!(r#"id="{id}""#))?;
    let rest = &page.body[start..];
    let inner = &rest[rest.find('>')? + 1..rest.find(end)?];
    let text = regex::Regex::new(r"<[^>]*>")
        .unwrap()
        .replace_all(inner, " ");
    Some(
        text.replace("&#x27;", "'")
            .replace("&#39;", "'")
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Uploads files to a draft as the page's script does.
async fn attach(b: &mut Browser, draft: i64, files: &[(&str, &str, &[u8])]) {
    let up = b
        .upload(&format!("/mail/drafts/{draft}/attachments"), files, true)
        .await;
    assert_eq!(up.status, StatusCode::OK, "{}", up.body);
}

/// The id of the draft's attachment named `name`.
async fn attachment_id(app: &TestApp, draft: i64, name: &str) -> i64 {
    sqlx::query_scalar("select id from draft_attachments where draft_id = $1 and name = $2")
        .bind(draft)
        .bind(name)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
}

/// Saves the form fields, then presses Send with them.
async fn send(b: &mut Browser, draft: i64, fields: &[(&str, &str)]) -> Page {
    let mut all = vec![("sensitive_box", "1")];
    all.extend_from_slice(fields);
    b.post(&format!("/mail/drafts/{draft}/send"), &all).await
}

/// The key the page's confirming button sends, and the recipients listed with it.
fn review(page: &Page) -> (String, String) {
    let key = regex::Regex::new(r#"name="reviewed" value="([^"]*)""#)
        .unwrap()
        .captures(&page.body)
        .unwrap_or_else(|| panic!("a recipient review: {}", page.body))[1]
        .to_owned();
    let table = text_of(page, "recipient-review", "</section>").expect("the review panel");
    (key, table)
}

async fn outbound_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from outbound_messages")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
}

/// (law, patient, recipients, purpose, consent) of each recorded disclosure.
async fn disclosures(app: &TestApp) -> Vec<(String, String, String, String, String)> {
    sqlx::query_as("select law, patient, recipients, purpose, consent from disclosures order by id")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap()
}

async fn audit_details(app: &TestApp, action: &str) -> Vec<String> {
    sqlx::query_scalar("select detail from audit_log where action = $1 order by id")
        .bind(action)
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_part2_record_goes_with_the_exact_notice_its_consent_and_its_labels() {
    let (app, sink) = app_relaying_to_sink().await;
    let ana_box = lakeside(&app).await;
    app.practice(
        "Hillside Care",
        "direct.hillside.test",
        "kim@direct.hillside.test",
        "front@direct.hillside.test",
    )
    .await;
    foreign_kim(&app).await;
    let mut ana = app.signed_in(ANA).await;
    let draft = compose(&mut ana, ana_box.id).await;
    let note = cda_fixture("referral-note.xml");
    attach(
        &mut ana,
        draft,
        &[
            ("referral-note.xml", "text/xml", &note),
            ("consent.pdf", "application/pdf", &pdf("Consent")),
        ],
    )
    .await;
    let base = [
        ("to", KIM),
        ("cc", ""),
        ("subject", "Treatment summary"),
        ("body", "Summary attached."),
        ("sensitivity", "part2"),
    ];

    // no consent: refused beside the section, the choice kept, nothing queued
    let refused = send(&mut ana, draft, &base).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let why = refused.by_id("sensitive-error").unwrap_or_default();
    assert!(why.contains("goes with the patient"), "{why:?}");
    assert!(refused.body.contains(r#"<option value="part2" selected>"#));
    // an exception without its reason is refused too
    let mut fields = base.to_vec();
    fields.push(("no_consent_basis", "emergency"));
    let refused = send(&mut ana, draft, &fields).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused
            .by_id("sensitive-error")
            .unwrap()
            .contains("Say why")
    );
    assert_eq!(outbound_count(&app).await, 0);

    // the consent's scope, described: the recipients are shown first, with
    // their organization (a colleague on this HISP is named by their practice)
    let scope = "Treatment records from 2026-01-01 to 2026-12-31, to Dr. Kim only.";
    let mut fields = base.to_vec();
    fields.retain(|(k, _)| *k != "cc");
    fields.push(("cc", "front@direct.hillside.test"));
    fields.push(("consent_scope", scope));
    let shown = send(&mut ana, draft, &fields).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    let (key, table) = review(&shown);
    assert!(
        table.contains(KIM) && table.contains("Not in the directory"),
        "{table}"
    );
    assert!(table.contains("Hillside Care"), "{table}");
    assert_eq!(
        outbound_count(&app).await,
        0,
        "nothing goes before the review"
    );
    // a changed list is reviewed again
    let mut changed = fields.clone();
    changed.retain(|(k, _)| *k != "cc");
    changed.push(("cc", ""));
    changed.push(("reviewed", &key));
    let again = send(&mut ana, draft, &changed).await;
    assert_eq!(again.status, StatusCode::OK);
    let (kim_only, _) = review(&again);
    changed.retain(|(k, _)| *k != "reviewed");
    changed.push(("reviewed", &kim_only));
    let sent = send(&mut ana, draft, &changed).await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);

    // what Kim's HISP gets, opened by openssl: the notice is the first text part,
    // word for word, with the consent's scope
    let (_, shown) = opened_by_kim(&app, &sink).await;
    let inner = shown
        .find("Content-Type: message/rfc822")
        .map(|at| &shown[at..])
        .unwrap_or_else(|| panic!("{shown}"));
    let body = match (inner.find("\r\n\r\n"), inner.find("\n\n")) {
        (Some(crlf), Some(lf)) if crlf < lf => &inner[crlf + 4..],
        (_, Some(lf)) => &inner[lf + 2..],
        (Some(crlf), None) => &inner[crlf + 4..],
        (None, None) => panic!("{inner}"),
    };
    let message = MessageParser::default().parse(body.as_bytes()).unwrap();
    let first = message.body_text(0).unwrap().replace("\r\n", "\n");
    assert_eq!(first, Outgoing::new(Law::Part2, scope).first_part);
    assert!(first.starts_with(PART2_NOTICE.text));
    assert_eq!(
        message.body_text(1).unwrap().trim(),
        "Summary attached.",
        "the sender's text follows"
    );
    // the C-CDA is labelled restricted, with the Part 2 labels and the notice
    let labelled = message
        .attachments()
        .find(|a| a.attachment_name() == Some("referral-note.xml"))
        .expect("the document");
    let doc = cda::parse_cda(labelled.contents(), &CdaLimits::default()).unwrap();
    assert_eq!(doc.confidentiality.as_ref().unwrap().code, "R");
    let codes: Vec<&str> = doc
        .security_labels
        .iter()
        .map(|c| c.code.as_str())
        .collect();
    for code in ["42CFRPart2", "ETH", "NORDSCLCD"] {
        assert!(codes.contains(&code), "{code} in {codes:?}");
    }
    let first_section = &doc.sections()[0];
    assert_eq!(
        first_section.display_title(),
        "Privacy and Security Markings"
    );
    assert!(
        message
            .attachments()
            .any(|a| a.attachment_name() == Some("consent.pdf"))
    );

    // Ana's Sent copy is a Part 2 record; the disclosure is recorded and audited
    let restriction: String =
        sqlx::query_scalar("select restriction from messages where folder = 'sent'")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(restriction, "part2");
    let rows = disclosures(&app).await;
    assert_eq!(rows.len(), 1);
    let (law, patient, recipients, purpose, consent) = &rows[0];
    assert_eq!(
        (law.as_str(), recipients.as_str(), purpose.as_str()),
        ("part2", KIM, "Treatment")
    );
    assert!(
        patient.contains("Lopez") && patient.contains("1958-03-04"),
        "{patient}"
    );
    assert_eq!(consent, &format!("Consent described: {scope}"));
    assert!(
        audit_details(&app, "message.send")
            .await
            .iter()
            .any(|d| d.contains("label: part2"))
    );
}

#[tokio::test]
async fn a_consent_pdf_is_enough_and_an_exception_goes_with_its_reason() {
    let app = TestApp::spawn().await;
    let (ana_box, _) = app.lakeside_and_hillside().await;
    let mut ana = app.signed_in(ANA).await;
    for (n, how) in ["pdf", "exception"].into_iter().enumerate() {
        let draft = compose(&mut ana, ana_box.id).await;
        attach(
            &mut ana,
            draft,
            &[
                ("consent.pdf", "application/pdf", &pdf("Consent")),
                ("letter.txt", "text/plain", b"Letter"),
            ],
        )
        .await;
        let consent = attachment_id(&app, draft, "consent.pdf").await.to_string();
        let letter = attachment_id(&app, draft, "letter.txt").await.to_string();
        let subject = format!("Letter {n}");
        let mut fields = vec![
            ("to", "front@direct.hillside.test"),
            ("subject", subject.as_str()),
            ("body", "See attached."),
            ("sensitivity", "part2"),
        ];
        if how == "pdf" {
            // only a PDF can be the consent
            let mut wrong = fields.clone();
            wrong.push(("consent_attachment", &letter));
            let refused = send(&mut ana, draft, &wrong).await;
            assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(
                refused
                    .by_id("sensitive-error")
                    .unwrap()
                    .contains("letter.txt is not a PDF")
            );
            fields.push(("consent_attachment", &consent));
        } else {
            fields.push(("no_consent_basis", "emergency"));
            fields.push(("no_consent_reason", "Unconscious patient in our ER"));
        }
        let shown = send(&mut ana, draft, &fields).await;
        let (key, _) = review(&shown);
        fields.push(("reviewed", &key));
        let sent = send(&mut ana, draft, &fields).await;
        assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    }
    let consents: Vec<String> = disclosures(&app).await.into_iter().map(|d| d.4).collect();
    assert_eq!(
        consents,
        [
            "Consent attached: consent.pdf",
            "Without consent, Medical emergency (42 CFR 2.51): Unconscious patient in our ER"
        ]
    );
}

#[tokio::test]
async fn replies_and_forwards_of_a_restricted_record_start_restricted() {
    let app = TestApp::spawn().await;
    let (ana_box, _) = app.lakeside_and_hillside().await;
    let id = crate::webmail::deliver(
        &app,
        ana_box.id,
        &crate::webmail::Mail::new(
            "dr.kim@direct.hillside.test",
            "dr.ana@direct.lakeside.test",
            "Counselling",
            "42 CFR part 2 prohibits unauthorized use or disclosure of these records.",
        ),
    )
    .await;
    let ordinary = crate::webmail::deliver(
        &app,
        ana_box.id,
        &crate::webmail::Mail::new(
            "dr.kim@direct.hillside.test",
            "dr.ana@direct.lakeside.test",
            "Lunch",
            "Hello.",
        ),
    )
    .await;
    let mut ana = app.signed_in(ANA).await;
    for (message, action, extra, law) in [
        (id, "reply", None, "part2"),
        (id, "forward", Some(("purpose", "treatment")), "part2"),
        (ordinary, "reply", None, ""),
    ] {
        let mut fields = vec![("action", action)];
        fields.extend(extra);
        let r = ana
            .post(&format!("/mail/messages/{message}/act"), &fields)
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{action}: {}", r.body);
        let draft = r.location();
        let page = ana.get(&draft).await;
        let selected: Vec<&str> = ["part2", "mental_health", "restricted"]
            .into_iter()
            .filter(|l| {
                page.body
                    .contains(&format!(r#"<option value="{l}" selected>"#))
            })
            .collect();
        let selected = selected.first().copied().unwrap_or_default();
        assert_eq!(selected, law, "{action} of message {message}");
    }
}

#[tokio::test]
async fn an_opted_out_patient_is_stopped_outside_the_organization_then_sent_under_an_exception() {
    let app = TestApp::spawn_with(|c| {
        c.public_health_addresses =
            directmail::config::Addresses(vec!["reports@direct.hillside.test".into()]);
    })
    .await;
    let (ana_box, front) = app.lakeside_and_hillside().await;
    crate::webmail::mailbox(
        &app,
        front.org_id,
        "direct.hillside.test",
        "reports@direct.hillside.test",
        directmail::store::mailboxes::MailboxKind::Shared,
    )
    .await;
    crate::webmail::mailbox(
        &app,
        ana_box.org_id,
        "direct.lakeside.test",
        "nurse@direct.lakeside.test",
        directmail::store::mailboxes::MailboxKind::Shared,
    )
    .await;
    // Maria Elena Lopez, the referral note's patient
    opted_out(
        &app,
        ana_box.org_id,
        ANA,
        ("Maria Elena", "Lopez", "1958-03-04"),
    )
    .await;
    let mut ana = app.signed_in(ANA).await;
    let note = cda_fixture("referral-note.xml");

    // matched by the patient block, to a practice outside: stopped, with the
    // exceptions the Act allows
    let draft = compose(&mut ana, ana_box.id).await;
    let mut fields = vec![
        ("to", "front@direct.hillside.test"),
        ("subject", "Therapy notes"),
        ("body", "Notes from today."),
        ("sensitivity", "mental_health"),
        ("patient_given", "Maria Elena"),
        ("patient_family", "LOPEZ"),
        ("patient_birth_date", "1958-03-04"),
        ("patient_sex", ""),
        ("patient_id", ""),
        ("patient_purpose", "treatment"),
    ];
    let stopped = send(&mut ana, draft, &fields).await;
    assert_eq!(stopped.status, StatusCode::UNPROCESSABLE_ENTITY);
    let why = text_of(&stopped, "opt-out-stop", "</fieldset>").expect("the stop");
    assert!(
        why.contains("Maria Elena Lopez")
            && why.contains("front@direct.hillside.test is outside Lakeside Clinic")
            && why.contains("Treatment by the recipient")
            && why.contains("Public-health reporting"),
        "{why}"
    );
    assert_eq!(outbound_count(&app).await, 0);
    // the exception chosen: the review, then it goes, audited
    fields.push(("opt_out_exception", "treatment"));
    let shown = send(&mut ana, draft, &fields).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    let (key, _) = review(&shown);
    fields.push(("reviewed", &key));
    let sent = send(&mut ana, draft, &fields).await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let exceptions = audit_details(&app, "opt_out.exception").await;
    assert_eq!(exceptions.len(), 1);
    assert!(exceptions[0].contains("Treatment by the recipient"));
    assert!(
        !exceptions[0].contains("Lopez"),
        "no patient name in the log"
    );
    let rows = disclosures(&app).await;
    assert!(
        rows[0]
            .3
            .ends_with("patient opted out, sent under: Treatment by the recipient")
    );

    // matched by the C-CDA's recordTarget, with no patient block: stopped too
    let draft = compose(&mut ana, ana_box.id).await;
    attach(&mut ana, draft, &[("referral-note.xml", "text/xml", &note)]).await;
    let fields = [
        ("to", "front@direct.hillside.test"),
        ("subject", "Referral"),
        ("body", "Attached."),
        ("sensitivity", "mental_health"),
    ];
    let stopped = send(&mut ana, draft, &fields).await;
    assert_eq!(stopped.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(text_of(&stopped, "opt-out-stop", "</fieldset>").is_some());

    // inside the organization, and to the operator's public-health address, it goes
    // without an exception
    for to in ["nurse@direct.lakeside.test", "reports@direct.hillside.test"] {
        let mut fields = fields.to_vec();
        fields[0] = ("to", to);
        let shown = send(&mut ana, draft, &fields).await;
        assert_eq!(shown.status, StatusCode::OK, "{to}: {}", shown.body);
        assert!(
            text_of(&shown, "opt-out-stop", "</fieldset>").is_none(),
            "{to}"
        );
        assert!(
            text_of(&shown, "recipient-review", "</section>").is_some(),
            "{to}"
        );
    }
    // another kind of record is not held by the Illinois list
    let mut fields = fields.to_vec();
    fields[3] = ("sensitivity", "restricted");
    let shown = send(&mut ana, draft, &fields).await;
    assert!(text_of(&shown, "opt-out-stop", "</fieldset>").is_none());
}
