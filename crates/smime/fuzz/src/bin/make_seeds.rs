//! Writes the fuzz fixtures (a development CA, a domain-bound recipient and an
//! address-bound sender, made with `directmail_smime::DevCa`) and the seed
//! corpus under `corpus/judge/`. Run from `crates/smime/fuzz`:
//! `cargo run --release --bin make-seeds` (fixtures are kept when present, so
//! the committed seeds stay decryptable; pass `--new-pki` to replace them).

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use der::EncodePem;
use directmail_smime::{
    ContentCipher, DevCa, Identity, KeyTransport, OuterSubject, Recipient, SealOptions, envelope,
    seal, sign,
};
use directmail_smime_fuzz::{MODE_ENVELOPE, MODE_MESSAGE, MODE_SIGNED_ENTITY};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const SENDER: &str = "dr.who@direct.dev-sender.example";
const DOMAIN: &str = "direct.dev-receiver.example";

fn main() -> Result<()> {
    let new_pki = std::env::args().any(|a| a == "--new-pki");
    let fixtures = Path::new("fixtures");
    if new_pki || !fixtures.join("recipient.key.der").exists() {
        make_fixtures(fixtures)?;
    }
    let recipient = Identity::from_pem_or_der(
        &fs::read(fixtures.join("recipient.pem"))?,
        &fs::read(fixtures.join("recipient.key.der"))?,
    )?;
    let sender = Identity::from_pem_or_der(
        &fs::read(fixtures.join("sender.pem"))?,
        &fs::read(fixtures.join("sender.key.der"))?,
    )?;
    // Sign at the fuzz clock (one day after notBefore), like the target judges.
    let now = recipient
        .certificate()
        .tbs_certificate()
        .validity()
        .not_before
        .to_system_time()
        + Duration::from_secs(86_400);

    let corpus = Path::new("corpus/judge");
    fs::create_dir_all(corpus)?;
    let to = |t| {
        vec![Recipient {
            certificate: recipient.certificate().clone(),
            key_transport: t,
        }]
    };
    let plain = message("Referral", "Please see the referral for J. Doe.\r\n", None);
    let with_attachment = message(
        "=?UTF-8?B?TGFid2VydGUgZsO8ciBKLiBEb2U=?=",
        "Results attached.\r\n",
        Some(&[
            0x25, 0x50, 0x44, 0x46, 0x2d, 0x31, 0x2e, 0x34, 0x0a, 0x00, 0xff,
        ]),
    );

    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let default = SealOptions::default();
    let aes128 = SealOptions {
        cipher: ContentCipher::Aes128Cbc,
        outer_subject: OuterSubject::Keep,
        ..SealOptions::default()
    };
    seeds.push((
        "message-oaep-aes256".into(),
        seal(
            &plain,
            &sender,
            &to(KeyTransport::RsaOaepSha256),
            &default,
            now,
        )?,
    ));
    seeds.push((
        "message-pkcs1-aes128-attachment".into(),
        seal(
            &with_attachment,
            &sender,
            &to(KeyTransport::RsaPkcs1v15),
            &aes128,
            now,
        )?,
    ));
    let mut wrapped = b"Content-Type: message/rfc822\r\n\r\n".to_vec();
    wrapped.extend_from_slice(&plain);
    let signed = sign(&wrapped, &sender, now)?;
    seeds.push(("signed-entity".into(), signed.clone()));
    seeds.push((
        "envelope-der".into(),
        envelope(
            &signed,
            &to(KeyTransport::RsaPkcs1v15),
            ContentCipher::Aes128Cbc,
        )?,
    ));

    for (name, bytes) in seeds {
        let mode = if name.starts_with("message") {
            MODE_MESSAGE
        } else if name.starts_with("signed") {
            MODE_SIGNED_ENTITY
        } else {
            MODE_ENVELOPE
        };
        let mut data = vec![mode];
        data.extend_from_slice(&bytes);
        fs::write(corpus.join(format!("seed-{name}")), data)?;
    }
    fs::write(corpus.join("seed-empty"), b"")?;
    fs::write(
        corpus.join("seed-not-encrypted"),
        [&[MODE_MESSAGE][..], &plain[..]].concat(),
    )?;
    println!("wrote seeds to {}", corpus.display());
    Ok(())
}

fn make_fixtures(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let now = SystemTime::now();
    let ca = DevCa::generate("directmail fuzz root", now)?;
    let (ca_pem, ca_key) = ca.to_pem()?;
    fs::write(dir.join("ca.pem"), ca_pem)?;
    fs::write(dir.join("ca.key.pem"), ca_key.as_bytes())?;
    for (name, identity) in [
        ("recipient", ca.issue_domain(DOMAIN, now)?),
        ("sender", ca.issue_address(SENDER, now)?),
    ] {
        let pem = identity.certificate().to_pem(der::pem::LineEnding::LF)?;
        fs::write(dir.join(format!("{name}.pem")), pem)?;
        fs::write(
            dir.join(format!("{name}.key.der")),
            identity.private_key_pkcs8_der()?.as_slice(),
        )?;
    }
    println!("wrote new fixtures to {}", dir.display());
    Ok(())
}

fn message(subject: &str, body: &str, attachment: Option<&[u8]>) -> Vec<u8> {
    let head = format!(
        "From: Dr Who <{SENDER}>\r\nTo: records@{DOMAIN}\r\nSubject: {subject}\r\n\
         Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <seed@direct.dev-sender.example>\r\n\
         MIME-Version: 1.0\r\n"
    );
    let mut m = head.into_bytes();
    match attachment {
        None => {
            m.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n\r\n");
            m.extend_from_slice(body.as_bytes());
        }
        Some(bytes) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            m.extend_from_slice(
                format!(
                    "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
                     Content-Type: text/plain; charset=utf-8\r\n\r\n{body}--b1\r\n\
                     Content-Type: application/octet-stream\r\n\
                     Content-Disposition: attachment; filename=\"a.bin\"\r\n\r\n{hex}\r\n--b1--\r\n"
                )
                .as_bytes(),
            );
        }
    }
    m
}
