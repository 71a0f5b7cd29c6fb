//! Round trips with varied headers, bodies and attachments up to a few MB:
//! the crate seals, the crate and OpenSSL both open.

use std::time::SystemTime;

use directmail_smime::{
    ContentCipher, KeyTransport, OuterSubject, ReasonCode, Recipient, SealOptions, judge, seal,
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

/// Words with non-ASCII letters, for RFC 2047 subjects and 8-bit bodies.
const UNICODE_WORDS: &[&str] = &[
    "Befund",
    "f\u{fc}r",
    "M\u{fc}ller",
    "r\u{e9}sultat",
    "\u{e9}chographie",
    "\u{5f71}\u{50cf}",
    "\u{0420}\u{0435}\u{043d}\u{0442}\u{0433}\u{0435}\u{043d}",
    "\u{2713}",
    "na\u{ef}ve",
    "\u{1f489}",
];

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    /// A phrase of ASCII and non-ASCII words.
    fn phrase(&mut self, words: u64) -> String {
        (0..1 + self.below(words))
            .map(|_| {
                if self.below(3) == 0 {
                    self.pick(UNICODE_WORDS).to_string()
                } else {
                    self.word()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// RFC 2047 §4: encoded-words (B or Q encoding, UTF-8), each at most 75
/// characters, split on character boundaries, separated by folding white space.
fn rfc2047(rng: &mut XorShift, text: &str) -> String {
    let b_encoding = rng.below(2) == 0;
    let mut words = Vec::new();
    let mut chunk = String::new();
    let flush = |chunk: &mut String, words: &mut Vec<String>| {
        if chunk.is_empty() {
            return;
        }
        let encoded = if b_encoding {
            format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes()))
        } else {
            let q: String = chunk
                .bytes()
                .map(|b| match b {
                    b' ' => "_".to_string(),
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
                    _ => format!("={b:02X}"),
                })
                .collect();
            format!("=?UTF-8?Q?{q}?=")
        };
        words.push(encoded);
        chunk.clear();
    };
    for c in text.chars() {
        // 12 UTF-8 bytes become at most 36 Q characters (or 16 base64): the
        // encoded-word stays under 75 characters either way.
        if chunk.len() + c.len_utf8() > 12 {
            flush(&mut chunk, &mut words);
        }
        chunk.push(c);
    }
    flush(&mut chunk, &mut words);
    words.join("\r\n ")
}

/// A message with random optional headers in random order, an RFC 2047 subject
/// (or a plain one), a UTF-8 body, 0 to 3 attachments of up to `max_attachment`
/// bytes, and CRLF or bare LF line ends.
fn random_rich_message(rng: &mut XorShift, max_attachment: u64) -> Vec<u8> {
    let subject_text = rng.phrase(10);
    let subject = if subject_text.is_ascii() && rng.below(2) == 0 {
        subject_text
    } else {
        rfc2047(rng, &subject_text)
    };
    let display_text = rng.phrase(2);
    let display = rfc2047(rng, &display_text);
    let comment_text = rng.phrase(6);
    let comment = rfc2047(rng, &comment_text);
    let mut headers = vec![
        format!("From: {display} <{SENDER}>"),
        format!("To: {RECIPIENT}"),
        format!("Subject: {subject}"),
        "Date: Thu, 26 Nov 2026 10:00:00 +0000".to_string(),
        format!(
            "Message-ID: <{}.{}@direct.sender.example>",
            rng.word(),
            rng.next()
        ),
    ];
    let optional = [
        format!(
            "Cc: {}@direct.receiver.example, \"{}\" <x@y.example>",
            rng.word(),
            rng.word()
        ),
        format!("In-Reply-To: <{}@x.example>", rng.word()),
        format!(
            "References: <{}@x.example>\r\n <{}@x.example>\r\n\t<{}@x.example>",
            rng.word(),
            rng.word(),
            rng.word()
        ),
        format!("Reply-To: {}@direct.sender.example", rng.word()),
        format!("Keywords: {}, {}", rng.word(), rng.word()),
        format!("Comments: {comment}"),
        format!("X-Patient-Ref: {}", rng.next()),
        "Importance: high".to_string(),
        format!(
            "X-Long: {}",
            (0..30)
                .map(|_| rng.word())
                .collect::<Vec<_>>()
                .join("\r\n ")
        ),
    ];
    for h in optional {
        if rng.below(2) == 0 {
            let at = rng.below(headers.len() as u64 + 1) as usize;
            headers.insert(at.max(1), h);
        }
    }
    headers.push("MIME-Version: 1.0".to_string());
    let boundary = format!("=_b{}", rng.next());
    headers.push(format!(
        "Content-Type: multipart/mixed;\r\n boundary=\"{boundary}\""
    ));
    let mut m = headers.join("\r\n").into_bytes();
    m.extend_from_slice(b"\r\n\r\n");
    let lines: Vec<String> = (0..1 + rng.below(40))
        .map(|_| match rng.below(8) {
            // Lines that trip naive MIME or SMTP handling.
            0 => "From the lab: ok".to_string(),
            1 => ".".to_string(),
            2 => format!("--{}", rng.word()),
            3 => format!("{}   ", rng.phrase(5)),
            4 => String::new(),
            _ => rng.phrase(12),
        })
        .collect();
    m.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\r\n{}\r\n",
            lines.join("\r\n")
        )
        .as_bytes(),
    );
    for n in 0..rng.below(4) {
        let size = rng.below(max_attachment + 1) as usize;
        let name_text = format!("{} {n}.pdf", rng.phrase(2));
        let name = rfc2047(rng, &name_text);
        m.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/pdf; name=\"{name}\"\r\n\
                 Content-Disposition: attachment;\r\n filename=\"{name}\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                base64(&rng.bytes(size))
            )
            .as_bytes(),
        );
    }
    m.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    if rng.below(4) == 0 {
        // Bare LF line ends: seal converts to CRLF (RFC 5322 §2.1).
        m = String::from_utf8(m)
            .unwrap()
            .replace("\r\n", "\n")
            .into_bytes();
    }
    m
}

