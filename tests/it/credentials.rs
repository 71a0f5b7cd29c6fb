//! Credentials that end when they should: API tokens (re-authentication, expiry,
//! revocation with the user's sessions, two-step requirement), operators' two-step
//! sign-in, sign-out that a request in flight cannot undo, secrets never in clear in
//! the sessions table, and lockout that neither floods the audit log nor tells
//! whether an account exists.

use directmail::auth;
use directmail::db::SessionPool;
use directmail::domain::Role;
use directmail::store::users::User;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Browser, PASSWORD, TestApp};

const NEW_PASSWORD: &str = "lantern orchard quietly";

/// Lakeside Clinic with Ana (a member) and her mailbox, and Bea, its administrator.
async fn clinic(app: &TestApp) -> (User, User) {
    let mailbox = app
        .practice(
            "Lakeside Clinic",
            "direct.lakeside.test",
            "ana@direct.lakeside.test",
            "dr.ana@direct.lakeside.test",
        )
        .await;
    let org = directmail::store::orgs::get(&app.state.db, mailbox.org_id)
        .await
        .unwrap()
        .unwrap();
    let bea = app
        .user(Some(&org), "bea@direct.lakeside.test", Role::OrgAdmin)
        .await;
    let ana = directmail::store::users::by_email(&app.state.db, "ana@direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    (ana, bea)
}

/// Makes a token in the browser (the password, and `code` when given); returns the
/// token shown once, or the refusal page.
async fn make_token(
    b: &mut Browser,
    fields: &[(&str, &str)],
) -> Result<String, crate::helpers::Page> {
    b.get("/account/tokens").await;
    let r = b.post("/account/tokens", fields).await;
    if r.status != StatusCode::SEE_OTHER {
        return Err(r);
    }
    let page = b.get(&r.location()).await;
    page.by_id("new-token").ok_or(page)
}

/// What the API answers this token: status and the error code, if any.
async fn api(app: &TestApp, token: &str) -> (StatusCode, String) {
    let r = reqwest::Client::new()
        .get(app.url("/api/v1/messages"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or("").to_owned())
}

async fn token_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from api_tokens")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_token_is_made_only_after_the_password_and_the_current_code_are_given_again() {
    let app = TestApp::spawn().await;
    let (ana, _) = clinic(&app).await;
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    // an open session alone is not enough
    let refused = make_token(&mut b, &[("name", "EHR")]).await.unwrap_err();
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("Your password is not right"));
    let refused = make_token(&mut b, &[("name", "EHR"), ("current", "a wrong password")])
        .await
        .unwrap_err();
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(token_count(&app).await, 0);
    // a wrong password here counts towards the lockout like one at sign-in
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 50)
        .await
        .unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.action == "signin.fail" && e.detail.contains("API token"))
    );
    let token = make_token(&mut b, &[("name", "EHR"), ("current", PASSWORD)])
        .await
        .expect("made with the password");
    assert_eq!(api(&app, &token).await.0, StatusCode::OK);

    // with two-step sign-in on, the code is asked for too, and a used one is refused
    let secret = app.enable_totp(&ana).await;
    let mut c = app.browser();
    c.sign_in("ana@direct.lakeside.test", PASSWORD).await;
    c.get("/login/mfa").await;
    let code = auth::totp_code(&secret, app.now()).unwrap();
    assert_eq!(
        c.post("/login/mfa", &[("code", &code)]).await.location(),
        "/"
    );
    let page = c.get("/account/tokens").await;
    assert!(
        page.by_id("token-code").is_some(),
        "the code field is shown"
    );
    for fields in [
        vec![("name", "Billing"), ("current", PASSWORD)],
        vec![
            ("name", "Billing"),
            ("current", PASSWORD),
            ("code", "000000"),
        ],
        // the code that signed in a moment ago cannot be replayed
        vec![("name", "Billing"), ("current", PASSWORD), ("code", &code)],
        vec![
            ("name", "Billing"),
            ("current", "a wrong password"),
            ("code", &code),
        ],
    ] {
        let refused = make_token(&mut c, &fields).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{fields:?}");
        assert!(
            refused.body.contains("no token was made"),
            "{}",
            refused.body
        );
    }
    assert_eq!(token_count(&app).await, 1);
    app.state.clock.advance(30);
    let code = auth::totp_code(&secret, app.now()).unwrap();
    let token = make_token(
        &mut c,
        &[("name", "Billing"), ("current", PASSWORD), ("code", &code)],
    )
    .await
    .expect("made with the password and a fresh code");
    assert_eq!(api(&app, &token).await.0, StatusCode::OK);
}

