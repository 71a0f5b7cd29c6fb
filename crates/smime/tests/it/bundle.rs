//! Trust bundles made by the real `openssl` command line: certs-only `.p7b` (DER and
//! PEM) and signed CMS wrappers, read with and without a configured signer.

use directmail_smime::{BundleError, fingerprint_sha256, read_bundle};

use crate::pki::{Party, openssl, pki, scratch};

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// A certs-only bundle of the test root and intermediate (DER).
fn certs_only() -> Vec<u8> {
    let p = pki();
    openssl(
        &p.dir,
        &[
            "crl2pkcs7",
            "-nocrl",
            "-certfile",
            path(&p.root.cert),
            "-certfile",
            path(&p.inter.cert),
            "-outform",
            "DER",
        ],
    )
}

/// `bundle` signed by `signer` as an attached CMS SignedData (DER), with `extra`
/// options (`-nocerts`, `-md sha1`, …).
fn signed(bundle: &[u8], signer: &Party, extra: &[&str]) -> Vec<u8> {
    let input = scratch("bundle.p7b");
    std::fs::write(&input, bundle).unwrap();
    let mut args = vec![
        "cms",
        "-sign",
        "-nodetach",
        "-binary",
        "-outform",
        "DER",
        "-in",
        path(&input),
        "-signer",
        path(&signer.cert),
        "-inkey",
        path(&signer.key),
    ];
    args.extend_from_slice(extra);
    openssl(&pki().dir, &args)
}

fn fingerprints(certs: &[directmail_smime::Certificate]) -> Vec<String> {
    certs.iter().map(fingerprint_sha256).collect()
}

#[test]
fn a_certs_only_bundle_is_read_in_der_and_pem() {
    let p = pki();
    let der = certs_only();
    let bundle = read_bundle(&der, None).unwrap();
    assert_eq!(
        fingerprints(&bundle.anchors),
        fingerprints(&[p.root.certificate(), p.inter.certificate()])
    );
    assert!(bundle.signed_by.is_none());

    let input = scratch("bundle.der");
    std::fs::write(&input, &der).unwrap();
    let pem = openssl(
        &p.dir,
        &[
            "pkcs7",
            "-inform",
            "DER",
            "-in",
            path(&input),
            "-outform",
            "PEM",
        ],
    );
    assert!(pem.starts_with(b"-----BEGIN PKCS7-----"));
    assert_eq!(read_bundle(&pem, None).unwrap().anchors.len(), 2);
}

#[test]
fn an_unsigned_bundle_is_refused_when_a_signer_is_configured() {
    let signer = pki().sender.certificate();
    assert_eq!(
        read_bundle(&certs_only(), Some(&signer)).unwrap_err(),
        BundleError::Unsigned
    );
}

#[test]
fn a_bundle_without_certificates_is_empty() {
    let empty = openssl(&pki().dir, &["crl2pkcs7", "-nocrl", "-outform", "DER"]);
    assert_eq!(read_bundle(&empty, None).unwrap_err(), BundleError::Empty);
}

#[test]
fn a_signed_wrapper_is_accepted_from_the_configured_signer_only() {
    let p = pki();
    let wrapped = signed(&certs_only(), &p.sender, &[]);
    let bundle = read_bundle(&wrapped, Some(&p.sender.certificate())).unwrap();
    assert_eq!(bundle.anchors.len(), 2);
    assert_eq!(
        bundle.signed_by.as_ref().map(fingerprint_sha256),
        Some(fingerprint_sha256(&p.sender.certificate()))
    );

    // the signature is good, but it is somebody else's
    let err = read_bundle(&wrapped, Some(&p.stranger.certificate())).unwrap_err();
    assert!(
        matches!(&err, BundleError::WrongSigner(who) if who.contains("Dr Smith")),
        "{err:?}"
    );

    // without a configured signer the signature must still verify
    let bundle = read_bundle(&wrapped, None).unwrap();
    assert_eq!(bundle.anchors.len(), 2);
    assert!(bundle.signed_by.is_some());
}

#[test]
fn a_signer_certificate_left_out_of_the_bundle_is_taken_from_the_configuration() {
    let p = pki();
    let wrapped = signed(&certs_only(), &p.sender, &["-nocerts"]);
    let bundle = read_bundle(&wrapped, Some(&p.sender.certificate())).unwrap();
    assert_eq!(bundle.anchors.len(), 2);
    // nobody to verify it with
    assert!(matches!(
        read_bundle(&wrapped, None).unwrap_err(),
        BundleError::BadSignature(_)
    ));
}

#[test]
fn a_tampered_or_weakly_signed_bundle_is_refused() {
    let p = pki();
    let inner = certs_only();
    let mut wrapped = signed(&inner, &p.sender, &[]);
    let at = wrapped
        .windows(inner.len())
        .position(|w| w == inner.as_slice())
        .expect("the bundle is inside the wrapper");
    // a byte in the middle of the signed bundle (inside a certificate's signature)
    wrapped[at + inner.len() / 2] ^= 0x01;
    let err = read_bundle(&wrapped, Some(&p.sender.certificate())).unwrap_err();
    assert!(
        matches!(&err, BundleError::BadSignature(why) if why.contains("does not match")),
        "{err:?}"
    );

    let sha1 = signed(&inner, &p.sender, &["-md", "sha1"]);
    assert!(matches!(
        read_bundle(&sha1, Some(&p.sender.certificate())).unwrap_err(),
        BundleError::BadSignature(_)
    ));
}

#[test]
fn signed_content_that_is_not_a_bundle_is_refused() {
    let p = pki();
    let wrapped = signed(b"just some text", &p.sender, &[]);
    assert_eq!(
        read_bundle(&wrapped, Some(&p.sender.certificate())).unwrap_err(),
        BundleError::NotABundle
    );
}
