//! Single sign-on against a real OpenID provider on loopback: `oidc-provider` (npm,
//! tests/oidc/provider.mjs) over HTTPS with the test CA's certificate, as an
//! organization's identity provider and as a SMART EHR with its FHIR endpoint.

use std::io::{BufRead as _, Write as _};
use std::process::{Child, Command, Stdio};

use directmail::domain::Role;
use directmail::store::users::User;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Browser, Page, TestApp, test_https};

/// `npm ci` in tests/oidc once per run when its node_modules is missing (also done by
/// scripts/test.sh).
fn npm_ready() -> std::path::PathBuf {
    static ONCE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        if !dir.join("node_modules/oidc-provider").exists() {
            let out = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .output()
                .expect("npm runs");
            assert!(
                out.status.success(),
                "npm ci: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        dir
    })
    .clone()
}

/// The provider, stopped when dropped.
pub(crate) struct Op {
    child: Child,
    pub issuer: String,
    pub fhir: String,
    /// A client that trusts the test CA.
    client: reqwest::Client,
}

impl Drop for Op {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test client registered at every provider.
pub(crate) const CLIENT_ID: &str = "directmail-portal";
pub(crate) const CLIENT_SECRET: &str = "a client secret only the portal and the provider know";

impl Op {
    /// A provider whose client `CLIENT_ID` may redirect to `app`'s callback.
    pub(crate) async fn start(app: &TestApp, accounts: Value, patients: Value) -> Op {
        let dir = npm_ready();
        let https = test_https();
        let certs = https.ca_pem.parent().expect("dir");
        let setup = json!({
            "cert": certs.join("server.pem"),
            "key": certs.join("server.key"),
            "clients": [{
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [app.url("/sso/callback")],
            }],
            "accounts": accounts,
            "patients": patients,
        });
        let (child, line) = tokio::task::spawn_blocking(move || {
            let mut child = Command::new("node")
                .arg("provider.mjs")
                .current_dir(&dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("node runs");
            let mut stdin = child.stdin.take().expect("stdin");
            writeln!(stdin, "{setup}").expect("setup written");
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("the provider says where it listens");
            (child, line)
        })
        .await
        .expect("thread");
        let started: Value = serde_json::from_str(&line).expect("the provider's first line");
        Op {
            child,
            issuer: started["issuer"].as_str().expect("issuer").to_owned(),
            fhir: started["fhir"].as_str().expect("fhir").to_owned(),
            client: Self::browser(),
        }
    }

    /// A browser at the provider: trusts the test CA, keeps cookies, follows no
    /// redirect by itself.
    fn browser() -> reqwest::Client {
        let ca = std::fs::read(&test_https().ca_pem).expect("ca");
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("pem"))
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    /// Changes who the login page signs in, launches, or the tampering.
    pub(crate) async fn set(&self, state: Value) {
        let r = self
            .client
            .post(format!("{}/_test/state", self.issuer))
            .body(state.to_string())
            .send()
            .await
            .expect("the provider answers");
        assert!(r.status().is_success());
    }

    /// Follows the provider's pages from `url` in a new browser (its login and
    /// consent sign in whoever the test chose) until it sends the browser back
    /// elsewhere: that URL.
    pub(crate) async fn walk(&self, url: &str) -> String {
        let browser = Self::browser();
        let mut url = url.to_owned();
        for _ in 0..10 {
            if !url.starts_with(&self.issuer) {
                return url;
            }
            let r = browser.get(&url).send().await.expect("provider page");
            let location = r
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("the provider answered {} at {url}", r.status()))
                .to_owned();
            url = if location.starts_with('/') {
                format!("{}{location}", self.issuer)
            } else {
                location
            };
        }
        panic!("the provider never sent the browser back");
    }
}

/// An organization with an admin, a member with a mailbox, and a provider of `kind`
/// at `issuer` added through the console; returns (org id, provider id, member).
pub(crate) async fn set_up(
    app: &TestApp,
    kind: &str,
    issuer: &str,
    two_step: &str,
) -> (i64, i64, User) {
    let mailbox = app
        .practice(
            "Lakeside Clinic",
            "direct.lakeside.test",
            "ana@lakeside.test",
            "dr.ana@direct.lakeside.test",
        )
        .await;
    let org = mailbox.org_id;
    let org_row = directmail::store::orgs::get(&app.state.db, org)
        .await
        .unwrap()
        .unwrap();
    app.user(Some(&org_row), "boss@lakeside.test", Role::OrgAdmin)
        .await;
    let ana = directmail::store::users::by_email(&app.state.db, "ana@lakeside.test")
        .await
        .unwrap()
        .unwrap();
    let mut boss = app.signed_in("boss@lakeside.test").await;
    let provider =
        provider_added(app, &mut boss, org, kind, "Lakeside Okta", issuer, two_step).await;
    let stored: String = sqlx::query_scalar("select client_secret from sso_providers")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert!(
        directmail::secrets::is_sealed(&stored) && !stored.contains("client secret"),
        "the client secret is stored sealed"
    );
    let page = boss.get(&format!("/orgs/{org}/sso")).await;
    assert!(page.body.contains("Lakeside Okta") && !page.body.contains(CLIENT_SECRET));
    linked(&mut boss, org, provider, "okta-ana").await;
    (org, provider, ana)
}

/// The organization's administrator adds a provider (with the test client's id and
/// secret) on the console; its id.
async fn provider_added(
    app: &TestApp,
    boss: &mut Browser,
    org: i64,
    kind: &str,
    name: &str,
    issuer: &str,
    two_step: &str,
) -> i64 {
    boss.get(&format!("/orgs/{org}/sso")).await;
    let page = boss
        .post(
            &format!("/orgs/{org}/sso"),
            &[
                ("kind", kind),
                ("name", name),
                ("issuer", issuer),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("two_step_values", two_step),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    sqlx::query_scalar("select id from sso_providers where name = $1")
        .bind(name)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
}

/// The administrator links `subject` at `provider` to Ana on the console.
async fn linked(boss: &mut Browser, org: i64, provider: i64, subject: &str) {
    let page = boss
        .post(
            &format!("/orgs/{org}/sso/links"),
            &[
                ("provider", &provider.to_string()),
                ("subject", subject),
                ("email", "ana@lakeside.test"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
}

/// A provider on loopback knowing `accounts`, set up as the organization's OpenID
/// provider by [`set_up`].
async fn openid(app: &TestApp, accounts: Value, two_step: &str) -> (Op, i64, i64, User) {
    let op = Op::start(app, accounts, json!({})).await;
    let (org, provider, ana) = set_up(app, "oidc", &op.issuer, two_step).await;
    (op, org, provider, ana)
}

/// A provider on loopback set up by [`set_up`] as the organization's EHR, where Ana
/// (a practitioner) is `subject` and her link names that subject.
async fn ehr(app: &TestApp, subject: &str) -> (Op, i64, i64) {
    let op = Op::start(
        app,
        json!({ subject: { "fhirUser": "Practitioner/ana" } }),
        patients(),
    )
    .await;
    let (org, provider, _) = set_up(app, "smart", &op.fhir, "urn:test:mfa").await;
    sqlx::query("update sso_links set subject = $1")
        .bind(subject)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    (op, org, provider)
}

/// The path and query of an absolute URL on the portal.
fn local(app: &TestApp, url: &str) -> String {
    url.strip_prefix(&format!("http://{}", app.addr))
        .unwrap_or_else(|| panic!("{url} is not on the portal"))
        .to_owned()
}

/// "Sign in with Lakeside Okta" to the callback; the callback's page.
async fn sign_in_with(app: &TestApp, op: &Op, b: &mut Browser, org: i64, provider: i64) -> Page {
    let page = b.get(&format!("/login/org/{org}")).await;
    assert!(
        page.body.contains("Sign in with Lakeside Okta"),
        "{}",
        page.body
    );
    let go = b.post(&format!("/sso/{provider}/start"), &[]).await;
    assert_eq!(go.status, StatusCode::OK, "{}", go.body);
    let at_provider = continues_to(&go);
    assert!(at_provider.starts_with(&op.issuer), "{at_provider}");
    let query: Vec<(String, String)> = url::Url::parse(&at_provider)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let get = |k: &str| {
        query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("code_challenge_method"), "S256");
    assert_eq!(get("response_type"), "code");
    assert!(
        get("state").len() >= 16 && get("nonce").len() >= 16 && get("code_challenge").len() >= 43
    );
    let back = op.walk(&at_provider).await;
    b.get(&local(app, &back)).await
}

/// The continue page's target.
fn continues_to(page: &Page) -> String {
    page.by_id("sso-continue")
        .map(|_| {
            let re = regex::Regex::new(
                r#"id="sso-continue" href="([^"]*)"|href="([^"]*)" id="sso-continue""#,
            )
            .unwrap();
            re.captures(&page.body)
                .and_then(|c| c.get(1).or(c.get(2)))
                .map(|m| {
                    m.as_str()
                        .replace("&#x2f;", "/")
                        .replace("&#x3d;", "=")
                        .replace("&#38;", "&")
                        .replace("&amp;", "&")
                })
                .unwrap_or_default()
        })
        .unwrap_or_else(|| panic!("not the continue page: {} {}", page.status, page.body))
}

async fn signed_in(b: &mut Browser) -> bool {
    b.get("/account").await.status == StatusCode::OK
}

async fn last_signin(app: &TestApp, action: &str) -> String {
    sqlx::query_scalar("select detail from audit_log where action = $1 order by id desc limit 1")
        .bind(action)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap_or_default()
}

#[tokio::test]
async fn an_organizations_openid_provider_signs_a_linked_user_in_with_its_two_step() {
    let app = TestApp::spawn().await;
    let (op, org, provider, ana) = openid(
        &app,
        json!({ "okta-ana": {}, "okta-stranger": {} }),
        "otp hwk",
    )
    .await;
    // the organization requires two-step sign-in, and Ana has not set up our TOTP
    sqlx::query("update organizations set require_mfa = 1 where id = $1")
        .bind(org)
        .execute(&app.state.db.pool)
        .await
        .unwrap();

    // the provider says two steps were taken: signed in, no TOTP asked for
    op.set(json!({ "login": { "sub": "okta-ana", "amr": ["pwd", "otp"], "acr": "urn:test:mfa" } }))
        .await;
    let mut b = app.browser();
    let page = sign_in_with(&app, &op, &mut b, org, provider).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(continues_to(&page), "/");
    let home = b.get("/account").await;
    assert_eq!(
        home.status,
        StatusCode::OK,
        "not sent to set up TOTP: {}",
        home.location()
    );
    assert!(home.body.contains("ana@lakeside.test"));
    assert_eq!(
        last_signin(&app, "signin").await,
        "OpenID Connect (Lakeside Okta), two-step by the provider"
    );

    // one step at the provider: our TOTP step follows for a user who has one
    let secret = app.enable_totp(&ana).await;
    op.set(json!({ "login": { "sub": "okta-ana", "amr": ["pwd"], "acr": "urn:test:pwd" } }))
        .await;
    let mut b = app.browser();
    let page = sign_in_with(&app, &op, &mut b, org, provider).await;
    assert_eq!(continues_to(&page), "/login/mfa");
    assert_eq!(b.get("/account").await.location(), "/login/mfa");
    b.get("/login/mfa").await;
    let code = directmail::auth::totp_code(&secret, app.now()).unwrap();
    let done = b.post("/login/mfa", &[("code", &code)]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(b.get("/account").await.status, StatusCode::OK);
    assert_eq!(
        last_signin(&app, "signin").await,
        "OpenID Connect (Lakeside Okta), then TOTP"
    );

    // a password sign-in says so too
    let _ = app.signed_in("boss@lakeside.test").await;
    assert_eq!(last_signin(&app, "signin").await, "password");
}

#[tokio::test]
async fn a_user_links_their_own_account_after_signing_in_with_a_password() {
    let app = TestApp::spawn().await;
    let (op, org, provider, _) = openid(&app, json!({ "okta-ana-2": {} }), "otp").await;
    op.set(json!({ "login": { "sub": "okta-ana-2", "amr": ["otp"] } }))
        .await;
    let mut b = app.browser();
    let refused = sign_in_with(&app, &op, &mut b, org, provider).await;
    assert!(
        refused
            .body
            .contains("is not linked to an account on this portal")
    );

    let mut ana = app.signed_in("ana@lakeside.test").await;
    let page = ana.get("/account").await;
    assert!(
        page.body.contains("Link my Lakeside Okta account"),
        "{}",
        page.body
    );
    let go = ana.post(&format!("/sso/{provider}/link"), &[]).await;
    let back = op.walk(&continues_to(&go)).await;
    let page = ana.get(&local(&app, &back)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("is now linked"), "{}", page.body);
    assert_eq!(
        last_signin(&app, "sso.link").await,
        "OpenID Connect (Lakeside Okta)"
    );

    let mut b = app.browser();
    let page = sign_in_with(&app, &op, &mut b, org, provider).await;
    assert_eq!(continues_to(&page), "/");
    assert_eq!(b.get("/account").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_user_links_their_ehr_account_from_my_account_and_the_next_launch_signs_them_in() {
    let app = TestApp::spawn().await;
    let (op, _, provider) = ehr(&app, "ehr-ana-7").await;
    sqlx::query("delete from sso_links")
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    op.set(json!({
        "login": { "sub": "ehr-ana-7", "amr": ["pwd", "otp"], "acr": "urn:test:mfa" },
        "launches": { "L-31": { "sub": "ehr-ana-7", "patient": "pat-4471", "need_patient_banner": true } }
    }))
    .await;
    let launch_url = format!(
        "/launch?iss={}&launch=L-31",
        url::form_urlencoded::byte_serialize(op.fhir.as_bytes()).collect::<String>()
    );
    // not linked yet: the launch says how to link
    let mut b = app.browser();
    let launch = b.get(&launch_url).await;
    let back = op.walk(launch.location().as_str()).await;
    let refused = b.get(&local(&app, &back)).await;
    assert!(
        refused
            .body
            .contains("is not linked to an account on this portal. Sign in with your e-mail address and password, then link it from My account"),
        "{}",
        refused.body
    );

    // signed in with a password, Ana links her EHR account: a sign-in at the EHR that
    // asks who she is and nothing of a patient
    let mut ana = app.signed_in("ana@lakeside.test").await;
    let page = ana.get("/account").await;
    assert!(
        page.body.contains(&format!(r#"id="sso-link-{provider}""#)),
        "{}",
        page.body
    );
    let go = ana.post(&format!("/sso/{provider}/link"), &[]).await;
    let at_ehr = url::Url::parse(&continues_to(&go)).unwrap();
    let q: std::collections::HashMap<String, String> = at_ehr.query_pairs().into_owned().collect();
    assert_eq!(q["scope"], "openid fhirUser", "{at_ehr}");
    assert_eq!(q["aud"], op.fhir);
    assert!(!q.contains_key("launch"));
    let back = op.walk(at_ehr.as_str()).await;
    let page = ana.get(&local(&app, &back)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("is now linked"), "{}", page.body);

    // the EHR's next launch signs her in on the patient's messages
    let mut b = app.browser();
    let launch = b.get(&launch_url).await;
    let back = op.walk(launch.location().as_str()).await;
    let page = b.get(&local(&app, &back)).await;
    assert_eq!(
        continues_to(&page),
        "/mail/patient?id=HX-4471+%282.16.840.1.113883.19.5%29"
    );
}

#[tokio::test]
async fn every_bad_answer_is_refused_with_a_sentence() {
    let app = TestApp::spawn().await;
    let (op, org, provider, _) =
        openid(&app, json!({ "okta-ana": {}, "okta-stranger": {} }), "otp").await;
    op.set(json!({ "login": { "sub": "okta-ana", "amr": ["otp"] } }))
        .await;
    let refused = |page: &Page, sentence: &str| {
        assert!(
            page.status.is_client_error() && page.body.contains(sentence),
            "expected «{sentence}», got {}: {}",
            page.status,
            page.body
        );
    };

    // a state this browser never started
    let mut b = app.browser();
    let page = b
        .get("/sso/callback?code=abc&state=not-a-state-we-made")
        .await;
    refused(&page, "was not started in this browser");

    // a callback taken to another browser (a link someone was sent)
    let mut b = app.browser();
    b.get(&format!("/login/org/{org}")).await;
    let go = b.post(&format!("/sso/{provider}/start"), &[]).await;
    let back = op.walk(&continues_to(&go)).await;
    let mut other = app.browser();
    refused(
        &other.get(&local(&app, &back)).await,
        "was not started in this browser",
    );
    assert!(!signed_in(&mut other).await);

    // the same callback twice: the second is refused
    let mut b = app.browser();
    b.get(&format!("/login/org/{org}")).await;
    let go = b.post(&format!("/sso/{provider}/start"), &[]).await;
    let back = op.walk(&continues_to(&go)).await;
    let first = b.get(&local(&app, &back)).await;
    assert_eq!(continues_to(&first), "/");
    let mut b2 = app.browser();
    refused(
        &b2.get(&local(&app, &back)).await,
        "was not started in this browser",
    );

    // a used code under a new sign-in's state: the provider refuses it
    let mut b = app.browser();
    b.get(&format!("/login/org/{org}")).await;
    let go = b.post(&format!("/sso/{provider}/start"), &[]).await;
    let fresh = url::Url::parse(&continues_to(&go)).unwrap();
    let new_state = fresh
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let old_code = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let page = b
        .get(&format!(
            "/sso/callback?code={old_code}&state={}",
            url::form_urlencoded::byte_serialize(new_state.as_bytes()).collect::<String>()
        ))
        .await;
    refused(&page, "refused the sign-in code");
    assert!(!signed_in(&mut b).await);

    // a sign-in that stayed at the provider longer than ten minutes
    let mut b = app.browser();
    b.get(&format!("/login/org/{org}")).await;
    let go = b.post(&format!("/sso/{provider}/start"), &[]).await;
    let back = op.walk(&continues_to(&go)).await;
    app.state.clock.advance(11 * 60);
    refused(&b.get(&local(&app, &back)).await, "took too long");
    assert!(!signed_in(&mut b).await);

    // id_tokens the provider got wrong (re-signed with its own key)
    for (tamper, sentence) in [
        ("aud", "was meant for another application"),
        ("exp", "has expired"),
        ("nonce", "belongs to another sign-in"),
        ("iss", "was issued by someone else"),
    ] {
        op.set(json!({ "tamper": tamper })).await;
        let mut b = app.browser();
        let page = sign_in_with(&app, &op, &mut b, org, provider).await;
        refused(&page, sentence);
        assert!(!signed_in(&mut b).await, "{tamper}");
    }
    op.set(json!({ "tamper": "" })).await;

    // someone the provider knows, linked to nobody here
    op.set(json!({ "login": { "sub": "okta-stranger", "amr": ["otp"] } }))
        .await;
    let mut b = app.browser();
    let page = sign_in_with(&app, &op, &mut b, org, provider).await;
    refused(&page, "is not linked to an account on this portal");
    assert!(!signed_in(&mut b).await);

    // the user said no at the provider
    let mut b = app.browser();
    b.get(&format!("/login/org/{org}")).await;
    let go = b.post(&format!("/sso/{provider}/start"), &[]).await;
    let state = url::Url::parse(&continues_to(&go))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let page = b
        .get(&format!("/sso/callback?error=access_denied&state={state}"))
        .await;
    refused(&page, "did not sign you in (access_denied)");

    // an EHR nobody registered
    let mut b = app.browser();
    let page = b
        .get("/launch?iss=https%3A%2F%2Fehr.unknown.example%2Ffhir&launch=abc")
        .await;
    refused(&page, "is not registered with this portal");
    let page = b.get("/launch?launch=abc").await;
    refused(&page, "did not come with the EHR");

    // every refusal is in the audit log with its reason
    let details: Vec<String> = sqlx::query_scalar(
        "select detail from audit_log where action = 'signin.fail' and object = 'OpenID Connect (Lakeside Okta)'",
    )
    .fetch_all(&app.state.db.pool)
    .await
    .unwrap();
    for reason in [
        "refused the sign-in code",
        "meant for another application",
        "has expired",
        "belongs to another sign-in",
        "issued by someone else",
        "is not linked",
        "access_denied",
    ] {
        assert!(
            details.iter().any(|d| d.contains(reason)),
            "{reason} audited: {details:?}"
        );
    }
}

#[tokio::test]
async fn the_console_refuses_bad_provider_settings() {
    let app = TestApp::spawn().await;
    let (org, _, _) = set_up(&app, "oidc", "https://idp.lakeside.example", "").await;
    let mut boss = app.signed_in("boss@lakeside.test").await;
    boss.get(&format!("/orgs/{org}/sso")).await;
    for (fields, sentence) in [
        (
            [
                ("kind", "oidc"),
                ("name", "X"),
                ("issuer", "http://idp.example"),
                ("client_id", "c"),
            ],
            "must be an https:// address",
        ),
        (
            [
                ("kind", "oidc"),
                ("name", ""),
                ("issuer", "https://idp2.example"),
                ("client_id", "c"),
            ],
            "Enter the name to show",
        ),
        (
            [
                ("kind", "saml"),
                ("name", "X"),
                ("issuer", "https://idp2.example"),
                ("client_id", "c"),
            ],
            "Choose what kind of provider",
        ),
        (
            [
                ("kind", "oidc"),
                ("name", "X"),
                ("issuer", "https://idp.lakeside.example/"),
                ("client_id", "c"),
            ],
            "already set up",
        ),
        (
            [
                ("kind", "oidc"),
                ("name", "X"),
                ("issuer", "https://idp2.example/?a=b"),
                ("client_id", "c"),
            ],
            "cannot have a query",
        ),
    ] {
        let page = boss.post(&format!("/orgs/{org}/sso"), &fields).await;
        assert!(
            page.status.is_client_error() && page.body.contains(sentence),
            "{sentence}: {} {}",
            page.status,
            page.body
        );
    }
    // an EHR's iss names one organization; an OpenID issuer may serve several
    let smart = [
        ("kind", "smart"),
        ("name", "Lakeside EHR"),
        ("issuer", "https://ehr.example/fhir"),
        ("client_id", "c"),
    ];
    let page = boss.post(&format!("/orgs/{org}/sso"), &smart).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let hillside = app.org("Hillside Clinic", "direct.hillside.test").await;
    app.user(Some(&hillside), "boss@hillside.test", Role::OrgAdmin)
        .await;
    let mut other = app.signed_in("boss@hillside.test").await;
    other.get(&format!("/orgs/{}/sso", hillside.id)).await;
    let page = other
        .post(&format!("/orgs/{}/sso", hillside.id), &smart)
        .await;
    assert!(
        page.status == StatusCode::CONFLICT
            && page.body.contains("a launch must name one organization"),
        "{}",
        page.body
    );
    let page = other
        .post(
            &format!("/orgs/{}/sso", hillside.id),
            &[
                ("kind", "oidc"),
                ("name", "Hillside Okta"),
                ("issuer", "https://idp.lakeside.example"),
                ("client_id", "hillside"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    // one organization's administrator cannot reach the other's page
    assert_eq!(
        other.get(&format!("/orgs/{org}/sso")).await.status,
        StatusCode::NOT_FOUND
    );

    // a provider that cannot be reached: the sign-in page says so
    let page = boss
        .post(
            &format!("/orgs/{org}/sso"),
            &[
                ("kind", "oidc"),
                ("name", "Closed Port"),
                ("issuer", "https://127.0.0.1:9"),
                ("client_id", "c"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let closed: i64 = sqlx::query_scalar("select id from sso_providers where name = 'Closed Port'")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    let mut b = app.browser();
    let login = b.get(&format!("/login/org/{org}")).await;
    assert!(login.body.contains("Sign in with Closed Port"));
    let page = b.post(&format!("/sso/{closed}/start"), &[]).await;
    assert!(
        page.status == StatusCode::BAD_GATEWAY && page.body.contains("could not be reached"),
        "{} {}",
        page.status,
        page.body
    );
    // linking one's own account there: the same sentence, and the way back
    let mut ana = app.signed_in("ana@lakeside.test").await;
    assert!(
        ana.get("/account")
            .await
            .body
            .contains("Link my Closed Port account")
    );
    let page = ana.post(&format!("/sso/{closed}/link"), &[]).await;
    assert!(
        page.status == StatusCode::BAD_GATEWAY
            && page
                .by_id("sso-message")
                .is_some_and(|m| m.contains("could not be reached"))
            && page.by_id("sso-continue").as_deref() == Some("Back to My account"),
        "{} {}",
        page.status,
        page.body
    );
    // hostile callbacks: oversized state, no state
    let long = "s".repeat(5000);
    let page = b.get(&format!("/sso/callback?code=c&state={long}")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_eq!(b.get("/sso/callback").await.status, StatusCode::BAD_REQUEST);
    // a member cannot open the console
    assert_eq!(
        ana.get(&format!("/orgs/{org}/sso")).await.status,
        StatusCode::FORBIDDEN
    );
}

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(&format!("select count(*) from {table}"))
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_console_keeps_what_was_typed_when_it_refuses_a_provider_or_a_link() {
    let app = TestApp::spawn().await;
    let (org, provider, _) = set_up(&app, "oidc", "https://idp.lakeside.example", "").await;
    let mut boss = app.signed_in("boss@lakeside.test").await;
    boss.get(&format!("/orgs/{org}/sso")).await;
    let (providers, links) = (
        count(&app, "sso_providers").await,
        count(&app, "sso_links").await,
    );

    // a bad issuer: the sentence beside it, every other field as typed, the secret
    // not echoed but asked for again
    let typed_secret = "s3cret typed into the console";
    let page = boss
        .post(
            &format!("/orgs/{org}/sso"),
            &[
                ("kind", "smart"),
                ("name", "Lakeside EHR (main)"),
                ("issuer", "http://ehr.lakeside.example/fhir"),
                ("client_id", "portal-client-7"),
                ("client_secret", typed_secret),
                ("two_step_values", "mfa otp"),
                ("create_accounts", "1"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert_eq!(
        page.by_id("issuer-error").as_deref(),
        Some("The FHIR server URL (iss) must be an https:// address.")
    );
    assert_eq!(page.by_id("name").as_deref(), Some("Lakeside EHR (main)"));
    assert_eq!(
        page.by_id("issuer").as_deref(),
        Some("http://ehr.lakeside.example/fhir")
    );
    assert_eq!(page.by_id("client_id").as_deref(), Some("portal-client-7"));
    assert_eq!(page.by_id("two_step_values").as_deref(), Some("mfa otp"));
    assert!(
        page.body.contains(r#"value="smart" checked"#),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"value="1" checked"#), "{}", page.body);
    assert_eq!(
        page.by_id("client_secret-error").as_deref(),
        Some("The client secret is not shown again: enter it again.")
    );
    assert!(!page.body.contains(typed_secret), "{}", page.body);
    // a taken issuer (409) asks for the secret again too
    let page = boss
        .post(
            &format!("/orgs/{org}/sso"),
            &[
                ("kind", "oidc"),
                ("name", "Okta again"),
                ("issuer", "https://idp.lakeside.example"),
                ("client_id", "again"),
                ("client_secret", typed_secret),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.body);
    assert!(
        page.by_id("issuer-error")
            .unwrap()
            .contains("already set up")
    );
    assert_eq!(page.by_id("name").as_deref(), Some("Okta again"));
    assert!(
        page.by_id("client_secret-error")
            .unwrap()
            .contains("enter it again")
    );
    assert!(!page.body.contains(typed_secret));

    // links: an unknown user, a subject that is not one line, an unreadable provider,
    // and a subject already linked, each beside its field with the rest kept
    let provider = provider.to_string();
    let long = "x".repeat(256);
    for (fields, field, sentence, status) in [
        (
            [
                ("provider", provider.as_str()),
                ("subject", "okta-bob"),
                ("email", "bob@nowhere.test"),
            ],
            "link-email-error",
            "No user of this organization has that e-mail address.",
            StatusCode::BAD_REQUEST,
        ),
        (
            [
                ("provider", provider.as_str()),
                ("subject", long.as_str()),
                ("email", "ana@lakeside.test"),
            ],
            "link-subject-error",
            "The subject (the provider's user id) must be one line of at most 255 characters.",
            StatusCode::BAD_REQUEST,
        ),
        (
            [
                ("provider", "first"),
                ("subject", "okta-bob"),
                ("email", "ana@lakeside.test"),
            ],
            "link-provider-error",
            "Choose the provider the account is at.",
            StatusCode::BAD_REQUEST,
        ),
        (
            [
                ("provider", provider.as_str()),
                ("subject", "okta-bob"),
                ("email", "  "),
            ],
            "link-email-error",
            "Enter the user's e-mail address.",
            StatusCode::BAD_REQUEST,
        ),
        (
            [
                ("provider", provider.as_str()),
                ("subject", "okta-ana"),
                ("email", "ana@lakeside.test"),
            ],
            "link-subject-error",
            "That Lakeside Okta subject is already linked. Remove its link first to link it to someone else.",
            StatusCode::CONFLICT,
        ),
    ] {
        let page = boss.post(&format!("/orgs/{org}/sso/links"), &fields).await;
        assert_eq!(page.status, status, "{sentence}: {}", page.body);
        assert_eq!(
            page.by_id(field).as_deref(),
            Some(sentence),
            "{}",
            page.body
        );
        assert_eq!(page.by_id("link-subject").as_deref(), Some(fields[1].1));
        assert_eq!(page.by_id("link-email").as_deref(), Some(fields[2].1));
    }
    // the provider chosen stays chosen
    let page = boss
        .post(
            &format!("/orgs/{org}/sso/links"),
            &[("provider", &provider), ("subject", "s"), ("email", "x")],
        )
        .await;
    assert!(
        page.body
            .contains(&format!(r#"<option value="{provider}" selected>"#)),
        "{}",
        page.body
    );
    // a provider of no organization of the admin's is not found, not listed
    let page = boss
        .post(
            &format!("/orgs/{org}/sso/links"),
            &[
                ("provider", "999999"),
                ("subject", "s"),
                ("email", "ana@lakeside.test"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    // nothing was saved by any of them
    assert_eq!(count(&app, "sso_providers").await, providers);
    assert_eq!(count(&app, "sso_links").await, links);
}

/// The FHIR Patient the EHR's launch names.
pub(crate) fn patients() -> Value {
    json!({
        "pat-4471": {
            "resourceType": "Patient",
            "id": "pat-4471",
            "identifier": [{ "system": "urn:oid:2.16.840.1.113883.19.5", "value": "HX-4471" }],
            "name": [{ "use": "official", "family": "Rivera", "given": ["Maria", "Elena"] }],
            "gender": "female",
            "birthDate": "1961-04-17"
        }
    })
}

#[tokio::test]
async fn a_smart_ehr_launch_signs_in_and_opens_the_patients_messages_ready_to_write() {
    let app = TestApp::spawn().await;
    let (op, _, _) = ehr(&app, "ehr-ana").await;
    op.set(json!({
        "login": { "sub": "ehr-ana", "amr": ["pwd", "otp"], "acr": "urn:test:mfa" },
        "launches": { "L-778": { "sub": "ehr-ana", "patient": "pat-4471", "need_patient_banner": true } }
    }))
    .await;
    let mut b = app.browser();
    let launch = b
        .get(&format!(
            "/launch?iss={}&launch=L-778",
            url::form_urlencoded::byte_serialize(op.fhir.as_bytes()).collect::<String>()
        ))
        .await;
    assert_eq!(launch.status, StatusCode::SEE_OTHER, "{}", launch.body);
    let at_ehr = url::Url::parse(&launch.location()).unwrap();
    let q: std::collections::HashMap<String, String> = at_ehr.query_pairs().into_owned().collect();
    assert_eq!(q["aud"], op.fhir);
    assert_eq!(q["launch"], "L-778");
    assert_eq!(q["code_challenge_method"], "S256");
    let scopes: Vec<&str> = q["scope"].split(' ').collect();
    for s in ["launch", "openid", "fhirUser", "patient/Patient.rs"] {
        assert!(scopes.contains(&s), "{s} in {scopes:?}");
    }
    let back = op.walk(launch.location().as_str()).await;
    let page = b.get(&local(&app, &back)).await;
    let target = continues_to(&page);
    assert_eq!(
        target,
        "/mail/patient?id=HX-4471+%282.16.840.1.113883.19.5%29"
    );
    let page = b.get(&target).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.location());
    assert_eq!(
        page.by_id("launch-patient-name").as_deref(),
        Some("Maria Elena Rivera")
    );
    assert_eq!(
        page.by_id("launch-patient-birth").as_deref(),
        Some("1961-04-17")
    );
    assert!(page.body.contains("Write a message about this patient"));
    assert_eq!(
        last_signin(&app, "signin").await,
        "SMART EHR launch (Lakeside Okta), fhirUser Practitioner/ana, two-step by the provider"
    );

    let mailbox: i64 = sqlx::query_scalar("select id from mailboxes")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    let draft = b
        .post(
            "/mail/patient/compose",
            &[("mailbox", &mailbox.to_string())],
        )
        .await;
    assert_eq!(draft.status, StatusCode::SEE_OTHER, "{}", draft.body);
    let compose = b.get(&draft.location()).await;
    assert_eq!(compose.by_id("patient_family").as_deref(), Some("Rivera"));
    assert_eq!(
        compose.by_id("patient_given").as_deref(),
        Some("Maria Elena")
    );
    assert_eq!(
        compose.by_id("patient_id").as_deref(),
        Some("2.16.840.1.113883.19.5:HX-4471")
    );

    // a launch the EHR does not know is refused there, and nobody is signed in
    let mut b = app.browser();
    let launch = b
        .get(&format!(
            "/launch?iss={}&launch=forged",
            url::form_urlencoded::byte_serialize(op.fhir.as_bytes()).collect::<String>()
        ))
        .await;
    let back = op.walk(launch.location().as_str()).await;
    let page = b.get(&local(&app, &back)).await;
    assert!(page.status.is_client_error(), "{}", page.body);
    assert!(page.body.contains("did not sign you in"), "{}", page.body);
}

#[tokio::test]
async fn in_chromium_a_smart_launch_lands_on_the_patients_messages_with_compose_ready() {
    use crate::browser::{arrive, chromium_with, start_driver, text};
    use fantoccini::Locator;
    let app = TestApp::spawn().await;
    let (op, org, _) = ehr(&app, "ehr-ana").await;
    // the same server is also the organization's OpenID provider
    let mut boss = app.signed_in("boss@lakeside.test").await;
    let oidc = provider_added(
        &app,
        &mut boss,
        org,
        "oidc",
        "Lakeside Login",
        &op.issuer,
        "urn:test:mfa",
    )
    .await;
    linked(&mut boss, org, oidc, "ehr-ana").await;
    op.set(json!({
        "login": { "sub": "ehr-ana", "amr": ["pwd", "otp"], "acr": "urn:test:mfa" },
        "launches": { "L-901": { "sub": "ehr-ana", "patient": "pat-4471", "need_patient_banner": true } }
    }))
    .await;
    let driver = start_driver();
    let profile = tempfile::tempdir().unwrap();
    // the test EHR's certificate is from the test CA, which Chromium does not know
    let c = chromium_with(&driver, profile.path(), &["--ignore-certificate-errors"]).await;
    // the EHR opens the portal: a cross-site navigation to the launch URL
    c.goto(&app.url(&format!(
        "/launch?iss={}&launch=L-901",
        url::form_urlencoded::byte_serialize(op.fhir.as_bytes()).collect::<String>()
    )))
    .await
    .unwrap();
    arrive(&c, "/mail/patient").await;
    assert_eq!(text(&c, "#launch-patient-name").await, "Maria Elena Rivera");
    assert!(text(&c, "h1").await.contains("HX-4471"));
    let problems = crate::browser_mail::axe_problems(&c).await;
    assert!(problems.is_empty(), "the patient page: {problems:#?}");
    c.find(Locator::Css("#launch-compose-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !crate::browser::path(&c).await.starts_with("/mail/drafts/") {
        assert!(std::time::Instant::now() < deadline, "no draft page");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let family = c
        .find(Locator::Css("#patient_family"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(family.as_deref(), Some("Rivera"));

    // "Sign in with Lakeside Login" on the organization's sign-in link
    c.goto(&app.url(&format!("/login/org/{org}")))
        .await
        .unwrap();
    let problems = crate::browser_mail::axe_problems(&c).await;
    assert!(problems.is_empty(), "the sign-in link: {problems:#?}");
    c.find(Locator::Css(&format!("#sso-{oidc}")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    arrive(&c, "/").await;
    c.goto(&app.url("/account")).await.unwrap();
    arrive(&c, "/account").await;
    assert!(text(&c, "main").await.contains("ana@lakeside.test"));

    // the console page, as its administrator sees it
    crate::browser_mail::sign_out(&c, &app).await;
    crate::browser_mail::sign_in(&c, &app, "boss@lakeside.test").await;
    c.goto(&app.url(&format!("/orgs/{org}/sso"))).await.unwrap();
    assert!(text(&c, "#sso-providers").await.contains("Lakeside Login"));
    let problems = crate::browser_mail::axe_problems(&c).await;
    assert!(problems.is_empty(), "the console page: {problems:#?}");
    c.close().await.unwrap();
}

#[tokio::test]
async fn accounts_are_made_at_first_sign_in_only_when_the_organization_allows_it() {
    let app = TestApp::spawn().await;
    let (op, org, provider, _) = openid(
        &app,
        json!({
            "okta-new": { "email": "new.person@lakeside.test", "email_verified": true },
            "okta-unverified": { "email": "other.person@lakeside.test", "email_verified": false },
            "okta-squatter": { "email": "ana@lakeside.test", "email_verified": true }
        }),
        "otp",
    )
    .await;
    let first = |sub: &'static str| json!({ "login": { "sub": sub, "amr": ["otp"] } });

    // off (the default): refused, nothing made
    op.set(first("okta-new")).await;
    let mut b = app.browser();
    let page = sign_in_with(&app, &op, &mut b, org, provider).await;
    assert!(page.body.contains("is not linked"), "{}", page.body);
    assert!(
        directmail::store::users::by_email(&app.state.db, "new.person@lakeside.test")
            .await
            .unwrap()
            .is_none()
    );

    sqlx::query("update sso_providers set create_accounts = 1")
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    let page = sign_in_with(&app, &op, &mut b, org, provider).await;
    assert_eq!(continues_to(&page), "/");
    assert_eq!(b.get("/account").await.status, StatusCode::OK);
    let made = directmail::store::users::by_email(&app.state.db, "new.person@lakeside.test")
        .await
        .unwrap()
        .expect("the account was made");
    assert_eq!(made.org_id, Some(org));
    assert_eq!(made.role, Role::Member);
    assert!(
        last_signin(&app, "user.create")
            .await
            .contains("at first sign-in")
    );

    // an address the provider has not verified, or one that has an account here,
    // makes nothing and takes nothing over
    for sub in ["okta-unverified", "okta-squatter"] {
        op.set(first(sub)).await;
        let mut b = app.browser();
        let page = sign_in_with(&app, &op, &mut b, org, provider).await;
        assert!(
            page.status == StatusCode::FORBIDDEN && page.body.contains("is not linked"),
            "{sub}: {}",
            page.body
        );
        assert!(!signed_in(&mut b).await);
    }
    assert_eq!(
        count(&app, "sso_links").await,
        2,
        "Ana's link and the new person's"
    );
}

#[tokio::test]
async fn bad_answers_count_against_the_address_and_a_paused_address_starts_no_sign_in() {
    let app = TestApp::spawn_with(|c| c.ip_lockout_threshold = 2).await;
    let (op, org, provider, _) = openid(&app, json!({ "okta-ana": {} }), "otp").await;
    op.set(json!({ "login": { "sub": "okta-ana", "amr": ["otp"] }, "tamper": "aud" }))
        .await;
    for _ in 0..2 {
        let mut b = app.browser();
        let page = sign_in_with(&app, &op, &mut b, org, provider).await;
        assert!(
            page.body.contains("meant for another application"),
            "{}",
            page.body
        );
    }
    let mut b = app.browser();
    b.get(&format!("/login/org/{org}")).await;
    let page = b.post(&format!("/sso/{provider}/start"), &[]).await;
    assert!(
        page.status == StatusCode::TOO_MANY_REQUESTS && page.body.contains("is paused until"),
        "{} {}",
        page.status,
        page.body
    );
}
