//! A Reportability Response linked to the message that carried the case report (eICR)
//! it answers: every clinical document of a message is recorded by its identifier when
//! the message is filed (sent or received, attached or inside an XDM package), and the
//! RR card on the viewer page links to the message that carried the eICR — only one the
//! reader may open (a mailbox assigned to them), our Sent copy first — or says plainly
//! that there is none. Also: the migration on a database that already has messages.
//!
//! The eICR and the RR are the content crate's fixtures (`eicr.xml` is the case report
//! `reportability-response.xml` answers); other identifiers are written into copies.

use directmail::clock::format_utc;
use directmail::db::{Backend, Db};
use directmail::domain::Role;
use directmail::filing::CarriedDocument;
use directmail::outbound::{Attachment, Draft};
use directmail::store::mailboxes::{Mailbox, MailboxKind};
use directmail::store::{documents, inbound, messages, orgs};
use regex::Regex;
use reqwest::StatusCode;

use crate::clinical::{cda_fixture, document, package, rr_card_of, text};
use crate::helpers::{Browser, TestApp, fresh_database, org_in};
use crate::webmail::{Mail, assign, compose, deliver, delivered, mailbox_in, message_id_of};

const ANA: &str = "ana@direct.lakeside.test";
const KIM: &str = "kim@direct.hillside.test";
const PUBLIC_HEALTH: &str = "ecr@aims.example";
/// The identifier of `eicr.xml`, which `reportability-response.xml` answers.
const EICR_ROOT: &str = "5b1e9c3a-7d2f-4a8b-9c0e-1f2a3b4c5d6e";
const EICR_ID: &str = r#"<id root="5b1e9c3a-7d2f-4a8b-9c0e-1f2a3b4c5d6e"/>"#;
const NOT_HERE: &str = "which was not sent or received in any mailbox you can open in this portal";

fn eicr() -> Vec<u8> {
    cda_fixture("eicr.xml")
}

/// `fixture` with its (only) `<id root="5b1e…"/>` — the eICR's own identifier, or the
/// one the RR answers — replaced by `id` ("" leaves none).
fn with_eicr_id(fixture: &str, id: &str) -> Vec<u8> {
    let xml = String::from_utf8(cda_fixture(fixture)).unwrap();
    assert_eq!(xml.matches(EICR_ID).count(), 1, "{fixture}");
    xml.replace(EICR_ID, id).into_bytes()
}

/// The RR fixture answering the case report `id` (an `<id …/>` element, or "").
fn rr_answering(id: &str) -> Vec<u8> {
    with_eicr_id("reportability-response.xml", id)
}

fn recorded_eicr(root: &str, extension: &str) -> CarriedDocument {
    CarriedDocument {
        root: root.into(),
        extension: extension.into(),
        code: "55751-2".into(),
    }
}

/// Sends `files` from `mailbox` to public health as its users would (the outbound
/// submit behind the compose page and the API); the Sent copy's id.
async fn send_case_report(
    app: &TestApp,
    mailbox: &Mailbox,
    subject: &str,
    files: Vec<Attachment>,
) -> i64 {
    send_to(app, mailbox, PUBLIC_HEALTH, subject, files).await
}

async fn send_to(
    app: &TestApp,
    mailbox: &Mailbox,
    to: &str,
    subject: &str,
    attachments: Vec<Attachment>,
) -> i64 {
    let draft = Draft {
        to: vec![to.into()],
        subject: subject.into(),
        text: "The electronic initial case report is attached.".into(),
        attachments,
        ..Draft::default()
    };
    let outbound =
        directmail::outbound::submit_draft(&app.state.db, mailbox, "Desk", &draft, app.now())
            .await
            .unwrap();
    messages::sent_copy(&app.state.db, outbound)
        .await
        .unwrap()
        .expect("a Sent copy")
}

fn xml(name: &str, data: Vec<u8>) -> Attachment {
    Attachment {
        name: name.into(),
        content_type: "text/xml".into(),
        data,
    }
}

