//! The built-in development PKI: what it issues is trusted by `judge` with the
//! development root as anchor, accepted by `openssl verify -purpose smimesign`,
//! and bound to exactly the address or domain it was issued for.
//!
//! RSA key generation is the slow part, so the CA and two identities are made
//! once per test binary.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use directmail_smime::pki::DEV_ORGANIZATION;
use directmail_smime::{
    Binding, DevCa, Identity, ImportError, PkiError, ReasonCode, Recipient, SealOptions,
    TrustStore, binds_address, check_import, judge, san_dns_names, san_rfc822_names, seal,
};

use crate::pki::openssl_try;

pub const DEV_SENDER: &str = "dr.who@direct.dev-sender.example";
pub const DEV_RECIPIENT_DOMAIN: &str = "direct.dev-receiver.example";

pub struct DevPki {
    pub ca: DevCa,
    /// Address-bound (rfc822Name = DEV_SENDER).
    pub sender: Identity,
    /// Domain-bound (dNSName = DEV_RECIPIENT_DOMAIN).
    pub recipient: Identity,
    pub dir: tempfile::TempDir,
}

impl DevPki {
    pub fn trust(&self) -> TrustStore {
        TrustStore::with_anchors(vec![self.ca.certificate().clone()])
    }

    /// Write `pem` into the scratch directory under `name`.
    pub fn write(&self, name: &str, pem: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    }
}

/// The shared development PKI (made on first use).
pub fn dev_pki() -> &'static DevPki {
    static DEV: OnceLock<DevPki> = OnceLock::new();
    DEV.get_or_init(|| {
        let now = SystemTime::now();
        let ca = DevCa::generate("directmail test root", now).unwrap();
        let sender = ca.issue_address(DEV_SENDER, now).unwrap();
        let recipient = ca.issue_domain(DEV_RECIPIENT_DOMAIN, now).unwrap();
        DevPki {
            ca,
            sender,
            recipient,
            dir: tempfile::tempdir().unwrap(),
        }
    })
}

