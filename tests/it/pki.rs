//! Importing keys, certificates and trust anchors (console and CLI), keys sealed at
//! rest, and the key-encryption key check. Test PKI material comes from the real
//! `openssl` command line.

use std::path::{Path, PathBuf};
use std::process::Command;

use directmail::domain::Role;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};

use crate::cli::directmail;
use crate::helpers::TestApp;

/// A throwaway CA with end-entity certificates, made by `openssl` in `dir`.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let script = r#"set -e
ext() { printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=%s\n' "$1"; }
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/O=Test HISP/CN=Test Anchor" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/O=Other HISP/CN=Other Anchor" -keyout other-ca.key -out other-ca.pem 2>/dev/null
issue() { # name san bits
  openssl req -newkey rsa:$3 -nodes -subj "/CN=$1" -keyout $1.key -out $1.csr 2>/dev/null
  ext "$2" > $1.ext
  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 20 -sha256 -extfile $1.ext -out $1.pem 2>/dev/null
}
issue domain DNS:direct.lakeside.test 2048
issue address email:dr.lee@direct.lakeside.test 2048
issue weak DNS:direct.lakeside.test 1024
issue elsewhere DNS:direct.elsewhere.test 2048
openssl pkcs12 -export -in domain.pem -inkey domain.key -certfile ca.pem -passout pass:p12-secret-pw -out domain.p12 2>/dev/null
printf 'p12-secret-pw\n' > p12.pw
printf 'wrong\n' > wrong.pw
openssl crl2pkcs7 -nocrl -certfile ca.pem -certfile other-ca.pem -outform DER -out bundle.p7b
"#;
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).expect("pki file")
    }
}