fn crlf(m: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(m)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

#[test]
fn random_headers_rfc2047_subjects_and_attachments_survive_seal_and_judge() {
    let p = pki();
    let sender = p.sender_identity();
    let me = [p.recipient_identity()];
    let trust = p.trust();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for i in 0..40 {
        // Mostly small, every tenth message carries attachments up to 2 MB.
        let max_attachment = if i % 10 == 9 { 2 * 1024 * 1024 } else { 4096 };
        let message = random_rich_message(&mut rng, max_attachment);
        let keep = rng.below(2) == 0;
        let options = SealOptions {
            cipher: if rng.below(2) == 0 {
                ContentCipher::Aes256Cbc
            } else {
                ContentCipher::Aes128Cbc
            },
            outer_subject: if keep {
                OuterSubject::Keep
            } else {
                OuterSubject::default()
            },
            ..SealOptions::default()
        };
        let recipient = Recipient {
            certificate: p.recipient.certificate(),
            key_transport: if rng.below(2) == 0 {
                KeyTransport::RsaOaepSha256
            } else {
                KeyTransport::RsaPkcs1v15
            },
        };
        let now = SystemTime::now();
        let sealed = seal(&message, &sender, &[recipient], &options, now).unwrap();
        assert!(sealed.is_ascii(), "message {i}: the wire form is 7-bit");

        // The outer Subject is the real (encoded) one only when asked for.
        let outer = String::from_utf8_lossy(&sealed[..sealed.len().min(4096)]).into_owned();
        let original = crlf(&message);
        let original_text = String::from_utf8_lossy(&original).into_owned();
        let subject_line = original_text
            .split("\r\n")
            .skip_while(|l| !l.starts_with("Subject:"))
            .take_while(|l| l.starts_with("Subject:") || l.starts_with(' '))
            .collect::<Vec<_>>()
            .join("\r\n");
        assert_eq!(outer.contains(&subject_line), keep, "message {i}");

        let v = judge(&sealed, &me, &trust, now);
        assert_eq!(v.code, ReasonCode::Trusted, "message {i}: {v:?}");
        let opened = v.message.unwrap();
        assert!(opened.ends_with(&original), "message {i}: content changed");
        assert_eq!(v.from.as_deref(), Some(SENDER), "message {i}");
    }
}

#[test]
fn random_rich_messages_open_with_openssl_cms() {
    let p = pki();
    let sender = p.sender_identity();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for i in 0..6 {
        let message = random_rich_message(&mut rng, if i == 5 { 1024 * 1024 } else { 2048 });
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
            &sender,
            &[recipient],
            &SealOptions::default(),
            SystemTime::now(),
        )
        .unwrap();
        let input = scratch("rich.eml");
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
        assert!(ok, "message {i}: {err}");
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
        assert!(ok, "message {i}: {err}");
        assert!(content.ends_with(&crlf(&message)), "message {i}");
    }
}
