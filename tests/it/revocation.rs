//! Trust decisions that need the network: CRLs from distribution points and missing
//! intermediates from AIA, served by a real HTTP server on loopback; the messages
//! are made by the real `openssl` command line.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use directmail::pki::fetch::Fetcher;
use directmail::pki::{KeyFile, Revocation};
use directmail::store::orgs::{self, CrlUnreachable};
use directmail_smime::ReasonCode;

use crate::helpers::TestApp;

/// A file server on loopback that counts requests per path (also serves trust bundles).
#[derive(Clone, Default)]
pub(crate) struct Files {
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Files {
    pub(crate) async fn serve() -> (Files, u16) {
        let (files, app) = Files::router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (files, port)
    }

    /// The same over HTTPS, with the certificate every test portal trusts.
    pub(crate) async fn serve_https() -> (Files, u16) {
        let (files, app) = Files::router();
        (files, crate::helpers::serve_https(app).await)
    }

    fn router() -> (Files, axum::Router) {
        let files = Files::default();
        let app = axum::Router::new()
            .route("/{name}", axum::routing::get(get_file))
            .with_state(files.clone());
        (files, app)
    }

    pub(crate) fn put(&self, name: &str, bytes: Vec<u8>) {
        self.files.lock().unwrap().insert(name.to_owned(), bytes);
    }

    /// From now on `name` answers 404.
    pub(crate) fn remove(&self, name: &str) {
        self.files.lock().unwrap().remove(name);
    }

    pub(crate) fn hits(&self, name: &str) -> usize {
        self.hits.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

async fn get_file(
    State(files): State<Files>,
    UrlPath(name): UrlPath<String>,
) -> (StatusCode, Vec<u8>) {
    *files.hits.lock().unwrap().entry(name.clone()).or_default() += 1;
    match files.files.lock().unwrap().get(&name) {
        Some(bytes) => (StatusCode::OK, bytes.clone()),
        None => (StatusCode::NOT_FOUND, Vec::new()),
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A root, an intermediate run with `openssl ca`, leaf certificates whose CRL and
/// AIA point at `base` (or `dead` for the "lonely" one), one of them revoked.
fn make_pki(dir: &Path, base: &str, dead: &str) {
    let script = r#"set -e
export SAN=email:x@example.test CRLURL=$BASE/int.crl AIAURL=$BASE/int.cer
mkdir -p idb/newcerts; : > idb/index.txt; echo 01 > idb/serial; echo 01 > idb/crlnumber
cat > ca.cnf <<'EOF'
[ ca ]
default_ca = CA_default
[ CA_default ]
dir = ./idb
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
default_days = 30
default_crl_days = 7
policy = policy_any
unique_subject = no
copy_extensions = none
[ policy_any ]
commonName = supplied
[ leaf ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = $ENV::SAN
crlDistributionPoints = URI:$ENV::CRLURL
authorityInfoAccess = caIssuers;URI:$ENV::AIAURL
EOF
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=Test Root" -keyout root.key -out root.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=Test Intermediate" -keyout int.key -out int.csr 2>/dev/null
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' > int.ext
openssl x509 -req -in int.csr -CA root.pem -CAkey root.key -CAcreateserial -days 30 -sha256 -extfile int.ext -out int.pem 2>/dev/null
openssl x509 -in int.pem -outform DER -out int.cer
leaf() {
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout $1.key -out $1.csr 2>/dev/null
  SAN=$2 openssl ca -batch -notext -config ca.cnf -cert int.pem -keyfile int.key -in $1.csr -out $1.pem -extensions leaf 2>/dev/null
}
leaf sender email:dr.smith@direct.sender.test
leaf revoked email:dr.gone@direct.sender.test
leaf ours DNS:direct.lakeside.test
CRLURL=$DEAD/int.crl AIAURL=$DEAD/int.cer leaf lonely email:dr.alone@direct.sender.test
openssl ca -config ca.cnf -cert int.pem -keyfile int.key -revoke revoked.pem 2>/dev/null
openssl ca -config ca.cnf -cert int.pem -keyfile int.key -gencrl -out int.crl.pem 2>/dev/null
openssl crl -in int.crl.pem -outform DER -out int.crl
# the same list as version 1, as `openssl ca -gencrl` writes it without a crlnumber
# or crl_extensions
sed '/^crlnumber/d' ca.cnf > v1.cnf
openssl ca -config v1.cnf -cert int.pem -keyfile int.key -gencrl -out v1.crl.pem 2>/dev/null
openssl ca -config ca.cnf -cert int.pem -keyfile int.key -gencrl -crl_lastupdate 20200101000000Z -crl_nextupdate 20200108000000Z -out old.crl.pem 2>/dev/null
# another CA's list, and a list under the intermediate's name signed by another key
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=Other CA" -keyout other.key -out other.pem 2>/dev/null
openssl ca -config ca.cnf -cert other.pem -keyfile other.key -gencrl -out other.crl.pem 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=Test Intermediate" -keyout twin.key -out twin.pem 2>/dev/null
openssl ca -config ca.cnf -cert twin.pem -keyfile twin.key -gencrl -out twin.crl.pem 2>/dev/null
for c in v1 old other twin; do openssl crl -in $c.crl.pem -outform DER -out $c.crl; done
"#;
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("BASE", base)
        .env("DEAD", dead)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Direct message from `signer` (address `from`) to our domain, signed and
/// encrypted by `openssl cms`; `with_intermediate` includes the intermediate.
pub(crate) fn message(dir: &Path, signer: &str, from: &str, with_intermediate: bool) -> Vec<u8> {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let inner = format!(
        "From: {from}\r\nTo: front@direct.lakeside.test\r\nSubject: Referral\r\nMessage-ID: <{n}@direct.sender.test>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nPlease see the patient.\r\n"
    );
    let certfile: &[&str] = if with_intermediate {
        &["-certfile", "int.pem"]
    } else {
        &[]
    };
    sealed_by_openssl(dir, signer, &inner, certfile, from, "Direct secure message")
}

/// `entity` (a whole RFC 5322 message, or any MIME entity) signed by `signer` with
/// `openssl cms -sign` (`sign_extra`: more options, such as `-certfile`), then
/// encrypted to our domain with `openssl cms -encrypt`, whose outer headers carry
/// `outer_from` and `outer_subject` (unprotected, as on the wire).
pub(crate) fn sealed_by_openssl(
    dir: &Path,
    signer: &str,
    entity: &str,
    sign_extra: &[&str],
    outer_from: &str,
    outer_subject: &str,
) -> Vec<u8> {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let (input, signed, sealed) = (
        format!("e{n}.eml"),
        format!("e{n}.signed"),
        format!("e{n}.p7m"),
    );
    std::fs::write(dir.join(&input), entity).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (cert, key) = (format!("{signer}.pem"), format!("{signer}.key"));
    let mut sign = vec![
        "cms", "-sign", "-in", &input, "-signer", &cert, "-inkey", &key, "-md", "sha256",
    ];
    sign.extend_from_slice(sign_extra);
    sign.extend_from_slice(&["-out", &signed]);
    run(&sign);
    run(&[
        "cms",
        "-encrypt",
        "-in",
        &signed,
        "-aes256",
        "-from",
        outer_from,
        "-to",
        "front@direct.lakeside.test",
        "-subject",
        outer_subject,
        "-out",
        &sealed,
        "ours.pem",
    ]);
    std::fs::read(dir.join(sealed)).unwrap()
}

pub(crate) struct Setup {
    pub(crate) app: TestApp,
    pub(crate) files: Files,
    fetcher: Fetcher,
    pub(crate) domain: orgs::Domain,
}

pub(crate) async fn setup() -> Setup {
    setup_with(|_| {}, None).await
}

/// [`setup`] with the portal's configuration adjusted, and the "lonely" leaf's CRL
/// and AIA pointing at `dead` (a base URL) instead of a closed port.
pub(crate) async fn setup_with(
    adjust: impl FnOnce(&mut directmail::config::Config),
    dead: Option<String>,
) -> Setup {
    let app = TestApp::spawn_with(adjust).await;
    app.org("Lakeside Clinic", "direct.lakeside.test").await;
    let (files, port) = Files::serve().await;
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = app.data_dir.path().to_path_buf();
    make_pki(
        &dir,
        &format!("http://127.0.0.1:{port}"),
        &dead.unwrap_or_else(|| format!("http://127.0.0.1:{dead_port}")),
    );
    files.put("int.crl", std::fs::read(dir.join("int.crl")).unwrap());
    files.put("int.cer", std::fs::read(dir.join("int.cer")).unwrap());
    let domain = orgs::domain_by_name(&app.state.db, "direct.lakeside.test")
        .await
        .unwrap()
        .unwrap();
    let actor = directmail::audit::Actor::system();
    // only the leaf: the intermediate comes through its AIA
    directmail::pki::add_anchors(
        &app.state.db,
        &domain,
        &std::fs::read(dir.join("root.pem")).unwrap(),
        app.now(),
        &actor,
    )
    .await
    .unwrap();
    directmail::pki::import_certificate(
        &app.state.db,
        &app.state.secret,
        Some(&fetcher()),
        &domain,
        None,
        KeyFile::Pem {
            certs: std::fs::read(dir.join("ours.pem")).unwrap(),
            key: std::fs::read(dir.join("ours.key")).unwrap(),
        },
        app.now(),
        &actor,
    )
    .await
    .unwrap();
    Setup {
        fetcher: fetcher(),
        app,
        files,
        domain,
    }
}

/// A fetcher with an empty cache that may reach loopback.
fn fetcher() -> Fetcher {
    Fetcher::new(
        Duration::from_secs(2),
        directmail_net::Policy::everything(),
        &[],
    )
    .unwrap()
}

impl Setup {
    /// The same portal with an empty fetch cache.
    fn refetching(self) -> Setup {
        Setup {
            fetcher: fetcher(),
            ..self
        }
    }

    async fn judge(&self, message: Vec<u8>) -> directmail::pki::Judgement {
        directmail::pki::judge_inbound(
            &self.app.state.db,
            &self.app.state.secret,
            &self.fetcher,
            &self.domain,
            Arc::new(message),
            self.app.now(),
        )
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn a_signer_is_checked_against_its_crl_and_the_crl_is_cached() {
    let s = setup().await;
    let dir = s.app.data_dir.path();
    let j = s
        .judge(message(dir, "sender", "dr.smith@direct.sender.test", true))
        .await;
    assert_eq!(j.verdict.code, ReasonCode::Trusted, "{}", j.verdict.detail);
    assert_eq!(j.revocation, Revocation::Checked);
    assert!(
        j.steps.iter().any(|s| s.contains("int.crl: fetched")),
        "{:?}",
        j.steps
    );
    // the CRL is current until its nextUpdate: a second message does not fetch it again
    let j = s
        .judge(message(dir, "sender", "dr.smith@direct.sender.test", true))
        .await;
    assert!(j.verdict.is_trusted());
    assert_eq!(s.files.hits("int.crl"), 1);
}

#[tokio::test]
async fn a_revoked_signer_is_refused() {
    let s = setup().await;
    let j = s
        .judge(message(
            s.app.data_dir.path(),
            "revoked",
            "dr.gone@direct.sender.test",
            true,
        ))
        .await;
    assert_eq!(
        j.verdict.code,
        ReasonCode::SignerRevoked,
        "{}",
        j.verdict.detail
    );
    assert!(j.verdict.sentence().contains("revoked"));
}

#[tokio::test]
async fn a_missing_intermediate_is_fetched_through_aia() {
    let s = setup().await;
    // the import of the domain's own certificate fetched it once already
    let before = s.files.hits("int.cer");
    let j = s
        .judge(message(
            s.app.data_dir.path(),
            "sender",
            "dr.smith@direct.sender.test",
            false,
        ))
        .await;
    assert_eq!(
        j.verdict.code,
        ReasonCode::Trusted,
        "{} {:?}",
        j.verdict.detail,
        j.steps
    );
    assert!(
        j.steps
            .iter()
            .any(|s| s.starts_with("AIA ") && s.contains("1 certificate")),
        "{:?}",
        j.steps
    );
    assert_eq!(s.files.hits("int.cer"), before + 1);
    // without AIA answering, the chain stops short of the anchor
    s.files.files.lock().unwrap().remove("int.cer");
    let fresh = s.refetching();
    let j = fresh
        .judge(message(
            fresh.app.data_dir.path(),
            "sender",
            "dr.smith@direct.sender.test",
            false,
        ))
        .await;
    assert_eq!(j.verdict.code, ReasonCode::UntrustedAnchor);
    assert!(j.steps.iter().any(|s| s.contains("404")), "{:?}", j.steps);
}

#[tokio::test]
async fn an_unreachable_crl_soft_fails_by_default_and_fails_closed_when_the_domain_says_so() {
    let s = setup().await;
    let dir = s.app.data_dir.path().to_path_buf();
    let j = s
        .judge(message(&dir, "lonely", "dr.alone@direct.sender.test", true))
        .await;
    assert_eq!(j.verdict.code, ReasonCode::Trusted, "soft-fail: delivered");
    assert!(
        matches!(&j.revocation, Revocation::Unavailable(why) if why.contains("could not be reached")),
        "{:?}",
        j.revocation
    );
    let mut tx = s.app.state.db.begin().await.unwrap();
    orgs::set_crl_policy(&mut tx, s.domain.id, CrlUnreachable::FailClosed)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let j = s
        .judge(message(&dir, "lonely", "dr.alone@direct.sender.test", true))
        .await;
    assert_eq!(j.verdict.code, ReasonCode::RevocationUnknown);
    assert!(j.verdict.sentence().contains("could not be checked"));
}

#[tokio::test]
async fn a_version_1_crl_as_openssl_writes_it_is_read_and_names_the_revoked_signer() {
    let s = setup().await;
    let dir = s.app.data_dir.path().to_path_buf();
    s.files
        .put("int.crl", std::fs::read(dir.join("v1.crl")).unwrap());
    let j = s
        .judge(message(&dir, "revoked", "dr.gone@direct.sender.test", true))
        .await;
    assert_eq!(
        j.verdict.code,
        ReasonCode::SignerRevoked,
        "{} {:?}",
        j.verdict.detail,
        j.steps
    );
    assert!(
        j.verdict.detail.contains("CN=revoked"),
        "{}",
        j.verdict.detail
    );
    let j = s
        .judge(message(&dir, "sender", "dr.smith@direct.sender.test", true))
        .await;
    assert_eq!(j.verdict.code, ReasonCode::Trusted, "{}", j.verdict.detail);
    assert_eq!(j.revocation, Revocation::Checked);
}

#[tokio::test]
async fn a_crl_that_is_reached_but_cannot_be_used_refuses_the_signer_even_on_soft_fail() {
    let mut s = setup().await;
    let dir = s.app.data_dir.path().to_path_buf();
    assert_eq!(
        orgs::crl_policy(&s.app.state.db, s.domain.id)
            .await
            .unwrap(),
        CrlUnreachable::SoftFail
    );
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "another CA's list",
            std::fs::read(dir.join("other.crl")).unwrap(),
            "issued by CN=Other CA",
        ),
        (
            "a list under the issuer's name signed by another key",
            std::fs::read(dir.join("twin.crl")).unwrap(),
            "not signed by the certificate's issuer",
        ),
        (
            "a list past its nextUpdate",
            std::fs::read(dir.join("old.crl")).unwrap(),
            "out of date",
        ),
        (
            "a page that is not a list",
            b"<html>Sign in to the Wi-Fi</html>".to_vec(),
            "could not be read",
        ),
    ];
    for (what, crl, reason) in cases {
        s = s.refetching();
        s.files.put("int.crl", crl);
        // neither the revoked signer nor a good one is trusted on a list that cannot be used
        for (signer, from) in [
            ("revoked", "dr.gone@direct.sender.test"),
            ("sender", "dr.smith@direct.sender.test"),
        ] {
            let j = s.judge(message(&dir, signer, from, true)).await;
            assert_eq!(
                j.verdict.code,
                ReasonCode::RevocationListUnusable,
                "{what}, {signer}: {} {:?}",
                j.verdict.detail,
                j.steps
            );
            assert!(
                j.verdict.detail.contains(reason),
                "{what}: {}",
                j.verdict.detail
            );
            assert!(!j.verdict.is_trusted());
            assert!(
                j.verdict.sentence().contains("could not be used"),
                "{}",
                j.verdict.sentence()
            );
        }
    }
    // the good list again: the good signer is trusted
    s = s.refetching();
    s.files
        .put("int.crl", std::fs::read(dir.join("int.crl")).unwrap());
    let j = s
        .judge(message(&dir, "sender", "dr.smith@direct.sender.test", true))
        .await;
    assert_eq!(j.verdict.code, ReasonCode::Trusted, "{}", j.verdict.detail);
}

#[tokio::test]
async fn a_certificate_imported_without_its_issuer_gets_it_through_aia_or_a_sentence_naming_it() {
    let s = setup().await;
    let dir = s.app.data_dir.path().to_path_buf();
    let db = &s.app.state.db;
    // setup imported the domain's leaf alone: the intermediate came through its AIA
    let rows = directmail::store::pki::certs_of_domain(db, s.domain.id)
        .await
        .unwrap();
    let chain = directmail_smime::parse_certificates(rows[0].chain_pem.as_bytes()).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(
        chain[1].tbs_certificate().subject().to_string(),
        "CN=Test Intermediate"
    );
    assert!(s.files.hits("int.cer") >= 1);
    let anchors = directmail::pki::sending_anchors(db).await.unwrap();
    assert_eq!(directmail::pki::chain_gap(&rows[0], &anchors), None);

    // an address certificate whose AIA cannot be reached: imported, with the sentence
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "set -e
openssl req -newkey rsa:2048 -nodes -subj /CN=front -keyout front.key -out front.csr 2>/dev/null
SAN=email:front@direct.lakeside.test CRLURL=$DEAD/int.crl AIAURL=$DEAD/int.cer openssl ca -batch -notext -config ca.cnf -cert int.pem -keyfile int.key -in front.csr -out front.pem -extensions leaf 2>/dev/null",
        )
        .env("DEAD", "http://127.0.0.1:9")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let front = directmail::domain::Email::parse("front@direct.lakeside.test").unwrap();
    let import = |certs: Vec<u8>| {
        let (s, front) = (&s, &front);
        let key = std::fs::read(dir.join("front.key")).unwrap();
        async move {
            directmail::pki::import_certificate(
                &s.app.state.db,
                &s.app.state.secret,
                Some(&fetcher()),
                &s.domain,
                Some(front),
                KeyFile::Pem { certs, key },
                s.app.now(),
                &directmail::audit::Actor::system(),
            )
            .await
        }
    };
    let leaf = std::fs::read(dir.join("front.pem")).unwrap();
    let imported = import(leaf.clone()).await.ok().unwrap();
    let gap = imported.chain_gap.unwrap();
    assert!(
        gap.starts_with("Other HISPs may not be able to verify this certificate's signatures")
            && gap.contains("its issuer CN=Test Intermediate")
            && gap.contains("PEM file with CN=Test Intermediate's certificate"),
        "{gap}"
    );
    // the operator's domain page says it too, next to that certificate
    s.app
        .user(None, "ops@hisp.test", directmail::domain::Role::Operator)
        .await;
    let mut ops = s.app.signed_in("ops@hisp.test").await;
    let domain_page = format!("/orgs/{}/domains/{}", s.domain.org_id.unwrap(), s.domain.id);
    let page = ops.get(&domain_page).await;
    assert_eq!(
        page.body.matches("class=\"chain-gap\"").count(),
        1,
        "{}",
        page.body
    );

    // the same certificate again with the intermediate after it: the chain is kept
    let mut both = leaf.clone();
    both.extend(std::fs::read(dir.join("int.pem")).unwrap());
    let again = import(both.clone()).await.ok().unwrap();
    assert_eq!(again.chain_gap, None);
    assert_eq!(again.row.id, imported.row.id);
    let page = ops.get(&domain_page).await;
    assert!(!page.body.contains("chain-gap"), "{}", page.body);
    // once complete, the same certificate is refused as already imported
    match import(both).await {
        Err(directmail::pki::ImportProblem::Refused(why)) => {
            assert_eq!(why, "This certificate is already imported.")
        }
        _ => panic!("a second import of a complete certificate was not refused"),
    }
}
