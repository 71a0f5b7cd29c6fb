//! Authorization on every route, CSRF, security headers, bad and oversized input,
//! error pages and health endpoints.

use directmail::domain::Role;
use reqwest::StatusCode;

use crate::helpers::{Browser, TestApp, serde_urlencode};

#[tokio::test]
async fn every_page_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(None, "op@hisp.test", Role::Operator).await;
    let mut op = app.signed_in("op@hisp.test").await;
    let pages = [
        "/login".to_owned(),
        "/".into(),
        "/account".into(),
        "/account/password".into(),
        "/account/mfa".into(),
        "/orgs".into(),
        format!("/orgs/{}", org.id),
        format!("/orgs/{}/users", org.id),
        format!("/orgs/{}/users/invite", org.id),
        format!("/orgs/{}/mailboxes", org.id),
        format!("/orgs/{}/settings", org.id),
        format!("/orgs/{}/audit", org.id),
        "/audit".into(),
        "/quarantine".into(),
        "/queue".into(),
        "/no-such-page".into(),
        "/healthz".into(),
    ];
    for path in pages {
        let page = op.get(&path).await;
        let h = &page.headers;
        let csp = h
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: CSP"))
            .to_str()
            .unwrap();
        assert!(!csp.contains("unsafe-inline"), "{path}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}");
        assert!(csp.contains("script-src 'self'"), "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
        assert!(
            h.get("strict-transport-security").is_none(),
            "{path}: no HSTS over plain HTTP"
        );
        assert!(h.get("x-request-id").is_some(), "{path}");
        // no inline scripts or styles in our own markup
        assert!(
            !page.body.contains("<script>") && !page.body.contains("style="),
            "{path}"
        );
    }
}

