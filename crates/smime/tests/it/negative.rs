//! One test per refusal: each yields its own reason code, none panics.

use std::time::{Duration, SystemTime};

use directmail_smime::{ReasonCode, Recipient, SealOptions, TrustStore, judge, seal};

use crate::pki::{Party, openssl_encrypt, openssl_sign, pki, sample_message, wrapped};

fn signed_by(party: &Party, sign_extra: &[&str]) -> Vec<u8> {
    let p = pki();
    let message = sample_message("Negative", "Body.");
    let signed = openssl_sign(party, &wrapped(&message), sign_extra);
    openssl_encrypt(&p.recipient, &signed, &["-aes256"])
}

fn verdict(sealed: &[u8]) -> directmail_smime::Verdict {
    let p = pki();
    judge(
        sealed,
        &[p.recipient_identity()],
        &p.trust_with_crl(),
        SystemTime::now(),
    )
}

#[test]
fn an_expired_signer_is_refused_with_signer_expired() {
    let v = verdict(&signed_by(&pki().expired, &[]));
    assert_eq!(v.code, ReasonCode::SignerExpired, "{v:?}");
    assert!(v.sentence().contains("expired"));
}

#[test]
fn a_not_yet_valid_signer_is_refused_with_signer_not_yet_valid() {
    let v = verdict(&signed_by(&pki().not_yet_valid, &[]));
    assert_eq!(v.code, ReasonCode::SignerNotYetValid, "{v:?}");
}

#[test]
fn a_valid_signer_judged_years_later_is_refused_with_signer_expired() {
    let p = pki();
    let later = SystemTime::now() + Duration::from_secs(5 * 365 * 86400);
    let v = judge(
        &signed_by(&p.sender, &[]),
        &[p.recipient_identity()],
        &p.trust(),
        later,
    );
    assert_eq!(v.code, ReasonCode::SignerExpired, "{v:?}");
}

#[test]
fn a_signer_from_an_unconfigured_ca_is_refused_with_untrusted_anchor() {
    let v = verdict(&signed_by(&pki().stranger, &[]));
    assert_eq!(v.code, ReasonCode::UntrustedAnchor, "{v:?}");
    assert!(v.sentence().contains("trust anchor"));
}

#[test]
fn a_signer_bound_only_by_subject_dn_email_is_refused_with_sender_not_bound() {
    let v = verdict(&signed_by(&pki().dn_email_only, &[]));
    assert_eq!(v.code, ReasonCode::SenderNotBound, "{v:?}");
}

#[test]
fn a_signer_bound_to_another_address_is_refused_with_sender_not_bound() {
    // The recipient's certificate is address-bound to the recipient, not the From address.
    let v = verdict(&signed_by(&pki().recipient, &[]));
    assert_eq!(v.code, ReasonCode::SenderNotBound, "{v:?}");
}

#[test]
fn a_sha1_signature_is_refused_with_weak_algorithm() {
    let v = verdict(&signed_by(&pki().sender, &["-md", "sha1"]));
    assert_eq!(v.code, ReasonCode::WeakAlgorithm, "{v:?}");
}

#[test]
fn a_1024_bit_signer_key_is_refused_with_weak_algorithm() {
    let v = verdict(&signed_by(&pki().short_key, &[]));
    assert_eq!(v.code, ReasonCode::WeakAlgorithm, "{v:?}");
    assert!(v.detail.contains("1024"), "{v:?}");
}

#[test]
fn a_revoked_signer_is_refused_with_signer_revoked() {
    let v = verdict(&signed_by(&pki().revoked, &[]));
    assert_eq!(v.code, ReasonCode::SignerRevoked, "{v:?}");
}

