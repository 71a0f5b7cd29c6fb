//! A working day in real Chromium: the operator looks over the HISP, the office
//! manager invites a colleague, a clinician reads her mail and writes with a PDF from
//! the new-message page, the recipient reads it, and the sender watches delivery
//! arrive and reads the times in her own time zone. axe-core runs on every page the
//! walk visits, and every page is also looked at as a phone shows it (390×844): no
//! sideways scrolling and no heading broken inside a word. (The idle warning on a
//! polling Inbox has its own test, `browser_mail`, as it waits out a real minute.)

use fantoccini::{Client, Locator};

use crate::browser::{chromium, fill, fits_width, path, start_driver, text};
use crate::browser_mail::{axe_problems, click, sign_in, sign_out, until_path, until_text, upload};
use crate::helpers::{TestApp, pdf};
use directmail::domain::Role;

const DESKTOP: (u32, u32) = (1366, 900);
const PHONE: (u32, u32) = (390, 844);

/// The headings (and sidebar titles) on the page with a word broken over two lines.
async fn broken_headings(c: &Client) -> Vec<String> {
    let found = c
        .execute(
            "return Array.from(document.querySelectorAll('h1, h2, h3, .side-title')).filter(function (h) {
               var walker = document.createTreeWalker(h, NodeFilter.SHOW_TEXT);
               while (walker.nextNode()) {
                 var t = walker.currentNode, word = /\\S+/g, m;
                 while ((m = word.exec(t.nodeValue)) !== null) {
                   var r = document.createRange();
                   r.setStart(t, m.index); r.setEnd(t, m.index + m[0].length);
                   var tops = {};
                   Array.from(r.getClientRects()).forEach(function (x) { if (x.width > 0) tops[Math.round(x.top)] = 1; });
                   if (Object.keys(tops).length > 1) return true;
                 }
               }
               return false;
             }).map(function (h) { return h.textContent.trim(); });",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(found).unwrap_or_default()
}

/// Looks at the current page the way its users will: axe finds no serious problem,
/// and on a phone nothing scrolls sideways and no heading breaks inside a word (nor
/// on the desktop).
async fn look(c: &Client, what: &str) {
    let problems = axe_problems(c).await;
    assert!(problems.is_empty(), "{what}: {problems:#?}");
    let broken = broken_headings(c).await;
    assert!(
        broken.is_empty(),
        "{what}: headings broken inside a word: {broken:?}"
    );
    c.set_window_size(PHONE.0, PHONE.1).await.unwrap();
    assert!(
        fits_width(c).await,
        "{what} scrolls sideways on a phone, because of {:?}",
        too_wide(c).await
    );
    let broken = broken_headings(c).await;
    assert!(
        broken.is_empty(),
        "{what} on a phone: headings broken inside a word: {broken:?}"
    );
    c.set_window_size(DESKTOP.0, DESKTOP.1).await.unwrap();
}

