//! directmail-smime against OpenSSL, in-process and in the same run, for 10 KB,
//! 100 KB, 1 MB and 10 MB messages (issue 3, "Speed"). `cargo bench -p directmail-smime-bench`.
//!
//! Both sides do the same work on the same RSA-2048 keys (made by the crate's
//! development PKI):
//! - **seal**: wrap as message/rfc822, sign detached (SHA-256, RSA PKCS#1 v1.5,
//!   signer certificate included), write multipart/signed, encrypt with
//!   AES-256-CBC for the recipient and the sender, write application/pkcs7-mime
//!   base64. Key transport is RSA PKCS#1 v1.5 on both sides: OpenSSL's PKCS7 API
//!   (the one with S/MIME reading and writing in the `openssl` crate) cannot do
//!   OAEP, directmail's default. Two RSA public-key operations either way:
//!   microseconds, not a factor at these sizes.
//! - **judge**: read the S/MIME message, decrypt (RSA private key + AES), read the
//!   multipart/signed, verify the signature and the chain to the anchor
//!   (purpose S/MIME signing). directmail also checks the Direct binding.
//!
//! OpenSSL's side is `PKCS7_sign` / `SMIME_write_PKCS7` / `PKCS7_encrypt` and
//! `SMIME_read_PKCS7` / `PKCS7_decrypt` / `PKCS7_verify`, i.e. what `openssl
//! smime` does, without process start-up or files.
//!
//! Peak memory of seal and judge is measured with a counting global allocator
//! (heap bytes live at the peak minus those live before the call, so the input
//! message itself is not counted; the output is). OpenSSL allocates with its own
//! allocator, so only directmail's peak is reported.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use der::Encode;
use directmail_smime::{
    DevCa, Identity, KeyTransport, ReasonCode, Recipient, SealOptions, TrustStore, judge, seal,
};
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509, X509PurposeId};

/// Counts live heap bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grow(new_size);
        }
        p
    }
}