#[test]
fn a_tampered_body_is_refused_with_content_tampered() {
    let p = pki();
    let message = sample_message("Tamper", "Dose: 5 mg.");
    let signed = openssl_sign(&p.sender, &wrapped(&message), &[]);
    let tampered = String::from_utf8(signed)
        .unwrap()
        .replace("Dose: 5 mg.", "Dose: 50 mg");
    let sealed = openssl_encrypt(&p.recipient, tampered.as_bytes(), &["-aes256"]);
    let v = verdict(&sealed);
    assert_eq!(v.code, ReasonCode::ContentTampered, "{v:?}");
}

#[test]
fn tampered_signed_attributes_are_refused_with_bad_signature() {
    // Seal with the crate, then flip a byte inside the signingTime attribute.
    let p = pki();
    let message = sample_message("Attrs", "Body.");
    let signed =
        directmail_smime::sign(&wrapped(&message), &p.sender_identity(), SystemTime::now())
            .unwrap();
    let text = String::from_utf8(signed).unwrap();
    let (head, rest) = text.split_once("filename=smime.p7s\r\n\r\n").unwrap();
    let (b64, tail) = rest.split_once("--").unwrap();
    let mut der = base64_decode(b64);
    // The signingTime UTCTime follows the OID 1.2.840.113549.1.9.5.
    let oid = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x05];
    let at = der.windows(oid.len()).position(|w| w == oid).unwrap();
    der[at + oid.len() + 6] ^= 0x01; // a digit of the year
    let forged = format!(
        "{head}filename=smime.p7s\r\n\r\n{}--{tail}",
        base64_encode(&der)
    );
    let sealed = openssl_encrypt(&p.recipient, forged.as_bytes(), &["-aes256"]);
    let v = verdict(&sealed);
    assert_eq!(v.code, ReasonCode::BadSignature, "{v:?}");
}

#[test]
fn an_unsigned_message_is_refused_with_not_signed() {
    let p = pki();
    let sealed = openssl_encrypt(
        &p.recipient,
        &sample_message("Unsigned", "Body."),
        &["-aes256"],
    );
    let v = verdict(&sealed);
    assert_eq!(v.code, ReasonCode::NotSigned, "{v:?}");
}

#[test]
fn a_signed_but_unencrypted_message_is_refused_with_not_encrypted() {
    let p = pki();
    let signed = openssl_sign(&p.sender, &wrapped(&sample_message("Plain", "Body.")), &[]);
    assert_eq!(verdict(&signed).code, ReasonCode::NotEncrypted);
    assert_eq!(
        verdict(&sample_message("Plain", "Body.")).code,
        ReasonCode::NotEncrypted
    );
}

#[test]
fn a_message_for_someone_else_is_refused_with_no_key_for_recipient() {
    let p = pki();
    let message = sample_message("Other", "Body.");
    let sealed = seal(
        &message,
        &p.sender_identity(),
        &[Recipient::new(p.recipient.certificate())],
        &SealOptions::default(),
        SystemTime::now(),
    )
    .unwrap();
    // Opened with a key the message was not encrypted for.
    let v = judge(
        &sealed,
        &[p.recipient_domain.identity(&[])],
        &p.trust(),
        SystemTime::now(),
    );
    assert_eq!(v.code, ReasonCode::NoKeyForRecipient, "{v:?}");
}

#[test]
fn an_empty_trust_store_trusts_nobody() {
    let p = pki();
    let v = judge(
        &signed_by(&p.sender, &[]),
        &[p.recipient_identity()],
        &TrustStore::default(),
        SystemTime::now(),
    );
    assert_eq!(v.code, ReasonCode::UntrustedAnchor, "{v:?}");
}

