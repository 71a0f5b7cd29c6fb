//! Round trips with varied headers, bodies and attachments up to a few MB:
//! the crate seals, the crate and OpenSSL both open.

use std::time::SystemTime;

use directmail_smime::{
    ContentCipher, KeyTransport, ReasonCode, Recipient, SealOptions, judge, seal,
};

use crate::pki::{RECIPIENT, SENDER, openssl_try, pki, scratch};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn word(&mut self) -> String {
        let len = 1 + (self.next() % 12) as usize;
        (0..len)
            .map(|_| (b'a' + (self.next() % 26) as u8) as char)
            .collect()
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
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
                out.push(T[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn random_message(rng: &mut XorShift, attachment: usize) -> Vec<u8> {
    let subject: Vec<String> = (0..1 + rng.next() % 8).map(|_| rng.word()).collect();
    let body: Vec<String> = (0..1 + rng.next() % 200).map(|_| rng.word()).collect();
    let boundary = format!("b-{}", rng.word());
    let mut m = format!(
        "From: \"{}\" <{SENDER}>\r\nTo: {RECIPIENT}\r\nCc: other@direct.receiver.example\r\n\
         Subject: {}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{}@direct.sender.example>\r\n\
         In-Reply-To: <prev@x>\r\nReferences: <prev@x>\r\n\tX-Folded: yes\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}\r\n",
        rng.word(),
        subject.join(" "),
        rng.word(),
        body.join(" ") + " caf\u{e9} \u{2713}",
    )
    .into_bytes();
    if attachment > 0 {
        m.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/octet-stream\r\n\
                 Content-Disposition: attachment; filename=\"scan.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                base64(&rng.bytes(attachment))
            )
            .as_bytes(),
        );
    }
    m.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    m
}

#[test]
fn random_messages_with_attachments_round_trip_through_the_crate_and_openssl() {
    let p = pki();
    let mut rng = XorShift(0x853c49e6748fea9b);
    let sizes = [0usize, 1, 1000, 65_537, 3 * 1024 * 1024 + 7];
    for (i, size) in sizes.into_iter().enumerate() {
        let message = random_message(&mut rng, size);
        let options = SealOptions {
            cipher: if i % 2 == 0 {
                ContentCipher::Aes256Cbc
            } else {
                ContentCipher::Aes128Cbc
            },
            ..SealOptions::default()
        };
        let recipient = Recipient {
            certificate: p.recipient.certificate(),
            key_transport: if i % 2 == 0 {
                KeyTransport::RsaOaepSha256
            } else {
                KeyTransport::RsaPkcs1v15
            },
        };
        let sealed = seal(
            &message,
            &p.sender_identity(),
            &[recipient],
            &options,
            SystemTime::now(),
        )
        .unwrap();
        let v = judge(
            &sealed,
            &[p.recipient_identity()],
            &p.trust(),
            SystemTime::now(),
        );
        assert_eq!(v.code, ReasonCode::Trusted, "size {size}: {v:?}");
        assert!(
            v.message.as_ref().unwrap().ends_with(&message),
            "size {size}"
        );

        let input = scratch("roundtrip.eml");
        std::fs::write(&input, &sealed).unwrap();
        let (ok, decrypted, err) = openssl_try(
            &p.dir,
            &[
                "cms",
                "-decrypt",
                "-in",
                input.to_str().unwrap(),
                "-recip",
                p.recipient.cert.to_str().unwrap(),
                "-inkey",
                p.recipient.key.to_str().unwrap(),
            ],
            None,
        );
        assert!(ok, "size {size}: {err}");
        let (ok, content, err) = openssl_try(
            &p.dir,
            &[
                "cms",
                "-verify",
                "-CAfile",
                p.root.cert.to_str().unwrap(),
                "-purpose",
                "smimesign",
            ],
            Some(&decrypted),
        );
        assert!(ok, "size {size}: {err}");
        assert!(content.ends_with(&message), "size {size}");
    }
}
