//! Sensitive records (issue #13), as received: a message is labelled restricted, with
//! the law that applies and why, from a C-CDA's confidentiality (document or section
//! level), its DS4P security observations, an XDM package's confidentiality codes, or
//! the sender's Part 2 notice; lists and searches show "Restricted record" and never
//! its subject or snippet; the message page and its print view carry a banner.

use directmail_content::xdm::Confidentiality;
use reqwest::StatusCode;

use crate::clinical::{cda_fixture, document, package, text};
use crate::helpers::{Browser, TestApp};
use crate::webmail::{Mail, ana_desk, deliver};

const ANA: &str = "ana@direct.lakeside.test";

/// The referral note with `insert` placed just after the first `after` (the whole
/// document when `after` is not found fails the test).
fn referral_with(after: &str, insert: &str) -> Vec<u8> {
    let text = String::from_utf8(cda_fixture("referral-note.xml")).unwrap();
    let at = text.find(after).expect("the place to insert") + after.len();
    format!("{}{insert}{}", &text[..at], &text[at..]).into_bytes()
}

/// A DS4P security observation with this value, as an entry of a section.
fn security_entry(code: &str) -> String {
    format!(
        r#"<entry><observation classCode="OBS" moodCode="EVN"><templateId root="2.16.840.1.113883.3.445.21"/><code code="SECCLASSOBS" codeSystem="2.16.840.1.113883.5.4"/><value xsi:type="CE" code="{code}" codeSystem="2.16.840.1.113883.5.25"/></observation></entry>"#
    )
}

async fn received(
    app: &TestApp,
    mailbox_id: i64,
    subject: &str,
    text: &str,
    files: &[(&str, Vec<u8>)],
) -> i64 {
    let mut mail = Mail::new(
        "dr.kim@direct.hillside.test",
        "dr.ana@direct.lakeside.test",
        subject,
        text,
    );
    for (name, data) in files {
        mail = mail.file(name, data.clone());
    }
    deliver(app, mailbox_id, &mail).await
}

/// The restriction stored with a message: (law, reasons).
async fn label(app: &TestApp, id: i64) -> (String, String) {
    sqlx::query_as("select restriction, restriction_reasons from messages where id = $1")
        .bind(id)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
}

async fn page_text(b: &mut Browser, path: &str) -> String {
    let page = b.get(path).await;
    assert_eq!(page.status, StatusCode::OK, "{path}");
    text(&page.body)
}

#[tokio::test]
async fn each_signal_labels_a_received_message_with_its_law_and_reason() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let section_only = referral_with(
        "<title>Social History</title>",
        r#"<confidentialityCode code="R" codeSystem="2.16.840.1.113883.5.25"/>"#,
    );
    let substance_use = referral_with("</text>", &security_entry("ETH"));
    let psychiatry = referral_with("</text>", &security_entry("PSY"));
    let part2_policy = referral_with("</text>", &security_entry("42CFRPart2"));
    let pdf = crate::helpers::pdf("Letter");
    let very_restricted = package(vec![{
        let mut d = document("Therapy letter", "application/pdf", &pdf);
        d.confidentiality = Confidentiality::VeryRestricted;
        d
    }]);
    // (subject, text, attachments, the law stored, a reason among those stored)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, Vec<u8>)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "Section only",
            "See attached.",
            vec![("referral.xml", section_only)],
            "restricted",
            "“Referral to Cardiology” (referral.xml) has a section, “Social History”, marked Restricted (R).",
        ),
        (
            "Substance use",
            "See attached.",
            vec![("referral.xml", substance_use)],
            "part2",
            "“Referral to Cardiology” (referral.xml) carries the security label ETH (substance use information).",
        ),
        (
            "Psychiatry",
            "See attached.",
            vec![("referral.xml", psychiatry)],
            "mental_health",
            "carries the security label PSY (psychiatry information).",
        ),
        (
            "Part 2 policy",
            "See attached.",
            vec![("referral.xml", part2_policy)],
            "part2",
            "carries the security label 42CFRPart2 (42 CFR Part 2 policy).",
        ),
        (
            "Package V",
            "See attached.",
            vec![("records.zip", very_restricted)],
            "restricted",
            "“Therapy letter” (in records.zip) is marked Very restricted (V) in the package.",
        ),
        (
            "Notice in text",
            "42 CFR part 2 prohibits unauthorized disclosure of these records.",
            Vec::new(),
            "part2",
            "The message text carries a 42 CFR Part 2 notice.",
        ),
    ];
    for (subject, body, files, law, reason) in cases {
        let id = received(&app, mb.id, subject, body, &files).await;
        let (stored_law, reasons) = label(&app, id).await;
        assert_eq!(stored_law, law, "{subject}: {reasons}");
        assert!(reasons.contains(reason), "{subject}: {reasons}");
    }
    // a letter, and a note that only mentions a part 20, are not restricted
    let plain = received(
        &app,
        mb.id,
        "Plain",
        "See part 20 of 42 CFR part 20.",
        &[("letter.pdf", pdf.clone())],
    )
    .await;
    assert_eq!(label(&app, plain).await, (String::new(), String::new()));
}