pub fn dev_message(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: records@{DEV_RECIPIENT_DOMAIN}\r\nSubject: {subject}\r\n\
         Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <dev-1@direct.dev-sender.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

fn seal_from(sender: &Identity, from: &str) -> Vec<u8> {
    let d = dev_pki();
    let recipient = Recipient {
        certificate: d.recipient.certificate().clone(),
        key_transport: Default::default(),
    };
    seal(
        &dev_message(from, "Referral", "Please see the attached referral."),
        sender,
        &[recipient],
        &SealOptions::default(),
        SystemTime::now(),
    )
    .unwrap()
}

fn pem_of(cert: &directmail_smime::Certificate) -> String {
    use der::EncodePem;
    cert.to_pem(der::pem::LineEnding::LF).unwrap()
}

fn openssl_ok(dir: &Path, args: &[&str]) -> (bool, String) {
    let (ok, out, err) = openssl_try(dir, args, None);
    (ok, format!("{}{err}", String::from_utf8_lossy(&out)))
}

#[test]
fn a_message_between_dev_identities_is_trusted_with_the_dev_root_as_anchor() {
    let d = dev_pki();
    let sealed = seal_from(&d.sender, DEV_SENDER);
    let v = judge(
        &sealed,
        std::slice::from_ref(&d.recipient),
        &d.trust(),
        SystemTime::now(),
    );
    assert_eq!(v.code, ReasonCode::Trusted, "{v:?}");
    let signer = v.signer.unwrap();
    assert!(signer.issuer.contains("not for production"), "{signer:?}");
}

#[test]
fn dev_certificates_are_not_trusted_without_the_dev_anchor() {
    let d = dev_pki();
    let sealed = seal_from(&d.sender, DEV_SENDER);
    let v = judge(
        &sealed,
        std::slice::from_ref(&d.recipient),
        &TrustStore::with_anchors(vec![crate::pki::pki().root.certificate()]),
        SystemTime::now(),
    );
    assert_eq!(v.code, ReasonCode::UntrustedAnchor, "{v:?}");
}

#[test]
fn openssl_verify_accepts_issued_certificates_for_smime_signing_and_encryption() {
    let d = dev_pki();
    let ca = d.write("dev-ca.pem", &d.ca.to_pem().unwrap().0);
    let sender = d.write("dev-sender.pem", &pem_of(d.sender.certificate()));
    let recipient = d.write("dev-recipient.pem", &pem_of(d.recipient.certificate()));
    for cert in [&sender, &recipient] {
        for purpose in ["smimesign", "smimeencrypt"] {
            let (ok, out) = openssl_ok(
                d.dir.path(),
                &[
                    "verify",
                    "-purpose",
                    purpose,
                    "-CAfile",
                    ca.to_str().unwrap(),
                    cert.to_str().unwrap(),
                ],
            );
            assert!(ok && out.contains(": OK"), "{purpose} {cert:?}: {out}");
        }
    }
    // The root itself is a well-formed self-signed CA.
    let (ok, out) = openssl_ok(
        d.dir.path(),
        &[
            "verify",
            "-check_ss_sig",
            "-CAfile",
            ca.to_str().unwrap(),
            ca.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
}

#[test]
fn issued_certificates_carry_the_direct_profile() {
    let d = dev_pki();
    let sender = d.write("profile-sender.pem", &pem_of(d.sender.certificate()));
    let (ok, text) = openssl_ok(
        d.dir.path(),
        &["x509", "-noout", "-text", "-in", sender.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    for needle in [
        "Public-Key: (2048 bit)",
        "Signature Algorithm: sha256WithRSAEncryption",
        "Digital Signature, Key Encipherment",
        "E-mail Protection",
        &format!("email:{DEV_SENDER}"),
        "CA:FALSE",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let ca = d.write("profile-ca.pem", &d.ca.to_pem().unwrap().0);
    let (ok, text) = openssl_ok(
        d.dir.path(),
        &["x509", "-noout", "-text", "-in", ca.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    let subject = d.ca.certificate().tbs_certificate().subject().to_string();
    assert!(subject.contains(DEV_ORGANIZATION), "{subject}");
    // About two years, backdated by an hour for clock skew.
    let v = d.sender.certificate().tbs_certificate().validity();
    let life = v.not_after.to_unix_duration() - v.not_before.to_unix_duration();
    assert!(life >= Duration::from_secs(729 * 86400) && life <= Duration::from_secs(731 * 86400));
}

#[test]
fn address_bound_certificates_bind_exactly_their_address() {
    let d = dev_pki();
    let cert = d.sender.certificate();
    assert_eq!(san_rfc822_names(cert), vec![DEV_SENDER.to_string()]);
    assert!(san_dns_names(cert).is_empty());
    assert!(binds_address(cert, &DEV_SENDER.to_uppercase()));
    assert!(!binds_address(
        cert,
        "someone.else@direct.dev-sender.example"
    ));

    // The import checks accept the identity for its own address only.
    let key =
        directmail_smime::parse_private_key(&d.sender.private_key_pkcs8_der().unwrap()).unwrap();
    let now = SystemTime::now();
    check_import(&key, cert, Binding::Address(DEV_SENDER), now).unwrap();
    assert!(matches!(
        check_import(
            &key,
            cert,
            Binding::Address("x@direct.dev-sender.example"),
            now
        ),
        Err(ImportError::NotBound(_))
    ));
    assert!(matches!(
        check_import(
            &key,
            cert,
            Binding::Domain("direct.dev-sender.example"),
            now
        ),
        Err(ImportError::NotBound(_))
    ));

    // A message claiming another From at the same domain is not bound.
    let sealed = seal_from(&d.sender, "someone.else@direct.dev-sender.example");
    let v = judge(&sealed, std::slice::from_ref(&d.recipient), &d.trust(), now);
    assert_eq!(v.code, ReasonCode::SenderNotBound, "{v:?}");
}

#[test]
fn domain_bound_certificates_bind_every_address_of_their_domain() {
    let d = dev_pki();
    let cert = d.recipient.certificate();
    assert_eq!(san_dns_names(cert), vec![DEV_RECIPIENT_DOMAIN.to_string()]);
    assert!(binds_address(
        cert,
        &format!("anyone@{DEV_RECIPIENT_DOMAIN}")
    ));
    assert!(!binds_address(cert, "anyone@other.example"));
    let key =
        directmail_smime::parse_private_key(&d.recipient.private_key_pkcs8_der().unwrap()).unwrap();
    check_import(
        &key,
        cert,
        Binding::Domain(DEV_RECIPIENT_DOMAIN),
        SystemTime::now(),
    )
    .unwrap();
}

#[test]
fn the_dev_ca_survives_a_pem_round_trip_and_refuses_non_ca_material() {
    let d = dev_pki();
    let (cert_pem, key_pem) = d.ca.to_pem().unwrap();
    assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let again = DevCa::from_pem(&cert_pem, &key_pem).unwrap();
    let (cert2, key2) = again.to_pem().unwrap();
    assert_eq!(cert_pem, cert2);
    assert_eq!(*key_pem, *key2);
    assert!(!format!("{again:?}").contains("PRIVATE"));

    // A leaf certificate with its own key is not a CA.
    let leaf_pem = pem_of(d.sender.certificate());
    let leaf_key = d.dir.path().join("leaf-key.der");
    std::fs::write(
        &leaf_key,
        d.sender.private_key_pkcs8_der().unwrap().as_slice(),
    )
    .unwrap();
    let (ok, leaf_key_pem, err) = openssl_try(
        d.dir.path(),
        &["pkey", "-inform", "DER", "-in", leaf_key.to_str().unwrap()],
        None,
    );
    assert!(ok, "{err}");
    let leaf_key_pem = String::from_utf8(leaf_key_pem).unwrap();
    assert!(matches!(
        DevCa::from_pem(&leaf_pem, &leaf_key_pem),
        Err(PkiError::NotACa)
    ));
    // The CA certificate with someone else's key is refused.
    assert!(matches!(
        DevCa::from_pem(&cert_pem, &leaf_key_pem),
        Err(PkiError::Load(ImportError::KeyMismatch))
    ));
}

#[test]
fn names_that_cannot_be_certified_are_refused() {
    let d = dev_pki();
    let now = SystemTime::now();
    for bad in ["", "no-at-sign", "@domain.example", "local@"] {
        assert!(
            matches!(d.ca.issue_address(bad, now), Err(PkiError::BadName(..))),
            "{bad:?}"
        );
    }
    for bad in ["", "*.wild.example", "a@b.example", "caf\u{e9}.example"] {
        assert!(
            matches!(d.ca.issue_domain(bad, now), Err(PkiError::BadName(..))),
            "{bad:?}"
        );
    }
}
