//! Test server, in-memory backend, raw SMTP client and an OpenSSL-made test PKI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use directmail_smtp::{Backend, Config, DeliverError, Envelope, RcptDecision, serve};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for any single reply before failing.
pub const REPLY_WAIT: Duration = Duration::from_secs(10);

/// Domain the in-memory backend hosts.
pub const HOSTED: &str = "direct.test";

/// One stored message: its envelope and raw bytes.
pub type Stored = (Envelope, Vec<u8>);

/// A backend that hosts `@direct.test`, keeps deliveries in memory, and can be told to
/// be slow or to fail.
#[derive(Clone, Default)]
pub struct MemBackend {
    delivered: Arc<Mutex<Vec<Stored>>>,
    counter: Arc<AtomicUsize>,
    delay: Duration,
    fail: Option<DeliverError>,
}

impl MemBackend {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn delaying(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    pub fn failing(error: DeliverError) -> Self {
        Self {
            fail: Some(error),
            ..Self::default()
        }
    }

    pub fn delivered(&self) -> Vec<Stored> {
        self.delivered.lock().unwrap().clone()
    }
}

impl Backend for MemBackend {
    fn rcpt(
        &self,
        _mail_from: &str,
        rcpt_to: &str,
    ) -> impl std::future::Future<Output = RcptDecision> + Send {
        let to = rcpt_to.to_ascii_lowercase();
        async move {
            if to.starts_with("busy@") {
                RcptDecision::Reject {
                    code: 451,
                    enhanced: "4.2.1".into(),
                    text: "mailbox busy, try later".into(),
                }
            } else if to.ends_with(&format!("@{HOSTED}")) {
                RcptDecision::Accept
            } else {
                RcptDecision::no_such_mailbox()
            }
        }
    }

    fn deliver(
        &self,
        envelope: Envelope,
        data: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<String, DeliverError>> + Send {
        let this = self.clone();
        async move {
            tokio::time::sleep(this.delay).await;
            if let Some(error) = this.fail.clone() {
                return Err(error);
            }
            this.delivered.lock().unwrap().push((envelope, data));
            let n = this.counter.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(format!("Q{n}"))
        }
    }
}

/// Settings for tests: a recognisable hostname and timeouts short enough to test.
pub fn test_config() -> Config {
    Config {
        hostname: "mx.direct.test".into(),
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// The real server on an ephemeral port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub backend: MemBackend,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        Self::start_with(config, MemBackend::new()).await
    }

    pub async fn start_with(config: Config, backend: MemBackend) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, config, backend.clone(), async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            backend,
            stop: Some(stop),
            task,
        }
    }

    /// Asks the server to shut down without waiting.
    pub fn trigger_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and waits until every session has ended (fails after `within`).
    pub async fn stop_within(mut self, within: Duration) {
        self.trigger_stop();
        tokio::time::timeout(within, self.task)
            .await
            .expect("serve did not return: a session is still running")
            .unwrap();
    }

    pub async fn connect(&self) -> Client<TcpStream> {
        let (client, greeting) = Client::connect(self.addr).await;
        assert_eq!(greeting.code, 220, "greeting: {greeting:?}");
        client
    }
}

/// One SMTP reply: its code and the text of each line.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// A scripted SMTP client over any stream.
pub struct Client<S> {
    pub stream: S,
    buf: Vec<u8>,
}

impl Client<TcpStream> {
    pub async fn connect(addr: SocketAddr) -> (Self, Reply) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut client = Client::new(stream);
        let greeting = client.reply().await;
        (client, greeting)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Sends one command line and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    pub async fn reply(&mut self) -> Reply {
        self.try_reply()
            .await
            .expect("connection closed before a reply")
    }

    /// Reads one (possibly multi-line) reply; `None` if the server closed first.
    pub async fn try_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await?;
            assert!(line.len() >= 3, "short reply line {line:?}");
            let code: u16 = line[..3].parse().expect("reply code");
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if last {
                return Some(Reply { code, lines });
            }
        }
    }

    async fn read_line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = String::from_utf8(line).expect("reply is UTF-8");
                return Some(line.trim_end_matches(['\r', '\n']).to_string());
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(REPLY_WAIT, self.stream.read(&mut chunk))
                .await
                .expect("no reply in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True when the server closes the connection (after any pending replies).
    pub async fn is_closed_by_server(&mut self) -> bool {
        while self.try_reply().await.is_some() {}
        true
    }

    /// EHLO, MAIL, RCPT, DATA with `body` (already dot-stuffed, without the final dot).
    pub async fn send_message(&mut self, from: &str, to: &str, body: &str) -> Reply {
        assert_eq!(self.cmd(&format!("MAIL FROM:<{from}>")).await.code, 250);
        assert_eq!(self.cmd(&format!("RCPT TO:<{to}>")).await.code, 250);
        assert_eq!(self.cmd("DATA").await.code, 354);
        self.send(body.as_bytes()).await;
        self.send(b".\r\n").await;
        self.reply().await
    }
}

/// A CA and a `localhost` server certificate made by the real `openssl` command line.
pub struct TestPki {
    _dir: tempfile::TempDir,
    pub ca_path: PathBuf,
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl TestPki {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Test SMTP CA",
        ]);
        run(&ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "key.pem",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=localhost",
        ]);
        run(&csr);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        let read = |name: &str| std::fs::read(d.join(name)).unwrap();
        Self {
            ca_path: d.join("ca.pem"),
            ca_pem: read("ca.pem"),
            cert_pem: read("cert.pem"),
            key_pem: read("key.pem"),
            _dir: dir,
        }
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        directmail_smtp::tls_config_from_pem(&self.cert_pem, &self.key_pem).unwrap()
    }

    /// A rustls client that trusts only the test CA.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}
