//! `TestApp::spawn()`: the real server on port 0 with a fresh database — a temporary
//! SQLite file, or a fresh database on the PostgreSQL named by
//! `DIRECTMAIL_TEST_POSTGRES_URL` (the Postgres lane of `scripts/test.sh`).

use std::net::SocketAddr;

use directmail::app::Application;
use directmail::audit::{self, Actor, Event};
use directmail::auth;
use directmail::clock::Clock;
use directmail::config::{Config, DatabaseUrl};
use directmail::domain::{DisplayName, DomainName, Email, Role};
use directmail::store::orgs::{self, Org};
use directmail::store::users::{self, User};
use directmail::web::AppState;
use directmail_discovery::responder::{Records, Responder};
use regex::Regex;
use reqwest::StatusCode;
use reqwest::redirect::Policy;

/// A loopback address where no DNS server listens.
pub const NO_DNS: &str = "127.0.0.1:9";

/// A password that passes the policy, used for every test user.
pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub addr: SocketAddr,
    /// The portal's inbound SMTP listener.
    pub smtp_addr: SocketAddr,
    /// The `/metrics` listener, when `metrics_addr` was set.
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    pub config: Config,
    /// The first operator's one-time password, from first start-up.
    pub first_password: Option<String>,
    pub data_dir: tempfile::TempDir,
}

/// Which database this run of the suite uses.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("DIRECTMAIL_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// A fresh, empty database URL for one test.
pub async fn fresh_database(dir: &std::path::Path) -> DatabaseUrl {
    match postgres_admin_url() {
        Some(admin) => {
            use sqlx::Connection as _;
            let name = format!("t_{}", hex_id());
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .expect("the test PostgreSQL is reachable");
            sqlx::query(&format!("create database {name}"))
                .execute(&mut conn)
                .await
                .expect("create a test database");
            let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
            DatabaseUrl(format!("{base}/{name}"))
        }
        None => DatabaseUrl(format!("sqlite://{}", dir.join("test.db").display())),
    }
}

