//! Alerts to ordinary e-mail, without PHI (issue 15): new-mail alerts to a verified
//! address, the verification link, invitation and password links by e-mail, and a
//! relay that is down. The relay is a loopback SMTP sink offering STARTTLS with the
//! test CA's certificate, which the portal trusts through `DIRECTMAIL_HTTPS_ROOTS`.

use directmail::store::alerts as store;
use regex::Regex;
use reqwest::StatusCode;

use crate::helpers::{Browser, TestApp, test_https};
use crate::outbound::{Sink, wait_for};
use crate::webmail::{compose, delivered};

const ANA: &str = "ana@direct.lakeside.test";
const KIM: &str = "kim@direct.hillside.test";
const ANA_HOME: &str = "ana.home@example.org";

/// A loopback SMTP server with STARTTLS (the test CA's certificate for 127.0.0.1)
/// keeping what it receives, and its address.
async fn tls_sink() -> (Sink, String) {
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(directmail_smtp::serve(
        listener,
        directmail_smtp::Config {
            tls: Some(test_https().server_config.clone()),
            ..directmail_smtp::Config::default()
        },
        sink.clone(),
        std::future::pending(),
    ));
    (sink, addr.to_string())
}

/// A portal whose alert relay is a fresh sink, with Lakeside (Ana) and Hillside (Kim).
async fn portal_with_alerts() -> (TestApp, Sink, i64, i64) {
    let (sink, relay) = tls_sink().await;
    let app = TestApp::spawn_with(|c| {
        c.alert_smtp_relay = Some(relay);
        c.portal_name = "Prairie HIE Secure Mail".into();
    })
    .await;
    let (ana_box, kim_box) = app.lakeside_and_hillside().await;
    (app, sink, ana_box.id, kim_box.id)
}

/// The `n`th e-mail the sink received (waiting for it): recipients, raw text, and
/// the decoded subject and body.
async fn letter(sink: &Sink, n: usize) -> (Vec<String>, String, String) {
    wait_for("the alert relay to receive an e-mail", async || {
        sink.received.lock().unwrap().len() > n
    })
    .await;
    let (envelope, data) = sink.received.lock().unwrap()[n].clone();
    assert!(envelope.tls, "alert e-mails go only over STARTTLS");
    let raw = String::from_utf8_lossy(&data).into_owned();
    let parsed = mail_parser::MessageParser::default()
        .parse(&data)
        .expect("a readable e-mail");
    let text = format!(
        "{}\n{}",
        parsed.subject().unwrap_or_default(),
        parsed.body_text(0).unwrap_or_default()
    );
    (envelope.rcpt_to, raw, text)
}

fn link_in(text: &str, path: &str) -> String {
    Regex::new(&format!(r"https?://[^\s]+{path}[^\s]*"))
        .unwrap()
        .find(text)
        .unwrap_or_else(|| panic!("no {path} link in {text}"))
        .as_str()
        .to_owned()
}

/// Ana gives her home address on her account page and confirms it with the link the
/// sink received as e-mail number `n`.
async fn ana_turns_alerts_on(app: &TestApp, sink: &Sink, n: usize) -> Browser {
    let mut ana = app.signed_in(ANA).await;
    let page = ana.get("/account/alerts").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("never says who wrote"), "{}", page.body);
    let saved = ana
        .post("/account/alerts/address", &[("email", ANA_HOME)])
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let (to, _, text) = letter(sink, n).await;
    assert_eq!(to, vec![ANA_HOME.to_owned()]);
    let link = link_in(&text, "/alerts/verify/");
    let path = link.split_once("/alerts/").map(|(_, p)| p).unwrap();
    let mut visitor = app.browser();
    let shown = visitor.get(&format!("/alerts/{path}")).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    let done = visitor.post(&format!("/alerts/{path}"), &[]).await;
    assert!(done.body.contains("id=\"verify-done\""), "{}", done.body);
    let page = ana.get("/account/alerts").await;
    assert!(page.body.contains("<dd id=\"alert-state\">On</dd>"));
    assert!(!page.body.contains("Not yet"));
    ana
}

