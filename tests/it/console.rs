//! The operator's and office manager's console: organizations, domains, invites,
//! roles, disable/enable, resets, mailboxes and settings.

use directmail::domain::Role;
use reqwest::StatusCode;

use crate::helpers::{PASSWORD, TestApp};

const CHOSEN: &str = "maple river lantern";

#[tokio::test]
async fn an_operator_creates_an_organization_with_a_domain_and_appoints_its_administrator() {
    let app = TestApp::spawn().await;
    app.user(None, "op@hisp.test", Role::Operator).await;
    let mut op = app.signed_in("op@hisp.test").await;
    op.get("/orgs").await;
    // a bad domain is refused next to the field, and the name typed survives
    let r = op
        .post(
            "/orgs",
            &[("name", "Lakeside Clinic"), ("domain", "bad_domain.test")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("is not a valid domain name"));
    assert!(r.body.contains(r#"value="Lakeside Clinic""#));
    let r = op
        .post(
            "/orgs",
            &[
                ("name", "Lakeside Clinic"),
                ("domain", "direct.lakeside.test"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let org_path = r.location();
    let page = op.get(&org_path).await;
    assert!(page.body.contains("direct.lakeside.test"));
    assert!(
        page.body
            .contains("Organization \u{201c}Lakeside Clinic\u{201d} created.")
    );
    // the same name twice is refused
    let r = op
        .post("/orgs", &[("name", "lakeside clinic"), ("domain", "")])
        .await;
    assert!(r.body.contains("already exists"));
    // the HISP's own domain can be given to the organization
    let r = op
        .post(
            &format!("{org_path}/domains"),
            &[("domain", "direct.localhost")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        op.get(&org_path)
            .await
            .body
            .contains("<code>direct.localhost</code>")
    );
    // appoint an administrator through an invitation
    op.get(&format!("{org_path}/users/invite")).await;
    let r = op
        .post(
            &format!("{org_path}/users/invite"),
            &[
                ("email", "Manager@Lakeside.test"),
                ("name", "Maria Manager"),
                ("role", "org-admin"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let r = op.get(&r.location()).await;
    let link = r
        .by_id("invite-link")
        .expect("the invite link is shown to copy");
    // the whole link in a box, with a button that copies it
    assert!(r.body.contains(
        r#"<button type="button" class="secondary" data-copy="invite-link">Copy link</button>"#
    ));
    // shown once: a reload neither repeats the invitation nor shows the link again
    let again = op.get(&format!("{org_path}/users/invite")).await;
    assert!(again.by_id("invite-link").is_none());
    assert!(link.contains("/invite/"));
    let path = link.split_once(&app.addr.to_string()).unwrap().1.to_owned();
    let mut maria = app.browser();
    let page = maria.get(&path).await;
    assert!(page.body.contains("manager@lakeside.test"));
    let r = maria
        .post(&path, &[("password", CHOSEN), ("confirm", CHOSEN)])
        .await;
    assert_eq!(r.location(), "/account/mfa");
    let page = maria.get(&org_path).await;
    assert_eq!(
        page.status,
        StatusCode::OK,
        "the new administrator runs the organization"
    );
    // the link works once
    let mut again = app.browser();
    let r = again.get(&path).await;
    assert_eq!(r.status, StatusCode::GONE);
    assert!(r.body.contains("already used"));
}

#[tokio::test]
async fn the_hisps_own_domain_follows_one_rule_on_the_create_form_and_the_domain_page() {
    let app = TestApp::spawn().await;
    app.user(None, "op@hisp.test", Role::Operator).await;
    let mut op = app.signed_in("op@hisp.test").await;
    op.get("/orgs").await;
    // the HISP's own domain, made at first start and held by no organization, can be
    // given to a new organization on the create form, as on the domain page
    let r = op
        .post(
            "/orgs",
            &[("name", "Small Practice"), ("domain", "Direct.Localhost")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let first = r.location();
    assert!(
        op.get(&first)
            .await
            .body
            .contains("<code>direct.localhost</code>")
    );
    // once held, both forms refuse it with the same sentence, and keep what was typed
    let taken = "The domain direct.localhost already belongs to an organization.";
    let r = op
        .post(
            "/orgs",
            &[("name", "Second Practice"), ("domain", "direct.localhost")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains(taken), "{}", r.body);
    assert!(r.body.contains(r#"value="Second Practice""#));
    let r = op
        .post("/orgs", &[("name", "Second Practice"), ("domain", "")])
        .await;
    let second = r.location();
    let r = op
        .post(
            &format!("{second}/domains"),
            &[("domain", "direct.localhost")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains(taken), "{}", r.body);
    assert!(
        !op.get(&second)
            .await
            .body
            .contains("<code>direct.localhost</code>"),
        "the second organization did not get it"
    );
}

#[tokio::test]
async fn invitation_links_expire_after_72_hours() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    let mut boss = app.signed_in("boss@direct.lakeside.test").await;
    boss.get(&format!("/orgs/{}/users/invite", org.id)).await;
    let r = boss
        .post(
            &format!("/orgs/{}/users/invite", org.id),
            &[
                ("email", "new@direct.lakeside.test"),
                ("name", "New Person"),
                ("role", "member"),
            ],
        )
        .await;
    let r = boss.get(&r.location()).await;
    let link = r.by_id("invite-link").unwrap();
    let path = link.split_once(&app.addr.to_string()).unwrap().1.to_owned();
    app.state.clock.advance(72 * 3600 + 1);
    let mut late = app.browser();
    let r = late.get(&path).await;
    assert_eq!(r.status, StatusCode::GONE);
    assert!(r.body.contains("expired"));
    let r = late
        .post(&path, &[("password", CHOSEN), ("confirm", CHOSEN)])
        .await;
    assert_eq!(r.status, StatusCode::GONE);
    // a garbage link is simply not valid
    assert_eq!(
        late.get("/invite/not-a-real-token").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_office_manager_disables_reenables_and_resets_a_user() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    let ana = app
        .user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut boss = app.signed_in("boss@direct.lakeside.test").await;
    let mut ana_browser = app.signed_in("ana@direct.lakeside.test").await;
    let user_path = format!("/orgs/{}/users/{}", org.id, ana.id);

    let list = boss.get(&format!("/orgs/{}/users", org.id)).await;
    assert!(list.body.contains("ana@direct.lakeside.test"));
    assert!(list.body.contains("Last sign-in"));
    // live search returns the list fragment for htmx
    let fragment = boss
        .client
        .get(app.url(&format!("/orgs/{}/users?q=ana", org.id)))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(fragment.contains("ana@direct.lakeside.test") && !fragment.contains("<html"));

    boss.get(&user_path).await;
    let r = boss.post(&format!("{user_path}/disable"), &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        ana_browser.get("/").await.location().starts_with("/login"),
        "disabling signs out"
    );
    let r = app
        .browser()
        .sign_in("ana@direct.lakeside.test", PASSWORD)
        .await;
    assert!(r.body.contains("This account is disabled"));
    boss.get(&user_path).await;
    boss.post(&format!("{user_path}/enable"), &[]).await;
    assert_eq!(
        app.browser()
            .sign_in("ana@direct.lakeside.test", PASSWORD)
            .await
            .status,
        StatusCode::SEE_OTHER
    );

    // a reset ends the old password and gives a single-use link
    boss.get(&user_path).await;
    let r = boss.post(&format!("{user_path}/reset-password"), &[]).await;
    assert_eq!(r.location(), user_path);
    let r = boss.get(&user_path).await;
    let link = r.by_id("reset-link").expect("reset link shown");
    assert_eq!(
        app.browser()
            .sign_in("ana@direct.lakeside.test", PASSWORD)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let path = link.split_once(&app.addr.to_string()).unwrap().1.to_owned();
    let mut ana2 = app.browser();
    assert!(ana2.get(&path).await.body.contains("Choose a new password"));
    let r = ana2
        .post(&path, &[("password", CHOSEN), ("confirm", CHOSEN)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.browser()
            .sign_in("ana@direct.lakeside.test", CHOSEN)
            .await
            .status,
        StatusCode::SEE_OTHER
    );

    // role change, and nobody changes their own access
    boss.get(&user_path).await;
    boss.post(&format!("{user_path}/role"), &[("role", "org-admin")])
        .await;
    assert!(
        boss.get(&user_path)
            .await
            .body
            .contains("Organization administrator")
    );
    let r = boss
        .post(&format!("{user_path}/role"), &[("role", "operator")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let me = directmail::store::users::by_email(&app.state.db, "boss@direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    let r = boss
        .post(&format!("/orgs/{}/users/{}/disable", org.id, me.id), &[])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let entries = directmail::audit::list(&app.state.db, &Default::default(), 100)
        .await
        .unwrap();
    for action in [
        "user.disable",
        "user.enable",
        "password.reset",
        "password.reset-complete",
        "user.role",
    ] {
        assert!(
            entries.iter().any(|e| e.action == action),
            "{action} audited"
        );
    }
}

#[tokio::test]
async fn an_office_manager_resets_a_users_mfa() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    let ana = app
        .user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    app.enable_totp(&ana).await;
    let mut boss = app.signed_in("boss@direct.lakeside.test").await;
    let path = format!("/orgs/{}/users/{}", org.id, ana.id);
    assert!(
        boss.get(&path)
            .await
            .body
            .contains("Reset two-step sign-in")
    );
    boss.post(&format!("{path}/reset-mfa"), &[]).await;
    let r = app
        .browser()
        .sign_in("ana@direct.lakeside.test", PASSWORD)
        .await;
    assert_eq!(r.location(), "/", "no code asked after the reset");
}

#[tokio::test]
async fn mailboxes_are_created_on_the_organizations_domains_and_assigned() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    app.user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    let mut boss = app.signed_in("boss@direct.lakeside.test").await;
    let path = format!("/orgs/{}/mailboxes", org.id);
    let page = boss.get(&path).await;
    // "Assign to" picks from the organization's users
    assert!(
        page.body.contains(r#"<select id="owner" name="owner""#)
            && page
                .body
                .contains(r#"<option value="ana@direct.lakeside.test">"#),
        "{}",
        page.body
    );
    let r = boss
        .post(
            &path,
            &[
                ("local", "bad local"),
                ("domain", "direct.lakeside.test"),
                ("kind", "shared"),
                ("name", "Referrals"),
                ("owner", ""),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("not a valid address"));
    assert!(
        r.body.contains(r#"value="Referrals""#),
        "what was typed survives"
    );
    let r = boss
        .post(
            &path,
            &[
                ("local", "referrals"),
                ("domain", "other.test"),
                ("kind", "shared"),
                ("name", "Referrals"),
                ("owner", ""),
            ],
        )
        .await;
    assert!(r.body.contains("Choose one of your organization"));
    let r = boss
        .post(
            &path,
            &[
                ("local", "referrals"),
                ("domain", "direct.lakeside.test"),
                ("kind", "shared"),
                ("name", "Referrals"),
                ("owner", "ana@direct.lakeside.test"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = boss.get(&path).await;
    assert!(page.body.contains("referrals@direct.lakeside.test"));
    assert!(page.body.contains("ana@direct.lakeside.test"));
    // the member sees it on the home page
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    assert!(
        ana.get("/")
            .await
            .body
            .contains("referrals@direct.lakeside.test")
    );
    // the same address twice is refused
    let r = boss
        .post(
            &path,
            &[
                ("local", "Referrals"),
                ("domain", "direct.lakeside.test"),
                ("kind", "shared"),
                ("name", "Again"),
                ("owner", ""),
            ],
        )
        .await;
    assert!(r.body.contains("already exists"));
}

#[tokio::test]
async fn organization_settings_validate_the_idle_timeout() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    let mut boss = app.signed_in("boss@direct.lakeside.test").await;
    let path = format!("/orgs/{}/settings", org.id);
    boss.get(&path).await;
    let r = boss.post(&path, &[("idle", "90")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("from 1 to 60"));
    assert!(r.body.contains(r#"value="90""#));
    let r = boss
        .post(&path, &[("idle", "30"), ("require_mfa", "1")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let org = directmail::store::orgs::get(&app.state.db, org.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(org.idle_timeout_minutes, 30);
    assert!(org.require_mfa);
}

#[tokio::test]
async fn lists_are_paged() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    let mut tx = app.state.db.begin().await.unwrap();
    for i in 0..30 {
        let email =
            directmail::domain::Email::parse(&format!("user{i:02}@direct.lakeside.test")).unwrap();
        let name = directmail::domain::DisplayName::parse(&format!("User {i:02}")).unwrap();
        directmail::store::users::create(
            &mut tx,
            directmail::store::users::NewUser {
                org_id: Some(org.id),
                email: &email,
                display_name: &name,
                role: Role::Member,
                password_hash: None,
                must_change_password: false,
            },
            app.now(),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let mut boss = app.signed_in("boss@direct.lakeside.test").await;
    let first = boss.get(&format!("/orgs/{}/users", org.id)).await;
    assert!(first.body.contains("rel=\"next\""));
    assert!(first.body.contains("Invited, not yet signed in"));
    let second = boss.get(&format!("/orgs/{}/users?page=2", org.id)).await;
    assert!(second.body.contains("User 29"));
    assert!(!second.body.contains("rel=\"next\""));
    assert!(!first.body.contains("User 29"));
}

#[tokio::test]
async fn members_are_added_to_and_removed_from_mailboxes_and_personal_ones_stay_personal() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let theirs = app.org("Hillside Care", "direct.hillside.test").await;
    app.user(Some(&org), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    let ana = app
        .user(Some(&org), "ana@direct.lakeside.test", Role::Member)
        .await;
    app.user(Some(&org), "ben@direct.lakeside.test", Role::Member)
        .await;
    app.user(Some(&theirs), "bob@direct.hillside.test", Role::Member)
        .await;
    let mut boss = app.signed_in("boss@direct.lakeside.test").await;
    let path = format!("/orgs/{}/mailboxes", org.id);
    boss.get(&path).await;
    boss.post(
        &path,
        &[
            ("local", "dr.ana"),
            ("domain", "direct.lakeside.test"),
            ("kind", "personal"),
            ("name", "Dr Ana"),
            ("owner", "ana@direct.lakeside.test"),
        ],
    )
    .await;
    boss.post(
        &path,
        &[
            ("local", "referrals"),
            ("domain", "direct.lakeside.test"),
            ("kind", "shared"),
            ("name", "Referrals"),
            ("owner", ""),
        ],
    )
    .await;
    let personal =
        directmail::store::mailboxes::by_address(&app.state.db, "dr.ana@direct.lakeside.test")
            .await
            .unwrap()
            .unwrap();
    let shared =
        directmail::store::mailboxes::by_address(&app.state.db, "referrals@direct.lakeside.test")
            .await
            .unwrap()
            .unwrap();

    // a personal mailbox keeps one person
    boss.get(&path).await;
    boss.post(
        &format!("{path}/{}/members", personal.id),
        &[("email", "ben@direct.lakeside.test")],
    )
    .await;
    let page = boss.get(&path).await;
    assert!(
        page.body
            .contains("is a personal mailbox and already belongs to ana@direct.lakeside.test")
    );
    // a shared one takes several; someone of another organization is refused
    boss.post(
        &format!("{path}/{}/members", shared.id),
        &[("email", "ana@direct.lakeside.test")],
    )
    .await;
    boss.post(
        &format!("{path}/{}/members", shared.id),
        &[("email", "ben@direct.lakeside.test")],
    )
    .await;
    boss.post(
        &format!("{path}/{}/members", shared.id),
        &[("email", "bob@direct.hillside.test")],
    )
    .await;
    let members = directmail::store::mailboxes::members(&app.state.db, shared.id)
        .await
        .unwrap();
    assert_eq!(
        members.iter().map(|m| m.email.as_str()).collect::<Vec<_>>(),
        ["ana@direct.lakeside.test", "ben@direct.lakeside.test"]
    );
    let page = boss.get(&path).await;
    assert!(
        page.body
            .contains("Remove ben@direct.lakeside.test from referrals@direct.lakeside.test"),
        "a remove button per member"
    );

    // removal from the list and from the user's page
    let r = boss
        .post(
            &format!("{path}/{}/members/{}/remove", shared.id, ana.id),
            &[],
        )
        .await;
    assert_eq!(r.location(), path);
    let user_page = format!("/orgs/{}/users/{}", org.id, ana.id);
    boss.get(&user_page).await;
    let r = boss
        .post(
            &format!("{path}/{}/members/{}/remove", personal.id, ana.id),
            &[("back", "user")],
        )
        .await;
    assert_eq!(r.location(), user_page);
    assert!(
        directmail::store::mailboxes::of_user(&app.state.db, ana.id)
            .await
            .unwrap()
            .is_empty()
    );

    // assigning through the user's page; another organization's mailbox id is not found
    let r = boss
        .post(
            &format!("{user_page}/mailboxes"),
            &[("mailbox", &shared.id.to_string())],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let mut theirs_tx = app.state.db.begin().await.unwrap();
    let their_domain =
        directmail::store::orgs::domain_by_name(&app.state.db, "direct.hillside.test")
            .await
            .unwrap()
            .unwrap();
    let their_box = directmail::store::mailboxes::create(
        &mut theirs_tx,
        theirs.id,
        their_domain.id,
        &directmail::domain::Email::parse("front@direct.hillside.test").unwrap(),
        directmail::store::mailboxes::MailboxKind::Shared,
        &directmail::domain::DisplayName::parse("Front").unwrap(),
        app.now(),
    )
    .await
    .unwrap();
    theirs_tx.commit().await.unwrap();
    let r = boss
        .post(
            &format!("{user_page}/mailboxes"),
            &[("mailbox", &their_box.id.to_string())],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = boss
        .post(
            &format!("{path}/{}/members", their_box.id),
            &[("email", "ana@direct.lakeside.test")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = boss
        .post(
            &format!("{user_page}/mailboxes"),
            &[("mailbox", "not-a-number")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("Choose a mailbox"));
    assert!(
        directmail::store::mailboxes::members(&app.state.db, their_box.id)
            .await
            .unwrap()
            .is_empty()
    );
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 100)
        .await
        .unwrap();
    assert!(entries.iter().any(|e| e.action == "mailbox.unassign"));
}

#[tokio::test]
async fn the_operators_home_shows_the_queue_quarantine_and_what_expires_soon() {
    let app = TestApp::spawn().await;
    let mailbox = app
        .practice(
            "Lakeside Clinic",
            "direct.lakeside.test",
            "manager@lakeside.test",
            "dr.ana@direct.lakeside.test",
        )
        .await;
    app.user(None, "op@hisp.test", Role::Operator).await;
    let mut op = app.signed_in("op@hisp.test").await;
    let home = op.get("/").await;
    assert!(
        home.body
            .contains(r#"href="/queue" id="glance-waiting"><strong>0</strong> waiting to be sent"#),
        "{}",
        home.body
    );
    assert!(
        home.body
            .contains(r#"href="/queue?state=failed" id="glance-failed"><strong>0</strong> failed"#)
    );
    assert!(
        home.body.contains(
            r#"href="/quarantine" id="glance-quarantine"><strong>0</strong> in quarantine"#
        )
    );
    assert!(
        home.body
            .contains("No certificate or trust anchor ends in the next 30 days.")
    );
    // a trust bundle's anchor ending soon is named too, with its bundle's page (the
    // same list as the figures page)
    let dir = app.data_dir.path();
    self_signed(dir, "Bundled Short Anchor", 5, "bundled");
    openssl_in(
        dir,
        &[
            "crl2pkcs7",
            "-nocrl",
            "-certfile",
            "bundled.pem",
            "-outform",
            "DER",
            "-out",
            "bundled.p7b",
        ],
    );
    let (bundle, _) = directmail::pki::bundles::import(
        &app.state.db,
        &directmail::pki::bundles::Reader::new(&app.state.fetcher, &app.state.config),
        directmail::pki::bundles::NewImport {
            name: "Short Community".into(),
            url: None,
            file: Some(std::fs::read(dir.join("bundled.p7b")).unwrap()),
            signer: None,
            refresh_hours: 24,
        },
        app.now(),
        &directmail::audit::Actor::system(),
    )
    .await
    .unwrap();
    let home = op.get("/").await;
    assert!(
        home.body.contains(&format!(
            r#"<a href="/bundles/{}">Short Community</a>: Trust bundle anchor CN=Bundled Short Anchor, ends"#,
            bundle.id
        )),
        "{}",
        home.body
    );
    // ten days before the domain's certificate ends, it is named with a link to its
    // domain's page
    let ends: i64 = sqlx::query_scalar("select min(not_after) from domain_certificates")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    app.state.clock.advance(ends - 10 * 86_400 - app.now());
    let mut op = app.signed_in("op@hisp.test").await;
    let home = op.get("/").await;
    let domain_page = format!(r#"<a href="/orgs/{}/domains/"#, mailbox.org_id);
    assert!(
        home.body.contains(&domain_page)
            && home
                .body
                .contains("direct.lakeside.test</a>: Hosted certificate"),
        "{}",
        home.body
    );
    // an organization's administrator without a mailbox reads what they can do, not
    // "your administrator assigns mailboxes"; and sees no operator's glance
    let org = directmail::store::orgs::get(&app.state.db, mailbox.org_id)
        .await
        .unwrap()
        .unwrap();
    app.user(Some(&org), "boss@lakeside.test", Role::OrgAdmin)
        .await;
    let mut boss = app.signed_in("boss@lakeside.test").await;
    let home = boss.get("/").await;
    assert!(
        home.body
            .contains("As your organization's administrator you create mailboxes"),
        "{}",
        home.body
    );
    assert!(!home.body.contains(r#"id="glance""#));
}

#[tokio::test]
async fn the_system_figures_page_shows_the_queues_and_counts_and_warns_of_anchors_ending_within_30_days()
 {
    let app = TestApp::spawn().await;
    let (ana, _kim) = app.lakeside_and_hillside().await;
    // an anchor that ends in ten days, made with the openssl command line
    let dir = app.data_dir.path();
    self_signed(dir, "Short Lived Anchor", 10, "short");
    let domain = directmail::store::orgs::domain_by_name(&app.state.db, "direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    directmail::pki::add_anchors(
        &app.state.db,
        &domain,
        &std::fs::read(dir.join("short.pem")).unwrap(),
        app.now(),
        &directmail::audit::Actor::system(),
    )
    .await
    .unwrap();
    // a message from one practice to the other, acknowledged
    app.send_referral(&ana).await;

    app.user(None, "op@hisp.test", Role::Operator).await;
    let mut op = app.signed_in("op@hisp.test").await;
    let home = op.get("/").await;
    assert!(
        home.body
            .contains(r#"<a href="/figures">System figures</a>"#)
    );
    let mut page = op.get("/figures").await;
    crate::outbound::wait_for("the message and its notifications counted", async || {
        page = op.get("/figures").await;
        page.body.contains(r#"id="delivery-message-sent">1<"#)
            && page.body.contains(r#"id="received-notification-mdn">2<"#)
    })
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"id="received-delivered-trusted">1<"#));
    assert!(page.body.contains(r#"id="quarantined">0<"#));
    assert!(page.body.contains(r#"id="outbound-queued">0<"#));
    assert!(
        page.body
            .contains("<strong>1</strong> processed notifications came back"),
        "{}",
        page.body
    );
    // the anchor is named with its domain's page and what to do; the development
    // certificates end later and are not
    let warnings = warning_list(&page.body);
    let domain_page = format!(
        r#"<a href="/orgs/{}/domains/{}">direct.lakeside.test</a>"#,
        domain.org_id.unwrap(),
        domain.id
    );
    assert!(
        warnings.contains("Ending: Trust anchor</strong> CN=Short Lived Anchor")
            && warnings.contains(&domain_page)
            && warnings.contains("(in 10 days)")
            && warnings.contains("Ask the anchor's owner for its successor"),
        "{warnings}"
    );
    assert!(!warnings.contains("Hosted certificate"), "{warnings}");
    // no subject or content of a message on the page
    assert!(!page.body.contains("Ms. Diaz"));

    // eleven days on it has ended, and the page says what that means
    app.state.clock.advance(11 * 86_400);
    let mut op = app.signed_in("op@hisp.test").await;
    let page = op.get("/figures").await;
    let warnings = warning_list(&page.body);
    assert!(
        warnings.contains("Ended: Trust anchor</strong> CN=Short Lived Anchor")
            && warnings.contains("quarantined as untrusted"),
        "{warnings}"
    );

    // the page is the operator's alone
    let mut manager = app.signed_in("ana@direct.lakeside.test").await;
    assert_eq!(manager.get("/figures").await.status, StatusCode::FORBIDDEN);
}

/// A self-signed certificate `CN=<name>` valid for `days`, made with the openssl
/// command line as `<stem>.pem` (and `<stem>.key`) in `dir`.
fn self_signed(dir: &std::path::Path, name: &str, days: u32, stem: &str) {
    let (days, subject) = (days.to_string(), format!("/CN={name}"));
    let (key, pem) = (format!("{stem}.key"), format!("{stem}.pem"));
    openssl_in(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", &days, "-subj", &subject,
            "-keyout", &key, "-out", &pem,
        ],
    );
}

/// Runs the openssl command line in `dir`.
fn openssl_in(dir: &std::path::Path, args: &[&str]) {
    let made = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
}

/// The figures page's list of certificates and anchors ending, entities decoded.
fn warning_list(body: &str) -> String {
    let start = body
        .find(r#"id="expiry-warnings""#)
        .expect("a warning list");
    let end = start + body[start..].find("</ul>").expect("the list's end");
    body[start..end]
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}
