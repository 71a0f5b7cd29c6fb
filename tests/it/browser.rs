//! Real Chromium (headless, through chromedriver): an office manager signs in, enrols
//! TOTP, invites a user, and the user completes the invitation.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use directmail::auth;
use directmail::domain::Role;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp};

/// chromedriver on a free port, stopped when dropped.
pub(crate) struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_driver() -> Driver {
    let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    assert!(
        std::path::Path::new(&binary).exists(),
        "{binary} is missing: install Debian's chromium and chromium-driver (scripts/test.sh does)"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver { child, port }
}

pub(crate) async fn chromium(driver: &Driver, profile: &std::path::Path) -> Client {
    chromium_with(driver, profile, &[]).await
}

/// [`chromium`] with more command-line switches.
pub(crate) async fn chromium_with(
    driver: &Driver,
    profile: &std::path::Path,
    extra: &[&str],
) -> Client {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--window-size=1280,900",
    ]
    .iter()
    .chain(extra)
    .map(|a| (*a).to_owned())
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": args
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

pub(crate) async fn fill(c: &Client, css: &str, text: &str) {
    let field = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|_| panic!("field {css}"));
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

pub(crate) async fn submit(c: &Client, form_css: &str) {
    c.find(Locator::Css(&format!("{form_css} button[type=submit]")))
        .await
        .unwrap_or_else(|_| panic!("submit button in {form_css}"))
        .click()
        .await
        .unwrap();
}

pub(crate) async fn path(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_owned()
}

/// Waits until the browser has navigated to `want` (a path).
pub(crate) async fn arrive(c: &Client, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while path(c).await != want {
        assert!(
            Instant::now() < deadline,
            "never reached {want}, at {}",
            path(c).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn text(c: &Client, css: &str) -> String {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|_| panic!("element {css}"))
        .text()
        .await
        .unwrap()
}

/// Whether the page fits the window width (no sideways scrolling).
pub(crate) async fn fits_width(c: &Client) -> bool {
    c.execute(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
        vec![],
    )
    .await
    .unwrap()
    .as_bool()
    .unwrap_or(false)
}

#[tokio::test]
async fn an_office_manager_enrols_totp_and_invites_a_user_who_completes_the_invitation() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    let driver = start_driver();
    let profile = tempfile::tempdir().unwrap();
    let c = chromium(&driver, profile.path()).await;

    // sign in
    c.goto(&app.url("/login")).await.unwrap();
    fill(&c, "#email", "boss@direct.lakeside.test").await;
    fill(&c, "#password", PASSWORD).await;
    submit(&c, "main form").await;
    arrive(&c, "/").await;
    assert!(text(&c, "h1").await.contains("Welcome"));

    // enrol TOTP: QR code drawn by the server, secret as text, confirm a code
    c.goto(&app.url("/account/mfa")).await.unwrap();
    c.find(Locator::Css(".qr svg"))
        .await
        .expect("QR code shown");
    let secret = text(&c, "#totp-secret").await;
    let code = auth::totp_code(&secret, app.now()).unwrap();
    fill(&c, "#code", &code).await;
    submit(&c, "main form").await;
    let codes = text(&c, "#recovery-codes").await;
    assert_eq!(
        codes.lines().filter(|l| !l.trim().is_empty()).count(),
        10,
        "{codes}"
    );

    // invite a user
    c.goto(&app.url(&format!("/orgs/{}/users/invite", org.id)))
        .await
        .unwrap();
    fill(&c, "#email", "nurse.kim@direct.lakeside.test").await;
    fill(&c, "#name", "Nurse Kim").await;
    submit(&c, "main form").await;
    let link = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("invite-link"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .expect("the link to copy");
    assert!(link.contains("/invite/"));
    // Copy link copies it (or, where the browser will not, selects it and says so)
    c.find(Locator::Css(r#"button[data-copy="invite-link"]"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let said = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(r#"[data-copied="invite-link"]"#))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = said.text().await.unwrap_or_default();
        if t == "Copied." || t.starts_with("Selected") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the copy said nothing: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // the list shows the pending invitation, and fits a phone screen
    c.goto(&app.url(&format!("/orgs/{}/users", org.id)))
        .await
        .unwrap();
    assert!(
        text(&c, "#user-list")
            .await
            .contains("Invited, not yet signed in")
    );
    c.set_window_size(375, 800).await.unwrap();
    assert!(fits_width(&c).await, "the user list fits 375 px");
    c.set_window_size(1280, 900).await.unwrap();

    // sign out, then complete the invitation as the new user
    c.find(Locator::Css("form.signout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    arrive(&c, "/login").await;
    assert!(text(&c, "main").await.contains("You have signed out"));
    c.goto(&link).await.unwrap();
    assert!(text(&c, "h1").await.contains("Welcome, Nurse Kim"));
    fill(&c, "#password", "sunlit meadow keeps").await;
    fill(&c, "#confirm", "sunlit meadow keeps").await;
    submit(&c, "main form").await;
    arrive(&c, "/account/mfa").await;
    assert!(text(&c, "h1").await.contains("Two-step sign-in"));
    c.find(Locator::LinkText("Set up later"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    arrive(&c, "/").await;
    assert!(text(&c, "h1").await.contains("Welcome, Nurse Kim"));
    c.set_window_size(375, 800).await.unwrap();
    assert!(fits_width(&c).await, "the home page fits 375 px");

    c.close().await.unwrap();
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 100)
        .await
        .unwrap();
    for action in ["mfa.enable", "user.invite", "invite.accept"] {
        assert!(entries.iter().any(|e| e.action == action), "{action}");
    }
}