/// Kim sends Ana a message with a patient from the webmail; it reaches Ana's Inbox
/// through the real S/MIME path and the inbound processor.
async fn kim_writes(app: &TestApp, kim_box: i64, ana_box: i64, subject: &str, body: &str) {
    let mut kim = app.signed_in(KIM).await;
    let draft = compose(&mut kim, kim_box).await;
    let fields = [
        ("to", "dr.ana@direct.lakeside.test"),
        ("cc", ""),
        ("subject", subject),
        ("body", body),
        ("patient_given", "Zebulon"),
        ("patient_family", "Quartermaine"),
        ("patient_birth_date", "1950-02-03"),
        ("patient_sex", "M"),
        ("patient_id", "2.16.840.1.113883.19.999999:QZ-99812"),
        ("patient_purpose", "treatment"),
    ];
    let sent = kim
        .post(&format!("/mail/drafts/{draft}/send"), &fields)
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    delivered(app, ana_box, subject).await;
}

/// The alert worker as the portal runs it, for one pass at a time.
fn alerter(app: &TestApp) -> directmail::alerts::Alerter {
    directmail::alerts::Alerter::new(
        &app.config,
        app.state.db.clone(),
        app.state.secret.clone(),
        app.state.clock.clone(),
        format!("http://{}", app.addr),
        std::sync::Arc::default(),
    )
    .unwrap()
}