/// A patient (given name, family name, birth date) recorded by the user
/// `recorded_by` (as office manager) as having opted out of HIE sharing at
/// organization `org_id`.
pub async fn opted_out(app: &TestApp, org_id: i64, recorded_by: &str, patient: (&str, &str, &str)) {
    let (given, family, born) = patient;
    let user_id: i64 = sqlx::query_scalar("select id from users where email = $1")
        .bind(recorded_by)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    let mut tx = app.state.db.begin().await.unwrap();
    directmail::store::opt_outs::insert(
        &mut tx,
        org_id,
        &directmail::store::opt_outs::NewOptOut {
            family_name: family.into(),
            given_name: given.into(),
            birth_date: born.into(),
            identifier: None,
        },
        &directmail::store::opt_outs::Recorder {
            user_id,
            display_name: "Office manager".into(),
        },
        app.now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// An organization with one domain, made directly in the store of `db` (also one no
/// portal runs on yet).
pub async fn org_in(db: &directmail::db::Db, name: &str, domain: &str, now: i64) -> Org {
    let mut tx = db.begin().await.expect("tx");
    let org = orgs::create(&mut tx, &DisplayName::parse(name).expect("name"), now)
        .await
        .expect("org");
    orgs::add_domain(
        &mut tx,
        Some(org.id),
        &DomainName::parse(domain).expect("domain"),
        now,
    )
    .await
    .expect("domain");
    tx.commit().await.expect("commit");
    org
}

fn hex_id() -> String {
    auth::token_hash(&auth::new_token().0)[..16].to_owned()
}

pub async fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::defaults();
    config.http_addr = "127.0.0.1:0".parse().expect("address");
    config.smtp_addr = "127.0.0.1:0".parse().expect("address");
    // DNS never leaves this machine in tests: MX lookups for other HISPs' domains go
    // to a loopback port where nothing answers (tests that need DNS start a server)
    config.dns_resolver = Some(NO_DNS.parse().expect("address"));
    // a loaded machine may take longer than a person would wait for a lookup; the
    // tests check what the lookup finds, not how fast
    config.address_check_seconds = 60;
    config.data_dir = dir.to_path_buf();
    config.database_url = Some(fresh_database(dir).await);
    // RSA key generation is slow in debug builds; the tests that need the development
    // PKI turn it back on
    config.dev_pki = false;
    config.allow_private_networks = Some(directmail_net::Policy::everything());
    config.https_roots = Some(test_https().ca_pem.clone());
    // Most tests sign in as operators made in the store, without TOTP; the tests of
    // the operators' two-step requirement turn it back on (the default is on)
    config.operator_mfa = false;
    config
}

impl TestApp {
    /// `directmail` with this portal's database and data directory, to be run with
    /// [`run`].
    pub fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_directmail"));
        command
            .env(
                "DIRECTMAIL_DATABASE_URL",
                self.config.database_url().as_str(),
            )
            .env("DIRECTMAIL_DATA_DIR", self.data_dir.path());
        command
    }

    /// Runs `directmail ARGS` (an admin command) against this portal; see [`run`].
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut command = self.command();
        command.args(args);
        run(command).await
    }

    /// Two practices on this portal that write to each other: Ana's mailbox
    /// dr.ana@direct.lakeside.test at Lakeside Clinic and Kim's front@direct.hillside.test
    /// at Hillside Care, each with a development certificate.
    pub async fn lakeside_and_hillside(
        &self,
    ) -> (
        directmail::store::mailboxes::Mailbox,
        directmail::store::mailboxes::Mailbox,
    ) {
        let ana = self
            .practice(
                "Lakeside Clinic",
                "direct.lakeside.test",
                "ana@direct.lakeside.test",
                "dr.ana@direct.lakeside.test",
            )
            .await;
        let kim = self
            .practice(
                "Hillside Care",
                "direct.hillside.test",
                "kim@direct.hillside.test",
                "front@direct.hillside.test",
            )
            .await;
        (ana, kim)
    }

    /// Ana's referral to Kim's front desk ([`TestApp::lakeside_and_hillside`]),
    /// queued and the sender woken: the outbound message's id.
    pub async fn send_referral(&self, ana: &directmail::store::mailboxes::Mailbox) -> i64 {
        let id = directmail::outbound::submit(
            &self.state.db,
            ana,
            "Dr. Ana Ruiz",
            &["front@direct.hillside.test".to_owned()],
            &[],
            "Referral for Ms. Diaz",
            "Please see the patient this week.",
            self.now(),
        )
        .await
        .expect("queued");
        self.state.wake_sender.notify_one();
        id
    }

    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// A portal whose DNS resolver is an authoritative server on loopback (for the
    /// other HISPs' certificates), with Lakeside Clinic and Ana's mailbox
    /// dr.ana@direct.lakeside.test. Records are set later with `set_records`.
    pub async fn spawn_with_dns() -> (TestApp, Responder, directmail::store::mailboxes::Mailbox) {
        let dns = Responder::start("127.0.0.1:0".parse().expect("addr"), Records::new())
            .await
            .expect("DNS responder");
        let resolver = dns.local_addr();
        let app = Self::spawn_with(|c| c.dns_resolver = Some(resolver)).await;
        let mailbox = app
            .practice(
                "Lakeside Clinic",
                "direct.lakeside.test",
                "ana@direct.lakeside.test",
                "dr.ana@direct.lakeside.test",
            )
            .await;
        (app, dns, mailbox)
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        Self::try_spawn_with(adjust)
            .await
            .expect("the application builds")
    }

    /// [`TestApp::spawn_with`], or why the application would not build (a port a
    /// parallel test took, say).
    pub async fn try_spawn_with(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<TestApp> {
        Self::try_spawn_until(adjust, std::future::pending())
            .await
            .map(|(app, _)| app)
    }

    /// [`TestApp::spawn_with`], serving until `shutdown` resolves; the task serving
    /// it ends when the application has stopped.
    pub async fn spawn_until(
        adjust: impl FnOnce(&mut Config),
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> (TestApp, tokio::task::JoinHandle<anyhow::Result<()>>) {
        Self::try_spawn_until(adjust, shutdown)
            .await
            .expect("the application builds")
    }

    async fn try_spawn_until(
        adjust: impl FnOnce(&mut Config),
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<(TestApp, tokio::task::JoinHandle<anyhow::Result<()>>)> {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(data_dir.path()).await;
        adjust(&mut config);
        let application = Application::build_with_clock(config.clone(), Clock::default()).await?;
        let addr = application.local_addr().expect("bound");
        let smtp_addr = application.smtp_addr().expect("bound");
        let metrics_addr = application.metrics_addr();
        let state = application.state.clone();
        let first_password = application
            .first_operator
            .as_ref()
            .map(|f| f.one_time_password.clone());
        let serving = tokio::spawn(application.run_until(shutdown));
        let app = TestApp {
            addr,
            smtp_addr,
            metrics_addr,
            state,
            config,
            first_password,
            data_dir,
        };
        Ok((app, serving))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A new browser-like client with its own cookie jar.
    pub fn browser(&self) -> Browser {
        Browser {
            base: format!("http://{}", self.addr),
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(Policy::none())
                .build()
                .expect("client"),
            csrf: String::new(),
        }
    }

    pub fn now(&self) -> i64 {
        self.state.clock.now()
    }

    /// An organization with one domain, made directly in the store.
    pub async fn org(&self, name: &str, domain: &str) -> Org {
        org_in(&self.state.db, name, domain, self.now()).await
    }

    /// A user with [`PASSWORD`], made directly in the store.
    pub async fn user(&self, org: Option<&Org>, email: &str, role: Role) -> User {
        let hash = auth::hash_password(PASSWORD).expect("hash");
        let mut tx = self.state.db.begin().await.expect("tx");
        let user = users::create(
            &mut tx,
            users::NewUser {
                org_id: org.map(|o| o.id),
                email: &Email::parse(email).expect("email"),
                display_name: &DisplayName::parse(email.split('@').next().unwrap_or("x"))
                    .expect("name"),
                role,
                password_hash: Some(hash),
                must_change_password: false,
            },
            self.now(),
        )
        .await
        .expect("user");
        audit::append(
            &mut tx,
            self.now(),
            &Actor::system(),
            Event::new("user.create", email),
        )
        .await
        .expect("audit");
        tx.commit().await.expect("commit");
        user
    }

    /// Turns two-step sign-in on for `user` (sealed as the portal stores it); returns
    /// the TOTP secret an authenticator app would hold.
    pub async fn enable_totp(&self, user: &User) -> String {
        let secret = auth::new_totp_secret();
        let sealed =
            directmail::secrets::seal_totp(&self.state.secret, user.id, &secret).expect("seal");
        let mut tx = self.state.db.begin().await.expect("tx");
        users::set_pending_totp(&mut tx, user.id, &sealed)
            .await
            .expect("totp");
        users::enable_totp(&mut tx, user.id, 0)
            .await
            .expect("enable");
        tx.commit().await.expect("commit");
        secret
    }

    /// An organization on `domain` with a development certificate, a member `user`
    /// and a personal mailbox `address` assigned to them.
    pub async fn practice(
        &self,
        org: &str,
        domain: &str,
        user: &str,
        address: &str,
    ) -> directmail::store::mailboxes::Mailbox {
        use directmail::store::mailboxes;
        let org = self.org(org, domain).await;
        let d = orgs::domain_by_name(&self.state.db, domain)
            .await
            .expect("query")
            .expect("domain");
        directmail::pki::issue_dev_certificate(
            &self.state.db,
            &self.state.secret,
            &d,
            None,
            self.now(),
            &Actor::system(),
        )
        .await
        .expect("dev certificate");
        let u = self.user(Some(&org), user, Role::Member).await;
        let mut tx = self.state.db.begin().await.expect("tx");
        let m = mailboxes::create(
            &mut tx,
            org.id,
            d.id,
            &Email::parse(address).expect("address"),
            mailboxes::MailboxKind::Personal,
            &DisplayName::parse("Desk").expect("name"),
            self.now(),
        )
        .await
        .expect("mailbox");
        mailboxes::assign(&mut tx, m.id, u.id)
            .await
            .expect("assign");
        tx.commit().await.expect("commit");
        m
    }

    /// A browser signed in as `email` with [`PASSWORD`].
    pub async fn signed_in(&self, email: &str) -> Browser {
        let mut b = self.browser();
        let response = b.sign_in(email, PASSWORD).await;
        assert_eq!(
            response.status,
            StatusCode::SEE_OTHER,
            "sign-in of {email} redirects: {}",
            response.body
        );
        b.get("/").await;
        b
    }
}

/// A cookie-keeping client that remembers the CSRF token of the last page it saw.
pub struct Browser {
    pub base: String,
    pub client: reqwest::Client,
    pub csrf: String,
}

#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> String {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    /// The value (inputs) or text of the element with this id, entities decoded.
    pub fn by_id(&self, id: &str) -> Option<String> {
        let tag_re = Regex::new(&format!(r#"<[^>]*\bid="{}"[^>]*>"#, regex::escape(id))).ok()?;
        let tag = tag_re.find(&self.body)?;
        let value = Regex::new(r#"\bvalue="([^"]*)""#).ok()?;
        let raw = match value.captures(tag.as_str()) {
            Some(c) => c[1].to_owned(),
            None => self.body[tag.end()..]
                .split('<')
                .next()
                .unwrap_or("")
                .to_owned(),
        };
        Some(
            raw.replace("&#x2f;", "/")
                .replace("&#x27;", "'")
                .replace("&#39;", "'")
                .replace("&quot;", "\"")
                .replace("&#34;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    }
}

impl Browser {
    fn remember(&mut self, body: &str) {
        if let Some(c) = Regex::new(r#"name="csrf-token" content="([^"]+)""#)
            .ok()
            .and_then(|re| re.captures(body))
        {
            self.csrf = c[1].to_owned();
        }
    }

    async fn page(&mut self, response: reqwest::Response) -> Page {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        self.remember(&body);
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let r = self
            .client
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .expect("GET");
        self.page(r).await
    }

    /// Posts a form with the remembered CSRF token.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut all: Vec<(&str, &str)> = vec![("_csrf", &self.csrf)];
        all.extend_from_slice(fields);
        let body = serde_urlencode(&all);
        self.post_raw(path, body).await
    }

    /// Posts a raw url-encoded body (no token added).
    pub async fn post_raw(&mut self, path: &str, body: String) -> Page {
        let r = self
            .client
            .post(format!("{}{}", self.base, path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("POST");
        self.page(r).await
    }

    pub async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        self.get("/login").await;
        self.post("/login", &[("email", email), ("password", password)])
            .await
    }
}

/// Runs a command to its end on a blocking thread. The portal under test runs on the
/// test's own runtime: waiting for a child process on that thread would stop the
/// portal, perhaps in the middle of a write, holding the SQLite lock that the child
/// (`directmail admin …`) then waits for until it gives up.
pub async fn run(mut command: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().expect("run the command"))
        .await
        .expect("the command's thread")
}

pub fn serde_urlencode(fields: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A small valid PDF (one page showing `text`) with a correct cross-reference table.
pub fn pdf(text: &str) -> Vec<u8> {
    let content = format!("BT /F1 18 Tf 72 720 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

impl Browser {
    /// Posts a form with the remembered CSRF token in the `X-CSRF-Token` header, as the
    /// pages' scripts do, with extra request headers (`X-Autosave`, …).
    pub async fn post_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request = self
            .client
            .post(format!("{}{}", self.base, path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-csrf-token", &self.csrf)
            .body(serde_urlencode(fields));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let r = request.send().await.expect("POST");
        self.page(r).await
    }

    /// Uploads files as the field `file`. With `script` the request is the page
    /// script's (token in `X-CSRF-Token`, `X-Upload: 1`); without it, a plain form
    /// post (token in the `_csrf` field).
    pub async fn upload(
        &mut self,
        path: &str,
        files: &[(&str, &str, &[u8])],
        script: bool,
    ) -> Page {
        let mut form = reqwest::multipart::Form::new();
        if !script {
            form = form.text("_csrf", self.csrf.clone());
        }
        for (name, content_type, data) in files {
            let part = reqwest::multipart::Part::bytes(data.to_vec())
                .file_name(name.to_string())
                .mime_str(content_type)
                .expect("content type");
            form = form.part("file", part);
        }
        let mut request = self
            .client
            .post(format!("{}{}", self.base, path))
            .multipart(form);
        if script {
            request = request
                .header("x-csrf-token", &self.csrf)
                .header("x-upload", "1");
        }
        let r = request.send().await.expect("POST");
        self.page(r).await
    }
}

/// A certificate authority made once per test run (by `openssl`), which every test
/// portal trusts for HTTPS fetches (`DIRECTMAIL_HTTPS_ROOTS`), and a server
/// certificate it issued for 127.0.0.1: for trust bundles and directory sources served
/// over HTTPS on loopback.
pub struct TestHttps {
    pub ca_pem: std::path::PathBuf,
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The same certificate for other servers (STARTTLS on a loopback SMTP sink).
    pub server_config: std::sync::Arc<rustls::ServerConfig>,
}

pub fn test_https() -> &'static TestHttps {
    static ONCE: std::sync::OnceLock<TestHttps> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("directmail-test-https-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj '/CN=directmail test HTTPS CA' -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
printf 'basicConstraints=CA:FALSE\\nsubjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -sha256 -extfile server.ext -out server.pem 2>/dev/null")
            .current_dir(&dir)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let cert = std::fs::read(dir.join("server.pem")).expect("server.pem");
        let key = std::fs::read(dir.join("server.key")).expect("server.key");
        let certs = rustls_pemfile::certs(&mut cert.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate");
        let key = rustls_pemfile::private_key(&mut key.as_slice())
            .expect("key")
            .expect("a key");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("certificate and key");
        let config = std::sync::Arc::new(config);
        TestHttps {
            ca_pem: dir.join("ca.pem"),
            acceptor: tokio_rustls::TlsAcceptor::from(config.clone()),
            server_config: config,
        }
    })
}

/// The roots of [`test_https`], for a fetcher made in a test.
pub fn test_https_roots() -> Vec<reqwest::Certificate> {
    reqwest::Certificate::from_pem_bundle(&std::fs::read(&test_https().ca_pem).expect("ca.pem"))
        .expect("PEM")
}

/// Serves `app` over HTTPS (the [`test_https`] certificate) on 127.0.0.1; its port.
pub async fn serve_https(app: axum::Router) -> u16 {
    serve_https_while(app, std::sync::Arc::new(true.into())).await
}

/// [`serve_https`], closing every connection unanswered while `up` is false (a
/// server that is down).
pub async fn serve_https_while(
    app: axum::Router,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u16 {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = test_https().acceptor.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if !up.load(std::sync::atomic::Ordering::SeqCst) {
                drop(stream);
                continue;
            }
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}
