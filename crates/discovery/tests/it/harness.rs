//! What the tests stand up on loopback: a PKI made by the `openssl` command line,
//! the crate's own DNS responder, Debian's `slapd` (killed by a Drop guard), a tiny
//! HTTP server for IPKIX URLs, and a validator modelling the main crate's trust check.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use der::Decode;
use directmail_discovery::responder::{Records, Responder};
use directmail_discovery::{Config, Discovery, FnValidator, Rejection, SrvOrder, Validator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_cert::Certificate;
use x509_cert::crl::CertificateList;

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Test certificates (DER), all issued by the test intermediate unless named
/// otherwise; each is bigger than 512 bytes, as real Direct certificates are.
pub struct Pki {
    /// email:bob@example.org
    pub ab: Vec<u8>,
    /// another valid one for bob@example.org
    pub ab2: Vec<u8>,
    /// DNS:example.org
    pub db: Vec<u8>,
    /// email:bob@example.org, expired on 2021-01-01
    pub ab_expired: Vec<u8>,
    /// DNS:example.org, expired on 2021-01-01
    pub db_expired: Vec<u8>,
    /// email:bob@example.org, on the intermediate's CRL
    pub ab_revoked: Vec<u8>,
    /// email:alice@example.org
    pub ab_other: Vec<u8>,
    /// email:john.doe@example.org
    pub ab_dotted: Vec<u8>,
    /// email:bob@example.org from a CA nobody trusts
    pub ab_untrusted: Vec<u8>,
    intermediate: Vec<u8>,
    crl: Vec<u8>,
}

/// The PKI, made once per test run.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(make_pki)
}

fn make_pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"set -e
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
default_days = 365
default_crl_days = 30
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
EOF
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=Discovery Test Root" -keyout root.key -out root.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=Discovery Test Intermediate" -keyout int.key -out int.csr 2>/dev/null
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' > int.ext
openssl x509 -req -in int.csr -CA root.pem -CAkey root.key -CAcreateserial -days 365 -sha256 -extfile int.ext -out int.pem 2>/dev/null
openssl x509 -in int.pem -outform DER -out int.der
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=Rogue CA" -keyout rogue.key -out rogue.pem 2>/dev/null
openssl genrsa -out leaf.key 2048 2>/dev/null
leaf() {
  openssl req -new -key leaf.key -subj "/CN=$1" -out $1.csr 2>/dev/null
  dates=""
  if [ -n "$3" ]; then dates="-startdate $3 -enddate $4"; fi
  SAN=$2 openssl ca -batch -notext -config ca.cnf -cert int.pem -keyfile int.key -in $1.csr -out $1.pem -extensions leaf $dates 2>/dev/null
  openssl x509 -in $1.pem -outform DER -out $1.der
}
leaf ab email:bob@example.org
leaf ab2 email:bob@example.org
leaf db DNS:example.org
leaf ab_expired email:bob@example.org 20200101000000Z 20210101000000Z
leaf db_expired DNS:example.org 20200101000000Z 20210101000000Z
leaf ab_revoked email:bob@example.org
leaf ab_other email:alice@example.org
leaf ab_dotted email:john.doe@example.org
SAN=email:x@example.org openssl ca -config ca.cnf -cert int.pem -keyfile int.key -revoke ab_revoked.pem 2>/dev/null
SAN=email:x@example.org openssl ca -config ca.cnf -cert int.pem -keyfile int.key -gencrl -out int.crl.pem 2>/dev/null
openssl crl -in int.crl.pem -outform DER -out int.crl
openssl req -new -key leaf.key -subj "/CN=ab_untrusted" -out u.csr 2>/dev/null
printf 'basicConstraints=CA:FALSE\nsubjectAltName=email:bob@example.org\n' > u.ext
openssl x509 -req -in u.csr -CA rogue.pem -CAkey rogue.key -CAcreateserial -days 365 -sha256 -extfile u.ext -out ab_untrusted.pem 2>/dev/null
openssl x509 -in ab_untrusted.pem -outform DER -out ab_untrusted.der
"#;
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .output()
        .expect("the openssl command line is needed to make test certificates");
    assert!(
        out.status.success(),
        "making the test PKI failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    Pki {
        ab: read("ab.der"),
        ab2: read("ab2.der"),
        db: read("db.der"),
        ab_expired: read("ab_expired.der"),
        db_expired: read("db_expired.der"),
        ab_revoked: read("ab_revoked.der"),
        ab_other: read("ab_other.der"),
        ab_dotted: read("ab_dotted.der"),
        ab_untrusted: read("ab_untrusted.der"),
        intermediate: read("int.der"),
        crl: read("int.crl"),
    }
}