async fn jobs(app: &TestApp, kind: &str) -> Vec<(String, i64, i64)> {
    sqlx::query_as::<_, (String, i64, i64)>(
        "select state, attempts, next_attempt_at from alert_jobs where kind = $1 order by id",
    )
    .bind(kind)
    .fetch_all(&app.state.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_new_mail_alert_counts_and_links_to_sign_in_and_never_carries_the_message() {
    let (app, sink, ana_box, kim_box) = portal_with_alerts().await;
    ana_turns_alerts_on(&app, &sink, 0).await;

    let subject = "Biopsy result Quixotic-7731";
    let body = "Malignant melanoma confirmed; call Mrs Quartermaine about Xylophone-4490.";
    kim_writes(&app, kim_box, ana_box, subject, body).await;
    let (to, raw, text) = letter(&sink, 1).await;
    assert_eq!(to, vec![ANA_HOME.to_owned()]);
    assert!(
        text.contains("You have 1 new secure message in Prairie HIE Secure Mail."),
        "{text}"
    );
    assert!(
        text.contains(&format!("http://{}/login", app.addr)),
        "{text}"
    );
    for secret in [
        "Quixotic",
        "Biopsy",
        "Melanoma",
        "melanoma",
        "Xylophone",
        "Zebulon",
        "Quartermaine",
        "QZ-99812",
        "1950",
        "hillside",
        "Hillside",
        "kim@",
        "front@",
        "dr.ana@",
    ] {
        assert!(
            !raw.contains(secret) && !text.contains(secret),
            "the alert carries {secret:?}:\n{raw}"
        );
    }

    // a second message within the interval brings no second alert: it waits for the
    // interval and is counted then
    let first_sent = app.now();
    kim_writes(&app, kim_box, ana_box, "Second Quixotic-7732", "More.").await;
    wait_for("the second alert to be queued", async || {
        jobs(&app, "new-mail").await.len() == 2
    })
    .await;
    alerter(&app).send_due().await.unwrap();
    let waiting = jobs(&app, "new-mail").await;
    assert_eq!(waiting[1].0, "pending", "{waiting:?}");
    assert!(
        waiting[1].2 >= first_sent - 5 + 15 * 60,
        "it waits for the interval: {waiting:?}"
    );
    assert_eq!(
        sink.received.lock().unwrap().len(),
        2,
        "no second alert yet"
    );

    // once the interval has passed, one alert counts both
    app.state.clock.advance(15 * 60 + 5);
    app.state.wake_alerts.notify_one();
    let (_, raw, text) = letter(&sink, 2).await;
    assert!(
        text.contains("You have 2 new secure messages in Prairie HIE Secure Mail."),
        "{text}"
    );
    assert!(!raw.contains("Quixotic") && !text.contains("Quixotic"));
}

#[tokio::test]
async fn an_unverified_address_gets_no_alert() {
    let (app, sink, ana_box, kim_box) = portal_with_alerts().await;
    let mut ana = app.signed_in(ANA).await;
    ana.post("/account/alerts/address", &[("email", ANA_HOME)])
        .await;
    letter(&sink, 0).await; // the verification link, never opened
    let page = ana.get("/account/alerts").await;
    assert!(page.body.contains("Not yet"), "{}", page.body);

    kim_writes(&app, kim_box, ana_box, "Unverified Quixotic", "Text.").await;
    assert!(
        jobs(&app, "new-mail").await.is_empty(),
        "nothing is queued for an unverified address"
    );
    alerter(&app).send_due().await.unwrap();
    assert_eq!(sink.received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_wrong_expired_reused_or_replaced_verification_link_says_why() {
    let (app, sink, _, _) = portal_with_alerts().await;
    let mut visitor = app.browser();
    let wrong = visitor.get("/alerts/verify/not-a-real-token").await;
    assert_eq!(wrong.status, StatusCode::NOT_FOUND);
    assert!(
        wrong.body.contains("This link is not valid"),
        "{}",
        wrong.body
    );

    // reused
    ana_turns_alerts_on(&app, &sink, 0).await;
    let (_, _, text) = letter(&sink, 0).await;
    let path = link_in(&text, "/alerts/verify/")
        .split_once("/alerts/")
        .map(|(_, p)| p.to_owned())
        .unwrap();
    let again = visitor.post(&format!("/alerts/{path}"), &[]).await;
    assert_eq!(again.status, StatusCode::GONE);
    assert!(again.body.contains("already used"), "{}", again.body);

    // replaced: a new address, then the first link of the two is refused
    let mut ana = app.signed_in(ANA).await;
    ana.post(
        "/account/alerts/address",
        &[("email", "ana.second@example.org")],
    )
    .await;
    let (_, _, text) = letter(&sink, 1).await;
    let second = link_in(&text, "/alerts/verify/")
        .split_once("/alerts/")
        .map(|(_, p)| p.to_owned())
        .unwrap();
    ana.post(
        "/account/alerts/address",
        &[("email", "ana.third@example.org")],
    )
    .await;
    let replaced = visitor.get(&format!("/alerts/{second}")).await;
    assert_eq!(replaced.status, StatusCode::NOT_FOUND);
    assert!(
        replaced.body.contains("the address was changed"),
        "{}",
        replaced.body
    );
    let page = ana.get("/account/alerts").await;
    assert!(
        page.body.contains("Not yet"),
        "a new address needs a new check"
    );

    // expired: the newest link, a day later
    let (_, _, text) = letter(&sink, 2).await;
    let third = link_in(&text, "/alerts/verify/")
        .split_once("/alerts/")
        .map(|(_, p)| p.to_owned())
        .unwrap();
    app.state.clock.advance(store::VERIFY_SECONDS + 1);
    let expired = visitor.post(&format!("/alerts/{third}"), &[]).await;
    assert_eq!(expired.status, StatusCode::GONE);
    assert!(expired.body.contains("has expired"), "{}", expired.body);
}

#[tokio::test]
async fn a_relay_that_is_down_is_retried_shown_to_the_operator_and_never_holds_up_delivery() {
    // a port where nothing listens
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let app = TestApp::spawn_with(|c| c.alert_smtp_relay = Some(down)).await;
    let (ana_box, kim_box) = app.lakeside_and_hillside().await;
    // Ana's address was verified earlier (when the relay still worked)
    let ana = directmail::store::users::by_email(&app.state.db, ANA)
        .await
        .unwrap()
        .unwrap();
    let mut tx = app.state.db.begin().await.unwrap();
    store::set_address(&mut tx, ana.id, ANA_HOME, app.now())
        .await
        .unwrap();
    store::create_verification(&mut tx, ana.id, ANA_HOME, "hash", app.now())
        .await
        .unwrap();
    assert!(store::verify(&mut tx, "hash", app.now()).await.unwrap());
    tx.commit().await.unwrap();

    // delivery completes whatever the relay does
    kim_writes(&app, kim_box.id, ana_box.id, "Relay down Quixotic", "Text.").await;
    wait_for("a failed attempt", async || {
        jobs(&app, "new-mail")
            .await
            .first()
            .is_some_and(|j| j.1 >= 1)
    })
    .await;

    // the operator sees it, without the address
    let operator = app
        .user(
            None,
            "op@direct.localhost",
            directmail::domain::Role::Operator,
        )
        .await;
    let mut op = app.signed_in(&operator.email).await;
    let queue = op.get("/queue").await;
    assert!(
        queue.body.contains("id=\"alert-troubles\""),
        "{}",
        queue.body
    );
    assert!(queue.body.contains("new-mail alert") && queue.body.contains("retrying"));
    assert!(queue.body.contains(ANA) && !queue.body.contains(ANA_HOME));
    let home = op.get("/").await;
    assert!(home.body.contains("id=\"glance-alerts\""), "{}", home.body);

    // and it is tried again later
    let next = jobs(&app, "new-mail").await[0].2;
    app.state.clock.advance(next - app.now() + 1);
    app.state.wake_alerts.notify_one();
    wait_for("a second attempt", async || {
        jobs(&app, "new-mail")
            .await
            .first()
            .is_some_and(|j| j.1 >= 2 && j.0 == "pending")
    })
    .await;
}

#[tokio::test]
async fn invitations_and_password_links_can_be_e_mailed_and_say_only_what_they_are() {
    let (app, sink, _, _) = portal_with_alerts().await;
    let org = directmail::store::orgs::by_name(&app.state.db, "Lakeside Clinic")
        .await
        .unwrap()
        .unwrap();
    let admin = app
        .user(
            Some(&org),
            "boss@direct.lakeside.test",
            directmail::domain::Role::OrgAdmin,
        )
        .await;
    let mut boss = app.signed_in(&admin.email).await;
    let form = boss.get(&format!("/orgs/{}/users/invite", org.id)).await;
    assert!(form.body.contains("E-mail the link to this address"));
    let invited = boss
        .post(
            &format!("/orgs/{}/users/invite", org.id),
            &[
                ("email", "new.nurse@lakeside.example"),
                ("name", "New Nurse"),
                ("role", "member"),
                ("email_link", "1"),
            ],
        )
        .await;
    assert_eq!(invited.status, StatusCode::SEE_OTHER, "{}", invited.body);
    let after = boss.get(&invited.location()).await;
    assert!(
        !after.body.contains("/invite/"),
        "an e-mailed link is not shown"
    );
    let (to, raw, text) = letter(&sink, 0).await;
    assert_eq!(to, vec!["new.nurse@lakeside.example".to_owned()]);
    assert!(text.contains("You have been invited to Prairie HIE Secure Mail"));
    assert!(!raw.contains("Lakeside") && !raw.contains("boss@"));
    let link = link_in(&text, "/invite/");
    let path = link.split_once("/invite/").map(|(_, p)| p).unwrap();
    let page = app.browser().get(&format!("/invite/{path}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);

    // a password reset for Ana, e-mailed to her login address
    let ana = directmail::store::users::by_email(&app.state.db, ANA)
        .await
        .unwrap()
        .unwrap();
    let reset = boss
        .post(
            &format!("/orgs/{}/users/{}/reset-password", org.id, ana.id),
            &[("email_link", "1")],
        )
        .await;
    assert_eq!(reset.status, StatusCode::SEE_OTHER, "{}", reset.body);
    let (to, _, text) = letter(&sink, 1).await;
    assert_eq!(to, vec![ANA.to_owned()]);
    assert!(
        text.contains("Choose a new password for Prairie HIE Secure Mail"),
        "{text}"
    );
    let link = link_in(&text, "/invite/");
    let path = link.split_once("/invite/").map(|(_, p)| p).unwrap();
    let page = app.browser().get(&format!("/invite/{path}")).await;
    assert!(page.body.contains("Choose a new password"), "{}", page.body);

    // nothing sealed stays at rest once sent
    let left: i64 = sqlx::query_scalar("select count(*) from alert_jobs where sealed_link <> ''")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn without_a_relay_the_link_is_shown_to_copy_and_alerts_are_not_offered() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let admin = app
        .user(
            Some(&org),
            "boss@direct.lakeside.test",
            directmail::domain::Role::OrgAdmin,
        )
        .await;
    let mut boss = app.signed_in(&admin.email).await;
    let form = boss.get(&format!("/orgs/{}/users/invite", org.id)).await;
    assert!(!form.body.contains("E-mail the link"));
    let invited = boss
        .post(
            &format!("/orgs/{}/users/invite", org.id),
            &[
                ("email", "new.nurse@lakeside.example"),
                ("name", "New Nurse"),
                ("role", "member"),
                ("email_link", "1"),
            ],
        )
        .await;
    let after = boss.get(&invited.location()).await;
    assert!(after.body.contains("/invite/"), "{}", after.body);
    let page = boss.get("/account/alerts").await;
    assert!(page.body.contains("id=\"alerts-unavailable\""));
}

#[tokio::test]
async fn the_cli_queues_a_password_link_for_the_running_portal_to_e_mail() {
    let (app, sink, _, _) = portal_with_alerts().await;
    // without the relay in its configuration the command refuses, before anything changes
    let refused = app
        .cli(&["admin", "user", "reset-password", ANA, "--email-link"])
        .await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("DIRECTMAIL_ALERT_SMTP_RELAY"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(sink.received.lock().unwrap().is_empty());

    let mut command = app.command();
    command
        .env(
            "DIRECTMAIL_ALERT_SMTP_RELAY",
            app.config.alert_smtp_relay.as_deref().unwrap(),
        )
        .args(["admin", "user", "reset-password", ANA, "--email-link"]);
    let out = crate::helpers::run(command).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("queued") && !said.contains("/invite/"),
        "{said}"
    );
    let (to, _, text) = letter(&sink, 0).await;
    assert_eq!(to, vec![ANA.to_owned()]);
    assert!(
        text.contains("Choose a new password for Prairie HIE Secure Mail"),
        "{text}"
    );
    link_in(&text, "/invite/");
}

#[tokio::test]
async fn a_portal_told_to_stop_finishes_the_alert_it_is_sending_and_claims_no_more() {
    // the relay behind a door the test holds shut: the alert worker connects and waits
    let (sink, relay) = tls_sink().await;
    let door = crate::outbound::Door::before(relay).await;
    let door_addr = door.addr.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (app, serving) =
        TestApp::spawn_until(|c| c.alert_smtp_relay = Some(door_addr), async move {
            let _ = stopped.await;
        })
        .await;
    app.lakeside_and_hillside().await;
    let ana = directmail::store::users::by_email(&app.state.db, ANA)
        .await
        .unwrap()
        .unwrap();
    let queue = async |link: &str| {
        let mut tx = app.state.db.begin().await.unwrap();
        directmail::alerts::queue_link(
            &mut tx,
            &app.state.secret,
            directmail::alerts::Kind::Reset,
            ana.id,
            ANA,
            link,
            app.state.clock.now(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    };
    queue("https://portal.example/invite/first").await;
    app.state.wake_alerts.notify_one();
    wait_for("the alert worker to be at the relay's door", async || {
        door.knocks() == 1
    })
    .await;
    stop.send(()).unwrap();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(1))
        .build()
        .unwrap();
    wait_for("the portal to stop serving pages", async || {
        client.get(app.url("/healthz")).send().await.is_err()
    })
    .await;
    // queued now (as by another instance or the CLI): a stopping worker claims no more
    queue("https://portal.example/invite/second").await;
    app.state.wake_alerts.notify_one();
    door.open();
    serving.await.unwrap().unwrap();
    assert_eq!(
        jobs(&app, "reset")
            .await
            .into_iter()
            .map(|(state, attempts, _)| (state, attempts))
            .collect::<Vec<_>>(),
        [("sent".to_owned(), 1), ("pending".to_owned(), 0)],
        "the alert being sent was finished and recorded; the next waits for a start"
    );
    let (to, _, text) = letter(&sink, 0).await;
    assert_eq!(to, vec![ANA.to_owned()]);
    assert!(text.contains("/invite/first"), "{text}");
    assert_eq!(sink.received.lock().unwrap().len(), 1);
}