#[tokio::test]
async fn hsts_is_sent_when_the_portal_is_reached_over_https() {
    let app =
        TestApp::spawn_with(|c| c.public_url = Some("https://portal.example.org".parse().unwrap()))
            .await;
    let r = reqwest::get(app.url("/login")).await.unwrap();
    assert!(
        r.headers()["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_address_and_an_untrusted_one_does_not() {
    let app = TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let b = app.browser();
    b.client.get(app.url("/login")).send().await.unwrap();
    b.client
        .post(app.url("/login"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-csrf-token", "wrong")
        .send()
        .await
        .unwrap();
    let mut b = app.browser();
    b.get("/login").await;
    let body = serde_urlencode(&[
        ("_csrf", &b.csrf.clone()),
        ("email", "x@example.org"),
        ("password", "nope nope nope"),
    ]);
    b.client
        .post(app.url("/login"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 10)
        .await
        .unwrap();
    assert_eq!(entries[0].ip, "203.0.113.9");

    let untrusted = TestApp::spawn().await;
    let mut b = untrusted.browser();
    b.get("/login").await;
    let body = serde_urlencode(&[
        ("_csrf", &b.csrf.clone()),
        ("email", "x@example.org"),
        ("password", "nope nope nope"),
    ]);
    b.client
        .post(untrusted.url("/login"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let entries = directmail::audit::list(&untrusted.state.db, &Default::default(), 10)
        .await
        .unwrap();
    assert_eq!(entries[0].ip, "127.0.0.1");
}

#[tokio::test]
async fn a_post_without_the_csrf_token_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    let ana = app
        .user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut boss = app.signed_in("boss@direct.lakeside.test").await;
    let disable = format!("/orgs/{}/users/{}/disable", org.id, ana.id);
    let r = boss.post_raw(&disable, String::new()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = boss.post_raw(&disable, "_csrf=forged".into()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("did not come from this site"));
    let ana_now = directmail::store::users::get(&app.state.db, ana.id)
        .await
        .unwrap()
        .unwrap();
    assert!(!ana_now.disabled);
    // a refused form is shown again with the reason
    let settings = format!("/orgs/{}/settings", org.id);
    let r = boss.post_raw(&settings, "idle=5".into()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("has been reloaded") && r.body.contains(r#"name="idle""#));
    // the header works as well as the field (htmx)
    let r = boss
        .client
        .post(app.url(&disable))
        .header("x-csrf-token", &boss.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // the sign-in form is protected too
    let mut anon = app.browser();
    let r = anon
        .post_raw(
            "/login",
            "email=boss%40direct.lakeside.test&password=correct+horse+battery+staple".into(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_member_cannot_reach_any_console_page() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let ana = app
        .user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut ana_b = app.signed_in("ana@direct.lakeside.test").await;
    for path in [
        "/orgs".to_owned(),
        "/audit".into(),
        "/audit.csv".into(),
        "/quarantine".into(),
        "/quarantine/1".into(),
        "/queue".into(),
        "/figures".into(),
        format!("/orgs/{}", org.id),
        format!("/orgs/{}/users", org.id),
        format!("/orgs/{}/users/invite", org.id),
        format!("/orgs/{}/users/{}", org.id, ana.id),
        format!("/orgs/{}/mailboxes", org.id),
        format!("/orgs/{}/settings", org.id),
        format!("/orgs/{}/audit", org.id),
        format!("/orgs/{}/audit.csv", org.id),
    ] {
        let r = ana_b.get(&path).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert!(r.body.contains("request id"), "{path}");
    }
    ana_b.get("/").await;
    let r = ana_b
        .post(&format!("/orgs/{}/settings", org.id), &[("idle", "60")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = ana_b.post("/orgs", &[("name", "Sneaky")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = ana_b
        .post(
            &format!("/orgs/{}/users/invite", org.id),
            &[
                ("email", "x@direct.lakeside.test"),
                ("name", "X"),
                ("role", "org-admin"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        directmail::store::users::by_email(&app.state.db, "x@direct.lakeside.test")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_office_manager_cannot_see_or_change_another_organizations_users() {
    let app = TestApp::spawn().await;
    let ours = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let theirs = app.org("Hillside Care", "direct.hillside.test").await;
    app.user(Some(&ours), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    let victim = app
        .user(Some(&theirs), "bob@direct.hillside.test", Role::Member)
        .await;
    let mut boss = app.signed_in("boss@direct.lakeside.test").await;
    for path in [
        format!("/orgs/{}", theirs.id),
        format!("/orgs/{}/users", theirs.id),
        format!("/orgs/{}/users/{}", theirs.id, victim.id),
        // their user through our organization's URL
        format!("/orgs/{}/users/{}", ours.id, victim.id),
        format!("/orgs/{}/mailboxes", theirs.id),
        format!("/orgs/{}/audit", theirs.id),
        format!("/orgs/{}/audit.csv", theirs.id),
        "/orgs".into(),
    ] {
        let r = boss.get(&path).await;
        assert!(
            r.status == StatusCode::NOT_FOUND || r.status == StatusCode::FORBIDDEN,
            "{path}: {}",
            r.status
        );
        assert!(!r.body.contains("bob@direct.hillside.test"), "{path}");
    }
    boss.get("/").await;
    for path in [
        format!("/orgs/{}/users/{}/disable", ours.id, victim.id),
        format!("/orgs/{}/users/{}/disable", theirs.id, victim.id),
        format!("/orgs/{}/users/{}/reset-password", ours.id, victim.id),
    ] {
        let r = boss.post(&path, &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    let r = boss
        .post(
            &format!("/orgs/{}/users/invite", theirs.id),
            &[
                ("email", "spy@direct.hillside.test"),
                ("name", "Spy"),
                ("role", "org-admin"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let victim_now = directmail::store::users::get(&app.state.db, victim.id)
        .await
        .unwrap()
        .unwrap();
    assert!(!victim_now.disabled && victim_now.password_hash.is_some());
}

#[tokio::test]
async fn malformed_and_oversized_form_posts_get_400_and_413_with_the_form_shown_again() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    let mut boss = app.signed_in("boss@direct.lakeside.test").await;
    let invite = format!("/orgs/{}/users/invite", org.id);
    boss.get(&invite).await;
    // a form that cannot be read as one (a field twice)
    let r = boss
        .post(
            &invite,
            &[
                ("email", "a@direct.lakeside.test"),
                ("email", "b@direct.lakeside.test"),
                ("name", "A"),
                ("role", "member"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body.contains("could not be read") && r.body.contains(r#"name="email""#),
        "{}",
        r.body
    );
    // bytes that are not UTF-8 are refused next to the field, with the form
    let r = boss
        .client
        .post(app.url(&invite))
        .header("x-csrf-token", &boss.csrf)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(b"email=%ff%fe&name=\xff\xfe&role=member".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("is not a valid address") && body.contains(r#"name="email""#),
        "{body}"
    );
    // wrong content type
    let r = boss
        .client
        .post(app.url(&invite))
        .header("x-csrf-token", &boss.csrf)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    // oversized: refused, the page shown again with the reason
    let huge = format!(
        "_csrf={}&email=a%40b.org&name={}&role=member",
        boss.csrf,
        "x".repeat(100_000)
    );
    let r = boss.post_raw(&invite, huge).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.body.contains("larger than this form accepts") && r.body.contains(r#"name="email""#));
    // a long field within the limit is refused next to the field
    let r = boss
        .post(
            &invite,
            &[
                ("email", "a@direct.lakeside.test"),
                ("name", &"n".repeat(500)),
                ("role", "member"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("at most 120 characters"));
    // hostile input is shown escaped, never executed
    let r = boss
        .post(
            &invite,
            &[
                ("email", "<script>alert(1)</script>"),
                ("name", "<b>x</b>"),
                ("role", "member"),
            ],
        )
        .await;
    assert!(!r.body.contains("<script>alert(1)</script>") && !r.body.contains("<b>x</b>"));
    assert!(
        r.body.contains("&#60;script&#62;") || r.body.contains("&lt;script&gt;"),
        "escaped, still shown"
    );
    // the same on the sign-in form
    let mut anon = app.browser();
    anon.get("/login").await;
    let r = anon
        .client
        .post(app.url("/login"))
        .header("x-csrf-token", &anon.csrf)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(b"email=a&email=b&password=%zz".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains(r#"name="password""#));
}

#[tokio::test]
async fn unknown_pages_and_errors_show_a_friendly_page_with_only_a_request_id() {
    let app = TestApp::spawn().await;
    let r = reqwest::get(app.url("/definitely/not/here")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = r.text().await.unwrap();
    assert!(body.contains("We could not find that page"));
    assert!(body.contains(&id), "the page quotes the request id");
}

#[tokio::test]
async fn signed_out_visitors_are_sent_to_sign_in_and_only_to_local_pages_after() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut b: Browser = app.browser();
    let r = b.get("/account").await;
    assert_eq!(r.location(), "/login?reason=signin&next=%2Faccount");
    b.get("/login").await;
    let r = b
        .post(
            "/login",
            &[
                ("email", "ana@direct.lakeside.test"),
                ("password", crate::helpers::PASSWORD),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(r.location(), "/");
    // htmx requests get a client-side redirect instead of a 303 they cannot follow
    let r = app
        .browser()
        .client
        .get(app.url("/account"))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["hx-redirect"]
            .to_str()
            .unwrap()
            .starts_with("/login")
    );
    // the folder's poll comes back to the folder, never to the fragment it asked for
    let r = app
        .browser()
        .client
        .get(app.url("/mail/5/inbox/new?after=3"))
        .header("hx-request", "true")
        .header("x-background", "1")
        .header("hx-current-url", app.url("/mail/5/inbox?page=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["hx-redirect"].to_str().unwrap(),
        "/login?reason=signin&next=%2Fmail%2F5%2Finbox%3Fpage%3D2"
    );
    // a page elsewhere named by the header is not followed
    let r = app
        .browser()
        .client
        .get(app.url("/mail/5/inbox/new?after=3"))
        .header("hx-request", "true")
        .header("hx-current-url", "//evil.example/x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["hx-redirect"].to_str().unwrap(),
        "/login?reason=signin"
    );
    // a script's own request (suggestions while typing) is no return address either
    let r = app
        .browser()
        .client
        .get(app.url("/mail/suggest?q=ana"))
        .header("sec-fetch-mode", "cors")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/login?reason=signin");
}

#[tokio::test]
async fn health_endpoints_report_the_process_and_the_database() {
    let app = TestApp::spawn().await;
    let r = reqwest::get(app.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reqwest::get(app.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("ready"));
    app.state.db.pool.close().await;
    let r = reqwest::get(app.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn behind_a_trusted_proxy_that_terminates_tls_cookies_are_secure_and_hsts_is_sent() {
    let app = TestApp::spawn_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let client = reqwest::Client::new();
    let r = client
        .get(app.url("/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
    assert!(r.headers().get("strict-transport-security").is_some());
    // an untrusted peer cannot claim HTTPS
    let plain = TestApp::spawn().await;
    let r = client
        .get(plain.url("/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(
        !r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Secure")
    );
    assert!(r.headers().get("strict-transport-security").is_none());
}

#[tokio::test]
async fn the_portal_serves_https_itself_from_a_configured_certificate() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    // a throwaway CA and a server certificate for 127.0.0.1, made by the openssl CLI
    let script = "set -e
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out req.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext.cnf
        openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out cert.pem 2>/dev/null";
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca = dir.path().join("ca.pem");
    let app = TestApp::spawn_with(|c| {
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut std::fs::read(&ca).unwrap().as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the configured certificate");
    tls.write_all(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("strict-transport-security"));
    assert!(
        text.contains("; secure"),
        "session cookie is Secure over HTTPS"
    );
    // plain HTTP on the TLS port gets nothing useful
    let mut plain = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    plain
        .write_all(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        plain.read_to_end(&mut buf),
    )
    .await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
}

#[tokio::test]
async fn after_sign_in_only_local_pages_are_followed_whatever_the_encoding() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    for next in [
        "/\t/evil.example",
        "/\n/evil.example",
        "/\\evil.example",
        "//evil.example",
        "https://evil.example/",
        "/%09/evil.example",
    ] {
        let mut b = app.browser();
        b.get("/login").await;
        let r = b
            .post(
                "/login",
                &[
                    ("email", "ana@direct.lakeside.test"),
                    ("password", crate::helpers::PASSWORD),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{next:?}");
        let target = r.location();
        assert!(
            target == "/"
                || (target.starts_with('/') && !target.starts_with("//") && !target.contains('\\')),
            "{next:?} -> {target:?}"
        );
        assert!(
            !target.contains("evil") || target == "/%09/evil.example",
            "{next:?} -> {target:?}"
        );
    }
}

#[tokio::test]
async fn guessing_the_current_password_on_an_open_session_locks_the_account() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    b.get("/account/password").await;
    let mut last = String::new();
    for _ in 0..5 {
        let r = b
            .post(
                "/account/password",
                &[
                    ("current", "guess guess guess"),
                    ("password", "a fresh long password"),
                    ("confirm", "a fresh long password"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        last = r.body;
    }
    assert!(last.contains("locked"), "{last}");
    let r = app
        .browser()
        .sign_in("ana@direct.lakeside.test", crate::helpers::PASSWORD)
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 50)
        .await
        .unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.action == "signin.fail" && e.detail == "account locked"),
        "a refused attempt is audited too"
    );
}

#[tokio::test]
async fn what_is_typed_as_an_address_reaches_the_audit_log_only_when_it_is_one() {
    let app = TestApp::spawn().await;
    let mut b = app.browser();
    b.sign_in("my secret password typed in the wrong box", "x")
        .await;
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 10)
        .await
        .unwrap();
    assert_eq!(entries[0].action, "signin.fail");
    assert_eq!(entries[0].object, "(not an address)");
    assert!(
        !entries
            .iter()
            .any(|e| e.object.contains("secret") || e.actor.contains("secret"))
    );
}

#[test]
fn tokens_in_paths_never_reach_the_log() {
    let path =
        directmail::web::loggable_path("/invite/Zk3vQ0n2l7eYk1v9qB8c4s5d6f7g8h9j0k1l2m3n4o5");
    assert_eq!(path, "/invite/{token}");
    assert_eq!(
        directmail::web::loggable_path("/orgs/12/users/3"),
        "/orgs/12/users/3"
    );
}

#[tokio::test]
async fn no_change_route_reaches_another_organization() {
    let app = TestApp::spawn().await;
    let ours = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let theirs = app.org("Hillside Care", "direct.hillside.test").await;
    app.user(Some(&ours), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    let victim = app
        .user(Some(&theirs), "bob@direct.hillside.test", Role::Member)
        .await;
    let their_domain =
        directmail::store::orgs::domain_by_name(&app.state.db, "direct.hillside.test")
            .await
            .unwrap()
            .unwrap();
    let mut tx = app.state.db.begin().await.unwrap();
    let their_box = directmail::store::mailboxes::create(
        &mut tx,
        theirs.id,
        their_domain.id,
        &directmail::domain::Email::parse("front@direct.hillside.test").unwrap(),
        directmail::store::mailboxes::MailboxKind::Shared,
        &directmail::domain::DisplayName::parse("Front").unwrap(),
        app.now(),
    )
    .await
    .unwrap();
    directmail::store::mailboxes::assign(&mut tx, their_box.id, victim.id)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let before: i64 = sqlx::query_scalar("select count(*) from audit_log")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();

    let mut boss = app.signed_in("boss@direct.lakeside.test").await;
    let (o, t, v, m, d) = (ours.id, theirs.id, victim.id, their_box.id, their_domain.id);
    let m_str = m.to_string();
    let attempts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            format!("/orgs/{t}/domains"),
            vec![("domain", "x.hillside.test")],
        ),
        (
            format!("/orgs/{o}/domains"),
            vec![("domain", "x.lakeside.test")],
        ),
        (
            format!("/orgs/{t}/users/invite"),
            vec![
                ("email", "spy@direct.hillside.test"),
                ("name", "Spy"),
                ("role", "org-admin"),
            ],
        ),
        (
            format!("/orgs/{t}/users/{v}/role"),
            vec![("role", "org-admin")],
        ),
        (
            format!("/orgs/{o}/users/{v}/role"),
            vec![("role", "org-admin")],
        ),
        (format!("/orgs/{t}/users/{v}/disable"), vec![]),
        (format!("/orgs/{o}/users/{v}/disable"), vec![]),
        (format!("/orgs/{t}/users/{v}/enable"), vec![]),
        (format!("/orgs/{t}/users/{v}/reset-password"), vec![]),
        (format!("/orgs/{o}/users/{v}/reset-password"), vec![]),
        (format!("/orgs/{t}/users/{v}/reset-mfa"), vec![]),
        (format!("/orgs/{o}/users/{v}/reset-mfa"), vec![]),
        (
            format!("/orgs/{t}/users/{v}/mailboxes"),
            vec![("mailbox", m_str.as_str())],
        ),
        (
            format!("/orgs/{t}/mailboxes"),
            vec![
                ("local", "spy"),
                ("domain", "direct.hillside.test"),
                ("kind", "shared"),
                ("name", "Spy"),
            ],
        ),
        (
            format!("/orgs/{t}/mailboxes/{m}/members"),
            vec![("email", "boss@direct.lakeside.test")],
        ),
        (
            format!("/orgs/{o}/mailboxes/{m}/members"),
            vec![("email", "boss@direct.lakeside.test")],
        ),
        (
            format!("/orgs/{t}/mailboxes/{m}/members/{v}/remove"),
            vec![],
        ),
        (
            format!("/orgs/{o}/mailboxes/{m}/members/{v}/remove"),
            vec![],
        ),
        (format!("/orgs/{t}/settings"), vec![("idle", "60")]),
        (format!("/orgs/{t}/domains/{d}/anchors/1/remove"), vec![]),
        ("/orgs".to_owned(), vec![("name", "Sneaky")]),
    ];
    for (path, fields) in attempts {
        boss.get("/").await;
        let r = boss.post(&path, &fields).await;
        assert!(
            r.status == StatusCode::NOT_FOUND || r.status == StatusCode::FORBIDDEN,
            "{path}: {}",
            r.status
        );
    }
    let victim_now = directmail::store::users::get(&app.state.db, v)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !victim_now.disabled
            && victim_now.password_hash.is_some()
            && victim_now.role == Role::Member
    );
    assert_eq!(
        directmail::store::mailboxes::members(&app.state.db, m)
            .await
            .unwrap()
            .len(),
        1
    );
    let theirs_now = directmail::store::orgs::get(&app.state.db, t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(theirs_now.idle_timeout_minutes, 15);
    assert!(
        directmail::store::users::by_email(&app.state.db, "spy@direct.hillside.test")
            .await
            .unwrap()
            .is_none()
    );
    let actions: Vec<String> = sqlx::query_scalar("select action from audit_log where id > $1")
        .bind(before)
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    assert!(
        actions.iter().all(|a| a == "signin"),
        "only the sign-in was recorded: {actions:?}"
    );
}

#[tokio::test]
async fn an_internal_error_shows_only_a_request_id_and_nothing_of_the_cause() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut b = app.signed_in("ana@direct.lakeside.test").await;
    app.state.db.pool.close().await;
    let r = b.get("/account").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(r.body.contains("Something went wrong on our side") && r.body.contains(&id));
    assert!(
        !r.body.to_lowercase().contains("pool") && !r.body.contains("sqlx"),
        "{}",
        r.body
    );
}
