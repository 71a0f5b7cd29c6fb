//! Signing in and out, passwords, lockout, sessions, idle timeout and TOTP.

use directmail::auth;
use directmail::domain::Role;
use directmail::store::users;
use reqwest::StatusCode;

use crate::helpers::{PASSWORD, TestApp};

const NEW_PASSWORD: &str = "lantern orchard quietly";

#[tokio::test]
async fn first_start_creates_an_operator_who_must_replace_the_one_time_password() {
    let app = TestApp::spawn().await;
    let one_time = app
        .first_password
        .clone()
        .expect("first start prints a password");
    let mut b = app.browser();
    let r = b.sign_in("operator@direct.localhost", &one_time).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    // every page sends them to choose a password first
    let r = b.get("/orgs").await;
    assert_eq!(r.location(), "/account/password");
    let r = b.get("/account/password").await;
    assert!(r.body.contains("Choose a new password"));
    // the one-time password just used is not asked for again, and no navigation
    // offers pages that would only send them back here
    assert!(!r.body.contains(r#"id="current""#), "{}", r.body);
    assert!(!r.body.contains(r#"<nav aria-label="Main">"#));
    let r = b
        .post(
            "/account/password",
            &[("password", &one_time), ("confirm", &one_time)],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body
            .contains("Choose a password different from the one-time password.")
    );
    let r = b
        .post(
            "/account/password",
            &[("password", NEW_PASSWORD), ("confirm", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(
        b.get("/orgs")
            .await
            .body
            .contains(r#"<nav aria-label="Main">"#)
    );
    let r = b.get("/orgs").await;
    assert_eq!(r.status, StatusCode::OK);
    // the one-time password no longer works; a second start creates no new operator
    let mut other = app.browser();
    assert_eq!(
        other
            .sign_in("operator@direct.localhost", &one_time)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let again =
        directmail::bootstrap::run(&app.state.db, &app.config, &app.state.secret, app.now())
            .await
            .unwrap();
    assert!(again.is_none());
}

#[tokio::test]
async fn a_wrong_password_is_refused_in_plain_words_and_audited() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut b = app.browser();
    let r = b
        .sign_in("ana@direct.lakeside.test", "not the password at all")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.body
            .contains("The e-mail address or the password is not right")
    );
    // what was typed survives, the password does not
    assert!(r.body.contains(r#"value="ana@direct.lakeside.test""#));
    assert!(!r.body.contains("not the password at all"));
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 50)
        .await
        .unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.action == "signin.fail" && e.object == "ana@direct.lakeside.test")
    );
    // an unknown account gets the same answer
    let r = b
        .sign_in("nobody@direct.lakeside.test", "whatever whatever")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.body
            .contains("The e-mail address or the password is not right")
    );
}

#[tokio::test]
async fn repeated_failures_lock_the_account_for_a_while_and_say_until_when() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut b = app.browser();
    for _ in 0..4 {
        assert_eq!(
            b.sign_in("ana@direct.lakeside.test", "wrong wrong wrong")
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = b
        .sign_in("ana@direct.lakeside.test", "wrong wrong wrong")
        .await;
    assert!(
        r.body
            .contains("signing in with this e-mail address is locked until"),
        "{}",
        r.body
    );
    // even the right password is refused while locked
    let r = b.sign_in("ana@direct.lakeside.test", PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.body
            .contains("signing in with this e-mail address is locked until")
    );
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 50)
        .await
        .unwrap();
    assert!(entries.iter().any(|e| e.action == "account.lock"));
    // after the lockout period the right password works again
    app.state.clock.advance(16 * 60);
    assert_eq!(
        b.sign_in("ana@direct.lakeside.test", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn an_administrator_sees_until_when_a_user_is_locked_and_can_unlock_them() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let ana = app
        .user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    app.user(Some(&org), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    let mut b = app.browser();
    for _ in 0..5 {
        b.sign_in("ana@direct.lakeside.test", "wrong wrong wrong")
            .await;
    }
    let mut boss = app.signed_in("boss@direct.lakeside.test").await;
    let page = boss
        .get(&format!("/orgs/{}/users/{}", org.id, ana.id))
        .await;
    assert!(
        page.body.contains("Locked after failed sign-ins until ")
            && page.body.contains(r#"id="unlock">Unlock</button>"#),
        "{}",
        page.body
    );
    let r = boss
        .post(&format!("/orgs/{}/users/{}/unlock", org.id, ana.id), &[])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = boss.get(&r.location()).await;
    assert!(page.body.contains("is unlocked and can sign in again now."));
    assert!(!page.body.contains(r#"id="unlock""#));
    assert_eq!(
        b.sign_in("ana@direct.lakeside.test", PASSWORD).await.status,
        StatusCode::SEE_OTHER,
        "no need to wait out the lock"
    );
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 50)
        .await
        .unwrap();
    assert!(entries.iter().any(|e| e.action == "user.unlock"));
    // a member cannot unlock anyone
    let mut member = app.signed_in("ana@direct.lakeside.test").await;
    let r = member
        .post(&format!("/orgs/{}/users/{}/unlock", org.id, ana.id), &[])
        .await;
    assert!(
        r.status == StatusCode::FORBIDDEN || r.status == StatusCode::NOT_FOUND,
        "{}",
        r.status
    );
}

#[tokio::test]
async fn many_failures_from_one_address_pause_sign_in_from_it() {
    let app = TestApp::spawn_with(|c| c.ip_lockout_threshold = 3).await;
    let mut b = app.browser();
    for i in 0..3 {
        b.sign_in(&format!("guess{i}@example.org"), "guessing guessing")
            .await;
    }
    let r = b.sign_in("guess9@example.org", "guessing guessing").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.body.contains("Sign-in from it is paused until"));
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 50)
        .await
        .unwrap();
    assert!(entries.iter().any(|e| e.action == "signin.block-address"));
}

#[tokio::test]
async fn short_common_and_mismatched_new_passwords_are_refused_next_to_the_field() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    b.get("/account/password").await;
    for (new, confirm, expect) in [
        ("short", "short", "at least 12 characters"),
        ("qwerty123456", "qwerty123456", "commonly used passwords"),
        ("Password1234!", "Password1234!", "commonly used passwords"),
        (NEW_PASSWORD, "something else entirely", "do not match"),
    ] {
        let r = b
            .post(
                "/account/password",
                &[
                    ("current", PASSWORD),
                    ("password", new),
                    ("confirm", confirm),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.body.contains(expect), "{new}: {}", r.body);
        assert!(r.body.contains("field-error"));
    }
    let r = b
        .post(
            "/account/password",
            &[
                ("current", "not my password"),
                ("password", NEW_PASSWORD),
                ("confirm", NEW_PASSWORD),
            ],
        )
        .await;
    assert!(r.body.contains("Your current password is not right"));
}

#[tokio::test]
async fn changing_the_password_signs_out_the_other_sessions_only() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut phone = app.signed_in("ana@direct.lakeside.test").await;
    let mut desk = app.signed_in("ana@direct.lakeside.test").await;
    desk.get("/account/password").await;
    let r = desk
        .post(
            "/account/password",
            &[
                ("current", PASSWORD),
                ("password", NEW_PASSWORD),
                ("confirm", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.location(), "/account");
    assert_eq!(desk.get("/account").await.status, StatusCode::OK);
    let r = phone.get("/account").await;
    assert!(
        r.location().starts_with("/login?reason=ended"),
        "{}",
        r.location()
    );
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 50)
        .await
        .unwrap();
    assert!(entries.iter().any(|e| e.action == "password.change"));
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_session_and_sign_out_ends_one() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut a = app.signed_in("ana@direct.lakeside.test").await;
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    let mut c = app.signed_in("ana@direct.lakeside.test").await;
    c.get("/").await;
    let r = c.post("/logout", &[]).await;
    assert_eq!(r.location(), "/login?reason=signedout");
    assert!(c.get("/").await.location().starts_with("/login"));
    assert_eq!(b.get("/").await.status, StatusCode::OK);
    a.get("/account").await;
    let r = a.post("/account/sign-out-everywhere", &[]).await;
    assert_eq!(r.location(), "/login?reason=everywhere");
    assert!(a.get("/").await.location().starts_with("/login"));
    assert!(b.get("/").await.location().starts_with("/login"));
}

#[tokio::test]
async fn sign_in_issues_a_new_strict_http_only_session_cookie() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut b = app.browser();
    let before = b.get("/login").await;
    let cookie = before
        .headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP in tests");
    let after = b
        .post(
            "/login",
            &[
                ("email", "ana@direct.lakeside.test"),
                ("password", PASSWORD),
            ],
        )
        .await;
    let new_cookie = after
        .headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let id = |c: &str| c.split(';').next().unwrap().to_owned();
    assert_ne!(
        id(&cookie),
        id(&new_cookie),
        "the session id changes at sign-in"
    );
}

#[tokio::test]
async fn an_idle_session_ends_after_the_organizations_timeout_and_comes_back_to_the_page() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut tx = app.state.db.begin().await.unwrap();
    directmail::store::orgs::update_settings(&mut tx, org.id, 5, false)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    let page = b.get("/account").await;
    // the page knows the timeout, for the warning
    assert!(page.body.contains(r#"data-idle-seconds="300""#));
    assert!(page.body.contains("Stay signed in"));
    app.state.clock.advance(4 * 60);
    // "stay signed in" moves the timer
    let r = b.post("/session/keepalive", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    app.state.clock.advance(4 * 60);
    assert_eq!(b.get("/account").await.status, StatusCode::OK);
    app.state.clock.advance(5 * 60 + 1);
    let r = b.get("/account").await;
    assert_eq!(r.location(), "/login?reason=idle&next=%2Faccount");
    let r = b.get(&r.location()).await;
    assert!(r.body.contains("signed out after a period of inactivity"));
    let r = b
        .post(
            "/login",
            &[
                ("email", "ana@direct.lakeside.test"),
                ("password", PASSWORD),
                ("next", "/account"),
            ],
        )
        .await;
    assert_eq!(r.location(), "/account");
}

#[tokio::test]
async fn background_polling_does_not_keep_an_idle_session_alive() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let b = app.signed_in("ana@direct.lakeside.test").await;
    for _ in 0..3 {
        app.state.clock.advance(4 * 60);
        let r = b
            .client
            .get(app.url("/"))
            .header("x-background", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    app.state.clock.advance(4 * 60);
    let r = b.client.get(app.url("/")).send().await.unwrap();
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/login?reason=idle")
    );
}

#[tokio::test]
async fn sessions_end_at_their_absolute_lifetime_even_when_active() {
    let app = TestApp::spawn_with(|c| c.session_lifetime_minutes = 30).await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    // The clock is real time plus the offset tests add, so each step stays well
    // clear of the 30-minute edge whatever the machine's speed: active at 27 minutes,
    // ended at 33.
    for _ in 0..3 {
        app.state.clock.advance(9 * 60);
        let r = b.get("/").await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "still signed in: {}",
            r.location()
        );
    }
    app.state.clock.advance(6 * 60);
    let r = b.get("/").await;
    assert!(
        r.location().starts_with("/login?reason=lifetime"),
        "{} {:?} {}",
        r.status,
        r.location(),
        r.body
    );
}

#[tokio::test]
async fn totp_enrolment_then_sign_in_with_a_code_or_a_recovery_code() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let ana = app
        .user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    let page = b.get("/account/mfa").await;
    assert!(
        page.body.contains("<svg"),
        "the QR code is rendered by the server"
    );
    let secret = page.by_id("totp-secret").expect("secret shown as text");
    assert!(
        secret.split(' ').all(|group| group.len() <= 4) && secret.split(' ').count() > 4,
        "the key in groups of four: {secret}"
    );
    let r = b.post("/account/mfa", &[("code", "000000")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("does not match"));
    let code = auth::totp_code(&secret, app.now()).unwrap();
    let r = b.post("/account/mfa", &[("code", &code)]).await;
    assert_eq!(r.status, StatusCode::OK);
    let codes: Vec<String> = regex::Regex::new(r"<li><code>([a-z0-9-]{12})</code></li>")
        .unwrap()
        .captures_iter(&r.body)
        .map(|c| c[1].to_owned())
        .collect();
    assert_eq!(codes.len(), 10, "ten recovery codes, shown once");
    // to keep them: a file to download with every code, and Print; turning two-step
    // sign-in off is apart, behind its own heading
    let download = regex::Regex::new(
        r#"href="(data:text/plain[^"]*)" download="directmail-recovery-codes.txt""#,
    )
    .unwrap()
    .captures(&r.body)
    .expect("a download")[1]
        .to_owned();
    assert!(codes.iter().all(|code| download.contains(code.as_str())));
    assert!(
        r.body
            .contains(r#"id="codes-print" data-print>Print</button>"#)
    );
    let (codes_at, off_at) = (
        r.body.find("id=\"recovery-codes\"").unwrap(),
        r.body
            .find("<summary>Turn off two-step sign-in</summary>")
            .unwrap(),
    );
    assert!(codes_at < off_at);

    // the next sign-in asks for a code
    let mut c = app.browser();
    let r = c.sign_in("ana@direct.lakeside.test", PASSWORD).await;
    assert_eq!(r.location(), "/login/mfa");
    assert!(
        c.get("/account").await.location().starts_with("/login/mfa"),
        "no page before the code"
    );
    let asked = c.get("/login/mfa").await;
    assert!(
        asked.body.contains(r#"inputmode="text""#) && !asked.body.contains("numeric"),
        "the field takes recovery codes' letters too"
    );
    let r = c.post("/login/mfa", &[("code", "123456")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // the code used at enrolment cannot be replayed; the next step's code works
    app.state.clock.advance(30);
    let code = auth::totp_code(&secret, app.now()).unwrap();
    let r = c.post("/login/mfa", &[("code", &code)]).await;
    assert_eq!(r.location(), "/");
    assert_eq!(c.get("/account").await.status, StatusCode::OK);
    let mut replay = app.browser();
    replay.sign_in("ana@direct.lakeside.test", PASSWORD).await;
    replay.get("/login/mfa").await;
    assert_eq!(
        replay.post("/login/mfa", &[("code", &code)]).await.status,
        StatusCode::UNAUTHORIZED
    );

    // a recovery code works once, typed in any case
    let mut d = app.browser();
    d.sign_in("ana@direct.lakeside.test", PASSWORD).await;
    d.get("/login/mfa").await;
    let r = d
        .post("/login/mfa", &[("code", &codes[0].to_uppercase())])
        .await;
    assert_eq!(r.location(), "/");
    let mut e = app.browser();
    e.sign_in("ana@direct.lakeside.test", PASSWORD).await;
    e.get("/login/mfa").await;
    assert_eq!(
        e.post("/login/mfa", &[("code", &codes[0])]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        users::unused_recovery_codes(&app.state.db, ana.id)
            .await
            .unwrap(),
        9
    );
}

#[tokio::test]
async fn an_organization_that_requires_mfa_sends_its_users_to_enrolment_first() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut tx = app.state.db.begin().await.unwrap();
    directmail::store::orgs::update_settings(&mut tx, org.id, 15, true)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut b = app.browser();
    b.sign_in("ana@direct.lakeside.test", PASSWORD).await;
    let r = b.get("/").await;
    assert_eq!(r.location(), "/account/mfa");
    let page = b.get("/account/mfa").await;
    assert!(
        page.body
            .contains("Your organization requires two-step sign-in")
    );
    assert!(!page.body.contains("Set up later"));
    let secret = page.by_id("totp-secret").unwrap();
    let code = auth::totp_code(&secret, app.now()).unwrap();
    b.post("/account/mfa", &[("code", &code)]).await;
    assert_eq!(b.get("/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_half_finished_sign_in_ends_with_the_users_other_sessions_and_with_time() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let ana = app
        .user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let secret = app.enable_totp(&ana).await;

    // someone with the password stops at the code
    let mut thief = app.browser();
    assert_eq!(
        thief
            .sign_in("ana@direct.lakeside.test", PASSWORD)
            .await
            .location(),
        "/login/mfa"
    );
    thief.get("/login/mfa").await;
    // Ana, signed in properly, signs out everywhere
    let mut real = app.browser();
    real.sign_in("ana@direct.lakeside.test", PASSWORD).await;
    real.get("/login/mfa").await;
    let code = auth::totp_code(&secret, app.now()).unwrap();
    assert_eq!(
        real.post("/login/mfa", &[("code", &code)]).await.location(),
        "/"
    );
    real.get("/account").await;
    real.post("/account/sign-out-everywhere", &[]).await;
    // the half-finished sign-in cannot be completed, even with a good code
    app.state.clock.advance(30);
    let code = auth::totp_code(&secret, app.now()).unwrap();
    let r = thief.post("/login/mfa", &[("code", &code)]).await;
    assert!(r.location().starts_with("/login"), "{}", r.location());
    assert!(thief.get("/account").await.location().starts_with("/login"));

    // and a code entered more than ten minutes after the password is not taken
    let mut slow = app.browser();
    slow.sign_in("ana@direct.lakeside.test", PASSWORD).await;
    slow.get("/login/mfa").await;
    app.state.clock.advance(11 * 60);
    let code = auth::totp_code(&secret, app.now()).unwrap();
    assert!(
        slow.post("/login/mfa", &[("code", &code)])
            .await
            .location()
            .starts_with("/login?reason=signin")
    );
}

#[tokio::test]
async fn totp_secrets_are_sealed_at_rest() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let ana = app
        .user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    let secret = b.get("/account/mfa").await.by_id("totp-secret").unwrap();
    let code = auth::totp_code(&secret, app.now()).unwrap();
    b.post("/account/mfa", &[("code", &code)]).await;
    let stored = users::get(&app.state.db, ana.id)
        .await
        .unwrap()
        .unwrap()
        .totp_secret
        .unwrap();
    assert!(stored.starts_with("v1:") && !stored.contains(&secret));
}

#[tokio::test]
async fn a_user_chooses_the_time_zone_their_pages_show_times_in() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    // at first, the browser's own zone
    let page = b.get("/account").await;
    assert!(page.body.contains(r#"data-time-zone="""#));
    assert!(
        page.body.contains(
            r#"<option value="" data-browser-zone selected>This browser&#39;s time zone</option>"#
        ),
        "{}",
        page.body
    );
    let r = b
        .post("/account/time-zone", &[("time_zone", "America/Chicago")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = b.get("/account").await;
    assert!(
        page.body
            .contains("Times are now shown in: Central (Chicago).")
    );
    assert!(page.body.contains(r#"data-time-zone="America/Chicago""#));
    assert!(
        page.body
            .contains(r#"<option value="America/Chicago" selected>"#)
    );
    // every page carries it, for the script that shows times
    let home = b.get("/").await;
    assert!(home.body.contains(r#"data-time-zone="America/Chicago""#));
    // a zone not on the list, or markup, is refused beside the field; nothing changes
    for bad in [
        "Mars/Olympus_Mons",
        "\"><script>alert(1)</script>",
        "america/chicago",
    ] {
        let r = b.post("/account/time-zone", &[("time_zone", bad)]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.body.contains("Choose a time zone from the list."));
        assert!(r.body.contains(r#"aria-invalid="true""#));
        assert!(!r.body.contains("<script>alert"));
    }
    let user = users::by_email(&app.state.db, "ana@direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.time_zone, "America/Chicago");
    // back to the browser's own
    b.post("/account/time-zone", &[("time_zone", "")]).await;
    assert!(b.get("/").await.body.contains(r#"data-time-zone="""#));
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 100)
        .await
        .unwrap();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.action == "account.time_zone")
            .count(),
        2
    );
}