#[test]
fn garbage_and_truncated_input_is_malformed_and_never_panics() {
    let p = pki();
    let good = signed_by(&p.sender, &[]);
    let keys = [p.recipient_identity()];
    let trust = p.trust();
    let now = SystemTime::now();
    let text = String::from_utf8(good.clone()).unwrap();
    let (head, body) = text
        .split_once("\n\n")
        .or_else(|| text.split_once("\r\n\r\n"))
        .unwrap();
    let der = base64_decode(body);
    // Truncate the DER at many points; re-wrap as a proper MIME body.
    for cut in (0..der.len()).step_by(37).chain([1, 2, der.len() - 1]) {
        let msg = format!("{head}\n\n{}", base64_encode(&der[..cut]));
        let v = judge(msg.as_bytes(), &keys, &trust, now);
        assert!(
            matches!(
                v.code,
                ReasonCode::Malformed
                    | ReasonCode::DecryptionFailed
                    | ReasonCode::NoKeyForRecipient
            ),
            "cut {cut}: {v:?}"
        );
    }
    // Random bytes (a fixed xorshift sequence), raw and as a pkcs7 body.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for len in [0usize, 1, 7, 64, 500, 4096] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = judge(&bytes, &keys, &trust, now);
        let msg = format!("{head}\n\n{}", base64_encode(&bytes));
        let v = judge(msg.as_bytes(), &keys, &trust, now);
        assert_eq!(v.code, ReasonCode::Malformed, "len {len}: {v:?}");
    }
    let v = judge(
        format!("{head}\n\n!!!not base64!!!").as_bytes(),
        &keys,
        &trust,
        now,
    );
    assert_eq!(v.code, ReasonCode::Malformed);
}

fn base64_decode(s: &str) -> Vec<u8> {
    let p = pki();
    let f = crate::pki::scratch("b64.txt");
    std::fs::write(&f, s.replace("\r", "")).unwrap();
    crate::pki::openssl(&p.dir, &["base64", "-d", "-in", f.to_str().unwrap()])
}

fn base64_encode(b: &[u8]) -> String {
    let p = pki();
    let f = crate::pki::scratch("raw.bin");
    std::fs::write(&f, b).unwrap();
    String::from_utf8(crate::pki::openssl(
        &p.dir,
        &["base64", "-in", f.to_str().unwrap()],
    ))
    .unwrap()
}

#[test]
fn an_ecdsa_signer_is_refused_with_unsupported_algorithm_and_says_so() {
    let v = verdict(&signed_by(&pki().ecdsa, &[]));
    assert_eq!(v.code, ReasonCode::UnsupportedAlgorithm, "{v:?}");
    assert!(v.detail.contains("ECDSA"), "{v:?}");
}

#[test]
fn an_outer_from_that_differs_from_the_signed_from_is_refused_with_sender_not_bound() {
    let p = pki();
    let message = sample_message("Spoof", "Body.");
    let signed = openssl_sign(&p.sender, &wrapped(&message), &[]);
    let sealed = openssl_encrypt(&p.recipient, &signed, &["-aes256"]);
    let spoofed = String::from_utf8(sealed).unwrap().replacen(
        "From: Dr Smith <dr.smith@",
        "From: Mallory <mallory@",
        1,
    );
    let v = verdict(spoofed.as_bytes());
    assert_eq!(v.code, ReasonCode::SenderNotBound, "{v:?}");
}

#[test]
fn flipped_bytes_anywhere_in_a_sealed_message_never_panic() {
    let p = pki();
    let sealed = directmail_smime::seal(
        &sample_message("Flip", "Body."),
        &p.sender_identity(),
        &[Recipient::new(p.recipient.certificate())],
        &SealOptions::default(),
        SystemTime::now(),
    )
    .unwrap();
    let text = String::from_utf8(sealed).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let der = base64_decode(body);
    let keys = [p.recipient_identity()];
    let trust = p.trust();
    let mut x: u64 = 0x2545f4914f6cdd1d;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut d = der.clone();
        let at = (x as usize) % d.len();
        d[at] ^= (x >> 32) as u8 | 1;
        let msg = format!("{head}\r\n\r\n{}", base64_encode(&d));
        let v = judge(msg.as_bytes(), &keys, &trust, SystemTime::now());
        // Whatever the damage, the result is a refusal (or, for a flip in an
        // unauthenticated spot such as an unused parameter, still trusted).
        let _ = v.code;
    }
}