/// An RR from public health, delivered to `mailbox`'s Inbox.
async fn rr_received(app: &TestApp, mailbox: &Mailbox, rr: Vec<u8>) -> i64 {
    let mail = Mail::new(
        PUBLIC_HEALTH,
        &mailbox.address,
        "Reportability Response",
        "Public health has answered your case report.",
    )
    .file("rr.xml", rr);
    deliver(app, mailbox.id, &mail).await
}

/// The RR card of the viewer page of attachment 0 of message `id`, and the whole page.
async fn rr_card(b: &mut Browser, id: i64) -> (String, String) {
    let page = b
        .get(&format!("/mail/messages/{id}/attachments/0/cda"))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    (rr_card_of(&page.body), page.body)
}

/// The card's sentence about the case report, as read (markup gone).
fn eicr_line(card: &str) -> String {
    let line = Regex::new(r#"(?s)<p class="rr-eicr" id="rr-eicr">.*?</p>"#)
        .unwrap()
        .find(card)
        .unwrap_or_else(|| panic!("no case report line: {card}"))
        .as_str();
    // `text` puts a space where the link ends
    text(line).replace(" .", ".")
}

/// The href of the card's link to the case report's message, if any.
fn eicr_link(card: &str) -> Option<String> {
    Regex::new(r#"<a href="([^"]*)" id="rr-eicr-link">"#)
        .unwrap()
        .captures(card)
        .map(|c| c[1].to_owned())
}

/// Ana's desk at Lakeside Clinic and Kim's at Hillside Care, without certificates
/// (what is sent to public health here is only filed, never delivered).
async fn two_practices(app: &TestApp) -> (Mailbox, Mailbox) {
    let ana = crate::webmail::ana_desk(app).await;
    let kim = crate::webmail::kim_desk(app).await;
    (ana, kim)
}

/// Whether the card links to message `id`.
fn links_to(card: &str, id: i64) -> bool {
    eicr_link(card) == Some(format!("/mail/messages/{id}"))
}

/// Asserts that the card names message `id` as "the case report {verb} on {when} —
/// {subject}", linked.
async fn assert_names(app: &TestApp, card: &str, id: i64, verb: &str, subject: &str) {
    let message = inbound::message(&app.state.db, id).await.unwrap().unwrap();
    let when = format_utc(message.row.received_at);
    assert_eq!(
        eicr_line(card),
        format!("In answer to the case report {verb} on {when} — {subject}.")
    );
    assert!(links_to(card, id), "{card}");
}

async fn recorded(app: &TestApp, id: i64) -> Vec<CarriedDocument> {
    documents::of_message(&app.state.db, id).await.unwrap()
}

// ---------------------------------------------------------------------------------

#[tokio::test]
async fn an_rr_links_to_the_sent_message_that_carried_its_eicr() {
    let app = TestApp::spawn().await;
    let (ana_box, _) = app.lakeside_and_hillside().await;
    let mut ana = app.signed_in(ANA).await;

    // Ana sends the case report from the compose page, as an attachment
    let draft = compose(&mut ana, ana_box.id).await;
    let fields = [
        ("to", "front@direct.hillside.test"),
        ("cc", ""),
        ("subject", "Case report: Tomas Reyes"),
        ("body", "The eICR is attached."),
    ];
    let up = ana
        .upload(
            &format!("/mail/drafts/{draft}/attachments"),
            &[("eicr.xml", "text/xml", &eicr())],
            true,
        )
        .await;
    assert_eq!(up.status, StatusCode::OK, "{}", up.body);
    let sent = ana
        .post(&format!("/mail/drafts/{draft}/send"), &fields)
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let sent_id = message_id_of(&sent.location());
    assert_eq!(
        recorded(&app, sent_id).await,
        [recorded_eicr(EICR_ROOT, "")]
    );

    // a colleague forwards the same report to her later: the card still names the
    // one she sent
    let forwarded = deliver(
        &app,
        ana_box.id,
        &Mail::new(
            "dr.kim@direct.hillside.test",
            &ana_box.address,
            "Fwd: Case report",
            "For your records.",
        )
        .file("eicr.xml", eicr()),
    )
    .await;
    assert!(forwarded > sent_id);
    assert_eq!(
        recorded(&app, forwarded).await,
        [recorded_eicr(EICR_ROOT, "")]
    );

    let rr_id = rr_received(&app, &ana_box, rr_answering(EICR_ID)).await;
    let (card, _) = rr_card(&mut ana, rr_id).await;
    assert_names(&app, &card, sent_id, "sent", "Case report: Tomas Reyes").await;
    // the link leads to the message, which she can open
    let page = ana.get(&format!("/mail/messages/{sent_id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    // the RR itself carries no case report
    assert_eq!(
        recorded(&app, rr_id).await,
        [CarriedDocument {
            root: "7d3b8c0e-2f4a-4b7e-9a61-5c2d1e0f9a10".into(),
            extension: String::new(),
            code: "88085-6".into(),
        }]
    );

    // once the Sent copy is deleted for good, the forwarded copy is the one
    let mut tx = app.state.db.begin().await.unwrap();
    messages::delete(&mut tx, ana_box.id, &[sent_id])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(recorded(&app, sent_id).await.is_empty());
    let (card, _) = rr_card(&mut ana, rr_id).await;
    assert_names(&app, &card, forwarded, "received", "Fwd: Case report").await;
}

#[tokio::test]
async fn an_rr_never_links_to_a_case_report_in_a_mailbox_the_reader_cannot_open() {
    let app = TestApp::spawn().await;
    let (ana_box, kim_box) = two_practices(&app).await;

    // Hillside Care sent the case report; an RR answering it reaches Ana at Lakeside
    let kim_sent = send_case_report(
        &app,
        &kim_box,
        "eICR 2024-04-15",
        vec![xml("eicr.xml", eicr())],
    )
    .await;
    assert_eq!(
        recorded(&app, kim_sent).await,
        [recorded_eicr(EICR_ROOT, "")]
    );
    let to_ana = rr_received(&app, &ana_box, rr_answering(EICR_ID)).await;
    let mut ana = app.signed_in(ANA).await;
    let (card, page) = rr_card(&mut ana, to_ana).await;
    assert_eq!(
        eicr_line(&card),
        format!("In answer to case report {EICR_ROOT}, {NOT_HERE}.")
    );
    assert_eq!(eicr_link(&card), None);
    assert!(
        !page.contains(&format!("/mail/messages/{kim_sent}\"")),
        "{page}"
    );
    assert!(!page.contains("eICR 2024-04-15"), "{page}");
    assert_eq!(
        ana.get(&format!("/mail/messages/{kim_sent}")).await.status,
        StatusCode::NOT_FOUND
    );
    // Kim, who sent it, is linked to it from the same response
    let to_kim = rr_received(&app, &kim_box, rr_answering(EICR_ID)).await;
    let mut kim = app.signed_in(KIM).await;
    let (card, _) = rr_card(&mut kim, to_kim).await;
    assert!(links_to(&card, kim_sent), "{card}");

    // in the same organization too: Ben's own mailbox is not Ana's
    let lakeside = orgs::get(&app.state.db, ana_box.org_id)
        .await
        .unwrap()
        .unwrap();
    let ben = app
        .user(Some(&lakeside), "ben@direct.lakeside.test", Role::Member)
        .await;
    let ben_box = crate::webmail::mailbox(
        &app,
        lakeside.id,
        "direct.lakeside.test",
        "dr.ben@direct.lakeside.test",
        MailboxKind::Personal,
    )
    .await;
    assign(&app, ben_box.id, ben.id).await;
    let other = r#"<id root="2.16.840.1.113883.19.5.99999.77" extension="eICR-0415-B"/>"#;
    let ana_sent = send_case_report(
        &app,
        &ana_box,
        "Case report: second patient",
        vec![xml("case.xml", with_eicr_id("eicr.xml", other))],
    )
    .await;
    assert_eq!(
        recorded(&app, ana_sent).await,
        [recorded_eicr(
            "2.16.840.1.113883.19.5.99999.77",
            "eICR-0415-B"
        )]
    );
    let to_ben = rr_received(&app, &ben_box, rr_answering(other)).await;
    let mut ben_browser = app.signed_in("ben@direct.lakeside.test").await;
    let (card, page) = rr_card(&mut ben_browser, to_ben).await;
    assert_eq!(
        eicr_line(&card),
        format!(
            "In answer to case report eICR-0415-B (2.16.840.1.113883.19.5.99999.77), {NOT_HERE}."
        )
    );
    assert!(
        !page.contains(&format!("/mail/messages/{ana_sent}\"")),
        "{page}"
    );
    // once Ben shares Ana's mailbox, he may open it, and the card links to it
    assign(&app, ana_box.id, ben.id).await;
    let (card, _) = rr_card(&mut ben_browser, to_ben).await;
    assert!(links_to(&card, ana_sent), "{card}");
}

#[tokio::test]
async fn an_rr_for_an_unknown_case_report_or_with_no_usable_identifier_says_so() {
    let app = TestApp::spawn().await;
    let (ana_box, _) = two_practices(&app).await;
    // a case report was sent, but not the one answered
    send_case_report(
        &app,
        &ana_box,
        "Another case report",
        vec![xml("eicr.xml", eicr())],
    )
    .await;
    let mut ana = app.signed_in(ANA).await;

    let unknown = r#"<id root="0F0E0D0C-0B0A-4908-8706-050403020100"/>"#;
    let id = rr_received(&app, &ana_box, rr_answering(unknown)).await;
    let (card, _) = rr_card(&mut ana, id).await;
    assert_eq!(
        eicr_line(&card),
        format!("In answer to case report 0F0E0D0C-0B0A-4908-8706-050403020100, {NOT_HERE}.")
    );
    assert_eq!(eicr_link(&card), None);
    // the card is otherwise whole
    assert!(
        text(&card).contains("Reportability response: Reportable"),
        "{card}"
    );

    // the same root with an extension is another identifier
    let id = rr_received(
        &app,
        &ana_box,
        rr_answering(&format!(r#"<id root="{EICR_ROOT}" extension="2"/>"#)),
    )
    .await;
    let (card, _) = rr_card(&mut ana, id).await;
    assert_eq!(eicr_link(&card), None, "{card}");

    // a UUID root in capitals is the same identifier
    let id = rr_received(
        &app,
        &ana_box,
        rr_answering(&format!(r#"<id root="{}"/>"#, EICR_ROOT.to_uppercase())),
    )
    .await;
    let (card, _) = rr_card(&mut ana, id).await;
    assert!(eicr_link(&card).is_some(), "{card}");

    for (what, id_element) in [
        ("a null identifier", r#"<id nullFlavor="NI"/>"#),
        ("an empty root", r#"<id root="  "/>"#),
        ("no identifier", ""),
    ] {
        let id = rr_received(&app, &ana_box, rr_answering(id_element)).await;
        let (card, _) = rr_card(&mut ana, id).await;
        assert_eq!(
            eicr_line(&card),
            "The response does not say which case report it answers.",
            "{what}"
        );
        assert_eq!(eicr_link(&card), None, "{what}");
    }
}

#[tokio::test]
async fn an_eicr_in_an_xdm_package_is_recorded_when_sent_and_when_received() {
    let app = TestApp::spawn().await;
    let (ana_box, kim_box) = app.lakeside_and_hillside().await;
    let letter = crate::helpers::pdf("Cover letter");
    let report = eicr();
    let zip = package(vec![
        document("Cover letter", "application/pdf", &letter),
        document("Initial case report", "text/xml", &report),
    ]);
    let sent = send_to(
        &app,
        &ana_box,
        "front@direct.hillside.test",
        "Case report package",
        vec![Attachment {
            name: "records.zip".into(),
            content_type: "application/zip".into(),
            data: zip,
        }],
    )
    .await;
    assert_eq!(recorded(&app, sent).await, [recorded_eicr(EICR_ROOT, "")]);

    // Kim receives it through the real S/MIME path, and it is recorded there too
    let received = delivered(&app, kim_box.id, "Case report package").await;
    assert_eq!(
        recorded(&app, received).await,
        [recorded_eicr(EICR_ROOT, "")]
    );

    // an RR reaching Kim links to the message she received
    let rr = rr_received(&app, &kim_box, rr_answering(EICR_ID)).await;
    let mut kim = app.signed_in(KIM).await;
    let (card, _) = rr_card(&mut kim, rr).await;
    assert_names(&app, &card, received, "received", "Case report package").await;
}

#[tokio::test]
async fn the_migration_applies_to_a_database_that_has_messages_and_records_only_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(dir.path()).await;
    let db = Db::connect(&url).await.unwrap();
    // the schema as it was before message_documents
    let source = match db.backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let path = format!("{}/migrations/{source}", env!("CARGO_MANIFEST_DIR"));
    let mut before = sqlx::migrate::Migrator::new(std::path::Path::new(&path))
        .await
        .unwrap();
    let earlier: Vec<_> = before
        .migrations
        .iter()
        .filter(|m| m.version < 19)
        .cloned()
        .collect();
    assert!(before.migrations.iter().any(|m| m.version == 19));
    before.migrations = earlier.into();
    before.run(&db.pool).await.unwrap();

    // a practice and a message carrying the eICR, filed then
    let now = 1_713_200_000;
    let org = org_in(&db, "Lakeside Clinic", "direct.lakeside.test", now).await;
    let mailbox = mailbox_in(
        &db,
        org.id,
        "direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
        MailboxKind::Personal,
        now,
    )
    .await;
    let old_raw = Mail::new(
        "dr.ana@direct.lakeside.test",
        PUBLIC_HEALTH,
        "Case report sent before the upgrade",
        "Attached.",
    )
    .file("eicr.xml", eicr())
    .bytes();
    let old: i64 = sqlx::query_scalar(
        "insert into messages (mailbox_id, folder, from_addr, subject, received_at, trust_code,
                               trust_sentence, revocation, raw)
         values ($1, 'sent', $2, $3, $4, 'sent', 'Sent from this mailbox.', 'not-applicable', $5)
         returning id",
    )
    .bind(mailbox.id)
    .bind("dr.ana@direct.lakeside.test")
    .bind("Case report sent before the upgrade")
    .bind(now)
    .bind(old_raw)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    db.pool.close().await;

    // the portal starts on it: the migration applies, the message is kept
    let app = TestApp::spawn_with(|c| c.database_url = Some(url.clone())).await;
    let ana = app.user(Some(&org), ANA, Role::Member).await;
    assign(&app, mailbox.id, ana.id).await;
    let rows: i64 = sqlx::query_scalar("select count(*) from message_documents")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "messages filed before are not read again");
    let mut browser = app.signed_in(ANA).await;
    let page = browser.get(&format!("/mail/messages/{old}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Case report sent before the upgrade"));
    // its raw MIME moved to a table of its own (0027) and still reads: text and file
    assert!(page.body.contains("Attached.") && page.body.contains("eicr.xml"));

    // an RR answering it says it is not here (there is no backfill) …
    let rr = rr_received(&app, &mailbox, rr_answering(EICR_ID)).await;
    let (card, _) = rr_card(&mut browser, rr).await;
    assert_eq!(
        eicr_line(&card),
        format!("In answer to case report {EICR_ROOT}, {NOT_HERE}.")
    );
    // … and a case report filed now is recorded and found
    let again = deliver(
        &app,
        mailbox.id,
        &Mail::new(
            PUBLIC_HEALTH,
            "dr.ana@direct.lakeside.test",
            "Your case report, returned",
            "Attached.",
        )
        .file("eicr.xml", eicr()),
    )
    .await;
    assert_eq!(recorded(&app, again).await, [recorded_eicr(EICR_ROOT, "")]);
    let (card, _) = rr_card(&mut browser, rr).await;
    assert!(links_to(&card, again), "{card}");
}