/// A stand-in for the main crate's trust check: issued by the test intermediate
/// (issuer name only; the real one verifies the chain), within validity, and not on
/// the intermediate's CRL.
pub fn validator() -> Arc<dyn Validator> {
    let pki = pki();
    let int = Certificate::from_der(&pki.intermediate).unwrap();
    let issuer = int.tbs_certificate().subject().clone();
    let crl = CertificateList::from_der(&pki.crl).unwrap();
    let revoked: Vec<_> = crl
        .tbs_cert_list
        .revoked_certificates
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.serial_number)
        .collect();
    Arc::new(FnValidator(
        move |der: &[u8], _address: &str, now: SystemTime| {
            let cert = Certificate::from_der(der)
                .map_err(|e| Rejection::other(format!("unparseable: {e}")))?;
            let tbs = cert.tbs_certificate();
            if tbs.issuer() != &issuer {
                return Err(Rejection::other(
                    "does not chain to a trusted anchor".to_owned(),
                ));
            }
            let now_s = now.duration_since(SystemTime::UNIX_EPOCH).unwrap();
            if now_s > tbs.validity().not_after.to_unix_duration() {
                return Err(Rejection::expired("expired".to_owned()));
            }
            if revoked.contains(tbs.serial_number()) {
                return Err(Rejection::revoked("revoked by its issuer (CRL)".to_owned()));
            }
            Ok(())
        },
    ))
}

/// Settings for tests: everything through `dns`, loopback allowed, deterministic
/// SRV order, short timeouts.
pub fn config(dns: SocketAddr) -> Config {
    Config {
        dns_resolver: Some(dns),
        dns_timeout: Duration::from_secs(2),
        ldap_connect_timeout: Duration::from_secs(1),
        ldap_timeout: Duration::from_secs(2),
        http_timeout: Duration::from_secs(2),
        srv_order: SrvOrder::HeaviestFirst,
        network: directmail_net::Policy::everything(),
        ..Config::default()
    }
}

/// A DNS responder on loopback and discovery pointed at it.
pub struct World {
    pub dns: Responder,
    pub discovery: Discovery,
}

impl World {
    pub async fn new(records: Records) -> World {
        Self::with_config(records, |_| {}).await
    }

    pub async fn with_config(records: Records, tweak: impl FnOnce(&mut Config)) -> World {
        let dns = Responder::start(SocketAddr::new(LOOPBACK, 0), records)
            .await
            .unwrap();
        let mut cfg = config(dns.local_addr());
        tweak(&mut cfg);
        let discovery = Discovery::new(cfg, validator()).unwrap();
        World { dns, discovery }
    }
}