#[test]
fn a_corrupted_pkcs1v15_key_for_our_certificate_is_refused_with_decryption_failed() {
    // RFC 3218 §2.3.2: a bad PKCS#1 v1.5 unwrap carries on with a random key, so
    // it surfaces as a content failure, like any other damage.
    let p = pki();
    let options = SealOptions {
        sender_key_transport: directmail_smime::KeyTransport::RsaPkcs1v15,
        ..SealOptions::default()
    };
    let recipient = Recipient {
        certificate: p.recipient.certificate(),
        key_transport: directmail_smime::KeyTransport::RsaPkcs1v15,
    };
    let sealed = seal(
        &sample_message("Corrupt key", "Body."),
        &p.sender_identity(),
        &[recipient],
        &options,
        SystemTime::now(),
    )
    .unwrap();
    let text = String::from_utf8(sealed).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut der = base64_decode(body);
    // Corrupt every encryptedKey (256-byte OCTET STRINGs: 04 82 01 00).
    let mut i = 0;
    while i + 4 < der.len() {
        if der[i..i + 4] == [0x04, 0x82, 0x01, 0x00] {
            der[i + 4 + 100] ^= 0x55;
            i += 4 + 256;
        } else {
            i += 1;
        }
    }
    let msg = format!("{head}\r\n\r\n{}", base64_encode(&der));
    let v = judge(
        msg.as_bytes(),
        &[p.recipient_identity()],
        &p.trust(),
        SystemTime::now(),
    );
    assert_eq!(v.code, ReasonCode::DecryptionFailed, "{v:?}");
}

#[test]
fn mutated_signatures_inside_a_valid_envelope_never_panic_and_are_never_trusted_when_changed() {
    // Exercise the SignedData parser itself: mutate the p7s (and the signed
    // entity) in the clear, then encrypt properly so decryption succeeds.
    let p = pki();
    let entity = wrapped(&sample_message("Mutate", "Body."));
    let signed = directmail_smime::sign(&entity, &p.sender_identity(), SystemTime::now()).unwrap();
    let text = String::from_utf8(signed).unwrap();
    let (head, rest) = text.split_once("filename=smime.p7s\r\n\r\n").unwrap();
    let (b64, tail) = rest.split_once("--").unwrap();
    let der = base64_decode(b64);
    let keys = [p.recipient_identity()];
    let trust = p.trust();
    let recipients = [Recipient::new(p.recipient.certificate())];
    let mut x: u64 = 0xd1b54a32d192ed03;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..200 {
        let mut d = der.clone();
        let mut structural = false;
        let changes = 1 + next() % 3;
        for _ in 0..changes {
            let at = (next() as usize) % d.len();
            match next() % 3 {
                0 => d[at] ^= (next() as u8) | 1,
                1 => {
                    d.truncate(at.max(1));
                    structural = true;
                }
                _ => {
                    d.insert(at, next() as u8);
                    structural = true;
                }
            }
        }
        let forged = format!(
            "{head}filename=smime.p7s\r\n\r\n{}--{tail}",
            base64_encode(&d)
        );
        let p7m = directmail_smime::envelope(
            forged.as_bytes(),
            &recipients,
            directmail_smime::ContentCipher::Aes256Cbc,
        )
        .unwrap();
        let msg = format!(
            "From: <{}>\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}",
            crate::pki::SENDER,
            base64_encode(&p7m)
        );
        let v = judge(msg.as_bytes(), &keys, &trust, SystemTime::now());
        // A truncated or lengthened SignedData is never trusted. A flipped byte
        // may leave it trusted only where nothing depends on it (the version,
        // the outer digestAlgorithms set); the signed parts never verify.
        if structural {
            assert_ne!(v.code, ReasonCode::Trusted, "round {round}: {v:?}");
        }
    }
}