fn grow(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Run `f` once and return its result with the extra heap it needed at peak.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

const SENDER: &str = "dr.bench@direct.sender.example";
const DOMAIN: &str = "direct.receiver.example";

fn message(size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Dr Bench <{SENDER}>\r\nTo: records@{DOMAIN}\r\nSubject: Benchmark\r\n\
         Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@direct.sender.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog; 0123456789 ABCDEFGHIJKLMNOPQRST\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m.truncate(size);
    m
}

/// Seconds per call: one warm-up, then `n` timed calls (at least ~1 s in all).
fn time(n: u32, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut done = 0u32;
    while done < n || start.elapsed() < Duration::from_millis(1000) {
        f();
        done += 1;
    }
    start.elapsed().as_secs_f64() / f64::from(done)
}

struct OsslParty {
    cert: X509,
    key: PKey<Private>,
}

fn to_openssl(id: &Identity) -> OsslParty {
    let cert = X509::from_der(&id.certificate().to_der().unwrap()).unwrap();
    let key = PKey::private_key_from_pkcs8(&id.private_key_pkcs8_der().unwrap()).unwrap();
    OsslParty { cert, key }
}

fn ossl_seal(msg: &[u8], sender: &OsslParty, recipients: &Stack<X509>) -> Vec<u8> {
    let mut wrapped = b"Content-Type: message/rfc822\r\n\r\n".to_vec();
    wrapped.extend_from_slice(msg);
    let flags = Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY;
    let no_certs = Stack::new().unwrap();
    let signed = Pkcs7::sign(&sender.cert, &sender.key, &no_certs, &wrapped, flags).unwrap();
    let signed_mime = signed.to_smime(&wrapped, flags).unwrap();
    let enveloped = Pkcs7::encrypt(
        recipients,
        &signed_mime,
        Cipher::aes_256_cbc(),
        Pkcs7Flags::BINARY,
    )
    .unwrap();
    enveloped.to_smime(&[], Pkcs7Flags::BINARY).unwrap()
}

fn ossl_judge(sealed: &[u8], me: &OsslParty, store: &X509Store) -> Vec<u8> {
    let (enveloped, _) = Pkcs7::from_smime(sealed).unwrap();
    let plain = enveloped
        .decrypt(&me.key, &me.cert, Pkcs7Flags::BINARY)
        .unwrap();
    let (signed, content) = Pkcs7::from_smime(&plain).unwrap();
    let mut out = Vec::new();
    let no_certs = Stack::new().unwrap();
    signed
        .verify(
            &no_certs,
            store,
            content.as_deref(),
            Some(&mut out),
            Pkcs7Flags::BINARY,
        )
        .unwrap();
    out
}

fn main() {
    let now = SystemTime::now();
    let ca = DevCa::generate("directmail bench root", now).unwrap();
    let sender = ca.issue_address(SENDER, now).unwrap();
    let recipient = ca.issue_domain(DOMAIN, now).unwrap();
    let trust = TrustStore::with_anchors(vec![ca.certificate().clone()]);
    let recipients = [Recipient {
        certificate: recipient.certificate().clone(),
        key_transport: KeyTransport::RsaPkcs1v15,
    }];
    let options = SealOptions {
        sender_key_transport: KeyTransport::RsaPkcs1v15,
        ..SealOptions::default()
    };
    let keys = std::slice::from_ref(&recipient);

    let o_sender = to_openssl(&sender);
    let o_recipient = to_openssl(&recipient);
    let mut o_recipients = Stack::new().unwrap();
    o_recipients.push(o_recipient.cert.clone()).unwrap();
    o_recipients.push(o_sender.cert.clone()).unwrap();
    let mut store = X509StoreBuilder::new().unwrap();
    store
        .add_cert(X509::from_der(&ca.certificate().to_der().unwrap()).unwrap())
        .unwrap();
    store.set_purpose(X509PurposeId::SMIME_SIGN).unwrap();
    let store = store.build();

    println!(
        "directmail-smime vs OpenSSL {} (in-process), RSA-2048, AES-256-CBC, SHA-256",
        openssl::version::version()
    );
    println!(
        "{:>7} | {:>24} | {:>24} | {:>7} | {:>24} | {:>24} | {:>7}",
        "size",
        "directmail seal",
        "openssl sign+encrypt",
        "ratio",
        "directmail judge",
        "openssl decrypt+verify",
        "ratio"
    );
    let sizes = std::env::var("SMIME_BENCH_SIZES").ok();
    let heap_only = std::env::var_os("SMIME_BENCH_HEAP_ONLY").is_some_and(|v| v != "0");
    let mut peaks = Vec::new();
    for (label, size, n) in [
        ("10KB", 10 * 1024, 100),
        ("100KB", 100 * 1024, 50),
        ("1MB", 1024 * 1024, 10),
        ("10MB", 10 * 1024 * 1024, 3),
    ] {
        if let Some(list) = &sizes
            && !list
                .split(',')
                .any(|s| s.trim().eq_ignore_ascii_case(label))
        {
            continue;
        }
        let msg = message(size);
        let mb = size as f64 / (1024.0 * 1024.0);

        // Correctness first, both ways round: each side opens the other's output.
        let sealed = seal(&msg, &sender, &recipients, &options, now).unwrap();
        let o_sealed = ossl_seal(&msg, &o_sender, &o_recipients);
        let v = judge(&o_sealed, keys, &trust, now);
        assert_eq!(v.code, ReasonCode::Trusted, "{v:?}");
        assert!(ossl_judge(&sealed, &o_recipient, &store).ends_with(&msg));

        let (_, seal_peak) = peak_of(|| seal(&msg, &sender, &recipients, &options, now));
        let (_, judge_peak) = peak_of(|| judge(&sealed, keys, &trust, now));
        peaks.push((size, seal_peak, judge_peak));
        if heap_only {
            continue;
        }

        let seal_s = time(n, || {
            seal(&msg, &sender, &recipients, &options, now).unwrap();
        });
        let o_seal_s = time(n, || {
            ossl_seal(&msg, &o_sender, &o_recipients);
        });
        let judge_s = time(n, || {
            let v = judge(&sealed, keys, &trust, now);
            assert_eq!(v.code, ReasonCode::Trusted);
        });
        let o_judge_s = time(n, || {
            ossl_judge(&o_sealed, &o_recipient, &store);
        });

        let cell = |s: f64| format!("{:>8.1} ops/s {:>7.1} MB/s", 1.0 / s, mb / s);
        let label = if size < 1024 * 1024 {
            format!("{} KB", size / 1024)
        } else {
            format!("{} MB", size / (1024 * 1024))
        };
        println!(
            "{label:>7} | {} | {} | {:>6.2}x | {} | {} | {:>6.2}x",
            cell(seal_s),
            cell(o_seal_s),
            seal_s / o_seal_s,
            cell(judge_s),
            cell(o_judge_s),
            judge_s / o_judge_s
        );
    }
    println!("ratio = directmail time / OpenSSL time (below 1 = directmail faster)");
    println!();
    println!("directmail peak heap above the input message:");
    for (size, seal_peak, judge_peak) in peaks {
        println!(
            "{:>9} bytes: seal peak = {:.2} × message size ({seal_peak} bytes), \
             judge peak = {:.2} × message size ({judge_peak} bytes)",
            size,
            seal_peak as f64 / size as f64,
            judge_peak as f64 / size as f64
        );
    }
}
