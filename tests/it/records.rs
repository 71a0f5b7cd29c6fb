//! Requesting records over Direct and public-health reporting (issue 14), through the
//! real pages and the real S/MIME path: a request goes out with its Direct Context
//! part (read back by `openssl` on the peer's side), the peer sees a request card and
//! answers with documents, the answer closes the request; overdue requests are
//! reminded, open ones cancelled; the authorization PDF is required where the purpose
//! needs it and bad files are refused with a sentence; a case report goes to the
//! operator's public-health route even for a patient who opted out, and the
//! Reportability Response links back to it; other people's requests are not theirs.

use directmail::domain::Role;
use directmail::store::mailboxes::Mailbox;
use directmail::store::requests as store;
use mail_parser::{MessageParser, MimeHeaders as _};
use regex::Regex;
use reqwest::StatusCode;

use crate::clinical::{cda_fixture, text};
use crate::helpers::{Browser, Page, TestApp, opted_out, pdf};
use crate::outbound::{Sink, app_relaying_to_sink, foreign_kim, opened_by_kim, wait_for};
use crate::webmail::{Mail, deliver, delivered, draft_id, message_id_of, windows_program};

const ANA: &str = "ana@direct.lakeside.test";
const ANA_BOX: &str = "dr.ana@direct.lakeside.test";
const KIM: &str = "kim@direct.hillside.test";
const FRONT: &str = "front@direct.hillside.test";
/// The foreign HISP's address of [`foreign_kim`]: a practice, or (in the reporting
/// test) the public-health agency's AIMS address.
const FAR: &str = "kim@direct.far.test";

/// Ana's practice at Lakeside Clinic, with a certificate.
async fn lakeside(app: &TestApp) -> Mailbox {
    app.practice("Lakeside Clinic", "direct.lakeside.test", ANA, ANA_BOX)
        .await
}

/// Ana, signed in at her practice, whose mail to the foreign HISP of [`foreign_kim`]
/// reaches the sink.
async fn ana_writing_far() -> (TestApp, Sink, Mailbox, Browser) {
    let (app, sink) = app_relaying_to_sink().await;
    let ana_box = lakeside(&app).await;
    foreign_kim(&app).await;
    let ana = app.signed_in(ANA).await;
    (app, sink, ana_box, ana)
}

/// Ana opens the request form of `mailbox` and sends [`request_fields`] to `to`.
async fn request_sent(ana: &mut Browser, mailbox: i64, to: &str) -> Page {
    ana.get(&format!("/mail/{mailbox}/requests/new")).await;
    let sent = post_request(ana, mailbox, &request_fields(to), None).await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    sent
}

/// A complete request for Ana Lopez's summary and results, as the form sends it.
fn request_fields(to: &str) -> Vec<(&'static str, String)> {
    vec![
        ("to", to.to_owned()),
        ("patient_given", "Ana".into()),
        ("patient_family", "Lopez".into()),
        ("patient_birth_date", "1970-03-12".into()),
        ("patient_sex", "F".into()),
        ("patient_id", "2.16.840.1.113883.19.5:12345".into()),
        ("needed", "summary".into()),
        ("needed", "results".into()),
        ("date_from", "2025-01-01".into()),
        ("date_to", "2025-06-30".into()),
        ("patient_purpose", "treatment".into()),
        ("urgency", "urgent".into()),
        (
            "note",
            "Seen here on 2025-07-01 <b>for follow-up</b>.".into(),
        ),
    ]
}