#[tokio::test]
async fn tokens_expire_on_the_chosen_day_and_the_api_says_so_in_json() {
    let app = TestApp::spawn().await;
    clinic(&app).await;
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    // choices outside the list, dates in the past, too far ahead or unreadable
    for (expires, on) in [
        ("1000", ""),
        ("-5", ""),
        ("date", "2001-01-01"),
        ("date", "2999-01-01"),
        ("date", "next tuesday"),
    ] {
        let refused = make_token(
            &mut b,
            &[
                ("name", "EHR"),
                ("expires", expires),
                ("expires_on", on),
                ("current", PASSWORD),
            ],
        )
        .await
        .unwrap_err();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{expires} {on}");
        assert!(refused.body.contains(r#"value="EHR""#), "the name is kept");
    }
    assert_eq!(token_count(&app).await, 0);
    // no choice: 90 days; a choice of 30 days; a date
    let ninety = make_token(&mut b, &[("name", "Default"), ("current", PASSWORD)])
        .await
        .unwrap();
    let thirty = make_token(
        &mut b,
        &[("name", "Month"), ("expires", "30"), ("current", PASSWORD)],
    )
    .await
    .unwrap();
    let in_ten_days = directmail::clock::format_rfc3339(app.now() + 10 * 86_400);
    let day = &in_ten_days[..10];
    let dated = make_token(
        &mut b,
        &[
            ("name", "Dated"),
            ("expires", "date"),
            ("expires_on", day),
            ("current", PASSWORD),
        ],
    )
    .await
    .unwrap();
    let lives: Vec<(String, i64)> =
        sqlx::query_as("select name, expires_at - created_at from api_tokens order by id")
            .fetch_all(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(lives[0], ("Default".into(), 90 * 86_400));
    assert_eq!(lives[1], ("Month".into(), 30 * 86_400));
    // ends at midnight UTC of the chosen day: a little under ten days, or a little
    // under nine when the test runs in the last seconds of a UTC day
    assert!(lives[2].1 >= 9 * 86_400 - 300 && lives[2].1 <= 10 * 86_400);
    // the list shows when each ends
    let list = b.get("/account/tokens").await;
    let ends = directmail::clock::format_utc(directmail::clock::parse_date(day).unwrap());
    assert!(list.body.contains(&ends), "{}", list.body);

    // past its day a token is refused with its own code
    for token in [&ninety, &thirty, &dated] {
        assert_eq!(api(&app, token).await.0, StatusCode::OK);
    }
    app.state.clock.advance(11 * 86_400);
    assert_eq!(
        api(&app, &dated).await,
        (StatusCode::UNAUTHORIZED, "token_expired".into())
    );
    assert_eq!(api(&app, &thirty).await.0, StatusCode::OK);
    app.state.clock.advance(20 * 86_400);
    assert_eq!(
        api(&app, &thirty).await,
        (StatusCode::UNAUTHORIZED, "token_expired".into())
    );
    assert_eq!(api(&app, &ninety).await.0, StatusCode::OK);
    // an unknown token is not told apart from a revoked one, only from an expired one
    assert_eq!(
        api(&app, "no-such-token").await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    let mut again = app.signed_in("ana@direct.lakeside.test").await;
    let list = again.get("/account/tokens").await;
    assert_eq!(list.body.matches("<td>Expired</td>").count(), 2);
}

#[tokio::test]
async fn a_password_change_a_reset_a_disable_and_signing_out_everywhere_each_end_every_token() {
    let app = TestApp::spawn().await;
    let (ana, _) = clinic(&app).await;
    let org_user = format!(
        "/orgs/{}/users/{}",
        ana.org_id.expect("in an organization"),
        ana.id
    );
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    // the pages say so before anything is done
    assert!(
        b.get("/account")
            .await
            .body
            .contains("revokes all of your API tokens")
    );
    assert!(
        b.get("/account/password")
            .await
            .body
            .contains("revokes your API tokens")
    );

    // signing out everywhere
    let first = make_token(&mut b, &[("name", "EHR"), ("current", PASSWORD)])
        .await
        .unwrap();
    assert_eq!(api(&app, &first).await.0, StatusCode::OK);
    b.get("/account").await;
    b.post("/account/sign-out-everywhere", &[]).await;
    assert_eq!(api(&app, &first).await.0, StatusCode::UNAUTHORIZED);

    // changing the password
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    let second = make_token(&mut b, &[("name", "EHR"), ("current", PASSWORD)])
        .await
        .unwrap();
    b.get("/account/password").await;
    let r = b
        .post(
            "/account/password",
            &[
                ("current", PASSWORD),
                ("password", NEW_PASSWORD),
                ("confirm", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(api(&app, &second).await.0, StatusCode::UNAUTHORIZED);
    // the list says why it no longer works, and offers no revoke button for it
    let list = b.get("/account/tokens").await;
    assert_eq!(list.body.matches("Ended (password changed").count(), 2);
    assert!(!list.body.contains("/revoke"));
    // a token made after the change works
    let third = make_token(&mut b, &[("name", "EHR"), ("current", NEW_PASSWORD)])
        .await
        .unwrap();
    assert_eq!(api(&app, &third).await.0, StatusCode::OK);

    // the administrator resets the password
    let mut bea = app.signed_in("bea@direct.lakeside.test").await;
    bea.get(&org_user).await;
    let r = bea.post(&format!("{org_user}/reset-password"), &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(api(&app, &third).await.0, StatusCode::UNAUTHORIZED);
    let link = bea.get(&org_user).await.by_id("reset-link").unwrap();
    let path = link.split_once(&app.addr.to_string()).unwrap().1.to_owned();
    let mut ana_browser = app.browser();
    ana_browser.get(&path).await;
    ana_browser
        .post(&path, &[("password", PASSWORD), ("confirm", PASSWORD)])
        .await;
    let fourth = make_token(&mut ana_browser, &[("name", "EHR"), ("current", PASSWORD)])
        .await
        .unwrap();
    assert_eq!(api(&app, &fourth).await.0, StatusCode::OK);

    // … and disables the account; re-enabling it does not bring the token back
    bea.get(&org_user).await;
    bea.post(&format!("{org_user}/disable"), &[]).await;
    assert_eq!(api(&app, &fourth).await.0, StatusCode::UNAUTHORIZED);
    bea.get(&org_user).await;
    bea.post(&format!("{org_user}/enable"), &[]).await;
    assert_eq!(api(&app, &fourth).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tokens_are_refused_to_users_who_must_use_two_step_sign_in_and_have_not() {
    let app = TestApp::spawn().await;
    let (ana, _) = clinic(&app).await;
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    let token = make_token(&mut b, &[("name", "EHR"), ("current", PASSWORD)])
        .await
        .unwrap();
    assert_eq!(api(&app, &token).await.0, StatusCode::OK);
    // the organization starts requiring two-step sign-in
    let mut tx = app.state.db.begin().await.unwrap();
    directmail::store::orgs::update_settings(&mut tx, ana.org_id.unwrap(), 15, true)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        api(&app, &token).await,
        (StatusCode::FORBIDDEN, "two_step_required".into())
    );
    // no new token in the browser (enrolment comes first) nor from the CLI
    let r = b
        .post(
            "/account/tokens",
            &[("name", "Other"), ("current", PASSWORD)],
        )
        .await;
    assert_eq!(r.location(), "/account/mfa");
    let out = cli_token(&app, &["--user", "ana@direct.lakeside.test"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("two-step sign-in"));
    assert_eq!(token_count(&app).await, 1);
    // once enrolled, the token works again
    let page = b.get("/account/mfa").await;
    let secret = page.by_id("totp-secret").unwrap();
    let code = auth::totp_code(&secret, app.now()).unwrap();
    b.post("/account/mfa", &[("code", &code)]).await;
    assert_eq!(api(&app, &token).await.0, StatusCode::OK);
}

async fn cli_token(app: &TestApp, args: &[&str]) -> std::process::Output {
    let mut command = app.command();
    command
        .args(["admin", "--json", "token", "create"])
        .args(args);
    crate::helpers::run(command).await
}

#[tokio::test]
async fn the_cli_gives_tokens_an_expiry_of_90_days_or_the_days_asked_for() {
    let app = TestApp::spawn().await;
    clinic(&app).await;
    let out = cli_token(&app, &["--user", "ana@direct.lakeside.test"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(printed["expires_at"].is_string(), "{printed}");
    let out = cli_token(
        &app,
        &[
            "--user",
            "ana@direct.lakeside.test",
            "--expires-in-days",
            "7",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seven: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lives: Vec<i64> =
        sqlx::query_scalar("select expires_at - created_at from api_tokens order by id")
            .fetch_all(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(lives, vec![90 * 86_400, 7 * 86_400]);
    assert_eq!(
        api(&app, seven["token"].as_str().unwrap()).await.0,
        StatusCode::OK
    );
    app.state.clock.advance(8 * 86_400);
    assert_eq!(
        api(&app, seven["token"].as_str().unwrap()).await.1,
        "token_expired"
    );
    for bad in ["0", "366", "soon"] {
        let out = cli_token(
            &app,
            &[
                "--user",
                "ana@direct.lakeside.test",
                "--expires-in-days",
                bad,
            ],
        )
        .await;
        assert!(!out.status.success(), "{bad}");
    }
    assert_eq!(token_count(&app).await, 2);
}

#[tokio::test]
async fn operators_are_sent_to_two_step_enrolment_after_their_first_password_when_required() {
    assert!(
        directmail::config::Config::defaults().operator_mfa,
        "on unless turned off"
    );
    let app = TestApp::spawn_with(|c| c.operator_mfa = true).await;
    let one_time = app.first_password.clone().unwrap();
    let mut op = app.browser();
    op.sign_in("operator@direct.localhost", &one_time).await;
    op.get("/account/password").await;
    let r = op
        .post(
            "/account/password",
            &[
                ("current", &one_time),
                ("password", NEW_PASSWORD),
                ("confirm", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.location(), "/account/mfa", "{}", r.body);
    // nothing else opens before enrolment
    for path in ["/orgs", "/audit", "/", "/account/tokens"] {
        assert_eq!(op.get(path).await.location(), "/account/mfa", "{path}");
    }
    let page = op.get("/account/mfa").await;
    assert!(
        page.body
            .contains("HISP operators must use two-step sign-in")
    );
    assert!(!page.body.contains("Set up later"));
    let secret = page.by_id("totp-secret").unwrap();
    let r = op.post("/account/mfa", &[("code", "123456")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let code = auth::totp_code(&secret, app.now()).unwrap();
    assert_eq!(
        op.post("/account/mfa", &[("code", &code)]).await.status,
        StatusCode::OK
    );
    assert_eq!(op.get("/orgs").await.status, StatusCode::OK);
    // and it cannot be turned off
    op.get("/account/mfa").await;
    let r = op
        .post("/account/mfa/disable", &[("current", NEW_PASSWORD)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // an operator added later is held to the same rule
    app.user(None, "ops@direct.localhost", Role::Operator).await;
    let mut other = app.browser();
    other.sign_in("ops@direct.localhost", PASSWORD).await;
    assert_eq!(other.get("/orgs").await.location(), "/account/mfa");
}

/// Runs one statement on the sessions table (`tower_sessions` on SQLite,
/// `tower_sessions.session` on PostgreSQL; `{t}` names it).
async fn on_sessions(app: &TestApp, statement: &str) {
    match &app.state.db.sessions {
        SessionPool::Sqlite(p) => {
            sqlx::query(&statement.replace("{t}", "tower_sessions"))
                .execute(p)
                .await
                .unwrap();
        }
        SessionPool::Postgres(p) => {
            sqlx::query(&statement.replace("{t}", "tower_sessions.session"))
                .execute(p)
                .await
                .unwrap();
        }
    }
}

/// Every session record's bytes, as stored.
async fn session_data(app: &TestApp) -> Vec<u8> {
    let rows: Vec<Vec<u8>> = match &app.state.db.sessions {
        SessionPool::Sqlite(p) => sqlx::query_scalar("select data from tower_sessions")
            .fetch_all(p)
            .await
            .unwrap(),
        SessionPool::Postgres(p) => sqlx::query_scalar("select data from tower_sessions.session")
            .fetch_all(p)
            .await
            .unwrap(),
    };
    rows.concat()
}

async fn session_ids(app: &TestApp) -> Vec<String> {
    match &app.state.db.sessions {
        SessionPool::Sqlite(p) => sqlx::query_scalar("select id from tower_sessions")
            .fetch_all(p)
            .await
            .unwrap(),
        SessionPool::Postgres(p) => sqlx::query_scalar("select id from tower_sessions.session")
            .fetch_all(p)
            .await
            .unwrap(),
    }
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_session_saved_again_by_a_request_in_flight_after_sign_out_stays_signed_out() {
    let app = TestApp::spawn().await;
    clinic(&app).await;
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    let ids = session_ids(&app).await;
    assert_eq!(ids.len(), 1, "one signed-in session");
    let id = ids[0].clone();
    // what a request that loaded the session before sign-out would save after it
    on_sessions(&app, "create table late_copy as select * from {t}").await;
    let with_cookie = |path: &str| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(app.url(path))
            .header("cookie", format!("directmail_session={id}"))
            .send()
    };
    assert_eq!(
        with_cookie("/account").await.unwrap().status(),
        StatusCode::OK
    );
    b.get("/account").await;
    let r = b.post("/logout", &[]).await;
    assert_eq!(r.location(), "/login?reason=signedout");
    assert_eq!(session_ids(&app).await, Vec::<String>::new());
    on_sessions(&app, "insert into {t} select * from late_copy").await;
    assert_eq!(
        session_ids(&app).await,
        vec![id.clone()],
        "the record is back"
    );
    // the record is back, the session is not
    let r = with_cookie("/account").await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/login")
    );
    // signing in again gives a new session that works
    let mut again = app.signed_in("ana@direct.lakeside.test").await;
    assert_eq!(again.get("/account").await.status, StatusCode::OK);
}

#[tokio::test]
async fn totp_secrets_tokens_and_invitation_links_waiting_in_a_session_are_sealed() {
    let app = TestApp::spawn().await;
    let (_, bea) = clinic(&app).await;
    // a TOTP secret being enrolled
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    let secret = b.get("/account/mfa").await.by_id("totp-secret").unwrap();
    assert!(!holds(&session_data(&app).await, &secret));
    assert_eq!(
        b.get("/account/mfa").await.by_id("totp-secret").unwrap(),
        secret,
        "the same secret until confirmed"
    );
    let code = auth::totp_code(&secret, app.now()).unwrap();
    assert_eq!(
        b.post("/account/mfa", &[("code", &code)]).await.status,
        StatusCode::OK
    );

    // a new token, between its creation and the page that shows it once
    let mut bea_b = app.signed_in("bea@direct.lakeside.test").await;
    bea_b.get("/account/tokens").await;
    let r = bea_b
        .post("/account/tokens", &[("name", "EHR"), ("current", PASSWORD)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let stored = session_data(&app).await;
    let token = bea_b
        .get("/account/tokens")
        .await
        .by_id("new-token")
        .unwrap();
    assert!(!holds(&stored, &token));

    // an invitation link, likewise
    let invite = format!("/orgs/{}/users/invite", bea.org_id.unwrap());
    bea_b.get(&invite).await;
    let r = bea_b
        .post(
            &invite,
            &[
                ("email", "new@direct.lakeside.test"),
                ("name", "New Person"),
                ("role", "member"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let stored = session_data(&app).await;
    let link = bea_b.get(&invite).await.by_id("invite-link").unwrap();
    let secret_part = link.rsplit('/').next().unwrap();
    assert!(secret_part.len() > 20);
    assert!(!holds(&stored, secret_part));
}

#[tokio::test]
async fn a_totp_secret_in_clear_is_sealed_at_start_up_and_refused_if_written_later() {
    let app = TestApp::spawn().await;
    let (ana, _) = clinic(&app).await;
    app.enable_totp(&ana).await;
    // a row as an older version wrote it: the secret in clear
    let secret = auth::new_totp_secret();
    sqlx::query("update users set totp_secret = $1 where id = $2")
        .bind(&secret)
        .bind(ana.id)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    // never read as the secret
    let mut b = app.browser();
    b.sign_in("ana@direct.lakeside.test", PASSWORD).await;
    b.get("/login/mfa").await;
    let code = auth::totp_code(&secret, app.now()).unwrap();
    assert_eq!(
        b.post("/login/mfa", &[("code", &code)]).await.status,
        StatusCode::UNAUTHORIZED
    );
    // the next start seals it, and then it works
    let restarted =
        directmail::app::Application::build_with_clock(app.config.clone(), app.state.clock.clone())
            .await
            .expect("starts again on the same database");
    drop(restarted);
    let stored: String = sqlx::query_scalar("select totp_secret from users where id = $1")
        .bind(ana.id)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("v1:") && !stored.contains(&secret));
    app.state.clock.advance(30);
    let mut c = app.browser();
    c.sign_in("ana@direct.lakeside.test", PASSWORD).await;
    c.get("/login/mfa").await;
    let code = auth::totp_code(&secret, app.now()).unwrap();
    assert_eq!(
        c.post("/login/mfa", &[("code", &code)]).await.location(),
        "/"
    );
}

async fn entries(app: &TestApp) -> Vec<directmail::audit::Entry> {
    directmail::audit::list(&app.state.db, &Default::default(), 500)
        .await
        .unwrap()
}

#[tokio::test]
async fn refused_sign_ins_from_one_address_make_one_audit_entry_per_window_and_a_count() {
    let app = TestApp::spawn().await;
    clinic(&app).await;
    let mut b = app.browser();
    for _ in 0..5 {
        b.sign_in("ana@direct.lakeside.test", "wrong wrong wrong")
            .await;
    }
    // ten more tries while locked, right password or not
    for i in 0..10 {
        let password = if i % 2 == 0 { PASSWORD } else { "wrong again" };
        let r = b.sign_in("ana@direct.lakeside.test", password).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    }
    let locked: Vec<_> = entries(&app)
        .await
        .into_iter()
        .filter(|e| e.action == "signin.fail" && e.detail == "account locked")
        .collect();
    assert_eq!(locked.len(), 1, "the first refusal of the window");
    assert!(
        !entries(&app)
            .await
            .iter()
            .any(|e| e.action == "signin.refusals")
    );
    // when the window has closed, the rest are summed up in one entry
    app.state.clock.advance(16 * 60);
    let window = i64::from(app.config.lockout_minutes) * 60;
    directmail::accounts::summarise_refusals(&app.state.db, app.now(), window)
        .await
        .unwrap();
    let summaries: Vec<_> = entries(&app)
        .await
        .into_iter()
        .filter(|e| e.action == "signin.refusals")
        .collect();
    assert_eq!(summaries.len(), 1);
    assert!(
        summaries[0].detail.starts_with("9 more refused sign-ins"),
        "{}",
        summaries[0].detail
    );
    // summarising again adds nothing; the chain still verifies
    directmail::accounts::summarise_refusals(&app.state.db, app.now(), window)
        .await
        .unwrap();
    assert_eq!(
        entries(&app)
            .await
            .iter()
            .filter(|e| e.action == "signin.refusals")
            .count(),
        1
    );
    let out = app.cli(&["admin", "audit", "verify"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_locked_account_and_an_address_without_an_account_are_refused_alike() {
    let app = TestApp::spawn().await;
    clinic(&app).await;
    let answers = |email: &'static str| {
        let mut b = app.browser();
        async move {
            let mut seen = Vec::new();
            for _ in 0..7 {
                let r = b.sign_in(email, "wrong wrong wrong").await;
                let error = r.by_id("login-error").unwrap_or_default();
                seen.push((r.status, error));
            }
            // the right password of the real account changes nothing while locked
            let r = b.sign_in(email, PASSWORD).await;
            seen.push((r.status, String::new()));
            seen
        }
    };
    let real = answers("ana@direct.lakeside.test").await;
    let missing = answers("nobody@direct.lakeside.test").await;
    let statuses = |s: &[(StatusCode, String)]| s.iter().map(|(st, _)| *st).collect::<Vec<_>>();
    assert_eq!(statuses(&real), statuses(&missing));
    assert_eq!(real[4].0, StatusCode::UNAUTHORIZED);
    assert_eq!(real[5].0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(real[7].0, StatusCode::TOO_MANY_REQUESTS);
    // the same sentences (the times may differ by the minute the locks started)
    let minute = regex::Regex::new(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC").unwrap();
    for (a, b) in real.iter().zip(&missing) {
        assert_eq!(minute.replace_all(&a.1, "T"), minute.replace_all(&b.1, "T"));
    }
    assert!(real[5].1.contains("locked until"), "{}", real[5].1);
    // after the lock, the unknown address is back to plain refusals
    app.state.clock.advance(16 * 60);
    let r = app
        .browser()
        .sign_in("nobody@direct.lakeside.test", "wrong wrong wrong")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.body
            .contains("The e-mail address or the password is not right")
    );
}
