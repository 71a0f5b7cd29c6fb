//! The webmail in real Chromium: compose with a PDF, send, read as the recipient with
//! the trust badge, open the PDF inline, reply, see "delivered"; a draft survives an
//! idle timeout; a renamed program is refused; axe-core finds no serious problem on
//! the inbox, reading and compose pages.

use std::time::{Duration, Instant, SystemTime};

use fantoccini::{Client, Locator};

use crate::browser::{arrive, chromium, fill, path, start_driver, text};
use crate::helpers::{PASSWORD, TestApp, pdf};

pub(crate) async fn sign_in(c: &Client, app: &TestApp, email: &str) {
    c.goto(&app.url("/login")).await.unwrap();
    fill(c, "#email", email).await;
    fill(c, "#password", PASSWORD).await;
    c.find(Locator::Css("main form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    arrive(c, "/").await;
}

pub(crate) async fn sign_out(c: &Client, app: &TestApp) {
    c.goto(&app.url("/")).await.unwrap();
    c.find(Locator::Css("form.signout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    arrive(c, "/login").await;
}

pub(crate) async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|_| panic!("element {css}"))
        .click()
        .await
        .unwrap();
}

/// Waits until the element's text contains `want`, reloading the page between looks
/// when `reload` (for state that changes on the server).
pub(crate) async fn until_text(c: &Client, css: &str, want: &str, reload: bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            let t = e.text().await.unwrap_or_default();
            if t.contains(want) {
                return t;
            }
        }
        assert!(Instant::now() < deadline, "{css} never showed {want:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        if reload {
            c.refresh().await.unwrap();
        }
    }
}

/// Runs axe-core (vendored in tests/assets) on the current page and returns the
/// serious and critical violations, described.
pub(crate) async fn axe_problems(c: &Client) -> Vec<String> {
    let axe = include_str!("../assets/axe-4.14.1.min.js");
    c.execute(axe, vec![]).await.expect("axe loads");
    let result = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { resultTypes: ['violations'] })
               .then(r => done(r.violations
                  .filter(v => v.impact === 'serious' || v.impact === 'critical')
                  .map(v => v.id + ': ' + v.help + ' @ ' + v.nodes.map(n => n.target.join(' ')).join(', '))))
               .catch(e => done(['axe failed: ' + e]));",
            vec![],
        )
        .await
        .expect("axe runs");
    serde_json::from_value(result).unwrap_or_default()
}

