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

/// OAEP key transport from openssl with `md` as the OAEP hash and `mgf1` as
/// the MGF1 hash (RFC 4055 §4.1 lets them differ).
fn openssl_oaep(md: &str, mgf1: &str) -> Vec<u8> {
    let md = format!("rsa_oaep_md:{md}");
    let mgf1 = format!("rsa_mgf1_md:{mgf1}");
    openssl_message(
        &[],
        &[
            "-aes256",
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            &md,
            "-keyopt",
            &mgf1,
        ],
    )
}

#[test]
fn openssl_oaep_sha256_with_mgf1_sha1_as_java_sends_it_is_trusted() {
    assert_trusted(&openssl_oaep("sha256", "sha1"));
}

#[test]
fn openssl_oaep_sha384_with_mgf1_sha1_is_trusted() {
    assert_trusted(&openssl_oaep("sha384", "sha1"));
}

#[test]
fn openssl_oaep_sha1_with_mgf1_sha256_is_trusted() {
    assert_trusted(&openssl_oaep("sha1", "sha256"));
}

#[test]
fn openssl_oaep_sha224_with_mgf1_sha512_is_trusted() {
    assert_trusted(&openssl_oaep("sha224", "sha512"));
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

/// Split one definite-length DER element off `buf`: (tag, contents, rest).
fn take(buf: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = buf[0];
    let (len, hdr) = if buf[1] < 0x80 {
        (buf[1] as usize, 2)
    } else {
        let n = (buf[1] & 0x7f) as usize;
        (
            buf[2..2 + n]
                .iter()
                .fold(0usize, |a, b| (a << 8) | *b as usize),
            2 + n,
        )
    };
    (tag, &buf[hdr..hdr + len], &buf[hdr + len..])
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn all(mut buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut v = Vec::new();
    while !buf.is_empty() {
        let (t, c, r) = take(buf);
        v.push((t, c.to_vec()));
        buf = r;
    }
    v
}

#[test]
fn a_definite_length_chunked_encrypted_content_is_read() {
    // Re-encode the crate's own EnvelopedData with encryptedContent as a
    // constructed, definite-length [0] of 100-byte OCTET STRING chunks: legal
    // BER that the typed der decoder refuses.
    let p = pki();
    let message = sample_message("Chunks", "Discharge summary attached.");
    let signed =
        directmail_smime::sign(&wrapped(&message), &p.sender_identity(), SystemTime::now())
            .unwrap();
    let der = directmail_smime::envelope(
        &signed,
        &[directmail_smime::Recipient::new(p.recipient.certificate())],
        directmail_smime::ContentCipher::Aes256Cbc,
    )
    .unwrap();
    let (_, ci, _) = take(&der);
    let ci = all(ci);
    let (_, ed) = (&ci[1].0, &ci[1].1);
    let (_, ed, _) = take(ed);
    let mut ed = all(ed);
    let eci_index = ed.iter().position(|(t, _)| *t == 0x30).unwrap();
    let mut eci = all(&ed[eci_index].1);
    assert_eq!(eci[2].0, 0x80);
    let chunks: Vec<u8> = eci[2].1.chunks(100).flat_map(|c| tlv(0x04, c)).collect();
    eci[2] = (0xa0, chunks);
    ed[eci_index].1 = eci.iter().flat_map(|(t, c)| tlv(*t, c)).collect();
    let ed = tlv(
        0x30,
        &ed.iter().flat_map(|(t, c)| tlv(*t, c)).collect::<Vec<_>>(),
    );
    let mut ci_out = tlv(ci[0].0, &ci[0].1);
    ci_out.extend(tlv(0xa0, &ed));
    let rebuilt = tlv(0x30, &ci_out);
    let msg = format!(
        "From: <{}>\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\
         Content-Transfer-Encoding: binary\r\n\r\n",
        crate::pki::SENDER
    );
    let mut msg = msg.into_bytes();
    msg.extend_from_slice(&rebuilt);
    let v = judge(
        &msg,
        &[p.recipient_identity()],
        &p.trust(),
        SystemTime::now(),
    );
    assert_eq!(v.code, ReasonCode::Trusted, "{v:?}");
}
