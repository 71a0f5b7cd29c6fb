//! A throwaway test PKI made with the real `openssl` command line: a root CA, an
//! intermediate CA run with `openssl ca` (so it can revoke and publish CRLs) and
//! end-entity certificates for each scenario. Built once per test process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use directmail_smime::{Certificate, Identity, TrustStore, parse_certificates};

pub const SENDER: &str = "dr.smith@direct.sender.example";
pub const RECIPIENT: &str = "nurse.jones@direct.receiver.example";

/// One certificate and its key on disk.
#[derive(Clone, Debug)]
pub struct Party {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Party {
    pub fn identity(&self, chain: &[&Path]) -> Identity {
        let mut pem = std::fs::read(&self.cert).unwrap();
        for c in chain {
            pem.extend_from_slice(&std::fs::read(c).unwrap());
        }
        Identity::from_pem_or_der(&pem, &std::fs::read(&self.key).unwrap()).unwrap()
    }

    pub fn certificate(&self) -> Certificate {
        parse_certificates(&std::fs::read(&self.cert).unwrap())
            .unwrap()
            .remove(0)
    }
}

pub struct Pki {
    pub dir: PathBuf,
    pub root: Party,
    pub inter: Party,
    /// Address-bound sender, issued by the intermediate.
    pub sender: Party,
    /// Address-bound recipient.
    pub recipient: Party,
    /// Domain-bound recipient certificate (dNSName only), PKCS#1 key on disk.
    pub recipient_domain: Party,
    pub expired: Party,
    pub not_yet_valid: Party,
    /// Only the subject DN carries the e-mail address.
    pub dn_email_only: Party,
    pub short_key: Party,
    pub revoked: Party,
    /// A sender from an unrelated CA.
    pub stranger: Party,
    /// ECDSA P-256 sender.
    pub ecdsa: Party,
    /// DER CRL of the intermediate, listing `revoked`.
    pub crl_der: Vec<u8>,
}

impl Pki {
    pub fn trust(&self) -> TrustStore {
        TrustStore::with_anchors(vec![self.root.certificate()])
    }

    pub fn trust_with_crl(&self) -> TrustStore {
        let mut t = self.trust();
        t.crls.push(self.crl_der.clone());
        t
    }

    pub fn sender_identity(&self) -> Identity {
        self.sender.identity(&[&self.inter.cert])
    }

    pub fn recipient_identity(&self) -> Identity {
        self.recipient.identity(&[&self.inter.cert])
    }
}

/// The shared PKI (made on first use).
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(build)
}

/// Run openssl with `args` in `dir`; panics with stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("/usr/bin/openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Run openssl and return whether it succeeded, with stdout and stderr.
pub fn openssl_try(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> (bool, Vec<u8>, String) {
    let mut child = Command::new("/usr/bin/openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    {
        let mut si = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            si.write_all(data).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A unique scratch file name in the PKI directory.
pub fn scratch(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    pki().dir.join(format!("scratch-{n}-{name}"))
}

const CA_CNF: &str = r#"
[ ca ]
default_ca = CA_default
[ CA_default ]
dir = DIR
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
default_days = 365
default_crl_days = 30
policy = policy_any
unique_subject = no
email_in_dn = yes
copy_extensions = none
[ policy_any ]
commonName = supplied
emailAddress = optional
organizationName = optional
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"#;

fn ee_ext(san: Option<&str>) -> String {
    let mut s = String::from(
        "[ee]\nbasicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = emailProtection\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
    );
    if let Some(san) = san {
        s.push_str(&format!("subjectAltName = {san}\n"));
    }
    s
}

struct Ca {
    dir: PathBuf,
    party: Party,
}

fn ca_dir(base: &Path, name: &str, party: Party) -> Ca {
    let dir = base.join(format!("{name}-db"));
    std::fs::create_dir_all(dir.join("newcerts")).unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), format!("{:02X}\n", 16 + name.len())).unwrap();
    std::fs::write(dir.join("crlnumber"), "01\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        CA_CNF.replace("DIR", dir.to_str().unwrap()),
    )
    .unwrap();
    Ca { dir, party }
}

/// RSA of `bits` bits, or an ECDSA P-256 key when `bits` is 0.
fn genkey(dir: &Path, name: &str, bits: u32) -> PathBuf {
    let key = dir.join(format!("{name}.key"));
    let (algorithm, opt) = if bits == 0 {
        ("EC", "ec_paramgen_curve:P-256".to_string())
    } else {
        ("RSA", format!("rsa_keygen_bits:{bits}"))
    };
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            algorithm,
            "-pkeyopt",
            &opt,
            "-out",
            key.to_str().unwrap(),
        ],
    );
    key
}