/// Waits until the browser is on a path starting with `prefix`.
pub(crate) async fn until_path(c: &Client, prefix: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !path(c).await.starts_with(prefix) {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn upload(c: &Client, file: &std::path::Path) {
    c.find(Locator::Css("#file"))
        .await
        .unwrap()
        .send_keys(file.to_str().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_pdf_is_sent_read_inline_answered_and_shown_delivered_in_chromium() {
    let app = TestApp::spawn().await;
    let (ana_box, kim_box) = app.lakeside_and_hillside().await;
    let files = tempfile::tempdir().unwrap();
    let summary = files.path().join("summary.pdf");
    std::fs::write(&summary, pdf("Discharge summary")).unwrap();
    let fake = files.path().join("scan.pdf");
    std::fs::write(
        &fake,
        b"MZ\x90\x00\x03\x00\x00\x00 this is a Windows program",
    )
    .unwrap();

    let driver = start_driver();
    let profile = tempfile::tempdir().unwrap();
    let c = chromium(&driver, profile.path()).await;

    // Ana writes to Kim with a PDF; a renamed program is refused with the reason
    sign_in(&c, &app, "ana@direct.lakeside.test").await;
    c.goto(&app.url(&format!("/mail/{}/inbox", ana_box.id)))
        .await
        .unwrap();
    let problems = axe_problems(&c).await;
    assert!(problems.is_empty(), "inbox: {problems:#?}");
    click(&c, "#compose").await;
    until_path(&c, "/mail/", "no new-message page").await;
    fill(&c, "#to", "front@direct.hillside.test").await;
    // the first keystroke made the draft
    until_path(&c, "/mail/drafts/", "no draft made on typing").await;
    let draft_path = path(&c).await;
    fill(&c, "#subject", "Referral for Ms. Diaz").await;
    fill(&c, "#body", "Please see her this week.").await;
    // the address is checked as it is entered
    click(&c, "#subject").await;
    until_text(&c, "#to-chips", "on this HISP", false).await;
    upload(&c, &fake).await;
    let refused = until_text(&c, "#upload-refused", "scan.pdf", false).await;
    assert!(refused.to_lowercase().contains("windows"), "{refused}");
    upload(&c, &summary).await;
    // picking the file attached it: the Attach button is only for pages without scripts
    assert!(
        !c.find(Locator::Css("#upload"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    until_text(&c, "#attachment-list", "summary.pdf", false).await;
    let problems = axe_problems(&c).await;
    assert!(problems.is_empty(), "compose: {problems:#?}");
    click(&c, "#send").await;
    until_path(&c, "/mail/messages/", "not on the Sent item").await;
    let sent_path = path(&c).await;
    assert!(
        text(&c, "#delivery")
            .await
            .contains("front@direct.hillside.test")
    );
    // the Sent item follows the delivery by itself, without a reload, and gives its
    // times in the browser's time zone with UTC on hover
    until_text(&c, "#delivery", "delivered", false).await;
    let time = c.find(Locator::Css("#delivery time")).await.unwrap();
    assert!(!time.text().await.unwrap().contains("UTC"));
    assert!(
        time.attr("title")
            .await
            .unwrap()
            .unwrap_or_default()
            .ends_with("UTC")
    );
    let problems = axe_problems(&c).await;
    assert!(problems.is_empty(), "sent item: {problems:#?}");
    c.goto(&app.url(&draft_path)).await.unwrap();
    assert!(
        text(&c, "main").await.contains("could not find"),
        "the sent draft is gone"
    );
    sign_out(&c, &app).await;

    // Kim sees it unread and trusted, opens the PDF inline, replies
    sign_in(&c, &app, "kim@direct.hillside.test").await;
    c.goto(&app.url(&format!("/mail/{}/inbox", kim_box.id)))
        .await
        .unwrap();
    let row = until_text(&c, "#message-list", "Referral for Ms. Diaz", true).await;
    assert!(row.contains("Trusted"), "{row}");
    let unread = c
        .find(Locator::Css("#message-list tr.unread"))
        .await
        .expect("an unread row");
    assert!(unread.text().await.unwrap().contains("Referral"));
    click(&c, "#message-list tr.unread a").await;
    let trust = text(&c, "#trust").await;
    assert!(
        trust.contains("Test certificate") && trust.contains("Signed by"),
        "{trust}"
    );
    let problems = axe_problems(&c).await;
    assert!(problems.is_empty(), "message: {problems:#?}");
    let message_path = path(&c).await;
    let href = c
        .find(Locator::Css("a.open-pdf"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .expect("an Open link for the PDF");
    c.goto(&app.url(&href)).await.unwrap();
    let shown = c
        .execute("return document.contentType;", vec![])
        .await
        .unwrap();
    assert_eq!(
        shown.as_str(),
        Some("application/pdf"),
        "opened in the browser"
    );
    // shown in the browser, not saved as a download: the tab is on the attachment
    assert!(
        c.current_url().await.unwrap().as_str().ends_with(&href),
        "the PDF opened in the tab"
    );
    c.goto(&app.url(&message_path)).await.unwrap();
    click(&c, "#message-actions button[value=reply]").await;
    until_path(&c, "/mail/drafts/", "no reply draft").await;
    let to = c
        .find(Locator::Css("#to"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(to, "dr.ana@direct.lakeside.test");
    c.find(Locator::Css("#body"))
        .await
        .unwrap()
        .send_keys("Booked for Thursday. ")
        .await
        .unwrap();
    click(&c, "#send").await;
    until_path(&c, "/mail/messages/", "reply not sent").await;
    sign_out(&c, &app).await;

    // Ana sees "delivered" on her Sent item, and Kim's reply
    sign_in(&c, &app, "ana@direct.lakeside.test").await;
    c.goto(&app.url(&sent_path)).await.unwrap();
    until_text(&c, "#delivery", "delivered", true).await;
    c.goto(&app.url(&format!("/mail/{}/inbox", ana_box.id)))
        .await
        .unwrap();
    until_text(&c, "#message-list", "Re: Referral for Ms. Diaz", true).await;

    // a draft typed before an idle timeout is intact after signing in again
    click(&c, "#compose").await;
    until_path(
        &c,
        &format!("/mail/{}/compose", ana_box.id),
        "no new-message page",
    )
    .await;
    fill(&c, "#subject", "Lab results to follow").await;
    fill(&c, "#body", "The potassium was 5.9; repeat on Monday.").await;
    // the server has the whole text (the first keystroke's save made the draft; the
    // next one carries the rest)
    let deadline = Instant::now() + Duration::from_secs(30);
    while sqlx::query_scalar::<_, i64>("select count(*) from drafts where body = $1")
        .bind("The potassium was 5.9; repeat on Monday.")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the draft's text was never saved"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_text(&c, "#saved", "Saved at", false).await;
    let draft_path = path(&c).await;
    assert!(draft_path.starts_with("/mail/drafts/"), "{draft_path}");
    // time passes beyond the idle timeout: the server ends the session
    app.state.clock.advance(2 * 3600);
    c.refresh().await.unwrap();
    arrive(&c, "/login").await;
    fill(&c, "#email", "ana@direct.lakeside.test").await;
    fill(&c, "#password", PASSWORD).await;
    c.find(Locator::Css("main form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    arrive(&c, &draft_path).await;
    let subject = c
        .find(Locator::Css("#subject"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    let body = c
        .find(Locator::Css("#body"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(subject, "Lab results to follow");
    assert_eq!(body, "The potassium was 5.9; repeat on Monday.");
    c.close().await.unwrap();
}

#[tokio::test]
async fn compose_offers_a_directory_entry_and_says_its_certificate_was_found_via_dns() {
    use der::Encode as _;
    use directmail_discovery::responder::Records;

    let (app, dns, ana_box) = TestApp::spawn_with_dns().await;
    // a cardiologist on another HISP: in the directory, certificate published in DNS
    let ca = directmail::pki::dev_ca(&app.state.db, &app.state.secret, app.now())
        .await
        .unwrap();
    let cert = ca
        .issue_address("jose.muller@direct.elsewhere.test", SystemTime::now())
        .unwrap();
    let mut records = Records::new();
    records
        .add_cert(
            "jose.muller@direct.elsewhere.test",
            &cert.certificate().to_der().unwrap(),
            300,
        )
        .unwrap();
    dns.set_records(records);
    let files = tempfile::tempdir().unwrap();
    let csv = files.path().join("directory.csv");
    std::fs::write(
        &csv,
        format!(
            "{}\npractitioner,José Müller-Smith,Elsewhere Cardiology,1234567893,207RC0000X Cardiovascular Disease,Springfield,IL,62701,,jose.muller@direct.elsewhere.test\n",
            crate::directory::HEADER
        ),
    )
    .unwrap();
    crate::directory::cli_import(&app, &csv).await;

    let driver = start_driver();
    let profile = tempfile::tempdir().unwrap();
    let c = chromium(&driver, profile.path()).await;
    sign_in(&c, &app, "ana@direct.lakeside.test").await;
    c.goto(&app.url(&format!("/mail/{}/inbox", ana_box.id)))
        .await
        .unwrap();
    click(&c, "#compose").await;
    until_path(&c, "/mail/", "no new-message page").await;
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#compose-main"))
        .await
        .unwrap();
    // part of the name, without its accent, offers the entry
    c.find(Locator::Css("#to"))
        .await
        .unwrap()
        .send_keys("mull")
        .await
        .unwrap();
    let offered = until_text(&c, "#to-suggest", "José Müller-Smith", false).await;
    assert!(offered.contains("Elsewhere Cardiology"), "{offered}");
    click(&c, "#to-suggest li").await;
    let to = c
        .find(Locator::Css("#to"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(to, "jose.muller@direct.elsewhere.test, ");
    let chip = until_text(&c, "#to-chips", "found via DNS", false).await;
    assert!(chip.contains("jose.muller@direct.elsewhere.test"), "{chip}");
    c.close().await.unwrap();
    dns.shutdown().await;
}

#[tokio::test]
async fn the_idle_warning_appears_on_an_inbox_that_polls_for_new_mail_with_the_real_time_left() {
    let app = TestApp::spawn().await;
    let mailbox = crate::webmail::ana_desk(&app).await;
    sqlx::query("update organizations set idle_timeout_minutes = 1")
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    // a message in the Inbox, so that the page polls for newer ones every 15 s
    crate::webmail::deliver(
        &app,
        mailbox.id,
        &crate::webmail::Mail::new(
            "lab@partner.example",
            "dr.ana@direct.lakeside.test",
            "Results",
            "Attached.",
        ),
    )
    .await;
    let driver = start_driver();
    let profile = tempfile::tempdir().unwrap();
    let c = chromium(&driver, profile.path()).await;
    sign_in(&c, &app, "ana@direct.lakeside.test").await;
    c.goto(&app.url(&format!("/mail/{}/inbox", mailbox.id)))
        .await
        .unwrap();
    assert!(
        c.find(Locator::Css("#poller")).await.is_ok(),
        "the Inbox polls"
    );
    // one minute of idleness warns 30 s before the end, although the poll ran twice
    let warning = c
        .wait()
        .at_most(Duration::from_secs(55))
        .for_element(Locator::Css("#timeout-warning:not([hidden])"))
        .await
        .expect("the idle warning appears while the Inbox polls");
    let left = text(&c, "#timeout-left").await;
    assert!(
        left.ends_with("seconds") && !left.contains("minute"),
        "less than a minute is left and it says so: {left}"
    );
    assert!(warning.text().await.unwrap().contains("signed out in"));
    c.close().await.unwrap();
}