#[tokio::test]
async fn lists_and_searches_show_restricted_record_and_the_page_and_print_carry_the_banner() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let id = received(
        &app,
        mb.id,
        "Methadone dose change for Maria",
        "Methadone dose raised to 80 mg. 42 CFR part 2 prohibits unauthorized disclosure of these records.",
        &[],
    )
    .await;
    let plain = received(&app, mb.id, "Lunch on Friday", "Shall we?", &[]).await;
    let mut ana = app.signed_in(ANA).await;

    let inbox = page_text(&mut ana, &format!("/mail/{}/inbox", mb.id)).await;
    assert!(inbox.contains("Restricted record"), "{inbox}");
    assert!(
        inbox.contains("Lunch on Friday"),
        "ordinary messages keep their subject"
    );
    assert!(
        !inbox.contains("Methadone"),
        "no subject or snippet: {inbox}"
    );

    // a search that matches it finds it, and shows no more than the list does
    let found = page_text(&mut ana, &format!("/mail/{}/search?q=methadone", mb.id)).await;
    assert!(found.contains("Restricted record"), "{found}");
    assert!(!found.contains("Methadone"), "{found}");
    assert!(!found.contains("Lunch"), "{found}");

    // the message itself says which law and why, on the page and in print
    for path in [
        format!("/mail/messages/{id}"),
        format!("/mail/messages/{id}/print?purpose=treatment"),
    ] {
        let shown = page_text(&mut ana, &path).await;
        for words in [
            "Substance use disorder record (42 CFR Part 2)",
            "protected by federal confidentiality rules for substance use disorder records",
            "The message text carries a 42 CFR Part 2 notice.",
        ] {
            assert!(shown.contains(words), "{path}: {words:?} not in {shown}");
        }
    }
    let ordinary = ana.get(&format!("/mail/messages/{plain}")).await;
    assert!(ordinary.by_id("restriction").is_none());
}