/// `records` plus SRV `_ldap._tcp.example.org` for each (priority, weight, port),
/// with targets `ldapN.example.org` on loopback.
pub fn with_ldap(mut records: Records, servers: &[(u16, u16, u16)]) -> Records {
    for (i, (priority, weight, port)) in servers.iter().enumerate() {
        let host = format!("ldap{}.example.org", i + 1);
        records
            .add_srv(
                "_ldap._tcp.example.org",
                *priority,
                *weight,
                *port,
                &host,
                300,
            )
            .unwrap();
        records.add_address(&host, LOOPBACK, 300).unwrap();
    }
    records
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    StdListener::bind((LOOPBACK, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One directory entry: `cn`, `mail`, and certificate values.
pub struct Entry<'a> {
    pub cn: &'a str,
    pub mail: &'a str,
    pub certs: Vec<&'a [u8]>,
}

/// Debian's slapd on a free loopback port with its own config and mdb database
/// under a temp dir, base `dc=example,dc=org`; killed by pid when dropped.
pub struct Slapd {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn slapd_binary() -> Option<PathBuf> {
    ["/usr/sbin/slapd", "/usr/local/sbin/slapd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Whether LDAP tests can run. Without slapd they are skipped, unless
/// `DIRECTMAIL_REQUIRE_SLAPD` is set (CI sets it), in which case they fail.
pub fn slapd_available() -> bool {
    if slapd_binary().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("DIRECTMAIL_REQUIRE_SLAPD").is_none(),
        "slapd is missing but DIRECTMAIL_REQUIRE_SLAPD is set (apt-get install slapd)"
    );
    eprintln!("skipped: slapd is not installed (apt-get install slapd ldap-utils)");
    false
}

impl Slapd {
    pub fn start(entries: &[Entry<'_>]) -> Slapd {
        let slapd = slapd_binary().expect("slapd_available() was checked");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {d}/slapd.pid
database mdb
suffix \"dc=example,dc=org\"
rootdn \"cn=admin,dc=example,dc=org\"
directory {d}/db
maxsize 10485760
",
            d = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        std::fs::write(d.join("data.ldif"), ldif(entries)).unwrap();
        let out = Command::new(slapd.with_file_name("slapadd"))
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-l")
            .arg(d.join("data.ldif"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // a port picked free can be taken again before slapd binds it: retry
        for _ in 0..5 {
            let port = closed_port();
            let mut child = Command::new(&slapd)
                .arg("-f")
                .arg(d.join("slapd.conf"))
                .arg("-h")
                .arg(format!("ldap://127.0.0.1:{port}/"))
                .arg("-d")
                .arg("0")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if wait_ready(&mut child, port) {
                return Slapd {
                    child,
                    port,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("slapd did not start")
    }
}

/// Up when it accepts connections; false if it exited first or took too long.
fn wait_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect((LOOPBACK, port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

impl Drop for Slapd {
    fn drop(&mut self) {
        // by its pid (Child::kill), never by name
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ldif(entries: &[Entry<'_>]) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut out = String::from(
        "dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n",
    );
    for e in entries {
        // LDIF (RFC 2849): values that are not safe strings go base64 (`::`)
        out.push_str(&format!(
            "dn: cn={cn},dc=example,dc=org\nobjectClass: inetOrgPerson\ncn: {cn}\nsn: {cn}\nmail:: {mail}\n",
            cn = e.cn,
            mail = b64(e.mail.as_bytes())
        ));
        for c in &e.certs {
            out.push_str(&format!("userCertificate;binary:: {}\n", b64(c)));
        }
        out.push('\n');
    }
    out
}

/// A tiny HTTP/1.1 server on loopback serving fixed bodies by path (no
/// Content-Length: the body ends when the connection closes), for IPKIX URLs.
pub async fn http_server(files: HashMap<String, Vec<u8>>) -> u16 {
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let files = Arc::new(files);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let files = files.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let reply = match files.get(&path) {
                    Some(body) => {
                        let mut r = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
                        r.extend_from_slice(body);
                        r
                    }
                    None => b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n".to_vec(),
                };
                // the client may hang up early (size limit): ignore write errors
                let _ = sock.write_all(&reply).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    port
}

/// Whether any step contains `needle` (with the steps in the failure message).
pub fn has_step(steps: &[String], needle: &str) -> bool {
    steps.iter().any(|s| s.contains(needle))
}

#[track_caller]
pub fn assert_step(steps: &[String], needle: &str) {
    assert!(
        has_step(steps, needle),
        "no step contains {needle:?}; steps:\n{}",
        steps.join("\n")
    );
}

#[track_caller]
pub fn assert_no_step(steps: &[String], needle: &str) {
    assert!(
        !has_step(steps, needle),
        "a step contains {needle:?}; steps:\n{}",
        steps.join("\n")
    );
}