/// Issue a certificate from `ca` with `openssl ca`.
#[expect(
    clippy::too_many_arguments,
    reason = "a test helper mirroring openssl's options"
)]
fn issue(
    base: &Path,
    ca: &Ca,
    name: &str,
    subj: &str,
    ext: &str,
    extensions: &str,
    bits: u32,
    dates: Option<(&str, &str)>,
) -> Party {
    let key = genkey(base, name, bits);
    let csr = base.join(format!("{name}.csr"));
    let cert = base.join(format!("{name}.pem"));
    let extfile = base.join(format!("{name}.ext"));
    std::fs::write(&extfile, ext).unwrap();
    openssl(
        base,
        &[
            "req",
            "-new",
            "-key",
            key.to_str().unwrap(),
            "-subj",
            subj,
            "-out",
            csr.to_str().unwrap(),
        ],
    );
    let cnf = ca.dir.join("ca.cnf");
    let mut args: Vec<String> = [
        "ca",
        "-batch",
        "-notext",
        "-config",
        cnf.to_str().unwrap(),
        "-cert",
        ca.party.cert.to_str().unwrap(),
        "-keyfile",
        ca.party.key.to_str().unwrap(),
        "-in",
        csr.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
        "-extfile",
        extfile.to_str().unwrap(),
        "-extensions",
        extensions,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match dates {
        Some((start, end)) => {
            args.extend([
                "-startdate".into(),
                start.into(),
                "-enddate".into(),
                end.into(),
            ]);
        }
        None => args.extend(["-days".into(), "825".into()]),
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    openssl(base, &args);
    Party { cert, key }
}

fn self_signed(base: &Path, name: &str, cn: &str) -> Party {
    let key = genkey(base, name, 2048);
    let cert = base.join(format!("{name}.pem"));
    openssl(
        base,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            key.to_str().unwrap(),
            "-subj",
            &format!("/CN={cn}"),
            "-days",
            "3650",
            "-sha256",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectKeyIdentifier=hash",
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    Party { cert, key }
}

fn build() -> Pki {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("smime-pki-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.as_path();

    let root = self_signed(d, "root", "Directmail Test Root CA");
    let root_ca = ca_dir(d, "root", root.clone());
    let inter = issue(
        d,
        &root_ca,
        "inter",
        "/CN=Directmail Test Intermediate CA",
        CA_CNF,
        "v3_ca",
        2048,
        None,
    );
    let inter_ca = ca_dir(d, "inter", inter.clone());
    let ee = |name: &str, subj: &str, san: Option<&str>, bits: u32, dates: Option<(&str, &str)>| {
        issue(d, &inter_ca, name, subj, &ee_ext(san), "ee", bits, dates)
    };
    let sender = ee(
        "sender",
        "/CN=Dr Smith",
        Some(&format!("email:{SENDER}")),
        2048,
        None,
    );
    let recipient = ee(
        "recipient",
        "/CN=Nurse Jones",
        Some(&format!("email:{RECIPIENT}")),
        2048,
        None,
    );
    let recipient_domain = ee(
        "recipient-domain",
        "/CN=direct.receiver.example",
        Some("DNS:direct.receiver.example"),
        2048,
        None,
    );
    // A PKCS#1 ("RSA PRIVATE KEY") copy of this key exercises the other key format.
    let pkcs1 = d.join("recipient-domain.pkcs1.key");
    openssl(
        d,
        &[
            "rsa",
            "-in",
            recipient_domain.key.to_str().unwrap(),
            "-traditional",
            "-out",
            pkcs1.to_str().unwrap(),
        ],
    );
    let recipient_domain = Party {
        cert: recipient_domain.cert,
        key: pkcs1,
    };
    let expired = ee(
        "expired",
        "/CN=Dr Expired",
        Some(&format!("email:{SENDER}")),
        2048,
        Some(("20200101000000Z", "20210101000000Z")),
    );
    let not_yet_valid = ee(
        "future",
        "/CN=Dr Future",
        Some(&format!("email:{SENDER}")),
        2048,
        Some(("20300101000000Z", "20310101000000Z")),
    );
    let dn_email_only = ee(
        "dn-email",
        &format!("/CN=Dr Smith/emailAddress={SENDER}"),
        None,
        2048,
        None,
    );
    let short_key = ee(
        "short",
        "/CN=Dr Short",
        Some(&format!("email:{SENDER}")),
        1024,
        None,
    );
    let revoked = ee(
        "revoked",
        "/CN=Dr Revoked",
        Some(&format!("email:{SENDER}")),
        2048,
        None,
    );

    let ecdsa = ee(
        "ecdsa",
        "/CN=Dr Elliptic",
        Some(&format!("email:{SENDER}")),
        0,
        None,
    );

    let cnf = inter_ca.dir.join("ca.cnf");
    let (cnf, ik, ic) = (
        cnf.to_str().unwrap(),
        inter.key.to_str().unwrap(),
        inter.cert.to_str().unwrap(),
    );
    openssl(
        d,
        &[
            "ca",
            "-config",
            cnf,
            "-keyfile",
            ik,
            "-cert",
            ic,
            "-revoke",
            revoked.cert.to_str().unwrap(),
        ],
    );
    openssl(
        d,
        &[
            "ca",
            "-config",
            cnf,
            "-keyfile",
            ik,
            "-cert",
            ic,
            "-gencrl",
            "-out",
            "inter.crl.pem",
        ],
    );
    let crl_der = openssl(d, &["crl", "-in", "inter.crl.pem", "-outform", "DER"]);

    let stranger_root = self_signed(d, "stranger-root", "Somebody Else Root CA");
    let stranger_ca = ca_dir(d, "stranger", stranger_root.clone());
    let stranger = issue(
        d,
        &stranger_ca,
        "stranger",
        "/CN=Dr Stranger",
        &ee_ext(Some(&format!("email:{SENDER}"))),
        "ee",
        2048,
        None,
    );

    Pki {
        dir,
        root,
        inter,
        sender,
        recipient,
        recipient_domain,
        expired,
        not_yet_valid,
        dn_email_only,
        short_key,
        revoked,
        stranger,
        ecdsa,
        crl_der,
    }
}

/// A plain test message from SENDER to RECIPIENT with CRLF line ends.
pub fn sample_message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Dr Smith <{SENDER}>\r\nTo: {RECIPIENT}\r\nSubject: {subject}\r\n\
         Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <test-1@direct.sender.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Sign `entity` with openssl (detached multipart/signed, SMIME output).
pub fn openssl_sign(party: &Party, entity: &[u8], extra: &[&str]) -> Vec<u8> {
    let p = pki();
    let input = scratch("to-sign.eml");
    std::fs::write(&input, entity).unwrap();
    let mut args = vec![
        "cms",
        "-sign",
        "-binary",
        "-in",
        input.to_str().unwrap(),
        "-signer",
        party.cert.to_str().unwrap(),
        "-inkey",
        party.key.to_str().unwrap(),
        "-certfile",
        p.inter.cert.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    openssl(&p.dir, &args)
}

/// Encrypt `entity` for `recipient` with openssl, with outer From/To/Subject.
pub fn openssl_encrypt(recipient: &Party, entity: &[u8], extra: &[&str]) -> Vec<u8> {
    let p = pki();
    let input = scratch("to-encrypt.eml");
    std::fs::write(&input, entity).unwrap();
    let from = format!("Dr Smith <{SENDER}>");
    let mut args = vec![
        "cms",
        "-encrypt",
        "-binary",
        "-in",
        input.to_str().unwrap(),
        "-from",
        &from,
        "-to",
        RECIPIENT,
        "-subject",
        "Direct test",
        "-recip",
        recipient.cert.to_str().unwrap(),
    ];
    // Options after -recip (-keyopt) apply to that recipient.
    args.extend_from_slice(extra);
    openssl(&p.dir, &args)
}

/// The message/rfc822 wrapper the tests sign with openssl.
pub fn wrapped(message: &[u8]) -> Vec<u8> {
    let mut w = b"Content-Type: message/rfc822\r\n\r\n".to_vec();
    w.extend_from_slice(message);
    w
}
