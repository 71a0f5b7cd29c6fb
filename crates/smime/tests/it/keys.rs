//! Import checks on keys and certificates.

use std::time::{Duration, SystemTime};

use directmail_smime::{
    Binding, Identity, ImportError, check_import, parse_certificates, parse_private_key,
};

use crate::pki::{RECIPIENT, SENDER, pki};

fn read(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn an_address_bound_certificate_and_its_pkcs8_key_import_cleanly() {
    let p = pki();
    let cert = parse_certificates(&read(&p.sender.cert)).unwrap().remove(0);
    let key = parse_private_key(&read(&p.sender.key)).unwrap();
    check_import(&key, &cert, Binding::Address(SENDER), SystemTime::now()).unwrap();
    check_import(
        &key,
        &cert,
        Binding::Address(&SENDER.to_uppercase()),
        SystemTime::now(),
    )
    .unwrap();
}

#[test]
fn a_domain_bound_certificate_with_a_pkcs1_key_imports_cleanly() {
    let p = pki();
    let cert = parse_certificates(&read(&p.recipient_domain.cert))
        .unwrap()
        .remove(0);
    let key = parse_private_key(&read(&p.recipient_domain.key)).unwrap();
    check_import(
        &key,
        &cert,
        Binding::Domain("direct.receiver.example"),
        SystemTime::now(),
    )
    .unwrap();
}

#[test]
fn der_certificates_and_der_keys_are_read() {
    let p = pki();
    let der = crate::pki::openssl(
        &p.dir,
        &[
            "x509",
            "-in",
            p.sender.cert.to_str().unwrap(),
            "-outform",
            "DER",
        ],
    );
    let key_der = crate::pki::openssl(
        &p.dir,
        &[
            "pkey",
            "-in",
            p.sender.key.to_str().unwrap(),
            "-outform",
            "DER",
        ],
    );
    let cert = parse_certificates(&der).unwrap().remove(0);
    let key = parse_private_key(&key_der).unwrap();
    Identity::new(key, cert, vec![]).unwrap();
}

#[test]
fn a_p7b_bundle_yields_all_its_certificates() {
    let p = pki();
    let out = crate::pki::scratch("bundle.p7b");
    crate::pki::openssl(
        &p.dir,
        &[
            "crl2pkcs7",
            "-nocrl",
            "-certfile",
            p.root.cert.to_str().unwrap(),
            "-certfile",
            p.inter.cert.to_str().unwrap(),
            "-outform",
            "DER",
            "-out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(parse_certificates(&read(&out)).unwrap().len(), 2);
    let pem = crate::pki::openssl(
        &p.dir,
        &["pkcs7", "-inform", "DER", "-in", out.to_str().unwrap()],
    );
    assert_eq!(parse_certificates(&pem).unwrap().len(), 2);
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let p = pki();
    let cert = parse_certificates(&read(&p.sender.cert)).unwrap().remove(0);
    let key = parse_private_key(&read(&p.recipient.key)).unwrap();
    assert_eq!(
        check_import(&key, &cert, Binding::Address(SENDER), SystemTime::now()),
        Err(ImportError::KeyMismatch)
    );
}

#[test]
fn a_1024_bit_key_is_refused_on_import() {
    let p = pki();
    let cert = parse_certificates(&read(&p.short_key.cert))
        .unwrap()
        .remove(0);
    let key = parse_private_key(&read(&p.short_key.key)).unwrap();
    assert_eq!(
        check_import(&key, &cert, Binding::Address(SENDER), SystemTime::now()),
        Err(ImportError::KeyTooShort(1024))
    );
}

#[test]
fn a_certificate_for_another_address_or_only_a_dn_email_is_refused_on_import() {
    let p = pki();
    let cert = parse_certificates(&read(&p.sender.cert)).unwrap().remove(0);
    let key = parse_private_key(&read(&p.sender.key)).unwrap();
    assert!(matches!(
        check_import(&key, &cert, Binding::Address(RECIPIENT), SystemTime::now()),
        Err(ImportError::NotBound(_))
    ));
    assert!(matches!(
        check_import(
            &key,
            &cert,
            Binding::Domain("direct.sender.example"),
            SystemTime::now()
        ),
        Err(ImportError::NotBound(_))
    ));
    let cert = parse_certificates(&read(&p.dn_email_only.cert))
        .unwrap()
        .remove(0);
    let key = parse_private_key(&read(&p.dn_email_only.key)).unwrap();
    assert!(matches!(
        check_import(&key, &cert, Binding::Address(SENDER), SystemTime::now()),
        Err(ImportError::NotBound(_))
    ));
}

#[test]
fn an_expired_certificate_is_refused_on_import() {
    let p = pki();
    let cert = parse_certificates(&read(&p.sender.cert)).unwrap().remove(0);
    let key = parse_private_key(&read(&p.sender.key)).unwrap();
    let later = SystemTime::now() + Duration::from_secs(10 * 365 * 86400);
    assert!(matches!(
        check_import(&key, &cert, Binding::Address(SENDER), later),
        Err(ImportError::NotValidNow { .. })
    ));
}

#[test]
fn garbage_is_neither_a_certificate_nor_a_key() {
    assert_eq!(
        parse_certificates(b"hello").unwrap_err(),
        ImportError::NoCertificate
    );
    assert_eq!(
        parse_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap_err(),
        ImportError::NoCertificate
    );
    assert_eq!(
        parse_private_key(b"\x30\x03\x02\x01\x00").unwrap_err(),
        ImportError::NoPrivateKey
    );
}

#[test]
fn an_identity_never_prints_its_key() {
    let s = format!("{:?}", pki().sender_identity());
    assert!(s.contains("redacted"), "{s}");
    assert!(!s.contains("PrivateKey"), "{s}");
}

fn export_p12(extra: &[&str]) -> Vec<u8> {
    let p = pki();
    let out = crate::pki::scratch("id.p12");
    let mut args = vec![
        "pkcs12",
        "-export",
        "-inkey",
        p.sender.key.to_str().unwrap(),
        "-in",
        p.sender.cert.to_str().unwrap(),
        "-certfile",
        p.inter.cert.to_str().unwrap(),
        "-passout",
        "pass:correct horse",
        "-out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    crate::pki::openssl(&p.dir, &args);
    read(&out)
}

#[test]
fn an_openssl_pkcs12_file_imports_with_its_chain_and_signs() {
    let p = pki();
    let id = Identity::from_pkcs12(&export_p12(&[]), "correct horse").unwrap();
    assert_eq!(id.certificate(), &p.sender.certificate());
    assert_eq!(id.chain().len(), 1);
    let pkcs8 = id.private_key_pkcs8_der().unwrap();
    assert_eq!(
        parse_private_key(&pkcs8).unwrap(),
        parse_private_key(&read(&p.sender.key)).unwrap()
    );
    let sealed = directmail_smime::seal(
        &crate::pki::sample_message("P12", "Body."),
        &id,
        &[directmail_smime::Recipient::new(p.recipient.certificate())],
        &directmail_smime::SealOptions::default(),
        SystemTime::now(),
    )
    .unwrap();
    let v = directmail_smime::judge(
        &sealed,
        &[p.recipient_identity()],
        &p.trust(),
        SystemTime::now(),
    );
    assert_eq!(v.code, directmail_smime::ReasonCode::Trusted, "{v:?}");
}

#[test]
fn a_pkcs12_file_with_the_wrong_password_is_refused() {
    // The MAC is checked before decryption, so every wrong password is reported as
    // one (a wrong AES key alone passes the padding check about once in 256 tries).
    let p12 = export_p12(&[]);
    for i in 0..600 {
        assert_eq!(
            Identity::from_pkcs12(&p12, &format!("wrong {i}")).unwrap_err(),
            ImportError::WrongPassword,
            "password {i}"
        );
    }
    // a SHA-1 MAC (older exporters) is checked as well
    let p12 = export_p12(&["-macalg", "sha1"]);
    assert_eq!(
        Identity::from_pkcs12(&p12, "wrong").unwrap_err(),
        ImportError::WrongPassword
    );
    assert!(Identity::from_pkcs12(&p12, "correct horse").is_ok());
}

#[test]
fn a_legacy_3des_pkcs12_file_is_refused_with_a_clear_error() {
    let p12 = export_p12(&[
        "-keypbe",
        "PBE-SHA1-3DES",
        "-certpbe",
        "PBE-SHA1-3DES",
        "-macalg",
        "sha1",
    ]);
    let err = Identity::from_pkcs12(&p12, "correct horse").unwrap_err();
    assert_eq!(err, ImportError::Pkcs12Legacy);
    assert!(err.to_string().contains("legacy"));
}

#[test]
fn garbage_is_not_a_pkcs12_file() {
    assert!(matches!(
        Identity::from_pkcs12(b"\x30\x03\x02\x01\x03", "x"),
        Err(ImportError::Pkcs12(_))
    ));
    assert!(matches!(
        Identity::from_pkcs12(b"", "x"),
        Err(ImportError::Pkcs12(_))
    ));
}
