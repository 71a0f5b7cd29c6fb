//! The crate seals; OpenSSL decrypts and verifies.

use std::time::SystemTime;

use directmail_smime::{
    ContentCipher, KeyTransport, OuterSubject, ReasonCode, Recipient, SealOptions, judge, seal,
};

use crate::pki::{self, RECIPIENT, SENDER, openssl_try, pki, sample_message, scratch};

fn seal_for_recipient(options: &SealOptions, transport: KeyTransport) -> (Vec<u8>, Vec<u8>) {
    let p = pki();
    let message = sample_message("Lab results for J. Doe", "Potassium 4.1 mmol/L.");
    let recipient = Recipient {
        certificate: p.recipient.certificate(),
        key_transport: transport,
    };
    let sealed = seal(
        &message,
        &p.sender_identity(),
        &[recipient],
        options,
        SystemTime::now(),
    )
    .unwrap();
    (message, sealed)
}

/// Decrypt with openssl as `party`, then verify against the root; returns the
/// verified content.
fn openssl_open(party: &pki::Party, sealed: &[u8]) -> Vec<u8> {
    let p = pki();
    let input = scratch("sealed.eml");
    std::fs::write(&input, sealed).unwrap();
    let (ok, decrypted, err) = openssl_try(
        &p.dir,
        &[
            "cms",
            "-decrypt",
            "-in",
            input.to_str().unwrap(),
            "-recip",
            party.cert.to_str().unwrap(),
            "-inkey",
            party.key.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "openssl could not decrypt: {err}");
    let dec = scratch("decrypted.eml");
    std::fs::write(&dec, &decrypted).unwrap();
    let (ok, content, err) = openssl_try(
        &p.dir,
        // No -binary: OpenSSL 3.0's SMIME_read_CMS splits multiparts with LF line
        // ends and relies on text-mode canonicalisation to get CRLF back.
        &[
            "cms",
            "-verify",
            "-in",
            dec.to_str().unwrap(),
            "-CAfile",
            p.root.cert.to_str().unwrap(),
            "-purpose",
            "smimesign",
        ],
        None,
    );
    assert!(ok, "openssl could not verify: {err}");
    content
}

#[test]
fn openssl_decrypts_and_verifies_a_sealed_message_byte_for_byte() {
    let (message, sealed) =
        seal_for_recipient(&SealOptions::default(), KeyTransport::RsaOaepSha256);
    let content = openssl_open(&pki().recipient, &sealed);
    // The signed content is the message/rfc822 wrapper around the message with
    // the delivery-notification request added in front.
    let mut expected = format!(
        "Content-Type: message/rfc822\r\n\r\n\
         Disposition-Notification-To: {SENDER}\r\n\
         Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true\r\n"
    )
    .into_bytes();
    expected.extend_from_slice(&message);
    assert_eq!(
        String::from_utf8(content).unwrap(),
        String::from_utf8(expected).unwrap()
    );
}

#[test]
fn the_sender_can_read_its_own_sent_copy_with_openssl() {
    let (_, sealed) = seal_for_recipient(&SealOptions::default(), KeyTransport::RsaOaepSha256);
    openssl_open(&pki().sender, &sealed);
}

#[test]
fn pkcs1v15_key_transport_and_aes128_are_read_by_openssl() {
    let options = SealOptions {
        cipher: ContentCipher::Aes128Cbc,
        sender_key_transport: KeyTransport::RsaPkcs1v15,
        ..SealOptions::default()
    };
    let (_, sealed) = seal_for_recipient(&options, KeyTransport::RsaPkcs1v15);
    openssl_open(&pki().recipient, &sealed);
    let p = pki();
    let input = scratch("sealed128.eml");
    std::fs::write(&input, &sealed).unwrap();
    let (_, asn1, _) = openssl_try(
        &p.dir,
        &["cms", "-cmsout", "-print", "-in", input.to_str().unwrap()],
        None,
    );
    let asn1 = String::from_utf8_lossy(&asn1);
    assert!(asn1.contains("aes-128-cbc"), "{asn1}");
    assert!(!asn1.contains("rsaesOaep"), "{asn1}");
}

#[test]
fn the_default_is_aes256_with_oaep_sha256_and_one_recipient_info_per_party() {
    let (_, sealed) = seal_for_recipient(&SealOptions::default(), KeyTransport::RsaOaepSha256);
    let p = pki();
    let input = scratch("sealed256.eml");
    std::fs::write(&input, &sealed).unwrap();
    let (ok, asn1, err) = openssl_try(
        &p.dir,
        &["cms", "-cmsout", "-print", "-in", input.to_str().unwrap()],
        None,
    );
    assert!(ok, "{err}");
    let asn1 = String::from_utf8_lossy(&asn1);
    assert!(asn1.contains("aes-256-cbc"), "{asn1}");
    assert_eq!(asn1.matches("rsaesOaep").count(), 2, "{asn1}");
    assert!(asn1.contains("sha256"), "{asn1}");
}

#[test]
fn outer_headers_are_copied_and_the_subject_is_neutral_by_default() {
    let (_, sealed) = seal_for_recipient(&SealOptions::default(), KeyTransport::RsaOaepSha256);
    let text = String::from_utf8(sealed).unwrap();
    let header = text.split("\r\n\r\n").next().unwrap();
    assert!(header.contains(&format!("From: Dr Smith <{SENDER}>\r\n")));
    assert!(header.contains(&format!("To: {RECIPIENT}\r\n")));
    assert!(header.contains("Message-ID: <test-1@direct.sender.example>\r\n"));
    assert!(header.contains("Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n"));
    assert!(header.contains(&format!("Disposition-Notification-To: {SENDER}\r\n")));
    assert!(header.contains(
        "Disposition-Notification-Options: X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true\r\n"
    ));
    assert!(header.contains(
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
    ));
    assert!(
        !header.contains("Lab results"),
        "the real subject leaked: {header}"
    );
    assert!(header.contains("Subject: Direct secure message\r\n"));
}

#[test]
fn the_outer_subject_can_be_kept() {
    let options = SealOptions {
        outer_subject: OuterSubject::Keep,
        ..SealOptions::default()
    };
    let (_, sealed) = seal_for_recipient(&options, KeyTransport::RsaOaepSha256);
    let text = String::from_utf8(sealed).unwrap();
    assert!(text.contains("Subject: Lab results for J. Doe\r\n"));
}

#[test]
fn a_sealed_message_round_trips_through_judge_as_trusted() {
    let (message, sealed) =
        seal_for_recipient(&SealOptions::default(), KeyTransport::RsaOaepSha256);
    let p = pki();
    let v = judge(
        &sealed,
        &[p.recipient_identity()],
        &p.trust_with_crl(),
        SystemTime::now(),
    );
    assert_eq!(v.code, ReasonCode::Trusted, "{v:?}");
    let inner = v.message.unwrap();
    assert!(inner.ends_with(&message));
    let signer = v.signer.unwrap();
    assert_eq!(signer.subject, "CN=Dr Smith");
    assert_eq!(signer.anchor.as_deref(), Some("CN=Directmail Test Root CA"));
    assert_eq!(v.from.as_deref(), Some(SENDER));
}

#[test]
fn a_domain_bound_recipient_with_a_pkcs1_key_reads_a_sealed_message() {
    let p = pki();
    let message = sample_message("Domain recipient", "Body.");
    let sealed = seal(
        &message,
        &p.sender_identity(),
        &[Recipient::new(p.recipient_domain.certificate())],
        &SealOptions::default(),
        SystemTime::now(),
    )
    .unwrap();
    let v = judge(
        &sealed,
        &[p.recipient_domain.identity(&[])],
        &p.trust(),
        SystemTime::now(),
    );
    assert_eq!(v.code, ReasonCode::Trusted, "{v:?}");
    openssl_open(&p.recipient_domain, &sealed);
}

#[test]
fn sealing_refuses_a_1024_bit_recipient_and_an_empty_recipient_list() {
    let p = pki();
    let message = sample_message("Short", "Body.");
    let err = seal(
        &message,
        &p.sender_identity(),
        &[Recipient::new(p.short_key.certificate())],
        &SealOptions::default(),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("2048"), "{err}");
    let err = seal(
        &message,
        &p.sender_identity(),
        &[],
        &SealOptions::default(),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(matches!(err, directmail_smime::SealError::NoRecipients));
}

#[test]
fn sealing_refuses_an_expired_recipient_and_an_expired_signer() {
    let p = pki();
    let message = sample_message("Expired", "Body.");
    let err = seal(
        &message,
        &p.sender_identity(),
        &[Recipient::new(p.expired.certificate())],
        &SealOptions::default(),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    let err = seal(
        &message,
        &p.expired.identity(&[]),
        &[Recipient::new(p.recipient.certificate())],
        &SealOptions::default(),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(
        matches!(err, directmail_smime::SealError::Signing(_)),
        "{err}"
    );
}