/// The innermost elements that reach past the window's right edge (tag, id, class,
/// and their width), to say what to fix.
async fn too_wide(c: &Client) -> Vec<String> {
    let found = c
        .execute(
            "var w = window.innerWidth;
             return Array.from(document.querySelectorAll('body *')).filter(function (e) {
               var r = e.getBoundingClientRect();
               return r.right > w + 1 && !Array.from(e.children).some(function (k) {
                 return k.getBoundingClientRect().right > w + 1;
               });
             }).slice(0, 8).map(function (e) {
               return e.tagName.toLowerCase() + '#' + e.id + '.' + e.className + ' ' +
                 Math.round(e.getBoundingClientRect().width) + 'px: ' + (e.textContent || '').trim().slice(0, 60);
             });",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(found).unwrap_or_default()
}

async fn visit(c: &Client, app: &TestApp, to: &str) {
    c.goto(&app.url(to)).await.unwrap();
    look(c, to).await;
}

async fn displayed(c: &Client, css: &str) -> bool {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

async fn value(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn drafts_of(app: &TestApp, email: &str) -> i64 {
    sqlx::query_scalar(
        "select count(*) from drafts d join users u on u.id = d.user_id where u.email = $1",
    )
    .bind(email)
    .fetch_one(&app.state.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_working_day_in_chromium_with_axe_on_every_page_and_a_phone_size_look() {
    let app = TestApp::spawn().await;
    let (ana_box, kim_box) = app.lakeside_and_hillside().await;
    let lakeside = directmail::store::orgs::get(&app.state.db, ana_box.org_id)
        .await
        .unwrap()
        .unwrap();
    app.user(None, "ops@direct.localhost", Role::Operator).await;
    app.user(
        Some(&lakeside),
        "manager@direct.lakeside.test",
        Role::OrgAdmin,
    )
    .await;
    crate::webmail::deliver(
        &app,
        ana_box.id,
        &crate::webmail::Mail::new(
            "lab@partner.example",
            "dr.ana@direct.lakeside.test",
            "Potassium results for Mr. Okafor",
            "Attached.",
        ),
    )
    .await;
    let files = tempfile::tempdir().unwrap();
    let summary = files.path().join("summary.pdf");
    std::fs::write(&summary, pdf("Discharge summary")).unwrap();

    let driver = start_driver();
    let profile = tempfile::tempdir().unwrap();
    let c = chromium(&driver, profile.path()).await;
    c.set_window_size(DESKTOP.0, DESKTOP.1).await.unwrap();

    // the operator looks over the HISP
    sign_in(&c, &app, "ops@direct.localhost").await;
    for page in [
        "/".to_owned(),
        "/orgs".to_owned(),
        format!("/orgs/{}", lakeside.id),
        format!("/orgs/{}/domains/{}", lakeside.id, ana_box.domain_id),
        "/queue".to_owned(),
        "/quarantine".to_owned(),
        "/bundles".to_owned(),
        "/discovery".to_owned(),
        "/audit".to_owned(),
    ] {
        visit(&c, &app, &page).await;
    }
    // a table wider than the page (here an unbroken 300-character value) scrolls
    // inside its own box; the page itself does not scroll sideways
    let boxed = c
        .execute(
            "var cell = document.querySelector('table.list tbody td');
             cell.textContent = 'x'.repeat(300);
             var table = cell.closest('table');
             return [table.scrollWidth > table.clientWidth,
                     document.documentElement.scrollWidth <= window.innerWidth + 1];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        boxed,
        serde_json::json!([true, true]),
        "the audit log's table"
    );
    sign_out(&c, &app).await;

    // the office manager invites a colleague
    sign_in(&c, &app, "manager@direct.lakeside.test").await;
    look(&c, "the office manager's home").await;
    visit(&c, &app, &format!("/orgs/{}/users", lakeside.id)).await;
    visit(&c, &app, &format!("/orgs/{}/users/invite", lakeside.id)).await;
    fill(&c, "#email", "nurse.kay@lakeside.test").await;
    fill(&c, "#name", "Nurse Kay").await;
    c.find(Locator::Css("main form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text(&c, "#invite-link").await;
    assert!(value(&c, "#invite-link").await.contains("/invite/"));
    look(&c, "the invitation link").await;
    visit(&c, &app, &format!("/orgs/{}/mailboxes", lakeside.id)).await;
    visit(&c, &app, &format!("/orgs/{}/audit", lakeside.id)).await;
    sign_out(&c, &app).await;

    // the clinician reads her mail: on a phone the folders fold into a menu and the
    // first message is in sight
    sign_in(&c, &app, "ana@direct.lakeside.test").await;
    let inbox = format!("/mail/{}/inbox", ana_box.id);
    visit(&c, &app, &inbox).await;
    c.set_window_size(PHONE.0, PHONE.1).await.unwrap();
    assert!(!displayed(&c, "#side-menu").await, "the folders fold away");
    let first_top = c
        .execute(
            "var r = document.querySelector('#message-list tbody tr');
             return r ? r.getBoundingClientRect().top : 99999;",
            vec![],
        )
        .await
        .unwrap()
        .as_f64()
        .unwrap();
    assert!(
        first_top < f64::from(PHONE.1),
        "the first message is visible without scrolling (top {first_top})"
    );
    click(&c, ".menu-toggle").await;
    assert!(displayed(&c, "#side-menu").await, "the menu opens");
    assert!(text(&c, "#side-menu").await.contains("Sent"));
    c.set_window_size(DESKTOP.0, DESKTOP.1).await.unwrap();
    click(&c, "#message-list tbody tr a").await;
    until_path(&c, "/mail/messages/", "the message did not open").await;
    look(&c, "a message").await;

    // "New message" stores nothing until something is written
    let before = drafts_of(&app, "ana@direct.lakeside.test").await;
    c.goto(&app.url(&inbox)).await.unwrap();
    click(&c, "#compose").await;
    until_path(
        &c,
        &format!("/mail/{}/compose", ana_box.id),
        "no new-message page",
    )
    .await;
    look(&c, "the new-message page").await;
    assert_eq!(drafts_of(&app, "ana@direct.lakeside.test").await, before);
    fill(&c, "#to", "front@direct.hillside.test").await;
    // the first keystroke made the draft, and the page now edits it at its address
    until_path(&c, "/mail/drafts/", "the draft was not made on typing").await;
    assert_eq!(
        drafts_of(&app, "ana@direct.lakeside.test").await,
        before + 1
    );
    fill(&c, "#subject", "Referral for Ms. Diaz").await;
    fill(&c, "#body", "Please see her this week.").await;
    upload(&c, &summary).await;
    until_text(&c, "#attachment-list", "summary.pdf", false).await;
    until_text(&c, "#saved", "Saved at", false).await;
    assert_eq!(
        drafts_of(&app, "ana@direct.lakeside.test").await,
        before + 1,
        "typing and attaching made one draft"
    );
    look(&c, "compose with a PDF").await;
    click(&c, "#send").await;
    until_path(&c, "/mail/messages/", "not on the Sent item").await;
    let sent_path = path(&c).await;
    // delivery arrives on the page by itself
    until_text(&c, "#delivery", "delivered", false).await;
    look(&c, "the Sent item").await;

    // her time zone, chosen on the account page, is the one times are read in
    visit(&c, &app, "/account").await;
    c.find(Locator::Css("#time_zone"))
        .await
        .unwrap()
        .select_by_value("Pacific/Honolulu")
        .await
        .unwrap();
    c.find(Locator::Css("form[action='/account/time-zone'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until_text(&c, "main", "Times are now shown in: Hawaii", false).await;
    look(&c, "the account page").await;
    // a time the server writes in words ("… UTC", here the last sign-in) is shown in
    // the chosen zone too, with UTC on hover
    let last = c
        .find(Locator::Css("dd[data-utc-times] time"))
        .await
        .expect("the last sign-in shown as a local time");
    assert!(
        last.attr("title")
            .await
            .unwrap()
            .unwrap_or_default()
            .ends_with("UTC")
    );
    assert!(!last.text().await.unwrap().contains("UTC"));
    c.goto(&app.url(&sent_path)).await.unwrap();
    let time = c.find(Locator::Css("#delivery time")).await.unwrap();
    let iso = time.attr("datetime").await.unwrap().unwrap_or_default();
    let expected = c
        .execute(
            "var when = new Date(arguments[0]);
             var opts = { hour: '2-digit', minute: '2-digit' };
             opts.timeZone = 'Pacific/Honolulu';
             var hawaii = when.toLocaleString(undefined, opts);
             opts.timeZone = 'UTC';
             return [hawaii, when.toLocaleString(undefined, opts)];",
            vec![serde_json::json!(iso)],
        )
        .await
        .unwrap();
    let shown = time.text().await.unwrap();
    assert!(
        shown.contains(expected[0].as_str().unwrap()),
        "{shown} is in Honolulu's time ({expected})"
    );
    assert!(!shown.contains(expected[1].as_str().unwrap()), "{shown}");
    sign_out(&c, &app).await;

    // the recipient reads it
    sign_in(&c, &app, "kim@direct.hillside.test").await;
    let kim_inbox = format!("/mail/{}/inbox", kim_box.id);
    c.goto(&app.url(&kim_inbox)).await.unwrap();
    until_text(&c, "#message-list", "Referral for Ms. Diaz", true).await;
    look(&c, "the recipient's inbox").await;
    click(&c, "#message-list tr.unread a").await;
    until_path(&c, "/mail/messages/", "the message did not open").await;
    assert!(text(&c, "main").await.contains("summary.pdf"));
    look(&c, "the recipient's message").await;
    c.close().await.unwrap();
}
