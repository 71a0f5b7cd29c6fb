//! Trust bundles: imported from a file or a loopback URL through the console and the
//! CLI, certs-only or signed (checked against the configured signer), refreshed on
//! demand and on schedule with what changed, a failed refresh keeping the anchors,
//! and assignments that change the inbound verdict (receiving) and the discovery
//! check (sending). Bundles are made by the real `openssl` command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use der::Encode as _;
use directmail::audit::Actor;
use directmail::domain::Role;
use directmail::pki::KeyFile;
use directmail::pki::bundles::{NewImport, Reader, SendingAnchorsWatch};
use directmail::pki::fetch::Fetcher;
use directmail::store::bundles as store;
use directmail::store::orgs;
use directmail_discovery::responder::Records;
use directmail_smime::{DevCa, ReasonCode};
use reqwest::StatusCode;

use crate::cli::json;
use crate::discovery::check;
use crate::helpers::{Browser, Page, TestApp};
use crate::revocation::Files;

/// The test PKI and its bundles, made once per test process.
fn pki() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"set -e
root() {
  openssl req -x509 -newkey rsa:2048 -nodes -days $2 -subj "/CN=$1" -keyout $3.key -out $3.pem \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
root "Community Root A" 3650 roota
root "Community Root B" 3650 rootb
root "Expiring Root" 10 expiring
root "Our CA" 3650 ourca
root "Bundle Publisher" 3650 publisher
root "Impostor" 3650 impostor
leaf() {
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout $1.key -out $1.csr 2>/dev/null
  printf "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=$2\n" > $1.ext
  openssl x509 -req -in $1.csr -CA $3.pem -CAkey $3.key -CAcreateserial -days 365 -sha256 -extfile $1.ext -out $1.pem 2>/dev/null
}
leaf sender email:dr.smith@direct.sender.test roota
leaf ours DNS:direct.lakeside.test ourca
p7b() {
  out=$1; shift; args=""
  for c in "$@"; do args="$args -certfile $c.pem"; done
  openssl crl2pkcs7 -nocrl $args -outform DER -out $out
}
p7b a.p7b roota rootb
p7b b.p7b rootb expiring
p7b big.p7b roota rootb expiring publisher impostor ourca sender ours
openssl crl2pkcs7 -nocrl -outform DER -out empty.p7b
printf 'this is not a bundle' > garbage.bin
sign() { openssl cms -sign -nodetach -binary -outform DER -in $1 -signer $2.pem -inkey $2.key -out $3; }
sign a.p7b publisher signed-a.p7b
sign b.p7b publisher signed-b.p7b
sign a.p7b impostor impostor-a.p7b
"#;
        let out = Command::new("sh")
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
        dir
    })
    .path()
}

fn file(name: &str) -> Vec<u8> {
    std::fs::read(pki().join(name)).unwrap()
}

fn path(name: &str) -> PathBuf {
    pki().join(name)
}

/// The loopback file server of the revocation tests over HTTPS, at
/// `https://127.0.0.1:<port>` (every test portal trusts its certificate).
async fn serve() -> (Files, String) {
    let (files, port) = Files::serve_https().await;
    (files, format!("https://127.0.0.1:{port}"))
}

