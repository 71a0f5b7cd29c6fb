//! OpenSSL signs and encrypts; the crate decrypts, verifies and trusts.

use std::time::SystemTime;

use directmail_smime::{ReasonCode, judge};

use crate::pki::{openssl_encrypt, openssl_sign, pki, sample_message, wrapped};

fn openssl_message(sign_extra: &[&str], encrypt_extra: &[&str]) -> Vec<u8> {
    let p = pki();
    let message = sample_message("From OpenSSL", "Discharge summary attached.");
    let signed = openssl_sign(&p.sender, &wrapped(&message), sign_extra);
    openssl_encrypt(&p.recipient, &signed, encrypt_extra)
}

fn assert_trusted(sealed: &[u8]) {
    let p = pki();
    let v = judge(
        sealed,
        &[p.recipient_identity()],
        &p.trust_with_crl(),
        SystemTime::now(),
    );
    assert_eq!(v.code, ReasonCode::Trusted, "{v:?}");
    let inner = String::from_utf8(v.message.unwrap()).unwrap();
    assert!(inner.contains("Discharge summary attached."), "{inner}");
}

#[test]
fn openssl_aes256_with_pkcs1v15_and_sha256_is_trusted() {
    assert_trusted(&openssl_message(&["-md", "sha256"], &["-aes256"]));
}

#[test]
fn openssl_aes128_is_trusted() {
    assert_trusted(&openssl_message(&["-md", "sha256"], &["-aes128"]));
}

#[test]
fn openssl_aes192_is_trusted() {
    assert_trusted(&openssl_message(&["-md", "sha256"], &["-aes192"]));
}

#[test]
fn openssl_oaep_sha256_key_transport_is_trusted() {
    assert_trusted(&openssl_message(
        &[],
        &[
            "-aes256",
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha256",
        ],
    ));
}

#[test]
fn openssl_oaep_sha1_key_transport_is_trusted() {
    assert_trusted(&openssl_message(
        &[],
        &["-aes256", "-keyopt", "rsa_padding_mode:oaep"],
    ));
}

#[test]
fn openssl_oaep_sha512_key_transport_is_trusted() {
    assert_trusted(&openssl_message(
        &[],
        &[
            "-aes256",
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha512",
            "-keyopt",
            "rsa_mgf1_md:sha512",
        ],
    ));
}

#[test]
fn openssl_streamed_ber_sign_and_encrypt_is_trusted() {
    assert_trusted(&openssl_message(&["-stream"], &["-aes256", "-stream"]));
}

#[test]
fn openssl_aes256_gcm_auth_enveloped_data_is_trusted() {
    assert_trusted(&openssl_message(&[], &["-aes-256-gcm"]));
}

#[test]
fn openssl_aes128_gcm_streamed_is_trusted() {
    assert_trusted(&openssl_message(&[], &["-aes-128-gcm", "-stream"]));
}

#[test]
fn openssl_sha384_and_sha512_signatures_are_trusted() {
    assert_trusted(&openssl_message(&["-md", "sha384"], &["-aes256"]));
    assert_trusted(&openssl_message(&["-md", "sha512"], &["-aes256"]));
}

#[test]
fn openssl_rsa_pss_signature_is_trusted() {
    assert_trusted(&openssl_message(
        &["-keyopt", "rsa_padding_mode:pss"],
        &["-aes256"],
    ));
}

#[test]
fn openssl_subject_key_identifier_signer_and_recipient_are_trusted() {
    assert_trusted(&openssl_message(&["-keyid"], &["-aes256", "-keyid"]));
}

#[test]
fn openssl_opaque_signed_data_with_streamed_chunks_is_trusted() {
    assert_trusted(&openssl_message(&["-nodetach", "-stream"], &["-aes256"]));
}

#[test]
fn openssl_text_mode_signature_with_lf_line_ends_is_trusted() {
    let p = pki();
    let message = sample_message("LF", "Discharge summary attached.");
    let lf: Vec<u8> = wrapped(&message)
        .into_iter()
        .filter(|&b| b != b'\r')
        .collect();
    // Without -binary openssl canonicalises to CRLF for the digest but writes LF.
    let input = crate::pki::scratch("lf.eml");
    std::fs::write(&input, &lf).unwrap();
    let signed = crate::pki::openssl(
        &p.dir,
        &[
            "cms",
            "-sign",
            "-in",
            input.to_str().unwrap(),
            "-signer",
            p.sender.cert.to_str().unwrap(),
            "-inkey",
            p.sender.key.to_str().unwrap(),
            "-certfile",
            p.inter.cert.to_str().unwrap(),
        ],
    );
    assert_trusted(&openssl_encrypt(&p.recipient, &signed, &["-aes256"]));
}

#[test]
fn an_extra_expired_signer_is_ignored_when_a_good_signer_exists() {
    let p = pki();
    let message = sample_message("Two signers", "Discharge summary attached.");
    let signed = openssl_sign(
        &p.expired,
        &wrapped(&message),
        &[
            "-signer",
            p.sender.cert.to_str().unwrap(),
            "-inkey",
            p.sender.key.to_str().unwrap(),
        ],
    );
    assert_trusted(&openssl_encrypt(&p.recipient, &signed, &["-aes256"]));
}

#[test]
fn a_domain_bound_signer_is_trusted_for_any_address_in_its_domain() {
    let p = pki();
    let message = format!(
        "From: Front Desk <front.desk@direct.receiver.example>\r\nTo: {}\r\nSubject: Domain\r\n\
         Message-ID: <d@x>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\nDischarge summary attached.\r\n",
        crate::pki::SENDER
    );
    let signed = openssl_sign(&p.recipient_domain, &wrapped(message.as_bytes()), &[]);
    let sealed = openssl_encrypt(&p.sender, &signed, &["-aes256"]);
    // The helper writes the usual sender as outer From; this message is from the desk.
    let sealed = String::from_utf8(sealed).unwrap().replacen(
        &format!("From: Dr Smith <{}>", crate::pki::SENDER),
        "From: Front Desk <front.desk@direct.receiver.example>",
        1,
    );
    let v = judge(
        sealed.as_bytes(),
        &[p.sender_identity()],
        &p.trust(),
        SystemTime::now(),
    );
    assert_eq!(v.code, ReasonCode::Trusted, "{v:?}");
}
