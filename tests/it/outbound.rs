//! Sending between two organizations on this HISP: the full S/MIME path with only
//! the network skipped, delivery notifications back, and per-recipient status.

use std::time::{Duration, Instant};

use directmail::audit::Actor;
use directmail::domain::{DisplayName, Email};
use directmail::store::mailboxes::{self, Mailbox, MailboxKind};
use directmail::store::{inbound, orgs, outbound};

use crate::helpers::TestApp;

async fn hosted_mailbox(app: &TestApp, org: &str, domain: &str, address: &str) -> Mailbox {
    let org = app.org(org, domain).await;
    let domain = orgs::domain_by_name(&app.state.db, domain)
        .await
        .unwrap()
        .unwrap();
    directmail::pki::issue_dev_certificate(
        &app.state.db,
        &app.state.secret,
        &domain,
        None,
        app.now(),
        &Actor::system(),
    )
    .await
    .unwrap();
    let mut tx = app.state.db.begin().await.unwrap();
    let mailbox = mailboxes::create(
        &mut tx,
        org.id,
        domain.id,
        &Email::parse(address).unwrap(),
        MailboxKind::Shared,
        &DisplayName::parse("Desk").unwrap(),
        app.now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    mailbox
}

pub(crate) async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_message_between_two_organizations_is_delivered_and_notified_back() {
    let app = TestApp::spawn().await;
    let ana = hosted_mailbox(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    let front = hosted_mailbox(
        &app,
        "Hillside Care",
        "direct.hillside.test",
        "front@direct.hillside.test",
    )
    .await;

    let id = directmail::outbound::submit(
        &app.state.db,
        &ana,
        "Dr. Ana Ruiz",
        &["front@direct.hillside.test".to_owned()],
        &[],
        "Referral for Ms. Diaz",
        "Please see the patient this week.",
        app.now(),
    )
    .await
    .unwrap();
    app.state.wake_sender.notify_one();
    // the Sent copy is filed at once
    assert_eq!(
        inbound::messages_in(&app.state.db, ana.id, "sent", 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // delivered, trusted, into the other organization's mailbox
    wait_for("delivery", async || {
        !inbound::messages_in(&app.state.db, front.id, "inbox", 10)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let got = inbound::messages_in(&app.state.db, front.id, "inbox", 10)
        .await
        .unwrap();
    assert_eq!(got[0].subject, "Referral for Ms. Diaz");
    assert_eq!(got[0].trust_code, "trusted");
    assert_eq!(got[0].from_addr, "dr.ana@direct.lakeside.test");

    // processed and dispatched notifications come back: one final outcome
    wait_for("dispatched", async || {
        outbound::statuses(&app.state.db, id).await.unwrap()[0].1 == "dispatched"
    })
    .await;
    let statuses = outbound::statuses(&app.state.db, id).await.unwrap();
    assert_eq!(
        statuses,
        vec![(
            "front@direct.hillside.test".to_owned(),
            "dispatched".to_owned(),
            statuses[0].2.clone()
        )]
    );
    // notifications never land in an inbox, and are not answered
    assert!(
        inbound::messages_in(&app.state.db, ana.id, "inbox", 10)
            .await
            .unwrap()
            .is_empty()
    );
    let mdn_answers: i64 = sqlx::query_scalar(
        "select count(*) from outbound_messages where kind = 'mdn' and mailbox_id = $1",
    )
    .bind(ana.id)
    .fetch_one(&app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(mdn_answers, 0);
}

#[tokio::test]
async fn a_recipient_without_a_certificate_fails_with_a_reason_and_the_message_is_kept() {
    let app = TestApp::spawn().await;
    let ana = hosted_mailbox(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    let id = directmail::outbound::submit(
        &app.state.db,
        &ana,
        "Dr. Ana Ruiz",
        &["someone@direct.elsewhere.test".to_owned()],
        &[],
        "Hello",
        "Text",
        app.now(),
    )
    .await
    .unwrap();
    app.state.wake_sender.notify_one();
    wait_for("failure", async || {
        outbound::statuses(&app.state.db, id).await.unwrap()[0].1 == "failed"
    })
    .await;
    let statuses = outbound::statuses(&app.state.db, id).await.unwrap();
    assert!(
        statuses[0]
            .2
            .contains("No certificate was found for someone@direct.elsewhere.test"),
        "{}",
        statuses[0].2
    );
    assert_eq!(
        inbound::messages_in(&app.state.db, ana.id, "sent", 10)
            .await
            .unwrap()
            .len(),
        1,
        "the message is kept"
    );
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Gives `app` a development-CA certificate for a recipient on another HISP, as if
/// learned from their signature, and returns its PEM.
async fn knows_foreign(app: &TestApp, address: &str) -> String {
    let ca = directmail::pki::dev_ca(&app.state.db, &app.state.secret, app.now())
        .await
        .unwrap();
    let id = ca
        .issue_address(address, std::time::SystemTime::now())
        .unwrap();
    let pem = der::EncodePem::to_pem(id.certificate(), der::pem::LineEnding::LF).unwrap();
    let mut tx = app.state.db.begin().await.unwrap();
    outbound::learn_certificate(&mut tx, address, &pem, app.now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    pem
}

async fn dev_ca_pem(app: &TestApp) -> String {
    let ca = directmail::pki::dev_ca(&app.state.db, &app.state.secret, app.now())
        .await
        .unwrap();
    ca.to_pem().unwrap().0
}

/// Two separate portals on loopback, each with its own database, keys and CA, A
/// relaying to B; B relays back to A when `b_answers` (for its notifications). Each
/// trusts the other's CA, and A knows B's domain certificate.
struct TwoHisps {
    a: TestApp,
    b: TestApp,
    ana: Mailbox,
    front: Mailbox,
    a_domain: orgs::Domain,
    b_domain: orgs::Domain,
}

async fn two_hisps(b_answers: bool) -> TwoHisps {
    let (a_smtp, b_smtp) = (free_port(), free_port());
    let a = TestApp::spawn_with(|c| {
        c.smtp_addr = a_smtp;
        c.smtp_relay = Some(b_smtp.to_string());
        c.hisp_domain = "hisp-a.test".into();
    })
    .await;
    let b = TestApp::spawn_with(|c| {
        c.smtp_addr = b_smtp;
        c.smtp_relay = b_answers.then(|| a_smtp.to_string());
        c.hisp_domain = "hisp-b.test".into();
    })
    .await;
    let ana = hosted_mailbox(
        &a,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    let front = hosted_mailbox(
        &b,
        "Hillside Care",
        "direct.hillside.test",
        "front@direct.hillside.test",
    )
    .await;
    let a_domain = orgs::domain_by_name(&a.state.db, "direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    let b_domain = orgs::domain_by_name(&b.state.db, "direct.hillside.test")
        .await
        .unwrap()
        .unwrap();
    directmail::pki::add_anchors(
        &a.state.db,
        &a_domain,
        dev_ca_pem(&b).await.as_bytes(),
        a.now(),
        &Actor::system(),
    )
    .await
    .unwrap();
    directmail::pki::add_anchors(
        &b.state.db,
        &b_domain,
        dev_ca_pem(&a).await.as_bytes(),
        b.now(),
        &Actor::system(),
    )
    .await
    .unwrap();
    let b_cert: String = sqlx::query_scalar("select chain_pem from domain_certificates")
        .fetch_one(&b.state.db.pool)
        .await
        .unwrap();
    let mut tx = a.state.db.begin().await.unwrap();
    outbound::learn_certificate(&mut tx, "direct.hillside.test", &b_cert, a.now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    TwoHisps {
        a,
        b,
        ana,
        front,
        a_domain,
        b_domain,
    }
}

impl TwoHisps {
    /// Ana at A writes to the front desk at B.
    async fn send(&self, subject: &str) -> i64 {
        let id = directmail::outbound::submit(
            &self.a.state.db,
            &self.ana,
            "Dr. Ana Ruiz",
            &["front@direct.hillside.test".to_owned()],
            &[],
            subject,
            "Attached are the results.",
            self.a.now(),
        )
        .await
        .unwrap();
        self.a.state.wake_sender.notify_one();
        id
    }

    async fn status(&self, id: i64) -> (String, String) {
        let s = outbound::statuses(&self.a.state.db, id)
            .await
            .unwrap()
            .remove(0);
        (s.1, s.2)
    }
}

#[tokio::test]
async fn two_hisps_exchange_a_message_and_its_notifications_over_smtp() {
    let h = two_hisps(true).await;
    let id = h.send("Lab results").await;
    wait_for("delivery at B", async || {
        !inbound::messages_in(&h.b.state.db, h.front.id, "inbox", 10)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let got = inbound::messages_in(&h.b.state.db, h.front.id, "inbox", 10)
        .await
        .unwrap();
    assert_eq!(
        (got[0].subject.as_str(), got[0].trust_code.as_str()),
        ("Lab results", "trusted")
    );
    // B learned A's certificate from the signature and sent the notifications back
    wait_for("dispatched at A", async || {
        h.status(id).await.0 == "dispatched"
    })
    .await;
    // B's operator sees the notifications it sent marked as such
    h.b.user(None, "op@hisp-b.test", directmail::domain::Role::Operator)
        .await;
    let mut op = h.b.signed_in("op@hisp-b.test").await;
    let sent = op.get("/queue?state=sent").await;
    assert!(
        sent.body
            .contains(r#"<span class="tag">Delivery notification</span>"#),
        "{}",
        sent.body
    );
    // and the other way: B's front desk answers Ana, with A's certificate learned
    let reply = directmail::outbound::submit(
        &h.b.state.db,
        &h.front,
        "Front desk",
        &["dr.ana@direct.lakeside.test".to_owned()],
        &[],
        "Re: Lab results",
        "Received, thank you.",
        h.b.now(),
    )
    .await
    .unwrap();
    h.b.state.wake_sender.notify_one();
    wait_for("delivery at A", async || {
        inbound::messages_in(&h.a.state.db, h.ana.id, "inbox", 10)
            .await
            .unwrap()
            .iter()
            .any(|m| m.subject == "Re: Lab results" && m.trust_code == "trusted")
    })
    .await;
    wait_for("dispatched at B", async || {
        outbound::statuses(&h.b.state.db, reply).await.unwrap()[0].1 == "dispatched"
    })
    .await;
}

#[tokio::test]
async fn a_relay_that_refuses_fails_the_recipient_and_an_unreachable_one_is_retried() {
    let (a_smtp, b_smtp) = (free_port(), free_port());
    let b = TestApp::spawn_with(|c| c.smtp_addr = b_smtp).await;
    let a = TestApp::spawn_with(|c| {
        c.smtp_addr = a_smtp;
        c.smtp_relay = Some(b_smtp.to_string());
    })
    .await;
    let ana = hosted_mailbox(
        &a,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    b.org("Hillside Care", "direct.hillside.test").await;
    // A has a certificate for the address, but B hosts no such mailbox: 550
    let pem = knows_foreign(&a, "nobody@direct.hillside.test").await;
    let id = directmail::outbound::submit(
        &a.state.db,
        &ana,
        "Ana",
        &["nobody@direct.hillside.test".into()],
        &[],
        "Hi",
        "Text",
        a.now(),
    )
    .await
    .unwrap();
    a.state.wake_sender.notify_one();
    wait_for("refusal", async || {
        outbound::statuses(&a.state.db, id).await.unwrap()[0].1 == "failed"
    })
    .await;
    assert!(
        outbound::statuses(&a.state.db, id).await.unwrap()[0]
            .2
            .contains("refused")
    );

    // a relay that does not answer: the entry waits for another attempt
    let c = TestApp::spawn_with(|c| c.smtp_relay = Some(free_port().to_string())).await;
    let cara = hosted_mailbox(
        &c,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "dr.cara@direct.lakeside.test",
    )
    .await;
    let mut tx = c.state.db.begin().await.unwrap();
    outbound::learn_certificate(&mut tx, "nobody@direct.hillside.test", &pem, c.now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    directmail::outbound::submit(
        &c.state.db,
        &cara,
        "Cara",
        &["nobody@direct.hillside.test".into()],
        &[],
        "Hi",
        "Text",
        c.now(),
    )
    .await
    .unwrap();
    c.state.wake_sender.notify_one();
    wait_for("a retry scheduled", async || {
        let row: Option<(String, i64)> =
            sqlx::query_as("select state, attempts from outbound_queue")
                .fetch_optional(&c.state.db.pool)
                .await
                .unwrap();
        matches!(row, Some((state, attempts)) if state == "queued" && attempts >= 1)
    })
    .await;
    let (next, error): (i64, Option<String>) =
        sqlx::query_as("select next_attempt_at, last_error from outbound_queue")
            .fetch_one(&c.state.db.pool)
            .await
            .unwrap();
    assert!(next > c.now(), "backed off");
    assert!(error.unwrap_or_default().contains(':'));
}

#[tokio::test]
async fn a_recipient_that_never_notifies_fails_after_the_timeout_with_a_notice() {
    // B accepts and delivers, but has no way to send its notifications back
    let h = two_hisps(false).await;
    let id = h.send("Results").await;
    wait_for("delivery at B", async || {
        !inbound::messages_in(&h.b.state.db, h.front.id, "inbox", 10)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    // the sender records "sent" when its SMTP conversation ends, which may be after B
    // filed the message
    wait_for("sent", async || h.status(id).await.0 == "sent").await;
    // an hour later with no processed notification: failed, and the sender is told
    h.a.state.clock.advance(3601);
    h.a.state.wake_sender.notify_one();
    wait_for("timeout", async || h.status(id).await.0 == "failed").await;
    assert!(
        h.status(id)
            .await
            .1
            .contains("no delivery notification arrived within 60 minutes")
    );
    let inbox = inbound::messages_in(&h.a.state.db, h.ana.id, "inbox", 10)
        .await
        .unwrap();
    assert_eq!(inbox[0].subject, "Not delivered: Results");
}

#[tokio::test]
async fn operators_see_the_queue_and_can_retry_or_discard_waiting_entries() {
    let dead = free_port();
    let app = TestApp::spawn_with(|c| c.smtp_relay = Some(dead.to_string())).await;
    app.user(None, "op@hisp.test", directmail::domain::Role::Operator)
        .await;
    let ana = hosted_mailbox(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    knows_foreign(&app, "kim@direct.far.test").await;
    let id = directmail::outbound::submit(
        &app.state.db,
        &ana,
        "Ana",
        &["kim@direct.far.test".into()],
        &[],
        "Secret subject",
        "Text",
        app.now(),
    )
    .await
    .unwrap();
    app.state.wake_sender.notify_one();
    wait_for("a failed attempt", async || {
        let attempts: Option<i64> =
            sqlx::query_scalar("select attempts from outbound_queue where state = 'queued'")
                .fetch_optional(&app.state.db.pool)
                .await
                .unwrap();
        attempts.unwrap_or(0) >= 1
    })
    .await;
    let mut op = app.signed_in("op@hisp.test").await;
    let page = op.get("/queue").await;
    assert!(page.body.contains("kim@direct.far.test") && page.body.contains("Retry now"));
    // when it was queued and last tried, and that it is a message, not a notification
    let row = &page.body[page.body.find("<tbody>").unwrap()..];
    assert!(row.contains("<td>Message</td>") && !row.contains("Delivery notification"));
    assert_eq!(
        row.matches(r#"<td class="when">"#).count(),
        3,
        "queued, last attempt and next attempt: {row}"
    );
    assert!(!row.contains(r#"<td class="when"></td>"#), "{row}");
    assert!(
        !page.body.contains("Secret subject"),
        "no subjects in the operator's view"
    );
    let qid: i64 = sqlx::query_scalar("select id from outbound_queue")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    let r = op.post(&format!("/queue/{qid}/retry"), &[]).await;
    assert_eq!(r.location(), "/queue");
    // tried again at once, failing again, then waiting for its next attempt
    wait_for("a second attempt", async || {
        let attempts: Option<i64> =
            sqlx::query_scalar("select attempts from outbound_queue where state = 'queued'")
                .fetch_optional(&app.state.db.pool)
                .await
                .unwrap();
        attempts.unwrap_or(0) >= 2
    })
    .await;
    op.get("/queue").await;
    let r = op.post(&format!("/queue/{qid}/discard"), &[]).await;
    assert_eq!(r.location(), "/queue");
    wait_for("failed", async || {
        outbound::statuses(&app.state.db, id).await.unwrap()[0].1 == "failed"
    })
    .await;
    assert!(
        op.get("/queue?state=failed")
            .await
            .body
            .contains("discarded by an operator")
    );
    assert_eq!(
        op.post(&format!("/queue/{qid}/discard"), &[]).await.status,
        reqwest::StatusCode::NOT_FOUND
    );
    let mut member = app.browser();
    app.user(
        Some(&orgs::get(&app.state.db, ana.org_id).await.unwrap().unwrap()),
        "m@direct.lakeside.test",
        directmail::domain::Role::Member,
    )
    .await;
    member
        .sign_in("m@direct.lakeside.test", crate::helpers::PASSWORD)
        .await;
    assert_eq!(
        member.get("/queue").await.status,
        reqwest::StatusCode::FORBIDDEN
    );
}

/// An SMTP server that keeps what it receives: the foreign HISP's mail exchanger,
/// whose contents the test then hands to `openssl cms`.
type Received = Vec<(directmail_smtp::Envelope, Vec<u8>)>;

#[derive(Clone, Default)]
pub(crate) struct Sink {
    pub(crate) received: std::sync::Arc<std::sync::Mutex<Received>>,
}

impl directmail_smtp::Backend for Sink {
    async fn rcpt(&self, _: &str, _: &str) -> directmail_smtp::RcptDecision {
        directmail_smtp::RcptDecision::Accept
    }
    fn deliver(
        &self,
        envelope: directmail_smtp::Envelope,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<String, directmail_smtp::DeliverError>> + Send {
        let received = self.received.clone();
        async move {
            received.lock().unwrap().push((envelope, data));
            Ok("1".into())
        }
    }
}

/// A loopback SMTP server keeping what it receives, standing for another HISP's mail
/// exchanger, and a portal that relays to it.
pub(crate) async fn app_relaying_to_sink() -> (TestApp, Sink) {
    let (sink, sink_addr) = sink().await;
    let app = TestApp::spawn_with(|c| c.smtp_relay = Some(sink_addr)).await;
    (app, sink)
}

/// A loopback SMTP server keeping what it receives, and its address.
pub(crate) async fn sink() -> (Sink, String) {
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = listener.local_addr().unwrap();
    tokio::spawn(directmail_smtp::serve(
        listener,
        directmail_smtp::Config::default(),
        sink.clone(),
        std::future::pending(),
    ));
    (sink, sink_addr.to_string())
}

/// kim@direct.far.test on the foreign HISP: a key and certificate made by openssl in
/// the app's data directory (`kim.key`, `kim.pem`), learned by the app as if from
/// Kim's signed mail.
pub(crate) async fn foreign_kim(app: &TestApp) {
    let dir = app.data_dir.path();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=Foreign-CA -keyout fca.key -out fca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=kim -keyout kim.key -out kim.csr 2>/dev/null
printf 'basicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature,keyEncipherment\\nextendedKeyUsage=emailProtection\\nsubjectAltName=email:kim@direct.far.test\\n' > kim.ext
openssl x509 -req -in kim.csr -CA fca.pem -CAkey fca.key -CAcreateserial -days 20 -sha256 -extfile kim.ext -out kim.pem 2>/dev/null")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tx = app.state.db.begin().await.unwrap();
    let kim = std::fs::read_to_string(dir.join("kim.pem")).unwrap();
    outbound::learn_certificate(&mut tx, "kim@direct.far.test", &kim, app.now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Waits for the sink's first message, then decrypts it with Kim's key and verifies
/// it against the app's development CA with `openssl cms`. Returns the raw message
/// and what openssl printed: the verification result, then the signed content.
pub(crate) async fn opened_by_kim(app: &TestApp, sink: &Sink) -> (Vec<u8>, String) {
    app.state.wake_sender.notify_one();
    wait_for("the sink to receive it", async || {
        !sink.received.lock().unwrap().is_empty()
    })
    .await;
    let (_, data) = sink.received.lock().unwrap()[0].clone();
    let dir = app.data_dir.path();
    std::fs::write(dir.join("sent.eml"), &data).unwrap();
    std::fs::write(dir.join("dev-ca.pem"), dev_ca_pem(app).await).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "set -e
openssl cms -decrypt -in sent.eml -recip kim.pem -inkey kim.key -out signed.eml
openssl cms -verify -in signed.eml -CAfile dev-ca.pem -purpose smimesign -out inner.eml 2>verify.txt
openssl smime -pk7out -in signed.eml | openssl pkcs7 -print_certs -noout > sent-certs.txt
cat verify.txt inner.eml",
        )
        .current_dir(dir)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}{}",
        shown,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shown.contains("Verification successful"), "{shown}");
    // the signature carries the signer's certificate, never the root
    let sent = std::fs::read_to_string(dir.join("sent-certs.txt")).unwrap();
    assert!(
        sent.contains("subject=") && !sent.contains("subject=CN = directmail development CA"),
        "{sent}"
    );
    (data, shown)
}

/// Dr. Ana Ruiz writes to kim@direct.far.test ([`foreign_kim`]); the outbound id.
async fn to_kim(app: &TestApp, ana: &Mailbox, subject: &str, text: &str) -> i64 {
    directmail::outbound::submit(
        &app.state.db,
        ana,
        "Dr. Ana Ruiz",
        &["kim@direct.far.test".into()],
        &[],
        subject,
        text,
        app.now(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn what_we_send_to_a_foreign_hisp_decrypts_and_verifies_with_openssl() {
    let (app, sink) = app_relaying_to_sink().await;
    let ana = hosted_mailbox(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    foreign_kim(&app).await;
    let id = to_kim(
        &app,
        &ana,
        "Discharge summary",
        "Ms. Diaz was discharged today.",
    )
    .await;
    let (data, shown) = opened_by_kim(&app, &sink).await;
    // recorded once the SMTP conversation has ended, which may be after the sink has it
    wait_for("sent", async || {
        outbound::statuses(&app.state.db, id).await.unwrap()[0].1 == "sent"
    })
    .await;
    let (envelope, _) = sink.received.lock().unwrap()[0].clone();
    assert_eq!(envelope.mail_from, "dr.ana@direct.lakeside.test");
    assert_eq!(envelope.rcpt_to, vec!["kim@direct.far.test".to_owned()]);
    let text = String::from_utf8_lossy(&data).to_string();
    assert!(
        text.contains("smime-type=enveloped-data")
            && text.contains("Disposition-Notification-Options")
    );
    assert!(
        !text.contains("Discharge summary"),
        "the real subject does not travel outside the encryption"
    );
    assert!(
        shown.contains("message/rfc822")
            && shown.contains("Subject: Discharge summary")
            && shown.contains("Ms. Diaz was discharged today."),
        "{shown}"
    );
}

#[tokio::test]
async fn a_signed_failure_report_from_the_receiving_hisp_fails_the_recipient() {
    let h = two_hisps(false).await;
    let (a, b, ana) = (&h.a, &h.b, &h.ana);
    let (a_domain, b_domain) = (&h.a_domain, &h.b_domain);
    let id = h.send("Results").await;
    wait_for("sent", async || h.status(id).await.0 == "sent").await;
    let message_id: String =
        sqlx::query_scalar("select message_id from outbound_messages where id = $1")
            .bind(id)
            .fetch_one(&a.state.db.pool)
            .await
            .unwrap();

    // B's postmaster reports the recipient failed, signed and encrypted like any Direct message
    let dsn = format!(
        "From: postmaster@direct.hillside.test\r\nTo: dr.ana@direct.lakeside.test\r\nSubject: Delivery failure\r\nMessage-ID: <dsn-1@direct.hillside.test>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nThe mailbox is full.\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns;direct.hillside.test\r\n\r\nFinal-Recipient: rfc822;front@direct.hillside.test\r\nAction: failed\r\nStatus: 5.2.2\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{message_id}>\r\nSubject: Results\r\n--b--\r\n"
    );
    let b_ids = directmail::pki::identities(&b.state.db, &b.state.secret, b_domain.id)
        .await
        .unwrap();
    let a_ids = directmail::pki::identities(&a.state.db, &a.state.secret, a_domain.id)
        .await
        .unwrap();
    let options = directmail_smime::SealOptions {
        no_notification_request: true,
        ..Default::default()
    };
    let sealed = directmail_smime::seal(
        dsn.as_bytes(),
        &b_ids[0],
        &[directmail_smime::Recipient::new(
            a_ids[0].certificate().clone(),
        )],
        &options,
        std::time::SystemTime::now(),
    )
    .unwrap();
    let rcpt = vec!["dr.ana@direct.lakeside.test".to_owned()];
    inbound::insert(
        &a.state.db,
        inbound::NewInbound {
            mail_from: "postmaster@direct.hillside.test",
            rcpt_to: &rcpt,
            remote_ip: "127.0.0.1",
            helo: "b",
            tls: true,
            raw: &sealed,
        },
        a.now(),
    )
    .await
    .unwrap();
    a.state.wake_processor.notify_one();
    wait_for("failed", async || {
        outbound::statuses(&a.state.db, id).await.unwrap()[0].1 == "failed"
    })
    .await;
    let inbox = inbound::messages_in(&a.state.db, ana.id, "inbox", 10)
        .await
        .unwrap();
    assert_eq!(
        inbox.len(),
        1,
        "the report itself is not in the inbox; the notice is"
    );
    assert_eq!(inbox[0].subject, "Not delivered: Results");
}

/// A tiny authoritative DNS server on loopback (UDP): MX of `direct.far.test` is
/// `mx.direct.far.test`, whose address is 127.0.0.1; other names do not exist.
async fn dns_server() -> std::net::SocketAddr {
    use hickory_resolver::proto::op::{Message, ResponseCode};
    use hickory_resolver::proto::rr::rdata::{A, MX};
    use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut response = Message::response(query.metadata.id, query.metadata.op_code);
            response.metadata.authoritative = true;
            response.metadata.recursion_desired = query.metadata.recursion_desired;
            for q in &query.queries {
                response.add_query(q.clone());
                let name = q.name().to_utf8().to_ascii_lowercase();
                match (name.as_str(), q.query_type()) {
                    ("direct.far.test.", RecordType::MX) => {
                        let mx = MX::new(10, Name::from_ascii("mx.direct.far.test.").unwrap());
                        response.add_answer(Record::from_rdata(
                            q.name().clone(),
                            60,
                            RData::MX(mx),
                        ));
                    }
                    ("mx.direct.far.test.", RecordType::A) => {
                        response.add_answer(Record::from_rdata(
                            q.name().clone(),
                            60,
                            RData::A(A::new(127, 0, 0, 1)),
                        ));
                    }
                    ("mx.direct.far.test.", _) | ("direct.far.test.", _) => {}
                    _ => response.metadata.response_code = ResponseCode::NXDomain,
                }
            }
            let _ = socket.send_to(&response.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

#[tokio::test]
async fn without_a_relay_messages_go_to_the_recipient_domains_mx() {
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mx_port = listener.local_addr().unwrap().port();
    tokio::spawn(directmail_smtp::serve(
        listener,
        directmail_smtp::Config::default(),
        sink.clone(),
        std::future::pending(),
    ));
    let dns = dns_server().await;
    let app = TestApp::spawn_with(|c| {
        c.dns_resolver = Some(dns);
        c.smtp_mx_port = mx_port;
    })
    .await;
    let ana = hosted_mailbox(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    let ca = directmail::pki::dev_ca(&app.state.db, &app.state.secret, app.now())
        .await
        .unwrap();
    let mut tx = app.state.db.begin().await.unwrap();
    for address in ["kim@direct.far.test", "kim@nowhere.test"] {
        let id = ca
            .issue_address(address, std::time::SystemTime::now())
            .unwrap();
        let pem = der::EncodePem::to_pem(id.certificate(), der::pem::LineEnding::LF).unwrap();
        outbound::learn_certificate(&mut tx, address, &pem, app.now())
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let id = directmail::outbound::submit(
        &app.state.db,
        &ana,
        "Ana",
        &["kim@direct.far.test".into()],
        &[],
        "Via MX",
        "Text",
        app.now(),
    )
    .await
    .unwrap();
    app.state.wake_sender.notify_one();
    wait_for("the MX to receive it", async || {
        !sink.received.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        outbound::statuses(&app.state.db, id).await.unwrap()[0].1,
        "sent"
    );
    // a domain that does not exist fails at once, with the reason
    let id = directmail::outbound::submit(
        &app.state.db,
        &ana,
        "Ana",
        &["kim@nowhere.test".into()],
        &[],
        "Lost",
        "Text",
        app.now(),
    )
    .await
    .unwrap();
    app.state.wake_sender.notify_one();
    wait_for("failure", async || {
        outbound::statuses(&app.state.db, id).await.unwrap()[0].1 == "failed"
    })
    .await;
    assert!(
        outbound::statuses(&app.state.db, id).await.unwrap()[0]
            .2
            .contains("does not exist")
    );
}

#[tokio::test]
async fn a_peer_that_is_down_gets_the_message_when_it_comes_back() {
    let peer = free_port();
    let app = TestApp::spawn_with(|c| c.smtp_relay = Some(peer.to_string())).await;
    let ana = hosted_mailbox(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    knows_foreign(&app, "kim@direct.far.test").await;
    let id = directmail::outbound::submit(
        &app.state.db,
        &ana,
        "Ana",
        &["kim@direct.far.test".into()],
        &[],
        "Results",
        "Text",
        app.now(),
    )
    .await
    .unwrap();
    app.state.wake_sender.notify_one();
    // the peer is down: the entry waits, the recipient is still only queued
    wait_for("a failed attempt", async || {
        let attempts: Option<i64> =
            sqlx::query_scalar("select attempts from outbound_queue where state = 'queued'")
                .fetch_optional(&app.state.db.pool)
                .await
                .unwrap();
        attempts.unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(
        outbound::statuses(&app.state.db, id).await.unwrap()[0].1,
        "queued"
    );
    // the peer comes back; at the next attempt the message goes through
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind(peer).await.unwrap();
    tokio::spawn(directmail_smtp::serve(
        listener,
        directmail_smtp::Config::default(),
        sink.clone(),
        std::future::pending(),
    ));
    app.state.clock.advance(2 * 3600);
    app.state.wake_sender.notify_one();
    wait_for("delivery after the outage", async || {
        !sink.received.lock().unwrap().is_empty()
    })
    .await;
    wait_for("sent", async || {
        outbound::statuses(&app.state.db, id).await.unwrap()[0].1 == "sent"
    })
    .await;
}

#[tokio::test]
async fn a_recipient_domain_whose_mx_points_inside_our_network_is_not_contacted() {
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mx_port = listener.local_addr().unwrap().port();
    tokio::spawn(directmail_smtp::serve(
        listener,
        directmail_smtp::Config::default(),
        sink.clone(),
        std::future::pending(),
    ));
    let dns = dns_server().await;
    // the default policy: public addresses only (the MX answer says 127.0.0.1)
    let app = TestApp::spawn_with(|c| {
        c.dns_resolver = Some(dns);
        c.smtp_mx_port = mx_port;
        c.allow_private_networks = None;
    })
    .await;
    let ana = hosted_mailbox(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    knows_foreign(&app, "kim@direct.far.test").await;
    let id = directmail::outbound::submit(
        &app.state.db,
        &ana,
        "Ana",
        &["kim@direct.far.test".into()],
        &[],
        "Via MX",
        "Text",
        app.now(),
    )
    .await
    .unwrap();
    app.state.wake_sender.notify_one();
    wait_for("failure", async || {
        outbound::statuses(&app.state.db, id).await.unwrap()[0].1 == "failed"
    })
    .await;
    let detail = outbound::statuses(&app.state.db, id).await.unwrap()[0]
        .2
        .clone();
    assert!(
        detail.contains("127.0.0.1 is not a public address"),
        "{detail}"
    );
    assert!(sink.received.lock().unwrap().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_notification_moves_only_the_status_of_recipients_its_signer_is_bound_to() {
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = listener.local_addr().unwrap();
    tokio::spawn(directmail_smtp::serve(
        listener,
        directmail_smtp::Config::default(),
        sink.clone(),
        std::future::pending(),
    ));
    let app = TestApp::spawn_with(|c| c.smtp_relay = Some(sink_addr.to_string())).await;
    let ana = hosted_mailbox(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    knows_foreign(&app, "lee@direct.other.test").await;
    // kim holds a certificate Ana's domain trusts (from its CA), bound to kim only
    let ca = directmail::pki::dev_ca(&app.state.db, &app.state.secret, app.now())
        .await
        .unwrap();
    let kim = ca
        .issue_address("kim@direct.far.test", std::time::SystemTime::now())
        .unwrap();
    let mut tx = app.state.db.begin().await.unwrap();
    let kim_pem = der::EncodePem::to_pem(kim.certificate(), der::pem::LineEnding::LF).unwrap();
    outbound::learn_certificate(&mut tx, "kim@direct.far.test", &kim_pem, app.now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let id = directmail::outbound::submit(
        &app.state.db,
        &ana,
        "Ana",
        &["kim@direct.far.test".into(), "lee@direct.other.test".into()],
        &[],
        "Two recipients",
        "Text",
        app.now(),
    )
    .await
    .unwrap();
    app.state.wake_sender.notify_one();
    wait_for("both sent", async || {
        outbound::statuses(&app.state.db, id)
            .await
            .unwrap()
            .iter()
            .all(|s| s.1 == "sent")
    })
    .await;
    let message_id: String =
        sqlx::query_scalar("select message_id from outbound_messages where id = $1")
            .bind(id)
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    let domain = orgs::domain_by_name(&app.state.db, "direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    let ours = directmail::pki::identities(&app.state.db, &app.state.secret, domain.id)
        .await
        .unwrap();
    // kim's system reports on a recipient it has no say over, then on kim
    let reports = [
        ("lee@direct.other.test", "failed"),
        ("lee@direct.other.test", "processed"),
        ("kim@direct.far.test", "processed"),
    ];
    for (n, (about, disposition)) in reports.iter().enumerate() {
        let mdn = format!(
            "From: kim@direct.far.test\r\nTo: dr.ana@direct.lakeside.test\r\nSubject: Processed\r\nMessage-ID: <mdn-{n}@direct.far.test>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=disposition-notification; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nReport.\r\n--b\r\nContent-Type: message/disposition-notification\r\n\r\nReporting-UA: far.test; directmail\r\nFinal-Recipient: rfc822;{about}\r\nOriginal-Message-ID: <{message_id}>\r\nDisposition: automatic-action/MDN-sent-automatically;{disposition}\r\n--b--\r\n"
        );
        let sealed = directmail_smime::seal(
            mdn.as_bytes(),
            &kim,
            &[directmail_smime::Recipient::new(
                ours[0].certificate().clone(),
            )],
            &directmail_smime::SealOptions {
                no_notification_request: true,
                ..Default::default()
            },
            std::time::SystemTime::now(),
        )
        .unwrap();
        let rcpt = vec!["dr.ana@direct.lakeside.test".to_owned()];
        let inbound_id = inbound::insert(
            &app.state.db,
            inbound::NewInbound {
                mail_from: "kim@direct.far.test",
                rcpt_to: &rcpt,
                remote_ip: "127.0.0.1",
                helo: "far",
                tls: true,
                raw: &sealed,
            },
            app.now(),
        )
        .await
        .unwrap();
        app.state.wake_processor.notify_one();
        wait_for("the report to be processed", async || {
            inbound::get(&app.state.db, inbound_id)
                .await
                .unwrap()
                .is_some_and(|r| r.state == "delivered")
        })
        .await;
    }
    let statuses = outbound::statuses(&app.state.db, id).await.unwrap();
    let of = |who: &str| {
        statuses
            .iter()
            .find(|s| s.0 == who)
            .map(|s| s.1.clone())
            .unwrap()
    };
    assert_eq!(
        of("lee@direct.other.test"),
        "sent",
        "kim cannot report on lee"
    );
    assert_eq!(of("kim@direct.far.test"), "processed");
}

#[tokio::test]
async fn a_sent_item_shows_each_recipient_live_until_their_hisp_answers() {
    // the other HISP cannot be reached: the message waits in the queue
    let app = TestApp::spawn_with(|c| c.smtp_relay = Some("127.0.0.1:9".into())).await;
    let ana = app
        .practice(
            "Lakeside Clinic",
            "direct.lakeside.test",
            "ana@direct.lakeside.test",
            "dr.ana@direct.lakeside.test",
        )
        .await;
    foreign_kim(&app).await;
    let id = to_kim(&app, &ana, "Results", "Attached.").await;
    let sent = directmail::store::messages::sent_copy(&app.state.db, id)
        .await
        .unwrap()
        .unwrap();
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    let page = b.get(&format!("/mail/messages/{sent}")).await;
    assert!(
        page.body
            .contains("kim@direct.far.test: <strong>queued</strong>")
            && page.body.contains("Waiting to be sent")
            && page.body.contains(&format!(
                r#"hx-get="/mail/messages/{sent}/delivery" hx-trigger="every 5s""#
            )),
        "{}",
        page.body
    );
    assert!(page.body.contains("updates by itself"));
    let list = b.get(&format!("/mail/{}/sent", ana.id)).await;
    assert!(list.body.contains("Sending"));
    // the panel is polled in the background: it does not keep the session alive
    app.state.clock.advance(10 * 60);
    let polled = b
        .client
        .get(app.url(&format!("/mail/messages/{sent}/delivery")))
        .header("x-background", "1")
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(polled.status(), reqwest::StatusCode::OK);
    app.state.clock.advance(6 * 60);
    let ended = b
        .client
        .get(app.url(&format!("/mail/messages/{sent}/delivery")))
        .header("x-background", "1")
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert!(
        ended
            .headers()
            .get("hx-redirect")
            .is_some_and(|v| v.to_str().unwrap().starts_with("/login?reason=idle")),
        "{:?}",
        ended.headers()
    );
    // a failure ends the polling and offers to resend
    sqlx::query(
        "update delivery_status set state = 'failed', detail = 'their HISP refused the message' where outbound_id = $1",
    )
    .bind(id)
    .execute(&app.state.db.pool)
    .await
    .unwrap();
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    let panel = b.get(&format!("/mail/messages/{sent}/delivery")).await;
    assert!(
        panel.body.contains("Not delivered")
            && panel.body.contains("their HISP refused the message")
            && !panel.body.contains("hx-trigger"),
        "{}",
        panel.body
    );
    let list = b.get(&format!("/mail/{}/sent", ana.id)).await;
    assert!(list.body.contains("Failed"));
}

#[tokio::test]
async fn a_worker_claims_the_longest_waiting_entry_with_more_for_the_same_domain_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = directmail::db::Db::connect(&crate::helpers::fresh_database(dir.path()).await)
        .await
        .unwrap();
    db.migrate().await.unwrap();
    // queued alternately for a slow peer and a fast one; the slow one's is oldest
    let mut tx = db.begin().await.unwrap();
    for (n, to) in ["a@slow.test", "b@fast.test", "c@slow.test", "d@fast.test"]
        .into_iter()
        .enumerate()
    {
        let message_id = format!("{n}@here.test");
        outbound::insert(
            &mut tx,
            outbound::NewOutbound {
                mailbox_id: None,
                kind: "message",
                from_addr: "ana@here.test",
                message_id: &message_id,
                subject: "s",
                raw: b"x",
                recipient_cert: None,
            },
            &[to.to_owned()],
            1_000,
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let domains = async |ids: &[i64]| -> Vec<String> {
        outbound::jobs(&db, ids)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.domain)
            .collect()
    };
    let mut conn = db.pool.acquire().await.unwrap();
    let first = outbound::claim_on(&mut conn, db.backend, 1_000, 60, 4)
        .await
        .unwrap();
    assert_eq!(
        domains(&first).await,
        ["slow.test", "slow.test"],
        "a batch is one domain's: a slow peer holds up only its own mail"
    );
    let second = outbound::claim_on(&mut conn, db.backend, 1_000, 60, 4)
        .await
        .unwrap();
    assert_eq!(domains(&second).await, ["fast.test", "fast.test"]);
    let third = outbound::claim_on(&mut conn, db.backend, 1_000, 60, 4)
        .await
        .unwrap();
    assert!(third.is_empty(), "each entry is claimed once: {third:?}");
    let one = outbound::claim_on(&mut conn, db.backend, 1_000 + 61, 60, 1)
        .await
        .unwrap();
    assert_eq!(
        one,
        first[..1],
        "a lapsed claim is taken again, oldest first"
    );
}

/// A door in front of a loopback server that the test holds shut: connections are
/// accepted and counted, and wait until [`Door::open`] to reach the server.
pub struct Door {
    pub addr: String,
    knocks: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    open: tokio::sync::watch::Sender<bool>,
}

impl Door {
    pub async fn before(server: String) -> Door {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (open, opened) = tokio::sync::watch::channel(false);
        let knocks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn({
            let knocks = knocks.clone();
            async move {
                loop {
                    let (mut client, _) = listener.accept().await.unwrap();
                    knocks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut opened = opened.clone();
                    let server = server.clone();
                    tokio::spawn(async move {
                        let _ = opened.wait_for(|open| *open).await;
                        let mut to = tokio::net::TcpStream::connect(&server).await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut to).await;
                    });
                }
            }
        });
        Door { addr, knocks, open }
    }

    /// Connections accepted so far.
    pub fn knocks(&self) -> usize {
        self.knocks.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets every waiting and later connection through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

#[tokio::test]
async fn a_server_told_to_stop_finishes_the_message_it_is_sending_and_claims_no_more() {
    // the foreign HISP's mail exchanger, behind a door the test holds shut: the
    // portal's worker connects and waits for the greeting
    let (sink, sink_addr) = sink().await;
    let door = Door::before(sink_addr).await;
    let door_addr = door.addr.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (app, serving) = TestApp::spawn_until(|c| c.smtp_relay = Some(door_addr), async move {
        let _ = stopped.await;
    })
    .await;
    let ana = hosted_mailbox(
        &app,
        "Lakeside Clinic",
        "direct.lakeside.test",
        "dr.ana@direct.lakeside.test",
    )
    .await;
    foreign_kim(&app).await;
    let first = to_kim(&app, &ana, "First", "Sent while the server stops.").await;
    app.state.wake_sender.notify_one();
    wait_for("a worker to be at the peer's door", async || {
        door.knocks() == 1
    })
    .await;
    stop.send(()).unwrap();
    // the web listener has stopped answering: the server is stopping
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    wait_for("the portal to stop serving pages", async || {
        client.get(app.url("/healthz")).send().await.is_err()
    })
    .await;
    // queued now (as by another instance): no worker of a stopping server claims it
    let second = to_kim(&app, &ana, "Second", "Left for the next start.").await;
    app.state.wake_sender.notify_one();
    door.open();
    serving.await.unwrap().unwrap();
    assert_eq!(
        outbound::statuses(&app.state.db, first).await.unwrap()[0].1,
        "sent",
        "the message being sent was finished and recorded before the server stopped"
    );
    assert_eq!(sink.received.lock().unwrap().len(), 1);
    let queued: String =
        sqlx::query_scalar("select state from outbound_queue where outbound_id = $1")
            .bind(second)
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(queued, "queued", "nothing more is claimed once stopping");
}