/// Posts a multipart form (CSRF field first) with text fields and files.
async fn post_form(
    b: &mut Browser,
    path: &str,
    texts: &[(&str, &str)],
    files: &[(&str, Vec<u8>)],
) -> Page {
    let mut form = reqwest::multipart::Form::new().text("_csrf", b.csrf.clone());
    for (name, value) in texts {
        form = form.text(name.to_string(), value.to_string());
    }
    for (name, bytes) in files {
        let part = reqwest::multipart::Part::bytes(bytes.clone())
            .file_name(format!("{name}.p7b"))
            .mime_str("application/octet-stream")
            .unwrap();
        form = form.part(name.to_string(), part);
    }
    let r = b
        .client
        .post(format!("{}{path}", b.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    Page {
        status: r.status(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

async fn operator(app: &TestApp) -> Browser {
    app.user(None, "ops@hisp.test", Role::Operator).await;
    app.signed_in("ops@hisp.test").await
}

fn reader(app: &TestApp) -> Reader {
    Reader {
        fetcher: Fetcher::new(
            Duration::from_secs(2),
            directmail_net::Policy::everything(),
            &crate::helpers::test_https_roots(),
        )
        .unwrap(),
        max_bytes: usize::try_from(app.config.bundle_max_bytes).unwrap(),
    }
}

fn import(
    name: &str,
    url: Option<String>,
    bundle: Option<&str>,
    signer: Option<&str>,
) -> NewImport {
    NewImport {
        name: name.into(),
        url,
        file: bundle.map(file),
        signer: signer.map(file),
        refresh_hours: 24,
    }
}

async fn bundle_actions(app: &TestApp) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "select action, object, detail from audit_log where action like 'bundle.%' order by id",
    )
    .fetch_all(&app.state.db.pool)
    .await
    .unwrap()
}

fn bundle_id(location: &str) -> i64 {
    location.trim_start_matches("/bundles/").parse().unwrap()
}

#[tokio::test]
async fn a_bundle_is_imported_from_a_file_and_from_a_url_and_shown_to_the_operator() {
    let app = TestApp::spawn().await;
    let (files, base) = serve().await;
    files.put("a.p7b", file("a.p7b"));
    let mut ops = operator(&app).await;
    ops.get("/bundles").await;

    let r = post_form(
        &mut ops,
        "/bundles",
        &[("name", "Community file"), ("refresh_hours", "24")],
        &[("file", file("a.p7b"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let from_file = bundle_id(&r.location());
    let page = ops.get(&r.location()).await;
    assert!(page.body.contains("Imported the bundle"), "{}", page.body);
    assert!(page.body.contains("Community Root A"));
    assert!(page.body.contains("Community Root B"));
    assert_eq!(page.by_id("bundle-count").as_deref(), Some("2"));

    let url = format!("{base}/a.p7b");
    let r = post_form(
        &mut ops,
        "/bundles",
        &[
            ("name", "Community URL"),
            ("url", &url),
            ("refresh_hours", "6"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = ops.get(&r.location()).await;
    assert_eq!(page.by_id("bundle-source").as_deref(), Some(url.as_str()));
    assert!(
        page.by_id("bundle-schedule")
            .unwrap()
            .starts_with("every 6 hour(s); next at"),
        "{}",
        page.body
    );
    assert_eq!(page.by_id("bundle-count").as_deref(), Some("2"));

    // the same name twice is refused, and the form keeps what was typed
    let r = post_form(
        &mut ops,
        "/bundles",
        &[("name", "Community URL"), ("url", &url)],
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body
            .contains("A bundle named \u{201c}Community URL\u{201d} already exists"),
        "{}",
        r.body
    );

    let list = ops.get("/bundles").await;
    assert!(list.body.contains(&format!("/bundles/{from_file}")));
    assert!(list.body.contains("Community file") && list.body.contains("Community URL"));
    let audit = bundle_actions(&app).await;
    assert_eq!(
        audit
            .iter()
            .filter(|(a, _, _)| a == "bundle.import")
            .count(),
        2,
        "{audit:?}"
    );
    assert!(audit[1].2.contains(&url), "{audit:?}");
}

#[tokio::test]
async fn a_signed_bundle_is_accepted_only_from_its_configured_signer() {
    let app = TestApp::spawn().await;
    let mut ops = operator(&app).await;
    ops.get("/bundles").await;

    // signed by somebody else
    let r = post_form(
        &mut ops,
        "/bundles",
        &[("name", "Signed")],
        &[
            ("file", file("impostor-a.p7b")),
            ("signer", file("publisher.pem")),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body
            .contains("the bundle is signed by CN=Impostor, not by the configured signer"),
        "{}",
        r.body
    );
    // not signed at all
    let r = post_form(
        &mut ops,
        "/bundles",
        &[("name", "Signed")],
        &[("file", file("a.p7b")), ("signer", file("publisher.pem"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body
            .contains("the bundle is not signed, but a signer is configured"),
        "{}",
        r.body
    );
    assert!(store::list(&app.state.db).await.unwrap().is_empty());

    // the right signer
    let r = post_form(
        &mut ops,
        "/bundles",
        &[("name", "Signed")],
        &[
            ("file", file("signed-a.p7b")),
            ("signer", file("publisher.pem")),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = ops.get(&r.location()).await;
    assert!(
        page.by_id("bundle-signer")
            .unwrap()
            .contains("CN=Bundle Publisher"),
        "{}",
        page.body
    );
    assert_eq!(page.by_id("bundle-count").as_deref(), Some("2"));

    // the signer is kept: a replacement must be signed by it too
    let id = bundle_id(&r.location());
    let r = post_form(
        &mut ops,
        &format!("/bundles/{id}"),
        &[],
        &[("file", file("b.p7b"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = ops.get(&r.location()).await;
    assert!(
        page.body.contains("failed, so its 2 anchor(s) were kept")
            && page.body.contains("the bundle is not signed"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Community Root A"));
    let r = post_form(
        &mut ops,
        &format!("/bundles/{id}"),
        &[],
        &[("file", file("signed-b.p7b"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = ops.get(&r.location()).await;
    assert!(page.body.contains("1 added, 1 removed"), "{}", page.body);
    assert!(page.by_id("refresh-failed").is_none());
}

#[tokio::test]
async fn garbage_empty_and_oversized_bundles_are_refused_and_change_nothing() {
    // between the two-anchor bundles (about 2 KB) and the eight-anchor one
    let app = TestApp::spawn_with(|c| c.bundle_max_bytes = 3000).await;
    assert!(file("a.p7b").len() < 3000 && file("big.p7b").len() > 3000);
    let (files, base) = serve().await;
    files.put("big.p7b", file("big.p7b"));
    // the same bundle over plain HTTP, unsigned: refused before anything is fetched
    let (plain, plain_port) = Files::serve().await;
    plain.put("a.p7b", file("a.p7b"));
    let reader = reader(&app);
    let db = &app.state.db;
    let actor = Actor::system();
    let now = app.now();
    let cases = [
        (
            import("Garbage", None, Some("garbage.bin"), None),
            "this is not a trust bundle",
        ),
        (
            import("Empty", None, Some("empty.p7b"), None),
            "the bundle holds no certificate",
        ),
        (
            import("Big", None, Some("big.p7b"), None),
            "more than the 3000 bytes allowed",
        ),
        (
            import("Big URL", Some(format!("{base}/big.p7b")), None, None),
            "sent more than 3000 bytes",
        ),
        (
            import("Missing", Some(format!("{base}/missing.p7b")), None, None),
            "answered 404",
        ),
        (
            import(
                "Plain HTTP",
                Some(format!("http://127.0.0.1:{plain_port}/a.p7b")),
                None,
                None,
            ),
            "over plain http:// could be altered",
        ),
    ];
    for (new, expected) in cases {
        let name = new.name.clone();
        let why = directmail::pki::bundles::import(db, &reader, new, now, &actor)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            why.starts_with("The bundle was not imported: ") && why.contains(expected),
            "{name}: {why}"
        );
    }

    // the console says the same in a sentence
    let mut ops = operator(&app).await;
    ops.get("/bundles").await;
    let r = post_form(
        &mut ops,
        "/bundles",
        &[("name", "Garbage")],
        &[("file", b"not a bundle at all".to_vec())],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body
            .contains("The bundle was not imported: this is not a trust bundle"),
        "{}",
        r.body
    );

    assert!(store::list(db).await.unwrap().is_empty());
    assert!(bundle_actions(&app).await.is_empty());
    assert_eq!(plain.hits("a.p7b"), 0);
}

#[tokio::test]
async fn a_refresh_shows_what_changed_and_a_failed_refresh_keeps_the_anchors() {
    let app = TestApp::spawn().await;
    let (files, base) = serve().await;
    files.put("bundle.p7b", file("a.p7b"));
    let mut ops = operator(&app).await;
    ops.get("/bundles").await;
    let r = post_form(
        &mut ops,
        "/bundles",
        &[
            ("name", "Community"),
            ("url", &format!("{base}/bundle.p7b")),
            ("refresh_hours", "24"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let id = bundle_id(&r.location());
    let page = ops.get(&r.location()).await;

    // the publisher drops Root A and adds a root that expires in 10 days
    files.put("bundle.p7b", file("b.p7b"));
    let r = ops.post(&format!("/bundles/{id}/refresh"), &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page_after = ops.get(&format!("/bundles/{id}")).await;
    assert!(
        page_after.body.contains(
            "Refreshed \u{201c}Community\u{201d}: 1 added, 1 removed, 1 expiring within 30 days; 2 anchor(s) now."
        ),
        "{}",
        page_after.body
    );
    let newest = page_after
        .body
        .split("<li class=\"refresh\">")
        .nth(1)
        .unwrap();
    assert!(
        newest.contains("class=\"added\"><li>CN=Expiring Root"),
        "{newest}"
    );
    assert!(
        newest.contains("class=\"removed\"><li>CN=Community Root A"),
        "{newest}"
    );
    assert!(
        newest.contains("class=\"expiring\"><li>CN=Expiring Root"),
        "{newest}"
    );
    assert!(page_after.body.contains("Valid — expires in"));
    assert!(!page.body.contains("Expiring Root"));

    // a failed refresh (not a bundle) keeps the set, says why, and is recorded
    files.put("bundle.p7b", b"<html>maintenance</html>".to_vec());
    let r = ops.post(&format!("/bundles/{id}/refresh"), &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = ops.get(&format!("/bundles/{id}")).await;
    assert!(
        page.body
            .contains("failed, so its 2 anchor(s) were kept: this is not a trust bundle"),
        "{}",
        page.body
    );
    assert!(page.by_id("refresh-failed").is_some());
    assert_eq!(page.by_id("bundle-count").as_deref(), Some("2"));
    let subjects = |anchors: Vec<store::BundleAnchor>| {
        anchors.into_iter().map(|a| a.subject).collect::<Vec<_>>()
    };
    assert_eq!(
        subjects(store::anchors(&app.state.db, id).await.unwrap()),
        ["CN=Community Root B", "CN=Expiring Root"]
    );

    // the schedule: nothing is due yet; a day later the refresh runs once, even if
    // two instances try at the same moment, and an unreachable publisher is recorded
    let reader = reader(&app);
    let db = &app.state.db;
    assert_eq!(
        directmail::pki::bundles::refresh_due(db, &reader, app.now())
            .await
            .unwrap(),
        0
    );
    files.remove("bundle.p7b");
    let later = app.now() + 25 * 3600;
    let (one, two) = tokio::join!(
        directmail::pki::bundles::refresh_due(db, &reader, later),
        directmail::pki::bundles::refresh_due(db, &reader, later)
    );
    assert_eq!(one.unwrap() + two.unwrap(), 1);
    let bundle = store::get(db, id).await.unwrap().unwrap();
    assert!(
        bundle
            .last_error
            .as_deref()
            .unwrap()
            .contains("answered 404"),
        "{bundle:?}"
    );
    assert_eq!(bundle.anchor_count, 2);
    // a failure is retried within the hour, not a day later
    assert!(bundle.next_refresh_at.unwrap() <= later + 3600);
    files.put("bundle.p7b", file("a.p7b"));
    assert_eq!(
        directmail::pki::bundles::refresh_due(db, &reader, later + 3600)
            .await
            .unwrap(),
        1
    );
    let bundle = store::get(db, id).await.unwrap().unwrap();
    assert!(bundle.last_error.is_none());
    assert_eq!(bundle.next_refresh_at, Some(later + 3600 + 24 * 3600));
    assert_eq!(
        subjects(store::anchors(db, id).await.unwrap()),
        ["CN=Community Root A", "CN=Community Root B"]
    );

    let audit = bundle_actions(&app).await;
    let refreshes: Vec<&str> = audit
        .iter()
        .filter(|(a, _, _)| a == "bundle.refresh")
        .map(|(_, _, d)| d.as_str())
        .collect();
    assert_eq!(refreshes.len(), 4, "{audit:?}");
    assert!(
        refreshes[0].starts_with("+1 \u{2212}1, 1 expiring"),
        "{refreshes:?}"
    );
    assert!(refreshes[1].starts_with("failed: this is not a trust bundle"));
    assert!(refreshes[2].starts_with("failed:") && refreshes[2].contains("404"));
    assert!(refreshes[3].starts_with("+1 \u{2212}1, 0 expiring"));
}

/// Our domain with its own certificate (from "Our CA"), trusting nobody yet.
async fn receiving_domain(app: &TestApp) -> orgs::Domain {
    app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let domain = orgs::domain_by_name(&app.state.db, "direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    directmail::pki::import_certificate(
        &app.state.db,
        &app.state.secret,
        None,
        &domain,
        None,
        KeyFile::Pem {
            certs: file("ours.pem"),
            key: file("ours.key"),
        },
        app.now(),
        &Actor::system(),
    )
    .await
    .unwrap();
    domain
}

#[tokio::test]
async fn a_bundle_assigned_for_receiving_makes_its_senders_trusted() {
    let app = TestApp::spawn().await;
    let domain = receiving_domain(&app).await;
    let message = crate::revocation::message(pki(), "sender", "dr.smith@direct.sender.test", false);
    let fetcher = Fetcher::new(
        Duration::from_secs(2),
        directmail_net::Policy::everything(),
        &[],
    )
    .unwrap();
    let judge = || async {
        directmail::pki::judge_inbound(
            &app.state.db,
            &app.state.secret,
            &fetcher,
            &domain,
            Arc::new(message.clone()),
            app.now(),
        )
        .await
        .unwrap()
        .verdict
    };
    assert_eq!(judge().await.code, ReasonCode::UntrustedAnchor);

    let (bundle, _) = directmail::pki::bundles::import(
        &app.state.db,
        &reader(&app),
        import("Community", None, Some("a.p7b"), None),
        app.now(),
        &Actor::system(),
    )
    .await
    .unwrap();
    // imported but not assigned, or assigned for sending only: still not trusted
    assert_eq!(judge().await.code, ReasonCode::UntrustedAnchor);
    let mut ops = operator(&app).await;
    ops.get(&format!("/bundles/{}", bundle.id)).await;
    let domain_field = domain.id.to_string();
    let r = ops
        .post(
            &format!("/bundles/{}/assign", bundle.id),
            &[("domain", &domain_field), ("uses", "sending")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(judge().await.code, ReasonCode::UntrustedAnchor);

    let r = ops
        .post(
            &format!("/bundles/{}/assign", bundle.id),
            &[("domain", &domain_field), ("uses", "receiving")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = ops.get(&r.location()).await;
    assert!(
        page.body.contains(
            "direct.lakeside.test now uses \u{201c}Community\u{201d} for receiving only."
        ),
        "{}",
        page.body
    );
    let verdict = judge().await;
    assert_eq!(verdict.code, ReasonCode::Trusted, "{}", verdict.detail);

    // the domain's page shows what it uses
    let org = directmail::store::orgs::by_name(&app.state.db, "Lakeside Clinic")
        .await
        .unwrap()
        .unwrap();
    let page = ops
        .get(&format!("/orgs/{}/domains/{}", org.id, domain.id))
        .await;
    let table = page.body.split("id=\"domain-bundle-list\"").nth(1).unwrap();
    assert!(
        table.contains(&format!(
            "<a href=\"/bundles/{}\">Community</a></td><td>Yes</td><td>No</td>",
            bundle.id
        )),
        "{table}"
    );

    // removing the bundle takes its trust away
    let r = ops
        .post(&format!("/bundles/{}/remove", bundle.id), &[])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(judge().await.code, ReasonCode::UntrustedAnchor);
    let actions: Vec<String> = bundle_actions(&app)
        .await
        .into_iter()
        .map(|(a, _, d)| format!("{a} {d}"))
        .collect();
    assert_eq!(
        actions[1..],
        [
            "bundle.assign direct.lakeside.test: sending".to_owned(),
            "bundle.assign direct.lakeside.test: receiving".to_owned(),
            "bundle.remove 2 anchors; was used by direct.lakeside.test (receiving)".to_owned(),
        ]
    );
}

#[tokio::test]
async fn a_bundle_assigned_for_sending_lets_discovery_accept_its_recipients() {
    let (app, dns, _) = TestApp::spawn_with_dns().await;
    // another HISP's CA, trusted by nobody here until its bundle is used for sending
    let other = DevCa::generate("Elsewhere CA", SystemTime::now()).unwrap();
    let who = other
        .issue_address("dr.who@direct.elsewhere.test", SystemTime::now())
        .unwrap();
    let mut records = Records::new();
    records
        .add_cert(
            "dr.who@direct.elsewhere.test",
            &who.certificate().to_der().unwrap(),
            300,
        )
        .unwrap();
    dns.set_records(records);
    let dir = app.data_dir.path();
    let (ca_pem, _) = other.to_pem().unwrap();
    std::fs::write(dir.join("elsewhere.pem"), ca_pem).unwrap();
    let out = Command::new("openssl")
        .args([
            "crl2pkcs7",
            "-nocrl",
            "-certfile",
            "elsewhere.pem",
            "-outform",
            "DER",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());

    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    let refused = check(&mut ana, "dr.who@direct.elsewhere.test").await;
    assert_eq!(refused["ok"], false, "{refused}");

    let mut ops = operator(&app).await;
    ops.get("/bundles").await;
    let r = post_form(
        &mut ops,
        "/bundles",
        &[("name", "Elsewhere")],
        &[("file", out.stdout)],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let id = bundle_id(&r.location());
    let domain = orgs::domain_by_name(&app.state.db, "direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    let domain_field = domain.id.to_string();
    // for receiving only, recipients are still not accepted
    ops.post(
        &format!("/bundles/{id}/assign"),
        &[("domain", &domain_field), ("uses", "receiving")],
    )
    .await;
    app.state.discovery.clear_cache();
    let refused = check(&mut ana, "dr.who@direct.elsewhere.test").await;
    assert_eq!(refused["ok"], false, "{refused}");

    // for sending: accepted at once (what discovery remembered is forgotten)
    let r = ops
        .post(
            &format!("/bundles/{id}/assign"),
            &[("domain", &domain_field), ("uses", "both")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let found = check(&mut ana, "dr.who@direct.elsewhere.test").await;
    assert_eq!(found["ok"], true, "{found}");
    assert_eq!(found["note"], "certificate found via DNS");
    dns.shutdown().await;
}

#[tokio::test]
async fn only_operators_reach_the_bundle_pages() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(Some(&org), "boss@lakeside.test", Role::OrgAdmin)
        .await;
    app.user(Some(&org), "nurse@lakeside.test", Role::Member)
        .await;
    let (bundle, _) = directmail::pki::bundles::import(
        &app.state.db,
        &reader(&app),
        import("Community", None, Some("a.p7b"), None),
        app.now(),
        &Actor::system(),
    )
    .await
    .unwrap();
    let id = bundle.id;

    for who in ["boss@lakeside.test", "nurse@lakeside.test"] {
        let mut b = app.signed_in(who).await;
        for page in ["/bundles".to_owned(), format!("/bundles/{id}")] {
            assert_eq!(
                b.get(&page).await.status,
                StatusCode::FORBIDDEN,
                "{who} {page}"
            );
        }
        b.get("/").await;
        for action in ["refresh", "remove"] {
            let r = b.post(&format!("/bundles/{id}/{action}"), &[]).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{who} {action}");
        }
        let r = b
            .post(
                &format!("/bundles/{id}/assign"),
                &[("domain", "1"), ("uses", "both")],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{who} assign");
        let r = post_form(
            &mut b,
            "/bundles",
            &[("name", "Mine")],
            &[("file", file("a.p7b"))],
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{who} import");
    }
    let mut anonymous = app.browser();
    let r = anonymous.get("/bundles").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.location().starts_with("/login"));

    // an operator's form without the CSRF token changes nothing
    let mut ops = operator(&app).await;
    ops.get(&format!("/bundles/{id}")).await;
    let r = ops
        .post_raw(&format!("/bundles/{id}/remove"), String::new())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(store::get(&app.state.db, id).await.unwrap().is_some());
    // nor does anything above
    assert_eq!(store::list(&app.state.db).await.unwrap().len(), 1);
    assert!(
        store::assignments_of_bundle(&app.state.db, id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(bundle_actions(&app).await.len(), 1);
    // the operator sees it; a bundle that does not exist is 404
    assert_eq!(
        ops.get(&format!("/bundles/{id}")).await.status,
        StatusCode::OK
    );
    assert_eq!(ops.get("/bundles/9999").await.status, StatusCode::NOT_FOUND);
}

/// `directmail admin bundle <line>` on the test's database with a 5000-byte bundle
/// limit (`line` split at spaces: names and paths here have none).
async fn bundle_cli(app: &TestApp, line: &str) -> Output {
    let mut args = vec!["admin", "bundle"];
    args.extend(line.split_whitespace());
    let roots = crate::helpers::test_https()
        .ca_pem
        .to_str()
        .unwrap()
        .to_owned();
    // the loopback bundle server: an address the operator allows explicitly
    args.extend(["--allow-private-networks", "127.0.0.1"]);
    args.extend(["--bundle-max-bytes", "5000", "--https-roots"]);
    args.push(&roots);
    crate::cli::directmail(app, &args).await
}

/// The one sentence on stderr of a command that failed.
fn failure(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");
    err
}

/// The stdout of a command that succeeded.
fn success(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// the CLI runs as a blocking child process: the loopback bundle server needs a thread
// of its own meanwhile
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_lists_refreshes_assigns_and_removes_bundles() {
    let app = TestApp::spawn().await;
    app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let (files, base) = serve().await;
    files.put("signed.p7b", file("signed-a.p7b"));
    let p = |name: &str| path(name).to_str().unwrap().to_owned();
    assert!(file("signed-a.p7b").len() < 5000 && file("big.p7b").len() > 5000);
    let (publisher, impostor) = (p("publisher.pem"), p("impostor-a.p7b"));

    let added = json(&bundle_cli(
        &app,
        &format!(
            "add --name Community --url {base}/signed.p7b --signer {publisher} --refresh-hours 12 --json"
        ),
    ).await);
    assert_eq!(added["name"], "Community");
    assert_eq!(added["refresh"]["anchor_count"], 2);
    let text = success(&bundle_cli(&app, &format!("add --name Local --file {}", p("b.p7b"))).await);
    assert!(
        text.starts_with(
            "Imported the bundle \u{201c}Local\u{201d}: +2 \u{2212}0, 1 expiring within 30 days (2 anchors)."
        ),
        "{text}"
    );

    // refused, with one sentence each, and nothing stored
    for (line, expected) in [
        (
            format!("add --name Wrong --file {impostor} --signer {publisher}"),
            "signed by CN=Impostor, not by the configured signer",
        ),
        (
            format!("add --name Big --file {}", p("big.p7b")),
            "more than the 5000 bytes allowed",
        ),
        (
            format!("add --name Empty --file {}", p("empty.p7b")),
            "holds no certificate",
        ),
        (
            "assign Nope --domain direct.lakeside.test --for both".to_owned(),
            "There is no trust bundle named \u{201c}Nope\u{201d}",
        ),
        (
            "refresh Local".to_owned(),
            "was imported from a file: give the new file",
        ),
    ] {
        let err = failure(&bundle_cli(&app, &line).await);
        assert!(err.contains(expected), "{line}: {err}");
    }

    // a running server notices the CLI's changes to the anchors for sending
    let mut watch = SendingAnchorsWatch::default();
    assert!(!watch.changed(&app.state.db).await.unwrap());
    let assigned = json(
        &bundle_cli(
            &app,
            "assign Community --domain direct.lakeside.test --for receiving --json",
        )
        .await,
    );
    assert_eq!(assigned["receiving"], true);
    assert_eq!(assigned["sending"], false);
    assert!(!watch.changed(&app.state.db).await.unwrap());
    let assigned = json(
        &bundle_cli(
            &app,
            "assign Community --domain direct.lakeside.test --for both --json",
        )
        .await,
    );
    assert_eq!(assigned["receiving"], true);
    assert_eq!(assigned["sending"], true);
    assert!(watch.changed(&app.state.db).await.unwrap());
    assert!(!watch.changed(&app.state.db).await.unwrap());

    // a refresh from the URL: the publisher now serves another set, signed
    files.put("signed.p7b", file("signed-b.p7b"));
    let refreshed = success(&bundle_cli(&app, "refresh Community").await);
    assert!(
        refreshed.contains("+1 \u{2212}1, 1 expiring"),
        "{refreshed}"
    );
    assert!(refreshed.contains("added\tCN=Expiring Root"), "{refreshed}");
    assert!(
        refreshed.contains("removed\tCN=Community Root A"),
        "{refreshed}"
    );
    // the publisher's file replaced by an unsigned one: refused, the set kept
    files.put("signed.p7b", file("a.p7b"));
    let err = failure(&bundle_cli(&app, "refresh Community").await);
    assert!(
        err.contains("failed, so its 2 anchor(s) were kept: the bundle is not signed"),
        "{err}"
    );

    let list = json(&bundle_cli(&app, "list --json").await);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let community = list.iter().find(|b| b["name"] == "Community").unwrap();
    assert_eq!(community["anchors"], 2);
    assert_eq!(community["signed"], true);
    assert_eq!(community["refresh_hours"], 12);
    let last_error = community["last_error"].as_str().unwrap();
    assert!(last_error.contains("not signed"), "{last_error}");
    assert_eq!(community["domains"][0]["domain"], "direct.lakeside.test");
    let text = success(&bundle_cli(&app, "list").await);
    assert!(
        text.contains("used by direct.lakeside.test (both)"),
        "{text}"
    );
    assert!(text.contains("refresh FAILED"), "{text}");

    let removed = json(&bundle_cli(&app, "remove Community --json").await);
    assert_eq!(removed["removed"], true);
    assert!(watch.changed(&app.state.db).await.unwrap());
    assert_eq!(store::list(&app.state.db).await.unwrap().len(), 1);
    let domain = orgs::domain_by_name(&app.state.db, "direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    let assigned = store::assignments_of_domain(&app.state.db, domain.id).await;
    assert!(assigned.unwrap().is_empty());
    let actions: Vec<String> = bundle_actions(&app)
        .await
        .into_iter()
        .map(|(a, o, _)| format!("{a} {o}"))
        .collect();
    assert_eq!(
        actions,
        [
            "bundle.import Community",
            "bundle.import Local",
            "bundle.assign Community",
            "bundle.assign Community",
            "bundle.refresh Community",
            "bundle.refresh Community",
            "bundle.remove Community",
        ]
    );
}
