//! The key unwrap gives no oracle (RFC 3218 §2.3.2, issue 16): a message whose
//! key transport is damaged and one whose content is damaged are refused with
//! the same reason code, sentence and detail, for PKCS#1 v1.5 and OAEP alike.
//! The unwrap carries on with a random content key whenever it fails, so both
//! failures are the same content-decryption failure, after the same work. OAEP
//! with an MGF1 hash other than the OAEP hash (made by openssl) runs on another
//! code path (AWS-LC's EVP API) and is held to the same.

use std::time::SystemTime;

use directmail_smime::{
    ContentCipher, KeyTransport, ReasonCode, Recipient, Verdict, envelope, judge, sign,
};

use crate::pki::{SENDER, openssl_encrypt, pki, sample_message, wrapped};

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(A[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Who wraps the content key, and how.
#[derive(Clone, Copy, Debug)]
enum Wrap {
    /// The crate's own `envelope`.
    Ours(KeyTransport),
    /// `openssl cms -encrypt` with RSA-OAEP, this OAEP hash and this MGF1 hash.
    OpensslOaep(&'static str, &'static str),
}

/// A signed, enveloped message for the recipient alone (one recipient info),
/// as DER.
fn enveloped(wrap: Wrap, cipher: ContentCipher) -> Vec<u8> {
    let p = pki();
    let entity = wrapped(&sample_message("Unwrap", "Body."));
    let signed = sign(&entity, &p.sender_identity(), SystemTime::now()).unwrap();
    match wrap {
        Wrap::Ours(transport) => {
            let recipient = Recipient {
                certificate: p.recipient.certificate(),
                key_transport: transport,
            };
            envelope(&signed, &[recipient], cipher).unwrap()
        }
        Wrap::OpensslOaep(md, mgf1) => {
            let cipher = match cipher {
                ContentCipher::Aes128Cbc => "-aes128",
                ContentCipher::Aes256Cbc => "-aes256",
            };
            let md = format!("rsa_oaep_md:{md}");
            let mgf1 = format!("rsa_mgf1_md:{mgf1}");
            openssl_encrypt(
                &p.recipient,
                &signed,
                &[
                    cipher,
                    "-keyopt",
                    "rsa_padding_mode:oaep",
                    "-keyopt",
                    &md,
                    "-keyopt",
                    &mgf1,
                    "-outform",
                    "DER",
                ],
            )
        }
    }
}

fn judged(der: &[u8]) -> Verdict {
    let p = pki();
    let msg = format!(
        "From: <{SENDER}>\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        base64(der)
    );
    judge(
        msg.as_bytes(),
        &[p.recipient_identity()],
        &p.trust(),
        SystemTime::now(),
    )
}

/// Offset of the 2048-bit encryptedKey (OCTET STRING 04 82 01 00): the only
/// recipient info comes before the ciphertext, so the first match is it.
fn encrypted_key(der: &[u8]) -> usize {
    der.windows(4)
        .position(|w| w == [0x04, 0x82, 0x01, 0x00])
        .unwrap()
        + 4
}

fn with_damaged_key_transport(mut der: Vec<u8>) -> Vec<u8> {
    let at = encrypted_key(&der) + 100;
    der[at] ^= 0x55;
    der
}

fn with_damaged_content(mut der: Vec<u8>) -> Vec<u8> {
    // The ciphertext ends the DER. Flipping 0x20 in the last byte of the
    // next-to-last block flips it in the padding byte (1..=16 becomes 33..=48):
    // the padding check fails, always.
    let at = der.len() - 17;
    der[at] ^= 0x20;
    der
}

/// A content key of the wrong length for the content cipher: AES-128's key,
/// with the algorithm identifier changed to AES-256-CBC.
fn with_key_of_the_wrong_length(mut der: Vec<u8>) -> Vec<u8> {
    let aes128_cbc = [
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02,
    ];
    let at = der.windows(11).position(|w| w == aes128_cbc).unwrap() + 10;
    der[at] = 0x2a;
    der
}

#[test]
fn a_damaged_key_transport_and_a_damaged_content_give_the_same_verdict_for_pkcs1v15_and_oaep() {
    for transport in [
        Wrap::Ours(KeyTransport::RsaPkcs1v15),
        Wrap::Ours(KeyTransport::RsaOaepSha256),
        Wrap::OpensslOaep("sha256", "sha1"),
    ] {
        let good = enveloped(transport, ContentCipher::Aes256Cbc);
        assert_eq!(judged(&good).code, ReasonCode::Trusted);

        let mut seen = Vec::new();
        // Several rounds: the random key of a failed unwrap passes the CBC
        // padding check now and then; the verdict must not change when it does.
        for _ in 0..8 {
            let fresh = enveloped(transport, ContentCipher::Aes256Cbc);
            seen.push(judged(&with_damaged_key_transport(fresh.clone())));
            seen.push(judged(&with_damaged_content(fresh)));
        }
        let short = enveloped(transport, ContentCipher::Aes128Cbc);
        seen.push(judged(&with_key_of_the_wrong_length(short)));

        let first = &seen[0];
        assert_eq!(first.code, ReasonCode::DecryptionFailed, "{first:?}");
        for v in &seen {
            assert_eq!(v.code, first.code, "{transport:?}: {v:?}");
            assert_eq!(v.sentence(), first.sentence(), "{transport:?}");
            assert_eq!(v.detail, first.detail, "{transport:?}");
            assert!(v.message.is_none(), "{v:?}");
        }
        // Nothing in the detail says which part was damaged.
        let detail = first.detail.to_lowercase();
        for word in [
            "padding",
            "unwrap failed",
            "could not unwrap",
            "oaep",
            "pkcs",
        ] {
            assert!(!detail.contains(word), "{detail}");
        }
    }
}