fn ok_json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[tokio::test]
async fn scripts_import_a_domain_key_and_anchors_and_the_key_is_sealed_at_rest() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let pki = Pki::new(app.data_dir.path());
    let cert = ok_json(
        &directmail(
            &app,
            &[
                "admin",
                "cert",
                "import",
                "--domain",
                "direct.lakeside.test",
                "--cert",
                &pki.path("domain.pem"),
                "--key",
                &pki.path("domain.key"),
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(cert["subject"], "CN=domain");
    let fingerprint = cert["fingerprint"].as_str().unwrap().to_owned();
    let address = ok_json(
        &directmail(
            &app,
            &[
                "admin",
                "cert",
                "import",
                "--domain",
                "direct.lakeside.test",
                "--address",
                "dr.lee@direct.lakeside.test",
                "--cert",
                &pki.path("address.pem"),
                "--key",
                &pki.path("address.key"),
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(address["address"], "dr.lee@direct.lakeside.test");

    // the private key is stored sealed, never as PEM
    let sealed: Vec<String> = sqlx::query_scalar("select key_sealed from domain_certificates")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(sealed.len(), 2);
    let key_pem = String::from_utf8(pki.read("domain.key")).unwrap();
    let key_body: String = key_pem.lines().nth(1).unwrap().to_owned();
    for s in &sealed {
        assert!(s.starts_with("v1:") && !s.contains("PRIVATE KEY") && !s.contains(&key_body));
    }
    // and loads back into working identities
    let domain = directmail::store::orgs::domain_by_name(&app.state.db, "direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    let ids = directmail::pki::identities(&app.state.db, &app.state.secret, domain.id)
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert!(
        ids.iter()
            .any(|i| directmail_smime::fingerprint_sha256(i.certificate()) == fingerprint)
    );

    // anchors: PEM, then a .p7b bundle holding it and another
    let added = ok_json(
        &directmail(
            &app,
            &[
                "admin",
                "anchor",
                "add",
                "--domain",
                "direct.lakeside.test",
                &pki.path("ca.pem"),
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(added["added"].as_array().unwrap().len(), 1);
    let bundle = ok_json(
        &directmail(
            &app,
            &[
                "admin",
                "anchor",
                "add",
                "--domain",
                "direct.lakeside.test",
                &pki.path("bundle.p7b"),
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(bundle["added"].as_array().unwrap().len(), 1, "{bundle}");
    assert_eq!(bundle["already"].as_array().unwrap().len(), 1);
    let anchors = directmail::pki::anchors(&app.state.db, domain.id)
        .await
        .unwrap();
    assert_eq!(anchors.len(), 2);
    let list = ok_json(
        &directmail(
            &app,
            &[
                "admin",
                "anchor",
                "list",
                "--domain",
                "direct.lakeside.test",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(list.as_array().unwrap().len(), 2);
    let certs = ok_json(
        &directmail(
            &app,
            &[
                "admin",
                "cert",
                "list",
                "--domain",
                "direct.lakeside.test",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(certs.as_array().unwrap().len(), 2);
    assert!(!certs.to_string().contains("PRIVATE"));

    let entries = directmail::audit::list(&app.state.db, &Default::default(), 50)
        .await
        .unwrap();
    assert!(
        entries
            .iter()
            .filter(|e| e.action == "cert.import" && e.org_id == Some(org.id))
            .count()
            == 2
    );
    assert!(entries.iter().any(|e| e.action == "anchor.add"));
}

#[tokio::test]
async fn imports_that_do_not_hold_together_are_refused_with_the_reason() {
    let app = TestApp::spawn().await;
    app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let pki = Pki::new(app.data_dir.path());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--cert".into(),
                pki.path("domain.pem"),
                "--key".into(),
                pki.path("address.key"),
            ],
            "does not match",
        ),
        (
            vec![
                "--cert".into(),
                pki.path("weak.pem"),
                "--key".into(),
                pki.path("weak.key"),
            ],
            "at least 2048",
        ),
        (
            vec![
                "--cert".into(),
                pki.path("elsewhere.pem"),
                "--key".into(),
                pki.path("elsewhere.key"),
            ],
            "not bound to direct.lakeside.test",
        ),
        (
            vec![
                "--cert".into(),
                pki.path("domain.key"),
                "--key".into(),
                pki.path("domain.key"),
            ],
            "No certificate",
        ),
        (
            vec![
                "--cert".into(),
                pki.path("domain.pem"),
                "--key".into(),
                pki.path("domain.pem"),
            ],
            "No private key",
        ),
        (
            vec![
                "--p12".into(),
                pki.path("domain.p12"),
                "--password-file".into(),
                pki.path("wrong.pw"),
            ],
            "password is wrong",
        ),
        (vec!["--cert".into(), pki.path("domain.pem")], "--key"),
        (
            vec![
                "--cert".into(),
                "/nonexistent.pem".into(),
                "--key".into(),
                pki.path("domain.key"),
            ],
            "cannot read",
        ),
    ];
    for (extra, expect) in cases {
        let mut args: Vec<&str> = vec![
            "admin",
            "cert",
            "import",
            "--domain",
            "direct.lakeside.test",
        ];
        args.extend(extra.iter().map(String::as_str));
        let out = directmail(&app, &args).await;
        assert!(!out.status.success(), "{extra:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{extra:?}: {stderr}");
    }
    // the address must be on the domain, and the domain must exist
    let out = directmail(
        &app,
        &[
            "admin",
            "cert",
            "import",
            "--domain",
            "direct.lakeside.test",
            "--address",
            "x@other.test",
            "--cert",
            &pki.path("address.pem"),
            "--key",
            &pki.path("address.key"),
        ],
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not on the domain"));
    let out = directmail(
        &app,
        &[
            "admin",
            "anchor",
            "add",
            "--domain",
            "nowhere.test",
            &pki.path("ca.pem"),
        ],
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("no domain"));
    let out = directmail(
        &app,
        &[
            "admin",
            "anchor",
            "add",
            "--domain",
            "direct.lakeside.test",
            &pki.path("domain.key"),
        ],
    )
    .await;
    assert!(!out.status.success());
    // PKCS#12 with the right password works
    let ok = directmail(
        &app,
        &[
            "admin",
            "cert",
            "import",
            "--domain",
            "direct.lakeside.test",
            "--p12",
            &pki.path("domain.p12"),
            "--password-file",
            &pki.path("p12.pw"),
        ],
    )
    .await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // nothing half-imported by the failures
    let n: i64 = sqlx::query_scalar("select count(*) from domain_certificates")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn an_operator_imports_keys_and_anchors_in_the_console() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(None, "op@hisp.test", Role::Operator).await;
    app.user(Some(&org), "boss@direct.lakeside.test", Role::OrgAdmin)
        .await;
    let pki = Pki::new(app.data_dir.path());
    let domain = directmail::store::orgs::domain_by_name(&app.state.db, "direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    let page_path = format!("/orgs/{}/domains/{}", org.id, domain.id);
    let mut op = app.signed_in("op@hisp.test").await;
    let page = op.get(&page_path).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("No certificate yet"));

    let client = op.client.clone();
    let upload = |form: Form, path: String, csrf: String| {
        let client = client.clone();
        let url = app.url(&path);
        async move {
            client
                .post(url)
                .multipart(form.text("_csrf", csrf))
                .send()
                .await
                .unwrap()
        }
    };
    let form = Form::new()
        .text("address", "")
        .part(
            "cert",
            Part::bytes(pki.read("domain.pem")).file_name("domain.pem"),
        )
        .part(
            "key",
            Part::bytes(pki.read("domain.key")).file_name("domain.key"),
        );
    let r = upload(form, format!("{page_path}/certificates"), op.csrf.clone()).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = op.get(&page_path).await;
    assert!(page.body.contains("CN=domain") && page.body.contains("Valid"));
    assert!(!page.body.contains("PRIVATE KEY"));

    // a refused import says why and keeps the address typed
    let form = Form::new()
        .text("address", "dr.lee@direct.lakeside.test")
        .part(
            "cert",
            Part::bytes(pki.read("address.pem")).file_name("address.pem"),
        )
        .part(
            "key",
            Part::bytes(pki.read("domain.key")).file_name("domain.key"),
        );
    let r = upload(form, format!("{page_path}/certificates"), op.csrf.clone()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("does not match the certificate")
            && body.contains("dr.lee@direct.lakeside.test"),
        "{body}"
    );

    // anchors from a bundle, listed with their expiry; an expired anchor is flagged
    let form = Form::new().part(
        "anchor",
        Part::bytes(pki.read("bundle.p7b")).file_name("bundle.p7b"),
    );
    let r = upload(form, format!("{page_path}/anchors"), op.csrf.clone()).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = op.get(&page_path).await;
    assert!(page.body.contains("Test Anchor") && page.body.contains("Other Anchor"));
    app.state.clock.advance(40 * 86_400);
    let mut op = app.signed_in("op@hisp.test").await;
    let page = op.get(&page_path).await;
    assert!(page.body.contains("Expired"));
    // remove one
    let id: i64 = sqlx::query_scalar("select min(id) from trust_anchors")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    let r = op
        .post(&format!("{page_path}/anchors/{id}/remove"), &[])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let n: i64 = sqlx::query_scalar("select count(*) from trust_anchors")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);

    // an upload without the CSRF token changes nothing
    let form = Form::new().part(
        "anchor",
        Part::bytes(pki.read("ca.pem")).file_name("ca.pem"),
    );
    let r = op
        .client
        .post(app.url(&format!("{page_path}/anchors")))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // office managers and members cannot manage keys
    let mut boss = app.signed_in("boss@direct.lakeside.test").await;
    assert_eq!(boss.get(&page_path).await.status, StatusCode::FORBIDDEN);
    let form = Form::new().part(
        "anchor",
        Part::bytes(pki.read("ca.pem")).file_name("ca.pem"),
    );
    let r = boss
        .client
        .post(app.url(&format!("{page_path}/anchors")))
        .multipart(form.text("_csrf", boss.csrf.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let n: i64 = sqlx::query_scalar("select count(*) from trust_anchors")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_different_key_encryption_key_is_refused_at_start_up() {
    let app = TestApp::spawn().await;
    let out = Command::new(env!("CARGO_BIN_EXE_directmail"))
        .env(
            "DIRECTMAIL_DATABASE_URL",
            app.config.database_url().as_str(),
        )
        .env("DIRECTMAIL_SECRET_KEY", "ab".repeat(32))
        .env("DIRECTMAIL_HTTP_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not the one this database's private keys were sealed with"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&"ab".repeat(32)),
        "the key is never printed"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_directmail"))
        .env("DIRECTMAIL_DATA_DIR", app.data_dir.path())
        .env("DIRECTMAIL_SECRET_KEY", "too-short")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("DIRECTMAIL_SECRET_KEY"));
}

#[tokio::test]
async fn a_new_portal_signs_and_encrypts_at_once_with_a_development_certificate() {
    let app = TestApp::spawn_with(|c| c.dev_pki = true).await;
    let domain = directmail::store::orgs::domain_by_name(&app.state.db, "direct.localhost")
        .await
        .unwrap()
        .unwrap();
    let certs = directmail::store::pki::certs_of_domain(&app.state.db, domain.id)
        .await
        .unwrap();
    assert_eq!(
        certs.len(),
        1,
        "first start issued the HISP domain a certificate"
    );
    assert!(
        certs[0].issuer.contains("not for production"),
        "{}",
        certs[0].issuer
    );
    let ids = directmail::pki::identities(&app.state.db, &app.state.secret, domain.id)
        .await
        .unwrap();
    let anchors = directmail::pki::anchors(&app.state.db, domain.id)
        .await
        .unwrap();
    assert_eq!(anchors.len(), 1, "the domain trusts the development CA");

    // a message from the domain to itself: sealed, then judged trusted
    let message = b"From: a@direct.localhost\r\nTo: b@direct.localhost\r\nSubject: hello\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@direct.localhost>\r\n\r\nHello.\r\n";
    let now = std::time::SystemTime::now();
    let recipient = directmail_smime::Recipient::new(ids[0].certificate().clone());
    let sealed =
        directmail_smime::seal(message, &ids[0], &[recipient], &Default::default(), now).unwrap();
    let trust = directmail_smime::TrustStore {
        anchors,
        intermediates: vec![],
        crls: vec![],
    };
    let verdict = directmail_smime::judge(&sealed, &ids, &trust, now);
    assert!(
        verdict.is_trusted(),
        "{:?}: {}",
        verdict.code,
        verdict.detail
    );

    // a second start issues nothing new; the CLI issues an address certificate and
    // prints the CA, which OpenSSL accepts as the issuer
    directmail::bootstrap::run(&app.state.db, &app.config, &app.state.secret, app.now())
        .await
        .unwrap();
    assert_eq!(
        directmail::store::pki::certs_of_domain(&app.state.db, domain.id)
            .await
            .unwrap()
            .len(),
        1
    );
    let issued = ok_json(
        &directmail(
            &app,
            &[
                "admin",
                "pki",
                "issue",
                "--domain",
                "direct.localhost",
                "--address",
                "dr.lee@direct.localhost",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(issued["address"], "dr.lee@direct.localhost");
    let ca = ok_json(&directmail(&app, &["admin", "pki", "ca", "--json"]).await);
    let dir = app.data_dir.path();
    std::fs::write(dir.join("dev-ca.pem"), ca["pem"].as_str().unwrap()).unwrap();
    let chain: String = sqlx::query_scalar(
        "select chain_pem from domain_certificates where address = 'dr.lee@direct.localhost'",
    )
    .fetch_one(&app.state.db.pool)
    .await
    .unwrap();
    std::fs::write(dir.join("lee.pem"), chain).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-purpose", "smimesign", "-CAfile"])
        .arg(dir.join("dev-ca.pem"))
        .arg(dir.join("lee.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // still one anchor: the CA was already trusted
    assert_eq!(
        directmail::pki::anchors(&app.state.db, domain.id)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn trust_policies_are_set_in_the_console_and_from_scripts() {
    let app = TestApp::spawn().await;
    let org = app.org("Lakeside Clinic", "direct.lakeside.test").await;
    app.user(None, "op@hisp.test", Role::Operator).await;
    let domain = directmail::store::orgs::domain_by_name(&app.state.db, "direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    let policy = || directmail::store::orgs::crl_policy(&app.state.db, domain.id);
    assert_eq!(
        policy().await.unwrap(),
        directmail::store::orgs::CrlUnreachable::SoftFail
    );
    let mut op = app.signed_in("op@hisp.test").await;
    let page_path = format!("/orgs/{}/domains/{}", org.id, domain.id);
    assert!(
        op.get(&page_path)
            .await
            .body
            .contains("Deliver, and show that revocation was not checked")
    );
    let r = op
        .post(
            &format!("{page_path}/policy"),
            &[("unreachable_crl", "fail-closed")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        policy().await.unwrap(),
        directmail::store::orgs::CrlUnreachable::FailClosed
    );
    let r = op
        .post(
            &format!("{page_path}/policy"),
            &[("unreachable_crl", "whatever")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    ok_json(
        &directmail(
            &app,
            &[
                "admin",
                "domain",
                "policy",
                "direct.lakeside.test",
                "--unreachable-crl",
                "soft-fail",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(
        policy().await.unwrap(),
        directmail::store::orgs::CrlUnreachable::SoftFail
    );

    // recipient domains: OAEP unless set to PKCS#1 v1.5
    let kt = |d: &'static str| directmail::pki::key_transport_for(&app.state.db, d);
    assert_eq!(
        kt("old-hisp.test").await.unwrap(),
        directmail_smime::KeyTransport::RsaOaepSha256
    );
    ok_json(
        &directmail(
            &app,
            &[
                "admin",
                "domain",
                "remote",
                "Old-HISP.test",
                "--key-transport",
                "rsa-pkcs1v15",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(
        kt("old-hisp.test").await.unwrap(),
        directmail_smime::KeyTransport::RsaPkcs1v15
    );
    let out = directmail(
        &app,
        &[
            "admin",
            "domain",
            "remote",
            "x.test",
            "--key-transport",
            "des",
        ],
    )
    .await;
    assert!(!out.status.success());
}
