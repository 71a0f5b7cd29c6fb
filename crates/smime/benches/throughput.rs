//! Throughput of sign+encrypt and decrypt+verify, side by side with the
//! `openssl cms` command line doing the same work on the same machine and the
//! same certificates in the same run. Run with `cargo bench -p directmail-smime`.
//!
//! The OpenSSL figures include process start-up and file I/O (two `openssl`
//! invocations per direction), so at small sizes they flatter the crate; the
//! 1 MB and 10 MB rows are the meaningful comparison.

#[path = "../tests/it/pki.rs"]
#[expect(dead_code, reason = "the bench uses only part of the test PKI helpers")]
mod pki;

use std::time::{Instant, SystemTime};

use directmail_smime::{ReasonCode, Recipient, SealOptions, judge, seal};

fn message(size: usize) -> Vec<u8> {
    let mut m = pki::sample_message("Benchmark", "");
    let line = b"The quick brown fox jumps over the lazy dog; 0123456789 ABCDEFGHIJKLMNOPQRST\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

fn time<F: FnMut()>(iterations: u32, mut f: F) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_secs_f64() / f64::from(iterations)
}

fn main() {
    let p = pki::pki();
    let sender = p.sender_identity();
    let recipient_id = p.recipient_identity();
    let trust = p.trust();
    let recipients = [Recipient::new(p.recipient.certificate())];
    let dir = &p.dir;
    let s = |path: &std::path::Path| path.to_str().unwrap_or_default().to_string();

    println!(
        "{:>8} | {:>22} | {:>22} | {:>22} | {:>22}",
        "size",
        "crate seal (msg/s, MB/s)",
        "openssl sign+encrypt",
        "crate judge (msg/s, MB/s)",
        "openssl decrypt+verify"
    );
    for (size, iterations) in [(10 * 1024, 50), (1024 * 1024, 10), (10 * 1024 * 1024, 3)] {
        let msg = message(size);
        let mb = msg.len() as f64 / (1024.0 * 1024.0);
        let now = SystemTime::now();

        let mut sealed = Vec::new();
        let seal_s = time(iterations, || {
            sealed = seal(&msg, &sender, &recipients, &SealOptions::default(), now).unwrap();
        });
        let judge_s = time(iterations, || {
            let v = judge(&sealed, std::slice::from_ref(&recipient_id), &trust, now);
            assert_eq!(v.code, ReasonCode::Trusted, "{v:?}");
        });

        // OpenSSL doing the same: wrap, sign (SHA-256, chain), encrypt
        // (AES-256-CBC, OAEP-SHA256 for recipient and sender); then decrypt and verify.
        let wrapped = dir.join(format!("bench-{size}.eml"));
        std::fs::write(&wrapped, pki::wrapped(&msg)).unwrap();
        let signed = dir.join(format!("bench-{size}.signed"));
        let enc = dir.join(format!("bench-{size}.p7m"));
        let dec = dir.join(format!("bench-{size}.dec"));
        let out = dir.join(format!("bench-{size}.out"));
        let ossl_seal_s = time(iterations, || {
            pki::openssl(
                dir,
                &[
                    "cms",
                    "-sign",
                    "-binary",
                    "-md",
                    "sha256",
                    "-in",
                    &s(&wrapped),
                    "-signer",
                    &s(&p.sender.cert),
                    "-inkey",
                    &s(&p.sender.key),
                    "-certfile",
                    &s(&p.inter.cert),
                    "-out",
                    &s(&signed),
                ],
            );
            pki::openssl(
                dir,
                &[
                    "cms",
                    "-encrypt",
                    "-binary",
                    "-aes256",
                    "-in",
                    &s(&signed),
                    "-out",
                    &s(&enc),
                    "-recip",
                    &s(&p.recipient.cert),
                    "-keyopt",
                    "rsa_padding_mode:oaep",
                    "-keyopt",
                    "rsa_oaep_md:sha256",
                    "-recip",
                    &s(&p.sender.cert),
                    "-keyopt",
                    "rsa_padding_mode:oaep",
                    "-keyopt",
                    "rsa_oaep_md:sha256",
                ],
            );
        });
        let ossl_open_s = time(iterations, || {
            pki::openssl(
                dir,
                &[
                    "cms",
                    "-decrypt",
                    "-binary",
                    "-in",
                    &s(&enc),
                    "-recip",
                    &s(&p.recipient.cert),
                    "-inkey",
                    &s(&p.recipient.key),
                    "-out",
                    &s(&dec),
                ],
            );
            pki::openssl(
                dir,
                &[
                    "cms",
                    "-verify",
                    "-in",
                    &s(&dec),
                    "-CAfile",
                    &s(&p.root.cert),
                    "-purpose",
                    "smimesign",
                    "-out",
                    &s(&out),
                ],
            );
        });

        let cell = |secs: f64| format!("{:>8.1} /s {:>8.1} MB/s", 1.0 / secs, mb / secs);
        println!(
            "{:>8} | {} | {} | {} | {}",
            format!("{:.0} KB", msg.len() as f64 / 1024.0),
            cell(seal_s),
            cell(ossl_seal_s),
            cell(judge_s),
            cell(ossl_open_s)
        );
        println!(
            "{:>8} | crate/openssl time ratio: seal {:.2}x, judge {:.2}x",
            "",
            seal_s / ossl_seal_s,
            judge_s / ossl_open_s
        );
    }
}