/// Posts the request form of `mailbox` (multipart, the CSRF token in `_csrf`), with
/// the authorization file when given.
async fn post_request(
    b: &mut Browser,
    mailbox: i64,
    fields: &[(&'static str, String)],
    file: Option<(&str, &str, Vec<u8>)>,
) -> Page {
    let mut form = reqwest::multipart::Form::new().text("_csrf", b.csrf.clone());
    for (name, value) in fields {
        form = form.text(*name, value.clone());
    }
    if let Some((name, content_type, data)) = file {
        let part = reqwest::multipart::Part::bytes(data)
            .file_name(name.to_owned())
            .mime_str(content_type)
            .unwrap();
        form = form.part("authorization", part);
    }
    let r = b
        .client
        .post(format!("{}/mail/{mailbox}/requests/new", b.base))
        .multipart(form)
        .send()
        .await
        .expect("POST");
    Page {
        status: r.status(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap_or_default(),
    }
}

/// The field error shown beside `field` ("" when none).
fn field_error(page: &Page, field: &str) -> String {
    page.by_id(&format!("{field}-error"))
        .unwrap_or_default()
        .replace("&#39;", "'")
}

/// The `n`th message the foreign HISP received (0 first), decrypted with Kim's key by
/// `openssl cms`: the message inside the signed wrapper, parsed by the caller.
async fn received_by_far(app: &TestApp, sink: &Sink, n: usize) -> Vec<u8> {
    app.state.wake_sender.notify_one();
    wait_for("the foreign HISP to receive it", async || {
        sink.received.lock().unwrap().len() > n
    })
    .await;
    let data = sink.received.lock().unwrap()[n].1.clone();
    let dir = app.data_dir.path();
    std::fs::write(dir.join(format!("far{n}.eml")), &data).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "set -e
openssl cms -decrypt -in far{n}.eml -recip kim.pem -inkey kim.key -out far{n}.signed
openssl cms -verify -noverify -in far{n}.signed -out far{n}.inner 2>/dev/null"
        ))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    unwrapped(&std::fs::read(dir.join(format!("far{n}.inner"))).unwrap())
}

/// The message inside a `message/rfc822` wrapper (Applicability Statement 1.3 wraps
/// every message): what follows the wrapper's headers.
fn unwrapped(inner: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(inner);
    assert!(text.contains("message/rfc822"), "{text}");
    let at = text
        .find("\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| text.find("\n\n").map(|i| i + 2))
        .unwrap();
    inner[at..].to_vec()
}

/// The Direct Context block of a message as the peer reads it.
fn context_of(raw: &[u8]) -> directmail_content::context::Context {
    let parsed = MessageParser::default().parse(raw).expect("a message");
    directmail::patient::context_block(&parsed)
        .map(|(_, block)| block)
        .unwrap_or_else(|| panic!("no Direct Context: {}", String::from_utf8_lossy(raw)))
}

async fn request_row(app: &TestApp, mailbox_id: i64) -> store::RequestRow {
    let id: i64 = sqlx::query_scalar(
        "select id from record_requests where mailbox_id = $1 order by id desc limit 1",
    )
    .bind(mailbox_id)
    .fetch_one(&app.state.db.pool)
    .await
    .unwrap();
    store::get(&app.state.db, id).await.unwrap().unwrap()
}

async fn audited(app: &TestApp, action: &str) -> Vec<String> {
    sqlx::query_scalar("select detail from audit_log where action = $1 order by id")
        .bind(action)
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap()
}

/// The operator's form for a public-health reporting route, as `b` sends it.
async fn route_posted(b: &mut Browser, jurisdiction: &str, address: &str, types: &str) -> Page {
    b.post(
        "/reporting",
        &[
            ("jurisdiction", jurisdiction),
            ("address", address),
            ("document_types", types),
        ],
    )
    .await
}

/// The ids of the requests listed on a page of the requests list.
fn listed(page: &Page) -> Vec<i64> {
    Regex::new(r#"data-request="(\d+)""#)
        .unwrap()
        .captures_iter(&page.body)
        .map(|c| c[1].parse().unwrap())
        .collect()
}

#[tokio::test]
async fn a_request_goes_out_with_its_context_part_and_the_other_hisp_reads_the_patient_in_it() {
    let (app, sink, ana_box, mut ana) = ana_writing_far().await;
    // from the mailbox's menu
    let inbox = ana.get(&format!("/mail/{}/inbox", ana_box.id)).await;
    let link = format!("/mail/{}/requests/new", ana_box.id);
    assert!(inbox.body.contains(&format!(r#"href="{link}""#)));
    let form = ana.get(&link).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let sent = request_sent(&mut ana, ana_box.id, FAR).await;
    let sent_copy = message_id_of(&sent.location());

    // what the other HISP received, decrypted and verified by openssl
    let (data, shown) = opened_by_kim(&app, &sink).await;
    assert!(
        !String::from_utf8_lossy(&data).contains("Lopez"),
        "nothing of the patient outside the encryption"
    );
    let raw = unwrapped(
        shown
            .split_once("Verification successful")
            .unwrap()
            .1
            .trim_start()
            .as_bytes(),
    );
    let parsed = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(parsed.subject(), Some("Urgent: request for records"));
    let context = context_of(&raw);
    assert_eq!(context.kind.as_deref(), Some("request/records"));
    assert_eq!(context.purpose.as_deref(), Some("treatment"));
    assert_eq!(context.version.as_deref(), Some("1.1"));
    assert_eq!(
        context.patient_id.as_deref(),
        Some("2.16.840.1.113883.19.5:12345")
    );
    let patient = context.patient.clone().unwrap();
    assert_eq!(patient.name().as_deref(), Some("Ana Lopez"));
    assert_eq!(patient.date_of_birth.as_deref(), Some("1970-03-12"));
    assert_eq!(patient.gender.as_deref(), Some("F"));
    // the context id is the request's Message-ID, which the requester keeps
    let row = request_row(&app, ana_box.id).await;
    assert_eq!(context.id.as_deref(), Some(row.message_key.as_str()));
    assert_eq!(parsed.message_id(), Some(row.message_key.as_str()));
    let body = parsed.body_text(0).unwrap().to_string();
    for line in [
        "Patient: Ana Lopez, born 1970-03-12, identifier 2.16.840.1.113883.19.5:12345",
        "Records needed: Summary of care, Results",
        "Dates: From 2025-01-01 to 2025-06-30",
        "Purpose: Treatment",
        "Urgency: Urgent",
    ] {
        assert!(body.contains(line), "{line} in {body}");
    }
    // the request is listed open, linked to its Sent copy, and audited
    assert_eq!(row.status, "open");
    assert_eq!(row.sent_message_id, Some(sent_copy));
    assert_eq!(row.recipient, FAR);
    let list = ana.get(&format!("/mail/{}/requests", ana_box.id)).await;
    assert_eq!(listed(&list), vec![row.id]);
    assert!(list.body.contains("Ana Lopez, born 1970-03-12"));
    assert!(list.body.contains(&format!("/mail/messages/{sent_copy}")));
    let entries = audited(&app, "records.request").await;
    assert_eq!(entries.len(), 1);
    assert!(
        !entries[0].contains("Lopez"),
        "no patient in the audit detail"
    );
}

/// Puts a message in `mailbox_id`'s Inbox as the other practice's reply: from
/// `from`, answering `in_reply_to`, with the Context id `context_id` (when given) and
/// a PDF when `with_file`.
async fn reply_arrives(
    app: &TestApp,
    mailbox_id: i64,
    from: &str,
    subject: &str,
    in_reply_to: Option<&str>,
    context_id: Option<&str>,
    with_file: bool,
) -> i64 {
    let files = if with_file {
        vec![("summary.pdf", "application/pdf", pdf("Summary of care"))]
    } else {
        Vec::new()
    };
    arrives(
        app,
        mailbox_id,
        from,
        subject,
        in_reply_to,
        context_id,
        files,
    )
    .await
}

/// [`reply_arrives`] with these files.
async fn arrives(
    app: &TestApp,
    mailbox_id: i64,
    from: &str,
    subject: &str,
    in_reply_to: Option<&str>,
    context_id: Option<&str>,
    files: Vec<(&str, &str, Vec<u8>)>,
) -> i64 {
    let boundary = "=_reply_boundary";
    let message_id = format!("{}@hillside.test", subject.replace(' ', "."));
    let mut m = format!(
        "From: <{from}>\r\nTo: {ANA_BOX}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n"
    );
    if let Some(parent) = in_reply_to {
        m.push_str(&format!(
            "In-Reply-To: <{parent}>\r\nReferences: <{parent}>\r\n"
        ));
    }
    if context_id.is_some() {
        m.push_str("X-Direct-Context: <ctx@hillside.test>\r\n");
    }
    m.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\nHere you are.\r\n"
    ));
    if let Some(id) = context_id {
        m.push_str(&format!(
            "--{boundary}\r\nContent-Type: text/plain\r\nContent-ID: <ctx@hillside.test>\r\nContent-Disposition: attachment; filename=\"metadata.txt\"\r\n\r\nversion: 1.1\r\nid: {id}\r\n"
        ));
    }
    for (name, content_type, data) in files {
        use base64::Engine as _;
        m.push_str(&format!(
            "--{boundary}\r\nContent-Type: {content_type}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64::engine::general_purpose::STANDARD.encode(data)
        ));
    }
    m.push_str(&format!("--{boundary}--\r\n"));
    let raw = m.into_bytes();
    let filing = directmail::filing::read(&raw);
    let db = &app.state.db;
    let _turn = db.write_turn().await;
    let mut tx = db.begin().await.unwrap();
    assert!(
        directmail::store::inbound::deliver(
            &mut tx,
            directmail::store::inbound::NewMessage {
                mailbox_id,
                inbound_id: None,
                message_id: Some(&message_id),
                from_addr: from,
                subject,
                trust_code: "trusted",
                trust_sentence: "The sender's signature is valid and trusted.",
                signer_subject: Some("CN=hillside.test"),
                signer_issuer: Some("CN=Hillside CA"),
                revocation: "checked",
                raw: &raw,
                index: &directmail::store::messages::Indexed::of(&raw),
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

#[tokio::test]
async fn a_received_request_shows_its_card_and_the_reply_with_documents_answers_it() {
    let app = TestApp::spawn().await;
    let (ana_box, front_box) = app.lakeside_and_hillside().await;
    let mut ana = app.signed_in(ANA).await;
    let sent = request_sent(&mut ana, ana_box.id, FRONT).await;
    let request = request_row(&app, ana_box.id).await;

    // replies that do not answer it: no documents; documents from someone else; a
    // message naming another request
    reply_arrives(
        &app,
        ana_box.id,
        FRONT,
        "Question",
        Some(&request.message_key),
        None,
        false,
    )
    .await;
    reply_arrives(
        &app,
        ana_box.id,
        "mallory@direct.elsewhere.test",
        "Look here",
        Some(&request.message_key),
        Some(&request.message_key),
        true,
    )
    .await;
    reply_arrives(
        &app,
        ana_box.id,
        FRONT,
        "Other patient",
        Some("someone-else@x.test"),
        None,
        true,
    )
    .await;
    assert_eq!(request_row(&app, ana_box.id).await.status, "open");

    // the front desk at Hillside receives it through the full S/MIME path
    let received = delivered(&app, front_box.id, "Urgent: request for records").await;
    let mut kim = app.signed_in(KIM).await;
    let page = kim.get(&format!("/mail/messages/{received}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let card = page.by_id("request-card-heading").expect("a request card");
    assert!(card.contains(ANA_BOX), "{card}");
    assert!(page.body.contains(r#"id="reply-with-documents""#));
    // the sender's note is text, never markup
    assert!(page.body.contains("&lt;b&gt;for follow-up"));
    // Ana's own Sent copy has no card
    let own = ana.get(&sent.location()).await;
    assert!(own.by_id("request-card-heading").is_none());

    let reply = kim
        .post(
            &format!("/mail/messages/{received}/reply-with-documents"),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let draft = draft_id(&reply.location());
    let page = kim.get(&reply.location()).await;
    assert_eq!(page.by_id("to").as_deref(), Some(ANA_BOX));
    assert_eq!(
        page.by_id("subject").as_deref(),
        Some("Re: Urgent: request for records")
    );
    assert_eq!(page.by_id("patient_family").as_deref(), Some("Lopez"));
    assert_eq!(page.by_id("patient_given").as_deref(), Some("Ana"));
    let stored = directmail::store::drafts::get(&app.state.db, draft)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.in_reply_to.as_deref(),
        Some(format!("<{}>", request.message_key).as_str())
    );
    let up = kim
        .upload(
            &format!("/mail/drafts/{draft}/attachments"),
            &[("summary.pdf", "application/pdf", &pdf("Summary of care"))],
            false,
        )
        .await;
    assert!(
        up.status.is_success() || up.status.is_redirection(),
        "{}",
        up.body
    );
    let send = kim
        .post(
            &format!("/mail/drafts/{draft}/send"),
            &[
                ("to", ANA_BOX),
                ("subject", "Re: Urgent: request for records"),
                ("body", "The summary is attached."),
            ],
        )
        .await;
    assert_eq!(send.status, StatusCode::SEE_OTHER, "{}", send.body);

    let answer = delivered(&app, ana_box.id, "Re: Urgent: request for records").await;
    let row = request_row(&app, ana_box.id).await;
    assert_eq!(row.status, "answered");
    let own = ana.get(&sent.location()).await;
    assert_eq!(
        own.by_id("sent-request").as_deref(),
        Some("A records request, answered: see ")
    );
    assert_eq!(row.answer_message_id, Some(answer));
    // the answer carries the request's Context id
    let stored = directmail::store::inbound::message(&app.state.db, answer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        context_of(&stored.raw).id.as_deref(),
        Some(request.message_key.as_str())
    );
    let list = ana
        .get(&format!("/mail/{}/requests?show=answered", ana_box.id))
        .await;
    assert_eq!(listed(&list), vec![row.id]);
    assert!(
        list.body
            .contains(&format!(r#"href="/mail/messages/{answer}" class="answer""#))
    );
    let open = ana.get(&format!("/mail/{}/requests", ana_box.id)).await;
    assert!(listed(&open).is_empty());
}

#[tokio::test]
async fn an_overdue_request_is_reminded_as_a_reply_to_it_and_a_cancelled_one_stays_cancelled() {
    let (app, sink, ana_box, mut ana) = ana_writing_far().await;
    for _ in 0..2 {
        request_sent(&mut ana, ana_box.id, FAR).await;
    }
    let ids: Vec<i64> = sqlx::query_scalar("select id from record_requests order by id")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    let (old, fresh) = (ids[0], ids[1]);
    // the first was sent fifteen days ago (the setting's default is 14)
    sqlx::query("update record_requests set created_at = $1 where id = $2")
        .bind(app.now() - 15 * 86_400)
        .bind(old)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    let open = ana.get(&format!("/mail/{}/requests", ana_box.id)).await;
    assert_eq!(listed(&open), vec![fresh]);
    let overdue = ana
        .get(&format!("/mail/{}/requests?show=overdue", ana_box.id))
        .await;
    assert_eq!(listed(&overdue), vec![old]);
    assert!(overdue.body.contains("<strong>Overdue</strong>"));
    assert!(overdue.body.contains("Overdue (1)"));

    let reminded = ana.post(&format!("/mail/requests/{old}/remind"), &[]).await;
    assert_eq!(reminded.status, StatusCode::SEE_OTHER, "{}", reminded.body);
    let original = store::get(&app.state.db, old).await.unwrap().unwrap();
    assert_eq!(original.reminders, 1);
    // the two requests went first; the reminder is the third message out
    let raw = received_by_far(&app, &sink, 2).await;
    let parsed = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(parsed.subject(), Some("Reminder: request for records"));
    assert_eq!(
        parsed.in_reply_to().as_text(),
        Some(original.message_key.as_str())
    );
    let context = context_of(&raw);
    assert_eq!(context.kind.as_deref(), Some("request/records"));
    assert_eq!(context.id.as_deref(), Some(original.message_key.as_str()));
    assert_eq!(
        context.patient.and_then(|p| p.name()).as_deref(),
        Some("Ana Lopez")
    );
    let page = ana
        .get(&format!("/mail/{}/requests?show=overdue", ana_box.id))
        .await;
    assert!(page.body.contains("Reminded 1 time, last"), "{}", page.body);
    assert_eq!(audited(&app, "records.request.remind").await.len(), 1);

    // the requester cancels the other one
    let cancelled = ana
        .post(&format!("/mail/requests/{fresh}/cancel"), &[])
        .await;
    assert_eq!(cancelled.status, StatusCode::SEE_OTHER);
    let page = ana
        .get(&format!("/mail/{}/requests?show=cancelled", ana_box.id))
        .await;
    assert_eq!(listed(&page), vec![fresh]);
    assert!(page.body.contains("Request cancelled."), "{}", page.body);
    // neither a reminder nor a late answer reopens it
    ana.post(&format!("/mail/requests/{fresh}/remind"), &[])
        .await;
    let page = ana.get(&format!("/mail/{}/requests", ana_box.id)).await;
    assert!(page.body.contains("Only an open request can be reminded."));
    let key = store::get(&app.state.db, fresh)
        .await
        .unwrap()
        .unwrap()
        .message_key;
    reply_arrives(&app, ana_box.id, FAR, "Late answer", Some(&key), None, true).await;
    let row = store::get(&app.state.db, fresh).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.reminders), ("cancelled", 0));
    assert_eq!(audited(&app, "records.request.cancel").await.len(), 1);
    // the answer to the reminded one, naming it only by its Context id, answers it
    reply_arrives(
        &app,
        ana_box.id,
        FAR,
        "Records",
        Some("reminder@x.test"),
        Some(&original.message_key),
        true,
    )
    .await;
    assert_eq!(
        store::get(&app.state.db, old)
            .await
            .unwrap()
            .unwrap()
            .status,
        "answered"
    );
}

#[tokio::test]
async fn research_needs_a_pdf_authorization_and_bad_files_are_refused_keeping_what_was_typed() {
    let (app, sink, ana_box, mut ana) = ana_writing_far().await;
    ana.get(&format!("/mail/{}/requests/new", ana_box.id)).await;
    let mut research = request_fields(FAR);
    research.retain(|(k, _)| *k != "patient_purpose");
    research.push(("patient_purpose", "research".into()));

    // no authorization
    let page = post_request(&mut ana, ana_box.id, &research, None).await;
    assert_eq!(
        page.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        page.body
    );
    assert_eq!(
        field_error(&page, "authorization"),
        "Records for research need the patient's signed authorization: attach it as a PDF."
    );
    // what was typed is kept, escaped
    assert_eq!(page.by_id("patient_family").as_deref(), Some("Lopez"));
    assert_eq!(page.by_id("date_from").as_deref(), Some("2025-01-01"));
    assert!(
        page.body
            .contains("Seen here on 2025-07-01 &#60;b&#62;for follow-up")
    );
    assert!(page.body.contains(r#"id="needed-results" checked"#));
    assert!(page.body.contains(r#"<option value="research" selected>"#));

    // substance-use-disorder records need consent whatever the purpose
    let mut part2 = request_fields(FAR);
    part2.push(("part2", "1".into()));
    let page = post_request(&mut ana, ana_box.id, &part2, None).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_error(&page, "authorization").contains("written consent"));

    // not a PDF, whatever its name says
    let page = post_request(
        &mut ana,
        ana_box.id,
        &research,
        Some(("authorization.pdf", "application/pdf", windows_program())),
    )
    .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    let why = field_error(&page, "authorization");
    assert!(
        why.contains("authorization.pdf") && why.ends_with('.'),
        "{why}"
    );
    // a text file honestly named
    let page = post_request(
        &mut ana,
        ana_box.id,
        &research,
        Some(("consent.txt", "text/plain", b"I agree.".to_vec())),
    )
    .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!field_error(&page, "authorization").is_empty());
    // too large: over the form's own limit, with what was typed kept
    let mut big = pdf("Authorization");
    big.resize(950 * 1024, b' ');
    let page = post_request(
        &mut ana,
        ana_box.id,
        &research,
        Some(("authorization.pdf", "application/pdf", big)),
    )
    .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_error(&page, "authorization"),
        "The authorization file is larger than 900 KB; scan it at a lower resolution or in black and white and attach it again."
    );
    assert_eq!(page.by_id("patient_family").as_deref(), Some("Lopez"));
    // and over what any upload form takes (1 MB): refused whole, with a sentence
    let mut huge = pdf("Authorization");
    huge.resize(3 * 1024 * 1024, b' ');
    let page = post_request(
        &mut ana,
        ana_box.id,
        &research,
        Some(("authorization.pdf", "application/pdf", huge)),
    )
    .await;
    assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(page.body.contains("larger than this form accepts (1 MB)"));
    // a good file with a mistake elsewhere: asked to choose it again
    let mut mistaken = research.clone();
    mistaken.retain(|(k, _)| *k != "date_to");
    mistaken.push(("date_to", "2024-12-31".into()));
    let page = post_request(
        &mut ana,
        ana_box.id,
        &mistaken,
        Some(("authorization.pdf", "application/pdf", pdf("Authorization"))),
    )
    .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_error(&page, "date_to"),
        "The end of the date range is before its start."
    );
    assert!(page.by_id("choose-again").is_some());
    // other mistakes, each in a sentence beside its field
    let page = post_request(
        &mut ana,
        ana_box.id,
        &[
            ("to", "nobody at all".into()),
            ("patient_given", "Ana;gender=M".into()),
            ("needed", "everything".into()),
            ("date_from", "2025-02-30".into()),
            ("urgency", "now".into()),
            ("patient_purpose", "curiosity".into()),
        ],
        None,
    )
    .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    for field in [
        "to",
        "patient_given",
        "patient_family",
        "needed",
        "date_from",
        "urgency",
        "patient_purpose",
    ] {
        let why = field_error(&page, field);
        assert!(why.ends_with('.') && why.len() > 10, "{field}: {why:?}");
    }
    assert!(sink.received.lock().unwrap().is_empty());
    assert!(audited(&app, "records.request").await.is_empty());

    // with the authorization it goes, the PDF attached
    let page = post_request(
        &mut ana,
        ana_box.id,
        &research,
        Some(("authorization.pdf", "application/pdf", pdf("Authorization"))),
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let raw = received_by_far(&app, &sink, 0).await;
    let parsed = MessageParser::default().parse(&raw).unwrap();
    let files: Vec<&str> = parsed
        .attachments()
        .filter_map(|a| a.attachment_name())
        .collect();
    assert!(files.contains(&"authorization.pdf"), "{files:?}");
    assert_eq!(context_of(&raw).purpose.as_deref(), Some("research"));
}

#[tokio::test]
async fn another_practice_cannot_see_remind_cancel_or_answer_requests_and_only_operators_keep_routes()
 {
    let app = TestApp::spawn().await;
    let (ana_box, front_box) = app.lakeside_and_hillside().await;
    let mut ana = app.signed_in(ANA).await;
    let sent = request_sent(&mut ana, ana_box.id, FRONT).await;
    let request = request_row(&app, ana_box.id).await;
    let sent_copy = message_id_of(&sent.location());

    let mut kim = app.signed_in(KIM).await;
    for path in [
        format!("/mail/{}/requests", ana_box.id),
        format!("/mail/{}/requests/new", ana_box.id),
        format!("/mail/{}/requests/new?message={sent_copy}", front_box.id),
        format!("/mail/requests/new?message={sent_copy}"),
    ] {
        assert_eq!(kim.get(&path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    for path in [
        format!("/mail/requests/{}/cancel", request.id),
        format!("/mail/requests/{}/remind", request.id),
        format!("/mail/messages/{sent_copy}/reply-with-documents"),
        format!("/mail/messages/{sent_copy}/report"),
    ] {
        assert_eq!(
            kim.post(&path, &[]).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let forged = post_request(&mut kim, ana_box.id, &request_fields(FRONT), None).await;
    assert_eq!(forged.status, StatusCode::NOT_FOUND);
    // without the form's token nothing is done, even by the requester
    let r = ana
        .post_raw(
            &format!("/mail/requests/{}/cancel", request.id),
            String::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let row = store::get(&app.state.db, request.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.status.as_str(), row.reminders), ("open", 0));
    assert_eq!(
        sqlx::query_scalar::<_, i64>("select count(*) from record_requests")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap(),
        1
    );
    // the routes are the operator's
    assert_eq!(kim.get("/reporting").await.status, StatusCode::FORBIDDEN);
    let r = route_posted(&mut kim, "Illinois", "ecr@aims.example", "55751-2").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        directmail::store::reporting::list(&app.state.db)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_case_report_goes_on_the_route_despite_an_opt_out_and_the_response_links_back_to_it() {
    let (app, sink) = app_relaying_to_sink().await;
    let ana_box = lakeside(&app).await;
    foreign_kim(&app).await;
    app.user(None, "ops@hisp.test", Role::Operator).await;
    let mut ops = app.signed_in("ops@hisp.test").await;
    assert!(
        ops.get("/reporting")
            .await
            .body
            .contains(r#"value="55751-2""#)
    );
    // a bad route is refused field by field, keeping what was typed
    let page = route_posted(&mut ops, "", "aims", "eICR").await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(page.by_id("address").as_deref(), Some("aims"));
    for field in ["jurisdiction", "address", "document_types"] {
        assert!(page.by_id(&format!("{field}-error")).is_some(), "{field}");
    }
    let saved = route_posted(&mut ops, "Illinois", FAR, "55751-2").await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let route = directmail::store::reporting::list(&app.state.db)
        .await
        .unwrap()[0]
        .clone();
    assert_eq!(audited(&app, "reporting.route.save").await.len(), 1);

    // the eICR's patient opted out of HIE sharing, and the message is a restricted
    // mental-health record
    opted_out(&app, ana_box.org_id, ANA, ("Tomas", "Reyes", "1990-06-22")).await;
    let case = deliver(
        &app,
        ana_box.id,
        &Mail::new(
            "lab@direct.lakeside.test",
            ANA_BOX,
            "Case report",
            "eICR for review.",
        )
        .file("eicr.xml", cda_fixture("eicr.xml")),
    )
    .await;
    sqlx::query("update messages set restriction = 'mental_health' where id = $1")
        .bind(case)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    // a message without a case report offers no report
    let plain = deliver(&app, ana_box.id, &Mail::new(FRONT, ANA_BOX, "Hello", "Hi.")).await;
    let mut ana = app.signed_in(ANA).await;
    assert!(
        ana.get(&format!("/mail/messages/{plain}"))
            .await
            .by_id("report-form")
            .is_none()
    );
    let page = ana.get(&format!("/mail/messages/{case}")).await;
    assert!(page.body.contains(&format!(
        r#"<option value="{}">Illinois: {FAR}</option>"#,
        route.id
    )));
    // the document viewer offers it too, for the eICR (and not for the RR below)
    let viewer = ana
        .get(&format!("/mail/messages/{case}/attachments/0/cda"))
        .await;
    assert!(
        viewer.body.contains(&format!(
            r#"<option value="{}">Illinois: {FAR}</option>"#,
            route.id
        )),
        "{}",
        viewer.body
    );
    let reported = ana
        .post(
            &format!("/mail/messages/{case}/report"),
            &[("route", &route.id.to_string())],
        )
        .await;
    assert_eq!(reported.status, StatusCode::SEE_OTHER, "{}", reported.body);
    let report = message_id_of(&reported.location());

    // the agency receives the eICR, with the law's notice
    let raw = received_by_far(&app, &sink, 0).await;
    let parsed = MessageParser::default().parse(&raw).unwrap();
    let eicr = parsed
        .attachments()
        .find(|a| a.attachment_name() == Some("eicr.xml"))
        .expect("the eICR");
    assert_eq!(eicr.contents(), cda_fixture("eicr.xml").as_slice());
    assert!(String::from_utf8_lossy(&raw).contains("Illinois"));
    let detail = audited(&app, "public_health.report").await;
    assert_eq!(detail.len(), 1);
    assert!(detail[0].contains("route Illinois"), "{}", detail[0]);
    let disclosed: String = sqlx::query_scalar("select purpose from disclosures")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(disclosed, "Public-health reporting");

    // the Reportability Response comes back in reply to the report
    let report_key: String = sqlx::query_scalar("select message_id from messages where id = $1")
        .bind(report)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    let rr = arrives(
        &app,
        ana_box.id,
        FAR,
        "Reportability Response",
        Some(&report_key),
        None,
        vec![(
            "rr.xml",
            "application/xml",
            cda_fixture("reportability-response.xml"),
        )],
    )
    .await;
    let viewer = ana
        .get(&format!("/mail/messages/{rr}/attachments/0/cda"))
        .await;
    assert_eq!(viewer.status, StatusCode::OK, "{}", viewer.body);
    assert!(viewer.by_id("report-form").is_none());
    let link = Regex::new(r#"<a href="([^"]*)" id="rr-eicr-link">"#)
        .unwrap()
        .captures(&viewer.body)
        .map(|c| c[1].to_owned());
    assert_eq!(
        link,
        Some(format!("/mail/messages/{report}")),
        "{}",
        text(&viewer.body)
    );
    let threaded = directmail::store::inbound::message(&app.state.db, rr)
        .await
        .unwrap()
        .unwrap();
    let parsed = MessageParser::default().parse(&threaded.raw).unwrap();
    assert_eq!(parsed.in_reply_to().as_text(), Some(report_key.as_str()));
}

#[tokio::test]
async fn the_requests_page_pages_by_fifty_and_the_admin_command_keeps_the_routes() {
    let app = TestApp::spawn().await;
    let ana_box = lakeside(&app).await;
    let user: i64 = sqlx::query_scalar("select id from users where email = $1")
        .bind(ANA)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    let mut tx = app.state.db.begin().await.unwrap();
    for n in 0..51 {
        let key = format!("request-{n}@direct.lakeside.test");
        let patient = format!("Patient {n}");
        store::insert(
            &mut tx,
            store::NewRequest {
                mailbox_id: ana_box.id,
                user_id: user,
                outbound_id: 0,
                sent_message_id: None,
                message_key: &key,
                recipient: FRONT,
                patient: &patient,
                needed: "all",
                date_from: "",
                date_to: "",
                purpose: "treatment",
                urgency: "routine",
            },
            app.now(),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let mut ana = app.signed_in(ANA).await;
    let first = ana.get(&format!("/mail/{}/requests", ana_box.id)).await;
    let page_one = listed(&first);
    assert_eq!(page_one.len(), 50);
    assert!(first.body.contains("Open (51)"));
    let next = first.by_id("requests-next").map(|_| {
        Regex::new(r#"href="([^"]*)" rel="next""#)
            .unwrap()
            .captures(&first.body)
            .unwrap()[1]
            .replace("&amp;", "&")
            .replace("&#38;", "&")
    });
    let next = next.expect("a next page");
    let second = ana.get(&next).await;
    let page_two = listed(&second);
    assert_eq!(page_two.len(), 1);
    assert!(page_two[0] < *page_one.last().unwrap());
    assert!(second.by_id("requests-next").is_none());
    // a hostile page position changes nothing
    let odd = ana
        .get(&format!(
            "/mail/{}/requests?show=%27;drop&before=-1",
            ana_box.id
        ))
        .await;
    assert_eq!(odd.status, StatusCode::OK);
    assert!(listed(&odd).is_empty());

    // the routes from a script
    let out = crate::cli::directmail(
        &app,
        &[
            "admin",
            "reporting",
            "add",
            "--jurisdiction",
            "Illinois",
            "--address",
            "ECR@aims.example",
            "--json",
        ],
    )
    .await;
    let value = crate::cli::json(&out);
    assert_eq!(value["address"], "ecr@aims.example");
    assert_eq!(value["document_types"][0], "55751-2");
    let out = crate::cli::directmail(
        &app,
        &[
            "admin",
            "reporting",
            "add",
            "--jurisdiction",
            "Ohio",
            "--address",
            "not an address",
            "--types",
            "eICR",
        ],
    )
    .await;
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains("Direct address") && why.contains("LOINC"),
        "{why}"
    );
    let out = crate::cli::directmail(&app, &["admin", "reporting", "list"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Illinois\tecr@aims.example\t55751-2"
    );
    let out = crate::cli::directmail(&app, &["admin", "reporting", "remove", "Illinois"]).await;
    assert!(out.status.success());
    assert!(
        directmail::store::reporting::list(&app.state.db)
            .await
            .unwrap()
            .is_empty()
    );
    let out = crate::cli::directmail(&app, &["admin", "reporting", "remove", "Illinois"]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("There is no reporting route"));
    assert_eq!(audited(&app, "reporting.route.save").await.len(), 1);
    assert_eq!(audited(&app, "reporting.route.remove").await.len(), 1);
}

#[tokio::test]
async fn writing_to_a_reporting_route_from_compose_is_not_stopped_by_the_opt_out_list() {
    let app = TestApp::spawn().await;
    let (ana_box, _) = app.lakeside_and_hillside().await;
    opted_out(&app, ana_box.org_id, ANA, ("Ana", "Lopez", "1970-03-12")).await;
    let mut ana = app.signed_in(ANA).await;
    let draft = crate::webmail::compose(&mut ana, ana_box.id).await;
    let fields = [
        ("sensitive_box", "1"),
        ("to", FRONT),
        ("subject", "Case notes"),
        ("body", "Notes."),
        ("sensitivity", "mental_health"),
        ("patient_given", "Ana"),
        ("patient_family", "Lopez"),
        ("patient_birth_date", "1970-03-12"),
        ("patient_purpose", "treatment"),
    ];
    // an ordinary practice outside the organization: stopped
    let stopped = ana
        .post(&format!("/mail/drafts/{draft}/send"), &fields)
        .await;
    assert_eq!(stopped.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(stopped.by_id("opt-out-stop").is_some());
    // the same address as a public-health reporting route: not stopped (the
    // recipients are shown to confirm, as for any sensitive record)
    let mut tx = app.state.db.begin().await.unwrap();
    directmail::store::reporting::upsert(
        &mut tx,
        "Illinois",
        FRONT,
        &["55751-2".into()],
        app.now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let shown = ana
        .post(&format!("/mail/drafts/{draft}/send"), &fields)
        .await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert!(shown.by_id("opt-out-stop").is_none());
    assert!(shown.body.contains(r#"name="reviewed""#));
}