#[tokio::test]
async fn print_download_and_forward_of_a_restricted_record_ask_why_and_audit_the_answer() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let letter = crate::helpers::pdf("Counselling letter");
    let id = received(
        &app,
        mb.id,
        "Counselling",
        "42 CFR part 2 prohibits unauthorized disclosure of these records.",
        &[("letter.pdf", letter.clone())],
    )
    .await;
    let ordinary = received(
        &app,
        mb.id,
        "Ordinary",
        "Hello.",
        &[("a.pdf", letter.clone())],
    )
    .await;
    let mut ana = app.signed_in(ANA).await;
    let accesses = || async {
        directmail::audit::list(&app.state.db, &Default::default(), 500)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "restricted.access")
            .map(|e| (e.object, e.detail))
            .collect::<Vec<_>>()
    };

    // asked first, for print and download; nothing of the record is served
    for path in [
        format!("/mail/messages/{id}/print"),
        format!("/mail/messages/{id}/attachments/0"),
    ] {
        let prompt = ana.get(&path).await;
        assert_eq!(prompt.status, StatusCode::OK, "{path}");
        assert!(
            prompt.by_id("purpose-title").is_some(),
            "{path}: {}",
            prompt.body
        );
        assert!(!prompt.body.contains("%PDF"), "{path}");
    }
    // a purpose not on the list, or "other" without words, is asked again with why
    let bad = ana
        .get(&format!(
            "/mail/messages/{id}/print?purpose=other&purpose_other=+"
        ))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad.by_id("purpose-error")
            .unwrap()
            .contains("Say which other purpose")
    );
    let bad = ana
        .get(&format!("/mail/messages/{id}/print?purpose=curiosity"))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        accesses().await.is_empty(),
        "nothing audited before an answer"
    );

    // answered: served, and audited with the purpose and the label
    let printed = ana
        .get(&format!("/mail/messages/{id}/print?purpose=treatment"))
        .await;
    assert_eq!(printed.status, StatusCode::OK);
    assert!(text(&printed.body).contains("Counselling"));
    let file = ana
        .client
        .get(format!(
            "{}/mail/messages/{id}/attachments/0?purpose=other&purpose_other=Court+order+12-345",
            ana.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(file.bytes().await.unwrap().as_ref(), letter.as_slice());
    // forwarding: the button's post is answered with the prompt, then goes ahead
    let asked = ana
        .post(
            &format!("/mail/messages/{id}/act"),
            &[("action", "forward")],
        )
        .await;
    assert_eq!(asked.status, StatusCode::OK);
    assert!(asked.by_id("purpose-title").is_some());
    let forwarded = ana
        .post(
            &format!("/mail/messages/{id}/act"),
            &[("action", "forward"), ("purpose", "consent")],
        )
        .await;
    assert_eq!(
        forwarded.status,
        StatusCode::SEE_OTHER,
        "{}",
        forwarded.body
    );
    assert!(forwarded.location().starts_with("/mail/drafts/"));
    let object = format!("message:{id}");
    let mut seen = accesses().await;
    seen.reverse();
    assert_eq!(
        seen,
        [
            (
                object.clone(),
                "print; purpose: treatment; label: part2".to_owned()
            ),
            (
                object.clone(),
                "download attachment 0; purpose: other: Court order 12-345; label: part2"
                    .to_owned()
            ),
            (object, "forward; purpose: consent; label: part2".to_owned()),
        ]
    );

    // an ordinary message is never asked
    let plain = ana.get(&format!("/mail/messages/{ordinary}/print")).await;
    assert!(plain.by_id("purpose-title").is_none());
    let plain = ana
        .client
        .get(format!(
            "{}/mail/messages/{ordinary}/attachments/0",
            ana.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.bytes().await.unwrap().as_ref(), letter.as_slice());
}

#[tokio::test]
async fn a_restricted_package_document_is_served_only_after_the_purpose() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let pdf = crate::helpers::pdf("Therapy letter");
    let zip = package(vec![{
        let mut d = document("Therapy letter", "application/pdf", &pdf);
        d.confidentiality = Confidentiality::VeryRestricted;
        d
    }]);
    let id = received(
        &app,
        mb.id,
        "Package",
        "See attached.",
        &[("records.zip", zip)],
    )
    .await;
    let ana = app.signed_in(ANA).await;
    for query in ["?download=1", ""] {
        let path = format!("/mail/messages/{id}/attachments/0/xdm/0{query}");
        let (status, _, bytes) = crate::webmail::get_bytes(&ana, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let page = String::from_utf8_lossy(&bytes);
        assert!(
            page.contains("Why do you need this record?"),
            "{path}: {page}"
        );
        assert!(!page.contains("%PDF"), "{path}");
        let answered = format!(
            "{path}{}purpose=operations",
            if query.is_empty() { "?" } else { "&" }
        );
        let (status, _, bytes) = crate::webmail::get_bytes(&ana, &answered).await;
        assert_eq!(status, StatusCode::OK, "{answered}");
        assert_eq!(bytes, pdf, "{answered}");
    }
}

#[tokio::test]
async fn every_read_of_a_restricted_record_is_audited_with_its_label() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let id = received(
        &app,
        mb.id,
        "Counselling",
        "42 CFR part 2 prohibits unauthorized disclosure of these records.",
        &[],
    )
    .await;
    let plain = received(&app, mb.id, "Ordinary", "Hello.", &[]).await;
    let mut ana = app.signed_in(ANA).await;
    ana.get(&format!("/mail/messages/{id}")).await;
    ana.get(&format!("/mail/messages/{plain}")).await;
    let details = |object: String| {
        let db = app.state.db.clone();
        async move {
            directmail::audit::list(&db, &Default::default(), 500)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.action == "message.read" && e.object == object)
                .map(|e| e.detail)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(details(format!("message:{id}")).await, ["label: part2"]);
    assert_eq!(details(format!("message:{plain}")).await, [""]);
}

#[tokio::test]
async fn the_api_lists_a_restricted_record_without_its_subject_and_releases_its_files_for_a_purpose()
 {
    let app = TestApp::spawn().await;
    let token = crate::api::practice(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        ANA,
        "dr.ana@direct.lakeside.test",
    )
    .await;
    let mb = directmail::store::mailboxes::by_address(&app.state.db, "dr.ana@direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    let letter = crate::helpers::pdf("Counselling letter");
    let id = received(
        &app,
        mb.id,
        "Counselling for opioid use",
        "42 CFR part 2 prohibits unauthorized use or disclosure of these records.",
        &[("letter.pdf", letter.clone())],
    )
    .await;
    let http = reqwest::Client::new();
    let (status, list) = crate::api::json(
        http.get(app.url("/api/v1/messages"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let item = &list["messages"][0];
    assert_eq!(item["subject"], "Restricted record");
    assert_eq!(item["restriction"], "part2");
    assert!(!list.to_string().contains("opioid"), "{list}");

    let file = format!("/api/v1/messages/{id}/attachments/0");
    let (status, refused) = crate::api::json(
        http.get(app.url(&file))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_REQUIRED);
    assert_eq!(refused["code"], "purpose_required", "{refused}");
    let (status, _) = crate::api::json(
        http.get(app.url(&format!("{file}?purpose=curiosity")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_REQUIRED);
    let got = http
        .get(app.url(&format!("{file}?purpose=treatment")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap().as_ref(), letter.as_slice());
    let audited: Vec<String> = sqlx::query_scalar(
        "select detail from audit_log where action = 'restricted.access' order by id",
    )
    .fetch_all(&app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        ["download attachment 0 (API); purpose: treatment; label: part2"]
    );
}

mod chromium {
    use std::time::{Duration, Instant};

    use fantoccini::Locator;

    use super::{ana_desk, received};
    use crate::browser::{chromium, path, start_driver};
    use crate::browser_mail::axe_problems;
    use crate::clinical::chromium::sign_in;
    use crate::helpers::TestApp;

    #[tokio::test]
    async fn the_banner_shows_and_forwarding_asks_why_before_the_draft_opens() {
        let app = TestApp::spawn().await;
        let mb = ana_desk(&app).await;
        let id = received(
            &app,
            mb.id,
            "Counselling",
            "42 CFR part 2 prohibits unauthorized disclosure of these records.",
            &[],
        )
        .await;
        let driver = start_driver();
        let profile = tempfile::tempdir().unwrap();
        let c = chromium(&driver, profile.path()).await;
        sign_in(&c, &app).await;
        c.goto(&app.url(&format!("/mail/messages/{id}")))
            .await
            .unwrap();
        let banner = c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#restriction"))
            .await
            .unwrap();
        assert!(
            banner
                .text()
                .await
                .unwrap()
                .contains("Substance use disorder record (42 CFR Part 2)")
        );
        assert_eq!(axe_problems(&c).await, Vec::<String>::new(), "message page");

        // Forward: the question first, then the draft
        c.find(Locator::Css("button[name=action][value=forward]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        c.wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#purpose-title"))
            .await
            .unwrap();
        assert_eq!(axe_problems(&c).await, Vec::<String>::new(), "purpose page");
        c.find(Locator::Css("input[name=purpose][value=treatment]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        c.find(Locator::Css("#purpose-button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !path(&c).await.starts_with("/mail/drafts/") {
            assert!(Instant::now() < deadline, "no draft, at {}", path(&c).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.close().await.unwrap();
    }
}
